//! MQTT over WebSocket (MQTT 3.1.1 §6): `/mqtt` on the HTTP port and `mqtt.ws_port`, driven by
//! rumqttc's WebSocket transport and, where node is installed, by MQTT.js.

use std::process::Stdio;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Transport};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

fn ws_client(url: String, id: &str) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, url, 0);
    opts.set_transport(Transport::Ws);
    opts.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(opts, 16)
}

async fn next_publish(events: &mut EventLoop) -> rumqttc::Publish {
    timeout(WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return p,
                Ok(_) => continue,
                Err(e) => panic!("MQTT/WebSocket connection failed: {e}"),
            }
        }
    })
    .await
    .expect("a PUBLISH within 5 s")
}

async fn wait_suback(events: &mut EventLoop) {
    timeout(WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return,
                Ok(_) => continue,
                Err(e) => panic!("MQTT/WebSocket connection failed: {e}"),
            }
        }
    })
    .await
    .expect("SUBACK within 5 s")
}

#[tokio::test]
async fn mqtt_6_0_websocket_on_http_port_shares_the_broker() {
    let gw = ponte::start(ponte::config::Config::ephemeral())
        .await
        .unwrap();
    let url = format!("ws://{}/mqtt", gw.http_addr);
    let (client, mut events) = ws_client(url, "ws-sub");
    client.subscribe("ws/+", QoS::AtLeastOnce).await.unwrap();
    wait_suback(&mut events).await;

    // An HTTP write reaches the WebSocket subscriber.
    let r = reqwest::Client::new()
        .put(format!("http://{}/resources/ws/t", gw.http_addr))
        .body("from-http")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let p = next_publish(&mut events).await;
    assert_eq!(p.topic, "ws/t");
    assert_eq!(&p.payload[..], b"from-http");
    assert!(!p.retain, "MQTT-3.3.1-9 over WebSocket too");

    // A retained publish over WebSocket is what HTTP reads.
    client
        .publish("ws/u", QoS::AtLeastOnce, true, "from-ws")
        .await
        .unwrap();
    let p = next_publish(&mut events).await;
    assert_eq!(&p.payload[..], b"from-ws");
    let body = reqwest::get(format!("http://{}/resources/ws/u", gw.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "from-ws");
    drop(client);
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt_6_0_websocket_on_its_own_port() {
    let mut config = ponte::config::Config::ephemeral();
    config.mqtt.ws_port = Some(0);
    let gw = ponte::start(config).await.unwrap();
    let addr = gw.mqtt_ws_addr.expect("ws_port bound");
    let (client, mut events) = ws_client(format!("ws://{addr}/mqtt"), "ws-own");
    client.subscribe("own/#", QoS::AtMostOnce).await.unwrap();
    wait_suback(&mut events).await;
    client
        .publish("own/x", QoS::AtMostOnce, false, "loop")
        .await
        .unwrap();
    let p = next_publish(&mut events).await;
    assert_eq!(&p.payload[..], b"loop");
    drop(client);
    gw.shutdown().await;
}

#[tokio::test]
async fn mqtt_websocket_path_is_not_a_plain_get() {
    let gw = ponte::start(ponte::config::Config::ephemeral())
        .await
        .unwrap();
    let r = reqwest::get(format!("http://{}/mqtt", gw.http_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    gw.shutdown().await;
}

/// MQTT.js (the browser client) over WebSocket: CONNECT, SUBSCRIBE, a retained QoS 1
/// PUBLISH, and an HTTP PUT it must receive.
#[tokio::test]
async fn mqttjs_over_websocket() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mqttjs");
    let installed = dir.join("node_modules/mqtt").exists();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok();
    if !(installed && node) {
        if std::env::var_os("CI").is_some() {
            panic!("CI must install MQTT.js: (cd tests/mqttjs && npm install)");
        }
        eprintln!("SKIP: MQTT.js not installed (cd tests/mqttjs && npm install)");
        return;
    }
    let gw = ponte::start(ponte::config::Config::ephemeral())
        .await
        .unwrap();
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("ws.js"))
        .arg(format!("ws://{}/mqtt", gw.http_addr))
        .arg("2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Once MQTT.js has subscribed (its own retained message comes back), write over HTTP.
    let http = gw.http_addr;
    let web = reqwest::Client::new();
    timeout(WAIT, async {
        loop {
            if gw.broker.subscription_count() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("MQTT.js subscribed");
    web.put(format!("http://{http}/resources/ws/from-http"))
        .body("hello from http")
        .send()
        .await
        .unwrap();
    let out = timeout(Duration::from_secs(10), async {
        let mut stdout = String::new();
        use tokio::io::AsyncReadExt;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .await
            .unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        let status = child.wait().await.unwrap();
        (status, format!("{stdout}\nstderr: {stderr}"))
    })
    .await
    .expect("MQTT.js finished");
    assert!(out.0.success(), "MQTT.js failed: {}", out.1);
    assert!(out.1.contains(r#""event":"suback""#), "{}", out.1);
    assert!(out.1.contains(r#""event":"puback""#), "{}", out.1);
    assert!(
        out.1.contains(r#""payload":"hello from mqtt.js""#),
        "{}",
        out.1
    );
    assert!(
        out.1.contains(r#""payload":"hello from http""#),
        "{}",
        out.1
    );
    let stored = reqwest::get(format!("http://{http}/resources/ws/from-js"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(stored, "hello from mqtt.js");
    gw.shutdown().await;
}
