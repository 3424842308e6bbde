#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Operating ponte (issue 12), over real sockets: `/metrics` (strictly parsed Prometheus
//! text, numbers that move with traffic, the same numbers as `$SYS`), `/livez` and
//! `/readyz`, the `/resources` listing and its event stream, and the refusal of client
//! writes to `$SYS`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::coap::{code, Coap};
use futures_util::StreamExt;
use ponte::config::Config;
use ponte::Gateway;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const WAIT: Duration = Duration::from_secs(5);

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn gateway_with(f: impl FnOnce(&mut Config)) -> Gateway {
    let mut c = Config::ephemeral();
    f(&mut c);
    within("gateway start", ponte::start(c))
        .await
        .expect("starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A plain `GET http://addr{path}`.
async fn get(addr: SocketAddr, path: &str) -> reqwest::Response {
    http()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
}

/// A connected rumqttc client (CONNACK seen), its event loop polled in a task; events go to
/// the channel.
async fn mqtt(
    addr: SocketAddr,
    id: &str,
    creds: Option<(&str, &str)>,
) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<Packet>) {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    let (client, mut el) = AsyncClient::new(o, 16);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if let Event::Incoming(p) = ev {
                if tx.send(p).is_err() {
                    break;
                }
            }
        }
    });
    within("CONNACK", async {
        loop {
            if let Some(Packet::ConnAck(_)) = rx.recv().await {
                break;
            }
        }
    })
    .await;
    (client, rx)
}

// ---------------------------------------------------------------------------------------
// A strict reader of the Prometheus text exposition format (0.0.4)

/// One sample: its series (name and sorted labels) and value.
type Series = (String, Vec<(String, String)>);

/// Parse `text` as Prometheus text exposition, failing on anything the format does not
/// allow: a sample whose family has no `# TYPE` before it, a bad metric or label name, an
/// unquoted or badly escaped label value, a value that is not a float, a duplicate series,
/// a family declared twice, a counter not named `_total`, histogram buckets that are not
/// cumulative or do not end with `+Inf` equal to `_count`.
fn parse_exposition(text: &str) -> HashMap<Series, f64> {
    fn metric_name(s: &str) -> bool {
        let mut c = s.chars();
        matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }
    fn label_name(s: &str) -> bool {
        let mut c = s.chars();
        matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    }
    assert!(text.ends_with('\n'), "the exposition ends with a line feed");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashMap<String, ()> = HashMap::new();
    let mut samples: HashMap<Series, f64> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts
                .next()
                .unwrap_or_else(|| panic!("{at}: no metric name"));
            assert!(metric_name(name), "{at}: bad metric name");
            match kind {
                "HELP" => assert!(helps.insert(name.into(), ()).is_none(), "{at}: HELP twice"),
                "TYPE" => {
                    let t = parts.next().unwrap_or_else(|| panic!("{at}: no type"));
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{at}: unknown type"
                    );
                    assert!(
                        types.insert(name.into(), t.into()).is_none(),
                        "{at}: TYPE twice"
                    );
                    if t == "counter" {
                        assert!(name.ends_with("_total"), "{at}: counters end in _total");
                    }
                }
                _ => panic!("{at}: a comment that is neither HELP nor TYPE"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "{at}: comment without a space");
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("{at}: no value"));
        let name = &line[..name_end];
        assert!(metric_name(name), "{at}: bad metric name");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let eq = r
                    .find('=')
                    .unwrap_or_else(|| panic!("{at}: label without ="));
                let lname = &r[..eq];
                assert!(label_name(lname), "{at}: bad label name {lname:?}");
                r = r[eq + 1..]
                    .strip_prefix('"')
                    .unwrap_or_else(|| panic!("{at}: unquoted label value"));
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            other => panic!("{at}: bad escape {other:?}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("{at}: unterminated label value"),
                    }
                };
                labels.push((lname.to_string(), value));
                r = &r[end + 1..];
                r = r.strip_prefix(',').unwrap_or(r);
            }
            rest = r;
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("{at}: no space before the value"));
        let value = value.split(' ').next().unwrap();
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("{at}: value is not a float")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{at}: sample before its # TYPE");
        labels.sort();
        assert!(
            samples.insert((name.to_string(), labels), v).is_none(),
            "{at}: duplicate series"
        );
    }
    // Histograms: cumulative buckets ending in +Inf = _count.
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|((n, _), _)| *n == format!("{family}_bucket"))
            .map(|((_, l), v)| {
                let le = &l.iter().find(|(k, _)| k == "le").expect("le label").1;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le is a float")
                };
                (le, *v)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{family}: cumulative"
        );
        let last = buckets.last().expect("buckets");
        assert!(last.0.is_infinite(), "{family}: ends with +Inf");
        assert_eq!(
            Some(&last.1),
            samples.get(&(format!("{family}_count"), vec![])),
            "{family}: +Inf = _count"
        );
    }
    samples
}

