//! The stateless proxy: RFC 3261 section 16 with 16.11, RFC 3327 (Path becomes the route
//! set toward a registered UA) and RFC 3263 (foreign domains, see [`crate::resolve`]).
//!
//! Every instance routes for every user: the target comes from the shared location store
//! through [`crate::registrar::lookup`]. The proxy decides and returns a value, a
//! [`Forward`] (the bytes and where they go) or a [`Refusal`]; the server sends it.
//!
//! - 16.3 validation ([`Proxy::check`]): Max-Forwards 0 gets 483; a loop gets 482 (our own
//!   Via, carrying the loop-detection part of the branch computed for this very request, is
//!   already there).
//! - 16.4 route pre-processing ([`Proxy::preprocess`]): a Route naming the farm is removed; a
//!   Request-URI that is our Record-Route URI (a strict router upstream) is replaced by the
//!   last Route.
//! - 16.5 targets ([`Proxy::target`]): a Request-URI in one of our domains is looked up
//!   (CANCEL and ACK too); anything else is forwarded to its Request-URI (or the outbound
//!   proxy) without a lookup: in-dialog requests never touch memcached.
//! - 16.6 forwarding ([`Proxy::forward`]): Request-URI, Max-Forwards, our Via (branch per
//!   16.11, see [`branch`]), Route, Record-Route naming the farm (two entries when the
//!   transport changes), all as edits over the received bytes ([`crate::sip::edit`]).
//! - 16.7 / 16.11 responses: [`response`].

mod branch;
mod mac;
mod response;

pub(crate) use branch::{BRANCH_PREFIX, branch, loop_part};
pub(crate) use response::forward_response;

use crate::identity::{Identity, RR_PARAM, dialog_tag, from_tag};
use crate::location::LocationStore;
use crate::registrar;
use crate::resolve::Resolver;
use crate::sip::Message;
use crate::sip::addr::{NameAddr, route_uri};
use crate::sip::edit::{RequestEdits, forward_request};
use crate::sip::header::HeaderName;
use crate::sip::response::Refusal;
use crate::sip::uri::{host as uri_host, parse_sip, scheme};
use crate::throttle::throttled_info;
use crate::transport::{Connections, Peer, Proto, ReplyPath};
use bytes::Bytes;
use sip_uri::SipUri;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// RFC 3261 18.1.1: a request larger than this goes over a congestion-controlled transport
/// when the target does not insist on UDP.
pub(crate) const UDP_MTU_LIMIT: usize = 1300;

/// Methods that create dialogs: Record-Route is added to them (when they are not in-dialog).
const DIALOG_CREATING: &[&str] = &["INVITE", "SUBSCRIBE", "REFER", "NOTIFY"];

/// What `[proxy]` configures.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Add Record-Route to dialog-creating requests.
    pub record_route: bool,
    /// The URI (no user part, no `;lr`) that names the farm in Record-Route; every instance
    /// treats a Route to it as its own. None: each instance names itself (its advertised
    /// address), which phones reach without DNS.
    pub farm_uri: Option<String>,
    /// Where requests for foreign domains go, instead of RFC 3263 resolution.
    pub outbound_proxy: Option<String>,
    /// DNS server for RFC 3263 (None: the system's).
    pub dns_server: Option<SocketAddr>,
    /// Networks no request may be sent to when the destination comes from the request
    /// (Request-URI, Route, RFC 3263 answers); contacts registered by users are not
    /// checked against it. The farm's memcached nodes are always refused.
    pub deny: Vec<ipnet::IpNet>,
}

/// A message to send, decided: its bytes and where they go, and what to do when that hop
/// cannot be reached.
#[derive(Debug)]
pub(crate) struct Forward {
    pub bytes: Bytes,
    pub to: NextHop,
    /// Tried in order when sending to `to` fails (a TCP dial refused or timed out, no
    /// connection left): the same request over UDP (RFC 3261 18.1.1), the next RFC 3263
    /// target. Each with its own bytes (the Via names the transport).
    pub fallbacks: Vec<(Bytes, NextHop)>,
    /// What the sender of a request gets when no hop could be reached.
    pub unreachable: Refusal,
}

