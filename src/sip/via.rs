//! Via values: RFC 3261 20.42 (syntax, LWS around `/`), 8.1.1.7 (branch and magic cookie),
//! 18.2.1 (`received`), RFC 3581 (`rport`).

use super::ParseError;
use super::header::{Param, param, parse_params};

pub const MAGIC_COOKIE: &str = "z9hG4bK";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper-case transport: UDP, TCP, TLS, SCTP, WS...
    pub transport: String,
    /// Host as written (IPv6 references keep their brackets).
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

impl Via {
    pub fn parse(v: &str) -> Result<Via, ParseError> {
        let bad = Err(ParseError::Bad("Bad Via"));
        // sent-protocol: three tokens separated by '/', LWS allowed around each.
        let mut parts = v.splitn(3, '/');
        let (Some(name), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return bad;
        };
        if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
            return bad;
        }
        let rest = rest.trim_start();
        let tend = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        let transport = &rest[..tend];
        if !super::is_token(transport) {
            return bad;
        }
        let rest = rest[tend..].trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i..]),
            None => (rest.trim(), ""),
        };
        let (host, port) = split_host_port(sent_by).ok_or(ParseError::Bad("Bad Via sent-by"))?;
        let params = parse_params(params)?;
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host: host.to_owned(),
            port,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        param(&self.params, name)
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// The host without IPv6 brackets.
    pub fn host_bare(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Split `host[:port]`, `[v6][:port]`. Hosts are hostnames, IPv4 or bracketed IPv6; white
/// space around the colon is tolerated (RFC 4475 wsinv).
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']')?;
        let host = &s[..=close];
        let rest = s[close + 1..].trim();
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p.trim()),
            None if rest.is_empty() => None,
            None => return None,
        };
        host[1..close].parse::<std::net::Ipv6Addr>().ok()?;
        (host, port)
    } else {
        match s.find(':') {
            Some(i) => (s[..i].trim(), Some(s[i + 1..].trim())),
            None => (s, None),
        }
    };
    if host.is_empty()
        || (!host.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return None;
    }
    let port = match port {
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(p.parse::<u16>().ok()?)
        }
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerant_forms() {
        let v = Via::parse(
            "SIP  /   2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  ",
        );
        // LWS around '=' is legal (RFC 3261 25.1 EQUAL); the unfolded value has it as spaces.
        let v = v.unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "spindle.example.com");
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        let v = Via::parse("SIP/2.0/UDP [::1]:5070;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(v.host_bare(), "::1");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.param("rport"), Some(None));
        assert!(Via::parse("SIP/2.0/UDP host;;,").is_err());
        assert!(Via::parse("SIP/2.0/UDP").is_err());
    }
}
