//! Responses this element writes itself, and where they go.
//!
//! RFC 3261 8.2.6 (copy Via, From, To, Call-ID, CSeq; add a To tag), 18.2.1 (`received`),
//! 18.2.2 (where a response is sent), RFC 3581 (`rport`). Our own final responses carry a
//! deterministic To tag ([`local_tag`]) so that the ACK for a non-2xx answer is recognised
//! and absorbed by any instance, without transaction state.

use super::header::{HeaderName, split_unquoted};
use super::{Message, via::Via};
use md5::{Digest, Md5};
use std::fmt::Write as _;
use std::net::SocketAddr;

/// The top Via value as it must appear in a response or a forwarded request: `received` set to
/// the source IP when the sent-by host differs (18.2.1), `rport` filled in when the client
/// asked for it (RFC 3581 4).
pub fn stamp_via(value: &str, src: SocketAddr) -> String {
    stamp_parsed_via(value, Via::parse(value).ok().as_ref(), src)
}

/// [`stamp_via`] for a value already parsed.
pub fn stamp_parsed_via(value: &str, parsed: Option<&Via>, src: SocketAddr) -> String {
    let ip = src.ip().to_string();
    let wants_rport = parsed.as_ref().is_some_and(|v| v.param("rport").is_some());
    let host_differs = parsed.as_ref().is_none_or(|v| v.host_bare() != ip);
    let pieces = split_unquoted(value, b';').unwrap_or_else(|_| vec![value]);
    let mut out = String::with_capacity(value.len() + 40);
    for (i, piece) in pieces.iter().enumerate() {
        let name = piece
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if i > 0 && (name == "received" || name == "rport") {
            continue;
        }
        if i > 0 {
            out.push(';');
        }
        out.push_str(piece.trim_end());
    }
    if host_differs || wants_rport {
        let _ = write!(out, ";received={ip}");
    }
    if wants_rport {
        let _ = write!(out, ";rport={}", src.port());
    }
    out
}

/// Where a response to a request received over UDP from `src` goes (18.2.2 with RFC 3581):
/// the source address when `rport` was asked for; else the source IP (which is what
/// `received` holds) at the sent-by port, 5060 by default.
pub fn udp_response_target(top_via: &Via, src: SocketAddr) -> SocketAddr {
    if top_via.param("rport").is_some() {
        src
    } else {
        SocketAddr::new(src.ip(), top_via.port.unwrap_or(5060))
    }
}

/// A To tag that any instance computes the same way for the same request and its ACK:
/// Call-ID, From tag and CSeq number do not change between a request and the ACK for a
/// non-2xx answer to it (RFC 3261 17.1.1.3).
pub fn local_tag(req: &Message) -> String {
    let mut h = Md5::new();
    h.update(req.call_id().unwrap_or("").as_bytes());
    h.update([0]);
    if let Some(from) = req.get(&HeaderName::From) {
        if let Ok(a) = super::addr::NameAddr::parse(from) {
            h.update(a.tag().unwrap_or("").as_bytes());
        }
    }
    h.update([0]);
    h.update(req.cseq().map(|(n, _)| n).unwrap_or(0).to_be_bytes());
    let d = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(18);
    s.push_str("sf");
    for b in &d[..8] {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// The Date header value (RFC 3261 20.17), formatted once per second per thread.
pub fn http_date() -> std::rc::Rc<str> {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, std::rc::Rc<str>)> =
            std::cell::RefCell::new((0, std::rc::Rc::from("")));
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, std::rc::Rc::from(httpdate::fmt_http_date(now)));
        }
        c.1.clone()
    })
}

/// A request refused: the answer it gets, as a value. One type for every layer that decides
/// (the dispatcher's common checks, the registrar, the proxy); only the server turns it into
/// bytes and sends it, so that rules such as "an ACK is never answered" live in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: std::borrow::Cow<'static, str>,
    /// Extra header lines of the answer (Retry-After, Min-Expires, Unsupported, ...).
    pub headers: Vec<(&'static str, String)>,
}

