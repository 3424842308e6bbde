//! MQTT 3.1.1 (OASIS Standard, 29 October 2014) conformance of the broker, one test per
//! server-side normative statement of sections 3 and 4 not already covered elsewhere. Each
//! test is named after the clause it checks; `tests/conformance/README.md` maps every
//! server-side clause to the test that covers it. Packets are written and read byte-exact
//! with ponte-mqtt's codec over a raw socket, so flags, packet identifiers and return codes
//! are checked as they are on the wire.

mod conformance;

use conformance::*;
use ponte_mqtt::{Packet, QoS, SubscribeReturnCode};

/// A CONNECT built byte by byte: protocol `name`/`level`, connect `flags`, keep alive 30 and
/// `payload` as given — for CONNECTs the codec refuses to build.
fn raw_connect(name: &str, level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&[level, flags, 0, 30]);
    body.extend_from_slice(payload);
    let mut out = vec![0x10, body.len() as u8];
    out.extend(body);
    out
}

/// A length-prefixed string.
fn s(v: &[u8]) -> Vec<u8> {
    let mut out = (v.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(v);
    out
}

/// Subscribe `c` to `filter` at `qos`, asserting the grant.
async fn sub(c: &mut V3, filter: &str, qos: QoS) {
    assert_eq!(
        c.subscribe(&[(filter, qos)]).await,
        [SubscribeReturnCode::Success(qos)]
    );
}

/// Acknowledge an incoming PUBLISH as a subscriber (PUBACK, or PUBREC/PUBREL/PUBCOMP).
async fn ack(c: &mut V3, p: &ponte_mqtt::Publish) {
    match p.qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => c.send(&Packet::PubAck(p.pkid)).await,
        QoS::ExactlyOnce => {
            c.send(&Packet::PubRec(p.pkid)).await;
            c.expect(Packet::PubRel(p.pkid)).await;
            c.send(&Packet::PubComp(p.pkid)).await;
        }
    }
}

/// (topic, payload, qos, retain) of a PUBLISH, for comparisons.
fn seen(p: &ponte_mqtt::Publish) -> (String, Vec<u8>, QoS, bool) {
    (p.topic.clone(), p.payload.to_vec(), p.qos, p.retain)
}

// ---------------------------------------------------------------------------------------
// 3.1 CONNECT

#[tokio::test]
async fn mqtt_3_1_4_1_nonconforming_connect_closes_without_connack() {
    let gw = gateway().await;
    let id = s(b"bad");
    let mut will = s(b"w/t");
    will.extend(s(b"bye"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "MQTT-3.1.2-1 protocol name MQTX",
            raw_connect("MQTX", 4, 0x02, &id),
        ),
        (
            "MQTT-3.1.2-3 reserved flag set",
            raw_connect("MQTT", 4, 0x03, &id),
        ),
        (
            "MQTT-3.1.2-11/13 will QoS without will flag",
            raw_connect("MQTT", 4, 0x0A, &id),
        ),
        (
            "MQTT-3.1.2-15 will retain without will flag",
            raw_connect("MQTT", 4, 0x22, &id),
        ),
        (
            "MQTT-3.1.2-14 will QoS 3",
            raw_connect("MQTT", 4, 0x1E, &[id.clone(), will.clone()].concat()),
        ),
        (
            "MQTT-3.1.2-9 will flag without will fields",
            raw_connect("MQTT", 4, 0x06, &id),
        ),
        (
            "MQTT-3.1.2-19 user name flag without user name",
            raw_connect("MQTT", 4, 0x82, &id),
        ),
        (
            "MQTT-3.1.2-22 password without user name",
            raw_connect("MQTT", 4, 0x42, &[id.clone(), s(b"pw")].concat()),
        ),
        (
            "MQTT-3.1.3-4 client id not UTF-8",
            raw_connect("MQTT", 4, 0x02, &s(&[0xC3, 0x28])),
        ),
        (
            "MQTT-3.1.3-10 will topic not UTF-8",
            raw_connect(
                "MQTT",
                4,
                0x06,
                &[id.clone(), s(&[0xC3, 0x28]), s(b"x")].concat(),
            ),
        ),
        (
            "MQTT-3.1.3-11 user name not UTF-8",
            raw_connect("MQTT", 4, 0x82, &[id.clone(), s(&[0xC3, 0x28])].concat()),
        ),
        (
            "MQTT-1.5.3-2 client id with U+0000",
            raw_connect("MQTT", 4, 0x02, &s(b"a\0b")),
        ),
    ];
    for (what, bytes) in cases {
        let mut c = V3::open(gw.mqtt_addr).await;
        c.send_raw(&bytes).await;
        let got = c.expect_closed(what).await;
        assert!(
            got.is_empty(),
            "{what}: closed without CONNACK, got {got:?}"
        );
    }
}

