#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Cluster mode over NATS JetStream (issue 11): three ponte nodes (`ponte::start`
//! in-process, the real binary where a process must die) on real nats-server processes
//! (`tests/nats/mod.rs`), driven by real clients over sockets: reqwest, raw CoAP over UDP,
//! rumqttc and raw MQTT packets. Each test has its own NATS and ports. Without nats-server
//! the tests print SKIP and pass, except in CI.

mod common;
mod nats;

use std::time::{Duration, Instant};

use coap_lite::CoapOption;
use common::*;
use nats::{node, node_with, START, TEST_LOG_BYTES};
use ponte::Gateway;

/// Point 1 and 2: an HTTP PUT on A reaches an MQTT subscriber on B, a CoAP observer on C
/// and an SSE stream on A, once each, with the same payload; a GET on C returns it with
/// the same ETag as on A, within 100 ms of the acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_put_on_a_reaches_mqtt_on_b_coap_on_c_sse_on_a_and_get_on_c() {
    let Some((_server, [a, b, c])) = nats::cluster(["a", "b", "c"]).await else {
        return;
    };

    // A first value, written on B, so C has something to observe (RFC 7641: a 4.04 ends
    // the observation).
    let r = http_put(&b, "things/t1", "20", "text/plain").await;
    assert_eq!(r.status(), 201, "created on B");
    let mut coap_c = Coap::new(c.coap_addr).await;
    until_some(Duration::from_secs(2), "C sees B's value", || async {
        (http_get(&c, "things/t1").await.status() == 200).then_some(())
    })
    .await;
    let (token, first) = coap_c.observe("/r/things/t1").await;
    assert_eq!(code(&first), "2.05");
    assert_eq!(payload_str(&first), "20");
    let mut sub_b = Client::subscriber(b.mqtt_addr, "sub-b", "things/#").await;
    let retained = sub_b.publish_rx().await;
    assert_eq!(&retained.payload[..], b"20", "retained on subscribe");
    let mut sse_a = Sse::open(&a, "things/t1").await;
    sse_a.event_with("20").await;

    let r = http_put(&a, "things/t1", "21.5", "text/plain").await;
    assert_eq!(r.status(), 204, "replaced: A knows B's value");
    let acked = Instant::now();

    let got = sub_b.publish_rx().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("things/t1", &b"21.5"[..])
    );
    let n = coap_c.notification(&token).await;
    assert_eq!(code(&n), "2.05");
    assert_eq!(payload_str(&n), "21.5");
    assert_eq!(
        opt_uint(&n, CoapOption::ContentFormat),
        Some(0),
        "text/plain travelled with the value"
    );
    sse_a.event_with("21.5").await;

    let etag_a = http_get(&a, "things/t1").await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let etag_c = until_some(
        Duration::from_secs(2),
        "GET on C sees the value",
        || async {
            let r = http_get(&c, "things/t1").await;
            (r.status() == 200).then(|| r.headers()["etag"].to_str().unwrap().to_owned())
        },
    )
    .await;
    assert!(
        acked.elapsed() < Duration::from_secs(2),
        "other nodes within the deadline"
    );
    assert_eq!(etag_a, etag_c, "one ETag on every node");
    sub_b.expect_silence("delivered once").await;

    for gw in [a, b, c] {
        gw.shutdown().await;
    }
}

