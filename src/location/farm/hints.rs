//! Hinted handoff (as Dynamo and Cassandra do it): a write that could not reach one of a
//! key's owners (skipped as dead, or no answer) leaves a hint for that owner in this
//! instance; once the owner answers again, the monitor replays its hints: each key is read
//! from its owners, merged, and written to those that lack the merge (CAS, like read
//! repair). A node that rejoins thus gets what it missed at once, without waiting for a
//! lookup, and even when its refill is rationed (a flapping node) or not due (a node frozen
//! and thawed, whose breaker never opened): otherwise the next fault could take the only
//! replica that holds an acknowledged write or removal.
//!
//! Hints live in memory: bounded per node (`MAX_HINTS`); past that the node is marked for a
//! full refill instead, whatever the rationing. An instance that dies loses its hints; the
//! refill and read repair remain.

use super::merge::{merge, readable};
use super::placement::Replica;
use super::{Farm, holds};
use crate::clock::now_secs;
use crate::location::node::{Answered, NodeError, Write};
use std::collections::HashMap;

/// Keys remembered per node before the node is marked for a full refill instead.
const MAX_HINTS: usize = 65_536;
/// Hints replayed at once (as the refill copies: enough to hide round trips, few enough
/// not to crowd out live traffic).
const REPLAY_CONCURRENCY: usize = 16;

/// The hints for one node: key -> AOR (needed to check what is read).
#[derive(Debug, Default)]
pub(super) struct Hints {
    keys: HashMap<String, String>,
    /// Some were not remembered: refill the node fully when it is back.
    overflow: bool,
    /// A replay is under way (one at a time per node).
    replaying: bool,
}

impl Farm {
    /// After a write of `key` to `replicas`: a hint for each owner it did not reach.
    pub(super) fn hint_missed(
        &self,
        key: &str,
        aor: &str,
        replicas: &[Replica],
        writes: &[Result<Write, NodeError>],
    ) {
        let owners = self.ring.walk(key.as_bytes()).take(self.replicas);
        for o in owners {
            let reached = replicas
                .iter()
                .zip(writes)
                .find(|((n, _), _)| *n == o)
                .is_some_and(|(_, w)| !matches!(w, Err(NodeError(_, Answered::No))));
            if !reached {
                let mut h = self.hints_of(o);
                if h.keys.len() < MAX_HINTS || h.keys.contains_key(key) {
                    h.keys.insert(key.to_owned(), aor.to_owned());
                } else {
                    h.overflow = true;
                }
            }
        }
    }

    /// Must node `i` be refilled fully (hints overflowed)? Clears the mark.
    pub(super) fn take_overflow(&self, i: usize) -> bool {
        std::mem::take(&mut self.hints_of(i).overflow)
    }

    /// Start replaying node `i`'s hints in the background, unless there are none or a replay
    /// is under way.
    pub(super) fn spawn_replay(self: &std::sync::Arc<Self>, i: usize) {
        {
            let mut h = self.hints_of(i);
            if h.keys.is_empty() || h.replaying {
                return;
            }
            h.replaying = true;
        }
        let farm = self.clone();
        tokio::spawn(async move {
            farm.replay_hints(i).await;
            farm.hints_of(i).replaying = false;
        });
    }

    /// Replay the hints of node `i`, which answers again; those that fail are kept.
    async fn replay_hints(&self, i: usize) {
        use futures::StreamExt;
        let hints = std::mem::take(&mut self.hints_of(i).keys);
        let (done, kept) = futures::stream::iter(hints)
            .map(|(key, aor)| async move {
                let ok = self.replay_one(i, &key, &aor).await;
                (ok, key, aor)
            })
            .buffer_unordered(REPLAY_CONCURRENCY)
            .fold((0, 0), |(done, kept), (ok, key, aor)| async move {
                if ok {
                    return (done + 1, kept);
                }
                let mut h = self.hints_of(i);
                if h.keys.len() < MAX_HINTS {
                    h.keys.insert(key, aor);
                } else {
                    h.overflow = true;
                }
                (done, kept + 1)
            })
            .await;
        tracing::info!(node = %self.nodes[i].addr, replayed = done, kept, "hinted writes replayed");
    }

    /// Bring node `i`'s replica of `key` in line with the merge of its owners. True when done
    /// (written, already in line, or `i` is no owner now).
    async fn replay_one(&self, i: usize, key: &str, aor: &str) -> bool {
        let _one_at_a_time = self.stripe(key).lock().await;
        let targets = self.targets(key);
        if !targets.contains(&i) {
            // Not an owner now (dead again, or the ring changed): not done while it is down.
            return !self
                .ring
                .walk(key.as_bytes())
                .take(self.replicas)
                .any(|o| o == i);
        }
        let replicas = self.read_all(&targets, key, aor).await;
        if !replicas.iter().any(|(n, _)| *n == i) {
            return false;
        }
        let now = now_secs();
        let mut merged = merge(readable(&replicas), aor);
        merged.prune(now);
        if merged.bindings.is_empty() {
            return true;
        }
        let stale: Vec<Replica> = replicas
            .into_iter()
            .filter(|r| !holds(r, &merged, now))
            .collect();
        if stale.is_empty() {
            return true;
        }
        match self.write_all(&stale, key, &mut merged, now).await {
            Ok(w) => stale
                .iter()
                .zip(&w)
                .all(|((n, _), w)| *n != i || matches!(w, Ok(Write::Stored(_)))),
            Err(_) => false,
        }
    }

    fn hints_of(&self, i: usize) -> std::sync::MutexGuard<'_, Hints> {
        self.hints[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}
