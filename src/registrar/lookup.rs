//! Turning a location into a target (Kamailio's registrar lookup.c): RFC 3261 16.5 for a
//! Request-URI in one of our domains, RFC 3327 (the binding's Path is the route set toward
//! the UA).
//!
//! A stateless proxy has no transaction to remember which binding it chose, so the choice is
//! a pure function of the record: the highest q, ties broken by the contact URI, never by
//! refresh time. A request, its retransmissions, its CANCEL and its ACK all reach the same
//! binding (16.11). The other live bindings follow in the same order: they are where the
//! request goes when the first cannot be reached (its flow's instance is down), RFC 5626 5.3.

use crate::identity::FlowRef;
use crate::location::{Binding, LocationStore};
use crate::sip::addr::route_uri;
use crate::sip::response::Refusal;
use crate::sip::uri::{Aor, parse_sip};
use crate::throttle::throttled_warn;
use crate::transport::Proto;
use sip_uri::SipUri;
use std::net::SocketAddr;

/// Where a request for one of our users goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The new Request-URI: the chosen binding's contact.
    pub request_uri: String,
    /// The URI whose transport address is the next hop: the first Path entry, else the
    /// contact.
    pub next_hop: SipUri,
    /// The route set toward the UA (the binding's Path), when it has one.
    pub route_set: Option<Vec<String>>,
    /// The far end of the TCP connection the binding was registered over: the request goes
    /// over that connection while it is open (a UA behind NAT is reachable only there).
    pub tcp_hint: Option<SocketAddr>,
    /// The flow that reaches the UA and its owner's URI with the flow token, when the
    /// binding recorded one (RFC 5626; a UA behind NAT or on TCP).
    pub flow: Option<(FlowRef, String)>,
    /// The Contact reaches the UA by itself (no NAT seen at registration): when its flow is
    /// gone (a TCP connection closed and not yet marked), the Contact is used instead.
    pub contact_reaches: bool,
}

/// Bindings tried for one request at most: the chosen one and fall-backs.
const MAX_TARGETS: usize = 4;

/// The targets of a request whose Request-URI (`ruri`, written `request_uri`) is in one of
/// our domains: every live binding, best first (see [`choose`]), at most [`MAX_TARGETS`].
pub(crate) async fn lookup(
    store: &impl LocationStore,
    ruri: &SipUri,
    request_uri: &str,
) -> Result<Vec<Target>, Refusal> {
    if ruri.user().is_none() {
        return Err(Refusal::new(404, "Not Found"));
    }
    let aor = Aor::from_uri(request_uri).map_err(|why| Refusal::new(400, why))?;
    let record = match store.lookup(&aor).await {
        Ok(r) => r,
        Err(e) => {
            throttled_warn!(aor = %aor, error = %e, "location lookup failed");
            return Err(Refusal::new(500, "Location Service Unavailable").with("Retry-After", 5));
        }
    };
    let record = record.ok_or_else(|| Refusal::new(404, "Not Found"))?;
    let now = crate::clock::now_secs();
    let targets: Vec<Target> = ordered(record.live(now))
        .into_iter()
        .filter_map(target)
        .take(MAX_TARGETS)
        .collect();
    if targets.is_empty() {
        return Err(Refusal::new(480, "Temporarily Unavailable"));
    }
    Ok(targets)
}

/// Where one binding is reached; None when its contact or Path is unusable, or its flow is
/// closed and its Contact does not reach it (behind NAT).
fn target(b: &Binding) -> Option<Target> {
    let contact = parse_sip(&b.contact)?;
    if b.flow.as_ref().is_some_and(|f| f.closed && f.nat) {
        return None;
    }
    if b.path.is_empty() {
        return Some(Target {
            request_uri: b.contact.clone(),
            next_hop: contact,
            route_set: None,
            tcp_hint: registered_over_tcp(&b.source),
            flow: flow_of(b),
            contact_reaches: !b.flow.as_ref().is_some_and(|f| f.nat),
        });
    }
    let first = b.path.first().and_then(|p| route_uri(p))?;
    Some(Target {
        request_uri: b.contact.clone(),
        next_hop: first,
        route_set: Some(b.path.clone()),
        tcp_hint: None,
        flow: None,
        contact_reaches: true,
    })
}

/// The flow a binding recorded: its source (`udp:IP:PORT`, `tcp:IP:PORT`) and owner.
fn flow_of(b: &Binding) -> Option<(FlowRef, String)> {
    let f = b.flow.as_ref().filter(|f| !f.closed)?;
    let (proto, addr) = b.source.split_once(':')?;
    let proto = match proto {
        "udp" => Proto::Udp,
        "tcp" => Proto::Tcp,
        _ => return None,
    };
    let src = addr.parse().ok()?;
    Some((
        FlowRef {
            proto,
            src,
            dialog: false,
        },
        f.owner.clone(),
    ))
}

/// Live bindings in the order a stateless proxy tries them (see [`choose`]).
fn ordered<'a>(bindings: impl Iterator<Item = &'a Binding>) -> Vec<&'a Binding> {
    let mut all: Vec<&Binding> = bindings.collect();
    all.sort_by(|a, b| rank(a, b));
    all
}

fn rank(a: &Binding, b: &Binding) -> std::cmp::Ordering {
    let qa = a.q.unwrap_or(1000);
    let qb = b.q.unwrap_or(1000);
    qb.cmp(&qa).then_with(|| a.contact.cmp(&b.contact))
}

/// The binding a stateless proxy forwards to: highest q (no q counts as 1.0), ties broken by
/// the contact URI.
#[cfg(test)]
fn choose<'a>(bindings: impl Iterator<Item = &'a Binding>) -> Option<&'a Binding> {
    bindings.min_by(|a, b| rank(a, b))
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
            flow: None,
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

    #[test]
    fn tcp_hint_only_for_tcp_sources() {
        assert_eq!(
            registered_over_tcp("tcp:127.0.0.1:5070"),
            Some("127.0.0.1:5070".parse().unwrap())
        );
        assert_eq!(registered_over_tcp("udp:127.0.0.1:5070"), None);
    }
}
