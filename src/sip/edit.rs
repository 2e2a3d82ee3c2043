//! Forwarded messages as edits over the received bytes.
//!
//! RFC 3261 16.6 (what a proxy changes in a request: Request-URI, Max-Forwards, Via, Route,
//! Record-Route), 16.7 item 3 / 16.11 (a response loses its top Via and nothing else), 18.3
//! (Content-Length on streams) and RFC 4475 (wsinv, inv2543, dblreq: unknown headers, their
//! order and case and the body pass byte for byte; octets after the body are dropped). Every
//! line that does not change is copied as it arrived, never re-serialised.

use super::header::HeaderName;
use super::response::stamp_parsed_via;
use super::{Header, Message, StartLine};
use std::net::SocketAddr;

/// What changes in a forwarded request.
pub struct RequestEdits<'a> {
    /// The new Request-URI.
    pub request_uri: &'a str,
    /// Our Via value, placed on top.
    pub via: &'a str,
    /// Record-Route values to add on top (ours), in order.
    pub record_route: &'a [String],
    /// The complete new Route set, when it changed (None: Route lines copied as they are).
    pub routes: Option<&'a [String]>,
    /// Where the request came from, for `received` / `rport` on the incoming top Via.
    pub src: SocketAddr,
    /// Write a Content-Length when the request has none (the next hop is a stream).
    pub need_length: bool,
}

fn push_line(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The incoming top Via line with `received`/`rport` stamped on its first value; the other
/// values of the same line follow on a line of their own.
fn restamp_top_via(out: &mut Vec<u8>, msg: &Message, h: &Header, src: SocketAddr) {
    let values = super::header::split_list(&h.value).unwrap_or_else(|_| vec![h.value.as_str()]);
    let mut iter = values.into_iter();
    if let Some(first) = iter.next() {
        push_line(
            out,
            "Via",
            &stamp_parsed_via(first, msg.top_via().ok(), src),
        );
    }
    let rest: Vec<&str> = iter.collect();
    if !rest.is_empty() {
        push_line(out, "Via", &rest.join(", "));
    }
}

/// Build the forwarded request.
pub fn forward_request(msg: &Message, e: &RequestEdits<'_>) -> Vec<u8> {
    let raw = msg.raw();
    let body = msg.body();
    let mut out = Vec::with_capacity(msg.framed_len() + 256);
    let method = match &msg.start {
        StartLine::Request { method, .. } => method.as_str(),
        StartLine::Response { .. } => "",
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(e.request_uri.as_bytes());
    out.extend_from_slice(b" SIP/2.0\r\n");
    push_line(&mut out, "Via", e.via);
    for rr in e.record_route {
        push_line(&mut out, "Record-Route", rr);
    }
    let mut seen_via = false;
    let mut seen_mf = false;
    let mut seen_len = false;
    let mut routes_written = false;
    for h in &msg.headers {
        match &h.name {
            HeaderName::Via if !seen_via => {
                seen_via = true;
                restamp_top_via(&mut out, msg, h, e.src);
            }
            HeaderName::MaxForwards => {
                seen_mf = true;
                let n = h.value.trim().parse::<u32>().unwrap_or(70).min(255);
                push_line(&mut out, "Max-Forwards", &n.saturating_sub(1).to_string());
            }
            HeaderName::Route if e.routes.is_some() => {
                if !routes_written {
                    routes_written = true;
                    for r in e.routes.unwrap_or_default() {
                        push_line(&mut out, "Route", r);
                    }
                }
            }
            HeaderName::ContentLength => {
                if !seen_len {
                    seen_len = true;
                    out.extend_from_slice(&raw[h.line.clone()]);
                }
            }
            _ => out.extend_from_slice(&raw[h.line.clone()]),
        }
    }
    if !seen_mf {
        push_line(&mut out, "Max-Forwards", "70");
    }
    if let (Some(routes), false) = (e.routes, routes_written) {
        for r in routes {
            push_line(&mut out, "Route", r);
        }
    }
    if !seen_len && e.need_length {
        push_line(&mut out, "Content-Length", &body.len().to_string());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The response without its top Via value.
pub fn pop_via(msg: &Message) -> Vec<u8> {
    let raw = msg.raw();
    let mut out = Vec::with_capacity(msg.framed_len());
    out.extend_from_slice(&raw[msg.start_range.clone()]);
    out.extend_from_slice(b"\r\n");
    let mut popped = false;
    for h in &msg.headers {
        if h.name == HeaderName::Via && !popped {
            popped = true;
            let values = super::header::split_list(&h.value).unwrap_or_default();
            if values.len() > 1 {
                push_line(&mut out, "Via", &values[1..].join(", "));
            }
            continue;
        }
        out.extend_from_slice(&raw[h.line.clone()]);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(msg.body());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Framing;
    use bytes::Bytes;

    const REQ: &str = "INVITE sip:bob@example.test SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP 192.0.2.9\r\nX-Odd-CASE :  kept   as is\r\nMax-Forwards: 0070\r\nRoute: <sip:example.test;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn forwarded_request_changes_only_what_it_must() {
        let m = Message::parse(Bytes::from(REQ), Framing::Datagram, 65536).unwrap();
        let routes = vec!["<sip:edge;lr>".to_owned()];
        let rr = vec!["<sip:example.test;lr>".to_owned()];
        let out = forward_request(
            &m,
            &RequestEdits {
                request_uri: "sip:bob@127.0.0.1:5070",
                via: "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsfx",
                record_route: &rr,
                routes: Some(&routes),
                src: "127.0.0.1:4000".parse().unwrap(),
                need_length: false,
            },
        );
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsfx\r\nRecord-Route: <sip:example.test;lr>\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=127.0.0.1;rport=4000\r\nVia: SIP/2.0/UDP 192.0.2.9\r\nX-Odd-CASE :  kept   as is\r\nMax-Forwards: 69\r\nRoute: <sip:edge;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 4\r\n\r\nbody"
        );
    }

    #[test]
    fn missing_length_and_max_forwards() {
        let raw = "MESSAGE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK2\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n\r\nhello";
        let m = Message::parse(Bytes::from(raw), Framing::Datagram, 65536).unwrap();
        let out = forward_request(
            &m,
            &RequestEdits {
                request_uri: "sip:b@127.0.0.1",
                via: "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKsfy",
                record_route: &[],
                routes: None,
                src: "192.0.2.1:5060".parse().unwrap(),
                need_length: true,
            },
        );
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("Max-Forwards: 70\r\nContent-Length: 5\r\n\r\nhello"),
            "{s}"
        );
    }

    #[test]
    fn response_pops_one_via() {
        let raw = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf1, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa\r\nVia: SIP/2.0/UDP 10.0.0.2\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(Bytes::from(raw), Framing::Datagram, 65536).unwrap();
        let s = String::from_utf8(pop_via(&m)).unwrap();
        assert_eq!(
            s,
            "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa\r\nVia: SIP/2.0/UDP 10.0.0.2\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n"
        );
    }
}
