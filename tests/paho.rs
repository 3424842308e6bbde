#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! MQTT 5 interoperability with paho-mqtt (Python, 2.x, `VERSION2` callback API) through
//! `tests/paho/client.py`: each test starts a gateway in-process, runs one scenario of the
//! script as a child process under a timeout (killed when it overruns), and checks the JSON
//! lines it prints. Without python3 + paho-mqtt the tests SKIP locally and fail in CI (env
//! `CI` set). Tests are named after the MQTT 5.0 clause they check.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// How long one scenario may run (each of its waits is bounded at 10 s by the script).
const LIMIT: Duration = Duration::from_secs(30);

/// Whether python3 with paho-mqtt 2.x is available; when not: panic in CI, otherwise SKIP.
fn have_paho() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import paho.mqtt, sys; sys.exit(0 if paho.mqtt.__version__.startswith('2.') else 1)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with paho-mqtt 2.x is not installed, and CI must have it");
        }
        println!("SKIP: python3 with paho-mqtt 2.x not installed");
    }
    ok
}

/// Runs `scenario` of tests/paho/client.py against the gateway's MQTT port (off the async
/// runtime, killed after [`LIMIT`]) and returns the JSON lines it printed; panics with its
/// output if it fails or overruns.
async fn scenario(gw: &ponte::Gateway, scenario: &str) -> Vec<Value> {
    let script = format!("{}/tests/paho/client.py", env!("CARGO_MANIFEST_DIR"));
    let port = gw.mqtt_addr.port().to_string();
    let scenario = scenario.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("python3")
            .args([script.as_str(), &scenario, "127.0.0.1", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python3");
        let reader = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = reader(Box::new(child.stdout.take().unwrap()));
        let err = reader(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        match status {
            None => panic!("paho {scenario}: no exit within {LIMIT:?}\n{stdout}\n{stderr}"),
            Some(s) if !s.success() => {
                panic!("paho {scenario} failed ({s}):\nstdout: {stdout}\nstderr: {stderr}")
            }
            Some(_) => {}
        }
        stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("paho {scenario}: {e}: {l}"))
            })
            .collect()
    })
    .await
    .unwrap()
}

