//! The stateless proxy: RFC 3261 section 16 with 16.11, RFC 3327 (Path becomes the route
//! set toward a registered UA) and RFC 3263 (foreign domains, see [`crate::resolve`]).
//!
//! Every instance routes for every user: the target comes from the shared location store.
//!
//! - 16.3 validation: Max-Forwards 0 gets 483; a loop gets 482 (our own Via, carrying the
//!   loop-detection part of the branch computed for this very request, is already there).
//! - 16.4 route pre-processing: a Route to us (the farm URI, one of our domains, or one of our
//!   addresses) is removed; a Request-URI that is our Record-Route URI (a strict router
//!   upstream) is replaced by the last Route.
//! - 16.5 targets: a Request-URI in one of our domains is looked up (CANCEL and ACK too): no
//!   record 404, no live binding 480; of several bindings the one with the highest q, ties
//!   broken by the contact URI — the same one for a request, its retransmissions, its CANCEL
//!   and its ACK. Anything else is forwarded to its Request-URI (or the outbound proxy)
//!   without a lookup: in-dialog requests never touch memcached.
//! - 16.6 forwarding: Request-URI, Max-Forwards, our Via (branch per 16.11: a hash of what
//!   does not change between a request, its CANCEL and its non-2xx ACK), Route, Record-Route
//!   naming the farm (two entries when the transport changes), all as edits over the received
//!   bytes ([`crate::sip::edit`]).
//! - 16.7 / 16.11 responses: our top Via is checked and removed, the response goes to the
//!   next Via (received, rport), or back on the TCP connection its request came in on (the
//!   connection id travels in our Via as `sfc`).

use crate::config::Config;
use crate::location::{Binding, LocationStore};
use crate::resolve::{Resolver, Target};
use crate::server::Server;
use crate::sip::Message;
use crate::sip::addr::NameAddr;
use crate::sip::edit::{RequestEdits, forward_request, pop_via};
use crate::sip::header::HeaderName;
use crate::sip::response::Response;
use crate::sip::uri::{Aor, host as uri_host, host_port, parse_sip};
use crate::sip::via::Via;
use crate::transport::Proto;
use crate::transport::{Path, Peer, tcp};
use bytes::Bytes;
use md5::{Digest, Md5};
use sip_uri::SipUri;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

/// Prefix of every branch we write: the magic cookie and our mark.
pub const BRANCH_PREFIX: &str = "z9hG4bKsf";
/// RFC 3261 18.1.1: a request larger than this goes over a congestion-controlled transport
/// when the target does not insist on UDP.
pub const UDP_MTU_LIMIT: usize = 1300;
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Methods that create dialogs: Record-Route is added to them (when they are not in-dialog).
const DIALOG_CREATING: &[&str] = &["INVITE", "SUBSCRIBE", "REFER", "NOTIFY"];

/// What `[proxy]` configures.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Add Record-Route to dialog-creating requests.
    pub record_route: bool,
    /// The URI (no user part) that names the farm in Record-Route; every instance treats a
    /// Route to it as its own.
    pub farm_uri: String,
    /// Lower-cased host of `farm_uri`.
    pub farm_host: String,
    /// Where requests for foreign domains go, instead of RFC 3263 resolution.
    pub outbound_proxy: Option<String>,
    /// DNS server for RFC 3263 (None: the system's).
    pub dns_server: Option<SocketAddr>,
}

pub struct Proxy {
    locals: Vec<(Proto, SocketAddr)>,
    udp: Vec<Arc<UdpSocket>>,
    domains: Vec<String>,
    farm_uri: String,
    farm_host: String,
    record_route: bool,
    outbound: Option<SipUri>,
    resolver: Resolver,
}

impl Proxy {
    pub fn new(cfg: &Config, locals: &[(Proto, SocketAddr)], udp: &[Arc<UdpSocket>]) -> Proxy {
        Proxy {
            locals: locals.to_vec(),
            udp: udp.to_vec(),
            domains: cfg.domains.clone(),
            farm_uri: cfg.proxy.farm_uri.clone(),
            farm_host: cfg.proxy.farm_host.clone(),
            record_route: cfg.proxy.record_route,
            outbound: cfg.proxy.outbound_proxy.as_deref().and_then(parse_sip),
            resolver: Resolver::new(cfg.proxy.dns_server),
        }
    }

    /// Is host:port one of our sockets (port 5060 when absent)?
    pub fn is_self(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        let port = port.unwrap_or(5060);
        self.locals.iter().any(|(_, a)| {
            a.port() == port && (a.ip() == ip || (a.ip().is_unspecified() && ip.is_loopback()))
        })
    }

