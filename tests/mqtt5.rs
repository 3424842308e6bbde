//! Black-box tests of the MQTT 5.0 broker over real sockets on 127.0.0.1. Test names carry
//! the clause of MQTT 5.0 they check. Clients: rumqttc's v5 client, `mosquitto_pub/sub -V 5`,
//! and a raw v5 socket (bytes written and read with ponte-mqtt's v5 codec) for what a
//! well-behaved client cannot express (violations, exact CONNACK properties, aliases).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use ponte_mqtt::{
    encode, Connect, Packet as Packet5, Properties, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonPacket, SubResponse, Subscribe, SubscriptionOptions, Unsubscribe,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A raw MQTT 5 client: packets in and out through ponte-mqtt's v5 codec.
struct V5 {
    /// The socket.
    s: TcpStream,
    /// Received bytes not yet decoded.
    buf: BytesMut,
}

fn connect5(id: &str, props: Properties) -> Packet5 {
    Packet5::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        client_id: id.into(),
        clean_session: true,
        keep_alive: 30,
        username: None,
        password: None,
        will: None,
        properties: props.into(),
    }))
}

fn publish5(
    topic: &str,
    qos: QoS,
    pkid: u16,
    payload: &'static [u8],
    props: Properties,
) -> Packet5 {
    Packet5::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(payload),
        properties: props.into(),
    })
}

fn subscribe5(pkid: u16, filters: &[(&str, SubscriptionOptions)], id: Option<u32>) -> Packet5 {
    Packet5::Subscribe(Subscribe {
        pkid,
        filters: filters.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
        properties: Properties {
            subscription_identifiers: id.into_iter().collect(),
            ..Properties::default()
        }
        .into(),
    })
}

impl V5 {
    async fn open(addr: SocketAddr) -> V5 {
        let s = within(WAIT, "TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        V5 {
            s,
            buf: BytesMut::new(),
        }
    }

    /// Connect with `props`; returns the CONNACK's session present, reason and properties.
    async fn connect(addr: SocketAddr, id: &str, props: Properties) -> (V5, u8, Properties) {
        let mut c = V5::open(addr).await;
        c.send(&connect5(id, props)).await;
        match c.recv().await {
            Some(Packet5::ConnAck {
                reason_code,
                properties,
                ..
            }) => (c, reason_code, properties.into_inner()),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, p: &Packet5) {
        let mut out = BytesMut::new();
        encode(p, ponte_mqtt::ProtocolVersion::V5, &mut out);
        self.s.write_all(&out).await.expect("write");
    }

    /// The next packet, `None` when the server closed the connection.
    async fn recv(&mut self) -> Option<Packet5> {
        common::read_v5(&mut self.s, &mut self.buf).await
    }

    /// The next PUBLISH, skipping acknowledgements.
    async fn publish(&mut self) -> Publish {
        loop {
            match self.recv().await {
                Some(Packet5::Publish(p)) => return p,
                Some(_) => {}
                None => panic!("connection closed while waiting for a PUBLISH"),
            }
        }
    }

    /// Subscribe and wait for the SUBACK's reason codes.
    async fn subscribe(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        id: Option<u32>,
    ) -> Vec<u8> {
        self.send(&subscribe5(7, filters, id)).await;
        loop {
            match self.recv().await {
                Some(Packet5::SubAck(a)) => return a.reason_codes,
                Some(_) => {}
                None => panic!("closed before SUBACK"),
            }
        }
    }

    /// Wait for DISCONNECT; returns its reason code, after checking that it says why (every
    /// error the server sends carries a Reason String).
    async fn disconnect_reason(&mut self) -> u8 {
        let d = self.disconnect().await;
        assert!(
            d.properties.reason_string.is_some(),
            "DISCONNECT {:#04x} without a Reason String",
            d.reason_code
        );
        d.reason_code
    }

    /// Wait for DISCONNECT.
    async fn disconnect(&mut self) -> ReasonPacket {
        loop {
            match self.recv().await {
                Some(Packet5::Disconnect(d)) => return d,
                Some(_) => {}
                None => panic!("closed without DISCONNECT"),
            }
        }
    }

    /// Subscribe and wait for the whole SUBACK.
    async fn suback(&mut self, filters: &[(&str, SubscriptionOptions)]) -> SubResponse {
        self.send(&subscribe5(8, filters, None)).await;
        loop {
            match self.recv().await {
                Some(Packet5::SubAck(a)) => return a,
                Some(_) => {}
                None => panic!("closed before SUBACK"),
            }
        }
    }

    /// Send `p` (a QoS 1/2 PUBLISH) and wait for its PUBACK or PUBREC.
    async fn publish_acked(&mut self, p: &Packet5) -> PubResponse {
        self.send(p).await;
        loop {
            match self.recv().await {
                Some(Packet5::PubAck(r) | Packet5::PubRec(r)) => return r,
                Some(_) => {}
                None => panic!("closed before PUBACK/PUBREC"),
            }
        }
    }

    /// Asserts nothing (no PUBLISH) arrives within `d`.
    async fn assert_quiet(&mut self, d: Duration, why: &str) {
        if let Ok(p) = tokio::time::timeout(d, self.recv()).await {
            panic!("{why}: got {p:?}");
        }
    }
}

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos)
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
    let (_c, code, p) = V5::connect(gw.mqtt_addr, "limits", Properties::default()).await;
    assert_eq!(code, 0);
    assert_eq!(p.receive_maximum, Some(7));
    assert_eq!(p.topic_alias_maximum, Some(5), "3.2.2.3.8");
    assert_eq!(p.maximum_packet_size, Some(4096), "3.2.2.3.6");
    assert_eq!(p.retain_available, Some(1), "3.2.2.3.5");
    assert_eq!(p.wildcard_subscription_available, Some(1), "3.2.2.3.11");
    assert_eq!(p.subscription_identifiers_available, Some(1), "3.2.2.3.12");
    assert_eq!(p.shared_subscription_available, Some(1), "3.2.2.3.13");
    assert_eq!(
        p.assigned_client_identifier, None,
        "the client named itself"
    );
}

