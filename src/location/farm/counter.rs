//! Small shared counters: the highest nonce-count seen per digest nonce (RFC 7616 3.4.5), so
//! that a captured Authorization replayed to any instance of the farm is refused. One item
//! per counter on the first live owner of its key, raised by `add` or `gets` + `cas`; it
//! lives as long as the nonce does. A counter is not replicated: if its node dies, the
//! nonces it guarded become replayable on the next node only until they expire (at most
//! the nonce lifetime), and their owners answer a new challenge.

use super::Farm;
use crate::location::StoreError;
use crate::location::node::Write;

/// Rounds of read and compare-and-swap before a raise gives up as contended.
const ATTEMPTS: usize = 5;

impl Farm {
    /// Raise counter `name` to `value` when `value` is higher than what is stored (true), or
    /// leave it (false: the value was seen already). `name` is ours (hex), never a client's.
    pub(crate) async fn raise(&self, name: &str, value: u64, ttl: u32) -> Result<bool, StoreError> {
        let key = format!("{}nc:{name}", self.prefix);
        let unavailable = |why: String| StoreError::Unavailable(why);
        let Some(&node) = self.targets(&key).first() else {
            return Err(unavailable("no live memcached node".into()));
        };
        let node = &self.nodes[node];
        for _ in 0..ATTEMPTS {
            let current = node.gets(&key).await.map_err(|e| unavailable(e.0))?;
            let cas = match current {
                None => None,
                Some((stored, cas)) => {
                    // Unreadable counts as "seen everything": refuse rather than accept a replay.
                    let seen = std::str::from_utf8(&stored)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(u64::MAX);
                    if value <= seen {
                        return Ok(false);
                    }
                    Some(cas)
                }
            };
            let written = node
                .store(&key, value.to_string().as_bytes(), ttl, cas)
                .await
                .map_err(|e| unavailable(e.0))?;
            if let Write::Stored(_) = written {
                return Ok(true);
            }
            // Another instance raised it in between: read again.
        }
        Err(StoreError::Contended)
    }
}
