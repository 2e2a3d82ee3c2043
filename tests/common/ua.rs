//! Simulated user agents over UDP and TCP, and the reader the tests use for what sipfarm
//! sends. The reader is the tests' own, independent of sipfarm's parser: a parser bug cannot
//! hide behind a test that reads answers with that same parser.

use super::processes::unique;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// The compact header forms and their long names (RFC 3261 7.3.3, the IANA SIP registry).
const COMPACT: &str = "a=accept-contact b=referred-by c=content-type d=request-disposition \
    e=content-encoding f=from i=call-id j=reject-contact k=supported \
    l=content-length m=contact n=identity-info o=event r=refer-to s=subject t=to \
    u=allow-events v=via x=session-expires y=identity";

/// A header name as the reader compares it: lower case, compact forms expanded.
fn canonical(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    COMPACT
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .find(|(short, _)| *short == lower)
        .map_or(lower, |(_, long)| long.to_owned())
}

/// Split a list header value at the commas outside quoted strings and `<...>`.
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut cur = String::new();
    for ch in value.chars() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur);
    out.into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The top Via of a message, as far as the tests need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper case: UDP, TCP...
    pub transport: String,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: Option<u16>,
    pub branch: Option<String>,
    pub received: Option<String>,
    /// `Some(None)`: `rport` without a value; `Some(Some(p))`: filled in.
    pub rport: Option<Option<u16>>,
}

impl Via {
    /// `SIP / 2.0 / UDP host[:port];params` (white space allowed around the slashes).
    pub fn read(value: &str) -> Option<Via> {
        let mut rest = value.trim();
        for _ in 0..2 {
            rest = rest[rest.find('/')? + 1..].trim_start();
        }
        let tend = rest.find(char::is_whitespace)?;
        let transport = rest[..tend].to_ascii_uppercase();
        let rest = rest[tend..].trim_start();
        let (sent_by, params) = rest.split_once(';').unwrap_or((rest, ""));
        let sent_by = sent_by.trim();
        let (host, port) = if let Some(v6) = sent_by.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            (host, after.trim().strip_prefix(':'))
        } else {
            match sent_by.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (sent_by, None),
            }
        };
        let mut via = Via {
            transport,
            host: host.trim().to_owned(),
            port: port.and_then(|p| p.trim().parse().ok()),
            branch: None,
            received: None,
            rport: None,
        };
        for p in params.split(';') {
            let (name, val) = p.split_once('=').unwrap_or((p, ""));
            let val = val.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "branch" => via.branch = Some(val.to_owned()),
                "received" => via.received = Some(val.to_owned()),
                "rport" => via.rport = Some(val.parse().ok()),
                _ => {}
            }
        }
        Some(via)
    }
}

/// A received SIP message, read with the tests' own reader.
#[derive(Debug, Clone)]
pub struct Sip {
    pub text: String,
    /// Request: (method, Request-URI); response: None.
    request: Option<(String, String)>,
    code: Option<u16>,
    /// (canonical name, value) per header line, folding undone.
    headers: Vec<(String, String)>,
}

impl Sip {
    /// Read a message; panics if it is not one.
    pub fn parse(text: &str) -> Sip {
        Sip::read(text).unwrap_or_else(|| panic!("not a SIP message:\n{text}"))
    }

    /// Read a message: a start line and header lines up to the first empty line.
    pub fn read(text: &str) -> Option<Sip> {
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let start = lines.next()?;
        let (mut request, mut code) = (None, None);
        if let Some(status) = start.strip_prefix("SIP/2.0 ") {
            code = Some(status.get(..3)?.parse().ok()?);
        } else {
            let mut parts = start.split_whitespace();
            let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
            if version != "SIP/2.0" {
                return None;
            }
            request = Some((method.to_owned(), uri.to_owned()));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let (_, value) = headers.last_mut()?;
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((canonical(name), value.trim().to_owned()));
        }
        Some(Sip {
            text: text.to_owned(),
            request,
            code,
            headers,
        })
    }

    /// Every line of a header (case-insensitive, compact forms too), not split at commas.
    pub fn lines(&self, name: &str) -> Vec<String> {
        let name = canonical(name);
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The first line of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.lines(name).into_iter().next()
    }

