//! HTTP Digest as SIP uses it: RFC 3261 22.4 (the Digest scheme in `Authorization` and
//! `Proxy-Authorization`, 25.1 quoted strings), RFC 7616 3.3 (the challenge), 3.4 and 3.4.1
//! (the response with qop=auth) and RFC 8760 (SHA-256 for SIP, MD5 kept for the phones that
//! know nothing else).
//!
//! Why this file: the registrar and the proxy challenge requests for our domains; here the
//! credentials are only parsed, computed and compared, without state. Replays are refused
//! by the nonce (`nonce.rs`, valid on every instance) together with the nonce-count, which is
//! why only qop=auth is accepted: without a qop there is no nonce-count to check.

use crate::sip::header::split_unquoted;
use crate::sip::is_token;
use md5::Md5;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt::Write as _;
use subtle::ConstantTimeEq;

/// The longest `Authorization` / `Proxy-Authorization` value read; longer ones are refused
/// before any work.
pub(crate) const MAX_VALUE: usize = 4096;
/// The longest value of one parameter (as written, quotes included).
pub(crate) const MAX_PARAM: usize = 1024;

/// The digest algorithms we compute (RFC 7616 3.3, RFC 8760 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The name as written in a challenge.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// From the `algorithm` parameter, case-insensitive; absent means MD5 (RFC 3261 22.4,
    /// RFC 7616 3.3). `None` for algorithms we do not support (the `-sess` variants too).
    pub(crate) fn from_name(name: Option<&str>) -> Option<Algorithm> {
        match name {
            None => Some(Algorithm::Md5),
            Some(n) if n.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(n) if n.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            Some(_) => None,
        }
    }

    /// H(parts joined by ':'), raw bytes.
    fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Algorithm::Md5 => run::<Md5>(parts),
            Algorithm::Sha256 => run::<Sha256>(parts),
        }
    }

    /// H(parts joined by ':'), lowercase hex.
    fn hash_hex(self, parts: &[&str]) -> String {
        let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        hex(&self.hash(&bytes))
    }
}

/// The parameters of one `Digest` credentials value (RFC 7616 3.4). Values are unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) realm: String,
    pub(crate) nonce: String,
    pub(crate) uri: String,
    pub(crate) response: String,
    pub(crate) algorithm: Algorithm,
    pub(crate) qop: Option<String>,
    /// The nonce-count as a number (for the replay check).
    pub(crate) nc: Option<u32>,
    /// The nonce-count exactly as the client wrote it (8 hex digits): the response is
    /// computed over this text.
    pub(crate) nc_hex: Option<String>,
    pub(crate) cnonce: Option<String>,
    pub(crate) opaque: Option<String>,
}

/// Parse an `Authorization` or `Proxy-Authorization` value: `Digest k=v, k="v", ...`.
/// The scheme is case-insensitive; other schemes, malformed or duplicate parameters, missing
/// fields, unsupported algorithms and oversized values are errors. Unknown parameters are
/// ignored.
pub(crate) fn parse(value: &str) -> Result<Credentials, &'static str> {
    if value.len() > MAX_VALUE {
        return Err("credentials too long");
    }
    let rest = strip_scheme(value)?;
    let pieces = split_unquoted(rest, b',').map_err(|_| "unterminated quoted string")?;
    let mut fields = Fields::default();
    let mut seen = HashSet::new();
    for piece in pieces {
        let piece = piece.trim();
        if piece.is_empty() {
            continue; // RFC 7230 7: empty list elements are tolerated
        }
        let (name, raw) = piece.split_once('=').ok_or("parameter without a value")?;
        let (name, raw) = (name.trim(), raw.trim());
        if !is_token(name) {
            return Err("bad parameter name");
        }
        let name = name.to_ascii_lowercase();
        let value = param_value(raw)?;
        fields.set(&name, value);
        if !seen.insert(name) {
            return Err("duplicate parameter");
        }
    }
    fields.finish()
}

