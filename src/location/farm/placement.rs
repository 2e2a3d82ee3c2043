//! Placement: which nodes hold a key, and reading and writing its replicas there.
//!
//! The record of an AOR lives on the first R distinct nodes of the ketama ring from its key
//! ([`crate::location::ring`]) that may be called now: a node whose breaker is open is
//! skipped and the next one on the ring stands in, so that a dead node costs no timeout on
//! the hot path. Replicas are read and written concurrently; a node that fails only drops
//! its replica, which read repair or a refill restores later ([`super::heal`]).
//!
//! A key can also sit where the ring put it before: on an owner skipped as dead (a breaker
//! can open on a slow but living node), or on the nodes after its owners, which held it
//! before a node was added. Those are asked before a key is called absent.

use super::merge::ttl_for;
use super::{Farm, STRIPES};
use crate::location::node::{Answered, NodeError, Write};
use crate::location::record::{decode, encode_fitting};
use crate::location::ring::key_hash;
use crate::location::{Record, StoreError};
use crate::throttle::throttled_warn;
use futures::future::join_all;
use tokio::sync::Mutex;

/// Extra nodes asked, past the R owners, when a lookup misses (keys moved by growth).
const PREVIOUS_OWNERS: usize = 2;

/// One replica as read: its node, and its record with its CAS token (None: a miss).
pub(super) type Replica = (usize, Option<(Record, u64)>);

impl Farm {
    /// The first R nodes on the ring that may be called now.
    pub(super) fn targets(&self, key: &str) -> Vec<usize> {
        self.ring
            .walk(key.as_bytes())
            .filter(|i| self.nodes[*i].available())
            .take(self.replicas)
            .collect()
    }

    /// The lock that serializes this instance's updates of `key` (and of the keys sharing
    /// its stripe): CAS conflicts then only come from other instances.
    pub(super) fn stripe(&self, key: &str) -> &Mutex<()> {
        let h = key_hash(key.as_bytes()) as usize;
        &self.locks[h % STRIPES]
    }

    /// What `node` holds under `key`, checked to belong to `aor`.
    pub(super) async fn read(
        &self,
        node: usize,
        key: &str,
        aor: &str,
    ) -> Result<Replica, NodeError> {
        let got = self.nodes[node].gets(key).await?;
        Ok((
            node,
            match got {
                None => None,
                Some((value, cas)) => match decode(&value, aor) {
                    Ok(r) => Some((r, cas)),
                    Err(e @ StoreError::Newer(_)) => {
                        // Never written over (an older instance would wipe the bindings it
                        // cannot see): this replica is left out, like one that answered an
                        // error; the others are read and written, and when none is left
                        // the request gets 500. Not counted against the node's breaker.
                        throttled_warn!(node = %self.nodes[node].addr, error = %e, "record this release cannot read, left as it is");
                        return Err(NodeError(e.to_string(), Answered::WithError));
                    }
                    Err(e) => {
                        // Unreadable (other format or hash collision): never served, never
                        // overwritten blindly; the CAS write replaces it atomically.
                        tracing::warn!(node = %self.nodes[node].addr, error = %e, "unreadable record");
                        Some((Record::default(), cas))
                    }
                },
            },
        ))
    }

    /// The key's live owners and what each holds; an error when none can be asked or none
    /// answers.
    pub(super) async fn read_replicas(
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
    pub(super) async fn read_all(&self, nodes: &[usize], key: &str, aor: &str) -> Vec<Replica> {
        join_all(nodes.iter().map(|n| self.read(*n, key, aor)))
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    }

    /// Write `record` to every replica with its CAS (`add` where it was missing). Errs only
    /// when the record cannot be encoded; each node's answer is in the list. A record over
    /// the item limit loses its oldest tombstones first (`record` is then what was written).
    pub(super) async fn write_all(
        &self,
        replicas: &[Replica],
        key: &str,
        record: &mut Record,
        now: u64,
    ) -> Result<Vec<Result<Write, NodeError>>, StoreError> {
        let value = encode_fitting(record, self.item_limit)?;
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

    /// Records found on the previous owners of a key (growth: not yet moved to a new node),
    /// and whether every node asked answered: absence is concluded only from a full set of
    /// answers, never because a node could not be read.
    pub(super) async fn read_previous(
        &self,
        key: &str,
        asked: &[usize],
        aor: &str,
    ) -> (Vec<Record>, bool) {
        let previous = self.previous_owners(key, asked);
        let answers = self.read_all(&previous, key, aor).await;
        let complete = answers.len() == previous.len();
        let records = answers
            .into_iter()
            .filter_map(|(_, r)| r.map(|(r, _)| r))
            .filter(|r| !r.aor.is_empty())
            .collect();
        (records, complete)
    }
}
