//! Issue 11, phones reachable only over one flow, held by one instance (RFC 5626 5.3): a UDP
//! phone behind a port-restricted NAT, a TCP phone on its one connection. Each registers
//! through instance A and is called through instance B; B routes to A with A's flow token,
//! A delivers on the flow, and every later request of the dialog (ACK, BYE both ways,
//! re-INVITE) finds the flow again through the Record-Route. When A is gone, B answers 480
//! at once or uses the AOR's other binding; when the TCP connection of a phone behind NAT
//! closes, its binding stops being used (and stays listed until it expires).

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

fn farm() -> (Vec<Memcached>, Sipfarm, Sipfarm) {
    let mc = vec![Memcached::start(), Memcached::start()];
    let (a, b) = {
        let refs: Vec<&Memcached> = mc.iter().collect();
        (
            Sipfarm::with_farm(&refs, &[]),
            Sipfarm::with_farm(&refs, &[]),
        )
    };
    (mc, a, b)
}

/// A port-restricted NAT in front of one UA: the UA sends everything to `inside`; the NAT
/// sends it on from `public` (another loopback address, as a NAT's public side) to the one
/// server the UA uses, and lets in at `public` only datagrams from the address it last sent
/// to, which it hands to the UA.
struct Nat {
    inside: SocketAddr,
    public: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Nat {
    fn new(server: SocketAddr) -> Nat {
        let inside_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let public_sock = UdpSocket::bind("127.0.0.5:0").unwrap();
        let inside = inside_sock.local_addr().unwrap();
        let public = public_sock.local_addr().unwrap();
        for s in [&inside_sock, &public_sock] {
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut ua: Option<SocketAddr> = None;
            let mut dropped = 0u64;
            let mut buf = vec![0u8; 65536];
            while !halt.load(Ordering::Relaxed) {
                if let Ok((n, from)) = inside_sock.recv_from(&mut buf) {
                    ua = Some(from);
                    let _ = public_sock.send_to(&buf[..n], server);
                }
                if let Ok((n, from)) = public_sock.recv_from(&mut buf) {
                    match ua {
                        Some(to) if from == server => {
                            let _ = inside_sock.send_to(&buf[..n], to);
                        }
                        _ => dropped += 1,
                    }
                }
            }
            dropped
        });
        Nat {
            inside,
            public,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop; how many datagrams from elsewhere it kept out.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A request of a UA. `via` is its sent-by (`HOST:PORT`) and transport.
struct Req<'a> {
    method: &'a str,
    ruri: &'a str,
    via: (&'a str, &'a str),
    routes: &'a [String],
    from: &'a str,
    to: &'a str,
    call_id: &'a str,
    cseq: u32,
    contact: &'a str,
}

impl Req<'_> {
    fn text(&self) -> String {
        let mut m = format!(
            "{} {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={};rport\r\nMax-Forwards: 70\r\n",
            self.method,
            self.ruri,
            self.via.1,
            self.via.0,
            unique("z9hG4bKf")
        );
        for r in self.routes {
            m.push_str(&format!("Route: {r}\r\n"));
        }
        m.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContact: <{}>\r\nContent-Length: 0\r\n\r\n",
            self.from, self.to, self.call_id, self.cseq, self.method, self.contact
        ));
        m
    }
}

/// The URI inside the first `<...>` of a header value.
fn uri_of(v: &str) -> String {
    v.split('<')
        .nth(1)
        .and_then(|r| r.split('>').next())
        .unwrap_or(v)
        .to_owned()
}

/// The caller: a plain UDP phone that places calls through `via` and keeps the dialog.
struct Caller {
    phone: Phone,
}

/// One established dialog, as the caller sees it.
struct Dialog {
    call_id: String,
    from: String,
    to: String,
    callee_contact: String,
    /// The caller's route set: the 200's Record-Route reversed.
    routes: Vec<String>,
}

impl Caller {
    fn new() -> Caller {
        Caller {
            phone: Phone::new(&unique("carol")),
        }
    }

