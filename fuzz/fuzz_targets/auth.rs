//! One UDP datagram through the server with digest authentication on (one user,
//! alice@example.test): the credentials parser and the gate before the registrar and proxy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipfarm::server::fuzz::{Framing, Harness};
use std::sync::OnceLock;

static HARNESS: OnceLock<Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let h = HARNESS.get_or_init(Harness::with_auth);
    h.reset();
    h.feed(data, Framing::Datagram);
});
