//! Configuration: the TOML file, the command-line flags that override it, and the checks.
//!
//! Parsed and checked once at start into plain structs; nothing reads the file or the
//! environment later. Every error names where it comes from (file and key, or flag) and the
//! offending value; `main` prints it and exits with status 2.
//!
//! `file` reads the file as written; each section has its resolve step (`server`,
//! `registrar`, `memcached`, `proxy`, `auth`, `limits`), which takes a flag over its file key and names
//! either in errors (`origin`).

mod auth;
mod file;
mod limits;
mod memcached;
mod origin;
mod proxy;
mod registrar;
mod server;

use crate::transport::Advertise;
pub use file::NodeSpec;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::auth::AuthConfig;
pub use crate::location::MemcachedConfig;
pub use crate::proxy::ProxyConfig;
pub use crate::registrar::RegistrarConfig;
pub use crate::transport::{Limits, Listen, Proto};

/// What the command line may override (None: not given): the flags of `sipfarm serve`. Each
/// can also come from the environment, `SIPFARM_` and its name (`SIPFARM_MEMCACHED`,
/// `SIPFARM_LISTEN`, a comma-separated list for the repeatable ones): containers are
/// configured that way. A flag given wins over its variable.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// TOML configuration file; flags override its keys (see config/sipfarm.toml).
    #[arg(long, env = "SIPFARM_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen address, repeatable: udp:HOST:PORT or tcp:HOST:PORT (IPv6 as tcp:[::1]:5060),
    /// optionally followed by " advertise HOST[:PORT]" (one argument, quoted) naming this
    /// socket in our Via and Record-Route. Default: udp:127.0.0.1:5060 and tcp:127.0.0.1:5060.
    #[arg(
        long,
        env = "SIPFARM_LISTEN",
        value_delimiter = ',',
        value_name = "PROTO:HOST:PORT"
    )]
    pub listen: Vec<String>,
    /// The address (IP or name, port default: the socket's) others reach this instance at,
    /// for every listen socket without its own advertise: written in our Via and
    /// Record-Route and counted as us. Needed behind NAT; on 0.0.0.0 without it, the host's
    /// primary address is used and every address of the host counts as us.
    #[arg(long, env = "SIPFARM_ADVERTISE", value_name = "HOST[:PORT]")]
    pub advertise: Option<String>,
    /// Another name of this instance, repeatable (Kamailio's `alias`): a Route or
    /// Request-URI naming it is ours, never forwarded, e.g. the name its SRV record points
    /// at (sip1.example.test), which phones may use as outbound proxy. Without a port it
    /// matches a URI naming no port, or one of this instance's ports.
    #[arg(
        long,
        env = "SIPFARM_ALIAS",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub alias: Vec<String>,
    /// Domain this instance is registrar for, repeatable or comma-separated (any port
    /// matches). Default: localhost and the listen addresses.
    #[arg(
        long,
        env = "SIPFARM_DOMAIN",
        value_delimiter = ',',
        value_name = "DOMAIN"
    )]
    pub domain: Vec<String>,
    /// memcached nodes, comma-separated HOST:PORT. Every instance of a farm must list the
    /// same nodes in the same spelling. Without it: the embedded in-memory store.
    #[arg(long, env = "SIPFARM_MEMCACHED", value_name = "HOST:PORT,...")]
    pub memcached: Option<String>,
    /// Copies of each record, on distinct nodes (1 to the node count; default 2, or 1 with
    /// a single node).
    #[arg(long, env = "SIPFARM_REPLICAS", value_name = "N")]
    pub replicas: Option<usize>,
    /// Replicas that must store a REGISTER's write before it is answered 200 (1 to
    /// --replicas; default 1: the fastest, a write on one replica only is lost with it).
    #[arg(long, env = "SIPFARM_WRITE_QUORUM", value_name = "W")]
    pub write_quorum: Option<usize>,
    /// Shortest registration accepted, in seconds (shorter: 423 with Min-Expires). Default 60.
    #[arg(long, env = "SIPFARM_MIN_EXPIRES", value_name = "SECONDS")]
    pub min_expires: Option<u32>,
    /// Longest registration granted, in seconds (longer ones are shortened). Default 86400.
    #[arg(long, env = "SIPFARM_MAX_EXPIRES", value_name = "SECONDS")]
    pub max_expires: Option<u32>,
    /// Registration time when the REGISTER names none, in seconds. Default 3600.
    #[arg(long, env = "SIPFARM_DEFAULT_EXPIRES", value_name = "SECONDS")]
    pub default_expires: Option<u32>,
    /// Most contacts one address-of-record may hold. Default 10.
    #[arg(long, env = "SIPFARM_MAX_CONTACTS", value_name = "N")]
    pub max_contacts: Option<usize>,
    /// error, warn, info (default), debug or trace.
    #[arg(long, env = "SIPFARM_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log lines: `human` (default) or `json` (one object per line, with the request's
    /// Call-ID and CSeq in its span fields).
    #[arg(long, env = "SIPFARM_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// On SIGTERM (or SIGINT), how long the requests in flight get to finish before the
    /// process exits, in seconds; new requests are no longer read meanwhile. Default 5.
    #[arg(long, env = "SIPFARM_SHUTDOWN_TIMEOUT", value_name = "SECONDS")]
    pub shutdown_timeout: Option<u64>,
    /// Serve Prometheus metrics over HTTP at HOST:PORT (`GET /metrics`). Off by default:
    /// bind it to an address only the monitoring reaches.
    #[arg(long, env = "SIPFARM_METRICS", value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Threads, each running its own event loop with its own sockets on the listen addresses
    /// (SO_REUSEPORT). Default: the number of cores.
    #[arg(long, env = "SIPFARM_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// The URI that names the farm in Record-Route (no user part), e.g. sip:farm.example.test:
    /// any instance then takes the dialog's later requests, but phones must resolve its host
    /// (SRV or A records for it). Default: this instance's own (advertised) address, which
    /// phones reach without DNS, so a dialog's later requests come back to this instance.
    #[arg(long, env = "SIPFARM_FARM_URI", value_name = "URI")]
    pub farm_uri: Option<String>,
    /// Do not add Record-Route (in-dialog requests then go straight to the peers).
    #[arg(long, env = "SIPFARM_NO_RECORD_ROUTE")]
    pub no_record_route: bool,
    /// Send requests for foreign domains to this proxy (a sip: URI) instead of resolving
    /// them by RFC 3263.
    #[arg(long, env = "SIPFARM_OUTBOUND_PROXY", value_name = "URI")]
    pub outbound_proxy: Option<String>,
    /// DNS server for RFC 3263 lookups (NAPTR, SRV, A), IP or IP:PORT. Default: the system's.
    #[arg(long, env = "SIPFARM_DNS_SERVER", value_name = "IP:PORT")]
    pub dns_server: Option<String>,
    /// Users file (see `sipfarm user add`): turns digest authentication on. Every instance
    /// of a farm reads the same file.
    #[arg(long, env = "SIPFARM_USERS", value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// Secret shared by every instance (one line, at least 16 bytes; a second line is the
    /// previous secret, still accepted during a rotation): nonces issued by one instance are
    /// valid on all. Needed with --users.
    #[arg(long, env = "SIPFARM_AUTH_SECRET_FILE", value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// How long a nonce is accepted, in seconds. Default 300.
    #[arg(long, env = "SIPFARM_NONCE_EXPIRES", value_name = "SECONDS")]
    pub nonce_expires: Option<u64>,
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: Vec<Listen>,
    /// Lowercased domains this instance is registrar for.
    pub domains: Vec<String>,
    /// Other names of this instance (`--alias`).
    pub aliases: Vec<Advertise>,
    pub max_message_size: usize,
    pub tcp_idle_timeout: Duration,
    /// SIGTERM: how long requests in flight get before the process exits anyway.
    pub shutdown_timeout: Duration,
    /// Where Prometheus metrics are served (None: off).
    pub metrics: Option<std::net::SocketAddr>,
    pub log_level: String,
    /// `json` lines, else human ones.
    pub log_json: bool,
    /// Event-loop threads (each with its own sockets).
    pub threads: usize,
    pub registrar: RegistrarConfig,
    /// None: the embedded in-memory store.
    pub memcached: Option<MemcachedConfig>,
    pub proxy: ProxyConfig,
    /// None: no authentication.
    pub auth: Option<AuthConfig>,
    /// The farm's shared secret (nonces, and the MAC of our Via headers); None: a random key
    /// per process keys the MAC.
    pub secret_file: Option<PathBuf>,
    pub limits: Limits,
}

