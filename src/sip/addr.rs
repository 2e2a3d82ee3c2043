//! name-addr / addr-spec values: From, To, Contact, Route, Record-Route, Path.
//!
//! RFC 3261 20.10 (a URI without `<>` ends at the first `;`: what follows are header
//! parameters, RFC 4475 cparam01) and 25.1 (display-name is tokens or a quoted string; RFC 4475
//! lwsdisp accepts no space before `<`, baddn/quotbal/badaspec refuse the rest).

use super::ParseError;
use super::header::{Param, param, parse_params};

/// One parsed address with its header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as written (quotes kept), if any.
    pub display: Option<String>,
    /// The URI text exactly as written, without the angle brackets.
    pub uri: String,
    /// Whether the URI was in `<>` (it must be when it holds `,`, `;` or `?`).
    pub bracketed: bool,
    /// Header parameters (`;tag=`, `;expires=`, `;q=` ...), the raw text after the URI.
    pub params_raw: String,
    pub params: Vec<Param>,
}

impl NameAddr {
    pub fn parse(v: &str) -> Result<NameAddr, ParseError> {
        let v = v.trim();
        let bad = |why| Err(ParseError::Bad(why));
        if let Some(lt) = find_angle(v)? {
            let display = v[..lt].trim();
            let display = if display.is_empty() {
                None
            } else if display.starts_with('"') {
                if display.len() < 2 || !display.ends_with('"') || display.ends_with("\\\"") {
                    return bad("Bad display name");
                }
                Some(display.to_owned())
            } else {
                if !display
                    .split([' ', '\t'])
                    .filter(|t| !t.is_empty())
                    .all(super::is_token)
                {
                    return bad("Bad display name");
                }
                Some(display.to_owned())
            };
            let rest = &v[lt + 1..];
            let Some(gt) = rest.find('>') else {
                return bad("Unterminated <");
            };
            let uri = &rest[..gt];
            if uri.is_empty() || uri.contains(char::is_whitespace) || !uri.contains(':') {
                return bad("Bad URI in <>");
            }
            let params_raw = rest[gt + 1..].trim();
            Ok(NameAddr {
                display,
                uri: uri.to_owned(),
                bracketed: true,
                params_raw: params_raw.to_owned(),
                params: parse_params(params_raw)?,
            })
        } else {
            // addr-spec: the URI ends at the first ';' and may hold no '?' or ','.
            let (uri, params_raw) = match v.find(';') {
                Some(i) => (v[..i].trim(), v[i..].trim()),
                None => (v, ""),
            };
            if uri.is_empty()
                || uri.contains(char::is_whitespace)
                || uri.contains(['?', ',', '"'])
                || !uri.contains(':')
            {
                return bad("Bad address");
            }
            Ok(NameAddr {
                display: None,
                uri: uri.to_owned(),
                bracketed: false,
                params_raw: params_raw.to_owned(),
                params: parse_params(params_raw)?,
            })
        }
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        param(&self.params, name)
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }
}

/// The SIP URI inside a Route, Record-Route or Path value, typed.
pub fn route_uri(value: &str) -> Option<sip_uri::SipUri> {
    NameAddr::parse(value)
        .ok()
        .and_then(|a| super::uri::parse_sip(&a.uri))
}

/// Position of the `<` that opens the URI, outside any quoted display name.
fn find_angle(v: &str) -> Result<Option<usize>, ParseError> {
    let bytes = v.as_bytes();
    let (mut i, mut quoted) = (0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => return Ok(Some(i)),
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err(ParseError::Bad("Unterminated quoted string"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let a = NameAddr::parse(r#""Bob \"B\"" <sip:bob@x;lr>;tag=12;expires=60"#).unwrap();
        assert_eq!(a.uri, "sip:bob@x;lr");
        assert_eq!(a.tag(), Some("12"));
        assert_eq!(a.param("expires"), Some(Some("60")));
        let a = NameAddr::parse("sip:bob@x;unknownparam").unwrap();
        assert_eq!(a.uri, "sip:bob@x");
        assert_eq!(a.param("unknownparam"), Some(None));
        let a = NameAddr::parse("caller<sip:caller@example.com>;tag=3").unwrap();
        assert_eq!(a.display.as_deref(), Some("caller"));
        assert_eq!(
            NameAddr::parse("<sip:[::1]:5070>").unwrap().uri,
            "sip:[::1]:5070"
        );
    }

    #[test]
    fn refused() {
        assert!(NameAddr::parse(r#""Bob <sip:bob@x>"#).is_err());
        assert!(NameAddr::parse("< sip:bob@x >").is_err());
        assert!(NameAddr::parse("Bob, Jr <sip:bob@x>").is_err());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:x%3E").is_err());
        assert!(NameAddr::parse("<sip:bob@x>;;;;").is_err());
    }
}
