//! `sipfarm farm status`: what each memcached node says of itself (`stats`), and which nodes
//! a running instance considers dead right now (asked over SIP: an OPTIONS to the instance
//! with `X-Sipfarm-Status: nodes`, answered only to loopback sources).

use crate::location::admin;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

pub use crate::sip::header::{HEALTH_HEADER, NODE_HEADER, RING_HEADER, STATUS_HEADER};

/// One node as memcached reports it.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub addr: String,
    pub up: bool,
    pub items: u64,
    pub bytes: u64,
    pub limit: u64,
    pub hit_ratio: Option<f64>,
    pub evictions: u64,
    pub error: Option<String>,
    /// The ring id the instances wrote on it (their node list's), if any.
    pub ring: Option<String>,
}

pub async fn node_report(addr: &str, ring_key: &str) -> NodeReport {
    let ring = admin::get_text(addr, ring_key, Duration::from_secs(1))
        .await
        .ok()
        .flatten();
    match admin::stats(addr, Duration::from_secs(1)).await {
        Ok(s) => {
            let n = |k: &str| {
                admin::stat(&s, k)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let (hits, misses) = (n("get_hits"), n("get_misses"));
            NodeReport {
                addr: addr.to_owned(),
                up: true,
                items: n("curr_items"),
                bytes: n("bytes"),
                limit: n("limit_maxbytes"),
                hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
                evictions: n("evictions"),
                error: None,
                ring,
            }
        }
        Err(e) => NodeReport {
            addr: addr.to_owned(),
            up: false,
            items: 0,
            bytes: 0,
            limit: 0,
            hit_ratio: None,
            evictions: 0,
            error: Some(e),
            ring: None,
        },
    }
}

/// A running instance's answer: which nodes it considers dead (node -> dead), and its health
/// (the status code of its OPTIONS answer, and why when it is not 200).
pub struct InstanceView {
    pub nodes: Vec<(String, bool)>,
    pub code: u16,
    pub why: Option<String>,
    /// The ring id of its node list.
    pub ring: Option<String>,
}

/// Ask a running instance which nodes it considers dead: node -> dead.
pub async fn instance_view(instance: SocketAddr) -> Result<Vec<(String, bool)>, String> {
    ask_instance(instance).await.map(|v| v.nodes)
}

/// Ask a running instance for its view of the nodes and its health.
pub async fn ask_instance(instance: SocketAddr) -> Result<InstanceView, String> {
    let bind: SocketAddr = if instance.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    }
    .parse()
    .map_err(|_| "bind")?;
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let me = sock.local_addr().map_err(|e| e.to_string())?;
    let call_id = format!(
        "status-{}-{}",
        std::process::id(),
        crate::clock::now_millis()
    );
    let uri = format!("sip:{}", crate::sip::uri::host_port(instance));
    let req = format!(
        "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{call_id};rport\r\nMax-Forwards: 70\r\nFrom: <sip:status@localhost>;tag=s\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n{STATUS_HEADER}: nodes\r\nContent-Length: 0\r\n\r\n",
        crate::sip::uri::host_port(me)
    );
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        sock.send_to(req.as_bytes(), instance)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(700), sock.recv_from(&mut buf)).await
        {
            let text = String::from_utf8_lossy(&buf[..n]);
            // The value of our header `name` on each line that has one.
            let values = |name: &str| {
                let prefix = format!("{name}: ");
                text.lines()
                    .filter_map(move |l| l.strip_prefix(&prefix).map(|v| v.trim().to_owned()))
                    .collect::<Vec<String>>()
            };
            let code = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            return Ok(InstanceView {
                nodes: values(NODE_HEADER)
                    .iter()
                    .filter_map(|v| {
                        let (addr, state) = v.rsplit_once(' ')?;
                        Some((addr.to_owned(), state == "dead"))
                    })
                    .collect(),
                code,
                why: values(HEALTH_HEADER).into_iter().next(),
                ring: values(RING_HEADER).into_iter().next(),
            });
        }
    }
    Err(format!("no answer from {instance}"))
}

/// The status table, then the ring ids (this node list's, the nodes', the instance's) and
/// the instance's view and health. `prefix`: the farm's key prefix.
pub async fn render(nodes: &[(String, u32)], prefix: &str, instance: Option<SocketAddr>) -> String {
    let ring_key = format!("{prefix}ring");
    let reports =
        futures::future::join_all(nodes.iter().map(|(n, _)| node_report(n, &ring_key))).await;
    let view = match instance {
        Some(i) => Some(ask_instance(i).await),
        None => None,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<5} {:>10} {:>12} {:>12} {:>9} {:>10}  instance view",
        "node", "state", "items", "bytes", "limit", "hit-ratio", "evictions"
    );
    for r in &reports {
        let seen = match &view {
            Some(Ok(v)) => match v.nodes.iter().find(|(a, _)| *a == r.addr) {
                Some((_, true)) => "dead",
                Some((_, false)) => "alive",
                None => "not in its list",
            },
            Some(Err(_)) => "?",
            None => "-",
        };
        let hit = r.hit_ratio.map_or("-".to_owned(), |h| format!("{h:.3}"));
        let _ = writeln!(
            out,
            "{:<24} {:<5} {:>10} {:>12} {:>12} {:>9} {:>10}  {}",
            r.addr,
            if r.up { "up" } else { "DOWN" },
            r.items,
            r.bytes,
            r.limit,
            hit,
            r.evictions,
            seen
        );
        if let Some(e) = &r.error {
            let _ = writeln!(out, "    {}: {e}", r.addr);
        }
    }
    ring_lines(&mut out, nodes, &reports, &view);
    match view {
        Some(Ok(v)) => {
            let dead: Vec<&str> = v
                .nodes
                .iter()
                .filter(|(_, d)| *d)
                .map(|(a, _)| a.as_str())
                .collect();
            let _ = writeln!(
                out,
                "instance {}: dead now: {}",
                instance.map(|i| i.to_string()).unwrap_or_default(),
                if dead.is_empty() {
                    "none".to_owned()
                } else {
                    dead.join(", ")
                }
            );
            let _ = match (v.code, &v.why) {
                (200, _) => writeln!(out, "health: ok (OPTIONS answered 200)"),
                (code, Some(why)) => {
                    writeln!(out, "health: UNHEALTHY (OPTIONS answered {code}): {why}")
                }
                (code, None) => writeln!(out, "health: OPTIONS answered {code}"),
            };
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "instance: {e}");
        }
        None => {}
    }
    out
}

/// Which node lists are in use: this one's ring id, what the nodes hold (written by the
/// instances at start), the instance's; a difference means users split between instances.
fn ring_lines(
    out: &mut String,
    nodes: &[(String, u32)],
    reports: &[NodeReport],
    view: &Option<Result<InstanceView, String>>,
) {
    let mine = crate::location::ring::Ring::new(nodes)
        .identity()
        .to_owned();
    let mut others: Vec<String> = Vec::new();
    for r in reports {
        if let Some(id) = &r.ring {
            if *id != mine {
                others.push(format!("{} holds {id}", r.addr));
            }
        }
    }
    if let Some(Ok(InstanceView { ring: Some(id), .. })) = view {
        if *id != mine {
            others.push(format!("the instance uses {id}"));
        }
    }
    let _ = if others.is_empty() {
        writeln!(out, "ring: {mine} (this node list; no other seen)")
    } else {
        writeln!(
            out,
            "ring: {mine} (this node list); ANOTHER NODE LIST IN USE: {} (users are split: every \
             instance must list the same nodes in the same spelling)",
            others.join(", ")
        )
    };
}
