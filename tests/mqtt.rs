#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Black-box tests of the MQTT 3.1/3.1.1 broker front-end, over real sockets on 127.0.0.1,
//! with rumqttc as the client and raw bytes for protocol violations. Test names carry the
//! clause of the MQTT 3.1.1 specification they check.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use rumqttc::{LastWill, Packet, QoS, SubscribeFilter, SubscribeReasonCode};

/// A connected rumqttc client `id` of `gw` (clean session).
async fn client(gw: &ponte::Gateway, id: &str) -> Client {
    Client::connect(gw.mqtt_addr, id).await.0
}

/// (payload, QoS) of each message `sub` receives, up to and including `sentinel`.
async fn received(sub: &mut Client, sentinel: &[u8]) -> Vec<(Bytes, QoS)> {
    let got = sub.publishes_until(sentinel).await;
    got.into_iter().map(|p| (p.payload, p.qos)).collect()
}

/// The payloads `sub` receives, up to and including `sentinel`.
async fn payloads(sub: &mut Client, sentinel: &[u8]) -> Vec<Bytes> {
    received(sub, sentinel)
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// `(payload, qos)` for an expected delivery.
fn at(payload: &'static [u8], qos: QoS) -> (Bytes, QoS) {
    (Bytes::from_static(payload), qos)
}

/// A watcher of the will's topic, and a raw CONNECT of `id` (Keep Alive `keep_alive`) with
/// `will`, its CONNACK checked byte for byte.
async fn raw_will(
    gw: &ponte::Gateway,
    id: &str,
    keep_alive: u16,
    will: RawWill<'_>,
) -> (Client, V3) {
    let watcher = Client::subscriber(gw.mqtt_addr, &format!("{id}-watcher"), will.0).await;
    let mut raw = V3::open(gw.mqtt_addr).await;
    let connect = connect_packet("MQTT", 4, true, keep_alive, id, Some(will));
    raw.send_raw(&connect).await;
    raw.expect_bytes(0x20, &[0, 0], "CONNACK accepted").await;
    (watcher, raw)
}

// ---------------------------------------------------------------------------------------
// CONNECT / CONNACK

#[tokio::test]
async fn mqtt_3_2_connect_answered_with_connack_accepted() {
    let gw = gateway().await;
    let (_c, ack) = Client::connect(gw.mqtt_addr, "connack").await;
    let why = "MQTT-3.2.2-1: clean session → session present 0";
    assert!(!ack.session_present, "{why}");

    // The same exchange byte for byte.
    let mut raw = V3::open(gw.mqtt_addr).await;
    raw.send_raw(&connect_v311(true, 30, "connack-raw")).await;
    raw.expect_bytes(0x20, &[0x00, 0x00], "CONNACK").await;
    raw.ping().await;
}

#[tokio::test]
async fn mqtt_3_1_2_10_keep_alive_zero_turns_the_timeout_off() {
    let gw = gateway().await;
    let mut zero = V3::connect_ka(gw.mqtt_addr, "ka-zero", 0).await;
    let mut one = V3::connect_ka(gw.mqtt_addr, "ka-one", 1).await;
    // The control connection (Keep Alive 1 s) is closed after 1.5 s of silence...
    let what = "the keep alive 1 s connection to time out";
    one.expect_closed_within(Duration::from_secs(3), what).await;
    // ...and the Keep Alive 0 connection, just as silent, outlives it by more than another
    // 1.5 s: no timer runs for it.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    zero.ping().await;
}

#[tokio::test]
async fn mqtt_3_1_2_24_keep_alive_timeout_after_one_and_a_half_times_publishes_the_will() {
    let gw = gateway().await;
    let will = ("will/ka", &b"gone silent"[..], 1, false);
    let (mut watcher, mut silent) = raw_will(&gw, "ka-silent", 1, will).await;
    let connected = Instant::now();

    let will = watcher.publish_rx().await;
    let elapsed = connected.elapsed();
    assert_eq!(will.topic, "will/ka");
    assert_eq!(will.payload, Bytes::from_static(b"gone silent"));
    let in_time = elapsed >= Duration::from_millis(1400) && elapsed <= Duration::from_millis(2600);
    assert!(
        in_time,
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
    let mut raw = V3::open(gw.mqtt_addr).await;
    raw.send_raw(&connect_v311(false, 30, "")).await;
    let why = "MQTT-3.1.3-9: CONNACK 0x02 identifier rejected";
    raw.expect_bytes(0x20, &[0x00, 0x02], why).await;
    raw.expect_closed("MQTT-3.1.3-9: the connection closed after the refusal")
        .await;
}

#[tokio::test]
async fn mqtt_3_1_0_2_second_connect_on_a_connection_closes_it() {
    let gw = gateway().await;
    let mut raw = V3::connect(gw.mqtt_addr, "twice").await;
    raw.send_raw(&connect_v311(true, 30, "twice")).await;
    let extra = raw
        .expect_closed("MQTT-3.1.0-2: a second CONNECT closes the connection")
        .await;
    assert!(extra.is_empty(), "no second CONNACK: {extra:?}");
}

#[tokio::test]
async fn mqtt_3_1_4_2_same_client_id_takes_over_and_disconnects_the_first_connection() {
    let gw = gateway().await;
    let mut first = client(&gw, "taken").await;
    let mut second = client(&gw, "taken").await;
    first
        .closed_by_server("MQTT-3.1.4-2: the first connection to be closed")
        .await;
    // The new connection is the one that works.
    second.subscribe("takeover/t", QoS::AtLeastOnce).await;
    second.publish_each(&[("takeover/t", b"mine")]).await;
    let got = second.publish_rx().await.payload;
    assert_eq!(got, Bytes::from_static(b"mine"));
}

#[tokio::test]
async fn mqtt_3_1_2_2_mqtt_3_1_mqisdp_connect_accepted() {
    let gw = gateway().await;
    let mut raw = V3::open(gw.mqtt_addr).await;
    raw.send_raw(&connect_packet("MQIsdp", 3, true, 30, "v31-client", None))
        .await;
    let why = "MQTT 3.1 CONNECT accepted";
    raw.expect_bytes(0x20, &[0x00, 0x00], why).await;
    // And it is served: subscribe and publish to itself at QoS 1.
    raw.send_raw(&subscribe_packet(1, &[("v31/t", 1)])).await;
    raw.expect_bytes(0x90, &[0, 1, 1], "SUBACK").await;
    raw.send_raw(&publish_packet("v31/t", b"hi", 1, 9, false, false))
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
    if !have("mosquitto_pub") {
        return;
    }
    let gw = gateway().await;
    let mut sub = Client::subscriber(gw.mqtt_addr, "v31-sub", "v31/mosq").await;
    let port = gw.mqtt_addr.port();
    let out = Cmd::new("mosquitto_pub")
        .words(&format!("-h 127.0.0.1 -p {port} -V mqttv31 -i mosq31"))
        .words("-q 1 -t v31/mosq -m")
        .arg("from 3.1")
        .limit(WAIT)
        .run()
        .await;
    assert_eq!(out.code, Some(0), "mosquitto_pub: {}", out.all());
    let p = sub.publish_rx().await;
    assert_eq!(p.payload, Bytes::from_static(b"from 3.1"));
}

// ---------------------------------------------------------------------------------------
// PUBLISH and QoS

/// Publish at `qos` from one rumqttc client to a subscriber granted QoS 2 and check the
/// acknowledgement flow on both sides.
async fn round_trip(qos: QoS, tag: &str) {
    let gw = gateway().await;
    let mut sub = client(&gw, &format!("{tag}-sub")).await;
    let topic = format!("qos/{tag}");
    assert_eq!(
        sub.subscribe(&topic, QoS::ExactlyOnce).await,
        SubscribeReasonCode::Success(QoS::ExactlyOnce)
    );
    let mut publisher = client(&gw, &format!("{tag}-pub")).await;
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
                .expect_kind("PUBACK", |p| matches!(p, Packet::PubAck(_)))
                .await
        }
        QoS::ExactlyOnce => {
            publisher
                .expect_kind("PUBREC", |p| matches!(p, Packet::PubRec(_)))
                .await;
            publisher
                .expect_kind("PUBCOMP", |p| matches!(p, Packet::PubComp(_)))
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
        sub.expect_kind("PUBREL from the server", |q| matches!(q, Packet::PubRel(_)))
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
    let mut sub = client(&gw, "dup-sub").await;
    sub.subscribe("dup/t", QoS::ExactlyOnce).await;

    let mut raw = V3::connect(gw.mqtt_addr, "dup-pub").await;
    raw.send_raw(&publish_packet("dup/t", b"once", 2, 7, false, false))
        .await;
    raw.expect_bytes(0x50, &[0, 7], "PUBREC").await;
    // The PUBREC "got lost": the client re-sends with DUP=1 before PUBREL.
    raw.send_raw(&publish_packet("dup/t", b"once", 2, 7, false, true))
        .await;
    raw.expect_bytes(0x50, &[0, 7], "PUBREC again for the re-send")
        .await;
    raw.send_raw(&ack_packet(0x62, 7)).await; // PUBREL
    raw.expect_bytes(0x70, &[0, 7], "PUBCOMP").await;
    raw.send_raw(&publish_packet("dup/t", b"after", 0, 0, false, false))
        .await;

    let got = payloads(&mut sub, b"after").await;
    let want = [Bytes::from_static(b"once"), Bytes::from_static(b"after")];
    assert_eq!(got, want, "the QoS 2 message is delivered exactly once");
}

#[tokio::test]
async fn mqtt_3_8_4_6_delivered_qos_is_min_of_published_and_granted() {
    let gw = gateway().await;
    let mut sub = client(&gw, "min-sub").await;
    for (filter, qos) in [("min/one", QoS::AtLeastOnce), ("min/zero", QoS::AtMostOnce)] {
        let granted = sub.subscribe(filter, qos).await;
        assert_eq!(granted, SubscribeReasonCode::Success(qos));
    }
    let mut publisher = client(&gw, "min-pub").await;
    let sends: [(&str, QoS, &[u8]); 4] = [
        ("min/one", QoS::ExactlyOnce, b"2->1"),
        ("min/one", QoS::AtMostOnce, b"0->0"),
        ("min/zero", QoS::ExactlyOnce, b"2->0"),
        ("min/zero", QoS::AtLeastOnce, b"end"),
    ];
    for (topic, qos, payload) in sends {
        publisher.publish(topic, qos, false, payload).await;
    }
    assert_eq!(
        received(&mut sub, b"end").await,
        [
            at(b"2->1", QoS::AtLeastOnce),
            at(b"0->0", QoS::AtMostOnce),
            at(b"2->0", QoS::AtMostOnce),
            at(b"end", QoS::AtMostOnce),
        ]
    );
}

#[tokio::test]
async fn mqtt_3_3_5_1_overlapping_subscriptions_deliver_one_copy_at_max_qos() {
    let gw = gateway().await;
    let mut sub = client(&gw, "overlap-sub").await;
    sub.subscribe("ov/#", QoS::AtMostOnce).await;
    sub.subscribe("ov/+", QoS::ExactlyOnce).await;
    sub.subscribe("ov/a", QoS::AtLeastOnce).await;
    let mut publisher = client(&gw, "overlap-pub").await;
    publisher
        .publish_all(&[
            ("ov/a", QoS::ExactlyOnce, false, b"m"),
            ("ov/a", QoS::AtMostOnce, false, b"end"),
        ])
        .await;
    let got = received(&mut sub, b"end").await;
    let want = [at(b"m", QoS::ExactlyOnce), at(b"end", QoS::AtMostOnce)];
    assert_eq!(
        got, want,
        "MQTT-3.3.5-1: one copy at the highest granted QoS"
    );
}

// ---------------------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE

/// A subscriber of `filter` (and of the sentinel topic `end`); each of `topics` published
/// with its name as payload, then `end`: the topics the subscriber got, in order.
async fn matched(filter: &str, topics: &[&str]) -> Vec<String> {
    let gw = gateway().await;
    let mut sub = Client::subscriber(gw.mqtt_addr, "match-sub", filter).await;
    sub.subscribe("end", QoS::AtLeastOnce).await;
    let mut publisher = client(&gw, "match-pub").await;
    for t in topics.iter().chain(&["end"]) {
        publisher.publish_each(&[(t, t.as_bytes())]).await;
    }
    let got = sub.publishes_until(b"end").await;
    got.into_iter().map(|p| p.topic).collect()
}

#[tokio::test]
async fn mqtt_4_7_1_2_single_level_plus_wildcard() {
    let topics = [
        "plus/a/x",
        "plus/a/b/x",
        "plus/a/y",
        "plus/x",
        "plus//x",
        "plus/b/x",
    ];
    let got = matched("plus/+/x", &topics).await;
    assert_eq!(got, ["plus/a/x", "plus//x", "plus/b/x", "end"]);
}

#[tokio::test]
async fn mqtt_4_7_1_2_multi_level_hash_wildcard_includes_the_parent() {
    let topics = ["hash", "hash/a", "hash/a/b/c", "hashx", "other/hash"];
    let got = matched("hash/#", &topics).await;
    assert_eq!(got, ["hash", "hash/a", "hash/a/b/c", "end"]);
}

#[tokio::test]
async fn mqtt_3_10_4_unsubscribe_stops_delivery() {
    let gw = gateway().await;
    let mut sub = Client::subscriber(gw.mqtt_addr, "unsub-sub", "unsub/+").await;
    sub.subscribe("end", QoS::AtLeastOnce).await;
    let mut publisher = client(&gw, "unsub-pub").await;
    publisher.publish_each(&[("unsub/a", b"before")]).await;
    let before = sub.publish_rx().await.payload;
    assert_eq!(before, Bytes::from_static(b"before"));

    sub.client.unsubscribe("unsub/+").await.unwrap();
    sub.expect_kind("UNSUBACK", |p| matches!(p, Packet::UnsubAck(_)))
        .await;
    let after: [(&str, &[u8]); 2] = [("unsub/a", b"after"), ("end", b"end")];
    publisher.publish_each(&after).await;
    let got = payloads(&mut sub, b"end").await;
    assert_eq!(got, [Bytes::from_static(b"end")], "nothing after UNSUBACK");
}

#[tokio::test]
async fn mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcards() {
    let gw = gateway().await;
    let mut all = Client::subscriber(gw.mqtt_addr, "dollar-all", "#").await;
    all.subscribe("+/status", QoS::AtLeastOnce).await;
    // Control: an explicit `$app/...` filter does see the message. (Any `$` topic: `$SYS`
    // itself is written by the broker alone.)
    let mut sys = Client::subscriber(gw.mqtt_addr, "dollar-sys", "$app/#").await;

    let mut publisher = client(&gw, "dollar-pub").await;
    let sends: [(&str, &[u8]); 2] = [("$app/status", b"dollar"), ("plain/status", b"end")];
    publisher.publish_each(&sends).await;

    let p = sys.publish_rx().await;
    let got = (p.topic.as_str(), p.payload.as_ref());
    assert_eq!(got, ("$app/status", &b"dollar"[..]));
    let got: Vec<_> = all.publishes_until(b"end").await;
    let topics: Vec<_> = got.into_iter().map(|p| p.topic).collect();
    let why = "MQTT-4.7.2-1: `#` and `+/...` skip $-topics";
    assert_eq!(topics, ["plain/status"], "{why}");
}

#[tokio::test]
async fn mqtt_3_9_3_invalid_filter_gets_suback_failure_0x80() {
    let gw = gateway().await;
    let mut c = client(&gw, "badfilter").await;
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
    let mut raw = V3::connect(gw.mqtt_addr, "badfilter-raw").await;
    raw.send_raw(&subscribe_packet(3, &[("a/#/b", 0)])).await;
    raw.expect_bytes(0x90, &[0, 3, 0x80], "SUBACK").await;
}

// ---------------------------------------------------------------------------------------
// Retained messages

#[tokio::test]
async fn mqtt_3_3_1_8_retained_sent_on_subscribe_with_retain_flag() {
    let gw = gateway().await;
    let mut publisher = client(&gw, "ret-pub").await;
    for (topic, retain, payload) in [("ret/a", true, &b"kept"[..]), ("ret/b", false, b"not kept")] {
        publisher
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await;
    }

    let mut sub = Client::subscriber(gw.mqtt_addr, "ret-sub", "ret/+").await;
    let p = sub.publish_rx().await;
    let got = (p.topic.as_str(), p.payload.as_ref());
    assert_eq!(got, ("ret/a", &b"kept"[..]));
    let why = "MQTT-3.3.1-8: RETAIN=1 on a message sent because of a new subscription";
    assert!(p.retain, "{why}");
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
    let mut sub = Client::subscriber(gw.mqtt_addr, "live-sub", "live/t").await;
    let mut publisher = client(&gw, "live-pub").await;
    for (qos, payload) in [(QoS::AtLeastOnce, &b"r"[..]), (QoS::AtMostOnce, b"r0")] {
        publisher.publish("live/t", qos, true, payload).await;
    }
    let got: Vec<_> = sub.publishes_until(b"r0").await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| !p.retain), "{got:?}");
}

