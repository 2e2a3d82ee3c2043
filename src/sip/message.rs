//! The index of one message: its start line and, for every header line, where the raw line
//! is and its unfolded value (RFC 3261 7, 7.3.1, 20; RFC 4475).
//!
//! Indexing is tolerant where RFC 4475 says a parser must be (folding, compact names, white
//! space before a colon, bare LF line ends) and strict where guessing would be unsafe
//! (Content-Length, the start line, header names): a message is refused with a reason
//! rather than read two ways. The raw bytes are kept, not rebuilt: a proxy forwards the
//! lines it does not change exactly as they came (see [`super::edit`]).

use super::frame::{Framing, header_end, leading_blank};
use super::header::{self, HeaderName};
use super::{MAX_HEADERS, ParseError, is_token, trim, via};
use bytes::Bytes;
use std::ops::Range;

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
    fn limits() {
        let big = format!("OPTIONS sip:a@b SIP/2.0\r\nX: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(
            Message::parse(Bytes::from(big), Framing::Datagram, 50).unwrap_err(),
            ParseError::TooLarge
        );
        let many = format!("OPTIONS sip:a@b SIP/2.0\r\n{}\r\n", "X: y\r\n".repeat(300));
        assert!(parse(&many).is_err());
    }
}