async fn scrape(addr: SocketAddr) -> HashMap<Series, f64> {
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse_exposition(&r.text().await.unwrap())
}

fn value(m: &HashMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    *m.get(&(name.to_string(), l))
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

/// Scrape until `ok` holds for the metrics (they move asynchronously), or fail.
async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    ok: impl Fn(&HashMap<Series, f64>) -> bool,
) -> HashMap<Series, f64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = scrape(addr).await;
        if ok(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// /metrics

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let gw = gateway_with(|_| {}).await;
    let m = scrape(gw.http_addr).await;
    assert_eq!(
        value(
            &m,
            "ponte_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(value(&m, "ponte_connections", &[("protocol", "mqtt")]), 0.0);
    assert_eq!(value(&m, "ponte_retained_messages", &[]), 0.0);
    for p in ["http", "coap", "mqtt"] {
        assert_eq!(
            value(&m, "ponte_messages_received_total", &[("protocol", p)]),
            0.0
        );
    }

    // Five MQTT connections, one of them subscribed.
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(mqtt(gw.mqtt_addr, &format!("metrics-{i}"), None).await);
    }
    clients[0]
        .0
        .subscribe("kitchen/#", QoS::AtMostOnce)
        .await
        .unwrap();
    within("SUBACK", async {
        while !matches!(clients[0].1.recv().await, Some(Packet::SubAck(_))) {}
    })
    .await;
    // An SSE stream, an HTTP write (201), an MQTT retained publish, a CoAP write.
    let sse = http()
        .get(format!("http://{}/resources/kitchen/temp", gw.http_addr))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut sse = sse.bytes_stream();
    let put = http()
        .put(format!("http://{}/resources/kitchen/temp", gw.http_addr))
        .header("content-type", "text/plain")
        .body("21.5")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    within("the SSE event", async {
        let mut seen = String::new();
        while !seen.contains("21.5") {
            seen.push_str(&String::from_utf8_lossy(
                &sse.next().await.unwrap().unwrap(),
            ));
        }
    })
    .await;
    clients[1]
        .0
        .publish("kitchen/light", QoS::AtLeastOnce, true, "on")
        .await
        .unwrap();
    // One write at a time, so each is a group commit of its own (three commits below).
    within("PUBACK", async {
        while !matches!(clients[1].1.recv().await, Some(Packet::PubAck(_))) {}
    })
    .await;
    let answer = Coap::new(gw.coap_addr)
        .await
        .put("r/garden/rain", b"0.2", None)
        .await;
    assert_eq!(code(&answer), "2.01");

    let m = scrape_until(gw.http_addr, "the traffic", |m| {
        value(m, "ponte_retained_messages", &[]) == 3.0
            && value(m, "ponte_messages_sent_total", &[("protocol", "mqtt")]) >= 2.0
    })
    .await;
    assert_eq!(value(&m, "ponte_connections", &[("protocol", "mqtt")]), 5.0);
    assert_eq!(value(&m, "ponte_connections", &[("protocol", "sse")]), 1.0);
    assert_eq!(value(&m, "ponte_sessions", &[("state", "online")]), 5.0);
    assert_eq!(value(&m, "ponte_sessions", &[("state", "offline")]), 0.0);
    assert_eq!(
        value(&m, "ponte_subscriptions", &[]),
        2.0,
        "kitchen/# and the SSE stream"
    );
    for p in ["http", "coap", "mqtt"] {
        assert_eq!(
            value(&m, "ponte_messages_received_total", &[("protocol", p)]),
            1.0,
            "{p}"
        );
        assert!(
            value(&m, "ponte_bytes_received_total", &[("protocol", p)]) > 0.0,
            "{p}"
        );
        assert!(
            value(&m, "ponte_bytes_sent_total", &[("protocol", p)]) > 0.0,
            "{p}"
        );
    }
    // kitchen/temp (from HTTP) and kitchen/light reached the MQTT subscriber; the SSE
    // stream sent the HTTP value.
    assert_eq!(
        value(&m, "ponte_messages_sent_total", &[("protocol", "mqtt")]),
        2.0
    );
    assert_eq!(
        value(&m, "ponte_messages_sent_total", &[("protocol", "http")]),
        1.0
    );
    assert_eq!(value(&m, "ponte_retained_bytes", &[]), 4.0 + 2.0 + 3.0);
    assert_eq!(
        value(
            &m,
            "ponte_http_requests_total",
            &[("method", "PUT"), ("code", "201")]
        ),
        1.0
    );
    assert!(value(&m, "ponte_store_commit_seconds_count", &[]) >= 3.0);

    // Connections close: the gauge comes down.
    for (c, _) in clients.drain(..3) {
        c.disconnect().await.unwrap();
    }
    scrape_until(gw.http_addr, "two MQTT connections", |m| {
        value(m, "ponte_connections", &[("protocol", "mqtt")]) == 2.0
    })
    .await;
    drop(sse);
    scrape_until(gw.http_addr, "the SSE stream closed", |m| {
        value(m, "ponte_connections", &[("protocol", "sse")]) == 0.0
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn sys_and_metrics_report_the_same_counters() {
    let gw = gateway_with(|c| c.mqtt.sys_interval_secs = 1).await;
    let (c, mut rx) = mqtt(gw.mqtt_addr, "sys-reader", None).await;
    let (_d, _drx) = mqtt(gw.mqtt_addr, "sys-other", None).await;
    c.subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await
        .unwrap();
    c.subscribe("$SYS/broker/messages/received", QoS::AtMostOnce)
        .await
        .unwrap();
    http()
        .put(format!("http://{}/resources/a", gw.http_addr))
        .body("1")
        .send()
        .await
        .unwrap();
    let mut seen: HashMap<String, String> = HashMap::new();
    within("$SYS values after the write", async {
        while !(seen
            .get("$SYS/broker/clients/connected")
            .map(String::as_str)
            == Some("2")
            && seen
                .get("$SYS/broker/messages/received")
                .map(String::as_str)
                == Some("1"))
        {
            if let Some(Packet::Publish(p)) = rx.recv().await {
                seen.insert(p.topic.clone(), String::from_utf8_lossy(&p.payload).into());
            }
        }
    })
    .await;
    let m = scrape(gw.http_addr).await;
    let mqtt_connected: f64 = ["mqtt", "mqtts", "mqtt_ws", "mqtt_wss"]
        .iter()
        .map(|p| value(&m, "ponte_connections", &[("protocol", p)]))
        .sum();
    assert_eq!(mqtt_connected, 2.0);
    let received: f64 = ["http", "coap", "mqtt"]
        .iter()
        .map(|p| value(&m, "ponte_messages_received_total", &[("protocol", p)]))
        .sum();
    assert_eq!(received, 1.0, "$SYS's own publishes are not client writes");
    assert_eq!(gw.metrics().mqtt_connected, 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn auth_failures_and_acl_drops_are_counted_per_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let acl = dir.path().join("acl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ponte"))
        .args(["passwd", "--password", "s3cret"])
        .arg(&passwd)
        .arg("alice")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&acl, "user alice\ntopic readwrite alice/#\n").unwrap();
    let gw = gateway_with(|c| {
        c.auth.password_file = Some(passwd.clone());
        c.auth.acl_file = Some(acl.clone());
    })
    .await;
    let r = http()
        .get(format!("http://{}/resources/alice/x", gw.http_addr))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut o = MqttOptions::new("bad", "127.0.0.1", gw.mqtt_addr.port());
    o.set_credentials("alice", "wrong");
    let (_c, mut el) = AsyncClient::new(o, 4);
    within("the refused CONNACK", async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) | Err(_) => break,
                _ => {}
            }
        }
    })
    .await;
    let (alice, _rx) = mqtt(gw.mqtt_addr, "alice-1", Some(("alice", "s3cret"))).await;
    alice
        .publish("bob/x", QoS::AtMostOnce, false, "no")
        .await
        .unwrap();
    let m = scrape_until(gw.http_addr, "the refusals", |m| {
        value(
            m,
            "ponte_messages_dropped_total",
            &[("reason", "acl_denied")],
        ) == 1.0
    })
    .await;
    assert_eq!(
        value(&m, "ponte_auth_failures_total", &[("protocol", "http")]),
        1.0
    );
    assert_eq!(
        value(&m, "ponte_auth_failures_total", &[("protocol", "mqtt")]),
        1.0
    );
    assert_eq!(
        value(&m, "ponte_auth_failures_total", &[("protocol", "coap")]),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "ponte_http_requests_total",
            &[("method", "GET"), ("code", "401")]
        ),
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_need_credentials_only_with_metrics_auth() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ponte"))
        .args(["passwd", "--password", "pw"])
        .arg(&passwd)
        .arg("ops")
        .output()
        .unwrap();
    assert!(out.status.success());
    let gw = gateway_with(|c| {
        c.auth.password_file = Some(passwd.clone());
        c.http.metrics_auth = true;
    })
    .await;
    let url = format!("http://{}/metrics", gw.http_addr);
    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = http()
        .get(&url)
        .basic_auth("ops", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    parse_exposition(&r.text().await.unwrap());
    // Probes carry no credentials: health never needs any.
    for path in ["livez", "readyz"] {
        let r = get(gw.http_addr, &format!("/{path}")).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    gw.shutdown().await;
    // Without metrics_auth, anonymous access being off does not hide /metrics.
    let gw = gateway_with(|c| c.auth.password_file = Some(passwd.clone())).await;
    let r = get(gw.http_addr, "/metrics").await;
    assert_eq!(r.status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_port_serves_metrics_and_health_only() {
    let gw = gateway_with(|c| c.http.metrics_port = Some(0)).await;
    let addr = gw.metrics_addr.expect("the metrics port is bound");
    assert_ne!(addr, gw.http_addr);
    parse_exposition(&get(addr, "/metrics").await.text().await.unwrap());
    let r = get(addr, "/readyz").await;
    assert_eq!(r.status(), 200);
    let r = get(addr, "/resources/a").await;
    assert_eq!(r.status(), 404, "the things are not on the metrics port");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// /livez, /readyz

/// A store whose writes fail while `failing` is set.
struct FlakyStore(Arc<AtomicBool>);

impl ponte::store::Store for FlakyStore {
    fn load_retained(
        &self,
    ) -> Result<Vec<(ponte::model::TopicName, ponte::model::RetainedValue)>, ponte::store::StoreError>
    {
        Ok(Vec::new())
    }
    fn apply(&mut self, _: &[ponte::store::RetainedOp]) -> Result<(), ponte::store::StoreError> {
        if self.0.load(Ordering::SeqCst) {
            Err(ponte::store::StoreError::Engine("disk full (test)".into()))
        } else {
            Ok(())
        }
    }
    fn flush(&mut self) -> Result<(), ponte::store::StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn readyz_names_what_is_not_ready_and_livez_stays_up() {
    let failing = Arc::new(AtomicBool::new(false));
    let gw = within(
        "gateway start",
        ponte::start_with_store(Config::ephemeral(), FlakyStore(failing.clone())),
    )
    .await
    .unwrap();
    let get = |path: &'static str| {
        let url = format!("http://{}/{path}", gw.http_addr);
        async move { http().get(url).send().await.unwrap() }
    };
    let r = get("readyz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    let r = get("readyz?verbose").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for line in [
        "[+]listeners ok",
        "[+]store ok",
        "[+]shutdown ok",
        "readyz check passed",
    ] {
        assert!(text.contains(line), "{text}");
    }
    let r = get("livez?verbose").await;
    assert_eq!(r.text().await.unwrap(), "[+]ping ok\nlivez check passed\n");

    // The store fails a commit: not ready, and the problem says why.
    failing.store(true, Ordering::SeqCst);
    let w = http()
        .put(format!("http://{}/resources/x", gw.http_addr))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 503);
    let r = get("readyz").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap();
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("store") && detail.contains("disk full (test)"),
        "{detail}"
    );
    let r = get("readyz?verbose").await;
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("[-]store failed: the last commit failed"),
        "{text}"
    );
    assert!(text.contains("[+]listeners ok") && text.ends_with("readyz check failed\n"));
    assert_eq!(get("livez").await.status(), 200, "alive all the same");

    // A check added later (as the cluster backbone will).
    let backbone = gw.readiness.flag("backbone", Err("not connected".into()));
    failing.store(false, Ordering::SeqCst);
    let w = http()
        .put(format!("http://{}/resources/x", gw.http_addr))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 201);
    let r = get("readyz").await;
    assert_eq!(r.status(), 503);
    let p: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap();
    assert_eq!(p["detail"], "not ready: backbone: not connected");
    backbone.set(Ok(()));
    assert_eq!(get("readyz").await.status(), 200);
    let r = http()
        .post(format!("http://{}/readyz", gw.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, OPTIONS");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// GET /resources: the listing

async fn put(gw: &Gateway, topic: &str, body: &str, ct: &str) {
    let r = http()
        .put(format!("http://{}/resources/{topic}", gw.http_addr))
        .header("content-type", ct)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT {topic}: {}", r.status());
}

async fn list(gw: &Gateway, query: &str, auth: Option<(&str, &str)>) -> serde_json::Value {
    let mut r = http().get(format!("http://{}/resources{query}", gw.http_addr));
    if let Some((u, p)) = auth {
        r = r.basic_auth(u, Some(p));
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "{query}");
    assert_eq!(r.headers()["content-type"], "application/json");
    serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap()
}

fn things(page: &serde_json::Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["thing"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn listing_pages_in_byte_order_with_filters() {
    let gw = gateway_with(|c| c.mqtt.sys_interval_secs = 1).await;
    for t in [
        "kitchen/temp",
        "kitchen/light",
        "garden/temp",
        "Zeta",
        "kitchen/b/c",
    ] {
        put(&gw, t, "21.5", "text/plain").await;
    }
    // $SYS values exist too, and the default # does not list them.
    within("$SYS values", async {
        while gw
            .broker
            .get(&ponte::model::TopicName::parse("$SYS/broker/uptime").unwrap())
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let all = list(&gw, "", None).await;
    assert_eq!(
        things(&all),
        [
            "Zeta",
            "garden/temp",
            "kitchen/b/c",
            "kitchen/light",
            "kitchen/temp"
        ],
        "byte order, upper case first; no $SYS"
    );
    assert!(all.get("next").is_none(), "one page: no next");
    let item = &all["items"][4];
    assert_eq!(item["content_type"], "text/plain");
    assert_eq!(item["size"], 4);
    let etag = item["etag"].as_str().unwrap();
    let got = get(gw.http_addr, "/resources/kitchen/temp").await;
    assert_eq!(
        got.headers()["etag"],
        etag,
        "the listed ETag is the value's"
    );
    let modified = item["modified"].as_str().unwrap();
    assert!(
        modified.len() == 24 && modified.ends_with('Z') && &modified[10..11] == "T",
        "RFC 3339: {modified}"
    );

    // Pages of two, following next.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let page = list(&gw, &query, None).await;
        let t = things(&page);
        assert!(t.len() <= 2);
        seen.extend(t);
        match page.get("next") {
            Some(n) => {
                query = format!("?limit=2&after={}", n.as_str().unwrap().replace('/', "%2F"))
            }
            None => break,
        }
    }
    assert_eq!(seen, things(&all));

    assert_eq!(
        things(&list(&gw, "?filter=kitchen/%23", None).await),
        ["kitchen/b/c", "kitchen/light", "kitchen/temp"]
    );
    assert_eq!(
        things(&list(&gw, "?filter=%2B/temp", None).await),
        ["garden/temp", "kitchen/temp"]
    );
    assert_eq!(
        things(&list(&gw, "?filter=+/temp", None).await),
        ["garden/temp", "kitchen/temp"],
        "a literal + is the wildcard"
    );
    let sys = things(&list(&gw, "?filter=%24SYS/%23", None).await);
    assert!(sys.contains(&"$SYS/broker/uptime".to_string()), "{sys:?}");

    for bad in ["?limit=0", "?limit=1001", "?filter=a/%23/b", "?colour=red"] {
        let r = get(gw.http_addr, &format!("/resources{bad}")).await;
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = http()
        .put(format!("http://{}/resources", gw.http_addr))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, OPTIONS");
    gw.shutdown().await;
}

#[tokio::test]
async fn listing_shows_only_what_the_caller_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let acl = dir.path().join("acl");
    for (user, pw) in [("alice", "a"), ("bob", "b")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ponte"))
            .args(["passwd", "--password", pw])
            .arg(&passwd)
            .arg(user)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite alice/#\ntopic read shared/#\nuser bob\ntopic readwrite bob/#\ntopic readwrite shared/#\n",
    )
    .unwrap();
    let gw = gateway_with(|c| {
        c.auth.password_file = Some(passwd.clone());
        c.auth.acl_file = Some(acl.clone());
    })
    .await;
    let put_as = |user: &'static str, pw: &'static str, topic: &'static str| {
        let url = format!("http://{}/resources/{topic}", gw.http_addr);
        async move {
            let r = http()
                .put(url)
                .basic_auth(user, Some(pw))
                .body("v")
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{topic}: {}", r.status());
        }
    };
    put_as("alice", "a", "alice/door").await;
    put_as("bob", "b", "bob/door").await;
    put_as("bob", "b", "shared/news").await;
    assert_eq!(
        things(&list(&gw, "", Some(("alice", "a"))).await),
        ["alice/door", "shared/news"]
    );
    assert_eq!(
        things(&list(&gw, "", Some(("bob", "b"))).await),
        ["bob/door", "shared/news"]
    );
    // A page is filled with readable things only.
    let page = list(&gw, "?limit=1", Some(("alice", "a"))).await;
    assert_eq!(things(&page), ["alice/door"]);
    assert_eq!(page["next"], "alice/door");
    let r = get(gw.http_addr, "/resources").await;
    assert_eq!(r.status(), 401, "anonymous access is off");
    gw.shutdown().await;
}

#[tokio::test]
async fn filter_stream_sends_current_values_then_every_publish_with_its_thing() {
    let gw = gateway_with(|_| {}).await;
    put(&gw, "kitchen/temp", "21.5", "text/plain").await;
    put(&gw, "kitchen/door", "open", "text/plain").await;
    put(&gw, "garden/temp", "12", "text/plain").await;
    let r = http()
        .get(format!(
            "http://{}/resources?filter=kitchen/%23",
            gw.http_addr
        ))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    let mut next_event = async || -> (String, serde_json::Value) {
        within("an SSE event", async {
            loop {
                if let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    if event.starts_with(':') {
                        continue;
                    }
                    let kind = event
                        .lines()
                        .find_map(|l| l.strip_prefix("event: "))
                        .unwrap()
                        .to_string();
                    let data = event
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap();
                    return (kind, serde_json::from_str(data).unwrap());
                }
                let chunk = body.next().await.unwrap().unwrap();
                buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
    };
    let (k, d) = next_event().await;
    assert_eq!(
        (k.as_str(), &d["thing"], &d["text"]),
        ("message", &"kitchen/door".into(), &"open".into())
    );
    let (_, d) = next_event().await;
    assert_eq!(d["thing"], "kitchen/temp");
    assert_eq!(d["content_type"], "text/plain");
    // Live: an MQTT publish (not retained, binary), a CoAP-free HTTP delete, garden ignored.
    let (c, _rx) = mqtt(gw.mqtt_addr, "streamer", None).await;
    put(&gw, "garden/temp", "13", "text/plain").await;
    c.publish("kitchen/raw", QoS::AtLeastOnce, false, vec![0xffu8, 0x00])
        .await
        .unwrap();
    let (k, d) = next_event().await;
    assert_eq!(k, "message");
    assert_eq!(d["thing"], "kitchen/raw");
    assert_eq!(d["base64"], "/wA=");
    assert_eq!(d["content_type"], "application/octet-stream");
    let r = http()
        .delete(format!("http://{}/resources/kitchen/door", gw.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (k, d) = next_event().await;
    assert_eq!(k, "delete");
    assert_eq!(d, serde_json::json!({"thing": "kitchen/door"}));
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// $SYS is the broker's own

#[tokio::test]
async fn clients_cannot_write_sys_in_any_protocol() {
    let gw = gateway_with(|_| {}).await;
    let sys = |t: &str| gw.broker.get(&ponte::model::TopicName::parse(t).unwrap());
    // HTTP: 403, even for an anonymous client (credentials would not help).
    let r = http()
        .put(format!(
            "http://{}/resources/%24SYS/broker/uptime",
            gw.http_addr
        ))
        .body("0 seconds")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let p: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap();
    assert!(p["detail"]
        .as_str()
        .unwrap()
        .contains("written by the broker alone"));
    let r = http()
        .delete(format!("http://{}/resources/$SYS/x", gw.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // MQTT 3.1.1: acknowledged (no negative PUBACK exists) and dropped, as mosquitto does.
    let (c, mut rx) = mqtt(gw.mqtt_addr, "sys-writer", None).await;
    c.publish("$SYS/broker/uptime", QoS::AtLeastOnce, true, "0 seconds")
        .await
        .unwrap();
    within("PUBACK", async {
        while !matches!(rx.recv().await, Some(Packet::PubAck(_))) {}
    })
    .await;
    assert!(sys("$SYS/broker/uptime").is_none(), "not stored");
    // MQTT 5: PUBACK 0x87 Not authorized.
    {
        use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason};
        use rumqttc::v5::mqttbytes::QoS as Q;
        use rumqttc::v5::{AsyncClient as C5, Event as E5, MqttOptions as O5};
        let (c5, mut el) = C5::new(O5::new("sys5", "127.0.0.1", gw.mqtt_addr.port()), 8);
        c5.publish("$SYS/fake", Q::AtLeastOnce, true, "x")
            .await
            .unwrap();
        // rumqttc reports a failed PUBACK as an error of its event loop.
        let reason = within("v5 PUBACK", async {
            loop {
                match el.poll().await {
                    Ok(E5::Incoming(P5::PubAck(a))) => return a.reason,
                    Ok(_) => {}
                    Err(rumqttc::v5::ConnectionError::MqttState(
                        rumqttc::v5::StateError::PubAckFail { reason },
                    )) => return reason,
                    Err(e) => panic!("v5 event loop: {e:?}"),
                }
            }
        })
        .await;
        assert_eq!(reason, PubAckReason::NotAuthorized);
    }
    assert!(sys("$SYS/fake").is_none());
    // CoAP: 4.03 with a diagnostic.
    let answer = Coap::new(gw.coap_addr)
        .await
        .put("r/$SYS/x", b"x", None)
        .await;
    assert_eq!(code(&answer), "4.03");
    assert!(String::from_utf8_lossy(&answer.payload).contains("written by the broker alone"));
    // Reading $SYS is still allowed (no ACL here).
    let r = get(gw.http_addr, "/resources/%24SYS/x").await;
    assert_eq!(r.status(), 404, "readable, just absent");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// HTTP Accept, CoAP's empty path

#[tokio::test]
async fn http_get_answers_406_when_accept_does_not_take_the_stored_type() {
    let gw = gateway_with(|_| {}).await;
    put(&gw, "kitchen/temp", "21.5", "text/plain; charset=utf-8").await;
    let get = |accept: Option<&'static str>| {
        let url = format!("http://{}/resources/kitchen/temp", gw.http_addr);
        async move {
            let mut r = http().get(url);
            if let Some(a) = accept {
                r = r.header("accept", a);
            }
            r.send().await.unwrap()
        }
    };
    for ok in [
        None,
        Some("*/*"),
        Some("text/plain"),
        Some("text/*"),
        Some("application/json, text/plain;q=0.5"),
        Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ] {
        assert_eq!(get(ok).await.status(), 200, "{ok:?}");
    }
    for refused in [
        Some("application/json"),
        Some("text/html"),
        Some("text/plain;q=0, */*"),
        Some("image/*"),
    ] {
        let r = get(refused).await;
        assert_eq!(r.status(), 406, "{refused:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert!(p["detail"].as_str().unwrap().contains("text/plain"), "{p}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn coap_empty_path_after_r_is_explained_in_words() {
    let gw = gateway_with(|_| {}).await;
    let answer = Coap::new(gw.coap_addr).await.get("r/").await;
    assert_eq!(code(&answer), "4.00");
    let text = String::from_utf8_lossy(&answer.payload).into_owned();
    assert!(
        text.contains("names no thing") && text.contains("/r/kitchen/temperature"),
        "{text}"
    );
    assert!(!text.contains("MQTT-4.7.3-1"), "{text}");
    gw.shutdown().await;
}
