//! Black-box tests of the MQTT 3.1/3.1.1 broker front-end, over real sockets on 127.0.0.1,
//! with rumqttc as the client and raw bytes for protocol violations. Test names carry the
//! clause of the MQTT 3.1.1 specification they check.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use rumqttc::{LastWill, Packet, QoS, SubscribeFilter, SubscribeReasonCode};

// ---------------------------------------------------------------------------------------
// CONNECT / CONNACK

#[tokio::test]
async fn mqtt_3_2_connect_answered_with_connack_accepted() {
    let gw = gateway().await;
    let (_c, ack) = Client::connect(gw.mqtt_addr, "connack").await;
    assert!(
        !ack.session_present,
        "MQTT-3.2.2-1: clean session → session present 0"
    );

    // The same exchange byte for byte.
    let mut raw = Raw::open(gw.mqtt_addr).await;
    raw.send(&connect_v311(true, 30, "connack-raw")).await;
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            first: 0x20,
            body: vec![0x00, 0x00]
        })
    );
    raw.ping().await;
}

#[tokio::test]
async fn mqtt_3_1_2_10_keep_alive_zero_turns_the_timeout_off() {
    let gw = gateway().await;
    let mut zero = Raw::connect(gw.mqtt_addr, "ka-zero", 0).await;
    let mut one = Raw::connect(gw.mqtt_addr, "ka-one", 1).await;
    // The control connection (Keep Alive 1 s) is closed after 1.5 s of silence...
    one.expect_closed_within(
        Duration::from_secs(3),
        "the keep alive 1 s connection to time out",
    )
    .await;
    // ...and the Keep Alive 0 connection, just as silent, outlives it by more than another
    // 1.5 s: no timer runs for it.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    zero.ping().await;
}

#[tokio::test]
async fn mqtt_3_1_2_24_keep_alive_timeout_after_one_and_a_half_times_publishes_the_will() {
    let gw = gateway().await;
    let (mut watcher, _) = Client::connect(gw.mqtt_addr, "ka-watcher").await;
    watcher.subscribe("will/ka", QoS::AtLeastOnce).await;

    let mut silent = Raw::open(gw.mqtt_addr).await;
    silent
        .send(&connect_packet(
            "MQTT",
            4,
            true,
            1,
            "ka-silent",
            Some(("will/ka", b"gone silent", 1, false)),
        ))
        .await;
    assert_eq!(
        silent.read().await,
        Some(RawPacket {
            first: 0x20,
            body: vec![0, 0]
        })
    );
    let connected = Instant::now();

    let will = watcher.publish_rx().await;
    let elapsed = connected.elapsed();
    assert_eq!(will.topic, "will/ka");
    assert_eq!(will.payload, Bytes::from_static(b"gone silent"));
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed <= Duration::from_millis(2600),
        "MQTT-3.1.2-24: closed after 1.5 × 1 s, not after {elapsed:?}"
    );
    silent
        .expect_closed("the timed-out connection to be closed")
        .await;
}

#[tokio::test]
async fn mqtt_3_1_3_6_empty_client_id_with_clean_session_is_accepted_and_given_a_unique_id() {
    let gw = gateway().await;
    let mut a = options(gw.mqtt_addr, "");
    a.set_clean_session(true);
    let (mut a, ack) = Client::connect_with(a).await;
    assert!(!ack.session_present);
    a.subscribe("anon/t", QoS::AtLeastOnce).await;

    // A second anonymous client gets its own id: it does not take the first one over.
    let (mut b, _) = Client::connect_with(options(gw.mqtt_addr, "")).await;
    b.publish("anon/t", QoS::AtLeastOnce, false, b"to a").await;
    let got = a.publish_rx().await;
    assert_eq!(got.payload, Bytes::from_static(b"to a"));
}