#[tokio::test]
async fn mqtt_3_3_1_10_empty_retained_publish_clears_the_value() {
    let gw = gateway().await;
    let mut current = Client::subscriber(gw.mqtt_addr, "clear-current", "clear/t").await;

    let mut publisher = client(&gw, "clear-pub").await;
    for payload in [&b"value"[..], b""] {
        publisher
            .publish("clear/t", QoS::AtLeastOnce, true, payload)
            .await;
    }

    // MQTT-3.3.1-10: the zero-byte retained message is still forwarded to current subscribers.
    let got = payloads(&mut current, b"").await;
    assert_eq!(got, [Bytes::from_static(b"value"), Bytes::new()]);

    // MQTT-3.3.1-11: nothing is retained any more — a new subscriber's first message is the
    // live sentinel, not a retained value (retained copies are queued before live ones).
    let mut late = Client::subscriber(gw.mqtt_addr, "clear-late", "clear/t").await;
    publisher.publish_each(&[("clear/t", b"sentinel")]).await;
    let p = late.publish_rx().await;
    let why = format!("no retained value left: {p:?}");
    assert_eq!(p.payload, Bytes::from_static(b"sentinel"), "{why}");
    assert!(!p.retain);
    assert!(retained(&gw, "clear/t").is_none());
}

