//! Issue 14, lifecycle: SIGTERM stops reading new requests, lets those in flight finish (up to
//! `server.shutdown_timeout`), closes the TCP connections and exits 0; a request read on a
//! still-open connection meanwhile gets 503 (RFC 3263 4.3: the client moves to the next SRV
//! target at once).

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn sigterm_drains_and_exits_0() {
    // One node, frozen later: a REGISTER then waits for the node's deadline (1 s) in flight.
    let mc = Memcached::start();
    let dir = TempDir::new("sipfarm-lifecycle-");
    let config = dir.join("farm.toml");
    std::fs::write(&config, "[memcached]\ntimeout_ms = 1000\n").unwrap();
    let config = config.display().to_string();
    let mut s = Sipfarm::with_farm(&[&mc], &["--config", &config, "--replicas", "1"]);
    let ua = Ua::new();

    // A TCP connection with a binding on it.
    let mut tcp = TcpStream::connect(s.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let reg = ua.register(
        "dora",
        &["<sip:dora@127.0.0.1:7100;transport=tcp>"],
        Some(600),
        "lc-1",
        1,
    );
    let reg = reg.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    tcp.write_all(reg.as_bytes()).unwrap();
    assert_eq!(read_tcp_response(&mut tcp).code, 200);

    // In flight: a REGISTER waiting on the frozen node when SIGTERM comes.
    mc.freeze();
    let slow = ua.register("erin", &["<sip:erin@127.0.0.1:7101>"], Some(600), "lc-2", 1);
    ua.send(s.addr(), &slow);
    std::thread::sleep(Duration::from_millis(200));
    let sent_term = Instant::now();
    s.proc.signal("TERM");
    std::thread::sleep(Duration::from_millis(100));

    // A request on the open connection meanwhile: 503 with Retry-After.
    let options = ua
        .options(&format!("sip:127.0.0.1:{}", s.port))
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    tcp.write_all(options.as_bytes()).unwrap();
    let r = read_tcp_response(&mut tcp);
    assert_eq!(r.code, 503, "{}", r.text);
    assert!(r.text.contains("Retry-After:"), "{}", r.text);

    // The one in flight is answered (its node did not answer: 500), not dropped.
    let answer = ua
        .recv(Duration::from_secs(3))
        .expect("the REGISTER in flight is answered");
    assert!(answer.starts_with("SIP/2.0 500"), "{answer}");
    // Then the process exits 0, and the connection is closed.
    let status = s
        .proc
        .wait_for(Duration::from_secs(5))
        .expect("exited after draining");
    assert!(status.success(), "{status}");
    assert!(
        sent_term.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent_term.elapsed()
    );
    let mut rest = Vec::new();
    let closed = tcp.read_to_end(&mut rest);
    assert!(closed.is_ok() || rest.is_empty(), "{closed:?}");
    mc.thaw();
}

#[test]
fn shutdown_timeout_is_checked() {
    let out = std::process::Command::new(sipfarm_bin())
        .args(["serve", "--shutdown-timeout", "301"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--shutdown-timeout: 301 is out of range (0 to 300 seconds)"),
        "{err}"
    );
}

/// SIGHUP reads the users file again: a user added to the file can register at once, one
/// removed cannot; a file that cannot be read is refused and the old users stay.
#[test]
fn sighup_reloads_the_users_file() {
    let f = AuthFarm::start_with(&[("alice", "alice-pw")], None, &[]);
    let ua = Ua::new();
    let contact = ["<sip:carol@127.0.0.1:7500>"];
    let carol = ("carol", "carol-pw");
    assert_eq!(
        register_auth(&ua, f.at(0), carol, Alg::Md5, &contact, Some(600)).code,
        401
    );

    write_users(&f.users_file(), &[("alice", "alice-pw"), carol]);
    f.a.proc.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let code = register_auth(&ua, f.at(0), carol, Alg::Md5, &contact, Some(600)).code;
        if code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "carol still refused ({code})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Instance B was not told: it still has the old file.
    assert_eq!(
        register_auth(&ua, f.at(1), carol, Alg::Md5, &contact, Some(600)).code,
        401
    );

    // A broken file is refused: carol (and alice) still register through A.
    std::fs::write(f.users_file(), "this is not a users line\n").unwrap();
    f.a.proc.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        register_auth(&ua, f.at(0), carol, Alg::Md5, &contact, Some(600)).code,
        200
    );
    assert!(
        f.log("a")
            .contains("SIGHUP: users file refused, the old users stay"),
        "{}",
        f.log("a")
    );
}

/// Wait until `log` contains `text` (at most 10 s); its content.
fn wait_log(log: &std::path::Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = std::fs::read_to_string(log).unwrap_or_default();
        if got.contains(text) {
            return got;
        }
        assert!(Instant::now() < deadline, "no {text:?} in the log:\n{got}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGHUP reads the whole configuration again: new `[limits]` apply at once, a node added to
/// the memcached list joins the farm (a record of the old list is found and copied to it), a
/// configuration that does not load or whose nodes do not answer is refused and the old one
/// stays, and settings that need a restart are named.
#[test]
fn sighup_reloads_limits_and_the_node_list() {
    let (mc1, mc2) = (Memcached::start(), Memcached::start());
    let dir = TempDir::new("sipfarm-reload-");
    let (config, log) = (dir.join("farm.toml"), dir.join("a.log"));
    let write = |nodes: &[&Memcached], replicas: u32, extra: &str| {
        let list: Vec<String> = nodes.iter().map(|m| format!("\"{}\"", m.addr())).collect();
        let text = format!(
            "[memcached]\nnodes = [{}]\nreplicas = {replicas}\n{extra}",
            list.join(", ")
        );
        std::fs::write(&config, text).unwrap();
    };
    write(&[&mc1], 1, "");
    let s = Sipfarm::start_logging_at(
        &["--config", &config.display().to_string()],
        &log,
        "sipfarm=info",
    );
    let ua = Ua::new();
    let reg = |user: &str, n: u32| {
        let contact = format!("<sip:{user}@127.0.0.1:{}>", 7200 + n);
        ua.request(
            s.addr(),
            &ua.register(user, &[&contact], Some(600), user, n),
        )
        .code
    };
    assert_eq!(reg("ann", 1), 200);
    assert_eq!((mc1.records(), mc2.records()), (1, 0));

    // Limits: one request a second from a source (a burst of two).
    write(&[&mc1], 1, "[limits]\nsource_rate = 1\n");
    s.proc.signal("HUP");
    wait_log(&log, "SIGHUP: limits reloaded");
    let options = ua.options(&format!("sip:127.0.0.1:{}", s.port));
    let answered = (0..10)
        .filter(|_| {
            ua.try_request(s.addr(), &options, Duration::from_millis(100))
                .is_some()
        })
        .count();
    assert!(answered <= 4, "{answered} of 10 answered at 1/s");

    // The node list grows: mc2 joins, two replicas.
    write(&[&mc1, &mc2], 2, "");
    s.proc.signal("HUP");
    wait_log(&log, "SIGHUP: memcached farm reloaded");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(reg("bob", 2), 200);
    assert_eq!((mc1.records(), mc2.records()), (2, 1), "bob on both");
    let query = ua.register("ann", &[], None, "ann-q", 1);
    let r = ua.request(s.addr(), &query);
    assert!(r.text.contains("7201"), "ann is still found: {}", r.text);
    assert_eq!(mc2.records(), 2, "ann copied to the node that joined");

    // Refused whole, the old configuration stays: a bad value, a list no node answers.
    std::fs::write(&config, "[limits]\nsource_rate = 0\n").unwrap();
    s.proc.signal("HUP");
    let text = wait_log(&log, "SIGHUP: configuration refused, the old one stays");
    assert!(text.contains("limits.source_rate"), "{text}");
    std::fs::write(&config, "[memcached]\nnodes = [\"127.0.0.1:1\"]\n").unwrap();
    s.proc.signal("HUP");
    wait_log(&log, "SIGHUP: memcached node list refused");
    assert_eq!(reg("cy", 3), 200);
    assert_eq!(
        (mc1.records(), mc2.records()),
        (3, 3),
        "still on both nodes"
    );

    // What a reload cannot change is named.
    write(&[&mc1, &mc2], 2, "[registrar]\nmax_expires = 900\n");
    s.proc.signal("HUP");
    let text = wait_log(&log, "take effect only at a restart");
    assert!(text.contains("registrar"), "{text}");
}
