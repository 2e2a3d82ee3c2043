//! The `[memcached]` section: the farm's nodes, replication, deadline and record limits.
//! No nodes: the embedded in-memory store.

use super::file::{FileMemcached, NodeSpec};
use super::origin::{Origin, Source};
use super::{MemcachedConfig, Overrides};
use std::time::Duration;

pub(super) fn resolve(
    o: &Overrides,
    f: &FileMemcached,
    src: Source,
) -> Result<Option<MemcachedConfig>, String> {
    let nodes = nodes(o, f, src)?;
    if nodes.is_empty() {
        if let Some(r) = o.replicas {
            return Err(format!("--replicas {r}: needs --memcached nodes"));
        }
        if let Some(w) = o.write_quorum {
            return Err(format!("--write-quorum {w}: needs --memcached nodes"));
        }
        return Ok(None);
    }
    let (replicas, origin) = src.pick("--replicas", o.replicas, "memcached.replicas", f.replicas);
    let replicas = replicas.unwrap_or(2.min(nodes.len()));
    if replicas == 0 || replicas > nodes.len() {
        return Err(format!(
            "{origin}: {replicas} must be between 1 and the number of nodes ({})",
            nodes.len()
        ));
    }
    let (quorum, origin) = src.pick(
        "--write-quorum",
        o.write_quorum,
        "memcached.write_quorum",
        f.write_quorum,
    );
    let write_quorum = quorum.unwrap_or(1);
    if write_quorum == 0 || write_quorum > replicas {
        return Err(format!(
            "{origin}: {write_quorum} must be between 1 and the replicas ({replicas})"
        ));
    }
    let timeout_ms = f.timeout_ms.unwrap_or(100);
    if !(1..=10_000).contains(&timeout_ms) {
        return Err(format!(
            "{}: {timeout_ms} is out of range (1 to 10000)",
            src.key("memcached.timeout_ms")
        ));
    }
    let key_prefix = f
        .key_prefix
        .clone()
        .unwrap_or_else(|| "sipfarm:".to_owned());
    if key_prefix.len() > 64 || !key_prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{}: '{key_prefix}' must be at most 64 printable characters without spaces",
            src.key("memcached.key_prefix")
        ));
    }
    let item_limit = f.item_limit.unwrap_or(1_000_000);
    if !(1024..=128 << 20).contains(&item_limit) {
        return Err(format!(
            "{}: {item_limit} is out of range",
            src.key("memcached.item_limit")
        ));
    }
    let refresh_cache_bytes = f.refresh_cache_bytes.unwrap_or(64 << 20);
    if refresh_cache_bytes > 64 << 30 {
        return Err(format!(
            "{}: {refresh_cache_bytes} is out of range (0 to 64 GiB)",
            src.key("memcached.refresh_cache_bytes")
        ));
    }
    Ok(Some(MemcachedConfig {
        pipeline: f.pipeline.unwrap_or(true),
        refresh_cache: f.refresh_cache.unwrap_or(262_144).min(16 << 20),
        refresh_cache_bytes,
        nodes,
        replicas,
        write_quorum,
        timeout: Duration::from_millis(timeout_ms),
        key_prefix,
        item_limit,
    }))
}

/// The nodes with their weights, in the order given (the ring hashes these strings).
fn nodes(o: &Overrides, f: &FileMemcached, src: Source) -> Result<Vec<(String, u32)>, String> {
    // The flag lists plain HOST:PORT, empty pieces skipped. Given but empty (an unset
    // variable in a container's SIPFARM_MEMCACHED) is an error, never a silent switch to the
    // embedded store, which would split the farm's users between instances.
    let flag: Option<Vec<NodeSpec>> = o.memcached.as_ref().map(|list| {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| NodeSpec::Addr(s.to_owned()))
            .collect()
    });
    if flag.as_ref().is_some_and(Vec::is_empty) {
        return Err(
            "--memcached (or SIPFARM_MEMCACHED): no node given; leave it out for the embedded \
             store"
                .into(),
        );
    }
    let (list, origin) = src.pick(
        "--memcached",
        flag.as_deref(),
        "memcached.nodes",
        f.nodes.as_deref(),
    );
    let nodes = list
        .unwrap_or_default()
        .iter()
        .map(|n| node(n, origin))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (a, _)) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|(b, _)| a == b) {
            return Err(format!("{origin}: memcached node {a} is listed twice"));
        }
    }
    Ok(nodes)
}

fn node(n: &NodeSpec, origin: Origin) -> Result<(String, u32), String> {
    match n {
        NodeSpec::Addr(a) => check_node(a, origin).map(|a| (a, 1)),
        NodeSpec::Weighted { addr, weight: 0 } => {
            Err(format!("{origin}: weight of {addr} must be at least 1"))
        }
        NodeSpec::Weighted { addr, weight } => check_node(addr, origin).map(|a| (a, *weight)),
    }
}

