//! Durable sessions, MQTT 5 Session Expiry and the per-client limits (issue 3), named after
//! the clause they check. Restart and `kill -9` tests of the real binary are in
//! `tests/binary.rs`; these run an in-process gateway.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use ponte_mqtt::{
    encode, Connect, Packet as Packet5, Properties, ProtocolVersion, Publish, QoS, ReasonPacket,
    Subscribe, SubscriptionOptions,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A raw MQTT 5 client over ponte-mqtt's v5 codec.
struct V5 {
    /// The socket.
    s: TcpStream,
    /// Received bytes not yet decoded.
    buf: BytesMut,
}

impl V5 {
    /// Connect; returns the client, CONNACK session present and reason code.
    async fn connect(addr: SocketAddr, id: &str, clean: bool, expiry: u32) -> (V5, bool, u8) {
        let s = within(WAIT, "TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        let mut c = V5 {
            s,
            buf: BytesMut::new(),
        };
        c.send(&Packet5::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V5,
            client_id: id.into(),
            clean_session: clean,
            keep_alive: 30,
            username: None,
            password: None,
            will: None,
            properties: Properties {
                session_expiry_interval: (expiry > 0).then_some(expiry),
                ..Properties::default()
            }
            .into(),
        })))
        .await;
        match c.recv().await {
            Some(Packet5::ConnAck {
                session_present,
                reason_code,
                ..
            }) => (c, session_present, reason_code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, p: &Packet5) {
        let mut out = BytesMut::new();
        encode(p, ponte_mqtt::ProtocolVersion::V5, &mut out);
        within(WAIT, "write", self.s.write_all(&out))
            .await
            .expect("write");
    }

    async fn recv(&mut self) -> Option<Packet5> {
        common::read_v5(&mut self.s, &mut self.buf).await
    }

    async fn subscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        self.send(&Packet5::Subscribe(Subscribe {
            pkid: 3,
            filters: filters
                .iter()
                .map(|f| (f.to_string(), SubscriptionOptions::qos(QoS::AtLeastOnce)))
                .collect(),
            properties: Default::default(),
        }))
        .await;
        loop {
            match self.recv().await {
                Some(Packet5::SubAck(a)) => return a.reason_codes,
                Some(_) => {}
                None => panic!("closed before SUBACK"),
            }
        }
    }

    async fn disconnect(&mut self, expiry: Option<u32>) {
        self.send(&Packet5::Disconnect(ReasonPacket {
            reason_code: 0,
            properties: Properties {
                session_expiry_interval: expiry,
                ..Properties::default()
            }
            .into(),
        }))
        .await;
    }

    /// The DISCONNECT reason the server closes with.
    async fn disconnect_reason(&mut self) -> u8 {
        loop {
            match self.recv().await {
                Some(Packet5::Disconnect(d)) => return d.reason_code,
                Some(_) => {}
                None => panic!("closed without DISCONNECT"),
            }
        }
    }
}

fn publish5(topic: &str, pkid: u16) -> Packet5 {
    Packet5::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(b"x"),
        properties: Default::default(),
    })
}

