//! Healing: bringing replicas back in line after a node missed writes.
//!
//! memcached neither replicates nor persists, so a node that was dead, or restarted empty,
//! holds nothing or old records when it answers again. Two mechanisms repair it:
//!
//! - read repair: a lookup that finds replicas missing or different writes the merged
//!   record back to them (with their CAS, so a concurrent writer is never overwritten);
//! - refill: a monitor probes every node with `stats` and, when a node comes back (from dead,
//!   or under a new process), copies to it in the background every record it should hold,
//!   merged with whatever it has. Probing outside the data path also lets a dead node rejoin
//!   without waiting for traffic to try it.
//!
//! A refill walks every key of every other node, so it is rationed ([`RefillGate`]): one
//! refill of a node at a time in this instance, and a node whose breaker flaps (a slow node
//! timing out now and then) is refilled at most once per `REFILL_INTERVAL`; in between, read
//! repair mends what lookups find. A node that restarted (empty) always gets one, after the
//! one under way if any. Copies go `REFILL_CONCURRENCY` at a time, so that a refill never
//! crowds out live traffic on the nodes.

use super::Farm;
use super::lease::Lease;
use super::merge::merge;
use super::placement::Replica;
use crate::clock::now_secs;
use crate::location::node::{NodeError, Write};
use crate::location::record;
use crate::location::{Record, admin};
use crate::sip::uri::Aor;
use futures::StreamExt;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

/// What copying one key during a refill came to.
enum Copy {
    Copied,
    /// Nothing to do: the target had it, or it is gone, or it is not a record.
    Nothing,
    /// Could not be read or written: the pass is incomplete.
    Failed,
}

/// Keys copied concurrently during a refill: enough to hide round trips, few enough not to
/// crowd out live traffic on the nodes.
const REFILL_CONCURRENCY: usize = 16;
/// Least time between two refills of a node that flaps without restarting.
const REFILL_INTERVAL: Duration = Duration::from_secs(30);
/// Copy attempts of one key when another writer keeps winning the CAS.
const COPY_ATTEMPTS: usize = 3;
/// Deadline of one node's key listing (`lru_crawler metadump` walks the whole cache).
const LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// A refill pass that could not read every source is run again after this...
const REFILL_RETRY: Duration = Duration::from_secs(2);
/// ...this many passes at most (about a minute with the listing deadlines).
const REFILL_PASSES: usize = 30;
/// `BUSY` from memcached's crawler (one dump at a time): waited out this many times...
const BUSY_RETRIES: usize = 20;
/// ...this long each.
const BUSY_WAIT: Duration = Duration::from_millis(250);

