//! Configuration: the TOML file, the command-line flags that override it, and the checks.
//!
//! Parsed and checked once at start into plain structs; nothing reads the file or the
//! environment later. Every error names where it comes from (file and key, or flag) and the
//! offending value; `main` prints it and exits with status 2.

mod file;

use file::File;
pub use file::NodeSpec;
use std::net::SocketAddr;
use std::time::Duration;

pub use crate::location::MemcachedConfig;
pub use crate::proxy::ProxyConfig;
pub use crate::registrar::RegistrarConfig;
pub use crate::transport::{Listen, Proto};

/// What the command line may override (None: not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<std::path::PathBuf>,
    pub listen: Vec<String>,
    pub domain: Vec<String>,
    pub memcached: Option<String>,
    pub replicas: Option<usize>,
    pub min_expires: Option<u32>,
    pub max_expires: Option<u32>,
    pub default_expires: Option<u32>,
    pub max_contacts: Option<usize>,
    pub log_level: Option<String>,
    pub threads: Option<usize>,
    pub no_record_route: bool,
    pub farm_uri: Option<String>,
    pub outbound_proxy: Option<String>,
    pub dns_server: Option<String>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Listen>,
    /// Lowercased domains this instance is registrar for.
    pub domains: Vec<String>,
    pub max_message_size: usize,
    pub tcp_idle_timeout: Duration,
    pub log_level: String,
    /// Event-loop threads (each with its own sockets).
    pub threads: usize,
    pub registrar: RegistrarConfig,
    /// None: the embedded in-memory store.
    pub memcached: Option<MemcachedConfig>,
    pub proxy: ProxyConfig,
}

fn check_domain(d: &str, origin: &str) -> Result<String, String> {
    let d = d.trim().to_ascii_lowercase();
    let d = d.trim_start_matches('[').trim_end_matches(']').to_owned();
    let ok = !d.is_empty()
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    if ok {
        Ok(d)
    } else {
        Err(format!(
            "{origin}: '{d}' is not a domain name or IP address"
        ))
    }
}

fn check_node(addr: &str, origin: &str) -> Result<String, String> {
    let addr = addr.trim();
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{origin}: '{addr}' is not HOST:PORT"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{origin}: '{addr}' is not HOST:PORT"));
    }
    Ok(addr.to_owned())
}

impl Config {
    /// Load the file (if any), apply the flags, check everything.
    pub fn load(o: &Overrides) -> Result<Config, String> {
        let (file, fname) = match &o.config {
            Some(path) => (file::read_file(path)?, path.display().to_string()),
            None => (File::default(), String::new()),
        };
        let at = |key: &str| format!("{fname}: key '{key}'");
        let server = file.server.unwrap_or_default();
        let reg = file.registrar.unwrap_or_default();
        let mc = file.memcached.unwrap_or_default();

        let listen: Vec<Listen> = if !o.listen.is_empty() {
            o.listen
                .iter()
                .map(|s| Listen::parse(s).map_err(|e| format!("--listen {e}")))
                .collect::<Result<_, _>>()?
        } else if let Some(l) = &server.listen {
            l.iter()
                .map(|s| Listen::parse(s).map_err(|e| format!("{}: {e}", at("server.listen"))))
                .collect::<Result<_, _>>()?
        } else {
            let a: SocketAddr = ([127, 0, 0, 1], 5060).into();
            vec![
                Listen {
                    proto: Proto::Udp,
                    addr: a,
                },
                Listen {
                    proto: Proto::Tcp,
                    addr: a,
                },
            ]
        };
        if listen.is_empty() {
            return Err(format!(
                "{}: at least one listen address is needed",
                at("server.listen")
            ));
        }

        let mut domains: Vec<String> = if !o.domain.is_empty() {
            o.domain
                .iter()
                .flat_map(|d| d.split(','))
                .map(|d| check_domain(d, "--domain"))
                .collect::<Result<_, _>>()?
        } else if let Some(d) = &server.domains {
            d.iter()
                .map(|d| check_domain(d, &at("server.domains")))
                .collect::<Result<_, _>>()?
        } else {
            // Like a stock Kamailio: the addresses it listens on, and localhost.
            let mut d = vec!["localhost".to_owned()];
            for l in &listen {
                let ip = l.addr.ip().to_string();
                if !d.contains(&ip) {
                    d.push(ip);
                }
            }
            d
        };
        domains.dedup();

        let max_message_size = server.max_message_size.unwrap_or(65536);
        if !(1024..=1 << 20).contains(&max_message_size) {
            return Err(format!(
                "{}: {max_message_size} is out of range (1024 to 1048576)",
                at("server.max_message_size")
            ));
        }
        let tcp_idle_timeout = Duration::from_secs(server.tcp_idle_timeout.unwrap_or(600).max(1));

        let log_level = o
            .log_level
            .clone()
            .or(server.log_level)
            .unwrap_or_else(|| "info".to_owned());
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            let origin = if o.log_level.is_some() {
                "--log-level".to_owned()
            } else {
                at("server.log_level")
            };
            return Err(format!(
                "{origin}: '{log_level}' is not one of error, warn, info, debug, trace"
            ));
        }

