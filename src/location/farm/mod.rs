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
//! Replicas are read concurrently and merged binding by binding (`merge`); a replica found
//! missing or older is rewritten (read repair). A lookup that misses on its owners also asks
//! the nodes after them on the ring, so that a key moved by a new node is still found.
//!
//! This file holds the farm itself and the [`LocationStore`] operations; the rest is split
//! by concern:
//! - `placement`: which nodes hold a key, reading and writing its replicas;
//! - `merge`: merging replicas binding by binding, and the item TTL;
//! - `heal`: read repair, the health monitor, refilling a node that came back;
//! - `hints`: hinted handoff, the writes an owner missed replayed when it is back;
//! - `refresh`: the refresh cache, which makes a refresh one round trip;
//! - `permanent`: renewing the records of bindings kept until removed;
//! - `census`: counting registrations and bindings for the metrics.

mod census;
mod counter;
mod heal;
mod hints;
mod inspect;
mod lease;
mod merge;
mod permanent;
mod placement;
mod refresh;

pub use census::Census;
pub use inspect::{Check, Dump, Finding, Inspection, ReplicaView};

use self::merge::{merge, records};
use self::placement::Replica;
use self::refresh::RefreshCache;
use super::node::{Node, Write};
use super::record::key;
use super::ring::Ring;
use super::{LocationStore, Record, StoreError};
use crate::clock::now_secs;
use crate::sip::uri::Aor;
use futures::future::join_all;
use std::time::Duration;
use tokio::sync::Mutex;

/// Read-change-write rounds of one update before it gives up as contended.
const MAX_ATTEMPTS: u32 = 10;
/// Striped update locks: enough that unrelated AORs rarely share one.
/// How long a node keeps the ring id an instance wrote (written again when it restarts).
const RING_TTL: u32 = 30 * 24 * 3600;
const STRIPES: usize = 1024;

/// What [`Farm::connect`] needs: the nodes and how to talk to them.
pub struct FarmConfig {
    pub nodes: Vec<(String, u32)>,
    pub replicas: usize,
    /// Replicas that must store a write before it is acknowledged.
    pub write_quorum: usize,
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
    /// Bytes (estimated) those records may hold (0: off).
    pub refresh_cache_bytes: usize,
}

/// The location store over a memcached farm.
pub struct Farm {
    /// What this instance last wrote, per key, with the CAS of each replica.
    refresh: RefreshCache,
    nodes: Vec<Node>,
    ring: Ring,
    replicas: usize,
    /// See [`FarmConfig::write_quorum`].
    write_quorum: usize,
    prefix: String,
    item_limit: usize,
    locks: Vec<Mutex<()>>,
    /// Per node: the refills this instance runs of it (`heal`).
    refills: Vec<std::sync::Mutex<heal::RefillGate>>,
    /// This process among the farm's instances (the refill lease, see `lease`).
    id: String,
    /// Replaced by a reload (SIGHUP): background work stops.
    retired: std::sync::atomic::AtomicBool,
    /// Per node: the writes it missed (`hints`).
    hints: Vec<std::sync::Mutex<hints::Hints>>,
}

