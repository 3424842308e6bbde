#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Issue 5, "Abuse limits": `[limits]` and `http.header_timeout_secs` over real sockets on
//! 127.0.0.1 — connections per address and per second refused before any protocol byte,
//! writes over the rate refused in each protocol's own terms (MQTT 5 PUBACK 0x97 and
//! DISCONNECT 0x96, MQTT 3.1.1 throttled, HTTP 429, CoAP 5.03 with Max-Age), and slowloris
//! headers cut off. Each refusal is checked in [`ponte::Gateway::refused`] as well.

mod common;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use coap_lite::CoapOption;
use ponte::limits::LimitsConfig;
use ponte_mqtt::{encode, Connect, Packet as Packet5, ProtocolVersion, Publish, QoS};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway with `limits`.
async fn limited(limits: LimitsConfig) -> ponte::Gateway {
    gateway_with(|c| c.limits = limits).await
}

/// Everything the server sends until it closes the connection (a reset counts as closed).
async fn read_to_close(s: &mut TcpStream, what: &str) -> Vec<u8> {
    within(WAIT, what, async {
        let mut all = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------
// MQTT connection admission
// ---------------------------------------------------------------------------------------

/// A raw MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s).
fn connect311(id: &str) -> Vec<u8> {
    let mut p = vec![
        0x10,
        (12 + id.len()) as u8,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        2,
        0,
        60,
    ];
    p.extend_from_slice(&(id.len() as u16).to_be_bytes());
    p.extend_from_slice(id.as_bytes());
    p
}

/// Open a TCP connection and send CONNECT; `Some(socket)` when CONNACK 0 came back,
/// `None` when the server closed it without one.
async fn mqtt_connect(addr: SocketAddr, id: &str) -> Option<TcpStream> {
    let mut s = within(WAIT, "TCP connect", TcpStream::connect(addr))
        .await
        .expect("the kernel completes the TCP handshake");
    // The server may already have closed it: a failed write means the same as EOF.
    if s.write_all(&connect311(id)).await.is_err() {
        return None;
    }
    let mut ack = [0u8; 4];
    let read = within(WAIT, "CONNACK or close", s.read_exact(&mut ack)).await;
    match read {
        Ok(_) => {
            assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK accepted");
            Some(s)
        }
        Err(_) => None,
    }
}

#[tokio::test]
async fn max_connections_per_ip_closes_the_extra_mqtt_connection_without_connack() {
    let gw = limited(LimitsConfig {
        max_connections_per_ip: 2,
        ..LimitsConfig::default()
    })
    .await;
    let mut a = mqtt_connect(gw.mqtt_addr, "a")
        .await
        .expect("first admitted");
    let mut b = mqtt_connect(gw.mqtt_addr, "b")
        .await
        .expect("second admitted");
    assert!(
        mqtt_connect(gw.mqtt_addr, "c").await.is_none(),
        "the third connection from 127.0.0.1 must be closed without CONNACK"
    );
    assert_eq!(gw.refused().connections_of("mqtt"), 1);
    // The first two still work: PINGREQ → PINGRESP.
    for s in [&mut a, &mut b] {
        s.write_all(&[0xC0, 0]).await.unwrap();
        let mut resp = [0u8; 2];
        within(WAIT, "PINGRESP", s.read_exact(&mut resp))
            .await
            .unwrap();
        assert_eq!(resp, [0xD0, 0]);
    }
    // A closed connection frees its slot (once the server has seen it close).
    drop(a);
    let again = within(WAIT, "a freed slot", async {
        loop {
            if let Some(s) = mqtt_connect(gw.mqtt_addr, "d").await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop((again, b));
    gw.shutdown().await;
}

#[tokio::test]
async fn connection_rate_refuses_connections_beyond_the_rate_then_admits_again() {
    let gw = limited(LimitsConfig {
        connection_rate: 3,
        ..LimitsConfig::default()
    })
    .await;
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(
            mqtt_connect(gw.mqtt_addr, &format!("r{i}"))
                .await
                .expect("within the rate"),
        );
    }
    assert!(
        mqtt_connect(gw.mqtt_addr, "r3").await.is_none(),
        "a fourth connection within the same second is over connection_rate = 3"
    );
    assert_eq!(gw.refused().connections_of("mqtt"), 1);
    // One token comes back every 1/3 s.
    tokio::time::sleep(Duration::from_millis(400)).await;
    open.push(
        mqtt_connect(gw.mqtt_addr, "r4")
            .await
            .expect("the bucket refilled"),
    );
    drop(open);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// MQTT write rate
// ---------------------------------------------------------------------------------------

/// A raw MQTT 5 client over ponte-mqtt's v5 codec.
struct V5 {
    s: TcpStream,
    buf: BytesMut,
}

impl V5 {
    async fn connect(addr: SocketAddr, id: &str) -> V5 {
        let s = within(WAIT, "TCP connect", TcpStream::connect(addr))
            .await
            .unwrap();
        let mut c = V5 {
            s,
            buf: BytesMut::new(),
        };
        c.send(&Packet5::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V5,
            client_id: id.into(),
            clean_session: true,
            keep_alive: 30,
            username: None,
            password: None,
            will: None,
            properties: Default::default(),
        })))
        .await;
        match c.recv().await {
            Some(Packet5::ConnAck { reason_code: 0, .. }) => c,
            other => panic!("expected CONNACK 0, got {other:?}"),
        }
    }

    async fn send(&mut self, p: &Packet5) {
        let mut out = BytesMut::new();
        encode(p, ponte_mqtt::ProtocolVersion::V5, &mut out);
        self.s.write_all(&out).await.expect("write");
    }

    async fn publish(&mut self, topic: &str, qos: QoS, pkid: u16, retain: bool) {
        self.send(&Packet5::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            pkid,
            payload: Bytes::from_static(b"x"),
            properties: Default::default(),
        }))
        .await;
    }

    /// The next packet, `None` once the server closed the connection.
    async fn recv(&mut self) -> Option<Packet5> {
        common::read_v5(&mut self.s, &mut self.buf).await
    }
}

#[tokio::test]
async fn mqtt5_qos1_publish_over_the_rate_gets_puback_0x97_quota_exceeded_and_is_not_published() {
    let gw = limited(LimitsConfig {
        publish_rate: 1,
        publish_burst: 2,
        ..LimitsConfig::default()
    })
    .await;
    let mut c = V5::connect(gw.mqtt_addr, "v5q1").await;
    for pkid in 1..=3u16 {
        c.publish(&format!("rate/{pkid}"), QoS::AtLeastOnce, pkid, true)
            .await;
    }
    let mut codes = Vec::new();
    for _ in 0..3 {
        match c.recv().await {
            Some(Packet5::PubAck(ack)) => codes.push((ack.pkid, ack.reason_code, ack.properties)),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    // Success (0x10: nobody subscribed) for the burst, 0x97 for the third.
    assert_eq!(codes[0].1, 0x10);
    assert_eq!(codes[1].1, 0x10);
    assert_eq!((codes[2].0, codes[2].1), (3, 0x97));
    let why = codes[2].2.reason_string.clone().unwrap_or_default();
    assert!(why.contains("publish_rate"), "reason string: {why:?}");
    // The refused message was not published (it was retained: nothing is stored).
    assert_eq!(http_get(&gw, "rate/2").await.status(), 200);
    assert_eq!(http_get(&gw, "rate/3").await.status(), 404);
    assert_eq!(gw.refused().mqtt_writes, 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt5_qos0_flood_over_the_rate_gets_disconnect_0x96_message_rate_too_high() {
    let gw = limited(LimitsConfig {
        publish_rate: 1,
        publish_burst: 2,
        ..LimitsConfig::default()
    })
    .await;
    let mut c = V5::connect(gw.mqtt_addr, "v5q0").await;
    for _ in 0..5 {
        c.publish("flood", QoS::AtMostOnce, 0, false).await;
    }
    match c.recv().await {
        Some(Packet5::Disconnect(d)) => assert_eq!(d.reason_code, 0x96, "{d:?}"),
        other => panic!("expected DISCONNECT 0x96, got {other:?}"),
    }
    assert!(c.recv().await.is_none(), "closed after the DISCONNECT");
    assert!(gw.refused().mqtt_writes >= 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt311_publisher_over_the_rate_is_throttled_and_loses_nothing() {
    let (rate, burst) = (20u32, 5u32);
    let gw = limited(LimitsConfig {
        publish_rate: rate,
        publish_burst: burst,
        ..LimitsConfig::default()
    })
    .await;
    let mut sub = Mqtt::subscriber(gw.mqtt_addr, "throttle-sub", "throttle/#").await;
    let publisher = Mqtt::connect(gw.mqtt_addr, "throttle-pub").await;
    // rate = burst is raised to the rate: 20 saved up, so send 2 × 20 quickly.
    let n = 2 * rate.max(burst);
    let started = Instant::now();
    for i in 0..n {
        publisher
            .client
            .publish(
                format!("throttle/{i}"),
                rumqttc::QoS::AtLeastOnce,
                false,
                vec![b'x'],
            )
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..n {
        let p = sub.next().await;
        got.push(p.topic);
    }
    let took = started.elapsed();
    let expected: Vec<String> = (0..n).map(|i| format!("throttle/{i}")).collect();
    assert_eq!(got, expected, "every message arrives, in order");
    // The second half waits for tokens at `rate` per second.
    let least = Duration::from_secs_f64(f64::from(n - rate.max(burst) - 1) / f64::from(rate));
    assert!(
        took >= least,
        "{n} publishes over a burst of {} took {took:?}, less than {least:?}",
        rate.max(burst)
    );
    assert!(gw.refused().mqtt_writes >= 1, "throttling is counted");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn http_write_over_the_rate_is_429_with_retry_after_and_a_problem() {
    let gw = limited(LimitsConfig {
        publish_rate: 1,
        publish_burst: 2,
        ..LimitsConfig::default()
    })
    .await;
    for i in 0..2 {
        let r = http_put(&gw, &format!("h/{i}"), "v", "text/plain").await;
        assert!(r.status().is_success(), "{}", r.status());
    }
    let r = http_put(&gw, "h/2", "v", "text/plain").await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"], 429);
    assert!(body["detail"].as_str().unwrap_or("").contains("writes"));
    // Reads are not limited, and the refused write stored nothing.
    assert_eq!(http_get(&gw, "h/2").await.status(), 404);
    assert_eq!(gw.refused().http_writes, 1);
    // A token later, writes pass again.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert!(http_put(&gw, "h/3", "v", "text/plain")
        .await
        .status()
        .is_success());
    gw.shutdown().await;
}

/// Send a GET on `s` and wait for the status line of its answer.
async fn http_roundtrip(s: &mut TcpStream) -> String {
    s.write_all(b"GET /resources/none HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within(WAIT, "HTTP response", s.read(&mut buf))
        .await
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn http_max_connections_per_ip_answers_503_with_retry_after_and_closes() {
    let gw = limited(LimitsConfig {
        max_connections_per_ip: 2,
        ..LimitsConfig::default()
    })
    .await;
    let mut a = TcpStream::connect(gw.http_addr).await.unwrap();
    let mut b = TcpStream::connect(gw.http_addr).await.unwrap();
    assert!(http_roundtrip(&mut a).await.starts_with("HTTP/1.1 404"));
    assert!(http_roundtrip(&mut b).await.starts_with("HTTP/1.1 404"));
    let mut c = TcpStream::connect(gw.http_addr).await.unwrap();
    let refused = String::from_utf8_lossy(&read_to_close(&mut c, "the 503 and close").await)
        .to_ascii_lowercase();
    assert!(refused.starts_with("http/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(
        refused.contains("content-type: application/problem+json"),
        "{refused}"
    );
    assert!(refused.contains("max_connections_per_ip"), "{refused}");
    assert_eq!(gw.refused().connections_of("http"), 1);
    // The admitted connections keep working; closing one frees a place.
    assert!(http_roundtrip(&mut a).await.starts_with("HTTP/1.1 404"));
    drop(b);
    within(WAIT, "a freed place", async {
        loop {
            let mut d = TcpStream::connect(gw.http_addr).await.unwrap();
            if http_roundtrip(&mut d).await.starts_with("HTTP/1.1 404") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn http_slowloris_partial_header_is_closed_after_header_timeout_secs() {
    let gw = gateway_with(|c| c.http.header_timeout_secs = 1).await;
    let mut s = TcpStream::connect(gw.http_addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET /resources/x HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    // The default would be hyper's 30 s; the test waits at most 3 s.
    let answer = within(Duration::from_secs(3), "the server to close", async {
        let mut all = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the 1 s timeout"
    );
    // Nothing that looks like a served request came back.
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 404 "),
        "{answer:?}"
    );
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// CoAP
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn coap_write_over_the_rate_is_5_03_with_max_age_and_a_diagnostic() {
    let gw = limited(LimitsConfig {
        publish_rate: 1,
        publish_burst: 2,
        ..LimitsConfig::default()
    })
    .await;
    let mut coap = Coap::new(gw.coap_addr).await;
    for i in 0..2 {
        let r = coap.put(&format!("r/c/{i}"), b"v", None).await;
        assert!(code(&r).starts_with("2."), "{}", code(&r));
    }
    let r = coap.put("r/c/2", b"v", None).await;
    assert_eq!(code(&r), "5.03");
    assert_eq!(opt_uint(&r, CoapOption::MaxAge), Some(1));
    assert!(
        payload_str(&r).contains("publish_rate"),
        "{}",
        payload_str(&r)
    );
    // Nothing was stored, reads still pass.
    assert_eq!(code(&coap.get("r/c/2").await), "4.04");
    assert_eq!(gw.refused().coap_writes, 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn coap_tcp_max_connections_per_ip_closes_the_extra_connection_before_the_csm() {
    let gw = limited(LimitsConfig {
        max_connections_per_ip: 1,
        ..LimitsConfig::default()
    })
    .await;
    // An admitted connection hears the server's CSM first (RFC 8323 §5.3).
    let mut a = TcpStream::connect(gw.coap_addr).await.unwrap();
    let mut first = [0u8; 1];
    within(WAIT, "the server's CSM", a.read_exact(&mut first))
        .await
        .unwrap();
    let mut b = TcpStream::connect(gw.coap_addr).await.unwrap();
    let got = read_to_close(&mut b, "the refused connection to close").await;
    assert!(
        got.is_empty(),
        "no CoAP byte on a refused connection: {got:?}"
    );
    assert_eq!(gw.refused().connections_of("coap-tcp"), 1);
    drop(a);
    gw.shutdown().await;
}

#[tokio::test]
async fn refused_connections_are_published_in_sys() {
    let gw = gateway_with(|c| {
        c.limits.max_connections_per_ip = 1;
        c.mqtt.sys_interval_secs = 1;
    })
    .await;
    let held = mqtt_connect(gw.mqtt_addr, "sys-a").await.expect("admitted");
    assert!(mqtt_connect(gw.mqtt_addr, "sys-b").await.is_none());
    within(
        Duration::from_secs(4),
        "$SYS/broker/connections/refused = 1",
        async {
            loop {
                let r = http_get(&gw, "$SYS/broker/connections/refused").await;
                if r.status() == 200 && r.text().await.unwrap_or_default() == "1" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    drop(held);
    gw.shutdown().await;
}
