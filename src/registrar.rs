//! The registrar: RFC 3261 section 10.3, all of it, plus RFC 3327 (Path) and the binding
//! identity of RFC 5626 (instance-id, reg-id).
//!
//! The rules are here and only here; the registrar does no I/O of its own. It reads the
//! REGISTER, decides the change as a pure function of the current record ([`apply`]), asks
//! the [`LocationStore`] to apply it atomically, and writes the answer.
//!
//! Steps of 10.3 and where they are:
//! 1. domain of the Request-URI — checked by the dispatcher (`server`) before calling here;
//! 2. Require — the dispatcher (420);
//! 3. authentication — none configured (RFC 4475 regaut01: an unknown scheme is ignored);
//! 4. authorisation — any user may register its own AOR;
//! 5. AOR from To, canonical ([`Aor`]), 404 when not in our domains;
//! 6. Contact `*` only alone and with Expires 0; expiry from the contact parameter, then the
//!    Expires header, then the default; 423 below the minimum, clamped above the maximum;
//! 7. per contact: Call-ID/CSeq ordering, add / refresh / remove;
//! 8. 200 OK with every current binding and its expiry, and a Date header.

use crate::clock::hlc_stamp;
use crate::location::{Binding, LocationStore, Record, StoreError};
use crate::sip::addr::NameAddr;
use crate::sip::header::{HeaderName, unquote};
use crate::sip::response::Response;
use crate::sip::uri::{Aor, parse_sip, scheme};
use crate::sip::{Message, parse_delta};
use crate::transport::Proto;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// What `[registrar]` configures.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
}

/// The answer, and for how long the connection it came on must be kept open (the latest
/// expiry of bindings registered over it, Unix seconds).
pub struct Reply {
    pub bytes: Vec<u8>,
    pub hold_until: Option<u64>,
}

/// One Contact of the request, checked.
#[derive(Debug, Clone)]
pub struct NewContact {
    pub uri: String,
    pub params: String,
    /// Seconds, after the min/max rules; 0 removes.
    pub expires: u32,
    pub q: Option<u16>,
    pub instance_id: Option<String>,
    pub reg_id: Option<u32>,
}

/// What the REGISTER asks for.
#[derive(Debug, Clone)]
pub enum Change {
    /// A query (no Contact).
    Fetch,
    /// `Contact: *` with `Expires: 0`.
    RemoveAll,
    Set(Vec<NewContact>),
}

/// Why a REGISTER is refused: code, reason phrase, extra header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: String,
    pub header: Option<(&'static str, String)>,
}

fn refuse(code: u16, reason: &str) -> Refusal {
    Refusal {
        code,
        reason: reason.to_owned(),
        header: None,
    }
}

/// The request data the rule needs, parsed once before the store is touched.
#[derive(Debug, Clone)]
pub struct Register {
    pub aor: Aor,
    pub change: Change,
    pub call_id: String,
    pub cseq: u32,
    pub path: Vec<String>,
    pub source: String,
}