#[tokio::test]
async fn mqtt_3_1_4_5_packets_after_a_refused_connect_are_not_processed() {
    let gw = gateway().await;
    let mut c = V3::open(gw.mqtt_addr).await;
    // Refused CONNECT (empty client id with Clean Session 0) and, in the same write, a
    // retained PUBLISH that must not be acted on.
    let mut bytes = raw_connect("MQTT", 4, 0x00, &s(b""));
    bytes.extend([0x31, 9, 0, 5, b'r', b'4', b'5', b'/', b't', b'x', b'y']);
    c.send_raw(&bytes).await;
    let got = c.expect_closed("the refused connection to close").await;
    assert_eq!(
        got,
        [Packet::ConnAck {
            session_present: false,
            code: ponte_mqtt::ConnectReturnCode::IdentifierRejected
        }]
    );
    let (mut check, _) = V3::connect(gw.mqtt_addr, "check45", true).await;
    sub(&mut check, "r45/t", QoS::AtMostOnce).await;
    check
        .publish("r45/t", QoS::AtMostOnce, false, b"sentinel")
        .await;
    let p = check.publish_rx().await;
    assert_eq!(
        p.payload, "sentinel",
        "the pipelined retained PUBLISH was not stored: {p:?}"
    );
}

#[tokio::test]
async fn mqtt_3_1_2_5_qos1_and_qos2_messages_queued_for_a_disconnected_session() {
    let gw = gateway().await;
    let (mut away, present) = V3::connect(gw.mqtt_addr, "away5", false).await;
    assert!(!present);
    sub(&mut away, "away5/#", QoS::ExactlyOnce).await;
    away.disconnect().await;

    let (mut publ, _) = V3::connect(gw.mqtt_addr, "away5-pub", true).await;
    publ.publish("away5/1", QoS::AtLeastOnce, false, b"one")
        .await;
    publ.publish("away5/2", QoS::ExactlyOnce, false, b"two")
        .await;

    let (mut back, present) = V3::connect(gw.mqtt_addr, "away5", false).await;
    assert!(present, "MQTT-3.2.2-2: the stored session is reported");
    let a = back.publish_rx().await;
    assert_eq!(
        seen(&a),
        ("away5/1".into(), b"one".to_vec(), QoS::AtLeastOnce, false)
    );
    ack(&mut back, &a).await;
    let b = back.publish_rx().await;
    assert_eq!(
        seen(&b),
        ("away5/2".into(), b"two".to_vec(), QoS::ExactlyOnce, false)
    );
    ack(&mut back, &b).await;
}

#[tokio::test]
async fn mqtt_3_1_2_6_clean_session_1_discards_the_previous_session() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "fresh6", false).await;
    sub(&mut c, "fresh6/old", QoS::AtLeastOnce).await;
    c.disconnect().await;

    let (mut c, present) = V3::connect(gw.mqtt_addr, "fresh6", true).await;
    assert!(
        !present,
        "MQTT-3.2.2-1: Clean Session 1 gets Session Present 0"
    );
    sub(&mut c, "fresh6/new", QoS::AtLeastOnce).await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "fresh6-pub", true).await;
    publ.publish("fresh6/old", QoS::AtLeastOnce, false, b"old")
        .await;
    publ.publish("fresh6/new", QoS::AtLeastOnce, false, b"new")
        .await;
    let p = c.publish_rx().await;
    assert_eq!(p.topic, "fresh6/new", "the old subscription is gone: {p:?}");
    ack(&mut c, &p).await;
    c.disconnect().await;

    // The Clean Session 1 session ended with its connection: nothing is left to resume.
    let (_c, present) = V3::connect(gw.mqtt_addr, "fresh6", false).await;
    assert!(!present, "MQTT-3.1.2-6: clean-session state is not reused");
}

#[tokio::test]
async fn mqtt_3_2_2_2_3_session_present_reflects_stored_session_state() {
    let gw = gateway().await;
    let (c, present) = V3::connect(gw.mqtt_addr, "sp22", false).await;
    assert!(
        !present,
        "MQTT-3.2.2-3: no stored session → Session Present 0"
    );
    c.disconnect().await;
    let (_c, present) = V3::connect(gw.mqtt_addr, "sp22", false).await;
    assert!(present, "MQTT-3.2.2-2: stored session → Session Present 1");
}

