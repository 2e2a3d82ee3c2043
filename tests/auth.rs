//! Authenticated registration through a farm (two instances, two memcached nodes, one users
//! file, one nonce secret), read with the tests' own SIP reader and digest client:
//!
//! - RFC 3261 22.2 / 22.4 and RFC 8760 2.4: a REGISTER without credentials gets 401 with one
//!   WWW-Authenticate per algorithm in the order of `auth.algorithms` (MD5 first by default,
//!   for the clients that answer only the first; SHA-256 first when configured), realm = the
//!   To domain, qop="auth"; either algorithm registers, with a nonce issued by the other
//!   instance (stateless nonces under the shared secret), and the binding is seen through
//!   either;
//! - RFC 7616 3.4.5 (nonce-count): an Authorization replayed to the other instance (same nonce,
//!   same nc) gets a new challenge with stale=true and changes no binding; the next nc works;
//! - RFC 7616 3.3 (stale): correct credentials on a nonce older than its lifetime + 5 s drift
//!   get 401 stale=true, within the drift they still work;
//! - RFC 3261 26.1.1 (registration hijacking): a user registers only its own AOR, and cannot
//!   remove another's bindings with `Contact: *`; an unauthenticated `Contact: *` gets 401 and
//!   removes nothing; a query (no Contact) needs credentials too;
//! - a Contact or Path naming a memcached node's address is refused 403;
//! - RFC 3261 26.1.5 / RFC 7616 5.2: failed attempts are counted per source and per user;
//!   past `max_failures` the source (and the user) get 403 for `block_seconds`, with one log
//!   line per block, while another source and another user still register.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// The contacts bound to `user`, asked through `at` with `user`'s credentials.
fn bindings(at: std::net::SocketAddr, who: (&str, &str)) -> Vec<String> {
    let ua = Ua::new();
    let r = register_auth(&ua, at, who, Alg::Sha256, &[], None);
    assert_eq!(r.code, 200, "{}", r.text);
    r.contacts()
}

#[test]
fn both_challenges_and_nonces_valid_on_every_instance() {
    let f = AuthFarm::start(&[]);
    let ua = Ua::new();
    let c_md5 = format!("sip:alice@127.0.0.1:{}", ua.port);
    let c_sha = "sip:alice@127.0.0.1:7001".to_owned();
    let cid = unique("reg");
    let reg = |cseq, contact: &str| {
        ua.register("alice", &[&format!("<{contact}>")], Some(300), &cid, cseq)
    };

    let r = ua.request(f.a.addr(), &reg(1, &c_md5));
    assert_eq!(r.code, 401, "{}", r.text);
    let ch = challenges(&r.text);
    assert_eq!(ch.len(), 2, "one challenge per algorithm:\n{}", r.text);
    assert_eq!(
        ch[0].alg(),
        Some(Alg::Md5),
        "MD5 first by default:\n{}",
        r.text
    );
    assert_eq!(
        ch[1].alg(),
        Some(Alg::Sha256),
        "SHA-256 second:\n{}",
        r.text
    );
    for c in &ch {
        assert!(c.scheme.eq_ignore_ascii_case("Digest"), "{}", r.text);
        assert_eq!(c.realm(), "example.test", "realm = the To domain");
        assert_eq!(c.qops(), vec!["auth".to_owned()]);
        assert!(!c.nonce().is_empty() && !c.is_stale());
    }
    assert!(r.headers("proxy-authenticate").is_empty());

    // MD5, on A's nonce, through B.
    let creds = ch[0].answer(
        ALICE.0,
        ALICE.1,
        "REGISTER",
        "sip:example.test",
        1,
        &cnonce(),
    );
    let r = ua.request(
        f.b.addr(),
        &with_header(&reg(2, &c_md5), "Authorization", &creds),
    );
    assert_eq!(r.code, 200, "MD5 with A's nonce through B:\n{}", r.text);
    assert_eq!(r.contacts(), vec![c_md5.clone()]);

    // SHA-256, on a fresh nonce from A, through B.
    let r = ua.request(f.a.addr(), &reg(3, &c_sha));
    assert_eq!(r.code, 401);
    let sha = challenge_for(&r.text, Alg::Sha256);
    let creds = sha.answer(
        ALICE.0,
        ALICE.1,
        "REGISTER",
        "sip:example.test",
        1,
        &cnonce(),
    );
    let r = ua.request(
        f.b.addr(),
        &with_header(&reg(4, &c_sha), "Authorization", &creds),
    );
    assert_eq!(r.code, 200, "SHA-256 with A's nonce through B:\n{}", r.text);

    // Both bindings, seen through A.
    let mut want = vec![c_md5, c_sha];
    want.sort();
    assert_eq!(bindings(f.a.addr(), ALICE), want);
}