#[tokio::test]
async fn mqtt5_3_2_2_16_empty_client_id_gets_assigned_client_identifier() {
    let gw = gateway().await;
    let (_c, code, p) = V5::connect(gw.mqtt_addr, "", Properties::default()).await;
    assert_eq!(code, 0);
    let id = p
        .assigned_client_identifier
        .expect("Assigned Client Identifier");
    assert!(!id.is_empty());
}

#[tokio::test]
async fn mqtt5_3_2_2_21_server_keep_alive_caps_the_clients() {
    let gw = gateway_with(|c| c.mqtt.max_keepalive = 1).await;
    let (mut c, _, p) = V5::connect(gw.mqtt_addr, "ska", Properties::default()).await;
    assert_eq!(p.server_keep_alive, Some(1), "asked for 30 s, allowed 1 s");
    // The imposed 1 s is the one enforced: silence for 1.5 s ends in DISCONNECT 0x8D.
    assert_eq!(c.disconnect_reason().await, 0x8D, "MQTT-3.1.2-22 with 0x8D");
}

#[tokio::test]
async fn mqtt5_4_12_0_1_unsupported_authentication_method_gets_connack_0x8c() {
    let gw = gateway().await;
    let props = Properties {
        authentication_method: Some("SCRAM-SHA-1".into()),
        ..Properties::default()
    };
    let (mut c, code, _) = V5::connect(gw.mqtt_addr, "auth", props).await;
    assert_eq!(code, 0x8C);
    assert_eq!(c.recv().await, None, "closed after the refusal");
}

#[tokio::test]
async fn mqtt5_4_12_auth_without_method_in_connect_is_protocol_error_0x82() {
    let gw = gateway().await;
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "auth2", Properties::default()).await;
    c.send(&Packet5::Auth(ReasonPacket {
        reason_code: 0x19,
        properties: Default::default(),
    }))
    .await;
    assert_eq!(c.disconnect_reason().await, 0x82);
}

#[tokio::test]
async fn mqtt5_3_1_4_3_takeover_disconnects_the_old_connection_with_0x8e() {
    let gw = gateway().await;
    let (mut old, _, _) = V5::connect(gw.mqtt_addr, "twin", Properties::default()).await;
    let (_new, code, _) = V5::connect(gw.mqtt_addr, "twin", Properties::default()).await;
    assert_eq!(code, 0);
    assert_eq!(old.disconnect_reason().await, 0x8E);
}

#[tokio::test]
async fn mqtt5_3_14_server_shutdown_sends_disconnect_0x8b() {
    let gw = gateway().await;
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "bye", Properties::default()).await;
    let stopping = tokio::spawn(async move { gw.shutdown().await });
    assert_eq!(c.disconnect_reason().await, 0x8B);
    let _ = within(WAIT, "shutdown", stopping).await;
}

#[tokio::test]
async fn mqtt5_4_13_malformed_packet_gets_disconnect_0x81() {
    let gw = gateway().await;
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "malformed", Properties::default()).await;
    // PUBLISH QoS 0 to "t" whose property list holds Topic Alias 0 (0x23 0x0000): malformed.
    c.s.write_all(&[0x30, 7, 0, 1, b't', 3, 0x23, 0, 0])
        .await
        .unwrap();
    assert_eq!(c.disconnect_reason().await, 0x81);
}

// ---------------------------------------------------------------------------------------
// Flow control, packet size, aliases

#[tokio::test]
async fn mqtt_3_3_4_8_flow_control_receive_maximum() {
    let gw = gateway_with(|c| c.mqtt.receive_maximum = 2).await;
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "flood", Properties::default()).await;
    // QoS 2 exchanges stay open until PUBREL: the third one exceeds Receive Maximum 2.
    for id in 1..=3 {
        c.send(&publish5(
            "rm/t",
            QoS::ExactlyOnce,
            id,
            b"x",
            Properties::default(),
        ))
        .await;
    }
    assert_eq!(c.disconnect_reason().await, 0x93);
}