impl Forward {
    /// One hop, no fall-back; 503 when it cannot be reached.
    pub(crate) fn new(bytes: Bytes, to: NextHop) -> Forward {
        Forward {
            bytes,
            to,
            fallbacks: Vec::new(),
            unreachable: Refusal::new(503, "Service Unavailable (next hop unreachable)"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextHop {
    /// A transport address: over UDP from one of our sockets, over TCP on an open connection
    /// to it or a new one.
    Addr { proto: Proto, dest: SocketAddr },
    /// The open TCP connection with this id (a response going back the way its request came).
    Conn(u64),
}

pub(crate) struct Proxy {
    identity: Arc<Identity>,
    deny: Vec<ipnet::IpNet>,
    record_route: bool,
    outbound: Option<SipUri>,
    resolver: Resolver,
}

/// The next hop of a request.
struct Hop {
    uri: SipUri,
    /// The far end of the TCP connection the target registered over.
    tcp_hint: Option<SocketAddr>,
    /// It comes from a registered binding or the operator's configuration, not from the
    /// request itself (the deny list applies only to what a request chose).
    registered: bool,
}

impl Hop {
    fn from_request(uri: SipUri) -> Hop {
        Hop {
            uri,
            tcp_hint: None,
            registered: false,
        }
    }
}

/// A request as route pre-processing (16.4) leaves it.
struct Routing {
    request_uri: String,
    ruri: SipUri,
    /// Lowercased host of `ruri`.
    host: String,
    routes: Vec<String>,
    /// Whether `routes` differs from the Route lines received (they are rewritten then).
    routes_changed: bool,
}

/// RFC 3261 26.2.2, RFC 5630: a SIPS Request-URI or next hop may only be sent over TLS, on
/// every hop, and sipfarm has no TLS yet, so it is refused, never downgraded to UDP or TCP
/// (nor given a `sip:` Record-Route). A SIPS URI the request itself chose (Request-URI,
/// Route, a strict router's last Route) gets 416 Unsupported URI Scheme, what 16.3 item 2
/// and 8.2.2.1 prescribe for a scheme the element cannot handle, and what tells the caller
/// that this proxy will not take it (a 480 would invite a retry). A SIPS contact found by
/// the lookup gets 480: the user is registered but unreachable from here.
fn refuse_sips(hop: &Hop, r: &Routing) -> Result<(), Refusal> {
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

/// Never send to these (RFC 4475 bcast: a Via naming a broadcast address is not followed).
pub(crate) fn forbidden_destination(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_multicast() || v6.is_unspecified(),
    }
}

impl Proxy {
    pub(crate) fn new(cfg: &ProxyConfig, identity: Arc<Identity>, max_dns_lookups: usize) -> Proxy {
        Proxy {
            identity,
            deny: cfg.deny.clone(),
            record_route: cfg.record_route,
            outbound: cfg.outbound_proxy.as_deref().and_then(parse_sip),
            resolver: Resolver::new(cfg.dns_server, max_dns_lookups),
        }
    }

    /// Route one request that is not for us as UAS (16.3 to 16.6). `conns` tells which TCP
    /// connections are open (a UA registered over TCP is reached over its connection).
    /// Without `may_relay` (a request nobody authenticated, from outside a dialog of ours),
    /// it may only reach a registered user of ours: no open relay.
    pub(crate) async fn route(
        &self,
        store: &impl LocationStore,
        conns: &Connections,
        msg: &Message,
        peer: &Peer,
        ruri: SipUri,
        may_relay: bool,
    ) -> Result<Forward, Refusal> {
        let loop_hash = self.check(msg)?;
        let mut routing = self.preprocess(msg, ruri)?;
        let hop = self.target(store, &mut routing, has_to_tag(msg)).await?;
        if !hop.registered && !may_relay {
            // Judged on where the request really goes: after route pre-processing (a strict
            // route can swap the Request-URI) and the lookup.
            return Err(Refusal::new(403, "Forbidden (relaying denied)"));
        }
        refuse_sips(&hop, &routing)?;
        // RFC 3263 4.3: every target in the order it is tried, each with its own bytes (its
        // Via and Record-Route name its transport and our address toward it).
        let mut tries = Vec::new();
        for (proto, dest, chosen) in self.locate(&hop, conns).await? {
            let f = self.forward(msg, peer, &routing, proto, dest, &loop_hash);
            if proto == Proto::Udp && !chosen && f.bytes.len() > UDP_MTU_LIMIT {
                // 18.1.1: too large for UDP, judged on what would be sent, so TCP first;
                // since the target never asked for TCP, the same request over UDP next when
                // TCP cannot reach it (a UDP-only phone), as the RFC says a client retries.
                let tcp = self.forward(msg, peer, &routing, Proto::Tcp, dest, &loop_hash);
                tries.push((tcp.bytes, tcp.to));
            }
            tries.push((f.bytes, f.to));
        }
        let mut tries = tries.into_iter();
        let (bytes, to) = tries
            .next()
            .ok_or_else(|| Refusal::new(503, "Service Unavailable (no next hop)"))?;
        let mut forward = Forward::new(bytes, to);
        forward.fallbacks = tries.collect();
        Ok(forward)
    }

    /// 16.3 items 3 and 4; returns the loop-detection part of our branch.
    fn check(&self, msg: &Message) -> Result<String, Refusal> {
        if msg.max_forwards().ok().flatten() == Some(0) {
            return Err(Refusal::new(483, "Too Many Hops"));
        }
        // Our own Via with this request's loop part means it came back unchanged.
        let loop_hash = loop_part(msg);
        let suffix = format!(".{loop_hash}");
        let vias = msg.vias().unwrap_or_default();
        let ours = |v: &&crate::sip::via::Via| self.identity.is_local(v.host_bare(), v.port);
        let looped = vias.iter().filter(ours).any(|v| {
            v.branch()
                .is_some_and(|b| b.starts_with(BRANCH_PREFIX) && b.ends_with(&suffix))
        });
        if looped {
            return Err(Refusal::new(482, "Loop Detected"));
        }
        // A spiral passes here twice at most; a third pass is a loop whatever changed (Route
        // entries bouncing a request between instances rewrite the loop part every time).
        if vias.iter().filter(ours).count() >= 2 {
            return Err(Refusal::new(
                482,
                "Loop Detected (this instance twice in Via)",
            ));
        }
        Ok(loop_hash)
    }

    /// 16.4: strict-router repair, then every leading Route that names the farm removed.
    fn preprocess(&self, msg: &Message, ruri: SipUri) -> Result<Routing, Refusal> {
        let bad_route = || Refusal::new(400, "Bad Route");
        let mut routes: Vec<String> = msg
            .list(&HeaderName::Route)
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let received = routes.len();
        let mut request_uri = msg.request_uri().unwrap_or_default().to_owned();
        let mut ruri = ruri;
        if self.identity.names_farm(&ruri) {
            // A strict router put our Record-Route URI in the Request-URI.
            if let Some(last) = routes.pop() {
                request_uri = NameAddr::parse(&last).map_err(|_| bad_route())?.uri;
                ruri = parse_sip(&request_uri)
                    .ok_or_else(|| Refusal::new(416, "Unsupported URI Scheme"))?;
            }
        }
        while let Some(first) = routes.first() {
            match route_uri(first) {
                Some(u) if self.identity.names_farm(&u) => {
                    routes.remove(0);
                }
                Some(_) => break,
                None => return Err(bad_route()),
            }
        }
        // One later entry naming the farm is a dialog that spirals through the farm once;
        // more is a route set built to bounce the request between instances.
        let again = routes
            .iter()
            .filter(|r| route_uri(r).is_some_and(|u| self.identity.names_farm(&u)))
            .count();
        if again > 1 {
            return Err(Refusal::new(
                482,
                "Loop Detected (Route names the farm again)",
            ));
        }
        Ok(Routing {
            host: uri_host(&ruri).unwrap_or_default(),
            routes_changed: routes.len() != received,
            request_uri,
            ruri,
            routes,
        })
    }

    /// 16.5 and 16.6 item 6: the next hop. `in_dialog`: the request has a To tag.
    async fn target(
        &self,
        store: &impl LocationStore,
        r: &mut Routing,
        in_dialog: bool,
    ) -> Result<Hop, Refusal> {
        if let Some(first) = r.routes.first() {
            let u = route_uri(first).ok_or_else(|| Refusal::new(400, "Bad Route"))?;
            if u.param("lr").is_none() {
                // A strict router next: it gets the Request-URI slot.
                let strict = r.routes.remove(0);
                r.routes.push(format!("<{}>", r.request_uri));
                r.request_uri = NameAddr::parse(&strict).map(|a| a.uri).unwrap_or_default();
                r.routes_changed = true;
            }
            return Ok(Hop::from_request(u));
        }
        // A URI names our domain only with one of our ports or none (19.1.4): a UA's
        // contact on the IP that is also our domain is that UA. An AOR with a user part is
        // looked up whatever its port (10.3), except inside a dialog: once loose routing is
        // done, an in-dialog request goes to its Request-URI, the peer's Contact, as
        // Kamailio's loose_route does; the store is not asked.
        let lookup = self.identity.names_our_domain(&r.ruri)
            || (!in_dialog && r.ruri.user().is_some() && self.identity.serves_domain(&r.host));
        if lookup {
            let t = registrar::lookup(store, &r.ruri, &r.request_uri).await?;
            r.request_uri = t.request_uri;
            if let Some(route_set) = t.route_set {
                r.routes = route_set;
                r.routes_changed = true;
            }
            return Ok(Hop {
                uri: t.next_hop,
                tcp_hint: t.tcp_hint,
                registered: true,
            });
        }
        if self.identity.is_local(&r.host, r.ruri.port()) {
            // Addressed to this instance but not to a domain we serve: nowhere to go.
            return Err(Refusal::new(404, "Not Found"));
        }
        Ok(match &self.outbound {
            // The operator's own proxy: not a destination the request chose.
            Some(ob) => Hop {
                uri: ob.clone(),
                tcp_hint: None,
                registered: true,
            },
            None => Hop::from_request(r.ruri.clone()),
        })
    }

    /// Where the next hop is: an open connection to the binding's TCP source, else RFC 3263
    /// (maddr, then SRV fail-over: the targets in the order they are tried, see
    /// [`crate::resolve`]), each with whether its transport was chosen for us (the
    /// connection, or the URI names it: then a large request is not moved to TCP). Never a
    /// memcached node of the farm; never a denied network when the request chose it; every
    /// target is checked, and the request is refused only when none is left.
    async fn locate(
        &self,
        hop: &Hop,
        conns: &Connections,
    ) -> Result<Vec<(Proto, SocketAddr, bool)>, Refusal> {
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

    /// 16.6: the forwarded request, as edits over the received bytes.
    fn forward(
        &self,
        msg: &Message,
        peer: &Peer,
        r: &Routing,
        proto: Proto,
        dest: SocketAddr,
        loop_hash: &str,
    ) -> Forward {
        let method = msg.method().unwrap_or_default();
        let mut record_route = Vec::new();
        if self.record_route && !has_to_tag(msg) && DIALOG_CREATING.contains(&method) {
            let sig = dialog_tag(&self.identity, msg.call_id().unwrap_or(""), &from_tag(msg));
            // Top entry faces the callee (the next hop), the second the caller, when they differ.
            record_route.push(self.rr_value(proto, &sig));
            if proto != peer.proto {
                record_route.push(self.rr_value(peer.proto, &sig));
            }
        }
        let conn = match &peer.path {
            ReplyPath::Tcp(c) => Some(c.id),
            ReplyPath::Udp(_) => None,
        };
        let conn_token = conn.map(|id| format!(";sfc={id}")).unwrap_or_default();
        let branch = branch(msg, loop_hash);
        let tag = msg
            .list(&HeaderName::Via)
            .ok()
            .and_then(|v| v.first().and_then(|top| mac::back_to(top, peer.src)))
            .map(|back| mac::tag(&self.identity, &branch, back, conn.unwrap_or(0)))
            .map(|t| format!(";{}={t}", mac::PARAM))
            .unwrap_or_default();
        let via = format!(
            "SIP/2.0/{} {};branch={branch}{conn_token}{tag};rport",
            proto.via(),
            self.identity.sent_by(proto, dest),
        );
        let bytes = forward_request(
            msg,
            &RequestEdits {
                request_uri: &r.request_uri,
                via: &via,
                record_route: &record_route,
                routes: r.routes_changed.then_some(r.routes.as_slice()),
                src: peer.src,
                need_length: proto == Proto::Tcp,
            },
        );
        tracing::debug!(%dest, proto = proto.as_str(), request_uri = %r.request_uri, "forwarding request");
        Forward::new(Bytes::from(bytes), NextHop::Addr { proto, dest })
    }

    /// Our Record-Route value for one side of a request, signed for its dialog (see
    /// [`dialog_tag`]).
    /// It names the farm URI when one is configured, else this instance (see
    /// [`Identity::record_route_uri`]).
    fn rr_value(&self, proto: Proto, sig: &str) -> String {
        let uri = self.identity.record_route_uri(proto);
        format!("<{uri};lr;{RR_PARAM}={sig}>")
    }
}

/// A To tag: the request is inside a dialog (RFC 3261 12.2).
fn has_to_tag(msg: &Message) -> bool {
    msg.get(&HeaderName::To)
        .and_then(|t| NameAddr::parse(t).ok())
        .is_some_and(|a| a.tag().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(request_uri: &str) -> Routing {
        let ruri = parse_sip(request_uri).unwrap();
        Routing {
            request_uri: request_uri.to_owned(),
            host: uri_host(&ruri).unwrap_or_default(),
            ruri,
            routes: Vec::new(),
            routes_changed: false,
        }
    }

    fn hop(uri: &str, registered: bool) -> Hop {
        Hop {
            uri: parse_sip(uri).unwrap(),
            tcp_hint: None,
            registered,
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
