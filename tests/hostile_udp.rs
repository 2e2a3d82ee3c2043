//! Hostile traffic over UDP against real sipfarm processes (issue 10): forged responses (the
//! farm must not be a reflector), a flood from one source, garbage and keep-alives, Route
//! ping-pong between two instances, control characters in header values, answer
//! amplification, and the in-flight bound while the location store hangs.
//!
//! Every instance runs with `--threads 1`: one event loop, where a stall stops everything.
//! Attackers send from 127.0.0.2, victims listen on 127.0.0.3, the legitimate client is on
//! 127.0.0.1; while each attack runs, the client sends REGISTERs and OPTIONS and each must
//! be answered within a second. Answers are read with the tests' own reader
//! (tests/common/ua.rs). The tests take turns (one lock): a flood would slow the others'
//! timings. Figures are printed (`--nocapture` shows them) as `figure:` lines.

mod common;
use common::*;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const ATTACKER: &str = "127.0.0.2";
const VICTIM: &str = "127.0.0.3";
/// Every legitimate request must be answered within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

static TURN: Mutex<()> = Mutex::new(());

/// One test at a time (a panicking test does not block the others).
fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// splitmix64: reproducible noise for branches, MACs and garbage.
fn noise(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Call `send(i)` for i in 0..total, spread evenly over `over` (batches every 10 ms).
fn paced(total: usize, over: Duration, mut send: impl FnMut(usize)) {
    let start = Instant::now();
    let steps = (over.as_millis() / 10).max(1) as u32;
    let mut i = 0;
    for step in 1..=steps {
        let upto = total * step as usize / steps as usize;
        while i < upto {
            send(i);
            i += 1;
        }
        let next = start + over * step / steps;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Datagrams that arrive on `sock` within `quiet`.
fn drain(sock: &UdpSocket, quiet: Duration) -> usize {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut n = 0;
    while sock.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// The lines of a log file.
fn log_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One legitimate request: what came back (a final code) and how long it took.
#[derive(Debug, Clone, Copy)]
struct Sample {
    method: &'static str,
    code: Option<u16>,
    took: Duration,
}

/// The legitimate client on 127.0.0.1: refreshes one binding and pings the instance.
struct Legit {
    ua: Ua,
    user: String,
    call_id: String,
    cseq: std::cell::Cell<u32>,
}

impl Legit {
    fn new() -> Legit {
        Legit {
            ua: Ua::new(),
            user: unique("legit"),
            call_id: unique("legit-reg"),
            cseq: std::cell::Cell::new(0),
        }
    }

    fn timed(&self, to: SocketAddr, method: &'static str, msg: &str) -> Sample {
        let t = Instant::now();
        let r = self.ua.try_request(to, msg, ANSWER_WITHIN);
        Sample {
            method,
            code: r.map(|r| r.code),
            took: t.elapsed(),
        }
    }

    fn register(&self, to: SocketAddr) -> Sample {
        self.cseq.set(self.cseq.get() + 1);
        let contact = format!("<sip:{}@127.0.0.1:{}>", self.user, self.ua.port);
        let msg = self.ua.register(
            &self.user,
            &[&contact],
            Some(120),
            &self.call_id,
            self.cseq.get(),
        );
        self.timed(to, "REGISTER", &msg)
    }

    fn options(&self, to: SocketAddr) -> Sample {
        let msg = self.ua.options(&format!("sip:127.0.0.1:{}", to.port()));
        self.timed(to, "OPTIONS", &msg)
    }
}

/// Run `attack` on a thread while the legitimate client sends a REGISTER and an OPTIONS to
/// `to` every 20 ms or so, until the attack is over (one round after it, at least).
fn during<T: Send>(to: SocketAddr, attack: impl FnOnce() -> T + Send) -> (T, Vec<Sample>) {
    let legit = Legit::new();
    std::thread::scope(|s| {
        let h = s.spawn(attack);
        let mut samples = Vec::new();
        loop {
            let over = h.is_finished();
            samples.push(legit.register(to));
            samples.push(legit.options(to));
            if over {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (out, samples)
    })
}

/// Figures of a set of samples: count, median and worst latency.
fn summary(samples: &[Sample]) -> String {
    let mut took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    took.sort();
    let answered = samples.iter().filter(|s| s.code.is_some()).count();
    format!(
        "{answered}/{} answered, median {:?}, worst {:?}",
        samples.len(),
        took.get(took.len() / 2).copied().unwrap_or_default(),
        took.last().copied().unwrap_or_default()
    )
}

/// Every legitimate request was answered within a second, with `want` (200) when given.
fn assert_served(what: &str, samples: &[Sample], want: Option<u16>) {
    eprintln!("figure: {what}: legit {}", summary(samples));
    assert!(samples.len() >= 2, "{what}: no legitimate request was made");
    for s in samples {
        assert!(
            s.code.is_some() && s.took < ANSWER_WITHIN,
            "{what}: a legitimate {} was not answered within {ANSWER_WITHIN:?}: {s:?}",
            s.method
        );
        if let Some(code) = want {
            assert_eq!(s.code, Some(code), "{what}: {s:?}");
        }
    }
}

/// A response built from `req` with these Via values (a phone's answer, or a forgery).
fn response_with_vias(req: &Sip, code: u16, vias: &[String]) -> String {
    let mut out = format!("SIP/2.0 {code} Whatever\r\n");
    for v in vias {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    out.push_str(&format!(
        "From: {}\r\nTo: {};tag=forged\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        req.header("From").unwrap(),
        req.header("To").unwrap(),
        req.header("Call-ID").unwrap(),
        req.header("CSeq").unwrap()
    ));
    out
}

/// A response whose top Via looks like the instance's own (its address, a branch with our
/// prefix) without a valid MAC: none, or a made-up one; `second` is where it should go.
fn forged_response(port: u16, i: usize, second: &str) -> String {
    let n = noise(i as u64);
    let mac = if i % 2 == 1 {
        format!(";sfm={:016x}{:04x}", noise(n), n & 0xffff)
    } else {
        String::new()
    };
    let code = [180, 200, 486][i % 3];
    format!(
        "SIP/2.0 {code} Forged\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bKsf{:016x}.{:016x}{mac}\r\nVia: {second}\r\nFrom: <sip:victim@example.test>;tag=v{i}\r\nTo: <sip:x@example.test>;tag=x{i}\r\nCall-ID: forged{n:x}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        port,
        n,
        noise(n)
    )
}

/// A listener that accepts nothing: backlog 1, `accept` never called until the test looks.
fn never_accepting(ip: &str) -> TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let addr = SocketAddr::new(ip.parse().unwrap(), 0);
    s.bind(&addr.into()).unwrap();
    s.listen(1).unwrap();
    s.into()
}

/// Connections completed toward `l` (taken off its queue without blocking).
fn connections_made(l: &TcpListener) -> usize {
    l.set_nonblocking(true).unwrap();
    let mut n = 0;
    loop {
        match l.accept() {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// An out-of-dialog request from a phone to `user@example.test`.
fn to_user(from: &Phone, method: &str, user: &str, call_id: &str) -> String {
    sip_request(
        &from.ua,
        method,
        &format!("sip:{user}@example.test"),
        &format!("{}@example.test", from.user),
        &format!("<sip:{user}@example.test>"),
        call_id,
        1,
        &unique("z9hG4bK"),
    )
}

/// 2,000 forged responses toward a UDP victim and 200 toward a TCP listener that never
/// accepts: none is relayed, no connection is attempted, the event loop never waits; then a
/// real call still works, and a genuine response redirected to the victim is dropped (the
/// MAC covers where the response goes).
#[test]
fn forged_responses_reach_no_victim_and_stall_nothing() {
    let _turn = turn();
    let dir = TempDir::new("sipfarm-forged-");
    let log = dir.join("sipfarm.log");
    let s = Sipfarm::start_logging_at(&["--threads", "1"], &log, "sipfarm=info");
    let victim = Ua::new_at(VICTIM);
    let tcp_victim = never_accepting(VICTIM);
    let tcp_port = tcp_victim.local_addr().unwrap().port();
    let attacker = Ua::new_at(ATTACKER);
    let (to, port) = (s.addr(), s.port);
    let (sent, samples) = during(to, || {
        let mut sent = (0, 0);
        paced(2200, Duration::from_millis(1500), |i| {
            let second = if i % 11 == 10 {
                sent.1 += 1;
                format!("SIP/2.0/TCP {VICTIM}:{tcp_port};branch=z9hG4bKt{i}")
            } else {
                sent.0 += 1;
                format!(
                    "SIP/2.0/UDP {VICTIM}:{};branch=z9hG4bKu{i};rport",
                    victim.port
                )
            };
            attacker.send(to, &forged_response(port, i, &second));
        });
        sent
    });
    assert_eq!(sent, (2000, 200));
    assert_served("forged responses", &samples, Some(200));
    let relayed = drain(&victim.sock, Duration::from_millis(500));
    let dialled = connections_made(&tcp_victim);
    eprintln!(
        "figure: forged responses: {relayed} relayed to the UDP victim, {dialled} TCP connections to the TCP victim"
    );
    assert_eq!(relayed, 0, "forged responses relayed to the victim");
    assert_eq!(dialled, 0, "the instance connected to the TCP victim");
    // They were dropped for their MAC (not for some other fault of the forgery).
    let lines = log_lines(&log);
    assert!(
        lines.iter().any(|l| l.contains("fails its MAC")),
        "no MAC failure logged: {lines:?}"
    );
    // The probe does see a connection made (so the check above could fail).
    let _probe = std::net::TcpStream::connect(tcp_victim.local_addr().unwrap()).unwrap();
    assert_eq!(connections_made(&tcp_victim), 1);

    // A genuine response still flows: a call through the instance.
    let alice = Phone::new(&unique("alice"));
    let bob = Phone::new(&unique("bob"));
    bob.register_via(s.addr());
    alice.ua.send(
        s.addr(),
        &to_user(&alice, "INVITE", &bob.user, &unique("call")),
    );
    let inv = bob.wait_request("INVITE");
    bob.respond(&inv, 180, "Ringing", "");
    bob.respond(&inv, 200, "OK", "");
    alice.wait_response(180, "INVITE");
    alice.wait_response(200, "INVITE");

    // A genuine forwarded request's top Via (with its valid MAC), the Via below it changed
    // to the victim: dropped. The untouched answer then comes through.
    alice.ua.send(
        s.addr(),
        &to_user(&alice, "MESSAGE", &bob.user, &unique("msg")),
    );
    let msg = bob.wait_request("MESSAGE");
    let mut vias = msg.all("Via");
    assert_eq!(vias.len(), 2, "{}", msg.text);
    assert!(
        vias[0].contains(";sfm="),
        "our Via carries its MAC: {}",
        vias[0]
    );
    vias[1] = format!("SIP/2.0/UDP {VICTIM}:{};branch=z9hG4bKredir", victim.port);
    attacker.send(s.addr(), &response_with_vias(&msg, 200, &vias));
    assert_eq!(
        drain(&victim.sock, Duration::from_millis(500)),
        0,
        "a genuine Via redirected to the victim was relayed"
    );
    assert!(
        alice
            .wait(Duration::from_millis(200), |m| m.code().is_some())
            .is_none(),
        "the redirected answer reached the caller"
    );
    bob.respond(&msg, 200, "OK", "");
    alice.wait_response(200, "MESSAGE");
}
