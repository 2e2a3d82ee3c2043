//! Two real softphones (baresip 1.0) calling each other across the README's "Running a farm":
//! two memcached nodes, instance A and instance B, domain example.test.
//!
//! alice registers through A and bob through B (each phone's outbound proxy names its
//! instance: there is no DNS for example.test). alice calls bob, bob answers by himself, alice
//! hangs up; then bob calls alice, alice answers, bob hangs up. Each call must be set up
//! (INVITE, 200, ACK) and torn down (BYE, 200) as seen by both phones' own SIP trace
//! (`baresip -s`), and its INVITE must cross the farm: placed through one instance, it reaches
//! the contact the callee registered through the other, with no message through the callee's
//! instance (the binding came from memcached, not from that instance's memory); the instances'
//! debug logs agree (the caller's forwarded the INVITE to that contact, the callee's never saw
//! the call).
//!
//! baresip wants a non-loopback IPv4 address, and nothing a phone sends may leave the machine.
//! So the test re-runs itself under `unshare -n` with loopback up and a veth pair whose two
//! ends both stay in the namespace (alice on 10.200.0.1, bob on 10.200.0.2); memcached, the
//! instances (on 127.0.0.1) and the phones all run in there. The phones are driven over
//! baresip's `ctrl_tcp` (commands in, events out), which also paces the test: each step waits
//! for the phone's event, a few seconds at most.

mod common;
use common::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TEST: &str = "two_baresips_call_each_other_across_the_farm";

