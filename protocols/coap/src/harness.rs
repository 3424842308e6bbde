//! Robustness harness shared by the cargo-fuzz targets (`fuzz/`, libFuzzer,
//! nightly only) and the stable proptest in `tests/never_panics.rs`, so the
//! same code runs in `cargo test` on every build.
//!
//! Each function drives an endpoint with arbitrary input, answers every
//! request (with bodies large enough to need Block2), notifies observers,
//! advances a fake clock, and panics if anything emitted is not well-formed
//! CoAP within the configured size, which is what the fuzzer looks for.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{Packet, ResponseType};

use crate::{Config, Endpoint, Event, NotifyPolicy, Response, TcpConnection};

/// Splits `data` into length-prefixed records (one length byte each).
fn records(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&len, tail) = rest.split_first()?;
        let n = usize::from(len).min(tail.len());
        let (record, next) = tail.split_at(n);
        rest = next;
        Some(record)
    })
}

/// Feeds `data` (length-prefixed datagrams from two peers) to an [`Endpoint`].
pub fn datagrams(data: &[u8]) {
    let policy = match data.first().map(|b| b % 3) {
        Some(0) => NotifyPolicy::Con,
        Some(1) => NotifyPolicy::Non,
        _ => NotifyPolicy::NonWithPeriodicCon,
    };
    let config = Config {
        notify: policy,
        con_notify_interval: Duration::from_secs(5),
        max_datagram_size: 200,
        ..Config::default()
    };
    let limit = config.max_message_size;
    let mut ep = Endpoint::new(config);
    let peers: [SocketAddr; 2] = [
        SocketAddr::from(([192, 0, 2, 1], 5683)),
        SocketAddr::from(([192, 0, 2, 2], 5683)),
    ];
    let start = Instant::now();
    for (i, record) in records(data).enumerate() {
        let now = start + Duration::from_millis(i as u64 * 900);
        ep.handle_datagram(now, peers[i % 2], record);
        while let Some(event) = ep.poll_event() {
            if let Event::Request(req) = event {
                let size = usize::from(record.first().copied().unwrap_or(0)) * 13;
                let mut resp = Response::with_payload(ResponseType::Content, vec![b'x'; size]);
                resp.content_format = req.accept.or(Some(0));
                ep.respond(now, req.id, resp, Some(req.path.as_str().to_owned()));
            }
        }
        let mut note = Response::with_payload(ResponseType::Content, vec![b'y'; i * 37 % 3000]);
        note.content_format = Some((i % 2) as u16 * 50);
        ep.notify(now, "r/T", note);
        ep.handle_timeout(now);
        while let Some((_, bytes)) = ep.poll_transmit() {
            assert!(bytes.len() <= limit, "datagram of {} bytes", bytes.len());
            assert!(Packet::from_bytes(&bytes).is_ok(), "emitted {bytes:02x?}");
        }
    }
}

/// Feeds `data` (length-prefixed chunks, a valid CSM first when the first
/// byte is even) to a [`TcpConnection`].
pub fn tcp_bytes(data: &[u8]) {
    let start = Instant::now();
    let mut conn = TcpConnection::new(
        Config {
            tcp_max_message_size: 4096,
            ..Config::default()
        },
        start,
        SocketAddr::from(([192, 0, 2, 1], 5683)),
    );
    if data.first().is_some_and(|b| b % 2 == 0) {
        // Empty CSM: Len 0, TKL 0, code 7.01.
        conn.handle_bytes(start, &[0x00, 0xE1]);
    }
    for (i, chunk) in records(data).enumerate() {
        let now = start + Duration::from_millis(i as u64 * 500);
        conn.handle_bytes(now, chunk);
        while let Some(event) = conn.poll_event() {
            if let Event::Request(req) = event {
                let size = usize::from(chunk.first().copied().unwrap_or(0)) * 17;
                let resp = Response::with_payload(ResponseType::Content, vec![b'x'; size]);
                conn.respond(now, req.id, resp, Some(req.path.as_str().to_owned()));
            }
        }
        conn.notify(
            now,
            "r/T",
            Response::with_payload(ResponseType::Content, vec![1; i]),
        );
        conn.handle_timeout(now);
        while let Some(bytes) = conn.poll_transmit() {
            assert!(bytes.len() >= 2, "a frame has at least Len|TKL and Code");
        }
    }
}
