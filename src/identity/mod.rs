//! Who we are: the domains this farm serves, the URI that names the farm, and the addresses of
//! this instance. Three different questions, each answered here once:
//!
//! - [`Identity::serves_domain`]: is this host one of our domains (RFC 3261 10.3 step 1, and
//!   16.5: a Request-URI in one of our domains is looked up in the location service)?
//! - [`Identity::is_local`]: is this host:port one of this instance's own sockets, or what
//!   one advertises (RFC 3261 16.3 item 4 loop detection, 16.7 our Via on a response,
//!   OPTIONS to the instance)? A socket on 0.0.0.0 answers for every address of the host.
//! - [`Identity::names_our_domain`]: one of our domains, with one of our ports or none
//!   (RFC 3261 19.1.4 compares ports: a UA's contact on the IP that is also our domain,
//!   `sip:127.0.0.1:5160`, is that UA, not us).
//! - [`Identity::names_farm`]: does this Route or Request-URI designate the farm (RFC 3261
//!   16.4: a Route naming us is removed; every instance of the farm treats the farm URI as
//!   its own, so in-dialog requests may arrive at any of them)? Without a configured farm
//!   URI, each instance names itself ([`Identity::own_uri`]), which phones reach without DNS.
//! - [`Identity::is_farm_node`]: is this address one of the farm's memcached nodes (where
//!   nothing that comes from SIP may ever be sent)?
//! - [`Identity::flow_token`]: which flow of this instance reaches a UA ([`flow`]).
//! - [`Identity::mac`]: what only the farm can write (its key signs our Via and
//!   Record-Route entries, so that forged responses and forged in-dialog requests are told
//!   from ours).

mod dialog;
mod flow;

pub(crate) use dialog::{RR_PARAM, dialog_tag, from_tag, in_our_dialog};
pub(crate) use flow::{FLOW_PARAM, FlowRef, RoutedFlow, vouched_to_our_flow};

use crate::live::Live;
use crate::sip::uri::{host as uri_host, host_port, parse_sip};
use crate::transport::Proto;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sip_uri::SipUri;
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

/// One socket of this instance, and the address others reach it at.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    pub proto: Proto,
    /// As bound (port 0 already resolved).
    pub addr: SocketAddr,
    /// The advertised host (lower case, IPv6 without brackets) and port: written in our Via
    /// and Record-Route instead of `addr`, and counted as us.
    pub advertise: Option<(String, u16)>,
}

impl From<(Proto, SocketAddr)> for Local {
    fn from((proto, addr): (Proto, SocketAddr)) -> Local {
        Local {
            proto,
            addr,
            advertise: None,
        }
    }
}

/// A configured farm URI: as written in Record-Route, its host (lower case) and its port.
#[derive(Debug, Clone)]
struct FarmUri {
    uri: String,
    host: String,
    port: Option<u16>,
}

#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// Lowercased domains this farm is registrar for.
    domains: Vec<String>,
    /// The URI (no user part, no `;lr`) that names the farm in Record-Route, when one is
    /// configured; else each instance names itself ([`Identity::own_uri`]).
    farm: Option<FarmUri>,
    /// The sockets of this instance.
    locals: Vec<Local>,
    /// Other names of this instance (`--alias`): (lower-cased host, port; None: a URI
    /// without a port, or with one of our sockets' ports).
    aliases: Vec<(String, Option<u16>)>,
    /// Every address of this host: a socket bound to the unspecified address answers for
    /// each of them (and for loopback).
    host_addrs: Vec<IpAddr>,
    /// The host's primary IPv4 and IPv6 addresses: what our Via names for a socket on the
    /// unspecified address with no advertised address.
    primary: (Option<IpAddr>, Option<IpAddr>),
    /// The farm's memcached nodes: nothing is ever sent there (a SIP request is not a
    /// memcached command). A reload (SIGHUP) with another node list swaps them.
    farm_nodes: Live<Vec<SocketAddr>>,
    /// The key of what only the farm can write: the MAC of our Via headers (responses) and of
    /// our Record-Route entries (in-dialog requests).
    key: [u8; 32],
}

impl Identity {
    /// With a configured farm URI (`farm_host` its lower-cased host) and plain sockets: the
    /// short form the unit tests use.
    #[cfg(test)]
    pub(crate) fn new(
        domains: Vec<String>,
        farm_uri: String,
        farm_host: String,
        locals: Vec<(Proto, SocketAddr)>,
    ) -> Identity {
        let mut i =
            Identity::of_instance(domains, None, locals.into_iter().map(Local::from).collect());
        let port = parse_sip(&farm_uri).and_then(|u| u.port());
        i.farm = Some(FarmUri {
            uri: farm_uri,
            host: farm_host,
            port,
        });
        i
    }

