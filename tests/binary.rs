#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Tests of the real `ponte` binary run as a child process: durability across `kill -9`,
//! graceful SIGTERM, start-up errors, `--version`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use rumqttc::{AsyncClient, Event, Packet, QoS};

/// A temporary directory and the database path inside it.
fn db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    (dir, db)
}

/// A broker on a fresh database: the directory (removed when dropped), the database path
/// and the running binary.
fn fresh() -> (tempfile::TempDir, std::path::PathBuf, Ponte) {
    let (dir, db) = db();
    let ponte = Ponte::spawn(&db);
    (dir, db, ponte)
}

/// Stop `ponte` with `sig` and start it again on the same database.
fn restart(ponte: Ponte, sig: &str, db: &Path) -> Ponte {
    ponte.stop(sig);
    Ponte::spawn(db)
}

/// A short wait for something that must not arrive.
const BRIEF: Duration = Duration::from_millis(300);
/// A longer one.
const HALF: Duration = Duration::from_millis(500);

/// Run the binary to completion with `args` (10 s at most).
fn run(args: &[&str]) -> std::process::Output {
    run_ponte(args, Duration::from_secs(10))
}

#[tokio::test]
async fn retained_qos1_publish_acknowledged_survives_kill_9() {
    let (_dir, db) = db();
    let mut ponte = Ponte::spawn(&db);
    let (client, mut eventloop) = AsyncClient::new(options(ponte.mqtt, "durable-pub"), 16);
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

    let ponte = Ponte::spawn(&db);
    // Over MQTT: the retained value is sent on subscribe.
    let mut sub = Client::subscriber(ponte.mqtt, "durable-sub", "durable/t").await;
    let p = sub.publish_rx().await;
    assert_eq!(p.payload, Bytes::from_static(b"survives"));
    assert!(p.retain);

    // Over HTTP, the same value at /resources/durable/t.
    let resp = http_get(&ponte.http, "durable/t").await;
    assert_eq!(resp.status(), 200, "GET {}", url(&ponte.http, "durable/t"));
    let body = within(WAIT, "HTTP body", resp.bytes()).await.unwrap();
    assert_eq!(&body[..], b"survives");
}

/// Acknowledged retained writes survive `kill -9` whether they were already checkpointed
/// from the write-ahead log into sled or were only in the log: a first round of writes,
/// a pause past the checkpoint interval, a second round of overwrites, deletes and new
/// things (log only), then SIGKILL. The restart serves the latest of each.
#[tokio::test]
async fn retained_writes_survive_kill_9_before_and_after_a_checkpoint() {
    let (_dir, db) = db();
    let mut ponte = Ponte::spawn(&db);
    for i in 0..50 {
        let r = http_put(&ponte.http, &format!("wal/{i}"), "v1", "text/plain").await;
        assert!(r.status().is_success(), "PUT wal/{i}: {}", r.status());
    }
    // ponte::store::sled::CHECKPOINT_EVERY is 1 s: the next write checkpoints the first round.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for i in 0..25 {
        let r = http_put(&ponte.http, &format!("wal/{i}"), "v2", "text/plain").await;
        assert!(r.status().is_success());
    }
    for i in 25..30 {
        assert_eq!(
            http_delete(&ponte.http, &format!("wal/{i}")).await.status(),
            204
        );
    }
    let r = http_put(&ponte.http, "wal/new", "v3", "application/json").await;
    assert_eq!(r.status(), 201);
    ponte.child.kill().unwrap();
    let status = wait_exit(&mut ponte.child, Duration::from_secs(5));
    assert!(!status.success(), "killed, not exited: {status:?}");
    drop(ponte);

    let ponte = Ponte::spawn(&db);
    for i in 0..50 {
        let r = http_get(&ponte.http, &format!("wal/{i}")).await;
        match i {
            0..25 => assert_eq!(r.text().await.unwrap(), "v2", "wal/{i}"),
            25..30 => assert_eq!(r.status(), 404, "wal/{i} was deleted"),
            _ => assert_eq!(r.text().await.unwrap(), "v1", "wal/{i}"),
        }
    }
    let r = http_get(&ponte.http, "wal/new").await;
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(r.text().await.unwrap(), "v3");
}

/// The count of `ponte_store_sync_seconds` in the broker's `/metrics`.
async fn periodic_syncs(ponte: &Ponte) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", ponte.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ponte_store_sync_seconds_count "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ponte_store_sync_seconds_count in /metrics"))
}

