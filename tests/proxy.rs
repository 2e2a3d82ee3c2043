//! Proxy black-box tests: two sipfarm instances over one real memcached farm; phones that
//! register through one instance are called through the other.

mod common;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

struct Farm {
    mc: Vec<Memcached>,
    a: Sipfarm,
    b: Sipfarm,
}

/// Both instances name the farm as `sip:example.test` in Record-Route (`--farm-uri`), so that
/// either takes a dialog's later requests: what these tests are about. Without it each
/// instance names itself (tests/real_phones.rs).
fn farm() -> Farm {
    let mc = vec![Memcached::start(), Memcached::start()];
    let refs: Vec<&Memcached> = mc.iter().collect();
    let farm_uri = ["--farm-uri", "sip:example.test"];
    let a = Sipfarm::with_farm(&refs, &farm_uri);
    let b = Sipfarm::with_farm(&refs, &farm_uri);
    Farm { mc, a, b }
}

impl Farm {
    fn gets(&self) -> u64 {
        self.mc.iter().map(|m| m.stat("cmd_get")).sum()
    }
}

fn invite(from: &Phone, to_user: &str, call_id: &str, cseq: u32, via_branch: &str) -> String {
    format!(
        "INVITE sip:{to_user}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={via_branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{}@example.test>;tag={}\r\nTo: <sip:{to_user}@example.test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <{}>\r\nContent-Type: application/sdp\r\nX-Unknown-Header: Keep Me ;odd=1\r\nContent-Length: 4\r\n\r\nv=0\n",
        from.ua.port,
        from.user,
        from.tag,
        from.contact()
    )
}

/// An in-dialog request from the caller, after a 200 with Record-Route: R-URI = the callee's
/// Contact, Route = the Record-Route set reversed.
fn in_dialog(method: &str, from: &Phone, ok: &Sip, cseq: u32, branch: &str) -> String {
    let mut routes = ok.all("Record-Route");
    routes.reverse();
    let target = ok.header("Contact").unwrap();
    let target = &target[target.find('<').unwrap() + 1..target.find('>').unwrap()];
    let mut m = format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={branch};rport\r\nMax-Forwards: 70\r\n",
        from.ua.port
    );
    for r in routes {
        m.push_str(&format!("Route: {r}\r\n"));
    }
    m.push_str(&format!(
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        ok.header("From").unwrap(),
        ok.header("To").unwrap(),
        ok.header("Call-ID").unwrap()
    ));
    m
}

/// The whole call, with the INVITE through `via_invite` and the ACK and BYE through
/// `via_dialog`; the BYE must not touch memcached.
fn call(f: &Farm, via_invite: SocketAddr, via_dialog: SocketAddr) {
    let alice = Phone::new(&unique("alice"));
    let bob = Phone::new(&unique("bob"));
    alice.register_via(f.a.addr());
    bob.register_via(f.b.addr());
    let cid = unique("call");
    alice.ua.send(
        via_invite,
        &invite(&alice, &bob.user, &cid, 1, &unique("z9hG4bKi")),
    );

    let inv = bob.wait_request("INVITE");
    assert_eq!(
        inv.request_uri(),
        Some(bob.contact().as_str()),
        "Request-URI set to the contact"
    );
    assert!(
        inv.text.contains("X-Unknown-Header: Keep Me ;odd=1\r\n"),
        "unknown header byte for byte"
    );
    assert!(inv.text.ends_with("\r\n\r\nv=0\n"), "body byte for byte");
    assert_eq!(inv.header("Max-Forwards").as_deref(), Some("69"));
    assert_eq!(inv.all("Via").len(), 2);
    assert!(inv.top_branch().starts_with("z9hG4bK"));
    let rr = unsigned_rr(&inv.all("Record-Route"));
    assert_eq!(
        rr,
        vec!["<sip:example.test;lr>".to_owned()],
        "Record-Route names the farm"
    );

    bob.respond(&inv, 180, "Ringing", "");
    bob.respond(&inv, 200, "OK", "");
    let ringing = alice.wait_response(180, "INVITE");
    assert_eq!(ringing.all("Via").len(), 1, "our Via removed");
    let ok = alice.wait_response(200, "INVITE");

    alice.ua.send(
        via_dialog,
        &in_dialog("ACK", &alice, &ok, 1, &unique("z9hG4bKa")),
    );
    let ack = bob.wait_request("ACK");
    assert_eq!(ack.request_uri(), Some(bob.contact().as_str()));
    assert!(ack.all("Route").is_empty(), "our Route entry removed");

    let gets_before = f.gets();
    alice.ua.send(
        via_dialog,
        &in_dialog("BYE", &alice, &ok, 2, &unique("z9hG4bKb")),
    );
    let bye = bob.wait_request("BYE");
    bob.respond(&bye, 200, "OK", "");
    let bye_ok = alice.wait_response(200, "BYE");
    assert_eq!(bye_ok.header("Call-ID"), Some(cid));
    assert_eq!(
        f.gets(),
        gets_before,
        "an in-dialog BYE does not touch memcached"
    );
}

