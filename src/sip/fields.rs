//! Typed values of the header fields the core reads, and the checks every request passes
//! before anything acts on it.
//!
//! RFC 3261 8.1.1 (the headers a request must carry), 8.2 and 20 (their syntax), RFC 4475
//! 3.1.2.17 and 3.3.8 (a CSeq method that does not match, a single-valued header given
//! twice): such requests are answered 400 with a precise reason instead of being half
//! understood. Values are parsed from the index when asked for, not when the message is
//! indexed.

use super::header::HeaderName;
use super::{Message, ParseError, addr, is_token, via};

impl Message {
    /// CSeq number and method.
    pub fn cseq(&self) -> Result<(u32, &str), ParseError> {
        let v = self
            .get(&HeaderName::CSeq)
            .ok_or(ParseError::Bad("Missing CSeq"))?;
        let mut parts = v.split_ascii_whitespace();
        let (Some(num), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ParseError::Bad("Bad CSeq"));
        };
        if num.len() > 10 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::Bad("Bad CSeq"));
        }
        let n: u32 = num
            .parse()
            .map_err(|_| ParseError::Bad("CSeq out of range"))?;
        if !is_token(method) {
            return Err(ParseError::Bad("Bad CSeq method"));
        }
        Ok((n, method))
    }

    /// Max-Forwards (None when absent; RFC 2543 peers omit it).
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.get(&HeaderName::MaxForwards) {
            None => Ok(None),
            Some(v) => {
                if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParseError::Bad("Bad Max-Forwards"));
                }
                v.parse::<u32>()
                    .map(Some)
                    .map_err(|_| ParseError::Bad("Bad Max-Forwards"))
            }
        }
    }

    /// The value of an `Expires` header, if present and numeric.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        match self.get(&HeaderName::Expires) {
            None => Ok(None),
            Some(v) => parse_delta(v)
                .map(Some)
                .ok_or(ParseError::Bad("Bad Expires")),
        }
    }

    /// Option tags of Require / Proxy-Require / Supported.
    pub fn option_tags<'a>(&'a self, name: &HeaderName) -> Result<Vec<&'a str>, ParseError> {
        self.list(name)
    }

    /// Checks every request must pass before anything acts on it: required headers present
    /// (RFC 3261 8.1.1), single-valued headers single (RFC 4475 3.3.8), CSeq matching the
    /// method (8.2 / RFC 4475 3.1.2.17), a usable top Via (RFC 4475 3.2.1).
    pub fn validate_request(&self) -> Result<(), ParseError> {
        // RFC 3261 25.1: TEXT-UTF8 and quoted strings hold no control characters but HTAB
        // (folding is undone already): a NUL in a Call-ID must not be stored and echoed.
        let control = |s: &str| s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f);
        if self.headers.iter().any(|h| control(&h.value)) {
            return Err(ParseError::Bad("Control character in a header value"));
        }
        if self.request_uri().is_some_and(control) {
            return Err(ParseError::Bad("Control character in the Request-URI"));
        }
        let method = self.method().unwrap_or("");
        for (name, missing) in [
            (HeaderName::CallId, "Missing Call-ID"),
            (HeaderName::From, "Missing From"),
            (HeaderName::To, "Missing To"),
            (HeaderName::CSeq, "Missing CSeq"),
            (HeaderName::Via, "Missing Via"),
        ] {
            if self.count(&name) == 0 {
                return Err(ParseError::Bad(missing));
            }
        }
        for (name, dup) in [
            (HeaderName::CallId, "Multiple Call-ID values"),
            (HeaderName::From, "Multiple From values"),
            (HeaderName::To, "Multiple To values"),
            (HeaderName::CSeq, "Multiple CSeq values"),
            (HeaderName::MaxForwards, "Multiple Max-Forwards values"),
        ] {
            if self.count(&name) > 1 {
                return Err(ParseError::Bad(dup));
            }
        }
        if self
            .call_id()
            .is_none_or(|c| c.is_empty() || c.contains(char::is_whitespace))
        {
            return Err(ParseError::Bad("Bad Call-ID"));
        }
        let (_, cseq_method) = self.cseq()?;
        if cseq_method != method {
            return Err(ParseError::Bad("CSeq method does not match the request"));
        }
        self.max_forwards()?;
        for (name, what) in [(HeaderName::From, "Bad From"), (HeaderName::To, "Bad To")] {
            let v = self.get(&name).unwrap_or("");
            addr::NameAddr::parse(v).map_err(|_| ParseError::Bad(what))?;
        }
        let vias = self.vias()?;
        if vias.is_empty() {
            return Err(ParseError::Bad("Missing Via"));
        }
        if vias[0]
            .branch()
            .is_some_and(|b| b.eq_ignore_ascii_case(via::MAGIC_COOKIE))
        {
            return Err(ParseError::Bad("Via branch holds only the magic cookie"));
        }
        Ok(())
    }

    /// Every Via value, parsed.
    pub fn vias(&self) -> Result<Vec<via::Via>, ParseError> {
        let mut out = Vec::new();
        for v in self.list(&HeaderName::Via)? {
            out.push(via::Via::parse(v).map_err(|_| ParseError::Bad("Bad Via"))?);
        }
        Ok(out)
    }
}

/// delta-seconds: digits only; values above 2**32-1 saturate (RFC 3261 20.19 / 27: "a value
/// larger than 2**32-1 ... should be treated as 2**32-1"; the caller clamps to its maximum).
pub fn parse_delta(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u32::MAX as u64) as u32),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Framing;
    use bytes::Bytes;

    fn parse(s: &str) -> Result<Message, ParseError> {
        Message::parse(Bytes::from(s.to_owned()), Framing::Datagram, 65536)
    }

    #[test]
    fn validation() {
        let ok = "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n";
        parse(ok).unwrap().validate_request().unwrap();
        let bad = ok.replace("CSeq: 1 REGISTER", "CSeq: 1 INVITE");
        assert!(parse(&bad).unwrap().validate_request().is_err());
        let bad = ok.replace("CSeq: 1 ", "CSeq: 36893488147419103232 ");
        assert!(parse(&bad).unwrap().validate_request().is_err());
        let bad = ok.replace("branch=z9hG4bKa", "branch=z9hG4bK");
        assert!(parse(&bad).unwrap().validate_request().is_err());
        let bad = ok.replace("Call-ID: c\r\n", "");
        assert!(parse(&bad).unwrap().validate_request().is_err());
        let bad = ok.replace("Call-ID: c\r\n", "Call-ID: c\r\ni: d\r\n");
        assert!(parse(&bad).unwrap().validate_request().is_err());
        // Control characters: none in header values (a tab is white space).
        for bad in [
            ok.replace("Call-ID: c", "Call-ID: c\0x"),
            ok.replace("From: <sip:a@x>", "From: \"a\x07\" <sip:a@x>"),
            ok.replace("To: <sip:a@x>", "To: <sip:a@x>\x7f"),
        ] {
            let e = parse(&bad).map(|m| m.validate_request());
            assert!(matches!(e, Err(_) | Ok(Err(_))), "{bad:?}");
        }
        let tabbed = ok.replace("Call-ID: c", "Call-ID:\tc");
        parse(&tabbed).unwrap().validate_request().unwrap();
    }
}
