//! One memcached node: its client, a deadline on every call, and a circuit breaker.
//!
//! memcached has no fail-over of its own. A node that fails `FAILURES_TO_OPEN` calls in a row
//! is marked dead and skipped without paying its timeout on every request; after a backoff
//! one call is let through as a probe, and a success closes the breaker again. A node that
//! hangs (accepts, never answers) fails by the same deadline as one that is gone.
//!
//! Only the absence of an answer counts (a deadline passed, a connection failed): an error
//! answer (`SERVER_ERROR out of memory` from a node run with `-M` that is full,
//! `CLIENT_ERROR`, `ERROR`) fails that one call, which the client sees as a 500 with
//! Retry-After, but says the node is alive. Counting it would open the breaker on a living
//! node, move its keys to stand-ins and refill it at every flap.
//!
//! I/O goes through one pipelined meta-protocol connection per node ([`super::pipeline`]), or,
//! when configured, the memcache crate's async meta-protocol client (`memcache::exp`), one
//! client per node: placement is ours (see [`super::ring`]), never the crate's.

use super::pipeline::{Answer, Failure, Pipeline};
use memcache::exp::{AsyncMetaClient, Get, GetStatus, Meta, MetaClientBuilder, MutationStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that mark a node dead.
const FAILURES_TO_OPEN: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a conditional write answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// Stored; the item's new CAS when the node said it.
    Stored(Option<u64>),
    /// Someone else wrote first (CAS mismatch, or `add` of an existing key).
    Conflict,
    /// The item vanished between read and write.
    NotFound,
}

#[derive(Debug)]
struct Health {
    failures: u32,
    dead_until: Option<Instant>,
    backoff: Duration,
}

/// How this node is spoken to: our pipelined connection (the default), or the memcache
/// crate's pooled client (kept to measure one against the other).
enum Client {
    /// One connection per event-loop thread, each driven by its own thread.
    Pipelined(Vec<Pipeline>),
    Crate(AsyncMetaClient),
}

pub(crate) struct Node {
    pub(crate) addr: String,
    client: Client,
    timeout: Duration,
    health: Mutex<Health>,
    /// The memcached process last seen (`pid` and `time - uptime`): a change means the node
    /// restarted, empty.
    incarnation: Mutex<Option<String>>,
    /// Bumped when the node may have restarted (a new incarnation seen, or a call with no
    /// answer: a restart breaks the connection): a CAS value remembered under an older
    /// epoch is not used (memcached's CAS counter starts again in a new process).
    epoch: std::sync::atomic::AtomicU64,
}

/// The connection of the calling thread's event loop.
fn pick(pipelines: &[Pipeline]) -> &Pipeline {
    &pipelines[crate::clock::runtime_index() % pipelines.len()]
}

/// A failed call: why, and whether the node answered (with an error) or not at all.
#[derive(Debug, Clone)]
pub(crate) struct NodeError(pub(crate) String, pub(crate) Answered);

/// Did the node answer a failed call? Only `No` counts toward its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    /// An error answer: the node is alive.
    WithError,
    /// No answer: a deadline passed, a connection failed.
    No,
}

impl NodeError {
    pub(crate) fn lost(why: String) -> NodeError {
        NodeError(why, Answered::No)
    }

    fn from_pipeline(addr: &str, f: Failure) -> NodeError {
        match f {
            Failure::Refused(why) => NodeError(format!("{addr}: {why}"), Answered::WithError),
            Failure::Lost(why) => NodeError::lost(format!("{addr}: {why}")),
        }
    }

    /// The memcache crate's errors: `Server` and `Rejected` are answers.
    fn from_crate(addr: &str, e: memcache::exp::Error) -> NodeError {
        use memcache::exp::Error;
        let answered = match e {
            Error::Server(_) | Error::Rejected(_) => Answered::WithError,
            _ => Answered::No,
        };
        NodeError(format!("{addr}: {e}"), answered)
    }
}

