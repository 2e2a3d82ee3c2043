//! STUN keep-alives on UDP (RFC 5626 4.4.2 and 8.4, RFC 5389): a UA behind NAT sends a STUN
//! Binding request to the port it registered through; the answer, a Binding success response
//! with XOR-MAPPED-ADDRESS, tells it its public address and keeps the NAT binding open. Only
//! the fixed 20-byte header and one attribute are involved, so it is answered here, in the
//! transport, without a STUN library.

use std::net::{IpAddr, SocketAddr};

const MAGIC_COOKIE: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// A keep-alive has no business being larger (RFC 5389 7.1: fits the path MTU).
const MAX_REQUEST: usize = 548;

/// Does this datagram look like STUN (RFC 5389 6: the two top bits zero, the magic cookie)?
pub(crate) fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] & 0xC0 == 0 && data[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// The Binding success response to a Binding request from `src`, or None for anything else
/// (other STUN methods, malformed lengths, oversized requests: dropped).
pub(crate) fn binding_response(req: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    if !is_stun(req) || req.len() > MAX_REQUEST {
        return None;
    }
    let kind = u16::from_be_bytes([req[0], req[1]]);
    let length = usize::from(u16::from_be_bytes([req[2], req[3]]));
    if kind != BINDING_REQUEST || length != req.len() - 20 || length % 4 != 0 {
        return None;
    }
    let txid = &req[8..20];
    let port = src.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let (family, addr): (u8, Vec<u8>) = match src.ip().to_canonical() {
        IpAddr::V4(v4) => (0x01, xor(&v4.octets(), &MAGIC_COOKIE.to_be_bytes())),
        IpAddr::V6(v6) => {
            let mut key = MAGIC_COOKIE.to_be_bytes().to_vec();
            key.extend_from_slice(txid);
            (0x02, xor(&v6.octets(), &key))
        }
    };
    let value_len = 4 + addr.len();
    let mut out = Vec::with_capacity(20 + 4 + value_len);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&((4 + value_len) as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
    out.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&addr);
    Some(out)
}

fn xor(a: &[u8], key: &[u8]) -> Vec<u8> {
    a.iter()
        .zip(key.iter().cycle())
        .map(|(x, k)| x ^ k)
        .collect()
}

/// A keep-alive that is not STUN: CRLFs (RFC 5626 3.5.1 is for streams, but phones send it
/// over UDP too) or a few NUL bytes; nothing to answer, nothing to log.
pub(crate) fn is_blank_keepalive(data: &[u8]) -> bool {
    !data.is_empty() && data.len() <= 16 && data.iter().all(|b| b"\r\n \t\0".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(txid: [u8; 12]) -> Vec<u8> {
        let mut r = vec![0x00, 0x01, 0x00, 0x00];
        r.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        r.extend_from_slice(&txid);
        r
    }

    #[test]
    fn binding_success_with_xor_mapped_address() {
        let txid = [7u8; 12];
        let src: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let r = binding_response(&request(txid), src).unwrap();
        assert_eq!(&r[0..2], &[0x01, 0x01]);
        assert_eq!(u16::from_be_bytes([r[2], r[3]]) as usize, r.len() - 20);
        assert_eq!(&r[8..20], &txid);
        assert_eq!(&r[20..22], &[0x00, 0x20]);
        // RFC 5769 2.2's mapped address 192.0.2.1:32853 xor-encodes as 0xa147 / e1 12 a6 43.
        assert_eq!(&r[26..28], &[0xa1, 0x47]);
        assert_eq!(&r[28..32], &[0xe1, 0x12, 0xa6, 0x43]);
        let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let r = binding_response(&request(txid), v6).unwrap();
        assert_eq!(r[25], 0x02);
        assert_eq!(r.len(), 20 + 4 + 20);
    }

    #[test]
    fn anything_else_is_not_answered() {
        let src: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        assert!(binding_response(b"OPTIONS sip:x SIP/2.0\r\n\r\n", src).is_none());
        let mut indication = request([1; 12]);
        indication[1] = 0x11;
        assert!(binding_response(&indication, src).is_none());
        let mut bad_len = request([1; 12]);
        bad_len[3] = 4;
        assert!(binding_response(&bad_len, src).is_none());
        assert!(is_blank_keepalive(b"\r\n\r\n"));
        assert!(!is_blank_keepalive(b"\r\nINVITE"));
    }
}
