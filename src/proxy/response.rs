//! Responses through the proxy: RFC 3261 16.7 item 3 and 16.11 (our Via must be on top; it is
//! removed and the response follows the next Via), 18.2.2 with RFC 3581 (received, rport),
//! or back on the TCP connection its request came in on (the connection id travels in our
//! Via as `sfc`). Only a response whose Via carries our MAC over where it goes is relayed
//! ([`super::mac`]): the farm is not a reflector.

use super::mac::{self, PARAM, response_destination};
use super::{BRANCH_PREFIX, Forward, NextHop, forbidden_destination};
use crate::identity::Identity;
use crate::sip::Message;
use crate::sip::edit::pop_via;
use crate::throttle::throttled_info;
use crate::transport::Connections;
use bytes::Bytes;

/// Where a response goes, or None (logged, throttled) when it is dropped.
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
    let branch = top.branch().filter(|b| b.starts_with(BRANCH_PREFIX));
    let (Some(branch), true) = (branch, identity.is_local(top.host_bare(), top.port)) else {
        throttled_info!(via = %top.host, "dropped a response whose top Via is not ours");
        return None;
    };
    let Some(next) = vias.get(1) else {
        tracing::debug!("dropped a response to a request of our own");
        return None;
    };
    let Some(back) = response_destination(next) else {
        throttled_info!(via = %next.host, "cannot resolve where the response goes");
        return None;
    };
    let conn = top
        .param("sfc")
        .flatten()
        .and_then(|id| id.parse::<u64>().ok());
    let tag = top.param(PARAM).flatten().unwrap_or_default();
    if !mac::verify(identity, tag, branch, back, conn.unwrap_or(0)) {
        throttled_info!(dest = %back.1, "dropped a response whose Via fails its MAC (forged?)");
        return None;
    }
    let bytes = Bytes::from(pop_via(msg));
    // Back on the connection the request came in on, while it is open.
    if let Some(id) = conn.filter(|id| conns.by_id(*id).is_some()) {
        return Some(Forward::new(bytes, NextHop::Conn(id)));
    }
    let (proto, dest) = back;
    if forbidden_destination(dest.ip()) || identity.is_farm_node(dest) {
        throttled_info!(%dest, "dropped a response toward a forbidden address");
        return None;
    }
    Some(Forward::new(bytes, NextHop::Addr { proto, dest }))
}
