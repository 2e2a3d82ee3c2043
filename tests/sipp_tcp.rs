//! 500 sipp UAs on TCP, each reachable only over its own connection, called across two
//! instances: zero failed calls.
//!
//! Two memcached nodes, two instances A and B. Two callee sipps (`bench/sipp/tcp_ua.xml`,
//! `-t tn`: one TCP connection per UA) register 250 users through A and 250 through B, each
//! with a Contact nobody listens on (127.0.0.98:5060;transport=tcp): only the connection it
//! registered on reaches it. Once every binding is in the farm, two caller sipps
//! (`bench/sipp/tcp_uac.xml`, over one TCP connection) call every user through the instance
//! it did not register through: B routes each INVITE to A with A's flow token, A delivers it
//! on the UA's connection, and the ACK and BYE follow the Record-Route (with flow tokens) back
//! to the same connection. Every sipp must exit with success and count 250 successful calls,
//! none failed. sipp maps a message to a call by its Call-ID, so each callee's call N and the
//! caller's call N share one (`-cid_str`, same injection order): the INVITE for a UA carries
//! the Call-ID of that UA's REGISTER. The instances allow 1,024 connections per source
//! (`limits.max_connections_per_source`, 64 by default): all 250 UAs of a side share
//! 127.0.0.1 here.

mod common;
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The address the UAs' Contacts name: nobody listens there.
const NOWHERE: &str = "127.0.0.98";

/// One sipp run with its statistics (`-trace_stat`, every second) and its unexpected
/// messages (`-trace_err`) written to files of `dir`.
struct Run {
    name: String,
    proc: Proc,
    stat: PathBuf,
    errors: PathBuf,
}

