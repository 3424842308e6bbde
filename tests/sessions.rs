//! Durable sessions, MQTT 5 Session Expiry and the per-client limits (issue 3), named after
//! the clause they check. Restart and `kill -9` tests of the real binary are in
//! `tests/binary.rs`; these run an in-process gateway.

mod common;

use std::time::Duration;

use common::*;
use ponte_mqtt::{Packet, Properties, QoS, SubscriptionOptions};

/// The QoS 1 subscription of these tests.
fn q1(filter: &str) -> (&str, SubscriptionOptions) {
    (filter, opts(QoS::AtLeastOnce))
}

/// DISCONNECT 0x00 carrying Session Expiry `secs` (none: the CONNECT's stays).
fn leaving(secs: Option<u32>) -> Properties {
    Properties {
        session_expiry_interval: secs,
        ..Properties::default()
    }
}

/// Connect `id` (Clean Start, Session Expiry `secs`) and subscribe to `filter`.
async fn subscribed_session(gw: &ponte::Gateway, id: &str, secs: u32, filter: &str) -> V5 {
    let (mut c, present) = V5::session(gw.mqtt_addr, id, true, expiry(secs)).await;
    assert!(!present, "no session yet");
    assert_eq!(c.subscribe(&[q1(filter)]).await, vec![1]);
    c
}

/// Come back as `id` (Clean Start `clean`, Session Expiry `secs`) after a pause of `after`;
/// the client and Session Present.
async fn back_after(
    gw: &ponte::Gateway,
    after: u64,
    id: &str,
    clean: bool,
    secs: u32,
) -> (V5, bool) {
    tokio::time::sleep(Duration::from_millis(after)).await;
    V5::session(gw.mqtt_addr, id, clean, expiry(secs)).await
}