    /// Every comma-separated element of every line of a list header, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.lines(name)
            .iter()
            .flat_map(|v| split_list(v))
            .collect()
    }

    pub fn method(&self) -> Option<&str> {
        self.request.as_ref().map(|(m, _)| m.as_str())
    }

    pub fn request_uri(&self) -> Option<&str> {
        self.request.as_ref().map(|(_, u)| u.as_str())
    }

    pub fn code(&self) -> Option<u16> {
        self.code
    }

    pub fn top_via(&self) -> Option<Via> {
        Via::read(self.all("via").first()?)
    }

    pub fn top_branch(&self) -> String {
        self.top_via().and_then(|v| v.branch).unwrap_or_default()
    }

    /// Where a response to this request goes (RFC 3261 18.2.2 with RFC 3581 rport).
    pub fn response_target(&self) -> SocketAddr {
        let via = self.top_via().expect("a request with a Via");
        let port = via.rport.flatten().or(via.port).unwrap_or(5060);
        let host = via.received.unwrap_or(via.host);
        format!("{host}:{port}")
            .parse()
            .or_else(|_| format!("[{host}]:{port}").parse())
            .unwrap_or_else(|_| panic!("response target {host}:{port}"))
    }
}

/// A response, minimally read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub code: u16,
    pub text: String,
}

impl Resp {
    /// Every line of a header, not split at commas.
    pub fn headers(&self, name: &str) -> Vec<String> {
        Sip::parse(&self.text).lines(name)
    }

    /// Contact URIs of a REGISTER answer, sorted.
    pub fn contacts(&self) -> Vec<String> {
        let mut v: Vec<String> = Sip::parse(&self.text)
            .all("contact")
            .iter()
            .filter_map(|c| Some(c[c.find('<')? + 1..c.find('>')?].to_owned()))
            .collect();
        v.sort();
        v
    }
}

/// A small SIP user agent on its own UDP socket.
pub struct Ua {
    pub sock: UdpSocket,
    pub port: u16,
    /// The loopback address it is bound to (127.0.0.1 unless made with `new_at`).
    pub ip: &'static str,
}

impl Default for Ua {
    fn default() -> Self {
        Self::new()
    }
}

impl Ua {
    pub fn new() -> Ua {
        Ua::new_at("127.0.0.1")
    }

    /// On another loopback address (127.0.0.0/8): a second source, or a peer that stands
    /// for another network.
    pub fn new_at(ip: &'static str) -> Ua {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        let port = sock.local_addr().unwrap().port();
        Ua { sock, port, ip }
    }

    pub fn via(&self) -> String {
        format!(
            "SIP/2.0/UDP {}:{};branch=z9hG4bK{};rport",
            self.ip,
            self.port,
            unique("b")
        )
    }

    pub fn options(&self, uri: &str) -> String {
        format!(
            "OPTIONS {uri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@example.test>;tag={}\r\nTo: <{uri}>\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            self.via(),
            unique("t"),
            unique("c")
        )
    }

    /// A REGISTER for `user@example.test`.
    pub fn register(
        &self,
        user: &str,
        contacts: &[&str],
        expires: Option<u32>,
        call_id: &str,
        cseq: u32,
    ) -> String {
        let mut m = format!(
            "REGISTER sip:example.test SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@example.test>;tag={}\r\nTo: <sip:{user}@example.test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n",
            self.via(),
            unique("t")
        );
        for c in contacts {
            m.push_str(&format!("Contact: {c}\r\n"));
        }
        if let Some(e) = expires {
            m.push_str(&format!("Expires: {e}\r\n"));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    }

    pub fn send(&self, to: SocketAddr, msg: &str) {
        self.sock.send_to(msg.as_bytes(), to).unwrap();
    }

    pub fn send_bytes(&self, to: SocketAddr, msg: &[u8]) {
        self.sock.send_to(msg, to).unwrap();
    }

    /// Receive one message (any), or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 65536];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Send a request and wait for its final response (provisional ones skipped), matched
    /// by Call-ID.
    pub fn try_request(&self, to: SocketAddr, msg: &str, timeout: Duration) -> Option<Resp> {
        self.send(to, msg);
        let call_id = Sip::parse(msg).header("call-id");
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let text = self.recv(left.max(Duration::from_millis(1)))?;
            let Some(m) = Sip::read(&text) else {
                continue;
            };
            match m.code() {
                Some(code) if code >= 200 && m.header("call-id") == call_id => {
                    return Some(Resp { code, text });
                }
                _ => continue,
            }
        }
    }

    /// Like `try_request`, with retransmissions over UDP (like a real UA), panicking on silence.
    pub fn request(&self, to: SocketAddr, msg: &str) -> Resp {
        for _ in 0..4 {
            if let Some(r) = self.try_request(to, msg, Duration::from_millis(1500)) {
                return r;
            }
        }
        panic!("no answer from {to} to:\n{msg}");
    }
}

/// Send one message over a fresh TCP connection and read one response.
pub fn tcp_request(to: SocketAddr, msg: &str) -> Resp {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(msg.as_bytes()).unwrap();
    read_tcp_response(&mut s)
}

