//! The memcached farm: every instance shares every binding.
//!
//! Placement: the record of an AOR lives on the first R distinct live nodes of the ketama
//! ring from its key ([`super::ring`]). Atomicity across instances: memcached's CAS —
//! `add` for a new AOR, `gets` then `cas` otherwise, re-read on a conflict, with a bounded,
//! jittered retry loop; inside one instance one update per AOR at a time (striped locks), so
//! CAS conflicts only come from other instances. Removal rewrites the record with a tombstone,
//! never a blind `delete`. The item TTL is the latest expiry in the record plus a grace,
//! capped at 30 days (memcached reads larger values as absolute Unix times).
//!
//! Replicas are read concurrently and merged binding by binding ([`merge`]); a replica found
//! missing or older is rewritten (read repair). A lookup that misses on its owners also asks
//! the nodes after them on the ring, so that a key moved by a new node is still found.

use super::node::{Node, NodeError, Write};
use super::record::{decode, encode, key};
use super::ring::Ring;
use super::{Binding, LocationStore, Record, StoreError, now_secs};
use crate::sip::uri::Aor;
use futures::future::join_all;
use std::time::Duration;
use tokio::sync::Mutex;

const MAX_ATTEMPTS: u32 = 10;
const STRIPES: usize = 1024;
/// memcached treats a TTL above 30 days as an absolute Unix time.
pub const MAX_TTL: u64 = 30 * 24 * 3600;
/// Kept past the latest expiry so that a record is never evicted by TTL while in use.
const TTL_GRACE: u64 = 60;
/// Extra nodes asked, past the R owners, when a lookup misses (keys moved by growth).
const PREVIOUS_OWNERS: usize = 2;

pub struct FarmConfig {
    pub nodes: Vec<(String, u32)>,
    pub replicas: usize,
    pub prefix: String,
    pub timeout: Duration,
    /// Largest value written (memcached's item size limit minus key and overhead).
    pub item_limit: usize,
}

pub struct Farm {
    nodes: Vec<Node>,
    ring: Ring,
    replicas: usize,
    prefix: String,
    item_limit: usize,
    locks: Vec<Mutex<()>>,
}

/// One replica as read: its record (None: miss) and CAS token.
type Replica = (usize, Option<(Record, u64)>);

