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

/// Wait for CONNACK on a WebSocket client; `Err` when the connection fails first.
async fn connack(events: &mut EventLoop) -> Result<(), String> {
    timeout(WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no CONNACK within 5 s".into()))
}

/// `[limits] max_connections_per_ip` on the MQTT-over-WebSocket port of its own: with 2
/// allowed, a third WebSocket client from 127.0.0.1 gets no CONNACK (the connection is
/// refused before the HTTP upgrade), the refusal is counted for `mqtt-ws`, and the admitted
/// clients keep working.
#[tokio::test]
async fn max_connections_per_ip_applies_to_the_websocket_port() {
    let mut config = ponte::config::Config::ephemeral();
    config.mqtt.ws_port = Some(0);
    config.limits.max_connections_per_ip = 2;
    let gw = ponte::start(config).await.unwrap();
    let url = format!("ws://{}/mqtt", gw.mqtt_ws_addr.expect("ws_port bound"));
    let (a, mut a_events) = ws_client(url.clone(), "ws-limit-a");
    connack(&mut a_events).await.expect("first admitted");
    let (_b, mut b_events) = ws_client(url.clone(), "ws-limit-b");
    connack(&mut b_events).await.expect("second admitted");
    let (_c, mut c_events) = ws_client(url, "ws-limit-c");
    assert!(
        connack(&mut c_events).await.is_err(),
        "the third WebSocket connection from 127.0.0.1 must not be served"
    );
    assert_eq!(gw.refused().connections_of("mqtt-ws"), 1);
    // The admitted client still works.
    a.subscribe("wslimit/#", QoS::AtMostOnce).await.unwrap();
    wait_suback(&mut a_events).await;
    a.publish("wslimit/x", QoS::AtMostOnce, false, "still here")
        .await
        .unwrap();
    assert_eq!(
        &next_publish(&mut a_events).await.payload[..],
        b"still here"
    );
    gw.shutdown().await;
}

/// The same on the HTTP port's `/mqtt`: an upgraded WebSocket keeps its connection's place
/// under `max_connections_per_ip` for as long as its MQTT session lasts (the place used to be
/// freed when hyper handed the upgraded socket over), so a third one is refused and counted
/// for `http`.
#[tokio::test]
async fn max_connections_per_ip_holds_for_upgraded_websockets_on_the_http_port() {
    let mut config = ponte::config::Config::ephemeral();
    config.limits.max_connections_per_ip = 2;
    let gw = ponte::start(config).await.unwrap();
    let url = format!("ws://{}/mqtt", gw.http_addr);
    let (_a, mut a_events) = ws_client(url.clone(), "http-ws-a");
    connack(&mut a_events).await.expect("first admitted");
    let (_b, mut b_events) = ws_client(url.clone(), "http-ws-b");
    connack(&mut b_events).await.expect("second admitted");
    let (_c, mut c_events) = ws_client(url, "http-ws-c");
    assert!(
        connack(&mut c_events).await.is_err(),
        "the third connection from 127.0.0.1 must not be served while two MQTT sessions hold theirs"
    );
    assert_eq!(gw.refused().connections_of("http"), 1);
    gw.shutdown().await;
}