impl Farm {
    /// Prepare a client per node and ping each. Fails when none answers; nodes that do not
    /// answer are marked dead (and logged) and rejoin when their breaker's probe succeeds.
    pub(crate) async fn connect(cfg: FarmConfig) -> Result<Farm, String> {
        let mut nodes = Vec::new();
        for (addr, _) in &cfg.nodes {
            nodes.push(
                Node::new(addr, cfg.timeout, cfg.pipelined, cfg.connections)
                    .await
                    .map_err(|e| e.0)?,
            );
        }
        let up = ping_all(&nodes).await;
        if up == 0 {
            let addrs: Vec<&str> = cfg.nodes.iter().map(|(a, _)| a.as_str()).collect();
            return Err(format!("no memcached node answered ({})", addrs.join(", ")));
        }
        let ring = Ring::new(&cfg.nodes);
        tracing::info!(
            ring = ring.identity(),
            nodes = cfg.nodes.len(),
            up,
            replicas = cfg.replicas,
            "memcached farm ready (every instance must show the same ring id)"
        );
        let farm = Farm {
            nodes,
            ring,
            replicas: cfg.replicas.clamp(1, cfg.nodes.len()),
            write_quorum: cfg
                .write_quorum
                .clamp(1, cfg.replicas.clamp(1, cfg.nodes.len())),
            prefix: cfg.prefix,
            item_limit: cfg.item_limit,
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            refills: (0..cfg.nodes.len()).map(|_| Default::default()).collect(),
            refresh: RefreshCache::new(cfg.refresh_cache, cfg.refresh_cache_bytes),
            id: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            retired: Default::default(),
            hints: (0..cfg.nodes.len()).map(|_| Default::default()).collect(),
        };
        Ok(farm)
    }

    /// Write this instance's ring id on every node that has none (see `announce_ring`).
    pub(crate) async fn announce_rings(&self) {
        for i in 0..self.nodes.len() {
            self.announce_ring(i).await;
        }
    }

    /// A reload changed the node list on purpose: this list's ring id replaces the one on
    /// every node that holds `old` (this instance's list before) or none (instances not
    /// reloaded yet show the old one in `farm status`). Another id is another instance's
    /// list: logged as at start, never overwritten.
    pub(crate) async fn claim_rings(&self, old: Option<&str>) {
        let (key, mine) = (self.ring_key(), self.ring.identity().as_bytes());
        for (i, node) in self.nodes.iter().enumerate() {
            let cas = match node.gets(&key).await {
                Ok(Some((theirs, _))) if theirs == mine => continue,
                Ok(Some((theirs, cas))) if old.is_some_and(|o| o.as_bytes() == theirs) => Some(cas),
                Ok(Some(_)) => {
                    self.announce_ring(i).await;
                    continue;
                }
                Ok(None) => None,
                Err(_) => continue,
            };
            let _ = node.store(&key, mine, RING_TTL, cas).await;
        }
    }

    /// Replaced by a reload: the monitor and refills stop; operations in flight finish.
    pub(crate) fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The ring id of this instance's node list.
    pub(crate) fn ring_id(&self) -> &str {
        self.ring.identity()
    }

    fn ring_key(&self) -> String {
        format!("{}ring", self.prefix)
    }

    /// Write this instance's ring id on node `i` unless one is there; log an error when the
    /// one there differs: an instance with another node list (a typo, an extra node) places
    /// keys elsewhere and splits the users silently. `sipfarm farm status` shows both.
    pub(super) async fn announce_ring(&self, i: usize) {
        let node = &self.nodes[i];
        let mine = self.ring.identity();
        match node
            .store(&self.ring_key(), mine.as_bytes(), RING_TTL, None)
            .await
        {
            Ok(Write::Stored(_)) | Err(_) => {}
            Ok(_) => {
                if let Ok(Some((theirs, _))) = node.gets(&self.ring_key()).await {
                    if theirs != mine.as_bytes() {
                        tracing::error!(
                            node = %node.addr,
                            ours = mine,
                            theirs = %String::from_utf8_lossy(&theirs),
                            "another instance of this farm uses another node list (ring id): \
                             users are split between them; every instance must list the same \
                             nodes in the same spelling"
                        );
                    }
                }
            }
        }
    }