/// Point 3: two nodes racing `If-None-Match: *` on the same thing give exactly one 201
/// and one 412, every time; racing `If-Match` with the same ETag gives one 204 and one 412.
/// The conditions are decided against the cluster-wide revision, not each node's mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_race_between_a_and_b_has_exactly_one_winner() {
    let Some((_server, [a, b])) = nats::cluster(["a", "b"]).await else {
        return;
    };
    let put = |gw: &Gateway, topic: String, body: &'static str, header: (&'static str, String)| {
        let url = url(gw, &topic);
        async move {
            http()
                .put(url)
                .header(header.0, header.1)
                .body(body)
                .send()
                .await
                .expect("PUT sent")
        }
    };
    for i in 0..10 {
        let topic = format!("race/{i}");
        let (ra, rb) = tokio::join!(
            put(&a, topic.clone(), "from-a", ("if-none-match", "*".into())),
            put(&b, topic.clone(), "from-b", ("if-none-match", "*".into())),
        );
        let mut codes = [ra.status().as_u16(), rb.status().as_u16()];
        codes.sort();
        assert_eq!(codes, [201, 412], "round {i}: one creates, one is refused");
        let winner = if ra.status() == 201 {
            "from-a"
        } else {
            "from-b"
        };
        for gw in [&a, &b] {
            until_some(
                Duration::from_secs(2),
                "both nodes hold the winner",
                || async {
                    let r = http_get(gw, &topic).await;
                    (r.text().await.unwrap_or_default() == winner).then_some(())
                },
            )
            .await;
        }
        // If-Match with the (cluster-wide) ETag: again exactly one wins.
        let etag = http_get(&a, &topic).await.headers()["etag"]
            .to_str()
            .unwrap()
            .to_owned();
        let etag_b = http_get(&b, &topic).await.headers()["etag"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(etag, etag_b, "one ETag on both nodes");
        let (ra, rb) = tokio::join!(
            put(&a, topic.clone(), "a2", ("if-match", etag.clone())),
            put(&b, topic.clone(), "b2", ("if-match", etag.clone())),
        );
        let mut codes = [ra.status().as_u16(), rb.status().as_u16()];
        codes.sort();
        assert_eq!(codes, [204, 412], "round {i}: one replaces, one is refused");
    }
    // CoAP compares against the same cluster-wide revision: its ETag is the HTTP one, and
    // If-None-Match on a thing created on another node is 4.12 (RFC 7252 §5.10.8.2).
    let mut coap_b = Coap::new(b.coap_addr).await;
    let r = coap_b.get("/r/race/0").await;
    let coap_tag = r
        .get_first_option(CoapOption::ETag)
        .cloned()
        .expect("CoAP ETag");
    let http_tag = http_get(&a, "race/0").await.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    assert_eq!(
        u64::from_str_radix(&http_tag, 16).unwrap(),
        coap_tag.iter().fold(0u64, |v, b| v << 8 | u64::from(*b)),
        "one version in both protocols on both nodes"
    );
    let mut p = coap_b.request(coap_lite::RequestType::Put, "/r/race/0");
    p.add_option(CoapOption::IfNoneMatch, Vec::new());
    p.payload = b"coap".to_vec();
    let r = coap_b.exchange(&p).await;
    assert_eq!(code(&r), "4.12", "exists cluster-wide");
    // A stale mirror never refuses a write: DELETE on B right after a create on A.
    let r = http_put(&a, "race/fresh", "x", "text/plain").await;
    assert_eq!(r.status(), 201);
    let r = http_delete(&b, "race/fresh").await;
    assert_eq!(r.status(), 204, "B deletes what A just created");
    assert_eq!(http_get(&b, "race/fresh").await.status(), 404);
    for gw in [a, b] {
        gw.shutdown().await;
    }
}

