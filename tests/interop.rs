#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Interoperability with real third-party clients run as child processes: mosquitto_pub /
//! mosquitto_sub (MQTT 3.1.1), libcoap's coap-client-notls (CoAP over UDP and TCP) and
//! aiocoap through its Python API (`tests/aiocoap/client.py`). Each child runs under a
//! timeout and is killed when it overruns. A missing client skips the test locally and fails
//! it in CI (env `CI` set). CoAP tests name the RFC section or ETSI plugtest scenario.

mod common;

use std::time::Duration;

use common::*;

fn coap_uri(gw: &ponte::Gateway, path: &str) -> String {
    format!("coap://{}/{}", gw.coap_addr, path)
}

// ---------------------------------------------------------------------------------------
// mosquitto clients
// ---------------------------------------------------------------------------------------

/// `program` (mosquitto_pub or mosquitto_sub) with MQTT 3.1.1 to the gateway, when installed.
fn mosquitto(gw: &ponte::Gateway, program: &str) -> Option<Cmd> {
    let at = format!("-h 127.0.0.1 -p {} -V 311", gw.mqtt_addr.port());
    have(program).then(|| Cmd::new(program).words(&at))
}

/// mosquitto_sub printing one message of `topic` at QoS 1 as `topic payload r=R q=Q`.
fn one_message(gw: &ponte::Gateway, topic: &str) -> Option<Cmd> {
    let sub = mosquitto(gw, "mosquitto_sub")?;
    let sub = sub.words(&format!("-q 1 -t {topic} -C 1 -W 8"));
    Some(sub.arg("-F").arg("%t %p r=%r q=%q"))
}

