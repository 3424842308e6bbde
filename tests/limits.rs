#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Issue 5, "Abuse limits": `[limits]` and `http.header_timeout_secs` over real sockets on
//! 127.0.0.1 — connections per address and per second refused before any protocol byte,
//! writes over the rate refused in each protocol's own terms (MQTT 5 PUBACK 0x97 and
//! DISCONNECT 0x96, MQTT 3.1.1 throttled, HTTP 429, CoAP 5.03 with Max-Age), and slowloris
//! headers cut off. Each refusal is checked in [`ponte::Gateway::refused`] as well.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::CoapOption;
use common::*;
use ponte_mqtt::{Packet, Properties, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway whose writes may come at `rate` per second with bursts of `burst`.
async fn rate_limited(rate: u32, burst: u32) -> ponte::Gateway {
    gateway_with(|c| {
        c.limits.publish_rate = rate;
        c.limits.publish_burst = burst;
    })
    .await
}

// ---------------------------------------------------------------------------------------
// MQTT connection admission
// ---------------------------------------------------------------------------------------

/// Open a TCP connection and send a 3.1.1 CONNECT (clean session, keep alive 60 s);
/// `Some(client)` when CONNACK 0 came back, `None` when the server closed it without one.
async fn mqtt_connect(addr: SocketAddr, id: &str) -> Option<V3> {
    let mut c = V3::open(addr).await;
    // The server may already have closed it: a failed write means the same as EOF.
    if !c.try_send_raw(&connect_v311(true, 60, id)).await {
        return None;
    }
    let ack = c.read().await?;
    assert_eq!(
        (ack.first, ack.body.as_slice()),
        (0x20, &[0, 0][..]),
        "CONNACK accepted"
    );
    Some(c)
}

#[tokio::test]
async fn max_connections_per_ip_closes_the_extra_mqtt_connection_without_connack() {
    let gw = gateway_with(|c| c.limits.max_connections_per_ip = 2).await;
    let mut a = mqtt_connect(gw.mqtt_addr, "a")
        .await
        .expect("first admitted");
    let mut b = mqtt_connect(gw.mqtt_addr, "b")
        .await
        .expect("second admitted");
    let third = mqtt_connect(gw.mqtt_addr, "c").await;
    let why = "the third connection from 127.0.0.1 must be closed without CONNACK";
    assert!(third.is_none(), "{why}");
    assert_eq!(gw.refused().connections_of("mqtt"), 1);
    // The first two still work: PINGREQ → PINGRESP.
    for c in [&mut a, &mut b] {
        c.send_raw(&[0xC0, 0]).await;
        c.expect_bytes(0xD0, &[], "PINGRESP").await;
    }
    // A closed connection frees its slot (once the server has seen it close).
    drop(a);
    eventually(WAIT, "a freed slot", || async {
        mqtt_connect(gw.mqtt_addr, "d").await.is_some()
    })
    .await;
    drop(b);
    gw.shutdown().await;
}

#[tokio::test]
async fn connection_rate_refuses_connections_beyond_the_rate_then_admits_again() {
    let gw = gateway_with(|c| c.limits.connection_rate = 3).await;
    let mut open = Vec::new();
    for i in 0..3 {
        let c = mqtt_connect(gw.mqtt_addr, &format!("r{i}")).await;
        open.push(c.expect("within the rate"));
    }
    let fourth = mqtt_connect(gw.mqtt_addr, "r3").await;
    let why = "a fourth connection within the same second is over connection_rate = 3";
    assert!(fourth.is_none(), "{why}");
    assert_eq!(gw.refused().connections_of("mqtt"), 1);
    // One token comes back every 1/3 s.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = mqtt_connect(gw.mqtt_addr, "r4").await;
    open.push(again.expect("the bucket refilled"));
    drop(open);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// MQTT write rate
// ---------------------------------------------------------------------------------------

/// A QoS `qos` PUBLISH of "x" to `topic` with id `pkid`.
fn x(topic: &str, qos: QoS, pkid: u16, retain: bool) -> Packet {
    publish5(
        publish(topic, qos, pkid, retain, b"x"),
        Properties::default(),
    )
}

#[tokio::test]
async fn mqtt5_qos1_publish_over_the_rate_gets_puback_0x97_quota_exceeded_and_is_not_published() {
    let gw = rate_limited(1, 2).await;
    let mut c = V5::connect(gw.mqtt_addr, "v5q1").await;
    for pkid in 1..=3u16 {
        c.send(&x(&format!("rate/{pkid}"), QoS::AtLeastOnce, pkid, true))
            .await;
    }
    let mut codes = Vec::new();
    for _ in 0..3 {
        match c.recv().await {
            Some(Packet::PubAck(ack)) => codes.push((ack.pkid, ack.reason_code, ack.properties)),
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
    let gw = rate_limited(1, 2).await;
    let mut c = V5::connect(gw.mqtt_addr, "v5q0").await;
    for _ in 0..5 {
        c.send(&x("flood", QoS::AtMostOnce, 0, false)).await;
    }
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, 0x96, "{d:?}"),
        other => panic!("expected DISCONNECT 0x96, got {other:?}"),
    }
    assert!(c.recv().await.is_none(), "closed after the DISCONNECT");
    assert!(gw.refused().mqtt_writes >= 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt311_publisher_over_the_rate_is_throttled_and_loses_nothing() {
    let (rate, burst) = (20u32, 5u32);
    let gw = rate_limited(rate, burst).await;
    let mut sub = Client::subscriber(gw.mqtt_addr, "throttle-sub", "throttle/#").await;
    let (publisher, _) = Client::connect(gw.mqtt_addr, "throttle-pub").await;
    // rate = burst is raised to the rate: 20 saved up, so send 2 × 20 quickly.
    let n = 2 * rate.max(burst);
    let started = Instant::now();
    for i in 0..n {
        let topic = format!("throttle/{i}");
        let sent = publisher
            .client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, vec![b'x']);
        sent.await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(sub.publish_rx().await.topic);
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

/// A header of `r` as text.
fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn http_write_over_the_rate_is_429_with_retry_after_and_a_problem() {
    let gw = rate_limited(1, 2).await;
    for i in 0..2 {
        let r = http_put(&gw, &format!("h/{i}"), "v", "text/plain").await;
        assert!(r.status().is_success(), "{}", r.status());
    }
    let r = http_put(&gw, "h/2", "v", "text/plain").await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), Some("1"));
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"], 429);
    // Counted against the client's own address, which reaches the handler from the
    // connection (not an unknown 0.0.0.0 shared by everyone).
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(detail.starts_with("127.0.0.1 writes faster"), "{detail}");
    // Reads are not limited, and the refused write stored nothing.
    assert_eq!(http_get(&gw, "h/2").await.status(), 404);
    assert_eq!(gw.refused().http_writes, 1);
    // A token later, writes pass again.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let again = http_put(&gw, "h/3", "v", "text/plain").await;
    assert!(again.status().is_success());
    gw.shutdown().await;
}

/// With the CORS layer, `/resources` goes through axum's router (`src/http/front.rs`): the
/// client's address still reaches the write limit.
#[tokio::test]
async fn http_write_limit_counts_the_client_address_behind_the_cors_layer_too() {
    let gw = gateway_with(|c| {
        c.limits.publish_rate = 1;
        c.limits.publish_burst = 1;
        c.http.cors_origins = vec!["*".into()];
    })
    .await;
    assert!(http_put(&gw, "c/0", "v", "text/plain")
        .await
        .status()
        .is_success());
    let r = http_put(&gw, "c/1", "v", "text/plain").await;
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(detail.starts_with("127.0.0.1 writes faster"), "{detail}");
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

/// A new HTTP connection, and whether a GET on it is answered 404 (served, not refused).
async fn served(gw: &ponte::Gateway) -> (TcpStream, bool) {
    let mut s = TcpStream::connect(gw.http_addr).await.unwrap();
    let ok = http_roundtrip(&mut s).await.starts_with("HTTP/1.1 404");
    (s, ok)
}

#[tokio::test]
async fn http_max_connections_per_ip_answers_503_with_retry_after_and_closes() {
    let gw = gateway_with(|c| c.limits.max_connections_per_ip = 2).await;
    let (mut a, a_served) = served(&gw).await;
    let (b, b_served) = served(&gw).await;
    assert!(a_served && b_served);
    let mut c = TcpStream::connect(gw.http_addr).await.unwrap();
    let refused = read_to_close(&mut c, WAIT, "the 503 and close").await;
    let refused = String::from_utf8_lossy(&refused).to_ascii_lowercase();
    assert!(refused.starts_with("http/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    let problem = refused.contains("content-type: application/problem+json");
    assert!(problem, "{refused}");
    assert!(refused.contains("max_connections_per_ip"), "{refused}");
    assert_eq!(gw.refused().connections_of("http"), 1);
    // The admitted connections keep working; closing one frees a place.
    assert!(http_roundtrip(&mut a).await.starts_with("HTTP/1.1 404"));
    drop(b);
    eventually(WAIT, "a freed place", || async { served(&gw).await.1 }).await;
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
    let answer = read_to_close(&mut s, Duration::from_secs(3), "the server to close").await;
    let took = started.elapsed();
    let why = format!("closed after {took:?}, before the 1 s timeout");
    assert!(took >= Duration::from_millis(900), "{why}");
    // Nothing that looks like a served request came back.
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains(" 404 "), "{answer:?}");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// CoAP
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn coap_write_over_the_rate_is_5_03_with_max_age_and_a_diagnostic() {
    let gw = rate_limited(1, 2).await;
    let mut coap = Coap::new(gw.coap_addr).await;
    for i in 0..2 {
        let r = coap.put(&format!("r/c/{i}"), b"v", None).await;
        assert!(code(&r).starts_with("2."), "{}", code(&r));
    }
    let r = coap.put("r/c/2", b"v", None).await;
    assert_eq!(code(&r), "5.03");
    assert_eq!(opt_uint(&r, CoapOption::MaxAge), Some(1));
    let why = payload_str(&r);
    assert!(why.contains("publish_rate"), "{why}");
    // Nothing was stored, reads still pass.
    assert_eq!(code(&coap.get("r/c/2").await), "4.04");
    assert_eq!(gw.refused().coap_writes, 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn coap_tcp_max_connections_per_ip_closes_the_extra_connection_before_the_csm() {
    let gw = gateway_with(|c| c.limits.max_connections_per_ip = 1).await;
    // An admitted connection hears the server's CSM first (RFC 8323 §5.3).
    let mut a = TcpStream::connect(gw.coap_addr).await.unwrap();
    let mut first = [0u8; 1];
    within(WAIT, "the server's CSM", a.read_exact(&mut first))
        .await
        .unwrap();
    let mut b = TcpStream::connect(gw.coap_addr).await.unwrap();
    let got = read_to_close(&mut b, WAIT, "the refused connection to close").await;
    let why = "no CoAP byte on a refused connection";
    assert!(got.is_empty(), "{why}: {got:?}");
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
    let what = "$SYS/broker/connections/refused = 1";
    poll_until(
        Duration::from_secs(4),
        what,
        Duration::from_millis(100),
        || async {
            let r = http_get(&gw, "$SYS/broker/connections/refused").await;
            r.status() == 200 && r.text().await.unwrap_or_default() == "1"
        },
    )
    .await;
    drop(held);
    gw.shutdown().await;
}