    /// A URI that designates this farm (16.4): no user part, and the farm host, one of our
    /// domains, or one of our own addresses.
    pub fn is_ours(&self, uri: &SipUri) -> bool {
        if uri.user().is_some() {
            return false;
        }
        let host = uri_host(uri).unwrap_or_default();
        host == self.farm_host || self.domains.contains(&host) || self.is_self(&host, uri.port())
    }

    /// Our Record-Route value for one side of a request.
    fn rr_value(&self, proto: Proto) -> String {
        match proto {
            Proto::Udp => format!("<{};lr>", self.farm_uri),
            Proto::Tcp => format!("<{};transport=tcp;lr>", self.farm_uri),
        }
    }

    /// The local address we put in our Via for `proto` toward `dest`.
    fn sent_by(&self, proto: Proto, dest: SocketAddr) -> SocketAddr {
        let same_family = |a: &SocketAddr| a.is_ipv4() == dest.is_ipv4();
        self.locals
            .iter()
            .find(|(p, a)| *p == proto && same_family(a))
            .or_else(|| self.locals.iter().find(|(_, a)| same_family(a)))
            .or(self.locals.first())
            .map_or(dest, |(_, a)| *a)
    }

    fn udp_socket(&self, dest: SocketAddr) -> Option<&Arc<UdpSocket>> {
        self.udp
            .iter()
            .find(|s| s.local_addr().is_ok_and(|a| a.is_ipv4() == dest.is_ipv4()))
    }
}

fn md5_hex64(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    let d = h.finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The loop-detection part of our branch (16.6 item 8): fields that a request keeps while it
/// passes through proxies unchanged, and that are the same for its CANCEL and non-2xx ACK:
/// Request-URI, Call-ID, From tag, CSeq number, Proxy-Require and Route as received.
pub fn loop_part(msg: &Message) -> String {
    let from_tag = msg
        .get(&HeaderName::From)
        .and_then(|f| NameAddr::parse(f).ok())
        .and_then(|a| a.tag().map(str::to_owned))
        .unwrap_or_default();
    let cseq = msg.cseq().map(|(n, _)| n).unwrap_or(0).to_string();
    let proxy_require = msg
        .list(&HeaderName::ProxyRequire)
        .unwrap_or_default()
        .join(",");
    let route = msg.list(&HeaderName::Route).unwrap_or_default().join(",");
    md5_hex64(&[
        msg.request_uri().unwrap_or("").as_bytes(),
        msg.call_id().unwrap_or("").as_bytes(),
        from_tag.as_bytes(),
        cseq.as_bytes(),
        proxy_require.as_bytes(),
        route.as_bytes(),
    ])
}

/// Our branch (16.11): the transaction part hashes the incoming top Via too, so that it is the
/// same for retransmissions, the CANCEL and the non-2xx ACK (all carry that Via unchanged)
/// and different for every other transaction; the loop part follows after a dot.
pub fn branch(msg: &Message, loop_hash: &str) -> String {
    let top_via = msg
        .list(&HeaderName::Via)
        .ok()
        .and_then(|v| v.first().map(|s| s.to_string()))
        .unwrap_or_default();
    let tx = md5_hex64(&[top_via.as_bytes(), loop_hash.as_bytes()]);
    format!("{BRANCH_PREFIX}{tx}.{loop_hash}")
}

/// The binding a stateless proxy forwards to: highest q (no q counts as 1.0), ties broken by
/// the contact URI, never by refresh time (16.11: the same target for a request and its
/// CANCEL and ACK).
pub fn choose<'a>(bindings: impl Iterator<Item = &'a Binding>) -> Option<&'a Binding> {
    bindings.min_by(|a, b| {
        let qa = a.q.unwrap_or(1000);
        let qb = b.q.unwrap_or(1000);
        qb.cmp(&qa).then_with(|| a.contact.cmp(&b.contact))
    })
}

/// Never send to these (RFC 4475 bcast: a Via naming a broadcast address is not followed).
fn forbidden_destination(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_multicast() || v6.is_unspecified(),
    }
}

/// The URI inside a Route / Path value.
fn route_uri(value: &str) -> Option<SipUri> {
    NameAddr::parse(value).ok().and_then(|a| parse_sip(&a.uri))
}

async fn reply<S: LocationStore>(
    server: &Server<S>,
    msg: &Message,
    peer: &Peer,
    code: u16,
    reason: &str,
) {
    if msg.method() == Some("ACK") {
        return; // ACK is never answered
    }
    let bytes = Response::new(msg, peer.src, code, reason).build();
    server.answer(msg, peer, bytes).await;
}

