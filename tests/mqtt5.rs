//! Black-box tests of the MQTT 5.0 broker over real sockets on 127.0.0.1. Test names carry
//! the clause of MQTT 5.0 they check. Clients: rumqttc's v5 client, `mosquitto_pub/sub -V 5`,
//! and a raw v5 socket (bytes written and read with ponte-mqtt's v5 codec) for what a
//! well-behaved client cannot express (violations, exact CONNACK properties, aliases).

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use ponte_mqtt::{encode, Packet, Properties, QoS, ReasonPacket, SubscriptionOptions};
use rumqttc::v5::mqttbytes::v5::Packet as R5Packet;
use rumqttc::v5::mqttbytes::QoS as Q5;

/// How long a "nothing more arrives" check listens in these tests.
const SHORT: Duration = Duration::from_millis(300);

/// The CONNACK of a v5 CONNECT of `id` with `props` on `gw`.
async fn connack(gw: &ponte::Gateway, id: &str, props: Properties) -> (V5, ConnAck5) {
    V5::connack(gw.mqtt_addr, connect5(id, true, props)).await
}

/// A subscriber `id` (CONNECT properties `props`) of `filter` at `qos`, and a publisher
/// `{id}-pub`.
async fn sub_and_pub(
    gw: &ponte::Gateway,
    id: &str,
    props: Properties,
    filter: &str,
    qos: QoS,
) -> (V5, V5) {
    let mut sub = V5::connect_props(gw.mqtt_addr, id, props).await;
    sub.subscribe(&[(filter, opts(qos))]).await;
    let publ = V5::connect(gw.mqtt_addr, &format!("{id}-pub")).await;
    (sub, publ)
}

/// A rumqttc v5 client with options `o`, connected.
async fn rumqttc5(o: rumqttc::v5::MqttOptions) -> R5 {
    R5::connect(o).await.expect("rumqttc v5 connects")
}

/// A client `id` with CONNECT properties `props` whose SUBSCRIBE of the invalid filter
/// `bad/#/x` was refused 0x8F; the SUBACK.
async fn refused_bad_filter(
    gw: &ponte::Gateway,
    id: &str,
    props: Properties,
) -> (V5, ponte_mqtt::SubResponse) {
    let mut c = V5::connect_props(gw.mqtt_addr, id, props).await;
    let a = c.suback(&[("bad/#/x", opts(QoS::AtLeastOnce))], None).await;
    assert_eq!(a.reason_codes, [0x8F], "the reason code is sent");
    (c, a)
}

/// An AUTH packet with reason 0x19 (Re-authenticate).
fn reauth() -> Packet {
    Packet::Auth(ReasonPacket {
        reason_code: 0x19,
        properties: Default::default(),
    })
}

/// A QoS 1/0 message whose payload is its topic (so a receiver can check what it resolved).
fn named(topic: &str, qos: QoS, pkid: u16) -> Packet {
    msg5(topic, qos, pkid, topic.as_bytes())
}

// ---------------------------------------------------------------------------------------
// CONNECT / CONNACK

#[tokio::test]
async fn mqtt5_3_2_2_3_2_connack_announces_receive_maximum() {
    let gw = gateway_with(|c| {
        c.mqtt.receive_maximum = 7;
        c.mqtt.topic_alias_maximum = 5;
        c.mqtt.max_packet_size = 4096;
    })
    .await;
    let (_c, ack) = connack(&gw, "limits", Properties::default()).await;
    let p = ack.properties;
    assert_eq!(ack.reason, 0);
    assert_eq!(p.receive_maximum, Some(7));
    assert_eq!(p.topic_alias_maximum, Some(5), "3.2.2.3.8");
    assert_eq!(p.maximum_packet_size, Some(4096), "3.2.2.3.6");
    assert_eq!(p.retain_available, Some(1), "3.2.2.3.5");
    assert_eq!(p.wildcard_subscription_available, Some(1), "3.2.2.3.11");
    assert_eq!(p.subscription_identifiers_available, Some(1), "3.2.2.3.12");
    assert_eq!(p.shared_subscription_available, Some(1), "3.2.2.3.13");
    let id = p.assigned_client_identifier;
    assert_eq!(id, None, "the client named itself");
}

#[tokio::test]
async fn mqtt5_3_2_2_16_empty_client_id_gets_assigned_client_identifier() {
    let gw = gateway().await;
    let (_c, ack) = connack(&gw, "", Properties::default()).await;
    assert_eq!(ack.reason, 0);
    let id = ack.properties.assigned_client_identifier;
    assert!(!id.expect("Assigned Client Identifier").is_empty());
}

#[tokio::test]
async fn mqtt5_3_2_2_21_server_keep_alive_caps_the_clients() {
    let gw = gateway_with(|c| c.mqtt.max_keepalive = 1).await;
    let (mut c, ack) = connack(&gw, "ska", Properties::default()).await;
    let ska = ack.properties.server_keep_alive;
    assert_eq!(ska, Some(1), "asked for 30 s, allowed 1 s");
    // The imposed 1 s is the one enforced: silence for 1.5 s ends in DISCONNECT 0x8D.
    assert_eq!(c.disconnect_reason().await, 0x8D, "MQTT-3.1.2-22 with 0x8D");
}

