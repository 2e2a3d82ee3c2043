//! Test harness: free loopback ports, real memcached and sipfarm processes (stopped by pid
//! when dropped), and a tiny SIP user agent over UDP and TCP.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A unique token for Call-IDs, tags and branches.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn sipp_bin() -> String {
    std::env::var("SIPP").unwrap_or_else(|_| "sipp".into())
}

pub fn memcached_bin() -> String {
    std::env::var("MEMCACHED").unwrap_or_else(|_| "memcached".into())
}

/// A real memcached on a free loopback port.
pub struct Memcached {
    pub port: u16,
    child: Child,
}

impl Memcached {
    pub fn start() -> Memcached {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Memcached {
        let child = Command::new(memcached_bin())
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-m",
                "64",
                "-M",
                "-t",
                "1",
            ])
            .args(if unsafe_root() {
                vec!["-u", "root"]
            } else {
                vec![]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached must be installed (apt-get install memcached)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "memcached did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Memcached { port, child }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send one text command and read the answer up to its end marker.
    pub fn command(&self, cmd: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(cmd.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    let t = String::from_utf8_lossy(&out);
                    if t.ends_with("END\r\n") || t.ends_with("OK\r\n") || t.ends_with("ERROR\r\n") {
                        break;
                    }
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Number of items stored.
    pub fn items(&self) -> u64 {
        let s = self.command("stats\r\n");
        s.lines()
            .find_map(|l| l.strip_prefix("STAT curr_items "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn stat(&self, name: &str) -> u64 {
        let s = self.command("stats\r\n");
        let prefix = format!("STAT {name} ");
        s.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn unsafe_root() -> bool {
    // memcached refuses to run as root unless told which user to be.
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sipfarm process.
pub struct Sipfarm {
    pub port: u16,
    pub child: Child,
}

pub fn sipfarm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sipfarm")
}

impl Sipfarm {
    /// Start `sipfarm serve` on udp+tcp 127.0.0.1:<free port> with `--domain example.test`
    /// and the extra arguments; waits until it answers OPTIONS.
    pub fn start(extra: &[&str]) -> Sipfarm {
        let port = free_port();
        let listen_udp = format!("udp:127.0.0.1:{port}");
        let listen_tcp = format!("tcp:127.0.0.1:{port}");
        let mut args = vec![
            "serve",
            "--listen",
            &listen_udp,
            "--listen",
            &listen_tcp,
            "--domain",
            "example.test",
        ];
        args.extend_from_slice(extra);
        let child = Command::new(sipfarm_bin())
            .args(&args)
            .env(
                "SIPFARM_LOG",
                std::env::var("SIPFARM_LOG").unwrap_or_else(|_| "sipfarm=warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("start sipfarm");
        let s = Sipfarm { port, child };
        let ua = Ua::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(r) = ua.try_request(
                s.addr(),
                &ua.options(&format!("sip:127.0.0.1:{port}")),
                Duration::from_millis(200),
            ) {
                if r.code == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "sipfarm did not start on {port}");
        }
        s
    }

    /// Start with the memcached farm `nodes`.
    pub fn with_farm(nodes: &[&Memcached], extra: &[&str]) -> Sipfarm {
        let list = nodes.iter().map(|m| m.addr()).collect::<Vec<_>>().join(",");
        let mut args = vec!["--memcached", list.as_str()];
        args.extend_from_slice(extra);
        Sipfarm::start(&args)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Sipfarm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, minimally read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub code: u16,
    pub text: String,
}

impl Resp {
    pub fn headers(&self, name: &str) -> Vec<String> {
        let lname = name.to_ascii_lowercase();
        self.text
            .split("\r\n")
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                (n.trim().to_ascii_lowercase() == lname).then(|| v.trim().to_owned())
            })
            .collect()
    }

    /// Contact URIs of a REGISTER answer, sorted.
    pub fn contacts(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .headers("contact")
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
}

impl Default for Ua {
    fn default() -> Self {
        Self::new()
    }
}

impl Ua {
    pub fn new() -> Ua {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        Ua { sock, port }
    }

    pub fn via(&self) -> String {
        format!(
            "SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK{};rport",
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

    /// Send a request and wait for its final response (provisional ones skipped).
    pub fn try_request(&self, to: SocketAddr, msg: &str, timeout: Duration) -> Option<Resp> {
        self.send(to, msg);
        let call_id = msg
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .unwrap_or("")
            .to_owned();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let text = self.recv(left.max(Duration::from_millis(1)))?;
            let Some(code) = text
                .strip_prefix("SIP/2.0 ")
                .and_then(|t| t.get(..3))
                .and_then(|c| c.parse::<u16>().ok())
            else {
                continue;
            };
            if code < 200 || !text.contains(&format!("Call-ID: {call_id}\r\n")) {
                continue;
            }
            return Some(Resp { code, text });
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

/// Read `n` responses from a stream (skipping CRLF keep-alive pongs).
pub fn read_tcp_responses(s: &mut TcpStream, n: usize) -> Vec<Resp> {
    let mut out: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while got.len() < n {
        // Parse every complete response in `out`.
        loop {
            let skip = out
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            out.drain(..skip);
            let text = String::from_utf8_lossy(&out).into_owned();
            let Some(end) = text.find("\r\n\r\n") else {
                break;
            };
            let cl = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() < end + 4 + cl {
                break;
            }
            let code = text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
            got.push(Resp {
                code,
                text: text[..end + 4 + cl].to_owned(),
            });
            out.drain(..end + 4 + cl);
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

/// A received SIP message, indexed with sipfarm's own parser (only to read it).
pub struct Sip {
    pub msg: sipfarm::sip::Message,
    pub text: String,
}

impl Sip {
    pub fn parse(text: &str) -> Sip {
        let msg = sipfarm::sip::Message::parse(
            bytes::Bytes::from(text.to_owned()),
            sipfarm::sip::Framing::Datagram,
            1 << 20,
        )
        .unwrap_or_else(|e| panic!("unparseable message ({e}):\n{text}"));
        Sip {
            msg,
            text: text.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let n = sipfarm::sip::HeaderName::from_wire(name);
        self.msg.get(&n).map(str::to_owned)
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        let n = sipfarm::sip::HeaderName::from_wire(name);
        self.msg
            .list(&n)
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    pub fn method(&self) -> Option<&str> {
        self.msg.method()
    }

    pub fn code(&self) -> Option<u16> {
        match &self.msg.start {
            sipfarm::sip::StartLine::Response { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn top_branch(&self) -> String {
        self.msg
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// A phone: a UA that registers and also answers requests.
pub struct Phone {
    pub ua: Ua,
    pub user: String,
    pub tag: String,
}

impl Phone {
    pub fn new(user: &str) -> Phone {
        Phone {
            ua: Ua::new(),
            user: user.to_owned(),
            tag: unique("tag"),
        }
    }

    pub fn contact(&self) -> String {
        format!("sip:{}@127.0.0.1:{}", self.user, self.ua.port)
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
            out.push_str(&format!("To: {to};tag={}\r\n", self.tag));
        }
        out.push_str(&format!(
            "Call-ID: {}\r\nCSeq: {}\r\n",
            req.header("Call-ID").unwrap(),
            req.header("CSeq").unwrap()
        ));
        out.push_str(&format!(
            "Contact: <{}>\r\n{extra}Content-Length: 0\r\n\r\n",
            self.contact()
        ));
        let via = req.msg.top_via().unwrap();
        let port = via
            .param("rport")
            .flatten()
            .and_then(|p| p.parse().ok())
            .or(via.port)
            .unwrap_or(5060);
        let host = via
            .param("received")
            .flatten()
            .unwrap_or(via.host_bare())
            .to_owned();
        self.ua
            .send(format!("{host}:{port}").parse().unwrap(), &out);
    }
}

/// Send a signal to a process this test started (by pid).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid}");
}

impl Memcached {
    pub fn freeze(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn thaw(&self) {
        signal(self.pid(), "CONT");
    }

    /// kill -9 now, as a crash would.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The arguments of a sipp client run against `target` with a scenario of tests/sipp: local
/// address on loopback, a free port (returned too), no keyboard, then `extra`.
pub fn sipp_client(target: SocketAddr, scenario: &str, extra: &[&str]) -> (Vec<String>, u16) {
    let port = free_port();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp");
    let mut args = vec![
        target.to_string(),
        "-sf".into(),
        dir.join(scenario).display().to_string(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-nostdin".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (args, port)
}

/// The path of a file of tests/sipp.
pub fn sipp_file(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
        .display()
        .to_string()
}

/// sipp's built-in uas on a free port, registered as `user@example.test` through `instance`
/// (a third-party REGISTER naming its address). Stop it with kill() on the child.
pub fn registered_uas(instance: SocketAddr, user: &str, extra: &[&str]) -> Child {
    let port = free_port();
    let ua = Ua::new();
    let r = ua.request(
        instance,
        &ua.register(
            user,
            &[&format!("<sip:{user}@127.0.0.1:{port}>")],
            Some(600),
            &unique("r"),
            1,
        ),
    );
    assert_eq!(r.code, 200, "{}", r.text);
    let child = Command::new(sipp_bin())
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-nostdin",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp must be installed (apt-get install sip-tester)");
    std::thread::sleep(Duration::from_millis(300));
    child
}