/// Points 1 and 9: MQTT 5 PUBLISHes on A to topics with `.`, spaces, `*`, `>`, empty
/// levels, `$`, non-ASCII and 3,000 levels reach subscribers on C (`#`, `+/…`) unchanged,
/// with every MQTT 5 property; `$`-topics only reach `$`-filters; a DELETE on B clears the
/// value on A; a will from A reaches B; a node delivers its own messages once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nasty_topics_properties_wildcards_deletes_and_wills_cross_nodes() {
    use ponte_mqtt::{Packet, Properties, QoS};
    use {connect3, publish, publish5, will, V3, V5};
    let Some((_server, [a, b, c])) = nats::cluster(["a", "b", "c"]).await else {
        return;
    };

    let mut sub_c = V5::connect(c.mqtt_addr, "sub-c").await;
    assert_eq!(
        sub_c
            .subscribe(&[
                ("#", opts(QoS::AtLeastOnce)),
                ("$x/#", opts(QoS::AtLeastOnce)),
            ])
            .await,
        vec![1, 1]
    );
    let mut own_a = V5::connect(a.mqtt_addr, "own-a").await;
    own_a.subscribe(&[("#", opts(QoS::AtLeastOnce))]).await;
    let mut pub_a = V5::connect(a.mqtt_addr, "pub-a").await;
    let long = format!("long/{}/end", "x.".repeat(1500));
    let topics = [
        "a.b/ /*/>/ü",
        "/",
        "x//y/",
        "$x/dollar",
        "_24x/not-dollar",
        "東京/🙂",
        long.as_str(),
    ];
    let props = Properties {
        content_type: Some("application/json".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"\x00\x01corr")),
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        user_properties: vec![("k".into(), "v1".into()), ("k".into(), "v2".into())],
        ..Default::default()
    };
    for (i, t) in topics.iter().enumerate() {
        let mut p = publish(
            t,
            QoS::AtLeastOnce,
            1,
            false,
            format!("{{\"n\":{i}}}").as_bytes(),
        );
        p.pkid = 1;
        pub_a.send(&publish5(p, props.clone())).await;
        match pub_a.recv().await {
            Some(Packet::PubAck(r)) => assert_eq!(
                r.reason_code, 0,
                "{t:?}: success, not 0x10: other nodes may have subscribers"
            ),
            other => panic!("PUBACK expected for {t:?}: {other:?}"),
        }
    }
    for (i, t) in topics.iter().enumerate() {
        let got = sub_c.publish_rx().await;
        assert_eq!(got.topic, *t, "topic unchanged across nodes");
        assert_eq!(&got.payload[..], format!("{{\"n\":{i}}}").as_bytes());
        let p = &got.properties;
        assert_eq!(p.content_type, props.content_type);
        assert_eq!(p.response_topic, props.response_topic);
        assert_eq!(p.correlation_data, props.correlation_data);
        assert_eq!(p.payload_format_indicator, Some(1));
        assert_eq!(p.user_properties, props.user_properties, "in order");
        assert!(
            p.message_expiry_interval
                .is_some_and(|e| e > 3500 && e <= 3600),
            "the remaining expiry: {:?}",
            p.message_expiry_interval
        );
    }
    for t in topics.iter().filter(|t| !t.starts_with('$')) {
        // `#` does not match `$x/dollar` (MQTT-4.7.2-1), on A as on C.
        let own = own_a.publish_rx().await;
        assert_eq!(own.topic, *t, "A delivers its own message, once");
    }
    sub_c.assert_quiet(QUIET, "each message once").await;
    own_a
        .assert_quiet(QUIET, "A does not hear its own messages back from the log")
        .await;

    // Retained on A, deleted on B: gone on A too.
    http_put(&a, "del/me", "v", "text/plain").await;
    until_some(Duration::from_secs(2), "B sees it", || async {
        (http_get(&b, "del/me").await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(http_delete(&b, "del/me").await.status(), 204);
    until_some(Duration::from_secs(2), "A no longer has it", || async {
        (http_get(&a, "del/me").await.status() == 404).then_some(())
    })
    .await;

    // A will from a client of A that vanishes reaches a subscriber on B.
    let mut sub_b = V3::connect(b.mqtt_addr, "sub-b").await;
    sub_b.subscribe(&[("wills/#", QoS::AtLeastOnce)]).await;
    let (dying, _) = V3::connect_with(
        a.mqtt_addr,
        connect3(
            "dying",
            true,
            30,
            Some(will("wills/dying", b"gone", QoS::AtLeastOnce, false)),
        ),
    )
    .await;
    drop(dying);
    let w = sub_b.publish_rx().await;
    assert_eq!(
        (w.topic.as_str(), &w.payload[..]),
        ("wills/dying", &b"gone"[..])
    );
    for gw in [a, b, c] {
        gw.shutdown().await;
    }
}

/// Point 6: `$share/g/jobs/#` with one member on each of A, B and C: every message
/// published (on A, over MQTT, and on C, over HTTP) reaches exactly one member across the
/// cluster. Without cluster-wide groups each node's member would get its own copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_8_2_shared_subscription_spans_nodes_one_member_per_message() {
    let Some((_server, [a, b, c])) = nats::cluster(["a", "b", "c"]).await else {
        return;
    };
    let mut members = Vec::new();
    for (i, gw) in [&a, &b, &c].iter().enumerate() {
        members.push(
            Client::subscriber(gw.mqtt_addr, &format!("member-{i}"), "$share/g/jobs/#").await,
        );
    }
    let mut publisher = Client::connect(a.mqtt_addr, "jobs-pub").await.0;
    const N: usize = 30;
    for i in 0..N {
        if i % 2 == 0 {
            publisher
                .publish(
                    &format!("jobs/{i}"),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    format!("job {i}").as_bytes(),
                )
                .await;
        } else {
            let r = http_put(&c, &format!("jobs/{i}"), format!("job {i}"), "text/plain").await;
            assert!(r.status().is_success());
        }
    }
    let mut got: Vec<(usize, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} jobs arrived: {got:?}",
            got.len()
        );
        for (m, member) in members.iter_mut().enumerate() {
            if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) =
                tokio::time::timeout(Duration::from_millis(20), member.next()).await
            {
                got.push((m, String::from_utf8_lossy(&p.payload).into_owned()));
            }
        }
    }
    for member in members.iter_mut() {
        member.expect_silence("no second copy").await;
    }
    let mut jobs: Vec<&str> = got.iter().map(|(_, j)| j.as_str()).collect();
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), N, "every job once: {got:?}");
    for gw in [a, b, c] {
        gw.shutdown().await;
    }
}

