//! MQTT over WebSocket (MQTT 3.1.1 §6): `/mqtt` on the HTTP port and `mqtt.ws_port`, driven by
//! rumqttc's WebSocket transport and, where node is installed, by MQTT.js.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{MqttOptions, QoS, Transport};

/// Options for a rumqttc client `id` of the WebSocket endpoint `url`.
fn ws(url: &str, id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, url, 0);
    opts.set_transport(Transport::Ws);
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

/// A connected WebSocket client `id` of `url`.
async fn ws_client(url: &str, id: &str) -> Client {
    Client::connect_with(ws(url, id)).await.0
}

/// WebSocket clients `{id}-a`, `{id}-b` and `{id}-c` of `url` where two connections per
/// address are allowed: the first two are served (CONNACK), the third is not (the connection
/// fails or stays silent for [`WAIT`]; `why` says what that shows). The served two.
async fn two_served_third_refused(url: &str, id: &str, why: &str) -> Vec<Client> {
    let mut served = Vec::new();
    for n in ["a", "b", "c"] {
        let id = format!("{id}-{n}");
        match Client::connect_within(ws(url, &id), WAIT).await {
            Some(Ok((c, _))) => served.push(c),
            _ => assert_eq!(served.len(), 2, "{id} admitted"),
        }
    }
    assert_eq!(served.len(), 2, "{why}");
    served
}

#[tokio::test]
async fn mqtt_6_0_websocket_on_http_port_shares_the_broker() {
    let gw = gateway().await;
    let mut c = ws_client(&format!("ws://{}/mqtt", gw.http_addr), "ws-sub").await;
    c.subscribe("ws/+", QoS::AtLeastOnce).await;

    // An HTTP write reaches the WebSocket subscriber.
    let r = http_put_untyped(&gw, "ws/t", "from-http").await;
    assert_eq!(r.status(), 201);
    let p = c.publish_rx().await;
    assert_eq!(p.topic, "ws/t");
    assert_eq!(&p.payload[..], b"from-http");
    assert!(!p.retain, "MQTT-3.3.1-9 over WebSocket too");

    // A retained publish over WebSocket is what HTTP reads.
    c.publish("ws/u", QoS::AtLeastOnce, true, b"from-ws").await;
    let p = c.publish_rx().await;
    assert_eq!(&p.payload[..], b"from-ws");
    assert_eq!(http_text(&gw, "ws/u").await, "from-ws");
    drop(c);
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt_6_0_websocket_on_its_own_port() {
    let gw = gateway_with(|c| c.mqtt.ws_port = Some(0)).await;
    let addr = gw.mqtt_ws_addr.expect("ws_port bound");
    let mut c = ws_client(&format!("ws://{addr}/mqtt"), "ws-own").await;
    c.subscribe("own/#", QoS::AtMostOnce).await;
    c.publish("own/x", QoS::AtMostOnce, false, b"loop").await;
    let p = c.publish_rx().await;
    assert_eq!(&p.payload[..], b"loop");
    drop(c);
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt_6_0_messages_larger_than_the_read_buffer_cross_a_websocket_whole() {
    // The bridge reads frames with a 4 KiB buffer (issue 16: an idle connection holds no
    // more); a 300 KB message must still arrive whole, both ways.
    let gw = gateway().await;
    let mut opts = ws(&format!("ws://{}/mqtt", gw.http_addr), "ws-big");
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let mut c = Client::connect_with(opts).await.0;
    c.subscribe("big/#", QoS::AtLeastOnce).await;
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    c.publish("big/ws", QoS::AtLeastOnce, false, &payload).await;
    let p = c.publish_rx().await;
    assert_eq!(p.payload.len(), payload.len());
    assert!(
        p.payload[..] == payload[..],
        "the message arrived unchanged"
    );
    drop(c);
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt_websocket_path_is_not_a_plain_get() {
    let gw = gateway().await;
    let r = send(
        "GET /mqtt",
        http().get(format!("http://{}/mqtt", gw.http_addr)),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    gw.shutdown().await;
}

/// MQTT.js (the browser client) over WebSocket: CONNECT, SUBSCRIBE, a retained QoS 1
/// PUBLISH, and an HTTP PUT it must receive.
#[tokio::test]
async fn mqttjs_over_websocket() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mqttjs");
    if !(dir.join("node_modules/mqtt").exists() && have("node")) {
        if std::env::var_os("CI").is_some() {
            panic!("CI must install MQTT.js: (cd tests/mqttjs && npm install)");
        }
        eprintln!("SKIP: MQTT.js not installed (cd tests/mqttjs && npm install)");
        return;
    }
    let gw = gateway().await;
    let url = format!("ws://{}/mqtt", gw.http_addr);
    let script = Cmd::new("node").arg(dir.join("ws.js")).arg(url).arg("2");
    let child = script.limit(Duration::from_secs(10)).spawn();
    // Once MQTT.js has subscribed (its own retained message comes back), write over HTTP.
    subscribed(&gw, 0).await;
    http_put_untyped(&gw, "ws/from-http", "hello from http").await;
    let o = child.finish().await;
    let out = o.all();
    assert_eq!(o.code, Some(0), "MQTT.js failed: {out}");
    for says in [
        r#""event":"suback""#,
        r#""event":"puback""#,
        r#""payload":"hello from mqtt.js""#,
        r#""payload":"hello from http""#,
    ] {
        assert!(out.contains(says), "{out}");
    }
    assert_eq!(http_text(&gw, "ws/from-js").await, "hello from mqtt.js");
    gw.shutdown().await;
}

/// `[limits] max_connections_per_ip` on the MQTT-over-WebSocket port of its own: with 2
/// allowed, a third WebSocket client from 127.0.0.1 gets no CONNACK (the connection is
/// refused before the HTTP upgrade), the refusal is counted for `mqtt-ws`, and the admitted
/// clients keep working.
#[tokio::test]
async fn max_connections_per_ip_applies_to_the_websocket_port() {
    let gw = gateway_with(|c| {
        c.mqtt.ws_port = Some(0);
        c.limits.max_connections_per_ip = 2;
    })
    .await;
    let url = format!("ws://{}/mqtt", gw.mqtt_ws_addr.expect("ws_port bound"));
    let why = "the third WebSocket connection from 127.0.0.1 must not be served";
    let mut held = two_served_third_refused(&url, "ws-limit", why).await;
    assert_eq!(gw.refused().connections_of("mqtt-ws"), 1);
    // The admitted client still works.
    let a = &mut held[0];
    a.subscribe("wslimit/#", QoS::AtMostOnce).await;
    a.publish("wslimit/x", QoS::AtMostOnce, false, b"still here")
        .await;
    assert_eq!(&a.publish_rx().await.payload[..], b"still here");
    gw.shutdown().await;
}

/// The same on the HTTP port's `/mqtt`: an upgraded WebSocket keeps its connection's place
/// under `max_connections_per_ip` for as long as its MQTT session lasts (the place used to be
/// freed when hyper handed the upgraded socket over), so a third one is refused and counted
/// for `http`.
#[tokio::test]
async fn max_connections_per_ip_holds_for_upgraded_websockets_on_the_http_port() {
    let gw = gateway_with(|c| c.limits.max_connections_per_ip = 2).await;
    let url = format!("ws://{}/mqtt", gw.http_addr);
    let why = "the third connection from 127.0.0.1 must not be served while two MQTT sessions hold theirs";
    let _held = two_served_third_refused(&url, "http-ws", why).await;
    assert_eq!(gw.refused().connections_of("http"), 1);
    gw.shutdown().await;
}
