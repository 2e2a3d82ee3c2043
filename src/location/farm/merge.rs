//! Merging replicas, and how long the result may live in memcached.
//!
//! Replicas of one AOR can disagree: a node missed a write while it was dead, two instances
//! wrote at once, a node came back empty. Every reader therefore merges what it found
//! binding by binding instead of picking one replica: nothing a replica holds is lost, and
//! tombstones (RFC 3261 10.3: a removed binding) win over the older live version they
//! replaced, so that a stale replica cannot bring a removed contact back.
//!
//! The item TTL follows from the merged record: memcached may drop an item only once
//! everything in it has expired.

use super::placement::Replica;
use crate::location::matching::Matcher;
use crate::location::{Binding, Record};

/// memcached treats a TTL above 30 days as an absolute Unix time.
const MAX_TTL: u64 = 30 * 24 * 3600;
/// Kept past the latest expiry so that a record is never evicted by TTL while in use.
const TTL_GRACE: u64 = 60;

/// The records found among replicas (misses left out).
pub(super) fn records(replicas: &[Replica]) -> Vec<&Record> {
    replicas
        .iter()
        .filter_map(|(_, r)| r.as_ref().map(|(r, _)| r))
        .collect()
}

/// The readable records among replicas: misses left out, and unreadable records (read as
/// an empty record without AOR, see `placement::read`), which are never merged from.
pub(super) fn readable(replicas: &[Replica]) -> impl Iterator<Item = &Record> {
    records(replicas).into_iter().filter(|r| !r.aor.is_empty())
}

/// The TTL of an item: covers the latest expiry (bindings and tombstones) plus a grace.
pub(super) fn ttl_for(record: &Record, now: u64) -> u32 {
    let until = record.max_expiry().unwrap_or(now);
    (until.saturating_sub(now) + TTL_GRACE).min(MAX_TTL) as u32
}

/// Merge replicas binding by binding. A binding is identified by instance-id + reg-id or by
/// its contact URI (RFC 5626 4.2, RFC 3261 10.3); of two versions, the same Call-ID means the
/// higher CSeq wins, otherwise the later write (`updated`) wins. Tombstones take part like
/// any binding. Bindings are found through a [`Matcher`]: linear in what the replicas hold.
pub(super) fn merge<'a>(records: impl IntoIterator<Item = &'a Record>, aor: &str) -> Record {
    let mut out = Record {
        aor: aor.to_owned(),
        bindings: Vec::new(),
    };
    let mut index = Matcher::default();
    for r in records {
        for b in &r.bindings {
            match index.first(b.probe()) {
                None => {
                    index.push(b.probe());
                    out.bindings.push(b.clone());
                }
                Some(i) => {
                    if newer(b, &out.bindings[i]) {
                        index.replace(i, b.probe());
                        out.bindings[i] = b.clone();
                    }
                }
            }
        }
    }
    out
}

