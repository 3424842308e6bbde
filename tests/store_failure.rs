#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! A store that fails on demand, supplied through the embedding API
//! (`ponte::start_with_store`), and what every protocol does while it fails: MQTT-4.8.0-2
//! (a transient error while processing a packet closes a 3.1.1 connection), the MQTT 5
//! negative acknowledgements, HTTP 503 problem+json and CoAP 5.03 — and that once the store
//! recovers nothing was lost: the client's re-send is stored and acknowledged.
//!
//! MQTT is driven over raw sockets with ponte-mqtt's codecs (`tests/conformance/mod.rs`),
//! HTTP with reqwest and CoAP over UDP (`tests/support/mod.rs`).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use ponte::model::RetainedValue;
use ponte::model::TopicName;
use ponte::store::{RetainedOp, Store, StoreError};
use ponte_mqtt::{Packet, Properties, QoS};

/// What the test flips and reads: whether the store fails, and what it holds.
#[derive(Clone, Default)]
struct Switch {
    /// While set, `apply` and `flush` fail as a full disk would.
    failing: Arc<AtomicBool>,
    /// The payloads the store made "durable", by topic.
    stored: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// How many batches were refused: proves the failure path was taken.
    refused: Arc<AtomicUsize>,
}

impl Switch {
    fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    fn stored(&self, topic: &str) -> Option<Vec<u8>> {
        self.stored.lock().unwrap().get(topic).cloned()
    }
}

/// A retained-value store whose writes fail while its [`Switch`] says so.
struct FlakyStore(Switch);

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.0.failing.load(Ordering::SeqCst) {
            self.0.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Engine(
                "injected failure: no space left on device".into(),
            ));
        }
        Ok(())
    }
}

impl Store for FlakyStore {
    fn load_retained(&self) -> Result<Vec<(TopicName, RetainedValue)>, StoreError> {
        Ok(Vec::new())
    }

