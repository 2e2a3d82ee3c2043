//! Who we are: the domains this farm serves, the URI that names the farm, and the addresses of
//! this instance. Three different questions, each answered here once:
//!
//! - [`Identity::serves_domain`]: is this host one of our domains (RFC 3261 10.3 step 1, and
//!   16.5: a Request-URI in one of our domains is looked up in the location service)?
//! - [`Identity::is_local`]: is this host:port one of this instance's own sockets (RFC 3261
//!   16.3 item 4 loop detection, 16.7 our Via on a response, OPTIONS to the instance)?
//! - [`Identity::names_farm`]: does this Route or Request-URI designate the farm (RFC 3261
//!   16.4: a Route naming us is removed; every instance of the farm treats the farm URI as
//!   its own, so in-dialog requests may arrive at any of them)?
//! - [`Identity::is_farm_node`]: is this address one of the farm's memcached nodes (where
//!   nothing that comes from SIP may ever be sent)?
//! - [`Identity::mac`]: what only the farm can write (its key signs our Via and
//!   Record-Route entries, so that forged responses and forged in-dialog requests are told
//!   from ours).

use crate::sip::Message;
use crate::sip::addr::{NameAddr, route_uri};
use crate::sip::header::HeaderName;
use crate::sip::uri::host as uri_host;
use crate::transport::Proto;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sip_uri::SipUri;
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// Lowercased domains this farm is registrar for.
    domains: Vec<String>,
    /// The URI (no user part, no `;lr`) that names the farm in Record-Route.
    farm_uri: String,
    /// Lowercased host of `farm_uri`.
    farm_host: String,
    /// The sockets of this instance (port 0 already resolved).
    locals: Vec<(Proto, SocketAddr)>,
    /// The farm's memcached nodes: nothing is ever sent there (a SIP request is not a
    /// memcached command).
    farm_nodes: Vec<SocketAddr>,
    /// The key of what only the farm can write: the MAC of our Via headers (responses) and of
    /// our Record-Route entries (in-dialog requests).
    key: [u8; 32],
}

impl Identity {
    pub(crate) fn new(
        domains: Vec<String>,
        farm_uri: String,
        farm_host: String,
        locals: Vec<(Proto, SocketAddr)>,
    ) -> Identity {
        Identity {
            domains,
            farm_uri,
            farm_host,
            locals,
            farm_nodes: Vec::new(),
            key: [0; 32],
        }
    }

    /// The same identity with the farm's key (see [`load_key`]).
    pub(crate) fn with_key(mut self, key: [u8; 32]) -> Identity {
        self.key = key;
        self
    }

    /// A MAC over `parts` under the farm's key: 20 hex digits, fit for a URI or Via param.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        let d = m.finalize().into_bytes();
        d[..10].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Does `tag` match the MAC of `parts` (in constant time)?
    pub(crate) fn mac_ok(&self, tag: &str, parts: &[&[u8]]) -> bool {
        let want = self.mac(parts);
        want.len() == tag.len() && bool::from(want.as_bytes().ct_eq(tag.as_bytes()))
    }

    /// The same identity, knowing the addresses of the farm's memcached nodes.
    pub(crate) fn with_farm_nodes(mut self, nodes: Vec<SocketAddr>) -> Identity {
        self.farm_nodes = nodes
            .into_iter()
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .collect();
        self
    }

    /// Is `dest` a memcached node of the farm? Its exact address, whatever the transport;
    /// and when the node is on a host other than this instance's, any port of it: a cache
    /// host has no SIP service to reach. On this instance's own address (one machine running
    /// memcached, sipfarm and phones) only the node's own port is refused.
    pub(crate) fn is_farm_node(&self, dest: SocketAddr) -> bool {
        let ip = dest.ip().to_canonical();
        let shared = self.locals.iter().any(|(_, l)| {
            l.ip().to_canonical() == ip || (l.ip().is_unspecified() && ip.is_loopback())
        });
        self.farm_nodes
            .iter()
            .any(|n| n.ip() == ip && (n.port() == dest.port() || !shared))
    }