// ---------------------------------------------------------------------------------------
// Sessions

#[tokio::test]
async fn mqtt_3_1_2_4_clean_session_0_keeps_subscriptions_and_queues_qos1_while_away() {
    let gw = gateway().await;
    let opts = persistent(gw.mqtt_addr, "persistent");
    let (mut c, ack) = Client::connect_with(opts.clone()).await;
    assert!(!ack.session_present, "no session existed yet");
    c.subscribe("away/t", QoS::AtLeastOnce).await;
    c.disconnect().await;

    let mut publisher = client(&gw, "away-pub").await;
    let away: [(&str, &[u8]); 2] = [("away/t", b"m1"), ("away/t", b"m2")];
    publisher.publish_each(&away).await;

    let (mut c, ack) = Client::connect_with(opts).await;
    assert!(ack.session_present, "MQTT-3.2.2-2: session present = 1");
    // No new SUBSCRIBE: the subscription and the queued messages survived.
    let got = received(&mut c, b"m2").await;
    let want = [at(b"m1", QoS::AtLeastOnce), at(b"m2", QoS::AtLeastOnce)];
    assert_eq!(got, want);
    // And live messages keep flowing on the resumed subscription.
    publisher.publish_each(&[("away/t", b"m3")]).await;
    assert_eq!(c.publish_rx().await.payload, Bytes::from_static(b"m3"));
}

