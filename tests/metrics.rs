//! Issue 14: the Prometheus endpoint (`--metrics HOST:PORT`), scraped from a running instance
//! over a real farm: requests by method, answers by code, memcached calls by node and result
//! with latency histograms, breaker state, TCP connections, dropped messages.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the first sample line starting with `name` (labels included).
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_are_scraped() {
    let mut mc = [Memcached::start(), Memcached::start()];
    let nodes = mc.iter().map(Memcached::addr).collect::<Vec<_>>().join(",");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let s = Sipfarm::start(&["--memcached", &nodes, "--metrics", &listen]);
    let ua = Ua::new();
    for n in 0..2 {
        let reg = ua.register(
            "mia",
            &["<sip:mia@127.0.0.1:7600>"],
            Some(600),
            "m-1",
            n + 1,
        );
        assert_eq!(ua.request(s.addr(), &reg).code, 200);
    }
    ua.send_bytes(s.addr(), b"\x00\x01 not sip at all");
    std::thread::sleep(Duration::from_millis(200));

    let page = get(port, "/metrics");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(
        page.contains("Content-Type: text/plain; version=0.0.4"),
        "{page}"
    );
    assert_eq!(
        value(&page, "sipfarm_requests_total{method=\"REGISTER\"}"),
        Some(2.0),
        "{page}"
    );
    // The OPTIONS of the harness's start-up wait is counted too.
    assert!(
        value(&page, "sipfarm_responses_total{code=\"200\"}").unwrap_or(0.0) >= 3.0,
        "{page}"
    );
    let ok = format!(
        "sipfarm_memcached_operations_total{{node=\"{}\",result=\"ok\"}}",
        mc[0].addr()
    );
    assert!(value(&page, &ok).unwrap_or(0.0) > 0.0, "{ok} in\n{page}");
    let bucket = format!(
        "sipfarm_memcached_operation_seconds_bucket{{le=\"+Inf\",node=\"{}\"}} ",
        mc[0].addr()
    );
    assert!(page.contains(&bucket), "{bucket} in\n{page}");
    let dead0 = format!("sipfarm_memcached_node_dead{{node=\"{}\"}}", mc[0].addr());
    assert_eq!(value(&page, &dead0), Some(0.0), "{page}");
    assert_eq!(value(&page, "sipfarm_tcp_connections"), Some(0.0), "{page}");
    // mia's record (and the ring id) on each node.
    let items = format!("sipfarm_memcached_items{{node=\"{}\"}}", mc[1].addr());
    assert!(
        value(&page, &items).unwrap_or(0.0) >= 1.0,
        "{items} in\n{page}"
    );
    assert_eq!(
        value(
            &page,
            "sipfarm_dropped_messages_total{reason=\"unreadable\"}"
        ),
        Some(1.0),
        "{page}"
    );

    // A dead node shows in its breaker gauge, and its calls as lost.
    mc[0].crash();
    // A write right away meets it on the data path (connection refused: lost).
    let reg = ua.register("mia", &["<sip:mia@127.0.0.1:7600>"], Some(600), "m-1", 3);
    ua.request(s.addr(), &reg);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = get(port, "/metrics");
        if value(&page, &dead0) == Some(1.0) {
            let lost = format!(
                "sipfarm_memcached_operations_total{{node=\"{}\",result=\"lost\"}}",
                mc[0].addr()
            );
            assert!(value(&page, &lost).unwrap_or(0.0) > 0.0, "{page}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never shown dead:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(get(port, "/").starts_with("HTTP/1.1 404"));
    drop(s);

    let out = std::process::Command::new(sipfarm_bin())
        .args(["serve", "--metrics", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics: 'nowhere' is not IP:PORT"));
}

/// The census: registrations and bindings of the whole farm, taken by one instance (3 to 6 s
/// after start, then every 5 minutes) and shown by every instance's scrape.
#[test]
fn registrations_and_bindings_are_counted_farm_wide() {
    let mc = [Memcached::start(), Memcached::start(), Memcached::start()];
    let nodes = mc.iter().map(Memcached::addr).collect::<Vec<_>>().join(",");
    let ports = [free_port(), free_port()];
    let farm: Vec<Sipfarm> = ports
        .iter()
        .map(|p| {
            let listen = format!("127.0.0.1:{p}");
            Sipfarm::start(&["--memcached", &nodes, "--metrics", &listen])
        })
        .collect();
    let ua = Ua::new();
    // 4 users through instance 0: 7 live bindings; one more removed.
    for (n, user) in ["ann", "bo", "cy", "di"].iter().enumerate() {
        let a = format!("<sip:{user}@127.0.0.1:{}>", 7610 + n);
        let b = format!("<sip:{user}@127.0.0.1:{}>", 7620 + n);
        let contacts: Vec<&str> = if n == 3 { vec![&a] } else { vec![&a, &b] };
        let reg = ua.register(user, &contacts, Some(600), user, 1);
        assert_eq!(ua.request(farm[0].addr(), &reg).code, 200);
    }
    let bye = ua.register("ann", &["<sip:ann@127.0.0.1:7620>"], Some(0), "ann", 2);
    assert_eq!(ua.request(farm[0].addr(), &bye).code, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = get(ports[1], "/metrics");
        let got = (
            value(&page, "sipfarm_registrations "),
            value(&page, "sipfarm_bindings "),
        );
        if got == (Some(4.0), Some(6.0)) {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}\n{page}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
