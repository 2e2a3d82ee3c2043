//! Flow tokens (RFC 5626 5.2 and 5.3, in the spirit of RFC 3327 Path): how a request for a
//! UA reachable only over one flow (its TCP connection, or the NAT binding its UDP
//! REGISTERs opened) finds the instance that holds that flow, and how that instance knows
//! where to deliver it.
//!
//! The owner writes its own URI with a token, `sip:HOST:PORT;transport=tcp;sff=TOKEN`, into
//! the binding at REGISTER, and into its Record-Route when it forwards a dialog-creating
//! request to or from a flow. The token names the flow (transport and the far end's
//! address) and carries a MAC under the owner's key: only the owner needs to check its
//! tokens, so they work without a shared secret (with one, which authentication requires,
//! the key is the farm's), and nobody can make an instance send to an address of their
//! choosing by writing a token. Another instance copies the owner URI as a Route
//! (`<owner;lr;sfh=MAC>`); the owner, finding its own URI with a valid token on top, delivers
//! the request on the flow.
//!
//! A token alone is no credential: anyone in a dialog with the UA sees it in Record-Route.
//! So the auth gate lets a request through to a flow without its own checks only when the
//! instance that looked the user up vouched for it: `sfh`, a MAC under the farm's key (shared
//! through the secret file whenever authentication is on) over the token, the request's
//! Call-ID, From tag and CSeq number, and the minute, accepted for two minutes (its CANCEL and
//! ACK too). In-dialog requests are vouched for by the dialog's own signature instead
//! ([`super::in_our_dialog`]).

use super::Identity;
use crate::sip::Message;
use crate::sip::header::HeaderName;
use crate::transport::Proto;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The URI parameter that carries a flow token.
pub(crate) const FLOW_PARAM: &str = "sff";

/// The Route parameter by which an instance vouches for the request it routes to a flow.
pub(crate) const HOP_PARAM: &str = "sfh";

/// One flow: the transport and the far end's address as this instance sees it (the NAT's
/// public side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowRef {
    pub proto: Proto,
    pub src: SocketAddr,
    /// Taken from a request's source for its dialog (a caller on TCP or behind NAT), not
    /// from a REGISTER: delivery to it is checked like any destination a request chose
    /// (`proxy.deny`), since a UDP source can be forged.
    pub dialog: bool,
}

/// What the top Route says of a flow of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoutedFlow {
    /// No flow token for this instance there.
    None,
    /// A token of ours that checks: this flow.
    Valid(FlowRef),
    /// Our URI with a token that does not check (forged, or written before a restart without
    /// a shared secret file): RFC 5626 5.3 says 430 Flow Failed.
    Invalid,
}

impl Identity {
    /// The token naming `flow`: `u` or `t`, the address in hex, `.`, the MAC. Only URI
    /// token characters (RFC 3261 25.1), so it fits a URI parameter as it is.
    pub(crate) fn flow_token(&self, flow: FlowRef) -> String {
        let body = encode(flow);
        let mac = self.mac(&[b"flow", body.as_bytes()]);
        format!("{body}.{mac}")
    }

    /// The flow a token of ours names, when its MAC checks.
    pub(crate) fn flow_of_token(&self, token: &str) -> Option<FlowRef> {
        let (body, mac) = token.split_once('.')?;
        if body.len() > 40 || !self.mac_ok(mac, &[b"flow", body.as_bytes()]) {
            return None;
        }
        decode(body)
    }

    /// This instance's URI for a flow that arrived over `flow.proto`, with its token: what a
    /// binding records as the flow's owner, and what other instances route to. TCP when we
    /// listen on it (a dead owner is then found at once, by a refused connection).
    pub(crate) fn flow_owner_uri(&self, flow: FlowRef) -> String {
        let proto = if self.listens(Proto::Tcp) {
            Proto::Tcp
        } else {
            Proto::Udp
        };
        format!(
            "{};{FLOW_PARAM}={}",
            self.own_uri(proto),
            self.flow_token(flow)
        )
    }

    /// The `sfh` value an instance routing `msg` to the flow of `token` writes (see the
    /// module doc), for the minute `minute` (Unix seconds / 60).
    pub(crate) fn hop_mac(&self, token: &str, msg: &Message, minute: u64) -> String {
        let (call_id, from_tag, cseq) = hop_fields(msg);
        self.mac(&[
            b"hop",
            token.as_bytes(),
            call_id.as_bytes(),
            from_tag.as_bytes(),
            cseq.as_bytes(),
            &minute.to_be_bytes(),
        ])
    }

    /// Does `mac` vouch for `msg` to the flow of `token` in `minute` (in constant time)?
    fn hop_ok(&self, mac: &str, token: &str, msg: &Message, minute: u64) -> bool {
        super::same_tag(&self.hop_mac(token, msg, minute), mac)
    }

    /// The Route value toward the owner of a flow, vouched for `msg` now.
    pub(crate) fn route_to_owner(&self, owner: &str, msg: &Message) -> String {
        let token = owner_token(owner).unwrap_or_default();
        let minute = crate::clock::now_secs() / 60;
        let mac = self.hop_mac(token, msg, minute);
        format!("<{owner};lr;{HOP_PARAM}={mac}>")
    }

