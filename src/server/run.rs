//! Start-up and the event loops: one single-threaded tokio runtime per core
//! (`server.threads`), each with its own sockets on the same addresses (SO_REUSEPORT) and its
//! own memcached connections, sharing one store, one connection table and the configuration.
//! A request never hops between threads: the task that reads it answers it.

use super::Server;
use crate::auth::Auth;
use crate::clock;
use crate::config::Config;
use crate::identity::{Identity, Local};
use crate::location::Store;
use crate::resolve::Resolver;
use crate::sip::uri::{host as uri_host, host_port, parse_sip};
use crate::transport::bind::{self, Sockets, bind_sockets};
use crate::transport::{self, Listen, Proto};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// Serve until the process ends: one single-threaded runtime per core (`server.threads`),
/// each with its own sockets on the same addresses (SO_REUSEPORT), sharing one location
/// store and one connection table. A request never hops between threads: the task that
/// reads it answers it. Errors (a socket that cannot be bound, no memcached node answering)
/// are returned for `main` to print; they happen before anything is served.
pub fn run(cfg: Config, source: Option<super::ConfigSource>) -> Result<(), String> {
    let threads = cfg.threads.max(1);
    let rt = current_thread_runtime()?;
    let (first, server) = rt.block_on(async {
        let first = bind_sockets(&cfg.listen, threads > 1).await?;
        let metrics = match cfg.metrics {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("--metrics {addr}: cannot listen: {e}"))?,
            ),
            None => None,
        };
        let server = build(cfg, &first, source).await?;
        if let Some(l) = metrics {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(%addr, "Prometheus metrics at GET /metrics");
            }
            tokio::spawn(super::metrics::serve(l, server.clone()));
        }
        Ok::<_, String>((first, server))
    })?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    for i in 1..threads {
        let server = server.clone();
        let stop = stop.clone();
        let listen: Vec<Listen> = first.bound.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("sipfarm-{i}"))
                .spawn(move || -> Result<(), String> {
                    clock::set_runtime_index(i);
                    let rt = current_thread_runtime()?;
                    rt.block_on(async move {
                        let sockets = bind_sockets(&listen, true).await?;
                        serve(server, sockets, stop).await
                    })
                })
                .map_err(|e| format!("cannot start thread {i}: {e}"))?,
        );
    }
    let result = rt.block_on(async {
        tokio::spawn(on_signals(stop_tx, server.clone()));
        serve(server.clone(), first, stop).await
    });
    for h in handles {
        let _ = h.join();
    }
    result
}

/// The store and server, built once and shared by every runtime.
async fn build(
    cfg: Config,
    sockets: &Sockets,
    source: Option<super::ConfigSource>,
) -> Result<Arc<Server>, String> {
    let key = crate::identity::load_key(cfg.secret_file.as_deref())?;
    let mut identity = Identity::of_instance(
        cfg.domains.clone(),
        cfg.proxy.farm_uri.clone(),
        locals(&sockets.bound),
    );
    if sockets.bound.iter().any(|l| l.addr.ip().is_unspecified()) {
        // On 0.0.0.0 / [::]: a request to any address of this host reached us, and our Via
        // names the primary one unless the socket advertises another.
        let primary = (bind::primary_address(false), bind::primary_address(true));
        tracing::info!(ipv4 = ?primary.0, ipv6 = ?primary.1, "listening on the unspecified address: primary addresses");
        identity = identity.with_host_addresses(bind::host_addresses(), primary);
    }
    let identity = Arc::new(
        identity
            .with_aliases(
                cfg.aliases
                    .iter()
                    .map(|a| (a.host.clone(), a.port))
                    .collect(),
            )
            .with_farm_nodes(farm_node_addresses(&cfg).await)
            .with_key(key),
    );
    for p in [Proto::Udp, Proto::Tcp] {
        if sockets.bound.iter().any(|l| l.proto == p) {
            tracing::info!(uri = %identity.own_uri(p), "this instance's own URI");
        }
    }
    if let Some(farm) = identity.farm_uri() {
        tokio::spawn(warn_unresolvable_farm_uri(
            farm.to_owned(),
            cfg.proxy.dns_server,
        ));
    }
    let auth = open_auth(&cfg)?;
    let store = Store::open(cfg.memcached.as_ref(), cfg.threads).await?;
    Ok(Arc::new(Server::new(
        cfg,
        identity,
        store,
        auth,
        sockets.udp.clone(),
        source,
    )))
}

/// Our sockets with what each advertises (its own port when the advertised address names
/// none).
pub(super) fn locals(bound: &[Listen]) -> Vec<Local> {
    bound
        .iter()
        .map(|l| Local {
            proto: l.proto,
            addr: l.addr,
            advertise: l
                .advertise
                .as_ref()
                .map(|a| (a.host.clone(), a.port.unwrap_or(l.addr.port()))),
        })
        .collect()
}

