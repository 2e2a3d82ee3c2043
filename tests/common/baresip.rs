//! Real softphones for the tests: baresip 1.0, headless, driven over its `ctrl_tcp` (commands
//! in, events out), with its SIP trace (`-s`) read back from its stdout; and the network
//! namespace such tests run in (baresip wants a non-loopback IPv4 address, and nothing a phone
//! sends may leave the machine: loopback, and a veth pair whose two ends stay inside).

use super::processes::{Proc, TempDir, free_port};
use super::ua::Sip;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const INSIDE: &str = "SIPFARM_BARESIP_NETNS";
/// The longest any one step (a start, a registration, a call event) may take.
pub const STEP: Duration = Duration::from_secs(5);

/// How a phone finds the farm, and what else its account holds.
#[derive(Default)]
pub struct Account {
    /// The account's `outbound=` proxy (every request goes there); None: RFC 3263 lookups of
    /// the domain (NAPTR, SRV, A) at `dns`.
    pub outbound: Option<String>,
    /// baresip's `dns_server`.
    pub dns: Option<SocketAddr>,
    /// `auth_pass=`: the password of digest authentication.
    pub password: Option<&'static str>,
    /// The current contact of its contacts file: whom `message` sends to.
    pub contact: Option<&'static str>,
}

impl Account {
    pub fn through(instance: SocketAddr) -> Account {
        Account {
            outbound: Some(format!("sip:{instance};transport=udp")),
            ..Account::default()
        }
    }
}

/// One baresip, configured in a folder of its own, its stdout (with the SIP trace) in a file.
pub struct Baresip {
    pub user: &'static str,
    /// How it reaches the farm (its outbound proxy, or its DNS server), for reports.
    pub proxy: String,
    pub ctrl: TcpStream,
    /// Bytes read from ctrl_tcp not yet split into netstrings.
    pub pending: Vec<u8>,
    /// Every event and response read from ctrl_tcp, in order (for failure reports).
    pub events: Vec<String>,
    pub out: PathBuf,
    pub proc: Proc,
    _dir: TempDir,
}

