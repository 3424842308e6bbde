//! MQTT 5 codec and state machine, without sockets: property rules by clause, and property
//! tests (decoding arbitrary bytes never panics; encode ∘ decode is the identity on valid v5
//! packets).

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use ponte_mqtt::*;
use proptest::prelude::*;

fn dec(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decode_v5(&mut BytesMut::from(bytes), 1 << 20)
}

/// Decodes in the v5 wire form.
fn decode_v5(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, DecodeError> {
    decode(buf, max, ProtocolVersion::V5)
}

/// Encodes in the v5 wire form.
fn encode_v5(p: &Packet, out: &mut BytesMut) {
    encode(p, ProtocolVersion::V5, out)
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
    fix_length(&mut connect);
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
        Ok(Some(Packet::PubAck(PubResponse {
            pkid: 9,
            reason_code: 0,
            properties: Default::default()
        })))
    );
}

fn v5_connect(props: &[u8]) -> Vec<u8> {
    let mut c = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 5, 0b10, 0, 10];
    c.push(props.len() as u8);
    c.extend_from_slice(props);
    c.extend_from_slice(&[0, 1, b'c']);
    fix_length(&mut c);
    c
}

#[test]
fn mqtt5_3_3_4_8_machine_disconnects_0x93_past_receive_maximum() {
    let (mut conn, t0) = machine(|c| c.receive_maximum = 1);
    conn.handle_bytes(t0, &v5_connect(&[]));
    assert!(matches!(conn.poll_event(), Some(Event::Connect(_))));
    conn.accept(t0, Accept::default());
    let mut out = BytesMut::new();
    conn.poll_transmit(&mut out);
    let mut wire = BytesMut::new();
    for id in 1..=2u16 {
        encode_v5(
            &Packet::Publish(Publish {
                dup: false,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: "t".into(),
                pkid: id,
                payload: Bytes::new(),
                properties: Default::default(),
            }),
            &mut wire,
        );
    }
    conn.handle_bytes(t0 + Duration::from_millis(1), &wire);
    assert!(matches!(conn.poll_event(), Some(Event::Publish(_))));
    let Some(Event::Closed { reason, .. }) = conn.poll_event() else {
        panic!("expected Closed");
    };
    assert_eq!(reason.v5_reason_code(), Some(0x93));
    out.clear();
    conn.poll_transmit(&mut out);
    match decode_v5(&mut out, 1 << 20) {
        Ok(Some(Packet::Disconnect(d))) => assert_eq!(d.reason_code, 0x93),
        other => panic!("expected DISCONNECT 0x93, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Reason Strings, Request Problem / Response Information, server topic aliases

/// The wire form of `p`.
fn wire(p: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_v5(p, &mut out);
    out.to_vec()
}

/// A v5 CONNECT from client "c" with `props`.
fn connect_with(props: Properties) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        client_id: "c".into(),
        clean_session: true,
        keep_alive: 0,
        username: None,
        password: None,
        will: None,
        properties: props.into(),
    }))
}

/// Every packet the machine has written since the last call, decoded, with its size.
fn sent(conn: &mut Connection) -> Vec<(Packet, usize)> {
    let mut out = BytesMut::new();
    conn.poll_transmit(&mut out);
    let mut packets = Vec::new();
    loop {
        let before = out.len();
        match decode_v5(&mut out, 1 << 24) {
            Ok(Some(p)) => packets.push((p, before - out.len())),
            Ok(None) => return packets,
            Err(e) => panic!("the machine wrote a malformed packet: {e}"),
        }
    }
}

/// A machine that accepted a CONNECT with `props` (after `before_accept`); returns it and
/// the CONNACK's properties.
fn accepted(
    config: Config,
    props: Properties,
    before_accept: impl FnOnce(&mut Accept),
) -> (Connection, Properties) {
    let t0 = Instant::now();
    let mut conn = Connection::new(t0, config);
    conn.handle_bytes(t0, &wire(&connect_with(props)));
    assert!(matches!(conn.poll_event(), Some(Event::Connect(_))));
    let mut accept = Accept::default();
    before_accept(&mut accept);
    conn.accept(t0, accept);
    match sent(&mut conn).pop() {
        Some((Packet::ConnAck { properties, .. }, _)) => (conn, properties.into_inner()),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn no_problem_information() -> Properties {
    Properties {
        request_problem_information: Some(0),
        ..Properties::default()
    }
}

/// An inbound PUBLISH to "t" at `qos` with id `pkid`, on the wire.
fn inbound(qos: QoS, pkid: u16) -> Vec<u8> {
    wire(&Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "t".into(),
        pkid,
        payload: Bytes::new(),
        properties: Default::default(),
    }))
}