#[tokio::test]
async fn mqtt_3_1_3_8_empty_client_id_without_clean_session_refused_with_connack_0x02() {
    let gw = gateway().await;
    let mut raw = Raw::open(gw.mqtt_addr).await;
    raw.send(&connect_v311(false, 30, "")).await;
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            first: 0x20,
            body: vec![0x00, 0x02]
        }),
        "MQTT-3.1.3-9: CONNACK 0x02 identifier rejected"
    );
    raw.expect_closed("MQTT-3.1.3-9: the connection closed after the refusal")
        .await;
}

#[tokio::test]
async fn mqtt_3_1_0_2_second_connect_on_a_connection_closes_it() {
    let gw = gateway().await;
    let mut raw = Raw::connect(gw.mqtt_addr, "twice", 30).await;
    raw.send(&connect_v311(true, 30, "twice")).await;
    let extra = raw
        .expect_closed("MQTT-3.1.0-2: a second CONNECT closes the connection")
        .await;
    assert!(extra.is_empty(), "no second CONNACK: {extra:?}");
}

#[tokio::test]
async fn mqtt_3_1_4_2_same_client_id_takes_over_and_disconnects_the_first_connection() {
    let gw = gateway().await;
    let (mut first, _) = Client::connect(gw.mqtt_addr, "taken").await;
    let (mut second, _) = Client::connect(gw.mqtt_addr, "taken").await;
    first
        .closed_by_server("MQTT-3.1.4-2: the first connection to be closed")
        .await;
    // The new connection is the one that works.
    second.subscribe("takeover/t", QoS::AtLeastOnce).await;
    second
        .publish("takeover/t", QoS::AtLeastOnce, false, b"mine")
        .await;
    assert_eq!(
        second.publish_rx().await.payload,
        Bytes::from_static(b"mine")
    );
}

#[tokio::test]
async fn mqtt_3_1_2_2_mqtt_3_1_mqisdp_connect_accepted() {
    let gw = gateway().await;
    let mut raw = Raw::open(gw.mqtt_addr).await;
    raw.send(&connect_packet("MQIsdp", 3, true, 30, "v31-client", None))
        .await;
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            first: 0x20,
            body: vec![0x00, 0x00]
        }),
        "MQTT 3.1 CONNECT accepted"
    );
    // And it is served: subscribe and publish to itself at QoS 1.
    raw.send(&subscribe_packet(1, &[("v31/t", 1)])).await;
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            first: 0x90,
            body: vec![0, 1, 1]
        })
    );
    raw.send(&publish_packet("v31/t", b"hi", 1, 9, false, false))
        .await;
    let a = raw.read().await.expect("packet");
    let b = raw.read().await.expect("packet");
    let mut kinds = [a.kind(), b.kind()];
    kinds.sort();
    assert_eq!(kinds, [3, 4], "a PUBLISH and a PUBACK: {a:?} {b:?}");
    let publish = if a.kind() == 3 { a } else { b };
    assert!(publish.body.ends_with(b"hi"));
}

