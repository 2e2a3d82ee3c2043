//! The refill, `location dump` and `farm check` list a node's keys with
//! `lru_crawler metadump hash`, not `all`: the LRU walk misses items that moved between LRUs
//! (read ones, here), the hash walk does not. Against a real memcached.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn listing_keys_finds_every_key_even_after_reads() {
    let mc = Memcached::start();
    // One command each (the helper reads up to END): 30 sets, then a get of all 30.
    let sets: String = (0..30)
        .map(|i| format!("set sipfarm:k{i} 0 0 1\r\nx\r\n"))
        .collect();
    let stored = mc.command(&(sets + "get sipfarm:k0\r\n"));
    assert_eq!(stored.matches("STORED").count(), 30, "{stored}");
    let names: Vec<String> = (0..30).map(|i| format!("sipfarm:k{i}")).collect();
    let get_all = format!("get {}\r\n", names.join(" "));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..4 {
        assert_eq!(mc.command(&get_all).matches("VALUE ").count(), 30);
        let by_lru = mc
            .command("lru_crawler metadump all\r\n")
            .lines()
            .filter(|l| l.starts_with("key="))
            .count();
        let keys = rt
            .block_on(sipfarm::location::admin::keys(
                &mc.addr(),
                "sipfarm:",
                Duration::from_secs(5),
            ))
            .unwrap();
        println!(
            "round {round}: metadump all listed {by_lru} of 30, sipfarm's listing {}",
            keys.len()
        );
        assert_eq!(keys.len(), 30, "round {round}");
    }
}
