//! TCP: messages framed by Content-Length (RFC 3261 18.3) — one message split over many
//! reads, or several in one read, both work, and the framing scan resumes where the last read
//! left it (linear in the bytes, however they are dripped). CRLF CRLF keep-alives are answered
//! with CRLF (RFC 5626 3.5.1). A message over the size limit or with broken framing (RFC 4475
//! ncl, mcl01) is handed to the handler, which answers it (513, 400), and the connection is
//! closed, since the stream cannot be resynchronised.
//!
//! What a peer may cost is bounded by `[limits]` (issue 10):
//! - admission: connections open in all (accepted and dialled) and per source address; past
//!   either, an accepted connection is reset at once, unread. Dials under way are bounded.
//! - time: an idle connection times out, but never before the bindings registered over it
//!   expire (the registrar raises [`Conn::hold`]); once a message has begun it must be whole
//!   within `partial_message_timeout`, so that a byte dribble (slow-loris) cannot keep a
//!   connection forever.
//! - writes: answers are queued without waiting ([`Conn::send`]), the queue bounded in bytes
//!   and messages; a write blocked for `tcp_write_timeout` (a peer that never reads) or a
//!   full queue tears the connection down.

use super::conn::{Link, Slot, torn_down};
use super::{Conn, Connections, Handler, Limits, Peer, Proto, ReplyPath};
use crate::clock::now_secs;
use crate::live::Live;
use crate::sip::{self, FrameScan, ParseError};
use crate::throttle::throttled_info;
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub max_message: usize,
    pub idle: Duration,
    /// The limits now: a reload (SIGHUP) applies to the next accept, dial and message.
    pub limits: Arc<Live<Limits>>,
    pub table: Arc<Connections>,
}

