//! The location store under hostile traffic (issue 10), with real sipfarm and memcached
//! processes: a REGISTER carrying thousands of contacts, a memcached node that is full.
//! Attackers send from 127.0.0.2, legitimate clients from 127.0.0.1.

mod common;
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Contacts in one flood REGISTER: about 60 KB, under the 64 KB of a datagram.
const FLOOD_CONTACTS: usize = 6000;
/// Flood REGISTERs sent, one after the other.
const FLOODS: usize = 20;
/// How long a legitimate request may wait for its answer while the flood runs.
const LEGIT_WITHIN: Duration = Duration::from_secs(1);

/// Short distinct contact URIs (`sip:<base 36>@h`), so that 6,000 fit one datagram.
fn flood_contacts(n: usize) -> String {
    let name = |mut i: usize| {
        let mut s = Vec::new();
        loop {
            s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36]);
            i /= 36;
            if i == 0 {
                break;
            }
        }
        s.reverse();
        String::from_utf8(s).unwrap()
    };
    (0..n)
        .map(|i| format!("sip:{}@h", name(i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// One REGISTER for `user` with every contact in one comma-separated Contact header.
fn flood_register(port: u16, user: &str, contacts: &str, k: usize) -> String {
    format!(
        "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bKflood{k};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@example.test>;tag=f{k}\r\nTo: <sip:{user}@example.test>\r\nCall-ID: {}\r\nCSeq: 1 REGISTER\r\nContact: {contacts}\r\nContent-Length: 0\r\n\r\n",
        unique("flood")
    )
}

/// The attacker: sends the flood REGISTER `FLOODS` times from 127.0.0.2, each after the
/// answer to the previous one; the code and the time to each answer.
fn attack(to: SocketAddr, victim: &str) -> Vec<(Option<u16>, Duration)> {
    let sock = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    sock.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let contacts = flood_contacts(FLOOD_CONTACTS);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    for k in 0..FLOODS {
        let msg = flood_register(port, victim, &contacts, k);
        assert!(
            (55_000..65_000).contains(&msg.len()),
            "a flood datagram of {} bytes",
            msg.len()
        );
        let started = Instant::now();
        sock.send_to(msg.as_bytes(), to).unwrap();
        let code = sock.recv_from(&mut buf).ok().and_then(|(n, _)| {
            Sip::read(&String::from_utf8_lossy(&buf[..n])).and_then(|m| m.code())
        });
        out.push((code, started.elapsed()));
        if code.is_none() {
            break;
        }
    }
    out
}

/// The victim's contacts, by a query REGISTER.
fn bound(to: SocketAddr, user: &str) -> Vec<String> {
    let ua = Ua::new();
    let r = ua.request(to, &ua.register(user, &[], None, &unique("q"), 1));
    assert_eq!(r.code, 200, "{}", r.text);
    r.contacts()
}

/// While the flood runs, a legitimate REGISTER and OPTIONS from 127.0.0.1 are answered
/// within a second, every flood REGISTER gets 403 at once, and the victim's record is as it
/// was.
fn flood_is_refused_at_once(s: &Sipfarm) {
    let to = s.addr();
    let victim = unique("victim");
    // Not on 127.0.0.1: the farm's nodes are there, and a contact naming one is refused.
    let contact = format!("sip:{victim}@127.0.0.5:5070");
    let ua = Ua::new();
    let r = ua.request(
        to,
        &ua.register(
            &victim,
            &[&format!("<{contact}>")],
            Some(600),
            &unique("c"),
            1,
        ),
    );
    assert_eq!(r.code, 200, "{}", r.text);
    let before = bound(to, &victim);
    assert_eq!(before, vec![contact]);

    let attacker = {
        let victim = victim.clone();
        std::thread::spawn(move || attack(to, &victim))
    };
    let mut legit = 0;
    while !attacker.is_finished() || legit < 2 {
        let msg = if legit % 2 == 0 {
            let user = unique("legit");
            ua.register(
                &user,
                &["<sip:legit@127.0.0.5:6500>"],
                Some(300),
                &unique("c"),
                1,
            )
        } else {
            ua.options(&format!("sip:127.0.0.1:{}", s.port))
        };
        let started = Instant::now();
        let r = ua.try_request(to, &msg, LEGIT_WITHIN);
        let r = r.unwrap_or_else(|| panic!("no answer within {LEGIT_WITHIN:?} during the flood"));
        assert_eq!(r.code, 200, "{}", r.text);
        assert!(started.elapsed() < LEGIT_WITHIN);
        legit += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let answers = attacker.join().unwrap();
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "{} flood REGISTERs of {FLOOD_CONTACTS} contacts: slowest answer {slowest:?}, first {:?}; {legit} legitimate requests answered",
        answers.len(),
        answers[0].1
    );
    assert_eq!(answers.len(), FLOODS, "{answers:?}");
    for (code, took) in &answers {
        assert_eq!(*code, Some(403), "{answers:?}");
        assert!(*took < Duration::from_secs(1), "{answers:?}");
    }
    assert_eq!(bound(to, &victim), before);
}

#[test]
fn contact_flood_memory_store() {
    let s = Sipfarm::start(&["--threads", "1"]);
    flood_is_refused_at_once(&s);
}

#[test]
fn contact_flood_farm() {
    let mc = Memcached::start();
    let s = Sipfarm::with_farm(&[&mc], &["--threads", "1"]);
    flood_is_refused_at_once(&s);
}
