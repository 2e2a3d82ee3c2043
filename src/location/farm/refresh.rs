//! The refresh cache: what this instance wrote last, per key, with the CAS each replica
//! answered.
//!
//! Most REGISTERs are refreshes (RFC 3261 10.2.4) of a binding this same instance wrote a
//! few minutes before. When nobody else wrote the record since, the instance already knows
//! both the record and every replica's CAS token, so the refresh is a single
//! compare-and-swap round trip instead of a read then a write. Nothing is trusted blindly:
//! a replica written by anyone else in between answers with a CAS conflict, and the update
//! falls back to reading the replicas. An entry is taken out while it is used, so a failed
//! or abandoned attempt never leaves a stale one behind.
//!
//! Bounded memory, by entries and by bytes (an estimate of what each entry holds: a record
//! can carry Paths and parameters of kilobytes, so a count alone bounds nothing). The cache
//! is sharded; a shard over either bound first drops the entries whose record has expired,
//! then, if that is not enough, is simply emptied (cheaper than tracking recency; a dropped
//! entry only costs one read on the next refresh). An entry whose record has expired (every
//! binding and tombstone past its expiry, RFC 3261 10.3) is never served: it is dropped
//! when found.

use super::placement::Replica;
use crate::location::node::{NodeError, Write};
use crate::location::ring::key_hash;
use crate::location::{Binding, Record};
use std::collections::HashMap;
use std::mem::size_of;
use std::sync::{Mutex, MutexGuard};

/// Shards of the cache: one lock each, so that event loops rarely wait for one another.
const SHARDS: usize = 64;

/// The records this instance wrote last, with the CAS of every replica.
pub(super) struct RefreshCache {
    /// Entries per shard (0: the cache is off).
    per_shard: usize,
    /// Estimated bytes per shard.
    bytes_per_shard: usize,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, CachedRecord>,
    /// The sum of the entries' `bytes`.
    bytes: usize,
}

/// One record as this instance last wrote it.
pub(super) struct CachedRecord {
    pub(super) record: Record,
    /// (node, CAS) per replica, in ring order.
    pub(super) cas: Vec<(usize, u64)>,
    /// Each replica's node epoch when the CAS was taken ([`crate::location::node`]): a CAS
    /// of an older epoch may name another process's item.
    pub(super) epochs: Vec<u64>,
    /// The record's latest expiry (Unix seconds): useless from then on.
    expires_at: u64,
    /// What the entry is estimated to hold.
    bytes: usize,
}

/// The heap an entry holds, estimated from its strings and fixed parts (hash-map overhead
/// included), never less than what it really holds by much.
fn estimate(key: &str, record: &Record, replicas: usize) -> usize {
    let binding = |b: &Binding| {
        size_of::<Binding>()
            + b.contact.len()
            + b.params.len()
            + b.call_id.len()
            + b.source.len()
            + b.instance_id.as_ref().map_or(0, String::len)
            + b.path
                .iter()
                .map(|p| size_of::<String>() + p.len())
                .sum::<usize>()
    };
    64 + key.len()
        + size_of::<CachedRecord>()
        + record.aor.len()
        + replicas * size_of::<(usize, u64)>()
        + record.bindings.iter().map(binding).sum::<usize>()
}

impl Shard {
    fn remove(&mut self, key: &str) -> Option<CachedRecord> {
        let e = self.entries.remove(key)?;
        self.bytes -= e.bytes;
        Some(e)
    }

    /// Make room for one more entry of `bytes`: expired entries first, then everything.
    fn make_room(&mut self, bytes: usize, per_shard: usize, budget: usize, now: u64) {
        let fits = |s: &Shard| s.entries.len() < per_shard && s.bytes + bytes <= budget;
        if fits(self) {
            return;
        }
        self.entries.retain(|_, e| e.expires_at > now);
        self.bytes = self.entries.values().map(|e| e.bytes).sum();
        if !fits(self) {
            self.entries.clear();
            self.bytes = 0;
        }
    }
}

