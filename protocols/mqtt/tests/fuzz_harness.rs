//! The cargo-fuzz MQTT targets' harnesses (`fuzz/fuzz_targets/mqtt_*.rs`), run on stable as
//! proptests: arbitrary bytes never panic the v3 or v5 codec or the connection machine,
//! every decoded packet survives encode then decode unchanged, and everything a connection
//! transmits is well-formed MQTT of its negotiated version.

use proptest::prelude::*;

/// Byte strings biased towards MQTT: a valid fixed-header first byte is likely.
fn mqtt_ish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        (
            proptest::sample::select(vec![
                0x10u8, 0x20, 0x30, 0x31, 0x32, 0x33, 0x34, 0x3d, 0x40, 0x50, 0x62, 0x70, 0x82,
                0x90, 0xa2, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0,
            ]),
            proptest::collection::vec(any::<u8>(), 0..120),
        )
            .prop_map(|(first, rest)| {
                let mut v = vec![first, rest.len().min(127) as u8];
                v.extend(rest);
                v
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// MQTT-2 / MQTT 5 section 2: the `mqtt_decode` target's harness.
    #[test]
    fn mqtt_2_fuzz_harness_decode_roundtrip(data in mqtt_ish()) {
        ponte_mqtt::harness::decode_bytes(&data);
    }

    /// A stream of several packet-ish frames, so decoding continues past the first packet.
    #[test]
    fn mqtt_2_fuzz_harness_decode_stream(frames in proptest::collection::vec(mqtt_ish(), 1..6)) {
        ponte_mqtt::harness::decode_bytes(&frames.concat());
    }

    /// MQTT 4 / MQTT 5 section 4: the `mqtt_connection` target's harness.
    #[test]
    fn mqtt_4_fuzz_harness_connection_chunks(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        ponte_mqtt::harness::connection_bytes(&data);
    }

    /// The connection harness fed chunks that each start like a packet, so the connected
    /// state sees many well-framed packets after the harness's CONNECT.
    #[test]
    fn mqtt_4_fuzz_harness_connection_framed(
        selector in any::<u8>(),
        frames in proptest::collection::vec(mqtt_ish(), 0..12),
    ) {
        let mut data = vec![selector];
        for f in frames {
            let f = &f[..f.len().min(255)];
            data.push(f.len() as u8);
            data.extend_from_slice(f);
        }
        ponte_mqtt::harness::connection_bytes(&data);
    }
}

/// A few hand-picked inputs (valid CONNECT + SUBSCRIBE + PUBLISH, truncated packets, an
/// over-long Remaining Length) so the harness is exercised deterministically too.
#[test]
fn mqtt_fuzz_harness_seeds() {
    let seeds: &[&[u8]] = &[
        &[],
        &[0x10],
        &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        &[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0b10, 0, 10, 0, 1, b'c',
        ],
        &[0x82, 6, 0, 1, 0, 1, b't', 1],
        &[0x32, 6, 0, 1, b't', 0, 7, b'x'],
        &[0x32, 7, 0, 1, b't', 0, 7, 0, b'x'],
        &[0xe0, 0],
    ];
    for s in seeds {
        ponte_mqtt::harness::decode_bytes(s);
        for selector in [0u8, 1, 2, 0x4d, 0xff] {
            let mut data = vec![selector, s.len() as u8];
            data.extend_from_slice(s);
            ponte_mqtt::harness::connection_bytes(&data);
        }
    }
}
