//! Issue 12, hinted handoff: a write acknowledged while one owner of its record was skipped
//! as dead (it went to the owner left and a stand-in) reaches that owner as soon as it answers
//! again, without waiting for a lookup, even when its refill is rationed (a node that flaps is
//! refilled at most once per 30 s). Otherwise the next faults (the stand-in restarted, then the
//! owner that stored it) lose an acknowledged write or bring back an acknowledged removal.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A user of example.test whose record's two owners are nodes `a` and `b` of `nodes`.
fn user_on(nodes: &[&Memcached], a: usize, b: usize) -> String {
    let ring = sipfarm::location::ring::Ring::new(
        &nodes.iter().map(|m| (m.addr(), 1)).collect::<Vec<_>>(),
    );
    (0..1000)
        .map(|n| format!("hint{n}"))
        .find(|u| {
            let key = sipfarm::location::record::key("sipfarm:", &format!("{u}@example.test"));
            let owners: Vec<usize> = ring.walk(key.as_bytes()).take(2).collect();
            owners == [a, b]
        })
        .expect("a user on those nodes")
}

/// What `location show` says node `addr` holds of `user`.
fn replica_line(user: &str, nodes: &str, addr: &str) -> String {
    let out = Command::new(sipfarm_bin())
        .args(["location", "show", &format!("{user}@example.test")])
        .args(["--memcached", nodes])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.trim_start().starts_with(addr))
        .unwrap_or_else(|| panic!("no replica line for {addr}:\n{text}"))
        .to_owned()
}

#[test]
fn a_removal_missed_by_a_skipped_owner_reaches_it_when_it_rejoins() {
    let mc = [Memcached::start(), Memcached::start(), Memcached::start()];
    let refs: Vec<&Memcached> = mc.iter().collect();
    let nodes = mc.iter().map(Memcached::addr).collect::<Vec<_>>().join(",");
    let user = user_on(&refs, 0, 1);
    let s = Sipfarm::with_farm(&refs, &["--replicas", "2"]);
    let ua = Ua::new();
    let contact = format!("<sip:{user}@127.0.0.1:7700>");
    let reg = ua.register(&user, &[&contact], Some(600), "h-1", 1);
    assert_eq!(ua.request(s.addr(), &reg).code, 200);
    assert!(replica_line(&user, &nodes, &mc[1].addr()).contains("1 live, 0 tombstones"));

    // Node 1 flaps: frozen until its breaker opens, thawed, refilled once.
    let others: Vec<String> = (0..1000)
        .map(|n| format!("other{n}"))
        .filter(|u| records_owned_by(&refs, 1, 2, std::iter::once(u.clone())) == 1)
        .take(6)
        .collect();
    let open_breaker = || {
        mc[1].freeze();
        for (n, u) in others.iter().enumerate() {
            let c = format!("<sip:{u}@127.0.0.1:{}>", 7710 + n);
            ua.request(s.addr(), &ua.register(u, &[&c], Some(600), u, 1));
        }
    };
    open_breaker();
    mc[1].thaw();
    std::thread::sleep(Duration::from_millis(1500));
    // Frozen again and skipped: the removal goes to node 0 and a stand-in (node 2). Thawed,
    // node 1 rejoins, and its refill is not due again for 30 s.
    open_breaker();
    let bye = ua.register(&user, &[&contact], Some(0), "h-1", 2);
    assert_eq!(ua.request(s.addr(), &bye).code, 200);
    mc[1].thaw();

    // No lookup, no refill: the hint brings the tombstone to node 1.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = replica_line(&user, &nodes, &mc[1].addr());
        if line.contains("0 live, 1 tombstone") {
            break;
        }
        assert!(Instant::now() < deadline, "node 1 still holds: {line}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The next faults take the stand-in, then node 0: it stays removed.
    let mut mc = mc;
    for i in [2, 0] {
        let port = mc[i].port;
        mc[i].crash();
        mc[i] = Memcached::start_on(port);
        std::thread::sleep(Duration::from_millis(1500));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let query = ua.register(&user, &[], None, "h-q", 1);
    let r = ua.request(s.addr(), &query);
    assert!(
        !r.text.contains("7700"),
        "the removal came back:\n{}",
        r.text
    );
}