#[test]
fn call_through_one_instance() {
    let f = farm();
    call(&f, f.a.addr(), f.a.addr());
}

#[test]
fn call_across_two_instances_bye_through_the_other() {
    let f = farm();
    call(&f, f.a.addr(), f.b.addr());
    call(&f, f.b.addr(), f.a.addr());
}

#[test]
fn message_delivered_and_answered() {
    let f = farm();
    let alice = Phone::new(&unique("alice"));
    let bob = Phone::new(&unique("bob"));
    bob.register_via(f.a.addr());
    let msg = format!(
        "MESSAGE sip:{}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{}@example.test>;tag={}\r\nTo: <sip:{}@example.test>\r\nCall-ID: {}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        bob.user,
        alice.ua.port,
        unique("z9hG4bKm"),
        alice.user,
        alice.tag,
        bob.user,
        unique("m")
    );
    alice.ua.send(f.b.addr(), &msg);
    let got = bob.wait_request("MESSAGE");
    assert!(got.text.ends_with("\r\n\r\nhello"));
    assert!(
        got.all("Record-Route").is_empty(),
        "no Record-Route on MESSAGE"
    );
    bob.respond(&got, 200, "OK", "");
    alice.wait_response(200, "MESSAGE");
}

#[test]
fn cancel_reaches_the_ringing_callee_and_487_comes_back() {
    let f = farm();
    let alice = Phone::new(&unique("alice"));
    let bob = Phone::new(&unique("bob"));
    bob.register_via(f.b.addr());
    let cid = unique("cancel");
    let ubranch = unique("z9hG4bKc");
    let inv_text = invite(&alice, &bob.user, &cid, 5, &ubranch);
    alice.ua.send(f.a.addr(), &inv_text);
    let inv = bob.wait_request("INVITE");
    bob.respond(&inv, 180, "Ringing", "");
    alice.wait_response(180, "INVITE");

    // CANCEL: same Request-URI, Via, Call-ID, From, To and CSeq number (RFC 3261 9.1).
    let cancel = format!(
        "CANCEL sip:{}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={ubranch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{}@example.test>;tag={}\r\nTo: <sip:{}@example.test>\r\nCall-ID: {cid}\r\nCSeq: 5 CANCEL\r\nContent-Length: 0\r\n\r\n",
        bob.user, alice.ua.port, alice.user, alice.tag, bob.user
    );
    alice.ua.send(f.a.addr(), &cancel);
    let c = bob.wait_request("CANCEL");
    assert_eq!(
        c.top_branch(),
        inv.top_branch(),
        "CANCEL carries the INVITE's branch (16.11)"
    );
    assert_eq!(
        c.request_uri(),
        inv.request_uri(),
        "CANCEL goes to the same binding"
    );
    bob.respond(&c, 200, "OK", "");
    bob.respond(&inv, 487, "Request Terminated", "");
    alice.wait_response(200, "CANCEL");
    let terminated = alice.wait_response(487, "INVITE");
    // The ACK for the 487: same branch as the INVITE downstream too.
    let ack = format!(
        "ACK sip:{}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={ubranch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{}@example.test>;tag={}\r\nTo: {}\r\nCall-ID: {cid}\r\nCSeq: 5 ACK\r\nContent-Length: 0\r\n\r\n",
        bob.user,
        alice.ua.port,
        alice.user,
        alice.tag,
        terminated.header("To").unwrap()
    );
    alice.ua.send(f.a.addr(), &ack);
    let a = bob.wait_request("ACK");
    assert_eq!(
        a.top_branch(),
        inv.top_branch(),
        "non-2xx ACK carries the INVITE's branch"
    );
}

