//! # sipfarm
//!
//! A SIP registrar and stateless proxy whose location service lives in a sharded memcached
//! farm, so that any instance behind a DNS SRV name can serve any user.
//!
//! ## The path of one message
//! ```text
//! socket (transport::udp, transport::tcp)       RFC 3261 18, RFC 5626 3.5.1
//!   -> one framed message (Content-Length on TCP)
//!   -> sip::Message: an index of the header lines over the received bytes
//!      (folding undone, compact names mapped; URIs typed on demand by `sip-uri`)
//!   -> server: checks every request must pass (400/416/420/505), then
//!        REGISTER for our domain -> registrar   RFC 3261 10.3, RFC 3327
//!        anything else           -> proxy       RFC 3261 16, 16.11
//!   -> location::LocationStore
//!        memory  the embedded default (one process)
//!        farm    the memcached farm: ring (ketama), node (one memcached, timeout, breaker),
//!                pipeline (one pipelined meta-protocol connection per node and thread),
//!                record (versioned value), admin (stats, metadump for refills),
//!                replicas merged binding by binding
//!   -> the answer or the forwarded request (sip::edit: edits over the received bytes),
//!      next hops found by resolve (RFC 3263), sent back through transport
//! ```
//!
//! ## Threads
//! `server::run` starts one single-threaded tokio runtime per core, each with its own sockets
//! on every listen address (SO_REUSEPORT) and its own connection to each memcached node; the
//! store, the TCP connection table and the configuration are shared. A request is read,
//! decided and answered on one thread.
//!
//! `status` serves `sipfarm farm status`.
//!
//! ## Seams
//! The registrar and proxy decide, the location store stores, the transport moves bytes. The
//! registrar never speaks memcached; the farm never parses SIP. Configuration is read and
//! checked once ([`config`]).

pub mod clock;
pub mod config;
pub mod identity;
pub mod location;
pub mod proxy;
pub mod registrar;
pub mod resolve;
pub mod server;
pub mod sip;
pub mod status;
pub mod transport;
