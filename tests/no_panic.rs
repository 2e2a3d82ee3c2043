//! Nothing that arrives from the network makes the parser panic: every RFC 4475 torture
//! message, cut at every length and mutated byte by byte (deterministic pseudo-random), goes
//! through framing, indexing, validation, the typed reads (Via, addresses, URIs, CSeq,
//! Max-Forwards, Expires) and a response built from it. Only the public `sipfarm::sip` API is
//! used: the registrar is not public API, so its reading of REGISTER contents belongs to
//! a unit test in src/.

use bytes::Bytes;
use sipfarm::sip::addr::NameAddr;
use sipfarm::sip::uri::{Aor, parse_sip};
use sipfarm::sip::{Framing, HeaderName, Message, frame_len};
use std::path::PathBuf;

fn exercise(raw: &[u8]) {
    let _ = frame_len(raw, 65536);
    let _ = Message::parse_head(Bytes::copy_from_slice(raw));
    for framing in [Framing::Datagram, Framing::Stream] {
        let Ok(m) = Message::parse(Bytes::copy_from_slice(raw), framing, 65536) else {
            continue;
        };
        let _ = m.validate_request();
        let _ = m.vias();
        let _ = m.cseq();
        let _ = m.max_forwards();
        let _ = m.expires();
        for name in [
            HeaderName::From,
            HeaderName::To,
            HeaderName::Contact,
            HeaderName::Route,
        ] {
            for v in m.list(&name).unwrap_or_default() {
                if let Ok(a) = NameAddr::parse(v) {
                    let _ = parse_sip(&a.uri);
                    let _ = Aor::from_uri(&a.uri);
                }
            }
        }
        if let Some(uri) = m.request_uri() {
            let _ = parse_sip(uri);
            let _ = Aor::from_uri(uri);
        }
        let _ = sipfarm::sip::response::Response::new(
            &m,
            "127.0.0.1:5060".parse().unwrap(),
            400,
            "Bad",
        )
        .build();
    }
}

#[test]
fn torture_messages_cut_and_mutated() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sip-torture");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the RFC 4475 corpus in tests/sip-torture")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    files.sort();
    assert!(files.len() >= 49);
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let specials = [
        b'\r', b'\n', b' ', b':', b';', b',', b'"', b'<', b'>', b'%', b'@', b'[', b']', 0u8, 0xff,
        0xc3,
    ];
    for f in files {
        let raw = std::fs::read(&f).unwrap();
        for cut in 0..raw.len() {
            exercise(&raw[..cut]);
        }
        for _ in 0..300 {
            let mut m = raw.clone();
            for _ in 0..(1 + next() % 4) {
                let i = (next() as usize) % m.len();
                m[i] = specials[(next() as usize) % specials.len()];
            }
            exercise(&m);
        }
    }
}
