//! Hostile TCP peers (issue 10, items 3, 4 and 8): a peer that never reads, thousands of idle
//! connections from one source, slow-loris, and a large message dripped byte by byte. Each
//! attack comes from 127.0.0.2 against a real instance with small `[limits]`; while it runs,
//! a legitimate REGISTER and OPTIONS over UDP from 127.0.0.1 must be answered within 1 s.
//! Each test prints what it measured (memory growth, descriptors, time to close, time to
//! frame) on stderr: `cargo test --test hostile_tcp -- --nocapture`.

mod common;
use common::*;
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const LEGIT_DEADLINE: Duration = Duration::from_secs(1);

/// An instance with a config file holding `server` keys and a `[limits]` section.
struct Target {
    sf: Sipfarm,
    _dir: TempDir,
}

impl Target {
    fn start(server: &str, limits: &str) -> Target {
        let dir = TempDir::new("sipfarm-hostile-");
        let cfg = dir.join("sipfarm.toml");
        std::fs::write(&cfg, format!("[server]\n{server}\n[limits]\n{limits}\n")).unwrap();
        let sf = Sipfarm::start(&["--threads", "1", "--config", cfg.to_str().unwrap()]);
        Target { sf, _dir: dir }
    }

    fn addr(&self) -> SocketAddr {
        self.sf.addr()
    }

    /// A field of /proc/PID/status, in kB.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.sf.proc.pid()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.sf.proc.pid()))
            .expect("/proc/PID/fd")
            .count()
    }

    /// CPU time the instance has used (user + system), from /proc/PID/stat.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.sf.proc.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Fields 14 and 15 (utime, stime), counted from the state (field 3); clock ticks,
        // which are 100 a second on Linux.
        Duration::from_millis((f[11] + f[12]) * 10)
    }

    /// A REGISTER and an OPTIONS over UDP from 127.0.0.1, each answered within 1 s; returns
    /// the slower answer's time.
    fn legit_udp(&self) -> Duration {
        let ua = Ua::new();
        let user = unique("legit");
        let contact = format!("<sip:{user}@127.0.0.1:{}>", ua.port);
        let reg = ua.register(&user, &[&contact], Some(300), &unique("reg"), 1);
        let t = Instant::now();
        let r = ua.try_request(self.addr(), &reg, LEGIT_DEADLINE);
        assert_eq!(r.map(|r| r.code), Some(200), "legit REGISTER over UDP");
        let reg_time = t.elapsed();
        let t = Instant::now();
        let opt = ua.options(&format!("sip:127.0.0.1:{}", self.sf.port));
        let r = ua.try_request(self.addr(), &opt, LEGIT_DEADLINE);
        assert_eq!(r.map(|r| r.code), Some(200), "legit OPTIONS over UDP");
        reg_time.max(t.elapsed())
    }

    /// An OPTIONS over a fresh TCP connection from 127.0.0.1, answered within 1 s.
    fn legit_tcp(&self) -> Duration {
        let t = Instant::now();
        let mut s = TcpStream::connect(self.addr()).expect("legit tcp connect");
        s.set_read_timeout(Some(LEGIT_DEADLINE)).unwrap();
        s.write_all(tcp_options(self.sf.port).as_bytes()).unwrap();
        let r = read_tcp_response(&mut s);
        assert_eq!(r.code, 200, "legit OPTIONS over TCP");
        t.elapsed()
    }

    /// Legitimate UDP traffic, checked every 100 ms while `busy` holds; the slowest answer.
    fn legit_while(&self, busy: impl Fn() -> bool) -> Duration {
        let mut worst = Duration::ZERO;
        while busy() {
            worst = worst.max(self.legit_udp());
            std::thread::sleep(Duration::from_millis(100));
        }
        worst
    }
}

/// A TCP connection from 127.0.0.2 (the attacker's address).
fn attacker(to: SocketAddr) -> std::io::Result<TcpStream> {
    attacker_with(to, |_| {})
}

fn attacker_with(to: SocketAddr, tune: impl FnOnce(&Socket)) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())?;
    tune(&s);
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    s.set_tcp_nodelay(true)?;
    Ok(s.into())
}

/// An OPTIONS to the instance as a TCP client sends it.
fn tcp_options(port: u16) -> String {
    format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2:5070;branch=z9hG4bK{}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@example.test>;tag={}\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        unique("b"),
        unique("t"),
        unique("c")
    )
}

