//! Interoperability with real third-party clients run as child processes: mosquitto_pub /
//! mosquitto_sub (MQTT 3.1.1) and libcoap's coap-client-notls (CoAP). Each child runs under
//! a timeout and is killed when it overruns. A missing client skips the test locally and
//! fails it in CI (env `CI` set).

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Whether `bin` is on PATH; when not: panic in CI, otherwise print SKIP and return false.
fn have(bin: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{bin} is not installed, and CI must have it");
        }
        println!("SKIP: {bin} not installed");
    }
    found
}

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
