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

use super::admin;
use super::node::{Node, NodeError, Write};
use super::record::{self, decode, encode, key};
use super::ring::Ring;
use super::{Binding, LocationStore, Record, StoreError};
use crate::clock::now_secs;
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
    /// Our pipelined connection per node (true), or the memcache crate's client.
    pub pipelined: bool,
    /// Pipelined connections per node: one per event-loop thread.
    pub connections: usize,
    /// Records remembered for one-round-trip refreshes (0: off).
    pub refresh_cache: usize,
}

pub struct Farm {
    /// What this instance last wrote, per key, with the CAS of each replica.
    known: Known,
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
            nodes.push(
                Node::new(addr, cfg.timeout, cfg.pipelined, cfg.connections)
                    .await
                    .map_err(|e| e.0)?,
            );
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
            known: Known::new(cfg.refresh_cache),
        })
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

    /// The key's live owners and what each holds; an error when none can be asked or none
    /// answers.
    async fn read_replicas(
        &self,
        key: &str,
        aor: &str,
    ) -> Result<(Vec<usize>, Vec<Replica>), StoreError> {
        let targets = self.targets(key);
        if targets.is_empty() {
            return Err(StoreError::Unavailable("no live memcached node".into()));
        }
        let replicas = self.read_all(&targets, key, aor).await;
        if replicas.is_empty() {
            return Err(StoreError::Unavailable("no memcached node answered".into()));
        }
        Ok((targets, replicas))
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
    ) -> Result<Vec<Result<Write, NodeError>>, StoreError> {
        let value = encode(record, self.item_limit)?;
        let ttl = ttl_for(record, now);
        Ok(join_all(replicas.iter().map(|(node, current)| {
            let cas = current.as_ref().map(|(_, c)| *c);
            self.nodes[*node].store(key, &value, ttl, cas)
        }))
        .await)
    }

    /// Where else a key may be when none of the nodes asked had it: its own owners that were
    /// skipped as dead (a breaker can open on a slow but living node, and absence must not
    /// be concluded from the stand-ins alone), then the nodes after the owners on the ring,
    /// which held it before nodes were added.
    fn previous_owners(&self, key: &str, asked: &[usize]) -> Vec<usize> {
        let owners: Vec<usize> = self.ring.walk(key.as_bytes()).take(self.replicas).collect();
        let skipped = owners.iter().copied().filter(|i| !asked.contains(i));
        let before = self
            .ring
            .walk(key.as_bytes())
            .filter(|i| !asked.contains(i) && !owners.contains(i) && self.nodes[*i].available())
            .take(PREVIOUS_OWNERS);
        skipped.chain(before).collect()
    }

    /// Records found on the previous owners of a key (growth: not yet moved to a new node).
    async fn read_previous(&self, key: &str, asked: &[usize], aor: &str) -> Vec<Record> {
        let previous = self.previous_owners(key, asked);
        self.read_all(&previous, key, aor)
            .await
            .into_iter()
            .filter_map(|(_, r)| r.map(|(r, _)| r))
            .filter(|r| !r.aor.is_empty())
            .collect()
    }

    /// Probe every node with `stats` once per `every`: a dead node whose probe succeeds rejoins
    /// without waiting for traffic, and a node that came back (from dead, or restarted under
    /// another pid) is refilled in the background from the others.
    pub fn spawn_monitor(self: &std::sync::Arc<Self>, every: Duration) {
        let farm = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for (i, node) in farm.nodes.iter().enumerate() {
                    let was_dead = node.is_dead();
                    let probe =
                        admin::stats(&node.addr, node.timeout().max(Duration::from_millis(200)))
                            .await;
                    match probe {
                        Ok(stats) => {
                            let pid = admin::stat(&stats, "pid").unwrap_or("?");
                            let started = match (
                                admin::stat(&stats, "time"),
                                admin::stat(&stats, "uptime"),
                            ) {
                                (Some(t), Some(u)) => {
                                    t.parse::<i64>().unwrap_or(0) - u.parse::<i64>().unwrap_or(0)
                                }
                                _ => 0,
                            };
                            // Restart times may jitter by a second between probes.
                            let restarted = node.new_incarnation(format!("{pid}@{}", started / 5));
                            node.probed(Ok(()));
                            if was_dead || restarted {
                                tracing::warn!(node = %node.addr, restarted, "memcached node (re)joined: refilling it");
                                let farm = farm.clone();
                                tokio::spawn(async move { farm.refill(i).await });
                            }
                        }
                        Err(e) => node.probed(Err(NodeError(format!("{}: {e}", node.addr)))),
                    }
                }
            }
        });
    }

    /// Copy to node `target` every record it should hold (it is among the first R nodes of the
    /// key on the ring) from the nodes that have one, merged with whatever it holds. Walks the
    /// keys of every other live node with `lru_crawler metadump`.
    pub async fn refill(&self, target: usize) -> usize {
        let started = std::time::Instant::now();
        let mut copied = 0;
        for (i, source) in self.nodes.iter().enumerate() {
            if i == target || !source.available() {
                continue;
            }
            let keys = match admin::keys(&source.addr, &self.prefix, Duration::from_secs(30)).await
            {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(node = %source.addr, error = %e, "cannot list keys for a refill");
                    continue;
                }
            };
            let mine: Vec<String> = keys
                .into_iter()
                .filter(|k| {
                    self.ring
                        .walk(k.as_bytes())
                        .take(self.replicas)
                        .any(|n| n == target)
                })
                .collect();
            for chunk in mine.chunks(64) {
                let done = join_all(chunk.iter().map(|k| self.copy_one(k, i, target))).await;
                copied += done.into_iter().filter(|d| *d).count();
            }
        }
        tracing::warn!(
            node = %self.nodes[target].addr,
            records = copied,
            ms = started.elapsed().as_millis() as u64,
            "refill done"
        );
        copied
    }

    /// Merge one key from `source` into `target`. True when something was written.
    async fn copy_one(&self, key: &str, source: usize, target: usize) -> bool {
        let Ok(Some((value, _))) = self.nodes[source].gets(key).await else {
            return false;
        };
        let Ok(aor) = record::decode_any(&value).map(|r| r.aor) else {
            return false;
        };
        if record::key(&self.prefix, &aor) != key {
            return false;
        }
        let _one_at_a_time = self.stripe(key).lock().await;
        for _ in 0..3 {
            let Ok(theirs) = self.read(source, key, &aor).await else {
                return false;
            };
            let Ok(mine) = self.read(target, key, &aor).await else {
                return false;
            };
            let now = now_secs();
            let mut merged = merge(
                [&theirs.1, &mine.1]
                    .into_iter()
                    .flatten()
                    .map(|(r, _)| r)
                    .filter(|r| !r.aor.is_empty()),
                &aor,
            );
            merged.prune(now);
            if merged.bindings.is_empty() || mine.1.as_ref().is_some_and(|(r, _)| *r == merged) {
                return false;
            }
            match self.write_all(&[mine], key, &merged, now).await {
                Ok(w) if matches!(w.first(), Some(Ok(Write::Stored(_)))) => return true,
                Ok(w) if matches!(w.first(), Some(Ok(_))) => continue,
                _ => return false,
            }
        }
        false
    }
}