/// The machine refused the CONNECT: its only packet is a CONNACK; its reason code and
/// properties.
fn refusal(conn: &mut Connection) -> (u8, Properties) {
    let mut packets = sent(conn);
    match (packets.pop(), packets.is_empty()) {
        (
            Some((
                Packet::ConnAck {
                    reason_code,
                    properties,
                    ..
                },
                _,
            )),
            true,
        ) => (reason_code, properties.into_inner()),
        other => panic!("expected one refusing CONNACK: {other:?} {packets:?}"),
    }
}

fn pubrel(pkid: u16) -> Vec<u8> {
    wire(&Packet::PubRel(PubResponse {
        pkid,
        reason_code: 0,
        properties: Default::default(),
    }))
}

#[test]
fn mqtt5_2_4_every_error_reason_code_sent_carries_a_reason_string() {
    let (mut conn, _) = accepted(Config::default(), Properties::default(), |_| {});
    let t = Instant::now();
    // PUBCOMP 0x92: a PUBREL for an exchange that does not exist.
    conn.handle_bytes(t, &pubrel(7));
    // SUBACK with one refusal, no text from the broker: the code's name is used.
    conn.suback(1, vec![0x01, 0x8F], None);
    // UNSUBACK with the broker's own explanation.
    conn.unsuback(2, vec![0x8F], Some("filter \"a/#/b\": bad".into()));
    // A successful UNSUBACK says nothing.
    conn.unsuback(3, vec![0x00], None);
    conn.close(CloseReason::Server {
        reason_code: 0x97,
        reason_string: None,
    });
    let packets: Vec<Packet> = sent(&mut conn).into_iter().map(|(p, _)| p).collect();
    let text = |p: &Packet| match p {
        Packet::PubComp(r) | Packet::PubAck(r) => r.properties.reason_string.clone(),
        Packet::SubAck(r) | Packet::UnsubAck(r) => r.properties.reason_string.clone(),
        Packet::Disconnect(r) => r.properties.reason_string.clone(),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(packets.len(), 5, "{packets:?}");
    assert!(
        text(&packets[0]).is_some_and(|s| s.contains("packet identifier 7")),
        "{:?}",
        packets[0]
    );
    assert_eq!(text(&packets[1]).as_deref(), Some("topic filter invalid"));
    assert_eq!(text(&packets[2]).as_deref(), Some("filter \"a/#/b\": bad"));
    assert_eq!(text(&packets[3]), None, "success needs no explanation");
    assert_eq!(text(&packets[4]).as_deref(), Some("quota exceeded"));
}

#[test]
fn mqtt5_3_4_2_1_puback_0x80_carries_the_brokers_reason_and_0x10_is_a_success() {
    let (mut conn, _) = accepted(Config::default(), Properties::default(), |_| {});
    let t = Instant::now();
    for (id, qos) in [
        (1, QoS::AtLeastOnce),
        (2, QoS::AtLeastOnce),
        (3, QoS::ExactlyOnce),
    ] {
        conn.handle_bytes(t, &inbound(qos, id));
    }
    conn.publish_done(1, 0x80, Some("disk full".into()));
    conn.publish_done(2, reason::NO_MATCHING_SUBSCRIBERS, None);
    conn.publish_done(3, reason::NO_MATCHING_SUBSCRIBERS, None);
    let packets: Vec<Packet> = sent(&mut conn).into_iter().map(|(p, _)| p).collect();
    match &packets[..] {
        [Packet::PubAck(a), Packet::PubAck(b), Packet::PubRec(c)] => {
            assert_eq!(a.reason_code, 0x80);
            assert_eq!(a.properties.reason_string.as_deref(), Some("disk full"));
            assert_eq!(b.reason_code, 0x10);
            assert_eq!(b.properties.reason_string, None);
            assert_eq!(c.reason_code, 0x10);
        }
        other => panic!("expected PUBACK, PUBACK, PUBREC: {other:?}"),
    }
    // 0x10 is a success: the QoS 2 exchange goes on to PUBCOMP 0x00.
    conn.handle_bytes(t, &pubrel(3));
    match &sent(&mut conn)[..] {
        [(Packet::PubComp(r), _)] => assert_eq!(r.reason_code, 0),
        other => panic!("expected PUBCOMP 0x00: {other:?}"),
    }
}

#[test]
fn mqtt5_3_1_2_29_request_problem_information_0_only_publish_connack_disconnect_explain() {
    let (mut conn, _) = accepted(Config::default(), no_problem_information(), |_| {});
    let t = Instant::now();
    conn.handle_bytes(t, &pubrel(7));
    conn.suback(1, vec![0x8F], Some("filter \"#/a\": bad".into()));
    conn.unsuback(2, vec![0x8F], None);
    conn.close(CloseReason::Server {
        reason_code: 0x97,
        reason_string: None,
    });
    let packets: Vec<Packet> = sent(&mut conn).into_iter().map(|(p, _)| p).collect();
    match &packets[..] {
        [Packet::PubComp(c), Packet::SubAck(s), Packet::UnsubAck(u), Packet::Disconnect(d)] => {
            assert_eq!(c.reason_code, 0x92, "the reason code itself is still sent");
            assert!(c.properties.is_empty(), "PUBCOMP: {c:?}");
            assert_eq!(s.reason_codes, [0x8F]);
            assert!(s.properties.is_empty(), "SUBACK: {s:?}");
            assert!(u.properties.is_empty(), "UNSUBACK: {u:?}");
            assert_eq!(
                d.properties.reason_string.as_deref(),
                Some("quota exceeded"),
                "DISCONNECT may still say why"
            );
        }
        other => panic!("expected PUBCOMP, SUBACK, UNSUBACK, DISCONNECT: {other:?}"),
    }
}

#[test]
fn mqtt5_3_1_2_29_request_problem_information_0_connack_refusal_still_explains() {
    let t0 = Instant::now();
    let mut conn = Connection::new(t0, Config::default());
    conn.handle_bytes(t0, &wire(&connect_with(no_problem_information())));
    assert!(matches!(conn.poll_event(), Some(Event::Connect(_))));
    conn.reject(0x87, Some("client \"c\" may not connect".into()));
    let (reason_code, properties) = refusal(&mut conn);
    assert_eq!(reason_code, 0x87);
    let why = properties.reason_string;
    assert_eq!(why.as_deref(), Some("client \"c\" may not connect"));
}

#[test]
fn mqtt5_3_2_2_19_connack_0x8c_says_which_authentication_method() {
    let t0 = Instant::now();
    let mut conn = Connection::new(t0, Config::default());
    let props = props(|p| p.authentication_method = Some("SCRAM-SHA-1".into()));
    conn.handle_bytes(t0, &wire(&connect_with(props)));
    let (reason_code, properties) = refusal(&mut conn);
    assert_eq!(reason_code, 0x8C);
    let text = properties.reason_string.unwrap_or_default();
    assert!(text.contains("SCRAM-SHA-1"), "{text:?}");
}

#[test]
fn mqtt5_3_1_2_24_reason_string_dropped_rather_than_exceed_maximum_packet_size() {
    let small = props(|p| p.maximum_packet_size = Some(24));
    let (mut conn, _) = accepted(Config::default(), small, |_| {});
    let long = "x".repeat(100);
    conn.suback(1, vec![0x8F, 0x97], Some(long.clone()));
    conn.unsuback(2, vec![0x8F], Some("short".into()));
    conn.publish_done(9, 0x80, Some(long.clone())); // unknown id: nothing sent
    conn.close(CloseReason::Server {
        reason_code: 0x82,
        reason_string: Some(long),
    });
    let packets = sent(&mut conn);
    assert_eq!(packets.len(), 3, "{packets:?}");
    for (p, size) in &packets {
        assert!(*size <= 24, "{size} bytes > Maximum Packet Size 24: {p:?}");
    }
    match &packets[..] {
        [(Packet::SubAck(s), _), (Packet::UnsubAck(u), _), (Packet::Disconnect(d), _)] => {
            assert_eq!(
                s.reason_codes,
                [0x8F, 0x97],
                "MQTT-3.9.2-1: codes kept, text dropped"
            );
            assert_eq!(s.properties.reason_string, None);
            assert_eq!(
                u.properties.reason_string.as_deref(),
                Some("short"),
                "a Reason String that fits is kept"
            );
            assert_eq!(d.reason_code, 0x82);
            assert_eq!(d.properties.reason_string, None, "MQTT-3.14.2-3");
        }
        other => panic!("expected SUBACK, UNSUBACK, DISCONNECT: {other:?}"),
    }
}

#[test]
fn mqtt5_3_1_2_28_response_information_only_when_requested() {
    let offer = |a: &mut Accept| a.response_information = Some("ponte/response/c/".into());
    let (_, plain) = accepted(Config::default(), Properties::default(), offer);
    assert_eq!(plain.response_information, None, "not requested: not sent");
    let asked = props(|p| p.request_response_information = Some(1));
    let (_, p) = accepted(Config::default(), asked.clone(), offer);
    assert_eq!(
        p.response_information.as_deref(),
        Some("ponte/response/c/"),
        "3.2.2.3.15"
    );
    let zero = props(|p| p.request_response_information = Some(0));
    let (_, p) = accepted(Config::default(), zero, offer);
    assert_eq!(p.response_information, None, "MQTT-3.1.2-28");
}

#[test]
fn mqtt5_3_2_2_3_15_response_information_dropped_rather_than_exceed_maximum_packet_size() {
    let asked_small = Properties {
        request_response_information: Some(1),
        maximum_packet_size: Some(40),
        ..Properties::default()
    };
    let long = format!("ponte/response/{}/", "x".repeat(60));
    let (_, p) = accepted(Config::default(), asked_small.clone(), |a| {
        a.response_information = Some(long)
    });
    assert_eq!(p.response_information, None, "MQTT-3.1.2-24");
    let (_, p) = accepted(Config::default(), asked_small, |a| {
        a.response_information = Some("r/".into())
    });
    assert_eq!(p.response_information.as_deref(), Some("r/"), "it fits");
}

fn outgoing(topic: &str) -> Outgoing {
    Outgoing {
        topic: topic.into(),
        payload: Bytes::from_static(b"p"),
        qos: QoS::AtMostOnce,
        retain: false,
        content_type: None,
        properties: None,
        subscription_ids: Vec::new(),
        expires_at: None,
    }
}

#[test]
fn mqtt5_3_3_2_3_4_server_reuses_the_least_recently_used_topic_alias() {
    let props = props(|p| p.topic_alias_maximum = Some(2));
    let (mut conn, _) = accepted(Config::default(), props, |_| {});
    let t = Instant::now();
    // (topic sent, expected alias, whether the topic is on the wire)
    let plan = [
        ("a", 1, true),
        ("b", 2, true),
        ("a", 1, false),
        ("c", 2, true), // b is the least recently used: its alias now stands for c
        ("a", 1, false),
        ("b", 2, true), // c is now the oldest
        ("c", 1, true), // then a
        ("b", 2, false),
        ("c", 1, false),
    ];
    // The client's view: alias → topic, as a receiver resolves it.
    let mut table = std::collections::HashMap::new();
    for (i, (topic, alias, full)) in plan.into_iter().enumerate() {
        conn.send_publish(t, outgoing(topic))
            .expect("QoS 0 is sent");
        let [(Packet::Publish(p), _)] = &sent(&mut conn)[..] else {
            panic!("step {i}: expected one PUBLISH");
        };
        let got = p.properties.topic_alias.expect("every publish is aliased");
        assert!(
            got <= 2,
            "MQTT-3.1.2-26: alias {got} above the client's maximum"
        );
        assert_eq!(got, alias, "step {i} ({topic})");
        assert_eq!(!p.topic.is_empty(), full, "step {i} ({topic})");
        if !p.topic.is_empty() {
            table.insert(got, p.topic.clone());
        }
        assert_eq!(
            table[&got], topic,
            "step {i}: the client resolves the right topic"
        );
    }
}

#[test]
fn mqtt5_3_1_2_27_no_topic_alias_when_the_client_announced_none() {
    let (mut conn, _) = accepted(Config::default(), Properties::default(), |_| {});
    let t = Instant::now();
    for _ in 0..3 {
        conn.send_publish(t, outgoing("same")).expect("sent");
    }
    for (p, _) in sent(&mut conn) {
        let Packet::Publish(p) = p else {
            panic!("{p:?}")
        };
        assert_eq!(p.properties.topic_alias, None);
        assert_eq!(p.topic, "same");
    }
}

#[test]
fn mqtt5_3_1_2_25_resumed_message_too_large_is_discarded_as_if_delivered() {
    let (mut conn, t0) = machine(|c| c.max_inflight = 1);
    let small = props(|p| p.maximum_packet_size = Some(64));
    conn.handle_bytes(t0, &wire(&connect_with(small)));
    assert!(matches!(conn.poll_event(), Some(Event::Connect(_))));
    let big = Outgoing {
        payload: Bytes::from(vec![b'x'; 200]),
        qos: QoS::AtLeastOnce,
        ..outgoing("big")
    };
    let resume = SessionState {
        outgoing: vec![Inflight::Publish {
            pkid: 5,
            message: big,
        }],
        inbound_qos2: Vec::new(),
        next_pkid: 6,
    };
    conn.accept(
        t0,
        Accept {
            session_present: true,
            resume: Some(resume),
            ..Accept::default()
        },
    );
    assert!(matches!(conn.poll_event(), Some(Event::InflightFreed)));
    assert_eq!(
        conn.outgoing_pkids().len(),
        0,
        "not waiting for an ack that cannot come"
    );
    assert_eq!(
        conn.inflight_available(),
        1,
        "the window slot is free again"
    );
    assert_eq!(conn.dropped().0, 1, "counted");
    let packets = sent(&mut conn);
    assert!(
        packets
            .iter()
            .all(|(p, _)| !matches!(p, Packet::Publish(_))),
        "{packets:?}"
    );
}

proptest! {
    #[test]
    fn mqtt5_machine_survives_arbitrary_bytes_after_a_v5_connect(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let t0 = Instant::now();
        let mut conn = Connection::new(t0, Config::default());
        conn.handle_bytes(t0, &v5_connect(&[]));
        if let Some(Event::Connect(_)) = conn.poll_event() {
            conn.accept(t0, Accept::default());
        }
        conn.handle_bytes(t0, &bytes);
        while conn.poll_event().is_some() {}
    }
}

/// MQTT-3.2.2-19/20, 3.4.2-2/3, 3.5.2-2/3, 3.7.2-2/3: a refusing CONNACK and error PUBACK,
/// PUBREC and PUBCOMP keep their reason codes but drop a Reason String that would make them
/// larger than the client's Maximum Packet Size.
#[test]
fn mqtt5_3_2_2_19_3_4_2_2_3_5_2_2_3_7_2_2_reason_strings_dropped_beyond_maximum_packet_size() {
    let long = "y".repeat(200);
    let small = props(|p| p.maximum_packet_size = Some(24));

    // CONNACK (MQTT-3.2.2-19).
    let t0 = Instant::now();
    let mut conn = Connection::new(t0, Config::default());
    conn.handle_bytes(t0, &wire(&connect_with(small.clone())));
    assert!(matches!(conn.poll_event(), Some(Event::Connect(_))));
    conn.reject(0x87, Some(long.clone()));
    match &sent(&mut conn)[..] {
        [(
            Packet::ConnAck {
                reason_code,
                properties,
                ..
            },
            size,
        )] => {
            assert_eq!(*reason_code, 0x87);
            assert!(*size <= 24, "{size} bytes");
            assert_eq!(properties.reason_string, None);
        }
        other => panic!("expected CONNACK 0x87: {other:?}"),
    }

    // PUBACK (MQTT-3.4.2-2), PUBREC (MQTT-3.5.2-2), PUBCOMP (MQTT-3.7.2-2).
    let (mut conn, _) = accepted(Config::default(), small, |_| {});
    let t = Instant::now();
    for (id, qos) in [(1u16, QoS::AtLeastOnce), (2, QoS::ExactlyOnce)] {
        conn.handle_bytes(t, &inbound(qos, id));
    }
    conn.publish_done(1, 0x87, Some(long.clone()));
    conn.publish_done(2, 0x87, Some(long));
    conn.handle_bytes(t, &pubrel(77)); // unknown id: PUBCOMP 0x92 with the default text
    let packets = sent(&mut conn);
    for (p, size) in &packets {
        assert!(*size <= 24, "{size} bytes > Maximum Packet Size 24: {p:?}");
    }
    match &packets[..] {
        [(Packet::PubAck(a), _), (Packet::PubRec(r), _), (Packet::PubComp(c), _)] => {
            assert_eq!(
                (a.reason_code, r.reason_code, c.reason_code),
                (0x87, 0x87, 0x92)
            );
            assert_eq!(a.properties.reason_string, None, "MQTT-3.4.2-2");
            assert_eq!(r.properties.reason_string, None, "MQTT-3.5.2-2");
        }
        other => panic!("expected PUBACK, PUBREC, PUBCOMP: {other:?}"),
    }
}

/// The Session Expiry Interval the DISCONNECT carrying `asked` leaves in force.
fn expiry_after_disconnect(conn: &mut Connection, asked: u32) -> Option<u32> {
    let t = Instant::now();
    conn.handle_bytes(
        t,
        &wire(&Packet::Disconnect(ReasonPacket {
            reason_code: 0,
            properties: Properties {
                session_expiry_interval: Some(asked),
                ..Properties::default()
            }
            .into(),
        })),
    );
    while let Some(ev) = conn.poll_event() {
        if let Event::Closed { reason, .. } = ev {
            return match reason {
                CloseReason::ClientDisconnect {
                    session_expiry_interval,
                    ..
                } => session_expiry_interval,
                other => panic!("expected a client DISCONNECT, got {other:?}"),
            };
        }
    }
    panic!("the DISCONNECT closed nothing")
}

#[test]
fn mqtt5_3_2_2_3_2_session_expiry_above_the_servers_maximum_is_lowered_and_told() {
    let config = Config {
        max_session_expiry: Some(60),
        ..Config::default()
    };
    let asking = |secs| Properties {
        session_expiry_interval: Some(secs),
        ..Properties::default()
    };
    // More than the maximum: the CONNACK says what the server uses, and that holds,
    // also when a DISCONNECT asks for more again.
    let (mut conn, connack) = accepted(config.clone(), asking(3600), |_| {});
    assert_eq!(connack.session_expiry_interval, Some(60));
    assert_eq!(conn.session_expiry_interval(), 60);
    assert_eq!(expiry_after_disconnect(&mut conn, 7200), Some(60));
    // Within it: the client's value, and no property (absent = as asked).
    let (mut conn, connack) = accepted(config.clone(), asking(30), |_| {});
    assert_eq!(connack.session_expiry_interval, None);
    assert_eq!(conn.session_expiry_interval(), 30);
    assert_eq!(expiry_after_disconnect(&mut conn, 45), Some(45));
    // A maximum of 0 (sessions end with their connection): a client that asked for an
    // expiry may still send one at DISCONNECT (it is not MQTT-3.14.2-2's 0 → non-zero).
    let (mut conn, connack) = accepted(
        Config {
            max_session_expiry: Some(0),
            ..Config::default()
        },
        asking(10),
        |_| {},
    );
    assert_eq!(connack.session_expiry_interval, Some(0));
    assert_eq!(expiry_after_disconnect(&mut conn, 10), Some(0));
    // Without a maximum, as the client asks.
    let (conn, connack) = accepted(Config::default(), asking(u32::MAX), |_| {});
    assert_eq!(connack.session_expiry_interval, None);
    assert_eq!(conn.session_expiry_interval(), u32::MAX);
}
