#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Issue 16, "Lean and hard to knock over", over real sockets: the global budget for queued
//! message bytes (`[limits] max_queued_bytes`) drops and counts whatever the readers do,
//! `[mqtt] max_queued = 0` is no per-client limit, and no request is left open forever
//! (HTTP bodies that stall get 408, a connection cap answers 503, half a WebSocket or
//! CoAP-over-TCP frame that stalls is closed).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

// ---------------------------------------------------------------------------------------
// Raw MQTT 3.1.1, enough to pipeline publishes and count what a session gets
// ---------------------------------------------------------------------------------------

fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            return;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining_length(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// CONNECT, 3.1.1, keep-alive off, with the Clean Session flag as given.
fn connect(id: &str, clean: bool) -> Vec<u8> {
    let mut b = Vec::new();
    string("MQTT", &mut b);
    b.extend_from_slice(&[4, if clean { 2 } else { 0 }, 0, 0]);
    string(id, &mut b);
    packet(0x10, &b)
}

/// A QoS 0 PUBLISH of any size.
fn publish0(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    string(topic, &mut b);
    b.extend_from_slice(payload);
    packet(0x30, &b)
}

/// One complete packet off the front of `buf`: (first byte, body).
fn take_packet(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let b = *buf.get(i)?;
        len |= usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    if buf.len() < i + len {
        return None;
    }
    let first = buf[0];
    let body = buf[i..i + len].to_vec();
    buf.drain(..i + len);
    Some((first, body))
}

/// A raw MQTT connection: `clean` as given; returns it with CONNACK's Session Present.
async fn mqtt_open(addr: SocketAddr, id: &str, clean: bool) -> (TcpStream, bool, Vec<u8>) {
    let mut s = within(WAIT, "MQTT connect", TcpStream::connect(addr))
        .await
        .unwrap();
    s.write_all(&connect(id, clean)).await.unwrap();
    let mut buf = Vec::new();
    let (first, body) = read_packet(&mut s, &mut buf, "CONNACK").await;
    assert_eq!((first, body.get(1)), (0x20, Some(&0)), "CONNACK accepted");
    (s, body[0] & 1 == 1, buf)
}

async fn read_packet(s: &mut TcpStream, buf: &mut Vec<u8>, what: &str) -> (u8, Vec<u8>) {
    within(WAIT, what, async {
        loop {
            if let Some(p) = take_packet(buf) {
                return p;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed waiting for {what}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

/// SUBSCRIBE `filter` at QoS 0 and wait for the SUBACK.
async fn mqtt_subscribe(s: &mut TcpStream, buf: &mut Vec<u8>, filter: &str) {
    let mut b = vec![0, 1];
    string(filter, &mut b);
    b.push(0);
    s.write_all(&packet(0x82, &b)).await.unwrap();
    loop {
        let (first, _) = read_packet(s, buf, "SUBACK").await;
        if first == 0x90 {
            return;
        }
    }
}

/// DISCONNECT and wait until the server closed the connection: the session is away.
async fn mqtt_leave(mut s: TcpStream) {
    s.write_all(&[0xe0, 0]).await.unwrap();
    assert!(closed_within(&mut s, WAIT).await, "closed after DISCONNECT");
}

/// Publish `n` QoS 0 messages `topic` from a fresh client, `size` bytes each, payload
/// starting with the message's number; returns once the broker handled them all (PINGRESP
/// comes after everything before it).
async fn publish_many(addr: SocketAddr, topic: &str, n: usize, size: usize) {
    let (mut s, _, mut buf) = mqtt_open(addr, &format!("pub-{}", rand_id()), true).await;
    let mut out = Vec::new();
    for i in 0..n {
        let mut payload = format!("{i:08}").into_bytes();
        payload.resize(size.max(8), b'.');
        out.extend(publish0(topic, &payload));
        if out.len() > 64 * 1024 {
            s.write_all(&out).await.unwrap();
            out.clear();
        }
    }
    out.extend_from_slice(&[0xc0, 0]);
    s.write_all(&out).await.unwrap();
    loop {
        let (first, _) = read_packet(&mut s, &mut buf, "PINGRESP").await;
        if first == 0xd0 {
            return;
        }
    }
}

/// Every PUBLISH that arrives until the connection is quiet for [`QUIET`]: the numbers
/// their payloads start with.
async fn received_numbers(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<usize> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        while let Some((first, body)) = take_packet(buf) {
            if first >> 4 == 3 {
                let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let payload = &body[2 + tlen..];
                let n = std::str::from_utf8(&payload[..8]).unwrap().parse().unwrap();
                got.push(n);
            }
        }
        assert!(Instant::now() < deadline, "still receiving after 30 s");
        let mut chunk = [0u8; 64 * 1024];
        match tokio::time::timeout(QUIET, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return got,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Point 2: bounded memory whatever clients do
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_the_global_budget_drops_newest_for_an_away_session_and_counts() {
    const LIMIT: u64 = 64 * 1024;
    let gw = gateway_with(|c| {
        c.limits.max_queued_bytes = Some(LIMIT);
        // No per-client limit: only the budget can stop the queue.
        c.mqtt.max_queued = 0;
        c.mqtt.queue_qos0 = true;
    })
    .await;
    assert_eq!(gw.broker.budget().limit(), Some(LIMIT as usize));
    let (mut s, _, mut buf) = mqtt_open(gw.mqtt_addr, "lean-budget", false).await;
    mqtt_subscribe(&mut s, &mut buf, "lean/budget").await;
    mqtt_leave(s).await;

    publish_many(gw.mqtt_addr, "lean/budget", 200, 1000).await;
    let budget = gw.broker.budget();
    assert!(
        budget.used() <= LIMIT as usize,
        "{} bytes queued",
        budget.used()
    );
    let dropped = budget.dropped();
    assert!(dropped > 0, "the budget made the session drop messages");

    let (mut s, present, mut buf) = mqtt_open(gw.mqtt_addr, "lean-budget", false).await;
    assert!(present, "the session was kept");
    let got = received_numbers(&mut s, &mut buf).await;
    assert!(
        !got.is_empty() && got.len() < 200,
        "{} of 200 queued under a 64 KiB budget",
        got.len()
    );
    assert_eq!(
        got,
        (0..got.len()).collect::<Vec<_>>(),
        "drop-newest keeps the oldest, in order"
    );
    assert_eq!(
        got.len() as u64 + dropped,
        200,
        "each message queued or counted"
    );
    // Everything it held is given back once delivered.
    let deadline = Instant::now() + WAIT;
    while budget.used() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(budget.used(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_max_queued_0_is_no_per_client_limit() {
    // mosquitto's `max_queued_messages 0`: more than the default 10,000 wait for the client.
    const N: usize = 10_500;
    let gw = gateway_with(|c| {
        c.mqtt.max_queued = 0;
        c.mqtt.queue_qos0 = true;
    })
    .await;
    let (mut s, _, mut buf) = mqtt_open(gw.mqtt_addr, "lean-unbounded", false).await;
    mqtt_subscribe(&mut s, &mut buf, "lean/unbounded").await;
    mqtt_leave(s).await;
    publish_many(gw.mqtt_addr, "lean/unbounded", N, 8).await;
    assert_eq!(gw.broker.budget().dropped(), 0);
    let (mut s, present, mut buf) = mqtt_open(gw.mqtt_addr, "lean-unbounded", false).await;
    assert!(present);
    let got = received_numbers(&mut s, &mut buf).await;
    assert_eq!(got.len(), N, "every message queued while away arrives");
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    gw.shutdown().await;
}

/// An HTTP client with a small receive buffer that opens an SSE stream on `topic`, reads
/// the response header and then never reads again.
async fn stalled_sse(http: SocketAddr, topic: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = within(WAIT, "HTTP connect", socket.connect(http))
        .await
        .unwrap();
    let req =
        format!("GET /resources/{topic} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 256];
        let n = within(WAIT, "SSE header", s.read(&mut b)).await.unwrap();
        assert!(n > 0);
        head.extend_from_slice(&b[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_stalled_sse_streams_are_bounded_by_the_budget_too() {
    const LIMIT: u64 = 256 * 1024;
    let gw = gateway_with(|c| {
        c.limits.max_queued_bytes = Some(LIMIT);
        // No per-stream limit either.
        c.http.sse_queue = 0;
    })
    .await;
    let streams = [
        stalled_sse(gw.http_addr, "lean/sse").await,
        stalled_sse(gw.http_addr, "lean/sse").await,
    ];
    // 4 MB published: far more than the socket buffers and the budget hold.
    publish_many(gw.mqtt_addr, "lean/sse", 4000, 1000).await;
    let budget = gw.broker.budget();
    assert!(
        budget.used() <= LIMIT as usize + 4096,
        "{} bytes queued for two stalled streams",
        budget.used()
    );
    assert!(
        budget.dropped() > 0,
        "drop-oldest under the budget is counted"
    );
    drop(streams);
    let deadline = Instant::now() + WAIT;
    while budget.used() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(budget.used(), 0, "closed streams give everything back");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Point 3: no request left open forever
// ---------------------------------------------------------------------------------------

/// Everything the server sends until it closes the connection (a reset counts as closed).
async fn read_to_close(s: &mut TcpStream, what: &str) -> String {
    within(WAIT, what, async {
        let mut all = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&all).into_owned(),
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

/// A PUT announcing a 100,000-byte body that sends `sent` bytes of it and stops.
async fn slow_put(http: SocketAddr, topic: &str, sent: usize) -> TcpStream {
    let mut s = within(WAIT, "HTTP connect", TcpStream::connect(http))
        .await
        .unwrap();
    let head = format!(
        "PUT /resources/{topic} HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\ncontent-type: text/plain\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'x'; sent]).await.unwrap();
    s
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_rfc9110_15_5_9_a_stalled_body_gets_408_and_the_connection_closes() {
    let gw = gateway_with(|c| c.http.body_timeout_secs = 1).await;
    let started = Instant::now();
    let mut s = slow_put(gw.http_addr, "lean/stalled", 10).await;
    let answer = read_to_close(&mut s, "408 and close").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("body_timeout_secs"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    // Nothing was stored.
    assert_eq!(http_get(&gw, "lean/stalled").await.status(), 404);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_a_body_that_trickles_below_the_min_rate_falls_behind_its_deadline() {
    let gw = gateway_with(|c| {
        c.http.body_timeout_secs = 1;
        c.http.body_min_rate = 1000;
    })
    .await;
    let mut s = slow_put(gw.http_addr, "lean/trickle", 0).await;
    // 100 bytes every 300 ms: 333 B/s, below 1000 B/s, so it earns no extra second.
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if s.write_all(&[b'y'; 100]).await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(1500), trickle)
        .await
        .ok();
    let answer = read_to_close(&mut s, "408 for the trickle").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_500_slow_bodies_hold_nothing_after_the_timeout_and_others_are_served() {
    let gw = gateway_with(|c| c.http.body_timeout_secs = 1).await;
    let baseline = open_fds();
    let mut slow = Vec::new();
    for i in 0..500 {
        slow.push(slow_put(gw.http_addr, &format!("lean/slow{}", i % 7), 1).await);
    }
    // Meanwhile an ordinary client is served at once.
    let client = http();
    let mut took = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = client.get(url(&gw, "lean/normal")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        took.push(t.elapsed());
    }
    took.sort();
    assert!(
        took[2] < Duration::from_millis(100),
        "GETs beside 500 stalled bodies took {took:?}"
    );
    // Every stalled body is answered 408 and its connection closed...
    for s in &mut slow {
        let answer = read_to_close(s, "408").await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    drop(slow);
    drop(client);
    // ...so the server holds no descriptor for them any more.
    let deadline = Instant::now() + WAIT;
    while open_fds() > baseline + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        open_fds() <= baseline + 5,
        "{} descriptors open, {baseline} before",
        open_fds()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_http_max_connections_answers_503_beyond_the_cap() {
    let gw = gateway_with(|c| c.http.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            within(WAIT, "connect", TcpStream::connect(gw.http_addr))
                .await
                .unwrap(),
        );
    }
    // The accept loop takes them in order; one more is refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = within(WAIT, "connect", TcpStream::connect(gw.http_addr))
        .await
        .unwrap();
    let answer = read_to_close(&mut extra, "503").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("max_connections"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(gw.refused().connections_of("http") >= 1);
    // A place freed is a place taken again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = http_get(&gw, "lean/cap").await;
    assert_eq!(r.status(), 404);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_rfc8323_half_a_coap_tcp_frame_that_stalls_is_aborted_and_closed() {
    let gw = gateway_with(|c| c.coap.tcp_frame_timeout_secs = 1).await;
    let mut s = within(WAIT, "CoAP/TCP connect", TcpStream::connect(gw.coap_addr))
        .await
        .unwrap();
    // Our CSM (7.01, no options), then the first 2 bytes of a 20-byte message.
    s.write_all(&[0x00, 0xE1]).await.unwrap();
    s.write_all(&[0xD0, 0x07]).await.unwrap();
    let started = Instant::now();
    let got = within(WAIT, "Abort and close", async {
        let mut all = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.contains(&0xE5),
        "an Abort (7.05) before the close: {got:?}"
    );
    assert!(text.contains("stalled"), "{text}");
    gw.shutdown().await;
}

/// A masked client WebSocket frame (binary) carrying `payload`.
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x82];
    assert!(payload.len() < 126);
    f.push(0x80 | payload.len() as u8);
    let mask = [1u8, 2, 3, 4];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Open MQTT over WebSocket at `/mqtt` on `http` with a raw socket: upgrade, CONNECT
/// (keep-alive off), CONNACK.
async fn raw_mqtt_ws(http: SocketAddr) -> TcpStream {
    let mut s = within(WAIT, "connect", TcpStream::connect(http))
        .await
        .unwrap();
    let req = "GET /mqtt HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-protocol: mqtt\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 1];
        within(WAIT, "101", s.read_exact(&mut b)).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(head.contains("sec-websocket-protocol: mqtt"), "{head}");
    s.write_all(&ws_frame(&connect("lean-ws", true)))
        .await
        .unwrap();
    // CONNACK in a server frame: 0x82, 4, 0x20, 2, 0, 0.
    let mut ack = [0u8; 6];
    within(WAIT, "CONNACK", s.read_exact(&mut ack))
        .await
        .unwrap();
    assert_eq!(ack, [0x82, 4, 0x20, 2, 0, 0]);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_rfc6455_half_a_websocket_frame_that_stalls_closes_the_connection() {
    let gw = gateway_with(|c| c.http.body_timeout_secs = 1).await;
    let mut s = raw_mqtt_ws(gw.http_addr).await;
    // A whole PINGREQ frame is fine and answered...
    s.write_all(&ws_frame(&[0xc0, 0])).await.unwrap();
    let mut pong = [0u8; 4];
    within(WAIT, "PINGRESP", s.read_exact(&mut pong))
        .await
        .unwrap();
    assert_eq!(pong, [0x82, 2, 0xd0, 0]);
    // ...then the header and 10 bytes of a 100-byte frame, and silence.
    let mut half = vec![0x82, 0x80 | 100, 1, 2, 3, 4];
    half.extend_from_slice(&[0u8; 10]);
    s.write_all(&half).await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut s, WAIT).await,
        "a stalled frame is cut off"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_an_idle_websocket_between_frames_is_left_alone() {
    let gw = gateway_with(|c| c.http.body_timeout_secs = 1).await;
    let mut s = raw_mqtt_ws(gw.http_addr).await;
    // Keep-alive is off: nothing may close a quiet connection between frames.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(&ws_frame(&[0xc0, 0])).await.unwrap();
    let mut pong = [0u8; 4];
    within(WAIT, "PINGRESP", s.read_exact(&mut pong))
        .await
        .unwrap();
    assert_eq!(pong, [0x82, 2, 0xd0, 0]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_an_idle_keep_alive_http_connection_is_closed_after_the_header_timeout() {
    let gw = gateway_with(|c| c.http.header_timeout_secs = 1).await;
    let mut s = within(WAIT, "connect", TcpStream::connect(gw.http_addr))
        .await
        .unwrap();
    s.write_all(b"GET /resources/lean/idle HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    within(WAIT, "404", s.read_exact(&mut head)).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 404");
    // Kept alive, then silent: the wait for the next request's header is bounded too.
    let started = Instant::now();
    assert!(
        closed_within(&mut s, WAIT).await,
        "an idle connection is closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Point 4: clean refusals a client can read
// ---------------------------------------------------------------------------------------

/// A small QoS 0 PUBLISH in MQTT 5's wire form: what a client that keeps sending sends.
fn filler5() -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    ponte_mqtt::encode(
        &msg5("lean/drain", ponte_mqtt::QoS::AtMostOnce, 0, &[b'x'; 64]),
        ponte_mqtt::ProtocolVersion::V5,
        &mut out,
    );
    out.to_vec()
}

/// A v5 client `id` sends `refused` (which the server answers with a DISCONNECT) and then
/// keeps publishing for 300 ms without reading, as a client busy sending does; a write
/// that fails on the way is the end of it, as for paho (EPIPE, connection reset), before
/// it ever read why. Then it reads: the DISCONNECT's reason code, after which the
/// connection must end with the server's FIN, not a reset.
async fn refused_while_writing(addr: SocketAddr, id: &str, refused: &[ponte_mqtt::Packet]) -> u8 {
    let mut c = V5::connect(addr, id).await;
    for p in refused {
        c.send(p).await;
    }
    let filler = filler5();
    let until = Instant::now() + Duration::from_millis(300);
    let mut writes = 0;
    while Instant::now() < until {
        assert!(
            c.try_send_raw(&filler).await,
            "write {writes} after the refused packet failed (connection reset) before the \
             client could read the server's DISCONNECT"
        );
        writes += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let code = c.disconnect_reason().await;
    let mut rest = [0u8; 64];
    let end = within(WAIT, "the end of the connection", c.s.read(&mut rest)).await;
    assert!(
        matches!(end, Ok(0)),
        "after its DISCONNECT the server half-closed (EOF), got {end:?}"
    );
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_mqtt5_4_13_receive_maximum_0x93_is_read_by_a_client_that_keeps_writing() {
    let gw = gateway_with(|c| c.mqtt.receive_maximum = 2).await;
    // QoS 2 exchanges stay open until PUBREL: the third exceeds Receive Maximum 2.
    let flood: Vec<_> = (1..=3)
        .map(|id| msg5("lean/rm", ponte_mqtt::QoS::ExactlyOnce, id, b"x"))
        .collect();
    let code = refused_while_writing(gw.mqtt_addr, "lean-drain-93", &flood).await;
    assert_eq!(code, 0x93, "Receive Maximum exceeded");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_mqtt5_4_13_packet_too_large_0x95_is_read_by_a_client_that_keeps_writing() {
    let gw = gateway_with(|c| c.mqtt.max_packet_size = 256).await;
    let big = [msg5(
        "lean/big",
        ponte_mqtt::QoS::AtMostOnce,
        0,
        &[b'x'; 1000],
    )];
    let code = refused_while_writing(gw.mqtt_addr, "lean-drain-95", &big).await;
    assert_eq!(code, 0x95, "Packet too large");
    gw.shutdown().await;
}

/// Write `filler` until a write fails (the server closed); how long that took, at most
/// [`WAIT`].
async fn write_until_closed(c: &mut V5, filler: &[u8], pause: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < WAIT {
        if !c.try_send_raw(filler).await {
            return started.elapsed();
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    panic!("the server was still reading after {WAIT:?}: the drain has no end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_the_drain_ends_after_close_grace_ms() {
    let gw = gateway_with(|c| {
        c.mqtt.max_packet_size = 256;
        c.mqtt.close_grace_ms = 300;
    })
    .await;
    let mut c = V5::connect(gw.mqtt_addr, "lean-grace").await;
    c.send(&msg5(
        "lean/big",
        ponte_mqtt::QoS::AtMostOnce,
        0,
        &[b'x'; 1000],
    ))
    .await;
    // A client that never stops is closed once the grace is over, not before.
    let took = write_until_closed(&mut c, &filler5(), Duration::from_millis(2)).await;
    assert!(
        took >= Duration::from_millis(300),
        "closed after {took:?}, before close_grace_ms"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_the_drain_ends_after_close_grace_bytes() {
    let gw = gateway_with(|c| {
        c.mqtt.max_packet_size = 256;
        c.mqtt.close_grace_ms = 60_000;
        c.mqtt.close_grace_bytes = 64 * 1024;
    })
    .await;
    let mut c = V5::connect(gw.mqtt_addr, "lean-grace-bytes").await;
    c.send(&msg5(
        "lean/big",
        ponte_mqtt::QoS::AtMostOnce,
        0,
        &[b'x'; 1000],
    ))
    .await;
    // 60 s of grace, but a client that floods is cut off after 64 KiB.
    let chunk = filler5().repeat(64);
    write_until_closed(&mut c, &chunk, Duration::ZERO).await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Idle MQTT connections park without a task (issue 16 point 1: bytes per idle connection)
// ---------------------------------------------------------------------------------------

/// `ponte_mqtt_parked_connections` from `/metrics`.
async fn parked(gw: &ponte::Gateway) -> u64 {
    let url = format!("http://{}/metrics", gw.http_addr);
    let text = send("GET /metrics", http().get(url))
        .await
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ponte_mqtt_parked_connections "))
        .and_then(|v| v.trim().parse().ok())
        .expect("ponte_mqtt_parked_connections in /metrics")
}

/// Wait until exactly `n` MQTT connections are parked.
async fn until_parked(gw: &ponte::Gateway, n: u64, what: &str) {
    poll_until(WAIT, what, Duration::from_millis(50), || async {
        parked(gw).await == n
    })
    .await
}

/// The next PUBLISH on `c`, acknowledged if it asks for it; its topic and payload.
async fn delivery(c: &mut V3) -> (String, Vec<u8>) {
    let p = c.publish_rx().await;
    if p.qos == ponte_mqtt::QoS::AtLeastOnce {
        c.send(&ponte_mqtt::Packet::PubAck(
            ponte_mqtt::PubResponse::success(p.pkid),
        ))
        .await;
    }
    (p.topic.to_string(), p.payload.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_an_idle_connection_parks_and_wakes_for_bytes_deliveries_keep_alive_and_close() {
    use ponte_mqtt::QoS;
    let gw = gateway().await;
    let addr = gw.mqtt_addr;

    // A subscriber that goes quiet is parked (its task and its socket's registration
    // with the runtime given back), and still counted as a connection.
    let mut sub = V3::connect_ka(addr, "park-sub", 60).await;
    sub.subscribe(&[("park/#", QoS::AtLeastOnce)]).await;
    until_parked(&gw, 1, "the quiet subscriber parked").await;

    // A delivery wakes it (the mailbox's waker); so does a PUBACK it waits for.
    http_put_untyped(&gw, "park/a", "one").await;
    assert_eq!(delivery(&mut sub).await, ("park/a".into(), b"one".to_vec()));
    until_parked(&gw, 1, "parked again after a quiet second").await;
    http_put_untyped(&gw, "park/b", "two").await;
    assert_eq!(delivery(&mut sub).await, ("park/b".into(), b"two".to_vec()));

    // Bytes wake it (the lot's poll): a PINGREQ is answered.
    until_parked(&gw, 1, "parked again").await;
    sub.ping().await;

    // Its keep-alive runs while parked: a client with Keep Alive 1 s that goes silent is
    // closed after 1.5 s (MQTT-3.1.2-24), and its will is published.
    until_parked(&gw, 1, "parked again").await;
    let silent = Instant::now();
    let (mut quiet, _) = V3::connect_with(
        addr,
        connect3(
            "park-silent",
            true,
            1,
            Some(will("park/will", b"timed out", QoS::AtMostOnce, false)),
        ),
    )
    .await;
    let (topic, payload) = delivery(&mut sub).await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("park/will", &b"timed out"[..])
    );
    assert!(
        silent.elapsed() >= Duration::from_millis(1400),
        "closed at its deadline, not before: {:?}",
        silent.elapsed()
    );
    quiet.expect_closed("the keep-alive's close").await;

    // A parked client that goes away without DISCONNECT is noticed (its will again).
    let (gone, _) = V3::connect_with(
        addr,
        connect3(
            "park-gone",
            true,
            60,
            Some(will("park/will", b"gone", QoS::AtMostOnce, false)),
        ),
    )
    .await;
    until_parked(&gw, 2, "the subscriber and the other client parked").await;
    drop(gone);
    let (topic, payload) = delivery(&mut sub).await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("park/will", &b"gone"[..])
    );

    // A takeover reaches a parked connection (its bell's waker): MQTT 5 DISCONNECT 0x8E.
    let mut first = V5::connect(addr, "park-v5").await;
    until_parked(&gw, 2, "the v5 client parked").await;
    let mut second = V5::connect(addr, "park-v5").await;
    assert_eq!(first.disconnect_reason().await, 0x8E, "Session taken over");
    first.expect_closed("the taken-over connection").await;

    // Shutdown reaches parked connections too: 0x8B, and the gateway stops.
    until_parked(&gw, 2, "the new v5 client parked").await;
    let stopping = tokio::spawn(gw.shutdown());
    assert_eq!(
        second.disconnect_reason().await,
        0x8B,
        "Server shutting down"
    );
    second.expect_closed("the close at shutdown").await;
    sub.expect_closed("the subscriber's close at shutdown")
        .await;
    within(WAIT, "the gateway's shutdown", stopping)
        .await
        .unwrap();
}