#[tokio::test]
async fn mqtt_3_1_mosquitto_pub_v31_reaches_a_v311_subscriber() {
    let gw = gateway().await;
    let (mut sub, _) = Client::connect(gw.mqtt_addr, "v31-sub").await;
    sub.subscribe("v31/mosq", QoS::AtLeastOnce).await;
    let port = gw.mqtt_addr.port().to_string();
    let out = within(
        WAIT,
        "mosquitto_pub",
        tokio::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                "mqttv31",
                "-i",
                "mosq31",
            ])
            .args(["-q", "1", "-t", "v31/mosq", "-m", "from 3.1"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mosquitto_pub runs");
    assert!(out.status.success(), "mosquitto_pub: {:?}", out);
    let p = sub.publish_rx().await;
    assert_eq!(p.payload, Bytes::from_static(b"from 3.1"));
}

// ---------------------------------------------------------------------------------------
// PUBLISH and QoS

/// Publish at `qos` from one rumqttc client to a subscriber granted QoS 2 and check the
/// acknowledgement flow on both sides.
async fn round_trip(qos: QoS, tag: &str) {
    let gw = gateway().await;
    let (mut sub, _) = Client::connect(gw.mqtt_addr, &format!("{tag}-sub")).await;
    let topic = format!("qos/{tag}");
    assert_eq!(
        sub.subscribe(&topic, QoS::ExactlyOnce).await,
        SubscribeReasonCode::Success(QoS::ExactlyOnce)
    );
    let (mut publisher, _) = Client::connect(gw.mqtt_addr, &format!("{tag}-pub")).await;
    publisher
        .client
        .publish(&topic, qos, false, b"payload".to_vec())
        .await
        .unwrap();
    // Publisher side: PUBACK for QoS 1; PUBREC, then (rumqttc sends PUBREL) PUBCOMP for QoS 2.
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => {
            publisher
                .expect("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
                .await
        }
        QoS::ExactlyOnce => {
            publisher
                .expect("PUBREC", |p| matches!(p, Packet::PubRec(_)).then_some(()))
                .await;
            publisher
                .expect("PUBCOMP", |p| matches!(p, Packet::PubComp(_)).then_some(()))
                .await;
        }
    }
    // Subscriber side: delivered at the published QoS; for QoS 2 the server answers the
    // subscriber's PUBREC with PUBREL (rumqttc then sends PUBCOMP).
    let p = sub.publish_rx().await;
    assert_eq!((p.topic.as_str(), p.qos), (topic.as_str(), qos));
    assert_eq!(p.payload, Bytes::from_static(b"payload"));
    assert!(!p.retain);
    if qos != QoS::AtMostOnce {
        assert_ne!(p.pkid, 0);
    }
    if qos == QoS::ExactlyOnce {
        sub.expect("PUBREL from the server", |q| {
            matches!(q, Packet::PubRel(_)).then_some(())
        })
        .await;
    }
    // The server keeps working after the exchange: a second message also arrives.
    publisher.publish(&topic, qos, false, b"again").await;
    assert_eq!(sub.publish_rx().await.payload, Bytes::from_static(b"again"));
}

#[tokio::test]
async fn mqtt_4_3_1_qos0_publish_delivered_both_directions() {
    round_trip(QoS::AtMostOnce, "q0").await;
}

#[tokio::test]
async fn mqtt_4_3_2_qos1_publish_puback_both_directions() {
    round_trip(QoS::AtLeastOnce, "q1").await;
}

#[tokio::test]
async fn mqtt_4_3_3_qos2_publish_pubrec_pubrel_pubcomp_both_directions() {
    round_trip(QoS::ExactlyOnce, "q2").await;
}

#[tokio::test]
async fn mqtt_4_3_3_qos2_dup_resend_before_pubrel_delivered_once() {
    let gw = gateway().await;
    let (mut sub, _) = Client::connect(gw.mqtt_addr, "dup-sub").await;
    sub.subscribe("dup/t", QoS::ExactlyOnce).await;

    let mut raw = Raw::connect(gw.mqtt_addr, "dup-pub", 30).await;
    raw.send(&publish_packet("dup/t", b"once", 2, 7, false, false))
        .await;
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            first: 0x50,
            body: vec![0, 7]
        }),
        "PUBREC"
    );
    // The PUBREC "got lost": the client re-sends with DUP=1 before PUBREL.
    raw.send(&publish_packet("dup/t", b"once", 2, 7, false, true))
        .await;
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            first: 0x50,
            body: vec![0, 7]
        }),
        "PUBREC again for the re-send"
    );
    raw.send(&[0x62, 2, 0, 7]).await; // PUBREL
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            first: 0x70,
            body: vec![0, 7]
        }),
        "PUBCOMP"
    );
    raw.send(&publish_packet("dup/t", b"after", 0, 0, false, false))
        .await;

    let got = sub.publishes_until(b"after").await;
    let payloads: Vec<_> = got.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(
        payloads,
        [Bytes::from_static(b"once"), Bytes::from_static(b"after")],
        "the QoS 2 message is delivered exactly once"
    );
}

