//! The dispatcher: one framed message in, the right rule applied, the answer sent.
//!
//! RFC 3261 8.2.1 / 16.3 (what is checked before anything acts: syntax, URI scheme 416,
//! Proxy-Require / Require 420), 17.2.1-style ACK absorption for our own final answers
//! (by the deterministic To tag of `sip::response::local_tag`), 18.2.2 (where answers go).
//! REGISTER for one of our domains goes to the registrar; everything else to the proxy.

use crate::config::{Config, Listen, Proto};
use crate::location::LocationStore;
use crate::proxy;
use crate::registrar;
use crate::sip::addr::NameAddr;
use crate::sip::header::HeaderName;
use crate::sip::response::{Response, local_tag, udp_response_target};
use crate::sip::uri::{host as uri_host, host_port, parse_sip, scheme};
use crate::sip::{Framing, Message, ParseError};
use crate::transport::bind::{Sockets, bind_sockets};
use crate::transport::{self, Handler, Path, Peer};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::Instrument;

/// Option tags this element supports (RFC 3261 20.37); anything else in Require or
/// Proxy-Require gets 420.
pub const SUPPORTED: &[&str] = &["path"];

/// Methods we answer ourselves or route (for Allow).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER, PUBLISH";

pub struct Server<S> {
    pub cfg: Config,
    pub store: S,
    pub proxy: proxy::Proxy,
    /// Open TCP connections, accepted and dialled.
    pub conns: Arc<transport::Connections>,
}

impl<S: LocationStore> Server<S> {
    pub fn new(cfg: Config, store: S, proxy: proxy::Proxy) -> Server<S> {
        Server {
            cfg,
            store,
            proxy,
            conns: Arc::new(transport::Connections::default()),
        }
    }

    pub fn tcp_settings(&self) -> transport::tcp::Settings {
        transport::tcp::Settings {
            max_message: self.cfg.max_message_size,
            idle: self.cfg.tcp_idle_timeout,
            table: self.conns.clone(),
        }
    }

    fn is_ours(&self, host: &str) -> bool {
        self.cfg.is_our_domain(host)
    }

    /// Is this (lowercase) host:port one of this instance's own addresses?
    pub fn is_local_address(&self, host: &str, port: Option<u16>) -> bool {
        self.proxy.is_self(host, port)
    }

    /// Answer a request over the path it came in on.
    pub async fn answer(&self, req: &Message, peer: &Peer, bytes: Vec<u8>) {
        let dest = match (&peer.path, req.top_via()) {
            (Path::Udp(_), Ok(via)) => udp_response_target(via, peer.src),
            _ => peer.src,
        };
        transport::send(&peer.path, dest, Bytes::from(bytes)).await;
    }

    async fn reply(&self, req: &Message, peer: &Peer, code: u16, reason: &str) {
        let bytes = Response::new(req, peer.src, code, reason).build();
        self.answer(req, peer, bytes).await;
    }

    /// A message that could not be framed or indexed: answer if it is a request we can
    /// address, else drop it with a log line.
    async fn reject_unparsed(&self, data: Bytes, peer: &Peer, err: ParseError) {
        let (code, reason) = match &err {
            ParseError::Version => (505, "Version Not Supported"),
            ParseError::TooLarge => (513, "Message Too Large"),
            ParseError::Bad(why) => (400, *why),
            ParseError::Incomplete => (400, "Incomplete message"),
        };
        let head = Message::parse_head(data);
        match head {
            Some(m)
                if m.is_request() && m.method() != Some("ACK") && m.count(&HeaderName::Via) > 0 =>
            {
                tracing::debug!(src = %peer.src, code, reason, "refusing a malformed request");
                self.reply(&m, peer, code, reason).await;
            }
            _ => tracing::info!(src = %peer.src, error = %err, "dropped an unreadable message"),
        }
    }