#[tokio::test]
async fn mqtt5_4_12_0_1_unsupported_authentication_method_gets_connack_0x8c() {
    let gw = gateway().await;
    let scram = props(|p| p.authentication_method = Some("SCRAM-SHA-1".into()));
    let (mut c, ack) = connack(&gw, "auth", scram).await;
    assert_eq!(ack.reason, 0x8C);
    assert_eq!(c.recv().await, None, "closed after the refusal");
}

#[tokio::test]
async fn mqtt5_4_12_auth_without_method_in_connect_is_protocol_error_0x82() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "auth2").await;
    c.send(&reauth()).await;
    assert_eq!(c.disconnect_reason().await, 0x82);
}

#[tokio::test]
async fn mqtt5_3_1_4_3_takeover_disconnects_the_old_connection_with_0x8e() {
    let gw = gateway().await;
    let mut old = V5::connect(gw.mqtt_addr, "twin").await;
    let (_new, ack) = connack(&gw, "twin", Properties::default()).await;
    assert_eq!(ack.reason, 0);
    assert_eq!(old.disconnect_reason().await, 0x8E);
}

/// MQTT-3.1.4-2 with three CONNECTs of one client id in a row, the second and third written
/// back to back while the first still owns the session: the newest gets its CONNACK at
/// once, and the second, overtaken, is closed (without a CONNACK, or kicked with 0x8E right
/// after one) instead of holding the third back while it stays connected. (With the
/// session's owner a FIFO lock, the third waited until the second disconnected: the second
/// had no bell installed yet for the third's takeover to ring.) Twenty rounds, as the
/// overlap is a race the test can only make likely.
#[tokio::test]
async fn mqtt5_3_1_4_2_three_connects_in_a_row_the_newest_wins_at_once() {
    let gw = gateway().await;
    for round in 0..20 {
        let id = format!("thrice-{round}");
        let connect = connect5(&id, false, expiry(600));
        let (mut first, _) = V5::session(gw.mqtt_addr, &id, false, expiry(600)).await;
        let mut second = V5::open(gw.mqtt_addr).await;
        let mut third = V5::open(gw.mqtt_addr).await;
        second.send(&connect).await;
        third.send(&connect).await;
        match within(
            Duration::from_secs(5),
            "the newest CONNECT's CONNACK",
            third.recv(),
        )
        .await
        {
            Some(Packet::ConnAck { reason_code, .. }) => {
                assert_eq!(reason_code, 0, "round {round}: the newest is accepted")
            }
            other => panic!("round {round}: expected CONNACK, got {other:?}"),
        }
        assert_eq!(first.disconnect_reason().await, 0x8E, "round {round}");
        // The second: closed, having got nothing, or a CONNACK then DISCONNECT 0x8E.
        let got = second
            .expect_closed("the overtaken second connection")
            .await;
        match got.as_slice() {
            [] => {}
            [Packet::ConnAck { reason_code: 0, .. }, Packet::Disconnect(d)] => {
                assert_eq!(d.reason_code, 0x8E, "round {round}: taken over")
            }
            other => panic!("round {round}: the second connection got {other:?}"),
        }
        // The newest owns the session: it answers, and stays.
        third.ping().await;
    }
}

#[tokio::test]
async fn mqtt5_3_14_server_shutdown_sends_disconnect_0x8b() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "bye").await;
    let stopping = tokio::spawn(async move { gw.shutdown().await });
    assert_eq!(c.disconnect_reason().await, 0x8B);
    let _ = within(WAIT, "shutdown", stopping).await;
}

#[tokio::test]
async fn mqtt5_4_13_malformed_packet_gets_disconnect_0x81() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "malformed").await;
    // PUBLISH QoS 0 to "t" whose property list holds Topic Alias 0 (0x23 0x0000): malformed.
    c.send_raw(&[0x30, 7, 0, 1, b't', 3, 0x23, 0, 0]).await;
    assert_eq!(c.disconnect_reason().await, 0x81);
}

// ---------------------------------------------------------------------------------------
// Flow control, packet size, aliases

#[tokio::test]
async fn mqtt_3_3_4_8_flow_control_receive_maximum() {
    let gw = gateway_with(|c| c.mqtt.receive_maximum = 2).await;
    let mut c = V5::connect(gw.mqtt_addr, "flood").await;
    // QoS 2 exchanges stay open until PUBREL: the third one exceeds Receive Maximum 2.
    for id in 1..=3 {
        c.send(&msg5("rm/t", QoS::ExactlyOnce, id, b"x")).await;
    }
    assert_eq!(c.disconnect_reason().await, 0x93);
}

