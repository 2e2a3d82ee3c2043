//! Issue 13: the farm on one machine (`scripts/farm`), behind DNS SRV.
//!
//! - `up` starts the nodes, the DNS server and the instances on their loopback addresses and
//!   prints one line per part; the DNS server answers the domain's NAPTR, `_sip._udp` and
//!   `_sip._tcp` SRV (equal priority and weight, one per instance) and A records; a binding
//!   written through one instance is read through another; `status` shows every part (and
//!   a part that died); `down` stops exactly what `up` started.
//! - 1,000 sipp users register through the SRV records (the test chooses each user's
//!   instance from the SRV answer as RFC 2782 and RFC 3263 say: sipp resolves nothing), while
//!   one instance is stopped mid-run; the users of that instance register again, through the
//!   SRV targets left (RFC 3263 4.3); then every one of the 1,000 users is called through the
//!   instances left, and every call completes (sipp's uas answers for all of them: each call
//!   needs the user's binding in the farm).

mod common;
use common::*;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn count(out: &str, prefix: &str) -> usize {
    out.lines().filter(|l| l.starts_with(prefix)).count()
}

#[test]
fn farm_up_serves_the_domain_by_srv_and_down_stops_every_part() {
    let farm = ScriptFarm::up(&[
        "--instances",
        "3",
        "--nodes",
        "3",
        "--domain",
        "example.test",
    ]);
    let out = &farm.out;
    assert_eq!(farm.domain, "example.test", "{out}");
    assert_eq!(count(out, "node: 127.0.0.10"), 3, "{out}");
    assert_eq!(count(out, "instance: sip:127.0.0.1"), 3, "{out}");
    assert_eq!(farm.dns.ip().to_string(), "127.0.0.53", "{out}");

    // The records, as a client asks for them.
    let want: Vec<Srv> = (1..=3)
        .map(|i| (10, 10, 5060, format!("sip{i}.example.test")))
        .collect();
    for proto in ["udp", "tcp"] {
        let name = format!("_sip._{proto}.example.test");
        assert_eq!(srv_records(farm.dns, &name), want, "{name}");
    }
    for i in 1..=3u8 {
        let ips = a_records(farm.dns, &format!("sip{i}.example.test"));
        assert_eq!(ips, vec![IpAddr::from([127, 0, 0, 10 + i])]);
    }
    let naptr: Vec<String> = dns_lookup(farm.dns, "example.test", RecordType::NAPTR)
        .into_iter()
        .filter_map(|d| match d {
            RData::NAPTR(n) => Some(format!(
                "{} {} {}",
                n.order,
                String::from_utf8_lossy(&n.services),
                n.replacement.to_ascii()
            )),
            _ => None,
        })
        .collect();
    assert!(
        naptr.contains(&"10 SIP+D2U _sip._udp.example.test.".to_owned())
            && naptr.contains(&"20 SIP+D2T _sip._tcp.example.test.".to_owned()),
        "{naptr:?}"
    );

    // One farm: a binding written through instance 1 is read through instance 3.
    let ua = Ua::new();
    let at = |i: u8| SocketAddr::from(([127, 0, 0, 10 + i], 5060));
    let reg = ua.register(
        "alice",
        &["<sip:alice@127.0.0.1:7777>"],
        Some(600),
        "farm-1",
        1,
    );
    assert_eq!(ua.request(at(1), &reg).code, 200);
    let query = ua.register("alice", &[], None, "farm-2", 1);
    let r = ua.request(at(3), &query);
    assert_eq!(r.code, 200);
    assert!(
        r.contacts().iter().any(|c| c.contains("127.0.0.1:7777")),
        "{}",
        r.text
    );

    let status = farm.script(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.status.success(), "{text}");
    assert_eq!(text.matches(") running").count(), 7, "{text}");
    assert_eq!(text.matches("dead now: none").count(), 3, "{text}");

    // A part that dies is shown, and status says so by its exit code.
    let pid2 = farm.instance_pid(2);
    signal(pid2, "KILL");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(pid2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = farm.script(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_eq!(status.status.code(), Some(1), "{text}");
    assert!(
        text.contains("sip2.example.test (pid") && text.contains("NOT RUNNING"),
        "{text}"
    );

    let pids: Vec<u32> = farm.parts().into_iter().map(|p| p.2).collect();
    assert_eq!(pids.len(), 7);
    let stopped = farm.down();
    assert_eq!(count(&stopped, "stopped "), 7, "{stopped}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| !gone(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        pids.iter().all(|p| gone(*p)),
        "every part stopped: {pids:?}"
    );
    assert_eq!(farm.script(&["status"]).status.code(), Some(3));
    assert!(String::from_utf8_lossy(&farm.script(&["down"]).stdout).contains("no farm is up"));
}

#[test]
fn farm_up_refuses_bad_options_and_says_which() {
    let dir = TempDir::new("sipfarm-farm-bad-");
    for (args, says) in [
        (
            vec!["up", "--instances", "0"],
            "--instances must be a number from 1 to 40, not '0'",
        ),
        (
            vec!["up", "--nodes", "x"],
            "--nodes must be a number from 1 to 50, not 'x'",
        ),
        (
            vec!["up", "--domain", "a b"],
            "--domain: not a domain name: 'a b'",
        ),
        (
            vec!["up", "--nodes", "1", "--replicas", "2"],
            "--replicas must be a number from 1 to 1",
        ),
        (vec!["up", "--bogus", "1"], "unknown option '--bogus'"),
        (vec!["sideways"], "usage: scripts/farm up|down|status"),
    ] {
        let o = run_farm_script(dir.path(), &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!dir.join("pids").exists(), "nothing started");
}

/// One sipp run of a scenario of bench/sipp for the users `users` (its injection file).
struct Run {
    proc: Proc,
    stat: std::path::PathBuf,
    users: usize,
}

impl Run {
    fn start(
        dir: &Path,
        name: &str,
        at: SocketAddr,
        scenario: &str,
        users: &[String],
        extra: &[&str],
    ) -> Run {
        let csv = dir.join(format!("{name}.csv"));
        std::fs::write(&csv, format!("SEQUENTIAL\n{}\n", users.join("\n"))).unwrap();
        let csv = csv.display().to_string();
        let n = users.len().to_string();
        let mut all = vec!["-inf", csv.as_str(), "-m", n.as_str()];
        all.extend_from_slice(extra);
        let (args, _) = sipp_client_in(at, scenario, "farm.test", &all);
        let stat = dir.join(format!("{name}-stat.csv"));
        Run {
            proc: start_sipp_with_stats(&args, &stat),
            stat,
            users: users.len(),
        }
    }

    fn ok(&self) -> u64 {
        total_calls(&self.stat, "SuccessfulCall(C)")
    }

    fn failed(&self) -> u64 {
        total_calls(&self.stat, "FailedCall(C)")
    }

    /// Wait for the end (at most `limit`); (successful, failed).
    fn finish(mut self, limit: Duration) -> (u64, u64) {
        if self.proc.wait_for(limit).is_none() {
            self.proc.stop();
        }
        (self.ok(), self.failed())
    }
}

/// Users grouped by the SRV target each one chose.
fn spread(
    users: &[String],
    srv: &[Srv],
    skip: &[String],
    rng: &mut fastrand::Rng,
) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for u in users {
        let target = &pick_srv(srv, skip, rng).3;
        by.entry(target.clone()).or_default().push(u.clone());
    }
    by
}

#[test]
fn a_thousand_users_through_srv_survive_an_instance_stop() {
    let farm = ScriptFarm::up(&["--instances", "3", "--nodes", "3"]);
    let dns = farm.dns;
    let srv = srv_records(dns, "_sip._udp.farm.test");
    assert_eq!(srv.len(), 3, "{srv:?}");
    let addr = |target: &str| -> SocketAddr {
        let ips = a_records(dns, target);
        SocketAddr::new(
            *ips.first().unwrap_or_else(|| panic!("{target}: no A")),
            5060,
        )
    };
    let tmp = TempDir::new("sipfarm-farm-1000-");
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    // The callee of every call: one sipp uas; every user's Contact names it.
    let uas_port = free_port();
    let uas_port_s = uas_port.to_string();
    let mut uas = start_sipp(
        &[
            "-sf",
            &sipp_file("uas.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port_s,
            "-nostdin",
        ]
        .map(str::to_owned),
    );
    let users: Vec<String> = (1..=1000).map(|n| format!("user{n:04}")).collect();
    let register = [
        "-key",
        "contact_host",
        "127.0.0.1",
        "-key",
        "contact_port",
        &uas_port_s,
        "-key",
        "contact_transport",
        "UDP",
        "-r",
        "100",
        "-recv_timeout",
        "3000",
        "-timeout",
        "60s",
    ];

    // 1. Everyone registers, each through the instance its SRV choice gave.
    let first = spread(&users, &srv, &[], &mut rng);
    assert_eq!(
        first.len(),
        3,
        "every instance gets users: {:?}",
        first.keys().collect::<Vec<_>>()
    );
    let victim = "sip2.farm.test".to_owned();
    let runs: Vec<(String, Run)> = first
        .iter()
        .map(|(t, us)| {
            (
                t.clone(),
                Run::start(
                    tmp.path(),
                    &format!("reg1-{t}"),
                    addr(t),
                    "register.xml",
                    us,
                    &register,
                ),
            )
        })
        .collect();
    // Mid-run: once 50 of its users are registered, instance 2 is stopped.
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = &runs.iter().find(|(t, _)| *t == victim).unwrap().1;
    while v.ok() < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(v.ok() >= 50, "instance 2 registered users before its stop");
    signal(farm.instance_pid(2), "TERM");
    let mut before_stop = 0;
    for (t, run) in runs {
        let n = run.users as u64;
        let (ok, failed) = run.finish(Duration::from_secs(60));
        println!("{t}: {ok} registered, {failed} failed of {n}");
        if t == victim {
            assert!(
                ok >= 50 && ok < n && failed >= 1,
                "{t}: the stop came mid-run: {ok} ok, {failed} failed"
            );
            before_stop = ok;
        } else {
            assert_eq!((ok, failed), (n, 0), "{t}");
        }
    }

    // 2. The users of the stopped instance register again: through the targets left.
    let again = spread(
        &first[&victim],
        &srv,
        std::slice::from_ref(&victim),
        &mut rng,
    );
    assert!(!again.contains_key(&victim));
    let runs: Vec<(String, Run)> = again
        .iter()
        .map(|(t, us)| {
            (
                t.clone(),
                Run::start(
                    tmp.path(),
                    &format!("reg2-{t}"),
                    addr(t),
                    "register.xml",
                    us,
                    &register,
                ),
            )
        })
        .collect();
    for (t, run) in runs {
        let n = run.users as u64;
        assert_eq!(
            run.finish(Duration::from_secs(60)),
            (n, 0),
            "{t}: registered again"
        );
    }

    // 3. Every user is called, through the instances left; every call completes.
    let calls = spread(&users, &srv, std::slice::from_ref(&victim), &mut rng);
    let call_args = [
        "-r",
        "50",
        "-l",
        "100",
        "-recv_timeout",
        "5000",
        "-timeout",
        "90s",
    ];
    let runs: Vec<(String, Run)> = calls
        .iter()
        .map(|(t, us)| {
            (
                t.clone(),
                Run::start(
                    tmp.path(),
                    &format!("call-{t}"),
                    addr(t),
                    "uac.xml",
                    us,
                    &call_args,
                ),
            )
        })
        .collect();
    let mut called = 0;
    for (t, run) in runs {
        let n = run.users as u64;
        let got = run.finish(Duration::from_secs(90));
        println!(
            "calls through {t}: {} completed, {} failed of {n}",
            got.0, got.1
        );
        assert_eq!(got, (n, 0), "calls through {t}");
        called += n;
    }
    assert_eq!(called, 1000);
    println!(
        "FIGURES farm: 1000 users over 3 instances by SRV ({} on the stopped one, {before_stop} \
         registered before its stop), all registered again or kept, 1000 calls completed",
        first[&victim].len()
    );
    uas.stop();
}