impl Farm {
    /// Prepare a client per node and ping each. Fails when none answers; nodes that do not
    /// answer are marked dead (and logged) and rejoin when their breaker's probe succeeds.
    pub async fn connect(cfg: FarmConfig) -> Result<Farm, String> {
        let mut nodes = Vec::new();
        for (addr, _) in &cfg.nodes {
            nodes.push(Node::new(addr, cfg.timeout).await.map_err(|e| e.0)?);
        }
        let pings = join_all(nodes.iter().map(|n| n.ping())).await;
        let mut up = 0;
        for (node, r) in nodes.iter().zip(pings) {
            match r {
                Ok(()) => up += 1,
                Err(e) => {
                    tracing::warn!(node = %node.addr, error = %e.0, "memcached node down at start");
                    node.mark_dead();
                }
            }
        }
        if up == 0 {
            return Err(format!(
                "no memcached node answered ({})",
                cfg.nodes
                    .iter()
                    .map(|(a, _)| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let ring = Ring::new(&cfg.nodes);
        tracing::info!(
            ring = ring.identity(),
            nodes = cfg.nodes.len(),
            up,
            replicas = cfg.replicas,
            "memcached farm ready (every instance must show the same ring id)"
        );
        Ok(Farm {
            nodes,
            ring,
            replicas: cfg.replicas.clamp(1, cfg.nodes.len()),
            prefix: cfg.prefix,
            item_limit: cfg.item_limit,
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    pub fn ring_identity(&self) -> &str {
        self.ring.identity()
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The first R nodes on the ring that may be called now.
    fn targets(&self, key: &str) -> Vec<usize> {
        self.ring
            .walk(key.as_bytes())
            .filter(|i| self.nodes[*i].available())
            .take(self.replicas)
            .collect()
    }

    fn stripe(&self, key: &str) -> &Mutex<()> {
        let h = super::ring::key_hash(key.as_bytes()) as usize;
        &self.locks[h % STRIPES]
    }

    async fn read(&self, node: usize, key: &str, aor: &str) -> Result<Replica, NodeError> {
        let got = self.nodes[node].gets(key).await?;
        Ok((
            node,
            match got {
                None => None,
                Some((value, cas)) => match decode(&value, aor) {
                    Ok(r) => Some((r, cas)),
                    Err(e) => {
                        // Unreadable (other format or hash collision): never served, never
                        // overwritten blindly; the CAS write below replaces it atomically.
                        tracing::warn!(node = %self.nodes[node].addr, error = %e, "unreadable record");
                        Some((Record::default(), cas))
                    }
                },
            },
        ))
    }

    /// Read the replicas concurrently; node errors drop that replica.
    async fn read_all(&self, nodes: &[usize], key: &str, aor: &str) -> Vec<Replica> {
        join_all(nodes.iter().map(|n| self.read(*n, key, aor)))
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    }

    /// Write `record` to every replica with its CAS (`add` where it was missing).
    async fn write_all(
        &self,
        replicas: &[Replica],
        key: &str,
        record: &Record,
        now: u64,
    ) -> Result<Vec<Write>, StoreError> {
        let value = encode(record, self.item_limit)?;
        let ttl = ttl_for(record, now);
        let writes = join_all(replicas.iter().map(|(node, current)| {
            let cas = current.as_ref().map(|(_, c)| *c);
            self.nodes[*node].store(key, &value, ttl, cas)
        }))
        .await;
        Ok(writes
            .into_iter()
            .map(|w| w.unwrap_or(Write::Conflict))
            .collect())
    }
}

/// The TTL of an item: covers the latest expiry (bindings and tombstones) plus a grace.
pub fn ttl_for(record: &Record, now: u64) -> u32 {
    let until = record.max_expiry().unwrap_or(now);
    (until.saturating_sub(now) + TTL_GRACE).min(MAX_TTL) as u32
}

/// Merge replicas binding by binding. A binding is identified by instance-id + reg-id or by
/// its contact URI; of two versions, the same Call-ID means the higher CSeq wins, otherwise
/// the later write (`updated`) wins. Tombstones take part like any binding.
pub fn merge<'a>(records: impl IntoIterator<Item = &'a Record>, aor: &str) -> Record {
    let mut out = Record {
        aor: aor.to_owned(),
        bindings: Vec::new(),
    };
    for r in records {
        for b in &r.bindings {
            match out
                .bindings
                .iter_mut()
                .find(|o| o.same_as(&b.contact, b.instance_id.as_deref(), b.reg_id))
            {
                None => out.bindings.push(b.clone()),
                Some(o) => {
                    if newer(b, o) {
                        *o = b.clone();
                    }
                }
            }
        }
    }
    out
}

fn newer(a: &Binding, b: &Binding) -> bool {
    if a.call_id == b.call_id && a.cseq != b.cseq {
        a.cseq > b.cseq
    } else {
        (a.updated, a.removed) > (b.updated, b.removed)
    }
}

impl LocationStore for Farm {
    async fn update<T, E, F>(&self, aor: &Aor, mut change: F) -> Result<Result<T, E>, StoreError>
    where
        T: Send,
        E: Send,
        F: FnMut(&mut Record, u64) -> Result<T, E> + Send,
    {
        let key = key(&self.prefix, aor.as_str());
        let _one_at_a_time = self.stripe(&key).lock().await;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                let ms = fastrand::u64(1..=(4u64 << attempt.min(5)));
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let targets = self.targets(&key);
            if targets.is_empty() {
                return Err(StoreError::Unavailable("no live memcached node".into()));
            }
            let replicas = self.read_all(&targets, &key, aor.as_str()).await;
            if replicas.is_empty() {
                return Err(StoreError::Unavailable("no memcached node answered".into()));
            }
            let now = now_secs();
            let mut record = merge(
                replicas
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().map(|(r, _)| r)),
                aor.as_str(),
            );
            record.prune(now);
            let before = record.clone();
            let outcome = change(&mut record, now);
            let in_sync = replicas.iter().all(|(_, r)| {
                r.as_ref().is_some_and(|(r, _)| {
                    let mut r = r.clone();
                    r.prune(now);
                    r == before
                })
            });
            if outcome.is_err() || (record == before && (in_sync || before.bindings.is_empty())) {
                return Ok(outcome);
            }
            let writes = self.write_all(&replicas, &key, &record, now).await?;
            if writes.iter().all(|w| *w == Write::Stored) {
                return Ok(outcome);
            }
            tracing::debug!(aor = %aor, attempt, "concurrent update, re-reading");
        }
        Err(StoreError::Contended)
    }

    async fn lookup(&self, aor: &Aor) -> Result<Option<Record>, StoreError> {
        let key = key(&self.prefix, aor.as_str());
        let targets = self.targets(&key);
        if targets.is_empty() {
            return Err(StoreError::Unavailable("no live memcached node".into()));
        }
        let replicas = self.read_all(&targets, &key, aor.as_str()).await;
        if replicas.is_empty() {
            return Err(StoreError::Unavailable("no memcached node answered".into()));
        }
        let now = now_secs();
        let found: Vec<&Record> = replicas
            .iter()
            .filter_map(|(_, r)| r.as_ref().map(|(r, _)| r))
            .collect();
        let found_any = !found.is_empty();
        let mut record = if found.is_empty() {
            // Not on its owners: a node may have joined since it was written. Ask the nodes
            // that owned it before (the next ones on the ring) and move it over.
            let previous: Vec<usize> = self
                .ring
                .walk(key.as_bytes())
                .filter(|i| !targets.contains(i) && self.nodes[*i].available())
                .take(PREVIOUS_OWNERS)
                .collect();
            let older = self.read_all(&previous, &key, aor.as_str()).await;
            let older: Vec<&Record> = older
                .iter()
                .filter_map(|(_, r)| r.as_ref().map(|(r, _)| r))
                .filter(|r| !r.aor.is_empty())
                .collect();
            if older.is_empty() {
                return Ok(None);
            }
            merge(older, aor.as_str())
        } else {
            merge(
                found.iter().copied().filter(|r| !r.aor.is_empty()),
                aor.as_str(),
            )
        };
        record.prune(now);
        // Read repair: replicas that are missing or differ get the merged record.
        let stale: Vec<Replica> = replicas
            .iter()
            .filter(|(_, r)| {
                r.as_ref().is_none_or(|(r, _)| {
                    let mut r = r.clone();
                    r.prune(now);
                    r != record
                })
            })
            .cloned()
            .collect();
        if !stale.is_empty() && !record.bindings.is_empty() {
            if let Err(e) = self.write_all(&stale, &key, &record, now).await {
                tracing::debug!(aor = %aor, error = %e, "read repair skipped");
            }
        }
        if record.bindings.is_empty() && !found_any {
            return Ok(None);
        }
        Ok(Some(record))
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