/// The text after `Digest` and the whitespace that must follow it.
fn strip_scheme(value: &str) -> Result<&str, &'static str> {
    let value = value.trim_start();
    let end = value
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(value.len());
    if !value[..end].eq_ignore_ascii_case("Digest") {
        return Err("not Digest credentials");
    }
    Ok(&value[end..])
}

/// A parameter value: a quoted string (RFC 3261 25.1, quoted pairs undone) or a bare value
/// (a token; `:`, `/`, `@` and the like tolerated for clients that leave the uri unquoted).
fn param_value(raw: &str) -> Result<String, &'static str> {
    if raw.len() > MAX_PARAM {
        return Err("parameter too long");
    }
    if raw.starts_with('"') {
        return quoted(raw);
    }
    let bare_ok = !raw.is_empty()
        && raw
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"');
    if bare_ok {
        Ok(raw.to_owned())
    } else {
        Err("bad parameter value")
    }
}

/// A quoted string that must end at the closing quote; control characters (but tab) refused.
fn quoted(raw: &str) -> Result<String, &'static str> {
    let inner = raw.strip_prefix('"').ok_or("bad quoted string")?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' if chars.as_str().is_empty() => return Ok(out),
            '"' => return Err("text after a quoted string"),
            '\\' => match chars.next() {
                Some(n) if !n.is_control() || n == '\t' => out.push(n),
                _ => return Err("bad quoted pair"),
            },
            c if c.is_control() && c != '\t' => return Err("control character in a value"),
            c => out.push(c),
        }
    }
    Err("unterminated quoted string")
}

/// The parameters we know, as they are found.
#[derive(Default)]
struct Fields {
    username: Option<String>,
    realm: Option<String>,
    nonce: Option<String>,
    uri: Option<String>,
    response: Option<String>,
    algorithm: Option<String>,
    qop: Option<String>,
    nc: Option<String>,
    cnonce: Option<String>,
    opaque: Option<String>,
}

impl Fields {
    fn set(&mut self, name: &str, value: String) {
        let slot = match name {
            "username" => &mut self.username,
            "realm" => &mut self.realm,
            "nonce" => &mut self.nonce,
            "uri" => &mut self.uri,
            "response" => &mut self.response,
            "algorithm" => &mut self.algorithm,
            "qop" => &mut self.qop,
            "nc" => &mut self.nc,
            "cnonce" => &mut self.cnonce,
            "opaque" => &mut self.opaque,
            _ => return,
        };
        *slot = Some(value);
    }

    fn finish(self) -> Result<Credentials, &'static str> {
        let algorithm =
            Algorithm::from_name(self.algorithm.as_deref()).ok_or("unsupported algorithm")?;
        let nc = match &self.nc {
            Some(text) => Some(parse_nc(text)?),
            None => None,
        };
        if self.qop.is_some() && (nc.is_none() || self.cnonce.is_none()) {
            return Err("qop without nc and cnonce");
        }
        Ok(Credentials {
            username: self.username.ok_or("no username")?,
            realm: self.realm.ok_or("no realm")?,
            nonce: self.nonce.ok_or("no nonce")?,
            uri: self.uri.ok_or("no uri")?,
            response: self.response.ok_or("no response")?,
            algorithm,
            qop: self.qop,
            nc,
            nc_hex: self.nc,
            cnonce: self.cnonce,
            opaque: self.opaque,
        })
    }
}

/// `nc-value = 8LHEX` (RFC 7616 3.4; upper case tolerated).
fn parse_nc(text: &str) -> Result<u32, &'static str> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("nc is not 8 hex digits");
    }
    u32::from_str_radix(text, 16).map_err(|_| "nc is not 8 hex digits")
}

