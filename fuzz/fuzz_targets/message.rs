//! One UDP datagram through the server (STUN and blank keep-alive checks, parsing, the
//! common checks, the registrar or the proxy), authentication off.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipfarm::server::fuzz::{Framing, Harness};
use std::sync::OnceLock;

static HARNESS: OnceLock<Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let h = HARNESS.get_or_init(Harness::new);
    h.reset();
    h.feed(data, Framing::Datagram);
});
