//! The embedded store: one process, no dependencies. The default, so that `sipfarm serve`
//! starts with nothing else installed; bindings are lost when the process stops.

use super::{LocationStore, Record, StoreError};
use crate::clock::now_secs;
use crate::sip::uri::Aor;
use std::collections::HashMap;
use std::sync::Mutex;

/// Bindings in a hash map behind a mutex. The lock is held only while the (synchronous)
/// registrar rule runs, never across an await, so one update per AOR at a time is given.
#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, Record>>,
    /// Counters (highest nonce-count per nonce): value, its transaction, expiry (Unix s).
    counters: Mutex<HashMap<String, (u64, u64, u64)>>,
}

/// Most counters kept at once; past it, expired ones go first, then everything (a flood of
/// fresh nonces must not grow memory without bound; a lost counter only means a new
/// challenge for its nonce's owner).
const MAX_COUNTERS: usize = 1 << 20;

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Drop expired bindings and empty records; run periodically so that users who never
    /// come back do not hold memory forever.
    pub fn sweep(&self) -> usize {
        let now = now_secs();
        let mut records = lock(&self.records);
        records.retain(|_, r| {
            r.prune(now);
            !r.bindings.is_empty()
        });
        let n = records.len();
        drop(records);
        lock(&self.counters).retain(|_, (_, _, until)| *until > now);
        n
    }

    /// AORs with a live binding, and live bindings (the metrics' census, exact here).
    pub(crate) fn census(&self) -> (u64, u64) {
        let now = now_secs();
        let records = lock(&self.records);
        records.values().fold((0, 0), |(aors, bindings), r| {
            let n = r.live(now).count() as u64;
            (aors + u64::from(n > 0), bindings + n)
        })
    }

    /// Raise counter `name` to `value` for transaction `tx` (see `Store::raise`).
    pub(crate) fn raise(&self, name: &str, value: u64, tx: u64, ttl: u32) -> bool {
        let now = now_secs();
        let mut counters = lock(&self.counters);
        if counters.len() >= MAX_COUNTERS {
            counters.retain(|_, (_, _, until)| *until > now);
            if counters.len() >= MAX_COUNTERS {
                counters.clear();
            }
        }
        let until = now + u64::from(ttl);
        match counters.get_mut(name) {
            Some((seen, seen_tx, expiry)) if *expiry > now => {
                if value < *seen || (value == *seen && tx != *seen_tx) {
                    return false;
                }
                *seen = value;
                *seen_tx = tx;
                *expiry = until;
            }
            _ => {
                counters.insert(name.to_owned(), (value, tx, until));
            }
        }
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocationStore for MemoryStore {
    async fn update<T, E, F>(&self, aor: &Aor, mut change: F) -> Result<Result<T, E>, StoreError>
    where
        T: Send,
        E: Send,
        F: FnMut(&mut Record, u64) -> Result<T, E> + Send,
    {
        let now = now_secs();
        let mut records = lock(&self.records);
        let mut record = records
            .get(aor.as_str())
            .cloned()
            .unwrap_or_else(|| Record::new(aor));
        record.prune(now);
        let outcome = change(&mut record, now);
        if outcome.is_ok() {
            if record.bindings.is_empty() {
                records.remove(aor.as_str());
            } else {
                records.insert(aor.as_str().to_owned(), record);
            }
        }
        Ok(outcome)
    }

    async fn lookup(&self, aor: &Aor) -> Result<Option<Record>, StoreError> {
        let now = now_secs();
        let records = lock(&self.records);
        Ok(records.get(aor.as_str()).map(|r| {
            let mut r = r.clone();
            r.prune(now);
            r
        }))
    }
}
