//! SIP messages: framing and a tolerant index of the header lines over the received bytes.
//!
//! RFC 3261 section 7 (message format), 7.3.1 (folding, compact forms, comma lists),
//! 7.5 (leading CRLF), 18.3 (framing by Content-Length), 20 (header names) and RFC 4475
//! (what a parser must accept). rsip 0.4, the parser first chosen for this project, rejects
//! whole messages for folded lines, `Via :`, IPv6 and tel: URIs and does not know compact
//! names, so the message layer is ours: it only splits lines and ranges; typed values (URIs)
//! are parsed on demand by the `sip-uri` crate (see [`uri`]).
//!
//! A [`Message`] keeps the received [`Bytes`](bytes::Bytes) and, for every header line, the
//! range of its raw line (so that a proxy can edit only the lines that change) and its
//! unfolded value.
//!
//! The message layer is split by concern: framing a message out of a stream or datagram
//! (`frame`), indexing its lines into a [`Message`] (`message`), and the typed header values
//! and checks every request passes (`fields`). Their items are re-exported here, so that
//! every path stays `crate::sip::...`.

pub mod addr;
pub mod edit;
pub mod header;
pub mod response;
pub mod uri;
pub mod via;

mod fields;
mod frame;
mod message;

pub use fields::parse_delta;
pub use frame::{
    FrameScan, Framing, frame_len, frame_len_from, header_end, header_end_from, leading_blank,
};
pub use header::HeaderName;
pub use message::{Header, Message, StartLine};

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

impl ParseError {
    /// The answer a request that fails this way gets: status code and reason phrase.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            ParseError::Version => (505, "Version Not Supported"),
            ParseError::TooLarge => (513, "Message Too Large"),
            ParseError::Bad(why) => (400, why),
            ParseError::Incomplete => (400, "Incomplete message"),
        }
    }
}

/// `s` without surrounding white space; on bytes, because a line is checked to be UTF-8
/// only once it is known to be a header.
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

/// A `token` character (RFC 3261 25.1), shared by the header, Via and name-addr parsers.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Is `s` a non-empty RFC 3261 token?
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_answer() {
        assert_eq!(ParseError::Version.status(), (505, "Version Not Supported"));
        assert_eq!(ParseError::TooLarge.status(), (513, "Message Too Large"));
        assert_eq!(ParseError::Bad("Bad Via").status(), (400, "Bad Via"));
        assert_eq!(ParseError::Incomplete.status(), (400, "Incomplete message"));
        let raw = bytes::Bytes::from_static(b"OPTIONS sip:a@b SIP/7.0\r\n\r\n");
        let err = Message::parse(raw, Framing::Datagram, 65536).unwrap_err();
        assert_eq!(err.status().0, 505);
    }
}
