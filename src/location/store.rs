//! The one store an instance runs on, chosen at start: the embedded memory store or the
//! memcached farm. Each owns its background work (the memory store's sweeper, the farm's
//! health monitor and refills), started here, so that nothing above the location layer
//! needs to know which backend it talks to.

use super::farm::{Farm, FarmConfig};
use super::memory::MemoryStore;
use super::{LocationStore, MemcachedConfig, Record, StoreError};
use crate::live::Live;
use crate::sip::uri::Aor;
use std::sync::Arc;
use std::time::Duration;

/// How often the memory store drops expired bindings.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// How often the farm probes every node.
const PROBE_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub enum Store {
    Memory(Arc<MemoryStore>),
    /// Swapped whole when SIGHUP brings another node list ([`Store::reload_farm`]).
    Farm(Arc<Live<Farm>>),
}

impl Store {
    /// Open the store that `memcached` describes (None: the embedded memory store) and start
    /// its background work on the current runtime. `loops` is the number of event loops that
    /// will call it (the farm opens one pipelined connection per node and loop). Fails when no
    /// memcached node answers.
    pub async fn open(memcached: Option<&MemcachedConfig>, loops: usize) -> Result<Store, String> {
        match memcached {
            None => {
                tracing::info!("location store: embedded memory (bindings are lost at exit)");
                let store = Arc::new(MemoryStore::new());
                let sweeper = store.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(SWEEP_EVERY);
                    loop {
                        tick.tick().await;
                        sweeper.sweep();
                    }
                });
                Ok(Store::Memory(store))
            }
            Some(mc) => {
                let farm = Arc::new(Farm::connect(farm_config(mc, loops.max(1))).await?);
                farm.announce_rings().await;
                spawn_background(&farm);
                Ok(Store::Farm(Arc::new(Live::new_arc(farm))))
            }
        }
    }

    /// The farm for a command of a few seconds (`sipfarm location`): one connection per
    /// node, no probing, no refills (those are the instances' job).
    pub async fn open_client(mc: &MemcachedConfig) -> Result<Store, String> {
        let mut cfg = farm_config(mc, 1);
        (cfg.refresh_cache, cfg.refresh_cache_bytes) = (0, 0);
        let farm = Farm::connect(cfg).await?;
        farm.announce_rings().await;
        Ok(Store::Farm(Arc::new(Live::new(farm))))
    }

    /// SIGHUP with another node list (or other farm settings): a new farm over `mc`, its
    /// ring id written on every node, swapped in for the next operations; the old one ends
    /// its monitor and refills and serves only what is in flight. Keys whose owners changed
    /// are found where they were (a lookup asks the previous owners) and moved by read
    /// repair. Refused, with the old farm kept, when no node of the new list answers, or
    /// when this instance runs on the embedded store.
    /// `old_ring`: the ring id of the list replaced, which the new one may overwrite on the
    /// nodes (another id there is another instance's list: reported, never overwritten).
    /// Refused too when the new farm is not healthy (too few of its nodes answer).
    pub async fn reload_farm(
        &self,
        mc: &MemcachedConfig,
        loops: usize,
        old_ring: Option<&str>,
    ) -> Result<String, String> {
        let Store::Farm(slot) = self else {
            return Err("this instance runs on the embedded store: a restart is needed".into());
        };
        let farm = Arc::new(Farm::connect(farm_config(mc, loops.max(1))).await?);
        farm.health()
            .map_err(|e| format!("the new node list is not healthy: {e}"))?;
        farm.claim_rings(old_ring).await;
        spawn_background(&farm);
        let ring = farm.ring_id().to_owned();
        slot.set_arc(farm).retire();
        Ok(ring)
    }
}

/// An instance's work on the farm besides requests: probes and refills, renewing the
/// bindings kept until removed, the census. It ends when the farm is retired (a reload).
fn spawn_background(farm: &Arc<Farm>) {
    farm.spawn_monitor(PROBE_EVERY);
    farm.spawn_renewal();
    farm.spawn_census();
}

