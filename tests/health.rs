//! Issue 14, health: an OPTIONS for the instance answers 200 while it can reach enough of the
//! farm to serve every user, and 503 with Retry-After when it cannot (with R=2 over three
//! nodes: two dead), so that SRV-aware clients and load balancers send elsewhere meanwhile;
//! `sipfarm farm status --instance` shows why. It is 200 again once a node is back.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn options_code(ua: &Ua, s: &Sipfarm) -> (u16, String) {
    let r = ua.request(s.addr(), &ua.options(&format!("sip:127.0.0.1:{}", s.port)));
    (r.code, r.text)
}

/// Poll until the instance's OPTIONS answers `code` (at most 10 s: the nodes are probed
/// every 500 ms).
fn wait_code(ua: &Ua, s: &Sipfarm, code: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, text) = options_code(ua, s);
        if got == code {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never {code}: last answer\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(nodes: &str, s: &Sipfarm) -> String {
    let out = Command::new(sipfarm_bin())
        .args(["farm", "status", "--memcached", nodes, "--instance"])
        .arg(s.addr().to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn options_is_the_health_check() {
    let mut mc = [Memcached::start(), Memcached::start(), Memcached::start()];
    let nodes = mc.iter().map(Memcached::addr).collect::<Vec<_>>().join(",");
    let s = Sipfarm::start(&["--memcached", &nodes, "--replicas", "2"]);
    let ua = Ua::new();
    assert_eq!(options_code(&ua, &s).0, 200);
    assert!(status(&nodes, &s).contains("health: ok (OPTIONS answered 200)"));

    // One node dead: every key still has a live owner.
    mc[0].crash();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(options_code(&ua, &s).0, 200, "one dead node of three, R=2");

    // Two dead: some users have no live owner left.
    mc[1].crash();
    let text = wait_code(&ua, &s, 503);
    assert!(text.contains("Retry-After: 5"), "{text}");
    assert!(
        !text.contains("X-Sipfarm-Health"),
        "the reason is for the operator's status only"
    );
    let shown = status(&nodes, &s);
    assert!(
        shown.contains(
            "health: UNHEALTHY (OPTIONS answered 503): 2 of 3 memcached nodes dead: 2 must \
             answer (replicas 2, write quorum 1)"
        ),
        "{shown}"
    );

    // Back: a node restarted (empty, refilled) on its port.
    let port = mc[1].port;
    mc[1] = Memcached::start_on(port);
    wait_code(&ua, &s, 200);
}

/// Every instance writes its ring id (its node list's) on the nodes at start; one with
/// another list (here an extra node) logs an error, and `farm status` reports it, from the
/// nodes and from the instance.
#[test]
fn an_instance_with_another_node_list_is_reported() {
    let mc = [Memcached::start(), Memcached::start(), Memcached::start()];
    let two = format!("{},{}", mc[0].addr(), mc[1].addr());
    let three = format!("{two},{}", mc[2].addr());
    let a = Sipfarm::start(&["--memcached", &two]);
    let st = status(&two, &a);
    assert!(st.contains("(this node list; no other seen)"), "{st}");

    let dir = TempDir::new("sipfarm-ring-");
    let log = dir.join("b.log");
    let b = Sipfarm::start_logging_at(&["--memcached", &three], &log, "sipfarm=info");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("another instance of this farm uses another node list"),
        "{text}"
    );
    // Seen from the first list: the instance B uses another ring.
    let st = status(&two, &b);
    assert!(
        st.contains("ANOTHER NODE LIST IN USE: the instance uses"),
        "{st}"
    );
    // Seen from B's list: the nodes hold A's ring id.
    let st = status(&three, &b);
    assert!(
        st.contains("ANOTHER NODE LIST IN USE") && st.contains(" holds "),
        "{st}"
    );
    drop(a);
}
