//! A value swapped whole by a reload (SIGHUP): the users file, the limits, the memcached farm.
//!
//! Readers take the current value as an `Arc` and keep it for as long as they work with it
//! (a request, a connection, one store operation): they never see half of an old value and
//! half of a new one, and a swap never waits for them. The lock is held only to clone or
//! replace the `Arc`, so a reader never waits on a writer's work either.

use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(RwLock::new(Arc::new(value)))
    }

    /// Start with an already shared value.
    pub fn new_arc(value: Arc<T>) -> Live<T> {
        Live(RwLock::new(value))
    }

    /// The value now.
    pub fn get(&self) -> Arc<T> {
        // A panic while the lock was held cannot leave a half-swapped Arc: use it as it is.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Put `value` in place; the one it replaces (still used by whoever holds it).
    pub fn set(&self, value: T) -> Arc<T> {
        self.set_arc(Arc::new(value))
    }

    /// Put an already shared value in place; the one it replaces.
    pub fn set_arc(&self, value: Arc<T>) -> Arc<T> {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *slot, value)
    }
}

/// A copy holds the value now, and is swapped on its own from then on.
impl<T> Clone for Live<T> {
    fn clone(&self) -> Live<T> {
        Live::new_arc(self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_what_they_took() {
        let live = Live::new(1);
        let before = live.get();
        assert_eq!(*live.set(2), 1);
        assert_eq!((*before, *live.get()), (1, 2));
    }
}
