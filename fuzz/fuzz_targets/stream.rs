//! Bytes on one TCP connection (CRLF keep-alives, Content-Length framing, several messages
//! per read or one message over several reads, a framing error closing the connection),
//! authentication off. The input is cut into reads by `split_stream`: its first byte says
//! how many cuts, the next bytes where.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipfarm::server::fuzz::{Framing, Harness, split_stream};
use std::sync::OnceLock;

static HARNESS: OnceLock<Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let h = HARNESS.get_or_init(Harness::new);
    h.reset();
    for read in split_stream(data) {
        h.feed(read, Framing::Stream);
    }
});