    fn via(&self) -> String {
        format!("127.0.0.1:{}", self.phone.ua.port)
    }

    fn invite(&self, callee: &str, to: SocketAddr) -> String {
        let call_id = unique("flowcall");
        let from = format!(
            "<sip:{}@example.test>;tag={}",
            self.phone.user, self.phone.tag
        );
        let ruri = format!("sip:{callee}@example.test");
        let text = Req {
            method: "INVITE",
            ruri: &ruri,
            via: (&self.via(), "UDP"),
            routes: &[],
            from: &from,
            to: &format!("<{ruri}>"),
            call_id: &call_id,
            cseq: 1,
            contact: &self.phone.contact(),
        }
        .text();
        self.phone.ua.send(to, &text);
        call_id
    }

    /// The final answer to the INVITE `call_id`.
    fn final_answer(&self, call_id: &str) -> Sip {
        self.phone
            .wait(WAIT, |m| {
                m.code().is_some_and(|c| c >= 200)
                    && m.header("Call-ID").as_deref() == Some(call_id)
            })
            .unwrap_or_else(|| panic!("no final answer to {call_id}"))
    }

    fn dialog(&self, ok: &Sip) -> Dialog {
        let mut routes = ok.all("Record-Route");
        routes.reverse();
        Dialog {
            call_id: ok.header("Call-ID").unwrap(),
            from: ok.header("From").unwrap(),
            to: ok.header("To").unwrap(),
            callee_contact: uri_of(&ok.header("Contact").unwrap()),
            routes,
        }
    }

    /// Send an in-dialog request along the route set (to its first entry).
    fn send_in_dialog(&self, d: &Dialog, method: &str, cseq: u32) {
        let text = Req {
            method,
            ruri: &d.callee_contact,
            via: (&self.via(), "UDP"),
            routes: &d.routes,
            from: &d.from,
            to: &d.to,
            call_id: &d.call_id,
            cseq,
            contact: &self.phone.contact(),
        }
        .text();
        let first = uri_of(&d.routes[0]);
        let hp = first
            .trim_start_matches("sip:")
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        self.phone.ua.send(hp.parse().unwrap(), &text);
    }
}

/// A UA's own in-dialog request toward the caller, built from the INVITE it received: the
/// Request-URI is the caller's Contact, the Route set the Record-Route as received.
fn callee_request(inv: &Sip, method: &str, via: (&str, &str), contact: &str, tag: &str) -> String {
    let routes = inv.all("Record-Route");
    Req {
        method,
        ruri: &uri_of(&inv.header("Contact").unwrap()),
        via,
        routes: &routes,
        from: &format!("{};tag={tag}", inv.header("To").unwrap()),
        to: &inv.header("From").unwrap(),
        call_id: &inv.header("Call-ID").unwrap(),
        cseq: 1,
        contact,
    }
    .text()
}

/// A UA on UDP behind a NAT: every datagram goes to the NAT's inside address.
struct NatUa {
    sock: UdpSocket,
    user: String,
    tag: String,
    nat: SocketAddr,
}

impl NatUa {
    fn new(nat: &Nat) -> NatUa {
        NatUa {
            sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
            user: unique("natted"),
            tag: unique("nt"),
            nat: nat.inside,
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// Its private address, as it believes it is: what its Contact says.
    fn contact(&self) -> String {
        format!("sip:{}@127.0.0.99:{}", self.user, self.port())
    }

    fn via(&self) -> String {
        format!("127.0.0.99:{}", self.port())
    }

    fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.nat).unwrap();
    }

