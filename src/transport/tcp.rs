//! TCP: messages framed by Content-Length (RFC 3261 18.3) — one message split over many
//! reads, or several in one read, both work. CRLF CRLF keep-alives are answered
//! with CRLF (RFC 5626 3.5.1). A message over the size limit or with broken framing (RFC 4475
//! ncl, mcl01) is handed to the handler, which answers it (513, 400), and the connection is
//! closed, since the stream cannot be resynchronised.
//!
//! What a peer may cost is bounded by `[limits]` (issue 10):
//! - admission: connections open in all (accepted and dialled) and per source address; past
//!   either, an accepted connection is reset at once, unread. Dials under way are bounded.
//! - time: an idle connection times out, but never before the bindings registered over it
//!   expire (the registrar raises [`Conn::hold`]).
//! - writes: answers are queued without waiting ([`Conn::send`]), the queue bounded in bytes
//!   and messages; a write blocked for `tcp_write_timeout` (a peer that never reads) or a
//!   full queue tears the connection down.

use super::conn::{Link, Slot, torn_down};
use super::{Conn, Connections, Handler, Limits, Peer, Proto, ReplyPath};
use crate::clock::now_secs;
use crate::sip::{self, ParseError};
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub max_message: usize,
    pub idle: Duration,
    pub limits: Limits,
    pub table: Arc<Connections>,
}

/// Accept forever; a connection past the limits is reset at once, before anything is read.
pub(crate) async fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>, settings: Settings) {
    let limits = &settings.limits;
    loop {
        match listener.accept().await {
            Ok((stream, src)) => {
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
                        let what = format!("refused connections ({why})");
                        settings.table.refusals.note(src, &what);
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
    let _dial = table
        .dial(settings.limits.max_dials)
        .ok_or_else(|| std::io::Error::other("too many tcp dials under way (max_dials)"))?;
    let slot = table
        .admit(None, settings.limits.max_connections, 0)
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
    let (conn, rx) = Conn::new(src, settings.limits.tcp_queue_bytes);
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
    let write_timeout = settings.limits.tcp_write_timeout;
    let mut writer = tokio::spawn(write_loop(wr, rx, link.clone(), write_timeout));
    read_loop(rd, src, &conn, &handler, &settings).await;
    settings.table.remove(src, conn.id);
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

/// Read, frame and dispatch one connection until it closes, fails, idles out or is torn
/// down.
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
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        // Take every complete message out of the buffer.
        loop {
            if buf.starts_with(b"\r\n\r\n") {
                buf.advance(4);
                conn.send(Bytes::from_static(b"\r\n"));
                continue;
            }
            if buf.starts_with(b"\r\n") && buf.len() >= 3 && buf[2] != b'\r' {
                buf.advance(2);
                continue;
            }
            if buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
                if buf.len() > 4 {
                    buf.clear();
                }
                break;
            }
            match sip::frame_len(&buf, settings.max_message) {
                Ok(n) => {
                    let msg = buf.split_to(n).freeze();
                    if msg.starts_with(b"SIP/") {
                        handler.clone().on_message(msg, peer.clone()).await;
                    } else {
                        tokio::spawn(handler.clone().on_message(msg, peer.clone()));
                    }
                }
                Err(ParseError::Incomplete) => break,
                Err(e) => {
                    tracing::info!(%src, error = %e, "closing tcp connection after a framing error");
                    let data = buf.split().freeze();
                    handler.clone().on_unframed(data, peer.clone(), e).await;
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        let idle_deadline = tokio::time::sleep(settings.idle);
        tokio::select! {
            biased;
            () = torn_down(&mut closed) => return,
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            () = idle_deadline => {
                if conn.link().held_until() <= now_secs() {
                    tracing::debug!(%src, "closing idle tcp connection");
                    return;
                }
            }
        }
    }
}
