//! libFuzzer target: arbitrary bytes in arbitrary chunks fed to the RFC 8323
//! `TcpConnection` (framing, CSM/Ping/Release/Abort, requests), through the
//! same harness the stable proptest runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ponte_coap::harness::tcp_bytes(data);
});