#[tokio::test]
async fn mqtt5_3_3_4_9_server_respects_the_clients_receive_maximum() {
    let gw = gateway().await;
    let two = props(|p| p.receive_maximum = Some(2));
    let (mut sub, mut publ) = sub_and_pub(&gw, "slow", two, "win/t", QoS::AtLeastOnce).await;
    for id in 1..=5 {
        publ.send(&msg5("win/t", QoS::AtLeastOnce, id, b"m")).await;
    }
    let first = sub.publish_rx().await.pkid;
    let second = sub.publish_rx().await.pkid;
    sub.assert_quiet(SHORT, "a third unacknowledged QoS 1 message")
        .await;
    // Acknowledging one opens exactly one slot.
    sub.send(&Packet::PubAck(response(first, 0))).await;
    let third = sub.publish_rx().await.pkid;
    assert_ne!(third, second);
    sub.assert_quiet(SHORT, "a fourth before another ack").await;
}

#[tokio::test]
async fn mqtt5_3_1_2_25_never_send_a_packet_above_the_clients_maximum_packet_size() {
    let gw = gateway().await;
    let small = props(|p| p.maximum_packet_size = Some(64));
    let (mut sub, mut publ) = sub_and_pub(&gw, "small", small, "mps/#", QoS::AtMostOnce).await;
    publ.send(&msg5("mps/big", QoS::AtMostOnce, 0, &[b'x'; 200]))
        .await;
    publ.send(&msg5("mps/small", QoS::AtMostOnce, 0, b"ok"))
        .await;
    let p = sub.publish_rx().await;
    assert_eq!(
        p.payload, "ok",
        "the oversized message was dropped, not sent"
    );
    assert_eq!(p.topic, "mps/small");
}

#[tokio::test]
async fn mqtt5_3_3_2_3_4_client_topic_alias_resolved_and_invalid_alias_gets_0x94() {
    let gw = gateway_with(|c| c.mqtt.topic_alias_maximum = 2).await;
    let none = Properties::default();
    let (mut sub, mut publ) = sub_and_pub(&gw, "alias-sub", none, "alias/t", QoS::AtMostOnce).await;
    let alias = |a| props(|p| p.topic_alias = Some(a));
    publ.send(&pub5("alias/t", QoS::AtMostOnce, 0, b"1", alias(1)))
        .await;
    publ.send(&pub5("", QoS::AtMostOnce, 0, b"2", alias(1)))
        .await;
    assert_eq!(sub.publish_rx().await.payload, "1");
    let second = sub.publish_rx().await;
    assert_eq!(second.topic, "alias/t", "alias 1 stood for alias/t");
    assert_eq!(second.payload, "2");
    // Alias 3 is above the announced Topic Alias Maximum 2.
    publ.send(&pub5("alias/t", QoS::AtMostOnce, 0, b"3", alias(3)))
        .await;
    assert_eq!(publ.disconnect_reason().await, 0x94);
}

#[tokio::test]
async fn mqtt5_4_13_packet_above_the_servers_maximum_gets_disconnect_0x95() {
    let gw = gateway_with(|c| c.mqtt.max_packet_size = 256).await;
    let (mut c, ack) = connack(&gw, "too-big", Properties::default()).await;
    assert_eq!(ack.properties.maximum_packet_size, Some(256));
    c.send(&msg5("big/t", QoS::AtMostOnce, 0, &[b'x'; 1000]))
        .await;
    assert_eq!(c.disconnect_reason().await, 0x95);
}

#[tokio::test]
async fn mqtt5_3_1_2_25_too_large_qos1_publish_discarded_as_if_delivered_and_counted() {
    let gw = gateway().await;
    // Receive Maximum 1: were the discarded message still in flight, nothing would follow.
    let small = props(|p| {
        p.maximum_packet_size = Some(64);
        p.receive_maximum = Some(1);
    });
    let (mut sub, mut publ) = sub_and_pub(&gw, "small-q1", small, "mps1/#", QoS::AtLeastOnce).await;
    let big = msg5("mps1/big", QoS::AtLeastOnce, 1, &[b'x'; 200]);
    assert_eq!(publ.publish_acked(&big).await.reason_code, 0, "it matched");
    let small = msg5("mps1/ok", QoS::AtLeastOnce, 2, b"ok");
    publ.publish_acked(&small).await;
    let p = sub.publish_rx().await;
    assert_eq!(p.topic, "mps1/ok", "the oversized one was not sent");
    let counted = gw
        .broker
        .metrics
        .too_large
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted, 1, "the discarded message is counted");
}

