//! Two real softphones (baresip 1.0) calling each other across the README's "Running a farm":
//! two memcached nodes, instance A and instance B, domain example.test.
//!
//! alice registers through A and bob through B (each phone's outbound proxy names its
//! instance: there is no DNS for example.test). alice calls bob, bob answers by himself, alice
//! hangs up; then bob calls alice, alice answers, bob hangs up. Each call must be set up
//! (INVITE, 200, ACK) and torn down (BYE, 200) as seen by both phones' own SIP trace
//! (`baresip -s`), and its INVITE must cross the farm: placed through one instance, it reaches
//! the contact the callee registered through the other, with no message through the callee's
//! instance (the binding came from memcached, not from that instance's memory); the instances'
//! debug logs agree (the caller's forwarded the INVITE to that contact, the callee's never saw
//! the call).
//!
//! baresip wants a non-loopback IPv4 address, and nothing a phone sends may leave the machine.
//! So the test re-runs itself under `unshare -n` with loopback up and a veth pair whose two
//! ends both stay in the namespace (alice on 10.200.0.1, bob on 10.200.0.2); memcached, the
//! instances (on 127.0.0.1) and the phones all run in there. The phones are driven over
//! baresip's `ctrl_tcp` (commands in, events out), which also paces the test: each step waits
//! for the phone's event, a few seconds at most.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INSIDE: &str = "SIPFARM_BARESIP_NETNS";
const TEST: &str = "two_baresips_call_each_other_across_the_farm";
/// The longest any one step (a start, a registration, a call event) may take.
const STEP: Duration = Duration::from_secs(5);

/// One baresip, configured in a folder of its own, its stdout (with the SIP trace) in a file.
struct Baresip {
    user: &'static str,
    /// Where it sends everything: its instance, as outbound proxy.
    proxy: SocketAddr,
    ctrl: TcpStream,
    /// Bytes read from ctrl_tcp not yet split into netstrings.
    pending: Vec<u8>,
    /// Every event and response read from ctrl_tcp, in order (for failure reports).
    events: Vec<String>,
    out: PathBuf,
    proc: Proc,
    _dir: TempDir,
}