    /// A refresh of a record this instance wrote last: one round trip, a compare-and-swap on
    /// every replica with the CAS each gave back. Anything unusual (a refusal, no change,
    /// another writer in between, other owners now) answers None: go the long way, which
    /// reads the replicas first.
    async fn update_cached<T, E, F>(
        &self,
        key: &str,
        change: &mut F,
    ) -> Result<Option<Result<T, E>>, StoreError>
    where
        T: Send,
        E: Send,
        F: FnMut(&mut Record, u64) -> Result<T, E> + Send,
    {
        let Some(cached) = self.refresh.take(key, now_secs()) else {
            return Ok(None);
        };
        let targets = self.targets(key);
        let epochs = self.epochs(&targets);
        if cached
            .cas
            .iter()
            .map(|(n, _)| *n)
            .eq(targets.iter().copied())
            && cached.epochs == epochs
        {
            let now = now_secs();
            let mut record = cached.record;
            record.prune(now);
            let before = record.clone();
            let outcome = change(&mut record, now);
            if outcome.is_ok() && record != before {
                let replicas: Vec<Replica> = cached
                    .cas
                    .iter()
                    .map(|(n, c)| (*n, Some((Record::default(), *c))))
                    .collect();
                let writes = self.write_all(&replicas, key, &mut record, now).await?;
                if writes.iter().all(|w| matches!(w, Ok(Write::Stored(_)))) {
                    self.refresh
                        .remember(key, &replicas, &writes, record, now, epochs);
                    return Ok(Some(outcome));
                }
            }
        }
        self.refresh.forget(key);
        Ok(None)
    }

    /// The long way: read every replica, merge, change, write back with CAS; on a conflict
    /// (another instance wrote in between) wait a little, jittered, and start again.
    async fn update_read_write<T, E, F>(
        &self,
        key: &str,
        aor: &Aor,
        mut change: F,
    ) -> Result<Result<T, E>, StoreError>
    where
        T: Send,
        E: Send,
        F: FnMut(&mut Record, u64) -> Result<T, E> + Send,
    {
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                let ms = fastrand::u64(1..=(4u64 << attempt.min(5)));
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if let Some(outcome) = self.read_write_once(key, aor, &mut change).await? {
                return Ok(outcome);
            }
            tracing::debug!(aor = %aor, attempt, "concurrent update, re-reading");
        }
        Err(StoreError::Contended)
    }

    /// One read-change-write round; None when another writer came first.
    async fn read_write_once<T, E, F>(
        &self,
        key: &str,
        aor: &Aor,
        change: &mut F,
    ) -> Result<Option<Result<T, E>>, StoreError>
    where
        T: Send,
        E: Send,
        F: FnMut(&mut Record, u64) -> Result<T, E> + Send,
    {
        // Taken before the reads: a restart after this bumps them, so the CAS values read
        // are never remembered under a newer epoch.
        let before: Vec<u64> = self.nodes.iter().map(Node::epoch).collect();
        let (targets, replicas) = self.read_replicas(key, aor.as_str()).await?;
        let epochs: Vec<u64> = replicas.iter().map(|(n, _)| before[*n]).collect();
        let now = now_secs();
        let found = records(&replicas);
        // Growth: a key not yet on its new owners is taken from where it was.
        let (previous, complete) = if found.is_empty() {
            let (older, answered) = self.read_previous(key, &targets, aor.as_str()).await;
            (older, answered && replicas.len() == targets.len())
        } else {
            (Vec::new(), true)
        };
        let mut record = merge(found.iter().copied().chain(previous.iter()), aor.as_str());
        record.prune(now);
        let before = record.clone();
        let outcome = change(&mut record, now);
        // No change needs no write, unless a replica lags behind (the write repairs it).
        let in_sync = replicas.iter().all(|r| holds(r, &before, now));
        if outcome.is_ok() && record == before && before.bindings.is_empty() && !complete {
            // Nothing found, nothing to write, and an owner did not answer: a removal or a
            // query answered 200 here would say what the farm cannot tell (the binding may
            // live on that owner, and would come back with it).
            return Err(StoreError::Unavailable(
                "an owner of the record did not answer".into(),
            ));
        }
        // In sync is enough only on as many replicas as a write needs: a record found on
        // fewer (an earlier write that reached too few) is written again, and refused below
        // if it still cannot reach them.
        let held = in_sync && replicas.len() >= self.write_quorum;
        if outcome.is_err() || (record == before && (held || before.bindings.is_empty())) {
            return Ok(Some(outcome));
        }
        let writes = self.write_all(&replicas, key, &mut record, now).await?;
        self.hint_missed(key, aor.as_str(), &replicas, &writes);
        let conflict = writes
            .iter()
            .any(|w| matches!(w, Ok(Write::Conflict | Write::NotFound)));
        let stored = writes
            .iter()
            .filter(|w| matches!(w, Ok(Write::Stored(_))))
            .count();
        if conflict {
            crate::metrics::cas_retry();
            return Ok(None);
        }
        if stored < self.write_quorum {
            // Not acknowledged (500): what was stored is kept, and repaired or merged later;
            // the client does not count on it.
            return Err(StoreError::Unavailable(format!(
                "{stored} of the {} replicas needed stored the write",
                self.write_quorum
            )));
        }
        // Replicas that failed are repaired later (read repair, refill).
        self.refresh
            .remember(key, &replicas, &writes, record, now, epochs);
        Ok(Some(outcome))
    }
}