    async fn handle_request(self: &Arc<Self>, msg: Message, peer: Peer) {
        let method = msg.method().unwrap_or_default().to_owned();
        if let Err(e) = msg.validate_request() {
            if method == "ACK" {
                tracing::debug!(error = %e, "dropped a malformed ACK");
            } else {
                let (code, reason) = match e {
                    ParseError::Version => (505, "Version Not Supported"),
                    ParseError::Bad(why) => (400, why),
                    _ => (400, "Bad Request"),
                };
                self.reply(&msg, &peer, code, reason).await;
            }
            return;
        }
        // An ACK for one of our own final answers: the To tag is the one we computed.
        if method == "ACK" {
            let to_tag = msg
                .get(&HeaderName::To)
                .and_then(|t| NameAddr::parse(t).ok())
                .and_then(|a| a.tag().map(str::to_owned));
            if to_tag.as_deref() == Some(local_tag(&msg).as_str()) {
                tracing::debug!("absorbed the ACK for our own answer");
                return;
            }
        }
        let ruri = msg.request_uri().unwrap_or_default().to_owned();
        let sch = scheme(&ruri);
        if !matches!(sch.as_deref(), Some("sip") | Some("sips")) {
            if method != "ACK" {
                self.reply(&msg, &peer, 416, "Unsupported URI Scheme").await;
            }
            return;
        }
        let Some(uri) = parse_sip(&ruri) else {
            if method != "ACK" {
                self.reply(&msg, &peer, 400, "Bad Request-URI").await;
            }
            return;
        };
        if !uri.headers().is_empty() {
            // RFC 4475 escruri: never forwarded, never turned into header fields.
            if method != "ACK" {
                self.reply(&msg, &peer, 400, "Request-URI must not hold headers")
                    .await;
            }
            return;
        }
        let host = uri_host(&uri).unwrap_or_default();
        // OPTIONS to the instance itself (monitoring, keep-alive pings): to one of our
        // addresses, or to one of our domains without a user part.
        let for_us_as_uas = (method == "REGISTER" && self.is_ours(&host))
            || (method == "OPTIONS"
                && (self.is_local_address(&host, uri.port())
                    || (uri.user().is_none() && self.is_ours(&host))));
        // Proxy-Require always (we are a proxy in front of everything); Require where we
        // are the UAS.
        let mut unknown: Vec<String> = Vec::new();
        let mut tags = msg
            .option_tags(&HeaderName::ProxyRequire)
            .unwrap_or_default();
        if for_us_as_uas {
            tags.extend(msg.option_tags(&HeaderName::Require).unwrap_or_default());
        }
        for t in tags {
            if !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t))
                && !unknown.iter().any(|u| u == t)
            {
                unknown.push(t.to_owned());
            }
        }
        if !unknown.is_empty() && method != "ACK" && method != "CANCEL" {
            let bytes = Response::new(&msg, peer.src, 420, "Bad Extension")
                .header("Unsupported", unknown.join(", "))
                .build();
            self.answer(&msg, &peer, bytes).await;
            return;
        }
        if for_us_as_uas && method == "REGISTER" {
            let reply = registrar::handle(
                &self.store,
                &self.cfg.registrar,
                &msg,
                peer.src,
                peer.proto,
                |d| self.is_ours(d),
            )
            .await;
            if let (Path::Tcp(conn), Some(until)) = (&peer.path, reply.hold_until) {
                conn.hold(until);
            }
            self.answer(&msg, &peer, reply.bytes).await;
            return;
        }
        if for_us_as_uas {
            let mut resp = Response::new(&msg, peer.src, 200, "OK")
                .header("Allow", ALLOW)
                .header("Supported", SUPPORTED.join(", "))
                .header("Accept", "application/sdp");
            // `sipfarm farm status` asks for our view of the nodes; only from this machine.
            let asks = HeaderName::from_wire(crate::status::STATUS_HEADER);
            if peer.src.ip().is_loopback() && msg.get(&asks).is_some() {
                for (addr, dead) in self.store.node_states() {
                    let state = if dead { "dead" } else { "up" };
                    resp = resp.header(crate::status::NODE_HEADER, format!("{addr} {state}"));
                }
            }
            self.answer(&msg, &peer, resp.build()).await;
            return;
        }
        proxy::route(self, msg, peer, uri, host).await;
    }

    async fn handle_response(self: &Arc<Self>, msg: Message, peer: Peer) {
        proxy::forward_response(self, msg, peer).await;
    }
}

