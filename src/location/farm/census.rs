//! The census: how many AORs are registered in the farm and how many bindings they hold
//! (Prometheus `sipfarm_registrations`, `sipfarm_bindings`), which no counter of one instance
//! can know. Every `CENSUS_EVERY` (15 minutes: the listing competes with refills for
//! memcached's one crawler) one instance (a lease item on the first live node) lists
//! every node's keys (`lru_crawler metadump hash`), reads a random sample of at most `SAMPLE`
//! of them on that node, and scales what the sample holds to the node's key count; the sum
//! over the nodes, divided by R (each record lives on R nodes), is written on every node
//! for every instance to read at scrape. An estimate: exact while a node holds fewer than
//! `SAMPLE` keys, within a few percent beyond.

use super::Farm;
use super::lease::Periodic;
use crate::clock::now_secs;
use crate::location::admin;
use crate::location::record;
use std::sync::Arc;
use std::time::Duration;

const CENSUS_EVERY: Duration = Duration::from_secs(900);
/// After an incomplete census, the next attempt (by any instance).
const CENSUS_RETRY: Duration = Duration::from_secs(60);
/// The first census after start (plus up to as much again, jittered).
const FIRST_AFTER: Duration = Duration::from_secs(3);
/// Keys read per node and census.
const SAMPLE: usize = 200;
const LEASE_TTL: u32 = 880;
/// The result outlives two missed censuses.
const RESULT_TTL: u32 = 2700;
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the census found: AORs with a live binding, live bindings, when (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub registrations: u64,
    pub bindings: u64,
    pub at: u64,
}

impl Farm {
    fn census_key(&self) -> String {
        format!("{}census", self.prefix)
    }

    /// Offer to take the census now and every `CENSUS_EVERY`.
    pub(crate) fn spawn_census(self: &Arc<Self>) {
        let every = Periodic {
            lease: "census",
            lease_ttl: LEASE_TTL,
            first: FIRST_AFTER,
            every: CENSUS_EVERY,
            retry: CENSUS_RETRY,
        };
        self.spawn_leased(every, |farm| async move {
            let Some(c) = farm.take_census().await else {
                // Counted low is worse than not counted: the last census stays.
                tracing::warn!("census incomplete (a node could not be listed): not published");
                return false;
            };
            farm.publish_census(c).await;
            true
        });
    }

    /// Count; None when a live node could not be listed (a dead one holds nothing the others
    /// lack, for R > 1, and is left out).
    async fn take_census(&self) -> Option<Census> {
        let (mut aors, mut bindings) = (0f64, 0f64);
        // The farm's own items (ring id, leases, census, nonce counters) are not records.
        let ours = |k: &String| {
            let rest = &k[self.prefix.len().min(k.len())..];
            !(rest == "ring" || rest == "census" || rest.starts_with("lease:"))
        };
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.available() {
                continue;
            }
            let mut keys = admin::keys(&node.addr, &self.prefix, LIST_TIMEOUT)
                .await
                .ok()?;
            keys.retain(ours);
            let sample: Vec<&String> = if keys.len() <= SAMPLE {
                keys.iter().collect()
            } else {
                (0..SAMPLE)
                    .map(|_| &keys[fastrand::usize(..keys.len())])
                    .collect()
            };
            let (mut with_live, mut live, now) = (0u64, 0u64, now_secs());
            for key in &sample {
                let Ok(Some((value, _))) = self.nodes[i].gets(key).await else {
                    continue;
                };
                let Ok(r) = record::decode_any(&value) else {
                    continue;
                };
                if record::key(&self.prefix, &r.aor) != **key {
                    continue;
                }
                let n = r.live(now).count() as u64;
                with_live += u64::from(n > 0);
                live += n;
            }
            if !sample.is_empty() {
                let scale = keys.len() as f64 / sample.len() as f64;
                aors += with_live as f64 * scale;
                bindings += live as f64 * scale;
            }
        }
        let r = self.replicas as f64;
        Some(Census {
            registrations: (aors / r).round() as u64,
            bindings: (bindings / r).round() as u64,
            at: now_secs(),
        })
    }

    /// Write the census on every live node (read by [`Farm::census`]).
    async fn publish_census(&self, c: Census) {
        let value = format!("{} {} {}", c.registrations, c.bindings, c.at);
        let key = self.census_key();
        for node in self.nodes.iter().filter(|n| n.available()) {
            let cas = match node.gets(&key).await {
                Ok(found) => found.map(|(_, cas)| cas),
                Err(_) => continue,
            };
            let _ = node.store(&key, value.as_bytes(), RESULT_TTL, cas).await;
        }
        tracing::debug!(
            registrations = c.registrations,
            bindings = c.bindings,
            "census taken"
        );
    }

    /// The latest census on the first live node that has one.
    pub(crate) async fn census(&self) -> Option<Census> {
        let key = self.census_key();
        for node in self.nodes.iter().filter(|n| n.available()) {
            if let Ok(Some((value, _))) = node.gets(&key).await {
                let text = String::from_utf8_lossy(&value);
                let mut f = text.split(' ').map(|v| v.parse::<u64>().ok());
                if let (Some(Some(registrations)), Some(Some(bindings)), Some(Some(at))) =
                    (f.next(), f.next(), f.next())
                {
                    return Some(Census {
                        registrations,
                        bindings,
                        at,
                    });
                }
            }
        }
        None
    }
}
