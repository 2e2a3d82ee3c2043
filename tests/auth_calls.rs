//! Calls through a farm with authentication on (two instances, two memcached nodes on
//! 127.0.0.11/12, one users file, one nonce secret), read with the tests' own SIP reader:
//!
//! - inbound calls: a foreign From reaches our registered user without a challenge, and the
//!   dialog's ACK and BYE (a To tag and a Route naming the farm) are not challenged either,
//!   through either instance (RFC 3261 16.12, 22.1: only what needs protecting is challenged);
//! - RFC 3261 22.1 and 9.1: a CANCEL is never challenged (it cannot be resubmitted with
//!   credentials), so an authenticated INVITE can be cancelled: CANCEL, 200, 487, ACK;
//! - RFC 3261 16.11 and 17.1.1.2: a stateless proxy forwards every retransmission the same
//!   way, so a retransmitted authenticated INVITE (same bytes, same nonce-count) still reaches
//!   the callee and gets no new challenge.

mod common;
use common::*;
use std::time::Duration;

fn branch() -> String {
    unique("z9hG4bK")
}

/// An in-dialog request from the caller after the callee's 2xx: Request-URI = the callee's
/// Contact, Route = the Record-Route set reversed (RFC 3261 12.2.1.1).
fn in_dialog(method: &str, from: &Phone, ok: &Sip, cseq: u32) -> String {
    let mut routes = ok.all("Record-Route");
    routes.reverse();
    let target = ok.header("Contact").unwrap();
    let target = &target[target.find('<').unwrap() + 1..target.find('>').unwrap()];
    let mut m = format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {}:{};branch={};rport\r\nMax-Forwards: 70\r\n",
        from.ua.ip,
        from.ua.port,
        branch()
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

fn registered_bob(f: &AuthFarm) -> Phone {
    let bob = Phone::new("bob");
    register_bob(&bob, f.b.addr(), &format!("<{}>", bob.contact()));
    bob
}

/// bob registers `contact` through `at`, with his password.
fn register_bob(bob: &Phone, at: std::net::SocketAddr, contact: &str) {
    let r = register_auth(&bob.ua, at, BOB, Alg::Sha256, &[contact], Some(600));
    assert_eq!(r.code, 200, "{}", r.text);
}

/// alice's INVITE to bob, answered to the 407 of `via` with her credentials (unsent).
fn authorized_invite_to_bob(alice: &Phone, via: std::net::SocketAddr, call: &str) -> String {
    let (ruri, to) = ("sip:bob@example.test", "<sip:bob@example.test>");
    let cid = unique(call);
    let build = |cseq| {
        sip_request(
            &alice.ua,
            "INVITE",
            ruri,
            "alice@example.test",
            to,
            &cid,
            cseq,
            &branch(),
        )
    };
    authorize(&alice.ua, via, &build, ALICE, Alg::Sha256).1
}

/// Anything but a 1xx that reaches `phone` within `wait`.
fn no_final(phone: &Phone, wait: Duration) -> Option<Sip> {
    phone.wait(wait, |m| m.code().is_some_and(|c| c >= 200))
}

#[test]
fn inbound_call_from_a_foreign_domain_is_not_challenged() {
    let f = AuthFarm::start(&[]);
    let bob = registered_bob(&f);
    let carol = Phone::new("carol");
    let to = "<sip:bob@example.test>";
    let cid = unique("in");
    let inv = sip_request(
        &carol.ua,
        "INVITE",
        "sip:bob@example.test",
        "carol@foreign.test",
        to,
        &cid,
        1,
        &branch(),
    );
    carol.ua.send(f.a.addr(), &inv);
    let got = bob.wait_request("INVITE");
    assert_eq!(got.request_uri(), Some(bob.contact().as_str()));
    assert!(got.header("From").unwrap().contains("carol@foreign.test"));
    bob.respond(&got, 180, "Ringing", "");
    bob.respond(&got, 200, "OK", "");
    let ok = carol
        .wait(Duration::from_secs(5), |m| {
            m.code().is_some_and(|c| c >= 200)
        })
        .expect("a final answer");
    assert_eq!(
        ok.code(),
        Some(200),
        "no challenge for an inbound call:\n{}",
        ok.text
    );
    assert_eq!(
        unsigned_rr(&ok.all("Record-Route")),
        vec!["<sip:example.test;lr>".to_owned()]
    );

    // ACK and BYE in the dialog, through the other instance: not challenged.
    carol.ua.send(f.b.addr(), &in_dialog("ACK", &carol, &ok, 1));
    let ack = bob.wait_request("ACK");
    assert_eq!(ack.request_uri(), Some(bob.contact().as_str()));
    carol.ua.send(f.b.addr(), &in_dialog("BYE", &carol, &ok, 2));
    let bye = bob.wait_request("BYE");
    bob.respond(&bye, 200, "OK", "");
    let done = carol
        .wait(Duration::from_secs(5), |m| {
            m.header("CSeq").is_some_and(|c| c.ends_with("BYE"))
        })
        .expect("an answer to the BYE");
    assert_eq!(done.code(), Some(200), "{}", done.text);
}

#[test]
fn cancel_of_an_authenticated_invite_is_not_challenged() {
    let f = AuthFarm::start(&[]);
    let bob = registered_bob(&f);
    let alice = Phone::new("alice");
    let (ruri, to) = ("sip:bob@example.test", "<sip:bob@example.test>");
    let cid = unique("cancel");
    let b2 = branch();

    // INVITE without credentials: 407, and the ACK for it (absorbed by the instance).
    let first = sip_request(
        &alice.ua,
        "INVITE",
        ruri,
        "alice@example.test",
        to,
        &cid,
        1,
        &branch(),
    );
    let r = alice.ua.request(f.a.addr(), &first);
    assert_eq!(r.code, 407, "{}", r.text);
    let ack407 = sip_request(
        &alice.ua,
        "ACK",
        ruri,
        "alice@example.test",
        &Sip::parse(&r.text).header("To").unwrap(),
        &cid,
        1,
        &Sip::parse(&first).top_branch(),
    );
    alice.ua.send(f.a.addr(), &ack407);

    // INVITE with Proxy-Authorization (CSeq 2): bob rings.
    let ch = challenge_for(&r.text, Alg::Sha256);
    let creds = ch.answer(ALICE.0, ALICE.1, "INVITE", ruri, 1, &cnonce());
    let invite = sip_request(
        &alice.ua,
        "INVITE",
        ruri,
        "alice@example.test",
        to,
        &cid,
        2,
        &b2,
    );
    alice.ua.send(
        f.a.addr(),
        &with_header(&invite, "Proxy-Authorization", &creds),
    );
    let inv = bob.wait_request("INVITE");
    assert_eq!(inv.header("CSeq").as_deref(), Some("2 INVITE"));
    bob.respond(&inv, 180, "Ringing", "");
    alice.wait_response(180, "INVITE");

    // CANCEL without credentials, through the other instance (RFC 3261 9.1: same Request-URI,
    // Via branch, Call-ID, From, To and CSeq number as the INVITE).
    let cancel = sip_request(
        &alice.ua,
        "CANCEL",
        ruri,
        "alice@example.test",
        to,
        &cid,
        2,
        &b2,
    );
    alice.ua.send(f.b.addr(), &cancel);
    let c = bob
        .wait(Duration::from_secs(5), |m| m.method() == Some("CANCEL"))
        .unwrap_or_else(|| {
            panic!(
                "bob got no CANCEL; alice got {:?}",
                no_final(&alice, Duration::from_millis(10)).map(|m| m.text)
            )
        });
    assert_eq!(
        c.top_branch(),
        inv.top_branch(),
        "the CANCEL matches the INVITE (16.11)"
    );
    bob.respond(&c, 200, "OK", "");
    bob.respond(&inv, 487, "Request Terminated", "");
    // The two answers come back through different instances: in either order.
    let (mut cancelled, mut terminated) = (false, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !(cancelled && terminated.is_some()) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let m = alice
            .wait(left, |m| matches!(m.code(), Some(200) | Some(487)))
            .unwrap_or_else(|| panic!("alice got 200/CANCEL: {cancelled}, 487: {terminated:?}"));
        match m.header("CSeq").as_deref() {
            Some("2 CANCEL") => cancelled = true,
            Some("2 INVITE") if m.code() == Some(487) => terminated = Some(m),
            _ => {}
        }
    }
    let terminated = terminated.unwrap();

    // The ACK for the 487 reaches bob, on the INVITE's branch.
    let ack = sip_request(
        &alice.ua,
        "ACK",
        ruri,
        "alice@example.test",
        &terminated.header("To").unwrap(),
        &cid,
        2,
        &b2,
    );
    alice.ua.send(f.a.addr(), &ack);
    let a = bob.wait_request("ACK");
    assert_eq!(a.top_branch(), inv.top_branch());
}

#[test]
fn a_retransmitted_authenticated_invite_is_forwarded_again() {
    let f = AuthFarm::start(&[]);
    let bob = registered_bob(&f);
    let alice = Phone::new("alice");
    let invite = authorized_invite_to_bob(&alice, f.a.addr(), "retrans");
    alice.ua.send(f.a.addr(), &invite);
    let first = bob.wait_request("INVITE");

    // Timer A fired before any provisional came back: the same bytes again (RFC 3261
    // 17.1.1.2), here through the same instance.
    alice.ua.send(f.a.addr(), &invite);
    let again = bob.wait(Duration::from_secs(2), |m| m.method() == Some("INVITE"));
    let answer = no_final(&alice, Duration::from_millis(300));
    assert!(
        answer.is_none(),
        "the retransmission got an answer of its own, which ends alice's INVITE transaction:\n{}",
        answer.map(|m| m.text).unwrap_or_default()
    );
    let again = again.expect("the retransmission forwarded to bob like the original (16.11)");
    assert_eq!(
        again.top_branch(),
        first.top_branch(),
        "the same branch (16.11)"
    );
    bob.respond(&first, 486, "Busy Here", "");
    alice.wait_response(486, "INVITE");
}

/// Flows with authentication on (issue 11): bob behind NAT (his Contact names a private
/// address) registers through A. alice, authenticated by B, calls him through B: B routes to
/// A's flow and vouches for that request, so A does not challenge it again and bob rings.
/// The flow token alone, as anyone in a dialog with bob sees it in Record-Route, does not
/// pass A's gate: an INVITE with a local From and that Route is challenged.
#[test]
fn a_call_to_a_flow_is_vouched_for_and_a_bare_token_is_challenged() {
    let f = AuthFarm::start(&[]);
    let bob = Phone::new("bob");
    let private = format!("<sip:bob@127.0.0.99:{}>", bob.ua.port);
    register_bob(&bob, f.a.addr(), &private);

    let alice = Phone::new("alice");
    let invite = authorized_invite_to_bob(&alice, f.b.addr(), "flowauth");
    alice.ua.send(f.b.addr(), &invite);
    let inv = bob.wait_request("INVITE");
    assert_eq!(inv.request_uri(), Some(&private[1..private.len() - 1]));
    bob.respond(&inv, 200, "OK", "");
    let ok = alice.wait_response(200, "INVITE");
    // A's Record-Route entry toward bob carries his flow token.
    let a_entry = ok
        .all("Record-Route")
        .into_iter()
        .find(|rr| rr.contains(";sff="))
        .expect("a flow Record-Route");

    // The bare token, by someone posing as alice from elsewhere: challenged by A.
    let mallory = Phone::new_at("mallory", "127.0.0.2");
    let forged = sip_request(
        &mallory.ua,
        "INVITE",
        "sip:bob@example.test",
        "alice@example.test",
        "<sip:bob@example.test>",
        &unique("forged"),
        1,
        &branch(),
    )
    .replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nRoute: {a_entry}\r\n"),
        1,
    );
    let r = mallory.ua.request(f.a.addr(), &forged);
    assert_eq!(r.code, 407, "{}", r.text);
    let reached = bob.wait(Duration::from_millis(300), |m| m.method() == Some("INVITE"));
    assert!(reached.is_none(), "the forged INVITE reached bob");
}
