//! MQTT 5 codec and state machine, without sockets: property rules by clause, and property
//! tests (decoding arbitrary bytes never panics; encode ∘ decode is the identity on valid v5
//! packets).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ponte_mqtt::*;
use proptest::prelude::*;

fn dec(bytes: &[u8]) -> Result<Option<Packet5>, DecodeError> {
    decode_v5(&mut BytesMut::from(bytes), 1 << 20)
}

#[test]
fn mqtt5_2_2_2_2_property_not_allowed_in_packet_rejected() {
    // PUBACK id 1, reason 0, properties: Topic Alias (PUBLISH only).
    assert_eq!(
        dec(&[0x40, 7, 0, 1, 0, 3, 0x23, 0, 1]),
        Err(DecodeError::PropertyNotAllowed {
            context: "PUBACK/PUBREC/PUBREL/PUBCOMP",
            id: 0x23
        })
    );
}

#[test]
fn mqtt5_2_2_2_2_duplicate_property_rejected() {
    // DISCONNECT 0, Session Expiry twice.
    let d = [0xe0, 12, 0, 10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
    assert!(matches!(
        dec(&d),
        Err(DecodeError::DuplicateProperty { id: 0x11, .. })
    ));
}

#[test]
fn mqtt5_3_1_2_20_receive_maximum_zero_rejected() {
    let mut connect = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 5, 0b10, 0, 10];
    connect.extend_from_slice(&[3, 0x21, 0, 0, 0, 1, b'c']);
    connect[1] = (connect.len() - 2) as u8;
    assert!(matches!(
        dec(&connect),
        Err(DecodeError::InvalidPropertyValue {
            property: "Receive Maximum",
            ..
        })
    ));
}

#[test]
fn mqtt5_3_8_3_5_retain_handling_3_rejected() {
    // SUBSCRIBE id 1, no properties, "a", options 0b0011_0000.
    assert_eq!(
        dec(&[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30]),
        Err(DecodeError::InvalidSubscriptionOptions { byte: 0x30 })
    );
}

#[test]
fn mqtt5_2_4_short_puback_means_success() {
    assert_eq!(
        dec(&[0x40, 2, 0, 9]),
        Ok(Some(Packet5::PubAck(PubResponse {
            pkid: 9,
            reason_code: 0,
            properties: Properties::default()
        })))
    );
}

fn v5_connect(props: &[u8]) -> Vec<u8> {
    let mut c = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 5, 0b10, 0, 10];
    c.push(props.len() as u8);
    c.extend_from_slice(props);
    c.extend_from_slice(&[0, 1, b'c']);
    c[1] = (c.len() - 2) as u8;
    c
}

#[test]
fn mqtt5_3_3_4_8_machine_disconnects_0x93_past_receive_maximum() {
    let t0 = Instant::now();
    let mut conn = Connection::new(
        t0,
        Config {
            receive_maximum: 1,
            ..Config::default()
        },
    );
    conn.handle_bytes(t0, &v5_connect(&[]));
    assert!(matches!(conn.poll_event(), Some(Event::Connect5(_))));
    conn.accept(t0, false, None);
    let mut out = BytesMut::new();
    conn.poll_transmit(&mut out);
    let mut wire = BytesMut::new();
    for id in 1..=2u16 {
        encode_v5(
            &Packet5::Publish(Box::new(Publish5 {
                publish: Publish {
                    dup: false,
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    topic: "t".into(),
                    pkid: id,
                    payload: Bytes::new(),
                },
                properties: Properties::default(),
            })),
            &mut wire,
        );
    }
    conn.handle_bytes(t0 + Duration::from_millis(1), &wire);
    assert!(matches!(conn.poll_event(), Some(Event::Publish5(_))));
    let Some(Event::Closed { reason, .. }) = conn.poll_event() else {
        panic!("expected Closed");
    };
    assert_eq!(reason.v5_reason_code(), Some(0x93));
    out.clear();
    conn.poll_transmit(&mut out);
    match decode_v5(&mut out, 1 << 20) {
        Ok(Some(Packet5::Disconnect(d))) => assert_eq!(d.reason_code, 0x93),
        other => panic!("expected DISCONNECT 0x93, got {other:?}"),
    }
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

fn packet5() -> impl Strategy<Value = Packet5> {
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
            Packet5::Publish(Box::new(Publish5 {
                publish: Publish {
                    dup: false,
                    qos,
                    retain,
                    topic,
                    pkid: if q0 { 0 } else { pkid },
                    payload: Bytes::from(payload),
                },
                properties,
            }))
        });
    let ack = (
        1u16..,
        prop_oneof![Just(0u8), Just(0x10), Just(0x80), Just(0x97)],
        proptest::option::of(text()),
    )
        .prop_map(|(pkid, reason_code, rs)| {
            Packet5::PubAck(PubResponse {
                pkid,
                reason_code,
                properties: Properties {
                    reason_string: rs,
                    ..Properties::default()
                },
            })
        });
    let subscribe = (
        1u16..,
        proptest::collection::vec((topic(), qos(), any::<bool>(), any::<bool>(), 0u8..3), 1..4),
        proptest::option::of(1u32..268_435_455),
    )
        .prop_map(|(pkid, fs, id)| {
            Packet5::Subscribe(Subscribe5 {
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
                                retain_handling,
                            },
                        )
                    })
                    .collect(),
                properties: Properties {
                    subscription_identifiers: id.into_iter().collect(),
                    ..Properties::default()
                },
            })
        });
    let connack = (
        any::<bool>(),
        proptest::option::of(1u16..),
        proptest::option::of(text()),
    )
        .prop_map(|(sp, rm, id)| Packet5::ConnAck {
            session_present: sp,
            reason_code: 0,
            properties: Properties {
                receive_maximum: rm,
                assigned_client_identifier: id,
                retain_available: Some(1),
                ..Properties::default()
            },
        });
    let disconnect = (
        prop_oneof![Just(0u8), Just(4), Just(0x8E)],
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(reason_code, se)| {
            Packet5::Disconnect(ReasonPacket {
                reason_code,
                properties: Properties {
                    session_expiry_interval: se,
                    ..Properties::default()
                },
            })
        });
    prop_oneof![
        publish,
        ack,
        subscribe,
        connack,
        disconnect,
        Just(Packet5::PingReq)
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
    fn mqtt5_machine_survives_arbitrary_bytes_after_a_v5_connect(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let t0 = Instant::now();
        let mut conn = Connection::new(t0, Config::default());
        conn.handle_bytes(t0, &v5_connect(&[]));
        if let Some(Event::Connect5(_)) = conn.poll_event() {
            conn.accept(t0, false, None);
        }
        conn.handle_bytes(t0, &bytes);
        while conn.poll_event().is_some() {}
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
