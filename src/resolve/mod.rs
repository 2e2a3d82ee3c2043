//! Where a SIP URI is sent: RFC 3263 section 4 (transport: 4.1, port and address: 4.2,
//! fail-over: 4.3), through the hickory resolver (NAPTR, SRV, A/AAAA).
//!
//! - The host resolved is the URI's `maddr` when it has one (RFC 3261 19.1.1, 16.5; RFC 3263
//!   4), with the port and transport of the URI. The proxy checks what it resolves to like
//!   any other destination a request chose (deny list, the farm's memcached nodes).
//! - The answer is the ordered list of targets to try, at most [`MAX_TARGETS`]: the SRV
//!   records of the first transport that has any, by priority then weight ([`order`],
//!   deterministic so that a request, its retransmissions, its CANCEL and its ACK leave for
//!   the same place, RFC 3261 16.11), each with all its A/AAAA addresses; a target that does
//!   not resolve is skipped. The proxy sends to the first and keeps the others as fall-backs
//!   for when a send fails; over UDP nothing tells a stateless proxy that a target is dead,
//!   so fail-over happens for TCP (connect refused or timed out) and for names that do not
//!   resolve.
//! - Only UDP and TCP are supported; SIPS targets are refused (there is no TLS yet, and a
//!   SIPS URI is never downgraded to a plain transport, RFC 3261 26.2.2, RFC 5630).

mod order;

use crate::transport::Proto;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use sip_uri::SipUri;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A transport address to send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub proto: Proto,
    pub addr: SocketAddr,
    /// The URI named its transport (`transport=`), so it may not be changed for size.
    pub explicit: bool,
}

pub(crate) struct Resolver {
    dns: Option<TokioResolver>,
    /// Lookups under way, and how many may be (names come from requests: an attacker could
    /// otherwise start any number of them).
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: usize,
}

/// At most this many targets for one URI (every address of every SRV target counts): each is
/// one send attempt (a TCP dial of up to 2 s), and one SRV record considered is one address
/// lookup, so a name chosen by a request cannot make it cost more.
pub(crate) const MAX_TARGETS: usize = 4;

/// A whole RFC 3263 resolution (NAPTR, SRV, A/AAAA) never takes longer than this.
const RESOLUTION_DEADLINE: Duration = Duration::from_secs(4);

/// One lookup under way; leaving frees its place.
struct Slot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// RFC 3263 4.1: a transport named by the URI.
fn transport_param(uri: &SipUri) -> Result<Option<Proto>, String> {
    match uri
        .param("transport")
        .flatten()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => Ok(None),
        Some("udp") => Ok(Some(Proto::Udp)),
        Some("tcp") => Ok(Some(Proto::Tcp)),
        Some(other) => Err(format!("transport {other} is not supported")),
    }
}