/// `[store] sync = "periodic"`: retained writes are acknowledged once the operating system
/// has them, so they still survive `kill -9` (here before their sync was due), and the
/// writer syncs the log within `sync_interval_ms` of a write on its own, idle or not.
/// With the default (`always`) no periodic sync happens: each commit is synced.
#[tokio::test]
async fn store_sync_periodic_keeps_acknowledged_writes_across_kill_9_and_syncs_on_time() {
    let (_dir, db) = db();
    let always = Ponte::spawn(&db);
    let r = http_put(&always.http, "periodic/before", "always", "text/plain").await;
    assert_eq!(r.status(), 201);
    tokio::time::sleep(BRIEF).await;
    assert_eq!(
        periodic_syncs(&always).await,
        0.0,
        "sync = always syncs each commit"
    );
    always.stop("-TERM");

    let config = test_file(
        "periodic.toml",
        "[store]\nsync = \"periodic\"\nsync_interval_ms = 200\n",
    );
    let start = || {
        Ponte::start(&[
            "-d".as_ref(),
            db.as_os_str(),
            "-c".as_ref(),
            config.as_os_str(),
        ])
    };
    let mut ponte = start();
    let r = http_put(&ponte.http, "periodic/first", "1", "text/plain").await;
    assert_eq!(r.status(), 201);
    // Nothing else comes: the writer syncs on its own once the interval has passed.
    within(WAIT, "a periodic sync after an idle write", async {
        while periodic_syncs(&ponte).await < 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for i in 0..50 {
        let r = http_put(&ponte.http, &format!("periodic/{i}"), "v", "text/plain").await;
        assert!(r.status().is_success(), "PUT periodic/{i}: {}", r.status());
    }
    // Acknowledged, not yet synced (the interval has not passed): SIGKILL now.
    ponte.child.kill().unwrap();
    let status = wait_exit(&mut ponte.child, Duration::from_secs(5));
    assert!(!status.success(), "killed, not exited: {status:?}");
    drop(ponte);

    let ponte = start();
    let r = http_get(&ponte.http, "periodic/before").await;
    assert_eq!(r.text().await.unwrap(), "always");
    let r = http_get(&ponte.http, "periodic/first").await;
    assert_eq!(r.text().await.unwrap(), "1");
    for i in 0..50 {
        let r = http_get(&ponte.http, &format!("periodic/{i}")).await;
        assert_eq!(r.status(), 200, "periodic/{i} was acknowledged");
    }
}

#[test]
fn sigterm_stops_gracefully_with_exit_0() {
    let (_dir, db) = db();
    let mut ponte = Ponte::spawn(&db);
    ponte.signal("-TERM");
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
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run(&[
        "--host",
        "127.0.0.1",
        "--memory",
        "-p",
        "0",
        "-a",
        "0",
        "-m",
        &port,
    ]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
    let says = format!("cannot listen for MQTT on 127.0.0.1:{port}");
    assert!(lines[0].contains(&says), "{stderr:?}");
    drop(taken);
}

#[test]
fn unknown_config_key_exits_non_zero_naming_the_key() {
    let file = test_file("ponte.toml", "[mqtt]\nport = 0\nmax_packet_sise = 10\n");
    let out = run(&["-c", file.to_str().unwrap(), "--memory"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let key = stderr.contains("max_packet_sise");
    assert!(key, "the key is named: {stderr:?}");
    let file = stderr.contains("ponte.toml");
    assert!(file, "the file is named: {stderr:?}");
}

#[test]
fn version_flag_prints_the_version() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("ponte {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(stdout.trim(), want);
}

// ---------------------------------------------------------------------------------------
// Durable sessions (issue 3): persistent sessions survive SIGKILL and SIGTERM restarts.
// ---------------------------------------------------------------------------------------

/// Connect the persistent subscriber (Clean Session 0, room for 100 in flight).
fn persistent_options(addr: SocketAddr) -> rumqttc::MqttOptions {
    let mut o = persistent(addr, "durable-subscriber");
    o.set_inflight(100);
    o
}

/// Publish `n` QoS 1 messages `m{i}` on `load/mqtt` over MQTT, pipelined, and wait for
/// every PUBACK.
async fn mqtt_publish_many(addr: SocketAddr, n: usize) {
    let mut o = options(addr, "durable-publisher");
    o.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(o, 200);
    let sender = tokio::spawn(async move {
        for i in 0..n {
            let m = format!("m{i}").into_bytes();
            let sent = client.publish("load/mqtt", QoS::AtLeastOnce, false, m);
            sent.await.unwrap();
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
    let (_dir, db, ponte) = fresh();

    // Subscribe with a persistent session, then go away.
    let (mut sub, ack) = Client::connect_with(persistent_options(ponte.mqtt)).await;
    assert!(!ack.session_present);
    sub.subscribe("load/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let http = async {
        for i in 0..HTTP {
            let r = http_put_untyped(&ponte.http, "load/http", format!("h{i}")).await;
            assert!(r.status().is_success(), "PUT answered {}", r.status());
        }
    };
    let coap = async {
        let mut c = Coap::new(ponte.coap).await;
        for i in 0..COAP {
            let r = c.put("r/load/coap", format!("c{i}").as_bytes(), None).await;
            let code = u8::from(r.header.code);
            assert!((0x41..=0x44).contains(&code), "CoAP PUT answered {code:#x}");
        }
    };
    tokio::join!(http, coap, mqtt_publish_many(ponte.mqtt, MQTT));

    // Every write above was acknowledged: stop now.
    let ponte = restart(ponte, signal, &db);
    let (mut sub, ack) = Client::connect_with(persistent_options(ponte.mqtt)).await;
    let present = ack.session_present;
    assert!(present, "the persistent session survived the restart");
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
    for (kind, n, what) in [
        ('m', MQTT, "MQTT messages in order"),
        ('h', HTTP, "HTTP writes in order"),
        ('c', COAP, "CoAP writes in order"),
    ] {
        assert_eq!(got[&kind], (0..n).collect::<Vec<_>>(), "{what}");
    }
    // Nothing more (no duplicates).
    let why = "no duplicate after the 1,000";
    never(BRIEF, why, sub.publish_rx()).await;
}

#[tokio::test]
async fn mqtt_3_1_2_4_persistent_session_queue_survives_kill_9() {
    offline_session_survives("-KILL").await;
}

#[tokio::test]
async fn mqtt_3_1_2_4_persistent_session_queue_survives_restart() {
    offline_session_survives("-TERM").await;
}

/// Leave `raw` without a word (so its session keeps what is in flight), give the broker
/// a moment to save it, then restart the broker with SIGTERM.
fn leave_and_restart(raw: V3, ponte: Ponte, db: &Path) -> Ponte {
    drop(raw);
    std::thread::sleep(Duration::from_millis(300));
    restart(ponte, "-TERM", db)
}

/// MQTT-4.4.0-1 across a restart: QoS 1 messages sent but not acknowledged are re-sent
/// with DUP=1, in their original order, after the broker restarts.
#[tokio::test]
async fn mqtt_4_4_0_1_unacknowledged_resent_with_dup_after_restart() {
    let (_dir, db, ponte) = fresh();
    let (mut raw, _) = V3::persistent(ponte.mqtt, "no-acks").await;
    raw.send_raw(&subscribe_packet(1, &[("dup/t", 1)])).await;
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
    let ponte = leave_and_restart(raw, ponte, &db);
    let (mut raw, ack) = V3::persistent(ponte.mqtt, "no-acks").await;
    assert_eq!(ack, vec![1, 0], "session present");
    for body in first {
        let pkt = raw.read().await.expect("re-sent PUBLISH");
        assert_eq!(pkt.kind(), 3);
        assert_eq!(pkt.first & 0x08, 0x08, "re-sent with DUP=1");
        let why = "same packet id, topic and payload, same order";
        assert_eq!(pkt.body, body, "{why}");
    }
}

/// Send the QoS 2 PUBLISH `payload` on `topic` with id `pkid` (DUP as given) from `raw`
/// and check the PUBREC.
async fn publish_qos2(raw: &mut V3, topic: &str, payload: &[u8], pkid: u16, dup: bool) {
    raw.send_raw(&publish_packet(topic, payload, 2, pkid, false, dup))
        .await;
    let rec = raw.read().await.expect("PUBREC");
    assert_eq!((rec.first, rec.body), (0x50, pkid.to_be_bytes().to_vec()));
}

/// MQTT-4.3.3 across a restart: an inbound QoS 2 packet id acknowledged with PUBREC (and
/// not yet released) is remembered, so the client's DUP re-send after the restart is not
/// delivered a second time.
#[tokio::test]
async fn mqtt_4_3_3_inbound_qos2_id_kept_across_restart() {
    let (_dir, db, ponte) = fresh();
    let (mut raw, _) = V3::persistent(ponte.mqtt, "qos2-pub").await;
    publish_qos2(&mut raw, "q2/t", b"once", 5, false).await;
    // Leave without PUBREL; restart.
    let ponte = leave_and_restart(raw, ponte, &db);
    let mut sub = Client::connect(ponte.mqtt, "qos2-sub").await.0;
    sub.subscribe("q2/t", QoS::ExactlyOnce).await;
    let (mut raw, ack) = V3::persistent(ponte.mqtt, "qos2-pub").await;
    assert_eq!(ack, vec![1, 0]);
    // The DUP re-send: answered PUBREC again, but not delivered again.
    publish_qos2(&mut raw, "q2/t", b"once", 5, true).await;
    raw.send_raw(&ack_packet(0x62, 5)).await;
    let comp = raw.read().await.expect("PUBCOMP");
    assert_eq!(comp.first, 0x70);
    let why = "a remembered QoS 2 id is not delivered twice";
    never(HALF, why, sub.publish_rx()).await;
}

// ---------------------------------------------------------------------------------------
// Durable sessions while connected (issue 3): `kill -9` in the middle of a connection.
// ---------------------------------------------------------------------------------------

/// SIGKILL the broker while `old` is still connected (dropped only after the kill, so the
/// broker never sees it close), start it again on the same database, and resume `client`'s
/// persistent MQTT 3.1.1 session on a new connection: CONNACK must say session present.
async fn kill_9_and_resume(ponte: Ponte, old: V3, db: &Path, client: &str) -> (Ponte, V3) {
    ponte.stop("-KILL");
    drop(old);
    let ponte = Ponte::spawn(db);
    let (raw, ack) = V3::persistent(ponte.mqtt, client).await;
    assert_eq!(
        ack,
        vec![1, 0],
        "{client}: session present after the restart"
    );
    (ponte, raw)
}

/// MQTT 4.3.3 (method B) across `kill -9`: the broker answered PUBREC, so the inbound
/// QoS 2 id is on disk; the client's DUP re-send and PUBREL after the restart are not
/// delivered again, and the (away, persistent) subscriber gets exactly one copy.
#[tokio::test]
async fn mqtt_4_3_3_qos2_publish_between_pubrec_and_pubrel_delivered_once_across_kill_9() {
    let (_dir, db, ponte) = fresh();
    let (mut sub, _) = Client::connect_with(persistent(ponte.mqtt, "once-sub")).await;
    sub.subscribe("once/t", QoS::ExactlyOnce).await;
    sub.disconnect().await;

    let (mut publisher, ack) = V3::persistent(ponte.mqtt, "once-pub").await;
    assert_eq!(ack, vec![0, 0]);
    publish_qos2(&mut publisher, "once/t", b"exactly once", 7, false).await;
    // Crash while the exchange is between PUBREC and PUBREL, the client still connected.
    let (ponte, mut publisher) = kill_9_and_resume(ponte, publisher, &db, "once-pub").await;
    // The client does not know whether PUBREC was durable: it re-sends (MQTT-4.4.0-1).
    publish_qos2(&mut publisher, "once/t", b"exactly once", 7, true).await;
    publisher.send_raw(&ack_packet(0x62, 7)).await;
    let comp = publisher.read().await.expect("PUBCOMP");
    assert_eq!((comp.first, comp.body.as_slice()), (0x70, &[0u8, 7][..]));

    let (mut sub, ack) = Client::connect_with(persistent(ponte.mqtt, "once-sub")).await;
    assert!(ack.session_present);
    let first = sub.publish_rx().await;
    assert_eq!(&first.payload[..], b"exactly once");
    never(HALF, "delivered twice", sub.publish_rx()).await;
}

/// MQTT-4.4.0-1 and MQTT-3.3.1-1 across `kill -9` in the middle of a connection: the
/// QoS 1/2 PUBLISHes the subscriber never acknowledged come back with DUP=1 under their
/// packet ids, and for the QoS 2 one it answered with PUBREC only the PUBREL comes back —
/// all in the original order.
#[tokio::test]
async fn mqtt_4_4_0_1_unacknowledged_publishes_and_pubrels_resent_in_order_after_kill_9() {
    let (_dir, db, ponte) = fresh();
    let (mut raw, ack) = V3::persistent(ponte.mqtt, "inflight").await;
    assert_eq!(ack, vec![0, 0]);
    raw.send_raw(&subscribe_packet(1, &[("if/q1", 1), ("if/q2", 2)]))
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
        assert_eq!(pkt.publish_payload(), payload.as_bytes());
        first.push(pkt);
    }
    // PUBREC for "b" only: the broker answers PUBREL; no PUBCOMP, no PUBACK.
    let b = first[1].publish_pkid();
    raw.send_raw(&ack_packet(0x50, b)).await;
    let rel = raw.read().await.expect("PUBREL");
    assert_eq!((rel.first, rel.body), (0x62, b.to_be_bytes().to_vec()));
    // QoS 1 progress is written without being awaited: give that batch a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_ponte, mut raw) = kill_9_and_resume(ponte, raw, &db, "inflight").await;
    for (i, sent) in first.iter().enumerate() {
        let pkt = raw.read().await.expect("re-sent packet");
        if i == 1 {
            let why = "past PUBREC only the PUBREL is re-sent, in its place";
            assert_eq!(
                (pkt.first, pkt.body),
                (0x62, b.to_be_bytes().to_vec()),
                "{why}"
            );
            continue;
        }
        let why = "re-sent with DUP=1 (MQTT-3.3.1-1)";
        assert_eq!(pkt.first, sent.first | 0x08, "{why}");
        let why = "same packet id, topic and payload, same order";
        assert_eq!(pkt.body, sent.body, "{why}");
    }
    never(BRIEF, "nothing else re-sent", raw.read()).await;
}

/// MQTT-4.4.0-1 across `kill -9` for a retained message sent at SUBSCRIBE time: the
/// persistent session's QoS 1 subscription got the retained value, the client never
/// acknowledged it, and after the crash the resumed session re-sends it with DUP=1 under
/// the same packet id (the retained delivery is on disk like any other queued message).
#[tokio::test]
async fn mqtt_4_4_0_1_unacknowledged_retained_publish_from_subscribe_resent_after_kill_9() {
    let (_dir, db, ponte) = fresh();
    let (mut p, _) = Client::connect(ponte.mqtt, "ret-pub").await;
    p.publish("ret/t", QoS::AtLeastOnce, true, b"kept").await;

    let (mut raw, ack) = V3::persistent(ponte.mqtt, "ret-sub").await;
    assert_eq!(ack, vec![0, 0]);
    raw.send_raw(&subscribe_packet(1, &[("ret/#", 1)])).await;
    assert_eq!(raw.read().await.expect("SUBACK").body, vec![0, 1, 1]);
    let sent = raw.read().await.expect("the retained PUBLISH");
    assert_eq!(sent.kind(), 3);
    assert_eq!(sent.first & 0x0F, 0x03, "QoS 1, RETAIN=1, DUP=0");
    assert_eq!(sent.publish_payload(), b"kept");
    // No PUBACK. QoS 1 progress is written without being awaited: give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ponte, mut raw) = kill_9_and_resume(ponte, raw, &db, "ret-sub").await;
    let again = raw.read().await.expect("the re-sent retained PUBLISH");
    assert_eq!(again.first, sent.first | 0x08, "re-sent with DUP=1");
    assert_eq!(again.body, sent.body, "same packet id, topic and payload");
    raw.send_raw(&ack_packet(0x40, again.publish_pkid())).await;
    never(BRIEF, "nothing else re-sent", raw.read()).await;

    // Acknowledged now: its disk copy is gone, so a second crash does not bring it back.
    let (_ponte, mut raw) = kill_9_and_resume(ponte, raw, &db, "ret-sub").await;
    let why = "an acknowledged message came back";
    never(BRIEF, why, raw.read()).await;
}

/// Connect `id` over MQTT 5 with Clean Start `clean` and Session Expiry `secs`; the client
/// and Session Present.
async fn v5(ponte: &Ponte, id: &str, clean: bool, secs: u32) -> (V5, bool) {
    V5::session(ponte.mqtt, id, clean, expiry(secs)).await
}

/// A new MQTT 5 session `id` (Session Expiry `secs`) subscribed to `filter` at QoS 1.
async fn v5_subscribed(ponte: &Ponte, id: &str, secs: u32, filter: &str) -> V5 {
    let (mut c, present) = v5(ponte, id, true, secs).await;
    assert!(!present);
    let q1 = opts(ponte_mqtt::QoS::AtLeastOnce);
    assert_eq!(c.subscribe(&[(filter, q1)]).await, vec![1]);
    c
}

/// DISCONNECT `c` and check the server closes without sending anything more.
async fn v5_leave(c: V5) {
    let seen = c.disconnect(0).await;
    assert!(seen.is_empty(), "closed after DISCONNECT: {seen:?}");
}

/// MQTT 5 §3.3.2.3 across `kill -9`: a message queued for an away session keeps its
/// Payload Format Indicator, Content Type, Response Topic, Correlation Data and User
/// Properties (in order), and is sent with what remains of its Message Expiry Interval
/// (MQTT-3.3.2-6); one that expired while the broker was down is not sent (MQTT-3.3.2-5).
#[tokio::test]
async fn mqtt5_3_3_2_properties_and_remaining_expiry_of_queued_messages_survive_kill_9() {
    use ponte_mqtt::{Packet, Properties};
    let (_dir, db, ponte) = fresh();
    v5_leave(v5_subscribed(&ponte, "props-sub", 600, "props/#").await).await;

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
    let (mut publisher, _) = v5(&ponte, "props-pub", true, 0).await;
    for (pkid, topic, expiry, payload) in [
        (1u16, "props/short", 1u32, &b"gone"[..]),
        (2, "props/long", 600, &b"{\"x\":1}"[..]),
    ] {
        let expiring = Properties {
            message_expiry_interval: Some(expiry),
            ..props.clone()
        };
        let q1 = ponte_mqtt::QoS::AtLeastOnce;
        publisher
            .send(&pub5(topic, q1, pkid, payload, expiring))
            .await;
        match publisher.recv().await.expect("a packet, not a close") {
            Packet::PubAck(r) if r.reason_code == 0 => {}
            other => panic!("expected PUBACK 0, got {other:?}"),
        }
    }
    let published = Instant::now();
    ponte.stop("-KILL");
    drop(publisher);
    // Down for longer than the short message's 1 s expiry.
    std::thread::sleep(Duration::from_millis(1500));

    let ponte = Ponte::spawn(&db);
    let (mut sub, present) = v5(&ponte, "props-sub", false, 600).await;
    assert!(present, "the session survived");
    let p = match sub.recv().await.expect("a packet, not a close") {
        Packet::Publish(p) => p,
        other => panic!("expected the queued PUBLISH, got {other:?}"),
    };
    let topic = &p.topic;
    assert_eq!(topic, "props/long", "the expired message is not sent");
    assert_eq!(&p.payload[..], b"{\"x\":1}");
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
    sub.send(&Packet::PubAck(response(p.pkid, 0))).await;
    sub.assert_quiet(BRIEF, "nothing else").await;
}

/// `overflow = "drop-oldest"` on a persistent session: a displaced message is deleted from
/// disk too, so it does not come back after a `kill -9` even when the restarted broker's
/// queue has room for it.
#[tokio::test]
async fn drop_oldest_displaced_message_does_not_come_back_after_kill_9() {
    let (_dir, db) = db();
    let small = test_file(
        "small.toml",
        "[mqtt]\nmax_queued = 2\noverflow = \"drop-oldest\"\n",
    );
    let ponte = Ponte::start(&[
        "-d".as_ref(),
        db.as_os_str(),
        "-c".as_ref(),
        small.as_os_str(),
    ]);
    let (mut sub, _) = Client::connect_with(persistent(ponte.mqtt, "oldest-sub")).await;
    sub.subscribe("oldest/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let (mut p, _) = Client::connect(ponte.mqtt, "oldest-pub").await;
    for i in 0..5 {
        let m = format!("m{i}");
        p.publish("oldest/t", QoS::AtLeastOnce, false, m.as_bytes())
            .await;
    }
    // The displaced entries' deletions are not awaited: give that batch a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Restart with room for all five: only the two kept ones come back.
    let ponte = restart(ponte, "-KILL", &db);
    let (mut sub, ack) = Client::connect_with(persistent(ponte.mqtt, "oldest-sub")).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(String::from_utf8(sub.publish_rx().await.payload.to_vec()).unwrap());
    }
    assert_eq!(got, ["m3", "m4"]);
    let why = "a displaced message came back";
    never(HALF, why, sub.publish_rx()).await;
}

/// MQTT 5 §3.1.2.11.2 across a restart: the Session Expiry Interval counts from when the
/// client went away, not from when the broker restarted; a session that expired while the
/// broker was down is gone at start (MQTT-3.1.2-23), one that has time left is not.
#[tokio::test]
async fn mqtt5_3_1_2_11_session_expiry_counts_across_restart() {
    let (_dir, db, ponte) = fresh();
    v5_leave(v5_subscribed(&ponte, "exp-short", 2, "exp/t").await).await;
    v5_leave(v5_subscribed(&ponte, "exp-long", 600, "exp/t").await).await;
    ponte.stop("-KILL");
    std::thread::sleep(Duration::from_millis(2500));

    let ponte = Ponte::spawn(&db);
    let (_short, present) = v5(&ponte, "exp-short", false, 2).await;
    assert!(!present, "expired while the broker was down");
    let (_long, present) = v5(&ponte, "exp-long", false, 600).await;
    assert!(present, "600 s have not passed");
}

/// MQTT 5 §3.1.2.11.2 for a client still connected at `kill -9`: its network connection
/// closed with the crash, so its Session Expiry counts from then — which the restarted
/// broker takes from the last "alive" mark the crashed one wrote (at most a few seconds
/// early) — not from the restart. A 3 s session is gone after 3.5 s down (Session Present
/// 0, its subscription gone); a 600 s one is still there with its subscription.
#[tokio::test]
async fn mqtt5_3_1_2_11_expiry_of_a_session_connected_at_kill_9_counts_from_the_crash() {
    let (_dir, db, ponte) = fresh();
    let short = v5_subscribed(&ponte, "crash-short", 3, "crash/t").await;
    let long = v5_subscribed(&ponte, "crash-long", 600, "crash/t").await;
    // Session records are written without being awaited: give that batch a moment. Both
    // clients are still connected when the broker dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ponte.stop("-KILL");
    drop((short, long));
    std::thread::sleep(Duration::from_millis(3500));

    let ponte = Ponte::spawn(&db);
    let (mut short, present) = v5(&ponte, "crash-short", false, 3).await;
    let why = "3 s passed since the crash: expired, not counted from the restart";
    assert!(!present, "{why}");
    let (mut long, present) = v5(&ponte, "crash-long", false, 600).await;
    assert!(present, "600 s have not passed");
    let (mut p, _) = Client::connect(ponte.mqtt, "crash-pub").await;
    p.publish("crash/t", QoS::AtLeastOnce, false, b"after")
        .await;
    match long.recv().await.expect("a packet, not a close") {
        ponte_mqtt::Packet::Publish(p) => assert_eq!(&p.payload[..], b"after"),
        other => panic!("expected the PUBLISH on the kept subscription, got {other:?}"),
    }
    let why = "the expired session's subscription is gone";
    short.assert_quiet(BRIEF, why).await;
}

/// MQTT 5 §3.1.2.11.2 after a takeover: the client that took a persistent session over
/// is connected, so a crash while it is connected counts the session's expiry from the
/// crash. The taking-over CONNECT stores the session's record before its CONNACK; it
/// used to store the previous connection's close with it ("away since" the takeover),
/// and a restart more than the expiry after the takeover then discarded the session of a
/// client that had been connected until the crash.
#[tokio::test]
async fn mqtt5_3_1_2_11_a_session_taken_over_and_connected_at_kill_9_counts_from_the_crash() {
    let (_dir, db, ponte) = fresh();
    let mut first = v5_subscribed(&ponte, "taken", 6, "taken/t").await;
    let (second, present) = v5(&ponte, "taken", false, 6).await;
    assert!(present, "the session is taken over, not replaced");
    assert_eq!(first.disconnect_reason().await, 0x8E, "Session taken over");
    // Connected longer than the expiry, storing nothing more (no SUBSCRIBE), while the
    // broker writes its alive marks.
    tokio::time::sleep(Duration::from_millis(7500)).await;
    ponte.stop("-KILL");
    drop((first, second));

    let ponte = Ponte::spawn(&db);
    let (mut again, present) = v5(&ponte, "taken", false, 6).await;
    assert!(
        present,
        "connected until the crash: its 6 s count from then"
    );
    let (mut p, _) = Client::connect(ponte.mqtt, "taken-pub").await;
    p.publish("taken/t", QoS::AtLeastOnce, false, b"kept").await;
    match again.recv().await.expect("a packet, not a close") {
        ponte_mqtt::Packet::Publish(m) => assert_eq!(&m.payload[..], b"kept"),
        other => panic!("expected the PUBLISH on the kept subscription, got {other:?}"),
    }
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
    let ponte = Ponte::start(&[
        "-d".as_ref(),
        dir.path().join("db").as_os_str(),
        "--password-file".as_ref(),
        passwd.as_os_str(),
        "--acl-file".as_ref(),
        acl.as_os_str(),
    ]);
    let put = |user: &'static str, password: &'static str, topic: &'static str| {
        let req = http().put(url(&ponte.http, topic));
        let req = req.basic_auth(user, Some(password)).body("v");
        async move { send("HTTP PUT", req).await.status().as_u16() }
    };
    assert_eq!(put("alice", "alice-pw", "a/1").await, 201);
    assert_eq!(put("alice", "alice-pw", "b/1").await, 403);
    let bob = put("bob", "bob-pw", "b/1").await;
    assert_eq!(bob, 401, "bob does not exist yet");

    // An MQTT connection open across the reload.
    let (mut alice, _) =
        Client::connect_with(login(ponte.mqtt, "alice-1", "alice", "alice-pw")).await;

    pw("bob", "bob-pw");
    let rules = "user alice\ntopic readwrite a/#\nuser bob\ntopic readwrite b/#\n";
    std::fs::write(&acl, rules).unwrap();
    ponte.signal("-HUP");
    let why = "bob to get in after SIGHUP";
    poll_until(WAIT, why, Duration::from_millis(50), || async {
        put("bob", "bob-pw", "b/1").await == 201
    })
    .await;
    // alice's connection survived the reload and still works.
    alice
        .publish("a/over-mqtt", QoS::AtLeastOnce, true, b"m")
        .await;
    let req = http().get(url(&ponte.http, "a/over-mqtt"));
    let got = send("HTTP GET", req.basic_auth("alice", Some("alice-pw"))).await;
    assert_eq!(got.status(), 200);

    // A broken ACL on the next SIGHUP keeps the rules in force.
    std::fs::write(&acl, "nonsense line\n").unwrap();
    ponte.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(put("bob", "bob-pw", "b/2").await, 201);
    assert_eq!(put("bob", "bob-pw", "a/2").await, 403);
}

/// Issue 5: a bad auth file is a configuration error found at start (exit 2, naming the
/// file's line), before any port opens.
#[test]
fn issue_5_bad_acl_file_exits_2_naming_the_line() {
    let acl = test_file("acl", "user alice\ntopic read a/#/b\n");
    let out = run(&[
        &["--memory"],
        &ANY_PORT[..],
        &["--acl-file", acl.to_str().unwrap()],
    ]
    .concat());
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
    let (_dir, db) = db();
    for round in 0..3 {
        let ponte = Ponte::spawn(&db);
        let id = format!("quick-{round}");
        let (mut raw, ack) = V3::persistent(ponte.mqtt, &id).await;
        assert_eq!(ack, vec![0, 0]);
        let topic = format!("quick/{round}");
        raw.send_raw(&subscribe_packet(1, &[(topic.as_str(), 1)]))
            .await;
        assert_eq!(raw.read().await.expect("SUBACK").body, vec![0, 1, 1]);
        let ponte = restart(ponte, "-KILL", &db);
        drop(raw);

        let value = format!("while away {round}");
        let put = http_put_untyped(&ponte.http, &topic, value.clone()).await;
        assert!(put.status().is_success());
        let (mut raw, ack) = V3::persistent(ponte.mqtt, &id).await;
        let why = "the session acknowledged before the kill is present";
        assert_eq!(ack, vec![1, 0], "round {round}: {why}");
        let p = raw.read().await.expect("the queued PUBLISH");
        assert_eq!(p.kind(), 3, "round {round}: a PUBLISH");
        let why = "the message published while away";
        assert!(p.body.ends_with(value.as_bytes()), "round {round}: {why}");
        drop(raw);
        ponte.stop("-KILL");
    }
}