/// `[auth] algorithms = ["SHA-256", "MD5"]`: SHA-256 first, in 401 and 407 alike.
#[test]
fn sha256_first_when_configured() {
    let config = "[auth]\nalgorithms = [\"SHA-256\", \"MD5\"]\n";
    let f = AuthFarm::start_with(&[ALICE, BOB], Some(config), &[]);
    let ua = Ua::new();
    let r = ua.request(
        f.b.addr(),
        &ua.register("alice", &[], None, &unique("q"), 1),
    );
    assert_eq!(r.code, 401);
    let order: Vec<_> = challenges(&r.text).iter().map(|c| c.alg()).collect();
    assert_eq!(order, vec![Some(Alg::Sha256), Some(Alg::Md5)], "{}", r.text);
    let to = "<sip:bob@example.test>";
    let m = sip_request(
        &ua,
        "MESSAGE",
        "sip:bob@example.test",
        "alice@example.test",
        to,
        &unique("m"),
        1,
        &unique("z9hG4bK"),
    );
    let r = ua.request(f.a.addr(), &m);
    assert_eq!(r.code, 407);
    let order: Vec<_> = challenges(&r.text).iter().map(|c| c.alg()).collect();
    assert_eq!(order, vec![Some(Alg::Sha256), Some(Alg::Md5)], "{}", r.text);
    let contact = format!("<sip:alice@127.0.0.1:{}>", ua.port);
    let r = register_auth(&ua, f.a.addr(), ALICE, Alg::Sha256, &[&contact], Some(300));
    assert_eq!(r.code, 200, "{}", r.text);
}

#[test]
fn replayed_authorization_is_refused_by_the_other_instance() {
    let f = AuthFarm::start(&[]);
    let ua = Ua::new();
    let c1 = format!("sip:alice@127.0.0.1:{}", ua.port);
    let c2 = "sip:alice@127.0.0.1:7002".to_owned();
    let cid = unique("reg");
    let reg = |cseq, contact: &str| {
        ua.register("alice", &[&format!("<{contact}>")], Some(300), &cid, cseq)
    };

    let r = ua.request(f.a.addr(), &reg(1, &c1));
    let ch = challenge_for(&r.text, Alg::Sha256);
    let creds = ch.answer(
        ALICE.0,
        ALICE.1,
        "REGISTER",
        "sip:example.test",
        1,
        &cnonce(),
    );
    let r = ua.request(
        f.a.addr(),
        &with_header(&reg(2, &c1), "Authorization", &creds),
    );
    assert_eq!(r.code, 200, "{}", r.text);

    // The same Authorization (same nonce, same nc), on a REGISTER naming another contact,
    // sent to the other instance.
    let r = ua.request(
        f.b.addr(),
        &with_header(&reg(3, &c2), "Authorization", &creds),
    );
    assert_eq!(r.code, 401, "a replay must be challenged:\n{}", r.text);
    let again = challenges(&r.text);
    assert!(
        !again.is_empty() && again.iter().all(|c| c.is_stale()),
        "stale=true:\n{}",
        r.text
    );
    assert_eq!(
        bindings(f.a.addr(), ALICE),
        vec![c1.clone()],
        "the replay added nothing"
    );

    // The next nonce-count on the same nonce is a new request: accepted, by either instance.
    let next = ch.answer(
        ALICE.0,
        ALICE.1,
        "REGISTER",
        "sip:example.test",
        2,
        &cnonce(),
    );
    let r = ua.request(
        f.b.addr(),
        &with_header(&reg(4, &c2), "Authorization", &next),
    );
    assert_eq!(r.code, 200, "nc=2 on the same nonce:\n{}", r.text);
    let mut want = vec![c1, c2];
    want.sort();
    assert_eq!(r.contacts(), want);
}