    fn apply(&mut self, ops: &[RetainedOp]) -> Result<(), StoreError> {
        self.check()?;
        let mut stored = self.0.stored.lock().unwrap();
        for op in ops {
            match op {
                RetainedOp::Put(t, v) => {
                    stored.insert(t.as_str().to_owned(), v.payload.to_vec());
                }
                RetainedOp::Delete(t) => {
                    stored.remove(t.as_str());
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.check()
    }
}

/// A gateway on loopback (ports 0) over a [`FlakyStore`], and its switch.
async fn flaky_gateway() -> (ponte::Gateway, Switch) {
    let switch = Switch::default();
    let config = ponte::config::Config::ephemeral();
    let gw = within(
        WAIT,
        "gateway start",
        ponte::start_with_store(config, FlakyStore(switch.clone())),
    )
    .await
    .expect("gateway starts over the supplied store");
    (gw, switch)
}

/// The status of `GET /resources/{topic}`.
async fn http_status(gw: &ponte::Gateway, topic: &str) -> u16 {
    http_get(gw, topic).await.status().as_u16()
}

/// MQTT-4.8.0-2 on 3.1.1, which has no negative PUBACK: a QoS 1 retained PUBLISH the store
/// cannot make durable closes the connection without a PUBACK; nothing is retained or
/// delivered. After the store recovers, the client's re-send (DUP=1, same packet id, on a
/// new connection) is stored, delivered and acknowledged: nothing was lost.
#[tokio::test]
async fn mqtt_4_8_0_2_store_failure_closes_v311_connection() {
    let (gw, switch) = flaky_gateway().await;
    let mut watcher = V3::connect(gw.mqtt_addr, "flaky-watch").await;
    watcher.subscribe(&[("flaky/#", QoS::AtLeastOnce)]).await;

    let (mut c, _) = V3::session(gw.mqtt_addr, "flaky-pub", false).await;
    switch.fail(true);
    c.send(&publish3("flaky/t", QoS::AtLeastOnce, 7, true, b"v1"))
        .await;
    let before_close = c.expect_closed("the close after the store failed").await;
    assert!(
        !before_close.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "no PUBACK for a message that was not stored: {before_close:?}"
    );
    assert!(
        switch.refused.load(Ordering::SeqCst) > 0,
        "the store was asked"
    );
    assert_eq!(switch.stored("flaky/t"), None);
    assert_eq!(http_status(&gw, "flaky/t").await, 404, "nothing retained");
    let why = "nothing is delivered that was not stored";
    watcher.quiet(why).await;

    switch.fail(false);
    let (mut c, _) = V3::connect_with(gw.mqtt_addr, connect3("flaky-pub", false, 30, None)).await;
    let mut again = publish("flaky/t", QoS::AtLeastOnce, 7, true, b"v1");
    again.dup = true;
    c.send(&Packet::Publish(again)).await;
    c.expect(Packet::PubAck(ponte_mqtt::PubResponse::success(7)))
        .await;
    assert_eq!(switch.stored("flaky/t").as_deref(), Some(&b"v1"[..]));
    let got = watcher.publish_rx().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("flaky/t", &b"v1"[..])
    );
    assert_eq!(http_status(&gw, "flaky/t").await, 200);
}

/// MQTT-4.8.0-2 for QoS 0 on 3.1.1: there is no acknowledgement to withhold, so the
/// connection is closed all the same (the message was not stored).
#[tokio::test]
async fn mqtt_4_8_0_2_store_failure_on_qos0_retained_publish_closes_v311_connection() {
    let (gw, switch) = flaky_gateway().await;
    let mut c = V3::connect(gw.mqtt_addr, "flaky-q0").await;
    switch.fail(true);
    c.send(&publish3("flaky/q0", QoS::AtMostOnce, 0, true, b"v"))
        .await;
    c.expect_closed("the close after the store failed").await;
    assert_eq!(http_status(&gw, "flaky/q0").await, 404, "nothing retained");
}

/// MQTT 5 has a negative acknowledgement: a QoS 1 retained PUBLISH the store cannot make
/// durable gets PUBACK 0x80 Unspecified error with a Reason String naming the store error,
/// and the connection stays open; after recovery the same packet is stored and
/// acknowledged with success.
#[tokio::test]
async fn mqtt5_4_8_0_2_store_failure_answers_puback_0x80_with_a_reason_string() {
    let (gw, switch) = flaky_gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "flaky-v5").await;
    switch.fail(true);
    let p = retained5("flaky/v5", QoS::AtLeastOnce, 3, b"v", Properties::default());
    c.send(&p).await;
    match c.recv().await {
        Some(Packet::PubAck(r)) => {
            assert_eq!((r.pkid, r.reason_code), (3, 0x80), "PUBACK 0x80: {r:?}");
            let why = r.properties.reason_string.clone().unwrap_or_default();
            assert!(
                why.contains("could not be stored") && why.contains("no space left"),
                "the Reason String says why: {why:?}"
            );
        }
        other => panic!("expected PUBACK 0x80, got {other:?}"),
    }
    c.ping().await;
    assert_eq!(http_status(&gw, "flaky/v5").await, 404, "nothing retained");

    switch.fail(false);
    c.send(&p).await;
    match c.recv().await {
        Some(Packet::PubAck(r)) => {
            // 0x10 No matching subscribers is a success too (3.4.2.1).
            assert!(
                r.pkid == 3 && matches!(r.reason_code, 0x00 | 0x10),
                "PUBACK success: {r:?}"
            );
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(switch.stored("flaky/v5").as_deref(), Some(&b"v"[..]));
}

/// MQTT 5, QoS 0: no acknowledgement to carry the error, so the server sends DISCONNECT
/// 0x80 with a Reason String and closes (MQTT-4.8.0-2; MQTT-4.13.2-1 DISCONNECT first).
#[tokio::test]
async fn mqtt5_4_8_0_2_store_failure_on_qos0_retained_publish_disconnects_0x80() {
    let (gw, switch) = flaky_gateway().await;
    let mut c = V5::connect(gw.mqtt_addr, "flaky-v5-q0").await;
    switch.fail(true);
    c.send(&retained5(
        "flaky/v5q0",
        QoS::AtMostOnce,
        0,
        b"v",
        Properties::default(),
    ))
    .await;
    let (code, props) = c.disconnect_rx().await;
    assert_eq!(code, 0x80, "DISCONNECT 0x80 Unspecified error");
    let why = props.reason_string.unwrap_or_default();
    assert!(
        why.contains("could not be stored"),
        "Reason String: {why:?}"
    );
    c.expect_closed("the close after DISCONNECT").await;
    assert_eq!(
        http_status(&gw, "flaky/v5q0").await,
        404,
        "nothing retained"
    );
}

/// The same failing store seen from HTTP and CoAP: PUT answers 503 with an
/// `application/problem+json` body saying the write was not stored, CoAP PUT answers 5.03
/// with a diagnostic payload; after recovery both writes succeed.
#[tokio::test]
async fn store_failure_http_put_503_problem_json_and_coap_put_5_03_with_diagnostic() {
    let (gw, switch) = flaky_gateway().await;
    switch.fail(true);
    let r = http_put(&gw, "flaky/http", "21.5", "text/plain").await;
    assert_eq!(r.status().as_u16(), 503);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ct, "application/problem+json");
    let body = within(WAIT, "problem body", r.bytes()).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON problem");
    assert_eq!(body["status"], 503);
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("not stored") && detail.contains("no space left"),
        "detail says why: {detail:?}"
    );

    let mut coap = Coap::new(gw.coap_addr).await;
    let resp = coap.put("r/flaky/coap", b"7", None).await;
    assert_eq!(code(&resp), "5.03");
    let diag = payload_str(&resp);
    assert!(
        diag.contains("not stored") && diag.contains("no space left"),
        "diagnostic payload: {diag:?}"
    );
    assert_eq!(switch.stored("flaky/http"), None);
    assert_eq!(switch.stored("flaky/coap"), None);

    switch.fail(false);
    let r = http_put(&gw, "flaky/http", "21.5", "text/plain").await;
    assert_eq!(r.status().as_u16(), 201);
    let resp = coap.put("r/flaky/coap", b"7", None).await;
    assert_eq!(code(&resp), "2.01");
    assert_eq!(switch.stored("flaky/http").as_deref(), Some(&b"21.5"[..]));
    assert_eq!(switch.stored("flaky/coap").as_deref(), Some(&b"7"[..]));
}

/// A session store whose batches fail while its flag is set; otherwise it keeps nothing
/// (what it holds is not what these tests look at).
struct FlakySessions(Arc<AtomicBool>);

impl ponte::store::session::SessionStore for FlakySessions {
    fn load_sessions(&self) -> Result<ponte::store::session::LoadedSessions, StoreError> {
        Ok(Default::default())
    }

