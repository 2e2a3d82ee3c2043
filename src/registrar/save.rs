//! Saving a registration (Kamailio's registrar save.c): RFC 3261 section 10.3, all of it,
//! plus RFC 3327 (Path) and the binding identity of RFC 5626 (instance-id, reg-id).
//!
//! The rules are here and only here; no I/O of its own. [`read`] checks the REGISTER,
//! [`apply`] decides the change as a pure function of the current record, and [`save`] asks
//! the [`LocationStore`] to apply it atomically and returns the answer as a value.
//!
//! Steps of 10.3 and where they are:
//! 1. domain of the Request-URI: checked by the dispatcher (`server`) before calling here;
//! 2. Require: the dispatcher (420);
//! 3. authentication: none configured (RFC 4475 regaut01: an unknown scheme is ignored);
//! 4. authorisation: any user may register its own AOR;
//! 5. AOR from To, canonical ([`Aor`]), 404 when not in our domains;
//! 6. more Contact values than `max_contacts`: 403 at once, before any is parsed (one
//!    datagram can carry thousands); Contact `*` only alone and with Expires 0; expiry from the contact parameter, then the
//!    Expires header, then the default; 423 below the minimum, clamped above the maximum;
//! 7. per contact: Call-ID/CSeq ordering, add / refresh / remove, each contact found among
//!    the bindings through an index (RFC 5626 4.2 flow, else 19.1.4 URI equality), not pair
//!    by pair; a removal leaves a small tombstone, and only the latest
//!    [`tombstones_kept`] of them are kept;
//! 8. 200 OK with every current binding and its expiry, and a Date header.

use super::RegistrarConfig;
use super::flow::Arrival;
use crate::clock::hlc_stamp;
use crate::identity::Identity;
use crate::location::matching::{Matcher, Probe};
use crate::location::{Binding, LocationStore, Record, StoreError};
use crate::sip::addr::NameAddr;
use crate::sip::header::{HeaderName, unquote};
use crate::sip::response::{Refusal, Response};
use crate::sip::uri::{Aor, parse_sip, scheme};
use crate::sip::{Message, parse_delta};
use crate::throttle::throttled_warn;
use crate::transport::Proto;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// The answer, and for how long the connection it came on must be kept open (the latest
/// expiry of bindings registered over it, Unix seconds).
pub(crate) struct Reply {
    pub bytes: Vec<u8>,
    pub hold_until: Option<u64>,
    /// The AOR registered.
    pub aor: Aor,
}

/// One Contact of the request, checked.
#[derive(Debug, Clone)]
pub(crate) struct NewContact {
    pub uri: String,
    pub params: String,
    /// Seconds, after the min/max rules; 0 removes.
    pub expires: u32,
    pub q: Option<u16>,
    pub instance_id: Option<String>,
    pub reg_id: Option<u32>,
}

impl NewContact {
    fn probe(&self) -> Probe<'_> {
        Probe {
            uri: &self.uri,
            instance: self.instance_id.as_deref(),
            reg_id: self.reg_id,
        }
    }
}

/// What the REGISTER asks for.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A query (no Contact).
    Fetch,
    /// `Contact: *` with `Expires: 0`.
    RemoveAll,
    Set(Vec<NewContact>),
}

fn refuse(code: u16, reason: &'static str) -> Refusal {
    Refusal::new(code, reason)
}

/// The request data the rule needs, parsed once before the store is touched.
#[derive(Debug, Clone)]
pub(crate) struct Register {
    pub aor: Aor,
    pub change: Change,
    pub call_id: String,
    pub cseq: u32,
    pub path: Vec<String>,
    pub source: String,
    pub arrival: Arrival,
}

/// q-value "0.5" -> 500 (RFC 3261 20.10: 0 to 1, at most three decimals).
pub(crate) fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_val: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac_val),
        "1" if frac_val == 0 => Some(1000),
        _ => None,
    }
}