#[test]
fn two_baresips_call_each_other_across_the_farm() {
    if !in_namespace(TEST) {
        return;
    }
    let started = Instant::now();

    // The README's farm: two nodes, two instances on the same node list.
    let m1 = Memcached::start();
    let m2 = Memcached::start();
    let nodes = format!("{},{}", m1.addr(), m2.addr());
    let logs = TempDir::new("sipfarm-baresip-logs-");
    let (log_a, log_b) = (logs.join("a.log"), logs.join("b.log"));
    let a = Sipfarm::start_logging_at(&["--memcached", &nodes], &log_a, "sipfarm=debug");
    let b = Sipfarm::start_logging_at(&["--memcached", &nodes], &log_b, "sipfarm=debug");
    let (addr_a, addr_b) = (a.addr().to_string(), b.addr().to_string());

    let mut alice = Baresip::start("alice", "v0", "10.200.0.1", Account::through(a.addr()));
    let mut bob = Baresip::start("bob", "v1", "10.200.0.2", Account::through(b.addr()));
    // Everything both phones and both instances said, for a failure's message. It owns copies
    // of the paths only: the processes stay with the test, stopped in order when it ends.
    let (alice_out, bob_out) = (alice.out.clone(), bob.out.clone());
    let (port_a, port_b) = (a.port, b.port);
    let report = move || {
        format!(
            "--- alice's baresip:\n{}\n--- bob's baresip:\n{}\n--- instance A ({}):\n{}\n--- instance B ({}):\n{}",
            std::fs::read_to_string(&alice_out).unwrap_or_default(),
            std::fs::read_to_string(&bob_out).unwrap_or_default(),
            port_a,
            std::fs::read_to_string(&log_a).unwrap_or_default(),
            port_b,
            std::fs::read_to_string(&log_b).unwrap_or_default(),
        )
    };

    // Both registered, each visible through the *other* instance (the farm shares them).
    let ua = Ua::new();
    for (user, other) in [("alice", &addr_b), ("bob", &addr_a)] {
        let other: SocketAddr = other.parse().unwrap();
        let deadline = Instant::now() + STEP;
        loop {
            let q = ua.register(user, &[], None, &unique("query"), 1);
            let r = ua.request(other, &q);
            if r.code == 200 && !r.contacts().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{user} not registered as seen from {other}: {}\n{}",
                r.text,
                report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // alice calls bob (through A), bob answers by himself, alice hangs up; then the other
    // way round. Each phone's events carry the call's id (its Call-ID), matched to the
    // traces below.
    let first = call(&mut alice, &mut bob, &report);
    let second = call(&mut bob, &mut alice, &report);

    // Quit both (their stdout is complete once they have exited), then read the traces.
    alice.quit();
    bob.quit();
    let (alice_trace, bob_trace) = (trace(&alice.output()), trace(&bob.output()));
    let alice_contact = registered_contact("alice", &alice_trace, &addr_a);
    let bob_contact = registered_contact("bob", &bob_trace, &addr_b);

    let calls = [
        // (caller, its trace, its instance, callee, trace, instance, callee's contact)
        (
            "alice",
            &alice_trace,
            &addr_a,
            "bob",
            &bob_trace,
            &addr_b,
            &bob_contact,
        ),
        (
            "bob",
            &bob_trace,
            &addr_b,
            "alice",
            &alice_trace,
            &addr_a,
            &alice_contact,
        ),
    ];
    for (caller, caller_trace, via, callee, callee_trace, callee_home, contact) in calls {
        // The caller's INVITE for the callee's address-of-record, sent to its own instance.
        let invite = caller_trace
            .iter()
            .find(|t| {
                t.msg.method() == Some("INVITE")
                    && t.msg.request_uri() == Some(&format!("sip:{callee}@example.test"))
            })
            .unwrap_or_else(|| panic!("{caller} sent no INVITE for {callee}\n{}", report()));
        assert_eq!(&invite.dst, via, "{caller}'s INVITE went elsewhere");
        let call_id = invite.call_id();
        assert_eq!(
            call_id,
            if caller == "alice" { &first } else { &second }.as_str(),
            "the INVITE {caller} traced is not the call its events named"
        );
        // Both sides of the call went through the caller's instance only (its Record-Route),
        // and the caller both placed and ended it.
        let caller_flow = call_flow(caller_trace, &call_id, via);
        let callee_flow = call_flow(callee_trace, &call_id, via);
        println!("{caller} -> {callee} through {via}: {caller}: {caller_flow:?}");
        println!("{caller} -> {callee} through {via}: {callee}: {callee_flow:?}");
        assert_in_order(
            caller,
            &caller_flow,
            &["> INVITE", "< 200 INVITE", "> ACK", "> BYE", "< 200 BYE"],
            &report,
        );
        assert_in_order(
            callee,
            &callee_flow,
            &["< INVITE", "> 200 INVITE", "< ACK", "< BYE", "> 200 BYE"],
            &report,
        );
        assert!(
            !callee_flow.iter().any(|s| s == "> BYE"),
            "{callee} hung up, not {caller}"
        );
        // Crossing the farm: the INVITE the callee got, from the caller's instance, is for
        // the contact it registered through the other instance.
        let got = callee_trace
            .iter()
            .find(|t| t.call_id() == call_id && t.msg.method() == Some("INVITE"))
            .unwrap();
        assert_eq!(
            got.msg.request_uri(),
            Some(contact.as_str()),
            "{callee} got the INVITE for another URI"
        );
        assert_ne!(via, callee_home, "the call did not cross instances");
        // sipfarm's own account (debug log): the caller's instance forwarded the INVITE to
        // that contact; the callee's instance never saw the call.
        let logs_of = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        let (via_log, home_log) = if via == &addr_a {
            (logs_of(&logs.join("a.log")), logs_of(&logs.join("b.log")))
        } else {
            (logs_of(&logs.join("b.log")), logs_of(&logs.join("a.log")))
        };
        assert!(
            via_log.lines().any(|l| l.contains(&call_id)
                && l.contains("method=\"INVITE\"")
                && l.contains("forwarding request")
                && l.contains(&format!("request_uri={contact}"))),
            "instance {via} logged no INVITE forwarded to {contact}:\n{via_log}"
        );
        assert!(
            !home_log.contains(&call_id),
            "instance {callee_home} saw the call:\n{home_log}"
        );
    }
    // And baresip itself said so, on each side, for both calls (its events said it already;
    // this is the line a person reading its console sees).
    for (phone, peer) in [(&alice, "bob"), (&bob, "alice")] {
        let line = format!(
            "{}@example.test: Call established: sip:{peer}@example.test",
            phone.user
        );
        assert_eq!(
            phone.output().matches(&line).count(),
            2,
            "{} did not print `{line}` twice",
            phone.user
        );
    }
    println!(
        "farm started, both phones registered, two calls placed and checked in {:?}",
        started.elapsed()
    );
}
