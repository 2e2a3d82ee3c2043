//! linphone's command-line client (`linphonec`, Debian package linphone-cli), headless, as a
//! test's softphone: commands on its standard input (readline mode: lines are queued; not
//! `--pipe`, whose `quit` hangs), what it prints read back from a file, its SIP trace in its
//! log (`-d 6 -l FILE`). Audio from a wav file (`soundcard use files`), no video, no STUN.
//! It finds its proxy by /etc/resolv.conf only (no DNS server setting): see
//! [`super::use_dns_server`].

use super::processes::{Proc, TempDir};
use std::io::Write;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The longest one step (start, registration, a call event) may take.
const STEP: Duration = Duration::from_secs(10);

pub struct Linphonec {
    pub user: &'static str,
    stdin: ChildStdin,
    /// What it prints (prompts, call and message events).
    pub out: PathBuf,
    /// Its log, with the SIP messages.
    pub log: PathBuf,
    /// How much of `out` earlier waits consumed.
    seen: usize,
    proc: Proc,
    _dir: TempDir,
}

impl Linphonec {
    /// `user@domain` with `password`, bound to `ip:5070` (UDP only), registering through
    /// `proxy` (a URI: `sip:example.test` for RFC 3263 lookups of the domain).
    pub fn start(
        user: &'static str,
        domain: &str,
        password: &str,
        ip: &str,
        proxy: &str,
    ) -> Linphonec {
        let dir = TempDir::new(&format!("sipfarm-linphone-{user}-"));
        // Its database folder must exist, or the core never starts (nothing listens).
        std::fs::create_dir_all(dir.join("home/.local/share/linphone")).unwrap();
        // ipv6_migration_done: otherwise it turns IPv6 back on, finds no route in the test's
        // namespace, calls the network down and drops the registration after 5 s.
        // im_notif_policy=none: no delivery notifications (extra MESSAGEs) back.
        let rc = format!(
            "[sip]\nsip_port=5070\nsip_tcp_port=0\nsip_tls_port=0\nbind_address={ip}\n\
             use_ipv6=0\nipv6_migration_done=1\ndefault_proxy=0\nim_notif_policy=none\n\n\
             [proxy_0]\nreg_proxy=<{proxy}>\nreg_identity=sip:{user}@{domain}\n\
             reg_expires=600\nreg_sendregister=1\npublish=0\n\n\
             [auth_info_0]\nusername={user}\npasswd={password}\nrealm={domain}\ndomain={domain}\n\n\
             [rtp]\naudio_rtp_port=7078\nvideo_rtp_port=7080\nbind_address={ip}\n\n\
             [sound]\nhold_music=/usr/share/sounds/linphone/hello8000.wav\n\n\
             [video]\nenabled=0\ncapture=0\ndisplay=0\nautomatically_initiate=0\n\
             automatically_accept=0\n"
        );
        let rc_path = dir.join("linphonerc");
        std::fs::write(&rc_path, rc).unwrap();
        let (out, log) = (dir.join("stdout"), dir.join("log"));
        let file = std::fs::File::create(&out).unwrap();
        let mut proc = Proc::start(
            Command::new("linphonec")
                .arg("-c")
                .arg(&rc_path)
                .args(["-d", "6", "-l"])
                .arg(&log)
                .env("HOME", dir.join("home"))
                .stdin(Stdio::piped())
                .stdout(file.try_clone().unwrap())
                .stderr(Stdio::null()),
            "linphonec (apt-get install linphone-cli)",
        );
        let stdin = proc.take_stdin().expect("linphonec's stdin");
        let mut phone = Linphonec {
            user,
            stdin,
            out,
            log,
            seen: 0,
            proc,
            _dir: dir,
        };
        phone.command("soundcard use files");
        phone
    }

    /// One command line.
    pub fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("linphonec's stdin");
        self.stdin.flush().ok();
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Wait (at most `STEP`) until what it printed since the last wait contains `needle`.
    pub fn wait_for(&mut self, needle: &str, report: &dyn Fn() -> String) {
        let deadline = Instant::now() + STEP;
        loop {
            let out = self.output();
            if let Some(i) = out.get(self.seen..).and_then(|rest| rest.find(needle)) {
                self.seen += i + needle.len();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s linphonec never printed `{needle}`:\n{}\n{}",
                self.user,
                out.get(self.seen..).unwrap_or_default(),
                report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Registered, as `status register` says (asked every 200 ms, at most `STEP`).
    pub fn wait_registered(&mut self, report: &dyn Fn() -> String) {
        let deadline = Instant::now() + STEP;
        let needle = "registered, identity=";
        while !self
            .output()
            .get(self.seen..)
            .unwrap_or_default()
            .contains(needle)
        {
            assert!(
                Instant::now() < deadline,
                "{} never registered:\n{}\n{}",
                self.user,
                self.output(),
                report()
            );
            self.command("status register");
            std::thread::sleep(Duration::from_millis(200));
        }
        self.wait_for(needle, report);
    }

    /// `quit` (it unregisters first), a bounded wait, then SIGTERM/SIGKILL by pid.
    pub fn quit(&mut self) {
        self.command("quit");
        if self.proc.wait_for(Duration::from_secs(5)).is_none() {
            self.proc.stop();
        }
    }
}
