//! Framing: where one message ends in the bytes received (RFC 3261 18.3, 7.5).
//!
//! On a stream (TCP) the next message starts right after the previous one, so its length
//! must be found from the header block alone before the message is indexed: a frame is the
//! leading CRLFs (ignored, RFC 3261 7.5), the header block up to its blank line, then
//! Content-Length bytes of body. Every step is bounded by the configured message size, so
//! that a peer cannot make the server buffer without limit. A datagram is one message by
//! definition; [`super::Message::parse`] uses the same helpers on it.

use super::{ParseError, trim};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Message;
    use bytes::Bytes;

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
}
