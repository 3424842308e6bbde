#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Interoperability with real third-party clients run as child processes: mosquitto_pub /
//! mosquitto_sub (MQTT 3.1.1), libcoap's coap-client-notls (CoAP over UDP and TCP) and
//! aiocoap through its Python API (`tests/aiocoap/client.py`). Each child runs under a
//! timeout and is killed when it overruns. A missing client skips the test locally and fails
//! it in CI (env `CI` set). CoAP tests name the RFC section or ETSI plugtest scenario.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A running child with its output collected on reader threads.
struct Proc {
    child: Child,
    what: String,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

/// What a finished child printed.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn spawn(program: &str, args: &[&str]) -> Proc {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    Proc {
        child,
        what: format!("{program} {}", args.join(" ")),
        out,
        err,
    }
}

impl Proc {
    /// Wait for the child to exit (killing it after `limit`), off the async runtime.
    async fn finish(self, limit: Duration) -> Output {
        tokio::task::spawn_blocking(move || {
            let Proc {
                mut child,
                what,
                out,
                err,
            } = self;
            let deadline = Instant::now() + limit;
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
            let o = Output {
                code: status.and_then(|s| s.code()),
                stdout: out.join().unwrap(),
                stderr: err.join().unwrap(),
            };
            if status.is_none() {
                panic!(
                    "`{what}` did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                    o.stdout, o.stderr
                );
            }
            o
        })
        .await
        .unwrap()
    }
}

async fn run(program: &str, args: &[&str]) -> Output {
    spawn(program, args).finish(Duration::from_secs(10)).await
}

