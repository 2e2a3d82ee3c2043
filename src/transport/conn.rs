//! TCP connections as the rest of the element sees them, and the table of the open ones.
//!
//! RFC 3261 18.3 frames messages on a stream but says nothing of what a peer may cost: these
//! bounds are ours (issue 10, "keep serving under hostile traffic").
//!
//! - [`Conn`]: a send queue bounded in bytes and in messages. Sending never waits: a handler,
//!   or a receive loop forwarding a response, must not stall behind a peer that does not
//!   read. A full queue closes the connection.
//! - [`Connections`]: open connections by remote address and by id (a request for a UA goes
//!   over the connection it registered on; a response goes back on the connection its
//!   request came in on, whose id travels in our Via as `sfc`), and the admission counts:
//!   connections open in all and per source address, dials under way.

use crate::throttle::throttled_info;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Messages queued for one connection at most, whatever their size: CRLF pongs are 2 bytes,
/// so the byte bound alone would let a ping flood queue a million of them.
pub(crate) const QUEUE_MESSAGES: usize = 4096;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A TCP connection: send bytes on it, and ask it to stay open at least until a given time
/// (bindings registered over it).
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub id: u64,
    tx: mpsc::Sender<Bytes>,
    link: Arc<Link>,
}

/// What a connection's senders, its reader and its writer share.
#[derive(Debug)]
pub(crate) struct Link {
    id: u64,
    remote: SocketAddr,
    /// Bytes queued and not yet written.
    queued: AtomicUsize,
    max_queued: usize,
    /// Unix seconds before which an idle connection is not closed.
    hold_until: AtomicU64,
    /// Set once, when the connection is torn down: nothing more is sent, written or read.
    closed: watch::Sender<bool>,
    /// Why it was torn down has been logged (once per connection).
    logged: AtomicBool,
}

impl Conn {
    /// A connection to `remote` whose queue holds at most `max_queued` bytes, and the
    /// receiving end of that queue, for its writer.
    pub(crate) fn new(remote: SocketAddr, max_queued: usize) -> (Conn, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let link = Link {
            id,
            remote,
            queued: AtomicUsize::new(0),
            max_queued,
            hold_until: AtomicU64::new(0),
            closed: watch::Sender::new(false),
            logged: AtomicBool::new(false),
        };
        let conn = Conn {
            id,
            tx,
            link: Arc::new(link),
        };
        (conn, rx)
    }

    /// Queue `bytes` for the writer, without waiting. False when the connection is closed or
    /// its queue is full; a full queue (a peer that does not read) closes the connection.
    pub(crate) fn send(&self, bytes: Bytes) -> bool {
        let link = &self.link;
        if link.is_closed() {
            return false;
        }
        let len = bytes.len();
        let before = link.queued.fetch_add(len, Ordering::Relaxed);
        // One message is always let in, however large: the bound is on what piles up.
        if before > 0 && before + len > link.max_queued {
            link.queued.fetch_sub(len, Ordering::Relaxed);
            link.close(Some("its send queue is full (a peer that does not read)"));
            return false;
        }
        match self.tx.try_send(bytes) {
            Ok(()) => true,
            Err(e) => {
                link.queued.fetch_sub(len, Ordering::Relaxed);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    link.close(Some("its send queue holds too many messages"));
                }
                false
            }
        }
    }

    pub(crate) fn hold(&self, until: u64) {
        self.link.hold_until.fetch_max(until, Ordering::Relaxed);
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.link.is_closed() && !self.tx.is_closed()
    }

    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.link
    }
}