impl<S: LocationStore> Handler for Server<S> {
    async fn on_message(self: Arc<Self>, data: Bytes, peer: Peer) {
        let framing = match peer.proto {
            Proto::Udp => Framing::Datagram,
            Proto::Tcp => Framing::Stream,
        };
        let msg = match Message::parse(data.clone(), framing, self.cfg.max_message_size) {
            Ok(m) => m,
            Err(e) => {
                self.reject_unparsed(data, &peer, e).await;
                return;
            }
        };
        let span = tracing::debug_span!(
            "sip",
            call_id = msg.call_id().unwrap_or(""),
            method = msg.method().unwrap_or("response"),
            src = %peer.src,
        );
        if msg.is_request() {
            self.handle_request(msg, peer).instrument(span).await;
        } else {
            self.handle_response(msg, peer).instrument(span).await;
        }
    }
}

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
        let server = build(cfg.clone(), &first).await?;
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
                    crate::clock::set_runtime_index(i);
                    let rt = current_thread_runtime()?;
                    rt.block_on(async move {
                        let sockets = bind_sockets(&listen, true).await?;
                        serve(server, sockets).await
                    })
                })
                .map_err(|e| format!("cannot start thread {i}: {e}"))?,
        );
    }
    let result = rt.block_on(server.run_tasks(first));
    for h in handles {
        let _ = h.join();
    }
    result
}

/// The store and server, built once and shared by every runtime.
async fn build(cfg: Config, sockets: &Sockets) -> Result<Arc<dyn Runner>, String> {
    use crate::location::farm::{Farm, FarmConfig};
    use crate::location::memory::MemoryStore;
    let locals: Vec<(Proto, SocketAddr)> =
        sockets.bound.iter().map(|l| (l.proto, l.addr)).collect();
    let proxy = proxy::Proxy::new(&cfg, &locals, &sockets.udp);
    match cfg.memcached.clone() {
        None => {
            tracing::info!("location store: embedded memory (bindings are lost at exit)");
            let server = Arc::new(Server::new(cfg, Arc::new(MemoryStore::new()), proxy));
            let sweeper = server.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    sweeper.store.sweep();
                }
            });
            Ok(server)
        }
        Some(mc) => {
            let farm = Farm::connect(FarmConfig {
                nodes: mc.nodes.clone(),
                replicas: mc.replicas,
                prefix: mc.key_prefix.clone(),
                timeout: mc.timeout,
                item_limit: mc.item_limit,
                pipelined: mc.pipeline,
                connections: cfg.threads.max(1),
                refresh_cache: mc.refresh_cache,
            })
            .await?;
            let farm = Arc::new(farm);
            farm.spawn_monitor(std::time::Duration::from_millis(500));
            Ok(Arc::new(Server::new(cfg, farm, proxy)))
        }
    }
}

/// A server of any store, as the runtimes see it.
pub trait Runner: Send + Sync + 'static {
    fn run_tasks(
        self: Arc<Self>,
        sockets: Sockets,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
}

impl<S: LocationStore> Runner for Server<S> {
    fn run_tasks(
        self: Arc<Self>,
        sockets: Sockets,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
        Box::pin(serve_server(self, sockets))
    }
}

async fn serve(server: Arc<dyn Runner>, sockets: Sockets) -> Result<(), String> {
    server.run_tasks(sockets).await
}

async fn serve_server<S: LocationStore>(
    server: Arc<Server<S>>,
    sockets: Sockets,
) -> Result<(), String> {
    let mut tasks = tokio::task::JoinSet::new();
    let first = crate::clock::runtime_index() == 0;
    for s in sockets.udp {
        if first {
            tracing::info!(listen = %format!("udp:{}", host_port(s.local_addr().map_err(|e| e.to_string())?)), "listening");
        }
        tasks.spawn(transport::udp::serve(s, server.clone()));
    }
    for l in sockets.tcp {
        if first {
            tracing::info!(listen = %format!("tcp:{}", host_port(l.local_addr().map_err(|e| e.to_string())?)), "listening");
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
