//! The TCP flows this instance holds for registered UAs (RFC 5626 5.3): which AORs registered
//! over which connection, so that when the connection closes their bindings on it are marked
//! closed at once, for every instance (see [`crate::registrar::flow::flow_closed`]), instead
//! of being routed to a flow that is gone until they expire (Kamailio's usrloc has
//! `handle_lost_tcp` for the same).
//!
//! Bounded like everything a peer can grow: at most [`PER_CONNECTION`] AORs per connection
//! (a phone registers one or a few lines) and one entry per connection the instance may
//! hold; past that a registration is simply not tracked, and its bindings expire as usual.

use crate::sip::uri::Aor;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// AORs remembered for one connection.
const PER_CONNECTION: usize = 8;

pub(crate) struct TcpFlows {
    by_remote: Mutex<HashMap<SocketAddr, Vec<Aor>>>,
    /// `limits.max_connections`, changed live by a reload.
    max_connections: AtomicUsize,
}

impl TcpFlows {
    pub(crate) fn new(max_connections: usize) -> TcpFlows {
        TcpFlows {
            by_remote: Mutex::new(HashMap::new()),
            max_connections: AtomicUsize::new(max_connections),
        }
    }

    /// One entry per connection the instance may hold: `max_connections` (SIGHUP).
    pub(crate) fn set_max_connections(&self, max_connections: usize) {
        self.max_connections
            .store(max_connections, Ordering::Relaxed);
    }

    /// A REGISTER for `aor` over the connection from `remote` was answered; `holds`: bindings
    /// registered over it remain.
    pub(crate) fn registered(&self, remote: SocketAddr, aor: &Aor, holds: bool) {
        let mut map = self.lock();
        if !holds {
            if let Some(list) = map.get_mut(&remote) {
                list.retain(|a| a != aor);
                if list.is_empty() {
                    map.remove(&remote);
                }
            }
            return;
        }
        if !map.contains_key(&remote) && map.len() >= self.max_connections.load(Ordering::Relaxed) {
            return;
        }
        let list = map.entry(remote).or_default();
        if !list.contains(aor) && list.len() < PER_CONNECTION {
            list.push(aor.clone());
        }
    }

    /// The connection from `remote` closed: the AORs that had bindings on it.
    pub(crate) fn closed(&self, remote: SocketAddr) -> Vec<Aor> {
        self.lock().remove(&remote).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Aor>>> {
        self.by_remote.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_forgotten() {
        let f = TcpFlows::new(2);
        let r1: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let r2: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let r3: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let aor = |i: usize| Aor::from_uri(&format!("sip:u{i}@example.test")).unwrap();
        for i in 0..20 {
            f.registered(r1, &aor(i), true);
        }
        f.registered(r1, &aor(0), true);
        f.registered(r2, &aor(0), true);
        f.registered(r3, &aor(0), true);
        assert_eq!(f.closed(r1).len(), PER_CONNECTION);
        assert!(f.closed(r3).is_empty(), "past max_connections: not tracked");
        f.registered(r2, &aor(0), false);
        assert!(f.closed(r2).is_empty(), "unregistered");
        assert!(f.closed(r1).is_empty(), "closed once");
    }
}
