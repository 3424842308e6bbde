//! MQTT 5.0 (OASIS Standard, 7 March 2019) conformance of the broker, one test per
//! server-side normative statement of sections 3 and 4 not already covered elsewhere. Each
//! test is named after the clause it checks; `tests/conformance/README.md` maps every
//! server-side clause to the test that covers it. Packets are written and read with
//! ponte-mqtt's v5 codec over a raw socket, so reason codes and properties are checked as
//! they are on the wire.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ponte_mqtt::{reason, Packet, Properties, QoS, ReasonPacket, Subscribe};

/// A gateway and a watcher `id` subscribed to `filter` at `qos`.
async fn watching(id: &str, filter: &str, qos: QoS) -> (ponte::Gateway, V5) {
    let gw = gateway().await;
    let mut watch = V5::connect(gw.mqtt_addr, id).await;
    watch.subscribe(&[(filter, opts(qos))]).await;
    (gw, watch)
}

/// A gateway, a client `id` subscribed to `filter` at `qos` (with Session Expiry 60 s
/// when `persistent`), and a publisher `{id}-pub`.
async fn sub_and_pub(
    id: &str,
    filter: &str,
    qos: QoS,
    persistent: bool,
) -> (ponte::Gateway, V5, V5) {
    let gw = gateway().await;
    let props = if persistent {
        expiry(60)
    } else {
        Properties::default()
    };
    let (mut c, _) = V5::session(gw.mqtt_addr, id, true, props).await;
    c.subscribe(&[(filter, opts(qos))]).await;
    let publ = V5::connect(gw.mqtt_addr, &format!("{id}-pub")).await;
    (gw, c, publ)
}

/// Everything in `got` is a DISCONNECT with `code` (there may be none).
fn at_most_disconnect(got: &[Packet], code: u8, what: &str) {
    for p in got {
        let ok = matches!(p, Packet::Disconnect(ReasonPacket { reason_code, .. }) if *reason_code == code);
        assert!(ok, "{what}: {p:?}");
    }
}

/// A v5 client `id` with a QoS 0 will on `topic` and no properties.
async fn plain_will(gw: &ponte::Gateway, id: &str, topic: &str) -> V5 {
    with_will(gw, id, topic, Properties::default(), Properties::default()).await
}

/// Message Expiry Interval `secs` as PUBLISH properties.
fn expiring(secs: u32) -> Properties {
    props(|p| p.message_expiry_interval = Some(secs))
}

// ---------------------------------------------------------------------------------------
// 3.1 CONNECT, 3.2 CONNACK

#[tokio::test]
async fn mqtt5_3_1_0_2_second_connect_is_a_protocol_error() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "twice5").await;
    c.send(&connect5("twice5", true, Properties::default()))
        .await;
    let got = c.expect_closed("the close after a second CONNECT").await;
    assert!(
        !got.iter().any(|p| matches!(p, Packet::ConnAck { .. })),
        "MQTT-3.2.0-2: no second CONNACK: {got:?}"
    );
    at_most_disconnect(&got, 0x82, "at most a DISCONNECT 0x82 (Protocol Error)");
}

#[tokio::test]
async fn mqtt5_3_1_2_2_unsupported_protocol_version_closes() {
    let gw = gateway().await;
    let mut c = V5::open(gw.mqtt_addr).await;
    // "MQTT" level 6, Clean Start, keep alive 30, no properties, client id "v6".
    c.send_raw(&[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 6, 0x02, 0, 30, 0, 0, 2, b'v', b'6',
    ])
    .await;
    let got = c
        .bytes_until_close("the close after an unknown level")
        .await;
    // Nothing, or a CONNACK refusing the version (0x84 in v5 form, 0x01 in 3.1.1 form).
    if !got.is_empty() {
        assert_eq!(got[0], 0x20, "only a CONNACK may come back: {got:02x?}");
        assert!(
            got.get(3) == Some(&0x84) || got.get(3) == Some(&0x01),
            "refused with Unsupported Protocol Version: {got:02x?}"
        );
    }
}