impl Refusal {
    pub fn new(code: u16, reason: impl Into<std::borrow::Cow<'static, str>>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    /// The same refusal with one more header line.
    pub fn with(mut self, name: &'static str, value: impl std::fmt::Display) -> Refusal {
        self.headers.push((name, value.to_string()));
        self
    }

    /// The answer to `req`, received from `src`.
    pub fn response(&self, req: &Message, src: SocketAddr) -> Vec<u8> {
        let mut resp = Response::new(req, src, self.code, &self.reason);
        for (name, value) in &self.headers {
            resp = resp.header(name, value);
        }
        resp.build()
    }
}

impl From<super::ParseError> for Refusal {
    fn from(e: super::ParseError) -> Refusal {
        let (code, reason) = e.status();
        Refusal::new(code, reason)
    }
}

/// Builder for one response to `req`.
pub struct Response<'a> {
    req: &'a Message,
    src: SocketAddr,
    code: u16,
    reason: &'a str,
    headers: String,
    body: &'a [u8],
    with_tag: bool,
}

impl<'a> Response<'a> {
    pub fn new(req: &'a Message, src: SocketAddr, code: u16, reason: &'a str) -> Response<'a> {
        Response {
            req,
            src,
            code,
            reason,
            headers: String::new(),
            body: b"",
            with_tag: code > 100,
        }
    }

    /// Add complete header lines (each ending in CRLF).
    pub fn lines(mut self, lines: &str) -> Self {
        self.headers.push_str(lines);
        self
    }

    /// Add one header line.
    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        let _ = write!(self.headers, "{name}: {value}\r\n");
        self
    }

    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }

    /// Serialise. Header values that could not be copied (malformed request) are left out:
    /// the answer to a broken request is still sent, as far as it can be addressed.
    pub fn build(self) -> Vec<u8> {
        fn line(out: &mut String, name: &str, value: &str) {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        let mut out = String::with_capacity(512 + self.headers.len());
        out.push_str("SIP/2.0 ");
        let _ = write!(out, "{}", self.code);
        out.push(' ');
        out.push_str(self.reason);
        out.push_str("\r\n");
        let vias = self.req.list(&HeaderName::Via).unwrap_or_default();
        for (i, v) in vias.iter().enumerate() {
            if i == 0 {
                line(
                    &mut out,
                    "Via",
                    &stamp_parsed_via(v, self.req.top_via().ok(), self.src),
                );
            } else {
                line(&mut out, "Via", v);
            }
        }
        if let Some(from) = self.req.get(&HeaderName::From) {
            line(&mut out, "From", from);
        }
        if let Some(to) = self.req.get(&HeaderName::To) {
            let has_tag = super::addr::NameAddr::parse(to).is_ok_and(|a| a.tag().is_some());
            line(&mut out, "To", to);
            if self.with_tag && !has_tag {
                out.truncate(out.len() - 2);
                out.push_str(";tag=");
                out.push_str(&local_tag(self.req));
                out.push_str("\r\n");
            }
        }
        if let Some(cid) = self.req.call_id() {
            line(&mut out, "Call-ID", cid);
        }
        if let Some(cseq) = self.req.get(&HeaderName::CSeq) {
            line(&mut out, "CSeq", cseq);
        }
        out.push_str(&self.headers);
        out.push_str("Server: sipfarm\r\nContent-Length: ");
        let _ = write!(out, "{}", self.body.len());
        out.push_str("\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(self.body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Framing;
    use bytes::Bytes;

    #[test]
    fn via_stamping() {
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(
            stamp_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport", src),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;received=127.0.0.1;rport=40000"
        );
        assert_eq!(
            stamp_via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx", src),
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx"
        );
        let v = Via::parse("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx").unwrap();
        assert_eq!(
            udp_response_target(&v, src),
            "127.0.0.1:5070".parse().unwrap()
        );
    }

    #[test]
    fn response_copies_and_tags() {
        let raw = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/UDP g\r\nFrom: <sip:x@y>;tag=9\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 5 OPTIONS\r\n\r\n";
        let m = Message::parse(Bytes::from(raw), Framing::Datagram, 65536).unwrap();
        let src: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let r = String::from_utf8(Response::new(&m, src, 404, "Not Found").build()).unwrap();
        assert!(r.starts_with("SIP/2.0 404 Not Found\r\n"));
        assert!(r.contains("Via: SIP/2.0/UDP g\r\n"));
        assert!(r.contains(&format!("To: <sip:a@b>;tag={}\r\n", local_tag(&m))));
        assert!(r.contains("CSeq: 5 OPTIONS\r\n"));
        assert!(r.ends_with("Content-Length: 0\r\n\r\n"));
    }
}