fn check_node(addr: &str, origin: Origin) -> Result<String, String> {
    let addr = addr.trim();
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{origin}: '{addr}' is not HOST:PORT"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{origin}: '{addr}' is not HOST:PORT"));
    }
    Ok(addr.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Source = Source::new("FILE");

    fn file_nodes(nodes: &[NodeSpec]) -> FileMemcached {
        FileMemcached {
            nodes: Some(nodes.to_vec()),
            ..Default::default()
        }
    }

    fn addr(a: &str) -> NodeSpec {
        NodeSpec::Addr(a.to_owned())
    }

    #[test]
    fn flag_replaces_file_nodes() {
        let f = file_nodes(&[
            NodeSpec::Weighted {
                addr: " h:1 ".into(),
                weight: 5,
            },
            addr("h:2"),
        ]);
        let mc = resolve(&Overrides::default(), &f, SRC).unwrap().unwrap();
        assert_eq!(mc.nodes, [("h:1".to_owned(), 5), ("h:2".to_owned(), 1)]);
        assert_eq!((mc.replicas, mc.key_prefix.as_str()), (2, "sipfarm:"));
        assert_eq!(
            (mc.refresh_cache, mc.refresh_cache_bytes),
            (262_144, 64 << 20)
        );
        let o = Overrides {
            memcached: Some("a:1,".into()),
            ..Default::default()
        };
        let mc = resolve(&o, &f, SRC).unwrap().unwrap();
        assert_eq!((mc.nodes.len(), mc.replicas), (1, 1));
        let o = Overrides {
            memcached: Some(" , ".into()),
            ..Default::default()
        };
        assert!(
            resolve(&o, &f, SRC).is_err(),
            "given but empty: never the embedded store"
        );
    }

    #[test]
    fn errors() {
        let flags = |memcached: &str, replicas: Option<usize>| Overrides {
            memcached: Some(memcached.into()),
            replicas,
            ..Default::default()
        };
        let none = FileMemcached::default();
        let one = file_nodes(&[addr("h:1")]);
        let weightless = file_nodes(&[NodeSpec::Weighted {
            addr: "h:1".into(),
            weight: 0,
        }]);
        let with = |f: FileMemcached| FileMemcached {
            nodes: one.nodes.clone(),
            ..f
        };
        for (o, f, want) in [
            (
                flags("nonsense", None),
                &none,
                "--memcached: 'nonsense' is not HOST:PORT",
            ),
            (
                flags("a:1, a:1", None),
                &none,
                "--memcached: memcached node a:1 is listed twice",
            ),
            (
                flags("", Some(2)),
                &one,
                "--memcached (or SIPFARM_MEMCACHED): no node given; leave it out for the embedded store",
            ),
            (
                flags("a:1,b:2", Some(3)),
                &none,
                "--replicas: 3 must be between 1 and the number of nodes (2)",
            ),
            (
                Overrides {
                    memcached: Some("a:1,b:2".into()),
                    replicas: Some(2),
                    write_quorum: Some(3),
                    ..Default::default()
                },
                &none,
                "--write-quorum: 3 must be between 1 and the replicas (2)",
            ),
            (
                Overrides::default(),
                &file_nodes(&[addr(":11211")]),
                "FILE: key 'memcached.nodes': ':11211' is not HOST:PORT",
            ),
            (
                Overrides::default(),
                &weightless,
                "FILE: key 'memcached.nodes': weight of h:1 must be at least 1",
            ),
            (
                Overrides::default(),
                &with(FileMemcached {
                    replicas: Some(2),
                    ..Default::default()
                }),
                "FILE: key 'memcached.replicas': 2 must be between 1 and the number of nodes (1)",
            ),
            (
                Overrides::default(),
                &with(FileMemcached {
                    timeout_ms: Some(0),
                    ..Default::default()
                }),
                "FILE: key 'memcached.timeout_ms': 0 is out of range (1 to 10000)",
            ),
            (
                Overrides::default(),
                &with(FileMemcached {
                    key_prefix: Some("a b".into()),
                    ..Default::default()
                }),
                "FILE: key 'memcached.key_prefix': 'a b' must be at most 64 printable characters without spaces",
            ),
            (
                Overrides::default(),
                &with(FileMemcached {
                    item_limit: Some(1),
                    ..Default::default()
                }),
                "FILE: key 'memcached.item_limit': 1 is out of range",
            ),
            (
                Overrides::default(),
                &with(FileMemcached {
                    refresh_cache_bytes: Some(1 << 40),
                    ..Default::default()
                }),
                "FILE: key 'memcached.refresh_cache_bytes': 1099511627776 is out of range (0 to 64 GiB)",
            ),
        ] {
            assert_eq!(resolve(&o, f, SRC).unwrap_err(), want);
        }
    }
}