#[tokio::test]
async fn mqtt5_3_1_4_1_malformed_connect_closes_without_disconnect() {
    let gw = gateway().await;
    let valid = || {
        let mut out = bytes::BytesMut::new();
        ponte_mqtt::encode(
            &connect5("bad5", true, Properties::default()),
            ponte_mqtt::ProtocolVersion::V5,
            &mut out,
        );
        out.to_vec()
    };
    let mut reserved = valid();
    reserved[9] |= 0x01; // MQTT-3.1.2-3: the reserved connect flag
    let mut zero_rm = Vec::new();
    {
        let mut out = bytes::BytesMut::new();
        let props = Properties {
            receive_maximum: Some(0),
            ..Properties::default()
        };
        ponte_mqtt::encode(
            &connect5("bad5", true, props),
            ponte_mqtt::ProtocolVersion::V5,
            &mut out,
        );
        zero_rm.extend_from_slice(&out); // Receive Maximum 0 is a Protocol Error
    }
    for (what, bytes) in [("reserved flag", reserved), ("Receive Maximum 0", zero_rm)] {
        let mut c = V5::open(gw.mqtt_addr).await;
        c.send_raw(&bytes).await;
        let got = c.expect_closed(what).await;
        for p in &got {
            match p {
                Packet::ConnAck { reason_code, session_present, .. } => {
                    assert!(*reason_code >= 0x80 && !*session_present, "{what}: {p:?}")
                }
                other => panic!("{what}: MQTT-3.14.0-1: nothing but a refusing CONNACK before CONNACK success, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn mqtt5_3_1_2_5_clean_start_0_resumes_the_existing_session() {
    let gw = gateway().await;
    let (mut c, present) = V5::session(gw.mqtt_addr, "res5", false, expiry(60)).await;
    assert!(!present, "MQTT-3.2.2-3: no session yet → Session Present 0");
    c.subscribe(&[("res5/t", opts(QoS::AtLeastOnce))]).await;
    c.disconnect(0).await;

    let mut publ = V5::connect(gw.mqtt_addr, "res5-pub").await;
    publ.publish("res5/t", QoS::AtLeastOnce, false, b"while away")
        .await;

    let (mut c, present) = V5::session(gw.mqtt_addr, "res5", false, expiry(60)).await;
    assert!(present, "MQTT-3.2.2-3: session resumed → Session Present 1");
    let p = c.publish_rx().await;
    assert_eq!(p.payload, "while away");
    c.puback(&p, 0).await;
    c.disconnect(0).await;

    let (_c, present) = V5::session(gw.mqtt_addr, "res5", true, expiry(60)).await;
    assert!(
        !present,
        "MQTT-3.2.2-2: Clean Start 1 → Session Present 0 though a session existed"
    );
}

#[tokio::test]
async fn mqtt5_3_1_4_6_packets_after_a_refused_connect_are_not_processed() {
    let gw = gateway().await;
    let props = Properties {
        authentication_method: Some("SCRAM-SHA-1".into()),
        ..Properties::default()
    };
    let mut bytes = bytes::BytesMut::new();
    ponte_mqtt::encode(
        &connect5("refused5", true, props),
        ponte_mqtt::ProtocolVersion::V5,
        &mut bytes,
    );
    ponte_mqtt::encode(
        &publish5(
            publish("r46/t", QoS::AtMostOnce, 0, true, b"no"),
            Properties::default(),
        ),
        ponte_mqtt::ProtocolVersion::V5,
        &mut bytes,
    );
    let mut c = V5::open(gw.mqtt_addr).await;
    c.send_raw(&bytes).await;
    let got = c.expect_closed("the refused connection to close").await;
    match got.as_slice() {
        [Packet::ConnAck {
            session_present,
            reason_code,
            ..
        }] => {
            assert!(*reason_code >= 0x80, "refused: {got:?}");
            assert!(!session_present, "MQTT-3.2.2-6: Session Present 0");
        }
        other => panic!("MQTT-3.2.2-7: one refusing CONNACK then close, got {other:?}"),
    }
    let mut check = V5::connect(gw.mqtt_addr, "check46").await;
    check.subscribe(&[("r46/t", opts(QoS::AtMostOnce))]).await;
    check
        .publish("r46/t", QoS::AtMostOnce, false, b"sentinel")
        .await;
    assert_eq!(
        check.publish_rx().await.payload,
        "sentinel",
        "the pipelined retained PUBLISH was not processed"
    );
}

#[tokio::test]
async fn mqtt5_4_12_0_6_no_authentication_method_in_connack_without_one_in_connect() {
    let gw = gateway().await;
    let (mut c, ack) = V5::connack(
        gw.mqtt_addr,
        connect5("noauth", true, Properties::default()),
    )
    .await;
    assert_eq!(ack.reason, 0);
    assert_eq!(ack.properties.authentication_method, None);
    assert_eq!(ack.properties.authentication_data, None);
    c.ping().await; // and no AUTH came before the PINGRESP
}

#[tokio::test]
async fn mqtt5_3_1_2_22_keep_alive_timeout_closes_and_3_2_2_22_uses_the_clients_value() {
    let gw = gateway().await;
    let mut connect = connect5("ka5", true, Properties::default());
    if let Packet::Connect(c) = &mut connect {
        c.keep_alive = 1;
    }
    let start = Instant::now();
    let (mut c, ack) = V5::connack(gw.mqtt_addr, connect).await;
    assert_eq!(ack.reason, 0);
    assert_eq!(
        ack.properties.server_keep_alive, None,
        "no Server Keep Alive: the client's 1 s applies"
    );
    let got = c.expect_closed("the keep-alive timeout").await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(3000),
        "closed after 1.5 × 1 s, not {waited:?}"
    );
    let what = "only DISCONNECT 0x8D (Keep Alive timeout) may precede the close";
    at_most_disconnect(&got, 0x8D, what);
}

// ---------------------------------------------------------------------------------------
// Will

/// A v5 client `id` with a QoS 0 will on `topic` and these will / CONNECT properties.
async fn with_will(
    gw: &ponte::Gateway,
    id: &str,
    topic: &str,
    props: Properties,
    will_props: Properties,
) -> V5 {
    let (c, ack) = V5::connack(
        gw.mqtt_addr,
        connect5_will(
            id,
            props,
            will(topic, b"will", QoS::AtMostOnce, false),
            will_props,
        ),
    )
    .await;
    assert_eq!(ack.reason, 0);
    c
}

fn will_delay(secs: u32) -> Properties {
    Properties {
        will_delay_interval: Some(secs),
        ..Properties::default()
    }
}

#[tokio::test]
async fn mqtt5_3_1_2_8_will_published_after_the_will_delay_interval() {
    let (gw, mut watch) = watching("wd8-watch", "wd8/t", QoS::AtMostOnce).await;
    let c = with_will(&gw, "wd8", "wd8/t", expiry(10), will_delay(1)).await;
    let dropped = Instant::now();
    drop(c);
    let p = watch.publish_rx().await;
    assert_eq!(p.payload, "will");
    let waited = dropped.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "the will waited for its 1 s delay, not {waited:?}"
    );
    assert_eq!(
        p.properties.will_delay_interval, None,
        "Will Delay is not forwarded"
    );
}

#[tokio::test]
async fn mqtt5_3_1_3_9_reconnect_within_the_will_delay_suppresses_the_will() {
    let (gw, mut watch) = watching("wd9-watch", "wd9/t", QoS::AtMostOnce).await;
    let c = with_will(&gw, "wd9", "wd9/t", expiry(10), will_delay(1)).await;
    drop(c);
    let (_back, present) = V5::session(gw.mqtt_addr, "wd9", false, expiry(10)).await;
    assert!(present);
    watch
        .assert_quiet(
            Duration::from_millis(1500),
            "MQTT-3.1.3-9: the client came back within the Will Delay",
        )
        .await;
}

/// MQTT-3.1.3-9 when the client comes back within the Will Delay and leaves again (a
/// normal DISCONNECT, no will of its own) before the delay is over: it did reconnect, so
/// the first will is not sent.
#[tokio::test]
async fn mqtt5_3_1_3_9_a_reconnect_within_the_will_delay_suppresses_the_will_even_if_it_left_again()
{
    let (gw, mut watch) = watching("wd9b-watch", "wd9b/t", QoS::AtMostOnce).await;
    let c = with_will(&gw, "wd9b", "wd9b/t", expiry(10), will_delay(1)).await;
    drop(c);
    let (back, present) = V5::session(gw.mqtt_addr, "wd9b", false, expiry(10)).await;
    assert!(present);
    back.disconnect(0x00).await;
    watch
        .assert_quiet(
            Duration::from_millis(1500),
            "MQTT-3.1.3-9: the client came back within the Will Delay, then left",
        )
        .await;
}

/// A Clean Start reconnect within the Will Delay ends the old session rather than
/// resuming it: that session's will still goes out (MQTT-3.1.2-8: when the delay has
/// passed or the session ends).
#[tokio::test]
async fn mqtt5_3_1_2_8_a_clean_start_within_the_will_delay_does_not_suppress_the_will() {
    let (gw, mut watch) = watching("wd8b-watch", "wd8b/t", QoS::AtMostOnce).await;
    let c = with_will(&gw, "wd8b", "wd8b/t", expiry(10), will_delay(1)).await;
    drop(c);
    let (_fresh, present) = V5::session(gw.mqtt_addr, "wd8b", true, expiry(10)).await;
    assert!(!present);
    let p = watch.publish_rx().await;
    assert_eq!(p.payload, "will");
}

#[tokio::test]
async fn mqtt5_3_14_4_3_disconnect_0x00_discards_the_will_and_0x04_publishes_it() {
    let (gw, mut watch) = watching("d4-watch", "d4/+", QoS::AtMostOnce).await;
    let normal = plain_will(&gw, "d4-a", "d4/a").await;
    normal.disconnect(0x00).await;
    let with = plain_will(&gw, "d4-b", "d4/b").await;
    with.disconnect(0x04).await;
    let p = watch.publish_rx().await;
    assert_eq!(
        p.topic, "d4/b",
        "only the 0x04 (Disconnect with Will Message) will is published: {p:?}"
    );
}

#[tokio::test]
async fn mqtt5_3_14_1_1_disconnect_with_reserved_bits_is_malformed_and_publishes_the_will() {
    let (gw, mut watch) = watching("d141-watch", "d141/t", QoS::AtMostOnce).await;
    let mut c = plain_will(&gw, "d141", "d141/t").await;
    c.send_raw(&[0xE1, 0x00]).await;
    let got = c
        .expect_closed("the close after a malformed DISCONNECT")
        .await;
    at_most_disconnect(&got, 0x81, "at most DISCONNECT 0x81 (Malformed Packet)");
    assert_eq!(watch.publish_rx().await.payload, "will");
}

#[tokio::test]
async fn mqtt5_3_14_2_2_server_disconnect_carries_no_session_expiry() {
    let gw = gateway().await;
    let mut old = V5::connect_props(gw.mqtt_addr, "twin142", expiry(60)).await;
    let (_new, _) = V5::session(gw.mqtt_addr, "twin142", false, expiry(60)).await;
    let (code, props) = old.disconnect_rx().await;
    assert_eq!(code, 0x8E, "Session taken over");
    assert_eq!(props.session_expiry_interval, None);
}

// ---------------------------------------------------------------------------------------
// 3.3 PUBLISH

#[tokio::test]
async fn mqtt5_3_1_2_27_without_topic_alias_maximum_no_aliases_are_sent() {
    let (_gw, mut c, mut publ) = sub_and_pub("noalias", "na/t", QoS::AtMostOnce, false).await;
    for _ in 0..3 {
        publ.publish("na/t", QoS::AtLeastOnce, false, b"v").await;
    }
    for _ in 0..3 {
        let p = c.publish_rx().await;
        assert_eq!(p.topic, "na/t");
        assert_eq!(p.properties.topic_alias, None);
    }
}

#[tokio::test]
async fn mqtt5_3_3_1_9_retain_handling_0_sends_retained_on_every_subscribe() {
    let gw = gateway().await;
    let mut publ = V5::connect(gw.mqtt_addr, "rh0-pub").await;
    publ.publish("rh0/t", QoS::AtLeastOnce, true, b"r").await;
    let mut c = V5::connect(gw.mqtt_addr, "rh0").await;
    for round in 0..2 {
        c.subscribe(&[("rh0/t", opts(QoS::AtMostOnce))]).await;
        let p = c.publish_rx().await;
        assert!(
            p.retain && p.payload == "r",
            "round {round}: MQTT-3.8.4-4 retained re-sent: {p:?}"
        );
    }
}

#[tokio::test]
async fn mqtt5_3_3_2_5_message_expired_while_queued_is_not_delivered() {
    let gw = gateway().await;
    let (mut c, _) = V5::session(gw.mqtt_addr, "exp5", true, expiry(60)).await;
    c.subscribe(&[("exp5/t", opts(QoS::AtLeastOnce))]).await;
    c.disconnect(0).await;
    let mut publ = V5::connect(gw.mqtt_addr, "exp5-pub").await;
    publ.send(&pub5("exp5/t", QoS::AtLeastOnce, 3, b"stale", expiring(1)))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    publ.publish("exp5/t", QoS::AtLeastOnce, false, b"fresh")
        .await;
    let (mut c, present) = V5::session(gw.mqtt_addr, "exp5", false, expiry(60)).await;
    assert!(present);
    let why = "the expired message was deleted, not delivered";
    c.expect_payload("fresh", why).await;
}

#[tokio::test]
async fn mqtt5_3_3_2_7_topic_alias_mappings_do_not_carry_over_to_a_new_connection() {
    let (gw, mut watch) = watching("ta7-watch", "ta7/t", QoS::AtMostOnce).await;
    let alias = Properties {
        topic_alias: Some(1),
        ..Properties::default()
    };
    let (mut c, _) = V5::session(gw.mqtt_addr, "ta7", false, expiry(60)).await;
    c.send(&publish5(
        publish("ta7/t", QoS::AtLeastOnce, 1, false, b"first"),
        alias.clone(),
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(watch.publish_rx().await.payload, "first");
    c.disconnect(0).await;

    let (mut c, present) = V5::session(gw.mqtt_addr, "ta7", false, expiry(60)).await;
    assert!(present, "same session, new connection");
    c.send(&publish5(
        publish("", QoS::AtLeastOnce, 2, false, b"second"),
        alias,
    ))
    .await;
    let (code, _) = c.disconnect_rx().await;
    assert!(
        code == reason::PROTOCOL_ERROR || code == reason::TOPIC_ALIAS_INVALID,
        "an unknown alias is a Protocol Error, got 0x{code:02x}"
    );
    let why = "the aliased PUBLISH was not routed";
    watch.quiet(why).await;
}

#[tokio::test]
async fn mqtt5_3_3_4_10_non_publish_packets_not_delayed_by_a_full_receive_maximum() {
    let gw = gateway().await;
    let props = Properties {
        receive_maximum: Some(1),
        ..Properties::default()
    };
    let mut c = V5::connect_props(gw.mqtt_addr, "rm10", props).await;
    c.subscribe(&[("rm10/t", opts(QoS::AtLeastOnce))]).await;
    let mut publ = V5::connect(gw.mqtt_addr, "rm10-pub").await;
    publ.publish("rm10/t", QoS::AtLeastOnce, false, b"1").await;
    publ.publish("rm10/t", QoS::AtLeastOnce, false, b"2").await;
    let first = c.publish_rx().await;
    assert_eq!(first.payload, "1");
    // Send quota 0 (MQTT-4.9.0-2): the server holds "2" but answers everything else
    // (MQTT-4.9.0-3, MQTT-3.12.4-1).
    c.ping().await;
    c.send(&Packet::Subscribe(Subscribe {
        pkid: 5,
        filters: vec![("rm10/other".into(), opts(QoS::AtMostOnce))],
        properties: Default::default(),
    }))
    .await;
    match c.recv().await {
        Some(Packet::SubAck(a)) => assert_eq!(a.pkid, 5),
        other => panic!("SUBACK while the quota is 0 (and not PUBLISH 2), got {other:?}"),
    }
    c.puback(&first, 0).await;
    let second = c.publish_rx().await;
    assert_eq!(second.payload, "2");
}

// ---------------------------------------------------------------------------------------
// 3.8 SUBSCRIBE, 3.10 UNSUBSCRIBE

#[tokio::test]
async fn mqtt5_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "nl34").await;
    c.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![("$share/g/nl34".into(), no_local(QoS::AtMostOnce))],
        properties: Default::default(),
    }))
    .await;
    let (code, _) = c.disconnect_rx().await;
    assert_eq!(code, reason::PROTOCOL_ERROR);
}

