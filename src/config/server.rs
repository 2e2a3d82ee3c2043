//! The `[server]` section: sockets, domains, message and connection limits, log level, threads.

use super::file::FileServer;
use super::origin::{Origin, Source, given};
use super::{Listen, Overrides, Proto};
use crate::transport::Advertise;
use std::net::SocketAddr;
use std::time::Duration;

/// The `[server]` settings but `threads`, which [`threads`] checks on its own.
pub(super) struct Server {
    pub(super) listen: Vec<Listen>,
    pub(super) domains: Vec<String>,
    pub(super) aliases: Vec<Advertise>,
    pub(super) max_message_size: usize,
    pub(super) tcp_idle_timeout: Duration,
    pub(super) shutdown_timeout: Duration,
    pub(super) metrics: Option<SocketAddr>,
    pub(super) log_level: String,
    pub(super) log_json: bool,
}

pub(super) fn resolve(o: &Overrides, f: &FileServer, src: Source) -> Result<Server, String> {
    let listen = listen(o, f, src)?;
    let domains = domains(o, f, src, &listen)?;
    let max_message_size = f.max_message_size.unwrap_or(65536);
    if !(1024..=1 << 20).contains(&max_message_size) {
        return Err(format!(
            "{}: {max_message_size} is out of range (1024 to 1048576)",
            src.key("server.max_message_size")
        ));
    }
    Ok(Server {
        listen,
        domains,
        aliases: aliases(o, f, src)?,
        max_message_size,
        tcp_idle_timeout: Duration::from_secs(f.tcp_idle_timeout.unwrap_or(600).max(1)),
        shutdown_timeout: shutdown_timeout(o, f, src)?,
        metrics: metrics(o, f, src)?,
        log_level: log_level(o, f, src)?,
        log_json: log_format(o, f, src)?,
    })
}

