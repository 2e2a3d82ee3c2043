//! What every request must pass before a rule acts on it, and which rule acts: RFC 3261
//! 8.2.1 and 16.3 (syntax 400/505, URI scheme 416, Require / Proxy-Require 420), 26.2.2
//! and RFC 5630 (SIPS only over TLS, which sipfarm has not yet: 416), 17.2.1-style
//! absorption of the ACK for one of our own final answers, 10.3 step 1 (REGISTER for one of
//! our domains goes to the registrar), 11.2 (OPTIONS to the instance is answered here).
//! Returns an [`Outcome`]; nothing is sent from here.

use super::{Outcome, Server};
use crate::location::LocationStore;
use crate::registrar;
use crate::sip::Message;
use crate::sip::addr::NameAddr;
use crate::sip::header::{HEALTH_HEADER, HeaderName, NODE_HEADER, RING_HEADER, STATUS_HEADER};
use crate::sip::response::{Refusal, Response, local_tag};
use crate::sip::uri::{host as uri_host, parse_sip, scheme};
use crate::transport::{Peer, Proto};
use sip_uri::SipUri;

/// Option tags this element supports (RFC 3261 20.37); anything else in Require or
/// Proxy-Require gets 420.
pub(crate) const SUPPORTED: &[&str] = &["path"];

/// Methods we answer ourselves or route (for Allow).
pub(crate) const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER, PUBLISH";

impl Server {
    pub(super) async fn decide(&self, msg: &Message, peer: &Peer) -> Outcome {
        match self.decide_request(msg, peer).await {
            Ok(outcome) => outcome,
            Err(refusal) => Outcome::Refuse(refusal),
        }
    }

    async fn decide_request(&self, msg: &Message, peer: &Peer) -> Result<Outcome, Refusal> {
        msg.validate_request()?;
        let method = msg.method().unwrap_or_default();
        if method == "ACK" && answered_by_us(msg) {
            tracing::debug!("absorbed the ACK for our own answer");
            return Ok(Outcome::Absorb);
        }
        let uri = request_uri(msg)?;
        let host = uri_host(&uri).unwrap_or_default();
        // OPTIONS to the instance itself (monitoring, keep-alive pings): to one of our
        // addresses, or to one of our domains (at one of our ports) without a user part.
        let as_uas = (method == "REGISTER" && self.identity.serves_domain(&host))
            || (method == "OPTIONS"
                && (self.identity.is_local(&host, uri.port())
                    || (uri.user().is_none() && self.identity.names_our_domain(&uri))));
        check_extensions(msg, as_uas)?;
        let may_relay = match &self.auth {
            Some(auth) => {
                let src = peer.src.ip();
                auth.gate(&self.store, &self.identity, msg, src, as_uas)
                    .await?
            }
            // Off: anyone may send anywhere (a warning at start says so).
            None => true,
        };
        if as_uas && method == "REGISTER" {
            check_sips_contacts(msg)?;
            let reply = registrar::save(
                &self.store,
                &self.cfg.registrar,
                msg,
                peer.src,
                peer.proto,
                &self.identity,
            )
            .await?;
            // Which instance a phone registers through (the farm's logs show its path).
            tracing::debug!(aor = %reply.aor, "REGISTER saved");
            // Only while the connection is open: one that closed meanwhile was told already.
            if peer.proto == Proto::Tcp && self.conns.by_addr(peer.src).is_some() {
                let holds = reply.hold_until.is_some();
                self.tcp_flows.registered(peer.src, &reply.aor, holds);
            }
            let bytes = match (peer.proto, &self.auth) {
                // Nobody authenticated this request: no amplification over UDP.
                (Proto::Udp, None) => registrar::cap_answer(reply.bytes, answer_limit(msg)),
                _ => reply.bytes,
            };
            return Ok(Outcome::Answer {
                bytes,
                hold_until: reply.hold_until,
            });
        }
        if as_uas {
            return Ok(Outcome::Answer {
                bytes: self.options_ok(msg, peer),
                hold_until: None,
            });
        }
        let forward = self
            .proxy
            .route(&self.store, &self.conns, msg, peer, uri, may_relay)
            .await?;
        Ok(Outcome::Forward(forward))
    }

