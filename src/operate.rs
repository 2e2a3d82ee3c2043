//! The operator's commands on the location service (issue 14), like Kamailio's `kamctl ul`:
//! `sipfarm location show AOR`, `location rm AOR [CONTACT]`, `location add AOR CONTACT
//! --expires S`. They go through the same store as the instances: the same records, the same
//! replica and CAS rules (a removal writes tombstones, RFC 3261 10.3 ordering kept: the
//! phone's next REGISTER, with a higher CSeq, registers it again).

use crate::clock::{hlc_stamp, now_secs};
use crate::location::farm::Inspection;
use crate::location::{Binding, LocationStore, Record, Store};
use crate::sip::uri::Aor;
use std::fmt::Write as _;

/// `alice@example.test` or `sip:alice@example.test`, as an AOR.
pub fn parse_aor(text: &str) -> Result<Aor, String> {
    if !text.contains('@') {
        return Err(format!(
            "'{text}' is not an address-of-record: USER@DOMAIN expected"
        ));
    }
    let uri = if text.contains(':') {
        text.to_owned()
    } else {
        format!("sip:{text}")
    };
    Aor::from_uri(&uri).map_err(|e| format!("'{text}' is not an address-of-record: {e}"))
}

fn binding_line(out: &mut String, b: &Binding, now: u64) {
    let q =
        b.q.map_or("-".to_owned(), |q| format!("{:.3}", f64::from(q) / 1000.0));
    let flow = match &b.flow {
        None => "-".to_owned(),
        Some(f) => format!(
            "{}{}{}",
            f.owner,
            if f.nat { " (nat)" } else { "" },
            if f.closed { " (closed)" } else { "" }
        ),
    };
    let _ = writeln!(
        out,
        "  <{}>{}\n    {}, q {q}, source {}, flow {flow}, call-id {}, cseq {}",
        b.contact,
        b.params,
        if b.until_removed() {
            "kept until removed".to_owned()
        } else {
            format!("expires in {} s", b.expires_at.saturating_sub(now))
        },
        if b.source.is_empty() { "-" } else { &b.source },
        b.call_id,
        b.cseq
    );
}

/// What `location show` prints: the merged bindings, then each owner's replica.
pub fn render(aor: &Aor, view: &Inspection) -> String {
    let now = now_secs();
    let mut out = String::new();
    let live: Vec<&Binding> = view.merged.live(now).collect();
    let tombstones = view.merged.bindings.iter().filter(|b| b.removed).count();
    let _ = writeln!(
        out,
        "{aor}: {} binding{}, {tombstones} tombstone{} ({})",
        live.len(),
        if live.len() == 1 { "" } else { "s" },
        if tombstones == 1 { "" } else { "s" },
        if view.agree {
            "replicas agree"
        } else {
            "REPLICAS DISAGREE"
        }
    );
    for b in live {
        binding_line(&mut out, b, now);
    }
    let _ = writeln!(out, "replicas:");
    for r in &view.owners {
        let state = match &r.held {
            Err(e) => format!("unreadable: {e}"),
            Ok(None) => "nothing".to_owned(),
            Ok(Some(rec)) => {
                let n = rec.live(now).count();
                let same = if *rec == view.merged {
                    "same as merged"
                } else {
                    "differs"
                };
                format!("{n} live, {} tombstones ({same})", rec.bindings.len() - n)
            }
        };
        let _ = writeln!(out, "  {:<24} {state}", r.node);
    }
    out
}

/// `location rm AOR [CONTACT]`: tombstones for the live bindings (or the one matching
/// CONTACT, RFC 3261 19.1.4 equality); how many were removed.
pub async fn remove(store: &Store, aor: &Aor, contact: Option<&str>) -> Result<usize, String> {
    let result = store
        .update(aor, |record: &mut Record, now| {
            let mut n = 0;
            for b in record.bindings.iter_mut() {
                if b.is_live(now) && contact.is_none_or(|c| b.same_as(c, None, None)) {
                    let stamp = hlc_stamp(b.updated);
                    b.bury(stamp);
                    n += 1;
                }
            }
            if n == 0 {
                return Err("no such binding".to_owned());
            }
            Ok(n)
        })
        .await;
    match result {
        Ok(r) => r,
        Err(e) => Err(format!("the location store failed: {e}")),
    }
}

