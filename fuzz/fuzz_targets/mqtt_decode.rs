//! libFuzzer target: arbitrary bytes decoded as MQTT 3.1/3.1.1 and as MQTT 5 packets, and
//! every decoded packet re-encoded and decoded again unchanged, through the same harness
//! the stable proptest runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ponte_mqtt::harness::decode_bytes(data);
});