// ---------------------------------------------------------------------------------------
// Errors close only the offending connection

/// A bystander that must keep working while another connection misbehaves.
async fn bystander_still_works(c: &mut Client, topic: &str) {
    c.publish_each(&[(topic, b"still here")]).await;
    let got = payloads(c, b"still here").await;
    let want = [Bytes::from_static(b"still here")];
    assert_eq!(got, want, "nothing from the bad connection");
}

#[tokio::test]
async fn mqtt_4_8_0_1_malformed_packet_closes_only_that_connection() {
    let gw = gateway().await;
    let mut ok = Client::subscriber(gw.mqtt_addr, "malformed-bystander", "mal/#").await;
    let cases: [(&str, &[u8], &str); 3] = [
        // Reserved packet type 0.
        ("malformed-1", &[0x00, 0x00], "a reserved packet type"),
        // PUBLISH with QoS 3 (MQTT-3.3.1-4).
        (
            "malformed-2",
            &[0x36, 7, 0, 3, b'm', b'a', b'l', 0, 1],
            "a QoS 3 PUBLISH",
        ),
        // Invalid UTF-8 in a topic name (MQTT-1.5.3-1).
        (
            "malformed-3",
            &[0x30, 8, 0, 6, b'm', b'a', b'l', b'/', 0xff, 0xfe],
            "an invalid UTF-8 topic",
        ),
    ];
    for (id, bytes, what) in cases {
        let mut bad = V3::connect(gw.mqtt_addr, id).await;
        bad.send_raw(bytes).await;
        bad.expect_closed(&format!("{what} to close the connection"))
            .await;
    }
    bystander_still_works(&mut ok, "mal/ok").await;
}

