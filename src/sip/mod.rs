//! SIP messages: framing and a tolerant index of the header lines over the received bytes.
//!
//! RFC 3261 section 7 (message format), 7.3.1 (folding, compact forms, comma lists),
//! 7.5 (leading CRLF), 18.3 (framing by Content-Length), 20 (header names) and RFC 4475
//! (what a parser must accept). rsip 0.4, the parser first chosen for this project, rejects
//! whole messages for folded lines, `Via :`, IPv6 and tel: URIs and does not know compact
//! names, so the message layer is ours: it only splits lines and ranges; typed values (URIs)
//! are parsed on demand by the `sip-uri` crate (see [`uri`]).
//!
//! A [`Message`] keeps the received [`Bytes`] and, for every header line, the range of its
//! raw line (so that a proxy can edit only the lines that change) and its unfolded value.

pub mod addr;
pub mod edit;
pub mod header;
pub mod response;
pub mod uri;
pub mod via;

use bytes::Bytes;
use std::ops::Range;

pub use header::HeaderName;

/// Hard bounds on what one message may hold, whatever its size limit: a message is refused
/// (400) rather than allocating without bound.
pub const MAX_HEADERS: usize = 256;

/// Why a message could not be read. Each maps to one SIP answer (or to a silent drop for
/// responses), so that the server never guesses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed: answered 400 with this reason phrase.
    Bad(&'static str),
    /// SIP version other than 2.0: answered 505.
    Version,
    /// Not enough bytes yet (stream transports wait for more).
    Incomplete,
    /// Larger than the configured limit: 513.
    TooLarge,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Bad(why) => f.write_str(why),
            ParseError::Version => f.write_str("unsupported SIP version"),
            ParseError::Incomplete => f.write_str("incomplete message"),
            ParseError::TooLarge => f.write_str("message too large"),
        }
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// One header field value as it appeared: a line plus its continuation lines.
#[derive(Debug, Clone)]
pub struct Header {
    /// Canonical name (compact forms expanded).
    pub name: HeaderName,
    /// The whole raw line(s), CRLF included, within [`Message::raw`].
    pub line: Range<usize>,
    /// The value with folding undone and surrounding white space removed.
    pub value: String,
}

/// A framed SIP message.
#[derive(Debug, Clone)]
pub struct Message {
    raw: Bytes,
    pub start: StartLine,
    /// Range of the start line (without CRLF).
    pub start_range: Range<usize>,
    pub headers: Vec<Header>,
    /// Range of the body within `raw`.
    pub body: Range<usize>,
    /// Bytes the datagram held after the body (RFC 4475 dblreq): never forwarded.
    pub trailing: usize,
    /// The top Via, parsed once when first asked for.
    top: std::sync::OnceLock<Result<via::Via, ParseError>>,
}

/// How a message arrived, which changes how its length is found (RFC 3261 18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One datagram is one message; no Content-Length means "the rest of the datagram".
    Datagram,
    /// A stream: Content-Length is required (absent means 0) and the bytes must all be there.
    Stream,
}

/// Where the header block ends: the offset just after the blank line, if present.
/// Lines may end in CRLF or, tolerantly, in bare LF.
pub fn header_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            let next = &buf[i + 1..];
            if next.starts_with(b"\r\n") {
                return Some(i + 3);
            }
            if next.starts_with(b"\n") {
                return Some(i + 2);
            }
        }
        i += 1;
    }
    None
}

/// Length of the first message in a stream buffer (leading CRLF included), found by its
/// Content-Length (absent: 0) without indexing the whole message (RFC 3261 18.3).
pub fn frame_len(buf: &[u8], limit: usize) -> Result<usize, ParseError> {
    let skip = leading_blank(buf);
    let Some(head_end) = header_end(&buf[skip..]).map(|e| e + skip) else {
        return if buf.len() - skip > limit {
            Err(ParseError::TooLarge)
        } else {
            Err(ParseError::Incomplete)
        };
    };
    if head_end - skip > limit {
        return Err(ParseError::TooLarge);
    }
    let mut length: Option<usize> = None;
    for line in buf[skip..head_end].split(|b| *b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = trim(&line[colon + 1..]);
            if v.is_empty() || v.len() > 10 || !v.iter().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::Bad("Bad Content-Length"));
            }
            let n: usize = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(ParseError::Bad("Bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::Bad("Conflicting Content-Length"));
            }
            length = Some(n);
        }
    }
    let n = length.unwrap_or(0);
    if head_end - skip + n > limit {
        return Err(ParseError::TooLarge);
    }
    if buf.len() < head_end + n {
        return Err(ParseError::Incomplete);
    }
    Ok(head_end + n)
}