/// q-value "0.5" -> 500 (RFC 3261 20.10: 0 to 1, at most three decimals).
fn parse_q(v: &str) -> Option<u16> {
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

/// Read and check a REGISTER (steps 5 and 6). `is_ours` tells whether a domain is served.
pub fn read(
    req: &Message,
    src: SocketAddr,
    proto: Proto,
    cfg: &RegistrarConfig,
    is_ours: impl Fn(&str) -> bool,
) -> Result<Register, Refusal> {
    let to = req
        .get(&HeaderName::To)
        .and_then(|v| NameAddr::parse(v).ok())
        .ok_or_else(|| refuse(400, "Bad To"))?;
    let aor = Aor::from_uri(&to.uri).map_err(|why| refuse(400, why))?;
    if !is_ours(aor.domain()) {
        return Err(refuse(404, "Not Found (domain not served here)"));
    }
    let call_id = req.call_id().unwrap_or_default().to_owned();
    let (cseq, _) = req.cseq().map_err(|e| refuse(400, &e.to_string()))?;
    let header_expires = req.expires().map_err(|_| refuse(400, "Bad Expires"))?;
    let contacts = req
        .list(&HeaderName::Contact)
        .map_err(|_| refuse(400, "Bad Contact"))?;

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
                return Err(Refusal {
                    code: 423,
                    reason: "Interval Too Brief".into(),
                    header: Some(("Min-Expires", cfg.min_expires.to_string())),
                });
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
    let path = req
        .list(&HeaderName::Path)
        .map_err(|_| refuse(400, "Bad Path"))?
        .into_iter()
        .map(str::to_owned)
        .collect();
    Ok(Register {
        aor,
        change,
        call_id,
        cseq,
        path,
        source: format!("{}:{}", proto.as_str(), src),
    })
}

/// Step 7 as a pure function of the record: apply the request, or refuse it and change
/// nothing. A request whose Call-ID matches a binding with the same CSeq is a retransmission
/// (no transaction layer absorbs it here): it changes nothing and gets the current bindings.
pub fn apply(
    r: &Register,
    record: &mut Record,
    now: u64,
    max_contacts: usize,
) -> Result<(), Refusal> {
    // Ordering first, over every binding the request touches, so that a refused request
    // changes nothing at all.
    let touched = |b: &Binding| match &r.change {
        Change::Fetch => false,
        Change::RemoveAll => true,
        Change::Set(cs) => cs
            .iter()
            .any(|c| b.same_as(&c.uri, c.instance_id.as_deref(), c.reg_id)),
    };
    let mut retransmission = false;
    for b in record.live(now).filter(|b| touched(b)) {
        if b.call_id == r.call_id {
            if r.cseq < b.cseq {
                return Err(refuse(400, "CSeq out of order"));
            }
            if r.cseq == b.cseq {
                retransmission = true;
            }
        }
    }
    if retransmission {
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
        Change::Set(contacts) => {
            for c in contacts {
                let known = record.bindings.iter().any(|b| b.contact == c.uri);
                let sip = matches!(scheme(&c.uri).as_deref(), Some("sip") | Some("sips"));
                if !known && sip && parse_sip(&c.uri).is_none() {
                    return Err(refuse(400, "Bad Contact URI"));
                }
            }
            for c in contacts {
                let stamp = hlc_stamp(seen);
                let existing = record
                    .bindings
                    .iter_mut()
                    .find(|b| b.same_as(&c.uri, c.instance_id.as_deref(), c.reg_id));
                match existing {
                    Some(b) if c.expires == 0 => {
                        if b.is_live(now) {
                            tombstone(b, r, stamp);
                        }
                    }
                    None if c.expires == 0 => {}
                    Some(b) => *b = binding(r, c, now, stamp),
                    None => record.bindings.push(binding(r, c, now, stamp)),
                }
            }
            let live = record.live(now).count();
            if live > max_contacts {
                return Err(refuse(
                    403,
                    &format!("Too Many Contacts (at most {max_contacts} per AOR)"),
                ));
            }
        }
    }
    Ok(())
}

/// A removed binding becomes a tombstone until it would have expired anyway.
fn tombstone(b: &mut Binding, r: &Register, stamp: u64) {
    b.removed = true;
    b.call_id = r.call_id.clone();
    b.cseq = r.cseq;
    b.updated = stamp;
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
    }
}

