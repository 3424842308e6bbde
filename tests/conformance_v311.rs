//! MQTT 3.1.1 (OASIS Standard, 29 October 2014) conformance of the broker, one test per
//! server-side normative statement of sections 3 and 4 not already covered elsewhere. Each
//! test is named after the clause it checks; `tests/conformance/README.md` maps every
//! server-side clause to the test that covers it. Packets are written and read byte-exact
//! with ponte-mqtt's codec over a raw socket, so flags, packet identifiers and return codes
//! are checked as they are on the wire.

mod common;

use common::*;
use ponte_mqtt::{
    Packet, PubResponse, QoS, SubResponse, Subscribe, SubscriptionOptions, Unsubscribe,
};

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
    assert_eq!(c.subscribe(&[(filter, qos)]).await, [qos.as_u8()]);
}

/// Acknowledge an incoming PUBLISH as a subscriber (PUBACK, or PUBREC/PUBREL/PUBCOMP).
async fn ack(c: &mut V3, p: &ponte_mqtt::Publish) {
    match p.qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => c.send(&Packet::PubAck(PubResponse::success(p.pkid))).await,
        QoS::ExactlyOnce => {
            c.send(&Packet::PubRec(PubResponse::success(p.pkid))).await;
            c.expect(Packet::PubRel(PubResponse::success(p.pkid))).await;
            c.send(&Packet::PubComp(PubResponse::success(p.pkid))).await;
        }
    }
}

/// (topic, payload, qos, retain) of a PUBLISH, for comparisons.
fn seen(p: &ponte_mqtt::Publish) -> (String, Vec<u8>, QoS, bool) {
    (p.topic.clone(), p.payload.to_vec(), p.qos, p.retain)
}

/// A SUBSCRIBE of one filter.
fn subscribe_one(pkid: u16, filter: &str, qos: QoS) -> Packet {
    let filters = vec![(filter.to_string(), SubscriptionOptions::qos(qos))];
    Packet::Subscribe(Subscribe {
        pkid,
        filters,
        properties: Default::default(),
    })
}

/// The next two messages `c` receives are "1" and then "2".
async fn one_then_two(c: &mut V3) {
    let got = [c.publish_rx().await.payload, c.publish_rx().await.payload];
    assert_eq!(got, ["1", "2"]);
}

/// The expected [`seen`] of a message.
fn msg(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> (String, Vec<u8>, QoS, bool) {
    (topic.into(), payload.to_vec(), qos, retain)
}

/// A clean-session client `id` subscribed to `filter` at `qos`.
async fn subscriber(gw: &ponte::Gateway, id: &str, filter: &str, qos: QoS) -> V3 {
    let mut c = V3::connect(gw.mqtt_addr, id).await;
    sub(&mut c, filter, qos).await;
    c
}

/// A [`subscriber`] `id` and a publisher `{id}-pub`.
async fn sub_and_pub(gw: &ponte::Gateway, id: &str, filter: &str, qos: QoS) -> (V3, V3) {
    let c = subscriber(gw, id, filter, qos).await;
    (c, V3::connect(gw.mqtt_addr, &format!("{id}-pub")).await)
}

/// A client `id` with Clean Session `clean` and a will (topic, payload, QoS, retain).
async fn with_will(
    gw: &ponte::Gateway,
    id: &str,
    clean: bool,
    w: (&str, &'static [u8], QoS, bool),
) -> V3 {
    let w = will(w.0, w.1, w.2, w.3);
    V3::connect_with(gw.mqtt_addr, connect3(id, clean, 30, Some(w)))
        .await
        .0
}

/// A gateway and a watcher `id` subscribed to `filter` at `qos`.
async fn watching(id: &str, filter: &str, qos: QoS) -> (ponte::Gateway, V3) {
    let gw = gateway().await;
    let watch = subscriber(&gw, id, filter, qos).await;
    (gw, watch)
}

/// UNSUBSCRIBE `filters` with packet id `pkid`; the UNSUBACK must come next, with that id.
async fn unsubscribe(c: &mut V3, pkid: u16, filters: &[&str]) {
    let filters = filters.iter().map(|f| f.to_string()).collect();
    c.send(&Packet::Unsubscribe(Unsubscribe {
        pkid,
        filters,
        properties: Default::default(),
    }))
    .await;
    // A 3.1.1 UNSUBACK carries no reason codes on the wire.
    c.expect(Packet::UnsubAck(SubResponse {
        pkid,
        reason_codes: vec![],
        properties: Default::default(),
    }))
    .await;
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
            reason_code: ponte_mqtt::reason::CLIENT_IDENTIFIER_NOT_VALID,
            properties: Default::default()
        }]
    );
    let mut check = subscriber(&gw, "check45", "r45/t", QoS::AtMostOnce).await;
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
    let (mut away, present) = V3::session(gw.mqtt_addr, "away5", false).await;
    assert!(!present);
    sub(&mut away, "away5/#", QoS::ExactlyOnce).await;
    away.disconnect().await;

    let mut publ = V3::connect(gw.mqtt_addr, "away5-pub").await;
    publ.publish("away5/1", QoS::AtLeastOnce, false, b"one")
        .await;
    publ.publish("away5/2", QoS::ExactlyOnce, false, b"two")
        .await;

    let (mut back, present) = V3::session(gw.mqtt_addr, "away5", false).await;
    assert!(present, "MQTT-3.2.2-2: the stored session is reported");
    let a = back.publish_rx().await;
    assert_eq!(seen(&a), msg("away5/1", b"one", QoS::AtLeastOnce, false));
    ack(&mut back, &a).await;
    let b = back.publish_rx().await;
    assert_eq!(seen(&b), msg("away5/2", b"two", QoS::ExactlyOnce, false));
    ack(&mut back, &b).await;
}