#[test]
fn error_cases_404_480_483_482() {
    let f = farm();
    let alice = Phone::new(&unique("alice"));
    // 404: nobody by that name.
    alice.ua.send(
        f.a.addr(),
        &invite(&alice, "nobody-here", &unique("c"), 1, &unique("z9hG4bKn")),
    );
    let r = alice.wait_response(404, "INVITE");
    assert!(r.header("To").unwrap().contains("tag="));

    // 480: a user whose only binding was removed.
    let carol = Phone::new(&unique("carol"));
    carol.register_via(f.a.addr());
    let rm = carol.ua.register(
        &carol.user,
        &[&format!("<{}>", carol.contact())],
        Some(0),
        &unique("c"),
        2,
    );
    assert_eq!(carol.ua.request(f.b.addr(), &rm).code, 200);
    alice.ua.send(
        f.b.addr(),
        &invite(&alice, &carol.user, &unique("c"), 1, &unique("z9hG4bKr")),
    );
    alice.wait_response(480, "INVITE");

    // 483: Max-Forwards 0.
    let bob = Phone::new(&unique("bob"));
    bob.register_via(f.a.addr());
    let zero = invite(&alice, &bob.user, &unique("c"), 1, &unique("z9hG4bKz"))
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    alice.ua.send(f.a.addr(), &zero);
    alice.wait_response(483, "INVITE");

    // 482: the forwarded request comes back to the same instance unchanged (same
    // Request-URI, Call-ID, tags, CSeq and Route), with our Via in it.
    alice.ua.send(
        f.a.addr(),
        &invite(&alice, &bob.user, &unique("c"), 1, &unique("z9hG4bKl")),
    );
    let fwd = bob.wait_request("INVITE");
    let back = fwd.text.replacen(
        &format!("INVITE {} SIP/2.0", bob.contact()),
        &format!("INVITE sip:{}@example.test SIP/2.0", bob.user),
        1,
    );
    let back = back.replacen("Record-Route: <sip:example.test;lr>\r\n", "", 1);
    let back = format!(
        "INVITE sip:{}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={};rport\r\n{}",
        bob.user,
        bob.ua.port,
        unique("z9hG4bKloop"),
        &back[back.find("\r\n").unwrap() + 2..]
    );
    let back = back.replace("Max-Forwards: 69", "Max-Forwards: 70");
    bob.ua.send(f.a.addr(), &back);
    let r = bob
        .wait(Duration::from_secs(5), |m| m.code().is_some())
        .expect("an answer to the looping request");
    assert_eq!(r.code(), Some(482), "{}", r.text);
}

#[test]
fn options_to_the_instance_itself() {
    let f = farm();
    let ua = Ua::new();
    for s in [&f.a, &f.b] {
        for uri in [
            format!("sip:127.0.0.1:{}", s.port),
            format!("sip:ping@127.0.0.1:{}", s.port),
            "sip:example.test".to_owned(),
        ] {
            let r = ua.request(s.addr(), &ua.options(&uri));
            assert_eq!(r.code, 200, "{uri}");
            assert!(!r.headers("allow").is_empty());
        }
    }
}

