//! `scripts/farm` driven from a test: a farm of memcached nodes, sipfarm instances on
//! 127.0.0.11, 127.0.0.12, ... (port 5060) and dnsmasq for its domain, with its state (pids,
//! logs) in a folder of the test's own. Every test using it runs one farm at a time: the
//! addresses are fixed. `down` (or drop) stops exactly what `up` started.

use super::processes::TempDir;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

static ONE_FARM: Mutex<()> = Mutex::new(());

pub struct ScriptFarm {
    pub dir: TempDir,
    /// What `up` printed.
    pub out: String,
    pub dns: SocketAddr,
    pub domain: String,
    _turn: MutexGuard<'static, ()>,
}

/// `scripts/farm` itself.
pub fn farm_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/farm")
}

/// Run `scripts/farm ARGS` with its state in `dir` and this build's sipfarm.
pub fn run_farm_script(dir: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(farm_script())
        .args(args)
        .env("SIPFARM_FARM_DIR", dir)
        .env("SIPFARM_BIN", super::sipfarm_bin())
        .output()
        .expect("bash scripts/farm")
}

impl ScriptFarm {
    /// `scripts/farm up ARGS`, which must succeed and name its DNS server and domain.
    pub fn up(args: &[&str]) -> ScriptFarm {
        let turn = ONE_FARM.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new("sipfarm-farm-");
        let mut all = vec!["up"];
        all.extend_from_slice(args);
        let o = run_farm_script(dir.path(), &all);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if !o.status.success() {
            let _ = run_farm_script(dir.path(), &["down"]);
            panic!("scripts/farm up failed ({}):\n{out}\n{err}", o.status);
        }
        let value = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("no '{key}' line in:\n{out}"))
                .trim()
                .to_owned()
        };
        let dns = value("dns: ").parse().expect("dns: IP:PORT");
        let domain = value("domain: ");
        ScriptFarm {
            dir,
            out,
            dns,
            domain,
            _turn: turn,
        }
    }

    /// The pids file: (kind, name, pid) of every part started.
    pub fn parts(&self) -> Vec<(String, String, u32)> {
        std::fs::read_to_string(self.dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((
                    w.next()?.to_owned(),
                    w.next()?.to_owned(),
                    w.next()?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// The pid of instance `i` (1-based), as the pids file says.
    pub fn instance_pid(&self, i: usize) -> u32 {
        let name = format!("sip{i}.{}", self.domain);
        self.parts()
            .into_iter()
            .find(|(k, n, _)| k == "instance" && *n == name)
            .map(|(_, _, p)| p)
            .unwrap_or_else(|| panic!("no {name} in the pids file"))
    }

    /// The log of instance `i` (1-based).
    pub fn instance_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(&format!("sipfarm-{i}.log"))).unwrap_or_default()
    }

    pub fn script(&self, args: &[&str]) -> Output {
        run_farm_script(self.dir.path(), args)
    }

    pub fn down(&self) -> String {
        let o = self.script(&["down"]);
        assert!(o.status.success(), "scripts/farm down: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for ScriptFarm {
    fn drop(&mut self) {
        if self.dir.join("pids").exists() {
            let _ = self.script(&["down"]);
        }
    }
}

/// The farm of the real-phone tests: 2 instances over 3 nodes, domain example.test, debug
/// logs, digest authentication for alice (`alice-pw-1234`) and bob (`bob-pw-5678`), the
/// users file in `tmp`.
pub fn phones_farm(tmp: &TempDir) -> ScriptFarm {
    let users = tmp.join("users");
    super::write_users(
        &users,
        &[("alice", "alice-pw-1234"), ("bob", "bob-pw-5678")],
    );
    let users = users.display().to_string();
    ScriptFarm::up(&[
        "--instances",
        "2",
        "--nodes",
        "3",
        "--domain",
        "example.test",
        "--log-level",
        "debug",
        "--users",
        &users,
    ])
}

/// Which instance (1 or 2) logged that it saved a REGISTER of `user`@example.test, waiting
/// up to 10 s.
pub fn registered_through(farm: &ScriptFarm, user: &str, report: &dyn Fn() -> String) -> usize {
    let needle = format!("aor=sip:{user}@example.test");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        for i in 1..=2 {
            if farm
                .instance_log(i)
                .lines()
                .any(|l| l.contains("REGISTER saved") && l.contains(&needle))
            {
                return i;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no instance saved {user}'s REGISTER\n{}",
            report()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An SRV record: priority, weight, port, target (without the final dot).
pub type Srv = (u16, u16, u16, String);

/// Ask the DNS server at `dns`, as a client would.
pub fn dns_lookup(dns: SocketAddr, name: &str, rtype: RecordType) -> Vec<RData> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ns = NameServerConfig::udp_and_tcp(dns.ip());
        for c in &mut ns.connections {
            c.port = dns.port();
        }
        let cfg = ResolverConfig::from_parts(None, vec![], vec![ns]);
        let r = TokioResolver::builder_with_config(cfg, TokioRuntimeProvider::default())
            .build()
            .expect("resolver");
        match r.lookup(name, rtype).await {
            Ok(l) => l.answers().iter().map(|a| a.data.clone()).collect(),
            Err(_) => Vec::new(),
        }
    })
}

pub fn srv_records(dns: SocketAddr, name: &str) -> Vec<Srv> {
    let mut v: Vec<Srv> = dns_lookup(dns, name, RecordType::SRV)
        .into_iter()
        .filter_map(|d| match d {
            RData::SRV(s) => Some((
                s.priority,
                s.weight,
                s.port,
                s.target.to_ascii().trim_end_matches('.').to_owned(),
            )),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

pub fn a_records(dns: SocketAddr, name: &str) -> Vec<IpAddr> {
    dns_lookup(dns, name, RecordType::A)
        .into_iter()
        .filter_map(|d| match d {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// RFC 2782's choice among SRV records: the lowest priority, then at random in proportion to
/// weight (a weight 0 record only when all are 0). `skip`: targets known to have failed
/// (RFC 3263 4.3: the client moves on to the next).
pub fn pick_srv<'a>(records: &'a [Srv], skip: &[String], rng: &mut fastrand::Rng) -> &'a Srv {
    let live: Vec<&Srv> = records.iter().filter(|r| !skip.contains(&r.3)).collect();
    let best = live.iter().map(|r| r.0).min().expect("a live SRV target");
    let tier: Vec<&Srv> = live.into_iter().filter(|r| r.0 == best).collect();
    let total: u32 = tier.iter().map(|r| u32::from(r.1)).sum();
    if total == 0 {
        return tier[rng.usize(..tier.len())];
    }
    let mut n = rng.u32(..total);
    for r in &tier {
        if n < u32::from(r.1) {
            return r;
        }
        n -= u32::from(r.1);
    }
    tier[tier.len() - 1]
}