#[tokio::test]
async fn mqtt5_3_8_3_5_reserved_subscription_option_bits_are_malformed() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "rb35").await;
    // SUBSCRIBE id 1, no properties, filter "t", options 0x40 (a reserved bit).
    c.send_raw(&[0x82, 7, 0, 1, 0, 0, 1, b't', 0x40]).await;
    let (code, _) = c.disconnect_rx().await;
    assert_eq!(code, 0x81, "Malformed Packet");
}

#[tokio::test]
async fn mqtt5_3_8_4_3_identical_filter_replaces_the_subscription() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "rep5").await;
    c.subscribe(&[("rep5/t", opts(QoS::AtMostOnce))]).await;
    c.subscribe(&[("rep5/t", opts(QoS::AtLeastOnce))]).await;
    let mut publ = V5::connect(gw.mqtt_addr, "rep5-pub").await;
    for payload in [&b"live"[..], b"end"] {
        publ.publish("rep5/t", QoS::AtLeastOnce, false, payload)
            .await;
    }
    let a = c.publish_rx().await;
    c.puback(&a, 0).await;
    let b = c.publish_rx().await;
    c.puback(&b, 0).await;
    assert_eq!(
        [(a.payload, a.qos), (b.payload, b.qos)],
        [
            ("live".into(), QoS::AtLeastOnce),
            ("end".into(), QoS::AtLeastOnce)
        ],
        "one subscription, at the new QoS"
    );
}

