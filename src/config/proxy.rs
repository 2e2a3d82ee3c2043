//! The `[proxy]` section: Record-Route and the farm's URI, the outbound proxy, the DNS server.

use super::file::FileProxy;
use super::origin::Source;
use super::{Overrides, ProxyConfig};
use crate::sip::uri;
use std::net::{IpAddr, SocketAddr};

pub(super) fn resolve(o: &Overrides, f: &FileProxy, src: Source) -> Result<ProxyConfig, String> {
    let farm_uri = farm_uri(o, f, src)?;
    let (outbound_proxy, origin) = src.pick(
        "--outbound-proxy",
        o.outbound_proxy.as_deref(),
        "proxy.outbound_proxy",
        f.outbound_proxy.as_deref(),
    );
    if let Some(ob) = outbound_proxy {
        if uri::parse_sip(ob).is_none() {
            return Err(format!("{origin}: '{ob}' is not a sip: URI"));
        }
    }
    Ok(ProxyConfig {
        record_route: !o.no_record_route && f.record_route.unwrap_or(true),
        farm_uri,
        outbound_proxy: outbound_proxy.map(str::to_owned),
        dns_server: dns_server(o, f, src)?,
        deny: super::auth::networks(f.deny.as_deref().unwrap_or_default(), src, "proxy.deny")?,
    })
}

/// The farm URI if one is configured (`;lr` dropped: we add it). None: each instance names
/// itself in Record-Route (its advertised address), which needs no DNS.
fn farm_uri(o: &Overrides, f: &FileProxy, src: Source) -> Result<Option<String>, String> {
    let (given, origin) = src.pick(
        "--farm-uri",
        o.farm_uri.as_deref(),
        "proxy.farm_uri",
        f.farm_uri.as_deref(),
    );
    let Some(farm_uri) = given else {
        return Ok(None);
    };
    uri::parse_sip(farm_uri)
        .filter(|u| u.user().is_none())
        .ok_or_else(|| format!("{origin}: '{farm_uri}' must be a sip: URI without user part"))?;
    Ok(Some(farm_uri.trim_end_matches(";lr").to_owned()))
}

/// `IP:PORT`, or `IP` for port 53.
fn dns_server(o: &Overrides, f: &FileProxy, src: Source) -> Result<Option<SocketAddr>, String> {
    let (given, origin) = src.pick(
        "--dns-server",
        o.dns_server.as_deref(),
        "proxy.dns_server",
        f.dns_server.as_deref(),
    );
    let Some(d) = given else {
        return Ok(None);
    };
    d.parse::<SocketAddr>()
        .or_else(|_| d.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map(Some)
        .map_err(|_| format!("{origin}: '{d}' is not IP or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Source = Source::new("FILE");

    #[test]
    fn defaults_and_flags() {
        let f = FileProxy::default();
        let p = resolve(&Overrides::default(), &f, SRC).unwrap();
        assert_eq!((p.farm_uri, p.record_route), (None, true));
        let o = Overrides {
            farm_uri: Some("sip:farm.test;lr".into()),
            no_record_route: true,
            dns_server: Some("10.0.0.53".into()),
            ..Default::default()
        };
        let p = resolve(&o, &f, SRC).unwrap();
        assert_eq!(
            (p.farm_uri.as_deref(), p.record_route),
            (Some("sip:farm.test"), false)
        );
        assert_eq!(p.dns_server, Some(([10, 0, 0, 53], 53).into()));
    }

    #[test]
    fn errors() {
        let err = |o: Overrides, f: FileProxy| resolve(&o, &f, SRC).unwrap_err();
        let flag = |farm: Option<&str>, ob: Option<&str>, dns: Option<&str>| Overrides {
            farm_uri: farm.map(str::to_owned),
            outbound_proxy: ob.map(str::to_owned),
            dns_server: dns.map(str::to_owned),
            ..Default::default()
        };
        let file = |farm: Option<&str>, ob: Option<&str>, dns: Option<&str>| FileProxy {
            farm_uri: farm.map(str::to_owned),
            outbound_proxy: ob.map(str::to_owned),
            dns_server: dns.map(str::to_owned),
            ..Default::default()
        };
        for (e, want) in [
            (
                err(flag(Some("sip:u@x"), None, None), file(None, None, None)),
                "--farm-uri: 'sip:u@x' must be a sip: URI without user part",
            ),
            (
                err(flag(None, Some("nope"), None), file(None, None, None)),
                "--outbound-proxy: 'nope' is not a sip: URI",
            ),
            (
                err(flag(None, None, Some("nope")), file(None, None, None)),
                "--dns-server: 'nope' is not IP or IP:PORT",
            ),
            (
                err(flag(None, None, None), file(Some("http://x"), None, None)),
                "FILE: key 'proxy.farm_uri': 'http://x' must be a sip: URI without user part",
            ),
            (
                err(flag(None, None, None), file(None, Some("nope"), None)),
                "FILE: key 'proxy.outbound_proxy': 'nope' is not a sip: URI",
            ),
            (
                err(flag(None, None, None), file(None, None, Some("nope"))),
                "FILE: key 'proxy.dns_server': 'nope' is not IP or IP:PORT",
            ),
        ] {
            assert_eq!(e, want);
        }
    }
}
