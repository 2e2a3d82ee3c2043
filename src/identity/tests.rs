//! Unit tests of the instance's identity: which names and addresses are us, what we write.

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
    assert!(farm("sip:example.test:5081"), "one of our ports");
    assert!(
        !farm("sip:example.test:5160"),
        "19.1.4: another port is not us"
    );
    assert!(!farm("sip:farm.example.test:5160;lr"));
    let ours = |u: &str| i.names_our_domain(&parse_sip(u).unwrap());
    assert!(ours("sip:bob@example.test") && ours("sip:example.test:5080"));
    assert!(!ours("sip:example.test:5160") && !ours("sip:other.test"));
}

/// The domain is the instance's own IP (small setups): a UA's contact on that IP at
/// another port is that UA.
#[test]
fn domain_that_is_our_ip_and_a_contact_on_it() {
    let i = Identity::of_instance(
        vec!["127.0.0.1".into()],
        None,
        vec![(Proto::Udp, "127.0.0.1:5080".parse().unwrap()).into()],
    );
    let farm = |u: &str| i.names_farm(&parse_sip(u).unwrap());
    assert!(farm("sip:127.0.0.1:5080;lr") && farm("sip:127.0.0.1"));
    assert!(!farm("sip:127.0.0.1:5160"));
    assert_eq!(i.farm_uri(), None);
    assert_eq!(i.record_route_uri(Proto::Udp), "sip:127.0.0.1:5080");
}

/// An alias (the name an SRV record gives this instance) is us, at any port unless it
/// names one, and is never what we write.
#[test]
fn aliases_are_us() {
    let i = Identity::of_instance(
        vec!["example.test".into()],
        None,
        vec![(Proto::Udp, "127.0.0.12:5060".parse().unwrap()).into()],
    )
    .with_aliases(vec![
        ("sip2.example.test".into(), None),
        ("edge.example.test".into(), Some(5070)),
    ]);
    assert!(i.is_local("SIP2.example.test", None) && i.is_local("sip2.example.test", Some(5060)));
    assert!(
        !i.is_local("sip2.example.test", Some(5061)),
        "not a port of ours"
    );
    assert!(i.is_local("edge.example.test", Some(5070)) && !i.is_local("edge.example.test", None));
    assert!(!i.is_local("sip1.example.test", None));
    assert!(i.names_farm(&parse_sip("sip:sip2.example.test;transport=udp;lr").unwrap()));
    assert_eq!(i.own_uri(Proto::Udp), "sip:127.0.0.12:5060");
}

/// Advertised addresses are written in Via and Record-Route and counted as us; on
/// 0.0.0.0 without one, the primary address is written and every host address is us.
#[test]
fn advertised_and_unspecified_addresses() {
    let adv = Local {
        proto: Proto::Udp,
        addr: "0.0.0.0:5060".parse().unwrap(),
        advertise: Some(("sip.example.test".into(), 5070)),
    };
    let tcp = Local::from((Proto::Tcp, "0.0.0.0:5060".parse().unwrap()));
    let i = Identity::of_instance(vec!["example.test".into()], None, vec![adv, tcp])
        .with_host_addresses(
            vec!["10.0.0.7".parse().unwrap(), "192.0.2.9".parse().unwrap()],
            (Some("10.0.0.7".parse().unwrap()), None),
        );
    let out: SocketAddr = "198.51.100.1:5060".parse().unwrap();
    assert_eq!(i.sent_by(Proto::Udp, out), "sip.example.test:5070");
    assert_eq!(i.sent_by(Proto::Tcp, out), "10.0.0.7:5060");
    assert_eq!(i.own_uri(Proto::Udp), "sip:sip.example.test:5070");
    assert_eq!(i.own_uri(Proto::Tcp), "sip:10.0.0.7:5060;transport=tcp");
    assert_eq!(
        i.record_route_uri(Proto::Tcp),
        "sip:10.0.0.7:5060;transport=tcp"
    );
    assert!(i.is_local("SIP.example.test", Some(5070)));
    assert!(!i.is_local("sip.example.test", Some(5060)));
    assert!(i.is_local("192.0.2.9", None), "any address of the host");
    assert!(i.is_local("127.0.0.1", Some(5060)));
    assert!(!i.is_local("192.0.2.10", None));
    let farm = |u: &str| i.names_farm(&parse_sip(u).unwrap());
    assert!(farm("sip:10.0.0.7;lr") && farm("sip:sip.example.test:5070;lr"));
    assert!(farm("sip:example.test:5070"), "an advertised port is ours");
    let with_farm = Identity::new(
        vec![],
        "sip:farm.example.test:5099".into(),
        "farm.example.test".into(),
        vec![(Proto::Udp, "127.0.0.1:5080".parse().unwrap())],
    );
    assert_eq!(with_farm.farm_uri(), Some("sip:farm.example.test:5099"));
    assert_eq!(
        with_farm.record_route_uri(Proto::Tcp),
        "sip:farm.example.test:5099;transport=tcp"
    );
    assert!(with_farm.names_farm(&parse_sip("sip:farm.example.test:5099").unwrap()));
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
    assert_eq!(
        i.sent_by(Proto::Tcp, v4),
        "127.0.0.1:5081",
        "0.0.0.0: primary"
    );
    assert_eq!(i.sent_by(Proto::Udp, v4), "127.0.0.1:5080");
    let v6: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
    assert_eq!(
        i.sent_by(Proto::Udp, v6),
        "127.0.0.1:5080",
        "first when no family fits"
    );
}
