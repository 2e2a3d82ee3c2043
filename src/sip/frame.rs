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
    header_end_from(buf, &mut 0)
}

/// [`header_end`], resuming at `*from`, where an earlier scan of a shorter prefix of the same
/// bytes stopped; on `None`, `*from` is where the next scan must resume. A message that
/// arrives over many reads is so scanned once in all, not once per read (quadratic for a
/// message dripped byte by byte). The last two bytes are scanned again: a blank line may
/// straddle the end of what has arrived.
pub fn header_end_from(buf: &[u8], from: &mut usize) -> Option<usize> {
    let mut i = *from;
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
    *from = buf.len().saturating_sub(2).max(*from);
    None
}

/// Length of the first message in a stream buffer (leading CRLF included), found by its
/// Content-Length (absent: 0) without indexing the whole message (RFC 3261 18.3).
pub fn frame_len(buf: &[u8], limit: usize) -> Result<usize, ParseError> {
    frame_len_from(buf, limit, &mut FrameScan::default())
}

/// What is known of the first message of a stream buffer, kept across reads by
/// [`frame_len_from`] so that each read costs only its new bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameScan {
    /// Where the search for the blank line resumes, from the message's first byte.
    scanned: usize,
    /// The frame's whole length, once its header block is complete.
    total: Option<usize>,
}

/// [`frame_len`] for a buffer that grows between calls: `scan` holds what the earlier calls
/// found for the same first message (the caller resets it, with `FrameScan::default()`,
/// whenever bytes are taken off the front of the buffer).
pub fn frame_len_from(buf: &[u8], limit: usize, scan: &mut FrameScan) -> Result<usize, ParseError> {
    let total = match scan.total {
        Some(total) => total,
        None => {
            let skip = leading_blank(buf);
            let Some(head_end) = header_end_from(&buf[skip..], &mut scan.scanned) else {
                return if buf.len() - skip > limit {
                    Err(ParseError::TooLarge)
                } else {
                    Err(ParseError::Incomplete)
                };
            };
            if head_end > limit {
                return Err(ParseError::TooLarge);
            }
            let total = skip + head_end + body_len(&buf[skip..skip + head_end])?;
            if total - skip > limit {
                return Err(ParseError::TooLarge);
            }
            *scan.total.insert(total)
        }
    };
    if buf.len() < total {
        return Err(ParseError::Incomplete);
    }
    Ok(total)
}

/// The Content-Length of a header block (absent: 0); several must agree.
fn body_len(head: &[u8]) -> Result<usize, ParseError> {
    let mut length: Option<usize> = None;
    for line in head.split(|b| *b == b'\n').skip(1) {
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
    Ok(length.unwrap_or(0))
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

    /// Every RFC 4475 message (tests/sip-torture), fed in pieces of many sizes: the resumed
    /// scans give, at every step, what a full scan of the bytes so far gives.
    #[test]
    fn resumed_scans_agree_with_full_scans() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sip-torture");
        let mut corpus: Vec<Vec<u8>> = Vec::new();
        for sub in [dir.clone(), dir.join("appendix-a")] {
            for e in std::fs::read_dir(&sub).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "dat") {
                    corpus.push(std::fs::read(e.path()).unwrap());
                }
            }
        }
        assert!(
            corpus.len() > 40,
            "the RFC 4475 corpus: {} files",
            corpus.len()
        );
        // Blank lines straddling piece boundaries, bare LF, leading CRLF.
        corpus.push(b"\r\nA sip:a SIP/2.0\nl: 2\n\nxyB".to_vec());
        corpus.push(b"A sip:a SIP/2.0\r\nX: y\r\n\r\n".to_vec());
        for msg in &corpus {
            for piece in [1, 2, 3, 5, 7, 64, 1000] {
                for limit in [65536, 100] {
                    check_in_pieces(msg, piece, limit);
                }
            }
        }
    }

    fn check_in_pieces(msg: &[u8], piece: usize, limit: usize) {
        let (mut from, mut scan) = (0, FrameScan::default());
        let mut end = 0;
        while end < msg.len() {
            end = (end + piece).min(msg.len());
            let prefix = &msg[..end];
            let at = String::from_utf8_lossy(prefix);
            assert_eq!(
                header_end_from(prefix, &mut from),
                header_end(prefix),
                "{at}"
            );
            let resumed = frame_len_from(prefix, limit, &mut scan);
            assert_eq!(resumed, frame_len(prefix, limit), "{piece} {limit} {at}");
        }
    }
}
