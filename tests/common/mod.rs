//! Test harness: real memcached and sipfarm processes on free loopback ports (stopped by pid
//! when dropped), the instances a test runs against (`Setup`), simulated user agents, sipp.
//!
//! - `processes`: free ports, unique tokens, the one guard type for every child process
//!   (SIGTERM, a bounded wait, SIGKILL, wait), signals (freeze, thaw, crash), temp folders;
//! - `ua`: user agents over UDP and TCP, and the tests' own SIP reader (not sipfarm's parser);
//! - `sipp`: the sipp scenarios of bench/sipp, shared with the bench;
//! - `digest`: the tests' own digest client (MD5 and SHA-256, qop=auth);
//! - `baresip`: real softphones (baresip, headless) and the network namespace they run in;
//! - `authfarm`: two instances with authentication on, over nodes away from 127.0.0.1;
//! - `dns`: dnsmasq serving a test's own records (RFC 3263: SRV, A);
//! - `linphone`: linphone's command-line client as a softphone;
//! - `farm`: `scripts/farm` (the one-machine farm behind DNS SRV), DNS lookups, SRV choice.
#![allow(dead_code, unused_imports)]

mod authfarm;
mod baresip;
mod digest;
mod dns;
mod farm;
mod linphone;
mod processes;
mod sipp;
mod ua;

pub use authfarm::*;
pub use baresip::*;
pub use digest::*;
pub use dns::*;
pub use farm::*;
pub use linphone::*;
pub use processes::*;
pub use sipp::*;
pub use ua::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn memcached_bin() -> String {
    std::env::var("MEMCACHED").unwrap_or_else(|_| "memcached".into())
}

pub fn sipfarm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sipfarm")
}

/// A real memcached on a free loopback port.
pub struct Memcached {
    pub port: u16,
    /// The loopback address it listens on (127.0.0.1 unless started with `start_at`).
    pub ip: &'static str,
    proc: Proc,
}

impl Memcached {
    /// On a free port of 127.0.0.1 (another one if the port was taken before memcached could
    /// bind it).
    pub fn start() -> Memcached {
        Self::start_at("127.0.0.1")
    }

    /// On a free port of another loopback address (127.0.0.0/8), away from the user agents
    /// of 127.0.0.1: sipfarm never sends anything to a node's address, whatever the port.
    pub fn start_at(ip: &'static str) -> Memcached {
        Self::start_sized(ip, 64)
    }

    /// On a free port of `ip`, with `-m MEGABYTES` (and `-M`: a full node answers
    /// SERVER_ERROR out of memory).
    pub fn start_sized(ip: &'static str, megabytes: u32) -> Memcached {
        for _ in 0..3 {
            let port = free_port();
            match Self::try_start(ip, port, megabytes) {
                Ok(m) => return m,
                Err(status) => eprintln!("memcached exited ({status}) on {port}; another port"),
            }
        }
        panic!("memcached did not start");
    }

    /// On this port (a node restarted where it was).
    pub fn start_on(port: u16) -> Memcached {
        Self::try_start("127.0.0.1", port, 64)
            .unwrap_or_else(|status| panic!("memcached exited ({status}) on {port}"))
    }

