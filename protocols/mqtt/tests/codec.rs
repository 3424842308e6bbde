//! Codec tests: one test per specification clause the decoder enforces, plus property tests
//! (no panic on arbitrary input, encode/decode identity on valid packets).

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use ponte_mqtt::*;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

fn enc(p: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    encode(p, ProtocolVersion::V311, &mut out);
    out
}

fn dec(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), MAX, ProtocolVersion::V311)
}

fn connect() -> Connect {
    Connect {
        protocol: ProtocolVersion::V311,
        client_id: "client".into(),
        clean_session: true,
        keep_alive: 30,
        username: None,
        password: None,
        will: None,
        properties: Default::default(),
    }
}

/// A CONNECT body with arbitrary name/level/flags and the given trailing payload.
fn raw_connect(name: &str, level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&[level, flags, 0, 30]);
    body.extend_from_slice(payload);
    let mut v = vec![0x10, body.len() as u8];
    v.extend(body);
    v
}

fn publish(qos: QoS, topic: &str, pkid: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(b"hello"),
        properties: Default::default(),
    }
}

#[test]
fn decode_needs_more_bytes_then_consumes_exactly_one_packet() {
    let mut wire = enc(&Packet::Publish(publish(QoS::AtLeastOnce, "a/b", 7)));
    wire.extend_from_slice(&enc(&Packet::PingReq));
    for cut in 0..wire.len() - 2 {
        let mut partial = BytesMut::from(&wire[..cut]);
        assert_eq!(decode(&mut partial, MAX, ProtocolVersion::V311), Ok(None));
        assert_eq!(partial.len(), cut, "nothing consumed on Ok(None)");
    }
    let first = decode(&mut wire, MAX, ProtocolVersion::V311)
        .unwrap()
        .unwrap();
    assert_eq!(first, Packet::Publish(publish(QoS::AtLeastOnce, "a/b", 7)));
    assert_eq!(&wire[..], &[0xc0, 0]);
    assert_eq!(
        decode(&mut wire, MAX, ProtocolVersion::V311),
        Ok(Some(Packet::PingReq))
    );
    assert!(wire.is_empty());
}

#[test]
fn payload_is_a_zero_copy_slice() {
    let mut wire = enc(&Packet::Publish(publish(QoS::AtMostOnce, "t", 0)));
    let payload_addr = wire[wire.len() - 5..].as_ptr();
    let Some(Packet::Publish(p)) = decode(&mut wire, MAX, ProtocolVersion::V311).unwrap() else {
        panic!("not a publish")
    };
    assert_eq!(p.payload.as_ptr(), payload_addr);
}

