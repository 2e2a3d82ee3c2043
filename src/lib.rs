//! # sipfarm
//!
//! A SIP registrar and stateless proxy whose location service lives in a sharded memcached
//! farm, so that any instance behind a DNS SRV name can serve any user.
//!
//! ## Layers (a module imports only from layers below it; `tests/architecture.rs` checks)
//! ```text
//! main        (src/main.rs) the command line only: parse, load the config, call the library
//! server      owns sockets, event loops, the store, the connection table and the TCP flows
//!             registered over it (flows.rs); receives,
//! status      asks a rule for a decision, sends what it returns (server/send.rs: the one
//!             place that sends, never an answer to an ACK); `sipfarm farm status`
//! config      read and checked once at start into each section's settings (may import
//!             what it configures)
//! proxy       RFC 3261 16.3, 16.4, 16.6, 16.11: returns a Forward (with its fall-backs) or a
//!             Refusal; target.rs (16.5: bindings, flows, RFC 3263 targets, in trying order),
//!             flow.rs (RFC 5626 edge proxy: to the flow's owner, delivery on the flow)
//! registrar   save (RFC 3261 10.3, 3327, 5626) and lookup (bindings -> targets in order,
//!             Path -> route set, 404 vs 480), flow (which flow reaches a UA, NAT detection,
//!             a closed TCP flow's bindings removed), like Kamailio's save.c / lookup.c
//! auth        digest authentication (RFC 3261 22, 7616, 8760), farm-wide nonces, the gate:
//!             who is challenged, who may register which address, who may relay
//! resolve     RFC 3263 (maddr, NAPTR, SRV, A/AAAA): the ordered targets, for fail-over
//! identity    which domains we serve, which addresses are us (advertised too), which URIs
//!             name the farm, the farm's memcached nodes, the farm's key (signed Via and
//!             Record-Route), flow tokens (checked by the instance that wrote them)
//! transport   udp, tcp: framing, connections, socket binding; moves bytes only
//! location    the store, like Kamailio's usrloc: memory | farm (ring, node, pipeline,
//!             record, placement, merge, heal, refresh cache), one `Store` chosen at start
//! sip         ground floor: message index over the received bytes, URIs, Via, responses,
//! clock       edits, the Refusal type; time, the write clock and the event-loop index;
//! throttle    log lines about dropped input, at most one per call site per interval
//! live        a value swapped whole by a reload (SIGHUP): users, limits, the farm
//! ```
//!
//! ## The path of one request
//! ```text
//! transport receives bytes -> one framed message (Content-Length on TCP)
//!   -> sip::Message: an index of the header lines over the received bytes
//!      (folding undone, compact names mapped; URIs typed on demand by `sip-uri`)
//!   -> transport::udp: per-source rate, STUN and blank keep-alives, before any parsing
//!   -> server::dispatch: common checks (400/416/420/505), the auth gate, then
//!        REGISTER for our domain -> registrar::save   -> Reply | Refusal
//!        OPTIONS to the instance -> answered there
//!        anything else           -> proxy::route     -> Forward { bytes, next hop } | Refusal
//!          (targets for our users: registrar::lookup over the location store,
//!           next hops for others: resolve)
//!   -> server::send: answers along the path the request came in on, forwards over UDP/TCP
//! responses: proxy::forward_response -> Forward -> server::send
//! ```
//!
//! ## Threads
//! `server::run` starts one single-threaded tokio runtime per core, each with its own sockets
//! on every listen address (SO_REUSEPORT) and its own connection to each memcached node; the
//! store, the TCP connection table and the configuration are shared. A request is read,
//! decided and answered on one thread.
//!
//! ## Seams
//! The registrar and proxy decide and return values, the location store stores, the
//! transport moves bytes and never builds a SIP answer. The registrar never speaks memcached;
//! the farm never parses SIP. Configuration is read and checked at start ([`config`]) and again on SIGHUP, which swaps
//! what can change live (users, limits, the memcached node list) and names what needs a restart.

pub mod auth;
mod clock;
pub mod config;
mod identity;
mod live;
pub mod location;
mod metrics;
pub mod operate;
mod proxy;
mod registrar;
mod resolve;
pub mod server;
pub mod sip;
pub mod status;
mod throttle;
mod transport;
