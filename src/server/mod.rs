//! The server: owns the sockets, the event loops, the store and the connection table;
//! receives a framed message, asks a rule for a decision, and sends what it returns.
//!
//! - [`dispatch`]: the checks every request must pass (RFC 3261 8.2.1 / 16.3: syntax, URI
//!   scheme 416, Proxy-Require / Require 420), 17.2.1-style ACK absorption for our own final
//!   answers (by the deterministic To tag of `sip::response::local_tag`), then REGISTER for
//!   one of our domains to the registrar, OPTIONS to the instance answered here, everything
//!   else to the proxy. Each returns an [`Outcome`], a value.
//! - [`send`]: the one place that sends (RFC 3261 18.2.2: where answers go); it never answers
//!   an ACK.
//! - [`run`]: one single-threaded event loop per core, each with its own sockets.

mod dispatch;
mod flows;
#[doc(hidden)]
pub mod fuzz;
mod metrics;
mod reload;
mod run;
mod send;

pub use reload::ConfigSource;
pub use run::{check, run};

use crate::auth::Auth;
use crate::config::Config;
use crate::identity::Identity;
use crate::live::Live;
use crate::location::Store;
use crate::proxy::{Forward, Proxy};
use crate::sip::response::Refusal;
use crate::sip::{Framing, Message, ParseError};
use crate::throttle::throttled_info;
use crate::transport::admission::SourceRate;
use crate::transport::{Connections, Handler, Limits, Peer, Proto};
use bytes::Bytes;
use flows::TcpFlows;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::UdpSocket;
use tracing::Instrument;

/// What a request comes to, decided before anything is sent.
pub(crate) enum Outcome {
    /// An answer of our own (the registrar's 200, OPTIONS), and for a REGISTER the latest
    /// expiry of the bindings it holds over its connection (Unix seconds).
    Answer {
        bytes: Vec<u8>,
        hold_until: Option<u64>,
    },
    Refuse(Refusal),
    Forward(Forward),
    /// Nothing to send (the ACK for one of our own answers).
    Absorb,
}

pub(crate) struct Server {
    /// The configuration read at start: what needs a restart to change.
    cfg: Config,
    /// `[limits]` now (SIGHUP swaps them).
    limits: Arc<Live<Limits>>,
    /// Where SIGHUP reads the configuration again (None: it only reads the users file).
    source: Option<ConfigSource>,
    /// The configuration in effect: the one read at start with what reloads changed live.
    applied: std::sync::Mutex<Config>,
    identity: Arc<Identity>,
    store: Store,
    proxy: Proxy,
    /// Digest authentication and the relay rules (None: off).
    auth: Option<Auth>,
    /// Open TCP connections, accepted and dialled.
    conns: Arc<Connections>,
    /// The per-source rate, checked before a datagram is read further.
    admission: Arc<SourceRate>,
    /// Requests being handled now (bounded by `limits.max_in_flight`).
    in_flight: AtomicUsize,
    /// `limits.max_in_flight` now (read per request: an atomic, not the limits' lock).
    max_in_flight: AtomicUsize,
    /// One reload at a time (SIGHUP twice in a row waits for the first).
    reloading: tokio::sync::Mutex<()>,
    /// SIGTERM came: requests still read (on open TCP connections) get 503; responses pass.
    draining: std::sync::atomic::AtomicBool,
    /// Which AORs registered over which of our TCP connections (their flows).
    tcp_flows: TcpFlows,
    /// The first event loop's UDP sockets: a request that came in over TCP leaves over UDP
    /// from one of these.
    udp: Vec<Arc<UdpSocket>>,
}

impl Server {
    fn new(
        cfg: Config,
        identity: Arc<Identity>,
        store: Store,
        auth: Option<Auth>,
        udp: Vec<Arc<UdpSocket>>,
        source: Option<ConfigSource>,
    ) -> Server {
        let proxy = Proxy::new(&cfg.proxy, identity.clone(), cfg.limits.max_dns_lookups);
        let trusted = cfg
            .auth
            .as_ref()
            .map(|a| a.trusted.clone())
            .unwrap_or_default();
        let per_source = u32::try_from(cfg.limits.max_in_flight_per_source).unwrap_or(u32::MAX);
        let admission = Arc::new(SourceRate::new(cfg.limits.source_rate, per_source, trusted));
        let cfg_max_connections = cfg.limits.max_connections;
        Server {
            limits: Arc::new(Live::new(cfg.limits.clone())),
            source,
            applied: std::sync::Mutex::new(cfg.clone()),
            admission,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(cfg.limits.max_in_flight),
            reloading: tokio::sync::Mutex::new(()),
            draining: std::sync::atomic::AtomicBool::new(false),
            cfg,
            identity,
            store,
            proxy,
            auth,
            conns: Arc::new(Connections::default()),
            tcp_flows: TcpFlows::new(cfg_max_connections),
            udp,
        }
    }