#[tokio::test]
async fn mqtt_3_1_2_7_retained_messages_outlive_the_publishers_session() {
    let gw = gateway().await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "keep7", false).await;
    publ.publish("keep7/t", QoS::AtLeastOnce, true, b"kept")
        .await;
    publ.disconnect().await;
    // End the session: a Clean Session 1 connection discards it.
    let (publ, _) = V3::connect(gw.mqtt_addr, "keep7", true).await;
    publ.disconnect().await;

    let (mut c, _) = V3::connect(gw.mqtt_addr, "keep7-sub", true).await;
    sub(&mut c, "keep7/t", QoS::AtLeastOnce).await;
    let p = c.publish_rx().await;
    assert_eq!(
        seen(&p),
        ("keep7/t".into(), b"kept".to_vec(), QoS::AtLeastOnce, true)
    );
}

// ---------------------------------------------------------------------------------------
// Will

#[tokio::test]
async fn mqtt_3_1_2_10_will_removed_once_published() {
    let gw = gateway().await;
    let (mut watch, _) = V3::connect(gw.mqtt_addr, "w10-watch", true).await;
    sub(&mut watch, "w10/#", QoS::AtMostOnce).await;

    let w = will("w10/t", b"gone", QoS::AtMostOnce, false);
    let (c, _) = V3::connect_with(gw.mqtt_addr, connect3("w10", false, 30, Some(w))).await;
    drop(c); // abnormal close: the will goes out
    assert_eq!(watch.publish_rx().await.payload, "gone");

    // The same (persistent) session, this time connected without a will: nothing is left
    // of the first will to publish.
    let (c, present) = V3::connect(gw.mqtt_addr, "w10", false).await;
    assert!(present);
    drop(c);
    watch
        .assert_quiet(QUIET, "MQTT-3.1.2-10: the will was published once only")
        .await;
}

#[tokio::test]
async fn mqtt_3_1_2_12_without_will_flag_nothing_is_published_on_abnormal_close() {
    let gw = gateway().await;
    let (mut watch, _) = V3::connect(gw.mqtt_addr, "w12-watch", true).await;
    sub(&mut watch, "#", QoS::AtMostOnce).await;
    let (c, _) = V3::connect(gw.mqtt_addr, "w12", true).await;
    drop(c);
    watch
        .assert_quiet(QUIET, "MQTT-3.1.2-12: no will without the Will Flag")
        .await;
}

#[tokio::test]
async fn mqtt_3_1_2_16_will_retain_0_published_as_a_non_retained_message() {
    let gw = gateway().await;
    let (mut watch, _) = V3::connect(gw.mqtt_addr, "w16-watch", true).await;
    sub(&mut watch, "w16/t", QoS::AtLeastOnce).await;
    let w = will("w16/t", b"bye", QoS::AtLeastOnce, false);
    let (c, _) = V3::connect_with(gw.mqtt_addr, connect3("w16", true, 30, Some(w))).await;
    drop(c);
    let p = watch.publish_rx().await;
    assert_eq!(
        seen(&p),
        ("w16/t".into(), b"bye".to_vec(), QoS::AtLeastOnce, false)
    );
    ack(&mut watch, &p).await;

    // Not retained: a new subscriber's first message is a live sentinel.
    let (mut late, _) = V3::connect(gw.mqtt_addr, "w16-late", true).await;
    sub(&mut late, "w16/t", QoS::AtMostOnce).await;
    watch
        .publish("w16/t", QoS::AtMostOnce, false, b"sentinel")
        .await;
    assert_eq!(late.publish_rx().await.payload, "sentinel");
}

#[tokio::test]
async fn mqtt_3_1_2_17_will_retain_1_published_as_a_retained_message() {
    let gw = gateway().await;
    let w = will("w17/t", b"bye", QoS::AtLeastOnce, true);
    let (c, _) = V3::connect_with(gw.mqtt_addr, connect3("w17", true, 30, Some(w))).await;
    let (mut watch, _) = V3::connect(gw.mqtt_addr, "w17-watch", true).await;
    sub(&mut watch, "w17/t", QoS::AtLeastOnce).await;
    drop(c);
    let live = watch.publish_rx().await;
    assert_eq!(live.payload, "bye");
    ack(&mut watch, &live).await;

    let (mut late, _) = V3::connect(gw.mqtt_addr, "w17-late", true).await;
    sub(&mut late, "w17/t", QoS::AtLeastOnce).await;
    let p = late.publish_rx().await;
    assert_eq!(
        seen(&p),
        ("w17/t".into(), b"bye".to_vec(), QoS::AtLeastOnce, true),
        "the will is the topic's retained message"
    );
}