impl Farm {
    /// Probe every node with `stats` once per `every`: a dead node whose probe succeeds rejoins
    /// without waiting for traffic, and a node that came back (from dead, or restarted under
    /// another pid) is refilled in the background from the others.
    pub(crate) fn spawn_monitor(self: &Arc<Self>, every: Duration) {
        let farm = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !farm.retired() {
                tick.tick().await;
                for i in 0..farm.nodes.len() {
                    farm.probe(i).await;
                }
            }
        });
    }

    /// Probe node `i` once; refill it when it came back.
    async fn probe(self: &Arc<Self>, i: usize) {
        let node = &self.nodes[i];
        let was_dead = node.is_dead();
        let probe = admin::stats(&node.addr, node.timeout().max(Duration::from_millis(200))).await;
        match probe {
            Ok(stats) => {
                let restarted = node.new_incarnation(incarnation(&stats));
                node.probed(Ok(()));
                // It answers: the writes it missed go to it now (`hints`), refill or not.
                self.spawn_replay(i);
                let overflowed = self.take_overflow(i);
                if !(was_dead || restarted || overflowed) {
                    return;
                }
                if restarted {
                    // Back empty: it has lost the ring id too.
                    self.announce_ring(i).await;
                }
                // Too many missed writes to remember: a full refill, whatever the rationing.
                if !self
                    .gate(i)
                    .request(restarted || overflowed, Instant::now())
                {
                    tracing::info!(node = %node.addr, restarted, "memcached node (re)joined: refill under way or done less than 30 s ago");
                    return;
                }
                tracing::warn!(node = %node.addr, restarted, "memcached node (re)joined: refilling it");
                let farm = self.clone();
                tokio::spawn(async move {
                    farm.refill_until_complete(i).await;
                    // It restarted again while being refilled: what it got may be gone.
                    while farm.gate(i).done(Instant::now()) {
                        farm.refill_until_complete(i).await;
                    }
                });
            }
            Err(e) => node.probed(Err(NodeError::lost(format!("{}: {e}", node.addr)))),
        }
    }

    /// Copy to node `target` every record it should hold (it is among the first R nodes of the
    /// key on the ring) from the nodes that have one, merged with whatever it holds. Walks the
    /// keys of every other live node with `lru_crawler metadump`.
    /// True when complete: every other node was listed (a source that is dead or could not
    /// list its keys may hold records nobody else has, and the refill is then run again).
    async fn refill(&self, target: usize) -> bool {
        crate::metrics::refill(&self.nodes[target].addr);
        let started = Instant::now();
        let mut copied = 0;
        let mut complete = true;
        for (i, source) in self.nodes.iter().enumerate() {
            if i == target {
                continue;
            }
            if !source.available() {
                complete = false;
                continue;
            }
            let Some(mine) = self.keys_for(i, target).await else {
                complete = false;
                continue;
            };
            let (done, failed) = futures::stream::iter(mine)
                .map(|k| async move { self.copy_one(&k, i, target).await })
                .buffer_unordered(REFILL_CONCURRENCY)
                .fold((0, 0), |(n, f), c| async move {
                    match c {
                        Copy::Copied => (n + 1, f),
                        Copy::Nothing => (n, f),
                        Copy::Failed => (n, f + 1),
                    }
                })
                .await;
            copied += done;
            if failed > 0 {
                // A key that could not be read or written (the node's connection not back
                // yet, a conflict that kept coming): the pass is not complete, run it again.
                tracing::warn!(node = %self.nodes[target].addr, source = %source.addr, failed, "refill: keys not copied");
                complete = false;
            }
        }
        tracing::warn!(
            node = %self.nodes[target].addr,
            records = copied,
            complete,
            ms = started.elapsed().as_millis() as u64,
            "refill done"
        );
        complete
    }

    /// Refill `target` until a pass is complete (every source listed), every
    /// `REFILL_RETRY`, at most `REFILL_PASSES` passes; said when it gives up.
    /// Only the instance holding the node's refill lease runs a pass ([`super::lease`]); the
    /// others wait for it to be done.
    async fn refill_until_complete(&self, target: usize) {
        for pass in 1..=REFILL_PASSES {
            if self.retired() {
                return;
            }
            match self.refill_lease(target).await {
                Lease::Done => {
                    tracing::warn!(node = %self.nodes[target].addr, "refilled by another instance");
                    return;
                }
                Lease::Busy => {}
                Lease::Mine => {
                    if self.refill(target).await {
                        self.refill_done(target).await;
                        return;
                    }
                }
            }
            if pass < REFILL_PASSES {
                tokio::time::sleep(REFILL_RETRY).await;
            }
        }
        tracing::error!(
            node = %self.nodes[target].addr,
            passes = REFILL_PASSES,
            "refill still incomplete (a source is down or cannot list its keys): read repair \
             mends what lookups find"
        );
    }

    /// The keys on node `source` that node `target` should hold too; None when `source`
    /// cannot list its keys.
    async fn keys_for(&self, source: usize, target: usize) -> Option<Vec<String>> {
        let addr = &self.nodes[source].addr;
        let mut attempt = 0;
        let keys = loop {
            match admin::keys(addr, &self.prefix, LIST_TIMEOUT).await {
                Ok(k) => break k,
                // The crawler serves one dump at a time (another instance's refill): wait.
                Err(e) if e.starts_with("BUSY") && attempt < BUSY_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(BUSY_WAIT).await;
                }
                Err(e) => {
                    tracing::warn!(node = %addr, error = %e, "cannot list keys for a refill");
                    return None;
                }
            }
        };
        let owned_by_target = |k: &String| {
            self.ring
                .walk(k.as_bytes())
                .take(self.replicas)
                .any(|n| n == target)
        };
        Some(keys.into_iter().filter(owned_by_target).collect())
    }

    /// Merge one key from `source` into `target`. True when something was written.
    async fn copy_one(&self, key: &str, source: usize, target: usize) -> Copy {
        let value = match self.nodes[source].gets(key).await {
            Ok(Some((value, _))) => value,
            // Gone meanwhile (expired, removed): nothing to copy.
            Ok(None) => return Copy::Nothing,
            Err(_) => return Copy::Failed,
        };
        // The key is a hash: the AOR, needed to check what is read, is in the value.
        let Ok(aor) = record::decode_any(&value).map(|r| r.aor) else {
            return Copy::Nothing;
        };
        if record::key(&self.prefix, &aor) != key {
            return Copy::Nothing;
        }
        let _one_at_a_time = self.stripe(key).lock().await;
        for _ in 0..COPY_ATTEMPTS {
            let Ok(theirs) = self.read(source, key, &aor).await else {
                return Copy::Failed;
            };
            let Ok(mine) = self.read(target, key, &aor).await else {
                return Copy::Failed;
            };
            let now = now_secs();
            let mut merged = union(&theirs, &mine, &aor, now);
            if merged.bindings.is_empty() || mine.1.as_ref().is_some_and(|(r, _)| *r == merged) {
                return Copy::Nothing;
            }
            match self.write_all(&[mine], key, &mut merged, now).await {
                Ok(w) if matches!(w.first(), Some(Ok(Write::Stored(_)))) => return Copy::Copied,
                // A CAS conflict: someone wrote meanwhile, read both again.
                Ok(w) if matches!(w.first(), Some(Ok(_))) => continue,
                _ => return Copy::Failed,
            }
        }
        Copy::Failed
    }

    /// Read repair: write `record` to the replicas that are missing it or hold something
    /// else (with their CAS: a concurrent writer wins, and the next read repairs again).
    pub(super) async fn repair(
        &self,
        aor: &Aor,
        key: &str,
        stale: &[Replica],
        record: &mut Record,
        now: u64,
    ) {
        if let Err(e) = self.write_all(stale, key, record, now).await {
            tracing::debug!(aor = %aor, error = %e, "read repair skipped");
        }
    }
}