/// Read and check a REGISTER (steps 5 and 6).
pub(crate) fn read(
    req: &Message,
    src: SocketAddr,
    proto: Proto,
    cfg: &RegistrarConfig,
    identity: &Identity,
) -> Result<Register, Refusal> {
    let to = req
        .get(&HeaderName::To)
        .and_then(|v| NameAddr::parse(v).ok())
        .ok_or_else(|| refuse(400, "Bad To"))?;
    let aor = Aor::from_uri(&to.uri).map_err(|why| refuse(400, why))?;
    if !identity.serves_domain(aor.domain()) {
        return Err(refuse(404, "Not Found (domain not served here)"));
    }
    let call_id = req.call_id().unwrap_or_default().to_owned();
    let (cseq, _) = req.cseq().map_err(|e| Refusal::new(400, e.to_string()))?;
    let header_expires = req.expires().map_err(|_| refuse(400, "Bad Expires"))?;
    let contacts = req
        .list(&HeaderName::Contact)
        .map_err(|_| refuse(400, "Bad Contact"))?;

    // Counted before any contact is parsed: a 64 KB datagram holds thousands of them.
    if contacts.len() > cfg.max_contacts {
        return Err(too_many(cfg.max_contacts));
    }
    let change = if contacts.is_empty() {
        Change::Fetch
    } else if contacts.iter().any(|c| c.trim() == "*") {
        if contacts.len() != 1 || header_expires != Some(0) {
            return Err(refuse(
                400,
                "Contact * needs Expires: 0 and no other Contact",
            ));
        }
        Change::RemoveAll
    } else {
        let mut out = Vec::with_capacity(contacts.len());
        for c in contacts {
            let a = NameAddr::parse(c).map_err(|_| refuse(400, "Bad Contact"))?;
            // The URI itself is checked in `apply`, only when it is not the one already bound
            // (a refresh names it exactly as before).
            if scheme(&a.uri).is_none() {
                return Err(refuse(400, "Bad Contact URI"));
            }
            let expires = match a.param("expires") {
                Some(Some(v)) => {
                    parse_delta(v).ok_or_else(|| refuse(400, "Bad Contact expires"))?
                }
                Some(None) => return Err(refuse(400, "Bad Contact expires")),
                None => header_expires.unwrap_or(cfg.default_expires),
            };
            if expires != 0 && expires < cfg.min_expires {
                return Err(refuse(423, "Interval Too Brief").with("Min-Expires", cfg.min_expires));
            }
            let q = match a.param("q") {
                Some(Some(v)) => Some(parse_q(v).ok_or_else(|| refuse(400, "Bad q-value"))?),
                Some(None) => return Err(refuse(400, "Bad q-value")),
                None => None,
            };
            let instance_id = a.param("+sip.instance").flatten().map(unquote);
            let reg_id = match a.param("reg-id") {
                Some(Some(v)) => Some(v.parse::<u32>().map_err(|_| refuse(400, "Bad reg-id"))?),
                _ => None,
            };
            let mut params = String::new();
            for p in &a.params {
                if p.name == "expires" || p.name == "q" {
                    continue;
                }
                params.push(';');
                params.push_str(&p.name);
                if let Some(v) = &p.value {
                    params.push('=');
                    params.push_str(v);
                }
            }
            if names_farm_node(&a.uri, identity) {
                return Err(refuse(403, "Forbidden (contact names a node of the farm)"));
            }
            out.push(NewContact {
                uri: a.uri,
                params,
                expires: expires.min(cfg.max_expires),
                q,
                instance_id,
                reg_id,
            });
        }
        Change::Set(out)
    };
    let path: Vec<String> = req
        .list(&HeaderName::Path)
        .map_err(|_| refuse(400, "Bad Path"))?
        .into_iter()
        .map(str::to_owned)
        .collect();
    let path_uri = |p: &String| NameAddr::parse(p).map(|a| a.uri).unwrap_or_default();
    if path.iter().any(|p| names_farm_node(&path_uri(p), identity)) {
        return Err(refuse(403, "Forbidden (Path names a node of the farm)"));
    }
    Ok(Register {
        aor,
        change,
        call_id,
        cseq,
        path,
        source: format!("{}:{}", proto.as_str(), src),
        arrival: Arrival::of(req, src, proto, identity),
    })
}

/// Does a SIP URI name one of the farm's memcached nodes by address? Read from the text,
/// without the URI parser (this runs for every contact of every REGISTER); names that
/// resolve to a node are refused when something is sent there.
fn names_farm_node(uri: &str, identity: &Identity) -> bool {
    let (rest, default_port) = match uri.strip_prefix("sip:") {
        Some(r) => (r, 5060),
        None => match uri.strip_prefix("sips:") {
            Some(r) => (r, 5061),
            None => return false,
        },
    };
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let hostport = rest[..end]
        .rsplit_once('@')
        .map_or(&rest[..end], |(_, h)| h);
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (v6, None),
        },
        None => match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = port.map_or(Some(default_port), |p| p.parse::<u16>().ok());
    match (host.parse::<std::net::IpAddr>(), port) {
        (Ok(ip), Some(port)) => identity.is_farm_node(SocketAddr::new(ip, port)),
        _ => false,
    }
}