/// A port free for UDP and TCP on `ip` (baresip's sip_listen opens both).
pub fn free_port_on(ip: &str) -> u16 {
    loop {
        let t = TcpListener::bind((ip, 0)).expect("bind tcp");
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

impl Baresip {
    pub fn start(user: &'static str, ifname: &str, ip: &str, account: Account) -> Baresip {
        let dir = TempDir::new(&format!("sipfarm-baresip-{user}-"));
        let sip_port = free_port_on(ip);
        let ctrl_port = free_port();
        // sip_listen and net_interface pin the phone to its end of the veth pair, so that its
        // Via, Contact and SDP all name that address. No sound card: the source is a sine
        // (it needs 48 kHz stereo) and the player a module that is not loaded (what comes in is
        // decoded and dropped). No STUN/TURN/ICE modules: nothing looks outside.
        let config = format!(
            "poll_method epoll\n\
             sip_listen {ip}:{sip_port}\n\
             net_interface {ifname}\n\
             call_local_timeout 120\n\
             audio_player none,none\n\
             audio_alert none,none\n\
             audio_source ausine,440\n\
             ausrc_srate 48000\n\
             ausrc_channels 2\n\
             rtcp_mux no\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module ausine.so\n\
             module_tmp account.so\n\
             module_app contact.so\n\
             module_app menu.so\n\
             module_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n"
        );
        let dns = account
            .dns
            .map_or(String::new(), |d| format!("dns_server {d}\n"));
        std::fs::write(dir.join("config"), config + &dns).unwrap();
        let mut line = format!("<sip:{user}@example.test>");
        if let Some(o) = &account.outbound {
            line += &format!(";outbound=\"{o}\"");
        }
        if let Some(p) = account.password {
            line += &format!(";auth_pass={p}");
        }
        line += ";regint=600;answermode=auto\n";
        std::fs::write(dir.join("accounts"), line).unwrap();
        let contacts = account.contact.map_or(String::new(), |c| {
            std::fs::write(dir.join("current_contact"), format!("sip:{c}@example.test")).unwrap();
            format!("<sip:{c}@example.test>\n")
        });
        std::fs::write(dir.join("contacts"), contacts).unwrap();
        let proxy = account.outbound.clone().unwrap_or_else(|| {
            format!(
                "example.test by DNS at {}",
                account.dns.map_or("?".into(), |d| d.to_string())
            )
        });
        let out = dir.join("stdout");
        let file = std::fs::File::create(&out).unwrap();
        let proc = Proc::start(
            Command::new("baresip")
                .arg("-f")
                .arg(dir.path())
                .arg("-s") // SIP trace: every message sent and received, with its addresses
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file),
            "baresip (apt-get install baresip)",
        );
        let deadline = Instant::now() + STEP;
        let ctrl = loop {
            match TcpStream::connect(("127.0.0.1", ctrl_port)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("{user}'s baresip has no ctrl_tcp on {ctrl_port}: {e}"),
            }
        };
        Baresip {
            user,
            proxy,
            ctrl,
            pending: Vec::new(),
            events: Vec::new(),
            out,
            proc,
            _dir: dir,
        }
    }

    /// bob of `phones_farm` on 10.200.0.2 (v1), pinned by configuration to instance `i` (its
    /// outbound proxy is that instance's name at the farm's DNS server `dns`), messaging alice.
    pub fn bob_pinned_to(i: usize, dns: SocketAddr) -> Baresip {
        Baresip::start(
            "bob",
            "v1",
            "10.200.0.2",
            Account {
                outbound: Some(format!("sip:sip{i}.example.test;transport=udp")),
                dns: Some(dns),
                password: Some("bob-pw-5678"),
                contact: Some("alice"),
            },
        )
    }

    /// Send a ctrl_tcp command (a netstring holding a JSON object).
    pub fn command(&mut self, command: &str, params: &str) {
        let json = format!(
            "{{\"command\":\"{command}\",\"params\":\"{params}\",\"token\":\"{command}\"}}"
        );
        let msg = format!("{}:{json},", json.len());
        self.ctrl.write_all(msg.as_bytes()).unwrap();
    }

    /// Read ctrl_tcp until a message containing every one of `needles` arrives; panics after
    /// `STEP` with what did arrive.
    pub fn wait_for(&mut self, needles: &[&str], report: &dyn Fn() -> String) -> String {
        let deadline = Instant::now() + STEP;
        let mut buf = [0u8; 4096];
        loop {
            while let Some(msg) = self.next_netstring() {
                self.events.push(msg.clone());
                if needles.iter().all(|n| msg.contains(n)) {
                    return msg;
                }
            }
            let left = deadline.checked_duration_since(Instant::now());
            let Some(left) = left.filter(|l| !l.is_zero()) else {
                panic!(
                    "{} (through {}) never reported {needles:?}; ctrl_tcp said:\n{}\n{}",
                    self.user,
                    self.proxy,
                    self.events.join("\n"),
                    report()
                );
            };
            self.ctrl.set_read_timeout(Some(left)).unwrap();
            match self.ctrl.read(&mut buf) {
                Ok(0) => panic!("{}'s ctrl_tcp closed\n{}", self.user, report()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(_) => {} // timed out: the deadline check above ends it
            }
        }
    }

    pub fn next_netstring(&mut self) -> Option<String> {
        let colon = self.pending.iter().position(|b| *b == b':')?;
        let len: usize = std::str::from_utf8(&self.pending[..colon])
            .ok()?
            .parse()
            .ok()?;
        if self.pending.len() < colon + 1 + len + 1 {
            return None;
        }
        let body = String::from_utf8_lossy(&self.pending[colon + 1..colon + 1 + len]).into_owned();
        self.pending.drain(..colon + 1 + len + 1);
        Some(body)
    }

    /// What it printed so far (complete once it has exited).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// `quit` over ctrl_tcp (it unregisters first), and a bounded wait for the exit, so that
    /// its stdout is flushed; SIGTERM/SIGKILL by pid if it lingers.
    pub fn quit(&mut self) {
        self.command("quit", "");
        if self.proc.wait_for(STEP).is_none() {
            self.proc.stop();
        }
    }
}

/// One SIP message of a phone's trace: `#`, `UDP SRC -> DST`, the message.
pub struct Traced {
    pub src: String,
    pub dst: String,
    pub msg: Sip,
}

impl Traced {
    pub fn cseq_method(&self) -> String {
        self.msg
            .header("CSeq")
            .and_then(|c| c.split_whitespace().nth(1).map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn call_id(&self) -> String {
        self.msg.header("Call-ID").unwrap_or_default()
    }

    /// `INVITE` for a request, `200 INVITE` for a response (with its CSeq method).
    pub fn what(&self) -> String {
        match self.msg.code() {
            Some(code) => format!("{code} {}", self.cseq_method()),
            None => self.msg.method().unwrap_or_default().to_owned(),
        }
    }
}

/// The messages of baresip's `-s` trace: each starts with a coloured `#` line and the
/// transport line, and ends where the colour is reset.
pub fn trace(output: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    for block in output.split("\x1b[36;1m#\n").skip(1) {
        let block = block.split("\x1b[;m").next().unwrap_or("");
        let Some((line, msg)) = block.split_once('\n') else {
            continue;
        };
        let mut parts = line.split_whitespace();
        let (Some(_proto), Some(src), Some("->"), Some(dst)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if let Some(msg) = Sip::read(msg) {
            out.push(Traced {
                src: src.to_owned(),
                dst: dst.to_owned(),
                msg,
            });
        }
    }
    out
}

/// The contact URI a phone registered (from its own REGISTER), and checks that it registered
/// only through its own instance and got 200 from it.
pub fn registered_contact(phone: &str, trace: &[Traced], instance: &str) -> String {
    let registers: Vec<&Traced> = trace
        .iter()
        .filter(|t| t.msg.method() == Some("REGISTER"))
        .collect();
    assert!(!registers.is_empty(), "{phone} sent no REGISTER");
    for r in &registers {
        assert_eq!(
            r.dst, instance,
            "{phone} registered elsewhere:\n{}",
            r.msg.text
        );
    }
    assert!(
        trace
            .iter()
            .any(|t| t.what() == "200 REGISTER" && t.src == instance),
        "{phone} got no 200 to REGISTER from {instance}"
    );
    let contact = registers[0].msg.header("Contact").expect("a Contact");
    contact[contact.find('<').unwrap() + 1..contact.find('>').unwrap()].to_owned()
}

/// The messages of one call as (direction, what) seen by a phone, in order: `>` sent through
/// `instance`, `<` received from it. Anything of the call exchanged elsewhere is `?`.
pub fn call_flow(trace: &[Traced], call_id: &str, instance: &str) -> Vec<String> {
    trace
        .iter()
        .filter(|t| t.call_id() == call_id)
        .map(|t| {
            let dir = if t.dst == instance {
                ">"
            } else if t.src == instance {
                "<"
            } else {
                "?"
            };
            format!("{dir} {}", t.what())
        })
        .collect()
}

/// The position of the first `step` in `flow` at or after `from`, for order checks.
pub fn find_from(flow: &[String], from: usize, step: &str) -> Option<usize> {
    flow.iter()
        .skip(from)
        .position(|s| s == step)
        .map(|i| i + from)
}

/// `steps` occur in `flow` in this order, nothing of the call through another hop.
pub fn assert_in_order(who: &str, flow: &[String], steps: &[&str], report: &dyn Fn() -> String) {
    assert!(
        !flow.iter().any(|s| s.starts_with('?')),
        "{who}: part of the call went elsewhere: {flow:?}\n{}",
        report()
    );
    let mut at = 0;
    for step in steps {
        match find_from(flow, at, step) {
            Some(i) => at = i + 1,
            None => panic!(
                "{who}: no `{step}` (in order {steps:?}) in {flow:?}\n{}",
                report()
            ),
        }
    }
}

/// `caller` dials `callee`, who answers by itself (answermode=auto), then `caller` hangs up.
/// Waits for each side's events: established (outgoing, incoming), then closed by the user
/// on the caller's side and by the peer (its BYE) on the callee's. Returns the call's id.
pub fn call(caller: &mut Baresip, callee: &mut Baresip, report: &dyn Fn() -> String) -> String {
    let (to, from) = (
        format!("\"peeruri\":\"sip:{}@example.test\"", callee.user),
        format!("\"peeruri\":\"sip:{}@example.test\"", caller.user),
    );
    caller.command("dial", &format!("sip:{}@example.test", callee.user));
    let up = caller.wait_for(&["\"CALL_ESTABLISHED\"", "\"outgoing\"", &to], report);
    let id = event_id(&up);
    let id_field = format!("\"id\":\"{id}\"");
    callee.wait_for(
        &["\"CALL_ESTABLISHED\"", "\"incoming\"", &from, &id_field],
        report,
    );
    caller.command("hangup", "");
    caller.wait_for(&["\"CALL_CLOSED\"", &id_field, "reset by user"], report);
    callee.wait_for(&["\"CALL_CLOSED\"", &id_field, "reset by peer"], report);
    id
}

/// The `id` of a ctrl_tcp event.
pub fn event_id(event: &str) -> String {
    let i = event.find("\"id\":\"").expect("an event with an id") + 6;
    event[i..].split('"').next().unwrap().to_owned()
}

/// True inside the test's own network namespace. Outside, re-runs test `test` in a new one
/// (loopback, and a veth pair with both ends inside: nothing is routed out of it), checks
/// that it passed, and returns false.
pub fn in_namespace(test: &str) -> bool {
    if std::env::var(INSIDE).is_ok() {
        // Inside: the only routes are the veth pair's subnet (and loopback's, implicit).
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        assert!(
            routes
                .lines()
                .skip(1)
                .all(|l| l.starts_with("v0") || l.starts_with("v1")),
            "not isolated: {routes}"
        );
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    // Its own mount namespace too (nothing mounted in it is seen outside): a phone that
    // reads only /etc/resolv.conf gets the test's DNS server there (`use_dns_server`).
    let script = format!(
        "set -e; mount --make-rprivate /; ip link set lo up; \
         ip link add v0 type veth peer name v1; \
         ip addr add 10.200.0.1/24 dev v0; ip addr add 10.200.0.2/24 dev v1; \
         ip link set v0 up; ip link set v1 up; \
         exec {} --exact {test} --nocapture --test-threads 1",
        exe.display()
    );
    let status = Command::new("unshare")
        .args(["-n", "-m", "sh", "-c", &script])
        .env(INSIDE, "1")
        .status()
        .expect("unshare (util-linux) is needed to isolate this test");
    assert!(
        status.success(),
        "{test} failed inside its network namespace (it needs root for unshare -n -m and ip \
         link add)"
    );
    false
}

/// Inside the test's namespaces only: /etc/resolv.conf names `dns` (`nameserver [IP]:PORT`,
/// the form belle-sip reads), bind-mounted over the host's in the test's own mount namespace.
pub fn use_dns_server(dns: SocketAddr, dir: &std::path::Path) {
    assert!(
        std::env::var(INSIDE).is_ok(),
        "only inside the test's namespaces"
    );
    let file = dir.join("resolv.conf");
    std::fs::write(&file, format!("nameserver [{}]:{}\n", dns.ip(), dns.port())).unwrap();
    let status = Command::new("mount")
        .arg("--bind")
        .arg(&file)
        .arg("/etc/resolv.conf")
        .status()
        .expect("mount");
    assert!(status.success(), "mount --bind over /etc/resolv.conf");
}
