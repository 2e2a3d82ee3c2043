//! Stateless nonces that every instance of the farm accepts: RFC 7616 3.3 (the nonce is
//! opaque to the client, its content is up to the server; `stale=true` for an expired one)
//! and 5.4 (limited lifetime; nonce-count against replays).
//!
//! Why stateless: the REGISTER answering a 401 may reach any instance, so a nonce carries
//! its own proof instead of a table entry: `hex(issue time ms, u64 BE) + hex(8 random bytes)
//! + hex(first 16 bytes of HMAC-SHA256(secret, time || random))`, 64 lowercase hex digits.
//! The secret is shared by the farm through a file; during a rotation the previous secret is
//! still accepted (second line). Instances' clocks may differ by `drift`.

use super::digest::hex;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

const BODY_LEN: usize = 16; // 8 bytes of time, 8 random
const MAC_LEN: usize = 16;
/// The length of every nonce we issue (hex digits).
pub(crate) const NONCE_LEN: usize = 2 * (BODY_LEN + MAC_LEN);
/// Bounds on one secret, in bytes.
pub(crate) const MIN_SECRET: usize = 16;
pub(crate) const MAX_SECRET: usize = 4096;
/// The largest secret file read (two secrets and comments).
const MAX_SECRET_FILE: u64 = 64 * 1024;
/// The clock difference allowed between instances.
pub(crate) const DRIFT: Duration = Duration::from_secs(5);

/// Read the secret file: one or two non-empty lines (the current secret, then optionally the
/// previous one), `#` comment lines and blank lines ignored, surrounding whitespace trimmed.
/// Errors name the file and line; the secret itself is never printed.
pub(crate) fn load_secrets(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let name = path.display();
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE + 1).read_to_end(&mut raw))
        .map_err(|e| format!("{name}: {e}"))?;
    if raw.len() as u64 > MAX_SECRET_FILE {
        return Err(format!("{name}: larger than {MAX_SECRET_FILE} bytes"));
    }
    let mut secrets = Vec::new();
    for (i, line) in raw.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let n = i + 1;
        if secrets.len() == 2 {
            return Err(format!(
                "{name}: line {n}: a third secret (the file holds the current secret and at most the previous one)"
            ));
        }
        check_secret(line).map_err(|why| format!("{name}: line {n}: {why}"))?;
        secrets.push(line.to_vec());
    }
    if secrets.is_empty() {
        return Err(format!("{name}: no secret (one non-comment line expected)"));
    }
    Ok(secrets)
}

fn check_secret(secret: &[u8]) -> Result<(), String> {
    match secret.len() {
        n if n < MIN_SECRET => Err(format!("secret of {n} bytes, at least {MIN_SECRET} needed")),
        n if n > MAX_SECRET => Err(format!("secret of {n} bytes, at most {MAX_SECRET} allowed")),
        _ => Ok(()),
    }
}

/// What a received nonce is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceState {
    /// Ours and young enough.
    Valid,
    /// Ours but expired: challenge again with `stale=true` (RFC 7616 3.3).
    Stale,
    /// Not ours, damaged, or dated in the future.
    Invalid,
}

/// The keys that issue and check nonces; the same secrets give the same answers on every
/// instance.
#[derive(Clone)]
pub(crate) struct NonceKeys {
    current: HmacSha256,
    previous: Option<HmacSha256>,
    lifetime: Duration,
    drift: Duration,
}

impl std::fmt::Debug for NonceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKeys")
            .field("secrets", &(1 + usize::from(self.previous.is_some())))
            .field("lifetime", &self.lifetime)
            .field("drift", &self.drift)
            .finish_non_exhaustive()
    }
}

impl NonceKeys {
    /// `secrets` as `load_secrets` returns them (current first, optionally the previous);
    /// `lifetime` is how long a nonce stays valid. Drift between instances: [`DRIFT`].
    pub(crate) fn new(secrets: Vec<Vec<u8>>, lifetime: Duration) -> Result<NonceKeys, String> {
        let mut keys = Vec::with_capacity(2);
        if secrets.len() > 2 {
            return Err("more than two nonce secrets".into());
        }
        for s in &secrets {
            check_secret(s).map_err(|why| format!("nonce secret: {why}"))?;
            keys.push(HmacSha256::new_from_slice(s).map_err(|_| "nonce secret: unusable key")?);
        }
        let mut keys = keys.into_iter();
        let current = keys.next().ok_or("no nonce secret")?;
        Ok(NonceKeys {
            current,
            previous: keys.next(),
            lifetime,
            drift: DRIFT,
        })
    }

