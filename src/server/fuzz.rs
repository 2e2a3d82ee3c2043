//! A harness for fuzzing (`fuzz/`) and for replaying what the fuzzer found
//! (`tests/fuzz_regressions.rs`): the server as [`super::run`] builds it, but with no socket
//! at all, fed bytes the way the transports would feed it.
//!
//! - [`Framing::Datagram`]: what `transport::udp` does with one datagram (STUN keep-alive,
//!   blank keep-alive, then the message), and what the handler does with it.
//! - [`Framing::Stream`]: what `transport::tcp` does with the bytes of one read (CRLF CRLF
//!   pings answered, lone CRLFs skipped, messages framed by Content-Length with the scan
//!   resumed across reads, a framing error handed to `on_unframed` and the connection
//!   closed), over one connection that lives until [`Harness::reset`]. Each resumed scan
//!   (`sip::frame_len_from`) must agree with a scan of the whole buffer from its start
//!   (`sip::frame_len`): a disagreement panics, so the fuzzer reports it.
//!
//! Everything is decided and nothing is sent: the handler's steps are run here up to the
//! [`Outcome`] of `decide` (and `proxy::forward_response` for responses), then what would be
//! sent is only built. A forwarded request is also answered 200 by a make-believe next hop,
//! and that answer goes back through `proxy::forward_response` (with a Via of our own
//! making, MAC and all). The reply path is a TCP connection whose channel this harness owns
//! and empties; no socket is ever opened.
//!
//! DNS: the proxy resolves host names (RFC 3263). Here `limits.max_dns_lookups` is 0, so
//! every name lookup is refused at once by the resolver's own bound ("too many DNS lookups",
//! 503) before any query is made: no traffic, and no 2 s resolver timeout per input, which
//! would make fuzzing useless. IP-literal targets are resolved as usual. `dns_server` also
//! points at 127.0.0.1:9 (discard), should a lookup ever get through; and the runtime has no
//! IO driver, so any socket (a DNS query, a TCP dial) panics instead of being opened. Nothing
//! here waits on a timer: a feed that does not return is a hang worth reporting, not a DNS
//! timeout.
//!
//! The per-source datagram rate (`transport::admission`) is not applied: it depends on the
//! wall clock and would drop most of a fuzzer's inputs.
//!
//! State (bindings, failure counts, the connection) persists between feeds until
//! [`Harness::reset`], so that one input may hold a REGISTER and then a request for the user
//! it registered. The fuzz targets reset before every input, so that a finding replays alone.

use super::{InFlight, Outcome, Server};
use crate::config::{Config, Overrides};
use crate::identity::Identity;
use crate::location::Store;
use crate::location::memory::MemoryStore;
use crate::proxy::{Forward, forward_response};
use crate::sip::response::{Refusal, Response, udp_response_target};
use crate::sip::{self, FrameScan, Message, ParseError};
use crate::transport::{Conn, Peer, Proto, ReplyPath, stun};
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

#[doc(hidden)]
pub use crate::sip::Framing;

/// The domain the harness serves, and a user of it (with auth on).
const DOMAIN: &str = "example.test";
const USER: &str = "alice@example.test";
const PASSWORD: &str = "fuzz-password";
/// This instance's (fake) sockets.
const LOCAL: &str = "127.0.0.1:5060";
/// Where every input comes from: not loopback (which `sipfarm farm status` treats apart).
const SOURCE: &str = "192.0.2.7:5070";

/// The server with no sockets, and what is needed to feed it.
#[doc(hidden)]
pub struct Harness {
    rt: tokio::runtime::Runtime,
    cfg: Config,
    state: Mutex<State>,
    /// The users and secret files (auth on), removed on drop.
    dir: Option<PathBuf>,
}

/// What [`Harness::reset`] renews.
struct State {
    server: Arc<Server>,
    conn: Conn,
    /// The other end of the connection's channel: what would be written to the socket.
    rx: mpsc::Receiver<Bytes>,
    /// The bytes read on the connection and not yet framed.
    buf: BytesMut,
    /// How far the framing scan of the first message got (as `transport::tcp` keeps it).
    scan: FrameScan,
    /// The stream has been used (the connection is then in the server's table).
    opened: bool,
    /// A framing error closed the connection: further bytes are not read.
    closed: bool,
}

impl Harness {
    /// Authentication off.
    #[doc(hidden)]
    pub fn new() -> Harness {
        Harness::build(false)
    }

    /// Digest authentication on: one user, `alice@example.test`, and a nonce secret, in
    /// files written to a temporary folder.
    #[doc(hidden)]
    pub fn with_auth() -> Harness {
        Harness::build(true)
    }

