//! Where a SIP URI is sent: RFC 3263 section 4 (transport: 4.1, port and address: 4.2),
//! through the hickory resolver (NAPTR, SRV, A/AAAA), with deterministic choices so that a
//! request, its retransmissions, its CANCEL and its ACK leave for the same place (RFC 3261
//! 16.11). Only UDP and TCP are supported; TLS/SIPS targets are refused.

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

/// Deterministic SRV choice: lowest priority, then highest weight, then target and port.
pub(crate) fn pick_srv(mut records: Vec<(u16, u16, u16, String)>) -> Option<(u16, String)> {
    records.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.cmp(&a.1))
            .then(a.3.cmp(&b.3))
            .then(a.2.cmp(&b.2))
    });
    records
        .into_iter()
        .next()
        .map(|(_, _, port, target)| (port, target))
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

    /// RFC 3263 4: the transport, port and address for a SIP URI.
    pub(crate) async fn resolve(&self, uri: &SipUri) -> Result<Target, String> {
        if uri
            .scheme()
            .is_some_and(|s| s.as_str().eq_ignore_ascii_case("sips"))
        {
            return Err("SIPS (TLS) targets are not supported".into());
        }
        let named = transport_param(uri)?;
        let host = crate::sip::uri::host(uri).ok_or("URI without host")?;
        let explicit = named.is_some();
        // Numeric host, or an explicit port: no NAPTR/SRV (4.1, 4.2).
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Target {
                proto: named.unwrap_or(Proto::Udp),
                addr: SocketAddr::new(ip, uri.port().unwrap_or(5060)),
                explicit,
            });
        }
        let _slot = self.slot()?;
        tokio::time::timeout(
            RESOLUTION_DEADLINE,
            self.resolve_name(uri, host, named, explicit),
        )
        .await
        .map_err(|_| "DNS resolution timed out".to_owned())?
    }

    /// RFC 3263 4 for a host name (the URI's host is not an IP address).
    async fn resolve_name(
        &self,
        uri: &SipUri,
        host: String,
        named: Option<Proto>,
        explicit: bool,
    ) -> Result<Target, String> {
        if let Some(port) = uri.port() {
            let ip = self.address(&host).await?;
            return Ok(Target {
                proto: named.unwrap_or(Proto::Udp),
                addr: SocketAddr::new(ip, port),
                explicit,
            });
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
        for (proto, name) in srv_names {
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
            if let Some((port, target)) = pick_srv(records) {
                let ip = self.address(target.trim_end_matches('.')).await?;
                return Ok(Target {
                    proto,
                    addr: SocketAddr::new(ip, port),
                    explicit: true,
                });
            }
        }
        let ip = self.address(&host).await?;
        Ok(Target {
            proto: named.unwrap_or(Proto::Udp),
            addr: SocketAddr::new(ip, 5060),
            explicit,
        })
    }

    /// A/AAAA, the lowest address first so that every instance picks the same one.
    pub(crate) async fn address(&self, host: &str) -> Result<IpAddr, String> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(ip);
        }
        let lookup = self
            .dns()?
            .lookup_ip(host)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let mut ips: Vec<IpAddr> = lookup.iter().collect();
        ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        ips.into_iter()
            .next()
            .ok_or_else(|| format!("{host}: no address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_lookups_are_bounded() {
        let r = Resolver::new(None, 2);
        let a = r.slot().unwrap();
        let _b = r.slot().unwrap();
        assert!(r.slot().is_err(), "a third lookup at once is refused");
        drop(a);
        assert!(r.slot().is_ok(), "a place freed is usable again");
    }
    use sip_uri::UriParse;

    #[test]
    fn srv_choice_is_deterministic() {
        let recs = vec![
            (20, 100, 5060, "c.example.".to_string()),
            (10, 10, 5062, "b.example.".to_string()),
            (10, 50, 5061, "a.example.".to_string()),
            (10, 50, 5063, "0.example.".to_string()),
        ];
        let mut rev = recs.clone();
        rev.reverse();
        assert_eq!(pick_srv(recs), Some((5063, "0.example.".into())));
        assert_eq!(pick_srv(rev), Some((5063, "0.example.".into())));
    }

    #[tokio::test]
    async fn numeric_targets_need_no_dns() {
        let r = Resolver {
            dns: None,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            max_in_flight: 1,
        };
        let t = r
            .resolve(&SipUri::parse("sip:a@127.0.0.1:5070;transport=tcp").unwrap())
            .await
            .unwrap();
        assert_eq!(
            (t.proto, t.addr.port(), t.explicit),
            (Proto::Tcp, 5070, true)
        );
        let t = r
            .resolve(&SipUri::parse("sip:[::1]").unwrap())
            .await
            .unwrap();
        assert_eq!(
            (t.proto, t.addr),
            (Proto::Udp, "[::1]:5060".parse().unwrap())
        );
        assert!(
            r.resolve(&SipUri::parse("sips:a@127.0.0.1").unwrap())
                .await
                .is_err()
        );
        assert!(
            r.resolve(&SipUri::parse("sip:a@127.0.0.1;transport=sctp").unwrap())
                .await
                .is_err()
        );
        assert!(
            r.resolve(&SipUri::parse("sip:a@example.invalid").unwrap())
                .await
                .is_err()
        );
    }
}