#[test]
fn mqtt_2_2_3_remaining_length_over_four_bytes_is_malformed() {
    assert_eq!(
        dec(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(DecodeError::MalformedRemainingLength)
    );
}

#[test]
fn packet_larger_than_max_is_refused_from_the_fixed_header() {
    // Header announces 200 bytes; only the header is present.
    let mut buf = BytesMut::from(&[0x30u8, 0xc8, 0x01][..]);
    assert_eq!(
        decode(&mut buf, 100, ProtocolVersion::V311),
        Err(DecodeError::PacketTooLarge {
            size: 203,
            max: 100
        })
    );
}

#[test]
fn mqtt_2_2_1_reserved_packet_types_rejected() {
    assert_eq!(
        dec(&[0x00, 0]),
        Err(DecodeError::ReservedPacketType { packet_type: 0 })
    );
    assert_eq!(
        dec(&[0xf0, 0]),
        Err(DecodeError::ReservedPacketType { packet_type: 15 })
    );
}

#[test]
fn mqtt_2_2_2_1_pubrel_subscribe_unsubscribe_flags_must_be_0010() {
    for first in [0x60u8, 0x80, 0xa0] {
        assert!(matches!(
            dec(&[first, 2, 0, 1]),
            Err(DecodeError::InvalidHeaderFlags {
                expected: 0b0010,
                ..
            })
        ));
    }
}

#[test]
fn mqtt_2_2_2_2_other_packet_flags_must_be_zero() {
    for first in [0x11u8, 0x41, 0x52, 0x74, 0xc1, 0xe8] {
        assert!(matches!(
            dec(&[first, 0]),
            Err(DecodeError::InvalidHeaderFlags { expected: 0, .. })
        ));
    }
}

#[test]
fn mqtt_3_3_1_4_publish_qos_3_rejected() {
    assert_eq!(
        dec(&[0x36, 5, 0, 1, b't', 0, 1]),
        Err(DecodeError::PublishQoS3)
    );
}

#[test]
fn mqtt_3_3_1_2_dup_on_qos_0_rejected() {
    assert_eq!(dec(&[0x38, 3, 0, 1, b't']), Err(DecodeError::DupOnQoS0));
}

#[test]
fn mqtt_1_5_3_1_invalid_utf8_rejected() {
    assert_eq!(
        dec(&[0x30, 4, 0, 2, 0xc3, 0x28]),
        Err(DecodeError::InvalidUtf8 {
            field: "topic name"
        })
    );
    // Encoded surrogate U+D800 is not well-formed UTF-8 either.
    assert_eq!(
        dec(&[0x30, 5, 0, 3, 0xed, 0xa0, 0x80]),
        Err(DecodeError::InvalidUtf8 {
            field: "topic name"
        })
    );
}

#[test]
fn mqtt_1_5_3_2_null_character_rejected() {
    assert_eq!(
        dec(&[0x30, 5, 0, 3, b'a', 0, b'b']),
        Err(DecodeError::NullCharacter {
            field: "topic name"
        })
    );
    let sub = [0x82, 6, 0, 1, 0, 1, 0, 0];
    assert_eq!(
        dec(&sub),
        Err(DecodeError::NullCharacter {
            field: "topic filter"
        })
    );
}

#[test]
fn mqtt_3_3_2_2_wildcards_in_topic_name_rejected() {
    for topic in ["a/+", "#", "a/#/b"] {
        let mut p = publish(QoS::AtMostOnce, topic, 0);
        p.payload = Bytes::new();
        assert_eq!(
            dec(&enc(&Packet::Publish(p))),
            Err(DecodeError::WildcardInTopicName {
                topic: topic.into()
            })
        );
    }
}

#[test]
fn mqtt_4_7_3_1_empty_topic_name_rejected() {
    assert_eq!(dec(&[0x30, 2, 0, 0]), Err(DecodeError::EmptyTopicName));
}

#[test]
fn mqtt_3_8_3_3_subscribe_without_filters_rejected() {
    assert_eq!(dec(&[0x82, 2, 0, 1]), Err(DecodeError::NoSubscribeFilters));
}

#[test]
fn mqtt_3_10_3_2_unsubscribe_without_filters_rejected() {
    assert_eq!(
        dec(&[0xa2, 2, 0, 1]),
        Err(DecodeError::NoUnsubscribeFilters)
    );
}

#[test]
fn mqtt_3_8_3_4_subscribe_qos_3_or_reserved_bits_rejected() {
    assert_eq!(
        dec(&[0x82, 6, 0, 1, 0, 1, b'a', 3]),
        Err(DecodeError::InvalidRequestedQoS { byte: 3 })
    );
    assert_eq!(
        dec(&[0x82, 6, 0, 1, 0, 1, b'a', 0x41]),
        Err(DecodeError::InvalidRequestedQoS { byte: 0x41 })
    );
}

#[test]
fn mqtt_2_3_1_1_zero_packet_id_rejected() {
    assert_eq!(
        dec(&[0x32, 5, 0, 1, b't', 0, 0]),
        Err(DecodeError::ZeroPacketId { packet: "PUBLISH" })
    );
    assert_eq!(
        dec(&[0x82, 6, 0, 0, 0, 1, b'a', 0]),
        Err(DecodeError::ZeroPacketId {
            packet: "SUBSCRIBE"
        })
    );
    assert_eq!(
        dec(&[0xa2, 5, 0, 0, 0, 1, b'a']),
        Err(DecodeError::ZeroPacketId {
            packet: "UNSUBSCRIBE"
        })
    );
}

#[test]
fn mqtt_3_1_2_3_connect_reserved_flag_rejected() {
    assert_eq!(
        dec(&raw_connect("MQTT", 4, 0b11, &[0, 1, b'c'])),
        Err(DecodeError::ConnectReservedFlag)
    );
}

#[test]
fn mqtt_3_1_2_11_13_15_will_qos_or_retain_without_will_flag_rejected() {
    for flags in [0b0000_1010u8, 0b0001_0010, 0b0010_0010] {
        assert_eq!(
            dec(&raw_connect("MQTT", 4, flags, &[0, 1, b'c'])),
            Err(DecodeError::WillFieldsWithoutWill { flags })
        );
    }
}

#[test]
fn mqtt_3_1_2_14_will_qos_3_rejected() {
    let payload = [0, 1, b'c', 0, 1, b'w', 0, 0];
    assert_eq!(
        dec(&raw_connect("MQTT", 4, 0b0001_1110, &payload)),
        Err(DecodeError::WillQoS3)
    );
}

#[test]
fn mqtt_3_1_2_22_password_without_username_rejected() {
    assert_eq!(
        dec(&raw_connect(
            "MQTT",
            4,
            0b0100_0010,
            &[0, 1, b'c', 0, 1, b'p']
        )),
        Err(DecodeError::PasswordWithoutUsername)
    );
}

#[test]
fn mqtt_3_1_2_1_bad_protocol_name_rejected() {
    assert_eq!(
        dec(&raw_connect("MQTX", 4, 0b10, &[0, 1, b'c'])),
        Err(DecodeError::InvalidProtocolName {
            name: "MQTX".into()
        })
    );
}

#[test]
fn mqtt_3_1_2_2_unsupported_level_reported() {
    assert_eq!(
        dec(&raw_connect("MQTT", 5, 0b10, &[0, 0, 0, 1, b'c'])),
        Err(DecodeError::UnsupportedProtocolLevel {
            name: "MQTT".into(),
            level: 5
        })
    );
}

#[test]
fn mqtt_3_1_connect_with_all_fields_and_mqisdp_decodes() {
    let c = Connect {
        protocol: ProtocolVersion::V31,
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"\x00\xffpw")),
        will: Some(LastWill {
            topic: "w/t".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Default::default(),
        }),
        ..connect()
    };
    assert_eq!(
        dec(&enc(&Packet::Connect(Box::new(c.clone())))),
        Ok(Some(Packet::Connect(Box::new(c))))
    );
}