#[tokio::test]
async fn mqtt5_3_8_4_5_multiple_filters_answered_in_order_by_one_suback() {
    let gw = gateway().await;
    let filters = [
        ("mf5/a", opts(QoS::ExactlyOnce)),
        ("mf5/#/b", opts(QoS::AtLeastOnce)),
        ("$share/g/mf5/s", opts(QoS::AtLeastOnce)),
        ("mf5/c", opts(QoS::AtMostOnce)),
    ];
    let mut c = V5::connect(gw.mqtt_addr, "multi5").await;
    let codes = c.subscribe(&filters).await;
    assert_eq!(
        codes,
        [0x02, reason::TOPIC_FILTER_INVALID, 0x01, 0x00],
        "MQTT-3.8.4-6/7, MQTT-3.9.3-1/2"
    );
}

#[tokio::test]
async fn mqtt5_3_10_4_6_multiple_filters_answered_in_order_by_one_unsuback() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "um5").await;
    c.subscribe(&[
        ("um5/a", opts(QoS::AtMostOnce)),
        ("um5/c", opts(QoS::AtMostOnce)),
    ])
    .await;
    let codes = c.unsubscribe(&["um5/a", "um5/b", "um5/c"]).await;
    assert_eq!(
        codes,
        [0x00, reason::NO_SUBSCRIPTION_EXISTED, 0x00],
        "MQTT-3.11.3-1/2"
    );
    c.publish("um5/a", QoS::AtMostOnce, false, b"gone").await;
    c.subscribe(&[("um5/end", opts(QoS::AtMostOnce))]).await;
    c.publish("um5/end", QoS::AtMostOnce, false, b"end").await;
    assert_eq!(c.publish_rx().await.payload, "end");
}

