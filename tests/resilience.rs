//! Farm resilience with real memcached processes, killed (kill -9) and frozen (SIGSTOP) for
//! real: replicas, refill of a node that comes back empty, stale replicas, tombstones and
//! growth.

mod common;
use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const USERS: usize = 1000;

fn user(i: usize) -> String {
    format!("r{i:04}")
}

/// The callee side: every user's contact is this socket, with the user in the URI.
struct Callee {
    phone: Phone,
}

impl Callee {
    fn contact(&self, u: &str) -> String {
        format!("sip:{u}@127.0.0.1:{}", self.phone.ua.port)
    }
}

fn register_all(instances: &[SocketAddr], callee: &Callee) {
    let ua = Ua::new();
    for i in 0..USERS {
        let u = user(i);
        let r = ua.request(
            instances[i % instances.len()],
            &ua.register(
                &u,
                &[&format!("<{}>", callee.contact(&u))],
                Some(3600),
                &format!("reg-{u}"),
                1,
            ),
        );
        assert_eq!(r.code, 200, "{}", r.text);
    }
}

/// Every user found as `expect` says, by a query and by INVITE routing, through each instance.
fn check_all(
    phase: &str,
    instances: &[SocketAddr],
    callee: &Callee,
    expect: &dyn Fn(&str) -> Option<String>,
) {
    let ua = Ua::new();
    let caller = Phone::new("caller");
    for (n, inst) in instances.iter().enumerate() {
        for i in 0..USERS {
            let u = user(i);
            let want = expect(&u);
            let q = ua.request(*inst, &ua.register(&u, &[], None, &unique("q"), 1));
            assert_eq!(q.code, 200, "{phase}: {u} via instance {n}: {}", q.text);
            assert_eq!(
                q.contacts(),
                want.iter().cloned().collect::<Vec<_>>(),
                "{phase}: {u} via instance {n}"
            );
            let cid = unique("inv");
            let inv = format!(
                "INVITE sip:{u}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={};rport\r\nMax-Forwards: 70\r\nFrom: <sip:caller@example.test>;tag=c\r\nTo: <sip:{u}@example.test>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
                caller.ua.port,
                unique("z9hG4bKr")
            );
            caller.ua.send(*inst, &inv);
            match &want {
                Some(contact) => {
                    let got = callee
                        .phone
                        .wait(Duration::from_secs(5), |m| {
                            m.header("Call-ID").as_deref() == Some(cid.as_str())
                        })
                        .unwrap_or_else(|| panic!("INVITE for {u} via instance {n} not delivered"));
                    assert_eq!(got.request_uri(), Some(contact.as_str()));
                }
                None => {
                    let r = caller
                        .wait(Duration::from_secs(5), |m| {
                            m.header("Call-ID").as_deref() == Some(cid.as_str())
                                && m.code().is_some_and(|c| c >= 400)
                        })
                        .unwrap_or_else(|| panic!("no error answer for {u}"));
                    assert_eq!(r.code(), Some(480), "{u}: {}", r.text);
                }
            }
        }
    }
}

/// Keys that belong on node `n` (among the first `r` nodes of the key's ring walk).
fn expected_on(nodes: &[&Memcached], n: usize, r: usize) -> usize {
    records_owned_by(nodes, n, r, (0..USERS).map(user))
}

