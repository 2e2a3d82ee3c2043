//! Prometheus metrics (issue 14), with the Prometheus project's own crate
//! (`prometheus-client`): counted where things happen, in any layer (this module imports
//! nothing of ours), encoded in the text exposition format for `--metrics HOST:PORT`
//! ([`crate::server`] serves it and adds the gauges it samples at scrape time).
//!
//! Labels are bounded: a method is one of the methods sipfarm knows or `other`, a code is a
//! number 100..699, a node is one of the configured nodes, a reason one of ours. Nothing
//! from the network becomes a label value as it is.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Method {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Code {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NodeResult {
    node: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Node {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Reason {
    reason: &'static str,
}

pub(crate) struct Metrics {
    requests: Family<Method, Counter>,
    responses: Family<Code, Counter>,
    memcached_ops: Family<NodeResult, Counter>,
    memcached_seconds: Family<Node, Histogram>,
    cas_retries: Counter,
    refills: Family<Node, Counter>,
    dropped: Family<Reason, Counter>,
    auth_failures: Counter,
    auth_blocks: Counter,
    /// Sampled at scrape time by whoever serves the endpoint.
    pub(crate) node_dead: Family<Node, Gauge>,
    pub(crate) tcp_connections: Gauge,
    pub(crate) node_items: Family<Node, Gauge>,
    pub(crate) in_flight: Gauge,
    /// The farm's census (`location::farm::census`), read at scrape.
    pub(crate) registrations: Gauge,
    pub(crate) bindings: Gauge,
    registry: Registry,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to 1.6 s: a healthy node answers in well under a millisecond on a LAN; the
    // default deadline is 100 ms.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 15,
    ))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("sipfarm");
    let m = Metrics {
        requests: Family::default(),
        responses: Family::default(),
        memcached_ops: Family::default(),
        memcached_seconds: Family::new_with_constructor(latency_histogram),
        cas_retries: Counter::default(),
        refills: Family::default(),
        dropped: Family::default(),
        auth_failures: Counter::default(),
        auth_blocks: Counter::default(),
        node_dead: Family::default(),
        tcp_connections: Gauge::default(),
        node_items: Family::default(),
        in_flight: Gauge::default(),
        registrations: Gauge::default(),
        bindings: Gauge::default(),
        registry: Registry::default(),
    };
    registry.register(
        "requests",
        "SIP requests received, by method",
        m.requests.clone(),
    );
    registry.register(
        "responses",
        "SIP answers sent by this instance (not forwarded ones), by code",
        m.responses.clone(),
    );
    registry.register(
        "memcached_operations",
        "memcached calls by node and result (ok, error: answered with an error, lost: no answer)",
        m.memcached_ops.clone(),
    );
    registry.register(
        "memcached_operation_seconds",
        "memcached call latency by node",
        m.memcached_seconds.clone(),
    );
    registry.register(
        "cas_retries",
        "writes retried after another writer's compare-and-swap",
        m.cas_retries.clone(),
    );
    registry.register(
        "refills",
        "refill passes run for a node that came back",
        m.refills.clone(),
    );
    registry.register(
        "dropped_messages",
        "messages dropped unanswered, by reason",
        m.dropped.clone(),
    );
    registry.register(
        "auth_failures",
        "requests with wrong credentials",
        m.auth_failures.clone(),
    );
    registry.register(
        "auth_blocks",
        "sources blocked after too many failures",
        m.auth_blocks.clone(),
    );
    registry.register(
        "memcached_node_dead",
        "1 while this instance considers the node dead (its breaker is open)",
        m.node_dead.clone(),
    );
    registry.register(
        "tcp_connections",
        "TCP connections open (accepted and dialled)",
        m.tcp_connections.clone(),
    );
    registry.register(
        "memcached_items",
        "items a node holds (memcached's curr_items, sampled at scrape): about R per registered AOR",
        m.node_items.clone(),
    );
    registry.register(
        "requests_in_flight",
        "requests being handled now",
        m.in_flight.clone(),
    );
    registry.register(
        "registrations",
        "AORs with a live binding in the farm (estimated by the census, every 5 minutes)",
        m.registrations.clone(),
    );
    registry.register(
        "bindings",
        "live bindings in the farm (estimated by the census, every 5 minutes)",
        m.bindings.clone(),
    );
    Metrics { registry, ..m }
});

pub(crate) fn get() -> &'static Metrics {
    &METRICS
}

/// A method as a label: the ones sipfarm knows, else `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 14] = [
        "REGISTER",
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "MESSAGE",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "INFO",
        "UPDATE",
        "PRACK",
        "PUBLISH",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

pub(crate) fn request(method: &str) {
    get()
        .requests
        .get_or_create(&Method {
            method: method_label(method),
        })
        .inc();
}

/// An answer of ours, by the code on its status line (`SIP/2.0 200 ...`).
pub(crate) fn answered(bytes: &[u8]) {
    let code = bytes
        .get(8..11)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..700).contains(c));
    if let Some(code) = code {
        get().responses.get_or_create(&Code { code }).inc();
    }
}

pub(crate) fn memcached(node: &str, result: &'static str, took: Duration) {
    let m = get();
    m.memcached_ops
        .get_or_create(&NodeResult {
            node: node.to_owned(),
            result,
        })
        .inc();
    m.memcached_seconds
        .get_or_create(&Node {
            node: node.to_owned(),
        })
        .observe(took.as_secs_f64());
}

pub(crate) fn cas_retry() {
    get().cas_retries.inc();
}

pub(crate) fn refill(node: &str) {
    get()
        .refills
        .get_or_create(&Node {
            node: node.to_owned(),
        })
        .inc();
}

pub(crate) fn dropped(reason: &'static str) {
    get().dropped.get_or_create(&Reason { reason }).inc();
}

pub(crate) fn auth_failure() {
    get().auth_failures.inc();
}

pub(crate) fn auth_block() {
    get().auth_blocks.inc();
}

pub(crate) fn set_node_items(node: &str, items: u64) {
    get()
        .node_items
        .get_or_create(&Node {
            node: node.to_owned(),
        })
        .set(i64::try_from(items).unwrap_or(i64::MAX));
}

pub(crate) fn set_node_dead(node: &str, dead: bool) {
    get()
        .node_dead
        .get_or_create(&Node {
            node: node.to_owned(),
        })
        .set(i64::from(dead));
}

/// The text exposition format of everything.
pub(crate) fn encode() -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &get().registry);
    out
}