// ---------------------------------------------------------------------------------------
// 4.4 redelivery, 4.8 shared subscriptions

#[tokio::test]
async fn mqtt5_4_4_0_1_unacknowledged_publish_resent_on_session_resume() {
    let (gw, mut c, mut publ) = sub_and_pub("re5", "re5/t", QoS::AtLeastOnce, true).await;
    publ.publish("re5/t", QoS::AtLeastOnce, false, b"a").await;
    let first = c.publish_rx().await;
    drop(c);
    let (mut c, present) = V5::session(gw.mqtt_addr, "re5", false, expiry(60)).await;
    assert!(present);
    let again = c.publish_rx().await;
    assert!(again.dup, "resent with DUP=1: {again:?}");
    assert_eq!(again.pkid, first.pkid, "original packet id");
    assert_eq!(again.payload, "a");
    c.puback(&again, 0).await;
    c.ping().await;
}

#[tokio::test]
async fn mqtt5_4_4_0_2_publish_refused_with_puback_0x80_is_not_resent() {
    let (gw, mut c, mut publ) = sub_and_pub("nr5", "nr5/t", QoS::AtLeastOnce, true).await;
    publ.publish("nr5/t", QoS::AtLeastOnce, false, b"refused")
        .await;
    let p = c.publish_rx().await;
    c.send(&Packet::PubAck(response(p.pkid, 0x80))).await;
    c.ping().await; // the PUBACK was processed
    drop(c);
    let (mut c, present) = V5::session(gw.mqtt_addr, "nr5", false, expiry(60)).await;
    assert!(present);
    publ.publish("nr5/t", QoS::AtLeastOnce, false, b"end").await;
    let why = "the refused message is acknowledged, not resent";
    c.expect_payload("end", why).await;
}

