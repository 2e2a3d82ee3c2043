//! The location service: bindings of an address-of-record, and where they are kept.
//!
//! RFC 3261 10.3 (what a binding holds), RFC 3327 (Path kept with the binding), RFC 5626
//! (instance-id / reg-id identify a binding). The registrar decides *what* changes; a
//! [`LocationStore`] only applies that decision atomically. Two stores implement it:
//! [`memory::MemoryStore`] (one process, the default) and [`farm::Farm`] (a sharded memcached
//! farm shared by every instance: ketama placement in [`ring`], one node in `node`, the
//! value format in [`record`]). Which binding a contact is: [`matching`], linear in the
//! size of the record.

pub mod admin;
pub mod farm;
pub(crate) mod matching;
pub mod memory;
pub(crate) mod node;
pub(crate) mod pipeline;
pub mod record;
pub mod ring;
mod store;

pub use store::Store;

use crate::sip::uri::{Aor, same_contact};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// What `[memcached]` configures (the farm).
#[derive(Debug, Clone, PartialEq)]
pub struct MemcachedConfig {
    /// One pipelined connection per node (true), or the memcache crate's pooled client.
    pub pipeline: bool,
    /// Records this instance remembers to refresh them in one round trip (0: off).
    pub refresh_cache: usize,
    /// Bytes (estimated) the remembered records may hold (0: off).
    pub refresh_cache_bytes: usize,
    pub nodes: Vec<(String, u32)>,
    pub replicas: usize,
    /// Replicas that must store a write before it is acknowledged (1 to `replicas`).
    pub write_quorum: usize,
    pub timeout: Duration,
    pub key_prefix: String,
    pub item_limit: usize,
}

/// One contact bound to an AOR. Plain data: what the registrar decided, what the proxy needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The contact URI as the UA wrote it (no angle brackets; URI parameters and escaped
    /// headers kept, RFC 4475 cparam02 / regescrt).
    pub contact: String,
    /// Contact header parameters other than `expires` and `q` (e.g. `;+sip.instance=...`),
    /// with their leading `;`, echoed in the 200 OK.
    pub params: String,
    /// Absolute expiry, Unix seconds.
    pub expires_at: u64,
    /// q-value in thousandths (RFC 3261 20.10), None when not given.
    pub q: Option<u16>,
    pub call_id: String,
    pub cseq: u32,
    /// Path header values (RFC 3327), in order: the route set toward the UA.
    pub path: Vec<String>,
    /// Where the REGISTER came from: `udp:ip:port` / `tcp:ip:port`.
    pub source: String,
    /// RFC 5626 `+sip.instance` and `reg-id`.
    pub instance_id: Option<String>,
    pub reg_id: Option<u32>,
    /// When it was last written (milliseconds, from a clock safe across instances): the tie
    /// breaker when replicas disagree.
    pub updated: u64,
    /// A tombstone: the binding was removed. Kept until `expires_at` so that an old replica
    /// cannot bring it back.
    pub removed: bool,
    /// The flow the binding was registered over, when requests must reach the UA on it
    /// (RFC 5626 outbound, TCP, or a UA behind NAT) rather than at its Contact.
    pub flow: Option<Flow>,
}

/// A flow held by one instance (RFC 5626 3.3): the UA is reached from that instance, over
/// its TCP connection or from its UDP socket to the NAT's public address (`Binding::source`).
/// Other instances route requests for the binding to the owner ([`Flow::owner`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// The owning instance's own SIP URI with the flow's token
    /// (`sip:HOST:PORT[;transport=tcp];sff=TOKEN`): a Route to it reaches the UA.
    pub owner: String,
    /// Why the flow is used: the Contact is not where the REGISTER came from (NAT), the
    /// REGISTER came over TCP, or the UA asked for outbound (reg-id).
    pub nat: bool,
    /// The flow is gone (its TCP connection closed, RFC 5626 5.3): behind NAT the binding
    /// cannot be reached until the UA registers again; otherwise its Contact still can be.
    pub closed: bool,
}