#[test]
fn tcp_caller_udp_callee_gets_two_record_routes() {
    let f = farm();
    let bob = Phone::new(&unique("bob"));
    bob.register_via(f.a.addr());
    let caller = Phone::new(&unique("tcpcaller"));
    let inv = invite(&caller, &bob.user, &unique("t"), 1, &unique("z9hG4bKt"))
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let mut stream = std::net::TcpStream::connect(f.b.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    use std::io::Write;
    stream.write_all(inv.as_bytes()).unwrap();
    let got = bob.wait_request("INVITE");
    // The caller is on a flow of B (its TCP connection): both entries name B itself, the
    // caller-facing one with the flow's token (see tests/flows.rs for the dialog over it).
    let rr = unsigned_rr(&got.all("Record-Route"));
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert_eq!(rr[0], format!("<sip:{};lr>", f.b.addr()));
    assert!(
        rr[1].starts_with(&format!("<sip:{};transport=tcp;lr;sff=", f.b.addr())),
        "{rr:?}"
    );
    assert!(got.all("Via")[0].starts_with("SIP/2.0/UDP"));
    bob.respond(&got, 486, "Busy Here", "");
    // The response goes back on the caller's TCP connection.
    let r = read_tcp_response(&mut stream);
    assert_eq!(r.code, 486, "{}", r.text);
}

/// A foreign domain goes to the configured outbound proxy.
#[test]
fn foreign_domain_goes_to_the_outbound_proxy() {
    let edge = Phone::new("edge");
    let s = Sipfarm::start(&[
        "--outbound-proxy",
        &format!("sip:127.0.0.1:{};transport=udp", edge.ua.port),
    ]);
    let alice = Phone::new(&unique("alice"));
    let m = invite(&alice, "carol", &unique("f"), 1, &unique("z9hG4bKf")).replace(
        "sip:carol@example.test SIP/2.0",
        "sip:carol@elsewhere.test SIP/2.0",
    );
    alice.ua.send(s.addr(), &m);
    let got = edge.wait_request("INVITE");
    assert_eq!(
        got.request_uri(),
        Some("sip:carol@elsewhere.test"),
        "Request-URI kept"
    );
    edge.respond(&got, 603, "Decline", "");
    alice.wait_response(603, "INVITE");
}

/// A request too large for UDP (RFC 3261 18.1.1) reaches a callee whose contact names no
/// transport over TCP, and the callee's answer on that connection comes back over UDP.
#[test]
fn large_request_switches_to_tcp() {
    use std::io::{Read, Write};
    let f = farm();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ua = Ua::new();
    let r = ua.request(
        f.a.addr(),
        &ua.register(
            "bigbob",
            &[&format!("<sip:bigbob@127.0.0.1:{port}>")],
            Some(300),
            &unique("r"),
            1,
        ),
    );
    assert_eq!(r.code, 200);
    let alice = Phone::new(&unique("alice"));
    let body = "x".repeat(1500);
    let m = format!(
        "MESSAGE sip:bigbob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{}@example.test>;tag={}\r\nTo: <sip:bigbob@example.test>\r\nCall-ID: {}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        alice.ua.port,
        unique("z9hG4bKbig"),
        alice.user,
        alice.tag,
        unique("big"),
        body.len()
    );
    alice.ua.send(f.b.addr(), &m);
    // Bounded: a request sent elsewhere fails the test instead of hanging it.
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no TCP connection came"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).ends_with(&body) {
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let got = Sip::parse(&String::from_utf8_lossy(&buf));
    assert!(got.all("Via")[0].starts_with("SIP/2.0/TCP"), "{}", got.text);
    // Answer on the same connection.
    let mut resp = "SIP/2.0 200 OK\r\n".to_owned();
    for v in got.all("Via") {
        resp.push_str(&format!("Via: {v}\r\n"));
    }
    for h in ["From", "To", "Call-ID", "CSeq"] {
        resp.push_str(&format!("{h}: {}\r\n", got.header(h).unwrap()));
    }
    resp.push_str("Content-Length: 0\r\n\r\n");
    conn.write_all(resp.as_bytes()).unwrap();
    alice.wait_response(200, "MESSAGE");
}

/// RFC 3261 16.4: a strict router upstream put our Record-Route URI in the Request-URI and
/// the real target in the last Route: it is restored and the request reaches it.
#[test]
fn strict_router_request_uri_is_restored() {
    let f = farm();
    let bob = Phone::new(&unique("bob"));
    let alice = Phone::new(&unique("alice"));
    let m = format!(
        "BYE sip:example.test;lr SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={};rport\r\nMax-Forwards: 70\r\nRoute: <{}>\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:b@example.test>;tag=2\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        alice.ua.port,
        unique("z9hG4bKs"),
        bob.contact(),
        unique("strict")
    );
    alice.ua.send(f.a.addr(), &m);
    let got = bob.wait_request("BYE");
    assert_eq!(got.request_uri(), Some(bob.contact().as_str()));
    assert!(got.all("Route").is_empty(), "{}", got.text);
}