        let registrar = RegistrarConfig {
            min_expires: o.min_expires.or(reg.min_expires).unwrap_or(60),
            max_expires: o.max_expires.or(reg.max_expires).unwrap_or(86400),
            default_expires: o.default_expires.or(reg.default_expires).unwrap_or(3600),
            max_contacts: o.max_contacts.or(reg.max_contacts).unwrap_or(10),
        };
        if registrar.max_expires < registrar.min_expires.max(1) {
            return Err(format!(
                "registrar: max_expires ({}) is below min_expires ({})",
                registrar.max_expires, registrar.min_expires
            ));
        }
        if registrar.max_contacts == 0 {
            return Err(format!(
                "{}: must be at least 1",
                at("registrar.max_contacts")
            ));
        }

        let nodes: Vec<(String, u32)> = if let Some(list) = &o.memcached {
            list.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| check_node(s, "--memcached").map(|a| (a, 1)))
                .collect::<Result<_, _>>()?
        } else {
            mc.nodes
                .unwrap_or_default()
                .iter()
                .map(|n| match n {
                    NodeSpec::Addr(a) => check_node(a, &at("memcached.nodes")).map(|a| (a, 1)),
                    NodeSpec::Weighted { addr, weight } => {
                        if *weight == 0 {
                            return Err(format!(
                                "{}: weight of {addr} must be at least 1",
                                at("memcached.nodes")
                            ));
                        }
                        check_node(addr, &at("memcached.nodes")).map(|a| (a, *weight))
                    }
                })
                .collect::<Result<_, _>>()?
        };
        for (i, (a, _)) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|(b, _)| a == b) {
                return Err(format!("memcached node {a} is listed twice"));
            }
        }
        let memcached = if nodes.is_empty() {
            if let Some(r) = o.replicas {
                return Err(format!("--replicas {r}: needs --memcached nodes"));
            }
            None
        } else {
            let replicas = o.replicas.or(mc.replicas).unwrap_or(2.min(nodes.len()));
            if replicas == 0 || replicas > nodes.len() {
                let origin = if o.replicas.is_some() {
                    "--replicas".to_owned()
                } else {
                    at("memcached.replicas")
                };
                return Err(format!(
                    "{origin}: {replicas} must be between 1 and the number of nodes ({})",
                    nodes.len()
                ));
            }
            let timeout_ms = mc.timeout_ms.unwrap_or(100);
            if !(1..=10_000).contains(&timeout_ms) {
                return Err(format!(
                    "{}: {timeout_ms} is out of range (1 to 10000)",
                    at("memcached.timeout_ms")
                ));
            }
            let key_prefix = mc.key_prefix.unwrap_or_else(|| "sipfarm:".to_owned());
            if key_prefix.len() > 64 || !key_prefix.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "{}: '{key_prefix}' must be at most 64 printable characters without spaces",
                    at("memcached.key_prefix")
                ));
            }
            let item_limit = mc.item_limit.unwrap_or(1_000_000);
            if !(1024..=128 << 20).contains(&item_limit) {
                return Err(format!(
                    "{}: {item_limit} is out of range",
                    at("memcached.item_limit")
                ));
            }
            Some(MemcachedConfig {
                pipeline: mc.pipeline.unwrap_or(true),
                refresh_cache: mc.refresh_cache.unwrap_or(262_144).min(16 << 20),
                nodes,
                replicas,
                timeout: Duration::from_millis(timeout_ms),
                key_prefix,
                item_limit,
            })
        };

        let px = file.proxy.unwrap_or_default();
        let farm_origin = if o.farm_uri.is_some() {
            "--farm-uri".to_owned()
        } else {
            at("proxy.farm_uri")
        };
        let farm_uri = o.farm_uri.clone().or(px.farm_uri).unwrap_or_else(|| {
            match domains.iter().find(|d| *d != "localhost") {
                Some(d) if d.contains(':') => format!("sip:[{d}]"),
                Some(d) => format!("sip:{d}"),
                None => format!("sip:{}", crate::sip::uri::host_port(listen[0].addr)),
            }
        });
        let parsed = crate::sip::uri::parse_sip(&farm_uri)
            .filter(|u| u.user().is_none())
            .ok_or_else(|| {
                format!("{farm_origin}: '{farm_uri}' must be a sip: URI without user part")
            })?;
        let farm_host = crate::sip::uri::host(&parsed).unwrap_or_default();
        let outbound_proxy = o.outbound_proxy.clone().or(px.outbound_proxy);
        if let Some(ob) = &outbound_proxy {
            if crate::sip::uri::parse_sip(ob).is_none() {
                let origin = if o.outbound_proxy.is_some() {
                    "--outbound-proxy".to_owned()
                } else {
                    at("proxy.outbound_proxy")
                };
                return Err(format!("{origin}: '{ob}' is not a sip: URI"));
            }
        }
        let dns_server = match o.dns_server.clone().or(px.dns_server) {
            None => None,
            Some(d) => {
                let origin = if o.dns_server.is_some() {
                    "--dns-server".to_owned()
                } else {
                    at("proxy.dns_server")
                };
                let addr = d
                    .parse::<SocketAddr>()
                    .or_else(|_| {
                        d.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| format!("{origin}: '{d}' is not IP or IP:PORT"))?;
                Some(addr)
            }
        };
        let proxy = ProxyConfig {
            record_route: !o.no_record_route && px.record_route.unwrap_or(true),
            farm_uri: farm_uri.trim_end_matches(";lr").to_owned(),
            farm_host,
            outbound_proxy,
            dns_server,
        };

        let threads = match o.threads.or(server.threads) {
            Some(0) => {
                let origin = if o.threads.is_some() {
                    "--threads".to_owned()
                } else {
                    at("server.threads")
                };
                return Err(format!("{origin}: must be at least 1"));
            }
            Some(n) if n > 256 => {
                let origin = if o.threads.is_some() {
                    "--threads".to_owned()
                } else {
                    at("server.threads")
                };
                return Err(format!("{origin}: {n} is more than 256"));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };

        Ok(Config {
            threads,
            proxy,
            listen,
            domains,
            max_message_size,
            tcp_idle_timeout,
            log_level,
            registrar,
            memcached,
        })
    }

    /// Is `host` (lowercase, no brackets) one of our domains? Any port matches.
    pub fn is_our_domain(&self, host: &str) -> bool {
        self.domains.iter().any(|d| d == host)
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
        assert!(c.is_our_domain("127.0.0.1"));
        let o = Overrides {
            memcached: Some("127.0.0.1:11211,127.0.0.1:11212".into()),
            domain: vec!["Example.TEST".into()],
            ..Default::default()
        };
        let c = Config::load(&o).unwrap();
        assert_eq!(c.memcached.as_ref().unwrap().replicas, 2);
        assert!(c.is_our_domain("example.test"));
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

    /// The exact texts: operators (and scripts) read them, and a flag's error names the flag.
    #[test]
    fn error_texts_name_the_flag_or_the_file_key() {
        let flag = |o: Overrides| Config::load(&o).unwrap_err();
        let nodes = || Some("a:1,b:2".to_owned());
        for (e, want) in [
            (
                flag(Overrides {
                    listen: vec!["udp:x".into()],
                    ..Default::default()
                }),
                "--listen 'udp:x': 'x' is not an IP:PORT (IPv6 as [::1]:5060)",
            ),
            (
                flag(Overrides {
                    domain: vec!["a b".into()],
                    ..Default::default()
                }),
                "--domain: 'a b' is not a domain name or IP address",
            ),
            (
                flag(Overrides {
                    log_level: Some("loud".into()),
                    ..Default::default()
                }),
                "--log-level: 'loud' is not one of error, warn, info, debug, trace",
            ),
            (
                flag(Overrides {
                    min_expires: Some(100),
                    max_expires: Some(50),
                    ..Default::default()
                }),
                "registrar: max_expires (50) is below min_expires (100)",
            ),
            (
                flag(Overrides {
                    memcached: Some("a:1, a:1".into()),
                    ..Default::default()
                }),
                "memcached node a:1 is listed twice",
            ),
            (
                flag(Overrides {
                    memcached: Some("nonsense".into()),
                    ..Default::default()
                }),
                "--memcached: 'nonsense' is not HOST:PORT",
            ),
            (
                flag(Overrides {
                    replicas: Some(2),
                    ..Default::default()
                }),
                "--replicas 2: needs --memcached nodes",
            ),
            (
                flag(Overrides {
                    memcached: nodes(),
                    replicas: Some(3),
                    ..Default::default()
                }),
                "--replicas: 3 must be between 1 and the number of nodes (2)",
            ),
            (
                flag(Overrides {
                    farm_uri: Some("sip:u@x".into()),
                    ..Default::default()
                }),
                "--farm-uri: 'sip:u@x' must be a sip: URI without user part",
            ),
            (
                flag(Overrides {
                    outbound_proxy: Some("nope".into()),
                    ..Default::default()
                }),
                "--outbound-proxy: 'nope' is not a sip: URI",
            ),
            (
                flag(Overrides {
                    dns_server: Some("nope".into()),
                    ..Default::default()
                }),
                "--dns-server: 'nope' is not IP or IP:PORT",
            ),
            (
                flag(Overrides {
                    threads: Some(0),
                    ..Default::default()
                }),
                "--threads: must be at least 1",
            ),
            (
                flag(Overrides {
                    threads: Some(300),
                    ..Default::default()
                }),
                "--threads: 300 is more than 256",
            ),
        ] {
            assert_eq!(e, want);
        }

        let dir = std::env::temp_dir().join(format!("sipfarm-cfg-texts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.toml");
        let file = |text: &str| {
            std::fs::write(&p, text).unwrap();
            let o = Overrides {
                config: Some(p.clone()),
                ..Default::default()
            };
            let e = Config::load(&o).unwrap_err();
            e.replace(&p.display().to_string(), "FILE")
        };
        for (text, want) in [
            (
                "[server]\nlisten = []\n",
                "FILE: key 'server.listen': at least one listen address is needed",
            ),
            (
                "[server]\nlisten = [\"sctp:1.2.3.4:5\"]\n",
                "FILE: key 'server.listen': 'sctp:1.2.3.4:5': unknown transport 'sctp' (udp or tcp)",
            ),
            (
                "[server]\ndomains = [\"bad/\"]\n",
                "FILE: key 'server.domains': 'bad/' is not a domain name or IP address",
            ),
            (
                "[server]\nmax_message_size = 10\n",
                "FILE: key 'server.max_message_size': 10 is out of range (1024 to 1048576)",
            ),
            (
                "[server]\nlog_level = \"loud\"\n",
                "FILE: key 'server.log_level': 'loud' is not one of error, warn, info, debug, trace",
            ),
            (
                "[server]\nthreads = 0\n",
                "FILE: key 'server.threads': must be at least 1",
            ),
            (
                "[registrar]\nmax_contacts = 0\n",
                "FILE: key 'registrar.max_contacts': must be at least 1",
            ),
            (
                "[memcached]\nnodes = [{ addr = \"h:1\", weight = 0 }]\n",
                "FILE: key 'memcached.nodes': weight of h:1 must be at least 1",
            ),
            (
                "[memcached]\nnodes = [\"h:1\"]\nreplicas = 2\n",
                "FILE: key 'memcached.replicas': 2 must be between 1 and the number of nodes (1)",
            ),
            (
                "[memcached]\nnodes = [\"h:1\"]\ntimeout_ms = 0\n",
                "FILE: key 'memcached.timeout_ms': 0 is out of range (1 to 10000)",
            ),
            (
                "[memcached]\nnodes = [\"h:1\"]\nkey_prefix = \"a b\"\n",
                "FILE: key 'memcached.key_prefix': 'a b' must be at most 64 printable characters without spaces",
            ),
            (
                "[memcached]\nnodes = [\"h:1\"]\nitem_limit = 1\n",
                "FILE: key 'memcached.item_limit': 1 is out of range",
            ),
            (
                "[proxy]\nfarm_uri = \"http://x\"\n",
                "FILE: key 'proxy.farm_uri': 'http://x' must be a sip: URI without user part",
            ),
            (
                "[proxy]\noutbound_proxy = \"nope\"\n",
                "FILE: key 'proxy.outbound_proxy': 'nope' is not a sip: URI",
            ),
            (
                "[proxy]\ndns_server = \"nope\"\n",
                "FILE: key 'proxy.dns_server': 'nope' is not IP or IP:PORT",
            ),
        ] {
            assert_eq!(file(text), want, "{text}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
