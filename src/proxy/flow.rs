//! Requests to and from UAs reachable only over one flow (RFC 5626 5.3, the edge proxy; see
//! [`crate::identity::FlowRef`] for the tokens).
//!
//! - A binding whose flow another instance holds: the request goes there, with the owner's
//!   URI and token as its top Route; its Request-URI is the contact. When the owner cannot
//!   be reached (it is down), the next binding, or 480.
//! - Our own URI with a valid token on top of the Route set: removed, and the request is
//!   delivered on that flow (TCP: its connection, 430 Flow Failed when it is gone; UDP: from
//!   our socket to the NAT's public address), unless it came from that very flow (a request
//!   of the UA itself, which goes on along the route set).
//! - Record-Route: when the callee (the flow a request is delivered on here) or the caller
//!   (a UA on TCP, or behind NAT by its Via) is on a flow of this instance, two entries naming
//!   this instance itself (a farm URI would let another instance take in-dialog requests it
//!   cannot deliver), the callee-facing one with the callee's token and the caller-facing one
//!   with the caller's. Either direction of the dialog then finds its flow here.

use super::BRANCH_PREFIX;
use crate::identity::{FLOW_PARAM, FlowRef, Identity, RR_PARAM};
use crate::sip::Message;
use crate::transport::{Peer, Proto};
use std::net::{IpAddr, SocketAddr};

/// Did `msg` arrive on `flow` (whoever wrote the token: a binding or a dialog)?
pub(super) fn arrived_on(flow: FlowRef, peer: &Peer) -> bool {
    flow.proto == peer.proto && canonical(flow.src) == canonical(peer.src)
}

/// The flow the caller of a dialog-creating request is reached on, when it needs one: it
/// came over TCP, or its top Via's sent-by is not its source (NAT, RFC 3581). Not when it
/// came from another instance of the farm (our branch prefix in its top Via): that one is
/// reached by its Via and its own Record-Route.
pub(super) fn caller_flow(msg: &Message, peer: &Peer) -> Option<FlowRef> {
    let via = msg.top_via().ok()?;
    if via.branch().is_some_and(|b| b.starts_with(BRANCH_PREFIX)) {
        return None;
    }
    let natted = match via.host_bare().parse::<IpAddr>() {
        Ok(ip) => canonical(SocketAddr::new(ip, via.port.unwrap_or(5060))) != canonical(peer.src),
        Err(_) => false,
    };
    (peer.proto == Proto::Tcp || natted).then_some(FlowRef {
        proto: peer.proto,
        src: peer.src,
        dialog: true,
    })
}

/// Our Record-Route entries when a flow is involved: callee-facing (toward `next`) first,
/// then caller-facing (toward `prev`), each naming this instance with its side's token.
/// None when neither side is on a flow (the usual entries apply).
pub(super) fn record_route(
    identity: &Identity,
    sig: &str,
    next: (Proto, Option<FlowRef>),
    prev: (Proto, Option<FlowRef>),
) -> Option<Vec<String>> {
    if next.1.is_none() && prev.1.is_none() {
        return None;
    }
    let entry = |(proto, flow): (Proto, Option<FlowRef>)| {
        let token = flow
            .map(|f| format!(";{FLOW_PARAM}={}", identity.flow_token(f)))
            .unwrap_or_default();
        format!("<{};lr;{RR_PARAM}={sig}{token}>", identity.own_uri(proto))
    };
    Some(vec![entry(next), entry(prev)])
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