#[tokio::test]
async fn mqtt5_4_8_2_1_2_malformed_shared_subscription_filters_are_refused() {
    let gw = gateway().await;
    for filter in [
        "$share/g",
        "$share//t",
        "$share/g+/t",
        "$share/g#/t",
        "$share/g/",
    ] {
        let mut c = V5::connect(gw.mqtt_addr, "sh12").await;
        c.send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![(filter.into(), opts(QoS::AtMostOnce))],
            properties: Default::default(),
        }))
        .await;
        match c.recv().await {
            Some(Packet::SubAck(a)) => assert!(
                a.reason_codes.len() == 1 && a.reason_codes[0] >= 0x80,
                "{filter}: refused, got {a:?}"
            ),
            Some(Packet::Disconnect(d)) => assert!(d.reason_code >= 0x80, "{filter}: {d:?}"),
            other => panic!("{filter}: SUBACK failure or DISCONNECT, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn mqtt5_4_8_2_3_shared_subscription_delivers_at_the_granted_qos() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "sh3").await;
    assert_eq!(
        c.subscribe(&[("$share/g/sh3/t", opts(QoS::AtMostOnce))])
            .await,
        [0x00]
    );
    let mut publ = V5::connect(gw.mqtt_addr, "sh3-pub").await;
    publ.publish("sh3/t", QoS::ExactlyOnce, false, b"x").await;
    let p = c.publish_rx().await;
    assert_eq!((p.topic.as_str(), p.qos), ("sh3/t", QoS::AtMostOnce));
}

#[tokio::test]
async fn mqtt5_4_8_2_6_shared_message_refused_by_its_member_is_not_sent_to_another() {
    let gw = gateway().await;
    let (mut a, mut b) = V5::members(gw.mqtt_addr, "sh6", "$share/g/sh6/t", QoS::AtLeastOnce).await;
    let mut publ = V5::connect(gw.mqtt_addr, "sh6-pub").await;
    publ.publish("sh6/t", QoS::AtLeastOnce, false, b"m").await;
    // Whichever member got it refuses it; the other must never see it.
    let (first_is_a, p) = tokio::select! {
        p = a.publish_rx() => (true, p),
        p = b.publish_rx() => (false, p),
    };
    let (member, other) = if first_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    member.send(&Packet::PubAck(response(p.pkid, 0x80))).await;
    let why = "MQTT-4.8.2-6: not re-sent to another member";
    other.quiet(why).await;
}

#[tokio::test]
async fn mqtt5_3_1_3_10_will_user_properties_published_in_order() {
    let (gw, mut watch) = watching("wu10-watch", "wu10/t", QoS::AtMostOnce).await;
    let props = Properties {
        user_properties: vec![
            ("z".into(), "1".into()),
            ("a".into(), "2".into()),
            ("z".into(), "3".into()),
        ],
        ..Properties::default()
    };
    let c = with_will(&gw, "wu10", "wu10/t", Properties::default(), props.clone()).await;
    drop(c);
    let p = watch.publish_rx().await;
    assert_eq!(p.properties.user_properties, props.user_properties);
}

#[tokio::test]
async fn mqtt5_3_3_1_12_retain_as_published_0_forwards_with_retain_0() {
    let (_gw, mut c, mut publ) = sub_and_pub("rap0", "rap0/t", QoS::AtMostOnce, false).await;
    publ.publish("rap0/t", QoS::AtLeastOnce, true, b"r").await;
    let p = c.publish_rx().await;
    assert_eq!(p.payload, "r");
    assert!(
        !p.retain,
        "Retain As Published 0: RETAIN=0 on live forwarding"
    );
}

#[tokio::test]
async fn mqtt5_4_3_3_7_no_message_expiry_once_a_qos2_publish_was_sent() {
    let (gw, mut c, mut publ) = sub_and_pub("x337", "x337/t", QoS::ExactlyOnce, true).await;
    publ.send(&pub5("x337/t", QoS::ExactlyOnce, 4, b"m", expiring(1)))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(_))));
    let first = c.publish_rx().await;
    drop(c); // sent, never acknowledged
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // MQTT-4.3.3-13: the server as receiver completes its own QoS 2 exchange past expiry.
    publ.send(&Packet::PubRel(response(4, 0))).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubComp(r)) if r.pkid == 4));
    let (mut c, present) = V5::session(gw.mqtt_addr, "x337", false, expiry(60)).await;
    assert!(present);
    let again = c.publish_rx().await;
    assert_eq!(
        (again.pkid, again.dup, again.payload),
        (first.pkid, true, "m".into()),
        "the sent QoS 2 message is resent though its expiry passed"
    );
}

