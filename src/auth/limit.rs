//! Failed authentication attempts: RFC 3261 26.1.5 and RFC 7616 5.2 (a server should slow
//! down guessing of passwords), counted per source address and per user.
//!
//! Why this shape: a phone with a mistyped password retries at its registration pace, a few
//! times a minute, and must not be locked out by that; a guesser sends many attempts a
//! minute. So failures are counted over a sliding minute (six buckets of ten seconds: the
//! window is between 50 and 60 s long, so `max_per_minute` failures evenly spread over a
//! minute never block) and a key over the limit is blocked for a while. Attempts while
//! blocked are not counted, so that a blocked phone's retries do not extend its block.
//! IPv6 sources are counted per /64 (one site holds a whole /64 and could rotate through
//! it); IPv4-mapped IPv6 addresses count as their IPv4 address. Memory is bounded: when the
//! table is full, idle entries go first, then the least recently failing (blocked ones last).
//!
//! Callers record failures of credentials that were checked and wrong, not the first
//! unauthenticated request of a dialog nor a stale nonce.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

const BUCKETS: usize = 6;
const BUCKET_MS: u64 = 10_000;
/// User keys longer than this are cut (at a character boundary) before they are stored.
pub(crate) const MAX_USER_KEY: usize = 256;
/// IPv6 sources are counted per network of this prefix length.
pub(crate) const IPV6_PREFIX: u8 = 64;

/// A key that has just become blocked: the address (network), the user, or both, until
/// `until` (Unix ms). Its `Display` names them for one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    pub(crate) addr: Option<IpNet>,
    pub(crate) user: Option<String>,
    pub(crate) until: u64,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sep = "";
        match &self.addr {
            Some(IpNet::V4(n)) => write!(f, "address {}", n.addr())?,
            Some(n) => write!(f, "network {n}")?,
            None => {}
        }
        if self.addr.is_some() {
            sep = " and ";
        }
        if let Some(u) = &self.user {
            write!(f, "{sep}user {u:?}")?; // escaped: the name comes from the network
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpNet),
    User(Box<str>),
}

/// One key's failures: `counts[0]` is the bucket of index `newest` (time / 10 s).
#[derive(Debug)]
struct Entry {
    newest: u64,
    counts: [u32; BUCKETS],
    blocked_until: u64,
    last_ms: u64,
}

impl Entry {
    fn new(now_ms: u64) -> Entry {
        Entry {
            newest: now_ms / BUCKET_MS,
            counts: [0; BUCKETS],
            blocked_until: 0,
            last_ms: now_ms,
        }
    }

    /// Move the window to `bucket`; a clock going back counts in the newest bucket.
    fn advance(&mut self, bucket: u64) {
        if bucket <= self.newest {
            return;
        }
        let shift = bucket - self.newest;
        if shift >= BUCKETS as u64 {
            self.counts = [0; BUCKETS];
        } else {
            let s = shift as usize;
            self.counts.rotate_right(s);
            self.counts[..s].fill(0);
        }
        self.newest = bucket;
    }

    fn total(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    fn blocked(&self, now_ms: u64) -> bool {
        self.blocked_until > now_ms
    }

    /// Not blocked and nothing left in the window: forgetting it changes nothing.
    fn idle(&self, now_ms: u64) -> bool {
        !self.blocked(now_ms) && now_ms / BUCKET_MS >= self.newest.saturating_add(BUCKETS as u64)
    }
}

struct Table {
    entries: HashMap<Key, Entry>,
    capacity: usize,
}

impl Table {
    /// One failure for `key`; true when it has just become blocked.
    fn fail(&mut self, key: Key, now_ms: u64, max: u32, block_ms: u64) -> bool {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.make_room(now_ms);
        }
        let e = self
            .entries
            .entry(key)
            .or_insert_with(|| Entry::new(now_ms));
        e.last_ms = e.last_ms.max(now_ms);
        if e.blocked(now_ms) {
            return false;
        }
        e.advance(now_ms / BUCKET_MS);
        e.counts[0] = e.counts[0].saturating_add(1);
        if e.total() <= u64::from(max) {
            return false;
        }
        e.blocked_until = now_ms.saturating_add(block_ms);
        e.counts = [0; BUCKETS]; // a fresh allowance once the block ends
        true
    }

