//! Issue 11, "real phones across the farm": what a new user tries first. A domain that is the
//! instance's own IP (in-dialog requests to a contact on that IP are not ours), a UDP-only
//! phone receiving a large INVITE, the address in our Via and Record-Route when told to
//! advertise another, and a Record-Route the phone can reach without DNS.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn invite(from: &Phone, to: &str, body: &str) -> String {
    format!(
        "INVITE sip:{to}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{}@example.test>;tag={}\r\nTo: <sip:{to}@example.test>\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        from.ua.port,
        unique("z9hG4bKi"),
        from.user,
        from.tag,
        unique("call"),
        from.contact(),
        body.len()
    )
}

/// bob registered through `a`, alice calling him through `a`: both, and the INVITE as bob
/// gets it.
fn invite_as_bob_gets_it(a: &Sipfarm) -> (Phone, Phone, Sip) {
    let alice = Phone::new(&unique("alice"));
    let bob = Phone::new(&unique("bob"));
    bob.register_via(a.addr());
    alice
        .ua
        .send(a.addr(), &invite(&alice, &bob.user, "v=0\r\n"));
    let got = bob.wait_request("INVITE");
    (alice, bob, got)
}

/// Issue 11 item 1: the domain is the instance's IP (127.0.0.1), sipp's uas registered
/// under it, sipp's uac calling it through the same instance. The uas answers with
/// `Contact: <sip:127.0.0.1:PORT;transport=UDP>` (no user part, another port): the ACK and
/// the BYE go there, not to the location store. 200 calls, zero failed, BYE included.
#[test]
fn sipp_pair_with_the_instance_ip_as_domain() {
    let a = Sipfarm::start(&["--domain", "127.0.0.1"]);
    let dir = TempDir::new("sipfarm-sipp-ip-");
    let uas = registered_uas_in(
        a.addr(),
        "sippuas",
        "127.0.0.1",
        &["-m", "200", "-timeout", "90s"],
    );
    let (args, _) = sipp_call_in(
        a.addr(),
        dir.path(),
        "sippuas",
        "127.0.0.1",
        &TWO_HUNDRED_CALLS,
    );
    let (ok, tail) = run_sipp(&args, Duration::from_secs(120));
    drop(uas);
    assert!(ok, "sipp uac reported failed calls:\n{tail}");
}

/// Item 1 with a user part: an in-dialog BYE (To tag, our Route removed) whose Request-URI
/// is a contact on our own IP but another port goes to that contact, not to the store.
#[test]
fn in_dialog_request_to_a_contact_on_our_ip_goes_there() {
    let a = Sipfarm::start(&["--domain", "127.0.0.1"]);
    let alice = Phone::new(&unique("alice"));
    let bob = Phone::new(&unique("bob"));
    let route = format!("<sip:127.0.0.1:{};lr>", a.port);
    for target in [
        format!("sip:127.0.0.1:{}", bob.ua.port),
        format!("sip:someone@127.0.0.1:{}", bob.ua.port),
    ] {
        let bye = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={};rport\r\nMax-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            alice.ua.port,
            unique("z9hG4bKd"),
            unique("dialog")
        );
        alice.ua.send(a.addr(), &bye);
        let got = bob.wait_request("BYE");
        assert_eq!(got.request_uri(), Some(target.as_str()));
        bob.respond(&got, 200, "OK", "");
        alice.wait_response(200, "BYE");
    }
}

/// Item 5: a phone with no TCP listener (its contact names no transport) gets an INVITE
/// larger than 1,300 bytes over UDP once TCP cannot reach it (RFC 3261 18.1.1).
#[test]
fn udp_only_phone_gets_a_large_invite_over_udp() {
    let a = Sipfarm::start(&[]);
    let alice = Phone::new(&unique("alice"));
    let bob = Phone::new(&unique("bob"));
    bob.register_via(a.addr());
    let sdp = format!("v=0\r\na=x-padding:{}\r\n", "p".repeat(1500));
    alice.ua.send(a.addr(), &invite(&alice, &bob.user, &sdp));
    let got = bob
        .wait(Duration::from_secs(10), |m| {
            m.method() == Some("INVITE") || m.code().is_some()
        })
        .expect("the INVITE");
    assert!(got.text.len() > 1300);
    assert!(got.all("Via")[0].starts_with("SIP/2.0/UDP"), "{}", got.text);
    assert!(got.text.ends_with(&sdp), "body kept");
    bob.respond(&got, 486, "Busy Here", "");
    alice.wait_response(486, "INVITE");
}

/// Item 7: without --farm-uri the Record-Route names this instance's own address, which a
/// phone reaches without DNS; with it, the farm URI.
#[test]
fn record_route_names_the_instance_unless_a_farm_uri_is_set() {
    for farm_uri in [None, Some("sip:farm.example.test")] {
        let dns = free_port().to_string();
        let dns = format!("127.0.0.1:{dns}");
        let mut args = vec!["--dns-server", dns.as_str()];
        if let Some(u) = farm_uri {
            args.extend(["--farm-uri", u]);
        }
        let a = Sipfarm::start(&args);
        let (alice, bob, got) = invite_as_bob_gets_it(&a);
        let want = match farm_uri {
            Some(u) => format!("<{u};lr>"),
            None => format!("<sip:127.0.0.1:{};lr>", a.port),
        };
        assert_eq!(unsigned_rr(&got.all("Record-Route")), vec![want]);
        bob.respond(&got, 486, "Busy Here", "");
        alice.wait_response(486, "INVITE");
    }
}

/// Item 7: a farm URI whose host has no SRV and no address record is warned about at start.
#[test]
fn unresolvable_farm_uri_is_warned_about() {
    let dir = TempDir::new("sipfarm-farmwarn-");
    let log = dir.join("log");
    // A DNS server on loopback that answers nothing: the name cannot be resolved.
    let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = dns.local_addr().unwrap().to_string();
    let _a = Sipfarm::start_logging_at(
        &["--farm-uri", "sip:farm.example.test", "--dns-server", &dns],
        &log,
        "sipfarm=warn",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("farm URI") && text.contains("farm.example.test") {
            break;
        }
        assert!(Instant::now() < deadline, "no warning in:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 4: with --advertise, our Via and Record-Route carry the advertised address, and a
/// request to it is for us (OPTIONS answered, not forwarded to ourselves).
#[test]
fn advertised_address_is_in_via_and_counted_as_us() {
    let a = Sipfarm::start(&["--advertise", "127.0.0.5"]);
    let ua = Ua::new();
    let r = ua.request(a.addr(), &ua.options(&format!("sip:127.0.0.5:{}", a.port)));
    assert_eq!(r.code, 200, "{}", r.text);
    let (_alice, _bob, got) = invite_as_bob_gets_it(&a);
    let via = got.top_via().unwrap();
    assert_eq!(
        (via.host.as_str(), via.port),
        ("127.0.0.5", Some(a.port)),
        "{}",
        got.text
    );
    assert_eq!(
        unsigned_rr(&got.all("Record-Route")),
        vec![format!("<sip:127.0.0.5:{};lr>", a.port)]
    );
}
