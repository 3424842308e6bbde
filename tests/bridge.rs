#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! MQTT bridges (issue 14) against a real mosquitto broker started by each test on a
//! loopback port (Debian's `mosquitto`; without it the tests say SKIP, except in CI): out,
//! in and both with prefixes, no loops, the remote stopped and restarted with QoS 1
//! messages published meanwhile, retained reconciliation, MQTT 3.1.1 and 5 remotes, a TLS
//! remote with a CA made by rcgen, the `$SYS` state topic and counters, an `in` message
//! acknowledged only once stored, reload, and the real binary killed with `kill -9`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{within, Client, Pki, WAIT};
use ponte::bridge::BridgeStats;
use ponte::config::Config;
use ponte::Gateway;
use rumqttc::{MqttOptions, QoS};

/// Long enough for a bridge to (re)connect after the remote comes back: the tests use
/// reconnect delays of at most 2 s, with jitter.
const LINK: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// mosquitto
// ---------------------------------------------------------------------------------------

/// Where mosquitto is (Debian installs it in /usr/sbin, not always on a user's PATH).
fn mosquitto_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.push("/usr/local/sbin".into());
    let found = dirs
        .iter()
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("mosquitto is not installed, and CI must have it");
        }
        println!("SKIP: mosquitto not installed");
    }
    found
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto broker of the test's own, on loopback, killed when dropped.
struct Mosquitto {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    /// MQTT over WebSocket.
    ws_port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    /// Start one (`persistence`: sessions and retained values survive its restarts;
    /// `tls`: also a TLS listener with these certificate and key files).
    fn start(persistence: bool, tls: Option<(&Path, &Path)>) -> Option<Mosquitto> {
        let bin = mosquitto_bin()?;
        let dir = tempfile::tempdir().unwrap();
        // Started as root, mosquitto switches to its own user: it must be able to write its
        // persistence file here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = free_port();
        let tls_port = tls.map(|_| free_port());
        let ws_port = free_port();
        let mut conf = format!(
            "per_listener_settings false\nallow_anonymous true\nlog_dest stderr\nlog_type error\nlog_type warning\nmax_queued_messages 100000\npersistence {persistence}\npersistence_location {}/\nlistener {port} 127.0.0.1\nlistener {ws_port} 127.0.0.1\nprotocol websockets\n",
            dir.path().display()
        );
        if let (Some((cert, key)), Some(p)) = (tls, tls_port) {
            conf.push_str(&format!(
                "listener {p} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                cert.display(),
                key.display()
            ));
        }
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut m = Mosquitto {
            bin,
            dir,
            port,
            tls_port,
            ws_port,
            child: None,
        };
        m.run();
        Some(m)
    }