/// Assert a client exited 0.
fn ok(o: &Output, what: &str) {
    assert_eq!(o.code, Some(0), "{what}: {}", o.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_retained_is_readable_over_http() {
    let gw = gateway().await;
    let Some(publ) = mosquitto(&gw, "mosquitto_pub") else {
        return;
    };
    ok(
        &publ.words("-t i/pub -m hello -r").run().await,
        "mosquitto_pub",
    );
    let r = http_get(&gw, "i/pub").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello");
    gw.shutdown().await;
}

/// mosquitto_sub (QoS 1, one message) of `topic`, and an HTTP PUT of `value` there made
/// after it subscribed (`live`) or before; what it printed, as `topic payload r=R q=Q`.
async fn mosquitto_sub_gets_a_put(topic: &str, value: &'static str, live: bool) -> Option<String> {
    let gw = gateway().await;
    let sub = one_message(&gw, topic)?;
    let put = || async { http_put(&gw, topic, value, "text/plain").await.status() };
    let before = gw.broker.subscription_count();
    if !live {
        assert_eq!(put().await, 201);
    }
    let sub = sub.spawn();
    if live {
        subscribed(&gw, before).await;
        assert_eq!(put().await, 201);
    }
    let o = sub.finish().await;
    ok(&o, "mosquitto_sub");
    gw.shutdown().await;
    Some(o.stdout.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_9_mosquitto_sub_gets_an_http_put_with_retain_0() {
    if let Some(out) = mosquitto_sub_gets_a_put("i/live", "live", true).await {
        assert_eq!(out, "i/live live r=0 q=1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_8_mosquitto_sub_gets_the_stored_value_with_retain_1() {
    if let Some(out) = mosquitto_sub_gets_a_put("i/kept", "kept", false).await {
        assert_eq!(out, "i/kept kept r=1 q=1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_3_mosquitto_pub_qos_2_is_delivered_and_stored() {
    let gw = gateway().await;
    let Some(publ) = mosquitto(&gw, "mosquitto_pub") else {
        return;
    };
    let mut sub = Client::subscriber(gw.mqtt_addr, "qos2-sub", "i/q2").await;
    let o = publ.words("-q 2 -r -t i/q2 -m exactly").run().await;
    ok(&o, "mosquitto_pub -q 2 completes PUBREC/PUBREL/PUBCOMP");
    let m = sub.publish_rx().await;
    assert_eq!(&m.payload[..], b"exactly");
    sub.expect_silence("QoS 2 is delivered once").await;
    assert_eq!(http_text(&gw, "i/q2").await, "exactly");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// coap-client-notls (libcoap)
// ---------------------------------------------------------------------------------------

/// With libcoap's `coap-client-notls` installed: a gateway for it.
async fn libcoap() -> Option<ponte::Gateway> {
    if !have("coap-client-notls") {
        return None;
    }
    Some(gateway().await)
}

/// `coap-client-notls` with `args` (the URI comes last, as an argument of its own).
fn coap_client(args: &str) -> Cmd {
    Cmd::new("coap-client-notls").words(args)
}

/// [`coap_client`] printing every message (`-v 6`).
fn v6(args: &str) -> Cmd {
    coap_client("-v 6").words(args)
}

/// The `-v 6` line for the response (`v:1 t:ACK c:2.05 ...`), by its code.
fn response_line(o: &Output, code: &str) -> Option<String> {
    o.all()
        .lines()
        .find(|l| l.starts_with("v:1 ") && l.contains(&format!(" c:{code} ")))
        .map(str::to_owned)
}

/// Run `client` (with `-v 6`) and return its response line with `code`.
async fn answered(client: Cmd, code: &str, what: &str) -> String {
    let o = client.run().await;
    response_line(&o, code).unwrap_or_else(|| panic!("{what} → {code}: {}", o.all()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_coap_client_put_get_delete_round_trip() {
    let Some(gw) = libcoap().await else { return };
    let uri = coap_uri(&gw, "r/i/k");

    answered(v6("-m put -e 21.5 -t 0").arg(&uri), "2.01", "PUT").await;
    let r = http_get(&gw, "i/k").await;
    assert_eq!(r.status(), 200, "written over CoAP, readable over HTTP");
    let ct = r.headers()["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), "21.5");

    answered(v6("-m put -e 22 -t 0").arg(&uri), "2.04", "second PUT").await;

    let line = answered(v6("-m get").arg(&uri), "2.05", "GET").await;
    assert!(line.contains("t:ACK"), "{line}");
    assert!(line.contains(":: '22'"), "{line}");
    assert!(line.contains("Content-Format:text/plain"), "{line}");

    answered(v6("-m delete").arg(&uri), "2.02", "DELETE").await;
    assert_eq!(http_get(&gw, "i/k").await.status(), 404);

    let o = coap_client("-m get").arg(&uri).run().await;
    let why = "GET after DELETE → 4.04";
    assert!(o.all().contains("4.04"), "{why}: {}", o.all());
    gw.shutdown().await;
}

/// Observe `uri` with coap-client for 3 s while `topic` changes from `first` to `second`
/// over HTTP; its stdout must show the value at registration and then the change.
async fn coap_client_observes(
    gw: &ponte::Gateway,
    uri: &str,
    topic: &str,
    first: &str,
    second: &str,
) {
    let before = gw.broker.subscription_count();
    let obs = coap_client("-s 3 -B 4").arg(uri).spawn();
    subscribed(gw, before).await;
    http_put(gw, topic, second.to_owned(), "text/plain").await;
    let o = obs.finish().await;
    let (a, b) = (o.stdout.find(first), o.stdout.find(second));
    let in_order = matches!((a, b), (Some(a), Some(b)) if a < b);
    assert!(in_order, "initial value then the notification: {}", o.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7641_coap_client_observe_prints_the_value_and_a_later_http_put() {
    let Some(gw) = libcoap().await else { return };
    http_put(&gw, "i/obs", "first", "text/plain").await;
    let uri = coap_uri(&gw, "r/i/obs");
    coap_client_observes(&gw, &uri, "i/obs", "first", "second").await;
    gw.shutdown().await;
}

/// The message id (`i:...`) on a `-v 6` line.
fn mid(line: &str) -> Option<String> {
    let word = line.split_whitespace().find(|w| w.starts_with("i:"));
    word.map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_5_2_3_coap_client_non_request_gets_a_non_response() {
    let Some(gw) = libcoap().await else { return };
    http_put(&gw, "i/non", "nn", "text/plain").await;
    let o = v6("-N").arg(coap_uri(&gw, "r/i/non")).run().await;
    let line = response_line(&o, "2.05");
    let line = line.unwrap_or_else(|| panic!("NON GET → 2.05: {}", o.all()));
    assert!(line.contains("t:NON"), "{line}");
    assert!(line.contains(":: 'nn'"), "{line}");
    let all = o.all();
    let req_mid = all.lines().find(|l| l.contains(" c:GET ")).and_then(mid);
    assert!(req_mid.is_some());
    assert_ne!(req_mid, mid(&line), "the NON response has its own MID");
    gw.shutdown().await;
}

/// Deterministic, non-text bytes so a byte-for-byte comparison means something, written to
/// a file in a scratch directory; the directory, the file and the bytes.
fn blob_file(len: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let value: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("in.bin");
    std::fs::write(&src, &value).unwrap();
    (dir, src, value)
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
    let Some(gw) = libcoap().await else { return };
    let (dir, src, value) = blob_file(3000);
    let dst = dir.path().join("out.bin");
    let uri = coap_uri(&gw, "r/i/big");
    // Block1 PUT in 64-byte blocks (RFC 7959 §2.5, TD_COAP_BLOCK_02).
    let put = v6("-b 64 -m put -t 42 -f").arg(&src).arg(&uri);
    let done = answered(put, "2.01", "final").await;
    // 3000 bytes in 64-byte blocks: the last is NUM 46, echoed in the final response.
    let echoed = done.contains("Block1:46/_/64");
    assert!(echoed, "final 2.01 echoes Block1: {done}");
    let r = http_get(&gw, "i/big").await;
    let stored = r.bytes().await.unwrap().to_vec();
    assert_eq!(stored, value, "stored exactly once, whole");
    // Block2 GET in 64-byte blocks into a file (RFC 7959 §2.4, TD_COAP_BLOCK_01).
    let o = coap_client("-b 64 -o").arg(&dst).arg(&uri).run().await;
    let got = std::fs::read(&dst).unwrap_or_default();
    let (n, of) = (got.len(), value.len());
    assert!(got == value, "Block2 read {n} of {of} bytes: {}", o.all());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_5_10_8_coap_client_if_match_and_if_none_match_with_o() {
    let Some(gw) = libcoap().await else { return };
    let uri = coap_uri(&gw, "r/i/cond");
    // If-None-Match on a missing thing creates it (TD_COAP_CORE_... conditional create).
    let put = |args: &str| v6("-m put").words(args).arg(&uri);
    let created = answered(put("-O 5, -e 1"), "2.01", "If-None-Match").await;
    // If-None-Match on an existing thing → 4.12.
    answered(put("-O 5, -e 2"), "4.12", "If-None-Match").await;
    // If-Match with the current ETag → 2.04; with the now stale one → 4.12.
    let etag = etag_of(&created);
    let current = put(&format!("-O 1,{etag} -e 3"));
    answered(current, "2.04", "If-Match current").await;
    let stale = put(&format!("-O 1,{etag} -e 4"));
    answered(stale, "4.12", "If-Match stale").await;
    assert_eq!(http_text(&gw, "i/cond").await, "3");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8323_coap_client_coap_tcp_put_get_observe_and_block_wise() {
    let Some(gw) = libcoap().await else { return };
    let uri = format!("coap+tcp://{}/r/i/tcp", gw.coap_addr);
    let put = Cmd::new("coap-client-notls")
        .words("-v 6 -m put -e")
        .arg("via tcp");
    let o = put.words("-t 0").arg(&uri).run().await;
    let created = response_line(&o, "2.01").is_some();
    assert!(created, "PUT over TCP: {}", o.all());
    assert_eq!(http_text(&gw, "i/tcp").await, "via tcp");

    let (dir, src, value) = blob_file(5000);
    let dst = dir.path().join("out.bin");
    let big = format!("coap+tcp://{}/r/i/tcpbig", gw.coap_addr);
    coap_client("-b 64 -m put -f")
        .arg(&src)
        .arg(&big)
        .run()
        .await;
    coap_client("-o").arg(&dst).arg(&big).run().await;
    let got = std::fs::read(&dst).unwrap_or_default();
    assert!(got == value, "byte-for-byte over TCP");

    coap_client_observes(&gw, &uri, "i/tcp", "via tcp", "changed").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_4_2_4_5_coap_client_with_20_percent_loss_publishes_each_put_once() {
    let Some(gw) = libcoap().await else { return };
    let mut sub = Client::subscriber(gw.mqtt_addr, "lossy-sub", "i/lossy").await;
    let uri = coap_uri(&gw, "r/i/lossy");
    for i in 0..5 {
        let put = v6(&format!("-l 20% -m put -e v{i} -t 0")).arg(&uri);
        let o = put.limit(Duration::from_secs(90)).run().await;
        let done = response_line(&o, "2.01").is_some() || response_line(&o, "2.04").is_some();
        assert!(done, "PUT {i} completes despite loss: {}", o.all());
    }
    for i in 0..5 {
        let m = sub.publish_rx().await;
        let want = format!("v{i}").into_bytes();
        assert_eq!(m.payload, want, "in order, once each");
    }
    let why = "a retransmitted PUT must not publish twice";
    sub.expect_silence(why).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn td_coap_link_01_coap_client_discovers_things() {
    let Some(gw) = libcoap().await else { return };
    http_put(&gw, "i/disc/a", "1", "text/plain").await;
    http_put(&gw, "i/disc/b", "{}", "application/json").await;
    let uri = coap_uri(&gw, ".well-known/core?href=/r/i/disc*");
    let o = coap_client("-m get").arg(&uri).run().await;
    let want = "</r/i/disc/a>;ct=0;obs,</r/i/disc/b>;ct=50;obs";
    assert_eq!(o.stdout.trim(), want, "{}", o.all());
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// aiocoap (Python API, tests/aiocoap/client.py)
// ---------------------------------------------------------------------------------------

/// `python3 tests/aiocoap/client.py` when aiocoap is installed (30 s at most).
fn aiocoap() -> Option<Cmd> {
    let script = format!("{}/tests/aiocoap/client.py", env!("CARGO_MANIFEST_DIR"));
    let cmd = Cmd::new("python3")
        .arg(script)
        .limit(Duration::from_secs(30));
    have_python("import aiocoap", "aiocoap").then_some(cmd)
}

/// The JSON line an aiocoap scenario printed.
fn aiocoap_json(o: &Output) -> serde_json::Value {
    assert_eq!(o.code, Some(0), "aiocoap scenario failed: {}", o.all());
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", o.all()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn td_coap_block_02_03_aiocoap_block1_put_then_block2_get_byte_for_byte() {
    let Some(script) = aiocoap() else {
        return;
    };
    let gw = gateway().await;
    let (_dir, src, value) = blob_file(4000);
    let uri = coap_uri(&gw, "r/i/aio");
    let o = script.clone().arg("block1").arg(&uri).arg(&src).run().await;
    let put = aiocoap_json(&o);
    assert_eq!(put["code"], "2.01", "{put}");
    assert_eq!(put["location"], serde_json::json!(["r", "i", "aio"]));
    let stored = http_get(&gw, "i/aio").await.bytes().await.unwrap();
    let same = stored.as_ref() == value.as_slice();
    assert!(same, "Block1 reassembled exactly");

    let o = script.arg("block2").arg(&uri).run().await;
    let get = aiocoap_json(&o);
    assert_eq!(get["code"], "2.05");
    assert_eq!(get["len"], value.len());
    let want = o.stdout.clone();
    let same = want.contains(&sha256_hex(&value));
    assert!(same, "same bytes through Block2: {want}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn td_coap_obs_01_aiocoap_observes_the_value_and_two_changes() {
    let Some(script) = aiocoap() else {
        return;
    };
    let gw = gateway().await;
    http_put(&gw, "i/aobs", "first", "text/plain").await;
    let before = gw.broker.subscription_count();
    let uri = coap_uri(&gw, "r/i/aobs");
    let obs = script.arg("observe").arg(uri).arg("3").spawn();
    subscribed(&gw, before).await;
    http_put(&gw, "i/aobs", "second", "text/plain").await;
    mqtt_publish(gw.mqtt_addr, "i/aobs", b"third", true).await;
    let v = aiocoap_json(&obs.finish().await);
    let payloads = serde_json::json!(["first", "second", "third"]);
    assert_eq!(v["payloads"], payloads);
    assert_eq!(v["codes"], serde_json::json!(["2.05", "2.05", "2.05"]));
    gw.shutdown().await;
}

/// SHA-256 in hex, computed by python3 (available whenever aiocoap is), so the test needs
/// no hashing crate.
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    use std::process::Stdio;
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