fn wait_items(m: &Memcached, want: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have = m.records() as usize;
        if have >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {have} of {want} records after 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 3 memcached nodes, two instances with R=2, and every user registered.
fn three_nodes_two_instances_1000_users() -> (Vec<Memcached>, Sipfarm, Sipfarm, Callee) {
    let mc = vec![Memcached::start(), Memcached::start(), Memcached::start()];
    let refs: Vec<&Memcached> = mc.iter().collect();
    let a = Sipfarm::with_farm(&refs, &["--replicas", "2"]);
    let b = Sipfarm::with_farm(&refs, &["--replicas", "2"]);
    let callee = Callee {
        phone: Phone::new("callee"),
    };
    register_all(&[a.addr(), b.addr()], &callee);
    (mc, a, b, callee)
}

#[test]
fn kill_one_node_restart_it_empty_refill_then_kill_another() {
    let (mut mc, a, b, callee) = three_nodes_two_instances_1000_users();
    let instances = [a.addr(), b.addr()];
    let all = |u: &str| Some(callee.contact(u));
    check_all("all up", &instances, &callee, &all);

    // kill -9 the first node: every user is still found through each instance.
    let port0 = mc[0].port;
    mc[0].crash();
    check_all("first node killed", &instances, &callee, &all);

    // Restart it empty; the instances refill it in the background.
    mc[0] = Memcached::start_on(port0);
    let want = {
        let refs: Vec<&Memcached> = mc.iter().collect();
        expected_on(&refs, 0, 2)
    };
    wait_items(&mc[0], want, "refill of the restarted node");

    // Now lose a second node, with no lookup in between: still everyone.
    mc[1].crash();
    check_all(
        "second node killed after the refill",
        &instances,
        &callee,
        &all,
    );
}

#[test]
fn frozen_node_then_stale_data_is_never_served() {
    let (mut mc, a, b, callee) = three_nodes_two_instances_1000_users();
    let instances = [a.addr(), b.addr()];

    mc[0].freeze();
    check_all("first node frozen", &instances, &callee, &|u: &str| {
        Some(callee.contact(u))
    });

    // While it is frozen: 100 users move to a new contact, 50 unregister.
    let ua = Ua::new();
    let moved = |u: &str| format!("sip:{u}-moved@127.0.0.1:{}", callee.phone.ua.port);
    let mut fresh: HashMap<String, Option<String>> = HashMap::new();
    for i in 0..150 {
        let u = user(i);
        let old = format!("<{}>", callee.contact(&u));
        let req = if i < 100 {
            fresh.insert(u.clone(), Some(moved(&u)));
            ua.register(
                &u,
                &[&format!("<{}>", moved(&u))],
                Some(3600),
                &unique("m"),
                1,
            )
        } else {
            fresh.insert(u.clone(), None);
            ua.register(&u, &[&old], Some(0), &unique("m"), 1)
        };
        let r = ua.request(instances[i % 2], &req);
        assert_eq!(r.code, 200, "{}", r.text);
        if i < 100 {
            // The old contact goes away too.
            let r = ua.request(
                instances[i % 2],
                &ua.register(&u, &[&old], Some(0), &unique("m"), 1),
            );
            assert_eq!(r.code, 200);
        }
    }
    // Resume it: its data is stale. Nothing stale may be served, now or after another node dies.
    mc[0].thaw();
    std::thread::sleep(Duration::from_secs(2)); // the monitor probes every 500 ms and rejoins it
    let expect = |u: &str| {
        fresh
            .get(u)
            .cloned()
            .unwrap_or_else(|| Some(callee.contact(u)))
    };
    check_all("frozen node resumed", &instances, &callee, &expect);
    mc[1].crash();
    check_all("another node killed", &instances, &callee, &expect);
}

#[test]
fn tombstone_survives_a_frozen_replica() {
    let mc = [Memcached::start(), Memcached::start()];
    let refs: Vec<&Memcached> = mc.iter().collect();
    let a = Sipfarm::with_farm(&refs, &["--replicas", "2"]);
    let b = Sipfarm::with_farm(&refs, &["--replicas", "2"]);
    let ua = Ua::new();
    let contact = "<sip:ghost@127.0.0.1:6900>";
    let r = ua.request(
        a.addr(),
        &ua.register("ghost", &[contact], Some(3600), "ghost-reg", 1),
    );
    assert_eq!(r.code, 200);
    mc[0].freeze();
    let r = ua.request(
        b.addr(),
        &ua.register("ghost", &[contact], Some(0), "ghost-unreg", 1),
    );
    assert_eq!(r.code, 200, "{}", r.text);
    assert!(r.contacts().is_empty());
    mc[0].thaw();
    std::thread::sleep(Duration::from_secs(1));
    for s in [&a, &b, &a, &b] {
        let q = ua.request(s.addr(), &ua.register("ghost", &[], None, &unique("q"), 1));
        assert!(
            q.contacts().is_empty(),
            "the removed binding came back: {}",
            q.text
        );
    }
}

#[test]
fn growth_adds_a_node_and_every_user_is_still_found() {
    let mut mc = vec![Memcached::start(), Memcached::start()];
    let callee = Callee {
        phone: Phone::new("callee"),
    };
    {
        let refs: Vec<&Memcached> = mc.iter().collect();
        let a = Sipfarm::with_farm(&refs, &["--replicas", "1"]);
        let b = Sipfarm::with_farm(&refs, &["--replicas", "1"]);
        register_all(&[a.addr(), b.addr()], &callee);
    }
    // Rolling restart of both instances with a third node.
    mc.push(Memcached::start());
    let refs: Vec<&Memcached> = mc.iter().collect();
    let a = Sipfarm::with_farm(&refs, &["--replicas", "1"]);
    let b = Sipfarm::with_farm(&refs, &["--replicas", "1"]);
    let moved = expected_on(&refs, 2, 1);
    assert!(
        moved > 200 && moved < 470,
        "about a third of the keys belong to the new node: {moved}"
    );
    check_all(
        "after growth",
        &[a.addr(), b.addr()],
        &callee,
        &|u: &str| Some(callee.contact(u)),
    );
}

#[test]
fn farm_status_shows_nodes_and_the_instance_view() {
    let mut mc = [Memcached::start(), Memcached::start()];
    let refs: Vec<&Memcached> = mc.iter().collect();
    let s = Sipfarm::with_farm(&refs, &["--replicas", "2"]);
    let list = format!("{},{}", mc[0].addr(), mc[1].addr());
    let dead = mc[1].addr();
    mc[1].crash();
    std::thread::sleep(Duration::from_millis(1500));
    let out = std::process::Command::new(sipfarm_bin())
        .args([
            "farm",
            "status",
            "--memcached",
            &list,
            "--instance",
            &s.addr().to_string(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let up_line = text.lines().find(|l| l.starts_with(&mc[0].addr())).unwrap();
    assert!(
        up_line.contains(" up ") && up_line.ends_with("alive"),
        "{text}"
    );
    let down_line = text.lines().find(|l| l.starts_with(&dead)).unwrap();
    assert!(
        down_line.contains("DOWN") && down_line.ends_with("dead"),
        "{text}"
    );
    assert!(text.contains(&format!("dead now: {dead}")), "{text}");
}
