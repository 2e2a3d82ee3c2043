//! Bindings kept until removed (`sipfarm location add --expires 0`: a gateway, a trunk).
//!
//! memcached keeps an item at most 30 days after its last write (a longer TTL is read as an
//! absolute time), so the instances renew the records that hold such a binding, as
//! Kamailio's usrloc keeps its permanent contacts in the database. Every `RENEW_EVERY` one
//! instance (the first to `add` a lease item on the first live node) walks every node's keys
//! with their expiry (`lru_crawler metadump hash`); an item with less than `RENEW_BELOW`
//! left is read on the node that listed it, and when its record holds a live binding kept
//! until removed, the record is read from every owner, merged (a removal on one replica
//! wins) and written back to each with its CAS: 30 days again. Phones' records (their TTL is
//! their expiry plus a minute) are all under 15 days, so the walk reads every record once
//! per 6 hours: for a million records, under 50 `gets` a second on the farm. A walk that
//! could not list a node gives its lease up and is tried again in 10 minutes, with a
//! warning; 15 days of margin remain for instances that are all down.

use super::Farm;
use super::lease::Periodic;
use super::merge::{merge, readable};
use crate::clock::now_secs;
use crate::location::admin;
use crate::location::node::Write;
use crate::location::record;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How often an instance offers to walk the farm.
const RENEW_EVERY: Duration = Duration::from_secs(6 * 3600);
/// After an incomplete walk, the next attempt (by any instance).
const RENEW_RETRY: Duration = Duration::from_secs(600);
/// The first offer after start (plus up to as much again, jittered).
const FIRST_AFTER: Duration = Duration::from_secs(5);
/// Items with less than this left are looked at.
const RENEW_BELOW: i64 = 15 * 24 * 3600;
/// The walk's lease: one instance per period.
const LEASE_TTL: u32 = 6 * 3600 - 60;
/// Deadline of one node's key listing.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

impl Farm {
    /// Offer to renew the farm's records kept until removed, now and every `RENEW_EVERY`.
    pub(crate) fn spawn_renewal(self: &Arc<Self>) {
        let every = Periodic {
            lease: "renewal",
            lease_ttl: LEASE_TTL,
            first: FIRST_AFTER,
            every: RENEW_EVERY,
            retry: RENEW_RETRY,
        };
        self.spawn_leased(every, |farm| async move {
            let (renewed, complete) = farm.renew_kept().await;
            if complete {
                tracing::info!(renewed, "records of bindings kept until removed renewed");
            } else {
                tracing::warn!(
                    renewed,
                    "renewal of bindings kept until removed incomplete (a node could not be listed): again soon"
                );
            }
            complete
        });
    }

    /// Walk every node; the records renewed, and whether every node could be listed.
    async fn renew_kept(&self) -> (usize, bool) {
        let mut seen = HashSet::new();
        let (mut renewed, mut complete) = (0, true);
        for (i, node) in self.nodes.iter().enumerate() {
            let listed = if node.available() {
                admin::keys_with_expiry(&node.addr, &self.prefix, LIST_TIMEOUT).await
            } else {
                Err("dead".to_owned())
            };
            let Ok(keys) = listed else {
                complete = false;
                continue;
            };
            let now = now_secs() as i64;
            for (key, exp) in keys {
                if self.retired() {
                    return (renewed, false);
                }
                if exp >= 0 && exp - now < RENEW_BELOW && seen.insert(key.clone()) {
                    renewed += usize::from(self.renew_one(i, &key).await);
                }
            }
        }
        (renewed, complete)
    }

    /// Renew `key`, listed by node `source`, if its record holds a live binding kept until
    /// removed. True when written.
    async fn renew_one(&self, source: usize, key: &str) -> bool {
        let Ok(Some((value, _))) = self.nodes[source].gets(key).await else {
            return false;
        };
        let Ok(found) = record::decode_any(&value) else {
            return false;
        };
        let keeps = |r: &crate::location::Record, now| r.live(now).any(|b| b.until_removed());
        if found.aor.is_empty() || record::key(&self.prefix, &found.aor) != key {
            return false;
        }
        if !keeps(&found, now_secs()) {
            return false;
        }
        let _one_at_a_time = self.stripe(key).lock().await;
        let Ok((_, replicas)) = self.read_replicas(key, &found.aor).await else {
            return false;
        };
        let now = now_secs();
        // The owners' copies only: a copy elsewhere (a stand-in's, an old owner's) may be one
        // whose removal the owners hold, and must not bring it back; the owners missing it
        // altogether get it from read repair or a refill, not from here.
        let mut merged = merge(readable(&replicas), &found.aor);
        merged.prune(now);
        if !keeps(&merged, now) {
            return false;
        }
        match self.write_all(&replicas, key, &mut merged, now).await {
            Ok(writes) => writes.iter().any(|w| matches!(w, Ok(Write::Stored(_)))),
            Err(_) => false,
        }
    }
}
