//! How one AOR's record is laid out in memcached.
//!
//! Key: `<prefix><32 hex digits of SHA-256(canonical AOR)>`: nothing a SIP message holds can
//! inject memcached protocol or exceed its 250-byte key limit. The AOR itself is in the value
//! and checked on read.
//!
//! Value: `SF` (magic), one format-version byte, then the [`Record`] in postcard's compact
//! encoding. A reader refuses versions it does not know instead of guessing, and a new
//! release keeps reading every older version, so instances can be upgraded one at a time.

use super::{Record, StoreError};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 2] = b"SF";
/// The format written by this release: 2 adds each binding's flow (RFC 5626).
const FORMAT_VERSION: u8 = 2;

/// The memcached key of an AOR.
pub fn key(prefix: &str, aor: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(aor.as_bytes());
    let mut k = String::with_capacity(prefix.len() + 32);
    k.push_str(prefix);
    for b in &digest[..16] {
        k.push(char::from(HEX[usize::from(b >> 4)]));
        k.push(char::from(HEX[usize::from(b & 15)]));
    }
    k
}

/// Encode; refuse (never cut) a record larger than `limit` bytes.
pub(crate) fn encode(record: &Record, limit: usize) -> Result<Vec<u8>, StoreError> {
    let out = encode_any(record)?;
    if out.len() > limit {
        return Err(StoreError::TooLarge);
    }
    Ok(out)
}

fn encode_any(record: &Record) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(64 + record.bindings.len() * 160);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    let body = postcard::to_allocvec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Encode within `limit` bytes, dropping the oldest tombstones when the record would not fit
/// otherwise (a removal is worth less than the record being written at all). Live bindings
/// are never dropped: when they alone do not fit, `TooLarge`.
pub(crate) fn encode_fitting(record: &mut Record, limit: usize) -> Result<Vec<u8>, StoreError> {
    let out = encode_any(record)?;
    if out.len() <= limit {
        return Ok(out);
    }
    let mut tombstones: Vec<(u64, usize)> = record
        .bindings
        .iter()
        .filter(|b| b.removed)
        .map(|b| (b.updated, postcard::to_allocvec(b).map_or(0, |v| v.len())))
        .collect();
    tombstones.sort_unstable();
    let mut over = out.len() - limit;
    let mut dropped = 0;
    for (_, size) in &tombstones {
        if over == 0 {
            break;
        }
        over = over.saturating_sub(*size);
        dropped += 1;
    }
    tracing::debug!(aor = %record.aor, dropped, "oldest tombstones dropped to fit the item limit");
    record.bound_tombstones(tombstones.len() - dropped);
    encode(record, limit)
}

/// Decode a value read from memcached, whatever AOR it names (the refill walks keys whose
/// AOR it does not know; it checks `key(prefix, record.aor)` against the key).
pub(crate) fn decode_any(value: &[u8]) -> Result<Record, StoreError> {
    let Some(rest) = value.strip_prefix(MAGIC.as_slice()) else {
        return Err(StoreError::Corrupt("not a sipfarm record".into()));
    };
    let (&version, body) = rest
        .split_first()
        .ok_or_else(|| StoreError::Corrupt("truncated record".into()))?;
    match version {
        1 => postcard::from_bytes::<v1::Record>(body)
            .map(Record::from)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
        2 => postcard::from_bytes(body).map_err(|e| StoreError::Corrupt(e.to_string())),
        v if v > FORMAT_VERSION => Err(StoreError::Newer(format!(
            "record format {v}, newer than this release's {FORMAT_VERSION}"
        ))),
        v => Err(StoreError::Corrupt(format!("unknown record format {v}"))),
    }
}

/// Decode a value read from memcached and check that it belongs to `aor`.
pub(crate) fn decode(value: &[u8], aor: &str) -> Result<Record, StoreError> {
    let record = decode_any(value)?;
    if record.aor != aor {
        // Someone's record all the same (a hash collision): never written over.
        return Err(StoreError::Newer("record belongs to another AOR".into()));
    }
    Ok(record)
}

/// Format 1, as release 1 wrote it (postcard has no optional trailing fields: each format
/// is its own type).
mod v1 {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub(super) struct Record {
        aor: String,
        bindings: Vec<Binding>,
    }

    #[derive(Deserialize)]
    struct Binding {
        contact: String,
        params: String,
        expires_at: u64,
        q: Option<u16>,
        call_id: String,
        cseq: u32,
        path: Vec<String>,
        source: String,
        instance_id: Option<String>,
        reg_id: Option<u32>,
        updated: u64,
        removed: bool,
    }

    impl From<Record> for super::Record {
        fn from(r: Record) -> Self {
            let bindings = r.bindings.into_iter().map(|b| crate::location::Binding {
                contact: b.contact,
                params: b.params,
                expires_at: b.expires_at,
                q: b.q,
                call_id: b.call_id,
                cseq: b.cseq,
                path: b.path,
                // A TCP binding of release 1 is reached over its connection only by the
                // instance that holds it, which release 1 did not record: the Contact.
                source: b.source,
                instance_id: b.instance_id,
                reg_id: b.reg_id,
                updated: b.updated,
                removed: b.removed,
                flow: None,
            });
            super::Record {
                aor: r.aor,
                bindings: bindings.collect(),
            }
        }
    }

