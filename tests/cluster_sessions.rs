#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Persistent MQTT sessions follow their client across cluster nodes (issue 11, point 5):
//! three ponte nodes (`ponte::start` in-process, the real binary where a process must die)
//! on a real nats-server (`tests/nats/mod.rs`), driven by raw MQTT 3.1.1 and 5.0 clients,
//! rumqttc, reqwest and raw CoAP. Each test has its own NATS and ports. Without
//! nats-server the tests print SKIP and pass, except in CI.

mod common;
mod nats;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use nats::{node, node_with, START, TEST_LOG_BYTES};
use ponte::Gateway;
use ponte_mqtt::{Packet, Publish, QoS};

/// A persistent v5 session: Clean Start 0, Session Expiry `secs`.
async fn v5_session(addr: std::net::SocketAddr, id: &str, secs: u32) -> (V5, bool) {
    V5::session(addr, id, false, expiry(secs)).await
}

/// What a subscribing client received, acknowledging as a QoS 2 receiver does (method A:
/// a QoS 2 message is delivered when first received, its packet id remembered until the
/// PUBREL, and a DUP with a remembered id is not delivered again).
#[derive(Default)]
struct Received {
    /// Payloads delivered to the application, in order.
    delivered: Vec<String>,
    /// The delivered PUBLISHes, in order.
    packets: Vec<Publish>,
    /// QoS 2 packet ids received and not yet released (kept across reconnects: the
    /// client's side of the session).
    held: HashSet<u16>,
}

impl Received {
    /// Handle one packet from the server: acknowledge (a write that finds the node dead,
    /// after a kill -9, is not an error: what arrived counts), record deliveries. Returns whether
    /// it delivered something.
    async fn take<V: Version>(&mut self, c: &mut Raw<V>, p: Packet) -> bool {
        match p {
            Packet::Publish(p) => {
                let fresh = match p.qos {
                    QoS::AtMostOnce => true,
                    QoS::AtLeastOnce => {
                        // The answer may find the node dead (kill -9): what arrived counts.
                        c.try_send(&Packet::PubAck(response(p.pkid, 0))).await;
                        true
                    }
                    QoS::ExactlyOnce => {
                        let fresh = self.held.insert(p.pkid);
                        c.try_send(&Packet::PubRec(response(p.pkid, 0))).await;
                        fresh
                    }
                };
                if fresh {
                    self.delivered
                        .push(String::from_utf8_lossy(&p.payload).into_owned());
                    self.packets.push(p);
                }
                fresh
            }
            Packet::PubRel(r) => {
                self.held.remove(&r.pkid);
                c.try_send(&Packet::PubComp(response(r.pkid, 0))).await;
                false
            }
            _ => false,
        }
    }

    /// Receive until `n` messages were delivered in all (QoS 2 exchanges completed too).
    async fn until<V: Version>(&mut self, c: &mut Raw<V>, n: usize, what: &str) {
        within(Duration::from_secs(20), what, async {
            while self.delivered.len() < n || !self.held.is_empty() {
                match c.recv().await {
                    Some(p) => {
                        self.take(c, p).await;
                    }
                    None => panic!("{what}: closed after {:?}", self.delivered),
                }
            }
        })
        .await;
    }
}

/// Point 5: a persistent session away on A receives, on reconnecting to C, every QoS 1/2
/// message published while it was away on no node — via B and C over MQTT, HTTP and
/// CoAP — in order, at its subscriptions' QoS, with their v5 Subscription Identifiers;
/// v3.1.1 (Clean Session 0) and v5 (Session Expiry) alike. CONNACK says Session Present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_away_on_a_gets_what_b_and_c_published_on_reconnect_to_c() {
    let Some((_server, [a, b, c])) = nats::cluster(["a", "b", "c"]).await else {
        return;
    };

    let (mut v5, present) = v5_session(a.mqtt_addr, "away-5", 300).await;
    assert!(!present, "a new session");
    let granted = v5.suback(&[("s/#", opts(QoS::ExactlyOnce))], Some(7)).await;
    assert_eq!(granted.reason_codes, vec![2]);
    assert_eq!(
        v5.subscribe(&[("r/#", opts(QoS::AtLeastOnce))]).await,
        vec![1]
    );
    v5.disconnect(0).await;
    let (mut v3, present) = V3::session(a.mqtt_addr, "away-3", false).await;
    assert!(!present);
    assert_eq!(
        v3.subscribe(&[("s/#", QoS::AtLeastOnce), ("r/#", QoS::ExactlyOnce)])
            .await,
        vec![1, 2]
    );
    drop(v3);

    // Published while both are away, on other nodes and over every protocol.
    let mut pb = V5::connect(b.mqtt_addr, "pub-b").await;
    pb.publish("s/1", QoS::AtLeastOnce, false, b"m1").await;
    pb.publish("s/2", QoS::ExactlyOnce, false, b"m2").await;
    let mut pc = V3::connect(c.mqtt_addr, "pub-c").await;
    pc.publish("s/3", QoS::ExactlyOnce, false, b"m3").await;
    assert_eq!(
        http_put(&b, "r/http", "m4", "text/plain").await.status(),
        201
    );
    let mut coap = Coap::new(c.coap_addr).await;
    let put = coap.put("/r/r/coap", b"m5", None).await;
    assert_eq!(code(&put), "2.01");
    // A QoS 0 message while away, seen by a live subscriber on C first: so it is in the
    // log before the session resumes there, not merely on its way (it would then be
    // delivered live, rightly).
    let mut watcher = V5::connect(c.mqtt_addr, "qos0-watcher").await;
    assert_eq!(
        watcher
            .subscribe(&[("s/qos0", opts(QoS::AtMostOnce))])
            .await,
        vec![0]
    );
    pb.publish("s/qos0", QoS::AtMostOnce, false, b"not queued")
        .await;
    let seen = within(WAIT, "the QoS 0 message live on C", watcher.publish_rx()).await;
    assert_eq!(seen.payload, "not queued");

    let want = ["m1", "m2", "m3", "m4", "m5"];
    let (mut v5, present) = v5_session(c.mqtt_addr, "away-5", 300).await;
    assert!(present, "Session Present 1 on another node");
    let mut got = Received::default();
    got.until(&mut v5, want.len(), "v5 session's queue on C")
        .await;
    assert_eq!(got.delivered, want, "in order, nothing missing");
    let qos: Vec<QoS> = got.packets.iter().map(|p| p.qos).collect();
    assert_eq!(
        qos,
        [
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
            QoS::ExactlyOnce,
            QoS::AtLeastOnce,
            QoS::AtLeastOnce
        ],
        "min(published, granted)"
    );
    for p in &got.packets[..3] {
        assert_eq!(
            p.properties.subscription_identifiers,
            vec![7],
            "Subscription Identifier kept: {p:?}"
        );
    }
    v5.assert_quiet(QUIET, "nothing twice, no QoS 0 queued while away")
        .await;

    let (mut v3, present) = V3::session(b.mqtt_addr, "away-3", false).await;
    assert!(present);
    let mut got = Received::default();
    got.until(&mut v3, want.len(), "v3.1.1 session's queue on B")
        .await;
    assert_eq!(got.delivered, want);
    assert_eq!(
        got.packets[3].qos,
        QoS::AtLeastOnce,
        "HTTP writes are QoS 1"
    );
    v3.assert_quiet(QUIET, "nothing twice").await;

    // Live delivery continues on the new node.
    pb.publish("s/after", QoS::AtLeastOnce, false, b"live")
        .await;
    let p = v3.publish_rx().await;
    assert_eq!(p.payload, "live");
    for gw in [a, b, c] {
        gw.shutdown().await;
    }
}

