//! Issue 14: `sipfarm location show|rm|add` against a real farm, with the instances' own
//! records and rules: what one shows is what the instances serve, a removal is a tombstone the
//! instances honour, an added binding is routed to.

mod common;
use common::*;
use std::process::Command;

fn location(args: &[&str], nodes: &str) -> (i32, String) {
    let out = Command::new(sipfarm_bin())
        .arg("location")
        .args(args)
        .args(["--memcached", nodes])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// `sipfarm farm check ARGS` over `nodes`: its exit code and standard output.
fn farm_check(args: &[&str], nodes: &str) -> (i32, String) {
    let out = Command::new(sipfarm_bin())
        .args(["farm", "check"])
        .args(args)
        .args(["--memcached", nodes])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `count` users PREFIX00, PREFIX01... each with one contact (ports from `port`), through `s`.
fn register_users(ua: &Ua, s: &Sipfarm, prefix: &str, count: u16, port: u16) {
    for n in 0..count {
        let user = format!("{prefix}{n:02}");
        let contact = format!("<sip:{user}@127.0.0.1:{}>", port + n);
        let reg = ua.register(&user, &[&contact], Some(600), &format!("{prefix}-{n}"), 1);
        assert_eq!(ua.request(s.addr(), &reg).code, 200);
    }
}

#[test]
fn show_rm_and_add_work_on_the_farms_records() {
    let mc = [Memcached::start(), Memcached::start()];
    let nodes = mc.iter().map(Memcached::addr).collect::<Vec<_>>().join(",");
    let s = Sipfarm::start(&["--memcached", &nodes, "--replicas", "2"]);
    let ua = Ua::new();
    let reg = ua.register(
        "alice",
        &[
            "<sip:alice@127.0.0.1:7201>",
            "<sip:alice@127.0.0.1:7202>;q=0.5",
        ],
        Some(600),
        "loc-1",
        1,
    );
    assert_eq!(ua.request(s.addr(), &reg).code, 200);

    let (code, text) = location(&["show", "alice@example.test"], &nodes);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("sip:alice@example.test: 2 bindings, 0 tombstones (replicas agree)"),
        "{text}"
    );
    assert!(
        text.contains("<sip:alice@127.0.0.1:7201>") && text.contains("q 0.500"),
        "{text}"
    );
    assert!(text.contains("call-id loc-1, cseq 1"), "{text}");
    for n in &mc {
        assert!(
            text.contains(&format!(
                "{:<24} 2 live, 0 tombstones (same as merged)",
                n.addr()
            )),
            "{text}"
        );
    }

    // One contact removed: the instance no longer has it; the other stays.
    let (code, text) = location(
        &["rm", "sip:alice@example.test", "sip:alice@127.0.0.1:7201"],
        &nodes,
    );
    assert_eq!(
        (code, text.trim()),
        (0, "sip:alice@example.test: 1 binding removed")
    );
    let q = ua.register("alice", &[], None, "loc-q", 1);
    let contacts = ua.request(s.addr(), &q).contacts();
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert!(contacts[0].contains("7202"), "{contacts:?}");
    let (_, text) = location(&["show", "alice@example.test"], &nodes);
    assert!(
        text.contains("1 binding, 1 tombstone (replicas agree)"),
        "{text}"
    );
    // The phone's next REGISTER (higher CSeq) registers it again.
    let again = ua.register(
        "alice",
        &["<sip:alice@127.0.0.1:7201>"],
        Some(600),
        "loc-1",
        2,
    );
    assert_eq!(ua.request(s.addr(), &again).code, 200);
    assert_eq!(ua.request(s.addr(), &q).contacts().len(), 2);

    // Removing everything, then nothing left to remove.
    let (code, text) = location(&["rm", "alice@example.test"], &nodes);
    assert_eq!(
        (code, text.trim()),
        (0, "sip:alice@example.test: 2 bindings removed")
    );
    let (code, text) = location(&["rm", "alice@example.test"], &nodes);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no such binding"), "{text}");

    // A static binding: the instance routes to it.
    let gw = Phone::new("gw");
    let contact = gw.contact();
    let (code, text) = location(
        &["add", "bob@example.test", &contact, "--expires", "300"],
        &nodes,
    );
    assert_eq!(code, 0, "{text}");
    let r = ua.request(s.addr(), &ua.register("bob", &[], None, "loc-b", 1));
    assert!(
        r.contacts().iter().any(|c| c.contains(&contact)),
        "{}",
        r.text
    );
    let (code, text) = location(
        &["add", "bob@example.test", "mailto:x@y", "--expires", "300"],
        &nodes,
    );
    assert_eq!(code, 2);
    assert!(text.contains("not a sip: or sips: URI"), "{text}");
    let (code, text) = location(&["show", "bob"], &nodes);
    assert_eq!(code, 2, "{text}");
}

/// `location dump`: every AOR of the farm (replicas merged: once each), human or JSON.
#[test]
fn dump_lists_every_aor_once() {
    let mc = [Memcached::start(), Memcached::start(), Memcached::start()];
    let nodes = mc.iter().map(Memcached::addr).collect::<Vec<_>>().join(",");
    let s = Sipfarm::start(&["--memcached", &nodes, "--replicas", "2"]);
    let ua = Ua::new();
    register_users(&ua, &s, "dump", 20, 7300);
    // Lookups move items between memcached's LRUs: `lru_crawler metadump all` then misses
    // some of them (it walks the LRUs); the listing must not.
    for _ in 0..3 {
        for n in 0..20 {
            let q = ua.register(&format!("dump{n:02}"), &[], None, &format!("q{n}"), 1);
            assert_eq!(ua.request(s.addr(), &q).code, 200);
        }
    }
    // Each dump reads every key it lists, which moves items between LRUs too: every one of
    // several dumps in a row must still list them all.
    for _ in 0..4 {
        let (code, text) = location(&["dump"], &nodes);
        assert_eq!(code, 0, "{text}");
        for n in 0..20 {
            let head = format!("sip:dump{n:02}@example.test: 1 binding");
            assert_eq!(text.matches(&head).count(), 1, "{head} once in:\n{text}");
        }
    }
    let (code, json) = location(&["dump", "--format", "json"], &nodes);
    assert_eq!(code, 0, "{json}");
    assert!(json.starts_with("{\"aors\":["), "{json}");
    assert_eq!(json.matches("\"aor\":\"sip:dump").count(), 20, "{json}");
    assert!(json.contains("\"unlisted\":[]"), "{json}");
    let (code, text) = location(&["dump", "--format", "xml"], &nodes);
    assert_eq!(code, 2, "{text}");
}

/// `farm check`: a node restarted empty while no instance runs (no refill) leaves records
/// missing on an owner; `--repair` writes them back from the other owner; then all is in order.
#[test]
fn farm_check_finds_and_repairs_missing_replicas() {
    let mut mc = [Memcached::start(), Memcached::start(), Memcached::start()];
    let nodes = mc.iter().map(Memcached::addr).collect::<Vec<_>>().join(",");
    let s = Sipfarm::start(&["--memcached", &nodes, "--replicas", "2"]);
    let ua = Ua::new();
    register_users(&ua, &s, "chk", 30, 7400);
    drop(s);
    let check = |args: &[&str]| farm_check(args, &nodes);
    let (code, text) = check(&[]);
    assert_eq!((code, text.trim()), (0, "30 records, 0 with problems"));

    let port = mc[0].port;
    mc[0].crash();
    mc[0] = Memcached::start_on(port);
    let lost = mc[0].addr();
    let (code, text) = check(&[]);
    assert_eq!(code, 1, "{text}");
    let missing = text.matches(&format!("missing on owner {lost}")).count();
    assert!(missing > 0, "{text}");
    assert!(
        text.contains(&format!("30 records, {missing} with problems")),
        "{text}"
    );

    let (code, text) = check(&["--repair"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("{missing} repaired")), "{text}");
    assert_eq!(
        mc[0].records() as usize,
        missing,
        "written back to the node that lost them"
    );
    let (code, text) = check(&[]);
    assert_eq!((code, text.trim()), (0, "30 records, 0 with problems"));
}

/// The record key on `mc` (the only one that is not the ring id or a lease) and the seconds
/// its item has left (`mg KEY t`).
fn record_ttl(mc: &Memcached) -> (String, i64) {
    let dump = mc.command("lru_crawler metadump hash\r\n");
    let key = dump
        .lines()
        .filter_map(|l| l.strip_prefix("key=")?.split(' ').next())
        .find(|k| !k.contains("ring") && !k.contains("lease") && !k.contains("census"))
        .unwrap_or_else(|| panic!("no record key in {dump}"))
        .replace("%3A", ":")
        .replace("%3a", ":");
    let answer = mc.command(&format!("mg {key} t\r\n"));
    let ttl = answer
        .split_whitespace()
        .find_map(|f| f.strip_prefix('t')?.parse().ok())
        .unwrap_or_else(|| panic!("no TTL in {answer:?}"));
    (key, ttl)
}

/// `location add --expires 0`: a binding kept until removed, stored with memcached's longest
/// TTL (30 days) and renewed by the instances: an item with 1000 s left is back to 30 days
/// soon after an instance starts. Phones are told 2^32-1 seconds; a removal leaves a tombstone.
#[test]
fn a_binding_added_with_expires_0_is_kept_until_removed() {
    let mc = [Memcached::start(), Memcached::start()];
    let nodes = mc.iter().map(Memcached::addr).collect::<Vec<_>>().join(",");
    let gw = "sip:gw@127.0.0.1:7390";
    let (code, text) = location(&["add", "gw@example.test", gw, "--expires", "0"], &nodes);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("bound until removed"), "{text}");
    let (_, text) = location(&["show", "gw@example.test"], &nodes);
    assert!(text.contains("kept until removed"), "{text}");
    for m in &mc {
        let (key, ttl) = record_ttl(m);
        assert!(ttl > 2_590_000, "{ttl}");
        assert!(
            m.command(&format!("touch {key} 1000\r\n"))
                .starts_with("TOUCHED")
        );
        assert!(record_ttl(m).1 <= 1000);
    }

    let s = Sipfarm::start(&["--memcached", &nodes, "--replicas", "2"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while mc.iter().any(|m| record_ttl(m).1 < 2_590_000) {
        assert!(
            std::time::Instant::now() < deadline,
            "not renewed: {:?}",
            mc.iter().map(record_ttl).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    eprintln!(
        "renewed {:?} before the deadline",
        deadline - std::time::Instant::now()
    );
    let ua = Ua::new();
    let query = ua.register("gw", &[], None, "gw-q", 1);
    let r = ua.request(s.addr(), &query);
    assert_eq!(r.code, 200, "{}", r.text);
    assert!(
        r.text
            .contains("<sip:gw@127.0.0.1:7390>;expires=4294967295"),
        "{}",
        r.text
    );

    let (code, text) = location(&["rm", "gw@example.test"], &nodes);
    assert_eq!(code, 0, "{text}");
    let (_, text) = location(&["show", "gw@example.test"], &nodes);
    assert!(text.contains("0 bindings, 1 tombstone"), "{text}");
    let r = ua.request(s.addr(), &ua.register("gw", &[], None, "gw-q", 2));
    assert!(!r.text.contains("7390"), "{}", r.text);
    // The tombstone's record lives the longest TTL from the removal: longer than any replica
    // that might still hold the binding (written before it).
    for m in &mc {
        let ttl = record_ttl(m).1;
        assert!(ttl > 2_590_000, "{ttl}");
    }
}

/// Copies on a node that is not an owner (written with R=3, checked with R=2, as after a
/// node list or replica change): reported, and retired by `--repair` once the owners hold
/// the merge; a check afterwards finds nothing and every record is still served.
#[test]
fn farm_check_retires_copies_on_non_owners() {
    let mc = [Memcached::start(), Memcached::start(), Memcached::start()];
    let nodes = mc.iter().map(Memcached::addr).collect::<Vec<_>>().join(",");
    let s = Sipfarm::start(&["--memcached", &nodes, "--replicas", "3"]);
    let ua = Ua::new();
    register_users(&ua, &s, "own", 10, 7450);
    drop(s);
    assert_eq!(mc.iter().map(Memcached::records).sum::<u64>(), 30);
    let check = |args: &[&str]| farm_check(args, &nodes);
    let (code, text) = check(&[]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(text.matches("(not an owner)").count(), 10, "{text}");
    let (code, text) = check(&["--repair"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("10 repaired"), "{text}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // curr_items counts expired items until they are touched: read every key listed.
    let live: usize = mc
        .iter()
        .map(|m| {
            let dump = m.command("lru_crawler metadump hash\r\n");
            dump.lines()
                .filter_map(|l| l.strip_prefix("key=")?.split(' ').next())
                .filter(|k| !k.contains("ring") && !k.contains("lease") && !k.contains("census"))
                .filter(|k| {
                    let k = k.replace("%3A", ":").replace("%3a", ":");
                    m.command(&format!("mg {k}\r\n")).starts_with("HD")
                })
                .count()
        })
        .sum();
    assert_eq!(live, 20, "two copies of each record left");
    let (code, text) = check(&[]);
    assert_eq!((code, text.trim()), (0, "10 records, 0 with problems"));
    let s = Sipfarm::start(&["--memcached", &nodes, "--replicas", "2"]);
    for n in 0..10u16 {
        let r = ua.request(
            s.addr(),
            &ua.register(&format!("own{n:02}"), &[], None, "q", 1),
        );
        assert!(r.text.contains(&format!("{}", 7450 + n)), "{}", r.text);
    }
}