impl Config {
    /// Load the file (if any), apply the flags, check everything.
    pub fn load(o: &Overrides) -> Result<Config, String> {
        let (file, fname) = match &o.config {
            Some(path) => (file::read_file(path)?, path.display().to_string()),
            None => (file::File::default(), String::new()),
        };
        let src = origin::Source::new(&fname);
        let server_file = file.server.unwrap_or_default();
        let server = server::resolve(o, &server_file, src)?;
        let registrar = registrar::resolve(o, &file.registrar.unwrap_or_default(), src)?;
        let memcached = memcached::resolve(o, &file.memcached.unwrap_or_default(), src)?;
        let proxy = proxy::resolve(o, &file.proxy.unwrap_or_default(), src)?;
        // Threads last, where they were always checked: given several mistakes, the same one
        // is reported.
        let (auth, secret_file) = auth::resolve(o, &file.auth.unwrap_or_default(), src)?;
        let limits = limits::resolve(&file.limits.unwrap_or_default(), src)?;
        let threads = server::threads(o, &server_file, src)?;
        Ok(Config {
            listen: server.listen,
            domains: server.domains,
            aliases: server.aliases,
            max_message_size: server.max_message_size,
            tcp_idle_timeout: server.tcp_idle_timeout,
            shutdown_timeout: server.shutdown_timeout,
            metrics: server.metrics,
            log_level: server.log_level,
            log_json: server.log_json,
            threads,
            registrar,
            memcached,
            proxy,
            auth,
            secret_file,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            Listen::parse("udp:127.0.0.1:5080").unwrap().addr.port(),
            5080
        );
        assert!(Listen::parse("tcp:[::1]:5060").unwrap().addr.is_ipv6());
        assert!(Listen::parse("sctp:127.0.0.1:1").is_err());
        assert!(Listen::parse("udp:nohost").is_err());
    }

    #[test]
    fn defaults_and_flags() {
        let c = Config::load(&Overrides::default()).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.memcached.is_none());
        assert!(c.domains.iter().any(|d| d == "127.0.0.1"));
        let o = Overrides {
            memcached: Some("127.0.0.1:11211,127.0.0.1:11212".into()),
            domain: vec!["Example.TEST".into()],
            ..Default::default()
        };
        let c = Config::load(&o).unwrap();
        assert_eq!(c.memcached.as_ref().unwrap().replicas, 2);
        assert!(c.domains.iter().any(|d| d == "example.test"));
        let bad = Overrides {
            replicas: Some(3),
            ..o
        };
        assert!(Config::load(&bad).unwrap_err().contains("--replicas"));
    }