/// The lines whose "event" is `event`.
fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["event"] == event).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_3_2_3_6_response_topic_and_correlation_data_pass_through_paho() {
    if !have_paho() {
        return;
    }
    let gw = gateway().await;
    let lines = scenario(&gw, "request_response").await;
    let corr = "0001feff636f7272"; // 00 01 FE FF "corr"
    let req = events(&lines, "request");
    assert_eq!(req.len(), 1, "{lines:?}");
    assert_eq!(req[0]["topic"], "rr/req");
    assert_eq!(req[0]["payload"], "ping");
    assert_eq!(
        req[0]["response_topic"], "rr/resp/requester",
        "MQTT-3.3.2-15"
    );
    assert_eq!(req[0]["correlation_data"], corr, "MQTT-3.3.2-16");
    let resp = events(&lines, "response");
    assert_eq!(resp.len(), 1, "{lines:?}");
    assert_eq!(resp[0]["topic"], "rr/resp/requester");
    assert_eq!(resp[0]["payload"], "pong");
    assert_eq!(resp[0]["correlation_data"], corr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_3_2_3_7_user_properties_pass_through_in_order_paho() {
    if !have_paho() {
        return;
    }
    let gw = gateway().await;
    let lines = scenario(&gw, "user_properties").await;
    let msg = events(&lines, "message");
    assert_eq!(msg.len(), 1, "{lines:?}");
    assert_eq!(
        msg[0]["user_properties"],
        serde_json::json!([["a", "1"], ["b", "2"], ["a", "3"], ["z", "éè"]]),
        "MQTT-3.3.2-17/18: User Properties forwarded unchanged, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_3_4_overlapping_subscriptions_one_copy_with_both_identifiers_paho() {
    if !have_paho() {
        return;
    }
    let gw = gateway().await;
    let lines = scenario(&gw, "subscription_ids").await;
    assert_eq!(events(&lines, "done").len(), 1, "{lines:?}");
    let msgs = events(&lines, "message");
    assert_eq!(
        msgs.len(),
        1,
        "MQTT-3.3.4-2: one copy for overlapping subscriptions: {lines:?}"
    );
    assert_eq!(msgs[0]["topic"], "sid/x");
    assert_eq!(
        msgs[0]["ids"],
        serde_json::json!([1, 2]),
        "MQTT-3.3.4-3: the copy carries every matching subscription's identifier"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_4_8_2_shared_subscription_each_message_to_exactly_one_member_paho() {
    if !have_paho() {
        return;
    }
    let gw = gateway().await;
    let lines = scenario(&gw, "shared").await;
    let done = events(&lines, "done");
    assert_eq!(done.len(), 1, "{lines:?}");
    let names = |k: &str| -> Vec<u32> {
        done[0][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect()
    };
    let (a, b) = (names("a"), names("b"));
    let mut all: Vec<u32> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..20).collect::<Vec<_>>(),
        "each message to exactly one member: a={a:?} b={b:?}"
    );
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both members get some: a={a:?} b={b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_3_2_3_4_topic_alias_from_paho_is_resolved() {
    if !have_paho() {
        return;
    }
    let gw = gateway().await;
    let lines = scenario(&gw, "topic_alias").await;
    let msgs: Vec<(String, String)> = events(&lines, "message")
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_string(),
                m["payload"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect: Vec<(String, String)> = ["first", "second", "third"]
        .iter()
        .map(|p| ("ta/t".to_string(), p.to_string()))
        .collect();
    assert_eq!(
        msgs, expect,
        "MQTT-3.3.2-12: a PUBLISH with only the alias is for the topic the alias was set to"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_3_2_3_9_content_type_from_paho_is_http_content_type() {
    if !have_paho() {
        return;
    }
    let gw = gateway().await;
    let lines = scenario(&gw, "content_type").await;
    assert_eq!(events(&lines, "published").len(), 1, "{lines:?}");
    let resp = reqwest::Client::new()
        .get(format!("http://{}/resources/ct/paho", gw.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("application/cbor".to_string())
    );
    assert_eq!(&resp.bytes().await.unwrap()[..], b"\xa1\x61\x61\x01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_v311_paho_client_receives_v5_paho_publish() {
    if !have_paho() {
        return;
    }
    let gw = gateway().await;
    let lines = scenario(&gw, "v311_receives_v5").await;
    let msgs = events(&lines, "message");
    assert_eq!(msgs.len(), 1, "{lines:?}");
    assert_eq!(msgs[0]["topic"], "x/v5");
    assert_eq!(msgs[0]["payload"], "from v5");
    assert_eq!(msgs[0]["qos"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_2_2_3_15_response_information_reason_string_and_0x10_seen_by_paho() {
    if !have_paho() {
        return;
    }
    // Paho refuses malformed filters itself; a filter deeper than the limit reaches us.
    let gw = gateway_with(|c| c.mqtt.max_topic_levels = 3).await;
    let lines = scenario(&gw, "diagnostics").await;
    let connack = events(&lines, "connack");
    assert_eq!(connack.len(), 1, "{lines:?}");
    let info = connack[0]["response_information"]
        .as_str()
        .unwrap_or_default();
    assert!(
        info.starts_with("ponte/response/paho-diag-") && info.ends_with('/'),
        "3.2.2.3.15: Response Information for the client: {info:?}"
    );
    let suback = events(&lines, "suback");
    assert_eq!(suback.len(), 1, "{lines:?}");
    assert_eq!(suback[0]["codes"], serde_json::json!([1, 0x8F]));
    let text = suback[0]["reason_string"].as_str().unwrap_or_default();
    assert!(
        text.contains("deep/a/b/c/#") && text.contains("more than 3 levels"),
        "3.9.2.1.2: the Reason String names the refused filter: {text:?}"
    );
    let puback = events(&lines, "puback");
    assert_eq!(puback.len(), 1, "{lines:?}");
    assert_eq!(
        puback[0]["code"], 0x10,
        "3.4.2.1: No matching subscribers ({})",
        puback[0]["name"]
    );
}
