//! What the fuzzer (`fuzz/`, issue 10) found, replayed in the normal suite: every input in
//! tests/fuzz-regressions/ and every RFC 4475 message of tests/sip-torture/ (whole and cut
//! at a few lengths) goes through the server the way the transports would feed it (UDP
//! datagram and TCP stream, authentication off and on; `sipfarm::server::fuzz::Harness`:
//! no sockets, the memory store). Each must return, without a panic, within a generous
//! bound. The fuzzer itself needs nightly and runs outside CI; this does not.

use sipfarm::server::fuzz::{Framing, Harness, split_stream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Far more than any input takes (a few milliseconds in a debug build); a hang, not a slow
/// machine, fails this.
const BOUND: Duration = Duration::from_secs(2);

/// One input and how it is fed.
#[derive(Clone)]
struct Case {
    name: String,
    feed: Feed,
}

#[derive(Clone)]
enum Feed {
    /// One datagram.
    Datagram(Vec<u8>),
    /// Reads on one connection, in order.
    Stream(Vec<Vec<u8>>),
}

/// Feed every case to a fresh server (with or without auth) on a thread of its own, and
/// fail on the first that panics or does not return within [`BOUND`].
fn replay(auth: bool, cases: Vec<Case>) {
    let names: Vec<String> = cases.iter().map(|c| c.name.clone()).collect();
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    std::thread::spawn(move || {
        let h = if auth {
            Harness::with_auth()
        } else {
            Harness::new()
        };
        for (i, case) in cases.into_iter().enumerate() {
            h.reset();
            match case.feed {
                Feed::Datagram(d) => h.feed(&d, Framing::Datagram),
                Feed::Stream(reads) => {
                    for r in reads {
                        h.feed(&r, Framing::Stream);
                    }
                }
            }
            if done_tx.send(i).is_err() {
                return;
            }
        }
    });
    let who = |i: usize| format!("{} (auth {})", names[i], if auth { "on" } else { "off" });
    for i in 0..names.len() {
        match done_rx.recv_timeout(BOUND) {
            Ok(n) => assert_eq!(n, i),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{} did not return within {BOUND:?}", who(i))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{} panicked (its message is above)", who(i))
            }
        }
    }
}

/// Every way one input is fed: a datagram, one read, and the reads the stream target
/// makes of it.
fn cases_for(name: &str, raw: &[u8]) -> Vec<Case> {
    vec![
        Case {
            name: format!("{name} as a datagram"),
            feed: Feed::Datagram(raw.to_vec()),
        },
        Case {
            name: format!("{name} as one read"),
            feed: Feed::Stream(vec![raw.to_vec()]),
        },
        Case {
            name: format!("{name} as the stream target's reads"),
            feed: Feed::Stream(split_stream(raw).into_iter().map(<[u8]>::to_vec).collect()),
        },
    ]
}

fn files(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && keep(p))
        .collect();
    out.sort();
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// tests/fuzz-regressions/<target>-<name>: every crash, hang or OOM the fuzzer found.
#[test]
fn fuzz_findings_replay() {
    let dir = root().join("tests/fuzz-regressions");
    let inputs = files(&dir, |p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.ends_with(".md") && !n.starts_with('.'))
    });
    let mut cases = Vec::new();
    for p in &inputs {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        cases.extend(cases_for(&name, &std::fs::read(p).unwrap()));
    }
    for auth in [false, true] {
        replay(auth, cases.clone());
    }
}

/// The RFC 4475 messages, whole and cut (at the end of the header, in the middle, one byte
/// short), one by one and all in one read.
#[test]
fn torture_messages_through_the_server() {
    let dir = root().join("tests/sip-torture");
    let msgs = files(&dir, |p| p.extension().is_some_and(|e| e == "dat"));
    assert!(msgs.len() >= 49, "the RFC 4475 corpus in tests/sip-torture");
    let mut cases = Vec::new();
    let mut all = Vec::new();
    for p in &msgs {
        let raw = std::fs::read(p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let head = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(raw.len(), |i| i + 4);
        let mut cuts = vec![raw.len(), head, raw.len() / 2, raw.len().saturating_sub(1)];
        cuts.dedup();
        for cut in cuts {
            for c in cases_for(&format!("{name}[..{cut}]"), &raw[..cut]) {
                // The stream target's reads of a SIP message are not meaningful cuts.
                if !c.name.ends_with("target's reads") {
                    cases.push(c);
                }
            }
        }
        all.extend_from_slice(&raw);
    }
    cases.push(Case {
        name: "every torture message in one read".into(),
        feed: Feed::Stream(vec![all]),
    });
    for auth in [false, true] {
        replay(auth, cases.clone());
    }
}
