//! Registrar black-box tests (RFC 3261 10.3, RFC 3327 Path): real sipfarm processes, real
//! memcached processes. The same rule tests run against the embedded memory store and
//! against a two-node farm with two instances (each request alternating between them).
//! What only a farm does (concurrent writers, the layout in memcached, a frozen node) is in
//! registrar_farm.rs.

mod common;
use common::*;
use std::time::Duration;

fn rules(s: &Setup) {
    let ua = Ua::new();
    let user = unique("u");
    let c1 = format!("sip:{user}@127.0.0.1:{}", ua.port);
    let c2 = format!("sip:{user}@127.0.0.1:7000;transport=tcp");

    // Register through one instance, query through the other.
    let cid = unique("c");
    let r = ua.request(
        s.at(0),
        &ua.register(&user, &[&format!("<{c1}>;q=0.7")], Some(300), &cid, 1),
    );
    assert_eq!(r.code, 200, "{}", r.text);
    assert_eq!(r.contacts(), vec![c1.clone()]);
    assert!(
        !r.headers("date").is_empty(),
        "200 OK to REGISTER carries Date"
    );
    let q = ua.request(s.at(1), &ua.register(&user, &[], None, &unique("c"), 1));
    assert_eq!(q.code, 200);
    assert_eq!(q.contacts(), vec![c1.clone()]);
    assert!(q.headers("contact")[0].contains("q=0.7"), "{}", q.text);

    // Same user with a port in the To URI is the same AOR.
    let port_form = ua.register(&user, &[], None, &unique("c"), 1).replace(
        &format!("To: <sip:{user}@example.test>"),
        &format!("To: <sip:{user}@EXAMPLE.test:5060>"),
    );
    assert_eq!(ua.request(s.at(1), &port_form).contacts(), vec![c1.clone()]);

    // A retransmission (same Call-ID and CSeq) gets 200 and changes nothing.
    let retrans = ua.register(&user, &[&format!("<{c1}>")], Some(3000), &cid, 1);
    let r = ua.request(s.at(1), &retrans);
    assert_eq!(r.code, 200);
    let e = expires_of(&r, &c1).unwrap();
    assert!(e <= 300, "retransmission must not refresh: expires={e}");

    // A lower CSeq on the same Call-ID fails and changes nothing.
    let r = ua.request(
        s.at(0),
        &ua.register(&user, &[&format!("<{c1}>")], Some(0), &cid, 0),
    );
    assert!(r.code >= 400, "{}", r.text);
    assert_eq!(
        ua.request(s.at(1), &ua.register(&user, &[], None, &unique("c"), 1))
            .contacts(),
        vec![c1.clone()]
    );

    // A second contact in one header with a comma, plus a third in another header.
    let c3 = format!("sip:{user}@[::1]:5070");
    let both = ua.register(
        &user,
        &[&format!("<{c2}>, <{c3}>;expires=200")],
        Some(250),
        &cid,
        2,
    );
    let r = ua.request(s.at(0), &both);
    assert_eq!(r.code, 200, "{}", r.text);
    let mut want = vec![c1.clone(), c2.clone(), c3.clone()];
    want.sort();
    assert_eq!(r.contacts(), want);
    assert_eq!(expires_of(&r, &c3), Some(200));
    assert!(expires_of(&r, &c2).unwrap() <= 250);

    // Below the minimum: 423 with Min-Expires.
    let r = ua.request(
        s.at(1),
        &ua.register(&user, &[&format!("<{c1}>")], Some(5), &cid, 3),
    );
    assert_eq!(r.code, 423);
    assert_eq!(r.headers("min-expires"), vec!["60"]);
    // Above the maximum: clamped.
    let r = ua.request(
        s.at(1),
        &ua.register(&user, &[&format!("<{c1}>")], Some(999_999_999), &cid, 4),
    );
    assert_eq!(expires_of(&r, &c1), Some(86400));

    // Expires 0 on one contact removes it only.
    let r = ua.request(
        s.at(0),
        &ua.register(&user, &[&format!("<{c2}>")], Some(0), &cid, 5),
    );
    assert_eq!(r.code, 200);
    let mut want = vec![c1.clone(), c3.clone()];
    want.sort();
    assert_eq!(r.contacts(), want);

    // Contact: * without Expires: 0 is refused; with it removes everything.
    let r = ua.request(s.at(1), &ua.register(&user, &["*"], Some(60), &cid, 6));
    assert_eq!(r.code, 400);
    let r = ua.request(s.at(1), &ua.register(&user, &["*"], Some(0), &cid, 7));
    assert_eq!(r.code, 200);
    assert!(r.contacts().is_empty());
    assert!(
        ua.request(s.at(0), &ua.register(&user, &[], None, &unique("c"), 1))
            .contacts()
            .is_empty()
    );

    // Not our domain, not a SIP AOR.
    let foreign = ua
        .register(&user, &[&format!("<{c1}>")], Some(60), &unique("c"), 1)
        .replace("@example.test>", "@elsewhere.test>");
    assert_eq!(ua.request(s.at(0), &foreign).code, 404);
    let tel = ua
        .register(&user, &[&format!("<{c1}>")], Some(60), &unique("c"), 1)
        .replace(
            &format!("To: <sip:{user}@example.test>"),
            "To: <tel:+15551234>",
        );
    assert_eq!(ua.request(s.at(0), &tel).code, 400);

    // Require with an unknown option tag: 420 with Unsupported.
    let req = ua.register(&user, &[], None, &unique("c"), 1).replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRequire: nonsense, path\r\n",
    );
    let r = ua.request(s.at(0), &req);
    assert_eq!(r.code, 420);
    assert_eq!(r.headers("unsupported"), vec!["nonsense"]);
}