/// Step 7 as a pure function of the record: apply the request, or refuse it and change
/// nothing. A request whose Call-ID matches a binding with the same CSeq is a retransmission
/// (no transaction layer absorbs it here): it changes nothing and gets the current bindings.
/// Contacts are matched to bindings through a [`Matcher`]: linear in the record and the
/// request, never contact by binding.
pub(crate) fn apply(
    r: &Register,
    record: &mut Record,
    now: u64,
    max_contacts: usize,
) -> Result<(), Refusal> {
    // Ordering first, over every binding the request touches, so that a refused request
    // changes nothing at all.
    if retransmission(r, record, now)? {
        return Ok(());
    }
    let seen = record.bindings.iter().map(|b| b.updated).max().unwrap_or(0);
    match &r.change {
        Change::Fetch => {}
        Change::RemoveAll => {
            let stamp = hlc_stamp(seen);
            for b in record.bindings.iter_mut().filter(|b| b.is_live(now)) {
                tombstone(b, r, stamp);
            }
        }
        Change::Set(contacts) => set(r, contacts, record, now, seen, max_contacts)?,
    }
    if !matches!(r.change, Change::Fetch) {
        record.bound_tombstones(tombstones_kept(max_contacts));
    }
    Ok(())
}

/// Tombstones a record keeps: the removals of two full sets of contacts, at least 32.
/// Beyond it the oldest go (see `Record::bound_tombstones`).
pub(crate) fn tombstones_kept(max_contacts: usize) -> usize {
    max_contacts.saturating_mul(2).max(32)
}

/// Is the request a retransmission (a live binding it touches has its Call-ID and CSeq)?
/// Refused when such a binding has a higher CSeq (10.3 step 7).
fn retransmission(r: &Register, record: &Record, now: u64) -> Result<bool, Refusal> {
    // Only bindings of the same Call-ID can say anything; usually none or one. Tombstones
    // too: they carry the CSeq of the removal, so that a delayed copy of the REGISTER it
    // removed is refused instead of bringing the binding back.
    let mut same_call = record
        .bindings
        .iter()
        .filter(|b| (b.removed || b.is_live(now)) && b.call_id == r.call_id)
        .peekable();
    if same_call.peek().is_none() {
        return Ok(false);
    }
    // The request's contacts indexed once; each binding of the Call-ID looked up in them.
    let mut contacts = match &r.change {
        Change::Set(cs) => Matcher::new(cs.iter().map(NewContact::probe)),
        _ => Matcher::default(),
    };
    let mut retransmission = false;
    for b in same_call {
        let touched = match &r.change {
            Change::Fetch => false,
            Change::RemoveAll => true,
            Change::Set(_) => contacts.first(b.probe()).is_some(),
        };
        if touched && r.cseq < b.cseq {
            return Err(refuse(400, "CSeq out of order"));
        }
        retransmission |= touched && r.cseq == b.cseq;
    }
    Ok(retransmission)
}

/// Add, refresh or remove each contact of the request; 403 past `max_contacts` live ones.
fn set(
    r: &Register,
    contacts: &[NewContact],
    record: &mut Record,
    now: u64,
    seen: u64,
    max_contacts: usize,
) -> Result<(), Refusal> {
    // A contact already bound under this exact text was checked when it was bound.
    let known: HashSet<&str> = record.bindings.iter().map(|b| b.contact.as_str()).collect();
    for c in contacts {
        let sip = matches!(scheme(&c.uri).as_deref(), Some("sip") | Some("sips"));
        if !known.contains(c.uri.as_str()) && sip && parse_sip(&c.uri).is_none() {
            return Err(refuse(400, "Bad Contact URI"));
        }
    }
    let mut index = Matcher::new(record.bindings.iter().map(Binding::probe));
    for c in contacts {
        let stamp = hlc_stamp(seen);
        match (index.first(c.probe()), c.expires) {
            (Some(i), 0) => {
                let b = &mut record.bindings[i];
                if b.is_live(now) {
                    tombstone(b, r, stamp);
                }
            }
            (None, 0) => {}
            (Some(i), _) => {
                index.replace(i, c.probe());
                record.bindings[i] = binding(r, c, now, stamp);
            }
            (None, _) => {
                index.push(c.probe());
                record.bindings.push(binding(r, c, now, stamp));
            }
        }
    }
    let live = record.live(now).count();
    if live > max_contacts {
        return Err(too_many(max_contacts));
    }
    Ok(())
}

fn too_many(max_contacts: usize) -> Refusal {
    Refusal::new(
        403,
        format!("Too Many Contacts (at most {max_contacts} per AOR)"),
    )
}

/// A removed binding becomes a tombstone until it would have expired anyway, ordered by the
/// request that removed it (see [`Binding::bury`]).
fn tombstone(b: &mut Binding, r: &Register, stamp: u64) {
    b.bury(stamp);
    b.call_id = r.call_id.clone();
    b.cseq = r.cseq;
}

