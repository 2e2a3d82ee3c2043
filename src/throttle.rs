//! Log lines about dropped input, throttled: a sender must not be able to write the log at
//! packet rate (2,000 garbage datagrams must not become 2,000 lines). Each kind of event
//! logs at most once per interval; the line carries how many were suppressed before it.
//! A leaf: imports nothing of ours.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Interval between two lines of one kind.
const INTERVAL_MS: u64 = 10_000;

/// One kind of event (a `static` per log site).
pub(crate) struct Throttle {
    /// When the last line was let through (Unix ms; 0: never).
    last: AtomicU64,
    /// Events not logged since.
    suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) const fn new() -> Throttle {
        Throttle {
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Some(events suppressed since the last line) when this one may be logged; None (and
    /// counted) otherwise.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(now_millis())
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= INTERVAL_MS;
        if due
            && self
                .last
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Log through a throttle of this call site's own: `throttled_info!(field = value, "text")`
/// (and `throttled_warn!`), the line carrying `suppressed`: how many were not logged.
macro_rules! throttled_info {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::throttle::Throttle = $crate::throttle::Throttle::new();
        if let Some(suppressed) = THROTTLE.allow() {
            tracing::info!(suppressed, $($arg)+);
        }
    }};
}
macro_rules! throttled_warn {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::throttle::Throttle = $crate::throttle::Throttle::new();
        if let Some(suppressed) = THROTTLE.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}
pub(crate) use {throttled_info, throttled_warn};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count() {
        let t = Throttle::new();
        assert_eq!(t.allow_at(1_000), Some(0));
        for i in 0..1999 {
            assert_eq!(t.allow_at(1_000 + i), None);
        }
        assert_eq!(t.allow_at(1_000 + INTERVAL_MS), Some(1999));
        assert_eq!(t.allow_at(1_001 + INTERVAL_MS), None);
    }
}
