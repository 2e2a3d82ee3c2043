//! Who may send what where, through a farm with authentication on (two instances, two
//! memcached nodes on 127.0.0.11/12, one users file, one nonce secret):
//!
//! - the farm's memcached nodes are never a destination, whoever asks and however (Request-URI
//!   with any port and transport, a Route, a trusted peer): a SIP request must never reach the
//!   location store as memcached commands (`flush_all`);
//! - RFC 3261 22.3 (407 with Proxy-Authenticate, realm = the From domain, one per algorithm
//!   in the default `auth.algorithms` order: MD5, SHA-256) and 26.1 / 26.3.2.2 (no open relay): a foreign user reaches only our users;
//!   a local user reaches a foreign domain only with credentials, its own;
//! - trusted peers (`[auth] trusted`) are never challenged;
//! - `[proxy] deny`: a destination that the request chose (Request-URI, Route) in a denied
//!   network is refused 403; a registered contact there is still reached;
//! - RFC 2617 3.2.2.5 / RFC 7616 3.4: credentials are for the request's own Request-URI
//!   (digest `uri`), not for another destination;
//! - RFC 3261 16.4: the no-relay rule holds for the Request-URI a strict route gives.

mod common;
use common::*;
use std::time::Duration;

fn branch() -> String {
    unique("z9hG4bK")
}

/// A MESSAGE whose body is a memcached command.
fn flush(ua: &Ua, ruri: &str, from: &str, cid: &str, cseq: u32) -> String {
    sip_request(
        ua,
        "MESSAGE",
        ruri,
        from,
        &format!("<{ruri}>"),
        cid,
        cseq,
        &branch(),
    )
    .replace(
        "Content-Length: 5\r\n\r\nhello",
        "Content-Length: 11\r\n\r\nflush_all\r\n",
    )
}

/// The value stored under `key` on `node`, if any.
fn stored(node: &Memcached, key: &str) -> Option<String> {
    let out = node.command(&format!("get {key}\r\n"));
    out.lines()
        .nth(1)
        .filter(|_| out.starts_with("VALUE"))
        .map(str::to_owned)
}

#[test]
fn a_memcached_node_is_never_a_destination() {
    let f = AuthFarm::start(&[]);
    let node = &f.mc[0];
    let key = unique("kept");
    let set = node.command(&format!("set {key} 0 0 4\r\nkept\r\nget {key}\r\n"));
    assert!(set.starts_with("STORED"), "{set}");
    let target = format!("sip:x@{}:{};transport=tcp", node.ip, node.port);

    // An authenticated local user.
    let alice = Ua::new();
    let cid = unique("flush");
    let build = |cseq| flush(&alice, &target, "alice@example.test", &cid, cseq);
    let (ch, r) = with_credentials(&alice, f.a.addr(), &build, ALICE, Alg::Sha256);
    assert_eq!(ch.realm(), "example.test");
    assert_eq!(r.code, 403, "authenticated, to a node:\n{}", r.text);

    // A foreign user, to the node directly, and through a Route on an inbound request.
    let carol = Ua::new();
    let m = flush(&carol, &target, "carol@foreign.test", &unique("c"), 1);
    assert_eq!(carol.request(f.b.addr(), &m).code, 403);
    let routed = flush(
        &carol,
        "sip:bob@example.test",
        "carol@foreign.test",
        &unique("c"),
        1,
    );
    let routed = with_header(
        &routed,
        "Route",
        &format!("<sip:{}:{};transport=tcp;lr>", node.ip, node.port),
    );
    let r = carol.request(f.a.addr(), &routed);
    assert_eq!(r.code, 403, "a Route to a node:\n{}", r.text);

    assert_eq!(
        stored(node, &key).as_deref(),
        Some("kept"),
        "the key is still there"
    );
    assert_eq!(node.stat("cmd_flush"), 0, "no flush_all reached the node");
}