#[tokio::test]
async fn mqtt5_3_1_2_11_session_expires_after_its_interval() {
    let gw = gateway().await;
    let c = subscribed_session(&gw, "exp", 1, "exp/t").await;
    c.disconnect(0).await;
    // Within the interval the session is there...
    let (c, present) = back_after(&gw, 200, "exp", false, 1).await;
    assert!(present, "resumed within its 1 s expiry");
    c.disconnect(0).await;
    // ... and gone once it has passed (the sweep runs every second).
    let (_c, present) = back_after(&gw, 2500, "exp", false, 1).await;
    assert!(!present, "the expired session was ended (MQTT-3.1.2-23)");
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt5_3_1_2_4_clean_start_discards_the_existing_session() {
    let gw = gateway().await;
    subscribed_session(&gw, "cs", 600, "cs/t")
        .await
        .disconnect(0)
        .await;
    let (mut c, present) = back_after(&gw, 100, "cs", true, 600).await;
    assert!(!present, "Clean Start 1: no session present");
    // The old subscription went with it: a publish to cs/t reaches nobody.
    let (mut p, _) = Client::connect(gw.mqtt_addr, "cs-pub").await;
    p.publish("cs/t", rumqttc::QoS::AtLeastOnce, false, b"x")
        .await;
    let why = "old subscription discarded";
    c.assert_quiet(Duration::from_millis(300), why).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt5_3_1_2_11_expiry_0_ends_the_session_at_disconnect() {
    let gw = gateway().await;
    let mut c = subscribed_session(&gw, "zero", 600, "z/t").await;
    // DISCONNECT may lower the expiry to 0: the session ends now.
    c.send_disconnect(0, leaving(Some(0))).await;
    c.expect_closed("the close after DISCONNECT").await;
    let (_c, present) = back_after(&gw, 100, "zero", false, 600).await;
    assert!(!present);
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt5_3_14_2_2_disconnect_raising_expiry_from_0_is_protocol_error_0x82() {
    let gw = gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "raise").await;
    c.send_disconnect(0, leaving(Some(60))).await;
    assert_eq!(c.disconnect_rx().await.0, 0x82);
    let (_c, present) = back_after(&gw, 100, "raise", false, 60).await;
    assert!(!present, "the session did not become persistent");
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt_3_1_2_4_v311_session_expiry_secs_ends_away_sessions() {
    let gw = gateway_with(|c| c.mqtt.session_expiry_secs = Some(1)).await;
    assert_eq!(V3::persistent(gw.mqtt_addr, "v3exp").await.1, vec![0, 0]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_raw, ack) = V3::persistent(gw.mqtt_addr, "v3exp").await;
    assert_eq!(ack, vec![0, 0], "session present 0: expired");
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt5_3_2_2_3_2_max_session_expiry_secs_lowers_what_clients_ask_and_ends_their_sessions() {
    let gw = gateway_with(|c| c.mqtt.max_session_expiry_secs = Some(1)).await;
    // v5: asks for an hour, is told 1 s in CONNACK.
    let (mut c, ack) = V5::connack(gw.mqtt_addr, connect5("capped5", true, expiry(3600))).await;
    assert_eq!(ack.reason, 0, "{ack:?}");
    assert_eq!(ack.properties.session_expiry_interval, Some(1), "{ack:?}");
    assert_eq!(c.subscribe(&[q1("capped/t")]).await, vec![1]);
    c.send_disconnect(0, leaving(Some(3600))).await;
    // 3.1.1 persistent (no `session_expiry_secs`: forever without the maximum).
    assert_eq!(V3::persistent(gw.mqtt_addr, "capped3").await.1, vec![0, 0]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_c, present) = V5::session(gw.mqtt_addr, "capped5", false, expiry(3600)).await;
    assert!(!present, "the v5 session ended after 1 s away, not an hour");
    let (_raw, ack) = V3::persistent(gw.mqtt_addr, "capped3").await;
    assert_eq!(
        ack,
        vec![0, 0],
        "session present 0: the 3.1.1 session ended too"
    );
    gw.shutdown().await;
}

/// `[mqtt] max_persistent_sessions`: a CONNECT that would make the node keep one more
/// persistent session than the limit is refused — v5 CONNACK 0x97 Quota exceeded, 3.1.1
/// return code 3 (Server unavailable) — while resuming or replacing a held session, and
/// clean sessions, still connect; once a persistent session ends, a new one fits again.
#[tokio::test]
async fn limit_max_persistent_sessions_refuses_a_new_persistent_session_v5_0x97_v3_3() {
    let gw = gateway_with(|c| c.mqtt.max_persistent_sessions = 2).await;
    // Two persistent sessions: one away, one connected.
    let (mut c, present) = V5::session(gw.mqtt_addr, "kept-a", false, expiry(3600)).await;
    assert!(!present);
    c.send_disconnect(0, leaving(None)).await;
    let (_b, ack) = V3::persistent(gw.mqtt_addr, "kept-b").await;
    assert_eq!(ack, vec![0, 0]);

    // A third is refused, in either version, and counted.
    let (_c, ack) = V5::connack(gw.mqtt_addr, connect5("kept-c", false, expiry(3600))).await;
    assert_eq!(ack.reason, 0x97, "v5 Quota exceeded: {ack:?}");
    let why = ack.properties.reason_string.unwrap_or_default();
    assert!(why.contains("max_persistent_sessions"), "{why}");
    let (_d, ack) = V3::persistent(gw.mqtt_addr, "kept-d").await;
    assert_eq!(ack, vec![0, 3], "3.1.1: Server unavailable");
    let hit = gw
        .broker
        .metrics
        .limits_hit
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(hit, 2);

    // Clean sessions are not what the limit bounds.
    let _e = V5::connect(gw.mqtt_addr, "clean-e").await;
    let _f = V3::session(gw.mqtt_addr, "clean-f", true).await;
    // Resuming a held session adds none.
    let (mut a, present) = V5::session(gw.mqtt_addr, "kept-a", false, expiry(3600)).await;
    assert!(present, "kept-a resumed");
    // Replaced by a session that ends at disconnect: it no longer counts once gone ...
    a.send_disconnect(0, leaving(None)).await;
    let (mut a, present) = V5::session(gw.mqtt_addr, "kept-a", true, Properties::default()).await;
    assert!(!present);
    a.send_disconnect(0, leaving(None)).await;
    // ... so a new persistent session fits (the registry forgets it as the close is read).
    within(WAIT, "room for a new persistent session", async {
        loop {
            let (_c, ack) =
                V5::connack(gw.mqtt_addr, connect5("kept-c", false, expiry(3600))).await;
            if ack.reason == 0 {
                break;
            }
            assert_eq!(ack.reason, 0x97, "{ack:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn limit_max_subscriptions_answers_0x80_and_v5_0x97() {
    let gw = gateway_with(|c| c.mqtt.max_subscriptions = 2).await;
    let mut raw = V3::connect_ka(gw.mqtt_addr, "subs3", 0).await;
    let filters = [("a", 1), ("b", 1), ("c", 1), ("a", 0)];
    raw.send_raw(&subscribe_packet(1, &filters)).await;
    let ack = raw.read().await.expect("SUBACK");
    assert_eq!(ack.kind(), 9);
    // The third is refused; re-subscribing to an existing filter is not a new one.
    assert_eq!(ack.body, vec![0, 1, 1, 1, 0x80, 0]);
    let mut c = V5::connect(gw.mqtt_addr, "subs5").await;
    let codes = c.subscribe(&[q1("a"), q1("b"), q1("c")]).await;
    assert_eq!(codes, vec![1, 1, 0x97]);
    let hit = gw
        .broker
        .metrics
        .limits_hit
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(hit >= 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn limit_max_topic_levels_refuses_deep_filters_and_publishes() {
    let gw = gateway_with(|c| c.mqtt.max_topic_levels = 3).await;
    let mut raw = V3::connect_ka(gw.mqtt_addr, "deep3", 0).await;
    raw.send_raw(&subscribe_packet(1, &[("a/b/c", 1), ("a/b/c/d", 1)]))
        .await;
    let ack = raw.read().await.expect("SUBACK");
    assert_eq!(ack.body, vec![0, 1, 1, 0x80]);
    // A 3.1.1 PUBLISH beyond the limit closes the connection.
    raw.send_raw(&publish_packet("a/b/c/d", b"x", 1, 2, false, false))
        .await;
    let seen = raw.expect_closed("close after a too-deep PUBLISH").await;
    let pubacks = seen.iter().filter(|p| matches!(p, Packet::PubAck(_)));
    assert_eq!(pubacks.count(), 0, "no PUBACK: {seen:?}");
    // v5: DISCONNECT 0x90 Topic Name invalid.
    let mut c = V5::connect(gw.mqtt_addr, "deep5").await;
    c.send(&pub5(
        "a/b/c/d",
        QoS::AtLeastOnce,
        1,
        b"x",
        Properties::default(),
    ))
    .await;
    assert_eq!(c.disconnect_rx().await.0, 0x90);
    gw.shutdown().await;
}

#[tokio::test]
async fn queue_qos0_off_skips_and_on_queues_qos0_for_away_sessions() {
    for (queue, expect) in [(false, false), (true, true)] {
        let gw = gateway_with(|c| c.mqtt.queue_qos0 = queue).await;
        let (mut raw, _) = V3::persistent(gw.mqtt_addr, "q0").await;
        raw.send_raw(&subscribe_packet(1, &[("q0/t", 1)])).await;
        raw.read().await.expect("SUBACK");
        raw.send_raw(&[0xE0, 0]).await;
        drop(raw);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (mut p, _) = Client::connect(gw.mqtt_addr, "q0-pub").await;
        p.publish("q0/t", rumqttc::QoS::AtMostOnce, false, b"zero")
            .await;
        p.publish("q0/t", rumqttc::QoS::AtLeastOnce, false, b"sync")
            .await;
        let (mut raw, ack) = V3::persistent(gw.mqtt_addr, "q0").await;
        assert_eq!(ack, vec![1, 0]);
        let first = raw.read().await.expect("PUBLISH");
        assert_eq!(first.kind(), 3);
        let got_qos0 = first.body.ends_with(b"zero");
        assert_eq!(got_qos0, expect, "queue_qos0 = {queue}");
        gw.shutdown().await;
    }
}