#[tokio::test]
async fn mqtt5_3_3_4_9_server_respects_the_clients_receive_maximum() {
    let gw = gateway().await;
    let props = Properties {
        receive_maximum: Some(2),
        ..Properties::default()
    };
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "slow", props).await;
    sub.subscribe(&[("win/t", opts(QoS::AtLeastOnce))], None)
        .await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "fast", Properties::default()).await;
    for id in 1..=5 {
        publ.send(&publish5(
            "win/t",
            QoS::AtLeastOnce,
            id,
            b"m",
            Properties::default(),
        ))
        .await;
    }
    let first = sub.publish().await.pkid;
    let second = sub.publish().await.pkid;
    sub.assert_quiet(
        Duration::from_millis(300),
        "a third unacknowledged QoS 1 message",
    )
    .await;
    // Acknowledging one opens exactly one slot.
    sub.send(&Packet5::PubAck(PubResponse {
        pkid: first,
        reason_code: 0,
        properties: Default::default(),
    }))
    .await;
    let third = sub.publish().await.pkid;
    assert_ne!(third, second);
    sub.assert_quiet(Duration::from_millis(300), "a fourth before another ack")
        .await;
}

#[tokio::test]
async fn mqtt5_3_1_2_25_never_send_a_packet_above_the_clients_maximum_packet_size() {
    let gw = gateway().await;
    let props = Properties {
        maximum_packet_size: Some(64),
        ..Properties::default()
    };
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "small", props).await;
    sub.subscribe(&[("mps/#", opts(QoS::AtMostOnce))], None)
        .await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "big", Properties::default()).await;
    publ.send(&publish5(
        "mps/big",
        QoS::AtMostOnce,
        0,
        &[b'x'; 200],
        Properties::default(),
    ))
    .await;
    publ.send(&publish5(
        "mps/small",
        QoS::AtMostOnce,
        0,
        b"ok",
        Properties::default(),
    ))
    .await;
    let p = sub.publish().await;
    assert_eq!(
        p.payload, "ok",
        "the oversized message was dropped, not sent"
    );
    assert_eq!(p.topic, "mps/small");
}

#[tokio::test]
async fn mqtt5_3_3_2_3_4_client_topic_alias_resolved_and_invalid_alias_gets_0x94() {
    let gw = gateway_with(|c| c.mqtt.topic_alias_maximum = 2).await;
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "alias-sub", Properties::default()).await;
    sub.subscribe(&[("alias/t", opts(QoS::AtMostOnce))], None)
        .await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "alias-pub", Properties::default()).await;
    let alias = |a| Properties {
        topic_alias: Some(a),
        ..Properties::default()
    };
    publ.send(&publish5("alias/t", QoS::AtMostOnce, 0, b"1", alias(1)))
        .await;
    publ.send(&publish5("", QoS::AtMostOnce, 0, b"2", alias(1)))
        .await;
    assert_eq!(sub.publish().await.payload, "1");
    let second = sub.publish().await;
    assert_eq!(second.topic, "alias/t", "alias 1 stood for alias/t");
    assert_eq!(second.payload, "2");
    // Alias 3 is above the announced Topic Alias Maximum 2.
    publ.send(&publish5("alias/t", QoS::AtMostOnce, 0, b"3", alias(3)))
        .await;
    assert_eq!(publ.disconnect_reason().await, 0x94);
}

#[tokio::test]
async fn mqtt5_3_3_2_3_4_server_assigns_topic_aliases_for_repeated_topics() {
    let gw = gateway().await;
    let props = Properties {
        topic_alias_maximum: Some(4),
        ..Properties::default()
    };
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "srv-alias", props).await;
    sub.subscribe(&[("sa/t", opts(QoS::AtMostOnce))], None)
        .await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "srv-alias-pub", Properties::default()).await;
    for _ in 0..2 {
        publ.send(&publish5(
            "sa/t",
            QoS::AtMostOnce,
            0,
            b"v",
            Properties::default(),
        ))
        .await;
    }
    let first = sub.publish().await;
    let alias = first
        .properties
        .topic_alias
        .expect("first use sets an alias");
    assert_eq!(first.topic, "sa/t");
    let second = sub.publish().await;
    assert_eq!(second.topic, "", "repeated topic sent as its alias only");
    assert_eq!(second.properties.topic_alias, Some(alias));
}

#[tokio::test]
async fn mqtt5_4_13_packet_above_the_servers_maximum_gets_disconnect_0x95() {
    let gw = gateway_with(|c| c.mqtt.max_packet_size = 256).await;
    let (mut c, _, p) = V5::connect(gw.mqtt_addr, "too-big", Properties::default()).await;
    assert_eq!(p.maximum_packet_size, Some(256));
    c.send(&publish5(
        "big/t",
        QoS::AtMostOnce,
        0,
        &[b'x'; 1000],
        Properties::default(),
    ))
    .await;
    assert_eq!(c.disconnect_reason().await, 0x95);
}