impl RefreshCache {
    /// A cache of about `capacity` records and `bytes` bytes (either 0: off).
    pub(super) fn new(capacity: usize, bytes: usize) -> RefreshCache {
        RefreshCache {
            per_shard: capacity.div_ceil(SHARDS),
            bytes_per_shard: bytes / SHARDS,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = key_hash(key.as_bytes()) as usize % SHARDS;
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the entry out (it is put back by `remember` after a successful write); None
    /// when there is none or its record has expired by `now`.
    pub(super) fn take(&self, key: &str, now: u64) -> Option<CachedRecord> {
        self.shard(key).remove(key).filter(|e| e.expires_at > now)
    }

    pub(super) fn forget(&self, key: &str) {
        self.shard(key).remove(key);
    }

    /// Keep `record` when every replica stored it and said its CAS, and it has something
    /// that has not expired by `now`; else forget the key. `epochs`: the replicas' node
    /// epochs, read before the write.
    pub(super) fn remember(
        &self,
        key: &str,
        replicas: &[Replica],
        writes: &[Result<Write, NodeError>],
        record: Record,
        now: u64,
        epochs: Vec<u64>,
    ) {
        let cas: Option<Vec<(usize, u64)>> = replicas
            .iter()
            .zip(writes)
            .map(|((n, _), w)| match w {
                Ok(Write::Stored(Some(c))) => Some((*n, *c)),
                _ => None,
            })
            .collect();
        let mut shard = self.shard(key);
        shard.remove(key);
        let (Some(cas), Some(expires_at)) = (cas, record.max_expiry()) else {
            return;
        };
        let bytes = estimate(key, &record, cas.len());
        if self.per_shard == 0 || expires_at <= now || bytes > self.bytes_per_shard {
            return;
        }
        shard.make_room(bytes, self.per_shard, self.bytes_per_shard, now);
        shard.bytes += bytes;
        let entry = CachedRecord {
            record,
            cas,
            epochs,
            expires_at,
            bytes,
        };
        shard.entries.insert(key.to_owned(), entry);
    }

    /// Entries and estimated bytes held.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.lock().unwrap();
            (n + s.entries.len(), b + s.bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `n` bindings expiring at `until`, each with a Path of `path` bytes.
    fn record(n: usize, until: u64, path: usize) -> Record {
        let b = |i: usize| Binding {
            contact: format!("sip:u{i}@127.0.0.1:5070"),
            params: String::new(),
            expires_at: until,
            q: None,
            call_id: "c".into(),
            cseq: 1,
            path: vec!["p".repeat(path)],
            source: "udp:127.0.0.1:5070".into(),
            instance_id: None,
            reg_id: None,
            updated: 1,
            removed: false,
            flow: None,
        };
        Record {
            aor: "a@x".into(),
            bindings: (0..n).map(b).collect(),
        }
    }

    /// Both replicas stored and said their CAS.
    fn stored() -> (Vec<Replica>, Vec<Result<Write, NodeError>>) {
        (
            vec![(0, None), (1, None)],
            vec![Ok(Write::Stored(Some(7))), Ok(Write::Stored(Some(8)))],
        )
    }

    #[test]
    fn entries_of_expired_records_are_never_served() {
        let c = RefreshCache::new(1000, 1 << 20);
        let (replicas, writes) = stored();
        c.remember(
            "k",
            &replicas,
            &writes,
            record(1, 1010, 10),
            1000,
            Vec::new(),
        );
        let e = c.take("k", 1009).expect("live until 1010");
        assert_eq!(e.cas, [(0, 7), (1, 8)]);
        c.remember("k", &replicas, &writes, e.record, 1009, Vec::new());
        assert!(c.take("k", 1010).is_none(), "expired at 1010");
        assert_eq!(c.held(), (0, 0), "dropped when found");
        // Already expired, or empty (every binding removed and gone): not kept at all.
        c.remember(
            "k",
            &replicas,
            &writes,
            record(1, 1000, 10),
            1000,
            Vec::new(),
        );
        c.remember("e", &replicas, &writes, Record::default(), 1000, Vec::new());
        assert_eq!(c.held(), (0, 0));
        // A replica without a CAS: forgotten.
        c.remember(
            "k",
            &replicas,
            &writes,
            record(1, 2000, 10),
            1000,
            Vec::new(),
        );
        c.remember(
            "k",
            &replicas,
            &[Ok(Write::Stored(None)), Ok(Write::Conflict)],
            record(1, 2000, 10),
            1000,
            Vec::new(),
        );
        assert!(c.take("k", 1000).is_none());
    }

    /// 2,000 records of 8 KB: an entry bound alone holds them all; the byte bound holds at
    /// most its budget, and an entry larger than a shard's share is not kept.
    #[test]
    fn bytes_are_bounded() {
        let (replicas, writes) = stored();
        let fill = |c: &RefreshCache| {
            for i in 0..2000 {
                let k = format!("sipfarm:{i}");
                c.remember(
                    &k,
                    &replicas,
                    &writes,
                    record(8, 5000, 1000),
                    1000,
                    Vec::new(),
                );
            }
            c.held()
        };
        let (n, bytes) = fill(&RefreshCache::new(262_144, usize::MAX));
        eprintln!("entries bound only: {n} entries, {bytes} bytes");
        assert_eq!(n, 2000);
        assert!(bytes > 16_000_000, "{bytes}");
        let budget = 4 << 20;
        let (n, bytes) = fill(&RefreshCache::new(262_144, budget));
        eprintln!("with a {budget}-byte budget: {n} entries, {bytes} bytes");
        assert!(bytes <= budget && n > 100, "{n} entries, {bytes} bytes");
        let c = RefreshCache::new(262_144, 64 * 1024);
        c.remember(
            "big",
            &replicas,
            &writes,
            record(2, 5000, 1000),
            1000,
            Vec::new(),
        );
        assert_eq!(c.held(), (0, 0));
    }

    /// A full shard drops its expired entries before emptying itself.
    #[test]
    fn a_full_shard_drops_expired_entries_first() {
        let (replicas, writes) = stored();
        let one = estimate("sipfarm:x", &record(1, 0, 100), 2);
        // Room for three entries per shard.
        let c = RefreshCache::new(262_144, SHARDS * (3 * one + one / 2));
        let shard = |k: &str| key_hash(k.as_bytes()) as usize % SHARDS;
        let same: Vec<String> = (0..)
            .map(|i| format!("sipfarm:{i}"))
            .filter(|k| shard(k) == shard("sipfarm:x"))
            .take(4)
            .collect();
        c.remember(
            &same[0],
            &replicas,
            &writes,
            record(1, 1100, 100),
            1000,
            Vec::new(),
        );
        c.remember(
            &same[1],
            &replicas,
            &writes,
            record(1, 5000, 100),
            1000,
            Vec::new(),
        );
        c.remember(
            &same[2],
            &replicas,
            &writes,
            record(1, 5000, 100),
            1000,
            Vec::new(),
        );
        assert_eq!(c.held().0, 3);
        c.remember(
            &same[3],
            &replicas,
            &writes,
            record(1, 5000, 100),
            1200,
            Vec::new(),
        );
        assert!(c.take(&same[0], 1200).is_none());
        for k in &same[1..] {
            assert!(c.take(k, 1200).is_some(), "{k} kept");
        }
    }
}