#[tokio::test]
async fn mqtt_3_1_3_5_client_ids_of_1_to_23_alphanumerics_are_accepted() {
    let gw = gateway().await;
    let ids = [
        "a",
        "Z9",
        "0123456789abcdefghijklm",
        "nopqrstuvwxyzABCDEFGHIJ",
        "KLMNOPQRSTUVWXYZ",
    ];
    let mut conns = Vec::new();
    for id in ids {
        let (c, _) = V3::connect(gw.mqtt_addr, id, true).await;
        conns.push(c);
    }
    // Distinct ids are distinct clients: none was taken over by another.
    for c in &mut conns {
        c.ping().await;
    }
}

// ---------------------------------------------------------------------------------------
// 3.3 PUBLISH, retained messages

#[tokio::test]
async fn mqtt_3_3_1_3_incoming_dup_flag_is_not_propagated() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "dup3", true).await;
    sub(&mut c, "dup3/t", QoS::ExactlyOnce).await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "dup3-pub", true).await;
    let mut p = publish("dup3/t", QoS::AtLeastOnce, 7, false, b"resent");
    p.dup = true;
    publ.send(&Packet::Publish(p)).await;
    publ.expect(Packet::PubAck(7)).await;
    let got = c.publish_rx().await;
    assert_eq!(got.payload, "resent");
    assert!(
        !got.dup,
        "MQTT-3.3.1-3: first delivery to this client has DUP=0"
    );
    assert_eq!(got.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn mqtt_3_3_1_5_retained_message_stored_with_its_qos() {
    let gw = gateway().await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "rq5-pub", true).await;
    publ.publish("rq5/1", QoS::AtLeastOnce, true, b"q1").await;
    publ.publish("rq5/0", QoS::AtMostOnce, true, b"q0").await;
    // The QoS 0 publish has no acknowledgement: a ping orders it before the subscription.
    publ.ping().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "rq5-sub", true).await;
    sub(&mut c, "rq5/+", QoS::ExactlyOnce).await;
    let mut got = [c.publish_rx().await, c.publish_rx().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(
        got.iter().map(seen).collect::<Vec<_>>(),
        [
            ("rq5/0".into(), b"q0".to_vec(), QoS::AtMostOnce, true),
            ("rq5/1".into(), b"q1".to_vec(), QoS::AtLeastOnce, true),
        ]
    );
}

#[tokio::test]
async fn mqtt_3_3_1_6_new_subscription_gets_the_last_retained_message_of_each_topic() {
    let gw = gateway().await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "rs6-pub", true).await;
    publ.publish("rs6/1", QoS::AtLeastOnce, true, b"old").await;
    publ.publish("rs6/1", QoS::AtLeastOnce, true, b"new").await;
    publ.publish("rs6/2", QoS::AtLeastOnce, true, b"x").await;
    publ.publish("other6/3", QoS::AtLeastOnce, true, b"no")
        .await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "rs6-sub", true).await;
    sub(&mut c, "rs6/+", QoS::AtMostOnce).await;
    publ.publish("rs6/end", QoS::AtLeastOnce, false, b"end")
        .await;
    let mut got = Vec::new();
    loop {
        let p = c.publish_rx().await;
        if p.payload == "end" {
            break;
        }
        got.push((p.topic, p.payload.to_vec(), p.retain));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("rs6/1".into(), b"new".to_vec(), true),
            ("rs6/2".into(), b"x".to_vec(), true),
        ]
    );
}

#[tokio::test]
async fn mqtt_3_3_1_7_qos0_retained_publish_replaces_the_retained_message() {
    let gw = gateway().await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "r7-pub", true).await;
    publ.publish("r7/t", QoS::AtLeastOnce, true, b"old").await;
    publ.publish("r7/t", QoS::AtMostOnce, true, b"new").await;
    publ.ping().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "r7-sub", true).await;
    sub(&mut c, "r7/t", QoS::AtLeastOnce).await;
    publ.publish("r7/t", QoS::AtLeastOnce, false, b"end").await;
    let first = c.publish_rx().await;
    assert_eq!(
        seen(&first),
        ("r7/t".into(), b"new".to_vec(), QoS::AtMostOnce, true),
        "MQTT-3.3.1-7: the QoS 0 retained message replaced the old one"
    );
    assert_eq!(c.publish_rx().await.payload, "end");
}