    fn run(&mut self) {
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stop with SIGTERM (it saves its persistence file) and wait.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Start again on the same port(s).
    fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// ponte
// ---------------------------------------------------------------------------------------

/// `[[bridge]] name = "cloud"` to `url` with `extra` keys and the three standard rules:
/// `sensors/#` out, `cmd/#` in (locally under `remote/`), `shared/#` both; remotely all
/// under `edge-1/`.
fn bridge_toml(url: &str, protocol: u8, extra: &str) -> String {
    format!(
        r#"
[[bridge]]
name = "cloud"
url = "{url}"
protocol = {protocol}
client_id = "ponte-test-{id}"
reconnect_min_secs = 1
reconnect_max_secs = 2
keepalive_secs = 5
{extra}
[[bridge.topic]]
pattern = "sensors/#"
direction = "out"
remote_prefix = "edge-1/"
[[bridge.topic]]
pattern = "cmd/#"
direction = "in"
local_prefix = "remote/"
remote_prefix = "edge-1/"
[[bridge.topic]]
pattern = "shared/#"
direction = "both"
remote_prefix = "edge-1/"
"#,
        id = fastrand::u32(..)
    )
}

/// A gateway (memory store, ports 0) running the bridges of `toml`.
async fn gateway(toml: &str) -> Gateway {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_default())
        .with_test_writer()
        .try_init();
    let mut c = Config::ephemeral();
    c.bridge = Config::from_toml(toml).expect("bridge config").bridge;
    within(WAIT, "gateway start", ponte::start(c))
        .await
        .expect("gateway starts")
}

fn stats(gw: &Gateway) -> BridgeStats {
    gw.bridge_stats()
        .into_iter()
        .find(|s| s.name == "cloud")
        .expect("bridge cloud")
}

/// Poll `f` every 20 ms until it holds, or fail naming `what`.
async fn until(d: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + d;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {d:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn up(gw: &Gateway) {
    until(LINK, "the bridge to connect", || stats(gw).up).await;
}

/// The gateway's `/metrics` text.
async fn metrics(gw: &Gateway) -> String {
    http()
        .get(format!("http://{}/metrics", gw.http_addr))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body")
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn url(gw: &Gateway, topic: &str) -> String {
    format!("http://{}/resources/{topic}", gw.http_addr)
}

/// The value of `topic` over HTTP (`None`: 404).
async fn get(gw: &Gateway, topic: &str) -> Option<(String, Option<String>)> {
    let r = http().get(url(gw, topic)).send().await.unwrap();
    if r.status() == 404 {
        return None;
    }
    assert!(r.status().is_success(), "GET {topic}: {}", r.status());
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    Some((r.text().await.unwrap(), ct))
}

/// Poll HTTP until `topic` has `value` (`None`: until it is gone).
async fn until_value(gw: &Gateway, topic: &str, value: Option<&str>) {
    let deadline = Instant::now() + LINK;
    loop {
        let got = get(gw, topic).await.map(|(v, _)| v);
        if got.as_deref() == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} is {got:?}, expected {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn put(gw: &Gateway, topic: &str, value: &str, content_type: &str) {
    let r = http()
        .put(url(gw, topic))
        .header("content-type", content_type)
        .body(value.to_owned())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT {topic}: {}", r.status());
}

/// A rumqttc 3.1.1 client of the remote (or of ponte).
async fn client(addr: SocketAddr, id: &str) -> Client {
    Client::connect(addr, id).await.0
}

/// A persistent 3.1.1 session at `addr` (Clean Session 0).
async fn persistent(addr: SocketAddr, id: &str) -> Client {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o.set_clean_session(false);
    Client::connect_with(o).await.0
}

/// Publish `probe` messages on remote `topic` until the local client `local` receives
/// one: the bridge's `in` subscription is then active at the remote.
async fn wait_for_in_subscription(
    remote: &mut Client,
    local: &mut Client,
    topic: &str,
    local_topic: &str,
) {
    let deadline = Instant::now() + LINK;
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "the bridge never brought {topic} in"
        );
        remote
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                format!("probe-{i}").as_bytes(),
            )
            .await;
        if let Ok(p) = tokio::time::timeout(Duration::from_millis(300), local.publish_rx()).await {
            assert_eq!(p.topic, local_topic);
            return;
        }
    }
}

/// Every PUBLISH `c` receives until nothing arrives for 600 ms.
async fn drain(c: &mut Client) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Ok(p) = tokio::time::timeout(Duration::from_millis(600), c.publish_rx()).await {
        out.push((
            p.topic.clone(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// out, in, both; no loops
// ---------------------------------------------------------------------------------------

async fn out_in_both(protocol: u8) {
    let Some(mosq) = Mosquitto::start(false, None) else {
        return;
    };
    // A retained value at the remote before the bridge exists.
    let mut remote = client(mosq.addr(), "remote-pub").await;
    remote
        .publish("edge-1/cmd/fan", QoS::AtLeastOnce, true, b"on")
        .await;
    let mut watcher = client(mosq.addr(), "watcher").await;
    watcher.subscribe("edge-1/#", QoS::AtLeastOnce).await;
    drain(&mut watcher).await;
    let gw = gateway(&bridge_toml(
        &format!("mqtt://{}", mosq.addr()),
        protocol,
        "",
    ))
    .await;
    up(&gw).await;
    // in: the remote's retained value becomes a thing readable over HTTP, under
    // local_prefix.
    until_value(&gw, "remote/cmd/fan", Some("on")).await;
    let mut local = client(gw.mqtt_addr, "local-sub").await;
    local.subscribe("shared/#", QoS::AtLeastOnce).await;
    local.subscribe("remote/#", QoS::AtLeastOnce).await;

    // out: an HTTP write and an MQTT publish, under the remote prefix.
    put(&gw, "sensors/kitchen", "21.5", "text/plain").await;
    let p = within(WAIT, "the HTTP write at the remote", watcher.publish_rx()).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("edge-1/sensors/kitchen", &b"21.5"[..])
    );
    let mut pubber = client(gw.mqtt_addr, "local-pub").await;
    pubber
        .publish("sensors/door", QoS::AtLeastOnce, false, b"open")
        .await;
    let p = within(WAIT, "the MQTT publish at the remote", watcher.publish_rx()).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("edge-1/sensors/door", &b"open"[..])
    );
    // The HTTP write went out retained: a new subscriber at the remote gets it.
    let mut late = client(mosq.addr(), "late").await;
    late.subscribe("edge-1/sensors/kitchen", QoS::AtLeastOnce)
        .await;
    let p = within(WAIT, "the retained copy at the remote", late.publish_rx()).await;
    assert!(p.retain, "an HTTP write is retained at the remote too");
    // Not under a rule: stays local.
    put(&gw, "private/x", "1", "text/plain").await;

    let p = within(
        WAIT,
        "the retained value at a local subscriber",
        local.publish_rx(),
    )
    .await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("remote/cmd/fan", &b"on"[..])
    );
    // A live retained message: v5 (Retain As Published) keeps it retained, so it
    // replaces the value; 3.1.1 forwards it without RETAIN (MQTT-3.3.1-9), so it is a
    // plain message locally and the value stays.
    remote
        .publish("edge-1/cmd/fan", QoS::AtLeastOnce, true, b"off")
        .await;
    let p = within(
        WAIT,
        "the live in message at a local subscriber",
        local.publish_rx(),
    )
    .await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("remote/cmd/fan", &b"off"[..])
    );
    let value = get(&gw, "remote/cmd/fan").await.map(|v| v.0);
    if protocol == 5 {
        assert_eq!(value.as_deref(), Some("off"));
    } else {
        assert_eq!(value.as_deref(), Some("on"));
    }

    // both: once each way, never back (no loop).
    wait_for_in_subscription(
        &mut remote,
        &mut local,
        "edge-1/shared/probe",
        "shared/probe",
    )
    .await;
    drain(&mut local).await;
    drain(&mut watcher).await;
    pubber
        .publish("shared/light", QoS::AtLeastOnce, false, b"L")
        .await;
    remote
        .publish("edge-1/shared/heat", QoS::AtLeastOnce, false, b"R")
        .await;
    let at_remote = drain(&mut watcher).await;
    let at_local = drain(&mut local).await;
    let count = |v: &[(String, String)], t: &str, p: &str| {
        v.iter().filter(|(a, b)| a == t && b == p).count()
    };
    for (who, seen, topic, payload) in [
        ("remote", &at_remote, "edge-1/shared/light", "L"),
        ("remote", &at_remote, "edge-1/shared/heat", "R"),
        ("local", &at_local, "shared/light", "L"),
        ("local", &at_local, "shared/heat", "R"),
    ] {
        assert_eq!(count(seen, topic, payload), 1, "{who} saw {seen:?}");
    }
    assert_eq!(
        at_remote.len(),
        2,
        "nothing else at the remote: {at_remote:?}"
    );

    let s = stats(&gw);
    assert!(s.messages_out >= 3 && s.messages_in >= 2, "{s:?}");
    if protocol == 4 {
        assert!(
            s.echoes >= 1,
            "the 3.1.1 remote echoed the both message: {s:?}"
        );
    } else {
        assert_eq!(
            s.echoes, 0,
            "v5 No Local: the remote sends nothing back: {s:?}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn out_in_and_both_with_prefixes_and_no_loop_mqtt_3_1_1() {
    out_in_both(4).await;
}

#[tokio::test]
async fn out_in_and_both_with_prefixes_and_no_loop_mqtt_5() {
    out_in_both(5).await;
}

/// v5 properties cross the bridge both ways: the content type of an HTTP write reaches a
/// v5 subscriber at the remote, and a remote v5 Content Type becomes the local value's.
#[tokio::test]
async fn v5_content_type_and_user_properties_cross_the_bridge() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    let Some(mosq) = Mosquitto::start(false, None) else {
        return;
    };
    let mut o = rumqttc::v5::MqttOptions::new("v5-watcher", "127.0.0.1", mosq.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (remote, mut events) = rumqttc::v5::AsyncClient::new(o, 16);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            if let rumqttc::v5::Event::Incoming(Packet::Publish(p)) = ev {
                let _ = tx.send(p);
            }
        }
    });
    remote
        .subscribe("edge-1/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    let gw = gateway(&bridge_toml(&format!("mqtt://{}", mosq.addr()), 5, "")).await;
    up(&gw).await;
    put(&gw, "sensors/json", "{\"t\":1}", "application/json").await;
    let p = within(WAIT, "the write at the v5 remote", rx.recv())
        .await
        .unwrap();
    let props = p.properties.expect("properties");
    assert_eq!(props.content_type.as_deref(), Some("application/json"));

    remote
        .publish_with_properties(
            "edge-1/cmd/cfg",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            true,
            "<a/>",
            PublishProperties {
                content_type: Some("application/xml".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    until_value(&gw, "remote/cmd/cfg", Some("<a/>")).await;
    let (_, ct) = get(&gw, "remote/cmd/cfg").await.unwrap();
    assert_eq!(ct.as_deref(), Some("application/xml"));
    gw.shutdown().await;
}

/// `ws://` remotes: MQTT over WebSocket to mosquitto's websockets listener, both ways.
#[tokio::test]
async fn websocket_remote_both_ways() {
    let Some(mosq) = Mosquitto::start(false, None) else {
        return;
    };
    let mut remote = client(mosq.addr(), "remote-pub").await;
    remote
        .publish("edge-1/cmd/ws", QoS::AtLeastOnce, true, b"over-ws")
        .await;
    let mut watcher = client(mosq.addr(), "watcher").await;
    watcher
        .subscribe("edge-1/sensors/#", QoS::AtLeastOnce)
        .await;
    let url = format!("ws://127.0.0.1:{}/mqtt", mosq.ws_port);
    let gw = gateway(&bridge_toml(&url, 5, "")).await;
    up(&gw).await;
    until_value(&gw, "remote/cmd/ws", Some("over-ws")).await;
    put(&gw, "sensors/ws", "1", "text/plain").await;
    let p = within(WAIT, "the write at the remote", watcher.publish_rx()).await;
    assert_eq!(p.topic, "edge-1/sensors/ws");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// nothing acknowledged lost
// ---------------------------------------------------------------------------------------

async fn remote_restart(protocol: u8) {
    let Some(mut mosq) = Mosquitto::start(true, None) else {
        return;
    };
    // A persistent subscriber at the remote, away while things happen.
    let mut sub = persistent(mosq.addr(), "collector").await;
    sub.subscribe("edge-1/sensors/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let gw = gateway(&bridge_toml(
        &format!("mqtt://{}", mosq.addr()),
        protocol,
        "",
    ))
    .await;
    up(&gw).await;

    mosq.stop();
    until(LINK, "the bridge to notice", || !stats(&gw).up).await;
    let mut pubber = client(gw.mqtt_addr, "pubber").await;
    const N: usize = 50;
    for i in 0..N {
        pubber
            .publish(
                "sensors/seq",
                QoS::AtLeastOnce,
                false,
                format!("{i}").as_bytes(),
            )
            .await;
    }
    let s = stats(&gw);
    assert_eq!(
        s.queued, N,
        "every acknowledged message is queued while the remote is down: {s:?}"
    );
    let before = s.messages_out;

    mosq.run();
    up(&gw).await;
    until(
        LINK,
        "every queued message to be acknowledged by the remote",
        || stats(&gw).messages_out >= before + N as u64,
    )
    .await;
    let mut sub = persistent(mosq.addr(), "collector").await;
    let mut got = Vec::new();
    while got.len() < N {
        let p = within(WAIT, "a queued message", sub.publish_rx()).await;
        got.push(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "all arrive, in order");
    assert_eq!(stats(&gw).queued, 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn remote_stopped_and_restarted_qos1_published_meanwhile_all_arrive_in_order_mqtt_3_1_1() {
    remote_restart(4).await;
}

#[tokio::test]
async fn remote_stopped_and_restarted_qos1_published_meanwhile_all_arrive_in_order_mqtt_5() {
    remote_restart(5).await;
}

/// A store that fails while told to: the bridge must not acknowledge an `in` message it
/// could not store.
#[derive(Clone, Default)]
struct Failing(Arc<AtomicBool>);

impl ponte::store::Store for Failing {
    fn load_retained(
        &self,
    ) -> Result<Vec<(ponte::model::TopicName, ponte::model::RetainedValue)>, ponte::store::StoreError>
    {
        Ok(Vec::new())
    }
    fn apply(&mut self, _ops: &[ponte::store::RetainedOp]) -> Result<(), ponte::store::StoreError> {
        if self.0.load(Ordering::SeqCst) {
            return Err(ponte::store::StoreError::Engine(
                "injected: disk full".into(),
            ));
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), ponte::store::StoreError> {
        Ok(())
    }
}

/// An `in` message is acknowledged to the remote only once stored: while the local
/// store fails, nothing is acknowledged, so after the gateway is gone the remote still has
/// the message in flight for the bridge's session and re-sends it to the next one.
#[tokio::test]
async fn in_message_is_acknowledged_only_after_it_is_stored() {
    let Some(mosq) = Mosquitto::start(false, None) else {
        return;
    };
    // v5: a live retained message stays retained (Retain As Published), so storing it
    // is a retained write, which the failing store refuses.
    let toml = bridge_toml(&format!("mqtt://{}", mosq.addr()), 5, "");
    // A retained value the bridge gets when it subscribes: once it is stored, the
    // subscription is in place.
    let mut remote = client(mosq.addr(), "remote-pub").await;
    remote
        .publish("edge-1/cmd/warmup", QoS::AtLeastOnce, true, b"1")
        .await;
    let failing = Failing::default();
    let mut c = Config::ephemeral();
    c.bridge = Config::from_toml(&toml).unwrap().bridge;
    let gw = ponte::start_with_store(c.clone(), failing.clone())
        .await
        .unwrap();
    up(&gw).await;
    until_value(&gw, "remote/cmd/warmup", Some("1")).await;
    failing.0.store(true, Ordering::SeqCst);
    remote
        .publish("edge-1/cmd/valve", QoS::AtLeastOnce, true, b"close")
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(&gw, "remote/cmd/valve").await, None);
    assert_eq!(stats(&gw).messages_in, 1, "only the warm-up was stored");
    gw.shutdown().await;

    // Same bridge (same client id, persistent remote session), a working store.
    let gw = ponte::start(c).await.unwrap();
    up(&gw).await;
    // The remote sends its retained values again (a new SUBSCRIBE: the warm-up and the
    // valve) and, because it was never acknowledged, re-sends the valve message in
    // flight: three stored. Had the first gateway acknowledged the valve message before
    // storing it, only the two retained values would come.
    until(LINK, "the unacknowledged message to come back", || {
        stats(&gw).messages_in >= 3
    })
    .await;
    until_value(&gw, "remote/cmd/valve", Some("close")).await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// retained reconciliation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn retained_values_are_reconciled_on_connect_and_republished_when_the_remote_lost_them() {
    let Some(mut mosq) = Mosquitto::start(false, None) else {
        return;
    };
    // The remote's truth under the in rule.
    let mut remote = client(mosq.addr(), "remote-pub").await;
    remote
        .publish("edge-1/cmd/mode", QoS::AtLeastOnce, true, b"eco")
        .await;
    // Local values before the bridge exists: a stale one and one the remote does not
    // have under the in rule; one under the out rule; one under the both rule.
    let toml = bridge_toml(&format!("mqtt://{}", mosq.addr()), 5, "");
    let gw = gateway(&toml).await;
    // (The bridge may already be connected; these writes race it, which is the point of
    // reconciling again on the next connection below.)
    put(&gw, "remote/cmd/mode", "stale", "text/plain").await;
    put(&gw, "remote/cmd/gone", "x", "text/plain").await;
    put(&gw, "sensors/t", "20", "text/plain").await;
    put(&gw, "shared/k", "local", "text/plain").await;
    up(&gw).await;

    // Restart the remote without persistence: it lost the session and its retained
    // values except what it is told again.
    mosq.restart();
    remote = client(mosq.addr(), "remote-pub").await;
    remote
        .publish("edge-1/cmd/mode", QoS::AtLeastOnce, true, b"eco")
        .await;
    until(LINK, "the bridge to reconnect", || stats(&gw).connects >= 2).await;
    up(&gw).await;
    // The remote is the truth for `in`: its value wins, a value it lacks is cleared.
    until_value(&gw, "remote/cmd/mode", Some("eco")).await;
    until_value(&gw, "remote/cmd/gone", None).await;
    // The remote lost the session: local values that go out are republished, retained.
    let mut late = client(mosq.addr(), "late").await;
    late.subscribe("edge-1/sensors/t", QoS::AtLeastOnce).await;
    let p = within(LINK, "sensors/t republished", late.publish_rx()).await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"20");
    // both: the remote lacked it and lost the session, so the local value is sent.
    let mut late = client(mosq.addr(), "late2").await;
    late.subscribe("edge-1/shared/k", QoS::AtLeastOnce).await;
    let p = within(LINK, "shared/k republished", late.publish_rx()).await;
    assert_eq!(&p.payload[..], b"local");
    assert_eq!(
        get(&gw, "shared/k").await.map(|v| v.0).as_deref(),
        Some("local")
    );
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_remote_verified_against_the_configured_ca() {
    let pki = Pki::new("bridge test CA", "remote");
    let Some(mosq) = Mosquitto::start(
        false,
        Some((&pki.path("server.pem"), &pki.path("server.key"))),
    ) else {
        return;
    };
    let tls_url = format!("mqtts://127.0.0.1:{}", mosq.tls_port.unwrap());
    let mut watcher = client(mosq.addr(), "watcher").await;
    watcher.subscribe("edge-1/#", QoS::AtLeastOnce).await;

    // The wrong CA: the handshake fails, the bridge stays down.
    let trust = pki.path("trust.pem");
    std::fs::copy(pki.path("other-ca.pem"), &trust).unwrap();
    let file = pki.path("ponte.toml");
    std::fs::write(
        &file,
        bridge_toml(&tls_url, 5, &format!("ca_file = \"{}\"", trust.display())),
    )
    .unwrap();
    let mut c = Config::from_file(&file).unwrap();
    let e = Config::ephemeral();
    (c.host, c.http, c.coap, c.mqtt, c.store) = (e.host, e.http, e.coap, e.mqtt, e.store);
    let gw = ponte::start(c).await.unwrap();
    until(LINK, "a failed attempt", || stats(&gw).failures >= 1).await;
    assert!(!stats(&gw).up, "an unverified remote is not connected");

    // The right CA in the same file, and SIGHUP's hook: the bridge restarts with it.
    std::fs::copy(pki.path("ca.pem"), &trust).unwrap();
    gw.reload().unwrap();
    up(&gw).await;
    put(&gw, "sensors/tls", "secret", "text/plain").await;
    let p = within(WAIT, "the message over TLS", watcher.publish_rx()).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("edge-1/sensors/tls", &b"secret"[..])
    );
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// state, identity, configuration
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sys_connection_state_follows_the_link_like_mosquitto() {
    let Some(mut mosq) = Mosquitto::start(false, None) else {
        return;
    };
    let gw = gateway(&bridge_toml(&format!("mqtt://{}", mosq.addr()), 4, "")).await;
    up(&gw).await;
    let state = "$SYS/broker/connection/cloud/state";
    until_value(&gw, state, Some("1")).await;
    let up_line = |m: &str, v: u8| {
        m.lines()
            .any(|l| l == format!("ponte_bridge_up{{bridge=\"cloud\"}} {v}"))
    };
    let text = metrics(&gw).await;
    assert!(up_line(&text, 1), "{text}");
    mosq.stop();
    until_value(&gw, state, Some("0")).await;
    assert!(!stats(&gw).up);
    let text = metrics(&gw).await;
    assert!(up_line(&text, 0), "{text}");
    mosq.run();
    until_value(&gw, state, Some("1")).await;
    assert!(stats(&gw).connects >= 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_mqtt_client_cannot_use_a_bridge_client_id() {
    let gw = common::gateway().await;
    let (client, mut eventloop) =
        rumqttc::AsyncClient::new(common::options(gw.mqtt_addr, "$bridge/cloud"), 8);
    let err = within(WAIT, "CONNACK", eventloop.poll()).await.unwrap_err();
    assert!(
        matches!(
            err,
            rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::BadClientId)
        ),
        "3.1.1 0x02 Identifier rejected: {err:?}"
    );
    drop(client);
    gw.shutdown().await;
}

#[test]
fn bad_bridge_config_is_refused_naming_the_key() {
    let e = Config::from_toml(&bridge_toml("mqtt://h", 6, "")).unwrap_err();
    assert!(e.contains("protocol 6"), "{e}");
    let e = Config::from_toml(&bridge_toml("ftp://h", 5, "")).unwrap_err();
    assert!(e.contains("scheme \"ftp\""), "{e}");
    let e = Config::from_toml(&bridge_toml(
        "mqtt://h",
        5,
        "ca_file = \"/nonexistent/ca.pem\"",
    ))
    .unwrap_err();
    assert!(e.contains("need a TLS url"), "{e}");
}

#[tokio::test]
async fn an_unreadable_ca_file_stops_the_start_naming_it() {
    let mut c = Config::ephemeral();
    c.bridge = Config::from_toml(&bridge_toml(
        "mqtts://127.0.0.1:1",
        5,
        "ca_file = \"/nonexistent/ca.pem\"",
    ))
    .unwrap()
    .bridge;
    let e = ponte::start(c).await.unwrap_err();
    assert!(matches!(e, ponte::Error::Config(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

/// SIGHUP's hook: a bridge added to the file starts, a changed one restarts with its
/// queue, a removed one stops and its state goes to 0.
#[tokio::test]
async fn reload_starts_changes_and_stops_bridges() {
    let Some(mosq) = Mosquitto::start(false, None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ponte.toml");
    std::fs::write(&file, "").unwrap();
    let mut c = Config::from_file(&file).unwrap();
    let e = Config::ephemeral();
    (c.host, c.http, c.coap, c.mqtt, c.store) = (e.host, e.http, e.coap, e.mqtt, e.store);
    let gw = ponte::start(c).await.unwrap();
    assert!(gw.bridge_stats().is_empty());

    let toml = bridge_toml(&format!("mqtt://{}", mosq.addr()), 5, "");
    std::fs::write(&file, &toml).unwrap();
    gw.reload().unwrap();
    until(LINK, "the added bridge to connect", || {
        gw.bridge_stats().first().is_some_and(|s| s.up)
    })
    .await;

    // Changed: another prefix; the restarted bridge uses it.
    let mut watcher = client(mosq.addr(), "watcher").await;
    watcher.subscribe("edge-2/#", QoS::AtLeastOnce).await;
    std::fs::write(&file, toml.replace("edge-1/", "edge-2/")).unwrap();
    gw.reload().unwrap();
    let deadline = Instant::now() + LINK;
    loop {
        put(&gw, "sensors/r", "x", "text/plain").await;
        if let Ok(p) = tokio::time::timeout(Duration::from_millis(300), watcher.publish_rx()).await
        {
            assert_eq!(p.topic, "edge-2/sensors/r");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the changed bridge never used its new prefix"
        );
    }

    // A bad file: refused, the bridge keeps running.
    std::fs::write(&file, toml.replace("protocol = 5", "protocol = 9")).unwrap();
    let e = gw.reload().unwrap_err();
    assert!(e.to_string().contains("protocol 9"), "{e}");
    assert!(stats(&gw).up);

    std::fs::write(&file, "").unwrap();
    gw.reload().unwrap();
    until(LINK, "the removed bridge to stop", || {
        gw.bridge_stats().is_empty()
    })
    .await;
    until_value(&gw, "$SYS/broker/connection/cloud/state", Some("0")).await;
    gw.shutdown().await;
}

/// The out queue's durable entries go at the remote's acknowledgement: after a restart over
/// the same database, messages the remote acknowledged are not sent again (a bridge that
/// never acknowledged its entries would re-send all of them, ahead of the sentinel).
#[tokio::test]
async fn out_messages_the_remote_acknowledged_are_not_sent_again_after_a_restart() {
    let Some(mosq) = Mosquitto::start(false, None) else {
        return;
    };
    let mut collector = client(mosq.addr(), "collector").await;
    collector
        .subscribe("edge-1/sensors/#", QoS::AtLeastOnce)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = bridge_toml(&format!("mqtt://{}", mosq.addr()), 5, "");
    let on_disk = || async {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_default())
            .with_test_writer()
            .try_init();
        let mut c = Config::ephemeral();
        c.store.memory = false;
        c.store.db = dir.path().join("db");
        c.bridge = Config::from_toml(&toml).expect("bridge config").bridge;
        within(WAIT, "gateway start", ponte::start(c))
            .await
            .expect("gateway starts")
    };
    let gw = on_disk().await;
    up(&gw).await;
    let mut pubber = client(gw.mqtt_addr, "pubber").await;
    const N: u64 = 20;
    for i in 0..N {
        pubber
            .publish(
                "sensors/ack",
                QoS::AtLeastOnce,
                false,
                i.to_string().as_bytes(),
            )
            .await;
    }
    let got: Vec<String> = within(LINK, "the messages at the remote", async {
        let mut got = Vec::new();
        while got.len() < N as usize {
            let p = collector.publish_rx().await;
            got.push(String::from_utf8(p.payload.to_vec()).unwrap());
        }
        got
    })
    .await;
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    until(LINK, "the remote's acknowledgements", || {
        stats(&gw).messages_out >= N
    })
    .await;
    drop(pubber);
    gw.shutdown().await;

    let gw = on_disk().await;
    up(&gw).await;
    let mut pubber = client(gw.mqtt_addr, "pubber").await;
    pubber
        .publish("sensors/ack", QoS::AtLeastOnce, false, b"end")
        .await;
    let after = within(LINK, "the sentinel", collector.publishes_until(b"end")).await;
    let again: Vec<_> = after.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(
        again,
        [bytes::Bytes::from_static(b"end")],
        "only the sentinel: nothing the remote acknowledged is sent again"
    );
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// the real binary: kill -9
// ---------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_ponte");

/// A `ponte` child, killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Ponte(Child);

impl Drop for Ponte {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ponte -c config -d db` on free ports; returns the child and its MQTT address.
fn spawn_ponte(config: &Path, db: &Path) -> (Ponte, SocketAddr) {
    let mut ponte = Ponte(
        Command::new(BIN)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .args(["-c"])
            .arg(config)
            .args(["--host", "127.0.0.1", "-p", "0", "-a", "0", "-m", "0", "-d"])
            .arg(db)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ponte"),
    );
    // ponte logs to stderr (issue 12).
    let logs = ponte.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(logs).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a `ponte listening` line");
        if line.contains("ponte listening") {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("mqtt="))
                .expect("mqtt=")
                .parse()
                .unwrap();
            return (ponte, addr);
        }
    }
}

/// "Nothing acknowledged lost", against the real binary: QoS 1 messages acknowledged by
/// ponte while the remote is down survive `kill -9` and reach the remote, in order, once
/// ponte is back and the remote is up.
#[tokio::test]
async fn queued_out_messages_survive_kill_9_and_arrive_in_order() {
    let Some(mut mosq) = Mosquitto::start(true, None) else {
        return;
    };
    let mut sub = persistent(mosq.addr(), "collector").await;
    sub.subscribe("edge-1/sensors/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    mosq.stop();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ponte.toml");
    std::fs::write(
        &config,
        bridge_toml(&format!("mqtt://{}", mosq.addr()), 5, ""),
    )
    .unwrap();
    let db = dir.path().join("db");
    let (ponte, addr) = spawn_ponte(&config, &db);
    let mut pubber = client(addr, "pubber").await;
    const N: usize = 30;
    for i in 0..N {
        // PUBACK: ponte says it has it.
        pubber
            .publish(
                "sensors/seq",
                QoS::AtLeastOnce,
                false,
                format!("{i}").as_bytes(),
            )
            .await;
    }
    // SIGKILL: no chance to flush or say goodbye.
    drop(ponte);
    drop(pubber);

    let (_ponte, addr) = spawn_ponte(&config, &db);
    let mut state = client(addr, "state-watch").await;
    state
        .subscribe("$SYS/broker/connection/cloud/state", QoS::AtLeastOnce)
        .await;
    mosq.run();
    // Once the bridge says it is connected, the queue is on its way.
    let deadline = Instant::now() + LINK;
    while &within(LINK, "the bridge's state", state.publish_rx())
        .await
        .payload[..]
        != b"1"
    {
        assert!(Instant::now() < deadline, "the bridge never reconnected");
    }
    let mut sub = persistent(mosq.addr(), "collector").await;
    let mut got = Vec::new();
    while got.len() < N {
        let p = within(LINK, "a message queued before kill -9", sub.publish_rx()).await;
        got.push(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "all acknowledged messages arrive, in order");
}

/// SIGHUP on the real binary re-reads `[[bridge]]` from the file given with `-c`.
#[tokio::test]
async fn sighup_starts_a_bridge_added_to_the_config_file() {
    let Some(mosq) = Mosquitto::start(false, None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ponte.toml");
    std::fs::write(&config, "").unwrap();
    let (ponte, addr) = spawn_ponte(&config, &dir.path().join("db"));
    let mut local = client(addr, "state-watch").await;
    local
        .subscribe("$SYS/broker/connection/cloud/state", QoS::AtLeastOnce)
        .await;
    std::fs::write(
        &config,
        bridge_toml(&format!("mqtt://{}", mosq.addr()), 5, ""),
    )
    .unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &ponte.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + LINK;
    loop {
        let p = within(LINK, "the bridge's state", local.publish_rx()).await;
        if &p.payload[..] == b"1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the added bridge never connected"
        );
    }
}