impl Farm {
    fn gate(&self, node: usize) -> MutexGuard<'_, RefillGate> {
        self.refills[node].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The refills of one node by this instance (see the module doc).
#[derive(Debug, Default)]
pub(super) struct RefillGate {
    running: bool,
    /// The node restarted while a refill was running: one more when it ends.
    again: bool,
    last_start: Option<Instant>,
}

impl RefillGate {
    /// May a refill start now? `restarted`: the node came back empty.
    fn request(&mut self, restarted: bool, now: Instant) -> bool {
        if self.running {
            self.again |= restarted;
            return false;
        }
        let recent = self
            .last_start
            .is_some_and(|t| now.duration_since(t) < REFILL_INTERVAL);
        if recent && !restarted {
            return false;
        }
        self.running = true;
        self.last_start = Some(now);
        true
    }

    /// A refill ended: true when another must run at once (it stays running).
    fn done(&mut self, now: Instant) -> bool {
        if std::mem::take(&mut self.again) {
            self.last_start = Some(now);
            return true;
        }
        self.running = false;
        false
    }
}

/// Which memcached process answered a probe: its pid and start time. A change means the node
/// restarted (empty) even if no probe ever failed.
fn incarnation(stats: &[(String, String)]) -> String {
    let pid = admin::stat(stats, "pid").unwrap_or("?");
    let started = match (admin::stat(stats, "time"), admin::stat(stats, "uptime")) {
        (Some(t), Some(u)) => t.parse::<i64>().unwrap_or(0) - u.parse::<i64>().unwrap_or(0),
        _ => 0,
    };
    // Restart times may jitter by a second between probes.
    format!("{pid}@{}", started / 5)
}

/// The merge of what two nodes hold for one AOR (unreadable records left out), pruned.
fn union(theirs: &Replica, mine: &Replica, aor: &str, now: u64) -> Record {
    let mut merged = merge(
        [&theirs.1, &mine.1]
            .into_iter()
            .flatten()
            .map(|(r, _)| r)
            .filter(|r| !r.aor.is_empty()),
        aor,
    );
    merged.prune(now);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_are_rationed() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut g = RefillGate::default();
        assert!(g.request(false, at(0)), "the first comeback");
        assert!(!g.request(false, at(1)), "one at a time");
        assert!(!g.done(at(2)));
        assert!(!g.request(false, at(10)), "a flap 10 s after a refill");
        assert!(
            g.request(true, at(11)),
            "a restart: empty, refilled whatever the interval"
        );
        assert!(
            !g.request(true, at(12)),
            "one at a time, even for a restart..."
        );
        assert!(!g.request(false, at(13)));
        assert!(
            g.done(at(14)),
            "...which is refilled again once the first ends"
        );
        assert!(!g.done(at(15)));
        assert!(
            !g.request(false, at(40)),
            "30 s after the last start, not its end"
        );
        assert!(g.request(false, at(45)));
    }
}