#[tokio::test]
async fn mqtt5_3_3_2_3_4_server_alias_reuse_never_exceeds_the_clients_maximum() {
    let gw = gateway().await;
    let three = props(|p| p.topic_alias_maximum = Some(3));
    let (mut sub, mut publ) = sub_and_pub(&gw, "lru-sub", three, "lru/#", QoS::AtMostOnce).await;
    // Five topics, some revisited: more topics than aliases, so aliases are reassigned
    // (t3 takes t0's, t4 takes t2's, t0 takes t3's) and repeats go on as alias-only sends.
    let topics: Vec<String> = [0, 1, 2, 3, 3, 1, 4, 4, 1, 0, 0]
        .iter()
        .map(|i| format!("lru/t{i}"))
        .collect();
    for t in &topics {
        publ.send(&named(t, QoS::AtMostOnce, 0)).await;
    }
    // Resolve aliases as a client must (3.3.2.3.4).
    let mut table = std::collections::HashMap::new();
    let mut topics_per_alias: std::collections::HashMap<u16, std::collections::HashSet<String>> =
        Default::default();
    let mut sent_alias_only = 0;
    for t in &topics {
        let p = sub.publish_rx().await;
        let alias = p.properties.topic_alias.expect("aliased");
        assert!(
            (1..=3).contains(&alias),
            "MQTT-3.1.2-26: alias {alias} outside 1..=3"
        );
        if p.topic.is_empty() {
            sent_alias_only += 1;
        } else {
            table.insert(alias, p.topic.clone());
        }
        let resolved = table.get(&alias).expect("alias used before it was set");
        assert_eq!(resolved, t, "the client resolves the topic it was sent");
        assert_eq!(p.payload, t.as_bytes(), "payload matches the topic");
        topics_per_alias
            .entry(alias)
            .or_default()
            .insert(resolved.clone());
    }
    assert!(
        topics_per_alias.values().any(|s| s.len() > 1),
        "an alias was reused for another topic: {topics_per_alias:?}"
    );
    assert_eq!(
        sent_alias_only, 5,
        "repeated topics went as alias only after the table filled"
    );
}

#[tokio::test]
async fn mqtt5_3_3_2_3_4_server_assigns_topic_aliases_for_repeated_topics() {
    let gw = gateway().await;
    let four = props(|p| p.topic_alias_maximum = Some(4));
    let (mut sub, mut publ) = sub_and_pub(&gw, "srv-alias", four, "sa/t", QoS::AtMostOnce).await;
    for _ in 0..2 {
        publ.send(&msg5("sa/t", QoS::AtMostOnce, 0, b"v")).await;
    }
    let first = sub.publish_rx().await;
    let alias = first.properties.topic_alias;
    assert!(alias.is_some(), "first use sets an alias");
    assert_eq!(first.topic, "sa/t");
    let second = sub.publish_rx().await;
    let topic = second.topic;
    assert_eq!(topic, "", "repeated topic sent as its alias only");
    assert_eq!(second.properties.topic_alias, alias);
}

#[tokio::test]
async fn mqtt5_rumqttc_v5_resolves_topics_through_alias_reuse() {
    let gw = gateway().await;
    let mut o = options5(gw.mqtt_addr, "rumq5-alias");
    o.set_topic_alias_max(Some(2));
    let mut c = rumqttc5(o).await;
    c.client.subscribe("ra/#", Q5::AtLeastOnce).await.unwrap();
    c.expect("SUBACK", |p| matches!(p, R5Packet::SubAck(_)).then_some(()))
        .await;
    let topics: Vec<String> = [0, 1, 0, 2, 3, 1, 0, 2, 3, 3, 1]
        .iter()
        .map(|i| format!("ra/t{i}"))
        .collect();
    let mut publ = V5::connect(gw.mqtt_addr, "ra-pub").await;
    for (i, t) in topics.iter().enumerate() {
        publ.publish_acked(&named(t, QoS::AtLeastOnce, i as u16 + 1))
            .await;
    }
    let mut got = Vec::new();
    let mut aliased = 0;
    within(WAIT, "rumqttc v5 receives every topic", async {
        while got.len() < topics.len() {
            let p = c.expect("PUBLISH", |p| match p {
                R5Packet::Publish(p) => Some(p),
                _ => None,
            });
            let p = p.await;
            if p.properties
                .as_ref()
                .is_some_and(|p| p.topic_alias.is_some())
            {
                aliased += 1;
            }
            assert_eq!(p.topic, p.payload, "resolved topic is the one published");
            got.push(String::from_utf8(p.topic.to_vec()).unwrap());
        }
    })
    .await;
    assert_eq!(got, topics);
    assert_eq!(aliased, topics.len(), "every message used an alias");
}

// ---------------------------------------------------------------------------------------
// Reason Strings, Request Problem Information, Response Information, 0x10

#[tokio::test]
async fn mqtt5_3_9_3_suback_reason_string_names_the_refused_filter() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "rs-sub").await;
    let q1 = opts(QoS::AtLeastOnce);
    let a = c.suback(&[("ok/#", q1), ("bad/#/x", q1)], None).await;
    assert_eq!(a.reason_codes, [0x01, 0x8F]);
    let text = a.properties.reason_string.clone().expect("a Reason String");
    assert!(text.contains("bad/#/x"), "names the filter: {text:?}");
    assert!(!text.contains("ok/#"), "only the refused one: {text:?}");
    // UNSUBACK: an invalid filter is 0x8F Topic Filter invalid, explained.
    let u = c.unsuback(&["ok/#", "x/#/y"]).await;
    assert_eq!(u.reason_codes, [0x00, 0x8F]);
    let text = u.properties.reason_string.clone().expect("a Reason String");
    assert!(text.contains("x/#/y"), "{text:?}");
}