#[tokio::test]
async fn mqtt_3_3_1_12_retain_0_neither_stores_nor_removes_the_retained_message() {
    let gw = gateway().await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "r12-pub", true).await;
    publ.publish("r12/t", QoS::AtLeastOnce, true, b"kept").await;
    publ.publish("r12/t", QoS::AtLeastOnce, false, b"live")
        .await;
    publ.publish("r12/u", QoS::AtLeastOnce, false, b"never")
        .await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "r12-sub", true).await;
    sub(&mut c, "r12/+", QoS::AtLeastOnce).await;
    publ.publish("r12/end", QoS::AtLeastOnce, false, b"end")
        .await;
    let first = c.publish_rx().await;
    assert_eq!(
        seen(&first),
        ("r12/t".into(), b"kept".to_vec(), QoS::AtLeastOnce, true)
    );
    ack(&mut c, &first).await;
    let next = c.publish_rx().await;
    assert_eq!(next.payload, "end", "r12/u was never retained: {next:?}");
}

// ---------------------------------------------------------------------------------------
// 3.8 SUBSCRIBE, 3.10 UNSUBSCRIBE, 3.12 PINGREQ, 3.14 DISCONNECT

#[tokio::test]
async fn mqtt_3_8_4_2_suback_carries_the_subscribe_packet_identifier() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "id842", true).await;
    c.send(&Packet::Subscribe {
        pkid: 0xBEEF,
        filters: vec![("id/t".into(), QoS::AtLeastOnce)],
    })
    .await;
    c.expect(Packet::SubAck {
        pkid: 0xBEEF,
        codes: vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)],
    })
    .await;
}

#[tokio::test]
async fn mqtt_3_10_4_5_unsuback_with_the_packet_identifier_even_when_nothing_matched() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "id1045", true).await;
    c.send(&Packet::Unsubscribe {
        pkid: 0x1234,
        filters: vec!["never/subscribed".into()],
    })
    .await;
    c.expect(Packet::UnsubAck(0x1234)).await;
}

#[tokio::test]
async fn mqtt_3_8_4_3_identical_filter_replaces_the_subscription() {
    let gw = gateway().await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "rep3-pub", true).await;
    publ.publish("rep3/t", QoS::AtLeastOnce, true, b"r").await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "rep3", true).await;
    sub(&mut c, "rep3/t", QoS::AtMostOnce).await;
    assert_eq!(c.publish_rx().await.qos, QoS::AtMostOnce);
    sub(&mut c, "rep3/t", QoS::AtLeastOnce).await;
    // The retained message is re-sent, now at the new maximum QoS.
    let again = c.publish_rx().await;
    assert_eq!(
        seen(&again),
        ("rep3/t".into(), b"r".to_vec(), QoS::AtLeastOnce, true)
    );
    ack(&mut c, &again).await;
    publ.publish("rep3/t", QoS::AtLeastOnce, false, b"live")
        .await;
    publ.publish("rep3/t", QoS::AtLeastOnce, false, b"end")
        .await;
    let mut got = Vec::new();
    loop {
        let p = c.publish_rx().await;
        ack(&mut c, &p).await;
        let end = p.payload == "end";
        got.push((p.payload.to_vec(), p.qos));
        if end {
            break;
        }
    }
    assert_eq!(
        got,
        [
            (b"live".to_vec(), QoS::AtLeastOnce),
            (b"end".to_vec(), QoS::AtLeastOnce)
        ],
        "one subscription (replaced, not added), at its new QoS"
    );
}

#[tokio::test]
async fn mqtt_3_8_4_4_multiple_filters_handled_in_order_with_one_suback() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "multi4", true).await;
    let codes = c
        .subscribe(&[
            ("m4/a", QoS::ExactlyOnce),
            ("m4/#/x", QoS::AtLeastOnce),
            ("m4/b", QoS::AtMostOnce),
            ("m4/c", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        codes,
        [
            SubscribeReturnCode::Success(QoS::ExactlyOnce),
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::Success(QoS::AtMostOnce),
            SubscribeReturnCode::Success(QoS::AtLeastOnce),
        ],
        "MQTT-3.8.4-5 / MQTT-3.9.3-1: one code per filter, in order"
    );
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "multi4-pub", true).await;
    for t in ["m4/a", "m4/b", "m4/c"] {
        publ.publish(t, QoS::ExactlyOnce, false, b"v").await;
    }
    let got = [
        c.publish_rx().await,
        c.publish_rx().await,
        c.publish_rx().await,
    ];
    for p in &got {
        ack(&mut c, p).await;
    }
    assert_eq!(
        got.map(|p| (p.topic, p.qos)),
        [
            ("m4/a".into(), QoS::ExactlyOnce),
            ("m4/b".into(), QoS::AtMostOnce),
            ("m4/c".into(), QoS::AtLeastOnce)
        ]
    );
}