/// The records this instance wrote last, with the CAS each replica answered: a refresh of
/// one of them is a single compare-and-swap round trip. Bounded: a full shard is emptied.
struct Known {
    /// Entries per shard (0: the cache is off).
    per_shard: usize,
    shards: Vec<std::sync::Mutex<std::collections::HashMap<String, KnownRecord>>>,
}

#[derive(Clone)]
struct KnownRecord {
    record: Record,
    /// (node, CAS) per replica, in ring order.
    cas: Vec<(usize, u64)>,
}

const KNOWN_SHARDS: usize = 64;

impl Known {
    fn new(capacity: usize) -> Known {
        Known {
            per_shard: capacity.div_ceil(KNOWN_SHARDS),
            shards: (0..KNOWN_SHARDS)
                .map(|_| std::sync::Mutex::new(Default::default()))
                .collect(),
        }
    }

    fn shard(
        &self,
        key: &str,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, KnownRecord>> {
        let i = super::ring::key_hash(key.as_bytes()) as usize % KNOWN_SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the entry out (it is put back by `remember` after a successful write).
    fn take(&self, key: &str) -> Option<KnownRecord> {
        self.shard(key).remove(key)
    }

    fn forget(&self, key: &str) {
        self.shard(key).remove(key);
    }

    /// Keep `record` when every replica stored it and said its CAS; else forget the key.
    fn remember(
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
                shard.insert(key.to_owned(), KnownRecord { record, cas });
            }
            None => {
                shard.remove(key);
            }
        }
    }
}