/// Number of leading CRLF (or LF) bytes, which RFC 3261 7.5 says to ignore.
pub fn leading_blank(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Is `s` a non-empty RFC 3261 token?
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

impl Message {
    /// Parse one message from `raw`, which starts at the message (leading CRLF allowed) and,
    /// for datagrams, ends at the end of the datagram. `limit` bounds the message size.
    pub fn parse(raw: Bytes, framing: Framing, limit: usize) -> Result<Message, ParseError> {
        let skip = leading_blank(&raw);
        let Some(head_end) = header_end(&raw[skip..]).map(|e| e + skip) else {
            if raw.len() > limit {
                return Err(ParseError::TooLarge);
            }
            return match framing {
                Framing::Stream => Err(ParseError::Incomplete),
                // RFC 4475 baddn.dat ends after its last header's CRLF: accept a datagram
                // whose header block is closed by the end of the datagram.
                Framing::Datagram if raw.ends_with(b"\n") => {
                    let end = raw.len();
                    Self::index(raw, skip, end, framing, limit, false)
                }
                Framing::Datagram => Err(ParseError::Bad("Unterminated header block")),
            };
        };
        Self::index(raw, skip, head_end, framing, limit, false)
    }

    /// Index only the start line and headers, ignoring Content-Length: used to address the
    /// error answer to a message whose framing is broken (RFC 4475 ncl, mcl01, clerr).
    pub fn parse_head(raw: Bytes) -> Option<Message> {
        let skip = leading_blank(&raw);
        let head_end = header_end(&raw[skip..]).map_or(raw.len(), |e| e + skip);
        let limit = raw.len().max(1);
        Self::index(raw, skip, head_end, Framing::Datagram, limit, true).ok()
    }

    fn index(
        raw: Bytes,
        skip: usize,
        head_end: usize,
        framing: Framing,
        limit: usize,
        ignore_length: bool,
    ) -> Result<Message, ParseError> {
        if head_end - skip > limit {
            return Err(ParseError::TooLarge);
        }
        // Split the header block into lines (offsets of line start, content end, next line).
        let mut lines: Vec<(usize, usize, usize)> = Vec::new();
        let mut pos = skip;
        while pos < head_end {
            let nl = raw[pos..head_end]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(head_end, |i| pos + i);
            let mut content_end = nl;
            if content_end > pos && raw[content_end - 1] == b'\r' {
                content_end -= 1;
            }
            let next = (nl + 1).min(head_end);
            if content_end == pos {
                break; // the blank line
            }
            lines.push((pos, content_end, next));
            if lines.len() > MAX_HEADERS + 1 {
                return Err(ParseError::Bad("Too many header lines"));
            }
            pos = next;
        }
        let Some(&(s0, e0, _)) = lines.first() else {
            return Err(ParseError::Bad("Empty message"));
        };
        let start = match parse_start_line(&raw[s0..e0]) {
            Ok(s) => s,
            // Addressing an error answer: a request line we refuse still names a method.
            Err(_) if ignore_length && !raw[s0..e0].starts_with(b"SIP/") => {
                let line = String::from_utf8_lossy(&raw[s0..e0]);
                let mut words = line.split_ascii_whitespace();
                StartLine::Request {
                    method: words.next().unwrap_or_default().to_owned(),
                    uri: words.next().unwrap_or_default().to_owned(),
                }
            }
            Err(e) => return Err(e),
        };

        let mut headers: Vec<Header> = Vec::new();
        for &(ls, le, next) in &lines[1..] {
            let line = &raw[ls..le];
            if line[0] == b' ' || line[0] == b'\t' {
                // Continuation (folding): joined to the previous value with one SP.
                let Some(last) = headers.last_mut() else {
                    return Err(ParseError::Bad("Continuation line before any header"));
                };
                let more = std::str::from_utf8(trim(line))
                    .map_err(|_| ParseError::Bad("Header value is not UTF-8"))?;
                if !more.is_empty() {
                    if !last.value.is_empty() {
                        last.value.push(' ');
                    }
                    last.value.push_str(more);
                }
                last.line.end = next;
                continue;
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                return Err(ParseError::Bad("Header line without colon"));
            };
            let name = std::str::from_utf8(trim(&line[..colon]))
                .map_err(|_| ParseError::Bad("Bad header name"))?;
            if !is_token(name) {
                return Err(ParseError::Bad("Bad header name"));
            }
            let value = std::str::from_utf8(trim(&line[colon + 1..]))
                .map_err(|_| ParseError::Bad("Header value is not UTF-8"))?;
            headers.push(Header {
                name: HeaderName::from_wire(name),
                line: ls..next,
                value: value.to_owned(),
            });
        }

        // Content-Length: every occurrence must agree (RFC 4475 mcl01) and be a number.
        let mut content_length: Option<usize> = None;
        let lengths = headers
            .iter()
            .filter(|h| h.name == HeaderName::ContentLength && !ignore_length);
        for h in lengths {
            let v = h.value.trim();
            if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::Bad("Bad Content-Length"));
            }
            let n: usize = v
                .parse()
                .map_err(|_| ParseError::Bad("Bad Content-Length"))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(ParseError::Bad("Conflicting Content-Length"));
            }
            content_length = Some(n);
        }
        let available = raw.len() - head_end;
        let body_len = match (content_length, framing) {
            (Some(n), _) if n > limit => return Err(ParseError::TooLarge),
            (Some(n), Framing::Datagram) if n > available => {
                return Err(ParseError::Bad("Content-Length larger than the datagram"));
            }
            (Some(n), Framing::Stream) if n > available => return Err(ParseError::Incomplete),
            (Some(n), _) => n,
            (None, _) if ignore_length => 0,
            (None, Framing::Datagram) => available,
            (None, Framing::Stream) => 0,
        };
        if head_end - skip + body_len > limit {
            return Err(ParseError::TooLarge);
        }
        let body = head_end..head_end + body_len;
        let trailing = raw.len() - body.end;
        Ok(Message {
            raw,
            start,
            start_range: s0..e0,
            headers,
            body,
            trailing,
            top: std::sync::OnceLock::new(),
        })
    }

    /// The received bytes (for datagrams: the whole datagram).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The message bytes, from the start line to the end of the body.
    pub fn framed_len(&self) -> usize {
        self.body.end
    }

    pub fn body(&self) -> &[u8] {
        &self.raw[self.body.clone()]
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// Request method (None for responses).
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// All header lines with this name, in order.
    pub fn all<'a, 'n>(
        &'a self,
        name: &'n HeaderName,
    ) -> impl Iterator<Item = &'a Header> + use<'a, 'n> {
        self.headers.iter().filter(move |h| &h.name == name)
    }

    /// The first value of a header.
    pub fn get<'a>(&'a self, name: &HeaderName) -> Option<&'a str> {
        self.all(name).next().map(|h| h.value.as_str())
    }

    /// Every comma-separated element of every line of a list header, in order.
    pub fn list<'a>(&'a self, name: &HeaderName) -> Result<Vec<&'a str>, ParseError> {
        let mut out = Vec::new();
        for h in self.all(name) {
            out.extend(header::split_list(&h.value)?);
        }
        Ok(out)
    }

    pub fn count(&self, name: &HeaderName) -> usize {
        self.all(name).count()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.get(&HeaderName::CallId)
    }

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

    /// The top Via, parsed (once).
    pub fn top_via(&self) -> Result<&via::Via, ParseError> {
        self.top
            .get_or_init(|| {
                let first = self
                    .list(&HeaderName::Via)?
                    .into_iter()
                    .next()
                    .ok_or(ParseError::Bad("Missing Via"))?;
                via::Via::parse(first).map_err(|_| ParseError::Bad("Bad Via"))
            })
            .as_ref()
            .map_err(Clone::clone)
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

fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::Bad("Start line is not UTF-8"))?;
    if text.len() >= 4 && text.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line: SIP-Version SP Status-Code SP Reason-Phrase
        let mut parts = text.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let code = parts.next().unwrap_or("");
        let reason = parts.next().unwrap_or("");
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(ParseError::Version);
        }
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::Bad("Bad status code"));
        }
        let code: u16 = code
            .parse()
            .map_err(|_| ParseError::Bad("Bad status code"))?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::Bad("Bad status code"));
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_owned(),
        });
    }
    // Request-Line: Method SP Request-URI SP SIP-Version, single spaces. Extra white space is
    // malformed (RFC 4475 3.1.2.9/10): refusing is allowed and never forwards it.
    let mut parts = text.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Bad("Malformed Request-Line"));
    };
    if !is_token(method) {
        return Err(ParseError::Bad("Bad method"));
    }
    if uri.is_empty() || uri.contains(['<', '>', '\t']) {
        return Err(ParseError::Bad("Malformed Request-URI"));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return if version.len() > 4 && version.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/") {
            Err(ParseError::Version)
        } else {
            Err(ParseError::Bad("Malformed Request-Line"))
        };
    }
    Ok(StartLine::Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Message, ParseError> {
        Message::parse(Bytes::from(s.to_owned()), Framing::Datagram, 65536)
    }

    #[test]
    fn folding_compact_names_and_space_before_colon() {
        let m = parse(
            "OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nSubject :\r\n  folded\r\n\tmore\r\ni: x\r\nl: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(m.get(&HeaderName::Subject), Some("folded more"));
        assert_eq!(m.call_id(), Some("x"));
        assert_eq!(
            m.get(&HeaderName::Via),
            Some("SIP/2.0/UDP h;branch=z9hG4bK1")
        );
        assert_eq!(m.body.len(), 0);
    }

    #[test]
    fn content_length_rules() {
        let base = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n";
        assert!(matches!(
            parse(&format!("{base}Content-Length: 9999\r\n\r\nab")),
            Err(ParseError::Bad(_))
        ));
        assert!(parse(&format!("{base}Content-Length: -999\r\n\r\n")).is_err());
        assert!(parse(&format!("{base}Content-Length: 13\r\nl: 5\r\n\r\n12345")).is_err());
        let m = parse(&format!("{base}Content-Length: 2\r\n\r\nabEXTRA")).unwrap();
        assert_eq!(m.body(), b"ab");
        assert_eq!(m.trailing, 5);
        let m = parse(&format!("{base}\r\nrest of datagram")).unwrap();
        assert_eq!(m.body(), b"rest of datagram");
        let r = Message::parse(
            Bytes::from(format!("{base}Content-Length: 4\r\n\r\nab")),
            Framing::Stream,
            65536,
        );
        assert_eq!(r.unwrap_err(), ParseError::Incomplete);
    }

    #[test]
    fn version_and_request_line() {
        assert_eq!(
            parse("OPTIONS sip:a@b SIP/7.0\r\n\r\n").unwrap_err(),
            ParseError::Version
        );
        assert!(parse("INVITE <sip:a@b> SIP/2.0\r\n\r\n").is_err());
        assert!(parse("INVITE  sip:a@b SIP/2.0\r\n\r\n").is_err());
        assert!(parse("SIP/2.0 4294967301 Huge\r\n\r\n").is_err());
        let m = parse("\r\n\r\nSIP/2.0 100 \r\n\r\n").unwrap();
        assert_eq!(
            m.start,
            StartLine::Response {
                code: 100,
                reason: String::new()
            }
        );
    }

    #[test]
    fn stream_framing() {
        let m = b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabcOPTIONS";
        assert_eq!(frame_len(m, 1000), Ok(m.len() - 7));
        assert_eq!(frame_len(&m[..20], 1000), Err(ParseError::Incomplete));
        assert_eq!(
            frame_len(b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nab", 1000),
            Err(ParseError::Incomplete)
        );
        assert_eq!(
            frame_len(b"X sip:a SIP/2.0\r\nContent-Length: 5000\r\n\r\n", 1000),
            Err(ParseError::TooLarge)
        );
        assert!(matches!(
            frame_len(b"X sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n", 1000),
            Err(ParseError::Bad(_))
        ));
        let head = Message::parse_head(Bytes::from_static(
            b"X sip:a SIP/2.0\r\nContent-Length: -1\r\nCall-ID: z\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(head.call_id(), Some("z"));
    }

    #[test]
    fn limits() {
        let big = format!("OPTIONS sip:a@b SIP/2.0\r\nX: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(
            Message::parse(Bytes::from(big), Framing::Datagram, 50).unwrap_err(),
            ParseError::TooLarge
        );
        let many = format!("OPTIONS sip:a@b SIP/2.0\r\n{}\r\n", "X: y\r\n".repeat(300));
        assert!(parse(&many).is_err());
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
    }
}
