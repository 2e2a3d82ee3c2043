//! The TCP bounds on their own: admission counts, dials, the send queue, the write timeout.

use super::conn::QUEUE_MESSAGES;
use super::*;
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn admission_counts_total_and_per_source_until_slots_drop() {
    let t = Arc::new(Connections::default());
    let a1 = t.admit(ip("127.0.0.2"), 3, 2).unwrap();
    // The IPv4-mapped form is the same source.
    let a2 = t.admit(ip("::ffff:127.0.0.2"), 3, 2).unwrap();
    assert_eq!(
        t.admit(ip("127.0.0.2"), 3, 2).unwrap_err(),
        conn::Refused::PerSource
    );
    // Dialled connections count against the total only.
    let d = t.admit(None, 3, 0).unwrap();
    assert_eq!(
        t.admit(ip("127.0.0.3"), 3, 2).unwrap_err(),
        conn::Refused::Total
    );
    assert_eq!(t.open(), 3);
    drop(a1);
    assert!(
        t.admit(ip("127.0.0.2"), 4, 2).is_ok(),
        "a dropped slot frees its place"
    );
    drop((a2, d));
    assert_eq!(t.open(), 0);
}

#[test]
fn dials_under_way_are_bounded() {
    let t = Arc::new(Connections::default());
    let (a, _b) = (t.dial(2).unwrap(), t.dial(2).unwrap());
    assert!(t.dial(2).is_none());
    drop(a);
    assert!(t.dial(2).is_some());
}

#[test]
fn send_never_waits_and_a_full_queue_closes() {
    let peer: SocketAddr = "127.0.0.2:5060".parse().unwrap();
    let (c, _rx) = Conn::new(peer, 1000);
    // One message is let in whatever its size; then the byte bound holds.
    assert!(c.send(Bytes::from(vec![b'x'; 1500])));
    assert!(!c.send(Bytes::from_static(b"y")));
    assert!(!c.is_open());
    assert!(!c.send(Bytes::from_static(b"z")), "closed for good");

    let (c, _rx) = Conn::new(peer, usize::MAX);
    for _ in 0..QUEUE_MESSAGES {
        assert!(c.send(Bytes::from_static(b"\r\n")));
    }
    assert!(!c.send(Bytes::from_static(b"\r\n")), "the message bound");
    assert!(!c.is_open());
}

struct Quiet;

impl Handler for Quiet {
    async fn on_message(self: Arc<Self>, _: Bytes, _: Peer) {}
    async fn on_unframed(self: Arc<Self>, _: Bytes, _: Peer, _: ParseError) {}
}

fn settings(table: &Arc<Connections>, limits: Limits) -> tcp::Settings {
    tcp::Settings {
        max_message: 65536,
        idle: Duration::from_secs(60),
        limits: Arc::new(crate::live::Live::new(limits)),
        table: table.clone(),
    }
}

/// A peer that accepts and never reads: once the kernel's buffers are full, the blocked
/// write is given up after `tcp_write_timeout` and the connection torn down (the queue is
/// large enough not to fill first).
#[tokio::test]
async fn a_write_blocked_past_the_timeout_closes_the_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
    let table = Arc::new(Connections::default());
    let limits = Limits {
        tcp_write_timeout: Duration::from_secs(1),
        tcp_queue_bytes: 256 << 20,
        ..Limits::default()
    };
    let s = settings(&table, limits);
    let conn = tcp::connect(addr, Duration::from_secs(2), Arc::new(Quiet), s)
        .await
        .unwrap();
    let _held = sink.await.unwrap().unwrap();
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    for _ in 0..64 {
        assert!(conn.send(chunk.clone()), "queued without waiting");
    }
    let started = Instant::now();
    while conn.is_open() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!conn.is_open(), "still open after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4));
    // Its place in the counts is given back once the socket is closed.
    while table.open() > 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(table.open(), 0);
    assert!(table.by_id(conn.id).is_none());
}

/// Past `max_dials`, or `max_connections`, a dial fails at once.
#[tokio::test]
async fn dials_past_the_limits_fail_at_once() {
    let table = Arc::new(Connections::default());
    let limits = Limits {
        max_dials: 1,
        ..Limits::default()
    };
    let _busy = table.dial(1).unwrap();
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let s = settings(&table, limits.clone());
    let err = tcp::connect(addr, Duration::from_secs(2), Arc::new(Quiet), s)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_dials"), "{err}");
    let full = Arc::new(Connections::default());
    let _slot = full.admit(None, 1, 1).unwrap();
    let limits = Limits {
        max_connections: 1,
        ..limits
    };
    let err = tcp::connect(
        addr,
        Duration::from_secs(2),
        Arc::new(Quiet),
        settings(&full, limits),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("max_connections"), "{err}");
}