impl Farm {
    /// The epochs of `nodes` (see [`crate::location::node`]), in that order.
    fn epochs(&self, nodes: &[usize]) -> Vec<u64> {
        nodes.iter().map(|n| self.nodes[*n].epoch()).collect()
    }
}

/// Ping every node at once; nodes that do not answer are marked dead. The number that did.
async fn ping_all(nodes: &[Node]) -> usize {
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
    up
}

/// Does this replica hold `record` once its own expired entries are dropped? (An entry that
/// merely expired is no difference worth a write.)
pub(super) fn holds(replica: &Replica, record: &Record, now: u64) -> bool {
    replica.1.as_ref().is_some_and(|(r, _)| {
        let mut r = r.clone();
        r.prune(now);
        r == *record
    })
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
        if let Some(outcome) = self.update_cached(&key, &mut change).await? {
            return Ok(outcome);
        }
        self.update_read_write(&key, aor, change).await
    }

    fn node_states(&self) -> Vec<(String, bool)> {
        self.nodes
            .iter()
            .map(|n| (n.addr.clone(), n.is_dead()))
            .collect()
    }

    fn health(&self) -> Result<(), String> {
        let all = self.nodes.len();
        let live = self.nodes.iter().filter(|n| !n.is_dead()).count();
        // With R-1 nodes dead every key still has a live owner; one more and some have none.
        let need = self.write_quorum.max(all + 1 - self.replicas.min(all));
        if live >= need {
            return Ok(());
        }
        Err(format!(
            "{} of {all} memcached nodes dead: {need} must answer (replicas {}, write quorum {})",
            all - live,
            self.replicas,
            self.write_quorum
        ))
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
            let (older, answered) = self.read_previous(&key, &targets, aor.as_str()).await;
            if older.is_empty() {
                if !answered || replicas.len() < targets.len() {
                    // Absence is concluded only when every owner said so: "no such user"
                    // (404) is a permanent answer, "cannot tell" is a 500 with Retry-After.
                    return Err(StoreError::Unavailable(
                        "an owner of the record did not answer".into(),
                    ));
                }
                return Ok(None);
            }
            merge(older.iter(), aor.as_str())
        } else {
            // Unreadable replicas (read as an empty record without AOR) are left out.
            let readable = found.iter().copied().filter(|r| !r.aor.is_empty());
            merge(readable, aor.as_str())
        };
        record.prune(now);
        // Read repair: replicas that are missing or differ get the merged record.
        let stale: Vec<Replica> = replicas
            .iter()
            .filter(|r| !holds(r, &record, now))
            .cloned()
            .collect();
        if !stale.is_empty() && !record.bindings.is_empty() {
            self.repair(aor, &key, &stale, &mut record, now).await;
        }
        if record.bindings.is_empty() && !found_any {
            return Ok(None);
        }
        Ok(Some(record))
    }
}