#[tokio::test]
async fn mqtt_3_8_4_6_delivered_qos_is_min_of_published_and_granted() {
    let gw = gateway().await;
    let (mut sub, _) = Client::connect(gw.mqtt_addr, "min-sub").await;
    assert_eq!(
        sub.subscribe("min/one", QoS::AtLeastOnce).await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        sub.subscribe("min/zero", QoS::AtMostOnce).await,
        SubscribeReasonCode::Success(QoS::AtMostOnce)
    );
    let (mut publisher, _) = Client::connect(gw.mqtt_addr, "min-pub").await;
    publisher
        .publish("min/one", QoS::ExactlyOnce, false, b"2->1")
        .await;
    publisher
        .publish("min/one", QoS::AtMostOnce, false, b"0->0")
        .await;
    publisher
        .publish("min/zero", QoS::ExactlyOnce, false, b"2->0")
        .await;
    publisher
        .publish("min/zero", QoS::AtLeastOnce, false, b"end")
        .await;
    let got: Vec<_> = sub
        .publishes_until(b"end")
        .await
        .into_iter()
        .map(|p| (p.payload, p.qos))
        .collect();
    assert_eq!(
        got,
        [
            (Bytes::from_static(b"2->1"), QoS::AtLeastOnce),
            (Bytes::from_static(b"0->0"), QoS::AtMostOnce),
            (Bytes::from_static(b"2->0"), QoS::AtMostOnce),
            (Bytes::from_static(b"end"), QoS::AtMostOnce),
        ]
    );
}