#[tokio::test]
async fn mqtt5_3_9_3_suback_quota_exceeded_explained() {
    let gw = gateway_with(|c| c.mqtt.max_subscriptions = 1).await;
    let mut c = V5::connect(gw.mqtt_addr, "rs-quota").await;
    let q0 = opts(QoS::AtMostOnce);
    let a = c.suback(&[("q/1", q0), ("q/2", q0)], None).await;
    assert_eq!(a.reason_codes, [0x00, 0x97]);
    let text = a
        .properties
        .into_inner()
        .reason_string
        .expect("a Reason String");
    let says = text.contains("q/2") && text.contains("max_subscriptions");
    assert!(says, "{text:?}");
}

#[tokio::test]
async fn mqtt5_3_1_2_29_request_problem_information_0_no_reason_string_on_acks() {
    let gw = gateway().await;
    let rpi0 = props(|p| p.request_problem_information = Some(0));
    // The reason code is still sent.
    let (mut c, a) = refused_bad_filter(&gw, "rpi0", rpi0).await;
    assert!(a.properties.is_empty(), "SUBACK: {:?}", a.properties);
    // PUBCOMP 0x92 for an unknown exchange: no Reason String either.
    c.send(&Packet::PubRel(response(42, 0))).await;
    match c.recv().await {
        Some(Packet::PubComp(r)) => {
            assert_eq!(r.reason_code, 0x92);
            assert!(r.properties.is_empty(), "PUBCOMP: {r:?}");
        }
        other => panic!("expected PUBCOMP 0x92, got {other:?}"),
    }
    // DISCONNECT may still say why (MQTT-3.1.2-29 allows it).
    c.send(&reauth()).await;
    assert_eq!(c.disconnect_reason().await, 0x82);
}

#[tokio::test]
async fn mqtt5_3_9_2_1_suback_reason_string_dropped_beyond_maximum_packet_size() {
    let gw = gateway().await;
    let tiny = props(|p| p.maximum_packet_size = Some(16));
    let (_c, a) = refused_bad_filter(&gw, "rs-small", tiny).await;
    let why = a.properties.reason_string.clone();
    assert_eq!(why, None, "it would not fit in 16 bytes");
    let mut size = BytesMut::new();
    encode(
        &Packet::SubAck(a),
        ponte_mqtt::ProtocolVersion::V5,
        &mut size,
    );
    assert!(size.len() <= 16, "SUBACK of {} bytes", size.len());
}

#[tokio::test]
async fn mqtt5_3_2_2_3_15_response_information_is_a_usable_response_topic_prefix() {
    let gw = gateway().await;
    let (_c, ack) = connack(&gw, "no-ask", Properties::default()).await;
    let info = ack.properties.response_information;
    assert_eq!(info, None, "MQTT-3.1.2-28: not asked, not sent");
    let ask = props(|p| p.request_response_information = Some(1));
    let (_c, ack) = connack(&gw, "a/b+#", ask.clone()).await;
    let info = ack.properties.response_information;
    let want = Some("ponte/response/a%2Fb%2B%23/");
    assert_eq!(info.as_deref(), want, "one topic level, no wildcards");
    let (mut c, ack) = connack(&gw, "requester", ask).await;
    let base = ack
        .properties
        .response_information
        .expect("Response Information");
    assert_eq!(base, "ponte/response/requester/");
    // The basis works as a response topic: subscribe below it, get a response there.
    let filter = format!("{base}#");
    let codes = c.subscribe(&[(&filter, opts(QoS::AtMostOnce))]).await;
    assert_eq!(codes, [0]);
    let mut responder = V5::connect(gw.mqtt_addr, "responder").await;
    let topic = format!("{base}ping");
    responder
        .send(&msg5(&topic, QoS::AtMostOnce, 0, b"pong"))
        .await;
    let got = c.publish_rx().await;
    assert_eq!(got.topic, topic);
    assert_eq!(got.payload, "pong");
}