#[test]
fn outbound_relay_only_for_authenticated_local_users() {
    let f = AuthFarm::start(&[]);
    let dave = Phone::new_at("dave", "127.0.0.2"); // stands for foreign.test
    let ruri = dave.contact();
    let to = format!("<{ruri}>");

    // Foreign to foreign: no relay.
    let carol = Ua::new();
    let m = sip_request(
        &carol,
        "MESSAGE",
        &ruri,
        "carol@foreign.test",
        &to,
        &unique("c"),
        1,
        &branch(),
    );
    let r = carol.request(f.a.addr(), &m);
    assert_eq!(r.code, 403, "foreign to foreign:\n{}", r.text);

    // Local, without credentials: 407, one Proxy-Authenticate per algorithm.
    let alice = Phone::new("alice");
    let cid = unique("out");
    let build = |cseq| {
        sip_request(
            &alice.ua,
            "MESSAGE",
            &ruri,
            "alice@example.test",
            &to,
            &cid,
            cseq,
            &branch(),
        )
    };
    let r = alice.ua.request(f.b.addr(), &build(1));
    assert_eq!(r.code, 407, "{}", r.text);
    assert!(r.headers("www-authenticate").is_empty());
    let ch = challenges(&r.text);
    assert_eq!(
        ch.iter().map(|c| c.alg()).collect::<Vec<_>>(),
        vec![Some(Alg::Md5), Some(Alg::Sha256)],
        "{}",
        r.text
    );
    assert!(
        ch.iter()
            .all(|c| c.realm() == "example.test" && c.qops() == ["auth"])
    );

    // Someone else's credentials for alice's From: refused.
    let bobs = ch[0].answer(BOB.0, BOB.1, "MESSAGE", &ruri, 1, &cnonce());
    let r = alice.ua.request(
        f.b.addr(),
        &with_header(&build(2), "Proxy-Authorization", &bobs),
    );
    assert_eq!(
        r.code, 403,
        "bob's credentials on alice's From:\n{}",
        r.text
    );

    // Her own, on B's nonce (nc 2: bob's attempt spent nc 1), through A: forwarded to the
    // foreign destination.
    let creds = ch[1].answer(ALICE.0, ALICE.1, "MESSAGE", &ruri, 2, &cnonce());
    alice.ua.send(
        f.a.addr(),
        &with_header(&build(3), "Proxy-Authorization", &creds),
    );
    let got = dave.wait_request("MESSAGE");
    assert_eq!(
        got.header("CSeq").as_deref(),
        Some("3 MESSAGE"),
        "only the authorized one"
    );
    assert_eq!(got.request_uri(), Some(ruri.as_str()));
    assert!(got.text.ends_with("\r\n\r\nhello"));
    dave.respond(&got, 200, "OK", "");
    alice.wait_response(200, "MESSAGE");
}

#[test]
fn trusted_peers_are_not_challenged() {
    let config = "[auth]\ntrusted = [\"127.0.0.3/32\"]\n";
    let f = AuthFarm::start_with(&[ALICE, BOB], Some(config), &[]);
    let bob = Phone::new("bob");
    let r = register_auth(
        &bob.ua,
        f.b.addr(),
        BOB,
        Alg::Sha256,
        &[&format!("<{}>", bob.contact())],
        Some(600),
    );
    assert_eq!(r.code, 200, "{}", r.text);

    // The same INVITE, local From, no credentials: 407 from 127.0.0.1, routed from the peer.
    let to = "<sip:bob@example.test>";
    let other = Ua::new();
    let m = sip_request(
        &other,
        "INVITE",
        "sip:bob@example.test",
        "alice@example.test",
        to,
        &unique("i"),
        1,
        &branch(),
    );
    assert_eq!(other.request(f.a.addr(), &m).code, 407);
    let gw = Phone::new_at("gw", "127.0.0.3");
    let m = sip_request(
        &gw.ua,
        "INVITE",
        "sip:bob@example.test",
        "alice@example.test",
        to,
        &unique("i"),
        1,
        &branch(),
    );
    gw.ua.send(f.a.addr(), &m);
    let inv = bob.wait_request("INVITE");
    assert_eq!(inv.request_uri(), Some(bob.contact().as_str()));
    bob.respond(&inv, 486, "Busy Here", "");
    gw.wait_response(486, "INVITE");

    // Trusted, yet never to a node.
    let target = format!("sip:x@{}:{};transport=tcp", f.mc[1].ip, f.mc[1].port);
    let r = gw.ua.request(
        f.b.addr(),
        &flush(&gw.ua, &target, "alice@example.test", &unique("f"), 1),
    );
    assert_eq!(r.code, 403, "{}", r.text);
    assert_eq!(f.mc[1].stat("cmd_flush"), 0);
}

