//! Header names, compact forms, comma-separated lists and `;name=value` parameters.
//!
//! RFC 3261 7.3.1 (lists may be split over several lines or joined by commas), 7.3.3 (compact
//! forms), 20 (header fields) and 25.1 (quoted strings, quoted pairs).

use super::ParseError;

/// Our own header asking an instance, from loopback only, for its view of the memcached
/// nodes (`sipfarm farm status`); the answer carries one [`NODE_HEADER`] per node.
pub const STATUS_HEADER: &str = "X-Sipfarm-Status";
/// One line per node in the answer to [`STATUS_HEADER`]: `<addr> up|dead`.
pub const NODE_HEADER: &str = "X-Sipfarm-Node";
/// In the answer to [`STATUS_HEADER`]: the ring id of the instance's node list.
pub const RING_HEADER: &str = "X-Sipfarm-Ring";
/// In the answer to [`STATUS_HEADER`] when the instance is unhealthy (503): why.
pub const HEALTH_HEADER: &str = "X-Sipfarm-Health";

/// Header names the element acts on; every other name is kept as written (lowercased for
/// comparison) and passes through untouched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    ContentLength,
    ContentType,
    MaxForwards,
    Expires,
    MinExpires,
    Route,
    RecordRoute,
    Path,
    Require,
    ProxyRequire,
    Supported,
    Unsupported,
    Subject,
    Date,
    Other(String),
}

impl HeaderName {
    /// From the name as it appears in a message: case-insensitive, compact forms expanded.
    pub fn from_wire(name: &str) -> HeaderName {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "via" | "v" => HeaderName::Via,
            "from" | "f" => HeaderName::From,
            "to" | "t" => HeaderName::To,
            "call-id" | "i" => HeaderName::CallId,
            "cseq" => HeaderName::CSeq,
            "contact" | "m" => HeaderName::Contact,
            "content-length" | "l" => HeaderName::ContentLength,
            "content-type" | "c" => HeaderName::ContentType,
            "max-forwards" => HeaderName::MaxForwards,
            "expires" => HeaderName::Expires,
            "min-expires" => HeaderName::MinExpires,
            "route" => HeaderName::Route,
            "record-route" => HeaderName::RecordRoute,
            "path" => HeaderName::Path,
            "require" => HeaderName::Require,
            "proxy-require" => HeaderName::ProxyRequire,
            "supported" | "k" => HeaderName::Supported,
            "unsupported" => HeaderName::Unsupported,
            "subject" | "s" => HeaderName::Subject,
            "date" => HeaderName::Date,
            _ => HeaderName::Other(lower),
        }
    }

    /// The long form, as this element writes it.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::Contact => "Contact",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::Expires => "Expires",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Path => "Path",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Supported => "Supported",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::Subject => "Subject",
            HeaderName::Date => "Date",
            HeaderName::Other(s) => s,
        }
    }
}

/// Split a header value at the commas that separate list elements: not inside a quoted
/// string, not inside `<...>`. Empty elements (`a,,b`) are malformed (RFC 4475 badinv01).
pub fn split_list(value: &str) -> Result<Vec<&str>, ParseError> {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let (mut start, mut i) = (0, 0);
    let (mut quoted, mut angle) = (false, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(element(&value[start..i])?);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err(ParseError::Bad("Unterminated quoted string"));
    }
    if !value.trim().is_empty() {
        out.push(element(&value[start..])?);
    }
    Ok(out)
}

fn element(s: &str) -> Result<&str, ParseError> {
    let s = s.trim();
    if s.is_empty() {
        Err(ParseError::Bad("Empty list element"))
    } else {
        Ok(s)
    }
}

/// One `;name[=value]` parameter, name lowercased, value as written (quotes kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// Parse `;a=b;c;d="x;y"` (the leading `;` included, or an empty string). Every parameter
/// needs a token name; empty parameters (`;;`) are malformed.
pub fn parse_params(s: &str) -> Result<Vec<Param>, ParseError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = s.strip_prefix(';') else {
        return Err(ParseError::Bad("Bad parameters"));
    };
    let mut out = Vec::new();
    for piece in split_unquoted(rest, b';')? {
        let piece = piece.trim();
        let (name, value) = match piece.find('=') {
            Some(eq) => (piece[..eq].trim(), Some(piece[eq + 1..].trim())),
            None => (piece, None),
        };
        if !super::is_token(name) {
            return Err(ParseError::Bad("Bad parameter name"));
        }
        if let Some(v) = value {
            let quoted_ok = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
            let plain_ok = !v.is_empty()
                && v.bytes()
                    .all(|b| super::is_token_char(b) || b"[]:".contains(&b));
            if !quoted_ok && !plain_ok {
                return Err(ParseError::Bad("Bad parameter value"));
            }
        }
        out.push(Param {
            name: name.to_ascii_lowercase(),
            value: value.map(str::to_owned),
        });
    }
    Ok(out)
}

/// Split at `sep` outside quoted strings.
pub fn split_unquoted(s: &str, sep: u8) -> Result<Vec<&str>, ParseError> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i, mut quoted) = (0, 0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b if b == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err(ParseError::Bad("Unterminated quoted string"));
    }
    out.push(&s[start.min(s.len())..]);
    Ok(out)
}

/// Look a parameter up by (lowercase) name: `Some(None)` for a flag, `Some(Some(v))` for a value.
pub fn param<'a>(params: &'a [Param], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_deref())
}

/// Remove surrounding double quotes and undo quoted pairs.
pub fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_respect_quotes_and_brackets() {
        let v = r#""a, b" <sip:x@y;p=1,2>;q=1, <sip:z@w>"#;
        assert_eq!(
            split_list(v).unwrap(),
            vec![r#""a, b" <sip:x@y;p=1,2>;q=1"#, "<sip:z@w>"]
        );
        assert!(split_list("a,,b").is_err());
        assert!(split_list("\"open").is_err());
    }

    #[test]
    fn params() {
        let p = parse_params(";branch=z9hG4bK1;rport;x=\"a;b\"").unwrap();
        assert_eq!(param(&p, "branch"), Some(Some("z9hG4bK1")));
        assert_eq!(param(&p, "rport"), Some(None));
        assert_eq!(param(&p, "x"), Some(Some("\"a;b\"")));
        assert!(parse_params(";;;").is_err());
        assert_eq!(unquote(r#""a\"b""#), "a\"b");
    }

    #[test]
    fn compact_names() {
        assert_eq!(HeaderName::from_wire("m"), HeaderName::Contact);
        assert_eq!(HeaderName::from_wire("CALL-id"), HeaderName::CallId);
        assert_eq!(
            HeaderName::from_wire("X-Foo"),
            HeaderName::Other("x-foo".into())
        );
    }
}
