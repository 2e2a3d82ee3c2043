//! A digest client, the tests' own: RFC 3261 22.2 to 22.4 (401 / 407, `Authorization` and
//! `Proxy-Authorization`), RFC 7616 3.3 and 3.4 (the challenge, the response with qop=auth,
//! nc as 8 hex digits, cnonce) and RFC 8760 (SHA-256 for SIP, MD5 for older phones).
//! Challenges are read with the harness's reader (`Sip`, `split_list`) and responses are
//! computed with the md-5 and sha2 crates: nothing of sipfarm's `auth` is used.

use super::processes::unique;
use super::ua::{Resp, Sip, Ua, split_list};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// The realm of every test user: the domain the harness serves.
pub const REALM: &str = "example.test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Md5,
    Sha256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Md5 => "MD5",
            Alg::Sha256 => "SHA-256",
        }
    }

    /// From a challenge's `algorithm` (absent means MD5, RFC 7616 3.3).
    pub fn from_name(name: Option<&str>) -> Option<Alg> {
        match name {
            None => Some(Alg::Md5),
            Some(n) if n.eq_ignore_ascii_case("MD5") => Some(Alg::Md5),
            Some(n) if n.eq_ignore_ascii_case("SHA-256") => Some(Alg::Sha256),
            Some(_) => None,
        }
    }

    /// H(text), lowercase hex.
    pub fn hex(self, text: &str) -> String {
        let bytes = match self {
            Alg::Md5 => Md5::digest(text.as_bytes()).to_vec(),
            Alg::Sha256 => Sha256::digest(text.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// HA1 = H(user:realm:password) (RFC 7616 3.4.2).
pub fn ha1(alg: Alg, user: &str, realm: &str, password: &str) -> String {
    alg.hex(&format!("{user}:{realm}:{password}"))
}

/// One line of a users file as `sipfarm user add` writes it: `USER@DOMAIN md5:HA1 sha256:HA1`.
pub fn users_line(user: &str, password: &str) -> String {
    format!(
        "{user}@{REALM} md5:{} sha256:{}",
        ha1(Alg::Md5, user, REALM, password),
        ha1(Alg::Sha256, user, REALM, password)
    )
}

/// One challenge (`WWW-Authenticate` or `Proxy-Authenticate` value), parameters unquoted.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub scheme: String,
    /// (lowercased name, value) in order.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// `Digest k=v, k="v", ...`; None when it is not one.
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let end = value.find(char::is_whitespace)?;
        let scheme = value[..end].to_owned();
        let mut params = Vec::new();
        for piece in split_list(&value[end..]) {
            let (name, raw) = piece.split_once('=')?;
            params.push((name.trim().to_ascii_lowercase(), unquote(raw.trim())));
        }
        Some(Challenge { scheme, params })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn realm(&self) -> &str {
        self.param("realm").unwrap_or_default()
    }

    pub fn nonce(&self) -> &str {
        self.param("nonce").unwrap_or_default()
    }

    pub fn alg(&self) -> Option<Alg> {
        Alg::from_name(self.param("algorithm"))
    }

    /// The qop options offered (`qop="auth,auth-int"`).
    pub fn qops(&self) -> Vec<String> {
        self.param("qop")
            .unwrap_or_default()
            .split(',')
            .map(|q| q.trim().to_ascii_lowercase())
            .filter(|q| !q.is_empty())
            .collect()
    }

    pub fn is_stale(&self) -> bool {
        self.param("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true"))
    }

    /// The credentials answering this challenge for qop=auth (RFC 7616 3.4.1):
    /// response = H(HA1:nonce:nc:cnonce:auth:H(method:uri)).
    pub fn answer(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let alg = self
            .alg()
            .expect("a challenge for an algorithm the client knows");
        let nc = format!("{nc:08x}");
        let ha1 = ha1(alg, user, self.realm(), password);
        let ha2 = alg.hex(&format!("{method}:{uri}"));
        let response = alg.hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce()));
        let mut out = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"{cnonce}\"",
            self.realm(),
            self.nonce(),
            alg.name()
        );
        if let Some(opaque) = self.param("opaque") {
            out.push_str(&format!(", opaque=\"{opaque}\""));
        }
        out
    }
}