#[test]
fn denied_networks_only_for_destinations_the_request_chose() {
    let config = "[proxy]\ndeny = [\"127.0.0.2/32\"]\n";
    let f = AuthFarm::start_with(&[ALICE, BOB], Some(config), &[]);
    let dave = Phone::new_at("dave", "127.0.0.2");
    let bob = Phone::new_at("bob", "127.0.0.2");
    let r = register_auth(
        &bob.ua,
        f.a.addr(),
        BOB,
        Alg::Md5,
        &[&format!("<{}>", bob.contact())],
        Some(600),
    );
    assert_eq!(
        r.code, 200,
        "a contact in a denied network may register:\n{}",
        r.text
    );

    // Request-URI in the denied network, authenticated: 403.
    let alice = Phone::new("alice");
    let ruri = dave.contact();
    let cid = unique("deny");
    let build = |cseq| {
        sip_request(
            &alice.ua,
            "MESSAGE",
            &ruri,
            "alice@example.test",
            &format!("<{ruri}>"),
            &cid,
            cseq,
            &branch(),
        )
    };
    let (_, r) = with_credentials(&alice.ua, f.b.addr(), &build, ALICE, Alg::Sha256);
    assert_eq!(r.code, 403, "a denied Request-URI:\n{}", r.text);

    // An inbound request with a Route into the denied network: 403.
    let carol = Ua::new();
    let m = sip_request(
        &carol,
        "MESSAGE",
        "sip:bob@example.test",
        "carol@foreign.test",
        "<sip:bob@example.test>",
        &unique("c"),
        1,
        &branch(),
    );
    let m = with_header(&m, "Route", &format!("<sip:127.0.0.2:{};lr>", dave.ua.port));
    let r = carol.request(f.a.addr(), &m);
    assert_eq!(r.code, 403, "a Route into a denied network:\n{}", r.text);
    assert!(
        dave.wait(Duration::from_millis(300), |_| true).is_none(),
        "dave got nothing"
    );

    // Bob's registered contact there is still reached.
    let cid = unique("tobob");
    let to = "<sip:bob@example.test>";
    let build = |cseq| {
        sip_request(
            &alice.ua,
            "MESSAGE",
            "sip:bob@example.test",
            "alice@example.test",
            to,
            &cid,
            cseq,
            &branch(),
        )
    };
    let (_, m) = authorize(&alice.ua, f.a.addr(), &build, ALICE, Alg::Md5);
    alice.ua.send(f.b.addr(), &m);
    let got = bob.wait_request("MESSAGE");
    bob.respond(&got, 200, "OK", "");
    alice.wait_response(200, "MESSAGE");
}