/// `location add AOR CONTACT --expires S`: a binding written by the operator (a gateway, say),
/// replacing one with an equal contact; `--expires 0` keeps it until it is removed.
pub async fn add(store: &Store, aor: &Aor, contact: &str, expires: u32) -> Result<(), String> {
    let uri = contact.trim().trim_start_matches('<').trim_end_matches('>');
    if !(uri.starts_with("sip:") || uri.starts_with("sips:"))
        || crate::sip::uri::parse_sip(uri).is_none()
    {
        return Err(format!("'{contact}' is not a sip: or sips: URI"));
    }
    let result = store
        .update(aor, |record: &mut Record, now| {
            let old = record
                .bindings
                .iter()
                .position(|b| b.same_as(uri, None, None));
            let cseq = old.map_or(1, |i| record.bindings[i].cseq.saturating_add(1));
            let seen = old.map_or(0, |i| record.bindings[i].updated);
            let b = Binding {
                contact: uri.to_owned(),
                params: String::new(),
                expires_at: match expires {
                    0 => crate::location::UNTIL_REMOVED,
                    s => now + u64::from(s),
                },
                q: None,
                call_id: "sipfarm-location-add".to_owned(),
                cseq,
                path: Vec::new(),
                source: "static".to_owned(),
                instance_id: None,
                reg_id: None,
                updated: hlc_stamp(seen),
                removed: false,
                flow: None,
            };
            match old {
                Some(i) => record.bindings[i] = b,
                None => record.bindings.push(b),
            }
            Ok::<_, String>(())
        })
        .await;
    match result {
        Ok(r) => r,
        Err(e) => Err(format!("the location store failed: {e}")),
    }
}

/// What `location dump` prints: one AOR per line and its bindings below it, or (`json`) one
/// JSON document: `{"aors": [{"aor", "bindings": [...]}], "unlisted": [...]}`.
pub fn render_dump(dump: &crate::location::farm::Dump, json: bool) -> String {
    let now = now_secs();
    if json {
        let aors: Vec<serde_json::Value> = dump
            .records
            .iter()
            .map(|r| {
                let bindings: Vec<serde_json::Value> = r
                    .live(now)
                    .map(|b| {
                        serde_json::json!({
                            "contact": b.contact,
                            "expires_in": (!b.until_removed()).then(|| b.expires_at.saturating_sub(now)),
                            "until_removed": b.until_removed(),
                            "q": b.q.map(|q| f64::from(q) / 1000.0),
                            "source": b.source,
                            "call_id": b.call_id,
                            "cseq": b.cseq,
                            "flow": b.flow.as_ref().map(|f| f.owner.clone()),
                        })
                    })
                    .collect();
                serde_json::json!({ "aor": format!("sip:{}", r.aor), "bindings": bindings })
            })
            .collect();
        let doc = serde_json::json!({ "aors": aors, "unlisted": dump.unlisted });
        return format!("{doc}\n");
    }
    let mut out = String::new();
    for r in &dump.records {
        let live: Vec<&Binding> = r.live(now).collect();
        if live.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "sip:{}: {} binding{}",
            r.aor,
            live.len(),
            if live.len() == 1 { "" } else { "s" }
        );
        for b in live {
            binding_line(&mut out, b, now);
        }
    }
    for u in &dump.unlisted {
        let _ = writeln!(out, "NOT LISTED (some AORs may be missing): {u}");
    }
    out
}

/// What `farm check` prints, and whether the farm is in order now (nothing found, or all of
/// it repaired, and every node listed).
pub fn render_check(check: &crate::location::farm::Check, repair: bool) -> (String, bool) {
    let mut out = String::new();
    for f in &check.findings {
        let state = match (repair, f.repaired) {
            (false, _) => "",
            (true, true) => " [repaired]",
            (true, false) => " [NOT repaired]",
        };
        let _ = writeln!(out, "sip:{}: {}{state}", f.aor, f.problems.join("; "));
    }
    for u in &check.unlisted {
        let _ = writeln!(out, "NOT LISTED (not checked): {u}");
    }
    let left = check
        .findings
        .iter()
        .filter(|f| !(repair && f.repaired))
        .count();
    let _ = writeln!(
        out,
        "{} records, {} with problems{}",
        check.records,
        check.findings.len(),
        if repair {
            format!(", {} repaired", check.findings.len() - left)
        } else {
            String::new()
        }
    );
    (out, left == 0 && check.unlisted.is_empty())
}
