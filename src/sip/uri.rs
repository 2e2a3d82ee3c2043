//! URIs: typed parsing through the `sip-uri` crate, plus the two rules this element adds.
//!
//! RFC 3261 19.1.1 (SIP/SIPS URI), 19.1.4 (comparison: [`same_contact`]), 10.3 step 5 (the
//! canonical address-of-record: [`Aor`]); RFC 3966 (tel:). rsip 0.4 read `tel:+1234` as a
//! host named `tel`, refused IPv6 hosts and dropped URI headers, so URIs go through
//! `sip-uri`, a lenient RFC 3261/3966 parser.

use sip_uri::{SipUri, Uri, UriEquivalence, UriParse};

/// The scheme of a URI, lowercased (`sip`, `sips`, `tel`, ...), if it has one.
pub fn scheme(uri: &str) -> Option<String> {
    let colon = uri.find(':')?;
    let s = &uri[..colon];
    let ok = !s.is_empty()
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    ok.then(|| s.to_ascii_lowercase())
}

/// A socket address as the host:port of a URI or Via (IPv6 in brackets).
pub fn host_port(addr: std::net::SocketAddr) -> String {
    match addr {
        std::net::SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Parse a SIP or SIPS URI.
pub fn parse_sip(uri: &str) -> Option<SipUri> {
    match Uri::parse(uri).ok()? {
        Uri::Sip(s) => Some(s),
        _ => None,
    }
}

/// Host of a SIP URI, lowercased, IPv6 without brackets.
pub fn host(uri: &SipUri) -> Option<String> {
    let h = uri.host()?.to_string().to_ascii_lowercase();
    Some(h.trim_start_matches('[').trim_end_matches(']').to_owned())
}

/// The host as an IP address (an IPv6 reference without its brackets); None for a name.
pub fn host_ip(uri: &SipUri) -> Option<std::net::IpAddr> {
    host(uri)?.parse().ok()
}

/// RFC 3261 19.1.4 equality of two contact URIs (used to find an existing binding).
pub fn same_contact(a: &str, b: &str) -> bool {
    // The common case (a refresh names the contact exactly as before) needs no parsing.
    if a == b {
        return true;
    }
    match (Uri::parse(a), Uri::parse(b)) {
        (Ok(a), Ok(b)) => a.equivalent(&b),
        _ => a == b,
    }
}

/// A canonical address-of-record: `user@domain`, escapes undone and re-escaped one way,
/// host lowercased, URI parameters, port, password and scheme dropped (10.3 step 5). Keyed on
/// user and domain as Kamailio's usrloc does, so `sip:bob@x` and `sip:bob@x:5060` are one user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Aor(String);

impl Aor {
    /// From the URI of a To header. Only SIP and SIPS URIs name an AOR (RFC 4475 unksm2).
    pub fn from_uri(uri: &str) -> Result<Aor, &'static str> {
        if let Some(aor) = Self::simple(uri) {
            return Ok(aor);
        }
        match scheme(uri).as_deref() {
            Some("sip") | Some("sips") => {}
            _ => return Err("Address-of-record must be a SIP or SIPS URI"),
        }
        let parsed = parse_sip(uri).ok_or("Bad address-of-record URI")?;
        let domain = host(&parsed).ok_or("Address-of-record without host")?;
        // The userinfo as written (user-params included, RFC 4475 semiuri), password removed.
        let rest = &uri[uri.find(':').map_or(0, |c| c + 1)..];
        let end = rest.find('?').unwrap_or(rest.len());
        let user = match rest[..end].rfind('@') {
            Some(at) => {
                let info = &rest[..at];
                info.split_once(':').map_or(info, |(u, _)| u)
            }
            None => "",
        };
        Ok(Aor(format!("{}@{}", canonical_user(user), domain)))
    }

    /// The common form `sip:user@host[:port][;params]` with a plain user (unreserved
    /// characters only, no escapes) and a host name or IPv4 address, without a parser: the
    /// canonical form is then the user and the lowercased host. Anything else: None.
    fn simple(uri: &str) -> Option<Aor> {
        let rest = uri
            .strip_prefix("sip:")
            .or_else(|| uri.strip_prefix("sips:"))?;
        let (user, hostpart) = rest.split_once('@')?;
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_.!~*'()+".contains(&b);
        if user.is_empty() || !user.bytes().all(plain) {
            return None;
        }
        let end = hostpart.find([';', '?']).unwrap_or(hostpart.len());
        let (host, port) = match hostpart[..end].split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (&hostpart[..end], None),
        };
        let host_ok = !host.is_empty()
            && !host.starts_with(['.', '-'])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        let port_ok =
            port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
        if !host_ok || !port_ok {
            return None;
        }
        let mut s = String::with_capacity(user.len() + 1 + host.len());
        s.push_str(user);
        s.push('@');
        s.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        Some(Aor(s))
    }

    /// From an already canonical string (as stored); no checks.
    pub fn from_canonical(s: &str) -> Aor {
        Aor(s.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

impl std::fmt::Display for Aor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sip:{}", self.0)
    }
}

/// Undo every valid `%HH` escape (a `%` not followed by two hex digits stays as it is).
pub fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Undo every `%HH` escape, then escape again exactly the octets outside RFC 3261's
/// `unreserved / user-unreserved`, with upper-case hex: `%61lice` == `alice`, `%0d` == `%0D`.
pub fn canonical_user(user: &str) -> String {
    let raw = percent_decode(user.as_bytes());
    let mut out = String::with_capacity(raw.len());
    for b in raw {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aor_canonical_form() {
        let a = Aor::from_uri("sip:bob@example.test").unwrap();
        assert_eq!(
            a,
            Aor::from_uri("sip:bob@EXAMPLE.test:5060;transport=tcp").unwrap()
        );
        assert_eq!(a, Aor::from_uri("sips:%62ob@example.test").unwrap());
        assert_eq!(a, Aor::from_uri("sip:bob:secret@example.test").unwrap());
        assert_ne!(a, Aor::from_uri("sip:Bob@example.test").unwrap());
        assert_eq!(
            Aor::from_uri("sip:%0d%0Aflush_all@example.test")
                .unwrap()
                .as_str(),
            "%0D%0Aflush_all@example.test"
        );
        assert_eq!(
            Aor::from_uri("sip:user;par=u%40example.net@example.com")
                .unwrap()
                .as_str(),
            "user;par=u%40example.net@example.com"
        );
        assert_eq!(a.domain(), "example.test");
        assert!(Aor::from_uri("tel:+1234").is_err());
        assert!(Aor::from_uri("isbn:2983792873").is_err());
        assert_eq!(Aor::from_uri("sip:[::1]").unwrap().as_str(), "@::1");
    }

    #[test]
    fn fast_path_agrees_with_the_parser() {
        for u in [
            "sip:bob@example.test",
            "sip:Bob.Smith-1@EXAMPLE.Test:5060;transport=tcp",
            "sips:a_b~c@10.0.0.1",
            "sip:x@host?subject=1",
        ] {
            let fast = Aor::simple(u).unwrap();
            let rest = &u[u.find(':').unwrap() + 1..];
            let user = &rest[..rest.find('@').unwrap()];
            let host = host(&parse_sip(u).unwrap()).unwrap();
            assert_eq!(
                fast.as_str(),
                format!("{}@{host}", canonical_user(user)),
                "{u}"
            );
        }
        for u in [
            "sip:%61@x",
            "sip:a@[::1]",
            "tel:+1",
            "sip:a;p=1@x",
            "sip:@x",
            "sip:a@-x",
        ] {
            assert!(Aor::simple(u).is_none(), "{u}");
        }
    }

    #[test]
    fn contact_equality() {
        assert!(same_contact(
            "sip:a@h:5070;transport=TCP",
            "sip:a@H:5070;transport=tcp"
        ));
        assert!(!same_contact("sip:a@h:5070", "sip:a@h"));
        assert!(same_contact("sip:%61@h", "sip:a@h"));
    }

    #[test]
    fn schemes() {
        assert_eq!(scheme("SIP:a@b").as_deref(), Some("sip"));
        assert_eq!(scheme("soap.beep://x").as_deref(), Some("soap.beep"));
        assert_eq!(scheme("<sip:a>"), None);
    }
}