    /// A fresh nonce issued at `now_ms` (Unix milliseconds), under the current secret.
    pub(crate) fn issue(&self, now_ms: u64) -> String {
        let mut body = [0u8; BODY_LEN];
        body[..8].copy_from_slice(&now_ms.to_be_bytes());
        body[8..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
        let mut mac = self.current.clone();
        mac.update(&body);
        let tag = mac.finalize().into_bytes();
        format!("{}{}", hex(&body), hex(&tag[..MAC_LEN]))
    }

    /// Check a nonce received at `now_ms`: the format and the MAC (under either secret, in
    /// constant time) first, then its age.
    pub(crate) fn check(&self, nonce: &str, now_ms: u64) -> NonceState {
        let Some(raw) = decode(nonce) else {
            return NonceState::Invalid;
        };
        let (body, tag) = raw.split_at(BODY_LEN);
        let signed_by = |key: &HmacSha256| {
            let mut mac = key.clone();
            mac.update(body);
            mac.verify_truncated_left(tag).is_ok()
        };
        if !signed_by(&self.current) && !self.previous.as_ref().is_some_and(signed_by) {
            return NonceState::Invalid;
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(&body[..8]);
        let issued = u64::from_be_bytes(time);
        let drift = millis(self.drift);
        if issued > now_ms.saturating_add(drift) {
            NonceState::Invalid
        } else if now_ms
            > issued
                .saturating_add(millis(self.lifetime))
                .saturating_add(drift)
        {
            NonceState::Stale
        } else {
            NonceState::Valid
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Our nonce format: exactly `NONCE_LEN` lowercase hex digits (upper case is refused so that
/// one nonce has one spelling, and one `nonce_id`).
fn decode(nonce: &str) -> Option<[u8; NONCE_LEN / 2]> {
    let bytes = nonce.as_bytes();
    if bytes.len() != NONCE_LEN {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; NONCE_LEN / 2];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A short stable id of a nonce, to key its nonce-count record: the MAC part of one of our
/// nonces (32 hex digits); for anything else, the first 32 hex digits of its SHA-256, so that
/// the id is always a short, safe key.
pub(crate) fn nonce_id(nonce: &str) -> String {
    match decode(nonce) {
        Some(_) => nonce[2 * BODY_LEN..].to_owned(),
        None => hex(&Sha256::digest(nonce.as_bytes())[..MAC_LEN]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_760_000_000_000;
    const LIFE: Duration = Duration::from_secs(300);

    fn keys(secrets: &[&str]) -> NonceKeys {
        let secrets = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        NonceKeys::new(secrets, LIFE).unwrap()
    }

    #[test]
    fn round_trip_and_expiry() {
        let k = keys(&["0123456789abcdef-current"]);
        let n = k.issue(NOW);
        assert_eq!(n.len(), NONCE_LEN);
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(n, k.issue(NOW), "random part");
        assert_eq!(k.check(&n, NOW), NonceState::Valid);
        let last = NOW + 300_000 + 5_000;
        assert_eq!(k.check(&n, last), NonceState::Valid);
        assert_eq!(k.check(&n, last + 1), NonceState::Stale);
        assert_eq!(k.check(&n, NOW - 5_000), NonceState::Valid, "within drift");
        assert_eq!(
            k.check(&n, NOW - 5_001),
            NonceState::Invalid,
            "future beyond drift"
        );
    }

    #[test]
    fn tampered_or_foreign() {
        let k = keys(&["0123456789abcdef-current"]);
        let n = k.issue(NOW);
        for i in [0, 17, 40, NONCE_LEN - 1] {
            let mut b = n.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            let t = String::from_utf8(b).unwrap();
            assert_eq!(k.check(&t, NOW), NonceState::Invalid, "byte {i}");
        }
        for bad in [
            "",
            &n[1..],
            format!("{n}0").as_str(),
            n.to_uppercase().as_str(),
            "z".repeat(NONCE_LEN).as_str(),
            "\u{e9}".repeat(NONCE_LEN / 2).as_str(),
        ] {
            assert_eq!(k.check(bad, NOW), NonceState::Invalid, "{bad:?}");
        }
        let other = keys(&["a completely unrelated secret"]);
        assert_eq!(other.check(&n, NOW), NonceState::Invalid);
    }

    #[test]
    fn another_instance_and_rotation() {
        let a = keys(&["0123456789abcdef-current"]);
        let b = keys(&["0123456789abcdef-current"]);
        let n = a.issue(NOW);
        assert_eq!(b.check(&n, NOW + 1000), NonceState::Valid);
        let rotated = keys(&["fedcba9876543210-next", "0123456789abcdef-current"]);
        assert_eq!(rotated.check(&n, NOW), NonceState::Valid);
        let fresh = rotated.issue(NOW);
        assert_eq!(a.check(&fresh, NOW), NonceState::Invalid);
        assert_eq!(rotated.check(&fresh, NOW), NonceState::Valid);
    }

    #[test]
    fn ids() {
        let k = keys(&["0123456789abcdef-current"]);
        let n = k.issue(NOW);
        assert_eq!(nonce_id(&n), &n[32..]);
        assert_eq!(nonce_id(&n), nonce_id(&n));
        assert_eq!(nonce_id("junk").len(), 32);
        assert_ne!(nonce_id("junk"), nonce_id("junk2"));
    }

    #[test]
    fn constructor_bounds() {
        assert!(NonceKeys::new(vec![], LIFE).is_err());
        assert!(NonceKeys::new(vec![b"short".to_vec()], LIFE).is_err());
        assert!(NonceKeys::new(vec![vec![b'x'; 16]; 3], LIFE).is_err());
        assert!(!format!("{:?}", keys(&["0123456789abcdef-current"])).contains("0123"));
    }

    #[test]
    fn secret_file() {
        let dir = std::env::temp_dir().join(format!(
            "sipfarm-nonce-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            load_secrets(&path)
        };
        let two =
            load("# rotated 2025-01-01\n  current-secret-0123456789 \n\nold-secret-0123456789\r\n");
        assert_eq!(
            two.unwrap(),
            vec![
                b"current-secret-0123456789".to_vec(),
                b"old-secret-0123456789".to_vec()
            ]
        );
        let short = load("# c\ntoo-short\n").unwrap_err();
        assert!(
            short.contains("line 2") && short.contains("at least 16"),
            "{short}"
        );
        assert!(!short.contains("too-short"), "the secret is never printed");
        let three = load("aaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbb\ncccccccccccccccc\n").unwrap_err();
        assert!(
            three.contains("line 3") && three.contains("third"),
            "{three}"
        );
        assert!(
            load("# only a comment\n\n")
                .unwrap_err()
                .contains("no secret")
        );
        assert!(
            load(&"x".repeat(5000))
                .unwrap_err()
                .contains("at most 4096")
        );
        let missing = load_secrets(&dir.join("absent")).unwrap_err();
        assert!(missing.contains("absent"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