    fn recv(&self, pred: impl Fn(&Sip) -> bool) -> Sip {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("{} got nothing it waited for", self.user));
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                let m = Sip::parse(&String::from_utf8_lossy(&buf[..n]));
                if pred(&m) {
                    return m;
                }
            }
        }
    }

    fn register(&self) {
        let text = Req {
            method: "REGISTER",
            ruri: "sip:example.test",
            via: (&self.via(), "UDP"),
            routes: &[],
            from: &format!("<sip:{}@example.test>;tag={}", self.user, self.tag),
            to: &format!("<sip:{}@example.test>", self.user),
            call_id: &unique("natreg"),
            cseq: 1,
            contact: &self.contact(),
        }
        .text()
        .replace("Content-Length: 0", "Expires: 300\r\nContent-Length: 0");
        self.send(&text);
        let ok = self.recv(|m| m.code().is_some());
        assert_eq!(ok.code(), Some(200), "{}", ok.text);
    }

    fn respond(&self, req: &Sip, code: u16, reason: &str) {
        self.send(&response_to(
            req,
            code,
            reason,
            &self.tag,
            &self.contact(),
            "",
        ));
    }
}

/// A called UA of these tests, whatever its transport.
trait Callee {
    fn user(&self) -> &str;
    fn contact(&self) -> String;
    fn recv_where(&mut self, pred: &dyn Fn(&Sip) -> bool) -> Sip;
    fn answer(&mut self, req: &Sip, code: u16, reason: &str);
}

impl Callee for NatUa {
    fn user(&self) -> &str {
        &self.user
    }
    fn contact(&self) -> String {
        NatUa::contact(self)
    }
    fn recv_where(&mut self, pred: &dyn Fn(&Sip) -> bool) -> Sip {
        self.recv(pred)
    }
    fn answer(&mut self, req: &Sip, code: u16, reason: &str) {
        self.respond(req, code, reason)
    }
}

impl Callee for TcpUa {
    fn user(&self) -> &str {
        &self.user
    }
    fn contact(&self) -> String {
        TcpUa::contact(self)
    }
    fn recv_where(&mut self, pred: &dyn Fn(&Sip) -> bool) -> Sip {
        self.recv(pred)
    }
    fn answer(&mut self, req: &Sip, code: u16, reason: &str) {
        self.respond(req, code, reason)
    }
}

/// `carol` calls `callee` through `via`; the callee gets the INVITE at its registered
/// contact, rings and answers; carol's ACK along the route set reaches it. The INVITE as the
/// callee got it, and carol's dialog.
fn establish(carol: &Caller, callee: &mut dyn Callee, via: SocketAddr) -> (Sip, Dialog) {
    let cid = carol.invite(callee.user(), via);
    let inv = callee.recv_where(&|m| m.method() == Some("INVITE"));
    assert_eq!(inv.request_uri(), Some(callee.contact().as_str()));
    callee.answer(&inv, 180, "Ringing");
    callee.answer(&inv, 200, "OK");
    let ok = carol.final_answer(&cid);
    assert_eq!(ok.code(), Some(200), "{}", ok.text);
    let d = carol.dialog(&ok);
    carol.send_in_dialog(&d, "ACK", 1);
    callee.recv_where(&|m| m.method() == Some("ACK"));
    (inv, d)
}

#[test]
fn nat_udp_phone_registered_through_a_is_called_through_b() {
    let (_mc, a, b) = farm();
    let nat = Nat::new(a.addr());
    let mut ua = NatUa::new(&nat);
    ua.register();
    let carol = Caller::new();

    // Call 1: the caller hangs up.
    let (_, d) = establish(&carol, &mut ua, b.addr());
    carol.send_in_dialog(&d, "BYE", 2);
    let bye = ua.recv(|m| m.method() == Some("BYE"));
    ua.respond(&bye, 200, "OK");
    carol.phone.wait_response(200, "BYE");

    // Call 2: the phone behind the NAT hangs up.
    let (inv, _) = establish(&carol, &mut ua, b.addr());
    ua.send(&callee_request(
        &inv,
        "BYE",
        (&ua.via(), "UDP"),
        &ua.contact(),
        &ua.tag,
    ));
    let bye = carol.phone.wait_request("BYE");
    carol.phone.respond(&bye, 200, "OK", "");
    let ok = ua.recv(|m| m.code().is_some());
    assert_eq!(ok.code(), Some(200), "{}", ok.text);
    assert!(nat.public.ip().is_loopback());
    nat.stop();
}

