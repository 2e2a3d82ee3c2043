//! Issue 13: linphone's command-line client (`linphonec`) and baresip, two softphones no one
//! here wrote, on the farm of `scripts/farm` with digest authentication.
//!
//! alice is linphonec, registering `sip:alice@example.test` with her password through the
//! domain itself (`reg_proxy=<sip:example.test>`): linphone looks up the farm's SRV records
//! (it reads only /etc/resolv.conf, so the test bind-mounts one naming the farm's DNS server in
//! its own mount namespace). bob is baresip, pinned by configuration to the other instance
//! (its outbound proxy is that instance's name in the farm's DNS). alice calls bob, bob
//! answers by himself, alice hangs up; bob calls alice, she answers, he hangs up: that call
//! goes through bob's instance to the contact alice registered through the other one, which
//! never sees it (both instances' logs). Then a MESSAGE each way.

mod common;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TEST: &str = "linphonec_and_baresip_call_and_message_through_the_farm";

#[test]
fn linphonec_and_baresip_call_and_message_through_the_farm() {
    if !in_namespace(TEST) {
        return;
    }
    let started = Instant::now();
    let tmp = TempDir::new("sipfarm-linphone-farm-");
    let farm = phones_farm(&tmp);
    use_dns_server(farm.dns, tmp.path());
    let at = |i: usize| SocketAddr::from(([127, 0, 0, 10 + i as u8], 5060));
    let report = {
        let dir = farm.dir.path().to_path_buf();
        move || {
            let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
            format!(
                "--- instance 1:\n{}\n--- instance 2:\n{}",
                read("sipfarm-1.log"),
                read("sipfarm-2.log")
            )
        }
    };

    let mut alice = Linphonec::start(
        "alice",
        "example.test",
        "alice-pw-1234",
        "10.200.0.1",
        "sip:example.test",
    );
    alice.wait_registered(&report);
    let alice_log = std::fs::read_to_string(&alice.log).unwrap_or_default();
    assert!(
        alice_log.contains("SRV _sip._udp.example.test resolved"),
        "linphone did not look up the SRV records:\n{alice_log}"
    );
    let x = registered_through(&farm, "alice", &report);
    let y = 3 - x;
    println!("linphonec (alice) registered through instance {x}, by the SRV records");
    let mut bob = Baresip::bob_pinned_to(y, farm.dns);
    assert_eq!(registered_through(&farm, "bob", &report), y, "bob's pin");

    // alice calls bob; bob answers by himself; alice hangs up.
    alice.command("call sip:bob@example.test");
    alice.wait_for("with sip:bob@example.test connected", &report);
    let up = bob.wait_for(&["\"CALL_ESTABLISHED\"", "\"incoming\""], &report);
    let first = event_id(&up);
    std::thread::sleep(Duration::from_millis(500));
    alice.command("terminate");
    alice.wait_for("with sip:bob@example.test ended", &report);
    bob.wait_for(&["\"CALL_CLOSED\"", &first], &report);

    // bob calls alice; she answers; he hangs up.
    bob.command("dial", "sip:alice@example.test");
    alice.wait_for(
        "Receiving new incoming call from sip:bob@example.test",
        &report,
    );
    alice.command("answer");
    let up = bob.wait_for(&["\"CALL_ESTABLISHED\"", "\"outgoing\""], &report);
    let second = event_id(&up);
    alice.wait_for("with sip:bob@example.test connected", &report);
    std::thread::sleep(Duration::from_millis(500));
    bob.command("hangup", "");
    bob.wait_for(&["\"CALL_CLOSED\"", &second, "reset by user"], &report);
    alice.wait_for("with sip:bob@example.test ended", &report);

    // A MESSAGE each way.
    alice.command("chat sip:bob@example.test hello bob, from linphone");
    bob.command("message", "hello alice, from baresip");
    alice.wait_for(
        "Message received from sip:bob@example.test: hello alice, from baresip",
        &report,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let forwarded = |who: &str| {
        (1..=2).any(|i| {
            farm.instance_log(i).lines().any(|l| {
                l.contains("method=\"MESSAGE\"")
                    && l.contains("forwarding request")
                    && l.contains(&format!("request_uri=sip:{who}"))
            })
        })
    };
    while !forwarded("bob-") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    alice.quit();
    bob.quit();
    assert!(
        bob.output().contains("hello bob, from linphone"),
        "bob's baresip did not show alice's message:\n{}\n{}",
        bob.output(),
        report()
    );

    // The second call crossed the farm: bob's instance forwarded it; alice's never saw it.
    let (via_log, home_log) = (farm.instance_log(y), farm.instance_log(x));
    assert!(
        via_log.lines().any(|l| l.contains(&second)
            && l.contains("method=\"INVITE\"")
            && l.contains("forwarding request")
            && l.contains("request_uri=sip:alice")),
        "instance {y} did not forward bob's INVITE to alice\n{}",
        report()
    );
    assert!(
        !home_log.contains(&second),
        "instance {x} (alice's) saw bob's call"
    );
    // alice's own call went where the SRV records sent it (printed, not asserted).
    let through = (1..=2).find(|i| farm.instance_log(*i).contains(&first));
    println!(
        "alice's call went through instance {through:?}; bob's through {y} ({})",
        at(y)
    );
    println!(
        "farm up, linphonec and baresip registered with passwords, two calls and two MESSAGEs \
         in {:?}",
        started.elapsed()
    );
}
