//! The registrar on a memcached farm: two instances writing one AOR at once, the data
//! layout in memcached, a frozen node, and refreshes after the other instance wrote. Real
//! sipfarm and memcached processes; the rules shared with the memory store are in
//! registrar.rs.

mod common;
use common::*;
use std::time::Duration;

/// Two instances register two different contacts for one AOR at the same moment: both are
/// kept, every time (memcached CAS decides between instances).
#[test]
fn farm_concurrent_registrations_keep_both() {
    let s = Setup::farm(&[]);
    let (a, b) = (s.at(0), s.at(1));
    for round in 0..100 {
        let user = unique("race");
        let ua1 = Ua::new();
        let ua2 = Ua::new();
        let m1 = ua1.register(
            &user,
            &["<sip:one@127.0.0.1:6401>"],
            Some(300),
            &unique("c"),
            1,
        );
        let m2 = ua2.register(
            &user,
            &["<sip:two@127.0.0.1:6402>"],
            Some(300),
            &unique("c"),
            1,
        );
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let b2 = barrier.clone();
        let t = std::thread::spawn(move || {
            b2.wait();
            ua2.request(b, &m2).code
        });
        barrier.wait();
        let c1 = ua1.request(a, &m1).code;
        let c2 = t.join().unwrap();
        assert_eq!((c1, c2), (200, 200), "round {round}");
        let q = Ua::new();
        let r = q.request(a, &q.register(&user, &[], None, &unique("c"), 1));
        assert_eq!(
            r.contacts(),
            vec![
                "sip:one@127.0.0.1:6401".to_owned(),
                "sip:two@127.0.0.1:6402".to_owned()
            ],
            "round {round}"
        );
    }
}

/// The farm's data layout: a prefixed hashed key, the AOR inside the value.
#[test]
fn farm_layout_in_memcached() {
    let mc = Memcached::start();
    let s = Sipfarm::with_farm(&[&mc], &[]);
    let ua = Ua::new();
    let r = ua.request(
        s.addr(),
        &ua.register(
            "layout",
            &["<sip:l@127.0.0.1:6500>"],
            Some(600),
            &unique("c"),
            1,
        ),
    );
    assert_eq!(r.code, 200);
    assert_eq!(mc.records(), 1);
    // The record's line (the instance's ring id is an item too: `sipfarm:ring`).
    let dump: String = mc
        .command("lru_crawler metadump hash\r\n")
        .lines()
        .filter(|l| !l.starts_with("key=sipfarm%3Aring "))
        .map(|l| format!("{l}\n"))
        .collect();
    let key = dump
        .lines()
        .find_map(|l| l.strip_prefix("key="))
        .map(|k| k.split_whitespace().next().unwrap().replace("%3A", ":"))
        .expect("one key");
    assert!(
        key.starts_with("sipfarm:") && key.len() == "sipfarm:".len() + 32,
        "{key}"
    );
    let got = mc.command(&format!("get {key}\r\n"));
    assert!(
        got.contains("layout@example.test"),
        "the AOR is in the value"
    );
    let exp: i64 = dump
        .lines()
        .find_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("exp=")))
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        exp > now + 600 && exp < now + 600 + 120,
        "item TTL covers the binding plus a grace: {exp} vs {now}"
    );
}

/// A farm that does not answer (frozen by SIGSTOP) gets the client a 500 with Retry-After,
/// never a hang; when it answers again, so does the registrar.
#[test]
fn frozen_farm_answers_500_with_retry_after() {
    let mc = Memcached::start();
    let s = Sipfarm::with_farm(&[&mc], &[]);
    let ua = Ua::new();
    mc.freeze();
    let r = ua.request(
        s.addr(),
        &ua.register(
            "frozen",
            &["<sip:f@127.0.0.1:6600>"],
            Some(300),
            &unique("c"),
            1,
        ),
    );
    mc.thaw();
    assert_eq!(r.code, 500, "{}", r.text);
    assert_eq!(r.headers("retry-after"), vec!["5"]);
    // Back to normal once the breaker's probe goes through.
    let mut ok = false;
    for _ in 0..50 {
        let r = ua.request(
            s.addr(),
            &ua.register(
                "frozen",
                &["<sip:f@127.0.0.1:6600>"],
                Some(300),
                &unique("c"),
                1,
            ),
        );
        if r.code == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ok, "registrations resume after the node answers again");
}

/// An instance refreshes from what it wrote last (one compare-and-swap); when the other
/// instance wrote in between, the CAS fails and it re-reads: nothing is lost.
#[test]
fn farm_refresh_after_the_other_instance_wrote() {
    let s = Setup::farm(&[]);
    let ua = Ua::new();
    let user = unique("alt");
    let (c1, c2) = ("sip:alt@127.0.0.1:6701", "sip:alt@127.0.0.1:6702");
    for round in 1..=20u32 {
        let r = ua.request(
            s.at(0),
            &ua.register(
                &user,
                &[&format!("<{c1}>")],
                Some(300 + round),
                "alt-a",
                round,
            ),
        );
        assert_eq!(r.code, 200);
        let r = ua.request(
            s.at(1),
            &ua.register(
                &user,
                &[&format!("<{c2}>")],
                Some(600 + round),
                "alt-b",
                round,
            ),
        );
        assert_eq!(r.code, 200);
        assert_eq!(
            r.contacts(),
            vec![c1.to_owned(), c2.to_owned()],
            "round {round}"
        );
        // The seconds left: a second may tick between the two REGISTERs.
        let left = expires_of(&r, c1).unwrap_or(0);
        assert!(
            (299 + round..=300 + round).contains(&left),
            "round {round}: {}",
            r.text
        );
    }
}