/// A UA on one TCP connection: every message in and out on it.
struct TcpUa {
    stream: TcpStream,
    buf: Vec<u8>,
    user: String,
    tag: String,
}

impl TcpUa {
    fn connect(to: SocketAddr, user: &str) -> TcpUa {
        let stream = TcpStream::connect(to).unwrap();
        TcpUa {
            stream,
            buf: Vec::new(),
            user: user.to_owned(),
            tag: unique("tt"),
        }
    }

    fn local(&self) -> String {
        self.stream.local_addr().unwrap().to_string()
    }

    /// A Contact nobody can connect to (as behind NAT): only the connection reaches it.
    fn contact(&self) -> String {
        format!("sip:{}@127.0.0.98:5060;transport=tcp", self.user)
    }

    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
    }

    fn recv(&mut self, pred: impl Fn(&Sip) -> bool) -> Sip {
        let deadline = Instant::now() + WAIT;
        let mut chunk = [0u8; 8192];
        loop {
            let skip = self
                .buf
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            self.buf.drain(..skip);
            if let Some(len) = framed_len(&self.buf) {
                let text = String::from_utf8_lossy(&self.buf[..len]).into_owned();
                self.buf.drain(..len);
                let m = Sip::parse(&text);
                if pred(&m) {
                    return m;
                }
                continue;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("{} got nothing it waited for", self.user));
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("{}: connection closed", self.user),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }

    fn register(&mut self) {
        let contact = self.contact();
        let text = Req {
            method: "REGISTER",
            ruri: "sip:example.test",
            via: (&self.local(), "TCP"),
            routes: &[],
            from: &format!("<sip:{}@example.test>;tag={}", self.user, self.tag),
            to: &format!("<sip:{}@example.test>", self.user),
            call_id: &unique("tcpreg"),
            cseq: 1,
            contact: &contact,
        }
        .text()
        .replace("Content-Length: 0", "Expires: 300\r\nContent-Length: 0");
        self.send(&text);
        let ok = self.recv(|m| m.code().is_some());
        assert_eq!(ok.code(), Some(200), "{}", ok.text);
    }

    fn respond(&mut self, req: &Sip, code: u16, reason: &str) {
        let text = response_to(req, code, reason, &self.tag, &self.contact(), "");
        self.send(&text);
    }
}

#[test]
fn tcp_phone_registered_through_a_is_called_through_b() {
    let (_mc, a, b) = farm();
    let mut ua = TcpUa::connect(a.addr(), &unique("tcpphone"));
    ua.register();
    let carol = Caller::new();
    let (inv, d) = establish(&carol, &mut ua, b.addr());

    // A re-INVITE from the caller, along the route set (B first): on the same connection.
    carol.send_in_dialog(&d, "INVITE", 2);
    let reinv = ua.recv(|m| m.method() == Some("INVITE"));
    assert!(reinv.header("To").unwrap().contains("tag="));
    ua.respond(&reinv, 200, "OK");
    let ok2 = carol.phone.wait_response(200, "INVITE");
    assert_eq!(ok2.header("Call-ID"), Some(d.call_id.clone()));
    carol.send_in_dialog(&d, "ACK", 2);
    ua.recv(|m| m.method() == Some("ACK"));

    // The callee hangs up, on its connection.
    let bye = callee_request(&inv, "BYE", (&ua.local(), "TCP"), &ua.contact(), &ua.tag);
    ua.send(&bye);
    let got = carol.phone.wait_request("BYE");
    carol.phone.respond(&got, 200, "OK", "");
    let ok = ua.recv(|m| m.code().is_some());
    assert_eq!(ok.code(), Some(200), "{}", ok.text);
}