#[tokio::test]
async fn mqtt_3_3_5_1_overlapping_subscriptions_deliver_one_copy_at_max_qos() {
    let gw = gateway().await;
    let (mut sub, _) = Client::connect(gw.mqtt_addr, "overlap-sub").await;
    sub.subscribe("ov/#", QoS::AtMostOnce).await;
    sub.subscribe("ov/+", QoS::ExactlyOnce).await;
    sub.subscribe("ov/a", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Client::connect(gw.mqtt_addr, "overlap-pub").await;
    publisher
        .publish("ov/a", QoS::ExactlyOnce, false, b"m")
        .await;
    publisher
        .publish("ov/a", QoS::AtMostOnce, false, b"end")
        .await;
    let got: Vec<_> = sub
        .publishes_until(b"end")
        .await
        .into_iter()
        .map(|p| (p.payload, p.qos))
        .collect();
    assert_eq!(
        got,
        [
            (Bytes::from_static(b"m"), QoS::ExactlyOnce),
            (Bytes::from_static(b"end"), QoS::AtMostOnce),
        ],
        "MQTT-3.3.5-1: one copy at the highest granted QoS"
    );
}

// ---------------------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE

#[tokio::test]
async fn mqtt_4_7_1_2_single_level_plus_wildcard() {
    let gw = gateway().await;
    let (mut sub, _) = Client::connect(gw.mqtt_addr, "plus-sub").await;
    sub.subscribe("plus/+/x", QoS::AtLeastOnce).await;
    sub.subscribe("end", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Client::connect(gw.mqtt_addr, "plus-pub").await;
    for t in [
        "plus/a/x",
        "plus/a/b/x",
        "plus/a/y",
        "plus/x",
        "plus//x",
        "plus/b/x",
    ] {
        publisher
            .publish(t, QoS::AtLeastOnce, false, t.as_bytes())
            .await;
    }
    publisher
        .publish("end", QoS::AtLeastOnce, false, b"end")
        .await;
    let topics: Vec<_> = sub
        .publishes_until(b"end")
        .await
        .into_iter()
        .map(|p| p.topic)
        .collect();
    assert_eq!(topics, ["plus/a/x", "plus//x", "plus/b/x", "end"]);
}

#[tokio::test]
async fn mqtt_4_7_1_2_multi_level_hash_wildcard_includes_the_parent() {
    let gw = gateway().await;
    let (mut sub, _) = Client::connect(gw.mqtt_addr, "hash-sub").await;
    sub.subscribe("hash/#", QoS::AtLeastOnce).await;
    sub.subscribe("end", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Client::connect(gw.mqtt_addr, "hash-pub").await;
    for t in ["hash", "hash/a", "hash/a/b/c", "hashx", "other/hash"] {
        publisher
            .publish(t, QoS::AtLeastOnce, false, t.as_bytes())
            .await;
    }
    publisher
        .publish("end", QoS::AtLeastOnce, false, b"end")
        .await;
    let topics: Vec<_> = sub
        .publishes_until(b"end")
        .await
        .into_iter()
        .map(|p| p.topic)
        .collect();
    assert_eq!(topics, ["hash", "hash/a", "hash/a/b/c", "end"]);
}

#[tokio::test]
async fn mqtt_3_10_4_unsubscribe_stops_delivery() {
    let gw = gateway().await;
    let (mut sub, _) = Client::connect(gw.mqtt_addr, "unsub-sub").await;
    sub.subscribe("unsub/+", QoS::AtLeastOnce).await;
    sub.subscribe("end", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Client::connect(gw.mqtt_addr, "unsub-pub").await;
    publisher
        .publish("unsub/a", QoS::AtLeastOnce, false, b"before")
        .await;
    assert_eq!(
        sub.publish_rx().await.payload,
        Bytes::from_static(b"before")
    );

    sub.client.unsubscribe("unsub/+").await.unwrap();
    sub.expect("UNSUBACK", |p| {
        matches!(p, Packet::UnsubAck(_)).then_some(())
    })
    .await;
    publisher
        .publish("unsub/a", QoS::AtLeastOnce, false, b"after")
        .await;
    publisher
        .publish("end", QoS::AtLeastOnce, false, b"end")
        .await;
    let got: Vec<_> = sub
        .publishes_until(b"end")
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(got, [Bytes::from_static(b"end")], "nothing after UNSUBACK");
}

#[tokio::test]
async fn mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcards() {
    let gw = gateway().await;
    let (mut all, _) = Client::connect(gw.mqtt_addr, "dollar-all").await;
    all.subscribe("#", QoS::AtLeastOnce).await;
    all.subscribe("+/status", QoS::AtLeastOnce).await;
    // Control: an explicit `$app/...` filter does see the message. (Any `$` topic: `$SYS`
    // itself is written by the broker alone.)
    let (mut sys, _) = Client::connect(gw.mqtt_addr, "dollar-sys").await;
    sys.subscribe("$app/#", QoS::AtLeastOnce).await;

    let (mut publisher, _) = Client::connect(gw.mqtt_addr, "dollar-pub").await;
    publisher
        .publish("$app/status", QoS::AtLeastOnce, false, b"dollar")
        .await;
    publisher
        .publish("plain/status", QoS::AtLeastOnce, false, b"end")
        .await;

    let p = sys.publish_rx().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_ref()),
        ("$app/status", &b"dollar"[..])
    );
    let got: Vec<_> = all
        .publishes_until(b"end")
        .await
        .into_iter()
        .map(|p| p.topic)
        .collect();
    assert_eq!(
        got,
        ["plain/status"],
        "MQTT-4.7.2-1: `#` and `+/...` skip $-topics"
    );
}

#[tokio::test]
async fn mqtt_3_9_3_invalid_filter_gets_suback_failure_0x80() {
    let gw = gateway().await;
    let (mut c, _) = Client::connect(gw.mqtt_addr, "badfilter").await;
    c.client
        .subscribe_many([
            SubscribeFilter::new("ok/t".into(), QoS::AtLeastOnce),
            SubscribeFilter::new("a/#/b".into(), QoS::AtLeastOnce),
            SubscribeFilter::new("a/b+".into(), QoS::AtMostOnce),
        ])
        .await
        .unwrap();
    assert_eq!(
        c.suback().await,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
        ]
    );
    // The connection stays usable and the valid filter works.
    c.publish("ok/t", QoS::AtLeastOnce, false, b"fine").await;
    assert_eq!(c.publish_rx().await.payload, Bytes::from_static(b"fine"));

    // Byte for byte: the failure code is 0x80.
    let mut raw = Raw::connect(gw.mqtt_addr, "badfilter-raw", 30).await;
    raw.send(&subscribe_packet(3, &[("a/#/b", 0)])).await;
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            first: 0x90,
            body: vec![0, 3, 0x80]
        })
    );
}