    /// This instance: its domains, the farm URI if one is configured (None: Record-Route
    /// names this instance), its sockets with what they advertise.
    pub(crate) fn of_instance(
        domains: Vec<String>,
        farm_uri: Option<String>,
        locals: Vec<Local>,
    ) -> Identity {
        let farm = farm_uri.and_then(|uri| {
            let parsed = parse_sip(&uri)?;
            Some(FarmUri {
                host: uri_host(&parsed).unwrap_or_default(),
                port: parsed.port(),
                uri,
            })
        });
        Identity {
            domains,
            farm,
            locals,
            aliases: Vec::new(),
            host_addrs: Vec::new(),
            primary: (None, None),
            farm_nodes: Live::default(),
            key: [0; 32],
        }
    }

    /// The same identity knowing this host's addresses (for sockets on 0.0.0.0 or [::]):
    /// all of them, and the primary IPv4 and IPv6 ones.
    pub(crate) fn with_host_addresses(
        mut self,
        all: Vec<IpAddr>,
        primary: (Option<IpAddr>, Option<IpAddr>),
    ) -> Identity {
        self.host_addrs = all.into_iter().map(|a| a.to_canonical()).collect();
        self.primary = primary;
        self
    }

    /// The same identity with the farm's key (see [`load_key`]).
    /// Other names this instance answers to (never forwarded to, never written).
    pub(crate) fn with_aliases(mut self, aliases: Vec<(String, Option<u16>)>) -> Identity {
        self.aliases = aliases;
        self
    }

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
        same_tag(&self.mac(parts), tag)
    }

    /// The same identity, knowing the addresses of the farm's memcached nodes.
    pub(crate) fn with_farm_nodes(self, nodes: Vec<SocketAddr>) -> Identity {
        self.set_farm_nodes(nodes);
        self
    }

    /// The farm's nodes as refused now.
    pub(crate) fn farm_nodes(&self) -> Vec<SocketAddr> {
        self.farm_nodes.get().to_vec()
    }

    /// The farm's nodes now are `nodes` (a reload changed the node list).
    pub(crate) fn set_farm_nodes(&self, nodes: Vec<SocketAddr>) {
        self.farm_nodes.set(
            nodes
                .into_iter()
                .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
                .collect(),
        );
    }

    /// Is `dest` a memcached node of the farm? Its exact address, whatever the transport;
    /// and when the node is on a host other than this instance's, any port of it: a cache
    /// host has no SIP service to reach. On this instance's own address (one machine running
    /// memcached, sipfarm and phones) only the node's own port is refused.
    pub(crate) fn is_farm_node(&self, dest: SocketAddr) -> bool {
        let ip = dest.ip().to_canonical();
        let shared = self.locals.iter().any(|l| {
            l.addr.ip().to_canonical() == ip || (l.addr.ip().is_unspecified() && ip.is_loopback())
        });
        self.farm_nodes
            .get()
            .iter()
            .any(|n| n.ip() == ip && (n.port() == dest.port() || !shared))
    }

    /// Is `host` (lowercase, IPv6 without brackets) one of our domains? Any port matches.
    pub(crate) fn serves_domain(&self, host: &str) -> bool {
        self.domains.iter().any(|d| d == host)
    }

    /// Is host:port this instance (port 5060 when absent): one of its sockets, what one
    /// advertises (a name too), or one of its aliases? A socket bound to the unspecified address answers for
    /// loopback and for every address of this host.
    pub(crate) fn is_local(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let named = port;
        let port = port.unwrap_or(5060);
        let ip = host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
        self.locals.iter().any(|l| {
            let advertised = l
                .advertise
                .as_ref()
                .is_some_and(|(h, p)| *p == port && h.eq_ignore_ascii_case(host));
            let bound = l.addr.ip().to_canonical();
            let socket = l.addr.port() == port
                && ip.is_some_and(|ip| {
                    ip == bound
                        || (bound.is_unspecified()
                            && (ip.is_loopback() || self.host_addrs.contains(&ip)))
                });
            advertised || socket
        }) || self.aliases.iter().any(|(h, p)| {
            // Without a port of its own: a URI naming none (SRV finds our port), or one
            // of our sockets' ports; never another service's port on that host.
            h.eq_ignore_ascii_case(host)
                && match p {
                    Some(p) => *p == port,
                    None => named.is_none() || self.locals.iter().any(|l| l.addr.port() == port),
                }
        })
    }

    /// Is this explicit port (None: none written) one a URI naming us may carry: no port,
    /// a port of our sockets or of what they advertise, or the farm URI's (RFC 3261 19.1.4
    /// compares ports: `sip:example.test:5160` is not `sip:example.test`)?
    fn our_port(&self, port: Option<u16>) -> bool {
        let Some(port) = port else {
            return true;
        };
        self.locals
            .iter()
            .any(|l| l.addr.port() == port || l.advertise.as_ref().is_some_and(|(_, p)| *p == port))
            || self.farm.as_ref().is_some_and(|f| f.port == Some(port))
    }

    /// Does `uri` name one of our domains at one of our ports (or none)? A UA's contact on
    /// the host that is also our domain (`sip:127.0.0.1:5160`) does not.
    pub(crate) fn names_our_domain(&self, uri: &SipUri) -> bool {
        self.serves_domain(&uri_host(uri).unwrap_or_default()) && self.our_port(uri.port())
    }

    /// Does `uri` designate the farm: no user part, and the farm host or one of our domains
    /// at one of our ports (or none), or one of this instance's own addresses?
    pub(crate) fn names_farm(&self, uri: &SipUri) -> bool {
        if uri.user().is_some() {
            return false;
        }
        let host = uri_host(uri).unwrap_or_default();
        let farm_host = self.farm.as_ref().is_some_and(|f| f.host == host);
        ((farm_host || self.serves_domain(&host)) && self.our_port(uri.port()))
            || self.is_local(&host, uri.port())
    }

    /// Does this instance listen on `proto`?
    pub(crate) fn listens(&self, proto: Proto) -> bool {
        self.locals.iter().any(|l| l.proto == proto)
    }

    /// The configured farm URI, if any.
    pub(crate) fn farm_uri(&self) -> Option<&str> {
        self.farm.as_ref().map(|f| f.uri.as_str())
    }

    /// The URI our Record-Route names for a side reached over `proto` (no `;lr`): the farm
    /// URI when one is configured, else this instance's own address.
    pub(crate) fn record_route_uri(&self, proto: Proto) -> String {
        match (&self.farm, proto) {
            (Some(f), Proto::Udp) => f.uri.clone(),
            (Some(f), Proto::Tcp) => format!("{};transport=tcp", f.uri),
            (None, _) => self.own_uri(proto),
        }
    }

    /// This instance's reachable SIP URI for `proto` (its advertised address, else its
    /// socket's), e.g. `sip:203.0.113.5:5060` or `sip:203.0.113.5:5060;transport=tcp`; no
    /// `;lr`.
    pub(crate) fn own_uri(&self, proto: Proto) -> String {
        let local = self
            .locals
            .iter()
            .find(|l| l.proto == proto)
            .or(self.locals.first());
        let hp = local.map_or_else(String::new, |l| self.reached_at(l));
        match proto {
            Proto::Udp => format!("sip:{hp}"),
            Proto::Tcp => format!("sip:{hp};transport=tcp"),
        }
    }

    /// The host:port we put in our Via for `proto` toward `dest`: of a socket of that
    /// transport and address family, else any of that family, else the first; what it
    /// advertises when it does.
    pub(crate) fn sent_by(&self, proto: Proto, dest: SocketAddr) -> String {
        let same_family = |l: &&Local| l.addr.is_ipv4() == dest.is_ipv4();
        self.locals
            .iter()
            .find(|l| l.proto == proto && same_family(l))
            .or_else(|| self.locals.iter().find(same_family))
            .or(self.locals.first())
            .map_or_else(|| host_port(dest), |l| self.reached_at(l))
    }

    /// host:port of a socket as others reach it: advertised, else its address; on the
    /// unspecified address, the host's primary address (loopback when it has none).
    fn reached_at(&self, l: &Local) -> String {
        if let Some((host, port)) = &l.advertise {
            return match host.contains(':') {
                true => format!("[{host}]:{port}"),
                false => format!("{host}:{port}"),
            };
        }
        let ip = match l.addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => self
                .primary
                .0
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            IpAddr::V6(v6) if v6.is_unspecified() => self
                .primary
                .1
                .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
            ip => ip,
        };
        host_port(SocketAddr::new(ip, l.addr.port()))
    }
}

/// The top Route of `msg` when it names the farm (this instance, or the farm URI).
fn top_route_to_us(identity: &Identity, msg: &crate::sip::Message) -> Option<SipUri> {
    msg.list(&crate::sip::header::HeaderName::Route)
        .ok()
        .and_then(|r| r.first().and_then(|v| crate::sip::addr::route_uri(v)))
        .filter(|u| identity.names_farm(u))
}

/// Are two MACs equal (in constant time)?
fn same_tag(want: &str, got: &str) -> bool {
    want.len() == got.len() && bool::from(want.as_bytes().ct_eq(got.as_bytes()))
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
mod tests;
