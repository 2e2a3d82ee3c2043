//! Time and the event-loop index: a leaf that every layer may use and that imports nothing
//! of ours.
//!
//! - Unix time in seconds (binding expiry) and milliseconds.
//! - A hybrid logical clock that orders writes of several instances (the merge rule of the
//!   farm's replicas breaks ties with it).
//! - Which per-core event loop the calling thread drives: per-loop resources (one pipelined
//!   connection per memcached node and loop) are picked by it.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in seconds.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix time in milliseconds.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

static HLC: AtomicU64 = AtomicU64::new(0);

/// A hybrid logical clock (milliseconds): never behind the wall clock, never behind anything
/// this instance has seen (`seen`), strictly increasing here. Instances whose clocks are
/// roughly in sync order their writes by it; causally later writes always sort later.
pub fn hlc_stamp(seen: u64) -> u64 {
    let mut last = HLC.load(Ordering::Relaxed);
    loop {
        let next = now_millis().max(last + 1).max(seen + 1);
        match HLC.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

thread_local! {
    /// Which of the per-core runtimes this thread drives (0 for the first).
    static RUNTIME: Cell<usize> = const { Cell::new(0) };
}

/// The index of the runtime the calling thread drives.
pub fn runtime_index() -> usize {
    RUNTIME.with(|r| r.get())
}

/// Called once by each event-loop thread before it runs anything.
pub fn set_runtime_index(i: usize) {
    RUNTIME.with(|r| r.set(i));
}