#[test]
fn owner_stopped_gives_480_or_the_other_binding_until_registered_again() {
    let (_mc, a, b) = farm();
    let user = unique("owned");
    let mut ua = TcpUa::connect(a.addr(), &user);
    ua.register();
    drop(a);

    // Only the binding whose flow A held: 480, at once (the connection to A is refused).
    let carol = Caller::new();
    let started = Instant::now();
    let cid = carol.invite(&user, b.addr());
    let r = carol.final_answer(&cid);
    assert_eq!(r.code(), Some(480), "{}", r.text);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Another binding of the AOR (lower q), registered through B: the call reaches it.
    let desk = Phone::new(&user);
    let reg = desk.ua.register(
        &user,
        &[&format!("<{}>;q=0.5", desk.contact())],
        Some(300),
        &unique("desk"),
        1,
    );
    assert_eq!(desk.ua.request(b.addr(), &reg).code, 200);
    carol.invite(&user, b.addr());
    let inv = desk.wait_request("INVITE");
    desk.respond(&inv, 486, "Busy Here", "");

    // The TCP phone registers again, through B: it is called on its new connection.
    let mut ua = TcpUa::connect(b.addr(), &user);
    ua.register();
    let cid = carol.invite(&user, b.addr());
    let inv = ua.recv(|m| m.method() == Some("INVITE"));
    ua.respond(&inv, 200, "OK");
    assert_eq!(carol.final_answer(&cid).code(), Some(200));
}

#[test]
fn a_closed_tcp_flow_is_not_used_again() {
    let (_mc, a, b) = farm();
    let user = unique("closing");
    let mut ua = TcpUa::connect(a.addr(), &user);
    ua.register();
    let desk = Phone::new(&user);
    let reg = desk.ua.register(
        &user,
        &[&format!("<{}>;q=0.5", desk.contact())],
        Some(300),
        &unique("desk"),
        1,
    );
    assert_eq!(desk.ua.request(b.addr(), &reg).code, 200);
    drop(ua);

    // A marks the binding of the closed connection: B no longer routes to it (A would answer
    // 430 Flow Failed, which a stateless B cannot turn into its next binding) but to the desk
    // phone, once A has written it (bounded wait). Still listed, until it expires.
    let carol = Caller::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let cid = carol.invite(&user, b.addr());
        if let Some(inv) = desk.wait(Duration::from_millis(500), |m| m.method() == Some("INVITE")) {
            desk.respond(&inv, 486, "Busy Here", "");
            break;
        }
        let r = carol.final_answer(&cid);
        assert_eq!(r.code(), Some(430), "{}", r.text);
        assert!(Instant::now() < deadline, "the closed flow is still used");
    }
    let fetch = desk.ua.request(
        b.addr(),
        &desk.ua.register(&user, &[], None, &unique("fetch"), 1),
    );
    assert_eq!(fetch.contacts().len(), 2, "{}", fetch.text);
    drop(a);
}