/// The status codes of the next `n` responses on `s` (CRLF pongs skipped), or None if the
/// connection closes or `limit` passes first. The tests' own reader, without panics, so that
/// a test can report what it measured before it fails.
fn next_codes(s: &mut TcpStream, n: usize, limit: Duration) -> Option<Vec<(u16, String)>> {
    let deadline = Instant::now() + limit;
    let (mut out, mut got) = (Vec::<u8>::new(), Vec::new());
    let mut buf = [0u8; 8192];
    while got.len() < n {
        let skip = out
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        out.drain(..skip);
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = Sip::parse(&String::from_utf8_lossy(&out[..end + 4]));
            let body: usize = head
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            if out.len() >= end + 4 + body {
                got.push((head.code()?, head.header("cseq").unwrap_or_default()));
                out.drain(..end + 4 + body);
                continue;
            }
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        s.set_read_timeout(Some(left.max(ms(1)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(k) => out.extend_from_slice(&buf[..k]),
        }
    }
    Some(got)
}

/// Whether the instance closed `s` within `limit` (EOF or reset on a read).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

/// A peer that sends pipelined OPTIONS and never reads the answers (a zero window): the
/// instance must bound what it queues for it and close it, not grow without limit.
#[test]
fn peer_that_never_reads() {
    let t = Target::start("", "tcp_write_timeout = 2\n");
    let base = t.rss_kb();
    let mut s = attacker_with(t.addr(), |s| {
        // A small window, so that the instance's answers back up at once.
        let _ = s.set_recv_buffer_size(4096);
    })
    .unwrap();
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let batch: String = (0..100).map(|_| tcp_options(t.sf.port)).collect();
    let started = Instant::now();
    let (mut sent, mut peak, mut worst) = (0usize, base, Duration::ZERO);
    let mut closed_after = None;
    let mut next_check = Instant::now();
    // Bounded: 20 s, or the instance has grown by twice the allowance (it has failed then).
    while started.elapsed() < Duration::from_secs(20) && peak.saturating_sub(base) < 2 * 64 * 1024 {
        match s.write(batch.as_bytes()) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
        peak = peak.max(t.rss_kb());
        if Instant::now() >= next_check {
            worst = worst.max(t.legit_udp());
            next_check = Instant::now() + Duration::from_millis(200);
        }
    }
    worst = worst.max(t.legit_udp());
    peak = peak.max(t.rss_kb());
    eprintln!(
        "never-reading peer: sent {} KiB in {:?}, VmRSS {} -> peak {} kB (+{} KiB), closed after {:?}, slowest legit answer {:?}",
        sent / 1024,
        started.elapsed(),
        base,
        peak,
        peak.saturating_sub(base),
        closed_after,
        worst
    );
    assert!(
        peak.saturating_sub(base) < 64 * 1024,
        "memory grew by {} KiB",
        peak.saturating_sub(base)
    );
    let closed = closed_after.expect("the never-reading connection was never closed");
    assert!(
        closed < Duration::from_secs(2 + 5),
        "closed after {closed:?}"
    );
}

/// 2,000 idle connections from one source: past the per-source limit they are closed at
/// once, so the instance keeps its descriptors, and others are still served.
#[test]
fn thousands_of_idle_connections() {
    let t = Target::start(
        "tcp_idle_timeout = 60\n",
        "max_connections = 400\nmax_connections_per_source = 100\n",
    );
    let base = t.fds();
    let mut held = Vec::new();
    let mut failed = 0;
    let started = Instant::now();
    for _ in 0..2000 {
        match attacker(t.addr()) {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
    }
    let connected = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let during = t.fds();
    let udp = t.legit_udp();
    let tcp = t.legit_tcp();
    // The last connections were refused: closed by the instance without a word.
    let last = held.last_mut().expect("some attacker connections");
    let refused = closed_within(last, Duration::from_secs(2));
    eprintln!(
        "idle flood: {} connections ({failed} failed) in {connected:?}, instance fds {base} -> {during}, legit udp {udp:?} tcp {tcp:?}, last one closed: {refused}",
        held.len()
    );
    assert!(
        during <= base + 100 + 20,
        "the instance holds {during} descriptors (was {base})"
    );
    assert!(
        refused,
        "a connection past the per-source limit stayed open"
    );
}

/// Slow-loris: a message dripped at one byte every 500 ms is cut off by the
/// partial-message timeout (2 s), while a connection merely idle between messages stays
/// open until the idle timeout (6 s).
#[test]
fn slow_loris_is_cut_off_but_idle_connections_stay() {
    let t = Target::start("tcp_idle_timeout = 6\n", "partial_message_timeout = 2\n");
    let addr = t.addr();
    let port = t.sf.port;
    let loris: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = attacker(addr).unwrap();
                let msg = tcp_options(port);
                let started = Instant::now();
                for b in msg.as_bytes() {
                    if s.write_all(&[*b]).is_err() || closed_within(&mut s, ms(500)) {
                        return Some(started.elapsed());
                    }
                    if started.elapsed() > Duration::from_secs(10) {
                        break;
                    }
                }
                None
            })
        })
        .collect();
    // Meanwhile an idle-between-messages client: a message, 4 s of silence, a message.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(tcp_options(port).as_bytes()).unwrap();
    idle.set_read_timeout(Some(LEGIT_DEADLINE)).unwrap();
    assert_eq!(read_tcp_response(&mut idle).code, 200);
    let quiet_since = Instant::now();
    let worst = t.legit_while(|| !loris.iter().all(|h| h.is_finished()));
    let cut: Vec<Option<Duration>> = loris.into_iter().map(|h| h.join().unwrap()).collect();
    std::thread::sleep(Duration::from_secs(4).saturating_sub(quiet_since.elapsed()));
    let second = idle
        .write_all(tcp_options(port).as_bytes())
        .ok()
        .and_then(|()| next_codes(&mut idle, 1, LEGIT_DEADLINE))
        .map(|c| c[0].0);
    let idle_started = Instant::now();
    let idle_closed = closed_within(&mut idle, Duration::from_secs(6 + 3));
    eprintln!(
        "slow-loris: loris closed after {cut:?}; idle connection answered after the silence: {second:?}, closed by the idle timeout after {:?} ({idle_closed}); slowest legit answer {worst:?}",
        idle_started.elapsed()
    );
    for c in &cut {
        let c = c.expect("a slow-loris connection was never closed");
        assert!(c < Duration::from_secs(2 + 2), "closed after {c:?}");
    }
    assert_eq!(second, Some(200), "the idle connection was not answered");
    assert!(idle_closed, "the idle connection outlived its idle timeout");
    assert!(idle_started.elapsed() > Duration::from_secs(4));
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A 60 KB MESSAGE (most of it header lines, 200 long ones: the parser takes at most 256)
/// written one byte per write as fast as possible:
/// framed right (answered, then a pipelined OPTIONS after it too) in bounded time. Framing
/// that rescans the buffer on every read costs O(n²) here.
#[test]
fn large_message_dripped_byte_by_byte() {
    let t = Target::start("", "");
    let mut msg = format!(
        "MESSAGE sip:nobody@example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2:5070;branch=z9hG4bK{}\r\nMax-Forwards: 70\r\nFrom: <sip:drip@example.test>;tag={}\r\nTo: <sip:nobody@example.test>\r\nCall-ID: {}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n",
        unique("b"),
        unique("t"),
        unique("drip")
    );
    let mut i = 0;
    while msg.len() < 56_000 {
        msg.push_str(&format!("X-Pad-{i:05}: {}\r\n", "p".repeat(260)));
        i += 1;
    }
    let body = "b".repeat(4000);
    msg.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let follow = tcp_options(t.sf.port);
    let mut s = attacker(t.addr()).unwrap();
    let cpu = t.cpu();
    let started = Instant::now();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let all = format!("{msg}{follow}");
        std::thread::spawn(move || {
            for b in all.as_bytes() {
                w.write_all(&[*b]).unwrap();
            }
        })
    };
    let worst = t.legit_while(|| !writer.is_finished());
    writer.join().unwrap();
    let written = started.elapsed();
    // Waits longer than it allows, so that a failure tells how long framing took.
    let mut answers = next_codes(&mut s, 2, Duration::from_secs(60)).unwrap_or_default();
    let framed = started.elapsed();
    // Both requests are handled at once: the OPTIONS may be answered first.
    answers.sort_by_key(|(_, cseq)| !cseq.ends_with("MESSAGE"));
    let used = t.cpu().saturating_sub(cpu);
    eprintln!(
        "drip: {} bytes written in {written:?}, answered after {framed:?}: {answers:?}, instance CPU {used:?}, slowest legit answer {worst:?}",
        msg.len() + follow.len(),
    );
    assert!(framed < Duration::from_secs(10), "framed after {framed:?}");
    let codes: Vec<u16> = answers.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes.len(), 2, "both requests answered");
    assert!(
        ![400, 513].contains(&codes[0]),
        "the MESSAGE got {}",
        codes[0]
    );
    assert_eq!(codes[1], 200, "the OPTIONS after it");
}
