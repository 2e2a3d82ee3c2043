//! One instance refills a node at a time (issue 12: every instance used to refill every node
//! that came back, each walking every key of the farm). The first instance to `add` a short
//! lease item on the node being refilled runs the refill; the others see the lease and wait;
//! when the refill is complete the holder marks the lease done, and the others stop. The
//! lease lives on the node itself, so a node that restarts empty loses it with everything
//! else and is refilled again; it expires by itself if its holder dies.

use super::Farm;
use crate::location::node::Write;

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
