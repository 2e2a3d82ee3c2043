//! Unit tests of the registrar rules over the memory store.

use super::RegistrarConfig;
use super::save::{apply, format_q, parse_q, read, save};
use crate::identity::Identity;
use crate::location::memory::MemoryStore;
use crate::location::{LocationStore, Record};
use crate::sip::uri::Aor;
use crate::sip::{Framing, Message};
use crate::transport::Proto;
use bytes::Bytes;
use std::net::SocketAddr;

fn identity() -> Identity {
    Identity::new(
        vec!["example.test".into()],
        "sip:example.test".into(),
        "example.test".into(),
        vec![(Proto::Udp, "127.0.0.1:5060".parse().unwrap())],
    )
}

fn cfg() -> RegistrarConfig {
    RegistrarConfig {
        min_expires: 60,
        max_expires: 3600,
        default_expires: 600,
        max_contacts: 3,
    }
}

fn msg(contacts: &str, extra: &str, call_id: &str, cseq: u32) -> Message {
    msg_within(contacts, extra, call_id, cseq, 65536)
}

fn msg_within(contacts: &str, extra: &str, call_id: &str, cseq: u32, limit: usize) -> Message {
    let raw = format!(
        "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{cseq}{call_id}\r\nFrom: <sip:bob@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{contacts}{extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(raw), Framing::Datagram, limit).unwrap()
}

async fn send(store: &MemoryStore, m: &Message) -> String {
    let src: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    let bytes = match save(store, &cfg(), m, src, Proto::Udp, &identity()).await {
        Ok(reply) => reply.bytes,
        Err(refusal) => refusal.response(m, src),
    };
    String::from_utf8(bytes).unwrap()
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

/// Issue 12 defect 2: a removal orders the Call-ID like any REGISTER. After CSeq 5 and its
/// removal with CSeq 6, a delayed copy of CSeq 5 is refused and brings nothing back; CSeq 6
/// again is a retransmission; CSeq 7 registers anew.
#[tokio::test]
async fn a_delayed_register_does_not_undo_its_removal() {
    let s = MemoryStore::new();
    let add = msg("Contact: <sip:bob@h>\r\n", "Expires: 300\r\n", "a", 5);
    assert!(send(&s, &add).await.starts_with("SIP/2.0 200"));
    let remove = msg("Contact: <sip:bob@h>\r\n", "Expires: 0\r\n", "a", 6);
    let r = send(&s, &remove).await;
    assert!(contacts(&r).is_empty(), "{r}");
    let r = send(&s, &add).await;
    assert!(r.starts_with("SIP/2.0 400"), "{r}");
    let fetch = msg("", "", "q", 1);
    assert!(contacts(&send(&s, &fetch).await).is_empty());
    let r = send(&s, &remove).await;
    assert!(
        r.starts_with("SIP/2.0 200") && contacts(&r).is_empty(),
        "{r}"
    );
    // Contact: * (all) is ordered the same way.
    let all = msg("Contact: *\r\n", "Expires: 0\r\n", "b", 9);
    let again = msg("Contact: <sip:bob@h2>\r\n", "Expires: 300\r\n", "b", 8);
    assert!(
        send(&s, &msg("Contact: <sip:bob@h2>\r\n", "", "b", 8))
            .await
            .starts_with("SIP/2.0 200")
    );
    assert!(send(&s, &all).await.starts_with("SIP/2.0 200"));
    assert!(send(&s, &again).await.starts_with("SIP/2.0 400"));
    let r = send(
        &s,
        &msg("Contact: <sip:bob@h>\r\n", "Expires: 300\r\n", "a", 7),
    )
    .await;
    assert_eq!(contacts(&r), vec!["Contact: <sip:bob@h>;expires=300"]);
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

/// Nothing that arrives from the network makes the reading of a REGISTER panic: every RFC 4475
/// torture message, cut at every length and mutated byte by byte (deterministic), is read.
#[test]
fn reading_never_panics_on_the_torture_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sip-torture");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    files.sort();
    assert!(files.len() >= 49, "the RFC 4475 corpus has 49 messages");
    let (id, src) = (identity(), "127.0.0.1:5060".parse().unwrap());
    let mut seed = 0x9e37_79b9_u32;
    for f in files {
        let raw = std::fs::read(&f).unwrap();
        let mut variants: Vec<Vec<u8>> = (0..raw.len()).map(|n| raw[..n].to_vec()).collect();
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let mut m = raw.clone();
            if !m.is_empty() {
                let i = seed as usize % m.len();
                m[i] = (seed >> 8) as u8;
            }
            variants.push(m);
        }
        for v in variants {
            if let Ok(m) = Message::parse(Bytes::from(v), Framing::Datagram, 65536) {
                let _ = read(&m, src, Proto::Udp, &cfg(), &id);
            }
        }
    }
}

#[tokio::test]
async fn contacts_and_paths_naming_a_farm_node_are_refused() {
    let s = MemoryStore::new();
    // A node on a host of its own (any port refused) and one on this host (its port only).
    let id = identity().with_farm_nodes(vec![
        "192.0.2.9:11211".parse().unwrap(),
        "127.0.0.1:11211".parse().unwrap(),
    ]);
    let src: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    let cases = [
        (
            "Contact: <sip:x@192.0.2.9:11211;transport=tcp>\r\n",
            "",
            403,
        ),
        ("Contact: sip:192.0.2.9\r\n", "", 403),
        (
            "Contact: <sip:x@127.0.0.1:11211;transport=tcp>\r\n",
            "",
            403,
        ),
        ("Contact: <sip:x@127.0.0.1:11212>\r\n", "", 200),
        (
            "Contact: <sip:bob@127.0.0.1:5070>\r\n",
            "Path: <sip:192.0.2.9:5060;lr>\r\n",
            403,
        ),
        ("Contact: <sip:bob@127.0.0.1:5070>\r\n", "", 200),
    ];
    for (i, (contact, extra, want)) in cases.into_iter().enumerate() {
        let m = msg(contact, extra, "n", i as u32 + 1);
        let got = match save(&s, &cfg(), &m, src, Proto::Udp, &id).await {
            Ok(_) => 200,
            Err(r) => r.code,
        };
        assert_eq!(got, want, "{contact}{extra}");
    }
}

#[test]
fn answers_are_capped_with_a_warning() {
    let mut resp = String::from("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n");
    for i in 0..50 {
        resp.push_str(&format!(
            "Contact: <sip:u{i}@192.0.2.1:5060>;expires=600\r\n"
        ));
    }
    resp.push_str("Content-Length: 0\r\n\r\n");
    let capped = super::cap_answer(resp.clone().into_bytes(), 600);
    assert!(capped.len() <= 600, "{}", capped.len());
    let text = String::from_utf8(capped).unwrap();
    assert!(text.contains("\r\nWarning: 399 sipfarm"), "{text}");
    assert!(text.contains("Contact: <sip:u0@"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n") && text.contains("Content-Length: 0\r\n"),
        "{text}"
    );
    let kept = text.lines().filter(|l| l.starts_with("Contact:")).count();
    assert!((1..50).contains(&kept), "{kept}");
    assert_eq!(
        super::cap_answer(resp.clone().into_bytes(), 10_000),
        resp.into_bytes()
    );
}

/// More Contact values than `max_contacts`: 403 before any is parsed (the bad one among them
/// is never looked at).
#[tokio::test]
async fn too_many_contacts_are_counted_before_parsing() {
    let s = MemoryStore::new();
    let m = msg(
        "Contact: <sip:a@h>, <sip:b@h>, <sip:c@h>, <sip:d@h\r\n",
        "",
        "a",
        1,
    );
    let r = send(&s, &m).await;
    assert!(
        r.starts_with("SIP/2.0 403 Too Many Contacts (at most 3 per AOR)"),
        "{r}"
    );
    let r = send(&s, &msg("Contact: <sip:a@h>, <sip:b@h\r\n", "", "a", 2)).await;
    assert!(r.starts_with("SIP/2.0 400 Bad Contact"), "{r}");
}

/// Where `max_contacts` lets thousands of contacts through, matching them to the bindings
/// (and merging replicas of the result) stays linear: 6,000 contacts in one REGISTER, then
/// the same again (every one a refresh).
#[test]
fn thousands_of_contacts_are_matched_in_linear_time() {
    let cfg = RegistrarConfig {
        max_contacts: 10_000,
        ..cfg()
    };
    let contacts: Vec<String> = (0..6000)
        .map(|i| format!("<sip:u{i}@h{}:5070>", i % 7))
        .collect();
    let header = format!("Contact: {}\r\n", contacts.join(", "));
    let (id, src) = (identity(), "127.0.0.1:5070".parse().unwrap());
    let mut record = Record::default();
    let started = std::time::Instant::now();
    for cseq in 1..=2 {
        let m = msg_within(&header, "", "big", cseq, 1 << 20);
        let r = read(&m, src, Proto::Udp, &cfg, &id).unwrap();
        apply(&r, &mut record, 1000, cfg.max_contacts).unwrap();
        assert_eq!(record.live(1000).count(), 6000);
    }
    let took = started.elapsed();
    eprintln!("two REGISTERs of 6000 contacts read and applied in {took:?}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

/// A client that registers and removes distinct contacts, over and over, leaves a tombstone
/// each time: the record stays bounded (oldest tombstones dropped), well under the item
/// limit, and the live bindings are kept.
#[test]
fn churned_contacts_leave_a_bounded_record() {
    let (id, src) = (identity(), "127.0.0.1:5070".parse().unwrap());
    let path = "Path: <sip:edge.example.test;lr>\r\n";
    let mut record = Record::default();
    let mut cseq = 0;
    let mut register = |record: &mut Record, contact: &str, now: u64| {
        cseq += 1;
        let m = msg(&format!("Contact: {contact}\r\n"), path, "churn", cseq);
        let r = read(&m, src, Proto::Udp, &cfg(), &id).unwrap();
        apply(&r, record, now, cfg().max_contacts).unwrap();
    };
    register(&mut record, "<sip:desk@127.0.0.1:5070>", 1000);
    register(&mut record, "<sip:mobile@127.0.0.1:5071>", 1000);
    let started = std::time::Instant::now();
    for i in 0..2000 {
        let now = 1000 + i / 10;
        let contact = format!("<sip:churn{i}@127.0.0.1:{}>", 10000 + i);
        register(&mut record, &contact, now);
        register(&mut record, &format!("{contact};expires=0"), now);
    }
    let size = crate::location::record::encode(&record, 1 << 20)
        .unwrap()
        .len();
    eprintln!(
        "after 2000 added and removed: {} bindings, {size} bytes encoded, {:?}",
        record.bindings.len(),
        started.elapsed()
    );
    let live: Vec<&str> = record.live(1200).map(|b| b.contact.as_str()).collect();
    assert_eq!(
        live,
        ["sip:desk@127.0.0.1:5070", "sip:mobile@127.0.0.1:5071"]
    );
    assert!(record.bindings.len() <= 2 + 32, "{}", record.bindings.len());
    assert!(size < 8 * 1024, "{size} bytes");
    // The tombstones kept are the latest ones.
    assert!(
        record
            .bindings
            .iter()
            .any(|b| b.contact.contains("churn1999"))
    );
    assert!(
        !record
            .bindings
            .iter()
            .any(|b| b.contact.contains("churn0@"))
    );
}