/// The records found among replicas (misses left out).
fn records(replicas: &[Replica]) -> Vec<&Record> {
    replicas
        .iter()
        .filter_map(|(_, r)| r.as_ref().map(|(r, _)| r))
        .collect()
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
        // A refresh of a record this instance wrote last: one round trip, a compare-and-swap
        // on every replica with the CAS each gave back. Anything unusual (a refusal, no change,
        // another writer in between) goes the long way, which reads the replicas first.
        if let Some(known) = self.known.take(&key) {
            let targets = self.targets(&key);
            if known
                .cas
                .iter()
                .map(|(n, _)| *n)
                .eq(targets.iter().copied())
            {
                let now = now_secs();
                let mut record = known.record;
                record.prune(now);
                let before = record.clone();
                let outcome = change(&mut record, now);
                if outcome.is_ok() && record != before {
                    let replicas: Vec<Replica> = known
                        .cas
                        .iter()
                        .map(|(n, c)| (*n, Some((Record::default(), *c))))
                        .collect();
                    let writes = self.write_all(&replicas, &key, &record, now).await?;
                    if writes.iter().all(|w| matches!(w, Ok(Write::Stored(_)))) {
                        self.known.remember(&key, &replicas, &writes, record);
                        return Ok(outcome);
                    }
                }
            }
            self.known.forget(&key);
        }
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                let ms = fastrand::u64(1..=(4u64 << attempt.min(5)));
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let (targets, replicas) = self.read_replicas(&key, aor.as_str()).await?;
            let now = now_secs();
            let found = records(&replicas);
            // Growth: a key not yet on its new owners is taken from where it was.
            let previous = if found.is_empty() {
                self.read_previous(&key, &targets, aor.as_str()).await
            } else {
                Vec::new()
            };
            let mut record = merge(found.iter().copied().chain(previous.iter()), aor.as_str());
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
            let conflict = writes
                .iter()
                .any(|w| matches!(w, Ok(Write::Conflict) | Ok(Write::NotFound)));
            let stored = writes.iter().any(|w| matches!(w, Ok(Write::Stored(_))));
            if !conflict && stored {
                // Replicas that failed are repaired later (read repair, refill).
                self.known.remember(&key, &replicas, &writes, record);
                return Ok(outcome);
            }
            if !conflict && !stored {
                return Err(StoreError::Unavailable(
                    "no replica could be written".into(),
                ));
            }
            tracing::debug!(aor = %aor, attempt, "concurrent update, re-reading");
        }
        Err(StoreError::Contended)
    }

    fn node_states(&self) -> Vec<(String, bool)> {
        self.nodes
            .iter()
            .map(|n| (n.addr.clone(), n.is_dead()))
            .collect()
    }

    async fn lookup(&self, aor: &Aor) -> Result<Option<Record>, StoreError> {
        let key = key(&self.prefix, aor.as_str());
        let (targets, replicas) = self.read_replicas(&key, aor.as_str()).await?;
        let now = now_secs();
        let found = records(&replicas);
        let found_any = !found.is_empty();
        let mut record = if found.is_empty() {
            // Not on its owners: a node may have joined since it was written. Ask the nodes
            // that owned it before (the next ones on the ring); read repair moves it over.
            let older = self.read_previous(&key, &targets, aor.as_str()).await;
            if older.is_empty() {
                return Ok(None);
            }
            merge(older.iter(), aor.as_str())
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