/// A quoted string's content (quoted pairs undone), or the bare value.
fn unquote(raw: &str) -> String {
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return raw.to_owned();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

/// The challenge header of a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`), and the
/// header that answers it.
pub fn headers_for(code: u16) -> (&'static str, &'static str) {
    match code {
        401 => ("WWW-Authenticate", "Authorization"),
        407 => ("Proxy-Authenticate", "Proxy-Authorization"),
        _ => panic!("{code} is not a challenge"),
    }
}

/// Every challenge of a 401 or 407, one per header line, in order.
pub fn challenges(msg: &str) -> Vec<Challenge> {
    let m = Sip::parse(msg);
    let (header, _) = headers_for(m.code().expect("a response"));
    m.lines(header)
        .iter()
        .map(|v| Challenge::parse(v).unwrap_or_else(|| panic!("not a challenge: {v}")))
        .collect()
}

/// The challenge for `alg`, panicking with the response when there is none.
pub fn challenge_for(msg: &str, alg: Alg) -> Challenge {
    challenges(msg)
        .into_iter()
        .find(|c| c.alg() == Some(alg))
        .unwrap_or_else(|| panic!("no {} challenge in:\n{msg}", alg.name()))
}

/// `msg` with one more header line, at the end of its header section.
pub fn with_header(msg: &str, name: &str, value: &str) -> String {
    let end = msg.find("\r\n\r\n").expect("a header section") + 2;
    format!("{}{name}: {value}\r\n{}", &msg[..end], &msg[end..])
}

/// A fresh client nonce.
pub fn cnonce() -> String {
    unique("cn")
}

/// A request sent the way a phone sends it: once without credentials (a 401 or 407 is
/// expected), then built again by `build` with the next CSeq, carrying the answer to the
/// `alg` challenge for `user`. `build(cseq)` must give the same request (same Call-ID) with
/// that CSeq and a new branch. Returns the challenge and the request to send, unsent (for a
/// request that is forwarded, whose answer comes from the callee).
pub fn authorize(
    ua: &Ua,
    to: SocketAddr,
    build: &dyn Fn(u32) -> String,
    (user, password): (&str, &str),
    alg: Alg,
) -> (Challenge, String) {
    let r = ua.request(to, &build(1));
    assert!(
        r.code == 401 || r.code == 407,
        "a challenge expected:\n{}",
        r.text
    );
    let (_, answer_header) = headers_for(r.code);
    let ch = challenge_for(&r.text, alg);
    let second = build(2);
    let m = Sip::parse(&second);
    let (method, uri) = (m.method().unwrap(), m.request_uri().unwrap());
    let creds = ch.answer(user, password, method, uri, 1, &cnonce());
    let authorized = with_header(&second, answer_header, &creds);
    (ch, authorized)
}

/// `authorize`, then the authorized request sent and its final answer awaited.
pub fn with_credentials(
    ua: &Ua,
    to: SocketAddr,
    build: &dyn Fn(u32) -> String,
    who: (&str, &str),
    alg: Alg,
) -> (Challenge, Resp) {
    let (ch, authorized) = authorize(ua, to, build, who, alg);
    let r = ua.request(to, &authorized);
    (ch, r)
}

/// REGISTER `user@example.test` with `contacts` through `to`, with credentials (the `alg`
/// challenge answered); the final answer.
pub fn register_auth(
    ua: &Ua,
    to: SocketAddr,
    (user, password): (&str, &str),
    alg: Alg,
    contacts: &[&str],
    expires: Option<u32>,
) -> Resp {
    let cid = unique("reg");
    let build = |cseq| ua.register(user, contacts, expires, &cid, cseq);
    with_credentials(ua, to, &build, (user, password), alg).1
}
