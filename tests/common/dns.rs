//! A real DNS server for RFC 3263 tests: dnsmasq (Debian package dnsmasq-base) answering
//! only the records a test gives it, on a free port of 127.0.0.1, stopped by its pid.

use super::processes::{Proc, TempDir, free_port};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn dnsmasq_bin() -> String {
    std::env::var("DNSMASQ").unwrap_or_else(|_| {
        // Debian installs it in /usr/sbin, which is not on every user's PATH.
        let sbin = "/usr/sbin/dnsmasq";
        if std::path::Path::new(sbin).exists() {
            sbin.into()
        } else {
            "dnsmasq".into()
        }
    })
}

pub struct Dnsmasq {
    pub addr: SocketAddr,
    _proc: Proc,
    _dir: TempDir,
}

impl Dnsmasq {
    /// dnsmasq with these record options (`--srv-host=...`, `--host-record=...`) and nothing
    /// else: no upstream server, no /etc/hosts, no configuration file, no DHCP.
    pub fn start(records: &[String]) -> Dnsmasq {
        for _ in 0..3 {
            let port = free_port();
            if let Some(d) = Self::try_start(port, records) {
                return d;
            }
            eprintln!("dnsmasq exited on {port}; another port");
        }
        panic!("dnsmasq did not start");
    }

    fn try_start(port: u16, records: &[String]) -> Option<Dnsmasq> {
        let dir = TempDir::new("sipfarm-dns-");
        let pid_file = dir.join("dnsmasq.pid");
        let mut args = vec![
            "--no-daemon".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            "--bind-interfaces".to_owned(),
            "--listen-address=127.0.0.1".to_owned(),
            format!("--port={port}"),
            format!("--pid-file={}", pid_file.display()),
        ];
        args.extend(records.iter().cloned());
        let mut proc = Proc::start(
            Command::new(dnsmasq_bin())
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "dnsmasq (apt-get install dnsmasq-base)",
        );
        // It serves TCP on the same port: connectable means ready.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if !proc.running() {
                return None;
            }
            assert!(Instant::now() < deadline, "dnsmasq did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Dnsmasq {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _proc: proc,
            _dir: dir,
        })
    }
}