#[test]
fn will_topic_with_wildcard_rejected() {
    let payload = [0, 1, b'c', 0, 1, b'#', 0, 0];
    assert_eq!(
        dec(&raw_connect("MQTT", 4, 0b0000_0110, &payload)),
        Err(DecodeError::WildcardInTopicName { topic: "#".into() })
    );
}

#[test]
fn trailing_bytes_inside_remaining_length_rejected() {
    assert_eq!(
        dec(&[0x40, 3, 0, 1, 9]),
        Err(DecodeError::TrailingBytes {
            packet: "PUBACK",
            extra: 1
        })
    );
    assert_eq!(
        dec(&[0xc0, 1, 0]),
        Err(DecodeError::TrailingBytes {
            packet: "PINGREQ",
            extra: 1
        })
    );
    let mut bytes = raw_connect("MQTT", 4, 0b10, &[0, 1, b'c', 7]);
    fix_length(&mut bytes);
    assert!(matches!(
        dec(&bytes),
        Err(DecodeError::TrailingBytes {
            packet: "CONNECT",
            ..
        })
    ));
}

#[test]
fn field_running_past_remaining_length_rejected() {
    assert_eq!(
        dec(&[0x30, 3, 0, 5, b'a']),
        Err(DecodeError::Truncated {
            packet: "PUBLISH",
            field: "topic name"
        })
    );
}

// ---- property tests ----

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn topic() -> impl Strategy<Value = String> {
    "[^\u{0}+#]{1,12}"
}

fn bin() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from)
}

fn pkid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn connect_strategy() -> impl Strategy<Value = Connect> {
    let will = proptest::option::of((topic(), bin(), qos(), any::<bool>()).prop_map(
        |(topic, payload, qos, retain)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties: Default::default(),
        },
    ));
    let creds = proptest::option::of((text(), proptest::option::of(bin())));
    (
        prop_oneof![Just(ProtocolVersion::V31), Just(ProtocolVersion::V311)],
        text(),
        any::<bool>(),
        any::<u16>(),
        creds,
        will,
    )
        .prop_map(
            |(protocol, client_id, clean_session, keep_alive, creds, will)| {
                let (username, password) = match creds {
                    Some((u, p)) => (Some(u), p),
                    None => (None, None),
                };
                Connect {
                    will,
                    username,
                    password,
                    protocol,
                    client_id,
                    clean_session,
                    keep_alive,
                    properties: Default::default(),
                }
            },
        )
}

fn publish_strategy() -> impl Strategy<Value = Publish> {
    (qos(), any::<bool>(), any::<bool>(), topic(), pkid(), bin()).prop_map(
        |(qos, dup, retain, topic, pkid, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                pkid: if qos0 { 0 } else { pkid },
                payload,
                properties: Default::default(),
            }
        },
    )
}