#[tokio::test]
async fn mqtt_3_1_2_6_clean_session_1_discards_the_previous_session() {
    let gw = gateway().await;
    let (mut c, _) = V3::session(gw.mqtt_addr, "fresh6", false).await;
    sub(&mut c, "fresh6/old", QoS::AtLeastOnce).await;
    c.disconnect().await;

    let (mut c, present) = V3::session(gw.mqtt_addr, "fresh6", true).await;
    assert!(
        !present,
        "MQTT-3.2.2-1: Clean Session 1 gets Session Present 0"
    );
    sub(&mut c, "fresh6/new", QoS::AtLeastOnce).await;
    let mut publ = V3::connect(gw.mqtt_addr, "fresh6-pub").await;
    for (topic, payload) in [("fresh6/old", &b"old"[..]), ("fresh6/new", b"new")] {
        publ.publish(topic, QoS::AtLeastOnce, false, payload).await;
    }
    let p = c.publish_rx().await;
    assert_eq!(p.topic, "fresh6/new", "the old subscription is gone: {p:?}");
    ack(&mut c, &p).await;
    c.disconnect().await;

    // The Clean Session 1 session ended with its connection: nothing is left to resume.
    let (_c, present) = V3::session(gw.mqtt_addr, "fresh6", false).await;
    assert!(!present, "MQTT-3.1.2-6: clean-session state is not reused");
}

#[tokio::test]
async fn mqtt_3_2_2_2_3_session_present_reflects_stored_session_state() {
    let gw = gateway().await;
    let (c, present) = V3::session(gw.mqtt_addr, "sp22", false).await;
    assert!(
        !present,
        "MQTT-3.2.2-3: no stored session → Session Present 0"
    );
    c.disconnect().await;
    let (_c, present) = V3::session(gw.mqtt_addr, "sp22", false).await;
    assert!(present, "MQTT-3.2.2-2: stored session → Session Present 1");
}

#[tokio::test]
async fn mqtt_3_1_2_7_retained_messages_outlive_the_publishers_session() {
    let gw = gateway().await;
    let (mut publ, _) = V3::session(gw.mqtt_addr, "keep7", false).await;
    publ.publish("keep7/t", QoS::AtLeastOnce, true, b"kept")
        .await;
    publ.disconnect().await;
    // End the session: a Clean Session 1 connection discards it.
    let publ = V3::connect(gw.mqtt_addr, "keep7").await;
    publ.disconnect().await;

    let mut c = subscriber(&gw, "keep7-sub", "keep7/t", QoS::AtLeastOnce).await;
    let p = c.publish_rx().await;
    assert_eq!(seen(&p), msg("keep7/t", b"kept", QoS::AtLeastOnce, true));
}

// ---------------------------------------------------------------------------------------
// Will