#[tokio::test]
async fn mqtt5_3_4_2_1_puback_0x10_no_matching_subscribers() {
    let gw = gateway().await;
    let mut publ = V5::connect(gw.mqtt_addr, "nms-pub").await;
    let q1 = |id| msg5("nms/t", QoS::AtLeastOnce, id, b"1");
    let code = publ.publish_acked(&q1(1)).await.reason_code;
    assert_eq!(code, 0x10, "nobody subscribed");
    // QoS 2: PUBREC 0x10, and the exchange completes normally.
    let q2 = msg5("nms/t", QoS::ExactlyOnce, 2, b"2");
    assert_eq!(publ.publish_acked(&q2).await.reason_code, 0x10, "3.5.2.1");
    publ.send(&Packet::PubRel(response(2, 0))).await;
    match publ.recv().await {
        Some(Packet::PubComp(r)) => assert_eq!(r.reason_code, 0),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // The publisher's own No Local subscription does not count as a receiver.
    publ.subscribe(&[("nms/#", no_local(QoS::AtLeastOnce))])
        .await;
    let code = publ.publish_acked(&q1(3)).await.reason_code;
    assert_eq!(code, 0x10, "No Local");
    // A retained message nobody receives now is still stored (and 0x10 is a success).
    let kept = retained5("nms/kept", QoS::AtLeastOnce, 4, b"1", Properties::default());
    assert_eq!(publ.publish_acked(&kept).await.reason_code, 0x10);
    // With a subscriber: 0x00.
    let mut sub = V5::connect(gw.mqtt_addr, "nms-sub").await;
    sub.subscribe(&[("nms/#", opts(QoS::AtLeastOnce))]).await;
    let retained = sub.publish_rx().await.topic;
    assert_eq!(retained, "nms/kept", "the retained value was stored");
    assert_eq!(publ.publish_acked(&q1(5)).await.reason_code, 0x00);
}

#[tokio::test]
async fn mqtt5_rumqttc_v5_sees_puback_no_matching_subscribers() {
    use rumqttc::v5::mqttbytes::v5::PubAckReason;
    let gw = gateway().await;
    let mut c = rumqttc5(options5(gw.mqtt_addr, "rumq5-nms")).await;
    c.client
        .publish("nobody/listens", Q5::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let reason = c
        .expect("PUBACK", |p| match p {
            R5Packet::PubAck(a) => Some(a.reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, PubAckReason::NoMatchingSubscribers);
}

// ---------------------------------------------------------------------------------------
// Message expiry, properties pass-through

#[tokio::test]
async fn mqtt5_3_3_2_3_3_message_expiry_decremented_and_expired_retained_not_sent() {
    let gw = gateway().await;
    let mut publ = V5::connect(gw.mqtt_addr, "exp-pub").await;
    let expiring = |secs| props(|p| p.message_expiry_interval = Some(secs));
    let q1 = QoS::AtLeastOnce;
    publ.send(&retained5("exp/short", q1, 1, b"s", expiring(1)))
        .await;
    publ.send(&retained5("exp/long", q1, 1, b"l", expiring(100)))
        .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut sub = V5::connect(gw.mqtt_addr, "exp-sub").await;
    sub.subscribe(&[("exp/#", opts(QoS::AtLeastOnce))]).await;
    let p = sub.publish_rx().await;
    let topic = &p.topic;
    assert_eq!(
        topic, "exp/long",
        "the expired retained message is not sent"
    );
    let left = p
        .properties
        .message_expiry_interval
        .expect("remaining interval");
    assert!(
        (97..=99).contains(&left),
        "100 s minus ~2 s waited, got {left}"
    );
    sub.assert_quiet(SHORT, "exp/short had expired").await;
}

#[tokio::test]
async fn mqtt5_3_3_2_3_properties_passed_through_unchanged_and_in_order() {
    let gw = gateway().await;
    let none = Properties::default();
    let (mut sub, mut publ) = sub_and_pub(&gw, "rr-sub", none, "req/#", QoS::AtLeastOnce).await;
    let sent = Properties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("resp/me".into()),
        correlation_data: Some(Bytes::from_static(&[0, 1, 2])),
        user_properties: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
        ],
        ..Properties::default()
    };
    publ.send(&pub5("req/x", QoS::AtLeastOnce, 1, b"{}", sent.clone()))
        .await;
    let got = sub.publish_rx().await.properties;
    let users = &got.user_properties;
    assert_eq!(users, &sent.user_properties, "MQTT-3.3.2-17/18: order kept");
    assert_eq!(got.response_topic, sent.response_topic, "MQTT-3.3.2-15");
    assert_eq!(got.correlation_data, sent.correlation_data, "MQTT-3.3.2-16");
    assert_eq!(got.payload_format_indicator, Some(1), "MQTT-3.3.2-4");
    assert_eq!(got.content_type, sent.content_type, "MQTT-3.3.2-20");
}

// ---------------------------------------------------------------------------------------
// Subscriptions

#[tokio::test]
async fn mqtt5_3_3_4_3_overlapping_subscriptions_one_copy_with_every_identifier() {
    let gw = gateway().await;
    let mut sub = V5::connect(gw.mqtt_addr, "ids").await;
    for (filter, id) in [("ids/#", 11), ("ids/+", 22)] {
        sub.suback(&[(filter, opts(QoS::AtMostOnce))], Some(id))
            .await;
    }
    let mut publ = V5::connect(gw.mqtt_addr, "ids-pub").await;
    publ.send(&msg5("ids/a", QoS::AtMostOnce, 0, b"x")).await;
    let mut ids = sub
        .publish_rx()
        .await
        .properties
        .into_inner()
        .subscription_identifiers;
    ids.sort();
    assert_eq!(ids, vec![11, 22]);
    sub.assert_quiet(SHORT, "only one copy").await;
}

#[tokio::test]
async fn mqtt5_3_8_3_3_no_local_does_not_echo_own_publishes() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "nolocal").await;
    c.subscribe(&[("nl/t", no_local(QoS::AtMostOnce))]).await;
    c.send(&msg5("nl/t", QoS::AtMostOnce, 0, b"mine")).await;
    let why = "own message with No Local";
    c.assert_quiet(Duration::from_millis(400), why).await;
    let mut other = V5::connect(gw.mqtt_addr, "nolocal-2").await;
    other
        .send(&msg5("nl/t", QoS::AtMostOnce, 0, b"theirs"))
        .await;
    assert_eq!(c.publish_rx().await.payload, "theirs");
}