/// The CONNACK reason codes a 3.1.1 return code (0-5) stands for.
fn code() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(reason::SUCCESS),
        Just(reason::UNSUPPORTED_PROTOCOL_VERSION),
        Just(reason::CLIENT_IDENTIFIER_NOT_VALID),
        Just(reason::SERVER_UNAVAILABLE),
        Just(reason::BAD_USER_NAME_OR_PASSWORD),
        Just(reason::NOT_AUTHORIZED),
    ]
}

/// A 3.1.1 SUBACK code: a granted QoS or 0x80.
fn suback_code() -> impl Strategy<Value = u8> {
    prop_oneof![qos().prop_map(QoS::as_u8), Just(0x80u8)]
}

fn packet_strategy() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect_strategy().prop_map(|c| Packet::Connect(Box::new(c))),
        (any::<bool>(), code()).prop_map(|(session_present, code)| Packet::ConnAck {
            session_present,
            reason_code: code,
            properties: Default::default(),
        }),
        publish_strategy().prop_map(Packet::Publish),
        pkid().prop_map(|id| Packet::PubAck(PubResponse::success(id))),
        pkid().prop_map(|id| Packet::PubRec(PubResponse::success(id))),
        pkid().prop_map(|id| Packet::PubRel(PubResponse::success(id))),
        pkid().prop_map(|id| Packet::PubComp(PubResponse::success(id))),
        (pkid(), proptest::collection::vec((text(), qos()), 1..4)).prop_map(|(pkid, filters)| {
            Packet::Subscribe(Subscribe {
                pkid,
                filters: filters
                    .into_iter()
                    .map(|(f, q)| (f, SubscriptionOptions::qos(q)))
                    .collect(),
                properties: Default::default(),
            })
        }),
        (pkid(), proptest::collection::vec(suback_code(), 0..4)).prop_map(|(pkid, codes)| {
            Packet::SubAck(SubResponse {
                pkid,
                reason_codes: codes,
                properties: Default::default(),
            })
        }),
        (pkid(), proptest::collection::vec(text(), 1..4)).prop_map(|(pkid, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters,
                properties: Default::default(),
            })
        }),
        pkid().prop_map(|pkid| Packet::UnsubAck(SubResponse {
            pkid,
            reason_codes: vec![],
            properties: Default::default(),
        })),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::disconnect()),
    ]
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..512) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut buf, max, ProtocolVersion::V311) {}
    }

    #[test]
    fn decoding_arbitrary_splits_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        cuts in proptest::collection::vec(0usize..256, 0..8),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut buf = BytesMut::new();
        let mut start = 0;
        'outer: for cut in cuts {
            buf.extend_from_slice(&bytes[start..cut]);
            start = cut;
            loop {
                match decode(&mut buf, 1024, ProtocolVersion::V311) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
        }
    }

    #[test]
    fn encode_then_decode_is_identity(packets in proptest::collection::vec(packet_strategy(), 1..5), split in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        for p in &packets {
            encode(p, ProtocolVersion::V311, &mut wire);
        }
        // Feed in two chunks to exercise partial decoding.
        let at = split.index(wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..at]);
        let mut decoded = Vec::new();
        while let Some(p) = decode(&mut buf, MAX, ProtocolVersion::V311).unwrap() {
            decoded.push(p);
        }
        buf.extend_from_slice(&wire[at..]);
        while let Some(p) = decode(&mut buf, MAX, ProtocolVersion::V311).unwrap() {
            decoded.push(p);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    #[test]
    fn encode_publish_matches_encode(p in publish_strategy()) {
        let mut fast = BytesMut::new();
        encode_publish(&mut fast, p.dup, p.qos, p.retain, &p.topic, p.pkid, &p.payload);
        prop_assert_eq!(fast, enc(&Packet::Publish(p)));
    }
}

#[test]
fn remaining_length_multi_byte_roundtrip() {
    let mut p = publish(QoS::AtLeastOnce, "big", 3);
    p.payload = Bytes::from(vec![7u8; 20_000]);
    let wire = enc(&Packet::Publish(p.clone()));
    assert_eq!(&wire[..4], &[0x32, 0xa7, 0x9c, 0x01]);
    assert_eq!(dec(&wire), Ok(Some(Packet::Publish(p))));
}