/// Credentials computed for one Request-URI (digest `uri`) used on a request for another.
#[test]
fn credentials_are_for_the_request_uri_they_name() {
    let f = AuthFarm::start(&[]);
    let dave = Phone::new_at("dave", "127.0.0.2");
    let alice = Phone::new("alice");
    let cid = unique("uri");
    let to_bob = |cseq| {
        sip_request(
            &alice.ua,
            "MESSAGE",
            "sip:bob@example.test",
            "alice@example.test",
            "<sip:bob@example.test>",
            &cid,
            cseq,
            &branch(),
        )
    };
    let r = alice.ua.request(f.a.addr(), &to_bob(1));
    assert_eq!(r.code, 407);
    let creds = challenge_for(&r.text, Alg::Sha256).answer(
        ALICE.0,
        ALICE.1,
        "MESSAGE",
        "sip:bob@example.test",
        1,
        &cnonce(),
    );
    // The same credentials on a MESSAGE whose Request-URI is dave's, at 127.0.0.2.
    let elsewhere = to_bob(2).replacen(
        "MESSAGE sip:bob@example.test SIP/2.0",
        &format!("MESSAGE {} SIP/2.0", dave.contact()),
        1,
    );
    alice.ua.send(
        f.a.addr(),
        &with_header(&elsewhere, "Proxy-Authorization", &creds),
    );
    let leaked = dave.wait(Duration::from_millis(1000), |m| {
        m.method() == Some("MESSAGE")
    });
    assert!(
        leaked.is_none(),
        "credentials for sip:bob@example.test relayed a request to {}:\n{}",
        dave.contact(),
        leaked.map(|m| m.text).unwrap_or_default()
    );
    let answer = alice.wait(Duration::from_secs(2), |m| {
        m.code().is_some_and(|c| c >= 400)
    });
    assert!(
        answer.is_some(),
        "a 400 (or a new 407) for a digest uri that is not the Request-URI"
    );
}

/// A foreign user's request for the farm itself whose strict route (RFC 3261 16.4) names a
/// foreign destination: after route pre-processing it is foreign to foreign.
#[test]
fn no_relay_through_a_strict_route() {
    let f = AuthFarm::start(&[]);
    let dave = Phone::new_at("dave", "127.0.0.2");
    let carol = Phone::new("carol");
    let m = sip_request(
        &carol.ua,
        "MESSAGE",
        "sip:example.test",
        "carol@foreign.test",
        &format!("<{}>", dave.contact()),
        &unique("s"),
        1,
        &branch(),
    );
    let m = with_header(&m, "Route", &format!("<{}>", dave.contact()));
    carol.ua.send(f.b.addr(), &m);
    let relayed = dave.wait(Duration::from_millis(1000), |m| {
        m.method() == Some("MESSAGE")
    });
    assert!(
        relayed.is_none(),
        "foreign to foreign relayed by a strict route:\n{}",
        relayed.map(|m| m.text).unwrap_or_default()
    );
    carol.wait_response(403, "MESSAGE");
}

/// A request that merely claims to be in a dialog of ours (a To tag and a Route naming the
/// farm, without the farm's signature for that dialog) is no way around the relay rule:
/// from a foreign user, or from a spoofed local one without credentials.
#[test]
fn a_forged_in_dialog_request_is_not_relayed() {
    let f = AuthFarm::start(&[]);
    let dave = Phone::new_at("dave", "127.0.0.2");
    let target = format!("sip:dave@127.0.0.2:{}", dave.ua.port);
    for (from, signature) in [
        ("carol@foreign.test", ""),
        ("alice@example.test", ""),
        ("carol@foreign.test", ";sfr=00000000000000000000"),
    ] {
        let ua = Ua::new();
        let m = sip_request(
            &ua,
            "MESSAGE",
            &target,
            from,
            "<sip:dave@foreign.test>;tag=forged",
            &unique("d"),
            1,
            &branch(),
        );
        let m = with_header(&m, "Route", &format!("<sip:example.test;lr{signature}>"));
        let r = ua.request(f.a.addr(), &m);
        assert!(
            r.code == 403 || r.code == 407,
            "{from} {signature}: a forged dialog:\n{}",
            r.text
        );
        assert!(
            dave.wait(Duration::from_millis(300), |_| true).is_none(),
            "dave got nothing from {from}"
        );
    }
}
