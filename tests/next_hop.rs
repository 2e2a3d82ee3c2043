//! Where a request may go, with real processes: SIPS is never downgraded to UDP/TCP (RFC 3261
//! 26.2.2, RFC 5630; sipfarm has no TLS yet), `maddr` is where a request goes and is checked
//! like any destination a request chose (RFC 3261 19.1.1, 16.5; RFC 3263 4), and SRV targets
//! are tried in order when one cannot be reached (RFC 3263 4.3, RFC 2782), against a real
//! DNS server (dnsmasq) on 127.0.0.1.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// A MESSAGE to `ruri` from `from`, with extra header lines.
fn message(from: &Ua, ruri: &str, extra: &str) -> String {
    format!(
        "MESSAGE {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n{extra}From: <sip:alice@example.test>;tag={}\r\nTo: <{ruri}>\r\nCall-ID: {}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
        from.via(),
        unique("t"),
        unique("c")
    )
}

/// The final answer to `msg` sent from `ua` to `to` (one try, bounded wait).
fn answer(ua: &Ua, to: SocketAddr, msg: &str) -> Resp {
    ua.try_request(to, msg, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no answer to:\n{msg}"))
}

/// The next final answer `ua` receives for this Call-ID, without sending anything.
fn final_answer(ua: &Ua, call_id: Option<&str>) -> Sip {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .expect("no final answer");
        let Some(text) = ua.recv(left) else { continue };
        let m = Sip::parse(&text);
        if m.code().is_some_and(|c| c >= 200) && m.header("Call-ID").as_deref() == call_id {
            return m;
        }
    }
}

/// Nothing reaches `phone` for a while (what was refused was not forwarded anyway).
fn nothing_reaches(phone: &Phone) {
    let got = phone.wait(Duration::from_millis(700), |m| m.method().is_some());
    assert!(got.is_none(), "forwarded anyway:\n{}", got.unwrap().text);
}

#[test]
fn sips_requests_are_refused_never_downgraded() {
    let s = Sipfarm::start(&[]);
    let bob = Phone::new(&unique("bob"));
    bob.register_via(s.addr());
    let ua = Ua::new();
    // A SIPS Request-URI for a registered user over UDP: the binding is sip:, but a SIPS
    // request may only leave over TLS.
    let inv =
        message(&ua, &format!("sips:{}@example.test", bob.user), "").replace("MESSAGE", "INVITE");
    let r = answer(&ua, s.addr(), &inv);
    assert_eq!(r.code, 416, "{}", r.text);
    nothing_reaches(&bob);
    // A Route the request chose that is sips:, toward a listening UA.
    let m = message(
        &ua,
        &bob.contact(),
        &format!("Route: <sips:{}:{};lr>\r\n", bob.ua.ip, bob.ua.port),
    );
    let r = answer(&ua, s.addr(), &m);
    assert_eq!(r.code, 416, "{}", r.text);
    nothing_reaches(&bob);
}

/// RFC 3261 10.2.1, 26.2.2: over a plain transport, a REGISTER whose Request-URI or Contact
/// is SIPS is refused (the binding could only be reached over TLS); a SIPS address-of-record
/// with sip: contacts is the same user and is accepted.
#[test]
fn sips_registrations_over_plain_transport() {
    let s = Sipfarm::start(&[]);
    let ua = Ua::new();
    let user = unique("carol");
    let contact = format!("<sip:{user}@127.0.0.1:{}>", ua.port);
    let reg = ua.register(&user, &[&contact], Some(300), &unique("r"), 1);
    let sips_ruri = reg.replacen("REGISTER sip:example.test", "REGISTER sips:example.test", 1);
    assert_eq!(answer(&ua, s.addr(), &sips_ruri).code, 416);
    let sips_contact = ua.register(
        &user,
        &[&format!("<sips:{user}@127.0.0.1:{}>", ua.port)],
        Some(300),
        &unique("r"),
        1,
    );
    let r = answer(&ua, s.addr(), &sips_contact);
    assert_eq!(r.code, 416, "{}", r.text);
    let sips_aor = reg.replace(
        &format!("<sip:{user}@example.test>"),
        &format!("<sips:{user}@example.test>"),
    );
    let r = answer(&ua, s.addr(), &sips_aor);
    assert_eq!(r.code, 200, "{}", r.text);
    assert_eq!(r.contacts().len(), 1, "{}", r.text);
}

#[test]
fn maddr_is_where_the_request_goes() {
    // The host does not resolve (and no DNS server answers): only maddr can be used.
    let s = Sipfarm::start(&["--dns-server", "127.0.0.1:9"]);
    let bob = Phone::new(&unique("bob"));
    let ua = Ua::new();
    let ruri = format!(
        "sip:{}@nowhere.invalid:{};maddr=127.0.0.1",
        bob.user, bob.ua.port
    );
    ua.send(s.addr(), &message(&ua, &ruri, ""));
    let got = bob.wait_request("MESSAGE");
    assert_eq!(got.request_uri(), Some(ruri.as_str()));
}