// ---------------------------------------------------------------------------------------
// Retained messages

#[tokio::test]
async fn mqtt_3_3_1_8_retained_sent_on_subscribe_with_retain_flag() {
    let gw = gateway().await;
    let (mut publisher, _) = Client::connect(gw.mqtt_addr, "ret-pub").await;
    publisher
        .publish("ret/a", QoS::AtLeastOnce, true, b"kept")
        .await;
    publisher
        .publish("ret/b", QoS::AtLeastOnce, false, b"not kept")
        .await;

    let (mut sub, _) = Client::connect(gw.mqtt_addr, "ret-sub").await;
    sub.subscribe("ret/+", QoS::AtLeastOnce).await;
    let p = sub.publish_rx().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_ref()),
        ("ret/a", &b"kept"[..])
    );
    assert!(
        p.retain,
        "MQTT-3.3.1-8: RETAIN=1 on a message sent because of a new subscription"
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);

    // MQTT-3.3.1-9: a retained publish forwarded live has RETAIN=0.
    publisher
        .publish("ret/a", QoS::AtLeastOnce, true, b"live")
        .await;
    let p = sub.publish_rx().await;
    assert_eq!(p.payload, Bytes::from_static(b"live"));
    assert!(!p.retain, "MQTT-3.3.1-9: RETAIN=0 on live forwarding");
}

#[tokio::test]
async fn mqtt_3_3_1_9_live_messages_forwarded_with_retain_0() {
    let gw = gateway().await;
    let (mut sub, _) = Client::connect(gw.mqtt_addr, "live-sub").await;
    sub.subscribe("live/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Client::connect(gw.mqtt_addr, "live-pub").await;
    publisher
        .publish("live/t", QoS::AtLeastOnce, true, b"r")
        .await;
    publisher
        .publish("live/t", QoS::AtMostOnce, true, b"r0")
        .await;
    let got: Vec<_> = sub.publishes_until(b"r0").await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| !p.retain), "{got:?}");
}

#[tokio::test]
async fn mqtt_3_3_1_10_empty_retained_publish_clears_the_value() {
    let gw = gateway().await;
    let (mut current, _) = Client::connect(gw.mqtt_addr, "clear-current").await;
    current.subscribe("clear/t", QoS::AtLeastOnce).await;

    let (mut publisher, _) = Client::connect(gw.mqtt_addr, "clear-pub").await;
    publisher
        .publish("clear/t", QoS::AtLeastOnce, true, b"value")
        .await;
    publisher
        .publish("clear/t", QoS::AtLeastOnce, true, b"")
        .await;

    // MQTT-3.3.1-10: the zero-byte retained message is still forwarded to current subscribers.
    let got: Vec<_> = current
        .publishes_until(b"")
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(got, [Bytes::from_static(b"value"), Bytes::new()]);

    // MQTT-3.3.1-11: nothing is retained any more — a new subscriber's first message is the
    // live sentinel, not a retained value (retained copies are queued before live ones).
    let (mut late, _) = Client::connect(gw.mqtt_addr, "clear-late").await;
    late.subscribe("clear/t", QoS::AtLeastOnce).await;
    publisher
        .publish("clear/t", QoS::AtLeastOnce, false, b"sentinel")
        .await;
    let p = late.publish_rx().await;
    assert_eq!(
        p.payload,
        Bytes::from_static(b"sentinel"),
        "no retained value left: {p:?}"
    );
    assert!(!p.retain);
    assert!(gw
        .broker
        .get(&ponte::model::TopicName::parse("clear/t").unwrap())
        .is_none());
}

// ---------------------------------------------------------------------------------------
// Sessions