/// RFC 3261 19.1.1 and 16.5, RFC 3263 4: the host to resolve, `maddr` when the URI has one
/// (lowercased, IPv6 without brackets). A name longer than DNS allows is refused.
fn target_host(uri: &SipUri) -> Result<String, String> {
    let host = match uri.param("maddr") {
        Some(Some(m)) => m.trim().to_ascii_lowercase(),
        Some(None) => return Err("maddr without a value".into()),
        None => crate::sip::uri::host(uri).ok_or("URI without host")?,
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() || host.len() > 253 {
        return Err("bad host or maddr".into());
    }
    Ok(host)
}

impl Resolver {
    /// `server`: the DNS server to ask (`IP:PORT`); None: the system's (resolv.conf). A
    /// machine without any resolver configuration still forwards to IP addresses.
    pub(crate) fn new(server: Option<SocketAddr>, max_in_flight: usize) -> Resolver {
        let builder = match server {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                let cfg = ResolverConfig::from_parts(None, vec![], vec![ns]);
                Some(TokioResolver::builder_with_config(
                    cfg,
                    TokioRuntimeProvider::default(),
                ))
            }
            None => TokioResolver::builder_tokio().ok(),
        };
        let dns = builder.and_then(|mut b| {
            b.options_mut().timeout = Duration::from_secs(2);
            b.options_mut().attempts = 1;
            b.build().ok()
        });
        if dns.is_none() {
            tracing::warn!("no DNS resolver configured: only IP addresses can be forwarded to");
        }
        Resolver {
            dns,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            max_in_flight,
        }
    }

    /// A place for one DNS resolution, or an error when too many are under way.
    fn slot(&self) -> Result<Slot<'_>, String> {
        let n = self
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = Slot(&self.in_flight);
        if n >= self.max_in_flight {
            return Err("too many DNS lookups under way".into());
        }
        Ok(slot)
    }

    fn dns(&self) -> Result<&TokioResolver, String> {
        self.dns
            .as_ref()
            .ok_or_else(|| "no DNS resolver".to_owned())
    }

    /// RFC 3263 4: the transports, ports and addresses for a SIP URI, in the order they are
    /// tried (at most [`MAX_TARGETS`], never none). The host is `maddr` when the URI has
    /// one; the port and transport still come from the URI.
    pub(crate) async fn resolve(&self, uri: &SipUri) -> Result<Vec<Target>, String> {
        if uri
            .scheme()
            .is_some_and(|s| s.as_str().eq_ignore_ascii_case("sips"))
        {
            // Never downgraded to UDP or TCP (RFC 3261 26.2.2): the proxy refuses these
            // before it gets here; this is the last guard.
            return Err("SIPS (TLS) targets are not supported".into());
        }
        let named = transport_param(uri)?;
        let host = target_host(uri)?;
        let explicit = named.is_some();
        // Numeric host, or an explicit port: no NAPTR/SRV (4.1, 4.2).
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![Target {
                proto: named.unwrap_or(Proto::Udp),
                addr: SocketAddr::new(ip, uri.port().unwrap_or(5060)),
                explicit,
            }]);
        }
        let _slot = self.slot()?;
        tokio::time::timeout(
            RESOLUTION_DEADLINE,
            self.resolve_name(uri, host, named, explicit),
        )
        .await
        .map_err(|_| "DNS resolution timed out".to_owned())?
    }

    /// RFC 3263 4 for a host name (the URI's host, or its maddr, is not an IP address).
    async fn resolve_name(
        &self,
        uri: &SipUri,
        host: String,
        named: Option<Proto>,
        explicit: bool,
    ) -> Result<Vec<Target>, String> {
        let on = |proto: Proto, port: u16, explicit: bool| {
            move |ip: IpAddr| Target {
                proto,
                addr: SocketAddr::new(ip, port),
                explicit,
            }
        };
        let proto = named.unwrap_or(Proto::Udp);
        if let Some(port) = uri.port() {
            let ips = self.addresses(&host).await?;
            return Ok(ips.into_iter().map(on(proto, port, explicit)).collect());
        }
        let dns = self.dns()?;
        // NAPTR (only when the URI names no transport), then SRV, then A/AAAA on 5060.
        let mut srv_names: Vec<(Proto, String)> = Vec::new();
        if named.is_none() {
            if let Ok(lookup) = dns.lookup(host.as_str(), RecordType::NAPTR).await {
                let mut naptrs: Vec<(u16, u16, Proto, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::NAPTR(n) => {
                            let service = String::from_utf8_lossy(&n.services).to_ascii_uppercase();
                            let proto = match service.as_str() {
                                "SIP+D2U" => Proto::Udp,
                                "SIP+D2T" => Proto::Tcp,
                                _ => return None,
                            };
                            Some((n.order, n.preference, proto, n.replacement.to_ascii()))
                        }
                        _ => None,
                    })
                    .collect();
                naptrs.sort_by(|a, b| (a.0, a.1, &a.3).cmp(&(b.0, b.1, &b.3)));
                srv_names.extend(naptrs.into_iter().map(|(_, _, p, name)| (p, name)));
            }
        }
        if srv_names.is_empty() {
            for p in named.map_or(vec![Proto::Udp, Proto::Tcp], |p| vec![p]) {
                srv_names.push((p, format!("_sip._{}.{host}", p.as_str())));
            }
        }
        // The transport is the first one with SRV records (4.1); fail-over (4.3) is over its
        // targets, in order, each with all its addresses, while there is room.
        for (proto, name) in srv_names.into_iter().take(MAX_TARGETS) {
            let Ok(lookup) = dns.lookup(name.as_str(), RecordType::SRV).await else {
                continue;
            };
            let records = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_ascii())),
                    _ => None,
                })
                .collect();
            let ordered = order::order_srv(records);
            if ordered.is_empty() {
                continue;
            }
            let mut targets = Vec::new();
            // One address lookup per SRV record considered, so at most MAX_TARGETS of them.
            for (port, target) in ordered.into_iter().take(MAX_TARGETS) {
                match self.addresses(target.trim_end_matches('.')).await {
                    Ok(ips) => targets.extend(ips.into_iter().map(on(proto, port, true))),
                    // A target that does not resolve is skipped: the next one is tried.
                    Err(e) => tracing::debug!(%name, error = %e, "SRV target does not resolve"),
                }
                if targets.len() >= MAX_TARGETS {
                    break;
                }
            }
            targets.truncate(MAX_TARGETS);
            if targets.is_empty() {
                return Err(format!("{name}: no SRV target resolves"));
            }
            return Ok(targets);
        }
        let ips = self.addresses(&host).await?;
        Ok(ips.into_iter().map(on(proto, 5060, explicit)).collect())
    }

    /// A/AAAA: the addresses of a name in the order they are tried (at most
    /// [`MAX_TARGETS`], never none).
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        let lookup = self
            .dns()?
            .lookup_ip(host)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let mut ips = order::order_addresses(lookup.iter().collect());
        ips.truncate(MAX_TARGETS);
        if ips.is_empty() {
            return Err(format!("{host}: no address"));
        }
        Ok(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_uri::UriParse;

    #[test]
    fn dns_lookups_are_bounded() {
        let r = Resolver::new(None, 2);
        let a = r.slot().unwrap();
        let _b = r.slot().unwrap();
        assert!(r.slot().is_err(), "a third lookup at once is refused");
        drop(a);
        assert!(r.slot().is_ok(), "a place freed is usable again");
    }

    fn no_dns() -> Resolver {
        Resolver {
            dns: None,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            max_in_flight: 1,
        }
    }

    async fn one(r: &Resolver, uri: &str) -> Result<Target, String> {
        let all = r.resolve(&SipUri::parse(uri).unwrap()).await?;
        assert_eq!(all.len(), 1, "{uri}: one target");
        Ok(all[0])
    }

    #[tokio::test]
    async fn numeric_targets_need_no_dns() {
        let r = no_dns();
        let t = one(&r, "sip:a@127.0.0.1:5070;transport=tcp").await.unwrap();
        assert_eq!(
            (t.proto, t.addr.port(), t.explicit),
            (Proto::Tcp, 5070, true)
        );
        let t = one(&r, "sip:[::1]").await.unwrap();
        assert_eq!(
            (t.proto, t.addr),
            (Proto::Udp, "[::1]:5060".parse().unwrap())
        );
        assert!(one(&r, "sips:a@127.0.0.1").await.is_err());
        assert!(one(&r, "sip:a@127.0.0.1;transport=sctp").await.is_err());
        assert!(one(&r, "sip:a@example.invalid").await.is_err());
    }

    #[tokio::test]
    async fn maddr_is_resolved_instead_of_the_host() {
        let r = no_dns();
        let t = one(
            &r,
            "sip:a@example.invalid:5070;maddr=127.0.0.9;transport=tcp",
        )
        .await
        .unwrap();
        assert_eq!(
            (t.proto, t.addr),
            (Proto::Tcp, "127.0.0.9:5070".parse().unwrap()),
            "maddr's address, the URI's port and transport"
        );
        let t = one(&r, "sip:a@127.0.0.1;maddr=[::1]").await.unwrap();
        assert_eq!(t.addr, "[::1]:5060".parse().unwrap());
        assert!(one(&r, "sip:a@127.0.0.1;maddr").await.is_err());
        assert!(
            one(&r, "sip:a@127.0.0.1;maddr=example.invalid")
                .await
                .is_err(),
            "a name to resolve, not the host"
        );
    }
}