#[tokio::test]
async fn mqtt5_3_1_2_25_too_large_qos1_publish_discarded_as_if_delivered_and_counted() {
    let gw = gateway().await;
    // Receive Maximum 1: were the discarded message still in flight, nothing would follow.
    let props = Properties {
        maximum_packet_size: Some(64),
        receive_maximum: Some(1),
        ..Properties::default()
    };
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "small-q1", props).await;
    sub.subscribe(&[("mps1/#", opts(QoS::AtLeastOnce))], None)
        .await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "big-q1", Properties::default()).await;
    let big = publish5(
        "mps1/big",
        QoS::AtLeastOnce,
        1,
        &[b'x'; 200],
        Properties::default(),
    );
    assert_eq!(publ.publish_acked(&big).await.reason_code, 0, "it matched");
    let small = publish5("mps1/ok", QoS::AtLeastOnce, 2, b"ok", Properties::default());
    publ.publish_acked(&small).await;
    let p = sub.publish().await;
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
    let props = Properties {
        topic_alias_maximum: Some(3),
        ..Properties::default()
    };
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "lru-sub", props).await;
    sub.subscribe(&[("lru/#", opts(QoS::AtMostOnce))], None)
        .await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "lru-pub", Properties::default()).await;
    // Five topics, some revisited: more topics than aliases, so aliases are reassigned
    // (t3 takes t0's, t4 takes t2's, t0 takes t3's) and repeats go on as alias-only sends.
    let topics: Vec<String> = [0, 1, 2, 3, 3, 1, 4, 4, 1, 0, 0]
        .iter()
        .map(|i| format!("lru/t{i}"))
        .collect();
    for t in &topics {
        let Packet5::Publish(mut p) = publish5("x", QoS::AtMostOnce, 0, b"", Properties::default())
        else {
            unreachable!()
        };
        p.topic = t.clone();
        p.payload = Bytes::from(t.clone());
        publ.send(&Packet5::Publish(p)).await;
    }
    // Resolve aliases as a client must (3.3.2.3.4).
    let mut table = std::collections::HashMap::new();
    let mut topics_per_alias: std::collections::HashMap<u16, std::collections::HashSet<String>> =
        Default::default();
    let mut sent_alias_only = 0;
    for t in &topics {
        let p = sub.publish().await;
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
async fn mqtt5_rumqttc_v5_resolves_topics_through_alias_reuse() {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS as Q;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let gw = gateway().await;
    let mut o = MqttOptions::new("rumq5-alias", "127.0.0.1", gw.mqtt_addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o.set_topic_alias_max(Some(2));
    let (client, mut el) = AsyncClient::new(o, 64);
    client.subscribe("ra/#", Q::AtLeastOnce).await.unwrap();
    let topics: Vec<String> = [0, 1, 0, 2, 3, 1, 0, 2, 3, 3, 1]
        .iter()
        .map(|i| format!("ra/t{i}"))
        .collect();
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "ra-pub", Properties::default()).await;
    let mut got = Vec::new();
    let mut aliased = 0;
    within(WAIT, "rumqttc v5 receives every topic", async {
        loop {
            match el.poll().await.expect("v5 event loop") {
                Event::Incoming(Packet::SubAck(_)) => {
                    for (i, t) in topics.iter().enumerate() {
                        let Packet5::Publish(mut p) = publish5(
                            "x",
                            QoS::AtLeastOnce,
                            i as u16 + 1,
                            b"",
                            Properties::default(),
                        ) else {
                            unreachable!()
                        };
                        p.topic = t.clone();
                        p.payload = Bytes::from(t.clone());
                        publ.publish_acked(&Packet5::Publish(p)).await;
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    if p.properties
                        .as_ref()
                        .is_some_and(|p| p.topic_alias.is_some())
                    {
                        aliased += 1;
                    }
                    assert_eq!(p.topic, p.payload, "resolved topic is the one published");
                    got.push(String::from_utf8(p.topic.to_vec()).unwrap());
                    if got.len() == topics.len() {
                        return;
                    }
                }
                _ => {}
            }
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
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "rs-sub", Properties::default()).await;
    let a = c
        .suback(&[
            ("ok/#", opts(QoS::AtLeastOnce)),
            ("bad/#/x", opts(QoS::AtLeastOnce)),
        ])
        .await;
    assert_eq!(a.reason_codes, [0x01, 0x8F]);
    let text = a.properties.reason_string.clone().expect("a Reason String");
    assert!(text.contains("bad/#/x"), "names the filter: {text:?}");
    assert!(!text.contains("ok/#"), "only the refused one: {text:?}");
    // UNSUBACK: an invalid filter is 0x8F Topic Filter invalid, explained.
    c.send(&Packet5::Unsubscribe(Unsubscribe {
        pkid: 9,
        filters: vec!["ok/#".into(), "x/#/y".into()],
        properties: Default::default(),
    }))
    .await;
    let u = loop {
        match c.recv().await {
            Some(Packet5::UnsubAck(u)) => break u,
            Some(_) => {}
            None => panic!("closed before UNSUBACK"),
        }
    };
    assert_eq!(u.reason_codes, [0x00, 0x8F]);
    let text = u.properties.reason_string.clone().expect("a Reason String");
    assert!(text.contains("x/#/y"), "{text:?}");
}

#[tokio::test]
async fn mqtt5_3_9_3_suback_quota_exceeded_explained() {
    let gw = gateway_with(|c| c.mqtt.max_subscriptions = 1).await;
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "rs-quota", Properties::default()).await;
    let a = c
        .suback(&[
            ("q/1", opts(QoS::AtMostOnce)),
            ("q/2", opts(QoS::AtMostOnce)),
        ])
        .await;
    assert_eq!(a.reason_codes, [0x00, 0x97]);
    let text = a.properties.reason_string.clone().expect("a Reason String");
    assert!(
        text.contains("q/2") && text.contains("max_subscriptions"),
        "{text:?}"
    );
}

#[tokio::test]
async fn mqtt5_3_1_2_29_request_problem_information_0_no_reason_string_on_acks() {
    let gw = gateway().await;
    let props = Properties {
        request_problem_information: Some(0),
        ..Properties::default()
    };
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "rpi0", props).await;
    let a = c.suback(&[("bad/#/x", opts(QoS::AtLeastOnce))]).await;
    assert_eq!(a.reason_codes, [0x8F], "the reason code is still sent");
    assert!(a.properties.is_empty(), "SUBACK: {:?}", a.properties);
    // PUBCOMP 0x92 for an unknown exchange: no Reason String either.
    c.send(&Packet5::PubRel(PubResponse {
        pkid: 42,
        reason_code: 0,
        properties: Default::default(),
    }))
    .await;
    match c.recv().await {
        Some(Packet5::PubComp(r)) => {
            assert_eq!(r.reason_code, 0x92);
            assert!(r.properties.is_empty(), "PUBCOMP: {r:?}");
        }
        other => panic!("expected PUBCOMP 0x92, got {other:?}"),
    }
    // DISCONNECT may still say why (MQTT-3.1.2-29 allows it).
    c.send(&Packet5::Auth(ReasonPacket {
        reason_code: 0x19,
        properties: Default::default(),
    }))
    .await;
    assert_eq!(c.disconnect_reason().await, 0x82);
}

#[tokio::test]
async fn mqtt5_3_9_2_1_suback_reason_string_dropped_beyond_maximum_packet_size() {
    let gw = gateway().await;
    let props = Properties {
        maximum_packet_size: Some(16),
        ..Properties::default()
    };
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "rs-small", props).await;
    let a = c.suback(&[("bad/#/x", opts(QoS::AtLeastOnce))]).await;
    assert_eq!(a.reason_codes, [0x8F]);
    assert_eq!(
        a.properties.reason_string, None,
        "it would not fit in 16 bytes"
    );
    let mut size = BytesMut::new();
    encode(
        &Packet5::SubAck(a),
        ponte_mqtt::ProtocolVersion::V5,
        &mut size,
    );
    assert!(size.len() <= 16, "SUBACK of {} bytes", size.len());
}

#[tokio::test]
async fn mqtt5_3_2_2_3_15_response_information_is_a_usable_response_topic_prefix() {
    let gw = gateway().await;
    let (_c, _, p) = V5::connect(gw.mqtt_addr, "no-ask", Properties::default()).await;
    assert_eq!(
        p.response_information, None,
        "MQTT-3.1.2-28: not asked, not sent"
    );
    let ask = Properties {
        request_response_information: Some(1),
        ..Properties::default()
    };
    let (_c, _, p) = V5::connect(gw.mqtt_addr, "a/b+#", ask.clone()).await;
    assert_eq!(
        p.response_information.as_deref(),
        Some("ponte/response/a%2Fb%2B%23/"),
        "one topic level, no wildcards"
    );
    let (mut c, _, p) = V5::connect(gw.mqtt_addr, "requester", ask).await;
    let base = p.response_information.expect("Response Information");
    assert_eq!(base, "ponte/response/requester/");
    // The basis works as a response topic: subscribe below it, get a response there.
    let filter = format!("{base}#");
    assert_eq!(
        c.subscribe(&[(&filter, opts(QoS::AtMostOnce))], None).await,
        [0]
    );
    let (mut responder, _, _) = V5::connect(gw.mqtt_addr, "responder", Properties::default()).await;
    let Packet5::Publish(mut r) = publish5("x", QoS::AtMostOnce, 0, b"pong", Properties::default())
    else {
        unreachable!()
    };
    r.topic = format!("{base}ping");
    responder.send(&Packet5::Publish(r)).await;
    let got = c.publish().await;
    assert_eq!(got.topic, format!("{base}ping"));
    assert_eq!(got.payload, "pong");
}

#[tokio::test]
async fn mqtt5_3_4_2_1_puback_0x10_no_matching_subscribers() {
    let gw = gateway().await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "nms-pub", Properties::default()).await;
    let q1 = |id| publish5("nms/t", QoS::AtLeastOnce, id, b"1", Properties::default());
    assert_eq!(
        publ.publish_acked(&q1(1)).await.reason_code,
        0x10,
        "nobody subscribed"
    );
    // QoS 2: PUBREC 0x10, and the exchange completes normally.
    let q2 = publish5("nms/t", QoS::ExactlyOnce, 2, b"2", Properties::default());
    assert_eq!(publ.publish_acked(&q2).await.reason_code, 0x10, "3.5.2.1");
    publ.send(&Packet5::PubRel(PubResponse {
        pkid: 2,
        reason_code: 0,
        properties: Default::default(),
    }))
    .await;
    match publ.recv().await {
        Some(Packet5::PubComp(r)) => assert_eq!(r.reason_code, 0),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // The publisher's own No Local subscription does not count as a receiver.
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtLeastOnce)
    };
    publ.subscribe(&[("nms/#", no_local)], None).await;
    assert_eq!(
        publ.publish_acked(&q1(3)).await.reason_code,
        0x10,
        "No Local"
    );
    // A retained message nobody receives now is still stored (and 0x10 is a success).
    let Packet5::Publish(mut kept) = q1(4) else {
        unreachable!()
    };
    kept.retain = true;
    kept.topic = "nms/kept".into();
    assert_eq!(
        publ.publish_acked(&Packet5::Publish(kept))
            .await
            .reason_code,
        0x10
    );
    // With a subscriber: 0x00.
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "nms-sub", Properties::default()).await;
    sub.subscribe(&[("nms/#", opts(QoS::AtLeastOnce))], None)
        .await;
    let retained = sub.publish().await;
    assert_eq!(retained.topic, "nms/kept", "the retained value was stored");
    assert_eq!(publ.publish_acked(&q1(5)).await.reason_code, 0x00);
}

