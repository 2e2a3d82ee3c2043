//! Our branch parameter: RFC 3261 16.6 item 8 (loop detection) and 16.11 (a stateless proxy's
//! branch is a function of the request, so that retransmissions, the CANCEL and the non-2xx
//! ACK of a request get the same one on every instance, without transaction state).

use crate::sip::Message;
use crate::sip::addr::NameAddr;
use crate::sip::header::HeaderName;
use md5::{Digest, Md5};

/// Prefix of every branch we write: the magic cookie and our mark.
pub(crate) const BRANCH_PREFIX: &str = "z9hG4bKsf";

fn md5_hex64(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    let d = h.finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The loop-detection part of our branch (16.6 item 8): fields that a request keeps while it
/// passes through proxies unchanged, and that are the same for its CANCEL and non-2xx ACK:
/// Request-URI, Call-ID, From tag, CSeq number, Proxy-Require and Route as received.
pub(crate) fn loop_part(msg: &Message) -> String {
    let from_tag = msg
        .get(&HeaderName::From)
        .and_then(|f| NameAddr::parse(f).ok())
        .and_then(|a| a.tag().map(str::to_owned))
        .unwrap_or_default();
    let cseq = msg.cseq().map(|(n, _)| n).unwrap_or(0).to_string();
    let proxy_require = msg
        .list(&HeaderName::ProxyRequire)
        .unwrap_or_default()
        .join(",");
    let route = msg.list(&HeaderName::Route).unwrap_or_default().join(",");
    md5_hex64(&[
        msg.request_uri().unwrap_or("").as_bytes(),
        msg.call_id().unwrap_or("").as_bytes(),
        from_tag.as_bytes(),
        cseq.as_bytes(),
        proxy_require.as_bytes(),
        route.as_bytes(),
    ])
}

/// Our branch (16.11): the transaction part hashes the incoming top Via too, so that it is the
/// same for retransmissions, the CANCEL and the non-2xx ACK (all carry that Via unchanged)
/// and different for every other transaction; the loop part follows after a dot.
pub(crate) fn branch(msg: &Message, loop_hash: &str) -> String {
    let top_via = msg
        .list(&HeaderName::Via)
        .ok()
        .and_then(|v| v.first().map(|s| s.to_string()))
        .unwrap_or_default();
    let tx = md5_hex64(&[top_via.as_bytes(), loop_hash.as_bytes()]);
    format!("{BRANCH_PREFIX}{tx}.{loop_hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Message {
        Message::parse(
            bytes::Bytes::from(s.to_owned()),
            crate::sip::Framing::Datagram,
            65536,
        )
        .unwrap()
    }

    #[test]
    fn branch_same_for_cancel_and_ack_not_for_others() {
        let invite = parse(
            "INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu1\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:bob@example.test>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n\r\n",
        );
        let cancel = parse(
            "CANCEL sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu1\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:bob@example.test>\r\nCall-ID: c1\r\nCSeq: 7 CANCEL\r\n\r\n",
        );
        let ack = parse(
            "ACK sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu1\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:bob@example.test>;tag=callee\r\nCall-ID: c1\r\nCSeq: 7 ACK\r\n\r\n",
        );
        let other = parse(
            "INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu2\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:bob@example.test>\r\nCall-ID: c1\r\nCSeq: 8 INVITE\r\n\r\n",
        );
        let bi = branch(&invite, &loop_part(&invite));
        assert!(bi.starts_with(BRANCH_PREFIX));
        assert_eq!(bi, branch(&cancel, &loop_part(&cancel)));
        assert_eq!(bi, branch(&ack, &loop_part(&ack)));
        assert_ne!(bi, branch(&other, &loop_part(&other)));
    }
}