/// Read one response from a stream (skipping CRLF keep-alive pongs).
pub fn read_tcp_response(s: &mut TcpStream) -> Resp {
    read_tcp_responses(s, 1).remove(0)
}

/// The length of the first whole message in `buf` (head, then Content-Length bytes of body),
/// or None while it is incomplete.
pub fn framed_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = Sip::parse(&String::from_utf8_lossy(&buf[..end]));
    let body: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (buf.len() >= end + body).then_some(end + body)
}

/// Read `n` responses from a stream (skipping CRLF keep-alive pongs).
pub fn read_tcp_responses(s: &mut TcpStream, n: usize) -> Vec<Resp> {
    let mut out: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while got.len() < n {
        // Take every complete response in `out`.
        loop {
            let skip = out
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            out.drain(..skip);
            let Some(len) = framed_len(&out) else {
                break;
            };
            let text = String::from_utf8_lossy(&out[..len]).into_owned();
            let code = Sip::parse(&text)
                .code()
                .unwrap_or_else(|| panic!("a request where a response was expected:\n{text}"));
            got.push(Resp { code, text });
            out.drain(..len);
        }
        if got.len() >= n {
            break;
        }
        let k = s.read(&mut buf).expect("tcp read");
        assert!(
            k > 0,
            "connection closed before a response; got {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..k]);
    }
    got
}

/// A phone: a UA that registers and also answers requests.
pub struct Phone {
    pub ua: Ua,
    pub user: String,
    pub tag: String,
}

impl Phone {
    pub fn new(user: &str) -> Phone {
        Phone::new_at(user, "127.0.0.1")
    }

    /// A phone on another loopback address.
    pub fn new_at(user: &str, ip: &'static str) -> Phone {
        Phone {
            ua: Ua::new_at(ip),
            user: user.to_owned(),
            tag: unique("tag"),
        }
    }

    pub fn contact(&self) -> String {
        format!("sip:{}@{}:{}", self.user, self.ua.ip, self.ua.port)
    }

    pub fn register_via(&self, instance: SocketAddr) {
        let r = self.ua.request(
            instance,
            &self.ua.register(
                &self.user,
                &[&format!("<{}>", self.contact())],
                Some(600),
                &unique("reg"),
                1,
            ),
        );
        assert_eq!(r.code, 200, "{}", r.text);
    }

    /// Wait for a message (request or response) satisfying `pred`.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&Sip) -> bool) -> Option<Sip> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let text = self.ua.recv(left.max(Duration::from_millis(1)))?;
            let m = Sip::parse(&text);
            if pred(&m) {
                return Some(m);
            }
        }
    }

    pub fn wait_request(&self, method: &str) -> Sip {
        self.wait(Duration::from_secs(5), |m| m.method() == Some(method))
            .unwrap_or_else(|| panic!("{} got no {method}", self.user))
    }

    pub fn wait_response(&self, code: u16, cseq_method: &str) -> Sip {
        self.wait(Duration::from_secs(5), |m| {
            m.code() == Some(code) && m.header("CSeq").is_some_and(|c| c.ends_with(cseq_method))
        })
        .unwrap_or_else(|| panic!("{} got no {code} to {cseq_method}", self.user))
    }

    /// Answer a received request (to its top Via, RFC 3261 18.2.2 with rport).
    pub fn respond(&self, req: &Sip, code: u16, reason: &str, extra: &str) {
        let out = response_to(req, code, reason, &self.tag, &self.contact(), extra);
        self.ua.send(req.response_target(), &out);
    }
}

/// The response of a UA to `req`: its Vias and Record-Route copied, our `tag` added to the
/// To header (unless it has one, or this is a 100), `contact` as Contact.
pub fn response_to(
    req: &Sip,
    code: u16,
    reason: &str,
    tag: &str,
    contact: &str,
    extra: &str,
) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.all("Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for rr in req.all("Record-Route") {
        out.push_str(&format!("Record-Route: {rr}\r\n"));
    }
    out.push_str(&format!("From: {}\r\n", req.header("From").unwrap()));
    let to = req.header("To").unwrap();
    if to.contains("tag=") || code == 100 {
        out.push_str(&format!("To: {to}\r\n"));
    } else {
        out.push_str(&format!("To: {to};tag={tag}\r\n"));
    }
    out.push_str(&format!(
        "Call-ID: {}\r\nCSeq: {}\r\n",
        req.header("Call-ID").unwrap(),
        req.header("CSeq").unwrap()
    ));
    out.push_str(&format!(
        "Contact: <{contact}>\r\n{extra}Content-Length: 0\r\n\r\n"
    ));
    out
}
