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

impl Server {
    /// Handle one SIGHUP.
    pub(super) async fn reload(&self) {
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
        if new.memcached != applied.memcached {
            if let Err(e) = self.reload_farm(&new).await {
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
        now.memcached = new.memcached.clone();
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
        self.limits.set(l.clone());
        tracing::info!(limits = ?l, "SIGHUP: limits reloaded");
    }

    async fn reload_farm(&self, new: &Config) -> Result<(), String> {
        let Some(mc) = &new.memcached else {
            return Err(
                "from the memcached farm to the embedded store: a restart is needed".into(),
            );
        };
        let ring = self.store.reload_farm(mc, self.cfg.threads).await?;
        self.identity
            .set_farm_nodes(super::run::farm_node_addresses(new).await);
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
    out
}