/// Route one request (not for us as UAS): 16.3 to 16.6.
pub async fn route<S: LocationStore>(
    server: &Arc<Server<S>>,
    msg: Message,
    peer: Peer,
    ruri: SipUri,
    host: String,
) {
    let proxy = &server.proxy;
    let method = msg.method().unwrap_or_default().to_owned();
    // 16.3 item 3.
    if msg.max_forwards().ok().flatten() == Some(0) {
        reply(server, &msg, &peer, 483, "Too Many Hops").await;
        return;
    }
    // 16.3 item 4: our own Via with this request's loop part means it came back unchanged.
    let loop_hash = loop_part(&msg);
    let looped = msg.vias().unwrap_or_default().iter().any(|v| {
        proxy.is_self(v.host_bare(), v.port)
            && v.branch().is_some_and(|b| {
                b.starts_with(BRANCH_PREFIX) && b.ends_with(&format!(".{loop_hash}"))
            })
    });
    if looped {
        reply(server, &msg, &peer, 482, "Loop Detected").await;
        return;
    }

    // 16.4: route pre-processing.
    let mut routes: Vec<String> = msg
        .list(&HeaderName::Route)
        .unwrap_or_default()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let original_routes = routes.len();
    let mut request_uri = msg.request_uri().unwrap_or_default().to_owned();
    let mut ruri = ruri;
    let mut host = host;
    if proxy.is_ours(&ruri) && !routes.is_empty() {
        // A strict router put our Record-Route URI in the Request-URI.
        if let Some(last) = routes.pop() {
            let Some(na) = NameAddr::parse(&last).ok() else {
                reply(server, &msg, &peer, 400, "Bad Route").await;
                return;
            };
            request_uri = na.uri;
            let Some(u) = parse_sip(&request_uri) else {
                reply(server, &msg, &peer, 416, "Unsupported URI Scheme").await;
                return;
            };
            host = uri_host(&u).unwrap_or_default();
            ruri = u;
        }
    }
    while let Some(first) = routes.first() {
        match route_uri(first) {
            Some(u) if proxy.is_ours(&u) => {
                routes.remove(0);
            }
            Some(_) => break,
            None => {
                reply(server, &msg, &peer, 400, "Bad Route").await;
                return;
            }
        }
    }
    let mut routes_changed = routes.len() != original_routes;

    // 16.5: the target, and the URI of the next hop.
    let mut prefer_conn: Option<SocketAddr> = None;
    let next_hop: SipUri;
    if let Some(first) = routes.first() {
        let Some(u) = route_uri(first) else {
            reply(server, &msg, &peer, 400, "Bad Route").await;
            return;
        };
        if u.param("lr").is_none() {
            // 16.6 item 6: a strict router next: it gets the Request-URI slot.
            let strict = routes.remove(0);
            routes.push(format!("<{request_uri}>"));
            request_uri = NameAddr::parse(&strict).map(|a| a.uri).unwrap_or_default();
            routes_changed = true;
        }
        next_hop = u;
    } else if server.cfg.is_our_domain(&host) {
        if ruri.user().is_none() {
            reply(server, &msg, &peer, 404, "Not Found").await;
            return;
        }
        let aor = match Aor::from_uri(&request_uri) {
            Ok(a) => a,
            Err(why) => {
                reply(server, &msg, &peer, 400, why).await;
                return;
            }
        };
        let record = match server.store.lookup(&aor).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(aor = %aor, error = %e, "location lookup failed");
                if method != "ACK" {
                    let bytes = Response::new(&msg, peer.src, 500, "Location Service Unavailable")
                        .header("Retry-After", 5)
                        .build();
                    server.answer(&msg, &peer, bytes).await;
                }
                return;
            }
        };
        let Some(record) = record else {
            reply(server, &msg, &peer, 404, "Not Found").await;
            return;
        };
        let now = crate::clock::now_secs();
        let Some(b) = choose(record.live(now)) else {
            reply(server, &msg, &peer, 480, "Temporarily Unavailable").await;
            return;
        };
        request_uri = b.contact.clone();
        let Some(contact) = parse_sip(&b.contact) else {
            reply(server, &msg, &peer, 480, "Temporarily Unavailable").await;
            return;
        };
        if !b.path.is_empty() {
            routes = b.path.clone();
            routes_changed = true;
            match routes.first().and_then(|p| route_uri(p)) {
                Some(u) => next_hop = u,
                None => {
                    reply(server, &msg, &peer, 500, "Bad Path in binding").await;
                    return;
                }
            }
        } else {
            prefer_conn = registered_over_tcp(&b.source);
            next_hop = contact;
        }
    } else if proxy.is_self(&host, ruri.port()) {
        // Addressed to this instance but not to a domain we serve: nowhere to go.
        reply(server, &msg, &peer, 404, "Not Found").await;
        return;
    } else if let Some(ob) = &proxy.outbound {
        next_hop = ob.clone();
    } else {
        next_hop = ruri.clone();
    }

    // Where the next hop is.
    let target = match prefer_conn.filter(|a| server.conns.by_addr(*a).is_some()) {
        Some(addr) => Target {
            proto: Proto::Tcp,
            addr,
            explicit: true,
        },
        None => match proxy.resolver.resolve(&next_hop).await {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(next_hop = %next_hop, error = %e, "cannot resolve the next hop");
                reply(
                    server,
                    &msg,
                    &peer,
                    503,
                    "Service Unavailable (next hop unresolvable)",
                )
                .await;
                return;
            }
        },
    };
    if forbidden_destination(target.addr.ip()) {
        reply(server, &msg, &peer, 403, "Forbidden destination").await;
        return;
    }
    let mut proto = target.proto;
    let estimate = msg.framed_len() + 300;
    if proto == Proto::Udp && !target.explicit && estimate > UDP_MTU_LIMIT {
        proto = Proto::Tcp; // 18.1.1
    }
    forward(
        server,
        &msg,
        &peer,
        &method,
        &request_uri,
        routes_changed.then_some(routes.as_slice()),
        target.addr,
        proto,
        &loop_hash,
    )
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn forward<S: LocationStore>(
    server: &Arc<Server<S>>,
    msg: &Message,
    peer: &Peer,
    method: &str,
    request_uri: &str,
    routes: Option<&[String]>,
    dest: SocketAddr,
    proto: Proto,
    loop_hash: &str,
) {
    let proxy = &server.proxy;
    let in_dialog = msg
        .get(&HeaderName::To)
        .and_then(|t| NameAddr::parse(t).ok())
        .is_some_and(|a| a.tag().is_some());
    let mut record_route = Vec::new();
    if proxy.record_route && !in_dialog && DIALOG_CREATING.contains(&method) {
        // Top entry faces the callee (the next hop), the second the caller, when they differ.
        record_route.push(proxy.rr_value(proto));
        if proto != peer.proto {
            record_route.push(proxy.rr_value(peer.proto));
        }
    }
    let conn_token = match &peer.path {
        Path::Tcp(c) => format!(";sfc={}", c.id),
        Path::Udp(_) => String::new(),
    };
    let via = format!(
        "SIP/2.0/{} {};branch={}{};rport",
        proto.via(),
        host_port(proxy.sent_by(proto, dest)),
        branch(msg, loop_hash),
        conn_token
    );
    let bytes = forward_request(
        msg,
        &RequestEdits {
            request_uri,
            via: &via,
            record_route: &record_route,
            routes,
            src: peer.src,
            need_length: proto == Proto::Tcp,
        },
    );
    tracing::debug!(%dest, proto = proto.as_str(), request_uri, "forwarding request");
    if !send(server, peer, proto, dest, Bytes::from(bytes)).await {
        reply(
            server,
            msg,
            peer,
            503,
            "Service Unavailable (next hop unreachable)",
        )
        .await;
    }
}