fn listen(o: &Overrides, f: &FileServer, src: Source) -> Result<Vec<Listen>, String> {
    let (list, origin) = src.pick(
        "--listen",
        given(&o.listen),
        "server.listen",
        f.listen.as_deref(),
    );
    let everywhere = advertise(o, f, src)?;
    let with_default = |mut l: Listen| {
        // A socket's own `advertise` wins over the one for every socket.
        if l.advertise.is_none() {
            l.advertise = everywhere.clone();
        }
        l
    };
    let Some(list) = list else {
        let addr: SocketAddr = ([127, 0, 0, 1], 5060).into();
        return Ok([Proto::Udp, Proto::Tcp]
            .into_iter()
            .map(|proto| {
                with_default(Listen {
                    proto,
                    addr,
                    advertise: None,
                })
            })
            .collect());
    };
    let listen = list
        .iter()
        .map(|s| {
            Listen::parse(s)
                .map_err(|e| match origin {
                    // As it was typed: the flag, then its value (which `e` starts with).
                    Origin::Flag(flag) => format!("{flag} {e}"),
                    key => format!("{key}: {e}"),
                })
                .map(with_default)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if listen.is_empty() {
        return Err(format!("{origin}: at least one listen address is needed"));
    }
    Ok(listen)
}

/// `--advertise HOST[:PORT]` / `server.advertise`: for every socket without its own.
fn advertise(o: &Overrides, f: &FileServer, src: Source) -> Result<Option<Advertise>, String> {
    let (given, origin) = src.pick(
        "--advertise",
        o.advertise.as_deref(),
        "server.advertise",
        f.advertise.as_deref(),
    );
    given
        .map(|a| Advertise::parse(a.trim()).map_err(|e| format!("{origin}: {e}")))
        .transpose()
}

/// `--alias HOST[:PORT]` (repeatable) / `server.aliases`: other names of this instance.
fn aliases(o: &Overrides, f: &FileServer, src: Source) -> Result<Vec<Advertise>, String> {
    let (list, origin) = src.pick(
        "--alias",
        given(&o.alias),
        "server.aliases",
        f.aliases.as_deref(),
    );
    list.unwrap_or_default()
        .iter()
        .map(|a| Advertise::parse(a.trim()).map_err(|e| format!("{origin}: {e}")))
        .collect()
}

fn domains(
    o: &Overrides,
    f: &FileServer,
    src: Source,
    listen: &[Listen],
) -> Result<Vec<String>, String> {
    // Only the flag's values are comma-separated; the file has a list (a comma there is an
    // error like any other character a domain cannot hold).
    let flag: Vec<String> = o
        .domain
        .iter()
        .flat_map(|d| d.split(','))
        .map(str::to_owned)
        .collect();
    let (list, origin) = src.pick(
        "--domain",
        given(&flag),
        "server.domains",
        f.domains.as_deref(),
    );
    let mut domains = match list {
        Some(list) => list
            .iter()
            .map(|d| check_domain(d, origin))
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            // Like a stock Kamailio: the addresses it listens on, and localhost.
            let mut d = vec!["localhost".to_owned()];
            for l in listen {
                let ip = l.addr.ip().to_string();
                if !d.contains(&ip) {
                    d.push(ip);
                }
            }
            d
        }
    };
    // Duplicates anywhere in the list, first spelling kept.
    let mut seen = std::collections::HashSet::new();
    domains.retain(|d| seen.insert(d.clone()));
    Ok(domains)
}

/// Lowercased, brackets of an IPv6 address removed: the form hosts are compared in.
fn check_domain(d: &str, origin: Origin) -> Result<String, String> {
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

fn log_level(o: &Overrides, f: &FileServer, src: Source) -> Result<String, String> {
    let (level, origin) = src.pick(
        "--log-level",
        o.log_level.as_deref(),
        "server.log_level",
        f.log_level.as_deref(),
    );
    let level = level.unwrap_or("info");
    if !["error", "warn", "info", "debug", "trace"].contains(&level) {
        return Err(format!(
            "{origin}: '{level}' is not one of error, warn, info, debug, trace"
        ));
    }
    Ok(level.to_owned())
}

/// `--metrics` / `server.metrics`: IP:PORT of the Prometheus endpoint.
fn metrics(o: &Overrides, f: &FileServer, src: Source) -> Result<Option<SocketAddr>, String> {
    let (given, origin) = src.pick(
        "--metrics",
        o.metrics.as_deref(),
        "server.metrics",
        f.metrics.as_deref(),
    );
    given
        .map(|a| {
            a.trim()
                .parse::<SocketAddr>()
                .map_err(|_| format!("{origin}: '{a}' is not IP:PORT"))
        })
        .transpose()
}

/// `--shutdown-timeout` / `server.shutdown_timeout`: 0 to 300 s, default 5.
fn shutdown_timeout(o: &Overrides, f: &FileServer, src: Source) -> Result<Duration, String> {
    let (secs, origin) = src.pick(
        "--shutdown-timeout",
        o.shutdown_timeout,
        "server.shutdown_timeout",
        f.shutdown_timeout,
    );
    match secs.unwrap_or(5) {
        s if s <= 300 => Ok(Duration::from_secs(s)),
        s => Err(format!("{origin}: {s} is out of range (0 to 300 seconds)")),
    }
}

/// `--log-format` / `server.log_format`: true for `json`.
fn log_format(o: &Overrides, f: &FileServer, src: Source) -> Result<bool, String> {
    let (format, origin) = src.pick(
        "--log-format",
        o.log_format.as_deref(),
        "server.log_format",
        f.log_format.as_deref(),
    );
    match format.unwrap_or("human") {
        "human" => Ok(false),
        "json" => Ok(true),
        other => Err(format!("{origin}: '{other}' is not one of human, json")),
    }
}

/// Event-loop threads: the flag, the file, else one per core. Apart from [`resolve`] because
/// `Config::load` checks it after every other section.
pub(super) fn threads(o: &Overrides, f: &FileServer, src: Source) -> Result<usize, String> {
    match src.pick("--threads", o.threads, "server.threads", f.threads) {
        (Some(0), origin) => Err(format!("{origin}: must be at least 1")),
        (Some(n), origin) if n > 256 => Err(format!("{origin}: {n} is more than 256")),
        (Some(n), _) => Ok(n),
        (None, _) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(o: Overrides, f: FileServer) -> String {
        let src = Source::new("FILE");
        match resolve(&o, &f, src) {
            Ok(_) => threads(&o, &f, src).unwrap_err(),
            Err(e) => e,
        }
    }

    #[test]
    fn flags_named_in_errors() {
        let f = FileServer::default;
        for (o, want) in [
            (
                Overrides {
                    listen: vec!["udp:x".into()],
                    ..Default::default()
                },
                "--listen 'udp:x': 'x' is not an IP:PORT (IPv6 as [::1]:5060)",
            ),
            (
                Overrides {
                    domain: vec!["ok.test,a b".into()],
                    ..Default::default()
                },
                "--domain: 'a b' is not a domain name or IP address",
            ),
            (
                Overrides {
                    log_level: Some("loud".into()),
                    ..Default::default()
                },
                "--log-level: 'loud' is not one of error, warn, info, debug, trace",
            ),
            (
                Overrides {
                    advertise: Some("a b".into()),
                    ..Default::default()
                },
                "--advertise: 'a b' is not HOST[:PORT] (IPv6 as [2001:db8::1]:5060)",
            ),
            (
                Overrides {
                    listen: vec!["udp:0.0.0.0:5060 advertise 1.2.3.4:0".into()],
                    ..Default::default()
                },
                "--listen 'udp:0.0.0.0:5060 advertise 1.2.3.4:0': advertise '1.2.3.4:0' is not HOST[:PORT] (IPv6 as [2001:db8::1]:5060)",
            ),
            (
                Overrides {
                    threads: Some(0),
                    ..Default::default()
                },
                "--threads: must be at least 1",
            ),
            (
                Overrides {
                    threads: Some(300),
                    ..Default::default()
                },
                "--threads: 300 is more than 256",
            ),
        ] {
            assert_eq!(err(o, f()), want);
        }
    }

    #[test]
    fn file_keys_named_in_errors() {
        let o = Overrides::default;
        for (f, want) in [
            (
                FileServer {
                    listen: Some(vec![]),
                    ..Default::default()
                },
                "FILE: key 'server.listen': at least one listen address is needed",
            ),
            (
                FileServer {
                    listen: Some(vec!["sctp:1.2.3.4:5".into()]),
                    ..Default::default()
                },
                "FILE: key 'server.listen': 'sctp:1.2.3.4:5': unknown transport 'sctp' (udp or tcp)",
            ),
            (
                FileServer {
                    listen: Some(vec!["udp:0.0.0.0:5060 advertize x".into()]),
                    ..Default::default()
                },
                "FILE: key 'server.listen': 'udp:0.0.0.0:5060 advertize x': expected PROTO:HOST:PORT [advertise HOST[:PORT]]",
            ),
            (
                FileServer {
                    advertise: Some("[::1".into()),
                    ..Default::default()
                },
                "FILE: key 'server.advertise': '[::1' is not HOST[:PORT] (IPv6 as [2001:db8::1]:5060)",
            ),
            (
                FileServer {
                    domains: Some(vec!["a,b".into()]),
                    ..Default::default()
                },
                "FILE: key 'server.domains': 'a,b' is not a domain name or IP address",
            ),
            (
                FileServer {
                    max_message_size: Some(10),
                    ..Default::default()
                },
                "FILE: key 'server.max_message_size': 10 is out of range (1024 to 1048576)",
            ),
            (
                FileServer {
                    log_level: Some("loud".into()),
                    ..Default::default()
                },
                "FILE: key 'server.log_level': 'loud' is not one of error, warn, info, debug, trace",
            ),
            (
                FileServer {
                    threads: Some(0),
                    ..Default::default()
                },
                "FILE: key 'server.threads': must be at least 1",
            ),
        ] {
            assert_eq!(err(o(), f), want);
        }
    }

    #[test]
    fn defaults_and_domains() {
        let src = Source::new("");
        let s = resolve(&Overrides::default(), &FileServer::default(), src).unwrap();
        let listen: Vec<String> = s.listen.iter().map(|l| l.to_string()).collect();
        assert_eq!(listen, ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]);
        assert_eq!(s.domains, ["localhost", "127.0.0.1"]);
        assert_eq!(
            (s.max_message_size, s.tcp_idle_timeout, s.log_level.as_str()),
            (65536, Duration::from_secs(600), "info")
        );
        let o = Overrides {
            domain: vec!["A.test,b.test".into(), "[::1]".into()],
            ..Default::default()
        };
        let f = FileServer {
            domains: Some(vec!["file.test".into()]),
            tcp_idle_timeout: Some(0),
            ..Default::default()
        };
        let s = resolve(&o, &f, src).unwrap();
        assert_eq!(s.domains, ["a.test", "b.test", "::1"]);
        assert_eq!(s.tcp_idle_timeout, Duration::from_secs(1));
    }

    /// A socket's own `advertise` wins; `--advertise` fills the others, port defaulting to
    /// the socket's.
    #[test]
    fn advertise_per_socket_and_for_all() {
        let o = Overrides {
            listen: vec![
                "udp:0.0.0.0:5060 advertise SIP.example.test:5080".into(),
                "tcp:0.0.0.0:5060".into(),
                "udp:[::]:5060 advertise [2001:db8::5]".into(),
            ],
            advertise: Some("203.0.113.5".into()),
            ..Default::default()
        };
        let s = resolve(&o, &FileServer::default(), Source::new("")).unwrap();
        let listen: Vec<String> = s.listen.iter().map(|l| l.to_string()).collect();
        assert_eq!(
            listen,
            [
                "udp:0.0.0.0:5060 advertise sip.example.test:5080",
                "tcp:0.0.0.0:5060 advertise 203.0.113.5",
                "udp:[::]:5060 advertise [2001:db8::5]",
            ]
        );
    }
}
