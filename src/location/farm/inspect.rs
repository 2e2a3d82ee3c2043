//! What an operator sees of one AOR (`sipfarm location show`): each owner's replica as it is
//! stored, read one by one, and their merge, with whether they agree. Read only: nothing is
//! repaired here (a lookup or `location rm`/`add` writes through the usual CAS path).

use super::Farm;
use super::merge::merge;
use crate::clock::now_secs;
use crate::location::record::key;
use crate::location::{Aor, Record};
use std::collections::BTreeMap;

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

/// What `location dump` found: every AOR (its replicas merged), and the nodes that could not
/// be listed (then some AORs may be missing).
pub struct Dump {
    pub records: Vec<Record>,
    pub unlisted: Vec<String>,
}

/// Every record each node holds, by key: (node, record) for each copy, as stored; and the
/// nodes that could not be listed.
type Copies = (BTreeMap<String, Vec<(usize, Record)>>, Vec<String>);

impl Farm {
    /// Walk each node's keys (`lru_crawler metadump hash`) and read every record there.
    async fn copies(&self) -> Copies {
        use futures::StreamExt;
        let mut held: BTreeMap<String, Vec<(usize, Record)>> = BTreeMap::new();
        let mut unlisted = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let keys = match crate::location::admin::keys(&node.addr, &self.prefix, DUMP_LIST).await
            {
                Ok(k) => k,
                Err(e) => {
                    unlisted.push(format!("{}: {e}", node.addr));
                    continue;
                }
            };
            let found: Vec<(String, Record)> = futures::stream::iter(keys)
                .map(|k| async move {
                    let (value, _) = node.gets(&k).await.ok()??;
                    let r = crate::location::record::decode_any(&value).ok()?;
                    // The key is a hash of the AOR: a value under another key is not it.
                    (key(&self.prefix, &r.aor) == k).then_some((k, r))
                })
                .buffer_unordered(16)
                .filter_map(|r| async move { r })
                .collect()
                .await;
            for (k, r) in found {
                held.entry(k).or_default().push((i, r));
            }
        }
        (held, unlisted)
    }

    /// Every record in the farm, merged across replicas, expired entries pruned, empty ones
    /// left out; in AOR order.
    pub(crate) async fn dump(&self) -> Dump {
        let now = now_secs();
        let (held, unlisted) = self.copies().await;
        let mut records: Vec<Record> = held
            .into_values()
            .filter_map(|copies| {
                let aor = copies[0].1.aor.clone();
                let mut m = merge(copies.iter().map(|(_, r)| r), &aor);
                m.prune(now);
                (!m.bindings.is_empty()).then_some(m)
            })
            .collect();
        records.sort_by(|a, b| a.aor.cmp(&b.aor));
        Dump { records, unlisted }
    }
}

/// How long listing one node's keys may take for a dump.
const DUMP_LIST: std::time::Duration = std::time::Duration::from_secs(30);

/// One record `farm check` found wrong, and whether `--repair` mended it.
pub struct Finding {
    pub aor: String,
    pub problems: Vec<String>,
    pub repaired: bool,
}

/// What `farm check` found: the records seen, those with problems, the nodes not listed.
pub struct Check {
    pub records: usize,
    pub findings: Vec<Finding>,
    pub unlisted: Vec<String>,
}

