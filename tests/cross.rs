#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! One gateway, every cross-protocol path: a write in HTTP, CoAP or MQTT reaches readers
//! and subscribers in the other two (RFC 8075 for the HTTP/CoAP mapping, MQTT 3.1.1 for
//! retained values, the OpenAPI contract for HTTP).

mod common;

use coap_lite::{CoapOption, RequestType};
use common::*;

fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn http_put_reaches_mqtt_subscriber_coap_observer_and_sse_stream() {
    let gw = gateway().await;
    http_put(&gw, "x/fan", "old", "text/plain").await;

    let mut sub = Client::subscriber(gw.mqtt_addr, "fan-sub", "x/+").await;
    let retained = sub.publish_rx().await;
    assert_eq!(&retained.payload[..], b"old");
    assert!(
        retained.retain,
        "MQTT-3.3.1-8: the stored value arrives with RETAIN=1"
    );

    let mut coap = Coap::new(gw.coap_addr).await;
    let (token, r) = coap.observe("r/x/fan").await;
    assert_eq!(code(&r), "2.05");

    let mut sse = Sse::open(&gw, "x/fan").await;
    sse.event_with("data: old").await;

    let r = http_put(&gw, "x/fan", "new", "text/plain").await;
    assert_eq!(r.status(), 204, "replaced");

    let m = sub.publish_rx().await;
    assert_eq!(m.topic, "x/fan");
    assert_eq!(&m.payload[..], b"new");
    assert!(!m.retain, "MQTT-3.3.1-9: live forwarding has RETAIN=0");

    let n = coap.notification(&token).await;
    assert_eq!(code(&n), "2.05");
    assert_eq!(n.payload, b"new");

    let ev = sse.event_with("data: new").await;
    assert!(ev.contains("event: message"), "{ev:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt_3_3_1_5_retained_publish_is_readable_over_http_and_coap() {
    let gw = gateway().await;
    mqtt_publish(gw.mqtt_addr, "m/kept", b"from-mqtt", true).await;

    let r = http_get(&gw, "m/kept").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("etag"));
    assert_eq!(r.text().await.unwrap(), "from-mqtt");

    let mut c = Coap::new(gw.coap_addr).await;
    let p = c.get("r/m/kept").await;
    assert_eq!(code(&p), "2.05");
    assert_eq!(p.payload, b"from-mqtt");
    assert_eq!(
        opt_uint(&p, CoapOption::ContentFormat),
        Some(42),
        "an MQTT payload has no type: octet-stream"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt_3_3_1_7_non_retained_publish_is_not_stored_but_reaches_a_coap_observer() {
    let gw = gateway().await;
    // Not stored: nothing to read in either protocol.
    mqtt_publish(gw.mqtt_addr, "m/live", b"fleeting", false).await;
    assert_eq!(http_get(&gw, "m/live").await.status(), 404);
    let mut c = Coap::new(gw.coap_addr).await;
    assert_eq!(code(&c.get("r/m/live").await), "4.04");

    // But delivered to whoever observes the thing.
    http_put(&gw, "m/watched", "stored", "text/plain").await;
    let (token, _) = c.observe("r/m/watched").await;
    mqtt_publish(gw.mqtt_addr, "m/watched", b"passing", false).await;
    let n = c.notification(&token).await;
    assert_eq!(code(&n), "2.05");
    assert_eq!(n.payload, b"passing");
    // ... and the stored value is untouched.
    assert_eq!(
        http_get(&gw, "m/watched").await.text().await.unwrap(),
        "stored"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc8075_coap_put_reaches_mqtt_and_http_with_the_mapped_content_type() {
    let gw = gateway().await;
    let mut sub = Client::subscriber(gw.mqtt_addr, "coap-put-sub", "c/#").await;
    let mut c = Coap::new(gw.coap_addr).await;

    assert_eq!(code(&c.put("r/c/text", b"21.5", Some(0)).await), "2.01");
    let m = sub.publish_rx().await;
    assert_eq!(m.topic, "c/text");
    assert_eq!(&m.payload[..], b"21.5");
    let r = http_get(&gw, "c/text").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        content_type(&r).replace(' ', "").to_lowercase(),
        "text/plain;charset=utf-8"
    );
    assert_eq!(r.text().await.unwrap(), "21.5");

    assert_eq!(
        code(&c.put("r/c/json", br#"{"a":1}"#, Some(50)).await),
        "2.01"
    );
    assert_eq!(&sub.publish_rx().await.payload[..], br#"{"a":1}"#);
    let r = http_get(&gw, "c/json").await;
    assert_eq!(content_type(&r), "application/json");
    assert_eq!(r.text().await.unwrap(), r#"{"a":1}"#);
    gw.shutdown().await;
}

/// Everything that watches `topic` (stored as "v"), for the DELETE tests.
struct Watchers {
    sub: Client,
    coap: Coap,
    token: Vec<u8>,
    sse: Sse,
}

async fn watch(gw: &ponte::Gateway, topic: &str, id: &str) -> Watchers {
    let mut sub = Client::subscriber(gw.mqtt_addr, id, topic).await;
    assert_eq!(
        &sub.publish_rx().await.payload[..],
        b"v",
        "retained value first"
    );
    let mut coap = Coap::new(gw.coap_addr).await;
    let (token, r) = coap.observe(&format!("r/{topic}")).await;
    assert_eq!(code(&r), "2.05");
    let mut sse = Sse::open(gw, topic).await;
    sse.event_with("data: v").await;
    Watchers {
        sub,
        coap,
        token,
        sse,
    }
}

async fn assert_cleared_everywhere(gw: &ponte::Gateway, topic: &str, mut w: Watchers) {
    let m = w.sub.publish_rx().await;
    assert_eq!(m.topic, topic);
    assert!(
        m.payload.is_empty(),
        "the clear reaches MQTT as an empty message"
    );
    let n = w.coap.notification(&w.token).await;
    assert_eq!(code(&n), "4.04", "observation ends with 4.04");
    assert!(n.get_first_option(CoapOption::Observe).is_none());
    let ev = w.sse.event_with("event: delete").await;
    assert!(ev.contains("data:"), "{ev:?}");

    let mut late = Client::subscriber(gw.mqtt_addr, &format!("late-{}", rand_id()), topic).await;
    late.expect_silence("a new subscriber after the clear gets no retained message")
        .await;
    let mut c = Coap::new(gw.coap_addr).await;
    assert_eq!(code(&c.get(&format!("r/{topic}")).await), "4.04");
    assert_eq!(http_get(gw, topic).await.status(), 404);
}

#[tokio::test]
async fn http_delete_is_seen_in_mqtt_coap_and_sse() {
    let gw = gateway().await;
    http_put(&gw, "d/http", "v", "text/plain").await;
    let w = watch(&gw, "d/http", "del-http-sub").await;
    assert_eq!(http_delete(&gw, "d/http").await.status(), 204);
    assert_cleared_everywhere(&gw, "d/http", w).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn coap_delete_is_seen_in_mqtt_coap_and_sse() {
    let gw = gateway().await;
    http_put(&gw, "d/coap", "v", "text/plain").await;
    let w = watch(&gw, "d/coap", "del-coap-sub").await;
    let mut c = Coap::new(gw.coap_addr).await;
    assert_eq!(code(&c.delete("r/d/coap").await), "2.02");
    assert_cleared_everywhere(&gw, "d/coap", w).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt_3_3_1_10_empty_retained_publish_clears_what_http_wrote() {
    let gw = gateway().await;
    assert_eq!(
        http_put(&gw, "e/clear", "v", "text/plain").await.status(),
        201
    );
    let w = watch(&gw, "e/clear", "clear-sub").await;
    mqtt_publish(gw.mqtt_addr, "e/clear", b"", true).await;
    assert_cleared_everywhere(&gw, "e/clear", w).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn wildcard_writes_are_refused_in_every_protocol() {
    let gw = gateway().await;
    let mut watcher = Client::subscriber(gw.mqtt_addr, "wild-watch", "#").await;

    for path in ["a/%2B", "a/%23", "a/+"] {
        let r = within(
            WAIT,
            "HTTP PUT",
            http()
                .put(url(&gw, path))
                .header("content-type", "text/plain")
                .body("w")
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "PUT /resources/{path}");
        assert!(
            content_type(&r).starts_with("application/problem+json"),
            "problem+json for {path}: {}",
            content_type(&r)
        );
        let body: serde_json::Value =
            serde_json::from_slice(&r.bytes().await.unwrap()).expect("a JSON problem");
        assert_eq!(body["status"], 400);
    }

    let mut c = Coap::new(gw.coap_addr).await;
    for path in ["r/a/+", "r/a/#"] {
        let r = c.put(path, b"w", Some(0)).await;
        assert_eq!(code(&r), "4.00", "CoAP PUT {path}");
    }

    for topic in ["a/+", "a/#"] {
        let mut s = V3::connect(gw.mqtt_addr, &format!("wild-{}", rand_id())).await;
        s.send_raw(&publish_packet(topic, b"w", 0, 0, true, false))
            .await;
        assert!(
            closed_within(&mut s.s, WAIT).await,
            "PUBLISH to {topic} closes the connection"
        );
    }

    watcher.expect_silence("nothing was published").await;
    assert_eq!(gw.broker.retained_count(), 0, "nothing was stored");
    gw.shutdown().await;
}

#[tokio::test]
async fn large_300_kb_bodies_cross_http_and_mqtt_intact() {
    let gw = gateway().await;
    let body: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i % 251) as u8 ^ (i >> 10) as u8)
        .collect();

    let mut sub = Client::subscriber(gw.mqtt_addr, "big-sub", "big/#").await;
    assert_eq!(
        http_put(&gw, "big/h2m", body.clone(), "application/octet-stream")
            .await
            .status(),
        201
    );
    let m = sub.publish_rx().await;
    assert_eq!(m.topic, "big/h2m");
    assert_eq!(m.payload.len(), body.len());
    assert!(m.payload[..] == body[..], "HTTP → MQTT intact");

    let reversed: Vec<u8> = body.iter().rev().copied().collect();
    mqtt_publish(gw.mqtt_addr, "big/m2h", &reversed, true).await;
    let r = http_get(&gw, "big/m2h").await;
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len(), reversed.len());
    assert!(got[..] == reversed[..], "MQTT → HTTP intact");

    // And CoAP reads the MQTT-written big value block by block to the same bytes.
    let mut c = Coap::new(gw.coap_addr).await;
    let mut all = Vec::new();
    for num in 0u32.. {
        let mut p = c.request(RequestType::Get, "r/big/m2h");
        p.add_option(CoapOption::Block2, uint((num << 4) | 6));
        let r = c.exchange(&p).await;
        assert_eq!(code(&r), "2.05");
        all.extend_from_slice(&r.payload);
        if opt_uint(&r, CoapOption::Block2).unwrap() & 0x8 == 0 {
            break;
        }
    }
    assert!(all == reversed, "MQTT → CoAP Block2 intact");
    gw.shutdown().await;
}