/// The farm's settings from the configuration, with `connections` per node.
fn farm_config(mc: &MemcachedConfig, connections: usize) -> FarmConfig {
    FarmConfig {
        nodes: mc.nodes.clone(),
        replicas: mc.replicas,
        write_quorum: mc.write_quorum,
        prefix: mc.key_prefix.clone(),
        timeout: mc.timeout,
        item_limit: mc.item_limit,
        pipelined: mc.pipeline,
        connections,
        refresh_cache: mc.refresh_cache,
        refresh_cache_bytes: mc.refresh_cache_bytes,
    }
}

// Each arm calls the store behind its Arc directly (`*`), so that this does not depend on
// `LocationStore for Arc<T>`.
impl Store {
    /// The farm, for the operator's commands; the embedded store lives inside one instance
    /// and cannot be looked at from outside.
    fn outside(&self) -> Result<Arc<Farm>, String> {
        match self {
            Store::Memory(_) => {
                Err("the embedded store lives inside each instance: give --memcached".into())
            }
            Store::Farm(f) => Ok(f.get()),
        }
    }

    /// Each owner's replica of `aor` and their merge (`sipfarm location show`); the embedded
    /// store lives inside one instance and cannot be looked at from outside.
    pub async fn inspect(&self, aor: &Aor) -> Result<super::farm::Inspection, String> {
        Ok(self.outside()?.inspect(aor).await)
    }

    /// Records misplaced or out of step between replicas, mended with `repair`
    /// (`sipfarm farm check`).
    pub async fn check(&self, repair: bool) -> Result<super::farm::Check, String> {
        Ok(self.outside()?.check(repair).await)
    }

    /// The latest census (None: none taken yet); the embedded store counts at once.
    pub(crate) async fn census(&self) -> Option<super::farm::Census> {
        match self {
            Store::Memory(m) => {
                let (registrations, bindings) = m.census();
                Some(super::farm::Census {
                    registrations,
                    bindings,
                    at: crate::clock::now_secs(),
                })
            }
            Store::Farm(f) => f.get().census().await,
        }
    }

    /// Every record in the farm (`sipfarm location dump`).
    pub async fn dump(&self) -> Result<super::farm::Dump, String> {
        Ok(self.outside()?.dump().await)
    }

    /// Raise the shared counter `name` to `value` for transaction `tx` when `value` is
    /// higher than what is stored, or equal and of the same transaction (a retransmission):
    /// true; else leave it (false). Used for nonce-counts: see `farm/counter.rs`.
    pub(crate) async fn raise(
        &self,
        name: &str,
        value: u64,
        tx: u64,
        ttl: u32,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.raise(name, value, tx, ttl)),
            Store::Farm(f) => f.get().raise(name, value, tx, ttl).await,
        }
    }
}

impl LocationStore for Store {
    async fn update<T, E, F>(&self, aor: &Aor, change: F) -> Result<Result<T, E>, StoreError>
    where
        T: Send,
        E: Send,
        F: FnMut(&mut Record, u64) -> Result<T, E> + Send,
    {
        match self {
            Store::Memory(m) => (**m).update(aor, change).await,
            Store::Farm(f) => (*f.get()).update(aor, change).await,
        }
    }

    async fn lookup(&self, aor: &Aor) -> Result<Option<Record>, StoreError> {
        match self {
            Store::Memory(m) => (**m).lookup(aor).await,
            Store::Farm(f) => (*f.get()).lookup(aor).await,
        }
    }

    fn node_states(&self) -> Vec<(String, bool)> {
        match self {
            Store::Memory(_) => Vec::new(),
            Store::Farm(f) => (*f.get()).node_states(),
        }
    }

    fn ring_id(&self) -> Option<String> {
        match self {
            Store::Memory(_) => None,
            Store::Farm(f) => Some(f.get().ring_id().to_owned()),
        }
    }

    fn health(&self) -> Result<(), String> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Farm(f) => (*f.get()).health(),
        }
    }
}
