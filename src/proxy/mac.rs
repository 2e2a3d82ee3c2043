//! Authenticated responses: the farm must not be a reflector. A stateless proxy relays a
//! response to the address in the Via below its own (RFC 3261 16.7 item 3, 18.2.2), so anyone
//! could send a datagram with a Via that looks like ours on top and a victim's address below
//! it. Every Via we add therefore carries `sfm`, a MAC (under the farm's key, see
//! [`Identity::mac`]) over our branch, the address the response must go back to and the TCP
//! connection token. A response whose MAC fails is dropped.

use crate::identity::Identity;
use crate::sip::response::stamp_via;
use crate::sip::via::Via;
use crate::transport::Proto;
use std::net::{IpAddr, SocketAddr};

/// The Via parameter that carries the MAC.
pub(crate) const PARAM: &str = "sfm";

/// The MAC of our Via: branch, where the response goes (transport and address), and the
/// connection token (0 when none).
pub(crate) fn tag(id: &Identity, branch: &str, back: (Proto, SocketAddr), conn: u64) -> String {
    id.mac(&parts(branch, back, conn).each())
}

/// Does `tag` match?
pub(crate) fn verify(
    id: &Identity,
    tag: &str,
    branch: &str,
    back: (Proto, SocketAddr),
    conn: u64,
) -> bool {
    id.mac_ok(tag, &parts(branch, back, conn).each())
}

struct Parts(String, String, [u8; 8]);

impl Parts {
    fn each(&self) -> [&[u8]; 3] {
        [self.0.as_bytes(), self.1.as_bytes(), &self.2]
    }
}

fn parts(branch: &str, back: (Proto, SocketAddr), conn: u64) -> Parts {
    Parts(
        format!("via {branch}"),
        format!("{} {}", back.0.as_str(), back.1),
        conn.to_be_bytes(),
    )
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

    fn id(key: u8) -> Identity {
        Identity::new(vec![], "sip:f".into(), "f".into(), vec![]).with_key([key; 32])
    }

    #[test]
    fn tags_bind_branch_address_and_connection() {
        let m = id(1);
        let a: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:5060".parse().unwrap();
        let t = tag(&m, "z9hG4bKsf1", (Proto::Udp, a), 0);
        assert!(verify(&m, &t, "z9hG4bKsf1", (Proto::Udp, a), 0));
        assert!(
            !verify(&m, &t, "z9hG4bKsf1", (Proto::Udp, b), 0),
            "another victim"
        );
        assert!(!verify(&m, &t, "z9hG4bKsf2", (Proto::Udp, a), 0));
        assert!(!verify(&m, &t, "z9hG4bKsf1", (Proto::Tcp, a), 0));
        assert!(!verify(&m, &t, "z9hG4bKsf1", (Proto::Udp, a), 7));
        assert!(!verify(&id(2), &t, "z9hG4bKsf1", (Proto::Udp, a), 0));
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