#[tokio::test]
async fn mqtt5_rumqttc_v5_sees_puback_no_matching_subscribers() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
    use rumqttc::v5::mqttbytes::QoS as Q;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let gw = gateway().await;
    let mut o = MqttOptions::new("rumq5-nms", "127.0.0.1", gw.mqtt_addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 16);
    client
        .publish("nobody/listens", Q::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let reason = within(WAIT, "PUBACK", async {
        loop {
            if let Event::Incoming(Packet::PubAck(a)) = el.poll().await.expect("v5 event loop") {
                return a.reason;
            }
        }
    })
    .await;
    assert_eq!(reason, PubAckReason::NoMatchingSubscribers);
}

// ---------------------------------------------------------------------------------------
// Message expiry, properties pass-through

#[tokio::test]
async fn mqtt5_3_3_2_3_3_message_expiry_decremented_and_expired_retained_not_sent() {
    let gw = gateway().await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "exp-pub", Properties::default()).await;
    let expiring = |secs| Properties {
        message_expiry_interval: Some(secs),
        ..Properties::default()
    };
    let retained = |topic: &str, payload: &'static [u8], p| {
        let Packet5::Publish(mut pb) = publish5(topic, QoS::AtLeastOnce, 1, payload, p) else {
            unreachable!()
        };
        pb.retain = true;
        Packet5::Publish(pb)
    };
    publ.send(&retained("exp/short", b"s", expiring(1))).await;
    publ.send(&retained("exp/long", b"l", expiring(100))).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "exp-sub", Properties::default()).await;
    sub.subscribe(&[("exp/#", opts(QoS::AtLeastOnce))], None)
        .await;
    let p = sub.publish().await;
    assert_eq!(
        p.topic, "exp/long",
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
    sub.assert_quiet(Duration::from_millis(300), "exp/short had expired")
        .await;
}

