//! The one place that sends: answers back along the path a request came in on (RFC 3261
//! 18.2.2 with RFC 3581 over UDP, the same connection over TCP), refusals (never to an ACK,
//! RFC 3261 17.1.1.3: an ACK gets no response), and forwarded messages over UDP or TCP.

use super::{Outcome, Server};
use crate::proxy::{Forward, NextHop, forward_response};
use crate::sip::Message;
use crate::sip::response::{Refusal, udp_response_target};
use crate::throttle::throttled_info;
use crate::transport::{self, Peer, Proto, ReplyPath, tcp};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Server {
    /// Carry out what was decided for a request.
    pub(super) async fn deliver(self: &Arc<Self>, msg: &Message, peer: &Peer, outcome: Outcome) {
        match outcome {
            Outcome::Absorb => {}
            Outcome::Answer { bytes, hold_until } => {
                if let (ReplyPath::Tcp(conn), Some(until)) = (&peer.path, hold_until) {
                    conn.hold(until);
                }
                self.answer(msg, peer, bytes).await;
            }
            Outcome::Refuse(refusal) => self.refuse(msg, peer, &refusal).await,
            Outcome::Forward(mut f) => {
                let fallbacks = std::mem::take(&mut f.fallbacks);
                let unreachable = f.unreachable.clone();
                if self.send(peer, f.bytes, f.to).await {
                    return;
                }
                for (bytes, to) in fallbacks {
                    tracing::debug!(?to, "next hop unreachable, trying the next one");
                    if self.send(peer, bytes, to).await {
                        return;
                    }
                }
                self.refuse(msg, peer, &unreachable).await;
            }
        }
    }

    /// A response from downstream, forwarded as the proxy decides. This runs in the receive
    /// loop (responses keep their order), so one whose next hop needs a new TCP connection is
    /// sent from a task of its own: a dial must never hold up a receive loop.
    pub(super) async fn forward_response(self: &Arc<Self>, msg: &Message, peer: &Peer) {
        let Some(f) = forward_response(&self.identity, &self.conns, msg) else {
            return;
        };
        if self.needs_dial(peer, &f) {
            let (server, peer) = (self.clone(), peer.clone());
            tokio::spawn(async move {
                if !server.send(&peer, f.bytes, f.to).await {
                    throttled_info!("could not forward a response");
                }
            });
        } else if !self.send(peer, f.bytes, f.to).await {
            throttled_info!("could not forward a response");
        }
    }

    /// Whether sending `f` would dial a new TCP connection (as `send` decides).
    fn needs_dial(&self, via: &Peer, f: &Forward) -> bool {
        match f.to {
            NextHop::Conn(_) => false,
            NextHop::Addr {
                proto: Proto::Udp,
                dest,
            } if self.udp_socket(via, dest).is_some() => false,
            NextHop::Addr { dest, .. } => self.conns.by_addr(dest).is_none(),
        }
    }

    /// Answer a request over the path it came in on.
    async fn answer(&self, req: &Message, peer: &Peer, bytes: Vec<u8>) {
        crate::metrics::answered(&bytes);
        let dest = match (&peer.path, req.top_via()) {
            (ReplyPath::Udp(_), Ok(via)) => udp_response_target(via, peer.src),
            _ => peer.src,
        };
        transport::send(&peer.path, dest, Bytes::from(bytes)).await;
    }

    /// Refuse a request, unless it is an ACK: an ACK is never answered.
    pub(super) async fn refuse(&self, req: &Message, peer: &Peer, refusal: &Refusal) {
        if req.method() == Some("ACK") {
            tracing::debug!(code = refusal.code, reason = %refusal.reason, "dropped an ACK");
            return;
        }
        self.answer(req, peer, refusal.response(req, peer.src))
            .await;
    }

    /// Send a decided message. False when it could not be sent.
    async fn send(self: &Arc<Self>, via: &Peer, bytes: Bytes, to: NextHop) -> bool {
        match to {
            NextHop::Conn(id) => match self.conns.by_id(id) {
                Some(conn) => conn.send(bytes),
                None => false,
            },
            NextHop::Addr {
                proto: Proto::Udp,
                dest,
            } => match self.udp_socket(via, dest) {
                Some(sock) => sock.send_to(&bytes, dest).await.is_ok(),
                None => self.send_tcp(dest, bytes).await,
            },
            NextHop::Addr {
                proto: Proto::Tcp,
                dest,
            } => self.send_tcp(dest, bytes).await,
        }
    }

    /// Over UDP, the socket the message came in on when it fits (it belongs to this thread's
    /// event loop); else one of ours of the right family.
    fn udp_socket<'a>(
        &'a self,
        via: &'a Peer,
        dest: SocketAddr,
    ) -> Option<&'a Arc<tokio::net::UdpSocket>> {
        let fits =
            |s: &tokio::net::UdpSocket| s.local_addr().is_ok_and(|a| a.is_ipv4() == dest.is_ipv4());
        match &via.path {
            ReplyPath::Udp(sock) if fits(sock) => Some(sock),
            _ => self.udp.iter().find(|s| fits(s)),
        }
    }

    /// Over an open connection to `dest`, or a new one (the dial bounded by
    /// `limits.max_dials`: past it this fails at once, and a request gets 503). Queueing
    /// never waits; a connection whose queue is full is closed and this fails.
    async fn send_tcp(self: &Arc<Self>, dest: SocketAddr, bytes: Bytes) -> bool {
        let conn = match self.conns.by_addr(dest) {
            Some(c) => c,
            None => {
                let settings = self.tcp_settings();
                match tcp::connect(dest, TCP_CONNECT_TIMEOUT, self.clone(), settings).await {
                    Ok(c) => c,
                    Err(e) => {
                        throttled_info!(%dest, error = %e, "tcp connect failed");
                        return false;
                    }
                }
            }
        };
        conn.send(bytes)
    }
}