#[tokio::test]
async fn mqtt_3_1_2_10_will_removed_once_published() {
    let (gw, mut watch) = watching("w10-watch", "w10/#", QoS::AtMostOnce).await;

    let c = with_will(
        &gw,
        "w10",
        false,
        ("w10/t", b"gone", QoS::AtMostOnce, false),
    )
    .await;
    drop(c); // abnormal close: the will goes out
    assert_eq!(watch.publish_rx().await.payload, "gone");

    // The same (persistent) session, this time connected without a will: nothing is left
    // of the first will to publish.
    let (c, present) = V3::session(gw.mqtt_addr, "w10", false).await;
    assert!(present);
    drop(c);
    let why = "MQTT-3.1.2-10: the will was published once only";
    watch.quiet(why).await;
}

#[tokio::test]
async fn mqtt_3_1_2_16_will_retain_0_published_as_a_non_retained_message() {
    let (gw, mut watch) = watching("w16-watch", "w16/t", QoS::AtLeastOnce).await;
    let c = with_will(&gw, "w16", true, ("w16/t", b"bye", QoS::AtLeastOnce, false)).await;
    drop(c);
    let p = watch.publish_rx().await;
    assert_eq!(seen(&p), msg("w16/t", b"bye", QoS::AtLeastOnce, false));
    ack(&mut watch, &p).await;

    // Not retained: a new subscriber's first message is a live sentinel.
    let mut late = subscriber(&gw, "w16-late", "w16/t", QoS::AtMostOnce).await;
    watch
        .publish("w16/t", QoS::AtMostOnce, false, b"sentinel")
        .await;
    assert_eq!(late.publish_rx().await.payload, "sentinel");
}

#[tokio::test]
async fn mqtt_3_1_2_17_will_retain_1_published_as_a_retained_message() {
    let gw = gateway().await;
    let c = with_will(&gw, "w17", true, ("w17/t", b"bye", QoS::AtLeastOnce, true)).await;
    let mut watch = subscriber(&gw, "w17-watch", "w17/t", QoS::AtLeastOnce).await;
    drop(c);
    let live = watch.publish_rx().await;
    assert_eq!(live.payload, "bye");
    ack(&mut watch, &live).await;

    let mut late = subscriber(&gw, "w17-late", "w17/t", QoS::AtLeastOnce).await;
    let p = late.publish_rx().await;
    assert_eq!(
        seen(&p),
        msg("w17/t", b"bye", QoS::AtLeastOnce, true),
        "the will is the topic's retained message"
    );
}

#[tokio::test]
async fn mqtt_3_1_2_12_without_will_flag_nothing_is_published_on_abnormal_close() {
    let (gw, mut watch) = watching("w12-watch", "#", QoS::AtMostOnce).await;
    let c = V3::connect(gw.mqtt_addr, "w12").await;
    drop(c);
    let why = "MQTT-3.1.2-12: no will without the Will Flag";
    watch.quiet(why).await;
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
        let c = V3::connect(gw.mqtt_addr, id).await;
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
    let (mut c, mut publ) = sub_and_pub(&gw, "dup3", "dup3/t", QoS::ExactlyOnce).await;
    let mut p = publish("dup3/t", QoS::AtLeastOnce, 7, false, b"resent");
    p.dup = true;
    publ.send(&Packet::Publish(p)).await;
    publ.expect(Packet::PubAck(PubResponse::success(7))).await;
    let got = c.publish_rx().await;
    assert_eq!(got.payload, "resent");
    assert!(
        !got.dup,
        "MQTT-3.3.1-3: first delivery to this client has DUP=0"
    );
    assert_eq!(got.qos, QoS::AtLeastOnce);
}

/// A publisher `{id}-pub` sends `sends` (topic, QoS, retain, payload) and pings (so even
/// its QoS 0 PUBLISHes are handled); then a subscriber `{id}-sub` subscribes `filter` at
/// `qos` and the publisher sends "end" to `end` (QoS 1, not retained). What the subscriber
/// received up to and including "end" (each acknowledged), as [`seen`] tuples.
async fn retained_then_live(
    id: &str,
    sends: &[(&str, QoS, bool, &[u8])],
    (filter, qos): (&str, QoS),
    end: &str,
) -> Vec<(String, Vec<u8>, QoS, bool)> {
    let gw = gateway().await;
    let mut publ = V3::connect(gw.mqtt_addr, &format!("{id}-pub")).await;
    for (topic, qos, retain, payload) in sends {
        publ.publish(topic, *qos, *retain, payload).await;
    }
    publ.ping().await;
    let mut c = subscriber(&gw, &format!("{id}-sub"), filter, qos).await;
    publ.publish(end, QoS::AtLeastOnce, false, b"end").await;
    let mut got = Vec::new();
    while got.last().is_none_or(|(_, p, _, _)| p != b"end") {
        let p = c.publish_rx().await;
        ack(&mut c, &p).await;
        got.push(seen(&p));
    }
    got
}