#[tokio::test]
async fn mqtt5_3_3_2_3_properties_passed_through_unchanged_and_in_order() {
    let gw = gateway().await;
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "rr-sub", Properties::default()).await;
    sub.subscribe(&[("req/#", opts(QoS::AtLeastOnce))], None)
        .await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "rr-pub", Properties::default()).await;
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
    publ.send(&publish5("req/x", QoS::AtLeastOnce, 1, b"{}", sent.clone()))
        .await;
    let got = sub.publish().await.properties;
    assert_eq!(
        got.user_properties, sent.user_properties,
        "MQTT-3.3.2-17/18: order kept"
    );
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
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "ids", Properties::default()).await;
    sub.subscribe(&[("ids/#", opts(QoS::AtMostOnce))], Some(11))
        .await;
    sub.subscribe(&[("ids/+", opts(QoS::AtMostOnce))], Some(22))
        .await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "ids-pub", Properties::default()).await;
    publ.send(&publish5(
        "ids/a",
        QoS::AtMostOnce,
        0,
        b"x",
        Properties::default(),
    ))
    .await;
    let mut ids = sub
        .publish()
        .await
        .properties
        .subscription_identifiers
        .clone();
    ids.sort();
    assert_eq!(ids, vec![11, 22]);
    sub.assert_quiet(Duration::from_millis(300), "only one copy")
        .await;
}

#[tokio::test]
async fn mqtt5_3_8_3_3_no_local_does_not_echo_own_publishes() {
    let gw = gateway().await;
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "nolocal", Properties::default()).await;
    let nl = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    c.subscribe(&[("nl/t", nl)], None).await;
    c.send(&publish5(
        "nl/t",
        QoS::AtMostOnce,
        0,
        b"mine",
        Properties::default(),
    ))
    .await;
    c.assert_quiet(Duration::from_millis(400), "own message with No Local")
        .await;
    let (mut other, _, _) = V5::connect(gw.mqtt_addr, "nolocal-2", Properties::default()).await;
    other
        .send(&publish5(
            "nl/t",
            QoS::AtMostOnce,
            0,
            b"theirs",
            Properties::default(),
        ))
        .await;
    assert_eq!(c.publish().await.payload, "theirs");
}