/// The whole REGISTER: read, apply through the store, answer.
pub async fn handle<S: LocationStore>(
    store: &S,
    cfg: &RegistrarConfig,
    req: &Message,
    src: SocketAddr,
    proto: Proto,
    is_ours: impl Fn(&str) -> bool,
) -> Reply {
    let r = match read(req, src, proto, cfg, is_ours) {
        Ok(r) => r,
        Err(refusal) => return refused(req, src, &refusal),
    };
    let max = cfg.max_contacts;
    // The Contact lines of the answer are written from the record inside the update, so the
    // record itself is not copied out.
    let result = store
        .update(&r.aor, |record, now| {
            apply(&r, record, now, max)?;
            let mut contacts = String::new();
            let mut hold_until = None;
            for b in record.live(now) {
                let _ = write!(
                    contacts,
                    "Contact: <{}>;expires={}",
                    b.contact,
                    b.expires_at - now
                );
                if let Some(q) = b.q {
                    let _ = write!(contacts, ";q={}", format_q(q));
                }
                contacts.push_str(&b.params);
                contacts.push_str("\r\n");
                if b.source == r.source {
                    hold_until = hold_until.max(Some(b.expires_at));
                }
            }
            Ok::<_, Refusal>((contacts, hold_until))
        })
        .await;
    match result {
        Ok(Ok((contacts, hold_until))) => {
            let supports_path = req
                .option_tags(&HeaderName::Supported)
                .unwrap_or_default()
                .iter()
                .any(|t| t.eq_ignore_ascii_case("path"));
            let mut resp = Response::new(req, src, 200, "OK").lines(&contacts);
            if supports_path {
                for p in &r.path {
                    resp = resp.header("Path", p);
                }
            }
            resp = resp.header("Date", crate::sip::response::http_date());
            if !r.path.is_empty() || supports_path {
                resp = resp.header("Supported", "path");
            }
            Reply {
                bytes: resp.build(),
                hold_until,
            }
        }
        Ok(Err(refusal)) => refused(req, src, &refusal),
        Err(e) => {
            tracing::warn!(aor = %r.aor, error = %e, "location store failed");
            let reason = match e {
                StoreError::TooLarge => "Too Many Contacts (record too large)",
                _ => "Location Service Unavailable",
            };
            Reply {
                bytes: Response::new(req, src, 500, reason)
                    .header("Retry-After", 5)
                    .build(),
                hold_until: None,
            }
        }
    }
}

fn refused(req: &Message, src: SocketAddr, r: &Refusal) -> Reply {
    let mut resp = Response::new(req, src, r.code, &r.reason);
    if let Some((name, value)) = &r.header {
        resp = resp.header(name, value);
    }
    Reply {
        bytes: resp.build(),
        hold_until: None,
    }
}