/// Point 7: each node publishes its own `$SYS/broker/...`, with its name under
/// `$SYS/broker/node`; none of it crosses to other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_stay_on_their_node_and_name_it() {
    if !nats::available() {
        return;
    }
    let server = nats::NatsServer::start();
    let urls = vec![server.url()];
    let a = node_with(&urls, "node-a", |c| c.mqtt.sys_interval_secs = 1).await;
    let b = node_with(&urls, "node-b", |c| c.mqtt.sys_interval_secs = 1).await;
    for (gw, name) in [(&a, "node-a"), (&b, "node-b")] {
        until_some(Duration::from_secs(5), "$SYS/broker/node", || async {
            let r = http_get(gw, "$SYS/broker/node").await;
            (r.status() == 200 && r.text().await.unwrap_or_default() == name).then_some(())
        })
        .await;
    }
    let mut sub = Client::subscriber(b.mqtt_addr, "sys-b", "$SYS/broker/node").await;
    assert_eq!(&sub.publish_rx().await.payload[..], b"node-b");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sub.expect_silence("A's $SYS does not reach B").await;
    for gw in [a, b] {
        gw.shutdown().await;
    }
}

/// Node names are unique: a second live node with the same name refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_node_with_the_same_name_refuses_to_start() {
    let Some((server, [a])) = nats::cluster(["same"]).await else {
        return;
    };
    let c = nats::node_config(&[server.url()], "same");
    let err = within(START, "second start", ponte::start(c))
        .await
        .expect_err("the name is taken");
    let msg = err.to_string();
    assert!(msg.contains("\"same\"") && msg.contains("in use"), "{msg}");
    a.shutdown().await;
}

