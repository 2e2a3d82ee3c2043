//! What an operator sees of one AOR (`sipfarm location show`): each owner's replica as it is
//! stored, read one by one, and their merge, with whether they agree. Read only: nothing is
//! repaired here (a lookup or `location rm`/`add` writes through the usual CAS path).

use super::Farm;
use super::merge::merge;
use crate::clock::now_secs;
use crate::location::record::key;
use crate::location::{Aor, Record};

/// One owner's replica: its node, and what it holds (None: nothing; Err: why it could not
/// be read).
pub struct ReplicaView {
    pub node: String,
    pub held: Result<Option<Record>, String>,
}

pub struct Inspection {
    /// The key's R owners on the ring, in ring order (the first R nodes, dead or alive).
    pub owners: Vec<ReplicaView>,
    /// The merge of what they hold (expired entries pruned), as a lookup would see it.
    pub merged: Record,
    /// Every owner answered and holds the same thing.
    pub agree: bool,
}

impl Farm {
    pub(crate) async fn inspect(&self, aor: &Aor) -> Inspection {
        let key = key(&self.prefix, aor.as_str());
        let now = now_secs();
        let owners: Vec<usize> = self.ring.walk(key.as_bytes()).take(self.replicas).collect();
        let mut views = Vec::new();
        for i in owners {
            let held = match self.read(i, &key, aor.as_str()).await {
                Ok((_, found)) => Ok(found.map(|(mut r, _)| {
                    r.prune(now);
                    r
                })),
                Err(e) => Err(e.0),
            };
            views.push(ReplicaView {
                node: self.nodes[i].addr.clone(),
                held,
            });
        }
        let held: Vec<&Record> = views
            .iter()
            .filter_map(|v| v.held.as_ref().ok().and_then(Option::as_ref))
            .collect();
        let mut merged = merge(held.iter().copied(), aor.as_str());
        merged.prune(now);
        let empty = Record::new(aor);
        let agree = views.iter().all(|v| match &v.held {
            Ok(Some(r)) => *r == merged,
            Ok(None) => merged.bindings.is_empty() || merged == empty,
            Err(_) => false,
        });
        Inspection {
            owners: views,
            merged,
            agree,
        }
    }
}
