//! The file as written: every section and key optional, unknown keys refused (a misspelt
//! key must not silently fall back to its default).

use serde::Deserialize;
use std::path::Path;

/// A memcached node: `host:port`, optionally weighted.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NodeSpec {
    Addr(String),
    Weighted { addr: String, weight: u32 },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    pub(super) listen: Option<Vec<String>>,
    pub(super) advertise: Option<String>,
    pub(super) aliases: Option<Vec<String>>,
    pub(super) domains: Option<Vec<String>>,
    pub(super) max_message_size: Option<usize>,
    pub(super) tcp_idle_timeout: Option<u64>,
    pub(super) shutdown_timeout: Option<u64>,
    pub(super) metrics: Option<String>,
    pub(super) log_level: Option<String>,
    pub(super) log_format: Option<String>,
    pub(super) threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRegistrar {
    pub(super) min_expires: Option<u32>,
    pub(super) max_expires: Option<u32>,
    pub(super) default_expires: Option<u32>,
    pub(super) max_contacts: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMemcached {
    pub(super) nodes: Option<Vec<NodeSpec>>,
    pub(super) replicas: Option<usize>,
    pub(super) write_quorum: Option<usize>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) key_prefix: Option<String>,
    pub(super) item_limit: Option<usize>,
    pub(super) pipeline: Option<bool>,
    pub(super) refresh_cache: Option<usize>,
    pub(super) refresh_cache_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileProxy {
    pub(super) record_route: Option<bool>,
    pub(super) farm_uri: Option<String>,
    pub(super) outbound_proxy: Option<String>,
    pub(super) dns_server: Option<String>,
    pub(super) deny: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_source: Option<usize>,
    pub(super) partial_message_timeout: Option<u64>,
    pub(super) tcp_write_timeout: Option<u64>,
    pub(super) tcp_queue_bytes: Option<usize>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) source_rate: Option<u32>,
    pub(super) max_in_flight_per_source: Option<usize>,
    pub(super) max_dials: Option<usize>,
    pub(super) max_dns_lookups: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    pub(super) users_file: Option<std::path::PathBuf>,
    pub(super) secret_file: Option<std::path::PathBuf>,
    pub(super) nonce_expires: Option<u64>,
    pub(super) trusted: Option<Vec<String>>,
    pub(super) max_failures: Option<u32>,
    pub(super) block_seconds: Option<u64>,
    pub(super) algorithms: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) server: Option<FileServer>,
    pub(super) registrar: Option<FileRegistrar>,
    pub(super) memcached: Option<FileMemcached>,
    pub(super) proxy: Option<FileProxy>,
    pub(super) auth: Option<FileAuth>,
    pub(super) limits: Option<FileLimits>,
}

/// The file's text parsed; errors start with its name (TOML's own message says the line and
/// the key).
pub(super) fn read_file(path: &Path) -> Result<File, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_forms_and_unknown_keys() {
        let f: File =
            toml::from_str("[memcached]\nnodes = [\"a:1\", { addr = \"b:2\", weight = 3 }]\n")
                .unwrap();
        let nodes = f.memcached.unwrap().nodes.unwrap();
        assert!(matches!(&nodes[0], NodeSpec::Addr(a) if a == "a:1"));
        assert!(matches!(&nodes[1], NodeSpec::Weighted { addr, weight: 3 } if addr == "b:2"));
        for text in [
            "[sever]\n",
            "[server]\nlisten_on = []\n",
            "[registrar]\nmax_expire = 1\n",
            "[memcached]\nnode = []\n",
            "[proxy]\nrecord_routes = true\n",
        ] {
            let e = toml::from_str::<File>(text).unwrap_err().to_string();
            assert!(e.contains("unknown"), "{text}: {e}");
        }
    }
}
