#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Webhooks (issue 14) against small HTTP receivers inside the test (axum on loopback):
//! the event body and its Standard Webhooks signature (checked here with hmac + sha2,
//! not with ponte's own code), retries after 5xx/408/429 and a dead port, no retry after
//! a 400, order per thing, the queue bound, redirects, HTTPS with a private CA (ponte's
//! own HTTPS listener as the receiver), reload — and that a receiver that never answers
//! does not slow MQTT publishes or connects (measured side by side, not timed).

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{within, Client, Pki, WAIT};
use hmac::{Hmac, Mac};
use ponte::config::Config;
use ponte::webhook::WebhookStats;
use ponte::Gateway;
use rumqttc::QoS;
use sha2::Sha256;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------
// A receiver
// ---------------------------------------------------------------------------------------

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Hit {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

/// What the receiver answers.
#[derive(Debug, Clone)]
enum Reply {
    Status(u16),
    /// Status with `Retry-After: 0`.
    RetryAfter(u16),
    /// 307 to this location.
    Redirect(String),
    /// Never answer.
    Hang,
}

type Script = Arc<dyn Fn(&Hit) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    hits: mpsc::UnboundedSender<Hit>,
    script: Script,
}

async fn receive(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let hit = Hit {
        path: uri.path().to_owned(),
        headers,
        body,
    };
    let reply = (s.script)(&hit);
    let _ = s.hits.send(hit);
    match reply {
        Reply::Status(c) => StatusCode::from_u16(c).unwrap().into_response(),
        Reply::RetryAfter(c) => {
            (StatusCode::from_u16(c).unwrap(), [("retry-after", "0")]).into_response()
        }
        Reply::Redirect(to) => (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response(),
        Reply::Hang => std::future::pending().await,
    }
}

/// An HTTP receiver on `listener` answering by `script`; its requests arrive on the
/// returned channel.
fn serve(listener: tokio::net::TcpListener, script: Script) -> mpsc::UnboundedReceiver<Hit> {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(Shared { hits: tx, script });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    rx
}

async fn receiver(
    script: impl Fn(&Hit) -> Reply + Send + Sync + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<Hit>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (addr, serve(l, Arc::new(script)))
}

/// A receiver answering `replies` in turn, then 200.
async fn scripted(replies: Vec<Reply>) -> (SocketAddr, mpsc::UnboundedReceiver<Hit>) {
    let q = Mutex::new(VecDeque::from(replies));
    receiver(move |_| q.lock().unwrap().pop_front().unwrap_or(Reply::Status(200))).await
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Hit>, what: &str) -> Hit {
    within(WAIT, what, rx.recv())
        .await
        .expect("receiver running")
}

/// Nothing more arrives for a while.
async fn silence(rx: &mut mpsc::UnboundedReceiver<Hit>, what: &str) {
    if let Ok(Some(h)) = tokio::time::timeout(Duration::from_millis(700), rx.recv()).await {
        panic!("{what}: unexpected request {h:?}");
    }
}

// ---------------------------------------------------------------------------------------
// ponte
// ---------------------------------------------------------------------------------------

/// A `whsec_` secret file in a temporary directory; returns (dir, path, key bytes).
fn secret() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    let path = dir.path().join("hook.secret");
    std::fs::write(&path, format!("whsec_{}\n", STANDARD.encode(&key))).unwrap();
    (dir, path, key)
}

async fn gateway(toml: &str) -> Gateway {
    let mut c = Config::ephemeral();
    c.webhook = Config::from_toml(toml).expect("webhook config").webhook;
    within(WAIT, "gateway start", ponte::start(c))
        .await
        .expect("gateway starts")
}

fn stats(gw: &Gateway, name: &str) -> WebhookStats {
    gw.webhook_stats()
        .into_iter()
        .find(|s| s.name == name)
        .expect("webhook")
}

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

async fn put(gw: &Gateway, topic: &str, value: &str) {
    let r = reqwest::Client::new()
        .put(format!("http://{}/resources/{topic}", gw.http_addr))
        .header("content-type", "text/plain")
        .body(value.to_owned())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT {topic}: {}", r.status());
}

async fn delete(gw: &Gateway, topic: &str) {
    let r = reqwest::Client::new()
        .delete(format!("http://{}/resources/{topic}", gw.http_addr))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "DELETE {topic}: {}", r.status());
}

