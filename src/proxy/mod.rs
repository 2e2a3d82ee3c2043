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
mod flow;
mod mac;
mod response;
mod target;

pub(crate) use branch::{BRANCH_PREFIX, branch, loop_part};
pub(crate) use response::forward_response;
use target::{Hop, flow_failed, refuse_sips};

use crate::identity::{FlowRef, Identity, RR_PARAM, RoutedFlow, dialog_tag, from_tag};
use crate::location::LocationStore;
use crate::resolve::Resolver;
use crate::sip::Message;
use crate::sip::addr::{NameAddr, route_uri};
use crate::sip::edit::{RequestEdits, forward_request};
use crate::sip::header::HeaderName;
use crate::sip::response::Refusal;
use crate::sip::uri::{host as uri_host, parse_sip};
use crate::throttle::throttled_info;
use crate::transport::{Connections, Peer, Proto, ReplyPath};
use bytes::Bytes;
use sip_uri::SipUri;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// RFC 3261 18.1.1: a request larger than this goes over a congestion-controlled transport
/// when the target does not insist on UDP.
pub(crate) const UDP_MTU_LIMIT: usize = 1300;

/// Ways one request is tried at most (bindings, RFC 3263 targets, TCP then UDP).
const MAX_TRIES: usize = 8;

/// Methods that create dialogs: Record-Route is added to them (when they are not in-dialog).
const DIALOG_CREATING: &[&str] = &["INVITE", "SUBSCRIBE", "REFER", "NOTIFY"];

/// What `[proxy]` configures.
#[derive(Debug, Clone, PartialEq)]
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

/// A request as route pre-processing (16.4) leaves it.
#[derive(Clone)]
struct Routing {
    request_uri: String,
    ruri: SipUri,
    /// Lowercased host of `ruri`.
    host: String,
    routes: Vec<String>,
    /// Whether `routes` differs from the Route lines received (they are rewritten then).
    routes_changed: bool,
    /// The flow of this instance the request is delivered on (a Route with our token, or a
    /// binding whose flow we hold).
    flow: Option<FlowRef>,
}