/// 500 -> "0.5", 1000 -> "1", 25 -> "0.025".
pub fn format_q(q: u16) -> String {
    if q >= 1000 {
        return "1".into();
    }
    let s = format!("0.{q:03}");
    let s = s.trim_end_matches('0');
    if s == "0." { "0".into() } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::memory::MemoryStore;
    use crate::sip::Framing;
    use bytes::Bytes;

    fn cfg() -> RegistrarConfig {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            max_contacts: 3,
        }
    }

    fn msg(contacts: &str, extra: &str, call_id: &str, cseq: u32) -> Message {
        let raw = format!(
            "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{cseq}{call_id}\r\nFrom: <sip:bob@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{contacts}{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(raw), Framing::Datagram, 65536).unwrap()
    }

    async fn send(store: &MemoryStore, m: &Message) -> String {
        let src: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let r = handle(store, &cfg(), m, src, Proto::Udp, |d| d == "example.test").await;
        String::from_utf8(r.bytes).unwrap()
    }

    fn contacts(resp: &str) -> Vec<&str> {
        resp.lines().filter(|l| l.starts_with("Contact:")).collect()
    }

    #[tokio::test]
    async fn register_query_refresh_remove() {
        let s = MemoryStore::new();
        let r = send(
            &s,
            &msg(
                "Contact: <sip:bob@127.0.0.1:5070>;q=0.5\r\n",
                "Expires: 120\r\n",
                "a",
                1,
            ),
        )
        .await;
        assert!(r.starts_with("SIP/2.0 200 OK"), "{r}");
        assert_eq!(
            contacts(&r),
            vec!["Contact: <sip:bob@127.0.0.1:5070>;expires=120;q=0.5"]
        );
        assert!(r.contains("\r\nDate: "));
        // Query through another Call-ID.
        let r = send(&s, &msg("", "", "q", 1)).await;
        assert_eq!(contacts(&r).len(), 1);
        // Second contact, both comma-joined and as a separate header.
        let r = send(
            &s,
            &msg(
                "m: <sip:b2@127.0.0.1:5071>, <sip:b3@127.0.0.1:5072>;expires=61\r\n",
                "",
                "b",
                1,
            ),
        )
        .await;
        assert_eq!(contacts(&r).len(), 3, "{r}");
        // Too many.
        let r = send(&s, &msg("Contact: <sip:b4@127.0.0.1:5073>\r\n", "", "c", 1)).await;
        assert!(r.starts_with("SIP/2.0 403 Too Many Contacts"), "{r}");
        // Remove one with expires=0.
        let r = send(
            &s,
            &msg("Contact: <sip:b2@127.0.0.1:5071>;expires=0\r\n", "", "b", 2),
        )
        .await;
        assert_eq!(contacts(&r).len(), 2, "{r}");
        // Contact * needs Expires: 0.
        let r = send(&s, &msg("Contact: *\r\n", "", "d", 1)).await;
        assert!(r.starts_with("SIP/2.0 400"), "{r}");
        let r = send(&s, &msg("Contact: *\r\n", "Expires: 0\r\n", "d", 1)).await;
        assert!(r.starts_with("SIP/2.0 200"), "{r}");
        assert!(contacts(&r).is_empty());
    }

    #[tokio::test]
    async fn expiry_rules() {
        let s = MemoryStore::new();
        let r = send(&s, &msg("Contact: <sip:bob@h>;expires=10\r\n", "", "a", 1)).await;
        assert!(r.starts_with("SIP/2.0 423"), "{r}");
        assert!(r.contains("Min-Expires: 60\r\n"));
        let r = send(
            &s,
            &msg(
                "Contact: <sip:bob@h>\r\n",
                "Expires: 99999999999\r\n",
                "a",
                2,
            ),
        )
        .await;
        assert_eq!(contacts(&r), vec!["Contact: <sip:bob@h>;expires=3600"]);
        let r = send(&s, &msg("Contact: <sip:bob@h>\r\n", "", "a", 3)).await;
        assert_eq!(contacts(&r), vec!["Contact: <sip:bob@h>;expires=600"]);
    }

    #[tokio::test]
    async fn cseq_ordering_and_retransmission() {
        let s = MemoryStore::new();
        let first = msg("Contact: <sip:bob@h>\r\n", "Expires: 300\r\n", "a", 5);
        assert!(send(&s, &first).await.starts_with("SIP/2.0 200"));
        let r = send(
            &s,
            &msg("Contact: <sip:bob@h>\r\n", "Expires: 900\r\n", "a", 4),
        )
        .await;
        assert!(r.starts_with("SIP/2.0 400"), "{r}");
        // Same CSeq again: 200 with the binding unchanged (expires stays 300, not 900).
        let r = send(
            &s,
            &msg("Contact: <sip:bob@h>\r\n", "Expires: 900\r\n", "a", 5),
        )
        .await;
        assert!(r.starts_with("SIP/2.0 200"), "{r}");
        assert_eq!(contacts(&r), vec!["Contact: <sip:bob@h>;expires=300"]);
        let r = send(
            &s,
            &msg("Contact: <sip:bob@h>\r\n", "Expires: 900\r\n", "other", 1),
        )
        .await;
        assert_eq!(contacts(&r), vec!["Contact: <sip:bob@h>;expires=900"]);
    }

    #[tokio::test]
    async fn path_contact_params_and_aor() {
        let s = MemoryStore::new();
        let m = msg(
            "Contact: sip:bob@h;unknownparam\r\nContact: <sip:bob@h2;unknownparam>\r\n",
            "Path: <sip:edge.example.test;lr>\r\nSupported: path\r\n",
            "a",
            1,
        );
        let r = send(&s, &m).await;
        let c = contacts(&r);
        assert!(
            c.contains(&"Contact: <sip:bob@h>;expires=600;unknownparam"),
            "{r}"
        );
        assert!(
            c.contains(&"Contact: <sip:bob@h2;unknownparam>;expires=600"),
            "{r}"
        );
        assert!(r.contains("Path: <sip:edge.example.test;lr>\r\n"), "{r}");
        let rec = s
            .lookup(&Aor::from_uri("sip:bob@example.test:5060").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.bindings[0].path, vec!["<sip:edge.example.test;lr>"]);
        // Not our domain.
        let raw = String::from_utf8(m.raw().to_vec())
            .unwrap()
            .replace("To: <sip:bob@example.test>", "To: <sip:bob@elsewhere.test>");
        let m = Message::parse(Bytes::from(raw), Framing::Datagram, 65536).unwrap();
        assert!(send(&s, &m).await.starts_with("SIP/2.0 404"));
    }

    #[test]
    fn q_values() {
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.0"), Some(1000));
        assert_eq!(parse_q("0.025"), Some(25));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(format_q(500), "0.5");
        assert_eq!(format_q(25), "0.025");
        assert_eq!(format_q(0), "0");
    }
}