    #[test]
    fn file_errors_name_file_and_key() {
        let dir = std::env::temp_dir().join(format!("sipfarm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(
            &p,
            "[server]\nlisten = [\"udp:127.0.0.1:5060\"]\nbogus = 1\n",
        )
        .unwrap();
        let e = Config::load(&Overrides {
            config: Some(p.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("bad.toml") && e.contains("bogus"), "{e}");
        std::fs::write(&p, "[memcached]\nnodes = [\"nonsense\"]\n").unwrap();
        let e = Config::load(&Overrides {
            config: Some(p.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.contains("memcached.nodes") && e.contains("nonsense"),
            "{e}"
        );
        std::fs::write(&p, "[server]\nlisten = [\"udp:127.0.0.1:5070\"]\n").unwrap();
        let o = Overrides {
            config: Some(p.clone()),
            listen: vec!["tcp:127.0.0.1:5090".into()],
            ..Default::default()
        };
        let c = Config::load(&o).unwrap();
        assert_eq!(c.listen[0].to_string(), "tcp:127.0.0.1:5090");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// With several mistakes, the first in the order the sections are checked is reported
    /// (`--threads` last).
    #[test]
    fn first_mistake_reported() {
        let o = Overrides {
            threads: Some(0),
            memcached: Some("a:1".into()),
            replicas: Some(3),
            ..Default::default()
        };
        assert!(Config::load(&o).unwrap_err().starts_with("--replicas"));
        let o = Overrides {
            log_level: Some("loud".into()),
            listen: vec!["x".into()],
            ..Default::default()
        };
        assert!(Config::load(&o).unwrap_err().starts_with("--listen"));
    }

    /// The flags as `sipfarm serve` parses them: repeatable lists, a bare boolean.
    #[test]
    fn flags_parse_into_overrides() {
        use clap::{Args, FromArgMatches};
        let cmd = Overrides::augment_args(clap::Command::new("serve"));
        let m = cmd
            .try_get_matches_from([
                "serve",
                "--listen",
                "udp:127.0.0.1:5070",
                "--listen",
                "tcp:127.0.0.1:5070",
                "--domain",
                "a.test,b.test",
                "--domain",
                "c.test",
                "--max-contacts",
                "4",
                "--no-record-route",
            ])
            .unwrap();
        let o = Overrides::from_arg_matches(&m).unwrap();
        assert_eq!(o.listen, ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]);
        assert_eq!(o.domain, ["a.test", "b.test", "c.test"]);
        assert_eq!((o.max_contacts, o.no_record_route), (Some(4), true));
        assert_eq!((o.config, o.replicas, o.threads), (None, None, None));
    }

    /// The example file documents every key: it must load as it is.
    #[test]
    fn example_file_loads() {
        let o = Overrides {
            config: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/config/sipfarm.toml").into()),
            ..Default::default()
        };
        let c = Config::load(&o).unwrap();
        assert_eq!(
            (c.threads, c.domains.as_slice()),
            (2, &["example.test".to_owned()][..])
        );
        let mc = c.memcached.unwrap();
        assert_eq!((mc.nodes.len(), mc.replicas), (2, 2));
        assert_eq!(c.proxy.farm_uri, None, "the safe default: no DNS needed");
    }
}
