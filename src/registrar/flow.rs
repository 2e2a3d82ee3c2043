//! Which flow reaches a UA (RFC 5626 3.3 and 5.2; NAT detection in the manner of Kamailio's
//! nathelper `nat_uac_test`, RFC 3581 for what the source address means).
//!
//! A UA is reached at its Contact only when the Contact is where its REGISTER came from over
//! UDP. Otherwise it is reached on the flow it registered over, which one instance holds:
//! its TCP connection (a UA behind NAT, or firewalled, accepts nothing else), or, over UDP,
//! the NAT's public address and port, from the instance's own socket (a port-restricted NAT
//! lets in only packets from the address the UA last sent to). The binding names that
//! instance ([`Flow::owner`]) so that every other instance routes to it.

use crate::clock::hlc_stamp;
use crate::identity::{FlowRef, Identity};
use crate::location::{Flow, LocationStore, StoreError};
use crate::sip::Message;
use crate::sip::uri::Aor;
use crate::sip::uri::{host_ip, parse_sip};
use crate::transport::Proto;
use std::net::{IpAddr, SocketAddr};

/// Flow-Timer (RFC 5626 4.4.1, 5.2): seconds between keep-alives that keep a NAT binding
/// open: UDP NAT bindings often last only 30 s, TCP ones far longer.
pub(crate) const FLOW_TIMER_UDP: u32 = 29;
pub(crate) const FLOW_TIMER_TCP: u32 = 120;

/// How a REGISTER arrived: what decides each contact's flow.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    pub src: SocketAddr,
    pub proto: Proto,
    /// This instance's own SIP URI with the token of this flow (see
    /// [`crate::identity::FlowRef`]): what other instances route to.
    pub owner: String,
    /// The top Via's sent-by is not the source address (RFC 3581: the UA is behind NAT).
    pub via_nat: bool,
    /// The UA supports RFC 5626 outbound (`Supported: outbound`).
    pub outbound: bool,
}

impl Arrival {
    pub(crate) fn of(req: &Message, src: SocketAddr, proto: Proto, identity: &Identity) -> Self {
        let via_nat = req.top_via().is_ok_and(|v| {
            let port = v.port.unwrap_or(5060);
            match v.host_bare().parse::<IpAddr>() {
                // Over TCP the source port is the connection's, ephemeral by nature (RFC 3261
                // 18.1.1: the Via names where the UA listens): only the address tells NAT.
                Ok(ip) if proto == Proto::Tcp => ip.to_canonical() != src.ip().to_canonical(),
                Ok(ip) => SocketAddr::new(ip.to_canonical(), port) != canonical(src),
                // A name in sent-by: nothing to compare (Kamailio's test 2 is about IPs).
                Err(_) => false,
            }
        });
        let outbound = req
            .option_tags(&crate::sip::header::HeaderName::Supported)
            .unwrap_or_default()
            .iter()
            .any(|t| t.eq_ignore_ascii_case("outbound"));
        Arrival {
            src,
            proto,
            owner: identity.flow_owner_uri(FlowRef {
                proto,
                src,
                dialog: false,
            }),
            via_nat,
            outbound,
        }
    }

    /// The flow that reaches the UA at `contact`, or None when the Contact itself does (a UA
    /// with a public address over UDP; a binding with a Path, whose first hop reaches it).
    pub(crate) fn flow_for(&self, contact: &str, has_path: bool, outbound: bool) -> Option<Flow> {
        if has_path {
            return None;
        }
        let nat = self.via_nat || contact_differs(contact, self.src);
        let use_flow = nat || self.proto == Proto::Tcp || (outbound && self.outbound);
        use_flow.then(|| Flow {
            owner: self.owner.clone(),
            nat,
            closed: false,
        })
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Does an IP Contact name another host than the REGISTER's source (a private address
/// behind NAT)? Kamailio's `nat_uac_test` 32 compares the IP only: a UA may send from one
/// port and listen on another (the port test is the Via's, RFC 3581). A Contact with a host
/// name is taken as given.
fn contact_differs(contact: &str, src: SocketAddr) -> bool {
    let Some(uri) = parse_sip(contact) else {
        return false;
    };
    host_ip(&uri).is_some_and(|ip| ip.to_canonical() != src.ip().to_canonical())
}

/// RFC 5626 5.3: the TCP connection from `remote` that `aor` registered over is closed, so
/// its bindings on that flow are marked closed: one behind NAT is unusable (the next binding
/// is tried, or 480) until the UA registers again; one whose Contact reaches the UA by itself
/// is reached there. They stay listed until they expire (Kamailio's `handle_lost_tcp` deletes
/// them; a phone that registered over a short-lived connection keeps its binding here). Only
/// the instance that held the connection runs it. How many were marked.
pub(crate) async fn flow_closed(
    store: &impl LocationStore,
    identity: &Identity,
    aor: &Aor,
    remote: SocketAddr,
) -> Result<usize, StoreError> {
    let source = format!("{}:{remote}", Proto::Tcp.as_str());
    // Ours only: the same address may since have registered through another instance.
    let owner = identity.flow_owner_uri(FlowRef {
        proto: Proto::Tcp,
        src: remote,
        dialog: false,
    });
    let marked = store
        .update(aor, |record, now| {
            let seen = record.bindings.iter().map(|b| b.updated).max().unwrap_or(0);
            let stamp = hlc_stamp(seen);
            let mut n = 0;
            for b in record
                .bindings
                .iter_mut()
                .filter(|b| b.is_live(now) && b.source == source)
            {
                if let Some(f) = b.flow.as_mut().filter(|f| !f.closed && f.owner == owner) {
                    f.closed = true;
                    b.updated = stamp;
                    n += 1;
                }
            }
            Ok::<_, std::convert::Infallible>(n)
        })
        .await?;
    Ok(marked.unwrap_or_else(|never| match never {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(src: &str, proto: Proto, via_nat: bool) -> Arrival {
        Arrival {
            src: src.parse().unwrap(),
            proto,
            owner: "sip:127.0.0.1:5060;transport=tcp".into(),
            via_nat,
            outbound: false,
        }
    }

    #[test]
    fn flows_only_where_the_contact_does_not_reach() {
        let public = arrival("127.0.0.1:5070", Proto::Udp, false);
        assert_eq!(public.flow_for("sip:a@127.0.0.1:5070", false, false), None);
        assert_eq!(public.flow_for("sip:a@phone.test", false, false), None);
        let nat = public
            .flow_for("sip:a@10.0.0.7:5070", false, false)
            .unwrap();
        assert!(nat.nat);
        // Same host, another port: the UA listens there (a port is the Via's test).
        assert_eq!(public.flow_for("sip:a@127.0.0.1:5071", false, false), None);
        // A Path reaches it; TCP always uses the connection; Via says NAT.
        assert_eq!(public.flow_for("sip:a@10.0.0.7", true, false), None);
        let tcp = arrival("127.0.0.1:5070", Proto::Tcp, false);
        assert!(
            !tcp.flow_for("sip:a@127.0.0.1:5070", false, false)
                .unwrap()
                .nat
        );
        let via = arrival("127.0.0.1:5070", Proto::Udp, true);
        assert!(
            via.flow_for("sip:a@127.0.0.1:5070", false, false)
                .unwrap()
                .nat
        );
    }
}