#[tokio::test]
async fn mqtt5_3_3_1_12_retain_as_published_keeps_the_flag_and_retain_handling_2_sends_none() {
    let gw = gateway().await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "rap-pub", Properties::default()).await;
    let Packet5::Publish(mut p) =
        publish5("rap/t", QoS::AtLeastOnce, 1, b"r", Properties::default())
    else {
        unreachable!()
    };
    p.retain = true;
    publ.send(&Packet5::Publish(p.clone())).await;
    // Wait for the PUBACK so the value is retained before subscribing.
    assert!(matches!(publ.recv().await, Some(Packet5::PubAck(_))));
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "rap-sub", Properties::default()).await;
    let o = SubscriptionOptions {
        retain_as_published: true,
        retain_handling: ponte_mqtt::RetainHandling::Never,
        ..opts(QoS::AtLeastOnce)
    };
    sub.subscribe(&[("rap/t", o)], None).await;
    sub.assert_quiet(
        Duration::from_millis(300),
        "Retain Handling 2: no retained on subscribe",
    )
    .await;
    p.pkid = 2;
    publ.send(&Packet5::Publish(p)).await;
    let live = sub.publish().await;
    assert!(
        live.retain,
        "MQTT-3.3.1-13: RETAIN kept with Retain As Published"
    );
}

#[tokio::test]
async fn mqtt5_3_3_1_10_retain_handling_1_only_on_a_new_subscription() {
    let gw = gateway().await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "rh1-pub", Properties::default()).await;
    let Packet5::Publish(mut p) =
        publish5("rh1/t", QoS::AtLeastOnce, 1, b"r", Properties::default())
    else {
        unreachable!()
    };
    p.retain = true;
    publ.send(&Packet5::Publish(p)).await;
    assert!(matches!(publ.recv().await, Some(Packet5::PubAck(_))));
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "rh1-sub", Properties::default()).await;
    let o = SubscriptionOptions {
        retain_handling: ponte_mqtt::RetainHandling::OnNewSubscription,
        ..opts(QoS::AtLeastOnce)
    };
    sub.subscribe(&[("rh1/t", o)], None).await;
    assert!(
        sub.publish().await.retain,
        "new subscription: retained sent"
    );
    sub.subscribe(&[("rh1/t", o)], None).await;
    sub.assert_quiet(
        Duration::from_millis(300),
        "existing subscription: not again",
    )
    .await;
}

#[tokio::test]
async fn mqtt5_4_8_2_shared_subscription_one_member_per_message_round_robin() {
    let gw = gateway().await;
    let (mut a, _, _) = V5::connect(gw.mqtt_addr, "share-a", Properties::default()).await;
    let (mut b, _, _) = V5::connect(gw.mqtt_addr, "share-b", Properties::default()).await;
    assert_eq!(
        a.subscribe(&[("$share/g/sh/+", opts(QoS::AtMostOnce))], None)
            .await,
        vec![0]
    );
    assert_eq!(
        b.subscribe(&[("$share/g/sh/+", opts(QoS::AtMostOnce))], None)
            .await,
        vec![0]
    );
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "share-pub", Properties::default()).await;
    for i in 0..4u8 {
        let payload: &'static [u8] = [&b"0"[..], b"1", b"2", b"3"][usize::from(i)];
        publ.send(&publish5(
            "sh/x",
            QoS::AtMostOnce,
            0,
            payload,
            Properties::default(),
        ))
        .await;
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(a.publish().await.payload);
        got.push(b.publish().await.payload);
    }
    got.sort();
    assert_eq!(
        got,
        vec!["0", "1", "2", "3"],
        "each message to exactly one member"
    );
    a.assert_quiet(Duration::from_millis(200), "no duplicates")
        .await;
    b.assert_quiet(Duration::from_millis(200), "no duplicates")
        .await;
}

