//! RFC 3261 16.5, where a request goes: its Route, the bindings of its user in the location
//! store (each a choice, tried in order: RFC 5626 5.3), a flow of ours, or its Request-URI;
//! then each choice's transport addresses (RFC 3263, see [`crate::resolve`]). SIPS is
//! refused here rather than downgraded.

use super::{Proxy, Routing, forbidden_destination};
use crate::location::LocationStore;
use crate::registrar;
use crate::sip::Message;
use crate::sip::addr::{NameAddr, route_uri};
use crate::sip::response::Refusal;
use crate::sip::uri::{parse_sip, scheme};
use crate::throttle::throttled_info;
use crate::transport::{Connections, Proto};
use sip_uri::SipUri;
use std::net::SocketAddr;

/// The next hop of a request.
pub(super) struct Hop {
    uri: SipUri,
    /// The far end of the TCP connection the target registered over.
    tcp_hint: Option<SocketAddr>,
    /// It comes from a registered binding or the operator's configuration, not from the
    /// request itself (the deny list applies only to what a request chose).
    pub(super) registered: bool,
    /// It is a binding of the location store: 480 when it cannot be reached.
    looked_up: bool,
}

impl Hop {
    pub(super) fn from_request(uri: SipUri) -> Hop {
        Hop {
            uri,
            tcp_hint: None,
            registered: false,
            looked_up: false,
        }
    }

    pub(super) fn registered(uri: SipUri, tcp_hint: Option<SocketAddr>) -> Hop {
        Hop {
            uri,
            tcp_hint,
            registered: true,
            looked_up: true,
        }
    }

    /// What the sender gets when no way to this hop worked.
    pub(super) fn unreachable(&self) -> Refusal {
        match self.looked_up {
            true => Refusal::new(480, "Temporarily Unavailable (not reachable now)"),
            false => Refusal::new(503, "Service Unavailable (next hop unreachable)"),
        }
    }
}

/// RFC 3261 26.2.2, RFC 5630: a SIPS Request-URI or next hop may only be sent over TLS, on
/// every hop, and sipfarm has no TLS yet, so it is refused, never downgraded to UDP or TCP
/// (nor given a `sip:` Record-Route). A SIPS URI the request itself chose (Request-URI,
/// Route, a strict router's last Route) gets 416 Unsupported URI Scheme, what 16.3 item 2
/// and 8.2.2.1 prescribe for a scheme the element cannot handle, and what tells the caller
/// that this proxy will not take it (a 480 would invite a retry). A SIPS contact found by
/// the lookup gets 480: the user is registered but unreachable from here.
pub(super) fn refuse_sips(hop: &Hop, r: &Routing) -> Result<(), Refusal> {
    let sips = |u: &str| scheme(u).as_deref() == Some("sips");
    if !sips(&hop.uri.to_string()) && !sips(&r.request_uri) {
        return Ok(());
    }
    throttled_info!(next_hop = %hop.uri, "refused a SIPS next hop: no TLS");
    Err(if hop.registered {
        Refusal::new(480, "Temporarily Unavailable (the target needs TLS)")
    } else {
        Refusal::new(
            416,
            "Unsupported URI Scheme (SIPS needs TLS, not offered here)",
        )
    })
}

