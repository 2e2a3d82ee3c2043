//! The stateless proxy: RFC 3261 section 16 with 16.11.

use crate::location::LocationStore;
use crate::server::Server;
use crate::sip::Message;
use crate::transport::Peer;
use sip_uri::SipUri;
use std::net::SocketAddr;

pub struct Proxy {
    locals: Vec<SocketAddr>,
}

impl Proxy {
    pub fn new(
        _cfg: &crate::config::Config,
        locals: &[(crate::config::Proto, SocketAddr)],
        _udp: &[std::sync::Arc<tokio::net::UdpSocket>],
    ) -> Proxy {
        Proxy {
            locals: locals.iter().map(|(_, a)| *a).collect(),
        }
    }

    pub fn is_self(&self, host: &str, port: Option<u16>) -> bool {
        self.locals
            .iter()
            .any(|a| a.ip().to_string() == host && port.unwrap_or(5060) == a.port())
    }
}

pub async fn route<S: LocationStore>(
    server: &Server<S>,
    msg: Message,
    peer: Peer,
    _uri: SipUri,
    _host: String,
) {
    if msg.method() == Some("ACK") {
        return;
    }
    let bytes = crate::sip::response::Response::new(&msg, peer.src, 501, "Not Implemented").build();
    server.answer(&msg, &peer, bytes).await;
}

pub async fn forward_response<S: LocationStore>(_server: &Server<S>, _msg: Message, _peer: Peer) {}