    fn blocked(&self, key: &Key, now_ms: u64) -> bool {
        self.entries.get(key).is_some_and(|e| e.blocked(now_ms))
    }

    /// Down to 7/8 of the capacity: idle entries first, then the least recently failing,
    /// blocked entries last. Linear, and run once per capacity/8 new keys.
    fn make_room(&mut self, now_ms: u64) {
        self.entries.retain(|_, e| !e.idle(now_ms));
        let target = (self.capacity - self.capacity / 8).min(self.capacity - 1);
        let Some(count) = self.entries.len().checked_sub(target).filter(|&c| c > 0) else {
            return;
        };
        let rank = |e: &Entry| (e.blocked(now_ms), e.last_ms);
        let mut ranks: Vec<(bool, u64)> = self.entries.values().map(rank).collect();
        let threshold = *ranks.select_nth_unstable(count - 1).1;
        let below = ranks.iter().filter(|&&r| r < threshold).count();
        let mut ties = count - below;
        self.entries.retain(|_, e| {
            let r = rank(e);
            let drop_tie = r == threshold && ties > 0;
            if drop_tie {
                ties -= 1;
            }
            r > threshold || (r == threshold && !drop_tie)
        });
    }
}

/// Failed attempts per source address and per user, shared by the event loops.
pub(crate) struct FailureLimiter {
    max: u32,
    block_ms: u64,
    table: Mutex<Table>,
}

impl FailureLimiter {
    /// Block a key for `block` when it fails more than `max_per_minute` times within a
    /// minute; at most `capacity` keys (addresses and users together) are remembered.
    pub(crate) fn new(max_per_minute: u32, block: Duration, capacity: usize) -> FailureLimiter {
        FailureLimiter {
            max: max_per_minute,
            block_ms: u64::try_from(block.as_millis()).unwrap_or(u64::MAX),
            table: Mutex::new(Table {
                entries: HashMap::new(),
                capacity: capacity.max(1),
            }),
        }
    }

    /// Record one failure from `ip` for `user` (best `user@realm`; empty: the address only).
    /// `Some` exactly once per block: when the address, the user or both become blocked.
    pub(crate) fn failed(&self, ip: IpAddr, user: &str, now_ms: u64) -> Option<Blocked> {
        let addr = addr_key(ip);
        let user = user_key(user);
        let mut table = self.lock();
        let addr_now = table.fail(Key::Addr(addr), now_ms, self.max, self.block_ms);
        let user_now =
            user.is_some_and(|u| table.fail(Key::User(u.into()), now_ms, self.max, self.block_ms));
        (addr_now || user_now).then(|| Blocked {
            addr: addr_now.then_some(addr),
            user: user.filter(|_| user_now).map(str::to_owned),
            until: now_ms.saturating_add(self.block_ms),
        })
    }

    /// Is the address (network) or the user blocked?
    pub(crate) fn is_blocked(&self, ip: IpAddr, user: &str, now_ms: u64) -> bool {
        let table = self.lock();
        table.blocked(&Key::Addr(addr_key(ip)), now_ms)
            || user_key(user).is_some_and(|u| table.blocked(&Key::User(u.into()), now_ms))
    }

    #[cfg(test)]
    /// How many keys are remembered.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Never held across an await; a panic elsewhere while holding it leaves counters that
    /// are still usable, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// IPv4 per address, IPv6 per /64, IPv4-mapped IPv6 as IPv4.
fn addr_key(ip: IpAddr) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::from(a)),
        IpAddr::V6(a) => Ipv6Net::new(a, IPV6_PREFIX)
            .map_or(IpNet::from(IpAddr::V6(a)), |n| IpNet::V6(n.trunc())),
    }
}

