//! libFuzzer target: arbitrary length-prefixed datagrams from two peers fed
//! to the UDP `Endpoint` (RFC 7252 §3 framing, options, block-wise, observe),
//! through the same harness the stable proptest runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ponte_coap::harness::datagrams(data);
});