impl Proxy {
    /// 16.5 and 16.6 item 6: the next hops, in the order they are tried, each with the
    /// request as it goes there.
    pub(super) async fn targets(
        &self,
        store: &impl LocationStore,
        conns: &Connections,
        msg: &Message,
        mut r: Routing,
    ) -> Result<Vec<(Routing, Hop)>, Refusal> {
        if let Some(f) = r.flow {
            if f.proto == Proto::Tcp && conns.by_addr(f.src).is_none() {
                // Routed here by another instance to a connection that is gone: the
                // Request-URI (the UA's Contact) is used when it names the host the connection
                // came from (no NAT: the UA listens there), else the flow failed (RFC 5626 5.3).
                let same_host = crate::sip::uri::host_ip(&r.ruri)
                    .is_some_and(|ip| ip.to_canonical() == f.src.ip().to_canonical());
                if !same_host {
                    return Err(flow_failed());
                }
                r.flow = None;
            }
            let hop = Hop::registered(r.ruri.clone(), None);
            return Ok(vec![(r, hop)]);
        }
        if let Some(first) = r.routes.first() {
            let u = route_uri(first).ok_or_else(|| Refusal::new(400, "Bad Route"))?;
            if u.param("lr").is_none() {
                // A strict router next: it gets the Request-URI slot.
                let strict = r.routes.remove(0);
                r.routes.push(format!("<{}>", r.request_uri));
                r.request_uri = NameAddr::parse(&strict).map(|a| a.uri).unwrap_or_default();
                r.routes_changed = true;
            }
            return Ok(vec![(r, Hop::from_request(u))]);
        }
        // A URI names our domain only with one of our ports or none (19.1.4): a UA's
        // contact on the IP that is also our domain is that UA. An AOR with a user part is
        // looked up whatever its port (10.3), except inside a dialog: once loose routing is
        // done, an in-dialog request goes to its Request-URI, the peer's Contact, as
        // Kamailio's loose_route does; the store is not asked.
        let lookup = self.identity.names_our_domain(&r.ruri)
            || (!super::has_to_tag(msg)
                && r.ruri.user().is_some()
                && self.identity.serves_domain(&r.host));
        if lookup {
            let targets = registrar::lookup(store, &r.ruri, &r.request_uri).await?;
            let choices: Vec<(Routing, Hop)> = targets
                .into_iter()
                .filter_map(|t| self.choice(conns, msg, &r, t))
                .collect();
            if choices.is_empty() {
                // Every binding is on a flow of ours that is gone (RFC 5626 5.3).
                return Err(Refusal::new(480, "Temporarily Unavailable (flow closed)"));
            }
            return Ok(choices);
        }
        if self.identity.is_local(&r.host, r.ruri.port()) {
            // Addressed to this instance but not to a domain we serve: nowhere to go.
            return Err(Refusal::new(404, "Not Found"));
        }
        let hop = match &self.outbound {
            // The operator's own proxy: not a destination the request chose.
            Some(ob) => Hop {
                uri: ob.clone(),
                tcp_hint: None,
                registered: true,
                looked_up: false,
            },
            None => Hop::from_request(r.ruri.clone()),
        };
        Ok(vec![(r, hop)])
    }

    /// The request toward one binding: to its contact (or its Path), on its flow when we
    /// hold it (None when that TCP connection is gone: the binding is unusable until the UA
    /// registers again), or to the instance that holds it with the owner's Route.
    pub(super) fn choice(
        &self,
        conns: &Connections,
        msg: &Message,
        r: &Routing,
        t: registrar::Target,
    ) -> Option<(Routing, Hop)> {
        let mut r = r.clone();
        r.request_uri = t.request_uri;
        if let Some(route_set) = t.route_set {
            r.routes = route_set;
            r.routes_changed = true;
        }
        let Some((flow, owner)) = t.flow else {
            return Some((r, Hop::registered(t.next_hop, t.tcp_hint)));
        };
        let owner_uri = parse_sip(&owner)?;
        // Ours exactly when we wrote this very owner URI: not whenever it names an address
        // or domain we answer for (instances sharing a name must still tell their flows).
        if owner == self.identity.flow_owner_uri(flow) {
            if flow.proto == Proto::Tcp && conns.by_addr(flow.src).is_none() {
                // Gone, and not marked closed yet (or never: an instance tracks a bounded
                // number of AORs per connection): the Contact, when it reaches the UA.
                return t
                    .contact_reaches
                    .then(|| (r, Hop::registered(t.next_hop, t.tcp_hint)));
            }
            r.flow = Some(flow);
            return Some((r, Hop::registered(t.next_hop, None)));
        }
        r.routes
            .insert(0, self.identity.route_to_owner(&owner, msg));
        r.routes_changed = true;
        Some((r, Hop::registered(owner_uri, None)))
    }

