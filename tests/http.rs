//! The HTTP front-end over a real socket: `ponte::start` plus reqwest.

use std::time::Duration;

use futures_util::StreamExt;
use ponte::config::Config;
use reqwest::header::{CONTENT_TYPE, ETAG, LOCATION};
use reqwest::StatusCode;

fn url(gateway: &ponte::Gateway, path: &str) -> String {
    format!("http://{}{}", gateway.http_addr, path)
}

#[tokio::test]
async fn put_get_head_delete_round_trip() {
    let gw = ponte::start(Config::ephemeral()).await.expect("start");
    let c = reqwest::Client::new();
    let u = url(&gw, "/resources/home/kitchen");
    let r = c
        .put(&u)
        .header(CONTENT_TYPE, "application/json")
        .body("{\"t\":21}")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()[LOCATION], "/resources/home/kitchen");
    let tag = r.headers()[ETAG].clone();

    let r = c.get(&u).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(r.headers()[ETAG], tag);
    assert_eq!(r.text().await.expect("body"), "{\"t\":21}");

    let r = c.head(&u).send().await.expect("HEAD");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "8");
    assert!(r.bytes().await.expect("body").is_empty());

    let r = c.delete(&u).send().await.expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c.get(&u).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    let problem: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.expect("body")).expect("problem json");
    assert_eq!(problem["status"], 404);
    assert_eq!(problem["detail"], "no value is stored for \"home/kitchen\"");

    // The raw path is the topic: empty segments survive, segments are decoded one by one,
    // the query is not part of it.
    let r = c
        .put(url(&gw, "/resources//x/a%20b?q=1"))
        .body("v")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::CREATED);
    let topic = ponte::model::TopicName::parse("/x/a b").expect("topic");
    assert_eq!(gw.broker.get(&topic).expect("stored").payload, "v");
    gw.shutdown().await;
}

#[tokio::test]
async fn large_body_is_stored_whole() {
    let gw = ponte::start(Config::ephemeral()).await.expect("start");
    let c = reqwest::Client::new();
    let body: Vec<u8> = (0..300 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let u = url(&gw, "/resources/big");
    let r = c.put(&u).body(body.clone()).send().await.expect("PUT");
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = c
        .get(&u)
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the 300 KB body comes back byte-identical");
    gw.shutdown().await;
}

#[tokio::test]
async fn body_over_max_is_413() {
    let mut config = Config::ephemeral();
    config.http.max_body = 1024;
    let gw = ponte::start(config).await.expect("start");
    let c = reqwest::Client::new();
    let r = c
        .put(url(&gw, "/resources/x"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    // Chunked (no Content-Length): refused while reading.
    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 512]))),
    );
    let r = c
        .put(url(&gw, "/resources/x"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = c.get(url(&gw, "/resources/x")).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    gw.shutdown().await;
}

/// Read from an SSE byte stream until `want` has been seen; return everything read.
async fn read_until<S>(stream: &mut S, buf: &mut String, want: &str)
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    while !buf.contains(want) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an SSE chunk within 10 s")
            .expect("stream still open")
            .expect("chunk");
        buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
}

#[tokio::test]
async fn sse_streams_current_value_then_later_puts_and_ends_on_shutdown() {
    let gw = ponte::start(Config::ephemeral()).await.expect("start");
    let c = reqwest::Client::new();
    let u = url(&gw, "/resources/sensor/1");
    c.put(&u).body("20").send().await.expect("PUT");
    let r = c
        .get(&u)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET SSE");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/event-stream");
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    read_until(&mut stream, &mut buf, "data: 20\n\n").await;
    assert!(
        buf.starts_with("event: message\nid: 1\ndata: 20\n\n"),
        "{buf:?}"
    );
    c.put(&u).body("21").send().await.expect("PUT");
    read_until(&mut stream, &mut buf, "data: 21\n\n").await;
    assert!(
        buf.contains("event: message\nid: 2\ndata: 21\n\n"),
        "{buf:?}"
    );

    // Graceful shutdown is not held up by the open stream, and ends it.
    tokio::time::timeout(Duration::from_secs(10), gw.shutdown())
        .await
        .expect("shutdown completes with an SSE client connected");
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream ended");
}

#[tokio::test]
async fn persisted_value_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::ephemeral();
    config.store.memory = false;
    config.store.db = dir.path().join("db");
    let c = reqwest::Client::new();

    let gw = ponte::start(config.clone()).await.expect("start");
    let r = c
        .put(url(&gw, "/resources/kept"))
        .header(CONTENT_TYPE, "text/plain")
        .body("still here")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::CREATED);
    let tag = r.headers()[ETAG].clone();
    gw.shutdown().await;

    let gw = ponte::start(config).await.expect("restart");
    let r = c
        .get(url(&gw, "/resources/kept"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/plain");
    assert_eq!(r.headers()[ETAG], tag);
    assert_eq!(r.text().await.expect("body"), "still here");
    gw.shutdown().await;
}