    #[cfg(test)]
    pub(super) fn sample() -> Vec<u8> {
        // What release 1 wrote for one binding (postcard of the fields above).
        #[derive(serde::Serialize)]
        struct B<'a>(
            &'a str,
            &'a str,
            u64,
            Option<u16>,
            &'a str,
            u32,
            Vec<String>,
            &'a str,
        );
        type Rest<'a> = (Option<&'a str>, Option<u32>, u64, bool);
        #[derive(serde::Serialize)]
        struct R<'a>(&'a str, Vec<(B<'a>, Rest<'a>)>);
        let b = B(
            "sip:a@h",
            "",
            1_900_000_000,
            None,
            "c",
            3,
            vec![],
            "udp:127.0.0.1:5070",
        );
        let body =
            postcard::to_allocvec(&R("a@example.test", vec![(b, (None, Some(1), 9, false))]));
        let mut out = b"SF\x01".to_vec();
        out.extend(body.expect("encodes"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Binding;

    fn binding(contact: &str) -> Binding {
        Binding {
            contact: contact.into(),
            params: ";+sip.instance=\"<urn:uuid:1>\"".into(),
            expires_at: 1_900_000_000,
            q: Some(500),
            call_id: "c".into(),
            cseq: 7,
            path: vec!["<sip:edge;lr>".into()],
            source: "udp:127.0.0.1:5070".into(),
            instance_id: Some("<urn:uuid:1>".into()),
            reg_id: Some(1),
            updated: 5,
            removed: false,
            flow: Some(crate::location::Flow {
                closed: false,
                owner: "sip:127.0.0.1:5060;transport=tcp".into(),
                nat: true,
            }),
        }
    }

    #[test]
    fn round_trip_and_checks() {
        let r = Record {
            aor: "bob@example.test".into(),
            bindings: vec![binding("sip:bob@127.0.0.1:5070"), binding("sip:b@[::1]")],
        };
        let v = encode(&r, 1 << 20).unwrap();
        assert_eq!(decode(&v, "bob@example.test").unwrap(), r);
        assert!(decode(&v, "eve@example.test").is_err());
        assert!(decode(b"junk", "bob@example.test").is_err());
        assert!(decode(&v[..v.len() / 2], "bob@example.test").is_err());
        let mut future = v.clone();
        future[2] = 9;
        assert!(decode(&future, "bob@example.test").is_err());
        assert_eq!(encode(&r, 10).unwrap_err(), StoreError::TooLarge);
    }

    #[test]
    fn tombstones_make_room_live_bindings_do_not() {
        let mut r = Record {
            aor: "bob@example.test".into(),
            bindings: vec![binding("sip:desk@h"), binding("sip:mobile@h")],
        };
        let live = encode(&r, 1 << 20).unwrap().len();
        for i in 0..200 {
            let mut t = binding(&format!("sip:{}@h", "x".repeat(100) + &i.to_string()));
            (t.removed, t.updated) = (true, i);
            r.bindings.push(t);
        }
        let limit = live + 2000;
        assert_eq!(encode(&r, limit).unwrap_err(), StoreError::TooLarge);
        let v = encode_fitting(&mut r, limit).unwrap();
        assert!(
            v.len() <= limit && v.len() > limit - 300,
            "{} of {limit}",
            v.len()
        );
        assert_eq!(decode(&v, "bob@example.test").unwrap(), r);
        assert_eq!(r.bindings.iter().filter(|b| !b.removed).count(), 2);
        // The newest tombstones are the ones kept.
        assert!(r.bindings.iter().any(|b| b.updated == 199 && b.removed));
        assert!(!r.bindings.iter().any(|b| b.updated == 0 && b.removed));
        assert_eq!(
            encode_fitting(&mut r, live - 1).unwrap_err(),
            StoreError::TooLarge
        );
    }

    #[test]
    fn format_1_is_still_read() {
        let r = decode(&v1::sample(), "a@example.test").unwrap();
        assert_eq!(r.bindings.len(), 1);
        let b = &r.bindings[0];
        assert_eq!(
            (b.contact.as_str(), b.cseq, b.reg_id),
            ("sip:a@h", 3, Some(1))
        );
        assert_eq!(
            (b.source.as_str(), b.updated, &b.flow),
            ("udp:127.0.0.1:5070", 9, &None)
        );
    }

    #[test]
    fn keys_are_safe() {
        let k = key("sipfarm:", "\r\nflush_all\r\n delete x@y");
        assert_eq!(k.len(), 8 + 32);
        assert!(k.bytes().all(|b| b.is_ascii_graphic()));
        assert_ne!(key("p:", "a@b"), key("p:", "b@b"));
    }
}
