//! Start-up and the event loops: one single-threaded tokio runtime per core
//! (`server.threads`), each with its own sockets on the same addresses (SO_REUSEPORT) and its
//! own memcached connections, sharing one store, one connection table and the configuration.
//! A request never hops between threads: the task that reads it answers it.

use super::Server;
use crate::auth::Auth;
use crate::clock;
use crate::config::Config;
use crate::identity::Identity;
use crate::location::Store;
use crate::sip::uri::host_port;
use crate::transport::bind::{Sockets, bind_sockets};
use crate::transport::{self, Listen, Proto};
use std::net::SocketAddr;
use std::sync::Arc;

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
pub fn run(cfg: Config) -> Result<(), String> {
    let threads = cfg.threads.max(1);
    let rt = current_thread_runtime()?;
    let (first, server) = rt.block_on(async {
        let first = bind_sockets(&cfg.listen, threads > 1).await?;
        let server = build(cfg, &first).await?;
        Ok::<_, String>((first, server))
    })?;
    let mut handles = Vec::new();
    for i in 1..threads {
        let server = server.clone();
        let listen: Vec<Listen> = first.bound.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("sipfarm-{i}"))
                .spawn(move || -> Result<(), String> {
                    clock::set_runtime_index(i);
                    let rt = current_thread_runtime()?;
                    rt.block_on(async move {
                        let sockets = bind_sockets(&listen, true).await?;
                        serve(server, sockets).await
                    })
                })
                .map_err(|e| format!("cannot start thread {i}: {e}"))?,
        );
    }
    let result = rt.block_on(serve(server, first));
    for h in handles {
        let _ = h.join();
    }
    result
}

/// The store and server, built once and shared by every runtime.
async fn build(cfg: Config, sockets: &Sockets) -> Result<Arc<Server>, String> {
    let locals: Vec<(Proto, SocketAddr)> =
        sockets.bound.iter().map(|l| (l.proto, l.addr)).collect();
    let identity = Arc::new(
        Identity::new(
            cfg.domains.clone(),
            cfg.proxy.farm_uri.clone(),
            cfg.proxy.farm_host.clone(),
            locals,
        )
        .with_farm_nodes(farm_node_addresses(&cfg).await),
    );
    let auth = open_auth(&cfg)?;
    let store = Store::open(cfg.memcached.as_ref(), cfg.threads).await?;
    Ok(Arc::new(Server::new(
        cfg,
        identity,
        store,
        auth,
        sockets.udp.clone(),
    )))
}

/// The IP addresses of the memcached nodes (names resolved once, at start).
async fn farm_node_addresses(cfg: &Config) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    for (node, _) in cfg.memcached.iter().flat_map(|m| m.nodes.iter()) {
        match tokio::net::lookup_host(node.as_str()).await {
            Ok(addrs) => out.extend(addrs.map(|a| a.ip())),
            Err(e) => tracing::warn!(%node, error = %e, "cannot resolve a memcached node"),
        }
    }
    out
}

/// The users and the nonce secret, read once at start; without them, a warning when the
/// instance can be reached from other machines (anyone could then register any user).
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

/// Run one event loop's listeners until one fails.
async fn serve(server: Arc<Server>, sockets: Sockets) -> Result<(), String> {
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
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            return Err(format!("a listener task failed: {e}"));
        }
    }
    Ok(())
}