impl Node {
    /// Prepare a client; no connection is made until the first call.
    pub(crate) async fn new(
        addr: &str,
        timeout: Duration,
        pipelined: bool,
        connections: usize,
    ) -> Result<Node, NodeError> {
        let client = if pipelined {
            let connect = timeout.max(Duration::from_millis(500));
            Client::Pipelined(
                (0..connections.max(1))
                    .map(|_| Pipeline::new(addr, connect))
                    .collect(),
            )
        } else {
            Client::Crate(
                MetaClientBuilder::new()
                    .connect_timeout(Some(timeout))
                    .io_timeout(Some(timeout))
                    .max_idle(64)
                    .connect_async(addr)
                    .await
                    .map_err(|e| NodeError::from_crate(addr, e))?,
            )
        };
        Ok(Node {
            addr: addr.to_owned(),
            client,
            timeout,
            health: Mutex::new(Health {
                failures: 0,
                dead_until: None,
                backoff: BACKOFF_MIN,
            }),
            incarnation: Mutex::new(None),
            epoch: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Record the outcome of a health probe made outside the data path.
    pub(crate) fn probed(&self, result: Result<(), NodeError>) {
        let _ = self.record(result);
    }

    /// Remember the process seen now; true when it differs from the one seen before (the
    /// node restarted since, so it is empty).
    pub(crate) fn new_incarnation(&self, seen: String) -> bool {
        let mut last = self.incarnation.lock().unwrap_or_else(|p| p.into_inner());
        let changed = last.as_ref().is_some_and(|l| *l != seen);
        *last = Some(seen);
        if changed {
            self.new_epoch();
        }
        changed
    }

    /// See [`Node::epoch`]'s field.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn new_epoch(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call be made now (breaker closed, or its backoff elapsed so a probe may go)?
    pub(crate) fn available(&self) -> bool {
        match self.health().dead_until {
            None => true,
            Some(t) => Instant::now() >= t,
        }
    }

    /// Is the node considered dead right now?
    pub(crate) fn is_dead(&self) -> bool {
        self.health().dead_until.is_some()
    }

    /// Mark the node dead now (e.g. it did not answer at start).
    pub(crate) fn mark_dead(&self) {
        let mut h = self.health();
        h.failures = h.failures.max(FAILURES_TO_OPEN);
        h.dead_until = Some(Instant::now() + h.backoff);
    }

    fn record<T>(&self, result: Result<T, NodeError>) -> Result<T, NodeError> {
        if let Err(NodeError(why, Answered::WithError)) = &result {
            // Alive: neither a failure nor a success for the breaker.
            tracing::debug!(node = %self.addr, error = %why, "memcached answered an error");
            return result;
        }
        let mut h = self.health();
        match &result {
            Ok(_) => {
                if h.dead_until.is_some() {
                    tracing::warn!(node = %self.addr, "memcached node is back");
                }
                h.failures = 0;
                h.dead_until = None;
                h.backoff = BACKOFF_MIN;
            }
            Err(e) => {
                self.new_epoch();
                h.failures += 1;
                if h.dead_until.is_some() {
                    h.backoff = (h.backoff * 2).min(BACKOFF_MAX);
                    h.dead_until = Some(Instant::now() + h.backoff);
                } else if h.failures >= FAILURES_TO_OPEN {
                    tracing::warn!(node = %self.addr, error = %e.0, "memcached node marked dead");
                    h.dead_until = Some(Instant::now() + h.backoff);
                }
            }
        }
        result
    }

    /// Run one call under the deadline and let its outcome drive the breaker.
    async fn call<T, Fut>(&self, fut: Fut) -> Result<T, NodeError>
    where
        Fut: std::future::Future<Output = Result<T, NodeError>>,
    {
        let started = std::time::Instant::now();
        let r = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(NodeError::lost(format!("{}: timed out", self.addr))),
        };
        let result = match &r {
            Ok(_) => "ok",
            Err(NodeError(_, Answered::WithError)) => "error",
            Err(_) => "lost",
        };
        crate::metrics::memcached(&self.addr, result, started.elapsed());
        self.record(r)
    }

    async fn piped<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, NodeError> {
        self.call(async {
            fut.await
                .map_err(|f| NodeError::from_pipeline(&self.addr, f))
        })
        .await
    }

    async fn crated<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, memcache::exp::Error>>,
    ) -> Result<T, NodeError> {
        self.call(async { fut.await.map_err(|e| NodeError::from_crate(&self.addr, e)) })
            .await
    }

    /// Read a value with its CAS token.
    pub(crate) async fn gets(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, NodeError> {
        let client = match &self.client {
            Client::Pipelined(p) => return self.piped(pick(p).get(key)).await,
            Client::Crate(c) => c,
        };
        let r = self
            .crated(client.run(Get::new(key).meta(Meta::NONE.cas())))
            .await?;
        match r.status {
            GetStatus::Hit => match (r.value, r.item.cas) {
                (Some(v), Some(cas)) => Ok(Some((v, cas))),
                _ => Err(NodeError(
                    format!("{}: hit without value or CAS", self.addr),
                    Answered::WithError,
                )),
            },
            _ => Ok(None),
        }
    }

    /// `add` (when `cas` is None) or `cas` a value with a TTL in seconds (at most 30 days).
    pub(crate) async fn store(
        &self,
        key: &str,
        value: &[u8],
        ttl: u32,
        cas: Option<u64>,
    ) -> Result<Write, NodeError> {
        let client = match &self.client {
            Client::Pipelined(p) => {
                return Ok(
                    match self
                        .piped(pick(p).store(key, value, ttl.max(1), cas))
                        .await?
                    {
                        Answer::Stored(cas) => Write::Stored(cas),
                        Answer::NotFound => Write::NotFound,
                        _ => Write::Conflict,
                    },
                );
            }
            Client::Crate(c) => c,
        };
        let set = client.set(key, value).ttl_raw(ttl.max(1)).return_cas();
        let set = match cas {
            Some(c) => set.compare_cas(c),
            None => set.add(),
        };
        let r = self.crated(set.send()).await?;
        Ok(match r.status {
            MutationStatus::Applied => Write::Stored(r.cas),
            MutationStatus::NotFound => Write::NotFound,
            _ => Write::Conflict,
        })
    }

    /// A round trip that changes nothing (health probe, start-up check).
    pub(crate) async fn ping(&self) -> Result<(), NodeError> {
        match &self.client {
            Client::Pipelined(p) => self.piped(pick(p).noop()).await,
            Client::Crate(c) => self.crated(c.noop()).await,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}
