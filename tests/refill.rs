//! Issue 12 defect 5: a refill that could not read every source is retried until it is
//! complete. Three nodes, R=2, one instance, 300 users. Node 1 freezes (its breaker opens),
//! then node 0 restarts empty: its refill can copy only what node 2 holds, so the records
//! whose owners are nodes 0 and 1 are missing. Node 1 thaws: with no lookup at all, node 0
//! gets every record it should hold.

mod common;
use common::*;
use sipfarm::location::record;
use sipfarm::location::ring::Ring;
use std::time::{Duration, Instant};

const USERS: usize = 300;

fn user(i: usize) -> String {
    format!("refill{i:04}")
}

/// Keys that belong on node `n` (among the first `r` nodes of the key's ring walk).
fn expected_on(nodes: &[&Memcached], n: usize, r: usize) -> usize {
    let ring = Ring::new(&nodes.iter().map(|m| (m.addr(), 1)).collect::<Vec<_>>());
    (0..USERS)
        .filter(|i| {
            let key = record::key("sipfarm:", &format!("{}@example.test", user(*i)));
            ring.walk(key.as_bytes()).take(r).any(|x| x == n)
        })
        .count()
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
    assert_eq!(mc[0].items() as usize, want);

    mc[1].freeze();
    // The instance probes every node twice a second: three failed probes open the breaker.
    std::thread::sleep(Duration::from_secs(3));
    let port0 = mc[0].port;
    mc[0].crash();
    mc[0] = Memcached::start_on(port0);
    std::thread::sleep(Duration::from_secs(3));
    let partial = mc[0].items() as usize;
    assert!(partial < want, "node 1 frozen, yet {partial} of {want}");
    mc[1].thaw();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have = mc[0].items() as usize;
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