#[tokio::test]
async fn mqtt_3_3_2_2_wildcard_in_publish_topic_closes_only_that_connection() {
    let gw = gateway().await;
    let mut ok = Client::subscriber(gw.mqtt_addr, "wild-bystander", "#").await;
    for (i, topic) in ["wild/+", "wild/#"].into_iter().enumerate() {
        let mut bad = V3::connect(gw.mqtt_addr, &format!("wild-{i}")).await;
        bad.send_raw(&publish_packet(topic, b"nope", 1, 1, false, false))
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
    let mut ok = Client::subscriber(gw.mqtt_addr, "big-bystander", "big/t").await;

    let mut raw = V3::connect(gw.mqtt_addr, "big").await;
    // Under the limit: accepted.
    raw.send_raw(&publish_packet("big/t", &[b's'; 900], 1, 1, false, false))
        .await;
    raw.expect_bytes(0x40, &[0, 1], "PUBACK").await;
    assert_eq!(ok.publish_rx().await.payload.len(), 900);
    // Over it: only the header needs to arrive for the connection to be dropped.
    let big = publish_packet("big/t", &[b'b'; 2000], 1, 2, false, false);
    raw.send_raw(&big[..16]).await;
    let seen = raw
        .expect_closed("a packet above max_packet_size to close the connection")
        .await;
    assert!(seen.is_empty(), "no PUBACK: {seen:?}");
    bystander_still_works(&mut ok, "big/t").await;
}

// ---------------------------------------------------------------------------------------
// Will

/// A watcher of `topic`, and a rumqttc client `id` whose will says `payload` there (QoS 1).
async fn will_on(
    gw: &ponte::Gateway,
    topic: &str,
    id: &str,
    payload: &'static str,
) -> (Client, Client) {
    let watcher = Client::subscriber(gw.mqtt_addr, &format!("{id}-watcher"), topic).await;
    let mut opts = options(gw.mqtt_addr, id);
    opts.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, false));
    let (c, _) = Client::connect_with(opts).await;
    (watcher, c)
}