/// A PUBLISH received (not acknowledged yet) and its packet id.
async fn publish_in<V: Version>(c: &mut Raw<V>, what: &str) -> Publish {
    within(WAIT, what, c.publish_rx()).await
}

/// Point 5, takeover while connected (MQTT-3.1.4-2, MQTT-4.4.0-1): a v5 client connected
/// to A with unfinished QoS 1 and QoS 2 exchanges connects to B. A closes the old
/// connection with DISCONNECT 0x8E; B says Session Present and re-sends, in their order,
/// the unacknowledged PUBLISHes with DUP=1 and their packet ids and only the PUBREL of the
/// QoS 2 message the client had PUBREC'd; then the rest of the queue; nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_2_takeover_a_to_b_while_connected_moves_exchanges_and_queue() {
    let Some((_server, [a, b, c])) = nats::cluster(["a", "b", "c"]).await else {
        return;
    };

    let props = props(|p| {
        p.session_expiry_interval = Some(300);
        p.receive_maximum = Some(4);
    });
    let (mut old, _) = V5::session(a.mqtt_addr, "mover", false, props.clone()).await;
    assert_eq!(
        old.subscribe(&[("t/#", opts(QoS::ExactlyOnce))]).await,
        vec![2]
    );
    let mut pc = V5::connect(c.mqtt_addr, "pub-c").await;
    for (n, qos) in [
        (1, QoS::AtLeastOnce),
        (2, QoS::ExactlyOnce),
        (3, QoS::ExactlyOnce),
        (4, QoS::AtLeastOnce),
        (5, QoS::AtLeastOnce),
        (6, QoS::ExactlyOnce),
    ] {
        pc.publish(&format!("t/{n}"), qos, false, format!("m{n}").as_bytes())
            .await;
    }
    // Four in flight on A (Receive Maximum 4): m1 unacknowledged, m2 PUBREC'd (the
    // server answers PUBREL, left without PUBCOMP), m3 and m4 unacknowledged.
    let p1 = publish_in(&mut old, "m1 on A").await;
    let p2 = publish_in(&mut old, "m2 on A").await;
    old.send(&Packet::PubRec(response(p2.pkid, 0))).await;
    let mut later = Vec::new();
    let mut released = false;
    while later.len() < 2 || !released {
        match old.recv().await {
            Some(Packet::Publish(p)) => later.push(p),
            Some(Packet::PubRel(r)) => {
                assert_eq!(r.pkid, p2.pkid);
                released = true;
            }
            Some(_) => {}
            None => panic!("A closed"),
        }
    }
    let (p3, p4) = (later[0].clone(), later[1].clone());
    assert_eq!(
        [&p1, &p2, &p3, &p4].map(|p| p.payload.clone()),
        ["m1", "m2", "m3", "m4"]
    );

    // The same client connects to B.
    let (mut new, ack) = V5::connack(b.mqtt_addr, connect5("mover", false, props)).await;
    assert_eq!(ack.reason, 0);
    assert!(ack.session_present, "Session Present on B");
    let (code, _) = within(WAIT, "A's DISCONNECT", old.disconnect_rx()).await;
    assert_eq!(code, 0x8E, "Session taken over");
    old.expect_closed("A closes the old connection").await;

    // Re-sent in their order: PUBLISH m1 (DUP), PUBREL of m2, PUBLISH m3 and m4 (DUP).
    let mut resent = Vec::new();
    while resent.len() < 4 {
        match new.recv().await {
            Some(p @ (Packet::Publish(_) | Packet::PubRel(_))) => resent.push(p),
            Some(_) => {}
            None => panic!("B closed"),
        }
    }
    let pkid = |p: &Packet| match p {
        Packet::Publish(p) => (p.pkid, p.dup, p.payload.clone()),
        Packet::PubRel(r) => (r.pkid, false, bytes::Bytes::from_static(b"PUBREL")),
        _ => unreachable!(),
    };
    let resent: Vec<_> = resent.iter().map(pkid).collect();
    assert_eq!(
        resent,
        vec![
            (p1.pkid, true, bytes::Bytes::from_static(b"m1")),
            (p2.pkid, false, bytes::Bytes::from_static(b"PUBREL")),
            (p3.pkid, true, bytes::Bytes::from_static(b"m3")),
            (p4.pkid, true, bytes::Bytes::from_static(b"m4")),
        ],
        "MQTT-4.4.0-1: unacknowledged PUBLISHes with DUP and their ids, PUBREL for m2"
    );
    // Finish them as a client does; the rest of the queue follows, nothing twice.
    let mut got = Received::default();
    got.held.insert(p2.pkid);
    got.held.insert(p3.pkid);
    new.send(&Packet::PubAck(response(p1.pkid, 0))).await;
    new.send(&Packet::PubComp(response(p2.pkid, 0))).await;
    got.held.remove(&p2.pkid);
    new.send(&Packet::PubRec(response(p3.pkid, 0))).await;
    new.send(&Packet::PubAck(response(p4.pkid, 0))).await;
    got.until(&mut new, 2, "m5 and m6 from B").await;
    assert_eq!(got.delivered, ["m5", "m6"]);
    new.assert_quiet(QUIET, "nothing more").await;
    pc.publish("t/7", QoS::AtLeastOnce, false, b"m7").await;
    assert_eq!(new.publish_rx().await.payload, "m7", "live on B");
    for gw in [a, b, c] {
        gw.shutdown().await;
    }
}