/// The `expires_at` of a binding kept until it is removed (`sipfarm location add --expires 0`,
/// a gateway): past any real time. Its record is written with memcached's longest TTL and
/// renewed by the instances ([`farm`]'s `permanent`).
pub const UNTIL_REMOVED: u64 = 1 << 52;

/// How long the tombstone of a binding kept until removed lasts: past the longest TTL (30
/// days) a replica that missed the removal can still have, plus a day.
const UNTIL_REMOVED_TOMBSTONE: u64 = 31 * 24 * 3600;

impl Binding {
    /// Kept until removed (see [`UNTIL_REMOVED`]).
    pub fn until_removed(&self) -> bool {
        self.expires_at >= UNTIL_REMOVED
    }

    /// The seconds it has left as a SIP `expires` value (delta-seconds, at most 2^32-1: a
    /// binding kept until removed says that).
    pub fn expires_in(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now).min(u64::from(u32::MAX))
    }

    /// Make this binding a tombstone stamped `stamp`: it keeps what identifies and orders it
    /// (contact, instance-id, reg-id, Call-ID, CSeq), not what only a live binding needs
    /// (Path, parameters, source, flow, q): many tombstones, little space.
    pub fn bury(&mut self, stamp: u64) {
        self.removed = true;
        self.path = Vec::new();
        self.params = String::new();
        self.source = String::new();
        self.flow = None;
        self.q = None;
        if self.until_removed() {
            // A tombstone forever would keep its record forever: it needs to outlive only
            // the replicas that may still hold the binding, which expire within 30 days.
            self.expires_at = stamp / 1000 + UNTIL_REMOVED_TOMBSTONE;
        }
        self.updated = stamp;
    }

    /// Is this the same binding as a new contact (RFC 5626 4.2 instance/reg-id first, else
    /// RFC 3261 19.1.4 URI equality)?
    pub fn same_as(&self, contact: &str, instance: Option<&str>, reg_id: Option<u32>) -> bool {
        match (&self.instance_id, instance, self.reg_id, reg_id) {
            (Some(a), Some(b), Some(x), Some(y)) => a == b && x == y,
            _ => same_contact(&self.contact, contact),
        }
    }

    /// What identifies it, for [`matching::Matcher`].
    pub(crate) fn probe(&self) -> matching::Probe<'_> {
        matching::Probe {
            uri: &self.contact,
            instance: self.instance_id.as_deref(),
            reg_id: self.reg_id,
        }
    }

    pub fn is_live(&self, now: u64) -> bool {
        !self.removed && self.expires_at > now
    }
}

/// Every binding of one AOR (live ones and tombstones).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    /// The canonical AOR, stored in the value and checked on read (the key is a hash).
    pub aor: String,
    pub bindings: Vec<Binding>,
}

impl Record {
    pub(crate) fn new(aor: &Aor) -> Record {
        Record {
            aor: aor.as_str().to_owned(),
            bindings: Vec::new(),
        }
    }

    /// Drop what has expired: live bindings past their expiry, tombstones past theirs.
    pub(crate) fn prune(&mut self, now: u64) {
        self.bindings.retain(|b| b.expires_at > now);
    }

    /// Keep the `keep` most recent tombstones (by `updated`), drop the older ones. A tombstone
    /// only stops an old replica from bringing its binding back; the oldest are the least
    /// likely to still have such a replica, and without a bound a client that adds and
    /// removes distinct contacts grows the record forever.
    pub(crate) fn bound_tombstones(&mut self, keep: usize) {
        let mut tombstones: Vec<(u64, usize)> = self
            .bindings
            .iter()
            .enumerate()
            .filter(|(_, b)| b.removed)
            .map(|(i, b)| (b.updated, i))
            .collect();
        if tombstones.len() <= keep {
            return;
        }
        let excess = tombstones.len() - keep;
        // The `excess` oldest first (ties by position), in n log n at worst.
        tombstones.select_nth_unstable(excess - 1);
        let mut gone = vec![false; self.bindings.len()];
        for &(_, i) in &tombstones[..excess] {
            gone[i] = true;
        }
        let mut i = 0;
        self.bindings.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
    }