    fn build(auth: bool) -> Harness {
        let dir = auth.then(write_auth_files);
        let mut o = Overrides {
            listen: vec![format!("udp:{LOCAL}"), format!("tcp:{LOCAL}")],
            domain: vec![DOMAIN.into()],
            dns_server: Some("127.0.0.1:9".into()),
            threads: Some(1),
            ..Default::default()
        };
        if let Some(d) = &dir {
            o.users = Some(d.join("users"));
            o.auth_secret_file = Some(d.join("secret"));
        }
        let mut cfg = Config::load(&o).expect("the harness configuration");
        // No DNS: see the module comment.
        cfg.limits.max_dns_lookups = 0;
        // Timers only: no IO driver, so that any socket would fail here loudly.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let state = rt.block_on(async { new_state(&cfg) });
        Harness {
            rt,
            cfg,
            state: Mutex::new(state),
            dir,
        }
    }

    /// A fresh server: empty store, no failure counts, a new connection.
    #[doc(hidden)]
    pub fn reset(&self) {
        let fresh = self.rt.block_on(async { new_state(&self.cfg) });
        *self.state() = fresh;
    }

    /// Feed bytes as the transport would: one datagram, or the bytes of one read on the
    /// connection.
    #[doc(hidden)]
    pub fn feed(&self, data: &[u8], framing: Framing) {
        let mut st = self.state();
        self.rt.block_on(async {
            match framing {
                Framing::Datagram => datagram(&mut st, data).await,
                Framing::Stream => stream(&mut st, data).await,
            }
        });
        let st = &mut *st;
        drain(&st.conn, &mut st.rx);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The stream target's input as reads: the first byte tells how many cuts (0 to 7), the
/// next two bytes per cut where (big-endian, modulo the length of the rest), the rest is the
/// stream. Shared with the regression tests so that a finding replays the same way.
#[doc(hidden)]
pub fn split_stream(data: &[u8]) -> Vec<&[u8]> {
    let Some((&first, rest)) = data.split_first() else {
        return Vec::new();
    };
    let cuts = usize::from(first % 8);
    let (spec, body) = rest.split_at((2 * cuts).min(rest.len()));
    let mut at: Vec<usize> = spec
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (body.len() + 1))
        .collect();
    at.push(0);
    at.push(body.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &body[w[0]..w[1]]).collect()
}

/// The users file and the secret, in a folder of their own.
fn write_auth_files() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sipfarm-fuzz-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    crate::auth::add_user(&dir.join("users"), USER, PASSWORD).expect("the users file");
    std::fs::write(dir.join("secret"), "fuzz-secret-fuzz-secret-0123456789\n")
        .expect("the secret file");
    dir
}

/// The server as `run::build` makes it, without sockets: the memory store, our fake local
/// addresses, no memcached nodes, no UDP sockets.
fn new_state(cfg: &Config) -> State {
    let key = crate::identity::load_key(cfg.secret_file.as_deref()).expect("the farm key");
    let identity = Arc::new(
        Identity::of_instance(
            cfg.domains.clone(),
            cfg.proxy.farm_uri.clone(),
            super::run::locals(&cfg.listen),
        )
        .with_key(key),
    );
    let auth = cfg
        .auth
        .as_ref()
        .map(|a| crate::auth::Auth::open(a).expect("the users and secret files"));
    // `Store::open(None, _)` without its sweeper task: one per reset would pile up on the
    // runtime, and nothing expires within a feed anyway.
    let store = Store::Memory(Arc::new(MemoryStore::new()));
    let server = Arc::new(Server::new(
        cfg.clone(),
        identity,
        store,
        auth,
        Vec::new(),
        None,
    ));
    let (conn, rx) = Conn::new(std::net::SocketAddr::from(([127, 0, 0, 1], 5099)), 1 << 20);
    State {
        server,
        conn,
        rx,
        buf: BytesMut::new(),
        scan: FrameScan::default(),
        opened: false,
        closed: false,
    }
}

fn source() -> SocketAddr {
    SOURCE.parse().expect("an address")
}

fn peer(st: &State, proto: Proto) -> Peer {
    Peer {
        proto,
        src: source(),
        path: ReplyPath::Tcp(st.conn.clone()),
    }
}

/// What would be written to the socket: read and dropped.
fn drain(conn: &Conn, rx: &mut mpsc::Receiver<Bytes>) {
    while let Ok(b) = rx.try_recv() {
        conn.link().written(b.len());
    }
}

/// `transport::udp::serve` for one datagram.
async fn datagram(st: &mut State, raw: &[u8]) {
    if stun::is_stun(raw) {
        let _ = stun::binding_response(raw, source());
        return;
    }
    if stun::is_blank_keepalive(raw) {
        return;
    }
    let peer = peer(st, Proto::Udp);
    on_message(&st.server, Bytes::copy_from_slice(raw), &peer).await;
}