/// A port free for UDP and TCP on `ip` (baresip's sip_listen opens both).
fn free_port_on(ip: &str) -> u16 {
    loop {
        let t = TcpListener::bind((ip, 0)).expect("bind tcp");
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

impl Baresip {
    fn start(user: &'static str, ifname: &str, ip: &str, proxy: SocketAddr) -> Baresip {
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
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{user}@example.test>;outbound=\"sip:{proxy};transport=udp\";regint=600;answermode=auto\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("contacts"), "").unwrap();
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

    /// Send a ctrl_tcp command (a netstring holding a JSON object).
    fn command(&mut self, command: &str, params: &str) {
        let json = format!(
            "{{\"command\":\"{command}\",\"params\":\"{params}\",\"token\":\"{command}\"}}"
        );
        let msg = format!("{}:{json},", json.len());
        self.ctrl.write_all(msg.as_bytes()).unwrap();
    }

    /// Read ctrl_tcp until a message containing every one of `needles` arrives; panics after
    /// `STEP` with what did arrive.
    fn wait_for(&mut self, needles: &[&str], report: &dyn Fn() -> String) -> String {
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

    fn next_netstring(&mut self) -> Option<String> {
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
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// `quit` over ctrl_tcp (it unregisters first), and a bounded wait for the exit, so that
    /// its stdout is flushed; SIGTERM/SIGKILL by pid if it lingers.
    fn quit(&mut self) {
        self.command("quit", "");
        if self.proc.wait_for(STEP).is_none() {
            self.proc.stop();
        }
    }
}

/// One SIP message of a phone's trace: `#`, `UDP SRC -> DST`, the message.
struct Traced {
    src: String,
    dst: String,
    msg: Sip,
}

impl Traced {
    fn cseq_method(&self) -> String {
        self.msg
            .header("CSeq")
            .and_then(|c| c.split_whitespace().nth(1).map(str::to_owned))
            .unwrap_or_default()
    }

    fn call_id(&self) -> String {
        self.msg.header("Call-ID").unwrap_or_default()
    }

    /// `INVITE` for a request, `200 INVITE` for a response (with its CSeq method).
    fn what(&self) -> String {
        match self.msg.code() {
            Some(code) => format!("{code} {}", self.cseq_method()),
            None => self.msg.method().unwrap_or_default().to_owned(),
        }
    }
}

/// The messages of baresip's `-s` trace: each starts with a coloured `#` line and the
/// transport line, and ends where the colour is reset.
fn trace(output: &str) -> Vec<Traced> {
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
fn registered_contact(phone: &str, trace: &[Traced], instance: &str) -> String {
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
fn call_flow(trace: &[Traced], call_id: &str, instance: &str) -> Vec<String> {
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
fn find_from(flow: &[String], from: usize, step: &str) -> Option<usize> {
    flow.iter()
        .skip(from)
        .position(|s| s == step)
        .map(|i| i + from)
}

/// `steps` occur in `flow` in this order, nothing of the call through another hop.
fn assert_in_order(who: &str, flow: &[String], steps: &[&str], report: &dyn Fn() -> String) {
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
fn call(caller: &mut Baresip, callee: &mut Baresip, report: &dyn Fn() -> String) -> String {
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
fn event_id(event: &str) -> String {
    let i = event.find("\"id\":\"").expect("an event with an id") + 6;
    event[i..].split('"').next().unwrap().to_owned()
}

#[test]
fn two_baresips_call_each_other_across_the_farm() {
    if std::env::var(INSIDE).is_err() {
        // Re-run this very test in a new network namespace: loopback, and a veth pair with
        // both ends inside (nothing is routed out of the namespace).
        let exe = std::env::current_exe().unwrap();
        let script = format!(
            "set -e; ip link set lo up; \
             ip link add v0 type veth peer name v1; \
             ip addr add 10.200.0.1/24 dev v0; ip addr add 10.200.0.2/24 dev v1; \
             ip link set v0 up; ip link set v1 up; \
             exec {} --exact {TEST} --nocapture --test-threads 1",
            exe.display()
        );
        let status = Command::new("unshare")
            .args(["-n", "sh", "-c", &script])
            .env(INSIDE, "1")
            .status()
            .expect("unshare (util-linux) is needed to isolate this test");
        assert!(
            status.success(),
            "the baresip test failed inside its network namespace (it needs root for unshare -n \
             and ip link add)"
        );
        return;
    }
    let started = Instant::now();
    // Inside: the only routes are the veth pair's subnet (and loopback's, which is implicit).
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    assert!(
        routes
            .lines()
            .skip(1)
            .all(|l| l.starts_with("v0") || l.starts_with("v1")),
        "not isolated: {routes}"
    );

    // The README's farm: two nodes, two instances on the same node list.
    let m1 = Memcached::start();
    let m2 = Memcached::start();
    let nodes = format!("{},{}", m1.addr(), m2.addr());
    let logs = TempDir::new("sipfarm-baresip-logs-");
    let (log_a, log_b) = (logs.join("a.log"), logs.join("b.log"));
    let a = Sipfarm::start_logging_at(&["--memcached", &nodes], &log_a, "sipfarm=debug");
    let b = Sipfarm::start_logging_at(&["--memcached", &nodes], &log_b, "sipfarm=debug");
    let (addr_a, addr_b) = (a.addr().to_string(), b.addr().to_string());

    let mut alice = Baresip::start("alice", "v0", "10.200.0.1", a.addr());
    let mut bob = Baresip::start("bob", "v1", "10.200.0.2", b.addr());
    // Everything both phones and both instances said, for a failure's message. It owns copies
    // of the paths only: the processes stay with the test, stopped in order when it ends.
    let (alice_out, bob_out) = (alice.out.clone(), bob.out.clone());
    let (port_a, port_b) = (a.port, b.port);
    let report = move || {
        format!(
            "--- alice's baresip:\n{}\n--- bob's baresip:\n{}\n--- instance A ({}):\n{}\n--- instance B ({}):\n{}",
            std::fs::read_to_string(&alice_out).unwrap_or_default(),
            std::fs::read_to_string(&bob_out).unwrap_or_default(),
            port_a,
            std::fs::read_to_string(&log_a).unwrap_or_default(),
            port_b,
            std::fs::read_to_string(&log_b).unwrap_or_default(),
        )
    };

    // Both registered, each visible through the *other* instance (the farm shares them).
    let ua = Ua::new();
    for (user, other) in [("alice", &addr_b), ("bob", &addr_a)] {
        let other: SocketAddr = other.parse().unwrap();
        let deadline = Instant::now() + STEP;
        loop {
            let q = ua.register(user, &[], None, &unique("query"), 1);
            let r = ua.request(other, &q);
            if r.code == 200 && !r.contacts().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{user} not registered as seen from {other}: {}\n{}",
                r.text,
                report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // alice calls bob (through A), bob answers by himself, alice hangs up; then the other
    // way round. Each phone's events carry the call's id (its Call-ID), matched to the
    // traces below.
    let first = call(&mut alice, &mut bob, &report);
    let second = call(&mut bob, &mut alice, &report);

    // Quit both (their stdout is complete once they have exited), then read the traces.
    alice.quit();
    bob.quit();
    let (alice_trace, bob_trace) = (trace(&alice.output()), trace(&bob.output()));
    let alice_contact = registered_contact("alice", &alice_trace, &addr_a);
    let bob_contact = registered_contact("bob", &bob_trace, &addr_b);

    let calls = [
        // (caller, its trace, its instance, callee, trace, instance, callee's contact)
        (
            "alice",
            &alice_trace,
            &addr_a,
            "bob",
            &bob_trace,
            &addr_b,
            &bob_contact,
        ),
        (
            "bob",
            &bob_trace,
            &addr_b,
            "alice",
            &alice_trace,
            &addr_a,
            &alice_contact,
        ),
    ];
    for (caller, caller_trace, via, callee, callee_trace, callee_home, contact) in calls {
        // The caller's INVITE for the callee's address-of-record, sent to its own instance.
        let invite = caller_trace
            .iter()
            .find(|t| {
                t.msg.method() == Some("INVITE")
                    && t.msg.request_uri() == Some(&format!("sip:{callee}@example.test"))
            })
            .unwrap_or_else(|| panic!("{caller} sent no INVITE for {callee}\n{}", report()));
        assert_eq!(&invite.dst, via, "{caller}'s INVITE went elsewhere");
        let call_id = invite.call_id();
        assert_eq!(
            call_id,
            if caller == "alice" { &first } else { &second }.as_str(),
            "the INVITE {caller} traced is not the call its events named"
        );
        // Both sides of the call went through the caller's instance only (its Record-Route),
        // and the caller both placed and ended it.
        let caller_flow = call_flow(caller_trace, &call_id, via);
        let callee_flow = call_flow(callee_trace, &call_id, via);
        println!("{caller} -> {callee} through {via}: {caller}: {caller_flow:?}");
        println!("{caller} -> {callee} through {via}: {callee}: {callee_flow:?}");
        assert_in_order(
            caller,
            &caller_flow,
            &["> INVITE", "< 200 INVITE", "> ACK", "> BYE", "< 200 BYE"],
            &report,
        );
        assert_in_order(
            callee,
            &callee_flow,
            &["< INVITE", "> 200 INVITE", "< ACK", "< BYE", "> 200 BYE"],
            &report,
        );
        assert!(
            !callee_flow.iter().any(|s| s == "> BYE"),
            "{callee} hung up, not {caller}"
        );
        // Crossing the farm: the INVITE the callee got, from the caller's instance, is for
        // the contact it registered through the other instance.
        let got = callee_trace
            .iter()
            .find(|t| t.call_id() == call_id && t.msg.method() == Some("INVITE"))
            .unwrap();
        assert_eq!(
            got.msg.request_uri(),
            Some(contact.as_str()),
            "{callee} got the INVITE for another URI"
        );
        assert_ne!(via, callee_home, "the call did not cross instances");
        // sipfarm's own account (debug log): the caller's instance forwarded the INVITE to
        // that contact; the callee's instance never saw the call.
        let logs_of = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        let (via_log, home_log) = if via == &addr_a {
            (logs_of(&logs.join("a.log")), logs_of(&logs.join("b.log")))
        } else {
            (logs_of(&logs.join("b.log")), logs_of(&logs.join("a.log")))
        };
        assert!(
            via_log.lines().any(|l| l.contains(&call_id)
                && l.contains("method=\"INVITE\"")
                && l.contains("forwarding request")
                && l.contains(&format!("request_uri={contact}"))),
            "instance {via} logged no INVITE forwarded to {contact}:\n{via_log}"
        );
        assert!(
            !home_log.contains(&call_id),
            "instance {callee_home} saw the call:\n{home_log}"
        );
    }
    // And baresip itself said so, on each side, for both calls (its events said it already;
    // this is the line a person reading its console sees).
    for (phone, peer) in [(&alice, "bob"), (&bob, "alice")] {
        let line = format!(
            "{}@example.test: Call established: sip:{peer}@example.test",
            phone.user
        );
        assert_eq!(
            phone.output().matches(&line).count(),
            2,
            "{} did not print `{line}` twice",
            phone.user
        );
    }
    println!(
        "farm started, both phones registered, two calls placed and checked in {:?}",
        started.elapsed()
    );
}
