//! UDP: one datagram is one message (RFC 3261 18.1.1 / 18.2.1). Each request is handled in a
//! task of its own, so that a slow location lookup never holds up the socket; responses,
//! which need no lookup, are forwarded in order from the receive loop. Before anything else,
//! a source over its rate is dropped ([`super::admission`]), STUN keep-alives are answered
//! and blank keep-alives ignored (RFC 5626 4.4.2, 8.4).

use super::admission::SourceRate;
use super::{Handler, Peer, Proto, ReplyPath, stun};
use crate::throttle::throttled_info;
use bytes::Bytes;
use std::sync::Arc;
use tokio::net::UdpSocket;

/// Largest datagram read (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams read in one go before the loop lets the requests it spawned run: the socket is
/// drained as fast as it can be, so that under a flood the kernel drops as little as
/// possible of what other sources send, and what is over the limits costs a lookup each.
const BATCH: usize = 256;

/// Receive forever, handing each datagram to `handler`.
pub(crate) async fn serve<H: Handler>(
    sock: Arc<UdpSocket>,
    handler: Arc<H>,
    admission: Arc<SourceRate>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        if let Err(e) = sock.readable().await {
            tracing::debug!(error = %e, "udp socket not readable");
            continue;
        }
        for _ in 0..BATCH {
            match sock.try_recv_from(&mut buf) {
                Ok((n, src)) => {
                    datagram(&sock, &handler, &admission, &buf[..n], src).await;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP port unreachable from an earlier send shows up here on some systems.
                Err(e) => tracing::debug!(error = %e, "udp receive error"),
            }
        }
        tokio::task::yield_now().await;
    }
}

/// One datagram: admission, keep-alives, then the handler (responses here and now, in
/// order; requests in a task of their own).
async fn datagram<H: Handler>(
    sock: &Arc<UdpSocket>,
    handler: &Arc<H>,
    admission: &Arc<SourceRate>,
    raw: &[u8],
    src: std::net::SocketAddr,
) {
    let now = crate::clock::now_millis();
    // Requests hold a place of their source while they are handled; responses are handled
    // here and now, so only the rate applies to them.
    let ticket = if raw.starts_with(b"SIP/") {
        admission.allow(src.ip(), now).then_some(None)
    } else {
        admission.enter(src.ip(), now).map(Some)
    };
    let Some(ticket) = ticket else {
        crate::metrics::dropped("source_limits");
        throttled_info!(%src, "dropped datagrams over the per-source limits");
        return;
    };
    if stun::is_stun(raw) {
        if let Some(answer) = stun::binding_response(raw, src) {
            // Never waits: a full socket buffer drops the answer, as UDP may.
            let _ = sock.try_send_to(&answer, src);
        }
        return;
    }
    if stun::is_blank_keepalive(raw) {
        return;
    }
    let data = Bytes::copy_from_slice(raw);
    let peer = Peer {
        proto: Proto::Udp,
        src,
        path: ReplyPath::Udp(sock.clone()),
    };
    if data.starts_with(b"SIP/") {
        // Responses need no lookup: forwarding them in the receive loop keeps their order
        // (a 180 is not overtaken by its 200).
        handler.clone().on_message(data, peer).await;
    } else {
        let handler = handler.clone();
        tokio::spawn(async move {
            handler.on_message(data, peer).await;
            drop(ticket);
        });
    }
}