/// Send to a transport address: UDP through our socket, TCP over an open connection to it or
/// a new one. False when it could not be sent.
async fn send<S: LocationStore>(
    server: &Arc<Server<S>>,
    via: &Peer,
    proto: Proto,
    dest: SocketAddr,
    bytes: Bytes,
) -> bool {
    // Over UDP, the socket the message came in on when it fits (it belongs to this thread's
    // event loop); else one of ours of the right family.
    let local = match &via.path {
        Path::Udp(sock)
            if sock
                .local_addr()
                .is_ok_and(|a| a.is_ipv4() == dest.is_ipv4()) =>
        {
            Some(sock)
        }
        _ => None,
    };
    match proto {
        Proto::Udp => match local.or_else(|| server.proxy.udp_socket(dest)) {
            Some(sock) => sock.send_to(&bytes, dest).await.is_ok(),
            None => Box::pin(send(server, via, Proto::Tcp, dest, bytes)).await,
        },
        Proto::Tcp => {
            let conn = match server.conns.by_addr(dest) {
                Some(c) => c,
                None => match tcp::connect(
                    dest,
                    TCP_CONNECT_TIMEOUT,
                    server.clone(),
                    server.tcp_settings(),
                )
                .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::info!(%dest, error = %e, "tcp connect failed");
                        return false;
                    }
                },
            };
            conn.tx.send(bytes).await.is_ok()
        }
    }
}

