//! Responses through the proxy: RFC 3261 16.7 item 3 and 16.11 (our Via must be on top; it is
//! removed and the response follows the next Via), 18.2.2 with RFC 3581 (received, rport),
//! or back on the TCP connection its request came in on (the connection id travels in our
//! Via as `sfc`).

use super::{BRANCH_PREFIX, Forward, NextHop, forbidden_destination};
use crate::identity::Identity;
use crate::sip::Message;
use crate::sip::edit::pop_via;
use crate::sip::via::Via;
use crate::throttle::throttled_info;
use crate::transport::{Connections, Proto};
use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};

/// Where a response goes, or None (logged) when it is dropped.
pub(crate) fn forward_response(
    identity: &Identity,
    conns: &Connections,
    msg: &Message,
) -> Option<Forward> {
    let vias = match msg.vias() {
        Ok(v) => v,
        Err(e) => {
            throttled_info!(error = %e, "dropped a response with a bad Via");
            return None;
        }
    };
    let top = vias.first()?;
    let ours = identity.is_local(top.host_bare(), top.port)
        && top.branch().is_some_and(|b| b.starts_with(BRANCH_PREFIX));
    if !ours {
        throttled_info!(via = %top.host, "dropped a response whose top Via is not ours");
        return None;
    }
    let Some(next) = vias.get(1) else {
        tracing::debug!("dropped a response to a request of our own");
        return None;
    };
    let bytes = Bytes::from(pop_via(msg));
    // Back on the connection the request came in on, while it is open.
    if let Some(id) = top
        .param("sfc")
        .flatten()
        .and_then(|id| id.parse::<u64>().ok())
        .filter(|id| conns.by_id(*id).is_some())
    {
        return Some(Forward {
            bytes,
            to: NextHop::Conn(id),
        });
    }
    let Some(dest) = response_destination(next) else {
        throttled_info!(via = %next.host, "cannot resolve where the response goes");
        return None;
    };
    if forbidden_destination(dest.ip()) || identity.is_farm_node(dest.ip()) {
        throttled_info!(%dest, "dropped a response toward a broadcast or multicast address");
        return None;
    }
    let proto = if next.transport == "TCP" {
        Proto::Tcp
    } else {
        Proto::Udp
    };
    Some(Forward {
        bytes,
        to: NextHop::Addr { proto, dest },
    })
}

/// RFC 3261 18.2.2 with RFC 3581: received (or sent-by host), rport (or sent-by port, 5060).
/// No DNS here: we stamped `received` on every Via whose host is not the source IP, so a Via
/// naming a host and no `received` did not come through us.
fn response_destination(via: &Via) -> Option<SocketAddr> {
    let host = via.param("received").flatten().unwrap_or(via.host_bare());
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()?;
    let port = via
        .param("rport")
        .flatten()
        .and_then(|p| p.parse::<u16>().ok())
        .or(via.port)
        .unwrap_or(5060);
    Some(SocketAddr::new(ip, port))
}