/// Accept forever; a connection past the limits is reset at once, before anything is read.
pub(crate) async fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>, settings: Settings) {
    loop {
        match listener.accept().await {
            Ok((stream, src)) => {
                let limits = settings.limits.get();
                let (total, per_source) =
                    (limits.max_connections, limits.max_connections_per_source);
                match settings.table.admit(Some(src.ip()), total, per_source) {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        let _ = start(stream, src, slot, handler.clone(), settings.clone());
                    }
                    Err(why) => {
                        // A reset: no FIN handshake, no TIME_WAIT kept for it.
                        let _ = stream.set_zero_linger();
                        drop(stream);
                        crate::metrics::dropped("tcp_connection_refused");
                        throttled_info!(%src, reason = %why, "refused a tcp connection");
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Dial `remote` (bounded by `timeout`) and run the connection like an accepted one: what
/// comes back on it is handled too. Fails at once when `limits.max_dials` dials are under way
/// or `limits.max_connections` are open.
pub(crate) async fn connect<H: Handler>(
    remote: SocketAddr,
    timeout: Duration,
    handler: Arc<H>,
    settings: Settings,
) -> std::io::Result<Conn> {
    let table = &settings.table;
    let limits = settings.limits.get();
    let _dial = table
        .dial(limits.max_dials)
        .ok_or_else(|| std::io::Error::other("too many tcp dials under way (max_dials)"))?;
    let slot = table
        .admit(None, limits.max_connections, 0)
        .map_err(|why| std::io::Error::other(why.to_string()))?;
    let stream = tokio::time::timeout(timeout, TcpStream::connect(remote))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = stream.set_nodelay(true);
    start(stream, remote, slot, handler, settings)
        .ok_or_else(|| std::io::Error::other("no local address"))
}

/// Register a connection in the table and spawn its reader and writer.
fn start<H: Handler>(
    stream: TcpStream,
    src: SocketAddr,
    slot: Slot,
    handler: Arc<H>,
    settings: Settings,
) -> Option<Conn> {
    // A socket that lost its local address is already dead.
    stream.local_addr().ok()?;
    let (conn, rx) = Conn::new(src, settings.limits.get().tcp_queue_bytes);
    settings.table.insert(src, &conn);
    tokio::spawn(connection(
        stream,
        src,
        conn.clone(),
        rx,
        slot,
        handler,
        settings,
    ));
    Some(conn)
}

/// Run one connection until it closes, fails, idles out or is torn down, then let its writer
/// finish what handlers still send (for at most one write timeout).
async fn connection<H: Handler>(
    stream: TcpStream,
    src: SocketAddr,
    conn: Conn,
    rx: mpsc::Receiver<Bytes>,
    slot: Slot,
    handler: Arc<H>,
    settings: Settings,
) {
    let (rd, wr) = stream.into_split();
    let link = conn.link().clone();
    let write_timeout = settings.limits.get().tcp_write_timeout;
    let mut writer = tokio::spawn(write_loop(wr, rx, link.clone(), write_timeout));
    read_loop(rd, src, &conn, &handler, &settings).await;
    settings.table.remove(src, conn.id);
    // Told from a task of its own: it may write to the location store.
    tokio::spawn(handler.clone().on_closed(src));
    // The writer ends once every sender (in-flight handlers too) is gone.
    drop(conn);
    if tokio::time::timeout(write_timeout, &mut writer)
        .await
        .is_err()
    {
        link.close(None);
        let _ = writer.await;
    }
    // Both halves are dropped: the socket is closed, its place in the counts given back.
    drop(slot);
}

/// Write what is queued, each write bounded by `limit`, until every sender is gone or the
/// connection is torn down.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    link: Arc<Link>,
    limit: Duration,
) {
    let mut closed = link.watch();
    loop {
        let bytes = tokio::select! {
            biased;
            () = torn_down(&mut closed) => break,
            b = rx.recv() => match b {
                Some(b) => b,
                None => {
                    let _ = wr.shutdown().await;
                    return;
                }
            },
        };
        let written = tokio::select! {
            biased;
            () = torn_down(&mut closed) => break,
            r = tokio::time::timeout(limit, wr.write_all(&bytes)) => r,
        };
        match written {
            Ok(Ok(())) => link.written(bytes.len()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "tcp write failed");
                link.close(None);
                break;
            }
            Err(_) => {
                link.close(Some("a write stayed blocked for tcp_write_timeout"));
                break;
            }
        }
    }
    // Torn down: a reset drops what the kernel still holds for a peer that does not read.
    let _ = wr.as_ref().set_zero_linger();
}

/// The bytes read and not yet framed, and the clocks that bound them.
struct Input {
    buf: BytesMut,
    /// How far the framing scan of the first message got (reset when bytes are taken).
    scan: FrameScan,
    /// When the latest read returned.
    read_at: Instant,
    /// When the first byte of the message being received arrived (None between messages).
    partial_since: Option<Instant>,
    /// When the last whole message or keep-alive was taken.
    active_at: Instant,
}

/// Read, frame and dispatch one connection until it closes, fails, idles out, dribbles past
/// the partial-message timeout, or is torn down.
async fn read_loop<H: Handler>(
    mut rd: OwnedReadHalf,
    src: SocketAddr,
    conn: &Conn,
    handler: &Arc<H>,
    settings: &Settings,
) {
    let peer = Peer {
        proto: Proto::Tcp,
        src,
        path: ReplyPath::Tcp(conn.clone()),
    };
    let mut closed = conn.link().watch();
    // The limits as the connection opened: a reload applies to the connections after it.
    let partial_timeout = settings.limits.get().partial_message_timeout;
    let now = Instant::now();
    let mut input = Input {
        buf: BytesMut::with_capacity(8192),
        scan: FrameScan::default(),
        read_at: now,
        partial_since: None,
        active_at: now,
    };
    loop {
        let Ok(taken) = take_messages(&mut input, conn, handler, &peer, settings.max_message).await
        else {
            return;
        };
        input.track(taken);
        let deadline = input.deadline(partial_timeout, settings.idle);
        // A peer that sends fast enough keeps the read always ready, and a biased select
        // would never look at the timer: the deadline is checked here too.
        if deadline <= Instant::now() && input.expired(conn, src) {
            return;
        }
        let buf = &mut input.buf;
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        tokio::select! {
            biased;
            () = torn_down(&mut closed) => return,
            r = rd.read_buf(buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => input.read_at = Instant::now(),
            },
            () = tokio::time::sleep_until(deadline) => {
                if input.expired(conn, src) {
                    return;
                }
            }
        }
    }
}

impl Input {
    /// When the connection is next due for closing: the message under way must be whole by
    /// its partial-message deadline; between messages, the idle timeout runs.
    fn deadline(&self, partial_timeout: Duration, idle: Duration) -> Instant {
        match self.partial_since {
            Some(t) => t + partial_timeout,
            None => self.active_at + idle,
        }
    }

    /// At the deadline: whether to close (a message still incomplete, or idle with no
    /// binding holding the connection open). A held connection's idle timer starts again.
    fn expired(&mut self, conn: &Conn, src: SocketAddr) -> bool {
        if self.partial_since.is_some() {
            let why = "a message not whole within partial_message_timeout";
            throttled_info!(%src, "closed a tcp connection: {why}");
            return true;
        }
        if conn.link().held_until() <= now_secs() {
            tracing::debug!(%src, "closing idle tcp connection");
            return true;
        }
        self.active_at = Instant::now();
        false
    }

    /// After `taken` messages were taken: whether a message is under way, and since when.
    fn track(&mut self, taken: usize) {
        let begun = self.buf.iter().any(|b| *b != b'\r' && *b != b'\n');
        if taken > 0 {
            self.active_at = Instant::now();
        }
        self.partial_since = match (begun, self.partial_since) {
            (false, _) => None,
            // Still the same message: its first byte came when it did.
            (true, Some(t)) if taken == 0 => Some(t),
            // A new one: its first byte came with the latest read.
            (true, _) => Some(self.read_at),
        };
    }
}

/// Take every complete message (and keep-alive) out of the buffer; the number taken, or Err
/// after a framing error (answered by the handler; the connection must close).
async fn take_messages<H: Handler>(
    input: &mut Input,
    conn: &Conn,
    handler: &Arc<H>,
    peer: &Peer,
    max_message: usize,
) -> Result<usize, ()> {
    let buf = &mut input.buf;
    let mut taken = 0;
    loop {
        if buf.starts_with(b"\r\n\r\n") {
            buf.advance(4);
            input.scan = FrameScan::default();
            conn.send(Bytes::from_static(b"\r\n"));
            taken += 1;
            continue;
        }
        if buf.starts_with(b"\r\n") && buf.len() >= 3 && buf[2] != b'\r' {
            buf.advance(2);
            input.scan = FrameScan::default();
            continue;
        }
        if buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
            if buf.len() > 4 {
                buf.clear();
            }
            return Ok(taken);
        }
        match sip::frame_len_from(buf, max_message, &mut input.scan) {
            Ok(n) => {
                let msg = buf.split_to(n).freeze();
                input.scan = FrameScan::default();
                taken += 1;
                if msg.starts_with(b"SIP/") {
                    // Responses in order (a 180 is not overtaken by its 200); forwarding
                    // one never waits (the server dials elsewhere).
                    handler.clone().on_message(msg, peer.clone()).await;
                } else {
                    tokio::spawn(handler.clone().on_message(msg, peer.clone()));
                }
            }
            Err(ParseError::Incomplete) => return Ok(taken),
            Err(e) => {
                let src = peer.src;
                throttled_info!(%src, error = %e, "closing tcp connection after a framing error");
                let data = buf.split().freeze();
                handler.clone().on_unframed(data, peer.clone(), e).await;
                return Err(());
            }
        }
    }
}