#[tokio::test]
async fn mqtt_4_7_3_1_empty_topic_filter_is_refused() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "empty731", true).await;
    c.send(&Packet::Subscribe {
        pkid: 3,
        filters: vec![(String::new(), QoS::AtMostOnce)],
    })
    .await;
    // Either answer is conforming: a failure code, or closing the connection.
    if let Some(p) = c.recv().await {
        assert_eq!(
            p,
            Packet::SubAck {
                pkid: 3,
                codes: vec![SubscribeReturnCode::Failure]
            }
        );
    }
}

#[tokio::test]
async fn mqtt_3_10_4_1_unsubscribe_deletes_only_character_for_character_matches() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "uc41", true).await;
    sub(&mut c, "uc41/+", QoS::AtMostOnce).await;
    // Neither filter is "uc41/+" itself, though both overlap it.
    c.send(&Packet::Unsubscribe {
        pkid: 4,
        filters: vec!["uc41/a".into(), "uc41/#".into()],
    })
    .await;
    c.expect(Packet::UnsubAck(4)).await;
    c.publish("uc41/a", QoS::AtMostOnce, false, b"still").await;
    assert_eq!(c.publish_rx().await.payload, "still");
}

#[tokio::test]
async fn mqtt_3_10_4_6_multiple_filters_handled_with_one_unsuback() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "u46", true).await;
    for f in ["u46/a", "u46/b", "u46/c"] {
        sub(&mut c, f, QoS::AtMostOnce).await;
    }
    c.send(&Packet::Unsubscribe {
        pkid: 5,
        filters: vec!["u46/a".into(), "u46/b".into()],
    })
    .await;
    c.expect(Packet::UnsubAck(5)).await;
    for t in ["u46/a", "u46/b", "u46/c"] {
        c.publish(t, QoS::AtMostOnce, false, b"v").await;
    }
    // MQTT-3.10.4-2: no new messages for the removed subscriptions.
    let p = c.publish_rx().await;
    assert_eq!(p.topic, "u46/c", "both filters were removed: {p:?}");
}

#[tokio::test]
async fn mqtt_3_10_4_3_qos2_delivery_in_flight_completes_after_unsubscribe() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "u43", true).await;
    sub(&mut c, "u43/t", QoS::ExactlyOnce).await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "u43-pub", true).await;
    publ.publish("u43/t", QoS::ExactlyOnce, false, b"x").await;
    let p = c.publish_rx().await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    c.send(&Packet::Unsubscribe {
        pkid: 9,
        filters: vec!["u43/t".into()],
    })
    .await;
    c.expect(Packet::UnsubAck(9)).await;
    c.send(&Packet::PubRec(p.pkid)).await;
    c.expect(Packet::PubRel(p.pkid)).await;
    c.send(&Packet::PubComp(p.pkid)).await;
    c.ping().await;
}

#[tokio::test]
async fn mqtt_3_12_4_1_pingreq_answered_with_pingresp() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "ping", true).await;
    c.send_raw(&[0xC0, 0x00]).await;
    c.expect(Packet::PingResp).await;
}

#[tokio::test]
async fn mqtt_3_14_1_1_disconnect_with_reserved_bits_set_closes_and_publishes_the_will() {
    let gw = gateway().await;
    let (mut watch, _) = V3::connect(gw.mqtt_addr, "d141-watch", true).await;
    sub(&mut watch, "d141/t", QoS::AtMostOnce).await;
    let w = will("d141/t", b"will", QoS::AtMostOnce, false);
    let (mut c, _) = V3::connect_with(gw.mqtt_addr, connect3("d141", true, 30, Some(w))).await;
    c.send_raw(&[0xE1, 0x00]).await;
    let got = c
        .expect_closed("the close after a malformed DISCONNECT")
        .await;
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(
        watch.publish_rx().await.payload,
        "will",
        "not a valid DISCONNECT: the will is published"
    );
}