/// A retained QoS 1 "r" on `topic`, acknowledged (so stored) before it returns, then a
/// subscriber `{id}-sub` of `topic` with `o`.
async fn retained_then_subscriber(
    gw: &ponte::Gateway,
    id: &str,
    topic: &str,
    o: SubscriptionOptions,
) -> (V5, V5) {
    let mut publ = V5::connect(gw.mqtt_addr, &format!("{id}-pub")).await;
    publ.send(&retained5(
        topic,
        QoS::AtLeastOnce,
        1,
        b"r",
        Properties::default(),
    ))
    .await;
    // Wait for the PUBACK so the value is retained before subscribing.
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    let mut sub = V5::connect(gw.mqtt_addr, &format!("{id}-sub")).await;
    sub.subscribe(&[(topic, o)]).await;
    (publ, sub)
}

#[tokio::test]
async fn mqtt5_3_3_1_12_retain_as_published_keeps_the_flag_and_retain_handling_2_sends_none() {
    let gw = gateway().await;
    let o = SubscriptionOptions {
        retain_as_published: true,
        retain_handling: ponte_mqtt::RetainHandling::Never,
        ..opts(QoS::AtLeastOnce)
    };
    let (mut publ, mut sub) = retained_then_subscriber(&gw, "rap", "rap/t", o).await;
    let why = "Retain Handling 2: no retained on subscribe";
    sub.assert_quiet(SHORT, why).await;
    publ.send(&retained5(
        "rap/t",
        QoS::AtLeastOnce,
        2,
        b"r",
        Properties::default(),
    ))
    .await;
    let live = sub.publish_rx().await;
    let why = "MQTT-3.3.1-13: RETAIN kept with Retain As Published";
    assert!(live.retain, "{why}");
}

#[tokio::test]
async fn mqtt5_3_3_1_10_retain_handling_1_only_on_a_new_subscription() {
    let gw = gateway().await;
    let o = SubscriptionOptions {
        retain_handling: ponte_mqtt::RetainHandling::OnNewSubscription,
        ..opts(QoS::AtLeastOnce)
    };
    let (_publ, mut sub) = retained_then_subscriber(&gw, "rh1", "rh1/t", o).await;
    let sent = sub.publish_rx().await.retain;
    assert!(sent, "new subscription: retained sent");
    sub.subscribe(&[("rh1/t", o)]).await;
    let why = "existing subscription: not again";
    sub.assert_quiet(SHORT, why).await;
}

#[tokio::test]
async fn mqtt5_4_8_2_shared_subscription_one_member_per_message_round_robin() {
    let gw = gateway().await;
    let (mut a, mut b) = V5::members(gw.mqtt_addr, "share", "$share/g/sh/+", QoS::AtMostOnce).await;
    let mut publ = V5::connect(gw.mqtt_addr, "share-pub").await;
    for payload in [b"0", b"1", b"2", b"3"] {
        publ.send(&msg5("sh/x", QoS::AtMostOnce, 0, payload)).await;
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(a.publish_rx().await.payload);
        got.push(b.publish_rx().await.payload);
    }
    got.sort();
    let want = vec!["0", "1", "2", "3"];
    assert_eq!(got, want, "each message to exactly one member");
    for m in [&mut a, &mut b] {
        m.assert_quiet(Duration::from_millis(200), "no duplicates")
            .await;
    }
}

#[tokio::test]
async fn mqtt5_3_11_unsuback_reports_no_subscription_existed() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "unsub").await;
    c.subscribe(&[("u/a", opts(QoS::AtMostOnce))]).await;
    let codes = c.unsubscribe(&["u/a", "u/never"]).await;
    assert_eq!(codes, vec![0x00, 0x11]);
}

// ---------------------------------------------------------------------------------------
// Across versions and protocols

