//! sipp against a real farm, with the bench's scenarios (bench/sipp): 1,000 distinct users
//! registered from an injection CSV with zero failed calls, then every one of them found
//! through a second instance; and 200 calls across two instances with zero failed calls.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn sipp_registers_1000_users_through_the_farm() {
    let mc1 = Memcached::start();
    let mc2 = Memcached::start();
    let a = Sipfarm::with_farm(&[&mc1, &mc2], &[]);
    let b = Sipfarm::with_farm(&[&mc1, &mc2], &[]);
    let (args, sipp_port) = sipp_register(
        a.addr(),
        &[
            "-m",
            "1000",
            "-r",
            "250",
            "-l",
            "200",
            "-timeout",
            "60s",
            "-timeout_error",
        ],
    );
    let (ok, tail) = run_sipp(&args, Duration::from_secs(120));
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
    let dir = TempDir::new("sipfarm-sipp-");
    let uas = registered_uas(b.addr(), "sippuas", &["-m", "200", "-timeout", "90s"]);
    let (args, _) = sipp_call(a.addr(), dir.path(), "sippuas", &TWO_HUNDRED_CALLS);
    let (ok, tail) = run_sipp(&args, Duration::from_secs(120));
    drop(uas);
    assert!(ok, "sipp uac reported failed calls:\n{tail}");
}