/// `transport::tcp::connection` for the bytes of one read: every complete message taken out
/// of the buffer, in order (the transport spawns requests; here each is finished before the
/// next, so that a finding replays the same way).
async fn stream(st: &mut State, read: &[u8]) {
    if st.closed {
        return;
    }
    if !st.opened {
        st.server.conns.insert(source(), &st.conn);
        st.opened = true;
    }
    st.buf.extend_from_slice(read);
    let peer = peer(st, Proto::Tcp);
    let max = st.server.cfg.max_message_size;
    loop {
        // What the connection's writer would write, written.
        drain(&st.conn, &mut st.rx);
        let buf = &mut st.buf;
        if buf.starts_with(b"\r\n\r\n") {
            buf.advance(4);
            st.scan = FrameScan::default();
            let _ = st.conn.send(Bytes::from_static(b"\r\n"));
            continue;
        }
        if buf.starts_with(b"\r\n") && buf.len() >= 3 && buf[2] != b'\r' {
            buf.advance(2);
            st.scan = FrameScan::default();
            continue;
        }
        if buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
            if buf.len() > 4 {
                buf.clear();
            }
            break;
        }
        let framed = sip::frame_len_from(buf, max, &mut st.scan);
        assert_eq!(
            framed,
            sip::frame_len(buf, max),
            "the resumed framing scan disagrees with a whole scan of the same buffer"
        );
        match framed {
            Ok(n) => {
                let msg = buf.split_to(n).freeze();
                st.scan = FrameScan::default();
                on_message(&st.server, msg, &peer).await;
            }
            Err(ParseError::Incomplete) => break,
            Err(e) => {
                let data = buf.split().freeze();
                st.server.reject_unparsed(data, &peer, e).await;
                st.server.conns.remove(source(), st.conn.id);
                st.closed = true;
                break;
            }
        }
    }
}

/// `Handler::on_message`, deciding and building what would be sent, sending nothing.
async fn on_message(server: &Arc<Server>, data: Bytes, peer: &Peer) {
    let framing = match peer.proto {
        Proto::Udp => Framing::Datagram,
        Proto::Tcp => Framing::Stream,
    };
    let msg = match Message::parse(data.clone(), framing, server.cfg.max_message_size) {
        Ok(m) => m,
        // Answers over the harness's channel, if anything.
        Err(e) => return server.reject_unparsed(data, peer, e).await,
    };
    if !msg.is_request() {
        let _ = forward_response(&server.identity, &server.conns, &msg);
        return;
    }
    let Some(_slot) = InFlight::enter(server) else {
        let busy = Refusal::new(503, "Service Unavailable (overloaded)").with("Retry-After", 1);
        return refuse(&msg, peer, &busy);
    };
    match server.decide(&msg, peer).await {
        Outcome::Absorb => {}
        Outcome::Answer { bytes, hold_until } => {
            if let (ReplyPath::Tcp(conn), Some(until)) = (&peer.path, hold_until) {
                conn.hold(until);
            }
            answer(&msg, peer, bytes);
        }
        Outcome::Refuse(r) => refuse(&msg, peer, &r),
        // Where it would go is decided; sending is not ours to do.
        Outcome::Forward(f) => answer_forwarded(server, &f),
    }
}

/// What the next hop would answer, back through the proxy: a 200 to the forwarded request
/// (its Vias, ours on top, as the next hop would copy them) goes through
/// `proxy::forward_response`. The fuzzer cannot forge the MAC in our Via, so without this a
/// response would never get past that check.
fn answer_forwarded(server: &Server, f: &Forward) {
    let max = server.cfg.max_message_size;
    let Ok(req) = Message::parse(f.bytes.clone(), Framing::Datagram, max) else {
        return;
    };
    let local: SocketAddr = LOCAL.parse().expect("an address");
    let resp = Response::new(&req, local, 200, "OK").build();
    if let Ok(resp) = Message::parse(Bytes::from(resp), Framing::Datagram, max) {
        let _ = forward_response(&server.identity, &server.conns, &resp);
    }
}

/// `Server::refuse`, built and not sent.
fn refuse(req: &Message, peer: &Peer, refusal: &Refusal) {
    if req.method() != Some("ACK") {
        answer(req, peer, refusal.response(req, peer.src));
    }
}

/// `Server::answer`, not sent: where an answer over UDP would go is still worked out.
fn answer(req: &Message, peer: &Peer, bytes: Vec<u8>) {
    if let (Proto::Udp, Ok(via)) = (peer.proto, req.top_via()) {
        let _ = udp_response_target(via, peer.src);
    }
    drop(bytes);
}