#[tokio::test]
async fn mqtt5_4_8_2_4_shared_qos2_delivery_completed_when_the_member_reconnects() {
    let gw = gateway().await;
    let (mut m, _) = V5::session(gw.mqtt_addr, "sh4", true, expiry(60)).await;
    m.subscribe(&[("$share/g/sh4/t", opts(QoS::ExactlyOnce))])
        .await;
    let mut publ = V5::connect(gw.mqtt_addr, "sh4-pub").await;
    publ.publish("sh4/t", QoS::ExactlyOnce, false, b"q2").await;
    let first = m.publish_rx().await;
    drop(m); // broken before PUBREC
    let (mut m, present) = V5::session(gw.mqtt_addr, "sh4", false, expiry(60)).await;
    assert!(present);
    let again = m.publish_rx().await;
    assert_eq!(
        (again.pkid, again.dup, again.payload),
        (first.pkid, true, "q2".into())
    );
}

#[tokio::test]
async fn mqtt5_4_8_2_5_message_of_an_ended_member_session_not_sent_to_another_member() {
    let gw = gateway().await;
    let mut a = V5::connect(gw.mqtt_addr, "sh5-a").await;
    a.subscribe(&[("$share/g/sh5/t", opts(QoS::AtLeastOnce))])
        .await;
    let mut publ = V5::connect(gw.mqtt_addr, "sh5-pub").await;
    publ.publish("sh5/t", QoS::AtLeastOnce, false, b"m").await;
    assert_eq!(a.publish_rx().await.payload, "m");
    let mut b = V5::connect(gw.mqtt_addr, "sh5-b").await;
    b.subscribe(&[("$share/g/sh5/t", opts(QoS::AtLeastOnce))])
        .await;
    drop(a); // Session Expiry 0: the session ends with the unacknowledged message
    b.assert_quiet(QUIET, "MQTT-4.8.2-5: not handed to another member")
        .await;
}
