//! TCP: messages framed by Content-Length (RFC 3261 18.3) — one message split over many
//! reads, or several in one read, both work. CRLF CRLF keep-alives are answered with CRLF
//! (RFC 5626 3.5.1). A message over the size limit or with broken framing (RFC 4475 ncl,
//! mcl01) is handed to the handler, which answers it (513, 400), and the connection is closed,
//! since the stream cannot be resynchronised. Idle connections time out, but never before the bindings
//! registered over them expire (the registrar raises [`Conn::hold`]).

use super::{Conn, Connections, Handler, Peer, Proto, ReplyPath};
use crate::clock::now_secs;
use crate::sip::{self, ParseError};
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub max_message: usize,
    pub idle: Duration,
    pub table: Arc<Connections>,
}

/// Accept forever.
pub(crate) async fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>, settings: Settings) {
    loop {
        match listener.accept().await {
            Ok((stream, src)) => {
                let _ = stream.set_nodelay(true);
                let _ = start(stream, src, handler.clone(), settings.clone());
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
/// comes back on it is handled too.
pub(crate) async fn connect<H: Handler>(
    remote: SocketAddr,
    timeout: Duration,
    handler: Arc<H>,
    settings: Settings,
) -> std::io::Result<Conn> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(remote))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = stream.set_nodelay(true);
    start(stream, remote, handler, settings)
        .ok_or_else(|| std::io::Error::other("no local address"))
}

/// Register a connection in the table and spawn its reader and writer.
fn start<H: Handler>(
    stream: TcpStream,
    src: SocketAddr,
    handler: Arc<H>,
    settings: Settings,
) -> Option<Conn> {
    // A socket that lost its local address is already dead.
    stream.local_addr().ok()?;
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let conn = Conn {
        id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
        tx,
        hold_until: Arc::new(AtomicU64::new(0)),
    };
    settings.table.insert(src, &conn);
    tokio::spawn(connection(stream, src, conn.clone(), rx, handler, settings));
    Some(conn)
}

/// Read, frame and dispatch one connection until it closes, fails or idles out.
async fn connection<H: Handler>(
    stream: TcpStream,
    src: SocketAddr,
    conn: Conn,
    mut rx: mpsc::Receiver<Bytes>,
    handler: Arc<H>,
    settings: Settings,
) {
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let peer = Peer {
        proto: Proto::Tcp,
        src,
        path: ReplyPath::Tcp(conn.clone()),
    };
    let mut buf = BytesMut::with_capacity(8192);
    'conn: loop {
        // Take every complete message out of the buffer.
        loop {
            if buf.starts_with(b"\r\n\r\n") {
                buf.advance(4);
                let _ = conn.tx.send(Bytes::from_static(b"\r\n")).await;
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
                    break 'conn;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        let idle_deadline = tokio::time::sleep(settings.idle);
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break 'conn,
                Ok(_) => {}
            },
            () = idle_deadline => {
                if conn.hold_until.load(Ordering::Relaxed) <= now_secs() {
                    tracing::debug!(%src, "closing idle tcp connection");
                    break 'conn;
                }
            }
        }
    }
    settings.table.remove(src, conn.id);
    drop(conn);
    drop(peer);
    // The writer ends once every sender (including in-flight handlers) is gone.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}