    fn apply_sessions(
        &mut self,
        _ops: &[ponte::store::session::SessionOp],
    ) -> Result<(), StoreError> {
        if self.0.load(Ordering::SeqCst) {
            return Err(StoreError::Engine(
                "injected failure: no space left on device".into(),
            ));
        }
        Ok(())
    }
}

/// MQTT-4.8.0-2 for session state: while the session store fails, a persistent session's
/// CONNECT is refused (3.1.1 return code 3, Server unavailable) instead of being told it has
/// a session that a crash would lose, and a persistent session's SUBSCRIBE closes the
/// connection without a SUBACK; a clean session is unaffected. Once the store recovers, the
/// same client connects and subscribes normally.
#[tokio::test]
async fn mqtt_4_8_0_2_session_store_failure_refuses_connack_and_suback() {
    let failing = Arc::new(AtomicBool::new(false));
    let gw = within(
        WAIT,
        "gateway start",
        ponte::start_with_stores(
            ponte::config::Config::ephemeral(),
            FlakyStore(Switch::default()),
            FlakySessions(failing.clone()),
        ),
    )
    .await
    .expect("gateway starts over the supplied stores");

    // Connected while the store works, then it fails: SUBSCRIBE gets no SUBACK.
    let (mut c, _) = V3::session(gw.mqtt_addr, "flaky-sess", false).await;
    failing.store(true, Ordering::SeqCst);
    c.send(&Packet::Subscribe(ponte_mqtt::Subscribe {
        pkid: 1,
        filters: vec![(
            "flaky/s".into(),
            ponte_mqtt::SubscriptionOptions::qos(QoS::AtLeastOnce),
        )],
        properties: Default::default(),
    }))
    .await;
    let before_close = c
        .expect_closed("the close after the session store failed")
        .await;
    assert!(
        !before_close.iter().any(|p| matches!(p, Packet::SubAck(_))),
        "no SUBACK for a subscription that was not stored: {before_close:?}"
    );

    // A new persistent session cannot be stored: CONNACK 3.
    let mut c = V3::open(gw.mqtt_addr).await;
    c.send(&connect3("flaky-sess2", false, 30, None)).await;
    assert_eq!(
        c.recv().await,
        Some(Packet::ConnAck {
            session_present: false,
            reason_code: ponte_mqtt::reason::SERVER_UNAVAILABLE,
            properties: Default::default()
        }),
        "CONNACK Server unavailable while the session cannot be stored"
    );
    // A clean session needs no storage.
    let _clean = V3::connect(gw.mqtt_addr, "flaky-clean").await;

    failing.store(false, Ordering::SeqCst);
    let (mut c, _) = V3::session(gw.mqtt_addr, "flaky-sess2", false).await;
    let codes = c.subscribe(&[("flaky/s", QoS::AtLeastOnce)]).await;
    assert_eq!(codes.len(), 1, "SUBACK once the store works again");
    gw.shutdown().await;
}