    /// Where the next hop is: an open connection to the binding's TCP source, else RFC 3263
    /// (maddr, then SRV fail-over: the targets in the order they are tried, see
    /// [`crate::resolve`]), each with whether its transport was chosen for us (the
    /// connection, or the URI names it: then a large request is not moved to TCP). Never a
    /// memcached node of the farm; never a denied network when the request chose it; every
    /// target is checked, and the request is refused only when none is left.
    pub(super) async fn locate(
        &self,
        hop: &Hop,
        r: &Routing,
        conns: &Connections,
    ) -> Result<Vec<(Proto, SocketAddr, bool)>, Refusal> {
        if let Some(f) = r.flow {
            // A flow is an address like any other: never a broadcast or a memcached node,
            // and one a request's source chose (a dialog's caller) is checked like a
            // destination the request chose.
            let ip = f.src.ip();
            let denied = f.dialog && self.deny.iter().any(|n| n.contains(&ip.to_canonical()));
            if forbidden_destination(ip) || self.identity.is_farm_node(f.src) || denied {
                throttled_info!(dest = %f.src, "refused a forbidden flow destination");
                return Err(Refusal::new(403, "Forbidden destination"));
            }
            return Ok(vec![(f.proto, f.src, true)]);
        }
        if let Some(addr) = hop.tcp_hint.filter(|a| conns.by_addr(*a).is_some()) {
            return Ok(vec![(Proto::Tcp, addr, true)]);
        }
        let targets = self.resolver.resolve(&hop.uri).await.map_err(|e| {
            throttled_info!(next_hop = %hop.uri, error = %e, "cannot resolve the next hop");
            Refusal::new(503, "Service Unavailable (next hop unresolvable)")
        })?;
        let mut hops = Vec::with_capacity(targets.len());
        for target in targets {
            let ip = target.addr.ip();
            let denied =
                !hop.registered && self.deny.iter().any(|n| n.contains(&ip.to_canonical()));
            if forbidden_destination(ip) || self.identity.is_farm_node(target.addr) || denied {
                throttled_info!(dest = %target.addr, "refused a forbidden destination");
                continue;
            }
            let hop = (target.proto, target.addr, target.explicit);
            if !hops.contains(&hop) {
                hops.push(hop);
            }
        }
        if hops.is_empty() {
            return Err(Refusal::new(403, "Forbidden destination"));
        }
        Ok(hops)
    }
}

/// RFC 5626 5.3: the flow a request was routed to is gone (or its token is not ours).
pub(super) fn flow_failed() -> Refusal {
    Refusal::new(430, "Flow Failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::host as uri_host;

    fn routing(request_uri: &str) -> Routing {
        let ruri = parse_sip(request_uri).unwrap();
        Routing {
            request_uri: request_uri.to_owned(),
            host: uri_host(&ruri).unwrap_or_default(),
            ruri,
            routes: Vec::new(),
            routes_changed: false,
            flow: None,
        }
    }

    fn hop(uri: &str, registered: bool) -> Hop {
        Hop {
            uri: parse_sip(uri).unwrap(),
            tcp_hint: None,
            registered,
            looked_up: registered,
        }
    }

    /// A lookup that yields a SIPS contact is not downgraded: 480 (the user is registered,
    /// just not reachable without TLS); a SIPS hop the request chose: 416.
    #[test]
    fn sips_next_hops_are_refused() {
        let contact = "sips:bob@192.0.2.1:5061";
        let code = |h: &Hop, r: &Routing| refuse_sips(h, r).err().map(|e| e.code);
        assert_eq!(code(&hop(contact, true), &routing(contact)), Some(480));
        assert_eq!(
            code(&hop("sips:192.0.2.2;lr", false), &routing("sip:b@x.test")),
            Some(416)
        );
        assert_eq!(
            code(&hop("sip:b@x.test", false), &routing("sip:b@x.test")),
            None
        );
    }
}