#[test]
fn stale_nonce_gets_a_new_challenge_with_stale_true() {
    let f = AuthFarm::start(&["--nonce-expires", "2"]);
    let ua = Ua::new();
    let contact = format!("<sip:alice@127.0.0.1:{}>", ua.port);
    let cid = unique("reg");
    let reg = |cseq| ua.register("alice", &[&contact], Some(300), &cid, cseq);
    let t0 = Instant::now();
    let r = ua.request(f.a.addr(), &reg(1));
    let old = challenge_for(&r.text, Alg::Md5);

    // Past the lifetime but within the 5 s drift allowed between instances: still valid.
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(t0.elapsed()));
    let creds = old.answer(
        ALICE.0,
        ALICE.1,
        "REGISTER",
        "sip:example.test",
        1,
        &cnonce(),
    );
    let r = ua.request(f.b.addr(), &with_header(&reg(2), "Authorization", &creds));
    assert_eq!(
        r.code, 200,
        "a 3 s old nonce (2 s + 5 s drift):\n{}",
        r.text
    );

    // Older than 2 s + 5 s: correct credentials, a new challenge marked stale.
    std::thread::sleep(Duration::from_millis(7600).saturating_sub(t0.elapsed()));
    let creds = old.answer(
        ALICE.0,
        ALICE.1,
        "REGISTER",
        "sip:example.test",
        2,
        &cnonce(),
    );
    let r = ua.request(f.a.addr(), &with_header(&reg(3), "Authorization", &creds));
    assert_eq!(r.code, 401, "{}", r.text);
    let fresh = challenges(&r.text);
    assert_eq!(fresh.len(), 2);
    assert!(
        fresh.iter().all(|c| c.is_stale()),
        "stale=true:\n{}",
        r.text
    );
    assert!(
        fresh.iter().all(|c| c.nonce() != old.nonce()),
        "a new nonce"
    );

    // The fresh nonce works at once.
    let creds = fresh[0].answer(
        ALICE.0,
        ALICE.1,
        "REGISTER",
        "sip:example.test",
        1,
        &cnonce(),
    );
    let r = ua.request(f.b.addr(), &with_header(&reg(4), "Authorization", &creds));
    assert_eq!(r.code, 200, "{}", r.text);
}

#[test]
fn only_its_own_aor_and_no_unauthenticated_removal() {
    let f = AuthFarm::start(&[]);
    let bob = Phone::new("bob");
    let r = register_auth(
        &bob.ua,
        f.a.addr(),
        BOB,
        Alg::Sha256,
        &[&format!("<{}>", bob.contact())],
        Some(600),
    );
    assert_eq!(r.code, 200, "{}", r.text);

    // Alice's credentials on REGISTERs for bob's AOR: 403, whatever they do.
    let mallory = Ua::new();
    let cid = unique("hijack");
    let hijack = format!("<sip:bob@127.0.0.1:{}>", mallory.port);
    let add = |cseq| mallory.register("bob", &[&hijack], Some(600), &cid, cseq);
    let (ch, r) = with_credentials(&mallory, f.b.addr(), &add, ALICE, Alg::Sha256);
    assert_eq!(ch.realm(), "example.test");
    assert_eq!(r.code, 403, "alice registering bob's AOR:\n{}", r.text);
    let star = |cseq| mallory.register("bob", &["*"], Some(0), &cid, cseq + 2);
    let (_, r) = with_credentials(&mallory, f.a.addr(), &star, ALICE, Alg::Md5);
    assert_eq!(r.code, 403, "alice removing bob's bindings:\n{}", r.text);

    // No credentials at all: 401, nothing removed.
    let r = mallory.request(
        f.b.addr(),
        &mallory.register("bob", &["*"], Some(0), &unique("c"), 1),
    );
    assert_eq!(r.code, 401, "{}", r.text);
    assert!(r.contacts().is_empty(), "a 401 lists no binding");
    assert_eq!(
        bindings(f.a.addr(), BOB),
        vec![bob.contact()],
        "bob's binding is still there"
    );
}

#[test]
fn a_query_needs_credentials() {
    let f = AuthFarm::start(&[]);
    let bob = Phone::new("bob");
    let r = register_auth(
        &bob.ua,
        f.b.addr(),
        BOB,
        Alg::Md5,
        &[&format!("<{}>", bob.contact())],
        Some(600),
    );
    assert_eq!(r.code, 200);
    let ua = Ua::new();
    for at in [f.a.addr(), f.b.addr()] {
        let r = ua.request(at, &ua.register("bob", &[], None, &unique("q"), 1));
        assert_eq!(r.code, 401, "a query without credentials:\n{}", r.text);
        assert!(
            r.contacts().is_empty(),
            "a 401 tells nothing of the bindings"
        );
    }
    assert_eq!(bindings(f.b.addr(), BOB), vec![bob.contact()]);
}