#[tokio::test]
async fn mqtt5_3_11_unsuback_reports_no_subscription_existed() {
    let gw = gateway().await;
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "unsub", Properties::default()).await;
    c.subscribe(&[("u/a", opts(QoS::AtMostOnce))], None).await;
    c.send(&Packet5::Unsubscribe(ponte_mqtt::Unsubscribe {
        pkid: 9,
        filters: vec!["u/a".into(), "u/never".into()],
        properties: Default::default(),
    }))
    .await;
    match c.recv().await {
        Some(Packet5::UnsubAck(a)) => assert_eq!(a.reason_codes, vec![0x00, 0x11]),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Across versions and protocols

#[tokio::test]
async fn mqtt5_v3_subscriber_receives_a_v5_publish_and_back() {
    let gw = gateway().await;
    let (mut v3, _) = Client::connect(gw.mqtt_addr, "v3-side").await;
    v3.subscribe("mix/#", rumqttc::QoS::AtLeastOnce).await;
    let (mut v5, _, _) = V5::connect(gw.mqtt_addr, "v5-side", Properties::default()).await;
    v5.subscribe(&[("mix/#", opts(QoS::AtLeastOnce))], None)
        .await;
    let props = Properties {
        user_properties: vec![("k".into(), "v".into())],
        ..Properties::default()
    };
    v5.send(&publish5("mix/from5", QoS::AtLeastOnce, 1, b"five", props))
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
        let p = v5.publish().await;
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
    let (mut sub, _, _) = V5::connect(gw.mqtt_addr, "ct-sub", Properties::default()).await;
    sub.subscribe(&[("ct/http", opts(QoS::AtLeastOnce))], None)
        .await;
    let resp = reqwest::Client::new()
        .put(format!("http://{}/resources/ct/http", gw.http_addr))
        .header("content-type", "application/cbor")
        .body(vec![0xa0])
        .send()
        .await
        .expect("PUT");
    assert!(resp.status().is_success());
    let p = sub.publish().await;
    assert_eq!(
        p.properties.content_type.as_deref(),
        Some("application/cbor")
    );
}

#[tokio::test]
async fn mqtt5_publish_content_type_becomes_http_content_type() {
    let gw = gateway().await;
    let (mut publ, _, _) = V5::connect(gw.mqtt_addr, "ct-pub", Properties::default()).await;
    let Packet5::Publish(mut p) = publish5(
        "ct/mqtt",
        QoS::AtLeastOnce,
        1,
        b"<a/>",
        Properties {
            content_type: Some("application/xml".into()),
            ..Properties::default()
        },
    ) else {
        unreachable!()
    };
    p.retain = true;
    publ.send(&Packet5::Publish(p)).await;
    assert!(matches!(publ.recv().await, Some(Packet5::PubAck(_))));
    let resp = reqwest::Client::new()
        .get(format!("http://{}/resources/ct/mqtt", gw.http_addr))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.headers()["content-type"], "application/xml");
    assert_eq!(resp.bytes().await.unwrap(), "<a/>");
}

// ---------------------------------------------------------------------------------------
// rumqttc's v5 client

#[tokio::test]
async fn mqtt5_rumqttc_v5_user_properties_and_response_topic_round_trip() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as Q;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let gw = gateway().await;
    let mut o = MqttOptions::new("rumq5", "127.0.0.1", gw.mqtt_addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 16);
    client.subscribe("rq/#", Q::AtLeastOnce).await.unwrap();
    let props = PublishProperties {
        response_topic: Some("rq/reply".into()),
        correlation_data: Some(Bytes::from_static(b"id-1")),
        user_properties: vec![("z".into(), "1".into()), ("a".into(), "2".into())],
        ..Default::default()
    };
    let mut published = false;
    let got = within(WAIT, "rumqttc v5 round trip", async {
        loop {
            match el.poll().await.expect("v5 event loop") {
                Event::Incoming(Packet::SubAck(_)) if !published => {
                    published = true;
                    client
                        .publish_with_properties("rq/x", Q::AtLeastOnce, false, "q", props.clone())
                        .await
                        .unwrap();
                }
                Event::Incoming(Packet::Publish(p)) => return p,
                _ => {}
            }
        }
    })
    .await;
    let p = got.properties.expect("properties");
    assert_eq!(p.response_topic.as_deref(), Some("rq/reply"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"id-1"[..]));
    assert_eq!(p.user_properties, props.user_properties);
}

// ---------------------------------------------------------------------------------------
// mosquitto clients, -V 5

fn mosquitto_available() -> bool {
    std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_ok()
}

#[tokio::test]
async fn mqtt5_mosquitto_v5_user_property_and_content_type_interop() {
    if !mosquitto_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "mosquitto clients missing in CI"
        );
        eprintln!("SKIP: mosquitto clients not installed");
        return;
    }
    let gw = gateway().await;
    let port = gw.mqtt_addr.port().to_string();
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-V",
            "5",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "mosq5/t",
            "-C",
            "1",
        ])
        .args(["-W", "5", "-F", "%t|%p|%C|%P"])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    // Publish until the subscriber (whose SUBSCRIBE we cannot observe) has seen one.
    let publisher = async {
        loop {
            let out = tokio::process::Command::new("mosquitto_pub")
                .args(["-V", "5", "-h", "127.0.0.1", "-p", &port, "-t", "mosq5/t"])
                .args(["-m", "hello", "-D", "publish", "user-property", "k", "v"])
                .args(["-D", "publish", "content-type", "text/x-test"])
                .output()
                .await
                .expect("mosquitto_pub runs");
            assert!(out.status.success(), "mosquitto_pub: {out:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let out = tokio::select! {
        o = sub.wait_with_output() => o.expect("mosquitto_sub output"),
        _ = tokio::time::sleep(Duration::from_secs(8)) => panic!("mosquitto_sub got nothing"),
        _ = publisher => unreachable!(),
    };
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(line.trim(), "mosq5/t|hello|text/x-test|k:v", "{out:?}");
}