// ---------------------------------------------------------------------------------------
// 4.3 QoS flows, 4.4 redelivery, 4.6 ordering, 4.7 topics

#[tokio::test]
async fn mqtt_4_3_2_2_after_puback_the_same_packet_id_is_a_new_message() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "q432", true).await;
    sub(&mut c, "q432/t", QoS::AtMostOnce).await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "q432-pub", true).await;
    publ.send(&Packet::Publish(publish(
        "q432/t",
        QoS::AtLeastOnce,
        9,
        false,
        b"1",
    )))
    .await;
    publ.expect(Packet::PubAck(9)).await;
    let mut again = publish("q432/t", QoS::AtLeastOnce, 9, false, b"2");
    again.dup = true;
    publ.send(&Packet::Publish(again)).await;
    publ.expect(Packet::PubAck(9)).await;
    assert_eq!(c.publish_rx().await.payload, "1");
    assert_eq!(c.publish_rx().await.payload, "2");
}

#[tokio::test]
async fn mqtt_4_3_3_2_after_pubcomp_the_same_packet_id_is_a_new_message() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "q433", true).await;
    sub(&mut c, "q433/t", QoS::AtMostOnce).await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "q433-pub", true).await;
    for payload in [b"1", b"2"] {
        publ.send(&Packet::Publish(publish(
            "q433/t",
            QoS::ExactlyOnce,
            9,
            false,
            payload,
        )))
        .await;
        publ.expect(Packet::PubRec(9)).await;
        publ.send(&Packet::PubRel(9)).await;
        publ.expect(Packet::PubComp(9)).await;
    }
    assert_eq!(c.publish_rx().await.payload, "1");
    assert_eq!(c.publish_rx().await.payload, "2");
}

#[tokio::test]
async fn mqtt_4_4_0_1_unacknowledged_publish_and_pubrel_resent_on_reconnect() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "re440", false).await;
    sub(&mut c, "re440/#", QoS::ExactlyOnce).await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "re440-pub", true).await;
    publ.publish("re440/1", QoS::AtLeastOnce, false, b"a").await;
    publ.publish("re440/2", QoS::ExactlyOnce, false, b"b").await;
    let a = c.publish_rx().await; // not acknowledged
    let b = c.publish_rx().await;
    assert_eq!((a.qos, b.qos), (QoS::AtLeastOnce, QoS::ExactlyOnce));
    c.send(&Packet::PubRec(b.pkid)).await;
    c.expect(Packet::PubRel(b.pkid)).await;
    drop(c); // gone before PUBACK for a and PUBCOMP for b

    let (mut c, present) = V3::connect(gw.mqtt_addr, "re440", false).await;
    assert!(present);
    let again = c.recv().await;
    let mut want = a.clone();
    want.dup = true;
    assert_eq!(
        again,
        Some(Packet::Publish(want)),
        "PUBLISH resent with DUP=1 (MQTT-3.3.1-1) and its packet id"
    );
    c.expect(Packet::PubRel(b.pkid)).await;
    c.send(&Packet::PubAck(a.pkid)).await;
    c.send(&Packet::PubComp(b.pkid)).await;
    c.ping().await;
}

#[tokio::test]
async fn mqtt_4_6_0_6_messages_from_one_client_are_forwarded_in_order() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "ord6", true).await;
    sub(&mut c, "ord6/t", QoS::AtLeastOnce).await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "ord6-pub", true).await;
    for i in 0..40u8 {
        let p = publish("ord6/t", QoS::AtLeastOnce, u16::from(i) + 1, false, &[i]);
        publ.send(&Packet::Publish(p)).await;
    }
    for i in 0..40u8 {
        let p = c.publish_rx().await;
        assert_eq!(p.payload.as_ref(), [i], "message {i} in publish order");
        ack(&mut c, &p).await;
    }
}

#[tokio::test]
async fn mqtt_4_7_3_4_topics_are_matched_without_normalisation() {
    let gw = gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "norm", true).await;
    sub(&mut c, "nm/a", QoS::AtMostOnce).await;
    for t in ["nm//a", "NM/a", "nm/a/", "nm/a ", "nm/\u{FEFF}a"] {
        c.publish(t, QoS::AtMostOnce, false, b"no").await;
    }
    c.publish("nm/a", QoS::AtMostOnce, false, b"yes").await;
    let p = c.publish_rx().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_ref()),
        ("nm/a", &b"yes"[..]),
        "only the identical topic matched"
    );
}

