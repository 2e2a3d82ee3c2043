//! Issue 13: two real softphones (baresip 1.0) on the farm of `scripts/farm`, found through
//! its DNS server, with digest authentication (passwords in the phones' accounts).
//!
//! `scripts/farm up --instances 2 --nodes 3 --domain example.test --users FILE` runs inside
//! the test's network namespace. alice's account names no proxy at all: baresip looks the
//! domain up at the farm's DNS server (NAPTR, `_sip._udp` SRV, A: RFC 3263) and registers
//! through whichever instance the SRV records gave it. bob is pinned, by configuration, to
//! the *other* instance: his outbound proxy is that instance's name, resolved at the same DNS
//! server. alice calls bob and bob answers by himself; alice hangs up. Then bob calls alice,
//! she answers, and he hangs up: that INVITE goes through bob's instance to the contact alice
//! registered through the other one, as both instances' logs show (the call crosses the
//! farm; alice's own INVITE goes wherever the SRV records send it, which the test prints).
//! Last, alice sends bob a MESSAGE, and bob's console shows it.

mod common;
use common::*;
use std::cell::OnceCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const TEST: &str = "two_baresips_register_through_the_srv_records_call_and_message";

#[test]
fn two_baresips_register_through_the_srv_records_call_and_message() {
    if !in_namespace(TEST) {
        return;
    }
    let started = Instant::now();
    let tmp = TempDir::new("sipfarm-baresip-farm-");
    let farm = phones_farm(&tmp);
    let at = |i: usize| SocketAddr::from(([127, 0, 0, 10 + i as u8], 5060));

    let mut alice = Baresip::start(
        "alice",
        "v0",
        "10.200.0.1",
        Account {
            dns: Some(farm.dns),
            password: Some("alice-pw-1234"),
            contact: Some("bob"),
            ..Account::default()
        },
    );
    // Everything the phones and the instances said, for a failure's message (bob's phone
    // once it is started).
    let bob_out: Rc<OnceCell<PathBuf>> = Rc::default();
    let report = {
        let (alice_out, bob_out, dir) = (
            alice.out.clone(),
            bob_out.clone(),
            farm.dir.path().to_path_buf(),
        );
        move || {
            let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
            format!(
                "--- alice's baresip:\n{}\n--- bob's baresip:\n{}\n--- instance 1:\n{}\n--- instance 2:\n{}",
                read(&alice_out),
                bob_out.get().map(|p| read(p)).unwrap_or_default(),
                read(&dir.join("sipfarm-1.log")),
                read(&dir.join("sipfarm-2.log")),
            )
        }
    };
    // (Not baresip's REGISTER_OK event: it may come before ctrl_tcp is connected.)
    let x = registered_through(&farm, "alice", &report);
    let y = 3 - x;
    println!("alice registered through instance {x} (the SRV records' choice)");

    // bob, pinned by configuration to the other instance, by its name in the farm's DNS.
    let mut bob = Baresip::bob_pinned_to(y, farm.dns);
    bob_out.set(bob.out.clone()).ok();
    assert_eq!(registered_through(&farm, "bob", &report), y, "bob's pin");
    assert!(
        !farm
            .instance_log(x)
            .lines()
            .any(|l| l.contains("REGISTER saved") && l.contains("aor=sip:bob@")),
        "bob registered through alice's instance too"
    );

    let first = call(&mut alice, &mut bob, &report);
    let second = call(&mut bob, &mut alice, &report);

    // A MESSAGE from alice to bob (her current contact), answered by bob's phone.
    alice.command("message", "hello bob, from alice");
    let deadline = Instant::now() + STEP;
    let forwarded = |farm: &ScriptFarm| {
        (1..=2).any(|i| {
            farm.instance_log(i)
                .lines()
                .any(|l| l.contains("method=\"MESSAGE\"") && l.contains("forwarding request"))
        })
    };
    while !forwarded(&farm) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        forwarded(&farm),
        "no instance forwarded alice's MESSAGE\n{}",
        report()
    );
    std::thread::sleep(Duration::from_millis(500));

    alice.quit();
    bob.quit();
    let (alice_trace, bob_trace) = (trace(&alice.output()), trace(&bob.output()));
    // Registered with passwords: challenged once, then accepted with credentials, through
    // the instance each one's logs named.
    for (who, t, home) in [("alice", &alice_trace, x), ("bob", &bob_trace, y)] {
        let home = at(home).to_string();
        assert!(
            t.iter()
                .any(|m| m.what() == "401 REGISTER" && m.src == home),
            "{who} was not challenged by {home}\n{}",
            report()
        );
        let with_credentials: Vec<&Traced> = t
            .iter()
            .filter(|m| {
                m.msg.method() == Some("REGISTER") && m.msg.header("Authorization").is_some()
            })
            .collect();
        assert!(!with_credentials.is_empty(), "{who} never sent credentials");
        assert!(
            with_credentials.iter().all(|m| m.dst == home),
            "{who} registered elsewhere than {home}"
        );
        assert!(
            t.iter()
                .any(|m| m.what() == "200 REGISTER" && m.src == home)
        );
    }

    // bob's call to alice crossed the farm: through bob's instance, to the contact alice
    // registered through the other, which never saw the call.
    let invite = bob_trace
        .iter()
        .find(|t| t.call_id() == second && t.msg.method() == Some("INVITE"))
        .expect("bob's INVITE");
    assert_eq!(
        invite.dst,
        at(y).to_string(),
        "bob's INVITE went through his instance"
    );
    let alice_contact = registered_contact("alice", &alice_trace, &at(x).to_string());
    let (via_log, home_log) = (farm.instance_log(y), farm.instance_log(x));
    assert!(
        via_log.lines().any(|l| l.contains(&second)
            && l.contains("method=\"INVITE\"")
            && l.contains("forwarding request")
            && l.contains(&format!("request_uri={alice_contact}"))),
        "instance {y} did not forward bob's INVITE to alice's contact\n{}",
        report()
    );
    assert!(
        !home_log.contains(&second),
        "instance {x} (alice's) saw bob's call"
    );
    let alice_invite = alice_trace
        .iter()
        .find(|t| t.call_id() == first && t.msg.method() == Some("INVITE"))
        .expect("alice's INVITE");
    println!(
        "alice's call went through {} (the SRV records' choice); bob's through {}",
        alice_invite.dst,
        at(y)
    );
    // bob's side went through his instance only (UDP to it, Record-Route back to it). alice
    // got the INVITE from that instance, maybe over TCP from a port of its own (a request
    // this size goes over TCP, RFC 3261 18.1.1), so her side is checked for its order only.
    let bob_flow = call_flow(&bob_trace, &second, &at(y).to_string());
    let bob_steps = ["> INVITE", "< 200 INVITE", "> ACK", "> BYE", "< 200 BYE"];
    assert_in_order("bob (caller)", &bob_flow, &bob_steps, &report);
    let alice_flow: Vec<String> = alice_trace
        .iter()
        .filter(|t| t.call_id() == second)
        .map(|t| format!("= {}", t.what()))
        .collect();
    let alice_steps = ["= INVITE", "= 200 INVITE", "= ACK", "= BYE", "= 200 BYE"];
    assert_in_order("alice (callee)", &alice_flow, &alice_steps, &report);

    // The MESSAGE: bob's phone got it and printed it; alice got its 200.
    assert!(
        bob_trace
            .iter()
            .any(|t| t.msg.method() == Some("MESSAGE")
                && t.msg.text.contains("hello bob, from alice")),
        "bob's phone got no MESSAGE\n{}",
        report()
    );
    assert!(
        bob.output().contains("hello bob, from alice"),
        "bob's console does not show the message"
    );
    assert!(alice_trace.iter().any(|t| t.what() == "200 MESSAGE"));
    println!(
        "farm up, two phones registered with passwords, two calls and a MESSAGE in {:?}",
        started.elapsed()
    );
}