impl Farm {
    /// Every record whose owners' replicas disagree, are missing on an owner, or sit on a node
    /// that is not an owner (a stand-in's copy, or a node list changed). With `repair`, the
    /// merge of every copy is written to each owner (CAS, as any write); once every owner
    /// holds it, the copies on other nodes are retired (see `retire_copy`).
    pub(crate) async fn check(&self, repair: bool) -> Check {
        let now = now_secs();
        let (mut held, unlisted) = self.copies().await;
        for copies in held.values_mut() {
            for (_, r) in copies.iter_mut() {
                r.prune(now);
            }
        }
        let records = held.len();
        let mut findings = Vec::new();
        for (k, copies) in held {
            let aor = copies[0].1.aor.clone();
            let mut merged = merge(copies.iter().map(|(_, r)| r), &aor);
            merged.prune(now);
            if merged.bindings.is_empty() {
                continue;
            }
            let owners: Vec<usize> = self.ring.walk(k.as_bytes()).take(self.replicas).collect();
            let mut problems = Vec::new();
            for o in &owners {
                match copies.iter().find(|(i, _)| i == o) {
                    None => problems.push(format!("missing on owner {}", self.nodes[*o].addr)),
                    Some((_, r)) if *r != merged => {
                        problems.push(format!("differs on owner {}", self.nodes[*o].addr))
                    }
                    Some(_) => {}
                }
            }
            let owners_ok = problems.is_empty();
            for (i, _) in copies.iter().filter(|(i, _)| !owners.contains(i)) {
                problems.push(format!("on {} (not an owner)", self.nodes[*i].addr));
            }
            if problems.is_empty() {
                continue;
            }
            let mut repaired =
                repair && (owners_ok || self.write_owners(&owners, &k, &mut merged).await);
            if repaired {
                for (i, _) in copies.iter().filter(|(i, _)| !owners.contains(i)) {
                    repaired &= self.retire_copy(*i, &k, &aor, &owners).await;
                }
            }
            findings.push(Finding {
                aor,
                problems,
                repaired,
            });
        }
        Check {
            records,
            findings,
            unlisted,
        }
    }

    /// Retire the copy of `key` on node `i`, which is not an owner, when it holds nothing the
    /// owners lack: it is rewritten, with the CAS it has now, to expire in a second. Both are
    /// read again here, under the key's lock: the walk may be minutes old, and an instance
    /// that sees an owner dead may have written there since as its stand-in (a copy that adds
    /// to the owners' merge is kept, for read repair or the next `--repair` to bring over; a
    /// write after this read makes the CAS fail, and stays). True when retired or gone.
    async fn retire_copy(&self, i: usize, key: &str, aor: &str, owners: &[usize]) -> bool {
        let _one_at_a_time = self.stripe(key).lock().await;
        let Ok((_, found)) = self.read(i, key, aor).await else {
            return false;
        };
        let Some((copy, cas)) = found else {
            return true;
        };
        let held = self.read_all(owners, key, aor).await;
        if held.len() < owners.len() {
            return false;
        }
        let now = now_secs();
        let mut theirs = merge(super::merge::readable(&held), aor);
        theirs.prune(now);
        let mut with_copy = merge(super::merge::readable(&held).chain([&copy]), aor);
        with_copy.prune(now);
        if with_copy != theirs {
            return false;
        }
        let mut copy = copy;
        let Ok(value) = crate::location::record::encode_fitting(&mut copy, self.item_limit) else {
            return false;
        };
        matches!(
            self.nodes[i].store(key, &value, 1, Some(cas)).await,
            Ok(crate::location::node::Write::Stored(_) | crate::location::node::Write::NotFound)
        )
    }

    /// Write `merged` on every owner, with the CAS each gave back now: true when all stored.
    async fn write_owners(&self, owners: &[usize], key: &str, merged: &mut Record) -> bool {
        let _one_at_a_time = self.stripe(key).lock().await;
        let aor = merged.aor.clone();
        let mut replicas = Vec::new();
        for o in owners {
            match self.read(*o, key, &aor).await {
                Ok(r) => replicas.push(r),
                Err(_) => return false,
            }
        }
        // Whatever an owner holds now joins the merge (it may have changed meanwhile).
        let mut all: Vec<&Record> = vec![merged];
        all.extend(
            replicas
                .iter()
                .filter_map(|(_, r)| r.as_ref().map(|(r, _)| r)),
        );
        let mut record = merge(all, &aor);
        let Ok(answers) = self
            .write_all(&replicas, key, &mut record, now_secs())
            .await
        else {
            return false;
        };
        answers
            .iter()
            .all(|a| matches!(a, Ok(crate::location::node::Write::Stored(_))))
    }
}