/// A maddr is a destination the request chose: one naming a memcached node of the farm (on
/// a host of its own) or a denied network is refused, whatever the URI's host says.
#[test]
fn maddr_toward_a_farm_node_or_denied_network_is_refused() {
    let mc = Memcached::start_at("127.0.0.3");
    let dir = TempDir::new("sipfarm-maddr-");
    let cfg = dir.join("deny.toml");
    std::fs::write(&cfg, "[proxy]\ndeny = [\"127.0.0.4/32\"]\n").unwrap();
    let s = Sipfarm::with_farm(&[&mc], &["--config", cfg.to_str().unwrap()]);
    let bob = Phone::new(&unique("bob"));
    let ua = Ua::new();
    for maddr in ["127.0.0.3", "127.0.0.4"] {
        let ruri = format!("sip:x@127.0.0.1:{};maddr={maddr}", bob.ua.port);
        let r = answer(&ua, s.addr(), &message(&ua, &ruri, ""));
        assert_eq!(r.code, 403, "maddr={maddr}: {}", r.text);
        nothing_reaches(&bob);
    }
}

/// A TCP port nobody listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// dnsmasq for three names: `srv.test` (priority 10 a closed port, priority 20 a
/// listening UA), `gone.test` (priority 10 a name without address, priority 20 the UA) and
/// `dead.test` (two closed ports).
fn dns(listening: u16) -> Dnsmasq {
    let (c1, c2, c3) = (closed_port(), closed_port(), closed_port());
    Dnsmasq::start(&[
        format!("--srv-host=_sip._tcp.srv.test,a.srv.test,{c1},10,0"),
        format!("--srv-host=_sip._tcp.srv.test,b.srv.test,{listening},20,0"),
        format!("--srv-host=_sip._tcp.gone.test,nothing.gone.test,{listening},10,0"),
        format!("--srv-host=_sip._tcp.gone.test,b.srv.test,{listening},20,0"),
        format!("--srv-host=_sip._tcp.dead.test,a.srv.test,{c2},10,0"),
        format!("--srv-host=_sip._tcp.dead.test,a.srv.test,{c3},20,0"),
        "--host-record=a.srv.test,127.0.0.1".to_owned(),
        "--host-record=b.srv.test,127.0.0.1".to_owned(),
    ])
}

/// The next connection to `listener`, within a bounded wait.
fn accept(listener: &TcpListener) -> std::net::TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                return conn;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "nothing connected to the second SRV target"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Read one request from an accepted connection.
fn read_request(conn: &mut std::net::TcpStream) -> Sip {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).ends_with("\r\n\r\nhi") {
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    Sip::parse(&String::from_utf8_lossy(&buf))
}

/// Answer `req` on the connection it came on.
fn respond(conn: &mut std::net::TcpStream, req: &Sip, code: u16) {
    let mut resp = format!("SIP/2.0 {code} OK\r\n");
    for v in req.all("Via") {
        resp.push_str(&format!("Via: {v}\r\n"));
    }
    for h in ["From", "To", "Call-ID", "CSeq"] {
        resp.push_str(&format!("{h}: {}\r\n", req.header(h).unwrap()));
    }
    resp.push_str("Content-Length: 0\r\n\r\n");
    conn.write_all(resp.as_bytes()).unwrap();
}

/// RFC 3263 4.3: the first SRV target (priority 10) refuses the TCP connection, or has no
/// address; the request reaches the second (priority 20), and its answer comes back.
#[test]
fn srv_fails_over_to_the_next_target() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dns = dns(port);
    let s = Sipfarm::start(&["--dns-server", &dns.addr.to_string()]);
    let ua = Ua::new();
    for domain in ["srv.test", "gone.test"] {
        let ruri = format!("sip:carol@{domain};transport=tcp");
        let m = message(&ua, &ruri, "");
        ua.send(s.addr(), &m);
        let mut conn = accept(&listener);
        let got = read_request(&mut conn);
        assert_eq!(got.request_uri(), Some(ruri.as_str()));
        assert!(got.all("Via")[0].starts_with("SIP/2.0/TCP"), "{}", got.text);
        respond(&mut conn, &got, 200);
        let call_id = Sip::parse(&m).header("Call-ID");
        let r = final_answer(&ua, call_id.as_deref());
        assert_eq!(r.code(), Some(200), "{domain}: {}", r.text);
        drop(conn);
    }
}

/// Every SRV target refuses: the caller gets 503 (not silence).
#[test]
fn srv_targets_all_unreachable_give_503() {
    let dns = dns(closed_port());
    let s = Sipfarm::start(&["--dns-server", &dns.addr.to_string()]);
    let ua = Ua::new();
    let r = answer(
        &ua,
        s.addr(),
        &message(&ua, "sip:carol@dead.test;transport=tcp", ""),
    );
    assert_eq!(r.code, 503, "{}", r.text);
}