    /// Is `host` (lowercase, IPv6 without brackets) one of our domains? Any port matches.
    pub(crate) fn serves_domain(&self, host: &str) -> bool {
        self.domains.iter().any(|d| d == host)
    }

    /// Is host:port one of this instance's sockets (port 5060 when absent)? A socket bound
    /// to the unspecified address answers for loopback.
    pub(crate) fn is_local(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        let port = port.unwrap_or(5060);
        self.locals.iter().any(|(_, a)| {
            a.port() == port && (a.ip() == ip || (a.ip().is_unspecified() && ip.is_loopback()))
        })
    }

    /// Does `uri` designate the farm: no user part, and the farm host, one of our domains, or
    /// one of our own addresses?
    pub(crate) fn names_farm(&self, uri: &SipUri) -> bool {
        if uri.user().is_some() {
            return false;
        }
        let host = uri_host(uri).unwrap_or_default();
        host == self.farm_host || self.serves_domain(&host) || self.is_local(&host, uri.port())
    }

    /// Does this instance listen on `proto`?
    pub(crate) fn listens(&self, proto: Proto) -> bool {
        self.locals.iter().any(|(p, _)| *p == proto)
    }

    /// This instance's own SIP URI for `proto` (what other instances send to when it holds a
    /// UA's flow): `sip:HOST:PORT`, with `;transport=tcp` for TCP.
    pub(crate) fn own_uri(&self, proto: Proto) -> String {
        let addr = self
            .locals
            .iter()
            .find(|(p, _)| *p == proto)
            .or(self.locals.first())
            .map(|(_, a)| *a);
        let Some(addr) = addr else {
            return String::new();
        };
        let hp = crate::sip::uri::host_port(addr);
        match proto {
            Proto::Udp => format!("sip:{hp}"),
            Proto::Tcp => format!("sip:{hp};transport=tcp"),
        }
    }

    /// The farm URI, as written in our Record-Route.
    pub(crate) fn farm_uri(&self) -> &str {
        &self.farm_uri
    }

    /// The local address we put in our Via for `proto` toward `dest`: a socket of that
    /// transport and address family, else any of that family, else the first.
    pub(crate) fn sent_by(&self, proto: Proto, dest: SocketAddr) -> SocketAddr {
        let same_family = |a: &SocketAddr| a.is_ipv4() == dest.is_ipv4();
        self.locals
            .iter()
            .find(|(p, a)| *p == proto && same_family(a))
            .or_else(|| self.locals.iter().find(|(_, a)| same_family(a)))
            .or(self.locals.first())
            .map_or(dest, |(_, a)| *a)
    }
}

/// The Record-Route parameter that signs a dialog.
pub(crate) const RR_PARAM: &str = "sfr";

/// What our Record-Route carries for a dialog: a MAC over its Call-ID and the caller's tag
/// (the From tag of the request that creates it; in later requests it is the From or the To
/// tag, depending on the direction). Only the farm can write it, so a request that merely
/// claims to be in a dialog of ours (a To tag and a Route naming the farm) is told apart.
pub(crate) fn dialog_tag(identity: &Identity, call_id: &str, caller_tag: &str) -> String {
    identity.mac(&[b"dialog", call_id.as_bytes(), caller_tag.as_bytes()])
}

/// Is `msg` inside a dialog this farm record-routed: a To tag, and a top Route naming the
/// farm whose signature matches the dialog?
pub(crate) fn in_our_dialog(identity: &Identity, msg: &Message) -> bool {
    let to_tag = msg
        .get(&HeaderName::To)
        .and_then(|t| NameAddr::parse(t).ok())
        .and_then(|a| a.tag().map(str::to_owned));
    let Some(to_tag) = to_tag else {
        return false;
    };
    let Some(top) = msg
        .list(&HeaderName::Route)
        .ok()
        .and_then(|r| r.first().and_then(|v| route_uri(v)))
        .filter(|u| identity.names_farm(u))
    else {
        return false;
    };
    let Some(Some(sig)) = top.param(RR_PARAM) else {
        return false;
    };
    let call_id = msg.call_id().unwrap_or("");
    [from_tag(msg), to_tag]
        .iter()
        .any(|tag| identity.mac_ok(sig, &[b"dialog", call_id.as_bytes(), tag.as_bytes()]))
}