/// What every try of one request shares.
struct Req<'a> {
    msg: &'a Message,
    peer: &'a Peer,
    loop_hash: &'a str,
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
        let routing = self.preprocess(msg, ruri, peer)?;
        let choices = self.targets(store, conns, msg, routing).await?;
        if choices.iter().any(|(_, hop)| !hop.registered) && !may_relay {
            // Judged on where the request really goes: after route pre-processing (a strict
            // route can swap the Request-URI) and the lookup.
            return Err(Refusal::new(403, "Forbidden (relaying denied)"));
        }
        let req = Req {
            msg,
            peer,
            loop_hash: &loop_hash,
        };
        // Every binding in turn (RFC 5626 5.3: the next flow when one fails), and for each
        // every RFC 3263 target (4.3), each with its own bytes (its Via and Record-Route
        // name its transport and our address toward it).
        let mut tries = Vec::new();
        let mut first_refusal = None;
        let mut unreachable = None;
        for (routing, hop) in &choices {
            if tries.len() >= MAX_TRIES {
                break;
            }
            match self.tries(&req, conns, routing, hop).await {
                Ok(t) => {
                    unreachable.get_or_insert_with(|| hop.unreachable());
                    tries.extend(t);
                }
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        // Each try may cost a TCP dial: a request is not let hold its slot for long.
        tries.truncate(MAX_TRIES);
        let mut tries = tries.into_iter();
        let Some((bytes, to)) = tries.next() else {
            return Err(first_refusal
                .unwrap_or_else(|| Refusal::new(503, "Service Unavailable (no next hop)")));
        };
        let mut forward = Forward::new(bytes, to);
        forward.fallbacks = tries.collect();
        if let Some(u) = unreachable {
            forward.unreachable = u;
        }
        Ok(forward)
    }

    /// The ways to send one choice: per RFC 3263 target, and for a large request over UDP
    /// TCP first.
    async fn tries(
        &self,
        req: &Req<'_>,
        conns: &Connections,
        routing: &Routing,
        hop: &Hop,
    ) -> Result<Vec<(Bytes, NextHop)>, Refusal> {
        refuse_sips(hop, routing)?;
        let mut tries = Vec::new();
        for (proto, dest, chosen) in self.locate(hop, routing, conns).await? {
            let f = self.forward(req, routing, proto, dest);
            if let Some(flow) = routing.flow.filter(|f| f.proto == Proto::Tcp) {
                // On that very connection, never a new one to the UA's NAT-side port.
                let conn = conns.by_addr(flow.src).ok_or_else(flow_failed)?;
                tries.push((f.bytes, NextHop::Conn(conn.id)));
                continue;
            }
            if proto == Proto::Udp && !chosen && f.bytes.len() > UDP_MTU_LIMIT {
                // 18.1.1: too large for UDP, judged on what would be sent, so TCP first;
                // since the target never asked for TCP, the same request over UDP next when
                // TCP cannot reach it (a UDP-only phone), as the RFC says a client retries.
                let tcp = self.forward(req, routing, Proto::Tcp, dest);
                tries.push((tcp.bytes, tcp.to));
            }
            tries.push((f.bytes, f.to));
        }
        Ok(tries)
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

    /// 16.4: strict-router repair, then every leading Route that names the farm removed; one
    /// with a flow token of ours that the request did not come from ends it: the request
    /// goes on that flow ([`flow`]).
    fn preprocess(&self, msg: &Message, ruri: SipUri, peer: &Peer) -> Result<Routing, Refusal> {
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
        let mut deliver = None;
        // Counted, then drained once: a message full of Route lines naming us costs one pass.
        let mut ours = 0;
        while let Some(first) = routes.get(ours) {
            match route_uri(first) {
                Some(u) if self.identity.names_farm(&u) => {
                    ours += 1;
                    match self.identity.routed_flow(&u) {
                        RoutedFlow::None => {}
                        RoutedFlow::Valid(f) if flow::arrived_on(f, peer) => {}
                        RoutedFlow::Valid(f) => {
                            deliver = Some(f);
                            break;
                        }
                        RoutedFlow::Invalid => {
                            throttled_info!(src = %peer.src, "a flow token that does not check");
                            return Err(flow_failed());
                        }
                    }
                }
                Some(_) => break,
                None => return Err(bad_route()),
            }
        }
        routes.drain(..ours);
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
            flow: deliver,
        })
    }

    /// 16.6: the forwarded request, as edits over the received bytes.
    fn forward(&self, req: &Req<'_>, r: &Routing, proto: Proto, dest: SocketAddr) -> Forward {
        let (msg, peer, loop_hash) = (req.msg, req.peer, req.loop_hash);
        let method = msg.method().unwrap_or_default();
        let mut record_route = Vec::new();
        let dialog = !has_to_tag(msg) && DIALOG_CREATING.contains(&method);
        let caller = dialog.then(|| flow::caller_flow(msg, peer)).flatten();
        // A dialog with a UA on a flow is record-routed even when Record-Route is off: its
        // later requests could not reach the UA otherwise (RFC 5626 5.3).
        let on_flow = r.flow.is_some() || caller.is_some();
        if dialog && (self.record_route || on_flow) {
            let sig = dialog_tag(&self.identity, msg.call_id().unwrap_or(""), &from_tag(msg));
            if let Some(entries) =
                flow::record_route(&self.identity, &sig, (proto, r.flow), (peer.proto, caller))
            {
                record_route = entries;
            } else {
                // Top entry faces the callee (the next hop), the second the caller, when
                // they differ.
                record_route.push(self.rr_value(proto, &sig));
                if proto != peer.proto {
                    record_route.push(self.rr_value(peer.proto, &sig));
                }
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
