#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! MQTT 5 interoperability with paho-mqtt (Python, 2.x, `VERSION2` callback API) through
//! `tests/paho/client.py`: each test starts a gateway in-process, runs one scenario of the
//! script as a child process under a timeout (killed when it overruns), and checks the JSON
//! lines it prints. Without python3 + paho-mqtt the tests SKIP locally and fail in CI (env
//! `CI` set). Tests are named after the MQTT 5.0 clause they check.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// How long one scenario may run (each of its waits is bounded at 10 s by the script).
const LIMIT: Duration = Duration::from_secs(30);

/// With python3 and paho-mqtt 2.x installed: a gateway configured by `f`, and the JSON lines
/// that `scenario` of tests/paho/client.py printed when run against its MQTT port (killed
/// after [`LIMIT`]); panics with its output if it fails or overruns.
async fn paho(
    scenario: &str,
    f: impl FnOnce(&mut ponte::config::Config),
) -> Option<(ponte::Gateway, Vec<Value>)> {
    let check =
        "import paho.mqtt, sys; sys.exit(0 if paho.mqtt.__version__.startswith('2.') else 1)";
    if !have_python(check, "paho-mqtt 2.x") {
        return None;
    }
    let gw = gateway_with(f).await;
    let script = format!("{}/tests/paho/client.py", env!("CARGO_MANIFEST_DIR"));
    let port = gw.mqtt_addr.port().to_string();
    let o = Cmd::new("python3")
        .args([script.as_str(), scenario, "127.0.0.1", &port])
        .limit(LIMIT)
        .run()
        .await;
    let (out, err) = (&o.stdout, &o.stderr);
    assert_eq!(
        o.code,
        Some(0),
        "paho {scenario} failed:\nstdout: {out}\nstderr: {err}"
    );
    let lines = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("paho {scenario}: {e}: {l}")))
        .collect();
    Some((gw, lines))
}

/// The lines whose "event" is `event`.
fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["event"] == event).collect()
}

/// The one line whose "event" is `event` (there must be exactly one).
fn one<'a>(lines: &'a [Value], event: &str) -> &'a Value {
    let found = events(lines, event);
    assert_eq!(found.len(), 1, "{lines:?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_3_2_3_6_response_topic_and_correlation_data_pass_through_paho() {
    let Some((_gw, lines)) = paho("request_response", |_| {}).await else {
        return;
    };
    let corr = "0001feff636f7272"; // 00 01 FE FF "corr"
    let req = one(&lines, "request");
    assert_eq!(req["topic"], "rr/req");
    assert_eq!(req["payload"], "ping");
    let to = &req["response_topic"];
    assert_eq!(to, "rr/resp/requester", "MQTT-3.3.2-15");
    assert_eq!(req["correlation_data"], corr, "MQTT-3.3.2-16");
    let resp = one(&lines, "response");
    assert_eq!(resp["topic"], "rr/resp/requester");
    assert_eq!(resp["payload"], "pong");
    assert_eq!(resp["correlation_data"], corr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_3_2_3_7_user_properties_pass_through_in_order_paho() {
    let Some((_gw, lines)) = paho("user_properties", |_| {}).await else {
        return;
    };
    let msg = one(&lines, "message");
    let want = json!([["a", "1"], ["b", "2"], ["a", "3"], ["z", "éè"]]);
    let why = "MQTT-3.3.2-17/18: User Properties forwarded unchanged, in order";
    assert_eq!(msg["user_properties"], want, "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_3_4_overlapping_subscriptions_one_copy_with_both_identifiers_paho() {
    let Some((_gw, lines)) = paho("subscription_ids", |_| {}).await else {
        return;
    };
    one(&lines, "done");
    let msgs = events(&lines, "message");
    let why = "MQTT-3.3.4-2: one copy for overlapping subscriptions";
    assert_eq!(msgs.len(), 1, "{why}: {lines:?}");
    assert_eq!(msgs[0]["topic"], "sid/x");
    let why = "MQTT-3.3.4-3: the copy carries every matching subscription's identifier";
    assert_eq!(msgs[0]["ids"], json!([1, 2]), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_4_8_2_shared_subscription_each_message_to_exactly_one_member_paho() {
    let Some((_gw, lines)) = paho("shared", |_| {}).await else {
        return;
    };
    let done = one(&lines, "done");
    let names = |k: &str| -> Vec<u32> {
        let got = done[k].as_array().unwrap().iter();
        got.map(|v| v.as_str().unwrap().parse().unwrap()).collect()
    };
    let (a, b) = (names("a"), names("b"));
    let mut all: Vec<u32> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    let why = format!("each message to exactly one member: a={a:?} b={b:?}");
    assert_eq!(all, (0..20).collect::<Vec<_>>(), "{why}");
    let both = !a.is_empty() && !b.is_empty();
    assert!(both, "both members get some: a={a:?} b={b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_3_2_3_4_topic_alias_from_paho_is_resolved() {
    let Some((_gw, lines)) = paho("topic_alias", |_| {}).await else {
        return;
    };
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let msgs: Vec<(String, String)> = events(&lines, "message")
        .iter()
        .map(|m| (text(&m["topic"]), text(&m["payload"])))
        .collect();
    let expect: Vec<(String, String)> = ["first", "second", "third"]
        .iter()
        .map(|p| ("ta/t".to_string(), p.to_string()))
        .collect();
    let why = "MQTT-3.3.2-12: a PUBLISH with only the alias is for the topic the alias was set to";
    assert_eq!(msgs, expect, "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_3_2_3_9_content_type_from_paho_is_http_content_type() {
    let Some((gw, lines)) = paho("content_type", |_| {}).await else {
        return;
    };
    one(&lines, "published");
    let resp = http_get(&gw, "ct/paho").await;
    assert_eq!(resp.status(), 200);
    let ct = resp.headers().get("content-type");
    let ct = ct.map(|v| v.to_str().unwrap().to_string());
    assert_eq!(ct, Some("application/cbor".to_string()));
    assert_eq!(&resp.bytes().await.unwrap()[..], b"\xa1\x61\x61\x01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_v311_paho_client_receives_v5_paho_publish() {
    let Some((_gw, lines)) = paho("v311_receives_v5", |_| {}).await else {
        return;
    };
    let msg = one(&lines, "message");
    assert_eq!(msg["topic"], "x/v5");
    assert_eq!(msg["payload"], "from v5");
    assert_eq!(msg["qos"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_2_2_3_15_response_information_reason_string_and_0x10_seen_by_paho() {
    // Paho refuses malformed filters itself; a filter deeper than the limit reaches us.
    let three_levels = |c: &mut ponte::config::Config| c.mqtt.max_topic_levels = 3;
    let Some((_gw, lines)) = paho("diagnostics", three_levels).await else {
        return;
    };
    let connack = one(&lines, "connack");
    let info = connack["response_information"].as_str().unwrap_or_default();
    let for_it = info.starts_with("ponte/response/paho-diag-") && info.ends_with('/');
    assert!(
        for_it,
        "3.2.2.3.15: Response Information for the client: {info:?}"
    );
    let suback = one(&lines, "suback");
    assert_eq!(suback["codes"], json!([1, 0x8F]));
    let text = suback["reason_string"].as_str().unwrap_or_default();
    let names = text.contains("deep/a/b/c/#") && text.contains("more than 3 levels");
    let why = "3.9.2.1.2: the Reason String names the refused filter";
    assert!(names, "{why}: {text:?}");
    let puback = one(&lines, "puback");
    let name = &puback["name"];
    assert_eq!(
        puback["code"], 0x10,
        "3.4.2.1: No matching subscribers ({name})"
    );
}