/// The user cut to [`MAX_USER_KEY`] bytes; `None` when empty.
fn user_key(user: &str) -> Option<&str> {
    if user.is_empty() {
        return None;
    }
    let mut end = user.len().min(MAX_USER_KEY);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    Some(&user[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const T0: u64 = 1_760_000_000_000;
    const MINUTE: Duration = Duration::from_secs(60);

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn max_per_minute_is_allowed_and_the_next_blocks_once() {
        let l = FailureLimiter::new(10, MINUTE, 100);
        for i in 0..10 {
            assert_eq!(l.failed(v4(1), "alice@example.com", T0 + i), None);
        }
        assert!(!l.is_blocked(v4(1), "alice@example.com", T0 + 10));
        let b = l.failed(v4(1), "alice@example.com", T0 + 10).unwrap();
        assert_eq!(b.until, T0 + 10 + 60_000);
        assert_eq!(
            b.to_string(),
            "address 10.0.0.1 and user \"alice@example.com\""
        );
        for i in 11..100 {
            assert_eq!(l.failed(v4(1), "alice@example.com", T0 + i), None, "once");
        }
        assert!(l.is_blocked(v4(1), "", T0 + 1000));
        assert!(l.is_blocked(v4(2), "alice@example.com", T0 + 1000));
        assert!(!l.is_blocked(v4(2), "bob@example.com", T0 + 1000));
        let end = T0 + 10 + 60_000;
        assert!(l.is_blocked(v4(1), "alice@example.com", end - 1));
        assert!(!l.is_blocked(v4(1), "alice@example.com", end));
        for i in 0..10 {
            assert_eq!(
                l.failed(v4(1), "alice@example.com", end + i),
                None,
                "fresh allowance"
            );
        }
    }

    #[test]
    fn a_steady_retrying_phone_is_never_blocked() {
        let l = FailureLimiter::new(10, MINUTE, 100);
        for i in 0..1000 {
            let now = T0 + i * 6_000; // 10 a minute, for 100 minutes
            assert_eq!(l.failed(v4(1), "alice", now), None, "failure {i}");
        }
        let faster = FailureLimiter::new(10, MINUTE, 100);
        let blocked: Vec<u64> = (0..11)
            .filter(|i| faster.failed(v4(1), "", T0 + i * 5_900).is_some())
            .collect();
        assert_eq!(blocked, vec![10], "11 within 59 s");
    }

    #[test]
    fn users_and_networks() {
        let l = FailureLimiter::new(10, MINUTE, 100);
        for i in 0..10 {
            assert_eq!(l.failed(v4(i), "alice", T0), None);
        }
        let b = l.failed(v4(10), "alice", T0).unwrap();
        assert_eq!((b.addr, b.user.as_deref()), (None, Some("alice")));
        let net = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last));
        for i in 0..10 {
            assert_eq!(l.failed(net(i), "", T0), None);
        }
        let b = l.failed(net(99), "", T0).unwrap();
        assert_eq!(b.to_string(), "network 2001:db8::/64");
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1));
        assert!(!l.is_blocked(other, "", T0));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        for _ in 0..11 {
            l.failed(mapped, "", T0);
        }
        assert!(l.is_blocked(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), "", T0));
        assert!(!l.is_blocked(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), "", T0));
        let long = "é".repeat(MAX_USER_KEY);
        assert_eq!(user_key(&long).map(str::len), Some(MAX_USER_KEY));
    }

    #[test]
    fn memory_is_bounded() {
        let l = FailureLimiter::new(10, 10 * MINUTE, 1000);
        for i in 0..100_000u32 {
            let user = if i % 100 == 0 {
                "alice".to_owned()
            } else {
                format!("u{i}")
            };
            l.failed(v4(i), &user, T0 + u64::from(i));
            assert!(l.len() <= 1000, "after {i}: {}", l.len());
        }
        assert!(
            l.is_blocked(v4(1_000_000), "alice", T0 + 100_000),
            "blocked kept"
        );
        let idle = T0 + 100_000 + 120_000;
        l.failed(v4(1_000_001), "", idle);
        assert!(l.len() <= 1000);
    }
}