fn path_and_limits(s: &Setup) {
    let ua = Ua::new();
    let user = unique("p");
    let cid = unique("c");
    let req = ua
        .register(&user, &["<sip:p@127.0.0.1:6000>"], Some(120), &cid, 1)
        .replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nPath: <sip:edge1.example.test;lr>\r\nPath: <sip:edge2.example.test;lr>\r\nSupported: path\r\n");
    let r = ua.request(s.at(0), &req);
    assert_eq!(r.code, 200, "{}", r.text);
    assert_eq!(
        r.headers("path"),
        vec!["<sip:edge1.example.test;lr>", "<sip:edge2.example.test;lr>"]
    );

    // The limit of contacts per AOR (10 by default).
    let contacts: Vec<String> = (0..10)
        .map(|i| format!("<sip:p@127.0.0.1:{}>", 6001 + i))
        .collect();
    let refs: Vec<&str> = contacts.iter().map(String::as_str).collect();
    let r = ua.request(s.at(1), &ua.register(&user, &refs, Some(120), &cid, 2));
    assert_eq!(r.code, 403, "{}", r.text);
    assert!(r.text.contains("Too Many Contacts"));
    let r = ua.request(s.at(1), &ua.register(&user, &refs[..9], Some(120), &cid, 3));
    assert_eq!(r.code, 200);
    assert_eq!(r.contacts().len(), 10);
}

fn expiry(s: &Setup) {
    let ua = Ua::new();
    let user = unique("e");
    let r = ua.request(
        s.at(0),
        &ua.register(&user, &["<sip:e@127.0.0.1:6100>"], Some(1), &unique("c"), 1),
    );
    assert_eq!(r.code, 200);
    assert_eq!(r.contacts().len(), 1);
    std::thread::sleep(Duration::from_millis(2200));
    let q = ua.request(s.at(1), &ua.register(&user, &[], None, &unique("c"), 1));
    assert!(
        q.contacts().is_empty(),
        "expired binding still listed: {}",
        q.text
    );
}

/// User parts that try to smuggle memcached commands or break key limits leave every other
/// binding alone.
fn hostile_users(s: &Setup) {
    let ua = Ua::new();
    let victim = unique("v");
    let cv = "sip:victim@127.0.0.1:6200";
    assert_eq!(
        ua.request(
            s.at(0),
            &ua.register(&victim, &[&format!("<{cv}>")], Some(600), &unique("c"), 1)
        )
        .code,
        200
    );
    let long = "a".repeat(300);
    for user in [
        "%0D%0Aflush_all%0D%0A",
        "%0d%0adelete%20x%0d%0a",
        "with%20spaces%20get%20x",
        "delete",
        long.as_str(),
        "flush_all",
    ] {
        let r = ua.request(
            s.at(1),
            &ua.register(
                user,
                &["<sip:evil@127.0.0.1:6201>"],
                Some(600),
                &unique("c"),
                1,
            ),
        );
        assert_eq!(r.code, 200, "user {user}: {}", r.text);
        let q = ua.request(s.at(0), &ua.register(user, &[], None, &unique("c"), 1));
        assert_eq!(
            q.contacts(),
            vec!["sip:evil@127.0.0.1:6201".to_owned()],
            "user {user}"
        );
        let r = ua.request(
            s.at(0),
            &ua.register(user, &["*"], Some(0), &unique("c"), 1),
        );
        assert_eq!(r.code, 200);
    }
    let q = ua.request(s.at(1), &ua.register(&victim, &[], None, &unique("c"), 1));
    assert_eq!(q.contacts(), vec![cv.to_owned()]);
}

fn tcp_transport(s: &Setup) {
    let ua = Ua::new();
    let user = unique("t");
    let req = ua
        .register(
            &user,
            &["<sip:t@127.0.0.1:6300;transport=tcp>"],
            Some(120),
            &unique("c"),
            1,
        )
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    // Split over several writes, then two messages in one write.
    let mut stream = std::net::TcpStream::connect(s.at(0)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    use std::io::Write;
    let (a, b) = req.split_at(40);
    stream.write_all(a.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stream.write_all(b.as_bytes()).unwrap();
    let r = read_tcp_response(&mut stream);
    assert_eq!(r.code, 200, "{}", r.text);
    let q1 = ua
        .register(&user, &[], None, &unique("c"), 1)
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let q2 = ua
        .register(&user, &[], None, &unique("c"), 2)
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    stream
        .write_all(format!("{q1}\r\n\r\n{q2}").as_bytes())
        .unwrap();
    let rs = read_tcp_responses(&mut stream, 2);
    assert_eq!((rs[0].code, rs[1].code), (200, 200));
    assert_eq!(
        rs[0].contacts(),
        vec!["sip:t@127.0.0.1:6300;transport=tcp".to_owned()]
    );
}

#[test]
fn memory_store_rules() {
    let s = Setup::memory(&[]);
    rules(&s);
    path_and_limits(&s);
    hostile_users(&s);
    tcp_transport(&s);
}

#[test]
fn memory_store_expiry() {
    expiry(&Setup::memory(&["--min-expires", "1"]));
}

#[test]
fn farm_rules_across_two_instances() {
    let s = Setup::farm(&[]);
    rules(&s);
    path_and_limits(&s);
    hostile_users(&s);
    tcp_transport(&s);
}

#[test]
fn farm_rules_with_the_crate_client_beside_the_pipelined_one() {
    let s = Setup::farm_mixed_clients();
    rules(&s);
    hostile_users(&s);
}

#[test]
fn farm_expiry() {
    expiry(&Setup::farm(&["--min-expires", "1"]));
}