#[tokio::test]
async fn mqtt5_3_1_2_11_session_expires_after_its_interval() {
    let gw = gateway().await;
    let (mut c, present, rc) = V5::connect(gw.mqtt_addr, "exp", true, 1).await;
    assert_eq!((present, rc), (false, 0));
    assert_eq!(c.subscribe(&["exp/t"]).await, vec![1]);
    c.disconnect(None).await;
    drop(c);
    // Within the interval the session is there...
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut c, present, _) = V5::connect(gw.mqtt_addr, "exp", false, 1).await;
    assert!(present, "resumed within its 1 s expiry");
    c.disconnect(None).await;
    drop(c);
    // ... and gone once it has passed (the sweep runs every second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_c, present, _) = V5::connect(gw.mqtt_addr, "exp", false, 1).await;
    assert!(!present, "the expired session was ended (MQTT-3.1.2-23)");
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt5_3_1_2_4_clean_start_discards_the_existing_session() {
    let gw = gateway().await;
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "cs", true, 600).await;
    c.subscribe(&["cs/t"]).await;
    c.disconnect(None).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut c, present, _) = V5::connect(gw.mqtt_addr, "cs", true, 600).await;
    assert!(!present, "Clean Start 1: no session present");
    // The old subscription went with it: a publish to cs/t reaches nobody.
    let (mut p, _) = Client::connect(gw.mqtt_addr, "cs-pub").await;
    p.publish("cs/t", rumqttc::QoS::AtLeastOnce, false, b"x")
        .await;
    let quiet = tokio::time::timeout(Duration::from_millis(300), c.recv()).await;
    assert!(quiet.is_err(), "old subscription discarded: {quiet:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt5_3_1_2_11_expiry_0_ends_the_session_at_disconnect() {
    let gw = gateway().await;
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "zero", true, 600).await;
    c.subscribe(&["z/t"]).await;
    // DISCONNECT may lower the expiry to 0: the session ends now.
    c.disconnect(Some(0)).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_c, present, _) = V5::connect(gw.mqtt_addr, "zero", false, 600).await;
    assert!(!present);
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt5_3_14_2_2_disconnect_raising_expiry_from_0_is_protocol_error_0x82() {
    let gw = gateway().await;
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "raise", true, 0).await;
    c.disconnect(Some(60)).await;
    assert_eq!(c.disconnect_reason().await, 0x82);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_c, present, _) = V5::connect(gw.mqtt_addr, "raise", false, 60).await;
    assert!(!present, "the session did not become persistent");
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt_3_1_2_4_v311_session_expiry_secs_ends_away_sessions() {
    let gw = gateway_with(|c| c.mqtt.session_expiry_secs = Some(1)).await;
    let mut raw = Raw::open(gw.mqtt_addr).await;
    raw.send(&connect_v311(false, 0, "v3exp")).await;
    assert_eq!(raw.read().await.expect("CONNACK").body, vec![0, 0]);
    drop(raw);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut raw = Raw::open(gw.mqtt_addr).await;
    raw.send(&connect_v311(false, 0, "v3exp")).await;
    assert_eq!(
        raw.read().await.expect("CONNACK").body,
        vec![0, 0],
        "session present 0: expired"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn limit_max_subscriptions_answers_0x80_and_v5_0x97() {
    let gw = gateway_with(|c| c.mqtt.max_subscriptions = 2).await;
    let mut raw = Raw::connect(gw.mqtt_addr, "subs3", 0).await;
    raw.send(&subscribe_packet(
        1,
        &[("a", 1), ("b", 1), ("c", 1), ("a", 0)],
    ))
    .await;
    let ack = raw.read().await.expect("SUBACK");
    assert_eq!(ack.kind(), 9);
    // The third is refused; re-subscribing to an existing filter is not a new one.
    assert_eq!(ack.body, vec![0, 1, 1, 1, 0x80, 0]);
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "subs5", true, 0).await;
    assert_eq!(c.subscribe(&["a", "b", "c"]).await, vec![1, 1, 0x97]);
    assert!(
        gw.broker
            .metrics
            .limits_hit
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn limit_max_topic_levels_refuses_deep_filters_and_publishes() {
    let gw = gateway_with(|c| c.mqtt.max_topic_levels = 3).await;
    let mut raw = Raw::connect(gw.mqtt_addr, "deep3", 0).await;
    raw.send(&subscribe_packet(1, &[("a/b/c", 1), ("a/b/c/d", 1)]))
        .await;
    let ack = raw.read().await.expect("SUBACK");
    assert_eq!(ack.body, vec![0, 1, 1, 0x80]);
    // A 3.1.1 PUBLISH beyond the limit closes the connection.
    raw.send(&publish_packet("a/b/c/d", b"x", 1, 2, false, false))
        .await;
    let seen = raw.expect_closed("close after a too-deep PUBLISH").await;
    assert!(seen.iter().all(|p| p.kind() != 4), "no PUBACK: {seen:?}");
    // v5: DISCONNECT 0x90 Topic Name invalid.
    let (mut c, _, _) = V5::connect(gw.mqtt_addr, "deep5", true, 0).await;
    c.send(&publish5("a/b/c/d", 1)).await;
    assert_eq!(c.disconnect_reason().await, 0x90);
    gw.shutdown().await;
}

#[tokio::test]
async fn queue_qos0_off_skips_and_on_queues_qos0_for_away_sessions() {
    for (queue, expect) in [(false, false), (true, true)] {
        let gw = gateway_with(|c| c.mqtt.queue_qos0 = queue).await;
        let mut raw = Raw::open(gw.mqtt_addr).await;
        raw.send(&connect_v311(false, 0, "q0")).await;
        raw.read().await.expect("CONNACK");
        raw.send(&subscribe_packet(1, &[("q0/t", 1)])).await;
        raw.read().await.expect("SUBACK");
        raw.send(&[0xE0, 0]).await;
        drop(raw);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (mut p, _) = Client::connect(gw.mqtt_addr, "q0-pub").await;
        p.publish("q0/t", rumqttc::QoS::AtMostOnce, false, b"zero")
            .await;
        p.publish("q0/t", rumqttc::QoS::AtLeastOnce, false, b"sync")
            .await;
        let mut raw = Raw::open(gw.mqtt_addr).await;
        raw.send(&connect_v311(false, 0, "q0")).await;
        assert_eq!(raw.read().await.expect("CONNACK").body, vec![1, 0]);
        let first = raw.read().await.expect("PUBLISH");
        assert_eq!(first.kind(), 3);
        let got_qos0 = first.body.ends_with(b"zero");
        assert_eq!(got_qos0, expect, "queue_qos0 = {queue}");
        gw.shutdown().await;
    }
}