    pub fn live(&self, now: u64) -> impl Iterator<Item = &Binding> {
        self.bindings.iter().filter(move |b| b.is_live(now))
    }

    /// The latest expiry of anything in the record (bindings and tombstones): the item TTL.
    pub(crate) fn max_expiry(&self) -> Option<u64> {
        self.bindings.iter().map(|b| b.expires_at).max()
    }
}

/// Why the store could not answer. Each is a 500 with Retry-After to the client, never a hang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No node holding this key answered in time.
    Unavailable(String),
    /// Too many concurrent writers on this AOR; the retry budget ran out.
    Contended,
    /// The record would not fit one memcached item.
    TooLarge,
    /// A stored value could not be read (not a record, or a broken one): written over.
    Corrupt(String),
    /// A stored record this release must not write over: a newer format (a rolling
    /// upgrade), or another AOR's record under the same hash.
    Newer(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "location store unavailable: {why}"),
            StoreError::Contended => f.write_str("too many concurrent updates"),
            StoreError::TooLarge => f.write_str("record too large"),
            StoreError::Corrupt(why) => write!(f, "unreadable record: {why}"),
            StoreError::Newer(why) => write!(f, "record kept as it is: {why}"),
        }
    }
}

/// Where bindings are kept. `update` runs `change` on the current record (expired entries
/// already pruned) and stores the result atomically, retrying `change` on a concurrent write:
/// `change` must therefore be a pure function of the record it is given. When `change`
/// returns `Err`, or leaves the record as it was, nothing is written.
pub trait LocationStore: Send + Sync + 'static {
    fn update<T, E, F>(
        &self,
        aor: &Aor,
        change: F,
    ) -> impl Future<Output = Result<Result<T, E>, StoreError>> + Send
    where
        T: Send,
        E: Send,
        F: FnMut(&mut Record, u64) -> Result<T, E> + Send;

    /// The record of an AOR (expired entries pruned), None when there is none.
    fn lookup(&self, aor: &Aor) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// The nodes behind the store and whether each is considered dead right now (empty for
    /// a store without nodes).
    fn node_states(&self) -> Vec<(String, bool)> {
        Vec::new()
    }

    /// Whether the store can serve every user now, and why not: a farm needs the nodes that
    /// guarantee one owner of every key (all but R-1) and at least W of them for a write.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// The id of the node list (the ring) this store places keys with, when it has one.
    fn ring_id(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_tombstones_go_first() {
        let b = |contact: &str, updated: u64, removed: bool| Binding {
            contact: contact.into(),
            params: String::new(),
            expires_at: 10,
            q: None,
            call_id: String::new(),
            cseq: 1,
            path: vec![],
            source: String::new(),
            instance_id: None,
            reg_id: None,
            updated,
            removed,
            flow: None,
        };
        let mut r = Record {
            aor: "a@x".into(),
            bindings: vec![
                b("t5", 5, true),
                b("live1", 1, false),
                b("t2", 2, true),
                b("t9", 9, true),
                b("t2b", 2, true),
                b("live0", 0, false),
            ],
        };
        r.bound_tombstones(4);
        assert_eq!(r.bindings.len(), 6);
        r.bound_tombstones(2);
        let left: Vec<&str> = r.bindings.iter().map(|b| b.contact.as_str()).collect();
        assert_eq!(left, ["t5", "live1", "t9", "live0"]);
        r.bound_tombstones(0);
        assert_eq!(r.bindings.len(), 2);
    }
}