/// HA1 = H(username:realm:password), raw digest bytes (RFC 7616 3.4.2).
pub(crate) fn ha1(algorithm: Algorithm, user: &str, realm: &str, password: &str) -> Vec<u8> {
    algorithm.hash(&[user.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Check the response of qop=auth credentials against `ha1_hex` (RFC 7616 3.4.1):
/// `H(HA1:nonce:nc:cnonce:qop:H(method:uri))`, compared in constant time (hex of either
/// case). Credentials without a qop, or with another qop, are refused. Checking the nonce,
/// the nonce-count, the realm and the uri against the request is the caller's work.
pub(crate) fn verify(creds: &Credentials, method: &str, ha1_hex: &str) -> bool {
    let (Some(qop), Some(cnonce)) = (&creds.qop, &creds.cnonce) else {
        return false;
    };
    if !qop.eq_ignore_ascii_case("auth") {
        return false;
    }
    let nc = match (&creds.nc_hex, creds.nc) {
        (Some(text), _) => text.clone(),
        (None, Some(n)) => format!("{n:08x}"),
        (None, None) => return false,
    };
    let alg = creds.algorithm;
    let ha1 = ha1_hex.to_ascii_lowercase();
    let ha2 = alg.hash_hex(&[method, &creds.uri]);
    let expected = alg.hash_hex(&[&ha1, &creds.nonce, &nc, cnonce, qop, &ha2]);
    let got = creds.response.to_ascii_lowercase();
    expected.as_bytes().ct_eq(got.as_bytes()).into()
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` value (RFC 7616 3.3), always with
/// qop="auth"; `stale=true` when the credentials were right but the nonce had expired.
/// `"` and `\` are escaped; control characters, which have no place in a header, are dropped.
pub(crate) fn challenge(realm: &str, nonce: &str, algorithm: Algorithm, stale: bool) -> String {
    let mut out = format!(
        "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"",
        escape(realm),
        escape(nonce),
        algorithm.name()
    );
    if stale {
        out.push_str(", stale=true");
    }
    out
}

/// The inside of a quoted string.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    /// RFC 7616 3.9.1, as the client sends it.
    fn rfc_value(algorithm: &str, response: &str) -> String {
        format!(
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
             uri=\"/dir/index.html\", algorithm={algorithm}, nonce=\"{RFC_NONCE}\", \
             nc=00000001, cnonce=\"{RFC_CNONCE}\", qop=auth, response=\"{response}\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        )
    }

    fn rfc_check(alg: Algorithm, response: &str) {
        let creds = parse(&rfc_value(alg.name(), response)).unwrap();
        assert_eq!(creds.algorithm, alg);
        assert_eq!(creds.nc, Some(1));
        let ha1 = hex(&ha1(
            alg,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        ));
        assert!(verify(&creds, "GET", &ha1));
        assert!(!verify(&creds, "POST", &ha1));
        let upper = parse(&rfc_value(alg.name(), &response.to_uppercase())).unwrap();
        assert!(verify(&upper, "GET", &ha1.to_uppercase()));
        let wrong = hex(&ha1_for(alg, "Circle of life"));
        assert!(!verify(&creds, "GET", &wrong));
    }

    fn ha1_for(alg: Algorithm, password: &str) -> Vec<u8> {
        ha1(alg, "Mufasa", "http-auth@example.org", password)
    }

    #[test]
    fn rfc7616_md5() {
        rfc_check(Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(
            hex(&ha1_for(Algorithm::Md5, "Circle of Life")),
            "3d78807defe7de2157e2b0b6573a855f"
        );
    }

    #[test]
    fn rfc7616_sha256() {
        rfc_check(
            Algorithm::Sha256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        );
    }

    /// A REGISTER, the expected values computed outside this code (Python's hashlib).
    #[test]
    fn sip_register() {
        let value = |alg: &str, resp: &str| {
            format!(
                "digest USERNAME=\"alice\",realm=\"example.com\",nonce=\"0000019a2b3c4d5e1122334455667788\",\
                 uri=\"sip:example.com\",response=\"{resp}\",algorithm={alg},cnonce=\"8d2b1f0e\",\
                 qop=auth,nc=0000000a,x-unknown=\"ignored, really\""
            )
        };
        let cases = [
            (Algorithm::Md5, "394a5edbb7fa707f5f6669a94fdee401"),
            (
                Algorithm::Sha256,
                "05a2e8bce77342dc9350072aedae70d91a4d84e8e2cfa639d16b1e3266996723",
            ),
        ];
        for (alg, resp) in cases {
            let creds = parse(&value(alg.name(), resp)).unwrap();
            assert_eq!(creds.nc, Some(10));
            let h = hex(&ha1(alg, "alice", "example.com", "wonderland"));
            assert!(verify(&creds, "REGISTER", &h), "{alg:?}");
            assert!(!verify(&creds, "INVITE", &h));
        }
        assert_eq!(
            hex(&ha1(Algorithm::Md5, "alice", "example.com", "wonderland")),
            "93dfce8dfebfae8af4a726982429d23a"
        );
    }

    #[test]
    fn without_qop_is_refused() {
        let v = "Digest username=\"alice\", realm=\"example.com\", nonce=\"n\", \
                 uri=\"sip:example.com\", response=\"394a5edbb7fa707f5f6669a94fdee401\"";
        let creds = parse(v).unwrap();
        assert_eq!(creds.algorithm, Algorithm::Md5);
        assert!(!verify(
            &creds,
            "REGISTER",
            "93dfce8dfebfae8af4a726982429d23a"
        ));
        let int = format!("{v}, qop=auth-int, nc=00000001, cnonce=\"c\"");
        assert!(!verify(&parse(&int).unwrap(), "REGISTER", "00"));
        assert_eq!(
            parse(&format!("{v}, qop=auth")),
            Err("qop without nc and cnonce")
        );
    }

    #[test]
    fn quoted_pairs_and_spacing() {
        let c = parse(
            "  Digest\tusername = \"a\\\"b\\\\c\" ,realm=\"r, with comma\",,nonce=n,uri=sip:x@y;p=1,\
             response=\"\",algorithm=sha-256",
        )
        .unwrap();
        assert_eq!(c.username, "a\"b\\c");
        assert_eq!(c.realm, "r, with comma");
        assert_eq!(c.uri, "sip:x@y;p=1");
        assert_eq!(c.algorithm, Algorithm::Sha256);
    }

    #[test]
    fn hostile_inputs() {
        let ok = "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"";
        assert!(parse(ok).is_ok());
        let bad = [
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            "Digestusername=\"a\"",
            "",
            "Digest",
            "Digest username=\"a, realm=\"r\"",
            "Digest username=\"a\" \"b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"",
            "Digest username=\"a\\",
            "Digest username",
            "Digest =x",
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\"",
            "Digest username=\"a\nb\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"",
        ];
        for v in bad {
            assert!(parse(v).is_err(), "{v:?}");
        }
        for extra in [
            ", username=\"b\"",
            ", USERNAME=\"b\"",
            ", x=1, x=2",
            ", algorithm=MD5-sess",
            ", algorithm=SHA-512-256",
            ", nc=1",
            ", nc=0000000g",
            ", nc=+0000001",
            ", realm=",
        ] {
            assert!(parse(&format!("{ok}{extra}")).is_err(), "{extra:?}");
        }
        let huge = format!("{ok}, x=\"{}\"", "a".repeat(MAX_VALUE));
        assert_eq!(parse(&huge), Err("credentials too long"));
        let long_param = format!("{ok}, x=\"{}\"", "a".repeat(MAX_PARAM));
        assert_eq!(parse(&long_param), Err("parameter too long"));
        let many_commas = format!("Digest {}", ",".repeat(MAX_VALUE - 7));
        assert!(parse(&many_commas).is_err());
        assert!(parse("Digest \u{e9}=\"x\"").is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(
            challenge("example.com", "abc", Algorithm::Sha256, false),
            "Digest realm=\"example.com\", nonce=\"abc\", algorithm=SHA-256, qop=\"auth\""
        );
        assert_eq!(
            challenge("a\"b\\c\r\n", "n", Algorithm::Md5, true),
            "Digest realm=\"a\\\"b\\\\c\", nonce=\"n\", algorithm=MD5, qop=\"auth\", stale=true"
        );
        assert_eq!(Algorithm::from_name(None), Some(Algorithm::Md5));
        assert_eq!(Algorithm::from_name(Some("md5")), Some(Algorithm::Md5));
        assert_eq!(Algorithm::from_name(Some("SHA-256-sess")), None);
    }
}