#[tokio::test]
async fn mqtt5_v3_subscriber_receives_a_v5_publish_and_back() {
    let gw = gateway().await;
    let mut v3 = Client::subscriber(gw.mqtt_addr, "v3-side", "mix/#").await;
    let mut v5 = V5::connect(gw.mqtt_addr, "v5-side").await;
    v5.subscribe(&[("mix/#", opts(QoS::AtLeastOnce))]).await;
    let kv = props(|p| p.user_properties = vec![("k".into(), "v".into())]);
    v5.send(&pub5("mix/from5", QoS::AtLeastOnce, 1, b"five", kv))
        .await;
    let got = v3.publish_rx().await;
    assert_eq!(
        (got.topic.as_ref(), got.payload.as_ref()),
        (&b"mix/from5"[..], &b"five"[..])
    );
    v3.client
        .publish("mix/from3", rumqttc::QoS::AtLeastOnce, false, "three")
        .await
        .unwrap();
    loop {
        let p = v5.publish_rx().await;
        if p.topic == "mix/from3" {
            assert_eq!(p.payload, "three");
            assert!(p.properties.user_properties.is_empty());
            break;
        }
    }
}

#[tokio::test]
async fn mqtt5_http_put_content_type_reaches_v5_subscriber_as_content_type() {
    let gw = gateway().await;
    let mut sub = V5::connect(gw.mqtt_addr, "ct-sub").await;
    sub.subscribe(&[("ct/http", opts(QoS::AtLeastOnce))]).await;
    let resp = http_put(&gw, "ct/http", vec![0xa0], "application/cbor").await;
    assert!(resp.status().is_success());
    let p = sub.publish_rx().await;
    let ct = p.properties.content_type.as_deref();
    assert_eq!(ct, Some("application/cbor"));
}

#[tokio::test]
async fn mqtt5_publish_content_type_becomes_http_content_type() {
    let gw = gateway().await;
    let mut publ = V5::connect(gw.mqtt_addr, "ct-pub").await;
    let xml = props(|p| p.content_type = Some("application/xml".into()));
    let p = retained5("ct/mqtt", QoS::AtLeastOnce, 1, b"<a/>", xml);
    publ.send(&p).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    let resp = http_get(&gw, "ct/mqtt").await;
    assert_eq!(resp.headers()["content-type"], "application/xml");
    assert_eq!(resp.bytes().await.unwrap(), "<a/>");
}

// ---------------------------------------------------------------------------------------
// rumqttc's v5 client

#[tokio::test]
async fn mqtt5_rumqttc_v5_user_properties_and_response_topic_round_trip() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let gw = gateway().await;
    let mut c = rumqttc5(options5(gw.mqtt_addr, "rumq5")).await;
    c.client.subscribe("rq/#", Q5::AtLeastOnce).await.unwrap();
    c.expect("SUBACK", |p| matches!(p, R5Packet::SubAck(_)).then_some(()))
        .await;
    let props = PublishProperties {
        response_topic: Some("rq/reply".into()),
        correlation_data: Some(Bytes::from_static(b"id-1")),
        user_properties: vec![("z".into(), "1".into()), ("a".into(), "2".into())],
        ..Default::default()
    };
    c.client
        .publish_with_properties("rq/x", Q5::AtLeastOnce, false, "q", props.clone())
        .await
        .unwrap();
    let got = c
        .expect("the PUBLISH back", |p| match p {
            R5Packet::Publish(p) => Some(p),
            _ => None,
        })
        .await;
    let p = got.properties.expect("properties");
    assert_eq!(p.response_topic.as_deref(), Some("rq/reply"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"id-1"[..]));
    assert_eq!(p.user_properties, props.user_properties);
}

// ---------------------------------------------------------------------------------------
// mosquitto clients, -V 5

#[tokio::test]
async fn mqtt5_mosquitto_v5_user_property_and_content_type_interop() {
    if !have("mosquitto_sub") || !have("mosquitto_pub") {
        return;
    }
    let gw = gateway().await;
    let port = gw.mqtt_addr.port().to_string();
    let at = format!("-V 5 -h 127.0.0.1 -p {port} -t mosq5/t");
    let sub = Cmd::new("mosquitto_sub")
        .words(&at)
        .words("-C 1 -W 5 -F %t|%p|%C|%P")
        .spawn();
    // Publish until the subscriber (whose SUBSCRIBE we cannot observe) has seen one.
    let publisher = async {
        loop {
            let out = Cmd::new("mosquitto_pub")
                .words(&at)
                .words("-m hello -D publish user-property k v")
                .words("-D publish content-type text/x-test")
                .run()
                .await;
            assert_eq!(out.code, Some(0), "mosquitto_pub: {}", out.all());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let out = tokio::select! {
        o = sub.finish() => o,
        _ = tokio::time::sleep(Duration::from_secs(8)) => panic!("mosquitto_sub got nothing"),
        _ = publisher => unreachable!(),
    };
    let line = out.stdout.trim();
    assert_eq!(line, "mosq5/t|hello|text/x-test|k:v", "{}", out.all());
}
