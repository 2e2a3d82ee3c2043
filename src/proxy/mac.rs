//! Authenticated responses (issue: the farm must not be a reflector). A stateless proxy
//! relays a response to the address in the Via below its own (RFC 3261 16.7 item 3, 18.2.2),
//! so anyone could send a datagram with a Via that looks like ours on top and a victim's
//! address below it. Every Via we add therefore carries `sfm`, a MAC over our branch, the
//! address the response must go back to and the TCP connection token, under a key that only
//! the farm knows: the shared secret when one is configured (every instance then verifies
//! what any other wrote), else a random key of this process. A response whose MAC fails is
//! dropped.

use crate::sip::response::stamp_via;
use crate::sip::via::Via;
use crate::transport::Proto;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use subtle::ConstantTimeEq;

/// The Via parameter that carries the MAC.
pub(crate) const PARAM: &str = "sfm";

pub(crate) struct ViaMac {
    key: [u8; 32],
}

impl ViaMac {
    /// From the farm's shared secret file (its first line), or a random key of this process
    /// when there is none.
    pub(crate) fn open(secret_file: Option<&Path>) -> Result<ViaMac, String> {
        let mut key = [0u8; 32];
        match secret_file {
            Some(path) => {
                let text = std::fs::read(path)
                    .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
                let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
                // A key of its own, derived from the secret (the nonces use the secret itself).
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(first)
                    .map_err(|_| format!("{}: unusable secret", path.display()))?;
                m.update(b"sipfarm via mac");
                key.copy_from_slice(&m.finalize().into_bytes());
            }
            None => std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut key))
                .map_err(|e| format!("/dev/urandom: {e}"))?,
        }
        Ok(ViaMac { key })
    }

    /// The MAC of our Via: branch, where the response goes (transport and address), and the
    /// connection token (0 when none).
    pub(crate) fn tag(&self, branch: &str, back: (Proto, SocketAddr), conn: u64) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(branch.as_bytes());
        m.update(&[0]);
        m.update(back.0.as_str().as_bytes());
        m.update(back.1.to_string().as_bytes());
        m.update(&[0]);
        m.update(&conn.to_be_bytes());
        let d = m.finalize().into_bytes();
        d[..10].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Does `tag` match?
    pub(crate) fn verify(
        &self,
        tag: &str,
        branch: &str,
        back: (Proto, SocketAddr),
        conn: u64,
    ) -> bool {
        let want = self.tag(branch, back, conn);
        want.len() == tag.len() && bool::from(want.as_bytes().ct_eq(tag.as_bytes()))
    }
}

/// Where the response to a request goes (RFC 3261 18.2.2 with RFC 3581): computed from the
/// incoming top Via as we stamp it when forwarding, and from the next Via of the response,
/// by the same rule, so that both ends of the MAC agree.
pub(crate) fn response_destination(via: &Via) -> Option<(Proto, SocketAddr)> {
    let host = via.param("received").flatten().unwrap_or(via.host_bare());
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()?;
    let port = via
        .param("rport")
        .flatten()
        .and_then(|p| p.parse::<u16>().ok())
        .or(via.port)
        .unwrap_or(5060);
    let proto = if via.transport.eq_ignore_ascii_case("TCP") {
        Proto::Tcp
    } else {
        Proto::Udp
    };
    Some((proto, SocketAddr::new(ip, port)))
}

/// The destination of the response to a request whose top Via is `top`, received from `src`.
pub(crate) fn back_to(top: &str, src: SocketAddr) -> Option<(Proto, SocketAddr)> {
    let stamped = stamp_via(top, src);
    response_destination(&Via::parse(&stamped).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_bind_branch_address_and_connection() {
        let m = ViaMac::open(None).unwrap();
        let a: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:5060".parse().unwrap();
        let t = m.tag("z9hG4bKsf1", (Proto::Udp, a), 0);
        assert!(m.verify(&t, "z9hG4bKsf1", (Proto::Udp, a), 0));
        assert!(
            !m.verify(&t, "z9hG4bKsf1", (Proto::Udp, b), 0),
            "another victim"
        );
        assert!(!m.verify(&t, "z9hG4bKsf2", (Proto::Udp, a), 0));
        assert!(!m.verify(&t, "z9hG4bKsf1", (Proto::Tcp, a), 0));
        assert!(!m.verify(&t, "z9hG4bKsf1", (Proto::Udp, a), 7));
        assert!(
            !ViaMac::open(None)
                .unwrap()
                .verify(&t, "z9hG4bKsf1", (Proto::Udp, a), 0)
        );
    }

    #[test]
    fn both_ends_compute_the_same_destination() {
        let src: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let top = "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKx;rport";
        let back = back_to(top, src).unwrap();
        assert_eq!(back, (Proto::Udp, src));
        let stamped = Via::parse(&stamp_via(top, src)).unwrap();
        assert_eq!(response_destination(&stamped), Some(back));
        let no_rport = "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKx";
        let back = back_to(no_rport, src).unwrap();
        assert_eq!(back.1, "198.51.100.7:5062".parse().unwrap());
    }
}