impl Link {
    /// Tear the connection down: its reader and writer stop, what is queued is dropped.
    /// `why` is logged at info, once per connection and throttled across connections (a
    /// flood of them must not become a flood of lines); None for an ordinary end.
    pub(crate) fn close(&self, why: Option<&str>) {
        self.closed.send_replace(true);
        if let Some(why) = why {
            if !self.logged.swap(true, Ordering::Relaxed) {
                let (peer, conn) = (self.remote, self.id);
                throttled_info!(%peer, conn, "closing a tcp connection: {why}");
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// For [`torn_down`].
    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// `len` bytes of the queue were written.
    pub(crate) fn written(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::Relaxed);
    }

    pub(crate) fn held_until(&self) -> u64 {
        self.hold_until.load(Ordering::Relaxed)
    }
}

/// Resolves once the connection `closed` watches is torn down.
pub(crate) async fn torn_down(closed: &mut watch::Receiver<bool>) {
    // The guard it returns must not live across an await of the caller (it is not Send).
    let _ = closed.wait_for(|c| *c).await;
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `limits.max_connections` are open.
    Total,
    /// `limits.max_connections_per_source` are open from this address.
    PerSource,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Total => "max_connections reached",
            Refused::PerSource => "max_connections_per_source reached",
        })
    }
}

/// Open TCP connections (accepted and dialled), by remote address and by id, and the
/// admission counts.
#[derive(Default, Debug)]
pub(crate) struct Connections {
    by_addr: Mutex<HashMap<SocketAddr, Conn>>,
    by_id: Mutex<HashMap<u64, Conn>>,
    counts: Mutex<Counts>,
    dials: AtomicUsize,
}

#[derive(Default, Debug)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// One connection's place in the counts, held until its socket is closed (by its reader and
/// writer both, so that the counts follow the file descriptors, not the table entries).
#[derive(Debug)]
pub(crate) struct Slot {
    table: Arc<Connections>,
    /// The source it counts against: accepted connections only.
    source: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.table.counts);
        c.total -= 1;
        if let Some(ip) = self.source {
            match c.per_source.get_mut(&ip) {
                Some(n) if *n > 1 => *n -= 1,
                _ => {
                    c.per_source.remove(&ip);
                }
            }
        }
    }
}

/// A dial under way, counted until it is dropped.
#[derive(Debug)]
pub(crate) struct Dial(Arc<Connections>);

impl Drop for Dial {
    fn drop(&mut self) {
        self.0.dials.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// A place for one more connection: accepted ones name their `source` and count against
    /// `per_source` too; dialled ones (None) only against `total`.
    pub(crate) fn admit(
        self: &Arc<Self>,
        source: Option<IpAddr>,
        total: usize,
        per_source: usize,
    ) -> Result<Slot, Refused> {
        let source = source.map(|ip| ip.to_canonical());
        let mut c = lock(&self.counts);
        if c.total >= total {
            return Err(Refused::Total);
        }
        if let Some(ip) = source {
            let n = c.per_source.entry(ip).or_insert(0);
            if *n >= per_source {
                return Err(Refused::PerSource);
            }
            *n += 1;
        }
        c.total += 1;
        Ok(Slot {
            table: self.clone(),
            source,
        })
    }

    /// Leave to dial, unless `max` dials are under way already.
    pub(crate) fn dial(self: &Arc<Self>, max: usize) -> Option<Dial> {
        if self.dials.fetch_add(1, Ordering::Relaxed) >= max {
            self.dials.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Dial(self.clone()))
    }

    /// Connections open (counted from admission until their socket is closed).
    pub(crate) fn open(&self) -> usize {
        lock(&self.counts).total
    }

    pub(crate) fn insert(&self, remote: SocketAddr, conn: &Conn) {
        lock(&self.by_addr).insert(remote, conn.clone());
        lock(&self.by_id).insert(conn.id, conn.clone());
    }

    pub(crate) fn remove(&self, remote: SocketAddr, id: u64) {
        let mut by_addr = lock(&self.by_addr);
        if by_addr.get(&remote).is_some_and(|c| c.id == id) {
            by_addr.remove(&remote);
        }
        lock(&self.by_id).remove(&id);
    }

    pub(crate) fn by_addr(&self, remote: SocketAddr) -> Option<Conn> {
        lock(&self.by_addr)
            .get(&remote)
            .filter(|c| c.is_open())
            .cloned()
    }

    pub(crate) fn by_id(&self, id: u64) -> Option<Conn> {
        lock(&self.by_id).get(&id).filter(|c| c.is_open()).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