/// The receiver's check, written out from the Standard Webhooks specification:
/// base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")) in a `v1,` entry, timestamp within
/// five minutes.
fn verify(hit: &Hit, key: &[u8]) {
    let id = hit.header("webhook-id");
    let ts: u64 = hit.header("webhook-timestamp").parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(ts) < 300, "timestamp {ts} is not now ({now})");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&hit.body);
    let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let got = hit.header("webhook-signature");
    assert!(
        got.split(' ').any(|s| s == want),
        "signature {got:?}, expected {want:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The event and its signature
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn events_carry_the_write_and_a_standard_webhooks_signature() {
    let (_dir, secret_file, key) = secret();
    let (addr, mut hits) = scripted(vec![]).await;
    let gw = gateway(&format!(
        r#"
[[webhook]]
name = "audit"
url = "http://{addr}/hook"
filter = "kitchen/#"
events = ["put", "delete", "publish"]
secret_file = "{}"
"#,
        secret_file.display()
    ))
    .await;

    put(&gw, "kitchen/temperature", "21.5").await;
    let h = next(&mut hits, "the put event").await;
    verify(&h, &key);
    assert_eq!(h.path, "/hook");
    assert_eq!(h.header("content-type"), "application/json");
    let v = h.json();
    assert_eq!(
        v["id"],
        h.header("webhook-id"),
        "the body's id is the webhook-id"
    );
    assert_eq!(v["event"], "put");
    assert_eq!(v["thing"], "kitchen/temperature");
    assert_eq!(v["content_type"], "text/plain");
    assert_eq!(v["payload"], "21.5");
    assert_eq!(v["origin"], "http");
    assert!(v["client"].is_null(), "anonymous HTTP");
    assert_eq!(v["qos"], 1);
    assert_eq!(v["retain"], true);
    assert!(v["time"].as_str().unwrap().ends_with('Z'));

    // A non-retained MQTT publish with a binary payload: "publish", base64, client id.
    let mut c = Client::connect(gw.mqtt_addr, "sensor-7").await.0;
    c.publish(
        "kitchen/motion",
        QoS::AtLeastOnce,
        false,
        &[0xff, 0x00, 0x01],
    )
    .await;
    let h = next(&mut hits, "the publish event").await;
    verify(&h, &key);
    let v = h.json();
    assert_eq!(v["event"], "publish");
    assert_eq!(v["origin"], "mqtt");
    assert_eq!(v["client"], "sensor-7");
    assert_eq!(v["payload_base64"], "/wAB");
    assert!(v.get("payload").is_none());
    assert_eq!(v["retain"], false);

    // Not under the filter: nothing.
    put(&gw, "garden/x", "1").await;
    delete(&gw, "kitchen/temperature").await;
    let h = next(&mut hits, "the delete event").await;
    verify(&h, &key);
    let v = h.json();
    assert_eq!(
        (v["event"].as_str(), v["thing"].as_str()),
        (Some("delete"), Some("kitchen/temperature"))
    );
    silence(&mut hits, "garden/x is not under kitchen/#").await;
    let s = stats(&gw, "audit");
    assert_eq!((s.delivered, s.rejected, s.failed, s.dropped), (3, 0, 0, 0));
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn retries_after_5xx_and_429_keep_the_id_and_are_signed_again() {
    let (_dir, secret_file, key) = secret();
    let (addr, mut hits) = scripted(vec![
        Reply::Status(500),
        Reply::RetryAfter(429),
        Reply::Status(408),
        Reply::Status(200),
    ])
    .await;
    let gw = gateway(&format!(
        "[[webhook]]\nname = \"h\"\nurl = \"http://{addr}/\"\nsecret_file = \"{}\"\nretry_min_ms = 50\n",
        secret_file.display()
    ))
    .await;
    put(&gw, "a/b", "1").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let h = next(&mut hits, "an attempt").await;
        verify(&h, &key);
        ids.push(h.header("webhook-id").to_owned());
    }
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one id for every attempt: {ids:?}"
    );
    silence(&mut hits, "delivered after the 200").await;
    let s = stats(&gw, "h");
    assert_eq!((s.delivered, s.retries, s.failed), (1, 3, 0), "{s:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_4xx_is_not_retried_and_max_retries_bounds_the_rest() {
    let (addr, mut hits) = receiver(|h| {
        if h.json()["thing"] == "bad/request" {
            Reply::Status(400)
        } else {
            Reply::Status(503)
        }
    })
    .await;
    let gw = gateway(&format!(
        "[[webhook]]\nname = \"h\"\nurl = \"http://{addr}/\"\nretry_min_ms = 20\nmax_retries = 2\n"
    ))
    .await;
    put(&gw, "bad/request", "1").await;
    next(&mut hits, "the one attempt").await;
    silence(&mut hits, "a 400 is not retried").await;
    let s = stats(&gw, "h");
    assert_eq!((s.rejected, s.retries), (1, 0), "{s:?}");

    put(&gw, "down/stream", "1").await;
    for i in 0..3 {
        next(&mut hits, &format!("attempt {i}")).await;
    }
    silence(&mut hits, "max_retries = 2: three attempts in all").await;
    until(WAIT, "the event to be given up", || {
        stats(&gw, "h").failed == 1
    })
    .await;
    // The same counters in /metrics (issue 14's names).
    let metrics = http_text(&gw, "/metrics").await;
    for line in [
        "ponte_webhook_deliveries_total{webhook=\"h\",outcome=\"rejected\"} 1",
        "ponte_webhook_deliveries_total{webhook=\"h\",outcome=\"failed\"} 1",
        "ponte_webhook_retries_total{webhook=\"h\"} 2",
        "ponte_webhook_queue{webhook=\"h\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    gw.shutdown().await;
}

/// GET `path` on the gateway's HTTP port, as text.
async fn http_text(gw: &Gateway, path: &str) -> String {
    reqwest::get(format!("http://{}{path}", gw.http_addr))
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

#[tokio::test]
async fn a_dead_port_is_retried_until_it_listens() {
    // A port nobody listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = gateway(&format!(
        "[[webhook]]\nname = \"h\"\nurl = \"http://127.0.0.1:{port}/\"\nretry_min_ms = 50\nretry_max_secs = 1\nmax_retries = 100\n"
    ))
    .await;
    put(&gw, "late/thing", "v").await;
    until(WAIT, "two failed attempts", || stats(&gw, "h").retries >= 2).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let mut hits = serve(listener, Arc::new(|_: &Hit| Reply::Status(204)));
    let h = next(&mut hits, "the event once the port listens").await;
    assert_eq!(h.json()["thing"], "late/thing");
    until(WAIT, "delivered", || stats(&gw, "h").delivered == 1).await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Order, bounds
// ---------------------------------------------------------------------------------------

/// A thing whose delivery is being retried holds back its own later events, not other
/// things' events.
#[tokio::test]
async fn order_per_thing_is_kept_and_a_retry_holds_back_only_its_thing() {
    let failed_once = Mutex::new(false);
    let (addr, mut hits) = receiver(move |h| {
        let v = h.json();
        let mut f = failed_once.lock().unwrap();
        if v["thing"] == "a" && v["payload"] == "1" && !*f {
            *f = true;
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let gw = gateway(&format!(
        "[[webhook]]\nname = \"h\"\nurl = \"http://{addr}/\"\nretry_min_ms = 400\n"
    ))
    .await;
    put(&gw, "a", "1").await;
    put(&gw, "a", "2").await;
    put(&gw, "b", "1").await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let v = next(&mut hits, "an attempt").await.json();
        seen.push(format!(
            "{}{}",
            v["thing"].as_str().unwrap(),
            v["payload"].as_str().unwrap()
        ));
    }
    let a: Vec<&String> = seen.iter().filter(|s| s.starts_with('a')).collect();
    assert_eq!(
        a,
        ["a1", "a1", "a2"],
        "a's events in order, its second after its retry: {seen:?}"
    );
    let b_at = seen.iter().position(|s| s == "b1").unwrap();
    let retry_at = seen.iter().rposition(|s| s == "a1").unwrap();
    assert!(b_at < retry_at, "b is not held back by a's retry: {seen:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_drops_new_events_and_counts_them() {
    let (addr, _hits) = receiver(|_| Reply::Hang).await;
    let gw = gateway(&format!(
        "[[webhook]]\nname = \"h\"\nurl = \"http://{addr}/\"\nqueue = 3\nconcurrency = 1\ntimeout_secs = 60\n"
    ))
    .await;
    for i in 0..10 {
        put(&gw, &format!("t/{i}"), "v").await;
    }
    until(WAIT, "the overflow to be counted", || {
        stats(&gw, "h").dropped == 7
    })
    .await;
    assert_eq!(stats(&gw, "h").queue, 3);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// A dead endpoint slows nothing
// ---------------------------------------------------------------------------------------

/// Time to publish `n` QoS 1 messages (each acknowledged) on `gw`.
async fn publish_time(gw: &Gateway, id: &str, n: usize) -> Duration {
    let mut c = Client::connect(gw.mqtt_addr, id).await.0;
    let start = Instant::now();
    for i in 0..n {
        c.publish(&format!("load/{i}"), QoS::AtLeastOnce, i % 2 == 0, b"x")
            .await;
    }
    start.elapsed()
}

/// EMQX #5121: a dead webhook server made MQTT CONNECTs time out. Here a receiver that
/// accepts connections and never answers must not slow publishes or connects: the same
/// load is timed on a gateway without a webhook and on one whose webhook hangs, and
/// compared (with a bound generous enough for a loaded 2-core machine).
#[tokio::test]
async fn a_receiver_that_never_answers_does_not_slow_mqtt_publishes_or_connects() {
    let (addr, mut hits) = receiver(|_| Reply::Hang).await;
    let plain = gateway("").await;
    let hooked = gateway(&format!(
        "[[webhook]]\nname = \"dead\"\nurl = \"http://{addr}/\"\nevents = [\"put\", \"delete\", \"publish\"]\ntimeout_secs = 60\nqueue = 100000\n"
    ))
    .await;
    const N: usize = 300;
    // Warm up both (connection set-up, first allocations).
    publish_time(&plain, "warm-a", 20).await;
    publish_time(&hooked, "warm-b", 20).await;
    let a1 = publish_time(&plain, "p1", N).await;
    let b = publish_time(&hooked, "h1", N).await;
    let a2 = publish_time(&plain, "p2", N).await;
    let base = a1.max(a2);
    println!("{N} QoS 1 publishes: without webhook {a1:?} / {a2:?}, with a hanging webhook {b:?}");
    // The webhook was really engaged: its endpoint got requests that hang.
    next(&mut hits, "a request at the hanging receiver").await;
    let s = stats(&hooked, "dead");
    assert!(
        s.queue >= 8 && s.delivered == 0,
        "events held, none delivered: {s:?}"
    );
    assert!(
        b < base * 3 + Duration::from_millis(500),
        "a hanging webhook slowed publishes: {b:?} against {base:?}"
    );
    // And connecting still works at once.
    for i in 0..5 {
        let t = Instant::now();
        let _c = Client::connect(hooked.mqtt_addr, &format!("late-{i}")).await;
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "CONNECT took {:?}",
            t.elapsed()
        );
    }
    hooked.shutdown().await;
    plain.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Redirects, TLS
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn redirects_are_followed_only_to_the_same_origin() {
    let (elsewhere, mut elsewhere_hits) = scripted(vec![]).await;
    let (addr, mut hits) = receiver(move |h| match h.path.as_str() {
        "/same" => Reply::Redirect("/moved".into()),
        "/other" => Reply::Redirect(format!("http://localhost:{}/", elsewhere.port())),
        _ => Reply::Status(200),
    })
    .await;
    let gw = gateway(&format!(
        r#"
[[webhook]]
name = "same"
url = "http://{addr}/same"
filter = "same/#"
[[webhook]]
name = "other"
url = "http://{addr}/other"
filter = "other/#"
"#
    ))
    .await;
    put(&gw, "same/x", "1").await;
    assert_eq!(next(&mut hits, "the first request").await.path, "/same");
    let moved = next(&mut hits, "the redirected request").await;
    assert_eq!(moved.path, "/moved");
    assert_eq!(
        moved.json()["thing"],
        "same/x",
        "307 keeps the POST and its body"
    );
    until(WAIT, "delivered", || stats(&gw, "same").delivered == 1).await;

    put(&gw, "other/x", "1").await;
    assert_eq!(next(&mut hits, "the request").await.path, "/other");
    until(WAIT, "rejected", || stats(&gw, "other").rejected == 1).await;
    silence(&mut elsewhere_hits, "another host gets nothing").await;
    gw.shutdown().await;
}

/// HTTPS with a private CA: the receiver is another ponte's HTTPS listener (a POST to
/// `/resources/T` stores the event). With the right `ca_file` it arrives; with another
/// CA the handshake fails and the event is retried, never delivered.
#[tokio::test]
async fn https_endpoints_are_verified_against_ca_file() {
    let pki = Pki::new("webhook test CA", "receiver");
    let (ca, other, cert, key) = (
        pki.path("ca.pem"),
        pki.path("other-ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key"),
    );
    let mut rc = Config::ephemeral();
    rc.tls.cert_file = Some(cert);
    rc.tls.key_file = Some(key);
    rc.http.tls_port = Some(0);
    let receiver = ponte::start(rc).await.unwrap();
    let https = receiver.https_addr.unwrap();
    let gw = gateway(&format!(
        r#"
[[webhook]]
name = "good"
url = "https://127.0.0.1:{port}/resources/hooks/last"
filter = "good/#"
ca_file = "{ca}"
[[webhook]]
name = "wrong"
url = "https://127.0.0.1:{port}/resources/hooks/wrong"
filter = "wrong/#"
ca_file = "{other}"
retry_min_ms = 50
"#,
        port = https.port(),
        ca = ca.display(),
        other = other.display()
    ))
    .await;
    put(&gw, "good/x", "tls").await;
    until(WAIT, "delivered over HTTPS", || {
        stats(&gw, "good").delivered == 1
    })
    .await;
    let stored = reqwest::get(format!(
        "http://{}/resources/hooks/last",
        receiver.http_addr
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(v["thing"], "good/x");

    put(&gw, "wrong/x", "tls").await;
    until(WAIT, "a failed handshake to be retried", || {
        stats(&gw, "wrong").retries >= 2
    })
    .await;
    assert_eq!(stats(&gw, "wrong").delivered, 0);
    gw.shutdown().await;
    receiver.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Configuration, reload
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unusable_secret_files_stop_the_start_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "abc").unwrap();
    for (file, needle) in [
        (dir.path().join("missing.secret"), "missing.secret"),
        (short.clone(), "3 bytes"),
    ] {
        let mut c = Config::ephemeral();
        c.webhook = Config::from_toml(&format!(
            "[[webhook]]\nname = \"h\"\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"{}\"\n",
            file.display()
        ))
        .unwrap()
        .webhook;
        let e = ponte::start(c).await.unwrap_err();
        assert!(matches!(e, ponte::Error::Config(_)), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
    let e = Config::from_toml("[[webhook]]\nname = \"h\"\nurl = \"ftp://x/\"\n").unwrap_err();
    assert!(e.contains("use http:// or https://"), "{e}");
}

/// SIGHUP's hook: a webhook that stays gets its new URL without losing its queue; a new
/// one starts; a removed one stops.
#[tokio::test]
async fn reload_swaps_settings_starts_and_stops_webhooks() {
    let (a, mut a_hits) = scripted(vec![]).await;
    let (b, mut b_hits) = scripted(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ponte.toml");
    std::fs::write(
        &file,
        format!("[[webhook]]\nname = \"h\"\nurl = \"http://{a}/\"\n"),
    )
    .unwrap();
    let mut c = Config::from_file(&file).unwrap();
    let e = Config::ephemeral();
    (c.host, c.http, c.coap, c.mqtt, c.store) = (e.host, e.http, e.coap, e.mqtt, e.store);
    let gw = ponte::start(c).await.unwrap();
    put(&gw, "x", "1").await;
    next(&mut a_hits, "the event at a").await;

    std::fs::write(
        &file,
        format!("[[webhook]]\nname = \"h\"\nurl = \"http://{b}/\"\n[[webhook]]\nname = \"new\"\nurl = \"http://{a}/new\"\nfilter = \"n/#\"\n"),
    )
    .unwrap();
    gw.reload().unwrap();
    until(WAIT, "the new webhook", || gw.webhook_stats().len() == 2).await;
    put(&gw, "x", "2").await;
    assert_eq!(
        next(&mut b_hits, "the event at the new url").await.json()["payload"],
        "2"
    );
    put(&gw, "n/1", "3").await;
    assert_eq!(
        next(&mut a_hits, "the new webhook's event").await.path,
        "/new"
    );
    assert_eq!(
        next(&mut b_hits, "h hears every thing").await.json()["thing"],
        "n/1"
    );
    silence(&mut a_hits, "the old url gets nothing more").await;

    std::fs::write(&file, "[[webhook]]\nname = \"h\"\nurl = \"nope\"\n").unwrap();
    assert!(gw.reload().is_err(), "a bad file is refused");
    std::fs::write(&file, "").unwrap();
    gw.reload().unwrap();
    until(WAIT, "both removed", || gw.webhook_stats().is_empty()).await;
    put(&gw, "x", "4").await;
    silence(&mut b_hits, "a removed webhook sends nothing").await;
    gw.shutdown().await;
}