/// A response: 16.7 item 3 / 16.11. Our Via must be on top; it is removed and the response
/// follows the next Via.
pub async fn forward_response<S: LocationStore>(server: &Arc<Server<S>>, msg: Message, peer: Peer) {
    let proxy = &server.proxy;
    let vias = match msg.vias() {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(error = %e, "dropped a response with a bad Via");
            return;
        }
    };
    let Some(top) = vias.first() else {
        return;
    };
    let ours = proxy.is_self(top.host_bare(), top.port)
        && top.branch().is_some_and(|b| b.starts_with(BRANCH_PREFIX));
    if !ours {
        tracing::info!(via = %top.host, "dropped a response whose top Via is not ours");
        return;
    }
    let Some(next) = vias.get(1) else {
        tracing::debug!("dropped a response to a request of our own");
        return;
    };
    let bytes = Bytes::from(pop_via(&msg));
    // Back on the connection the request came in on, while it is open.
    if let Some(conn) = top
        .param("sfc")
        .flatten()
        .and_then(|id| id.parse::<u64>().ok())
        .and_then(|id| server.conns.by_id(id))
    {
        let _ = conn.tx.send(bytes).await;
        return;
    }
    let Some(dest) = response_destination(next) else {
        tracing::info!(via = %next.host, "cannot resolve where the response goes");
        return;
    };
    if forbidden_destination(dest.ip()) {
        tracing::info!(%dest, "dropped a response toward a broadcast or multicast address");
        return;
    }
    let proto = if next.transport == "TCP" {
        Proto::Tcp
    } else {
        Proto::Udp
    };
    if !send(server, &peer, proto, dest, bytes).await {
        tracing::info!(%dest, "could not forward a response");
    }
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

/// The far end of the TCP connection a binding was registered over (`tcp:IP:PORT`).
fn registered_over_tcp(source: &str) -> Option<SocketAddr> {
    source.strip_prefix("tcp:")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(contact: &str, q: Option<u16>, updated: u64) -> Binding {
        Binding {
            contact: contact.into(),
            params: String::new(),
            expires_at: u64::MAX,
            q,
            call_id: "c".into(),
            cseq: 1,
            path: vec![],
            source: String::new(),
            instance_id: None,
            reg_id: None,
            updated,
            removed: false,
        }
    }

    #[test]
    fn target_choice_is_stable() {
        let list = [
            b("sip:b@h", Some(500), 9),
            b("sip:a@h", Some(500), 1),
            b("sip:c@h", Some(100), 5),
        ];
        assert_eq!(choose(list.iter()).unwrap().contact, "sip:a@h");
        let list = [b("sip:z@h", None, 1), b("sip:a@h", Some(999), 2)];
        assert_eq!(choose(list.iter()).unwrap().contact, "sip:z@h");
        let rev: Vec<Binding> = list.iter().rev().cloned().collect();
        assert_eq!(choose(rev.iter()).unwrap().contact, "sip:z@h");
    }

    fn parse(s: &str) -> Message {
        Message::parse(
            bytes::Bytes::from(s.to_owned()),
            crate::sip::Framing::Datagram,
            65536,
        )
        .unwrap()
    }

    #[test]
    fn branch_same_for_cancel_and_ack_not_for_others() {
        let invite = parse(
            "INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu1\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:bob@example.test>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n\r\n",
        );
        let cancel = parse(
            "CANCEL sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu1\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:bob@example.test>\r\nCall-ID: c1\r\nCSeq: 7 CANCEL\r\n\r\n",
        );
        let ack = parse(
            "ACK sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu1\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:bob@example.test>;tag=callee\r\nCall-ID: c1\r\nCSeq: 7 ACK\r\n\r\n",
        );
        let other = parse(
            "INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu2\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:bob@example.test>\r\nCall-ID: c1\r\nCSeq: 8 INVITE\r\n\r\n",
        );
        let bi = branch(&invite, &loop_part(&invite));
        assert!(bi.starts_with(BRANCH_PREFIX));
        assert_eq!(bi, branch(&cancel, &loop_part(&cancel)));
        assert_eq!(bi, branch(&ack, &loop_part(&ack)));
        assert_ne!(bi, branch(&other, &loop_part(&other)));
    }
}