#[tokio::test]
async fn mqtt_3_1_2_4_clean_session_0_keeps_subscriptions_and_queues_qos1_while_away() {
    let gw = gateway().await;
    let mut opts = options(gw.mqtt_addr, "persistent");
    opts.set_clean_session(false);
    let (mut c, ack) = Client::connect_with(opts.clone()).await;
    assert!(!ack.session_present, "no session existed yet");
    c.subscribe("away/t", QoS::AtLeastOnce).await;
    c.disconnect().await;

    let (mut publisher, _) = Client::connect(gw.mqtt_addr, "away-pub").await;
    publisher
        .publish("away/t", QoS::AtLeastOnce, false, b"m1")
        .await;
    publisher
        .publish("away/t", QoS::AtLeastOnce, false, b"m2")
        .await;

    let (mut c, ack) = Client::connect_with(opts).await;
    assert!(ack.session_present, "MQTT-3.2.2-2: session present = 1");
    // No new SUBSCRIBE: the subscription and the queued messages survived.
    let got: Vec<_> = c
        .publishes_until(b"m2")
        .await
        .into_iter()
        .map(|p| (p.payload, p.qos))
        .collect();
    assert_eq!(
        got,
        [
            (Bytes::from_static(b"m1"), QoS::AtLeastOnce),
            (Bytes::from_static(b"m2"), QoS::AtLeastOnce)
        ]
    );
    // And live messages keep flowing on the resumed subscription.
    publisher
        .publish("away/t", QoS::AtLeastOnce, false, b"m3")
        .await;
    assert_eq!(c.publish_rx().await.payload, Bytes::from_static(b"m3"));
}

// ---------------------------------------------------------------------------------------
// Errors close only the offending connection

/// A bystander that must keep working while another connection misbehaves.
async fn bystander_still_works(c: &mut Client, topic: &str) {
    c.publish(topic, QoS::AtLeastOnce, false, b"still here")
        .await;
    let got: Vec<_> = c
        .publishes_until(b"still here")
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(
        got,
        [Bytes::from_static(b"still here")],
        "nothing from the bad connection"
    );
}

#[tokio::test]
async fn mqtt_4_8_0_1_malformed_packet_closes_only_that_connection() {
    let gw = gateway().await;
    let (mut ok, _) = Client::connect(gw.mqtt_addr, "malformed-bystander").await;
    ok.subscribe("mal/#", QoS::AtLeastOnce).await;

    // Reserved packet type 0.
    let mut bad = Raw::connect(gw.mqtt_addr, "malformed-1", 30).await;
    bad.send(&[0x00, 0x00]).await;
    bad.expect_closed("a reserved packet type to close the connection")
        .await;

    // PUBLISH with QoS 3 (MQTT-3.3.1-4).
    let mut bad = Raw::connect(gw.mqtt_addr, "malformed-2", 30).await;
    bad.send(&[0x36, 7, 0, 3, b'm', b'a', b'l', 0, 1]).await;
    bad.expect_closed("a QoS 3 PUBLISH to close the connection")
        .await;

    // Invalid UTF-8 in a topic name (MQTT-1.5.3-1).
    let mut bad = Raw::connect(gw.mqtt_addr, "malformed-3", 30).await;
    bad.send(&[0x30, 8, 0, 6, b'm', b'a', b'l', b'/', 0xff, 0xfe])
        .await;
    bad.expect_closed("an invalid UTF-8 topic to close the connection")
        .await;

    bystander_still_works(&mut ok, "mal/ok").await;
}

#[tokio::test]
async fn mqtt_3_3_2_2_wildcard_in_publish_topic_closes_only_that_connection() {
    let gw = gateway().await;
    let (mut ok, _) = Client::connect(gw.mqtt_addr, "wild-bystander").await;
    ok.subscribe("#", QoS::AtLeastOnce).await;

    for (i, topic) in ["wild/+", "wild/#"].into_iter().enumerate() {
        let mut bad = Raw::connect(gw.mqtt_addr, &format!("wild-{i}"), 30).await;
        bad.send(&publish_packet(topic, b"nope", 1, 1, false, false))
            .await;
        let seen = bad
            .expect_closed("MQTT-3.3.2-2: a wildcard topic name closes the connection")
            .await;
        assert!(seen.is_empty(), "no PUBACK for {topic}: {seen:?}");
    }
    bystander_still_works(&mut ok, "wild/ok").await;
}

