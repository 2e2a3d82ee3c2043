//! Leases: one instance does a piece of farm-wide work at a time.
//!
//! One instance refills a node at a time (issue 12: every instance used to refill every node
//! that came back, each walking every key of the farm). The first instance to `add` a short
//! lease item on the node being refilled runs the refill; the others see the lease and wait;
//! when the refill is complete the holder marks the lease done, and the others stop. The
//! lease lives on the node itself, so a node that restarts empty loses it with everything
//! else and is refilled again; it expires by itself if its holder dies.

use super::Farm;
use crate::clock::now_secs;
use crate::location::node::Write;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long a lease (running or done) holds without being renewed.
const LEASE_TTL: u32 = 30;

/// What the lease of a node says to this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lease {
    /// Ours (taken now, or already): refill.
    Mine,
    /// Another instance is refilling it.
    Busy,
    /// A refill of it completed less than `LEASE_TTL` ago.
    Done,
}

impl Farm {
    fn lease_key(&self) -> String {
        format!("{}lease:refill", self.prefix)
    }

    /// Take or read the refill lease of node `target`. When the node cannot be asked, Mine:
    /// a refill done twice beats none.
    pub(super) async fn refill_lease(&self, target: usize) -> Lease {
        let node = &self.nodes[target];
        let key = self.lease_key();
        let running = format!("run:{}", self.id);
        match node.store(&key, running.as_bytes(), LEASE_TTL, None).await {
            Ok(Write::Stored(_)) | Err(_) => return Lease::Mine,
            Ok(_) => {}
        }
        match node.gets(&key).await {
            Ok(Some((v, _))) if v == running.as_bytes() => Lease::Mine,
            Ok(Some((v, _))) if v.starts_with(b"done:") => Lease::Done,
            Ok(Some(_)) => Lease::Busy,
            // Gone meanwhile (expired): try again next pass.
            Ok(None) => Lease::Busy,
            Err(_) => Lease::Mine,
        }
    }

    /// A refill of `target` completed: the others need not run one.
    pub(super) async fn refill_done(&self, target: usize) {
        let node = &self.nodes[target];
        let key = self.lease_key();
        if let Ok(Some((_, cas))) = node.gets(&key).await {
            let done = format!("done:{}", self.id);
            let _ = node
                .store(&key, done.as_bytes(), LEASE_TTL, Some(cas))
                .await;
        }
    }
}

/// A farm-wide job that one instance at a time runs (the census, the renewal): first after
/// `first` (plus up to as much again, jittered, so that instances started together do not
/// race), then every `every`; after an incomplete pass the lease is given up and the job
/// offered again after `retry`, by whichever instance takes it.
pub(super) struct Periodic {
    /// The lease item's name, after `{prefix}lease:`.
    pub lease: &'static str,
    pub lease_ttl: u32,
    pub first: Duration,
    pub every: Duration,
    pub retry: Duration,
}

impl Farm {
    /// Run `work` on the schedule of `p` while this farm is in use (not retired by a
    /// reload), holding the lease; `work` says whether its pass was complete.
    pub(super) fn spawn_leased<W, F>(self: &Arc<Self>, p: Periodic, work: W)
    where
        W: Fn(Arc<Farm>) -> F + Send + 'static,
        F: Future<Output = bool> + Send,
    {
        let farm = self.clone();
        tokio::spawn(async move {
            let jitter = fastrand::u64(..=p.first.as_millis() as u64);
            let mut wait = p.first + Duration::from_millis(jitter);
            let lease = format!("{}lease:{}", farm.prefix, p.lease);
            while farm.pause(wait).await {
                wait = p.every;
                if farm.take_lease(&lease, p.lease_ttl).await && !work(farm.clone()).await {
                    farm.release_lease(&lease).await;
                    wait = p.retry;
                }
            }
        });
    }

    /// Is the lease item `key` (on the first live node) ours for `ttl` seconds? Taken with
    /// `add`; one found past the expiry its value names (planted, or left without a TTL) is
    /// taken over with its CAS, so that no stray item stops the work for good.
    async fn take_lease(&self, key: &str, ttl: u32) -> bool {
        let Some(node) = self.nodes.iter().find(|n| n.available()) else {
            return false;
        };
        let now = now_secs();
        let value = format!("{} {}", self.id, now + u64::from(ttl));
        let cas = match node.store(key, value.as_bytes(), ttl, None).await {
            Ok(Write::Stored(_)) => return true,
            Err(_) => return false,
            Ok(_) => match node.gets(key).await {
                Ok(Some((held, cas))) => {
                    let until = String::from_utf8_lossy(&held)
                        .rsplit(' ')
                        .next()
                        .and_then(|u| u.parse::<u64>().ok());
                    if until.is_some_and(|u| u > now && u <= now + u64::from(ttl)) {
                        return false;
                    }
                    cas
                }
                _ => return false,
            },
        };
        matches!(
            node.store(key, value.as_bytes(), ttl, Some(cas)).await,
            Ok(Write::Stored(_))
        )
    }

    /// Give the lease `key` up (the work was not complete: another instance may try soon).
    async fn release_lease(&self, key: &str) {
        let Some(node) = self.nodes.iter().find(|n| n.available()) else {
            return;
        };
        if let Ok(Some((held, cas))) = node.gets(key).await {
            if held.starts_with(format!("{} ", self.id).as_bytes()) {
                let _ = node.store(key, &held, 1, Some(cas)).await;
            }
        }
    }

    /// Sleep `d`, waking at once when the farm is retired (a reload): false then.
    async fn pause(&self, d: Duration) -> bool {
        let until = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < until {
            if self.retired() {
                return false;
            }
            let left = until - tokio::time::Instant::now();
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        }
        !self.retired()
    }
}