    fn tcp_settings(&self) -> crate::transport::tcp::Settings {
        crate::transport::tcp::Settings {
            max_message: self.cfg.max_message_size,
            idle: self.cfg.tcp_idle_timeout,
            limits: self.limits.clone(),
            table: self.conns.clone(),
        }
    }

    /// A message that could not be framed or indexed: answer if it is a request we can
    /// address, else drop it with a log line.
    async fn reject_unparsed(&self, data: Bytes, peer: &Peer, err: ParseError) {
        match Message::parse_head(data) {
            Some(m) if m.is_request() && m.count(&crate::sip::HeaderName::Via) > 0 => {
                tracing::debug!(src = %peer.src, error = %err, "refusing a malformed request");
                self.refuse(&m, peer, &Refusal::from(err)).await;
            }
            _ => {
                crate::metrics::dropped("unreadable");
                throttled_info!(src = %peer.src, error = %err, "dropped an unreadable message")
            }
        }
    }
}

/// One request being handled; leaving frees its place.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(server: &'a Server) -> Option<InFlight<'a>> {
        let n = server.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = InFlight(&server.in_flight);
        (n < server.max_in_flight.load(Ordering::Relaxed)).then_some(slot)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handler for Server {
    async fn on_message(self: Arc<Self>, data: Bytes, peer: Peer) {
        let framing = match peer.proto {
            Proto::Udp => Framing::Datagram,
            Proto::Tcp => Framing::Stream,
        };
        let msg = match Message::parse(data.clone(), framing, self.cfg.max_message_size) {
            Ok(m) => m,
            Err(e) => return self.reject_unparsed(data, &peer, e).await,
        };
        // Every line logged about this message carries its Call-ID and CSeq (an info span:
        // present at the default level, in human and JSON logs alike).
        let cseq = msg.cseq().map(|(n, _)| n).unwrap_or(0);
        let span = tracing::info_span!(
            "sip",
            call_id = msg.call_id().unwrap_or(""),
            cseq,
            method = msg.method().unwrap_or("response"),
            src = %peer.src,
        );
        async {
            if msg.is_request() {
                crate::metrics::request(msg.method().unwrap_or_default());
                if self.draining.load(Ordering::Relaxed) {
                    // RFC 3263 4.3: a 503 sends the client to the next server at once.
                    let leaving = Refusal::new(503, "Service Unavailable (shutting down)")
                        .with("Retry-After", 5);
                    return self.refuse(&msg, &peer, &leaving).await;
                }
                let Some(_slot) = InFlight::enter(&self) else {
                    throttled_info!(src = %peer.src, "shed a request: too many in flight");
                    let busy = Refusal::new(503, "Service Unavailable (overloaded)")
                        .with("Retry-After", 1);
                    return self.refuse(&msg, &peer, &busy).await;
                };
                let outcome = self.decide(&msg, &peer).await;
                self.deliver(&msg, &peer, outcome).await;
            } else {
                self.forward_response(&msg, &peer).await;
            }
        }
        .instrument(span)
        .await
    }

    async fn on_unframed(self: Arc<Self>, data: Bytes, peer: Peer, err: ParseError) {
        self.reject_unparsed(data, &peer, err).await;
    }

    async fn on_closed(self: Arc<Self>, remote: std::net::SocketAddr) {
        if self.conns.by_addr(remote).is_some() {
            // The UA connected again from the same address: its bindings are on the new
            // connection now (same source, same owner), and stay usable.
            return;
        }
        for aor in self.tcp_flows.closed(remote) {
            let closed =
                crate::registrar::flow::flow_closed(&self.store, &self.identity, &aor, remote);
            match closed.await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(%aor, %remote, bindings = n, "flow closed: bindings on it removed")
                }
                Err(e) => {
                    crate::throttle::throttled_warn!(%aor, %remote, error = %e, "flow closed: could not remove its bindings");
                }
            }
        }
    }
}
