//! SIGHUP: read the configuration again (the same file and flags as at start) and apply
//! what can change without dropping traffic, as `kamcmd cfg.*` and a users-table reload do
//! for Kamailio:
//! - the users file (swapped whole: a request sees the old users or the new ones);
//! - `[limits]`: the next accept, dial, message and request see the new bounds;
//! - the memcached node list and farm settings: a new farm is connected and swapped in
//!   (the growth path: add a node, reload every instance; keys are found on their previous
//!   owners and moved by read repair and refills).
//!
//! A configuration that does not load (a syntax error, a value out of range, a users file
//! that cannot be read, a node list none of whose nodes answers) is refused whole with a log
//! line naming the file, key and value, and the old one stays. What else changed (listen
//! addresses, domains, threads, ...) is logged by key as needing a restart, and not applied.

use super::Server;
use crate::config::Config;

/// Where a reload reads the configuration: `Config::load` over the start's flags.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// How long a reload may take (DNS, connecting the new farm) before it is refused.
const RELOAD_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

impl Server {
    /// Handle one SIGHUP, from a task of its own (a stop signal meanwhile is not held up),
    /// one at a time, within `RELOAD_WITHIN`.
    pub(super) async fn reload(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        if tokio::time::timeout(RELOAD_WITHIN, self.reload_now())
            .await
            .is_err()
        {
            tracing::error!(
                seconds = RELOAD_WITHIN.as_secs(),
                "SIGHUP: reload took too long and was abandoned; what it had not applied stays as it was"
            );
        }
    }

    async fn reload_now(&self) {
        let Some(source) = &self.source else {
            return self.reload_users();
        };
        let new = match source() {
            Ok(c) => c,
            Err(e) => {
                return tracing::error!(error = %e, "SIGHUP: configuration refused, the old one stays");
            }
        };
        let applied = self.applied_config();
        // Read before anything is applied: a users file that cannot be read refuses the
        // whole reload.
        let users = match self.auth.as_ref().map(|a| a.read_users()).transpose() {
            Ok(u) => u,
            Err(e) => {
                return tracing::error!(error = %e, "SIGHUP: users file refused, the old users stay (and the old configuration)");
            }
        };
        // Restart-only settings of the farm keep their applied values (named below).
        let mut farm = new.memcached.clone();
        if let (Some(n), Some(a)) = (farm.as_mut(), applied.memcached.as_ref()) {
            n.key_prefix.clone_from(&a.key_prefix);
            n.item_limit = a.item_limit;
        }
        if farm != applied.memcached {
            if let Err(e) = self.reload_farm(farm.as_ref(), &applied).await {
                return tracing::error!(error = %e, "SIGHUP: memcached node list refused, the old configuration stays");
            }
        }
        if let (Some(auth), Some(users)) = (&self.auth, users) {
            let n = auth.use_users(users);
            tracing::info!(users = n, "SIGHUP: users file reloaded");
        }
        if new.limits != applied.limits {
            self.apply_limits(&new);
        }
        let restart = needs_restart(&applied, &new);
        if !restart.is_empty() {
            tracing::warn!(
                keys = %restart.join(", "),
                "SIGHUP: these settings changed and take effect only at a restart"
            );
        }
        let mut now = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        now.limits = new.limits.clone();
        now.memcached = farm;
    }

    fn applied_config(&self) -> Config {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn reload_users(&self) {
        match &self.auth {
            Some(auth) => match auth.reload_users() {
                Ok(n) => tracing::info!(users = n, "SIGHUP: users file reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: users file refused, the old users stay")
                }
            },
            None => tracing::info!("SIGHUP: no users file (authentication is off)"),
        }
    }

    fn apply_limits(&self, new: &Config) {
        let l = &new.limits;
        let per_source = u32::try_from(l.max_in_flight_per_source).unwrap_or(u32::MAX);
        self.admission.set_limits(l.source_rate, per_source);
        self.tcp_flows.set_max_connections(l.max_connections);
        self.max_in_flight
            .store(l.max_in_flight, std::sync::atomic::Ordering::Relaxed);
        self.limits.set(l.clone());
        tracing::info!(limits = ?l, "SIGHUP: limits reloaded");
    }

    /// Swap in a farm over `mc`. The new nodes' addresses are resolved first (every name, or
    /// the reload is refused) and refused as SIP destinations before the swap, together with
    /// the old ones: a node dropped from the list still runs, and instances not reloaded yet
    /// still use it, so it stays protected until a restart.
    async fn reload_farm(
        &self,
        mc: Option<&crate::location::MemcachedConfig>,
        applied: &Config,
    ) -> Result<(), String> {
        let Some(mc) = mc else {
            return Err(
                "from the memcached farm to the embedded store: a restart is needed".into(),
            );
        };
        let mut protected = self.identity.farm_nodes();
        for (node, _) in &mc.nodes {
            protected.extend(super::run::node_addresses(node).await?);
        }
        self.identity.set_farm_nodes(protected);
        let old_ring = applied.memcached.as_ref().map(|m| {
            crate::location::ring::Ring::new(&m.nodes)
                .identity()
                .to_owned()
        });
        let ring = self
            .store
            .reload_farm(mc, self.cfg.threads, old_ring.as_deref())
            .await?;
        let nodes: Vec<&str> = mc.nodes.iter().map(|(n, _)| n.as_str()).collect();
        tracing::warn!(
            ring = %ring,
            nodes = %nodes.join(","),
            replicas = mc.replicas,
            write_quorum = mc.write_quorum,
            "SIGHUP: memcached farm reloaded (every instance must be reloaded to the same ring id)"
        );
        Ok(())
    }
}

/// The keys of `new` that differ from `old` and cannot change live.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut differ = |changed: bool, key: &'static str| {
        if changed {
            out.push(key);
        }
    };
    differ(old.listen != new.listen, "server.listen");
    differ(old.domains != new.domains, "server.domains");
    differ(old.aliases != new.aliases, "server.aliases");
    differ(
        old.max_message_size != new.max_message_size,
        "server.max_message_size",
    );
    differ(
        old.tcp_idle_timeout != new.tcp_idle_timeout,
        "server.tcp_idle_timeout",
    );
    differ(
        old.shutdown_timeout != new.shutdown_timeout,
        "server.shutdown_timeout",
    );
    differ(old.metrics != new.metrics, "server.metrics");
    differ(old.log_level != new.log_level, "server.log_level");
    differ(old.log_json != new.log_json, "server.log_format");
    differ(old.threads != new.threads, "server.threads");
    differ(old.registrar != new.registrar, "registrar");
    differ(old.proxy != new.proxy, "proxy");
    differ(old.auth != new.auth, "auth");
    differ(old.secret_file != new.secret_file, "auth.secret_file");
    differ(
        old.limits.max_dns_lookups != new.limits.max_dns_lookups,
        "limits.max_dns_lookups",
    );
    differ(
        old.memcached.is_some() != new.memcached.is_some(),
        "memcached (farm or embedded store)",
    );
    let farm = |c: &Config| {
        c.memcached
            .as_ref()
            .map(|m| (m.key_prefix.clone(), m.item_limit))
    };
    if let (Some(a), Some(b)) = (farm(old), farm(new)) {
        differ(a.0 != b.0, "memcached.key_prefix");
        differ(a.1 != b.1, "memcached.item_limit");
    }
    out
}
