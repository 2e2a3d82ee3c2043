//! The command line and start-up: help, configuration errors (status 2 with file, key and
//! value), memcached nodes down at start, IPv6 listening, TCP limits and keep-alives.

mod common;
use common::*;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(sipfarm_bin()).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn help_explains_every_flag() {
    let (code, text) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(text.contains("serve"));
    let (code, text) = run(&["serve", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--config",
        "--listen",
        "--domain",
        "--memcached",
        "--replicas",
        "--min-expires",
        "--max-expires",
        "--default-expires",
        "--max-contacts",
        "--log-level",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}");
    }
}

#[test]
fn configuration_errors_exit_2_and_say_where() {
    let dir = std::env::temp_dir().join(unique("sipfarm-cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "[server]\nlisten = [\"udp:127.0.0.1:5060\"]\nunknown_key = true\n",
    )
    .unwrap();
    let (code, text) = run(&["serve", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("bad.toml") && text.contains("unknown_key"),
        "{text}"
    );
    assert!(!text.contains("panicked"));

    std::fs::write(&f, "[registrar]\nmin_expires = \"sixty\"\n").unwrap();
    let (code, text) = run(&["serve", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("min_expires"), "{text}");

    std::fs::write(&f, "[server\n").unwrap();
    let (code, _) = run(&["serve", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 2);

    let (code, text) = run(&[
        "serve",
        "--config",
        dir.join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(text.contains("missing.toml"), "{text}");

    let (code, text) = run(&["serve", "--listen", "udp:not-an-address"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("--listen") && text.contains("not-an-address"),
        "{text}"
    );

    let (code, text) = run(&["serve", "--memcached", "127.0.0.1:11211", "--replicas", "2"]);
    assert_eq!(code, 2);
    assert!(text.contains("--replicas"), "{text}");

    let (code, text) = run(&["serve", "--log-level", "loud"]);
    assert_eq!(code, 2);
    assert!(text.contains("loud"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn no_memcached_node_answering_exits_2() {
    let dead = free_port();
    let port = free_port();
    let (code, text) = run(&[
        "serve",
        "--listen",
        &format!("udp:127.0.0.1:{port}"),
        "--memcached",
        &format!("127.0.0.1:{dead}"),
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no memcached node answered"), "{text}");
}

#[test]
fn some_nodes_down_at_start_still_serves() {
    let mc = Memcached::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let list = format!("{},{dead}", mc.addr());
    let s = Sipfarm::start(&["--memcached", &list, "--replicas", "1"]);
    let ua = Ua::new();
    for i in 0..20 {
        let user = format!("half{i}");
        let r = ua.request(
            s.addr(),
            &ua.register(
                &user,
                &["<sip:h@127.0.0.1:7100>"],
                Some(300),
                &unique("c"),
                1,
            ),
        );
        assert_eq!(r.code, 200, "{}", r.text);
        let q = ua.request(s.addr(), &ua.register(&user, &[], None, &unique("c"), 1));
        assert_eq!(q.contacts().len(), 1);
    }
}

#[test]
fn ipv6_listen() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; IPv6 is covered by unit tests only");
        return;
    }
    let port = free_port();
    let mut sipfarm = Proc::start(
        Command::new(sipfarm_bin()).args([
            "serve",
            "--listen",
            &format!("udp:[::1]:{port}"),
            "--listen",
            &format!("tcp:[::1]:{port}"),
            "--domain",
            "example.test",
        ]),
        "sipfarm",
    );
    let sock = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let me = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let msg = format!(
        "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:{me};branch=z9hG4bK6v6\r\nFrom: <sip:six@example.test>;tag=1\r\nTo: <sip:six@example.test>\r\nCall-ID: v6\r\nCSeq: 1 REGISTER\r\nContact: <sip:six@[::1]:{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    let mut answer = String::new();
    for _ in 0..30 {
        sock.send_to(msg.as_bytes(), format!("[::1]:{port}"))
            .unwrap();
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            break;
        }
    }
    sipfarm.stop();
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert!(
        answer.contains(&format!("<sip:six@[::1]:{me}>")),
        "{answer}"
    );
}

#[test]
fn tcp_keepalive_and_size_limit() {
    let s = Sipfarm::start(&[]);
    let mut t = std::net::TcpStream::connect(s.addr()).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    t.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    t.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n", "RFC 5626 pong");
    // A message over the 64 KiB limit: 513 and the connection closed.
    let big = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKbig\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: big\r\nCSeq: 1 OPTIONS\r\nContent-Length: 70000\r\n\r\n{}",
        "x".repeat(70000)
    );
    let _ = t.write_all(big.as_bytes());
    let r = read_tcp_response(&mut t);
    assert_eq!(r.code, 513, "{}", r.text);
    let mut rest = Vec::new();
    let n = t.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "connection closed after 513");
    // The instance still serves.
    let ua = Ua::new();
    assert_eq!(
        ua.request(s.addr(), &ua.options(&format!("sip:127.0.0.1:{}", s.port)))
            .code,
        200
    );
}

#[test]
fn a_port_in_use_exits_2() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, text) = run(&[
        "serve",
        "--listen",
        &format!("udp:127.0.0.1:{port}"),
        "--threads",
        "2",
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cannot bind"), "{text}");
}

/// Idle TCP connections time out, but not before the bindings registered over them expire.
#[test]
fn tcp_idle_timeout_waits_for_bindings_registered_over_the_connection() {
    use std::io::ErrorKind;
    let dir = std::env::temp_dir().join(unique("sipfarm-idle-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("idle.toml");
    std::fs::write(
        &cfg,
        "[server]\ntcp_idle_timeout = 1\n[registrar]\nmin_expires = 1\n",
    )
    .unwrap();
    let s = Sipfarm::start(&["--config", cfg.to_str().unwrap()]);
    let closed_after = |stream: &mut std::net::TcpStream| -> Duration {
        let start = std::time::Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return start.elapsed(),
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return Duration::from_secs(99);
                }
                Err(_) => return start.elapsed(),
            }
        }
    };
    // An idle connection: closed after about the idle timeout.
    let mut idle = std::net::TcpStream::connect(s.addr()).unwrap();
    let t = closed_after(&mut idle);
    assert!(t < Duration::from_secs(4), "idle connection open for {t:?}");
    // A connection that registered a 5 s binding stays open at least that long.
    let ua = Ua::new();
    let reg = ua
        .register(
            "idler",
            &["<sip:idler@127.0.0.1:7200;transport=tcp>"],
            Some(5),
            &unique("c"),
            1,
        )
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let mut held = std::net::TcpStream::connect(s.addr()).unwrap();
    held.write_all(reg.as_bytes()).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = read_tcp_response(&mut held);
    assert_eq!(r.code, 200);
    let t = closed_after(&mut held);
    assert!(
        t >= Duration::from_secs(3),
        "closed {t:?} after the REGISTER, before its binding expired"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Every flag of `serve` can come from the environment (containers): `SIPFARM_LISTEN`,
/// `SIPFARM_DOMAIN` (comma-separated lists), `SIPFARM_ALIAS`...; a bad value is named.
#[test]
fn serve_reads_its_flags_from_the_environment() {
    let port = free_port();
    let mut p = Proc::start(
        Command::new(sipfarm_bin())
            .arg("serve")
            .env("SIPFARM_LISTEN", format!("udp:127.0.0.1:{port}"))
            .env("SIPFARM_DOMAIN", "env.test,example.test")
            .env("SIPFARM_ALIAS", "sip9.example.test")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
        "sipfarm",
    );
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ua = Ua::new();
    let reg = ua.register(
        "carol",
        &["<sip:carol@127.0.0.1:7000>"],
        Some(600),
        "env-1",
        1,
    );
    let mut answered = None;
    for _ in 0..100 {
        answered = ua.try_request(at, &reg, Duration::from_millis(100));
        if answered.is_some() {
            break;
        }
    }
    let r = answered.expect("an instance on SIPFARM_LISTEN");
    assert_eq!(r.code, 200, "example.test from SIPFARM_DOMAIN: {}", r.text);
    // The alias is this instance: a request to it is answered here, not forwarded.
    let options = ua.options("sip:sip9.example.test");
    let r = ua.request(at, &options);
    assert_eq!(r.code, 200, "{}", r.text);
    p.stop();

    let out = Command::new(sipfarm_bin())
        .arg("serve")
        .env("SIPFARM_MIN_EXPIRES", "soon")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("soon") && err.contains("--min-expires"),
        "{err}"
    );
}

/// `sipfarm config check FILE`: 0 and a summary for a good file (the shipped example), 2 and
/// the file, key and value for a bad one, or the users file / secret it names that cannot be
/// read; no socket is bound (the example's port may be in use).
#[test]
fn config_check_validates_without_starting() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sipfarm.toml");
    let (code, text) = run(&["config", "check", example]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(": ok: listen udp:127.0.0.1:5060"), "{text}");
    assert!(text.contains("2 memcached nodes, 2 replicas"), "{text}");

    let dir = TempDir::new("sipfarm-config-check-");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[memcached]\nnodes = [\"127.0.0.1:11211\"]\nreplicas = 3\n",
    )
    .unwrap();
    let (code, text) = run(&["config", "check", &bad.display().to_string()]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("bad.toml") && text.contains("memcached.replicas") && text.contains('3'),
        "{text}"
    );

    let secretless = dir.join("auth.toml");
    std::fs::write(
        &secretless,
        format!(
            "[auth]\nusers_file = \"{}\"\nsecret_file = \"{}\"\n",
            dir.join("users").display(),
            dir.join("missing-secret").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("users"), "").unwrap();
    let (code, text) = run(&["config", "check", &secretless.display().to_string()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("missing-secret"), "{text}");

    let (code, text) = run(&[
        "config",
        "check",
        &dir.join("nowhere.toml").display().to_string(),
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("nowhere.toml"), "{text}");
}

/// `--log-format json`: one JSON object per line; a line about a request carries its Call-ID
/// and CSeq (its span), as the human format does (`sip{call_id=... cseq=...}`).
#[test]
fn log_lines_about_a_request_carry_its_call_id_and_cseq() {
    let dir = TempDir::new("sipfarm-logs-");
    for json in [true, false] {
        let log = dir.join(if json { "json.log" } else { "human.log" });
        let mut args = vec!["--dns-server", "127.0.0.1:9"];
        if json {
            args.extend(["--log-format", "json"]);
        }
        let s = Sipfarm::start_logging_at(&args, &log, "sipfarm=info");
        let ua = Ua::new();
        let call_id = unique("logged");
        // Nothing resolves nowhere.invalid: the instance logs why, within the request.
        let msg: Vec<String> = ua
            .options("sip:bob@nowhere.invalid")
            .split("\r\n")
            .map(|l| match l {
                l if l.starts_with("Call-ID: ") => format!("Call-ID: {call_id}"),
                "CSeq: 1 OPTIONS" => "CSeq: 4242 OPTIONS".to_owned(),
                l => l.to_owned(),
            })
            .collect();
        let msg = msg.join("\r\n");
        let r = ua.request(s.addr(), &msg);
        assert_eq!(r.code, 503, "{}", r.text);
        drop(s);
        let text = std::fs::read_to_string(&log).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("cannot resolve the next hop"))
            .unwrap_or_else(|| panic!("no line about the request:\n{text}"));
        if json {
            assert!(
                text.lines().all(|l| l.starts_with('{') && l.ends_with('}')),
                "{text}"
            );
            assert!(
                line.contains(&format!("\"call_id\":\"{call_id}\""))
                    && line.contains("\"cseq\":4242"),
                "{line}"
            );
        } else {
            assert!(
                line.contains(&format!("call_id=\"{call_id}\"")) && line.contains("cseq=4242"),
                "{line}"
            );
        }
    }
    let (code, text) = run(&["serve", "--log-format", "xml"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("--log-format: 'xml' is not one of human, json"),
        "{text}"
    );
}