#[tokio::test]
async fn mqtt_3_1_2_8_will_published_when_the_socket_drops() {
    let gw = gateway().await;
    let (mut watcher, c) = will_on(&gw, "will/drop", "will-dropper", "dropped").await;
    c.drop_socket().await;

    let p = watcher.publish_rx().await;
    let got = (p.topic.as_str(), p.payload.as_ref());
    assert_eq!(got, ("will/drop", &b"dropped"[..]));
    assert_eq!(p.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn mqtt_3_14_4_3_will_discarded_on_disconnect() {
    let gw = gateway().await;
    let (mut watcher, c) = will_on(&gw, "will/clean", "nowill-client", "should not").await;
    // Returns once the server closed the socket, i.e. after it handled the DISCONNECT (a
    // will would have been published before that).
    c.disconnect().await;

    watcher.publish_each(&[("will/clean", b"sentinel")]).await;
    let got = payloads(&mut watcher, b"sentinel").await;
    let why = "MQTT-3.14.4-3: no will after DISCONNECT";
    assert_eq!(got, [Bytes::from_static(b"sentinel")], "{why}");
}

#[tokio::test]
async fn mqtt_3_1_2_8_will_published_on_protocol_violation() {
    let gw = gateway().await;
    let will = ("will/violation", &b"broke the rules"[..], 0, false);
    let (mut watcher, mut raw) = raw_will(&gw, "violator", 30, will).await;
    raw.send_raw(&connect_v311(true, 30, "violator")).await;
    raw.expect_closed("the second CONNECT to close the connection")
        .await;
    let p = watcher.publish_rx().await;
    assert_eq!(p.payload, Bytes::from_static(b"broke the rules"));
}