/// Wait until the broker holds more than `before` subscriptions (a child client subscribed).
async fn subscribed(gw: &ponte::Gateway, before: usize) {
    within(WAIT, "the child client to subscribe", async {
        while gw.broker.subscription_count() <= before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn coap_uri(gw: &ponte::Gateway, path: &str) -> String {
    format!("coap://{}/{}", gw.coap_addr, path)
}

// ---------------------------------------------------------------------------------------
// mosquitto clients
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_retained_is_readable_over_http() {
    if !have("mosquitto_pub") {
        return;
    }
    let gw = gateway().await;
    let port = gw.mqtt_addr.port().to_string();
    let o = run(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "311",
            "-t",
            "i/pub",
            "-m",
            "hello",
            "-r",
        ],
    )
    .await;
    assert_eq!(o.code, Some(0), "mosquitto_pub: {}", o.all());
    let r = http_get(&gw, "i/pub").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello");
    gw.shutdown().await;
}

fn sub_args<'a>(port: &'a str, topic: &'a str) -> Vec<&'a str> {
    vec![
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-V",
        "311",
        "-q",
        "1",
        "-t",
        topic,
        "-C",
        "1",
        "-W",
        "8",
        "-F",
        "%t %p r=%r q=%q",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_9_mosquitto_sub_gets_an_http_put_with_retain_0() {
    if !have("mosquitto_sub") {
        return;
    }
    let gw = gateway().await;
    let port = gw.mqtt_addr.port().to_string();
    let before = gw.broker.subscription_count();
    let sub = spawn("mosquitto_sub", &sub_args(&port, "i/live"));
    subscribed(&gw, before).await;
    assert_eq!(
        http_put(&gw, "i/live", "live", "text/plain").await.status(),
        201
    );
    let o = sub.finish(Duration::from_secs(10)).await;
    assert_eq!(o.code, Some(0), "mosquitto_sub: {}", o.all());
    assert_eq!(o.stdout.trim(), "i/live live r=0 q=1");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_8_mosquitto_sub_gets_the_stored_value_with_retain_1() {
    if !have("mosquitto_sub") {
        return;
    }
    let gw = gateway().await;
    let port = gw.mqtt_addr.port().to_string();
    assert_eq!(
        http_put(&gw, "i/kept", "kept", "text/plain").await.status(),
        201
    );
    let o = spawn("mosquitto_sub", &sub_args(&port, "i/kept"))
        .finish(Duration::from_secs(10))
        .await;
    assert_eq!(o.code, Some(0), "mosquitto_sub: {}", o.all());
    assert_eq!(o.stdout.trim(), "i/kept kept r=1 q=1");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_3_mosquitto_pub_qos_2_is_delivered_and_stored() {
    if !have("mosquitto_pub") {
        return;
    }
    let gw = gateway().await;
    let port = gw.mqtt_addr.port().to_string();
    let mut sub = Mqtt::subscriber(gw.mqtt_addr, "qos2-sub", "i/q2").await;
    let o = run(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "311",
            "-q",
            "2",
            "-r",
            "-t",
            "i/q2",
            "-m",
            "exactly",
        ],
    )
    .await;
    assert_eq!(
        o.code,
        Some(0),
        "mosquitto_pub -q 2 completes PUBREC/PUBREL/PUBCOMP: {}",
        o.all()
    );
    let m = sub.next().await;
    assert_eq!(&m.payload[..], b"exactly");
    sub.expect_silence("QoS 2 is delivered once").await;
    assert_eq!(http_get(&gw, "i/q2").await.text().await.unwrap(), "exactly");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// coap-client-notls (libcoap)
// ---------------------------------------------------------------------------------------

/// The `-v 6` line for the response (`v:1 t:ACK c:2.05 ...`), by its code.
fn response_line(o: &Output, code: &str) -> Option<String> {
    o.all()
        .lines()
        .find(|l| l.starts_with("v:1 ") && l.contains(&format!(" c:{code} ")))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_coap_client_put_get_delete_round_trip() {
    if !have("coap-client-notls") {
        return;
    }
    let gw = gateway().await;
    let uri = coap_uri(&gw, "r/i/k");

    let o = run(
        "coap-client-notls",
        &["-v", "6", "-m", "put", "-e", "21.5", "-t", "0", &uri],
    )
    .await;
    assert!(
        response_line(&o, "2.01").is_some(),
        "PUT → 2.01: {}",
        o.all()
    );
    let r = http_get(&gw, "i/k").await;
    assert_eq!(r.status(), 200, "written over CoAP, readable over HTTP");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), "21.5");

    let o = run(
        "coap-client-notls",
        &["-v", "6", "-m", "put", "-e", "22", "-t", "0", &uri],
    )
    .await;
    assert!(
        response_line(&o, "2.04").is_some(),
        "second PUT → 2.04: {}",
        o.all()
    );

    let o = run("coap-client-notls", &["-v", "6", "-m", "get", &uri]).await;
    let line = response_line(&o, "2.05").unwrap_or_else(|| panic!("GET → 2.05: {}", o.all()));
    assert!(line.contains("t:ACK"), "{line}");
    assert!(line.contains(":: '22'"), "{line}");
    assert!(line.contains("Content-Format:text/plain"), "{line}");

    let o = run("coap-client-notls", &["-v", "6", "-m", "delete", &uri]).await;
    assert!(
        response_line(&o, "2.02").is_some(),
        "DELETE → 2.02: {}",
        o.all()
    );
    assert_eq!(http_get(&gw, "i/k").await.status(), 404);

    let o = run("coap-client-notls", &["-m", "get", &uri]).await;
    assert!(
        o.all().contains("4.04"),
        "GET after DELETE → 4.04: {}",
        o.all()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7641_coap_client_observe_prints_the_value_and_a_later_http_put() {
    if !have("coap-client-notls") {
        return;
    }
    let gw = gateway().await;
    http_put(&gw, "i/obs", "first", "text/plain").await;
    let before = gw.broker.subscription_count();
    let obs = spawn(
        "coap-client-notls",
        &["-s", "3", "-B", "4", &coap_uri(&gw, "r/i/obs")],
    );
    subscribed(&gw, before).await;
    http_put(&gw, "i/obs", "second", "text/plain").await;
    let o = obs.finish(Duration::from_secs(10)).await;
    let out = o.stdout.clone();
    let (a, b) = (out.find("first"), out.find("second"));
    assert!(
        matches!((a, b), (Some(a), Some(b)) if a < b),
        "initial value then the notification: {}",
        o.all()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_5_2_3_coap_client_non_request_gets_a_non_response() {
    if !have("coap-client-notls") {
        return;
    }
    let gw = gateway().await;
    http_put(&gw, "i/non", "nn", "text/plain").await;
    let o = run(
        "coap-client-notls",
        &["-v", "6", "-N", &coap_uri(&gw, "r/i/non")],
    )
    .await;
    let line = response_line(&o, "2.05").unwrap_or_else(|| panic!("NON GET → 2.05: {}", o.all()));
    assert!(line.contains("t:NON"), "{line}");
    assert!(line.contains(":: 'nn'"), "{line}");
    let req_mid = o
        .all()
        .lines()
        .find(|l| l.contains(" c:GET "))
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("i:"))
                .map(str::to_owned)
        });
    let resp_mid = line
        .split_whitespace()
        .find(|w| w.starts_with("i:"))
        .map(str::to_owned);
    assert!(req_mid.is_some());
    assert_ne!(req_mid, resp_mid, "the NON response has its own MID");
    gw.shutdown().await;
}

/// A scratch directory for files handed to clients.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Deterministic, non-text bytes so a byte-for-byte comparison means something.
fn blob(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// The ETag of the `-v 6` response line (`ETag:0x0e`), as the `-O 1,0x..` argument wants it.
fn etag_of(line: &str) -> String {
    line.split([' ', ',', '[', ']'])
        .find_map(|w| w.strip_prefix("ETag:"))
        .unwrap_or_else(|| panic!("no ETag in {line}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn td_coap_block_01_02_coap_client_block_wise_64_both_directions_byte_for_byte() {
    if !have("coap-client-notls") {
        return;
    }
    let gw = gateway().await;
    let dir = scratch();
    let (src, dst) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
    let value = blob(3000);
    std::fs::write(&src, &value).unwrap();
    let uri = coap_uri(&gw, "r/i/big");
    // Block1 PUT in 64-byte blocks (RFC 7959 §2.5, TD_COAP_BLOCK_02).
    let o = run(
        "coap-client-notls",
        &[
            "-v",
            "6",
            "-b",
            "64",
            "-m",
            "put",
            "-t",
            "42",
            "-f",
            src.to_str().unwrap(),
            &uri,
        ],
    )
    .await;
    let done = response_line(&o, "2.01").unwrap_or_else(|| panic!("final 2.01: {}", o.all()));
    // 3000 bytes in 64-byte blocks: the last is NUM 46, echoed in the final response.
    assert!(
        done.contains("Block1:46/_/64"),
        "final 2.01 echoes Block1: {done}"
    );
    let r = http_get(&gw, "i/big").await;
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        value,
        "stored exactly once, whole"
    );
    // Block2 GET in 64-byte blocks into a file (RFC 7959 §2.4, TD_COAP_BLOCK_01).
    let o = run(
        "coap-client-notls",
        &["-b", "64", "-o", dst.to_str().unwrap(), &uri],
    )
    .await;
    let got = std::fs::read(&dst).unwrap_or_default();
    assert!(
        got == value,
        "Block2 read {} of {} bytes: {}",
        got.len(),
        value.len(),
        o.all()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_5_10_8_coap_client_if_match_and_if_none_match_with_o() {
    if !have("coap-client-notls") {
        return;
    }
    let gw = gateway().await;
    let uri = coap_uri(&gw, "r/i/cond");
    // If-None-Match on a missing thing creates it (TD_COAP_CORE_... conditional create).
    let o = run(
        "coap-client-notls",
        &["-v", "6", "-m", "put", "-O", "5,", "-e", "1", &uri],
    )
    .await;
    let created = response_line(&o, "2.01").unwrap_or_else(|| panic!("2.01: {}", o.all()));
    // If-None-Match on an existing thing → 4.12.
    let o = run(
        "coap-client-notls",
        &["-v", "6", "-m", "put", "-O", "5,", "-e", "2", &uri],
    )
    .await;
    assert!(
        response_line(&o, "4.12").is_some(),
        "If-None-Match: {}",
        o.all()
    );
    // If-Match with the current ETag → 2.04; with the now stale one → 4.12.
    let etag = etag_of(&created);
    let o = run(
        "coap-client-notls",
        &[
            "-v",
            "6",
            "-m",
            "put",
            "-O",
            &format!("1,{etag}"),
            "-e",
            "3",
            &uri,
        ],
    )
    .await;
    assert!(
        response_line(&o, "2.04").is_some(),
        "If-Match current: {}",
        o.all()
    );
    let o = run(
        "coap-client-notls",
        &[
            "-v",
            "6",
            "-m",
            "put",
            "-O",
            &format!("1,{etag}"),
            "-e",
            "4",
            &uri,
        ],
    )
    .await;
    assert!(
        response_line(&o, "4.12").is_some(),
        "If-Match stale: {}",
        o.all()
    );
    assert_eq!(http_get(&gw, "i/cond").await.text().await.unwrap(), "3");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8323_coap_client_coap_tcp_put_get_observe_and_block_wise() {
    if !have("coap-client-notls") {
        return;
    }
    let gw = gateway().await;
    let uri = format!("coap+tcp://{}/r/i/tcp", gw.coap_addr);
    let o = run(
        "coap-client-notls",
        &["-v", "6", "-m", "put", "-e", "via tcp", "-t", "0", &uri],
    )
    .await;
    assert!(
        response_line(&o, "2.01").is_some(),
        "PUT over TCP: {}",
        o.all()
    );
    assert_eq!(
        http_get(&gw, "i/tcp").await.text().await.unwrap(),
        "via tcp"
    );

    let dir = scratch();
    let (src, dst) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
    let value = blob(5000);
    std::fs::write(&src, &value).unwrap();
    let big = format!("coap+tcp://{}/r/i/tcpbig", gw.coap_addr);
    run(
        "coap-client-notls",
        &["-b", "64", "-m", "put", "-f", src.to_str().unwrap(), &big],
    )
    .await;
    run("coap-client-notls", &["-o", dst.to_str().unwrap(), &big]).await;
    assert!(
        std::fs::read(&dst).unwrap_or_default() == value,
        "byte-for-byte over TCP"
    );

    let before = gw.broker.subscription_count();
    let obs = spawn("coap-client-notls", &["-s", "3", "-B", "4", &uri]);
    subscribed(&gw, before).await;
    http_put(&gw, "i/tcp", "changed", "text/plain").await;
    let o = obs.finish(Duration::from_secs(10)).await;
    let (a, b) = (o.stdout.find("via tcp"), o.stdout.find("changed"));
    assert!(
        matches!((a, b), (Some(a), Some(b)) if a < b),
        "observe over TCP: {}",
        o.all()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_4_2_4_5_coap_client_with_20_percent_loss_publishes_each_put_once() {
    if !have("coap-client-notls") {
        return;
    }
    let gw = gateway().await;
    let mut sub = Mqtt::subscriber(gw.mqtt_addr, "lossy-sub", "i/lossy").await;
    let uri = coap_uri(&gw, "r/i/lossy");
    for i in 0..5 {
        let value = format!("v{i}");
        let o = spawn(
            "coap-client-notls",
            &[
                "-v", "6", "-l", "20%", "-m", "put", "-e", &value, "-t", "0", &uri,
            ],
        )
        .finish(Duration::from_secs(90))
        .await;
        assert!(
            response_line(&o, "2.01").is_some() || response_line(&o, "2.04").is_some(),
            "PUT {i} completes despite loss: {}",
            o.all()
        );
    }
    for i in 0..5 {
        let m = sub.next().await;
        assert_eq!(
            m.payload,
            format!("v{i}").into_bytes(),
            "in order, once each"
        );
    }
    sub.expect_silence("a retransmitted PUT must not publish twice")
        .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn td_coap_link_01_coap_client_discovers_things() {
    if !have("coap-client-notls") {
        return;
    }
    let gw = gateway().await;
    http_put(&gw, "i/disc/a", "1", "text/plain").await;
    http_put(&gw, "i/disc/b", "{}", "application/json").await;
    let o = run(
        "coap-client-notls",
        &[
            "-m",
            "get",
            &coap_uri(&gw, ".well-known/core?href=/r/i/disc*"),
        ],
    )
    .await;
    assert_eq!(
        o.stdout.trim(),
        "</r/i/disc/a>;ct=0;obs,</r/i/disc/b>;ct=50;obs",
        "{}",
        o.all()
    );
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// aiocoap (Python API, tests/aiocoap/client.py)
// ---------------------------------------------------------------------------------------

/// Whether python3 with aiocoap is available; when not: panic in CI, otherwise SKIP.
fn have_aiocoap() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import aiocoap"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with aiocoap is not installed, and CI must have it");
        }
        println!("SKIP: python3 with aiocoap not installed");
    }
    ok
}

fn aiocoap_script() -> String {
    format!("{}/tests/aiocoap/client.py", env!("CARGO_MANIFEST_DIR"))
}

/// The JSON line an aiocoap scenario printed.
fn aiocoap_json(o: &Output) -> serde_json::Value {
    assert_eq!(o.code, Some(0), "aiocoap scenario failed: {}", o.all());
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", o.all()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn td_coap_block_02_03_aiocoap_block1_put_then_block2_get_byte_for_byte() {
    if !have_aiocoap() {
        return;
    }
    let gw = gateway().await;
    let dir = scratch();
    let src = dir.path().join("body.bin");
    let value = blob(4000);
    std::fs::write(&src, &value).unwrap();
    let uri = coap_uri(&gw, "r/i/aio");
    let script = aiocoap_script();
    let o = spawn("python3", &[&script, "block1", &uri, src.to_str().unwrap()])
        .finish(Duration::from_secs(30))
        .await;
    let put = aiocoap_json(&o);
    assert_eq!(put["code"], "2.01", "{put}");
    assert_eq!(put["location"], serde_json::json!(["r", "i", "aio"]));
    let stored = http_get(&gw, "i/aio").await.bytes().await.unwrap();
    assert!(
        stored.as_ref() == value.as_slice(),
        "Block1 reassembled exactly"
    );

    let o = spawn("python3", &[&script, "block2", &uri])
        .finish(Duration::from_secs(30))
        .await;
    let get = aiocoap_json(&o);
    assert_eq!(get["code"], "2.05");
    assert_eq!(get["len"], value.len());
    let want = o.stdout.clone();
    assert!(
        want.contains(&sha256_hex(&value)),
        "same bytes through Block2: {want}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn td_coap_obs_01_aiocoap_observes_the_value_and_two_changes() {
    if !have_aiocoap() {
        return;
    }
    let gw = gateway().await;
    http_put(&gw, "i/aobs", "first", "text/plain").await;
    let before = gw.broker.subscription_count();
    let obs = spawn(
        "python3",
        &[
            &aiocoap_script(),
            "observe",
            &coap_uri(&gw, "r/i/aobs"),
            "3",
        ],
    );
    subscribed(&gw, before).await;
    http_put(&gw, "i/aobs", "second", "text/plain").await;
    mqtt_publish(gw.mqtt_addr, "i/aobs", "third", true).await;
    let o = obs.finish(Duration::from_secs(30)).await;
    let v = aiocoap_json(&o);
    assert_eq!(
        v["payloads"],
        serde_json::json!(["first", "second", "third"])
    );
    assert_eq!(v["codes"], serde_json::json!(["2.05", "2.05", "2.05"]));
    gw.shutdown().await;
}

/// SHA-256 in hex, computed by python3 (available whenever aiocoap is), so the test needs
/// no hashing crate.
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
