//! The Prometheus endpoint (`--metrics HOST:PORT`): `GET /metrics` answered with the text
//! exposition format, anything else 404. A scrape is one request per connection: its head
//! read within 5 s and at most 8 KiB, 16 connections at a time, then closed. The gauges the
//! counters cannot keep (breakers, connections, requests in flight) are sampled here.

use super::Server;
use crate::location::LocationStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 8192;
const READ_WITHIN: Duration = Duration::from_secs(5);
const AT_ONCE: usize = 16;

pub(super) async fn serve(listener: TcpListener, server: Arc<Server>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Over the limit: closed at once, unread.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_WITHIN, scrape(stream, &server)).await;
            drop(slot);
        });
    }
}

async fn scrape(mut stream: TcpStream, server: &Server) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?")
    {
        sample(server).await;
        ("200 OK", crate::metrics::encode())
    } else {
        ("404 Not Found", "not found: GET /metrics\n".to_owned())
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

async fn sample(server: &Server) {
    for (node, dead) in server.store.node_states() {
        crate::metrics::set_node_dead(&node, dead);
        if dead {
            continue;
        }
        // Registrations, roughly: each AOR is one item on each of its R owners.
        let stats = crate::location::admin::stats(&node, Duration::from_millis(500)).await;
        let items = stats.ok().and_then(|s| {
            crate::location::admin::stat(&s, "curr_items").and_then(|v| v.parse().ok())
        });
        if let Some(n) = items {
            crate::metrics::set_node_items(&node, n);
        }
    }
    let m = crate::metrics::get();
    if let Ok(Some(c)) =
        tokio::time::timeout(Duration::from_millis(500), server.store.census()).await
    {
        m.registrations
            .set(i64::try_from(c.registrations).unwrap_or(i64::MAX));
        m.bindings
            .set(i64::try_from(c.bindings).unwrap_or(i64::MAX));
    }
    m.tcp_connections.set(server.conns.open() as i64);
    m.in_flight
        .set(server.in_flight.load(std::sync::atomic::Ordering::Relaxed) as i64);
}