/// A publisher that does not wait for its PUBACKs has its PUBLISHes in flight together (their
/// retained writes share group commits, issue 6); with sled behind them, live and retained
/// messages of mixed QoS still reach a subscriber in publish order (MQTT-4.6.0-6), the
/// PUBACKs come back in PUBLISH order, the last retained value wins, and a SUBSCRIBE sent right
/// after a retained PUBLISH on the same connection gets that value (packets are handled as
/// if one by one).
#[tokio::test]
async fn mqtt_4_6_0_6_pipelined_publishes_keep_order_with_a_durable_store() {
    let (gw, _dir) = sled_gateway().await;
    let (mut c, _) = V3::connect(gw.mqtt_addr, "pipe-sub", true).await;
    sub(&mut c, "pipe/#", QoS::AtLeastOnce).await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "pipe-pub", true).await;
    const N: u16 = 300;
    let mut bytes = bytes::BytesMut::new();
    let mut acked = Vec::new();
    for i in 0..N {
        let retain = i % 3 != 1;
        let qos = if i % 5 == 4 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        if qos != QoS::AtMostOnce {
            acked.push(i + 1);
        }
        let topic = if i % 2 == 0 { "pipe/a" } else { "pipe/b" };
        let p = publish(topic, qos, i + 1, retain, &i.to_be_bytes());
        ponte_mqtt::encode(&Packet::Publish(p), &mut bytes);
    }
    // All in one write: the server reads them in a few reads, none waiting for the last.
    publ.send_raw(&bytes).await;
    let mut pubacks = Vec::new();
    while pubacks.len() < acked.len() {
        match publ.recv().await {
            Some(Packet::PubAck(id)) => pubacks.push(id),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_eq!(pubacks, acked, "PUBACKs in PUBLISH order");
    for i in 0..N {
        let p = c.publish_rx().await;
        assert_eq!(
            p.payload.as_ref(),
            i.to_be_bytes(),
            "message {i} delivered in publish order"
        );
        ack(&mut c, &p).await;
    }
    // Retained, then SUBSCRIBE at once on the same connection: it sees its own value.
    publ.send(&Packet::Publish(publish(
        "pipe/c",
        QoS::AtLeastOnce,
        7,
        true,
        b"mine",
    )))
    .await;
    publ.send(&Packet::Subscribe {
        pkid: 8,
        filters: vec![("pipe/c".to_string(), QoS::AtMostOnce)],
    })
    .await;
    publ.expect(Packet::PubAck(7)).await;
    let p = publ.publish_rx().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_ref(), p.retain),
        ("pipe/c", &b"mine"[..], true)
    );
    // The last retained value of each topic is the one published last.
    let last_a = (0..N)
        .filter(|i| i % 2 == 0 && i % 3 != 1)
        .max()
        .unwrap_or(0);
    let v = gw
        .broker
        .get(&ponte::model::TopicName::parse("pipe/a").expect("topic"));
    assert_eq!(
        v.map(|v| v.payload.to_vec()),
        Some(last_a.to_be_bytes().to_vec())
    );
    gw.shutdown().await;
}

/// MQTT-3.12.4-1 with pipelined PUBLISHes: the PINGRESP is sent only once every PUBLISH the
/// client sent before the PINGREQ is handled, so clients can use it as a barrier after QoS 0
/// retained PUBLISHes (which have no acknowledgement of their own), here with sled behind.
#[tokio::test]
async fn mqtt_3_12_4_1_pingresp_follows_the_publishes_sent_before_it() {
    let (gw, _dir) = sled_gateway().await;
    let (mut publ, _) = V3::connect(gw.mqtt_addr, "barrier", true).await;
    let mut bytes = bytes::BytesMut::new();
    for i in 0..100u16 {
        let p = publish(&format!("barrier/{i}"), QoS::AtMostOnce, 0, true, b"v");
        ponte_mqtt::encode(&Packet::Publish(p), &mut bytes);
    }
    ponte_mqtt::encode(&Packet::PingReq, &mut bytes);
    publ.send_raw(&bytes).await;
    publ.expect(Packet::PingResp).await;
    for i in 0..100u16 {
        let topic = ponte::model::TopicName::parse(&format!("barrier/{i}")).expect("topic");
        assert!(
            gw.broker.get(&topic).is_some(),
            "barrier/{i} stored before the PINGRESP"
        );
    }
    gw.shutdown().await;
}
