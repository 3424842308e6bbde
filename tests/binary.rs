//! Tests of the real `ponte` binary run as a child process: durability across `kill -9`,
//! graceful SIGTERM, start-up errors, `--version`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{within, Client, WAIT};
use rumqttc::{AsyncClient, Event, Packet, QoS};

const BIN: &str = env!("CARGO_BIN_EXE_ponte");

/// A running `ponte` child; killed (SIGKILL) when dropped.
struct Ponte {
    child: Child,
    /// Log lines (stderr), read by a thread so the pipe never fills.
    lines: mpsc::Receiver<String>,
    http: SocketAddr,
    mqtt: SocketAddr,
    /// CoAP (UDP) address, for writes that must reach offline MQTT sessions too.
    coap: SocketAddr,
}

impl Drop for Ponte {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command() -> Command {
    let mut c = Command::new(BIN);
    c.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// Remove ANSI escape sequences, in case colours are on anyway.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the final byte of the CSI sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address logged as `key=ADDR` on a `ponte listening` line.
fn field(line: &str, key: &str) -> SocketAddr {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("bad {key} address in {line:?}: {e}"))
}

/// Start `ponte --host 127.0.0.1 -p 0 -a 0 -m 0 -d db` and wait for its `ponte listening`
/// line, which gives the ports it picked.
fn spawn(db: &Path) -> Ponte {
    spawn_with(db, &[])
}

/// [`spawn`] with more arguments (e.g. `-c config.toml`).
fn spawn_with(db: &Path, extra: &[&std::ffi::OsStr]) -> Ponte {
    let mut child = command()
        .args(["--host", "127.0.0.1", "-p", "0", "-a", "0", "-m", "0", "-d"])
        .arg(db)
        .args(extra)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ponte");
    // Logs go to stderr (issue 12).
    let logs = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(logs).lines() {
            let Ok(line) = line else { break };
            if tx.send(strip_ansi(&line)).is_err() {
                // Nobody listens any more; keep draining so the child never blocks.
                continue;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("ponte listening") => break line,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("no `ponte listening` line within 10 s: {e}");
            }
        }
    };
    Ponte {
        http: field(&listening, "http"),
        mqtt: field(&listening, "mqtt"),
        coap: field(&listening, "coap"),
        child,
        lines,
    }
}

/// Wait for the child to exit, bounded; kills it and panics on timeout.
fn wait_exit(child: &mut Child, d: Duration) -> ExitStatus {
    let deadline = Instant::now() + d;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("ponte did not exit within {d:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run the binary to completion with `args`, bounded.
fn run(args: &[&str]) -> Output {
    let mut child = command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ponte");
    wait_exit(&mut child, Duration::from_secs(10));
    child.wait_with_output().expect("output")
}

#[tokio::test]
async fn retained_qos1_publish_acknowledged_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");

    let mut ponte = spawn(&db);
    let (client, mut eventloop) = AsyncClient::new(common::options(ponte.mqtt, "durable-pub"), 16);
    client
        .publish("durable/t", QoS::AtLeastOnce, true, b"survives".to_vec())
        .await
        .unwrap();
    within(WAIT, "PUBACK", async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("connection error before PUBACK: {e:?}"),
            }
        }
    })
    .await;
    // PUBACK means durable: SIGKILL right now, no chance to flush.
    ponte.child.kill().unwrap();
    let status = wait_exit(&mut ponte.child, Duration::from_secs(5));
    assert!(!status.success(), "killed, not exited: {status:?}");
    drop(eventloop);
    drop(ponte);

    let ponte = spawn(&db);
    // Over MQTT: the retained value is sent on subscribe.
    let (mut sub, _) = Client::connect(ponte.mqtt, "durable-sub").await;
    sub.subscribe("durable/t", QoS::AtLeastOnce).await;
    let p = sub.publish_rx().await;
    assert_eq!(p.payload, Bytes::from_static(b"survives"));
    assert!(p.retain);

    // Over HTTP, the same value at /resources/durable/t.
    let url = format!("http://{}/resources/durable/t", ponte.http);
    let resp = within(WAIT, "HTTP GET", reqwest::get(&url))
        .await
        .expect("HTTP GET answered");
    assert_eq!(resp.status(), 200, "GET {url}");
    let body = within(WAIT, "HTTP body", resp.bytes()).await.unwrap();
    assert_eq!(&body[..], b"survives");
}

#[test]
fn sigterm_stops_gracefully_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut ponte = spawn(&dir.path().join("db"));
    let term = Command::new("kill")
        .args(["-TERM", &ponte.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    let status = wait_exit(&mut ponte.child, Duration::from_secs(10));
    assert!(status.success(), "SIGTERM → exit 0, got {status:?}");
    // It went through the orderly shutdown path.
    // The reader thread sees EOF once the child is gone; collect what it still had.
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(line) = ponte
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l.contains("ponte stopped")),
        "no `ponte stopped` log line: {rest:?}"
    );
}

#[test]
fn port_in_use_exits_non_zero_naming_the_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = run(&[
        "--host",
        "127.0.0.1",
        "--memory",
        "-p",
        "0",
        "-a",
        "0",
        "-m",
        &port.to_string(),
    ]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
    assert!(
        lines[0].contains(&format!("cannot listen for MQTT on 127.0.0.1:{port}")),
        "{stderr:?}"
    );
    drop(taken);
}

