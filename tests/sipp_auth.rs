//! sipp's own digest client against a farm with authentication on (two instances, two
//! memcached nodes on 127.0.0.11/12, one users file, one nonce secret), with the bench's
//! scenario bench/sipp/register_auth.xml (REGISTER, 401, REGISTER with sipp's
//! `[authentication]`, 200): 1,000 users registered with the passwords of an injection file
//! with zero failed calls, then every binding found through the other instance.
//!
//! RFC 3261 22.2 / 22.4 with RFC 8760 2.4: sipfarm offers one challenge per algorithm.
//! sipp 3.6.1 computes MD5 only and answers the first challenge of the 401 (a first
//! challenge with algorithm=SHA-256 stops the whole sipp run, exit 255): this test passes
//! only while MD5 comes first, as `auth.algorithms` has it by default.

mod common;
use common::*;
use std::time::Duration;

const USERS: usize = 1000;

fn password(i: usize) -> String {
    format!("pw-{i:04}-sipp")
}

#[test]
fn sipp_registers_1000_users_with_digest_authentication() {
    let names: Vec<(String, String)> = (1..=USERS)
        .map(|i| (format!("user{i:04}"), password(i)))
        .collect();
    let users: Vec<(&str, &str)> = names
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let f = AuthFarm::start_with(&users, None, &[]);

    // The injection file: field0 = user, field1 = password.
    let csv = f.dir.join("users_auth.csv");
    let mut text = String::from("SEQUENTIAL\n");
    for (u, p) in &names {
        text.push_str(&format!("{u};{p}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let csv = csv.display().to_string();

    let (mut args, sipp_port) = sipp_client(f.a.addr(), "register_auth.xml", &[]);
    let port = sipp_port.to_string();
    let n = USERS.to_string();
    let extra = [
        "-inf",
        &csv,
        "-auth_uri",
        "example.test",
        "-key",
        "contact_host",
        "127.0.0.1",
        "-key",
        "contact_port",
        &port,
        "-key",
        "contact_transport",
        "UDP",
        "-m",
        &n,
        "-r",
        "250",
        "-l",
        "200",
        "-timeout",
        "60s",
        "-timeout_error",
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (ok, tail) = run_sipp(&args, Duration::from_secs(120));
    let why = if tail.contains("must use MD5") {
        "sipp 3.6.1 answers the first challenge of the 401 and computes MD5 only; the 401 lists \
         SHA-256 first, and sipp stops the whole run (exit 255) at the first 401"
    } else {
        "sipp reported failed registrations"
    };
    assert!(ok, "{why}:\n{tail}");

    // Every user is there, seen through the other instance.
    let ua = Ua::new();
    for (u, p) in &names {
        let r = register_auth(&ua, f.b.addr(), (u, p), Alg::Md5, &[], None);
        assert_eq!(r.code, 200, "{}", r.text);
        assert_eq!(
            r.contacts(),
            vec![format!("sip:{u}@127.0.0.1:{sipp_port};transport=UDP")],
            "{u}"
        );
    }
}
