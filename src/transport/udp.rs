//! UDP: one datagram is one message (RFC 3261 18.1.1 / 18.2.1). Each request is handled in a
//! task of its own, so that a slow location lookup never holds up the socket; responses,
//! which need no lookup, are forwarded in order from the receive loop.

use super::{Handler, Peer, Proto, ReplyPath};
use bytes::Bytes;
use std::sync::Arc;
use tokio::net::UdpSocket;

/// Largest datagram read (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// Receive forever, handing each datagram to `handler`.
pub(crate) async fn serve<H: Handler>(sock: Arc<UdpSocket>, handler: Arc<H>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, src)) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                let peer = Peer {
                    proto: Proto::Udp,
                    src,
                    path: ReplyPath::Udp(sock.clone()),
                };
                if data.starts_with(b"SIP/") {
                    // Responses need no lookup: forwarding them in the receive loop keeps
                    // their order (a 180 is not overtaken by its 200).
                    handler.clone().on_message(data, peer).await;
                } else {
                    tokio::spawn(handler.clone().on_message(data, peer));
                }
            }
            Err(e) => {
                // ICMP port unreachable from an earlier send shows up here on some systems.
                tracing::debug!(error = %e, "udp receive error");
            }
        }
    }
}
