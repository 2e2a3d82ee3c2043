//! sipp helpers. The scenarios and the injection file live in bench/sipp, the one folder the
//! tests and the bench share: the tests drive the bench's own scenarios.

use super::processes::{Proc, free_port, unique};
use super::ua::Ua;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn sipp_bin() -> String {
    std::env::var("SIPP").unwrap_or_else(|_| "sipp".into())
}

/// bench/sipp: every sipp scenario and the users.csv injection file.
pub fn sipp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/sipp")
}

/// The path of a file of bench/sipp.
pub fn sipp_file(name: &str) -> String {
    sipp_dir().join(name).display().to_string()
}

/// The arguments of a sipp client run against `target` with a scenario of bench/sipp: local
/// address on loopback, a free port (returned too), no keyboard, `[domain]` example.test,
/// then `extra`.
pub fn sipp_client(target: SocketAddr, scenario: &str, extra: &[&str]) -> (Vec<String>, u16) {
    sipp_client_in(target, scenario, "example.test", extra)
}

/// Like `sipp_client`, with `[domain]` set to `domain`.
pub fn sipp_client_in(
    target: SocketAddr,
    scenario: &str,
    domain: &str,
    extra: &[&str],
) -> (Vec<String>, u16) {
    let port = free_port();
    let mut args = vec![
        target.to_string(),
        "-sf".into(),
        sipp_file(scenario),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-nostdin".into(),
        "-key".into(),
        "domain".into(),
        domain.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (args, port)
}

/// register.xml over UDP for the users of bench/sipp/users.csv (user0001 to user1000), each
/// binding naming sipp's own address: `sip:USER@127.0.0.1:PORT;transport=UDP`.
pub fn sipp_register(target: SocketAddr, extra: &[&str]) -> (Vec<String>, u16) {
    let (mut args, port) = sipp_client(target, "register.xml", &[]);
    let users = sipp_file("users.csv");
    let port_s = port.to_string();
    let keys = [
        "-inf",
        users.as_str(),
        "-key",
        "contact_host",
        "127.0.0.1",
        "-key",
        "contact_port",
        port_s.as_str(),
        "-key",
        "contact_transport",
        "UDP",
    ];
    args.extend(keys.iter().chain(extra).map(|s| s.to_string()));
    (args, port)
}

/// The uac.xml run of the sipp-pair tests: 200 calls at 50/s, at most 100 at once, a failed
/// call ends the run within 60 s.
pub const TWO_HUNDRED_CALLS: [&str; 9] = [
    "-m",
    "200",
    "-r",
    "50",
    "-l",
    "100",
    "-timeout",
    "60s",
    "-timeout_error",
];

/// uac.xml calling `user` (its injection file, one line, is written into `dir`).
pub fn sipp_call(target: SocketAddr, dir: &Path, user: &str, extra: &[&str]) -> (Vec<String>, u16) {
    sipp_call_in(target, dir, user, "example.test", extra)
}

/// uac.xml calling `user@domain`.
pub fn sipp_call_in(
    target: SocketAddr,
    dir: &Path,
    user: &str,
    domain: &str,
    extra: &[&str],
) -> (Vec<String>, u16) {
    let csv = dir.join(unique("callee-") + ".csv");
    std::fs::write(&csv, format!("SEQUENTIAL\n{user}\n")).unwrap();
    let csv = csv.display().to_string();
    let mut all = vec!["-inf", csv.as_str()];
    all.extend_from_slice(extra);
    sipp_client_in(target, "uac.xml", domain, &all)
}

/// Start sipp in the background with `args` (its output discarded).
pub fn start_sipp(args: &[String]) -> Proc {
    Proc::start(
        Command::new(sipp_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "sipp (apt-get install sip-tester)",
    )
}

/// Run sipp to its end, stopped after `limit`; returns whether it exited with success and
/// the last lines of its output.
pub fn run_sipp(args: &[String], limit: Duration) -> (bool, String) {
    let out = std::env::temp_dir().join(unique("sipfarm-sipp-") + ".out");
    let file = std::fs::File::create(&out).unwrap();
    let mut p = Proc::start(
        Command::new(sipp_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file),
        "sipp (apt-get install sip-tester)",
    );
    let status = p.wait_for(limit).or_else(|| p.stop());
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    (
        status.is_some_and(|s| s.success()),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    )
}

/// sipp's built-in uas on a free port, registered as `user@example.test` through `instance`
/// (a third-party REGISTER naming its address). Stopped by pid when dropped.
pub fn registered_uas(instance: SocketAddr, user: &str, extra: &[&str]) -> Proc {
    registered_uas_in(instance, user, "example.test", extra)
}

/// Like `registered_uas`, as `user@domain` (a domain the instance serves).
pub fn registered_uas_in(instance: SocketAddr, user: &str, domain: &str, extra: &[&str]) -> Proc {
    let port = free_port();
    let ua = Ua::new();
    let register = ua
        .register(
            user,
            &[&format!("<sip:{user}@127.0.0.1:{port}>")],
            Some(600),
            &unique("r"),
            1,
        )
        .replace("@example.test>", &format!("@{domain}>"))
        .replace(
            "REGISTER sip:example.test ",
            &format!("REGISTER sip:{domain} "),
        );
    let r = ua.request(instance, &register);
    assert_eq!(r.code, 200, "{}", r.text);
    let port = port.to_string();
    let mut args = vec!["-sn", "uas", "-i", "127.0.0.1", "-p", &port, "-nostdin"];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    let uas = start_sipp(&args);
    std::thread::sleep(Duration::from_millis(300));
    uas
}

/// Start sipp in the background with `args`, writing its statistics every second to `stat`
/// (`-trace_stat`; read with [`total_calls`]).
pub fn start_sipp_with_stats(args: &[String], stat: &Path) -> Proc {
    let mut all = args.to_vec();
    all.extend(
        [
            "-trace_stat",
            "-fd",
            "1",
            "-stf",
            &stat.display().to_string(),
        ]
        .map(str::to_owned),
    );
    start_sipp(&all)
}

/// The last value of column `col` (e.g. `SuccessfulCall(C)`, `FailedCall(C)`) of a sipp
/// statistics file (0 before the first row).
pub fn total_calls(stat: &Path, col: &str) -> u64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split(';').collect();
    let Some(c) = head.iter().position(|h| *h == col) else {
        return 0;
    };
    lines
        .last()
        .and_then(|l| l.split(';').nth(c))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