impl Run {
    fn start(dir: &Path, name: &str, mut args: Vec<String>) -> Run {
        let stat = dir.join(format!("{name}.csv"));
        let errors = dir.join(format!("{name}-errors.log"));
        let extra = [
            "-trace_stat",
            "-fd",
            "1",
            "-stf",
            &stat.display().to_string(),
            "-trace_err",
            "-error_file",
            &errors.display().to_string(),
        ]
        .map(str::to_owned);
        args.extend(extra);
        Run {
            name: name.to_owned(),
            // In `dir`: a sipp that stops at a fatal error writes its default statistics
            // file in its working directory.
            proc: Proc::start(
                Command::new(sipp_bin())
                    .args(&args)
                    .current_dir(dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                "sipp (apt-get install sip-tester)",
            ),
            stat,
            errors,
        }
    }

    /// The last value of a column of the statistics file.
    fn total(&self, col: &str) -> u64 {
        total_calls(&self.stat, col)
    }

    /// What it has done so far, for a failure's message.
    fn progress(&mut self) -> String {
        let errors = std::fs::read_to_string(&self.errors).unwrap_or_default();
        format!(
            "{} (running: {}): {} successful, {} failed calls so far, unexpected messages: {}",
            self.name,
            self.proc.running(),
            self.total("SuccessfulCall(C)"),
            self.total("FailedCall(C)"),
            errors.lines().take(30).collect::<Vec<_>>().join("\n")
        )
    }

    /// Wait for its end (stopped past `deadline`); panics unless it exited with success after
    /// `calls` successful calls and none failed. Returns the successful calls.
    fn check(&mut self, deadline: Instant, calls: u64) -> u64 {
        let status = self
            .proc
            .wait_for(deadline.saturating_duration_since(Instant::now()))
            .or_else(|| self.proc.stop());
        let ok = self.total("SuccessfulCall(C)");
        let failed = self.total("FailedCall(C)");
        let errors = std::fs::read_to_string(&self.errors).unwrap_or_default();
        let head: String = errors.lines().take(60).collect::<Vec<_>>().join("\n");
        assert!(
            status.is_some_and(|s| s.success()) && ok == calls && failed == 0,
            "{}: exit {status:?}, {ok} successful calls of {calls}, {failed} failed; \
             unexpected messages:\n{head}",
            self.name
        );
        ok
    }
}

/// An injection file of users `first..=last` (user0001 style), in order.
fn users_csv(dir: &Path, name: &str, first: u32, last: u32) -> String {
    let path = dir.join(name);
    let mut text = String::from("SEQUENTIAL\n");
    for i in first..=last {
        text += &format!("user{i:04}\n");
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Callee sipp: the users of `csv` registered over TCP through `instance`, one connection
/// each, Call-IDs `cid`.
fn callees(dir: &Path, name: &str, instance: SocketAddr, csv: &str, cid: &str) -> Run {
    let (args, _) = sipp_client(
        instance,
        "tcp_ua.xml",
        &[
            "-t",
            "tn",
            // sipp refuses its default (50,000) above the open-files limit.
            "-max_socket",
            "1000",
            "-inf",
            csv,
            "-cid_str",
            cid,
            "-key",
            "contact_host",
            NOWHERE,
            "-key",
            "contact_port",
            "5060",
            "-m",
            "250",
            "-r",
            "100",
            "-l",
            "300",
            "-timeout",
            "60s",
            "-timeout_error",
        ],
    );
    Run::start(dir, name, args)
}

/// Caller sipp: calls to the users of `csv` through `instance`, over one TCP connection,
/// Call-IDs `cid` (those of the callees' REGISTERs).
fn callers(dir: &Path, name: &str, instance: SocketAddr, csv: &str, cid: &str) -> Run {
    let (args, _) = sipp_client(
        instance,
        "tcp_uac.xml",
        &[
            "-t",
            "t1",
            "-inf",
            csv,
            "-cid_str",
            cid,
            "-m",
            "250",
            "-r",
            "50",
            "-l",
            "100",
            "-timeout",
            "40s",
            "-timeout_error",
        ],
    );
    Run::start(dir, name, args)
}

/// Whether every user of `first..=last` has a binding naming `NOWHERE`, seen through `at`.
fn all_registered(at: SocketAddr, first: u32, last: u32) -> bool {
    let ua = Ua::new();
    (first..=last).all(|i| {
        let user = format!("user{i:04}");
        ua.try_request(
            at,
            &ua.register(&user, &[], None, &unique("q"), 1),
            Duration::from_secs(1),
        )
        .is_some_and(|r| {
            r.code == 200
                && r.contacts()
                    .iter()
                    .any(|c| c.contains(&format!("@{NOWHERE}:5060")))
        })
    })
}

#[test]
fn sipp_500_tcp_uas_called_across_two_instances() {
    let started = Instant::now();
    let mc1 = Memcached::start();
    let mc2 = Memcached::start();
    let dir = TempDir::new("sipfarm-sipp-tcp-");
    // 250 UAs share one source address here (one host each in real life): past the default
    // of 64 connections per source, the 65th would be closed at once.
    let cfg = dir.join("limits.toml");
    std::fs::write(&cfg, "[limits]\nmax_connections_per_source = 1024\n").unwrap();
    let cfg = ["--config", cfg.to_str().unwrap()];
    let a = Sipfarm::with_farm(&[&mc1, &mc2], &cfg);
    let b = Sipfarm::with_farm(&[&mc1, &mc2], &cfg);
    let first = users_csv(dir.path(), "first.csv", 1, 250);
    let second = users_csv(dir.path(), "second.csv", 251, 500);

    // user0001..0250 on connections to A, user0251..0500 on connections to B.
    let mut ua_a = callees(dir.path(), "ua-a", a.addr(), &first, "uaA-%u@sipp");
    let mut ua_b = callees(dir.path(), "ua-b", b.addr(), &second, "uaB-%u@sipp");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(all_registered(b.addr(), 1, 250) && all_registered(a.addr(), 251, 500)) {
        assert!(
            Instant::now() < deadline && ua_a.proc.running() && ua_b.proc.running(),
            "the 500 TCP UAs did not all register within 20 s (or a sipp ended): {}; {}",
            ua_a.progress(),
            ua_b.progress()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let registered = started.elapsed();

    // Every call crosses instances: A's users called through B, B's through A.
    let mut to_a = callers(dir.path(), "calls-via-b", b.addr(), &first, "uaA-%u@sipp");
    let mut to_b = callers(dir.path(), "calls-via-a", a.addr(), &second, "uaB-%u@sipp");
    let deadline = Instant::now() + Duration::from_secs(45);
    let calls = to_a.check(deadline, 250) + to_b.check(deadline, 250);
    let deadline = Instant::now() + Duration::from_secs(10);
    ua_a.check(deadline, 250);
    ua_b.check(deadline, 250);
    eprintln!(
        "{calls} calls to 500 TCP UAs, none failed; registered after {:.1} s, done after {:.1} s",
        registered.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