/// Is `a` a later version of the same binding than `b`? Within one Call-ID the CSeq orders
/// REGISTERs (RFC 3261 10.3 step 7) whatever the clocks say; across Call-IDs only the write
/// time can, and a tombstone wins a tie so that a removal is never undone by its own copy.
fn newer(a: &Binding, b: &Binding) -> bool {
    if a.call_id == b.call_id && a.cseq != b.cseq {
        a.cseq > b.cseq
    } else {
        (a.updated, a.removed) > (b.updated, b.removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(contact: &str, call_id: &str, cseq: u32, updated: u64, removed: bool) -> Binding {
        Binding {
            contact: contact.into(),
            params: String::new(),
            expires_at: 2_000_000_000,
            q: None,
            call_id: call_id.into(),
            cseq,
            path: vec![],
            source: String::new(),
            instance_id: None,
            reg_id: None,
            updated,
            removed,
            flow: None,
        }
    }

    #[test]
    fn merge_rules() {
        let r1 = Record {
            aor: "a@x".into(),
            bindings: vec![
                b("sip:a@1", "c1", 5, 100, false),
                b("sip:a@2", "c2", 1, 100, false),
            ],
        };
        let r2 = Record {
            aor: "a@x".into(),
            bindings: vec![
                b("sip:a@1", "c1", 4, 200, false), // same Call-ID, lower CSeq: loses despite later time
                b("sip:a@2", "c9", 1, 300, true),  // other Call-ID, later: the tombstone wins
                b("sip:a@3", "c3", 1, 50, false),
            ],
        };
        let m = merge([&r1, &r2], "a@x");
        assert_eq!(m.bindings.len(), 3);
        assert_eq!(m.bindings[0].cseq, 5);
        assert!(m.bindings[1].removed);
        assert_eq!(merge([&r2, &r1], "a@x").bindings[0].cseq, 5);
    }

    /// The merge as it was, pair by pair: the reference the indexed one must equal.
    fn pairwise_merge(records: &[Record], aor: &str) -> Record {
        let mut out = Record {
            aor: aor.to_owned(),
            bindings: Vec::new(),
        };
        for b in records.iter().flat_map(|r| &r.bindings) {
            match out
                .bindings
                .iter_mut()
                .find(|o| o.same_as(&b.contact, b.instance_id.as_deref(), b.reg_id))
            {
                None => out.bindings.push(b.clone()),
                Some(o) if newer(b, o) => *o = b.clone(),
                Some(_) => {}
            }
        }
        out
    }

    #[test]
    fn merge_equals_the_pairwise_merge() {
        // RFC 3261 19.1.4: equal as written differently, unequal though alike, not transitive.
        let uris = [
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp",
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;security=off",
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com:5060",
            "sip:bob@biloxi.com;transport=udp",
            "sips:bob@biloxi.com",
            "sip:bob@192.0.2.4",
            "tel:+1-201-555-0123",
            "tel:+12015550123",
        ];
        let mut seed = 0x9e37_79b9_u32;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize % n
        };
        for _ in 0..500 {
            let replicas: Vec<Record> = (0..1 + next(3))
                .map(|_| Record {
                    aor: "a@x".into(),
                    bindings: (0..next(6))
                        .map(|_| {
                            let call_id = ["c1", "c2"][next(2)];
                            let mut x = b(uris[next(uris.len())], call_id, 1, 0, false);
                            x.cseq = next(3) as u32;
                            x.updated = next(4) as u64;
                            x.removed = next(3) == 0;
                            x
                        })
                        .collect(),
                })
                .collect();
            assert_eq!(
                merge(&replicas, "a@x"),
                pairwise_merge(&replicas, "a@x"),
                "{replicas:?}"
            );
        }
    }

    /// Two replicas of 6,000 bindings, written differently (the host's case): one merged
    /// record of 6,000, in linear time.
    #[test]
    fn merging_thousands_is_linear() {
        let replica = |host: &str| Record {
            aor: "a@x".into(),
            bindings: (0..6000)
                .map(|i| b(&format!("sip:u{i}@{host}:5070"), "c", 1, 1, false))
                .collect(),
        };
        let (r1, r2) = (replica("h"), replica("H"));
        let started = std::time::Instant::now();
        let m = merge([&r1, &r2], "a@x");
        let took = started.elapsed();
        eprintln!("merged 2 x 6000 bindings in {took:?}");
        assert_eq!(m.bindings.len(), 6000);
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn ttl_is_capped() {
        let mut r = Record::default();
        assert_eq!(ttl_for(&r, 1000), TTL_GRACE as u32);
        r.bindings.push(b("sip:a@1", "c", 1, 1, false));
        r.bindings[0].expires_at = 1000 + 3600;
        assert_eq!(ttl_for(&r, 1000), 3600 + TTL_GRACE as u32);
        r.bindings[0].expires_at = u64::MAX / 2;
        assert_eq!(ttl_for(&r, 1000), MAX_TTL as u32);
    }
}
