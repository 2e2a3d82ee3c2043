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
    // Stored, never contacted: an address nothing listens on.
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

/// Fill a memcached started with little memory (`-M`) until every slab class refuses: from
/// then on every write gets `SERVER_ERROR out of memory`, reads still work. The items stored.
fn fill(mc: &Memcached) -> usize {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect((mc.ip, mc.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let (mut n, mut size, mut line) = (0, 8usize, String::new());
    // Sizes 20% apart, finer than memcached's slab classes (25%): every class fills.
    while size < 20_000 {
        let value = "x".repeat(size);
        loop {
            // One write per command (no Nagle wait on its last bytes).
            w.write_all(format!("ms fill{n} {size} T0\r\n{value}\r\n").as_bytes())
                .unwrap();
            n += 1;
            line.clear();
            r.read_line(&mut line).unwrap();
            if !line.starts_with("HD") {
                assert!(line.contains("out of memory"), "{line}");
                break;
            }
        }
        size = size * 6 / 5 + 1;
    }
    n
}

/// Users of example.test whose record lives on node `i` of `nodes` (first owner).
fn users_on(nodes: &[&Memcached], i: usize, n: usize) -> Vec<String> {
    use sipfarm::location::{record, ring::Ring};
    let ring = Ring::new(&nodes.iter().map(|m| (m.addr(), 1)).collect::<Vec<_>>());
    (0..)
        .map(|k| unique(&format!("full{k}x")))
        .filter(|u| {
            let key = record::key("sipfarm:", &format!("{u}@example.test"));
            ring.walk(key.as_bytes()).next() == Some(i)
        })
        .take(n)
        .collect()
}

/// REGISTERs sent at once in `full_memcached_is_not_a_dead_node`.
const BURST: usize = 10;

fn register(ua: &Ua, user: &str) -> String {
    let contact = format!("<sip:{user}@127.0.0.5:5070>");
    ua.register(user, &[&contact], Some(600), &unique("c"), 1)
}

/// REGISTER every user at once (one datagram each, then every answer), each answer within
/// 5 s.
fn at_once(ua: &Ua, to: SocketAddr, users: &[String]) -> Vec<Resp> {
    let msgs: Vec<String> = users.iter().map(|u| register(ua, u)).collect();
    for m in &msgs {
        ua.send(to, m);
    }
    let mut call_ids: Vec<String> = msgs
        .iter()
        .filter_map(|m| Sip::parse(m).header("call-id"))
        .collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !call_ids.is_empty() {
        let left = deadline.checked_duration_since(Instant::now());
        let text = left
            .and_then(|l| ua.recv(l))
            .unwrap_or_else(|| panic!("no answer for {call_ids:?}"));
        let m = Sip::parse(&text);
        let id = m.header("call-id").unwrap_or_default();
        if let (Some(code), Some(i)) = (m.code(), call_ids.iter().position(|c| *c == id)) {
            call_ids.swap_remove(i);
            out.push(Resp { code, text });
        }
    }
    out
}

/// A memcached node that is full answers `SERVER_ERROR out of memory` to every write. That is
/// an answer, not a dead node: the REGISTERs it should store get 500 with Retry-After (they
/// are not moved to another node), reads on it go on, no breaker opens, no refill starts.
#[test]
fn full_memcached_is_not_a_dead_node() {
    let full = Memcached::start_sized("127.0.0.1", 2);
    let spare = Memcached::start();
    let nodes = [&full, &spare];
    let list = format!("{},{}", full.addr(), spare.addr());
    let dir = TempDir::new("sipfarm-full-");
    let log = dir.join("sipfarm.log");
    let args = ["--memcached", &list, "--replicas", "1", "--threads", "1"];
    let s = Sipfarm::start_logging(&args, Some(&log));
    let users = users_on(&nodes, 0, 1 + 2 * BURST);
    let ua = Ua::new();
    let r = ua.request(s.addr(), &register(&ua, &users[0]));
    assert_eq!(r.code, 200, "{}", r.text);

    let stored = fill(&full);
    eprintln!("the 2 MB node took {stored} items before refusing every size");
    // Bursts, so that writes fail back to back (reads in between would hide a breaker that
    // counts error answers as failures); then a pause of a few probes, and again.
    for burst in users[1..].chunks(BURST) {
        for r in at_once(&ua, s.addr(), burst) {
            assert_eq!(r.code, 500, "{}", r.text);
            assert_eq!(r.headers("Retry-After"), ["5"], "{}", r.text);
        }
        std::thread::sleep(Duration::from_millis(1200));
    }
    // Reads on the full node go on.
    assert_eq!(
        bound(s.addr(), &users[0]),
        [format!("sip:{}@127.0.0.5:5070", users[0])]
    );
    // A breaker opened by the bursts would have closed again at a probe (every 500 ms) and
    // started a refill by now.
    let status = std::process::Command::new(sipfarm_bin())
        .args(["farm", "status", "--memcached", &list])
        .args(["--instance", &s.addr().to_string()])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("dead now: none"), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    for sign in ["marked dead", "refilling", "refill done"] {
        assert!(!text.contains(sign), "'{sign}' in the log:\n{text}");
    }
}

/// How many lines of the log at `path` contain `sign`.
fn log_count(path: &std::path::Path, sign: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter(|l| l.contains(sign)).count()
}

/// Wait (at most 10 s) until the log has `n` lines containing `sign`.
fn wait_log(path: &std::path::Path, sign: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_count(path, sign) < n {
        assert!(Instant::now() < deadline, "no {n} x '{sign}' in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node whose breaker flaps (frozen until it is marked dead, thawed until it is back,
/// three times) is refilled once, not at every comeback.
#[test]
fn a_flapping_node_is_refilled_once_per_interval() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let list = format!("{},{}", a.addr(), b.addr());
    let dir = TempDir::new("sipfarm-flap-");
    let log = dir.join("sipfarm.log");
    let s = Sipfarm::start_logging(&["--memcached", &list], Some(&log));
    let ua = Ua::new();
    for i in 0..20 {
        let r = ua.request(s.addr(), &register(&ua, &format!("flap{i}")));
        assert_eq!(r.code, 200, "{}", r.text);
    }
    for flap in 1..=3 {
        a.freeze();
        wait_log(&log, "marked dead", flap);
        a.thaw();
        wait_log(&log, "is back", flap);
    }
    wait_log(&log, "refill done", 1);
    std::thread::sleep(Duration::from_millis(500));
    let refills = log_count(&log, "refilling it");
    eprintln!("3 flaps: {refills} refills");
    assert_eq!(refills, 1, "{}", std::fs::read_to_string(&log).unwrap());
}
