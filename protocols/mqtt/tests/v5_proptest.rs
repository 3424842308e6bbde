//! MQTT 5 codec property tests: decoding arbitrary bytes never panics, and encode ∘ decode
//! is the identity on valid v5 packets (generated with properties, reason codes and
//! subscription options).

use bytes::{Bytes, BytesMut};
use ponte_mqtt::*;
use proptest::prelude::*;

/// Decodes in the v5 wire form.
fn decode_v5(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, DecodeError> {
    decode(buf, max, ProtocolVersion::V5)
}

/// Encodes in the v5 wire form.
fn encode_v5(p: &Packet, out: &mut BytesMut) {
    encode(p, ProtocolVersion::V5, out)
}

fn text() -> impl Strategy<Value = String> {
    "[a-z/]{0,8}"
}

fn topic() -> impl Strategy<Value = String> {
    "[a-z]{1,6}(/[a-z]{1,6}){0,2}"
}

fn props_strategy() -> impl Strategy<Value = Properties> {
    (
        proptest::option::of(0u8..=1),
        proptest::option::of(any::<u32>()),
        proptest::option::of(text()),
        proptest::option::of(topic()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::collection::vec((text(), text()), 0..3),
        proptest::option::of(1u16..),
    )
        .prop_map(|(pfi, exp, ct, rt, cd, up, alias)| Properties {
            payload_format_indicator: pfi,
            message_expiry_interval: exp,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd.map(Bytes::from),
            user_properties: up,
            topic_alias: alias,
            ..Properties::default()
        })
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet5() -> impl Strategy<Value = Packet> {
    let publish = (
        qos(),
        any::<bool>(),
        topic(),
        1u16..,
        props_strategy(),
        any::<Vec<u8>>(),
    )
        .prop_map(|(qos, retain, topic, pkid, properties, payload)| {
            let q0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: false,
                qos,
                retain,
                topic,
                pkid: if q0 { 0 } else { pkid },
                payload: Bytes::from(payload),
                properties: properties.into(),
            })
        });
    let ack = (
        1u16..,
        prop_oneof![Just(0u8), Just(0x10), Just(0x80), Just(0x97)],
        proptest::option::of(text()),
    )
        .prop_map(|(pkid, reason_code, rs)| {
            Packet::PubAck(PubResponse {
                pkid,
                reason_code,
                properties: Properties {
                    reason_string: rs,
                    ..Properties::default()
                }
                .into(),
            })
        });
    let subscribe = (
        1u16..,
        proptest::collection::vec((topic(), qos(), any::<bool>(), any::<bool>(), 0u8..3), 1..4),
        proptest::option::of(1u32..268_435_455),
    )
        .prop_map(|(pkid, fs, id)| {
            Packet::Subscribe(Subscribe {
                pkid,
                filters: fs
                    .into_iter()
                    .map(|(f, qos, no_local, retain_as_published, retain_handling)| {
                        (
                            f,
                            SubscriptionOptions {
                                qos,
                                no_local,
                                retain_as_published,
                                retain_handling: RetainHandling::from_u8(retain_handling)
                                    .expect("0..3 are defined"),
                            },
                        )
                    })
                    .collect(),
                properties: Properties {
                    subscription_identifiers: id.into_iter().collect(),
                    ..Properties::default()
                }
                .into(),
            })
        });
    let connack = (
        any::<bool>(),
        proptest::option::of(1u16..),
        proptest::option::of(text()),
    )
        .prop_map(|(sp, rm, id)| Packet::ConnAck {
            session_present: sp,
            reason_code: 0,
            properties: Properties {
                receive_maximum: rm,
                assigned_client_identifier: id,
                retain_available: Some(1),
                ..Properties::default()
            }
            .into(),
        });
    let disconnect = (
        prop_oneof![Just(0u8), Just(4), Just(0x8E)],
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(reason_code, se)| {
            Packet::Disconnect(ReasonPacket {
                reason_code,
                properties: Properties {
                    session_expiry_interval: se,
                    ..Properties::default()
                }
                .into(),
            })
        });
    prop_oneof![
        publish,
        ack,
        subscribe,
        connack,
        disconnect,
        Just(Packet::PingReq)
    ]
}

proptest! {
    #[test]
    fn mqtt5_decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..8 {
            match decode_v5(&mut buf, 1 << 16) {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }

    #[test]
    fn mqtt5_encode_then_decode_is_identity(p in packet5()) {
        let mut buf = BytesMut::new();
        encode_v5(&p, &mut buf);
        let decoded = decode_v5(&mut buf, 1 << 24);
        prop_assert_eq!(decoded, Ok(Some(p)));
        prop_assert!(buf.is_empty());
    }
}