pub(crate) fn from_tag(msg: &Message) -> String {
    msg.get(&HeaderName::From)
        .and_then(|f| NameAddr::parse(f).ok())
        .and_then(|a| a.tag().map(str::to_owned))
        .unwrap_or_default()
}

/// The farm's key: derived from the shared secret file (its first line; every instance then
/// verifies what any other wrote), or random for this process when there is none.
pub(crate) fn load_key(secret_file: Option<&std::path::Path>) -> Result<[u8; 32], String> {
    use std::io::Read;
    let mut key = [0u8; 32];
    match secret_file {
        Some(path) => {
            let text =
                std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
            // A key of its own, derived from the secret (the nonces use the secret itself).
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(first)
                .map_err(|_| format!("{}: unusable secret", path.display()))?;
            m.update(b"sipfarm farm key");
            key.copy_from_slice(&m.finalize().into_bytes());
        }
        None => std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| format!("/dev/urandom: {e}"))?,
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::parse_sip;

    fn id() -> Identity {
        Identity::new(
            vec!["example.test".into()],
            "sip:farm.example.test".into(),
            "farm.example.test".into(),
            vec![
                (Proto::Udp, "127.0.0.1:5080".parse().unwrap()),
                (Proto::Tcp, "0.0.0.0:5081".parse().unwrap()),
            ],
        )
    }

    #[test]
    fn three_questions() {
        let i = id();
        assert!(i.serves_domain("example.test"));
        assert!(!i.serves_domain("other.test"));
        assert!(i.is_local("127.0.0.1", Some(5080)));
        assert!(!i.is_local("127.0.0.1", None));
        assert!(
            i.is_local("127.0.0.9", Some(5081)),
            "unspecified answers for loopback"
        );
        assert!(
            !i.is_local("example.test", Some(5080)),
            "a name is not an address"
        );
        let farm = |u: &str| i.names_farm(&parse_sip(u).unwrap());
        assert!(farm("sip:farm.example.test;lr"));
        assert!(farm("sip:example.test"));
        assert!(farm("sip:127.0.0.1:5080;lr"));
        assert!(!farm("sip:bob@example.test"), "a user is not the farm");
        assert!(!farm("sip:elsewhere.test;lr"));
    }

    #[test]
    fn farm_nodes_by_address_or_by_host() {
        let i = id().with_farm_nodes(vec![
            "127.0.0.1:11211".parse().unwrap(),
            "127.0.0.11:11211".parse().unwrap(),
            "192.0.2.5:11211".parse().unwrap(),
        ]);
        let at = |s: &str| i.is_farm_node(s.parse().unwrap());
        assert!(at("127.0.0.1:11211"));
        assert!(
            !at("127.0.0.1:5062"),
            "this instance's host keeps its other ports"
        );
        assert!(
            !at("127.0.0.11:5062"),
            "listening on 0.0.0.0: loopback is this host"
        );
        let alone = Identity::new(
            vec![],
            "sip:f".into(),
            "f".into(),
            vec![(Proto::Udp, "127.0.0.1:5080".parse().unwrap())],
        )
        .with_farm_nodes(vec!["127.0.0.11:11211".parse().unwrap()]);
        assert!(
            alone.is_farm_node("127.0.0.11:5062".parse().unwrap()),
            "another host: every port"
        );
        assert!(
            at("192.0.2.5:11211") && at("192.0.2.5:5060"),
            "a cache host: every port"
        );
        assert!(
            at("[::ffff:192.0.2.5]:5060"),
            "IPv4-mapped is the same host"
        );
        assert!(!at("192.0.2.6:11211"));
    }

    #[test]
    fn sent_by_prefers_transport_and_family() {
        let i = id();
        let v4: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        assert_eq!(i.sent_by(Proto::Tcp, v4).port(), 5081);
        assert_eq!(i.sent_by(Proto::Udp, v4).port(), 5080);
        let v6: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        assert_eq!(
            i.sent_by(Proto::Udp, v6).port(),
            5080,
            "first when no family fits"
        );
    }
}