    /// What the Route `uri` (already known to name this instance) says of a flow.
    pub(crate) fn routed_flow(&self, uri: &sip_uri::SipUri) -> RoutedFlow {
        match uri.param(FLOW_PARAM) {
            None => RoutedFlow::None,
            Some(token) => match token.and_then(|t| self.flow_of_token(t)) {
                Some(f) => RoutedFlow::Valid(f),
                None => RoutedFlow::Invalid,
            },
        }
    }
}

/// Is `msg` a request from outside a dialog that another instance of the farm routed to a
/// flow of ours, and vouched for (see the module doc)? The instance that looked the user up
/// applied the auth rules; the gate here lets it reach that UA, nothing else.
pub(crate) fn vouched_to_our_flow(identity: &Identity, msg: &Message) -> bool {
    let Some(top) = super::top_route_to_us(identity, msg) else {
        return false;
    };
    let (Some(Some(token)), Some(Some(mac))) = (top.param(FLOW_PARAM), top.param(HOP_PARAM)) else {
        return false;
    };
    if identity.flow_of_token(token).is_none() {
        return false;
    }
    let minute = crate::clock::now_secs() / 60;
    [minute, minute.saturating_sub(1)]
        .iter()
        .any(|m| identity.hop_ok(mac, token, msg, *m))
}

/// What a hop MAC covers of a request: Call-ID, From tag, CSeq number.
fn hop_fields(msg: &Message) -> (&str, String, &str) {
    let cseq = msg
        .get(&HeaderName::CSeq)
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or("");
    (msg.call_id().unwrap_or(""), super::from_tag(msg), cseq)
}

/// The token in an owner URI (`...;sff=TOKEN`).
fn owner_token(owner: &str) -> Option<&str> {
    owner
        .split(';')
        .find_map(|p| p.strip_prefix(FLOW_PARAM)?.strip_prefix('='))
}

fn encode(flow: FlowRef) -> String {
    let p = match (flow.proto, flow.dialog) {
        (Proto::Udp, false) => 'u',
        (Proto::Tcp, false) => 't',
        (Proto::Udp, true) => 'd',
        (Proto::Tcp, true) => 'e',
    };
    let ip = match flow.src.ip() {
        IpAddr::V4(v4) => u32::from(v4).to_be_bytes().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let hex: String = ip.iter().map(|b| format!("{b:02x}")).collect();
    format!("{p}{hex}{:04x}", flow.src.port())
}

fn decode(body: &str) -> Option<FlowRef> {
    let (proto, dialog) = match body.get(..1)? {
        "u" => (Proto::Udp, false),
        "t" => (Proto::Tcp, false),
        "d" => (Proto::Udp, true),
        "e" => (Proto::Tcp, true),
        _ => return None,
    };
    let rest = body.get(1..)?;
    let (ip, port) = rest.split_at_checked(rest.len().checked_sub(4)?)?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let bytes: Vec<u8> = (0..ip.len() / 2)
        .map(|i| u8::from_str_radix(ip.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(FlowRef {
        proto,
        src: SocketAddr::new(ip, port),
        dialog,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::parse_sip;

    fn id(key: u8) -> Identity {
        Identity::new(
            vec!["example.test".into()],
            "sip:example.test".into(),
            "example.test".into(),
            vec![(Proto::Tcp, "127.0.0.1:5080".parse().unwrap())],
        )
        .with_key([key; 32])
    }

    #[test]
    fn tokens_round_trip_and_only_for_their_writer() {
        let a = id(1);
        for (proto, src) in [
            (Proto::Udp, "192.0.2.7:40000"),
            (Proto::Tcp, "[2001:db8::1]:5061"),
        ] {
            let f = FlowRef {
                proto,
                src: src.parse().unwrap(),
                dialog: proto == Proto::Tcp,
            };
            let t = a.flow_token(f);
            assert!(t.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
            assert_eq!(a.flow_of_token(&t), Some(f));
            assert_eq!(id(2).flow_of_token(&t), None, "another key");
        }
        // A token whose address was edited no longer checks.
        let t = a.flow_token(FlowRef {
            proto: Proto::Udp,
            src: "192.0.2.7:40000".parse().unwrap(),
            dialog: false,
        });
        let forged = t.replacen("c0000207", "c0000208", 1);
        assert_eq!(a.flow_of_token(&forged), None);
        for junk in ["", ".", "u.", "x00.00", "u0102.zz", &"u".repeat(200)] {
            assert_eq!(a.flow_of_token(junk), None, "{junk}");
        }
    }

    #[test]
    fn owner_uri_names_us_with_a_token() {
        let a = id(1);
        let f = FlowRef {
            proto: Proto::Udp,
            src: "192.0.2.7:40000".parse().unwrap(),
            dialog: false,
        };
        let owner = a.flow_owner_uri(f);
        assert!(
            owner.starts_with("sip:127.0.0.1:5080;transport=tcp;sff="),
            "{owner}"
        );
        let uri = parse_sip(&owner).unwrap();
        assert!(a.names_farm(&uri));
        assert_eq!(a.routed_flow(&uri), RoutedFlow::Valid(f));
        let bad = parse_sip("sip:127.0.0.1:5080;transport=tcp;sff=u00.00").unwrap();
        assert_eq!(a.routed_flow(&bad), RoutedFlow::Invalid);
    }
}