/// Read until the server closes the connection (true) or `d` passes with it open (false).
async fn closes_within<V: Version>(c: &mut Raw<V>, d: Duration) -> bool {
    tokio::time::timeout(d, async { while c.recv().await.is_some() {} })
        .await
        .is_ok()
}

/// Point 5, ownership by compare-and-set: one client id CONNECTs to A and to B at the same
/// moment, many times over. Each time exactly one connection keeps the session (the other
/// is closed, with 0x8E if it was accepted), and the survivor has the session's
/// subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_of_one_client_id_on_a_and_b_leave_exactly_one() {
    let Some((_server, [a, b])) = nats::cluster(["a", "b"]).await else {
        return;
    };
    let (mut first, _) = v5_session(a.mqtt_addr, "twin", 300).await;
    assert_eq!(
        first.subscribe(&[("tw/#", opts(QoS::AtLeastOnce))]).await,
        vec![1]
    );
    first.disconnect(0).await;
    let mut pb = V5::connect(b.mqtt_addr, "twin-pub").await;
    for round in 0..8 {
        let (x, y) = tokio::join!(
            V5::connack(a.mqtt_addr, connect5("twin", false, expiry(300))),
            V5::connack(b.mqtt_addr, connect5("twin", false, expiry(300))),
        );
        let (mut x, xa) = x;
        let (mut y, ya) = y;
        assert!(
            xa.reason == 0 || ya.reason == 0,
            "one is accepted: {xa:?} {ya:?}"
        );
        // The loser closes (the one not accepted at once; the other kicked with 0x8E); the
        // survivor then stays open a while and has the subscription.
        let (x_closed_first, closed) = tokio::select! {
            c = closes_within(&mut x, Duration::from_secs(10)) => (true, c),
            c = closes_within(&mut y, Duration::from_secs(10)) => (false, c),
        };
        assert!(
            closed,
            "round {round}: one of two connections of one client closes"
        );
        let survivor = if x_closed_first { &mut y } else { &mut x };
        assert!(
            !closes_within(survivor, Duration::from_millis(500)).await,
            "round {round}: exactly one connection survives (A closed first: {x_closed_first}, and then the other too)"
        );
        let payload = format!("r{round}");
        pb.publish("tw/x", QoS::AtLeastOnce, false, payload.as_bytes())
            .await;
        let p = survivor.publish_rx().await;
        assert_eq!(p.payload, payload, "the survivor has the subscription");
        survivor.send(&Packet::PubAck(response(p.pkid, 0))).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A node run as the real binary, so it can be killed with `kill -9`: the process and its
/// MQTT address. `toml` is added to its configuration file.
fn binary_node(
    url: &str,
    name: &str,
    toml: &str,
) -> (Reaped, std::net::SocketAddr, tempfile::TempDir) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        format!(
            "[cluster]\nretention_bytes = {TEST_LOG_BYTES}\nstart_wait_secs = {}\n{toml}",
            START.as_secs()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ponte"))
        .args(ANY_PORT)
        .arg("--memory")
        .args(["--cluster", url, "--node", name, "-c"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ponte binary starts");
    let logs = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(logs).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = loop {
        let line = rx
            .recv_timeout(START)
            .expect("a `ponte listening` line from the binary node");
        if line.contains("ponte listening") {
            break line;
        }
    };
    let mqtt = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mqtt="))
        .expect("mqtt= in the listening line")
        .parse()
        .unwrap();
    (Reaped(child), mqtt, dir)
}

/// A node process killed (and reaped) when the test ends, even by a panic: a stopped or
/// running node never outlives its test.
struct Reaped(std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Point 5 under `kill -9`: a persistent subscriber (QoS 2) is connected to A, the real
/// binary, while QoS 1 and QoS 2 loads are published via B and C; A is killed mid-load.
/// Reconnected to B, the subscriber gets every message whose publisher got PUBACK or
/// PUBCOMP — QoS 1 maybe again (allowed), QoS 2 exactly once across both connections
/// (method A receiver: a DUP of a held id is not delivered again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_owner_under_qos1_and_qos2_load_loses_nothing_and_repeats_no_qos2() {
    use std::sync::{Arc, Mutex};
    let Some((server, [b, c])) = nats::cluster(["b", "c"]).await else {
        return;
    };
    let (mut child, mqtt_a, _dir) = binary_node(&server.url(), "a", "");

    let (mut sub, present) = v5_session(mqtt_a, "victim", 300).await;
    assert!(!present);
    assert_eq!(
        sub.subscribe(&[("k/#", opts(QoS::ExactlyOnce))]).await,
        vec![2]
    );
    // The subscriber receives on A until A dies.
    let receiving = tokio::spawn(async move {
        let mut got = Received::default();
        loop {
            match sub.recv_for(Duration::from_secs(30)).await {
                Some(Some(p)) => {
                    got.take(&mut sub, p).await;
                }
                _ => return got,
            }
        }
    });

    const N1: u16 = 1500;
    const N2: u16 = 150;
    let acked1 = Arc::new(Mutex::new(Vec::new()));
    let acked2 = Arc::new(Mutex::new(Vec::new()));
    let qos1 = {
        let acked = acked1.clone();
        let addr = b.mqtt_addr;
        tokio::spawn(async move {
            let mut p = V3::connect(addr, "load-1").await;
            for n in 0..N1 {
                p.publish("k/1", QoS::AtLeastOnce, false, format!("a{n}").as_bytes())
                    .await;
                acked.lock().unwrap().push(n);
            }
        })
    };
    let qos2 = {
        let acked = acked2.clone();
        let addr = c.mqtt_addr;
        tokio::spawn(async move {
            let mut p = V3::connect(addr, "load-2").await;
            for n in 0..N2 {
                p.publish("k/2", QoS::ExactlyOnce, false, format!("q{n}").as_bytes())
                    .await;
                acked.lock().unwrap().push(n);
            }
        })
    };
    until_some(Duration::from_secs(60), "load under way", || async {
        (acked1.lock().unwrap().len() >= 300 && acked2.lock().unwrap().len() >= 40).then_some(())
    })
    .await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    within(
        Duration::from_secs(120),
        "the loads finish via B and C",
        async {
            qos1.await.unwrap();
            qos2.await.unwrap();
        },
    )
    .await;
    let mut got = within(
        Duration::from_secs(35),
        "the subscriber sees A die",
        receiving,
    )
    .await
    .unwrap();
    let on_a = got.delivered.len();
    assert!(on_a > 0, "the subscriber received on A before the kill");

    let (mut sub, present) = v5_session(b.mqtt_addr, "victim", 300).await;
    assert!(present, "the session survived its node's kill -9");
    let want: HashSet<String> = (0..N1)
        .map(|n| format!("a{n}"))
        .chain((0..N2).map(|n| format!("q{n}")))
        .collect();
    within(
        Duration::from_secs(60),
        "every acknowledged message on B",
        async {
            loop {
                let have: HashSet<&String> = got.delivered.iter().collect();
                if want.iter().all(|w| have.contains(w)) && got.held.is_empty() {
                    break;
                }
                match sub.recv().await {
                    Some(p) => {
                        got.take(&mut sub, p).await;
                    }
                    None => panic!("B closed"),
                }
            }
        },
    )
    .await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for d in &got.delivered {
        *counts.entry(d.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts
        .iter()
        .filter(|(p, n)| p.starts_with('q') && **n > 1)
        .collect();
    assert!(twice.is_empty(), "QoS 2 delivered twice: {twice:?}");
    // Each publisher's messages arrive in its order (MQTT 4.6): the first delivery of
    // each, across A and B, is in publishing order (repeats of QoS 1 aside).
    for prefix in ['a', 'q'] {
        let mut seen = HashSet::new();
        let firsts: Vec<u16> = got
            .delivered
            .iter()
            .filter_map(|d| d.strip_prefix(prefix)?.parse().ok())
            .filter(|n| seen.insert(*n))
            .collect();
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "the {prefix}-messages out of order: {firsts:?}"
        );
    }
    let repeated = got.delivered.len() - want.len();
    println!(
        "on A: {on_a}, total: {}, QoS 1 repeats: {repeated}",
        got.delivered.len()
    );
    b.shutdown().await;
    c.shutdown().await;
}

/// The value of `ponte_messages_dropped_total{reason="…"}` on `gw`.
async fn dropped(gw: &Gateway, reason: &str) -> u64 {
    let text = http()
        .get(format!("http://{}/metrics", gw.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let want = format!("ponte_messages_dropped_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(want.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {want} in /metrics:\n{text}"))
}

/// Point 5, bounded: what waits for a client away on no node is bounded by `[mqtt]
/// max_queued` as on one node (drop-newest: the first ones are kept); the overflow is
/// counted (`ponte_messages_dropped_total{reason="queue_full"}`) on the node it resumes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queued_bounds_what_waits_for_an_away_session_and_counts_the_overflow() {
    if !nats::available() {
        return;
    }
    let server = nats::NatsServer::start();
    let urls = vec![server.url()];
    let small = |c: &mut ponte::config::Config| c.mqtt.max_queued = 3;
    let a = node_with(&urls, "a", small).await;
    let b = node_with(&urls, "b", small).await;
    let (mut s, _) = V3::session(a.mqtt_addr, "bounded", false).await;
    assert_eq!(s.subscribe(&[("q/#", QoS::AtLeastOnce)]).await, vec![1]);
    drop(s);
    let mut p = V5::connect(a.mqtt_addr, "bounded-pub").await;
    for n in 0..10 {
        p.publish("q/x", QoS::AtLeastOnce, false, format!("m{n}").as_bytes())
            .await;
    }
    let before = dropped(&b, "queue_full").await;
    let (mut s, present) = V3::session(b.mqtt_addr, "bounded", false).await;
    assert!(present);
    let mut got = Received::default();
    got.until(&mut s, 3, "the queue on B").await;
    assert_eq!(
        got.delivered,
        ["m0", "m1", "m2"],
        "drop-newest keeps the first"
    );
    s.assert_quiet(QUIET, "the other seven were dropped").await;
    assert_eq!(dropped(&b, "queue_full").await - before, 7);
    a.shutdown().await;
    b.shutdown().await;
}

/// Point 5, bounded by the log: messages the log's retention deleted before the client
/// came back are counted (`reason="log_retention"`) and logged; what the log still has is
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_logs_retention_deleted_while_away_are_counted() {
    if !nats::available() {
        return;
    }
    let server = nats::NatsServer::start();
    let urls = vec![server.url()];
    let tiny = |c: &mut ponte::config::Config| c.cluster.retention_bytes = 8 * 1024;
    let a = node_with(&urls, "a", tiny).await;
    let b = node_with(&urls, "b", tiny).await;
    let (mut s, _) = V3::session(a.mqtt_addr, "forgotten", false).await;
    assert_eq!(s.subscribe(&[("old/#", QoS::AtLeastOnce)]).await, vec![1]);
    drop(s);
    let mut p = V5::connect(a.mqtt_addr, "filler").await;
    let payload = vec![b'x'; 400];
    for _ in 0..60 {
        p.publish("old/x", QoS::AtLeastOnce, false, &payload).await;
    }
    p.publish("old/x", QoS::AtLeastOnce, false, b"last").await;
    let (mut s, present) = V3::session(b.mqtt_addr, "forgotten", false).await;
    assert!(present);
    let mut got = Received::default();
    within(Duration::from_secs(20), "the last message", async {
        while got.delivered.last().map(String::as_str) != Some("last") {
            let p = s.recv().await.expect("open");
            got.take(&mut s, p).await;
        }
    })
    .await;
    let kept = got.delivered.len() as u64;
    assert!(kept < 61, "the log kept only part of it ({kept})");
    let lost = dropped(&b, "log_retention").await;
    assert!(lost > 0, "the deleted ones are counted");
    assert!(
        lost + kept >= 61,
        "{lost} lost + {kept} kept cover what was published"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Whether the sessions bucket on `url` holds a session for `client` (its key is the
/// escaped client id: plain for letters, digits and `-`).
async fn kept(url: &str, client: &str) -> bool {
    let nc = async_nats::connect(url).await.unwrap();
    let kv = async_nats::jetstream::new(nc)
        .get_key_value("ponte_sessions")
        .await
        .unwrap();
    matches!(
        kv.entry(client).await.unwrap(),
        Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put
    )
}

/// Point 5, expiry cluster-wide (MQTT 5 §3.1.2.11.2, MQTT-3.1.3-9): an away session
/// expires whichever node it was last on (deleted from the cluster without anyone
/// reconnecting; a CONNECT after it gets Session Present 0 on another node); a will whose
/// delay outlasts the session is published when the session ends; and a client that
/// comes back within the Will Delay on *another* node stops its old node's will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_and_will_delay_hold_across_nodes() {
    let Some((server, [a, b])) = nats::cluster(["a", "b"]).await else {
        return;
    };
    let mut watcher = V5::connect(b.mqtt_addr, "will-watcher").await;
    assert_eq!(
        watcher
            .subscribe(&[("wills/#", opts(QoS::AtLeastOnce))])
            .await,
        vec![1]
    );

    // A short session, away from A.
    let (mut short, _) = v5_session(a.mqtt_addr, "short", 2).await;
    assert_eq!(
        short.subscribe(&[("exp/#", opts(QoS::AtLeastOnce))]).await,
        vec![1]
    );
    short.disconnect(0).await;
    assert!(kept(&server.url(), "short").await, "kept while away");

    // Two wills on A: one whose client comes back on B within the delay, one whose
    // delay (60 s) outlasts its session (1 s).
    let delayed = |secs| props(|p| p.will_delay_interval = Some(secs));
    let will = |t: &str| ponte_mqtt::LastWill {
        topic: t.into(),
        payload: bytes::Bytes::from(t.to_owned()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    let back = {
        let Packet::Connect(mut c) =
            connect5_will("back", expiry(60), will("wills/back"), delayed(2))
        else {
            unreachable!()
        };
        c.clean_session = false;
        Packet::Connect(c)
    };
    let (back_a, ack) = V5::connack(a.mqtt_addr, back).await;
    assert_eq!(ack.reason, 0);
    let (bounded, ack) = V5::connack(
        a.mqtt_addr,
        connect5_will("bounded", expiry(1), will("wills/bounded"), delayed(60)),
    )
    .await;
    assert_eq!(ack.reason, 0);
    // Both connections die without DISCONNECT: their wills are pending on A.
    drop(back_a);
    drop(bounded);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (back_b, present) = v5_session(b.mqtt_addr, "back", 60).await;
    assert!(present, "resumed on B within the Will Delay");

    // The session's end publishes the bounded will (after 1 s, not 60).
    let p = within(
        Duration::from_secs(5),
        "the bounded will",
        watcher.publish_rx(),
    )
    .await;
    assert_eq!(p.payload, "wills/bounded");
    watcher.send(&Packet::PubAck(response(p.pkid, 0))).await;
    // Past the 2 s delay of the other: no will, its client is back (on B).
    watcher
        .assert_quiet(
            Duration::from_millis(2500),
            "no will for a client that came back on another node",
        )
        .await;
    drop(back_b);

    // The short session expired with nobody reconnecting: gone from the cluster.
    until_some(
        Duration::from_secs(10),
        "the expired session deleted",
        || async { (!kept(&server.url(), "short").await).then_some(()) },
    )
    .await;
    let (mut short, present) = v5_session(b.mqtt_addr, "short", 2).await;
    assert!(!present, "expired: a new session on B");
    let mut p = V5::connect(a.mqtt_addr, "exp-pub").await;
    p.publish("exp/x", QoS::AtLeastOnce, false, b"x").await;
    short
        .assert_quiet(QUIET, "the expired session's subscription is gone")
        .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Point 5 across a restart of everything: with the clients' sessions in NATS (and nothing
/// on the nodes' disks), all three nodes stop — one session away, one connected at the
/// stop — and nats-server restarts from its store; new nodes resume both sessions, with
/// their subscriptions and what was published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_whole_cluster_keeps_sessions() {
    let Some((mut server, [a, b, c])) = nats::cluster(["a", "b", "c"]).await else {
        return;
    };
    let (mut away, _) = v5_session(a.mqtt_addr, "away", 3600).await;
    assert_eq!(
        away.subscribe(&[("w/#", opts(QoS::ExactlyOnce))]).await,
        vec![2]
    );
    away.disconnect(0).await;
    let (mut on, _) = V3::session(b.mqtt_addr, "connected", false).await;
    assert_eq!(on.subscribe(&[("w/#", QoS::AtLeastOnce)]).await, vec![1]);
    let mut p = V5::connect(c.mqtt_addr, "before").await;
    p.publish("w/1", QoS::AtLeastOnce, false, b"before stop")
        .await;
    let mut got_on = Received::default();
    got_on.until(&mut on, 1, "live before the stop").await;
    // The PUBACK is handled before the stop (a PINGRESP answers after it): otherwise the
    // message is rightly sent again after the restart, unacknowledged.
    on.ping().await;
    for gw in [a, b, c] {
        gw.shutdown().await;
    }
    drop(on);
    server.restart();

    let urls = vec![server.url()];
    let a = node(&urls, "a").await;
    let b = node(&urls, "b").await;
    let c = node(&urls, "c").await;
    let mut p = V5::connect(a.mqtt_addr, "after").await;
    p.publish("w/2", QoS::ExactlyOnce, false, b"after restart")
        .await;
    let (mut away, present) = v5_session(c.mqtt_addr, "away", 3600).await;
    assert!(present, "the away session survived");
    let mut got = Received::default();
    got.until(&mut away, 2, "the away session's queue").await;
    assert_eq!(got.delivered, ["before stop", "after restart"]);
    let (mut on, present) = V3::session(a.mqtt_addr, "connected", false).await;
    assert!(present, "the session connected at the stop survived");
    got_on
        .until(&mut on, 2, "the connected session's queue")
        .await;
    assert_eq!(got_on.delivered, ["before stop", "after restart"]);
    on.assert_quiet(QUIET, "nothing twice").await;
    for gw in [a, b, c] {
        gw.shutdown().await;
    }
}

/// Point 5, expiry when the owner dies: a v5 client with a 2 s session is connected to A
/// (the real binary) when A is killed with `kill -9`. Nobody releases the session then, so
/// the sweeping node (B, `[cluster] session_sweep_secs = 1`) notices A is gone (its
/// heartbeat key lapses), releases the session — away from then on — and deletes it once
/// its expiry has passed: the cluster does not keep a dead node's sessions forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_node_was_killed_expires_by_the_sweep() {
    if !nats::available() {
        return;
    }
    let server = nats::NatsServer::start();
    let urls = vec![server.url()];
    let (mut child, mqtt_a, _dir) = binary_node(&server.url(), "a", "");
    let b = node_with(&urls, "b", |c| c.cluster.session_sweep_secs = 1).await;
    let (mut s, _) = v5_session(mqtt_a, "orphan", 2).await;
    assert_eq!(
        s.subscribe(&[("o/#", opts(QoS::AtLeastOnce))]).await,
        vec![1]
    );
    assert!(
        kept(&server.url(), "orphan").await,
        "kept while connected to A"
    );
    child.kill().expect("kill -9");
    let _ = child.wait();
    drop(s);
    // A's heartbeat lapses (10 s), the next sweep releases the session, its 2 s pass, the
    // sweep after that deletes it.
    until_some(
        Duration::from_secs(40),
        "the dead node's session expired",
        || async { (!kept(&server.url(), "orphan").await).then_some(()) },
    )
    .await;
    let (_s, present) = v5_session(b.mqtt_addr, "orphan", 2).await;
    assert!(!present, "expired: a new session");
    b.shutdown().await;
}

/// One PUBLISH as the client saw it: payload, DUP flag.
type Seen = (String, bool);

/// What a subscriber under load saw, and the QoS 2 packet ids it PUBREC'd and has not yet
/// seen released.
#[derive(Default)]
struct Stream {
    seen: Vec<Seen>,
    held: HashSet<u16>,
}

/// Read `c` until `stop` says so (or the server closes it, returning false), answering
/// (PUBACK, PUBREC, PUBCOMP) when `ack`, recording every PUBLISH.
async fn read_until<V: Version>(
    c: &mut Raw<V>,
    st: &mut Stream,
    ack: bool,
    mut stop: impl FnMut(&Stream) -> bool,
) -> bool {
    while !stop(st) {
        match c.recv_for(Duration::from_secs(20)).await {
            Some(Some(Packet::Publish(p))) => {
                st.seen
                    .push((String::from_utf8_lossy(&p.payload).into_owned(), p.dup));
                match p.qos {
                    QoS::AtLeastOnce if ack => {
                        c.send(&Packet::PubAck(response(p.pkid, 0))).await;
                    }
                    QoS::ExactlyOnce if ack => {
                        st.held.insert(p.pkid);
                        c.send(&Packet::PubRec(response(p.pkid, 0))).await;
                    }
                    _ => {}
                }
            }
            Some(Some(Packet::PubRel(r))) if ack => {
                st.held.remove(&r.pkid);
                c.send(&Packet::PubComp(response(r.pkid, 0))).await;
            }
            Some(Some(_)) => {}
            Some(None) => return false,
            None => panic!(
                "nothing from the server for 20 s after {} messages",
                st.seen.len()
            ),
        }
    }
    true
}

/// Point 5 under load, at `qos`: while a publisher on B sends a numbered stream, a
/// persistent session away from A resumes on C (replay of the log merged with live
/// deliveries), then takes itself over from C to A while connected. Every message
/// arrives; each first arrival is in publishing order; and a repeat is only ever a
/// re-sent unacknowledged PUBLISH (DUP=1, MQTT-4.4.0-1), never a message the merge
/// delivered twice.
async fn resume_and_takeover_under_load(qos: QoS) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some((_server, [a, b, c])) = nats::cluster(["a", "b", "c"]).await else {
        return;
    };
    let (mut s, _) = v5_session(a.mqtt_addr, "mover-2", 300).await;
    assert_eq!(s.subscribe(&[("load/#", opts(qos))]).await, vec![qos as u8]);
    s.disconnect(0).await;

    let n_msgs: usize = if qos == QoS::ExactlyOnce { 600 } else { 1200 };
    let sent = Arc::new(AtomicUsize::new(0));
    // Pipelined (many in flight), so B's lane logs runs of them as batches and the resume
    // and the takeover fall inside batches.
    let publisher = tokio::spawn(pipelined(b.mqtt_addr, "load/x", qos, n_msgs, sent.clone()));
    until_some(Duration::from_secs(60), "the publisher's progress", || {
        let sent = sent.clone();
        async move { (sent.load(Ordering::Acquire) >= n_msgs / 4).then_some(()) }
    })
    .await;
    let mut st = Stream::default();
    let (mut on_c, present) = v5_session(c.mqtt_addr, "mover-2", 300).await;
    assert!(present, "resumed on C while the load runs");
    assert!(
        read_until(&mut on_c, &mut st, true, |s| s.seen.len() >= n_msgs / 2).await,
        "C closed early"
    );
    // Take it over from C to A while connected and while messages flow.
    let (mut on_a, ack) = V5::connack(a.mqtt_addr, connect5("mover-2", false, expiry(300))).await;
    assert_eq!(ack.reason, 0);
    assert!(ack.session_present, "Session Present on A");
    assert!(
        !read_until(&mut on_c, &mut st, false, |_| false).await,
        "C closes the taken-over connection"
    );
    let on_c_count = st.seen.len();
    let want: HashSet<String> = (0..n_msgs).map(|n| format!("n{n}")).collect();
    within(Duration::from_secs(60), "the publisher finishes", publisher)
        .await
        .unwrap();
    assert!(
        read_until(&mut on_a, &mut st, true, |s| {
            let have: HashSet<&String> = s.seen.iter().map(|(p, _)| p).collect();
            s.held.is_empty() && want.iter().all(|w| have.contains(w))
        })
        .await,
        "A closed"
    );
    on_a.assert_quiet(QUIET, "nothing after the last").await;

    let seen = &st.seen;
    let mut first: HashSet<&str> = HashSet::new();
    let mut order = Vec::new();
    for (p, dup) in seen {
        if first.insert(p.as_str()) {
            order.push(p[1..].parse::<usize>().unwrap());
        } else {
            let around: Vec<_> = seen
                .iter()
                .enumerate()
                .filter(|(_, (q, _))| q == p)
                .map(|(i, _)| (i, &seen[i.saturating_sub(3)..(i + 3).min(seen.len())]))
                .collect();
            assert!(
                dup,
                "{p} delivered twice without DUP: the merge repeated it; C closed after {on_c_count}; around it: {around:?}"
            );
        }
    }
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "first arrivals out of order: {order:?}"
    );
    println!("{} deliveries for {n_msgs} messages", seen.len());
    for gw in [a, b, c] {
        gw.shutdown().await;
    }
}

/// Publish `n` messages `n0`, `n1`, … to `topic` at `qos` from one v3.1.1 connection with
/// up to 64 in flight (QoS 2: PUBREL on each PUBREC), counting completed exchanges in
/// `done`, in order, until all `n` are complete.
async fn pipelined(
    addr: std::net::SocketAddr,
    topic: &'static str,
    qos: QoS,
    n: usize,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = V3::connect(addr, "load-pub").await.s;
    let (mut rd, wr) = s.into_split();
    let wr = std::sync::Arc::new(tokio::sync::Mutex::new(wr));
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let writer = {
        let (wr, window) = (wr.clone(), window.clone());
        tokio::spawn(async move {
            for i in 0..n {
                window.acquire().await.unwrap().forget();
                let id = (i % 65_000 + 1) as u16;
                let payload = format!("n{i}");
                let mut var = (topic.len() as u16).to_be_bytes().to_vec();
                var.extend_from_slice(topic.as_bytes());
                var.extend_from_slice(&id.to_be_bytes());
                var.extend_from_slice(payload.as_bytes());
                let mut pkt = vec![0x30 | (qos as u8) << 1, var.len() as u8];
                pkt.extend(var);
                wr.lock().await.write_all(&pkt).await.unwrap();
            }
        })
    };
    let mut buf = [0u8; 4];
    let mut completed = 0;
    while completed < n {
        rd.read_exact(&mut buf).await.unwrap();
        match buf[0] {
            0x40 | 0x70 => {
                completed += 1;
                done.store(completed, Ordering::Release);
                window.add_permits(1);
            }
            0x50 => {
                let rel = [0x62, 2, buf[2], buf[3]];
                wr.lock().await.write_all(&rel).await.unwrap();
            }
            other => panic!("unexpected packet {other:#x} for the publisher"),
        }
    }
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_and_takeover_under_qos1_load_miss_nothing_and_repeat_only_unacknowledged() {
    resume_and_takeover_under_load(QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_and_takeover_under_qos2_load_miss_nothing_and_repeat_only_unacknowledged() {
    resume_and_takeover_under_load(QoS::ExactlyOnce).await;
}

/// Point 5, ownership is never two nodes' belief for long: A (the real binary) owns a
/// session and is frozen (`SIGSTOP`), so it answers no takeover request. The client
/// connects to B, which overrules the silent owner after twice `timeout_secs` and takes
/// the session by compare-and-set. When A wakes up (`SIGCONT`) it learns it lost the
/// session (the requests waiting for it, and its next write failing) and closes its stale
/// connection; B's stays and has the subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_is_overruled_and_closes_its_stale_connection_when_it_wakes() {
    if !nats::available() {
        return;
    }
    let server = nats::NatsServer::start();
    let urls = vec![server.url()];
    let (mut child, mqtt_a, _dir) = binary_node(&server.url(), "a", "");
    let b = node_with(&urls, "b", |c| c.cluster.timeout_secs = 1).await;
    let (mut old, _) = v5_session(mqtt_a, "frozen", 300).await;
    assert_eq!(
        old.subscribe(&[("f/#", opts(QoS::AtLeastOnce))]).await,
        vec![1]
    );
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let (mut new, present) = within(
        Duration::from_secs(20),
        "B overrules the frozen owner",
        v5_session(b.mqtt_addr, "frozen", 300),
    )
    .await;
    assert!(present, "B took the session over, Session Present");
    signal("-CONT");
    let mut p = V5::connect(b.mqtt_addr, "frozen-pub").await;
    p.publish("f/1", QoS::AtLeastOnce, false, b"after").await;
    assert_eq!(
        within(WAIT, "the message on B", new.publish_rx())
            .await
            .payload,
        "after"
    );
    // A's stale connection closes (v5 DISCONNECT 0x8E first), whatever it received.
    let closed = within(
        Duration::from_secs(15),
        "A closes its stale connection",
        async {
            loop {
                match old.recv().await {
                    Some(Packet::Disconnect(d)) => break Some(d.reason_code),
                    Some(Packet::Publish(q)) => {
                        old.send(&Packet::PubAck(response(q.pkid, 0))).await;
                    }
                    Some(_) => {}
                    None => break None,
                }
            }
        },
    )
    .await;
    assert_eq!(closed, Some(0x8E), "Session taken over");
    new.assert_quiet(QUIET, "B's connection stays").await;
    p.publish("f/2", QoS::AtLeastOnce, false, b"still").await;
    assert_eq!(
        within(WAIT, "B still owns it", new.publish_rx())
            .await
            .payload,
        "still"
    );
    let _ = child.kill();
    let _ = child.wait();
    b.shutdown().await;
}

/// Point 5 for MQTT 3.1.1 (MQTT-3.1.4-2): a Clean Session 0 client connected to A connects
/// to B; A closes the old network connection (3.1.1 has no server DISCONNECT), B says
/// Session Present and delivers through the session's subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_2_a_v311_client_taken_over_from_a_to_b_while_connected() {
    let Some((_server, [a, b])) = nats::cluster(["a", "b"]).await else {
        return;
    };
    let (mut old, _) = V3::session(a.mqtt_addr, "mover-3", false).await;
    assert_eq!(old.subscribe(&[("m3/#", QoS::ExactlyOnce)]).await, vec![2]);
    let (mut new, present) = V3::session(b.mqtt_addr, "mover-3", false).await;
    assert!(present, "Session Present on B");
    old.expect_closed("A closes the old connection").await;
    let mut p = V5::connect(a.mqtt_addr, "m3-pub").await;
    p.publish("m3/x", QoS::ExactlyOnce, false, b"moved").await;
    let mut got = Received::default();
    got.until(&mut new, 1, "the message on B").await;
    assert_eq!(got.delivered, ["moved"]);
    a.shutdown().await;
    b.shutdown().await;
}
