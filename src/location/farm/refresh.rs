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
//! Bounded memory: the cache is sharded, and a full shard is simply emptied (cheaper than
//! tracking recency; a dropped entry only costs one read on the next refresh).

use super::placement::Replica;
use crate::location::Record;
use crate::location::node::{NodeError, Write};
use crate::location::ring::key_hash;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Shards of the cache: one lock each, so that event loops rarely wait for one another.
const SHARDS: usize = 64;

/// The records this instance wrote last, with the CAS of every replica.
pub(super) struct RefreshCache {
    /// Entries per shard (0: the cache is off).
    per_shard: usize,
    shards: Vec<Mutex<HashMap<String, CachedRecord>>>,
}

/// One record as this instance last wrote it.
pub(super) struct CachedRecord {
    pub(super) record: Record,
    /// (node, CAS) per replica, in ring order.
    pub(super) cas: Vec<(usize, u64)>,
}

impl RefreshCache {
    /// A cache of about `capacity` records (0: off).
    pub(super) fn new(capacity: usize) -> RefreshCache {
        RefreshCache {
            per_shard: capacity.div_ceil(SHARDS),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, CachedRecord>> {
        let i = key_hash(key.as_bytes()) as usize % SHARDS;
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the entry out (it is put back by `remember` after a successful write).
    pub(super) fn take(&self, key: &str) -> Option<CachedRecord> {
        self.shard(key).remove(key)
    }

    pub(super) fn forget(&self, key: &str) {
        self.shard(key).remove(key);
    }

    /// Keep `record` when every replica stored it and said its CAS; else forget the key.
    pub(super) fn remember(
        &self,
        key: &str,
        replicas: &[Replica],
        writes: &[Result<Write, NodeError>],
        record: Record,
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
        match cas {
            Some(cas) => {
                if shard.len() >= self.per_shard {
                    shard.clear();
                }
                if self.per_shard == 0 {
                    return;
                }
                shard.insert(key.to_owned(), CachedRecord { record, cas });
            }
            None => {
                shard.remove(key);
            }
        }
    }
}
