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

use crate::sip::uri::host as uri_host;
use crate::transport::Proto;
use sip_uri::SipUri;
use std::net::{IpAddr, SocketAddr};

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
    /// The addresses of the farm's memcached nodes: nothing is ever sent there, whatever the
    /// port (a SIP request is not a memcached command).
    farm_nodes: Vec<IpAddr>,
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
        }
    }

    /// The same identity, knowing the addresses of the farm's memcached nodes.
    pub(crate) fn with_farm_nodes(mut self, nodes: Vec<IpAddr>) -> Identity {
        self.farm_nodes = nodes.into_iter().map(|ip| ip.to_canonical()).collect();
        self
    }

    /// Is `ip` one of the farm's memcached nodes?
    pub(crate) fn is_farm_node(&self, ip: IpAddr) -> bool {
        self.farm_nodes.contains(&ip.to_canonical())
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
