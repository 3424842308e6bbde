//! libFuzzer target: arbitrary byte chunks fed to a ponte-mqtt `Connection` on a fake
//! clock (after a valid v3.1.1 or v5 CONNECT, or none), every event answered and every
//! transmitted byte checked to be well-formed MQTT, through the same harness the stable
//! proptest runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ponte_mqtt::harness::connection_bytes(data);
});