fn binding(r: &Register, c: &NewContact, now: u64, stamp: u64) -> Binding {
    Binding {
        contact: c.uri.clone(),
        params: c.params.clone(),
        expires_at: now + u64::from(c.expires),
        q: c.q,
        call_id: r.call_id.clone(),
        cseq: r.cseq,
        path: r.path.clone(),
        source: r.source.clone(),
        instance_id: c.instance_id.clone(),
        reg_id: c.reg_id,
        updated: stamp,
        removed: false,
        flow: r.arrival.flow_for(
            &c.uri,
            !r.path.is_empty(),
            c.reg_id.is_some() && c.instance_id.is_some(),
        ),
    }
}

/// The whole REGISTER: read, apply through the store, and the answer as a value.
pub(crate) async fn save(
    store: &impl LocationStore,
    cfg: &RegistrarConfig,
    req: &Message,
    src: SocketAddr,
    proto: Proto,
    identity: &Identity,
) -> Result<Reply, Refusal> {
    let r = read(req, src, proto, cfg, identity)?;
    let max = cfg.max_contacts;
    // The Contact lines of the answer are written from the record inside the update, so the
    // record itself is not copied out.
    let result = store
        .update(&r.aor, |record, now| {
            apply(&r, record, now, max)?;
            Ok::<_, Refusal>(contact_lines(record, now, &r.source))
        })
        .await;
    match result {
        Ok(Ok((contacts, hold_until))) => Ok(Reply {
            bytes: ok_response(req, src, &r, &contacts),
            hold_until,
            aor: r.aor.clone(),
        }),
        Ok(Err(refusal)) => Err(refusal),
        Err(e) => {
            throttled_warn!(aor = %r.aor, error = %e, "location store failed");
            let reason = match e {
                StoreError::TooLarge => "Too Many Contacts (record too large)",
                _ => "Location Service Unavailable",
            };
            Err(refuse(500, reason).with("Retry-After", 5))
        }
    }
}

/// The Contact lines of the 200 OK (every live binding with the seconds it has left), and the
/// latest expiry of the bindings registered from `source` (how long its connection is held).
fn contact_lines(record: &Record, now: u64, source: &str) -> (String, Option<u64>) {
    let mut contacts = String::new();
    let mut hold_until = None;
    for b in record.live(now) {
        let _ = write!(
            contacts,
            "Contact: <{}>;expires={}",
            b.contact,
            b.expires_in(now)
        );
        if let Some(q) = b.q {
            let _ = write!(contacts, ";q={}", format_q(q));
        }
        contacts.push_str(&b.params);
        contacts.push_str("\r\n");
        if b.source == source {
            hold_until = hold_until.max(Some(b.expires_at));
        }
    }
    (contacts, hold_until)
}

/// Step 8: 200 OK with the bindings, Path echoed when the UA supports it (RFC 3327 5.3), Date.
fn ok_response(req: &Message, src: SocketAddr, r: &Register, contacts: &str) -> Vec<u8> {
    let supports_path = req
        .option_tags(&HeaderName::Supported)
        .unwrap_or_default()
        .iter()
        .any(|t| t.eq_ignore_ascii_case("path"));
    let mut resp = Response::new(req, src, 200, "OK").lines(contacts);
    if supports_path {
        for p in &r.path {
            resp = resp.header("Path", p);
        }
    }
    resp = resp.header("Date", crate::sip::response::http_date());
    if asks_outbound(r) {
        // RFC 5626 5.2: the registrar tells the UA its flow is used, and how often to
        // keep it alive (4.4).
        let secs = match r.arrival.proto {
            Proto::Udp => super::flow::FLOW_TIMER_UDP,
            Proto::Tcp => super::flow::FLOW_TIMER_TCP,
        };
        resp = resp
            .header("Require", "outbound")
            .header("Flow-Timer", secs);
    }
    if !r.path.is_empty() || supports_path {
        resp = resp.header("Supported", "path");
    }
    resp.build()
}

/// RFC 5626 5.2: `Supported: outbound`, and a contact with reg-id and instance-id.
fn asks_outbound(r: &Register) -> bool {
    r.arrival.outbound
        && matches!(&r.change, Change::Set(cs) if cs.iter().any(|c| c.reg_id.is_some() && c.instance_id.is_some()))
}

/// 500 -> "0.5", 1000 -> "1", 25 -> "0.025".
pub(crate) fn format_q(q: u16) -> String {
    if q >= 1000 {
        return "1".into();
    }
    let s = format!("0.{q:03}");
    let s = s.trim_end_matches('0');
    if s == "0." { "0".into() } else { s.to_owned() }
}