#[tokio::test]
async fn mqtt_max_packet_size_exceeded_closes_the_connection() {
    let gw = gateway_with(|c| c.mqtt.max_packet_size = 1024).await;
    let (mut ok, _) = Client::connect(gw.mqtt_addr, "big-bystander").await;
    ok.subscribe("big/t", QoS::AtLeastOnce).await;

    let mut raw = Raw::connect(gw.mqtt_addr, "big", 30).await;
    // Under the limit: accepted.
    raw.send(&publish_packet("big/t", &[b's'; 900], 1, 1, false, false))
        .await;
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            first: 0x40,
            body: vec![0, 1]
        })
    );
    assert_eq!(ok.publish_rx().await.payload.len(), 900);
    // Over it: only the header needs to arrive for the connection to be dropped.
    let big = publish_packet("big/t", &[b'b'; 2000], 1, 2, false, false);
    raw.send(&big[..16]).await;
    let seen = raw
        .expect_closed("a packet above max_packet_size to close the connection")
        .await;
    assert!(seen.is_empty(), "no PUBACK: {seen:?}");
    bystander_still_works(&mut ok, "big/t").await;
}

// ---------------------------------------------------------------------------------------
// Will

#[tokio::test]
async fn mqtt_3_1_2_8_will_published_when_the_socket_drops() {
    let gw = gateway().await;
    let (mut watcher, _) = Client::connect(gw.mqtt_addr, "will-watcher").await;
    watcher.subscribe("will/drop", QoS::AtLeastOnce).await;

    let mut opts = options(gw.mqtt_addr, "will-dropper");
    opts.set_last_will(LastWill::new(
        "will/drop",
        "dropped",
        QoS::AtLeastOnce,
        false,
    ));
    let (c, _) = Client::connect_with(opts).await;
    c.drop_socket().await;

    let p = watcher.publish_rx().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_ref()),
        ("will/drop", &b"dropped"[..])
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn mqtt_3_14_4_3_will_discarded_on_disconnect() {
    let gw = gateway().await;
    let (mut watcher, _) = Client::connect(gw.mqtt_addr, "nowill-watcher").await;
    watcher.subscribe("will/clean", QoS::AtLeastOnce).await;

    let mut opts = options(gw.mqtt_addr, "nowill-client");
    opts.set_last_will(LastWill::new(
        "will/clean",
        "should not",
        QoS::AtLeastOnce,
        false,
    ));
    let (c, _) = Client::connect_with(opts).await;
    // Returns once the server closed the socket, i.e. after it handled the DISCONNECT (a
    // will would have been published before that).
    c.disconnect().await;

    watcher
        .publish("will/clean", QoS::AtLeastOnce, false, b"sentinel")
        .await;
    let got: Vec<_> = watcher
        .publishes_until(b"sentinel")
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(
        got,
        [Bytes::from_static(b"sentinel")],
        "MQTT-3.14.4-3: no will after DISCONNECT"
    );
}

#[tokio::test]
async fn mqtt_3_1_2_8_will_published_on_protocol_violation() {
    let gw = gateway().await;
    let (mut watcher, _) = Client::connect(gw.mqtt_addr, "violation-watcher").await;
    watcher.subscribe("will/violation", QoS::AtLeastOnce).await;

    let mut raw = Raw::open(gw.mqtt_addr).await;
    raw.send(&connect_packet(
        "MQTT",
        4,
        true,
        30,
        "violator",
        Some(("will/violation", b"broke the rules", 0, false)),
    ))
    .await;
    assert_eq!(
        raw.read().await,
        Some(RawPacket {
            first: 0x20,
            body: vec![0, 0]
        })
    );
    raw.send(&connect_v311(true, 30, "violator")).await;
    raw.expect_closed("the second CONNECT to close the connection")
        .await;
    let p = watcher.publish_rx().await;
    assert_eq!(p.payload, Bytes::from_static(b"broke the rules"));
}