#[test]
fn unknown_config_key_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ponte.toml");
    std::fs::write(&file, "[mqtt]\nport = 0\nmax_packet_sise = 10\n").unwrap();
    let out = run(&["-c", file.to_str().unwrap(), "--memory"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max_packet_sise"),
        "the key is named: {stderr:?}"
    );
    assert!(
        stderr.contains("ponte.toml"),
        "the file is named: {stderr:?}"
    );
}

#[test]
fn version_flag_prints_the_version() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("ponte {}", env!("CARGO_PKG_VERSION"))
    );
}

// ---------------------------------------------------------------------------------------
// Durable sessions (issue 3): persistent sessions survive SIGKILL and SIGTERM restarts.
// ---------------------------------------------------------------------------------------

/// One CoAP PUT of `payload` to `/r/{topic}` over raw UDP, answered 2.0x (when durable).
async fn coap_put(sock: &tokio::net::UdpSocket, mid: u16, topic: &str, payload: &[u8]) {
    use coap_lite::{MessageClass, MessageType, Packet as CoapPacket, RequestType};
    let mut p = CoapPacket::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Put);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    p.add_option(coap_lite::CoapOption::UriPath, b"r".to_vec());
    for seg in topic.split('/') {
        p.add_option(coap_lite::CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p.payload = payload.to_vec();
    sock.send(&p.to_bytes().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    loop {
        let n = within(WAIT, "CoAP PUT response", sock.recv(&mut buf))
            .await
            .unwrap();
        let r = CoapPacket::from_bytes(&buf[..n]).expect("CoAP packet");
        if r.header.get_type() == MessageType::Confirmable {
            let mut ack = CoapPacket::new();
            ack.header.set_type(MessageType::Acknowledgement);
            ack.header.message_id = r.header.message_id;
            sock.send(&ack.to_bytes().unwrap()).await.unwrap();
        }
        if r.get_token() == mid.to_be_bytes().as_slice() {
            if let MessageClass::Response(code) = r.header.code {
                let code = u8::from(MessageClass::Response(code));
                assert!((0x41..=0x44).contains(&code), "CoAP PUT answered {code:#x}");
                return;
            }
        }
    }
}

/// Connect the persistent subscriber (Clean Session 0, QoS 1 on `load/#`).
fn persistent_options(addr: SocketAddr) -> rumqttc::MqttOptions {
    let mut o = common::options(addr, "durable-subscriber");
    o.set_clean_session(false);
    o.set_inflight(100);
    o
}

/// Publish `n` QoS 1 messages `m{i}` on `load/mqtt` over MQTT, pipelined, and wait for
/// every PUBACK.
async fn mqtt_publish_many(addr: SocketAddr, n: usize) {
    let mut o = common::options(addr, "durable-publisher");
    o.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(o, 200);
    let sender = tokio::spawn(async move {
        for i in 0..n {
            client
                .publish(
                    "load/mqtt",
                    QoS::AtLeastOnce,
                    false,
                    format!("m{i}").into_bytes(),
                )
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    within(Duration::from_secs(20), "every PUBACK", async {
        while acked < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher connection error after {acked} PUBACKs: {e:?}"),
            }
        }
    })
    .await;
    drop(sender.await.unwrap());
}

/// The 1,000-message scenario: the persistent subscriber is away while 900 MQTT, 50 HTTP
/// and 50 CoAP QoS 1 writes are acknowledged; the broker is stopped with `signal`; after
/// the restart the subscriber gets every message, in order per publisher, exactly once.
async fn offline_session_survives(signal: &str) {
    const MQTT: usize = 900;
    const HTTP: usize = 50;
    const COAP: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut ponte = spawn(&db);

    // Subscribe with a persistent session, then go away.
    let (mut sub, ack) = Client::connect_with(persistent_options(ponte.mqtt)).await;
    assert!(!ack.session_present);
    sub.subscribe("load/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let http = async {
        let client = reqwest::Client::new();
        for i in 0..HTTP {
            let url = format!("http://{}/resources/load/http", ponte.http);
            let r = within(
                WAIT,
                "HTTP PUT",
                client.put(&url).body(format!("h{i}")).send(),
            )
            .await
            .unwrap();
            assert!(r.status().is_success(), "PUT answered {}", r.status());
        }
    };
    let coap = async {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(ponte.coap).await.unwrap();
        for i in 0..COAP {
            coap_put(
                &sock,
                1000 + i as u16,
                "load/coap",
                format!("c{i}").as_bytes(),
            )
            .await;
        }
    };
    tokio::join!(http, coap, mqtt_publish_many(ponte.mqtt, MQTT));

    // Every write above was acknowledged: stop now.
    let stop = Command::new("kill")
        .args([signal, &ponte.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(stop.success());
    wait_exit(&mut ponte.child, Duration::from_secs(10));
    drop(ponte);

    let ponte = spawn(&db);
    let (mut sub, ack) = Client::connect_with(persistent_options(ponte.mqtt)).await;
    assert!(
        ack.session_present,
        "the persistent session survived the restart"
    );
    let mut got: std::collections::HashMap<char, Vec<usize>> = Default::default();
    let total = MQTT + HTTP + COAP;
    within(Duration::from_secs(20), "all 1,000 messages", async {
        for _ in 0..total {
            let p = sub.publish_rx().await;
            let s = std::str::from_utf8(&p.payload).unwrap().to_string();
            let kind = s.chars().next().unwrap();
            got.entry(kind).or_default().push(s[1..].parse().unwrap());
        }
    })
    .await;
    assert_eq!(
        got[&'m'],
        (0..MQTT).collect::<Vec<_>>(),
        "MQTT messages in order"
    );
    assert_eq!(
        got[&'h'],
        (0..HTTP).collect::<Vec<_>>(),
        "HTTP writes in order"
    );
    assert_eq!(
        got[&'c'],
        (0..COAP).collect::<Vec<_>>(),
        "CoAP writes in order"
    );
    // Nothing more (no duplicates).
    let extra = tokio::time::timeout(Duration::from_millis(300), sub.publish_rx()).await;
    assert!(extra.is_err(), "no duplicate after the 1,000: {extra:?}");
}

#[tokio::test]
async fn mqtt_3_1_2_4_persistent_session_queue_survives_kill_9() {
    offline_session_survives("-KILL").await;
}

#[tokio::test]
async fn mqtt_3_1_2_4_persistent_session_queue_survives_restart() {
    offline_session_survives("-TERM").await;
}

/// MQTT-4.4.0-1 across a restart: QoS 1 messages sent but not acknowledged are re-sent
/// with DUP=1, in their original order, after the broker restarts.
#[tokio::test]
async fn mqtt_4_4_0_1_unacknowledged_resent_with_dup_after_restart() {
    use common::{connect_v311, subscribe_packet, Raw};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut ponte = spawn(&db);
    let mut raw = Raw::open(ponte.mqtt).await;
    raw.send(&connect_v311(false, 0, "no-acks")).await;
    assert_eq!(raw.read().await.expect("CONNACK").first, 0x20);
    raw.send(&subscribe_packet(1, &[("dup/t", 1)])).await;
    assert_eq!(raw.read().await.expect("SUBACK").kind(), 9);
    let (mut p, _) = Client::connect(ponte.mqtt, "dup-pub").await;
    for i in 0..3u8 {
        p.publish("dup/t", QoS::AtLeastOnce, false, &[b'a' + i])
            .await;
    }
    let mut first = Vec::new();
    for _ in 0..3 {
        let pkt = raw.read().await.expect("PUBLISH");
        assert_eq!(pkt.kind(), 3);
        assert_eq!(pkt.first & 0x08, 0, "first send has DUP=0");
        first.push(pkt.body);
    }
    // No PUBACK: leave, so the session saves them as in flight, then restart.
    drop(raw);
    std::thread::sleep(Duration::from_millis(300));
    let term = Command::new("kill")
        .args(["-TERM", &ponte.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    wait_exit(&mut ponte.child, Duration::from_secs(10));
    drop(ponte);

    let ponte = spawn(&db);
    let mut raw = Raw::open(ponte.mqtt).await;
    raw.send(&connect_v311(false, 0, "no-acks")).await;
    let ack = raw.read().await.expect("CONNACK");
    assert_eq!(ack.body, vec![1, 0], "session present");
    for body in first {
        let pkt = raw.read().await.expect("re-sent PUBLISH");
        assert_eq!(pkt.kind(), 3);
        assert_eq!(pkt.first & 0x08, 0x08, "re-sent with DUP=1");
        assert_eq!(
            pkt.body, body,
            "same packet id, topic and payload, same order"
        );
    }
}

/// MQTT-4.3.3 across a restart: an inbound QoS 2 packet id acknowledged with PUBREC (and
/// not yet released) is remembered, so the client's DUP re-send after the restart is not
/// delivered a second time.
#[tokio::test]
async fn mqtt_4_3_3_inbound_qos2_id_kept_across_restart() {
    use common::{connect_v311, publish_packet, Raw};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut ponte = spawn(&db);
    let mut raw = Raw::open(ponte.mqtt).await;
    raw.send(&connect_v311(false, 0, "qos2-pub")).await;
    assert_eq!(raw.read().await.expect("CONNACK").first, 0x20);
    raw.send(&publish_packet("q2/t", b"once", 2, 5, false, false))
        .await;
    let rec = raw.read().await.expect("PUBREC");
    assert_eq!((rec.first, rec.body.as_slice()), (0x50, &[0u8, 5][..]));
    // Leave without PUBREL; restart.
    drop(raw);
    std::thread::sleep(Duration::from_millis(300));
    let term = Command::new("kill")
        .args(["-TERM", &ponte.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    wait_exit(&mut ponte.child, Duration::from_secs(10));
    drop(ponte);

    let ponte = spawn(&db);
    let (mut sub, _) = Client::connect(ponte.mqtt, "qos2-sub").await;
    sub.subscribe("q2/t", QoS::ExactlyOnce).await;
    let mut raw = Raw::open(ponte.mqtt).await;
    raw.send(&connect_v311(false, 0, "qos2-pub")).await;
    assert_eq!(raw.read().await.expect("CONNACK").body, vec![1, 0]);
    // The DUP re-send: answered PUBREC again, but not delivered again.
    raw.send(&publish_packet("q2/t", b"once", 2, 5, false, true))
        .await;
    let rec = raw.read().await.expect("PUBREC");
    assert_eq!((rec.first, rec.body.as_slice()), (0x50, &[0u8, 5][..]));
    raw.send(&[0x62, 2, 0, 5]).await;
    let comp = raw.read().await.expect("PUBCOMP");
    assert_eq!(comp.first, 0x70);
    let got = tokio::time::timeout(Duration::from_millis(500), sub.publish_rx()).await;
    assert!(
        got.is_err(),
        "a remembered QoS 2 id is not delivered twice: {got:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Durable sessions while connected (issue 3): `kill -9` in the middle of a connection.
// ---------------------------------------------------------------------------------------

/// SIGKILL the broker and wait until it is gone.
fn kill_9(mut ponte: Ponte) {
    let kill = Command::new("kill")
        .args(["-KILL", &ponte.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    wait_exit(&mut ponte.child, Duration::from_secs(10));
}

/// SIGKILL the broker while `old` is still connected (dropped only after the kill, so the
/// broker never sees it close), start it again on the same database, and resume `client`'s
/// persistent MQTT 3.1.1 session on a new connection: CONNACK must say session present.
async fn kill_9_and_resume(
    ponte: Ponte,
    old: common::Raw,
    db: &Path,
    client: &str,
) -> (Ponte, common::Raw) {
    kill_9(ponte);
    drop(old);
    let ponte = spawn(db);
    let mut raw = common::Raw::open(ponte.mqtt).await;
    raw.send(&common::connect_v311(false, 0, client)).await;
    assert_eq!(
        raw.read().await.expect("CONNACK").body,
        vec![1, 0],
        "{client}: session present after the restart"
    );
    (ponte, raw)
}

/// The packet id of a raw 3.1.1 QoS 1/2 PUBLISH (after the topic).
fn publish_pkid(p: &common::RawPacket) -> u16 {
    let n = usize::from(u16::from_be_bytes([p.body[0], p.body[1]]));
    u16::from_be_bytes([p.body[2 + n], p.body[3 + n]])
}

/// The payload of a raw 3.1.1 QoS 1/2 PUBLISH.
fn publish_payload(p: &common::RawPacket) -> &[u8] {
    let n = usize::from(u16::from_be_bytes([p.body[0], p.body[1]]));
    &p.body[4 + n..]
}

/// MQTT 4.3.3 (method B) across `kill -9`: the broker answered PUBREC, so the inbound
/// QoS 2 id is on disk; the client's DUP re-send and PUBREL after the restart are not
/// delivered again, and the (away, persistent) subscriber gets exactly one copy.
#[tokio::test]
async fn mqtt_4_3_3_qos2_publish_between_pubrec_and_pubrel_delivered_once_across_kill_9() {
    use common::{connect_v311, publish_packet, Raw};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let ponte = spawn(&db);
    let persistent = |addr| {
        let mut o = common::options(addr, "once-sub");
        o.set_clean_session(false);
        o
    };
    let (mut sub, _) = Client::connect_with(persistent(ponte.mqtt)).await;
    sub.subscribe("once/t", QoS::ExactlyOnce).await;
    sub.disconnect().await;

    let mut publisher = Raw::open(ponte.mqtt).await;
    publisher.send(&connect_v311(false, 0, "once-pub")).await;
    assert_eq!(publisher.read().await.expect("CONNACK").body, vec![0, 0]);
    publisher
        .send(&publish_packet(
            "once/t",
            b"exactly once",
            2,
            7,
            false,
            false,
        ))
        .await;
    let rec = publisher.read().await.expect("PUBREC");
    assert_eq!((rec.first, rec.body.as_slice()), (0x50, &[0u8, 7][..]));
    // Crash while the exchange is between PUBREC and PUBREL, the client still connected.
    let (ponte, mut publisher) = kill_9_and_resume(ponte, publisher, &db, "once-pub").await;
    // The client does not know whether PUBREC was durable: it re-sends (MQTT-4.4.0-1).
    publisher
        .send(&publish_packet(
            "once/t",
            b"exactly once",
            2,
            7,
            false,
            true,
        ))
        .await;
    let rec = publisher.read().await.expect("PUBREC for the re-send");
    assert_eq!((rec.first, rec.body.as_slice()), (0x50, &[0u8, 7][..]));
    publisher.send(&[0x62, 2, 0, 7]).await;
    let comp = publisher.read().await.expect("PUBCOMP");
    assert_eq!((comp.first, comp.body.as_slice()), (0x70, &[0u8, 7][..]));

    let (mut sub, ack) = Client::connect_with(persistent(ponte.mqtt)).await;
    assert!(ack.session_present);
    let first = sub.publish_rx().await;
    assert_eq!(&first.payload[..], b"exactly once");
    let second = tokio::time::timeout(Duration::from_millis(500), sub.publish_rx()).await;
    assert!(second.is_err(), "delivered twice: {second:?}");
}

/// MQTT-4.4.0-1 and MQTT-3.3.1-1 across `kill -9` in the middle of a connection: the
/// QoS 1/2 PUBLISHes the subscriber never acknowledged come back with DUP=1 under their
/// packet ids, and for the QoS 2 one it answered with PUBREC only the PUBREL comes back —
/// all in the original order.
#[tokio::test]
async fn mqtt_4_4_0_1_unacknowledged_publishes_and_pubrels_resent_in_order_after_kill_9() {
    use common::{connect_v311, subscribe_packet, Raw};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let ponte = spawn(&db);
    let mut raw = Raw::open(ponte.mqtt).await;
    raw.send(&connect_v311(false, 0, "inflight")).await;
    assert_eq!(raw.read().await.expect("CONNACK").body, vec![0, 0]);
    raw.send(&subscribe_packet(1, &[("if/q1", 1), ("if/q2", 2)]))
        .await;
    assert_eq!(raw.read().await.expect("SUBACK").body, vec![0, 1, 1, 2]);
    let (mut p, _) = Client::connect(ponte.mqtt, "inflight-pub").await;
    let sends = [
        ("if/q1", QoS::AtLeastOnce, "a"),
        ("if/q2", QoS::ExactlyOnce, "b"),
        ("if/q1", QoS::AtLeastOnce, "c"),
        ("if/q2", QoS::ExactlyOnce, "d"),
    ];
    for (topic, qos, payload) in sends {
        p.publish(topic, qos, false, payload.as_bytes()).await;
    }
    let mut first = Vec::new();
    for (_, _, payload) in sends {
        let pkt = raw.read().await.expect("PUBLISH");
        assert_eq!(pkt.kind(), 3);
        assert_eq!(pkt.first & 0x08, 0, "first send has DUP=0");
        assert_eq!(publish_payload(&pkt), payload.as_bytes());
        first.push(pkt);
    }
    // PUBREC for "b" only: the broker answers PUBREL; no PUBCOMP, no PUBACK.
    let b = publish_pkid(&first[1]);
    raw.send(&[0x50, 2, (b >> 8) as u8, b as u8]).await;
    let rel = raw.read().await.expect("PUBREL");
    assert_eq!(
        (rel.first, rel.body.clone()),
        (0x62, b.to_be_bytes().to_vec())
    );
    // QoS 1 progress is written without being awaited: give that batch a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_ponte, mut raw) = kill_9_and_resume(ponte, raw, &db, "inflight").await;
    for (i, sent) in first.iter().enumerate() {
        let pkt = raw.read().await.expect("re-sent packet");
        if i == 1 {
            assert_eq!(
                (pkt.first, pkt.body.clone()),
                (0x62, b.to_be_bytes().to_vec()),
                "past PUBREC only the PUBREL is re-sent, in its place"
            );
            continue;
        }
        assert_eq!(
            pkt.first,
            sent.first | 0x08,
            "re-sent with DUP=1 (MQTT-3.3.1-1)"
        );
        assert_eq!(
            pkt.body, sent.body,
            "same packet id, topic and payload, same order"
        );
    }
    let more = tokio::time::timeout(Duration::from_millis(300), raw.read()).await;
    assert!(more.is_err(), "nothing else re-sent: {more:?}");
}

/// MQTT-4.4.0-1 across `kill -9` for a retained message sent at SUBSCRIBE time: the
/// persistent session's QoS 1 subscription got the retained value, the client never
/// acknowledged it, and after the crash the resumed session re-sends it with DUP=1 under
/// the same packet id (the retained delivery is on disk like any other queued message).
#[tokio::test]
async fn mqtt_4_4_0_1_unacknowledged_retained_publish_from_subscribe_resent_after_kill_9() {
    use common::{connect_v311, subscribe_packet, Raw};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let ponte = spawn(&db);
    let (mut p, _) = Client::connect(ponte.mqtt, "ret-pub").await;
    p.publish("ret/t", QoS::AtLeastOnce, true, b"kept").await;

    let mut raw = Raw::open(ponte.mqtt).await;
    raw.send(&connect_v311(false, 0, "ret-sub")).await;
    assert_eq!(raw.read().await.expect("CONNACK").body, vec![0, 0]);
    raw.send(&subscribe_packet(1, &[("ret/#", 1)])).await;
    assert_eq!(raw.read().await.expect("SUBACK").body, vec![0, 1, 1]);
    let sent = raw.read().await.expect("the retained PUBLISH");
    assert_eq!(sent.kind(), 3);
    assert_eq!(sent.first & 0x0F, 0x03, "QoS 1, RETAIN=1, DUP=0");
    assert_eq!(publish_payload(&sent), b"kept");
    // No PUBACK. QoS 1 progress is written without being awaited: give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ponte, mut raw) = kill_9_and_resume(ponte, raw, &db, "ret-sub").await;
    let again = raw.read().await.expect("the re-sent retained PUBLISH");
    assert_eq!(again.first, sent.first | 0x08, "re-sent with DUP=1");
    assert_eq!(again.body, sent.body, "same packet id, topic and payload");
    let pkid = publish_pkid(&again);
    raw.send(&[0x40, 2, (pkid >> 8) as u8, pkid as u8]).await;
    let more = tokio::time::timeout(Duration::from_millis(300), raw.read()).await;
    assert!(more.is_err(), "nothing else re-sent: {more:?}");

    // Acknowledged now: its disk copy is gone, so a second crash does not bring it back.
    let (_ponte, mut raw) = kill_9_and_resume(ponte, raw, &db, "ret-sub").await;
    let more = tokio::time::timeout(Duration::from_millis(300), raw.read()).await;
    assert!(more.is_err(), "an acknowledged message came back: {more:?}");
}

/// A raw MQTT 5 client over ponte-mqtt's v5 codec.
struct V5 {
    /// The socket.
    s: tokio::net::TcpStream,
    /// Received bytes not yet decoded.
    buf: bytes::BytesMut,
}

impl V5 {
    /// Connect with Clean Start `clean` and Session Expiry `expiry`; returns the client and
    /// CONNACK's Session Present.
    async fn connect(addr: SocketAddr, id: &str, clean: bool, expiry: u32) -> (V5, bool) {
        use ponte_mqtt::{Connect, Connect5, Packet5, Properties, ProtocolVersion};
        let s = within(WAIT, "TCP connect", tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect");
        let mut c = V5 {
            s,
            buf: bytes::BytesMut::new(),
        };
        c.send(&Packet5::Connect(Box::new(Connect5 {
            connect: Connect {
                protocol: ProtocolVersion::V5,
                client_id: id.into(),
                clean_session: clean,
                keep_alive: 30,
                username: None,
                password: None,
                will: None,
            },
            properties: Properties {
                session_expiry_interval: Some(expiry),
                ..Properties::default()
            },
            will_properties: Properties::default(),
        })))
        .await;
        match c.recv().await {
            Some(Packet5::ConnAck {
                session_present,
                reason_code: 0,
                ..
            }) => (c, session_present),
            other => panic!("expected CONNACK 0, got {other:?}"),
        }
    }

    async fn send(&mut self, p: &ponte_mqtt::Packet5) {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        ponte_mqtt::encode_v5(p, &mut out);
        within(WAIT, "write", self.s.write_all(&out))
            .await
            .expect("write");
    }

    async fn recv(&mut self) -> Option<ponte_mqtt::Packet5> {
        common::read_v5(&mut self.s, &mut self.buf).await
    }

    /// The next packet that is not a PINGRESP.
    async fn next(&mut self) -> ponte_mqtt::Packet5 {
        self.recv().await.expect("a packet, not a close")
    }

    async fn subscribe(&mut self, filter: &str) {
        use ponte_mqtt::{Packet5, Properties, Subscribe5, SubscriptionOptions};
        self.send(&Packet5::Subscribe(Subscribe5 {
            pkid: 1,
            filters: vec![(
                filter.to_string(),
                SubscriptionOptions::qos(ponte_mqtt::QoS::AtLeastOnce),
            )],
            properties: Properties::default(),
        }))
        .await;
        match self.next().await {
            Packet5::SubAck(a) => assert_eq!(a.reason_codes, vec![1]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn disconnect(mut self) {
        use ponte_mqtt::{Packet5, Properties, ReasonPacket};
        self.send(&Packet5::Disconnect(ReasonPacket {
            reason_code: 0,
            properties: Properties::default(),
        }))
        .await;
        // The server closes after DISCONNECT.
        assert!(self.recv().await.is_none(), "closed after DISCONNECT");
    }
}

/// MQTT 5 §3.3.2.3 across `kill -9`: a message queued for an away session keeps its
/// Payload Format Indicator, Content Type, Response Topic, Correlation Data and User
/// Properties (in order), and is sent with what remains of its Message Expiry Interval
/// (MQTT-3.3.2-6); one that expired while the broker was down is not sent (MQTT-3.3.2-5).
#[tokio::test]
async fn mqtt5_3_3_2_properties_and_remaining_expiry_of_queued_messages_survive_kill_9() {
    use ponte_mqtt::{Packet5, Properties, PubResponse, Publish, Publish5};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let ponte = spawn(&db);
    let (mut sub, present) = V5::connect(ponte.mqtt, "props-sub", true, 600).await;
    assert!(!present);
    sub.subscribe("props/#").await;
    sub.disconnect().await;

    let props = Properties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            ("k1".into(), "v1".into()),
            ("k2".into(), "v2".into()),
            ("k1".into(), "v3".into()),
        ],
        ..Properties::default()
    };
    let (mut publisher, _) = V5::connect(ponte.mqtt, "props-pub", true, 0).await;
    for (pkid, topic, expiry, payload) in [
        (1u16, "props/short", 1u32, &b"gone"[..]),
        (2, "props/long", 600, &b"{\"x\":1}"[..]),
    ] {
        publisher
            .send(&Packet5::Publish(Box::new(Publish5 {
                publish: Publish {
                    dup: false,
                    qos: ponte_mqtt::QoS::AtLeastOnce,
                    retain: false,
                    topic: topic.into(),
                    pkid,
                    payload: Bytes::copy_from_slice(payload),
                },
                properties: Properties {
                    message_expiry_interval: Some(expiry),
                    ..props.clone()
                },
            })))
            .await;
        match publisher.next().await {
            Packet5::PubAck(PubResponse { reason_code: 0, .. }) => {}
            other => panic!("expected PUBACK 0, got {other:?}"),
        }
    }
    let published = Instant::now();
    kill_9(ponte);
    drop(publisher);
    // Down for longer than the short message's 1 s expiry.
    std::thread::sleep(Duration::from_millis(1500));

    let ponte = spawn(&db);
    let (mut sub, present) = V5::connect(ponte.mqtt, "props-sub", false, 600).await;
    assert!(present, "the session survived");
    let p = match sub.next().await {
        Packet5::Publish(p) => p,
        other => panic!("expected the queued PUBLISH, got {other:?}"),
    };
    assert_eq!(
        p.publish.topic, "props/long",
        "the expired message is not sent"
    );
    assert_eq!(&p.publish.payload[..], b"{\"x\":1}");
    let got = &p.properties;
    assert_eq!(got.payload_format_indicator, props.payload_format_indicator);
    assert_eq!(got.content_type, props.content_type);
    assert_eq!(got.response_topic, props.response_topic);
    assert_eq!(got.correlation_data, props.correlation_data);
    assert_eq!(got.user_properties, props.user_properties, "in order");
    let left = got
        .message_expiry_interval
        .expect("Message Expiry Interval");
    // At least 1.5 s passed (rounded up, the full 600 would be a restarted interval).
    let elapsed = published.elapsed().as_secs() as u32;
    assert!(
        left < 600 && left >= 600 - elapsed - 2,
        "remaining interval {left} s after {elapsed} s"
    );
    sub.send(&Packet5::PubAck(PubResponse {
        pkid: p.publish.pkid,
        reason_code: 0,
        properties: Properties::default(),
    }))
    .await;
    let more = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
    assert!(more.is_err(), "nothing else: {more:?}");
}

/// `overflow = "drop-oldest"` on a persistent session: a displaced message is deleted from
/// disk too, so it does not come back after a `kill -9` even when the restarted broker's
/// queue has room for it.
#[tokio::test]
async fn drop_oldest_displaced_message_does_not_come_back_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let small = dir.path().join("small.toml");
    std::fs::write(
        &small,
        "[mqtt]\nmax_queued = 2\noverflow = \"drop-oldest\"\n",
    )
    .unwrap();
    let ponte = spawn_with(&db, &["-c".as_ref(), small.as_os_str()]);
    let persistent = |addr| {
        let mut o = common::options(addr, "oldest-sub");
        o.set_clean_session(false);
        o
    };
    let (mut sub, _) = Client::connect_with(persistent(ponte.mqtt)).await;
    sub.subscribe("oldest/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let (mut p, _) = Client::connect(ponte.mqtt, "oldest-pub").await;
    for i in 0..5 {
        p.publish(
            "oldest/t",
            QoS::AtLeastOnce,
            false,
            format!("m{i}").as_bytes(),
        )
        .await;
    }
    // The displaced entries' deletions are not awaited: give that batch a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill_9(ponte);

    // Restart with room for all five: only the two kept ones come back.
    let ponte = spawn(&db);
    let (mut sub, ack) = Client::connect_with(persistent(ponte.mqtt)).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(String::from_utf8(sub.publish_rx().await.payload.to_vec()).unwrap());
    }
    assert_eq!(got, ["m3", "m4"]);
    let more = tokio::time::timeout(Duration::from_millis(500), sub.publish_rx()).await;
    assert!(more.is_err(), "a displaced message came back: {more:?}");
}

/// MQTT 5 §3.1.2.11.2 across a restart: the Session Expiry Interval counts from when the
/// client went away, not from when the broker restarted; a session that expired while the
/// broker was down is gone at start (MQTT-3.1.2-23), one that has time left is not.
#[tokio::test]
async fn mqtt5_3_1_2_11_session_expiry_counts_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let ponte = spawn(&db);
    let (mut short, _) = V5::connect(ponte.mqtt, "exp-short", true, 2).await;
    short.subscribe("exp/t").await;
    short.disconnect().await;
    let (mut long, _) = V5::connect(ponte.mqtt, "exp-long", true, 600).await;
    long.subscribe("exp/t").await;
    long.disconnect().await;
    kill_9(ponte);
    std::thread::sleep(Duration::from_millis(2500));

    let ponte = spawn(&db);
    let (_short, present) = V5::connect(ponte.mqtt, "exp-short", false, 2).await;
    assert!(!present, "expired while the broker was down");
    let (_long, present) = V5::connect(ponte.mqtt, "exp-long", false, 600).await;
    assert!(present, "600 s have not passed");
}

/// MQTT 5 §3.1.2.11.2 for a client still connected at `kill -9`: its network connection
/// closed with the crash, so its Session Expiry counts from then — which the restarted
/// broker takes from the last "alive" mark the crashed one wrote (at most a few seconds
/// early) — not from the restart. A 3 s session is gone after 3.5 s down (Session Present
/// 0, its subscription gone); a 600 s one is still there with its subscription.
#[tokio::test]
async fn mqtt5_3_1_2_11_expiry_of_a_session_connected_at_kill_9_counts_from_the_crash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let ponte = spawn(&db);
    let (mut short, _) = V5::connect(ponte.mqtt, "crash-short", true, 3).await;
    short.subscribe("crash/t").await;
    let (mut long, _) = V5::connect(ponte.mqtt, "crash-long", true, 600).await;
    long.subscribe("crash/t").await;
    // Session records are written without being awaited: give that batch a moment. Both
    // clients are still connected when the broker dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill_9(ponte);
    drop((short, long));
    std::thread::sleep(Duration::from_millis(3500));

    let ponte = spawn(&db);
    let (mut short, present) = V5::connect(ponte.mqtt, "crash-short", false, 3).await;
    assert!(
        !present,
        "3 s passed since the crash: expired, not counted from the restart"
    );
    let (mut long, present) = V5::connect(ponte.mqtt, "crash-long", false, 600).await;
    assert!(present, "600 s have not passed");
    let (mut p, _) = Client::connect(ponte.mqtt, "crash-pub").await;
    p.publish("crash/t", QoS::AtLeastOnce, false, b"after")
        .await;
    match long.next().await {
        ponte_mqtt::Packet5::Publish(p) => assert_eq!(&p.publish.payload[..], b"after"),
        other => panic!("expected the PUBLISH on the kept subscription, got {other:?}"),
    }
    let none = tokio::time::timeout(Duration::from_millis(300), short.recv()).await;
    assert!(
        none.is_err(),
        "the expired session's subscription is gone: {none:?}"
    );
}

/// Issue 5: SIGHUP re-reads the password and ACL files while connections stay up; a bad
/// file keeps the old rules; `ponte passwd` writes files the running gateway accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_5_sighup_reloads_password_and_acl_files_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let acl = dir.path().join("acl");
    let pw = |user: &str, password: &str| {
        let out = run(&[
            "passwd",
            passwd.to_str().unwrap(),
            user,
            "--password",
            password,
        ]);
        assert!(out.status.success(), "ponte passwd {user}: {out:?}");
    };
    pw("alice", "alice-pw");
    std::fs::write(&acl, "user alice\ntopic readwrite a/#\n").unwrap();
    let ponte = spawn_with(
        &dir.path().join("db"),
        &[
            "--password-file".as_ref(),
            passwd.as_os_str(),
            "--acl-file".as_ref(),
            acl.as_os_str(),
        ],
    );
    let http = reqwest::Client::new();
    let put = |user: &'static str, password: &'static str, topic: &'static str| {
        let http = http.clone();
        let url = format!("http://{}/resources/{topic}", ponte.http);
        async move {
            http.put(url)
                .basic_auth(user, Some(password))
                .body("v")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(put("alice", "alice-pw", "a/1").await, 201);
    assert_eq!(put("alice", "alice-pw", "b/1").await, 403);
    assert_eq!(
        put("bob", "bob-pw", "b/1").await,
        401,
        "bob does not exist yet"
    );

    // An MQTT connection open across the reload.
    let mut opts = rumqttc::MqttOptions::new("alice-1", "127.0.0.1", ponte.mqtt.port());
    opts.set_credentials("alice", "alice-pw");
    let (client, mut events) = AsyncClient::new(opts, 16);
    async fn wait_for(events: &mut rumqttc::EventLoop, pred: fn(&Event) -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.poll().await {
                    Ok(e) if pred(&e) => return,
                    Ok(_) => {}
                    Err(e) => panic!("MQTT connection failed: {e}"),
                }
            }
        })
        .await
        .expect("MQTT event in time")
    }
    wait_for(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await;

    pw("bob", "bob-pw");
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite a/#\nuser bob\ntopic readwrite b/#\n",
    )
    .unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &ponte.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while put("bob", "bob-pw", "b/1").await != 201 {
        assert!(Instant::now() < deadline, "bob never got in after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // alice's connection survived the reload and still works.
    client
        .publish("a/over-mqtt", QoS::AtLeastOnce, true, "m")
        .await
        .unwrap();
    wait_for(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_)))
    })
    .await;
    let got = http
        .get(format!("http://{}/resources/a/over-mqtt", ponte.http))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);

    // A broken ACL on the next SIGHUP keeps the rules in force.
    std::fs::write(&acl, "nonsense line\n").unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &ponte.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(put("bob", "bob-pw", "b/2").await, 201);
    assert_eq!(put("bob", "bob-pw", "a/2").await, 403);
}

/// Issue 5: a bad auth file is a configuration error found at start (exit 2, naming the
/// file's line), before any port opens.
#[test]
fn issue_5_bad_acl_file_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user alice\ntopic read a/#/b\n").unwrap();
    let out = run(&[
        "--memory",
        "--host",
        "127.0.0.1",
        "-p",
        "0",
        "-a",
        "0",
        "-m",
        "0",
        "--acl-file",
        acl.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("a/#/b"), "{err}");
}

/// MQTT-3.2.2-2 / MQTT-3.9.3 with kill -9: once CONNACK and SUBACK have gone out for a
/// persistent session, the session and its subscription are on disk. The broker is killed
/// the moment the SUBACK arrives; after the restart the session is present and a message
/// published while the client is away (over HTTP) is queued for it and delivered.
#[tokio::test]
async fn mqtt_3_2_2_2_acknowledged_session_and_subscription_survive_an_immediate_kill_9() {
    use common::{connect_v311, subscribe_packet, Raw};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    for round in 0..3 {
        let ponte = spawn(&db);
        let id = format!("quick-{round}");
        let mut raw = Raw::open(ponte.mqtt).await;
        raw.send(&connect_v311(false, 0, &id)).await;
        assert_eq!(raw.read().await.expect("CONNACK").body, vec![0, 0]);
        let topic = format!("quick/{round}");
        raw.send(&subscribe_packet(1, &[(topic.as_str(), 1)])).await;
        assert_eq!(raw.read().await.expect("SUBACK").body, vec![0, 1, 1]);
        kill_9(ponte);
        drop(raw);

        let ponte = spawn(&db);
        let put = reqwest::Client::new()
            .put(format!("http://{}/resources/{topic}", ponte.http))
            .body(format!("while away {round}"))
            .send()
            .await
            .expect("HTTP PUT");
        assert!(put.status().is_success());
        let mut raw = Raw::open(ponte.mqtt).await;
        raw.send(&connect_v311(false, 0, &id)).await;
        assert_eq!(
            raw.read().await.expect("CONNACK").body,
            vec![1, 0],
            "round {round}: the session acknowledged before the kill is present"
        );
        let p = raw.read().await.expect("the queued PUBLISH");
        assert_eq!(p.kind(), 3, "round {round}: a PUBLISH");
        assert!(
            p.body.ends_with(format!("while away {round}").as_bytes()),
            "round {round}: the message published while away"
        );
        drop(raw);
        kill_9(ponte);
    }
}