    /// 200 to an OPTIONS for the instance. `sipfarm farm status` also asks for our view of
    /// the memcached nodes, which is told only to this machine.
    /// The answer to an OPTIONS for the instance: its health check too. 200 while the farm
    /// can serve every user; 503 with Retry-After when it cannot (too many nodes dead), so
    /// that SRV-aware clients and load balancers send elsewhere meanwhile. The reason goes
    /// only to `sipfarm farm status` (loopback).
    fn options_ok(&self, msg: &Message, peer: &Peer) -> Vec<u8> {
        let health = self.store.health();
        let mut resp = match &health {
            Ok(()) => Response::new(msg, peer.src, 200, "OK"),
            Err(_) => {
                Response::new(msg, peer.src, 503, "Service Unavailable").header("Retry-After", "5")
            }
        };
        resp = resp
            .header("Allow", ALLOW)
            .header("Supported", SUPPORTED.join(", "))
            .header("Accept", "application/sdp");
        let asks = HeaderName::from_wire(STATUS_HEADER);
        if peer.src.ip().is_loopback() && msg.get(&asks).is_some() {
            for (addr, dead) in self.store.node_states() {
                let state = if dead { "dead" } else { "up" };
                resp = resp.header(NODE_HEADER, format!("{addr} {state}"));
            }
            if let Err(why) = &health {
                resp = resp.header(HEALTH_HEADER, why);
            }
            if let Some(ring) = self.store.ring_id() {
                resp = resp.header(RING_HEADER, ring);
            }
        }
        resp.build()
    }
}

/// The largest answer over UDP to an unauthenticated request: three times the request, and
/// never below a safe datagram size (RFC 3261 18.1.1), so that ordinary registrations with a
/// few contacts are never cut.
fn answer_limit(msg: &Message) -> usize {
    (3 * msg.framed_len()).max(crate::proxy::UDP_MTU_LIMIT)
}

/// An ACK whose To tag is the one we compute for our own final answers.
fn answered_by_us(msg: &Message) -> bool {
    let to_tag = msg
        .get(&HeaderName::To)
        .and_then(|t| NameAddr::parse(t).ok())
        .and_then(|a| a.tag().map(str::to_owned));
    to_tag.as_deref() == Some(local_tag(msg).as_str())
}

/// The Request-URI, typed: sip or sips (416 otherwise), parseable, without headers (RFC 4475
/// escruri: never forwarded, never turned into header fields).
fn request_uri(msg: &Message) -> Result<SipUri, Refusal> {
    let ruri = msg.request_uri().unwrap_or_default();
    if !matches!(scheme(ruri).as_deref(), Some("sip") | Some("sips")) {
        return Err(Refusal::new(416, "Unsupported URI Scheme"));
    }
    if scheme(ruri).as_deref() == Some("sips") {
        // RFC 3261 26.2.2, RFC 5630: a SIPS request travels over TLS on every hop, and every
        // transport here is plain (no TLS yet): neither answered as if it had been secured
        // nor forwarded downgraded. 416 as for a scheme the element does not support (8.2.2.1,
        // 16.3 item 2).
        return Err(sips_refusal());
    }
    let uri = parse_sip(ruri).ok_or_else(|| Refusal::new(400, "Bad Request-URI"))?;
    if !uri.headers().is_empty() {
        return Err(Refusal::new(400, "Request-URI must not hold headers"));
    }
    Ok(uri)
}

fn sips_refusal() -> Refusal {
    Refusal::new(
        416,
        "Unsupported URI Scheme (SIPS needs TLS, not offered here)",
    )
}

/// RFC 3261 10.2.1 and 26.2.2, RFC 5630: a SIPS contact may only be reached over TLS, so
/// binding one from a REGISTER over a plain transport would either never be reachable or be
/// downgraded: refused (416, as for the Request-URI). A SIPS address-of-record in To with
/// `sip:` contacts is accepted: 10.2.1 lets a client register non-SIPS contacts under a SIPS
/// AOR, and the AOR is the same user whatever its scheme.
fn check_sips_contacts(msg: &Message) -> Result<(), Refusal> {
    let contacts = msg.list(&HeaderName::Contact).unwrap_or_default();
    let sips = contacts
        .iter()
        .any(|c| NameAddr::parse(c).is_ok_and(|a| scheme(&a.uri).as_deref() == Some("sips")));
    if sips {
        return Err(sips_refusal());
    }
    Ok(())
}

/// Proxy-Require always (we are a proxy in front of everything); Require where we are the
/// UAS. ACK and CANCEL are never refused for it (RFC 3261 8.2.2.3).
fn check_extensions(msg: &Message, as_uas: bool) -> Result<(), Refusal> {
    if matches!(msg.method(), Some("ACK") | Some("CANCEL")) {
        return Ok(());
    }
    let mut tags = msg
        .option_tags(&HeaderName::ProxyRequire)
        .unwrap_or_default();
    if as_uas {
        tags.extend(msg.option_tags(&HeaderName::Require).unwrap_or_default());
    }
    let mut unknown: Vec<&str> = Vec::new();
    for t in tags {
        if !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)) && !unknown.contains(&t) {
            unknown.push(t);
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Refusal::new(420, "Bad Extension").with("Unsupported", unknown.join(", ")))
}