/// RFC 5626 outbound: a UA that says `Supported: outbound` and registers a contact with
/// `reg-id` and `+sip.instance` is told its flow is used (`Require: outbound`) and how often
/// to keep it alive (`Flow-Timer`: 120 s over TCP, 29 s over UDP); its double-CRLF ping on TCP
/// gets a CRLF pong on the same connection. Without outbound: neither header.
#[test]
fn outbound_registrations_get_require_and_flow_timer() {
    let s = Sipfarm::start(&[]);
    let outbound = |contact: &str, via: &str, proto: &str| {
        Req {
            method: "REGISTER",
            ruri: "sip:example.test",
            via: (via, proto),
            routes: &[],
            from: "<sip:ob@example.test>;tag=ob1",
            to: "<sip:ob@example.test>",
            call_id: &unique("ob"),
            cseq: 1,
            contact,
        }
        .text()
        .replace(
            "Content-Length: 0",
            "Supported: outbound, path\r\nExpires: 300\r\nContent-Length: 0",
        )
        .replace(
            &format!("<{contact}>"),
            &format!("<{contact}>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-00000000000{}>\"", proto.len()),
        )
    };
    // TCP.
    let mut ua = TcpUa::connect(s.addr(), "ob");
    let text = outbound(&ua.contact(), &ua.local(), "TCP");
    ua.send(&text);
    let ok = ua.recv(|m| m.code().is_some());
    assert_eq!(ok.code(), Some(200), "{}", ok.text);
    assert_eq!(
        ok.header("Require").as_deref(),
        Some("outbound"),
        "{}",
        ok.text
    );
    assert_eq!(
        ok.header("Flow-Timer").as_deref(),
        Some("120"),
        "{}",
        ok.text
    );
    ua.stream.write_all(b"\r\n\r\n").unwrap();
    ua.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut pong = [0u8; 2];
    ua.stream.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n", "a CRLF pong");

    // UDP.
    let phone = Phone::new("ob");
    let via = format!("127.0.0.1:{}", phone.ua.port);
    let r = phone
        .ua
        .request(s.addr(), &outbound(&phone.contact(), &via, "UDP"));
    assert_eq!(r.code, 200, "{}", r.text);
    let got = Sip::parse(&r.text);
    assert_eq!(
        got.header("Flow-Timer").as_deref(),
        Some("29"),
        "{}",
        r.text
    );

    // No outbound asked: no Require, no Flow-Timer.
    let plain = phone.ua.register(
        "plain",
        &[&format!("<{}>", phone.contact())],
        Some(300),
        &unique("p"),
        1,
    );
    let r = phone.ua.request(s.addr(), &plain);
    let got = Sip::parse(&r.text);
    assert!(
        got.header("Require").is_none() && got.header("Flow-Timer").is_none(),
        "{}",
        r.text
    );
}

/// UAs on TCP that are not behind NAT (the Via names their own address; they connect from
/// an ephemeral port, as TCP does, and listen on their Contact's port) and register over one
/// short-lived connection, as sipp does, ten AORs on it (more than an instance tracks per
/// connection): once that connection is closed each is reached at its Contact, over a new
/// connection, through either instance. A source port that differs from the Via's is no sign
/// of NAT on TCP, and a flow that is gone but was never marked closed falls back to the
/// Contact.
#[test]
fn tcp_uas_registered_over_a_closed_connection_are_reached_at_their_contact() {
    use std::io::{Read, Write};
    let (_mc, a, b) = farm();
    let users: Vec<String> = (0..10).map(|_| unique("tcpcontact")).collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ua = Ua::new();
    let mut conn = std::net::TcpStream::connect(a.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for user in &users {
        let contact = format!("<sip:{user}@127.0.0.1:{port};transport=tcp>");
        let reg = ua
            .register(user, &[&contact], Some(300), &unique("tc"), 1)
            .replace(
                &format!("SIP/2.0/UDP 127.0.0.1:{}", ua.port),
                &format!("SIP/2.0/TCP 127.0.0.1:{port}"),
            );
        conn.write_all(reg.as_bytes()).unwrap();
        assert_eq!(read_tcp_response(&mut conn).code, 200);
    }
    drop(conn);
    std::thread::sleep(Duration::from_millis(300));

    for (n, user) in users.iter().enumerate() {
        let msg = format!(
            "MESSAGE sip:{user}@example.test SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:carol@example.test>;tag=m1\r\nTo: <sip:{user}@example.test>\r\nCall-ID: {}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
            ua.via(),
            unique("m")
        );
        ua.send(if n % 2 == 0 { a.addr() } else { b.addr() }, &msg);
    }
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut open = Vec::new();
    let mut got = String::new();
    while users
        .iter()
        .any(|u| !got.contains(&format!("MESSAGE sip:{u}@127.0.0.1:{port}")))
    {
        if let Ok((s, _)) = listener.accept() {
            s.set_nonblocking(true).unwrap();
            open.push(s);
        }
        let mut buf = [0u8; 8192];
        for s in &mut open {
            if let Ok(n) = s.read(&mut buf) {
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every UA was reached at its Contact:\n{got}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