/// A configured farm URI is what phones must resolve for their ACK and BYE (RFC 3263): when
/// its host is a name with no SRV and no address record, calls are answered and never
/// complete. Said once at start, from a task of its own (bounded: DNS may be slow or absent).
async fn warn_unresolvable_farm_uri(farm_uri: String, dns_server: Option<SocketAddr>) {
    let host = parse_sip(&farm_uri)
        .and_then(|u| uri_host(&u))
        .unwrap_or_default();
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
    {
        return;
    }
    let resolver = Resolver::new(dns_server, 4);
    let mut found = false;
    // As a phone would resolve it (RFC 3263: SRV unless a port is written, then A/AAAA),
    // over UDP and over TCP.
    for probe in [farm_uri.clone(), format!("{farm_uri};transport=tcp")] {
        let Some(probe) = parse_sip(&probe) else {
            continue;
        };
        let lookup = tokio::time::timeout(FARM_URI_CHECK, resolver.resolve(&probe));
        if matches!(lookup.await, Ok(Ok(_))) {
            found = true;
            break;
        }
    }
    if !found {
        tracing::warn!(
            farm_uri = %farm_uri,
            "the farm URI's host has no SRV (_sip._udp, _sip._tcp) and no A/AAAA record: phones \
             cannot send the ACK and BYE of calls through it (they never complete); add the DNS \
             records, or leave --farm-uri unset so that each instance names its own address"
        );
    }
}

/// How long the start-up check of the farm URI waits for DNS.
const FARM_URI_CHECK: Duration = Duration::from_secs(5);

/// The IP addresses of the memcached nodes (names resolved once, at start; one that does not
/// resolve is logged and left out).
pub(super) async fn farm_node_addresses(cfg: &Config) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (node, _) in cfg.memcached.iter().flat_map(|m| m.nodes.iter()) {
        match node_addresses(node).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => tracing::warn!(%node, error = %e, "cannot resolve a memcached node"),
        }
    }
    out
}

/// How long a node's name may take to resolve.
const RESOLVE_WITHIN: Duration = Duration::from_secs(3);

/// The addresses of one memcached node (`HOST:PORT`), within `RESOLVE_WITHIN`.
pub(super) async fn node_addresses(node: &str) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(RESOLVE_WITHIN, tokio::net::lookup_host(node)).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(format!("memcached node {node}: cannot resolve: {e}")),
        Err(_) => Err(format!("memcached node {node}: no DNS answer")),
    }
}

/// The users and the nonce secret, read once at start; without them, a warning when the
/// instance can be reached from other machines (anyone could then register any user).
/// `sipfarm config check`: what `run` reads before it binds a socket (the configuration, the
/// shared secret, the users file), without starting; a summary of it, or the first error.
pub fn check(cfg: &Config) -> Result<String, String> {
    crate::identity::load_key(cfg.secret_file.as_deref())?;
    let users = match &cfg.auth {
        Some(a) => format!(
            "digest authentication on, {} users",
            Auth::open(a)?.user_count()
        ),
        None => "authentication off".to_owned(),
    };
    let store = match &cfg.memcached {
        Some(m) => format!(
            "{} memcached nodes, {} replicas, write quorum {}",
            m.nodes.len(),
            m.replicas,
            m.write_quorum
        ),
        None => "embedded memory store".to_owned(),
    };
    let listen: Vec<String> = cfg.listen.iter().map(|l| l.to_string()).collect();
    Ok(format!(
        "listen {}; domains {}; {store}; {users}",
        listen.join(", "),
        cfg.domains.join(", ")
    ))
}

fn open_auth(cfg: &Config) -> Result<Option<Auth>, String> {
    let Some(a) = &cfg.auth else {
        if cfg.listen.iter().any(|l| !l.addr.ip().is_loopback()) {
            tracing::warn!(
                "authentication is off (no --users) on a non-loopback address: anyone who can \
                 reach this instance can register any user and relay through it"
            );
        }
        return Ok(None);
    };
    let auth = Auth::open(a)?;
    tracing::info!(users = auth.user_count(), file = %a.users_file.display(), "digest authentication on");
    Ok(Some(auth))
}

/// SIGTERM or SIGINT: tell every event loop to stop reading and drain. SIGHUP: read the
/// configuration again and apply what can change live (`reload`).
async fn on_signals(stop: tokio::sync::watch::Sender<bool>, server: Arc<Server>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot catch SIGTERM: it ends the process at once");
        return;
    };
    let which = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                let server = server.clone();
                tokio::spawn(async move { server.reload().await });
            }
        }
    };
    tracing::info!(
        signal = which,
        "shutting down: no new requests, draining those in flight"
    );
    let _ = stop.send(true);
}

/// After the stop: wait for the requests in flight (at most `server.shutdown_timeout`).
async fn drain(server: &Server) {
    use std::sync::atomic::Ordering;
    server.draining.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + server.cfg.shutdown_timeout;
    while server.in_flight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = server.in_flight.load(Ordering::Relaxed);
    if clock::runtime_index() == 0 {
        tracing::info!(
            left,
            "drained: exiting (TCP connections close with the process)"
        );
    }
}

/// Run one event loop's listeners until one fails, or until the stop: then no socket is read
/// any more (UDP) or accepted on (TCP), and the requests in flight are drained.
async fn serve(
    server: Arc<Server>,
    sockets: Sockets,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut tasks = tokio::task::JoinSet::new();
    let first = clock::runtime_index() == 0;
    for s in sockets.udp {
        if first {
            let addr = s.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(listen = %format!("udp:{}", host_port(addr)), "listening");
        }
        tasks.spawn(transport::udp::serve(
            s,
            server.clone(),
            server.admission.clone(),
        ));
    }
    for l in sockets.tcp {
        if first {
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(listen = %format!("tcp:{}", host_port(addr)), "listening");
        }
        tasks.spawn(transport::tcp::serve(
            l,
            server.clone(),
            server.tcp_settings(),
        ));
    }
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                None => return Ok(()),
                Some(Err(e)) => return Err(format!("a listener task failed: {e}")),
                Some(Ok(())) => {}
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    tasks.abort_all();
    drain(&server).await;
    Ok(())
}