/// Point 8: NATS stopped mid-run. While it is down the nodes are not ready, reads go on
/// from the mirror, and every write is refused, never silently dropped: HTTP 503
/// problem+json with Retry-After, CoAP 5.03, MQTT 5 PUBACK 0x80 with a Reason String,
/// MQTT 3.1.1 closes the connection without a PUBACK (MQTT-4.8.0-2). NATS restarted on the
/// same port and store: the nodes re-sync by themselves, the 3.1.1 client's re-send is
/// acknowledged, and writes cross nodes again; nothing acknowledged before was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_refuses_writes_serves_reads_and_recovers() {
    use ponte_mqtt::{Packet, Properties, QoS};
    use {connect3, publish, publish5, V3, V5};
    let Some((mut server, [a, b])) = nats::cluster(["a", "b"]).await else {
        return;
    };
    assert_eq!(
        http_put(&a, "deg/kept", "before", "text/plain")
            .await
            .status(),
        201
    );
    until_some(Duration::from_secs(2), "B has it", || async {
        (http_get(&b, "deg/kept").await.status() == 200).then_some(())
    })
    .await;
    let mut v5 = V5::connect(a.mqtt_addr, "deg-v5").await;
    let (mut v3, _) = V3::connect_with(b.mqtt_addr, connect3("deg-v3", false, 60, None)).await;

    server.kill();
    until_some(
        Duration::from_secs(5),
        "nodes notice NATS is gone",
        || async { (!a.backbone_ready() && !b.backbone_ready()).then_some(()) },
    )
    .await;

    // HTTP: 503 problem+json with Retry-After; the value is not stored.
    let r = http_put(&a, "deg/new", "lost?", "text/plain").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"), "Retry-After");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("NATS"), "the problem says why: {body}");
    assert_eq!(http_get(&a, "deg/new").await.status(), 404);
    // Reads keep working from the mirror.
    let r = http_get(&b, "deg/kept").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "before");
    // CoAP: 5.03.
    let mut coap = Coap::new(b.coap_addr).await;
    let r = coap.put("/r/deg/coap", b"x", None).await;
    assert_eq!(code(&r), "5.03", "{}", payload_str(&r));
    let r = coap.get("/r/deg/kept").await;
    assert_eq!(code(&r), "2.05", "CoAP reads from the mirror");
    // MQTT 5: PUBACK 0x80 with a Reason String; the connection stays.
    v5.send(&publish5(
        publish("deg/v5", QoS::AtLeastOnce, 5, false, b"x"),
        Properties::default(),
    ))
    .await;
    match v5.recv().await {
        Some(Packet::PubAck(r)) => {
            assert_eq!((r.pkid, r.reason_code), (5, 0x80));
            let why = r.properties.into_inner().reason_string.unwrap_or_default();
            assert!(why.contains("NATS"), "Reason String: {why:?}");
        }
        other => panic!("PUBACK 0x80 expected: {other:?}"),
    }
    v5.ping().await;
    // MQTT 3.1.1: no negative PUBACK, so the connection closes without one.
    v3.send(&Packet::Publish(publish(
        "deg/v3",
        QoS::AtLeastOnce,
        9,
        true,
        b"v3",
    )))
    .await;
    let seen = v3.expect_closed("the close after the refused write").await;
    assert!(
        !seen.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "no PUBACK: {seen:?}"
    );

    server.restart();
    for gw in [&a, &b] {
        until_some(
            Duration::from_secs(15),
            "ready again after NATS returns",
            || async { gw.backbone_ready().then_some(()) },
        )
        .await;
    }
    // The 3.1.1 client re-sends (DUP) and is acknowledged; the value crosses to A.
    let (mut v3, _) = V3::connect_with(b.mqtt_addr, connect3("deg-v3", false, 60, None)).await;
    let mut again = publish("deg/v3", QoS::AtLeastOnce, 9, true, b"v3");
    again.dup = true;
    v3.send(&Packet::Publish(again)).await;
    v3.expect(Packet::PubAck(ponte_mqtt::PubResponse::success(9)))
        .await;
    until_some(
        Duration::from_secs(2),
        "A reads the re-sent value",
        || async {
            let r = http_get(&a, "deg/v3").await;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let mut sub = Client::subscriber(b.mqtt_addr, "deg-sub", "deg/live").await;
    assert_eq!(
        http_put(&a, "deg/live", "after", "text/plain")
            .await
            .status(),
        201
    );
    assert_eq!(
        &sub.publish_rx().await.payload[..],
        b"after",
        "live delivery again"
    );
    let r = http_get(&a, "deg/kept").await;
    assert_eq!(
        r.text().await.unwrap(),
        "before",
        "nothing acknowledged was lost"
    );
    for gw in [a, b] {
        gw.shutdown().await;
    }
}

/// Point 8: a node started while NATS is down keeps retrying and is not ready (writes
/// refused) until NATS appears; then it provisions, syncs and takes writes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_started_before_nats_becomes_ready_when_nats_appears() {
    if !nats::available() {
        return;
    }
    let port = nats::free_port();
    let mut c = ponte::config::Config::ephemeral();
    c.cluster.urls = vec![format!("nats://127.0.0.1:{port}")];
    c.cluster.node = Some("early".into());
    c.cluster.retention_bytes = TEST_LOG_BYTES;
    c.cluster.start_wait_secs = 0;
    let a = within(WAIT, "start without NATS", ponte::start(c))
        .await
        .expect("starts, not ready");
    assert!(!a.backbone_ready());
    let readyz = |gw: &Gateway| {
        let url = format!("http://{}/readyz?verbose", gw.http_addr);
        async move {
            let r = reqwest::get(url).await.expect("GET /readyz");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let (code, body) = readyz(&a).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[-]backbone"), "{body}");
    let r = http_put(&a, "early/x", "1", "text/plain").await;
    assert_eq!(r.status(), 503, "not ready: writes refused");
    let server = nats::NatsServer::start_on(port);
    until_some(
        Duration::from_secs(15),
        "ready once NATS is there",
        || async { a.backbone_ready().then_some(()) },
    )
    .await;
    let (code, body) = readyz(&a).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("[+]backbone ok"), "{body}");
    assert_eq!(
        http_put(&a, "early/x", "1", "text/plain").await.status(),
        201
    );
    a.shutdown().await;
    drop(server);
}

/// A raw MQTT 3.1.1 publisher that pipelines QoS 1 PUBLISHes (ids 1..=n, payload `m{id}`,
/// every third retained on its own topic) and records which were acknowledged, until the
/// server goes away or all are acknowledged.
async fn pipelined_publisher(
    addr: std::net::SocketAddr,
    n: u16,
    retain_every: u16,
    acked: std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = V3::connect(addr, "loader").await.s;
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for id in 1..=n {
            let retain = retain_every != 0 && id % retain_every == 0;
            let topic = if retain {
                format!("load/r{id}")
            } else {
                "load/live".to_string()
            };
            let payload = format!("m{id}");
            let mut var = (topic.len() as u16).to_be_bytes().to_vec();
            var.extend_from_slice(topic.as_bytes());
            var.extend_from_slice(&id.to_be_bytes());
            var.extend_from_slice(payload.as_bytes());
            let mut pkt = vec![0x32 | u8::from(retain), var.len() as u8];
            pkt.extend(var);
            if wr.write_all(&pkt).await.is_err() {
                return;
            }
            if id % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut buf = [0u8; 4];
    while rd.read_exact(&mut buf).await.is_ok() {
        assert_eq!(buf[0..2], [0x40, 2], "only PUBACKs come back");
        let id = u16::from_be_bytes([buf[2], buf[3]]);
        let mut a = acked.lock().unwrap();
        a.push(id);
        if a.len() == n as usize {
            break;
        }
    }
    writer.abort();
}

/// Points 1 and 4 with batches: a pipelined burst of QoS 1 writes to one thing on A is
/// logged as fewer log messages than writes (runs of writes queued together share one
/// JetStream message and acknowledgement), and B's subscriber still gets every write once,
/// in publishing order (MQTT-4.6.0-6); every one was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_burst_is_logged_in_batches_and_reaches_b_once_in_order() {
    use std::sync::{Arc, Mutex};
    let Some((server, [a, b])) = nats::cluster(["a", "b"]).await else {
        return;
    };
    let mut sub = V3::connect(b.mqtt_addr, "burst-sub").await;
    sub.subscribe(&[("load/#", ponte_mqtt::QoS::AtLeastOnce)])
        .await;
    let n: u16 = 2000;
    let acked = Arc::new(Mutex::new(Vec::new()));
    within(
        Duration::from_secs(60),
        "every write acknowledged",
        pipelined_publisher(a.mqtt_addr, n, 0, acked.clone()),
    )
    .await;
    let mut got = Vec::new();
    within(Duration::from_secs(30), "every write on B", async {
        while got.len() < usize::from(n) {
            let p = sub.publish_rx().await;
            sub.send(&ponte_mqtt::Packet::PubAck(
                ponte_mqtt::PubResponse::success(p.pkid),
            ))
            .await;
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
    })
    .await;
    let want: Vec<String> = (1..=n).map(|id| format!("m{id}")).collect();
    assert_eq!(got, want, "once each, in publishing order");
    sub.assert_quiet(Duration::from_millis(300), "no repeats")
        .await;

    let nc = async_nats::connect(server.url()).await.unwrap();
    let mut log = async_nats::jetstream::new(nc)
        .get_stream("PONTE_LOG")
        .await
        .unwrap();
    let messages = log.info().await.unwrap().state.messages;
    assert!(
        messages < u64::from(n),
        "{n} writes were logged as {messages} log messages: no batches"
    );
    println!("{n} writes logged as {messages} log messages");
    for gw in [a, b] {
        gw.shutdown().await;
    }
}

/// Batches respect the NATS server's `max_payload`: with 16 KiB, a pipelined burst of
/// 3 KB writes to one thing is still logged in batches (each under the limit), every write
/// is acknowledged (none refused for a batch too large), and B gets them all in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_fit_a_small_nats_max_payload() {
    if !nats::available() {
        return;
    }
    let server = nats::NatsServer::start_with("max_payload: 16384\n");
    let urls = [server.url()];
    let (a, b) = (node(&urls, "a").await, node(&urls, "b").await);
    let mut sub = V3::connect(b.mqtt_addr, "mp-sub").await;
    sub.subscribe(&[("mp/#", ponte_mqtt::QoS::AtLeastOnce)])
        .await;
    const N: usize = 300;
    let (client, mut events) = rumqttc::AsyncClient::new(options(a.mqtt_addr, "mp-pub"), N + 10);
    for i in 0..N {
        let mut payload = format!("{i:05}").into_bytes();
        payload.resize(3000, b'.');
        client
            .publish("mp/t", rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let mut acked = 0;
    within(Duration::from_secs(30), "every PUBACK", async {
        while acked < N {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher's connection failed after {acked} PUBACKs: {e}"),
            }
        }
    })
    .await;
    let mut got = Vec::new();
    within(Duration::from_secs(30), "every write on B", async {
        while got.len() < N {
            let p = sub.publish_rx().await;
            sub.send(&ponte_mqtt::Packet::PubAck(
                ponte_mqtt::PubResponse::success(p.pkid),
            ))
            .await;
            got.push(String::from_utf8_lossy(&p.payload[..5]).into_owned());
        }
    })
    .await;
    let want: Vec<String> = (0..N).map(|i| format!("{i:05}")).collect();
    assert_eq!(got, want, "once each, in order");
    let nc = async_nats::connect(server.url()).await.unwrap();
    let mut log = async_nats::jetstream::new(nc)
        .get_stream("PONTE_LOG")
        .await
        .unwrap();
    let messages = log.info().await.unwrap().state.messages;
    println!("{N} writes of 3 KB logged as {messages} messages under a 16 KiB max_payload");
    assert!(messages < N as u64, "no batches: {messages} log messages");
    for gw in [a, b] {
        gw.shutdown().await;
    }
}

/// Point 4: `kill -9` of the accepting node (the real binary) under pipelined QoS 1
/// load loses nothing it acknowledged: every PUBACKed message reaches a subscriber on B,
/// and every PUBACKed retained value is readable on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_accepting_node_loses_nothing_acknowledged() {
    use std::sync::{Arc, Mutex};
    let Some((server, [b])) = nats::cluster(["b"]).await else {
        return;
    };
    let mut sub = V3::connect(b.mqtt_addr, "kill-sub").await;
    sub.subscribe(&[("load/#", ponte_mqtt::QoS::AtLeastOnce)])
        .await;

    // The test's log bound and start wait, through a config file as a user would.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("a.toml");
    std::fs::write(
        &toml,
        format!(
            "[cluster]\nretention_bytes = {TEST_LOG_BYTES}\nstart_wait_secs = {}\n",
            START.as_secs()
        ),
    )
    .unwrap();
    let url = server.url();
    let args = ["--memory", "--cluster", &url, "--node", "a", "-c"];
    let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    args.push(toml.as_os_str());
    let a = Ponte::start_within(&args, START);
    let mqtt_a = a.mqtt;

    let acked = Arc::new(Mutex::new(Vec::new()));
    // Every tenth retained: the runs of plain writes between them are logged as batches.
    let load = tokio::spawn(pipelined_publisher(mqtt_a, 3000, 10, acked.clone()));
    until_some(Duration::from_secs(30), "some acknowledgements", || async {
        (acked.lock().unwrap().len() >= 300).then_some(())
    })
    .await;
    a.stop("-KILL");
    let _ = within(WAIT, "the publisher notices", load).await;
    let acked: Vec<u16> = acked.lock().unwrap().clone();
    assert!(
        acked.len() < 3000,
        "the kill came before the end of the load ({} acknowledged)",
        acked.len()
    );

    // Every acknowledged message reaches B's subscriber (maybe more: unacknowledged ones
    // that were stored are allowed, QoS 1 is at least once).
    let mut got = std::collections::HashSet::new();
    let want: std::collections::HashSet<String> = acked.iter().map(|id| format!("m{id}")).collect();
    within(
        Duration::from_secs(15),
        "every acknowledged message on B",
        async {
            while !want.is_subset(&got) {
                let p = sub.publish_rx().await;
                if p.qos != ponte_mqtt::QoS::AtMostOnce {
                    sub.send(&ponte_mqtt::Packet::PubAck(
                        ponte_mqtt::PubResponse::success(p.pkid),
                    ))
                    .await;
                }
                got.insert(String::from_utf8_lossy(&p.payload).into_owned());
            }
        },
    )
    .await;
    for id in acked.iter().filter(|id| *id % 10 == 0) {
        let r = http_get(&b, &format!("load/r{id}")).await;
        assert_eq!(r.status(), 200, "acknowledged retained load/r{id} is on B");
        assert_eq!(r.text().await.unwrap(), format!("m{id}"));
    }
    b.shutdown().await;
}

/// Point 4 on a 3-server NATS cluster with replicas 3: one nats-server is killed under
/// QoS 1 load; every write acknowledged (before, during and after) reaches node B and
/// every acknowledged retained value is readable on B. Writes refused while JetStream
/// elects new leaders are refused (PUBACK 0x80), never acknowledged and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_server_nats_cluster_with_replicas_3_survives_a_killed_server() {
    use ponte_mqtt::{Packet, Properties, QoS};
    use {publish, publish5, V5};
    if !nats::available() {
        return;
    }
    let mut cluster = nats::NatsCluster::start(3);
    let urls = cluster.urls();
    let cfg = |c: &mut ponte::config::Config| {
        c.cluster.replicas = 3;
        // A write JetStream cannot confirm within 2 s (leaders moving) is refused.
        c.cluster.timeout_secs = 2;
    };
    let a = node_with(&urls, "a", cfg).await;
    let b = node_with(&urls, "b", cfg).await;
    let mut sub = V5::connect(b.mqtt_addr, "r3-sub").await;
    sub.subscribe(&[("r3/#", opts(QoS::AtLeastOnce))]).await;
    let mut pubr = V5::connect(a.mqtt_addr, "r3-pub").await;
    let mut acked = Vec::new();
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 1..=300u16 {
        if i == 100 {
            cluster.servers[1].kill();
        }
        let retain = i % 2 == 0;
        let topic = if retain {
            format!("r3/v{i}")
        } else {
            "r3/live".into()
        };
        // As a client would: a refused write (0x80) is sent again until it is taken.
        loop {
            pubr.send(&publish5(
                publish(
                    &topic,
                    QoS::AtLeastOnce,
                    i,
                    retain,
                    format!("n{i}").as_bytes(),
                ),
                Properties::default(),
            ))
            .await;
            match pubr.recv().await {
                Some(Packet::PubAck(r)) if r.reason_code == 0 => {
                    acked.push(i);
                    break;
                }
                Some(Packet::PubAck(r)) if r.reason_code == 0x80 => {
                    refused += 1;
                    assert!(
                        Instant::now() < deadline,
                        "still refused after a minute: {:?}",
                        r.properties.reason_string
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("PUBACK expected for {i}: {other:?}"),
            }
        }
    }
    assert_eq!(
        acked.len(),
        300,
        "every write was taken in the end ({refused} refusals on the way)"
    );
    let want: std::collections::HashSet<String> = acked.iter().map(|i| format!("n{i}")).collect();
    let mut got = std::collections::HashSet::new();
    // B's hearing consumer may have lived on the killed server: it is recreated once
    // JetStream has new leaders, which can take seconds; then everything arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want.is_subset(&got) {
        assert!(
            Instant::now() < deadline,
            "acknowledged but never delivered on B: {:?}",
            want.difference(&got).collect::<Vec<_>>()
        );
        match tokio::time::timeout(Duration::from_millis(500), sub.recv()).await {
            Err(_) => continue,
            Ok(Some(Packet::Publish(p))) => {
                sub.send(&Packet::PubAck(ponte_mqtt::PubResponse {
                    pkid: p.pkid,
                    reason_code: 0,
                    properties: Default::default(),
                }))
                .await;
                got.insert(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("B closed the subscriber's connection"),
        }
    }
    for i in acked.iter().filter(|i| *i % 2 == 0) {
        let r = http_get(&b, &format!("r3/v{i}")).await;
        assert_eq!(r.status(), 200, "acknowledged retained r3/v{i} is on B");
    }
    for gw in [a, b] {
        gw.shutdown().await;
    }
}

/// A write larger than one NATS message (`max_payload`, 1 MiB by default) gets HTTP's own
/// 413 — the body limit is lowered to fit at start — not a 503 no retry could cure; one
/// that fits is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_larger_than_nats_max_payload_get_413() {
    if !nats::available() {
        return;
    }
    let server = nats::NatsServer::start();
    let a = node(&[server.url()], "a").await;
    // Announced, not sent: the node answers 413 from Content-Length alone (a client like
    // curl with `Expect: 100-continue` sends nothing more). Sending the 1.5 MiB too raced
    // the node's close after its early answer: the client could get a reset instead.
    let status = within(WAIT, "the 413", async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(a.http_addr).await.unwrap();
        let head = format!(
            "PUT /resources/big/x HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            a.http_addr,
            1536 * 1024
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_owned()
    })
    .await;
    assert!(
        status.starts_with("HTTP/1.1 413"),
        "over NATS's max_payload: {status}"
    );
    let r = http_put(
        &a,
        "big/x",
        vec![b'x'; 512 * 1024],
        "application/octet-stream",
    )
    .await;
    assert_eq!(r.status(), 201, "within it");
    a.shutdown().await;
}