#[test]
fn contact_or_path_naming_a_memcached_node_is_refused() {
    let f = AuthFarm::start(&[]);
    let ua = Ua::new();
    let (node, port) = (f.mc[0].ip, f.mc[0].port);
    let contacts = [
        format!("<sip:alice@{node}:{port}>"),
        format!("<sip:alice@{node}:{port};transport=tcp>"),
        format!("<sip:{}:5060>", f.mc[1].ip),
    ];
    for (i, contact) in contacts.iter().enumerate() {
        let r = register_auth(&ua, f.at(i), ALICE, Alg::Sha256, &[contact], Some(300));
        assert_eq!(r.code, 403, "Contact {contact}:\n{}", r.text);
    }
    let cid = unique("path");
    let with_path = |cseq| {
        let m = ua.register(
            "alice",
            &[&format!("<sip:alice@127.0.0.1:{}>", ua.port)],
            Some(300),
            &cid,
            cseq,
        );
        let m = with_header(&m, "Supported", "path");
        with_header(&m, "Path", &format!("<sip:{node}:{port};lr>"))
    };
    let (_, r) = with_credentials(&ua, f.b.addr(), &with_path, ALICE, Alg::Md5);
    assert_eq!(r.code, 403, "Path naming a node:\n{}", r.text);
    assert!(bindings(f.a.addr(), ALICE).is_empty(), "nothing was bound");
}

#[test]
fn failed_attempts_block_the_source_and_the_user() {
    let config = "[auth]\nmax_failures = 10\nblock_seconds = 60\n";
    let f = AuthFarm::start_with(&[ALICE, BOB], Some(config), &[]);
    let ua = Ua::new();
    let cid = unique("guess");
    let contact = format!("<sip:alice@127.0.0.1:{}>", ua.port);
    let reg = |cseq| ua.register("alice", &[&contact], Some(300), &cid, cseq);
    let r = ua.request(f.a.addr(), &reg(1));
    let ch = challenge_for(&r.text, Alg::Md5);
    let mut codes = Vec::new();
    for nc in 1..=12u32 {
        let wrong = ch.answer(
            "alice",
            &format!("guess{nc}"),
            "REGISTER",
            "sip:example.test",
            nc,
            &cnonce(),
        );
        let r = ua.request(
            f.a.addr(),
            &with_header(&reg(nc + 1), "Authorization", &wrong),
        );
        if r.code == 401 {
            assert!(
                challenges(&r.text).iter().all(|c| !c.is_stale()),
                "{}",
                r.text
            );
        }
        codes.push(r.code);
    }
    assert!(
        codes[..10].iter().all(|&c| c == 401),
        "10 failures allowed: {codes:?}"
    );
    assert!(
        codes[10..].contains(&403),
        "the 11th or 12th blocks: {codes:?}"
    );
    assert_eq!(*codes.last().unwrap(), 403, "{codes:?}");

    // Blocked: the right password from that source, and any request for a challenge.
    let right = ch.answer(
        ALICE.0,
        ALICE.1,
        "REGISTER",
        "sip:example.test",
        20,
        &cnonce(),
    );
    let r = ua.request(f.a.addr(), &with_header(&reg(20), "Authorization", &right));
    assert_eq!(
        r.code, 403,
        "the right password during the block:\n{}",
        r.text
    );
    let r = ua.request(f.a.addr(), &ua.register("bob", &[], None, &unique("q"), 1));
    assert_eq!(
        r.code, 403,
        "the source is blocked for every user:\n{}",
        r.text
    );

    // Another source: another user registers; the guessed user's own phone too (a user over
    // its limit blocks the sources that keep failing for it, not the user: no lock-out).
    let other = Ua::new_at("127.0.0.2");
    let bob_contact = format!("<sip:bob@127.0.0.2:{}>", other.port);
    let r = register_auth(
        &other,
        f.a.addr(),
        BOB,
        Alg::Sha256,
        &[&bob_contact],
        Some(300),
    );
    assert_eq!(r.code, 200, "bob from 127.0.0.2:\n{}", r.text);
    let alice_contact = format!("<sip:alice@127.0.0.2:{}>", other.port);
    let cid = unique("elsewhere");
    let from_other = |cseq| other.register("alice", &[&alice_contact], Some(300), &cid, cseq);
    let (_, r) = with_credentials(&other, f.a.addr(), &from_other, ALICE, Alg::Sha256);
    assert_eq!(
        r.code, 200,
        "alice's own phone is not locked out:\n{}",
        r.text
    );
    // A third source guessing alice's password is blocked at its first failure (the user
    // is over its limit).
    let third = Ua::new_at("127.0.0.3");
    let gid = unique("g");
    let guess = |cseq| third.register("alice", &[], None, &gid, cseq);
    let (_, r) = with_credentials(
        &third,
        f.a.addr(),
        &guess,
        ("alice", "not-her-password"),
        Alg::Sha256,
    );
    assert_eq!(r.code, 403, "a new source guessing alice:\n{}", r.text);

    // One log line per block (two blocks here: 127.0.0.1 with alice, then 127.0.0.3),
    // however many attempts were refused.
    let log = f.log("a");
    let lines = log
        .lines()
        .filter(|l| l.contains("blocked after too many failed"))
        .count();
    assert_eq!(lines, 2, "one log line per block:\n{log}");
}
