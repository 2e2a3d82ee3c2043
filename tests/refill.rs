//! Issue 12 defect 5: a refill that could not read every source is retried until it is
//! complete. Three nodes, R=2, one instance, 300 users. Node 1 freezes (its breaker opens),
//! then node 0 restarts empty: its refill can copy only what node 2 holds, so the records
//! whose owners are nodes 0 and 1 are missing. Node 1 thaws: with no lookup at all, node 0
//! gets every record it should hold.

mod common;
use common::*;
use std::time::{Duration, Instant};

const USERS: usize = 300;

fn user(i: usize) -> String {
    format!("refill{i:04}")
}

/// Keys that belong on node `n` (among the first `r` nodes of the key's ring walk).
fn expected_on(nodes: &[&Memcached], n: usize, r: usize) -> usize {
    records_owned_by(nodes, n, r, (0..USERS).map(user))
}

#[test]
fn an_incomplete_refill_is_retried_until_complete() {
    let mut mc = [Memcached::start(), Memcached::start(), Memcached::start()];
    let s = {
        let refs: Vec<&Memcached> = mc.iter().collect();
        Sipfarm::with_farm(&refs, &["--replicas", "2"])
    };
    let ua = Ua::new();
    for i in 0..USERS {
        let contact = format!("<sip:{}@127.0.0.1:5999>", user(i));
        let r = ua.request(
            s.addr(),
            &ua.register(&user(i), &[&contact], Some(600), &unique("r"), 1),
        );
        assert_eq!(r.code, 200, "{}", r.text);
    }
    let want = {
        let refs: Vec<&Memcached> = mc.iter().collect();
        expected_on(&refs, 0, 2)
    };
    assert_eq!(mc[0].records() as usize, want);

    mc[1].freeze();
    // The instance probes every node twice a second: three failed probes open the breaker.
    std::thread::sleep(Duration::from_secs(3));
    let port0 = mc[0].port;
    mc[0].crash();
    mc[0] = Memcached::start_on(port0);
    std::thread::sleep(Duration::from_secs(3));
    let partial = mc[0].records() as usize;
    assert!(partial < want, "node 1 frozen, yet {partial} of {want}");
    mc[1].thaw();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have = mc[0].records() as usize;
        if have >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refill never completed: {have} of {want} records on the restarted node (had {partial})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Defect 5, deduplicated: two instances see the same node restart empty; one refills it (the
/// one holding the node's refill lease), the other is told it was done.
#[test]
fn one_instance_refills_a_node() {
    let mut mc = [Memcached::start(), Memcached::start()];
    let dir = TempDir::new("sipfarm-refill-");
    let list = mc.iter().map(|m| m.addr()).collect::<Vec<_>>().join(",");
    let start = |name: &str| {
        Sipfarm::start_logging(
            &["--memcached", &list, "--replicas", "2"],
            Some(&dir.join(&format!("{name}.log"))),
        )
    };
    let (a, b) = (start("a"), start("b"));
    let ua = Ua::new();
    for i in 0..50 {
        let contact = format!("<sip:{}@127.0.0.1:5999>", user(i));
        let at = if i % 2 == 0 { a.addr() } else { b.addr() };
        let r = ua.request(
            at,
            &ua.register(&user(i), &[&contact], Some(600), &unique("r"), 1),
        );
        assert_eq!(r.code, 200, "{}", r.text);
    }
    let port0 = mc[0].port;
    mc[0].crash();
    mc[0] = Memcached::start_on(port0);
    let node0 = mc[0].addr();
    let logs = || {
        ["a", "b"]
            .map(|n| std::fs::read_to_string(dir.join(&format!("{n}.log"))).unwrap_or_default())
    };
    let count = |text: &str, what: &str| {
        text.lines()
            .filter(|l| l.contains(what) && l.contains(&node0))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let [la, lb] = logs();
        let done = count(&la, "refill done") + count(&lb, "refill done");
        let told =
            count(&la, "refilled by another instance") + count(&lb, "refilled by another instance");
        if done >= 1 && told >= 1 {
            assert_eq!(done, 1, "both instances refilled the node:\n{la}\n{lb}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refills: {done} done, {told} told:\n{la}\n{lb}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        mc[0].records(),
        50,
        "50 records (besides the leases and the ring id)"
    );
    drop((a, b));
}
