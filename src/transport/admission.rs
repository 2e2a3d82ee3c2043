//! Admission control before any work is done on a datagram: a per-source request rate, like
//! Kamailio's pike, and a per-source bound on requests being handled at once. A source over
//! either is dropped at the socket, before parsing, so that one flooding address costs a
//! hash lookup per packet. The second bound matters most: requests wait for the event loop
//! first come, first served, so without it a flooder's admitted requests would queue ahead
//! of everyone else's; with it, a legitimate request waits behind at most that many.
//! Trusted networks (gateways, carriers) are exempt from both.

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const SHARDS: usize = 16;
/// Sources remembered per shard; a full shard forgets its idle sources first.
const PER_SHARD: usize = 4096;

/// A token bucket per source address: `rate` per second, bursts up to twice that.
pub(crate) struct SourceRate {
    /// Requests per second (changed live by a reload, like `max_in_flight`).
    rate: AtomicU64,
    max_in_flight: AtomicU32,
    exempt: Vec<IpNet>,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Thousandths of a request.
    tokens: u64,
    last_ms: u64,
    /// Requests of this source being handled now.
    in_flight: u32,
}

/// One admitted request of a source; dropping it frees the source's place.
pub(crate) struct Ticket {
    admission: std::sync::Arc<SourceRate>,
    ip: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut shard = self.admission.shards[shard_of(ip)]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(b) = shard.get_mut(&ip) {
                b.in_flight = b.in_flight.saturating_sub(1);
            }
        }
    }
}

impl SourceRate {
    pub(crate) fn new(rate: u32, max_in_flight: u32, exempt: Vec<IpNet>) -> SourceRate {
        SourceRate {
            rate: AtomicU64::new(u64::from(rate.max(1))),
            max_in_flight: AtomicU32::new(max_in_flight.max(1)),
            exempt,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// New bounds (SIGHUP): buckets keep their tokens, capped by the new burst at their next
    /// request.
    pub(crate) fn set_limits(&self, rate: u32, max_in_flight: u32) {
        self.rate.store(u64::from(rate.max(1)), Ordering::Relaxed);
        self.max_in_flight
            .store(max_in_flight.max(1), Ordering::Relaxed);
    }

    /// May a request from `ip` be handled now? Its ticket, held while it is handled.
    pub(crate) fn enter(self: &std::sync::Arc<Self>, ip: IpAddr, now_ms: u64) -> Option<Ticket> {
        let ip = ip.to_canonical();
        if self.exempt.iter().any(|n| n.contains(&ip)) {
            return Some(Ticket {
                admission: self.clone(),
                ip: None,
            });
        }
        if !self.take(ip, now_ms, true) {
            return None;
        }
        Some(Ticket {
            admission: self.clone(),
            ip: Some(ip),
        })
    }

    /// May a datagram from `ip` that is handled at once (a response) be read? Rate only.
    pub(crate) fn allow(&self, ip: IpAddr, now_ms: u64) -> bool {
        let ip = ip.to_canonical();
        self.exempt.iter().any(|n| n.contains(&ip)) || self.take(ip, now_ms, false)
    }

    /// One token of `ip`'s bucket, and with `hold` a place among its requests in flight.
    fn take(&self, ip: IpAddr, now_ms: u64, hold: bool) -> bool {
        let rate = self.rate.load(Ordering::Relaxed);
        let burst = rate * 2 * 1000;
        let i = shard_of(ip);
        let mut shard = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= PER_SHARD && !shard.contains_key(&ip) {
            forget_idle(&mut shard, now_ms, rate);
        }
        let b = shard.entry(ip).or_insert(Bucket {
            tokens: burst,
            last_ms: now_ms,
            in_flight: 0,
        });
        let refill = now_ms.saturating_sub(b.last_ms) * rate;
        b.tokens = (b.tokens + refill).min(burst);
        b.last_ms = now_ms;
        if b.tokens < 1000 || (hold && b.in_flight >= self.max_in_flight.load(Ordering::Relaxed)) {
            return false;
        }
        b.tokens -= 1000;
        if hold {
            b.in_flight += 1;
        }
        true
    }
}

fn shard_of(ip: IpAddr) -> usize {
    let h = match ip {
        IpAddr::V4(v4) => u32::from(v4) as u64,
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64 ^ u128::from(v6) as u64,
    };
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
}

/// Drop sources whose bucket would be full again (they lose nothing by being forgotten);
/// if none is, the shard starts over (fail open: a forgotten flooder gets one burst).
fn forget_idle(shard: &mut HashMap<IpAddr, Bucket>, now_ms: u64, rate: u64) {
    let full_after_ms = 2000;
    shard.retain(|_, b| {
        b.in_flight > 0 || now_ms.saturating_sub(b.last_ms) * rate < full_after_ms * rate
    });
    if shard.len() >= PER_SHARD {
        shard.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_per_source() {
        let r = std::sync::Arc::new(SourceRate::new(1000, 3, vec![]));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<Ticket> = (0..10).filter_map(|_| r.enter(a, 1_000)).collect();
        assert_eq!(held.len(), 3, "three at once");
        assert!(r.enter("192.0.2.9".parse().unwrap(), 1_000).is_some());
        drop(held);
        assert!(r.enter(a, 1_000).is_some(), "places freed");
    }

    #[test]
    fn rate_and_burst_per_source() {
        let r = SourceRate::new(100, 1 << 20, vec!["10.0.0.0/8".parse().unwrap()]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let allowed = (0..1000).filter(|_| r.allow(a, 5_000)).count();
        assert_eq!(allowed, 200, "a burst of twice the rate");
        assert!(r.allow(b, 5_000), "another source is not affected");
        // One second later: 100 more.
        let allowed = (0..1000).filter(|_| r.allow(a, 6_000)).count();
        assert_eq!(allowed, 100);
        let trusted: IpAddr = "10.1.2.3".parse().unwrap();
        assert!((0..10_000).all(|_| r.allow(trusted, 5_000)));
    }

    #[test]
    fn memory_is_bounded() {
        let r = SourceRate::new(10, 1 << 20, vec![]);
        for i in 0..200_000u32 {
            r.allow(IpAddr::from(i.to_be_bytes()), 1_000);
        }
        let total: usize = r.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * PER_SHARD, "{total}");
    }
}
