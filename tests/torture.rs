//! RFC 4475 torture messages against a real sipfarm, in a network namespace of its own.
//!
//! The corpus names hosts in 192.0.2.0/24 and example domains, and a SIP element answers (or
//! forwards) to what a message names. So this test re-runs itself under `unshare -n` with
//! only loopback up: nothing it causes can leave the machine. It also rewrites each top Via
//! to ask for `rport`, so that answers come back to the test's own socket.
//!
//! Checks: every valid message a registrar/proxy processes gets no 400 (REGISTERs get 200,
//! except unksm2, whose non-SIP To a registrar must refuse); every invalid request is refused
//! or dropped; REGISTER bindings come back as RFC 4475 3.3.12-3.3.14 require; and the server
//! is alive and answering at the end.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const INSIDE: &str = "SIPFARM_TORTURE_NETNS";

fn corpus_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SIP_TORTURE_DIR") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sip-torture")
}

/// Insert `;rport` after the sent-by of the top Via so the answer comes to our socket. Done
/// on the text (not with sipfarm's parser), so that messages sipfarm refuses get it too.
fn ask_rport(raw: &[u8]) -> Vec<u8> {
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        let name_end = line.iter().position(|b| *b == b':').unwrap_or(0);
        let name = String::from_utf8_lossy(&line[..name_end])
            .trim()
            .to_ascii_lowercase();
        if pos > 0 && (name == "via" || name == "v") {
            // Skip "SIP / 2.0 / UDP" (three slash-separated tokens, spaces allowed).
            let mut i = name_end + 1;
            let mut slashes = 0;
            while i < line.len() && slashes < 2 {
                if line[i] == b'/' {
                    slashes += 1;
                }
                i += 1;
            }
            while i < line.len() && line[i] == b' ' {
                i += 1;
            }
            while i < line.len() && line[i].is_ascii_alphanumeric() {
                i += 1; // the transport
            }
            while i < line.len() && line[i] == b' ' {
                i += 1;
            }
            while i < line.len() && (line[i].is_ascii_alphanumeric() || b".-[]:".contains(&line[i]))
            {
                i += 1; // host[:port]
            }
            let at = pos + i;
            let mut out = raw[..at].to_vec();
            out.extend_from_slice(b";rport");
            out.extend_from_slice(&raw[at..]);
            return out;
        }
        pos = end;
    }
    raw.to_vec()
}

struct Row {
    file: String,
    valid: bool,
    kind: String,
    method: String,
}

fn manifest() -> Vec<Row> {
    let text = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv"))
        .expect("MANIFEST.tsv of the torture corpus");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                file: f[0].to_owned(),
                valid: f[2] == "yes",
                kind: f[3].to_owned(),
                method: f[4].to_owned(),
            }
        })
        .collect()
}

#[test]
fn torture_corpus() {
    if std::env::var(INSIDE).is_err() {
        // Re-run this very test in a new network namespace with only loopback up.
        let exe = std::env::current_exe().unwrap();
        let script = format!(
            "ip link set lo up && exec {} --exact torture_corpus --nocapture --test-threads 1",
            exe.display()
        );
        let status = Command::new("unshare")
            .args(["-n", "sh", "-c", &script])
            .env(INSIDE, "1")
            .env("SIP_TORTURE_DIR", corpus_dir())
            .status()
            .expect("unshare (util-linux) is needed to isolate this test");
        assert!(
            status.success(),
            "the torture test failed inside its network namespace (it needs root for unshare -n)"
        );
        return;
    }
    // Inside the namespace: no route but loopback.
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    assert!(routes.lines().count() <= 1, "not isolated: {routes}");

    let s = Sipfarm::start(&[
        "--domain",
        "example.com",
        "--domain",
        "chair-dnrc.example.com",
        "--domain",
        "example.net",
    ]);
    let ua = Ua::new();
    let mut failures = Vec::new();
    for row in manifest() {
        let raw = std::fs::read(corpus_dir().join(&row.file)).unwrap();
        let msg = ask_rport(&raw);
        ua.send_bytes(s.addr(), &msg);
        // Collect what comes back for a moment (forwarded copies of requests never come here:
        // the namespace has no route to their targets).
        // Answers are matched by Call-ID: a late answer to an earlier message is not counted.
        // Both are read with the tests' own reader, not sipfarm's parser.
        let call_id = Sip::read(&String::from_utf8_lossy(&raw)).and_then(|m| m.header("call-id"));
        let mut answers = Vec::new();
        while let Some(t) = ua.recv(Duration::from_millis(300)) {
            let Some(answer) = Sip::read(&t) else {
                continue;
            };
            let ours = call_id.is_none() || answer.header("call-id") == call_id;
            if let (Some(code), true) = (answer.code(), ours) {
                answers.push((code, t));
            }
        }
        let codes: Vec<u16> = answers.iter().map(|(c, _)| *c).collect();
        println!(
            "{:14} valid={:5} {:8} {:10} -> {:?}",
            row.file, row.valid, row.kind, row.method, codes
        );
        let verdict_ok = match (row.kind.as_str(), row.valid, row.file.as_str()) {
            ("response", _, _) => codes.is_empty(),
            (_, true, "unksm2.dat") => codes == [400],
            (_, true, _) if row.method == "REGISTER" => codes == [200],
            (_, true, _) => !codes.contains(&400),
            // RFC 4475 3.1.2.12: the Date does not matter to a proxy or registrar, so the
            // message is processed as if it were valid.
            (_, false, "baddate.dat") => !codes.contains(&400),
            (_, false, _) => codes.len() == 1 && codes[0] >= 400,
        };
        if !verdict_ok {
            failures.push(format!("{}: {:?}", row.file, answers));
        }
        // RFC 4475 3.3.12-3.3.14: what a later fetch returns.
        let expect_contact = match row.file.as_str() {
            "cparam01.dat" => Some((
                "sip:watson@example.com",
                "<sip:+19725552222@gw1.example.net>",
            )),
            "cparam02.dat" => Some((
                "sip:watson@example.com",
                "<sip:+19725552222@gw1.example.net;unknownparam>",
            )),
            "regescrt.dat" => Some((
                "sip:user@example.com",
                "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
            )),
            _ => None,
        };
        if let (Some((aor, want)), Some((_, text))) = (expect_contact, answers.first()) {
            let contacts = Sip::parse(text).lines("contact");
            if !contacts.iter().any(|c| c.contains(want)) {
                failures.push(format!(
                    "{} ({aor}): wanted {want} in {contacts:?}",
                    row.file
                ));
            }
            if row.file == "cparam01.dat"
                && contacts
                    .iter()
                    .any(|c| c.contains("gw1.example.net;unknownparam>"))
            {
                failures.push("cparam01: unknownparam became a URI parameter".into());
            }
        }
    }
    // Still alive and answering.
    let r = ua.request(s.addr(), &ua.options(&format!("sip:127.0.0.1:{}", s.port)));
    assert_eq!(r.code, 200);
    assert!(
        failures.is_empty(),
        "torture verdicts:\n{}",
        failures.join("\n")
    );
}
