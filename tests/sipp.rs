//! sipp against a real farm: 1,000 distinct users registered from an injection CSV with zero
//! failed calls, then every one of them found through a second instance.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// Run sipp with a bound on time; returns its exit status and the last lines of its output.
pub fn run_sipp(args: &[String]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("120")
        .arg(sipp_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("sipp must be installed (apt-get install sip-tester)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    (
        out.status.success(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    )
}

#[test]
fn sipp_registers_1000_users_through_the_farm() {
    let mc1 = Memcached::start();
    let mc2 = Memcached::start();
    let a = Sipfarm::with_farm(&[&mc1, &mc2], &[]);
    let b = Sipfarm::with_farm(&[&mc1, &mc2], &[]);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp");
    let sipp_port = free_port();
    let args: Vec<String> = [
        format!("127.0.0.1:{}", a.port),
        "-sf".into(),
        dir.join("register.xml").display().to_string(),
        "-inf".into(),
        dir.join("users.csv").display().to_string(),
        "-m".into(),
        "1000".into(),
        "-r".into(),
        "250".into(),
        "-l".into(),
        "200".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        sipp_port.to_string(),
        "-nostdin".into(),
        "-timeout".into(),
        "60s".into(),
        "-timeout_error".into(),
    ]
    .into_iter()
    .collect();
    let (ok, tail) = run_sipp(&args);
    assert!(ok, "sipp reported failed calls:\n{tail}");
    // Every user is there, seen through the other instance.
    let ua = Ua::new();
    for i in 1..=1000 {
        let user = format!("user{i:04}");
        let r = ua.request(b.addr(), &ua.register(&user, &[], None, &unique("q"), 1));
        assert_eq!(r.code, 200);
        assert_eq!(
            r.contacts(),
            vec![format!("sip:{user}@127.0.0.1:{sipp_port};transport=UDP")],
            "{user}"
        );
    }
}

/// A sipp pair: the uas registered through one instance, the uac calling through the other;
/// 200 calls with zero failed calls.
#[test]
fn sipp_uac_calls_uas_across_two_instances() {
    let mc1 = Memcached::start();
    let mc2 = Memcached::start();
    let a = Sipfarm::with_farm(&[&mc1, &mc2], &[]);
    let b = Sipfarm::with_farm(&[&mc1, &mc2], &[]);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp");
    let uas_port = free_port();
    // Register the uas through instance B (a third-party REGISTER naming its address).
    let ua = Ua::new();
    let r = ua.request(
        b.addr(),
        &ua.register(
            "sippuas",
            &[&format!("<sip:sippuas@127.0.0.1:{uas_port}>")],
            Some(600),
            &unique("r"),
            1,
        ),
    );
    assert_eq!(r.code, 200);
    let mut uas = std::process::Command::new(sipp_bin())
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-m",
            "200",
            "-nostdin",
            "-timeout",
            "90s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let uac_port = free_port();
    let args: Vec<String> = [
        format!("127.0.0.1:{}", a.port),
        "-sf".into(),
        dir.join("uac.xml").display().to_string(),
        "-s".into(),
        "sippuas".into(),
        "-key".into(),
        "domain".into(),
        "example.test".into(),
        "-m".into(),
        "200".into(),
        "-r".into(),
        "50".into(),
        "-l".into(),
        "100".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        uac_port.to_string(),
        "-nostdin".into(),
        "-timeout".into(),
        "60s".into(),
        "-timeout_error".into(),
    ]
    .into_iter()
    .collect();
    let (ok, tail) = run_sipp(&args);
    let _ = uas.kill();
    let _ = uas.wait();
    assert!(ok, "sipp uac reported failed calls:\n{tail}");
}