#[tokio::test]
async fn mqtt_3_3_1_5_retained_message_stored_with_its_qos() {
    let sends: [(&str, QoS, bool, &[u8]); 2] = [
        ("rq5/1", QoS::AtLeastOnce, true, b"q1"),
        ("rq5/0", QoS::AtMostOnce, true, b"q0"),
    ];
    let mut got = retained_then_live("rq5", &sends, ("rq5/+", QoS::ExactlyOnce), "rq5/end").await;
    got.pop(); // "end"
    got.sort();
    let want = [
        msg("rq5/0", b"q0", QoS::AtMostOnce, true),
        msg("rq5/1", b"q1", QoS::AtLeastOnce, true),
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn mqtt_3_3_1_6_new_subscription_gets_the_last_retained_message_of_each_topic() {
    let sends: [(&str, QoS, bool, &[u8]); 4] = [
        ("rs6/1", QoS::AtLeastOnce, true, b"old"),
        ("rs6/1", QoS::AtLeastOnce, true, b"new"),
        ("rs6/2", QoS::AtLeastOnce, true, b"x"),
        ("other6/3", QoS::AtLeastOnce, true, b"no"),
    ];
    let got = retained_then_live("rs6", &sends, ("rs6/+", QoS::AtMostOnce), "rs6/end").await;
    let mut got: Vec<_> = got[..got.len() - 1]
        .iter()
        .map(|(t, p, _, r)| (t.clone(), p.clone(), *r))
        .collect();
    got.sort();
    let want = [
        ("rs6/1".into(), b"new".to_vec(), true),
        ("rs6/2".into(), b"x".to_vec(), true),
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn mqtt_3_3_1_7_qos0_retained_publish_replaces_the_retained_message() {
    let want = msg("r7/t", b"new", QoS::AtMostOnce, true);
    let sends: [(&str, QoS, bool, &[u8]); 2] = [
        ("r7/t", QoS::AtLeastOnce, true, b"old"),
        ("r7/t", QoS::AtMostOnce, true, b"new"),
    ];
    let got = retained_then_live("r7", &sends, ("r7/t", QoS::AtLeastOnce), "r7/t").await;
    let why = "MQTT-3.3.1-7: the QoS 0 retained message replaced the old one";
    assert_eq!(got[0], want, "{why}");
    assert_eq!(got[1].1, b"end");
}

#[tokio::test]
async fn mqtt_3_3_1_12_retain_0_neither_stores_nor_removes_the_retained_message() {
    let want = [
        msg("r12/t", b"kept", QoS::AtLeastOnce, true),
        msg("r12/end", b"end", QoS::AtLeastOnce, false),
    ];
    let sends: [(&str, QoS, bool, &[u8]); 3] = [
        ("r12/t", QoS::AtLeastOnce, true, b"kept"),
        ("r12/t", QoS::AtLeastOnce, false, b"live"),
        ("r12/u", QoS::AtLeastOnce, false, b"never"),
    ];
    let got = retained_then_live("r12", &sends, ("r12/+", QoS::AtLeastOnce), "r12/end").await;
    assert_eq!(got, want, "r12/u was never retained");
}

// ---------------------------------------------------------------------------------------
// 3.8 SUBSCRIBE, 3.10 UNSUBSCRIBE, 3.12 PINGREQ, 3.14 DISCONNECT

#[tokio::test]
async fn mqtt_3_8_4_2_suback_carries_the_subscribe_packet_identifier() {
    let gw = gateway().await;
    let mut c = V3::connect(gw.mqtt_addr, "id842").await;
    c.send(&subscribe_one(0xBEEF, "id/t", QoS::AtLeastOnce))
        .await;
    c.expect(Packet::SubAck(SubResponse {
        pkid: 0xBEEF,
        reason_codes: vec![QoS::AtLeastOnce.as_u8()],
        properties: Default::default(),
    }))
    .await;
}

#[tokio::test]
async fn mqtt_3_10_4_5_unsuback_with_the_packet_identifier_even_when_nothing_matched() {
    let gw = gateway().await;
    let mut c = V3::connect(gw.mqtt_addr, "id1045").await;
    unsubscribe(&mut c, 0x1234, &["never/subscribed"]).await;
}

#[tokio::test]
async fn mqtt_3_8_4_3_identical_filter_replaces_the_subscription() {
    let gw = gateway().await;
    let mut publ = V3::connect(gw.mqtt_addr, "rep3-pub").await;
    publ.publish("rep3/t", QoS::AtLeastOnce, true, b"r").await;
    let mut c = subscriber(&gw, "rep3", "rep3/t", QoS::AtMostOnce).await;
    assert_eq!(c.publish_rx().await.qos, QoS::AtMostOnce);
    sub(&mut c, "rep3/t", QoS::AtLeastOnce).await;
    // The retained message is re-sent, now at the new maximum QoS.
    let again = c.publish_rx().await;
    assert_eq!(seen(&again), msg("rep3/t", b"r", QoS::AtLeastOnce, true));
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
    let mut c = V3::connect(gw.mqtt_addr, "multi4").await;
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
            QoS::ExactlyOnce.as_u8(),
            0x80,
            QoS::AtMostOnce.as_u8(),
            QoS::AtLeastOnce.as_u8(),
        ],
        "MQTT-3.8.4-5 / MQTT-3.9.3-1: one code per filter, in order"
    );
    let mut publ = V3::connect(gw.mqtt_addr, "multi4-pub").await;
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
    let mut c = V3::connect(gw.mqtt_addr, "empty731").await;
    c.send(&subscribe_one(3, "", QoS::AtMostOnce)).await;
    // Either answer is conforming: a failure code, or closing the connection.
    if let Some(p) = c.recv().await {
        assert_eq!(
            p,
            Packet::SubAck(SubResponse {
                pkid: 3,
                reason_codes: vec![0x80],
                properties: Default::default()
            })
        );
    }
}

#[tokio::test]
async fn mqtt_3_10_4_1_unsubscribe_deletes_only_character_for_character_matches() {
    let gw = gateway().await;
    let mut c = subscriber(&gw, "uc41", "uc41/+", QoS::AtMostOnce).await;
    // Neither filter is "uc41/+" itself, though both overlap it.
    unsubscribe(&mut c, 4, &["uc41/a", "uc41/#"]).await;
    c.publish("uc41/a", QoS::AtMostOnce, false, b"still").await;
    assert_eq!(c.publish_rx().await.payload, "still");
}

#[tokio::test]
async fn mqtt_3_10_4_6_multiple_filters_handled_with_one_unsuback() {
    let gw = gateway().await;
    let mut c = V3::connect(gw.mqtt_addr, "u46").await;
    for f in ["u46/a", "u46/b", "u46/c"] {
        sub(&mut c, f, QoS::AtMostOnce).await;
    }
    unsubscribe(&mut c, 5, &["u46/a", "u46/b"]).await;
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
    let (mut c, mut publ) = sub_and_pub(&gw, "u43", "u43/t", QoS::ExactlyOnce).await;
    publ.publish("u43/t", QoS::ExactlyOnce, false, b"x").await;
    let p = c.publish_rx().await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    unsubscribe(&mut c, 9, &["u43/t"]).await;
    c.send(&Packet::PubRec(PubResponse::success(p.pkid))).await;
    c.expect(Packet::PubRel(PubResponse::success(p.pkid))).await;
    c.send(&Packet::PubComp(PubResponse::success(p.pkid))).await;
    c.ping().await;
}

#[tokio::test]
async fn mqtt_3_12_4_1_pingreq_answered_with_pingresp() {
    let gw = gateway().await;
    let mut c = V3::connect(gw.mqtt_addr, "ping").await;
    c.send_raw(&[0xC0, 0x00]).await;
    c.expect(Packet::PingResp).await;
}

#[tokio::test]
async fn mqtt_3_14_1_1_disconnect_with_reserved_bits_set_closes_and_publishes_the_will() {
    let (gw, mut watch) = watching("d141-watch", "d141/t", QoS::AtMostOnce).await;
    let mut c = with_will(
        &gw,
        "d141",
        true,
        ("d141/t", b"will", QoS::AtMostOnce, false),
    )
    .await;
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
    let (mut c, mut publ) = sub_and_pub(&gw, "q432", "q432/t", QoS::AtMostOnce).await;
    publ.send(&publish3("q432/t", QoS::AtLeastOnce, 9, false, b"1"))
        .await;
    publ.expect(Packet::PubAck(PubResponse::success(9))).await;
    let mut again = publish("q432/t", QoS::AtLeastOnce, 9, false, b"2");
    again.dup = true;
    publ.send(&Packet::Publish(again)).await;
    publ.expect(Packet::PubAck(PubResponse::success(9))).await;
    one_then_two(&mut c).await;
}

#[tokio::test]
async fn mqtt_4_3_3_2_after_pubcomp_the_same_packet_id_is_a_new_message() {
    let gw = gateway().await;
    let (mut c, mut publ) = sub_and_pub(&gw, "q433", "q433/t", QoS::AtMostOnce).await;
    for payload in [b"1", b"2"] {
        publ.send(&publish3("q433/t", QoS::ExactlyOnce, 9, false, payload))
            .await;
        publ.expect(Packet::PubRec(PubResponse::success(9))).await;
        publ.send(&Packet::PubRel(PubResponse::success(9))).await;
        publ.expect(Packet::PubComp(PubResponse::success(9))).await;
    }
    one_then_two(&mut c).await;
}

#[tokio::test]
async fn mqtt_4_4_0_1_unacknowledged_publish_and_pubrel_resent_on_reconnect() {
    let gw = gateway().await;
    let (mut c, _) = V3::session(gw.mqtt_addr, "re440", false).await;
    sub(&mut c, "re440/#", QoS::ExactlyOnce).await;
    let mut publ = V3::connect(gw.mqtt_addr, "re440-pub").await;
    publ.publish("re440/1", QoS::AtLeastOnce, false, b"a").await;
    publ.publish("re440/2", QoS::ExactlyOnce, false, b"b").await;
    let a = c.publish_rx().await; // not acknowledged
    let b = c.publish_rx().await;
    assert_eq!((a.qos, b.qos), (QoS::AtLeastOnce, QoS::ExactlyOnce));
    c.send(&Packet::PubRec(PubResponse::success(b.pkid))).await;
    c.expect(Packet::PubRel(PubResponse::success(b.pkid))).await;
    drop(c); // gone before PUBACK for a and PUBCOMP for b

    let (mut c, present) = V3::session(gw.mqtt_addr, "re440", false).await;
    assert!(present);
    let again = c.recv().await;
    let mut want = a.clone();
    want.dup = true;
    assert_eq!(
        again,
        Some(Packet::Publish(want)),
        "PUBLISH resent with DUP=1 (MQTT-3.3.1-1) and its packet id"
    );
    c.expect(Packet::PubRel(PubResponse::success(b.pkid))).await;
    c.send(&Packet::PubAck(PubResponse::success(a.pkid))).await;
    c.send(&Packet::PubComp(PubResponse::success(b.pkid))).await;
    c.ping().await;
}

#[tokio::test]
async fn mqtt_4_6_0_6_messages_from_one_client_are_forwarded_in_order() {
    let gw = gateway().await;
    let (mut c, mut publ) = sub_and_pub(&gw, "ord6", "ord6/t", QoS::AtLeastOnce).await;
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
    let mut c = subscriber(&gw, "norm", "nm/a", QoS::AtMostOnce).await;
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
    let mut c = subscriber(&gw, "pipe-sub", "pipe/#", QoS::AtLeastOnce).await;
    let mut publ = V3::connect(gw.mqtt_addr, "pipe-pub").await;
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
        ponte_mqtt::encode(
            &Packet::Publish(p),
            ponte_mqtt::ProtocolVersion::V311,
            &mut bytes,
        );
    }
    // All in one write: the server reads them in a few reads, none waiting for the last.
    publ.send_raw(&bytes).await;
    let mut pubacks = Vec::new();
    while pubacks.len() < acked.len() {
        match publ.recv().await {
            Some(Packet::PubAck(a)) => pubacks.push(a.pkid),
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
    publ.send(&publish3("pipe/c", QoS::AtLeastOnce, 7, true, b"mine"))
        .await;
    publ.send(&subscribe_one(8, "pipe/c", QoS::AtMostOnce))
        .await;
    publ.expect(Packet::PubAck(PubResponse::success(7))).await;
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
    let mut publ = V3::connect(gw.mqtt_addr, "barrier").await;
    let mut bytes = bytes::BytesMut::new();
    for i in 0..100u16 {
        let p = publish(&format!("barrier/{i}"), QoS::AtMostOnce, 0, true, b"v");
        ponte_mqtt::encode(
            &Packet::Publish(p),
            ponte_mqtt::ProtocolVersion::V311,
            &mut bytes,
        );
    }
    ponte_mqtt::encode(
        &Packet::PingReq,
        ponte_mqtt::ProtocolVersion::V311,
        &mut bytes,
    );
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