    fn try_start(ip: &'static str, port: u16, megabytes: u32) -> Result<Memcached, String> {
        let line = format!("-l {ip} -p {port} -U 0 -m {megabytes} -M -t 1");
        let mut args: Vec<&str> = line.split(' ').collect();
        if running_as_root() {
            // memcached refuses to run as root unless told which user to be.
            args.extend(["-u", "root"]);
        }
        let mut proc = Proc::start(
            Command::new(memcached_bin())
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "memcached (apt-get install memcached)",
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((ip, port)).is_err() {
            if !proc.running() {
                return Err(exit_text(proc.stop()));
            }
            assert!(
                Instant::now() < deadline,
                "memcached did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Memcached { port, ip, proc })
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGSTOP: the node stays up but answers nothing.
    pub fn freeze(&self) {
        self.proc.freeze();
    }

    pub fn thaw(&self) {
        self.proc.thaw();
    }

    /// kill -9 now, as a crash would.
    pub fn crash(&mut self) {
        self.proc.crash();
    }

    /// Send one text command and read the answer up to its end marker.
    pub fn command(&self, cmd: &str) -> String {
        let mut s = TcpStream::connect((self.ip, self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(cmd.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    let t = String::from_utf8_lossy(&out);
                    if t.ends_with("END\r\n") || t.ends_with("OK\r\n") || t.ends_with("ERROR\r\n") {
                        break;
                    }
                    // One-line answers: meta commands (`mg`), `touch`.
                    let last = t.trim_end().rsplit("\r\n").next().unwrap_or_default();
                    if t.ends_with("\r\n")
                        && ["HD", "EN", "NF", "TOUCHED", "NOT_FOUND"]
                            .iter()
                            .any(|w| last == *w || last.starts_with(&format!("{w} ")))
                    {
                        break;
                    }
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Number of items stored.
    pub fn items(&self) -> u64 {
        self.stat("curr_items")
    }

    /// Number of location records stored: the items but the instances' own keys (the ring
    /// id they write at start, a refill lease).
    pub fn records(&self) -> u64 {
        let own = [
            "sipfarm:ring",
            "sipfarm:lease:refill",
            "sipfarm:lease:renewal",
            "sipfarm:lease:census",
            "sipfarm:census",
        ]
        .iter()
        .filter(|k| self.command(&format!("get {k}\r\n")).starts_with("VALUE "))
        .count() as u64;
        self.items().saturating_sub(own)
    }

    pub fn stat(&self, name: &str) -> u64 {
        let s = self.command("stats\r\n");
        let prefix = format!("STAT {name} ");
        s.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn exit_text(status: Option<std::process::ExitStatus>) -> String {
    status.map_or_else(|| "not reaped".into(), |s| s.to_string())
}

fn running_as_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
}

/// A sipfarm process.
pub struct Sipfarm {
    pub port: u16,
    pub proc: Proc,
}

impl Sipfarm {
    /// Start `sipfarm serve` on udp+tcp 127.0.0.1:<free port> with `--domain example.test`
    /// and the extra arguments; waits until it answers OPTIONS. If it exits first (the port
    /// was taken between `free_port` and its bind), it starts again on another port.
    pub fn start(extra: &[&str]) -> Sipfarm {
        Self::start_logging(extra, None)
    }

    /// Like `start`, its log (standard error) written to `log` when given.
    pub fn start_logging(extra: &[&str], log: Option<&std::path::Path>) -> Sipfarm {
        Self::start_filtered(extra, log, None)
    }

    /// Like `start_logging`, at the log filter `filter` (a SIPFARM_LOG value such as
    /// `sipfarm=info`) whatever the test's environment says.
    pub fn start_logging_at(extra: &[&str], log: &std::path::Path, filter: &str) -> Sipfarm {
        Self::start_filtered(extra, Some(log), Some(filter))
    }

    /// kill -9, then start again on the same port with `extra` (as a supervisor restarts a
    /// crashed instance), logging to `log`.
    pub fn restart(&mut self, extra: &[&str], log: Option<&std::path::Path>) {
        self.proc.crash();
        for _ in 0..20 {
            match Self::try_start(self.port, extra, log, None) {
                Ok(s) => {
                    *self = s;
                    return;
                }
                // The port may linger a moment.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        panic!("sipfarm did not restart on {}", self.port);
    }

    fn start_filtered(
        extra: &[&str],
        log: Option<&std::path::Path>,
        filter: Option<&str>,
    ) -> Sipfarm {
        for _ in 0..3 {
            let port = free_port();
            match Self::try_start(port, extra, log, filter) {
                Ok(s) => return s,
                Err(status) => eprintln!("sipfarm exited ({status}) on {port}; another port"),
            }
        }
        panic!("sipfarm did not start with {extra:?}");
    }

    fn try_start(
        port: u16,
        extra: &[&str],
        log: Option<&std::path::Path>,
        filter: Option<&str>,
    ) -> Result<Sipfarm, String> {
        let listen_udp = format!("udp:127.0.0.1:{port}");
        let listen_tcp = format!("tcp:127.0.0.1:{port}");
        let mut args = vec![
            "serve",
            "--listen",
            &listen_udp,
            "--listen",
            &listen_tcp,
            "--domain",
            "example.test",
        ];
        args.extend_from_slice(extra);
        let mut cmd = Command::new(sipfarm_bin());
        cmd.args(&args)
            .env(
                "SIPFARM_LOG",
                filter.map(str::to_owned).unwrap_or_else(|| {
                    std::env::var("SIPFARM_LOG").unwrap_or_else(|_| "sipfarm=warn".into())
                }),
            )
            .stdout(Stdio::null());
        if let Some(path) = log {
            cmd.stderr(std::fs::File::create(path).expect("sipfarm log file"));
        }
        let proc = Proc::start(&mut cmd, "sipfarm");
        let mut s = Sipfarm { port, proc };
        let ua = Ua::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(r) = ua.try_request(
                s.addr(),
                &ua.options(&format!("sip:127.0.0.1:{port}")),
                Duration::from_millis(200),
            ) {
                // 503: up, but too many memcached nodes are dead for it to be healthy.
                if r.code == 200 || r.code == 503 {
                    return Ok(s);
                }
            }
            if !s.proc.running() {
                return Err(exit_text(s.proc.stop()));
            }
            assert!(Instant::now() < deadline, "sipfarm did not start on {port}");
        }
    }

    /// Start with the memcached farm `nodes`.
    pub fn with_farm(nodes: &[&Memcached], extra: &[&str]) -> Sipfarm {
        let list = nodes.iter().map(|m| m.addr()).collect::<Vec<_>>().join(",");
        let mut args = vec!["--memcached", list.as_str()];
        args.extend_from_slice(extra);
        Sipfarm::start(&args)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Instances under test: one (memory) or two sharing a farm.
pub struct Setup {
    _mc: Vec<Memcached>,
    pub farms: Vec<Sipfarm>,
    _dir: Option<TempDir>,
}

impl Setup {
    pub fn memory(extra: &[&str]) -> Setup {
        Setup {
            _mc: vec![],
            farms: vec![Sipfarm::start(extra)],
            _dir: None,
        }
    }

    pub fn farm(extra: &[&str]) -> Setup {
        let mc = vec![Memcached::start(), Memcached::start()];
        let refs: Vec<&Memcached> = mc.iter().collect();
        let a = Sipfarm::with_farm(&refs, extra);
        let b = Sipfarm::with_farm(&refs, extra);
        Setup {
            _mc: mc,
            farms: vec![a, b],
            _dir: None,
        }
    }

    /// Two instances on one farm: one on the pipelined connection, one on the memcache
    /// crate's client (`memcached.pipeline = false`): they must interoperate.
    pub fn farm_mixed_clients() -> Setup {
        let mc = vec![Memcached::start(), Memcached::start()];
        let refs: Vec<&Memcached> = mc.iter().collect();
        let dir = TempDir::new("sipfarm-mixed-");
        let cfg = dir.join("crate-client.toml");
        std::fs::write(&cfg, "[memcached]\npipeline = false\n").unwrap();
        let a = Sipfarm::with_farm(&refs, &[]);
        let b = Sipfarm::with_farm(&refs, &["--config", cfg.to_str().unwrap()]);
        Setup {
            _mc: mc,
            farms: vec![a, b],
            _dir: Some(dir),
        }
    }

    /// Instance `i` (wrapping), so that tests alternate between instances of a farm.
    pub fn at(&self, i: usize) -> SocketAddr {
        self.farms[i % self.farms.len()].addr()
    }
}

/// The expires parameter of the Contact `<uri>` of a REGISTER answer.
pub fn expires_of(r: &Resp, uri: &str) -> Option<u32> {
    r.headers("contact")
        .iter()
        .find(|c| c.contains(&format!("<{uri}>")))
        .and_then(|c| {
            let i = c.find("expires=")? + 8;
            c[i..]
                .split(|ch: char| !ch.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
}

/// Record-Route values without the farm's dialog signature (`;sfr=HEX`), which differs per
/// dialog; panics when an entry naming the farm lacks it.
pub fn unsigned_rr(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| match v.find(";sfr=") {
            Some(i) => {
                let end = v[i + 1..].find([';', '>']).map_or(v.len(), |j| i + 1 + j);
                format!("{}{}", &v[..i], &v[end..])
            }
            None => {
                assert!(!v.contains("example.test"), "unsigned Record-Route {v}");
                v.clone()
            }
        })
        .collect()
}

/// How many of the records of `users` (user names in example.test) belong on node `n` of
/// `nodes` with `r` replicas (among the first `r` nodes of the key's ring walk).
pub fn records_owned_by(
    nodes: &[&Memcached],
    n: usize,
    r: usize,
    users: impl Iterator<Item = String>,
) -> usize {
    let ring = sipfarm::location::ring::Ring::new(
        &nodes.iter().map(|m| (m.addr(), 1)).collect::<Vec<_>>(),
    );
    users
        .filter(|u| {
            let key = sipfarm::location::record::key("sipfarm:", &format!("{u}@example.test"));
            ring.walk(key.as_bytes()).take(r).any(|x| x == n)
        })
        .count()
}
