//! RFC 8323 (CoAP over TCP) conformance of the sans-IO [`TcpConnection`]:
//! framing with every length encoding and any chunking (§3.2), the CSM
//! exchange (§5.3), Ping/Pong (§5.4), Release/Abort (§5.5, §5.6), requests and
//! observe without CON/ACK (§7.2), and bad input aborting instead of panicking.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use common::{addr, at, config, content, Msg, PEER};
use ponte_coap::tcp::to_tcp;
use ponte_coap::{Config, Event, Request, Response, TcpConnection};

/// A TCP frame from a datagram-layout message.
fn frame(m: &Msg) -> Vec<u8> {
    to_tcp(&m.bytes())
}

/// A signaling frame (class 7) with optional uint options.
fn signal(detail: u8, token: &[u8], opts: &[(u16, u32)]) -> Vec<u8> {
    let mut m = Msg::get(0).token(token);
    m.0.header.code = MessageClass::from(0xE0 | detail);
    for (n, v) in opts {
        m = m.uint(*n, *v);
    }
    frame(&m)
}

fn csm() -> Vec<u8> {
    signal(1, &[], &[(2, 8192)])
}

/// Decodes the frames in `bytes` into packets (datagram layout restored).
fn decode_all(mut bytes: &[u8]) -> Vec<Packet> {
    let mut out = Vec::new();
    while let Some(&b0) = bytes.first() {
        let (nib, tkl) = (b0 >> 4, usize::from(b0 & 0x0F));
        let ext = match nib {
            13 => 1,
            14 => 2,
            15 => 4,
            _ => 0,
        };
        let len = match ext {
            0 => usize::from(nib),
            1 => usize::from(bytes[1]) + 13,
            2 => usize::from(u16::from_be_bytes([bytes[1], bytes[2]])) + 269,
            _ => u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize + 65_805,
        };
        let code = bytes[1 + ext];
        let start = 2 + ext;
        let mut d = vec![0x40 | tkl as u8, code, 0, 0];
        d.extend_from_slice(&bytes[start..start + tkl + len]);
        out.push(Packet::from_bytes(&d).expect("we emit valid CoAP over TCP"));
        bytes = &bytes[start + tkl + len..];
    }
    out
}

fn drain(c: &mut TcpConnection) -> Vec<Packet> {
    let bytes: Vec<u8> = std::iter::from_fn(|| c.poll_transmit())
        .flat_map(|b| b.to_vec())
        .collect();
    decode_all(&bytes)
}

fn requests(c: &mut TcpConnection) -> Vec<Request> {
    std::iter::from_fn(|| c.poll_event())
        .filter_map(|e| match e {
            Event::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn code_byte(p: &Packet) -> u8 {
    u8::from(p.header.code)
}

fn uint_opt(p: &Packet, n: u16) -> Option<u32> {
    p.get_first_option(CoapOption::from(n))
        .map(|v| v.iter().fold(0u32, |a, b| a << 8 | u32::from(*b)))
}

/// A connection that has exchanged CSMs.
fn connected(cfg: Config) -> (TcpConnection, Instant) {
    let t0 = Instant::now();
    let peer: SocketAddr = addr(PEER);
    let mut c = TcpConnection::new(cfg, t0, peer);
    let ours = drain(&mut c);
    assert_eq!(ours.len(), 1);
    assert_eq!(code_byte(&ours[0]), 0xE1);
    c.handle_bytes(t0, &csm());
    assert!(!c.is_closed());
    (c, t0)
}

#[test]
fn rfc8323_5_3_server_sends_csm_first_with_max_message_size() {
    let mut c = TcpConnection::new(config(), Instant::now(), addr(PEER));
    let first = drain(&mut c);
    assert_eq!(
        first.len(),
        1,
        "exactly one message before anything is received"
    );
    assert_eq!(code_byte(&first[0]), 0xE1, "7.01 CSM");
    assert_eq!(
        uint_opt(&first[0], 2),
        Some(config().tcp_max_message_size as u32)
    );
}

#[test]
fn rfc8323_5_3_peer_csm_max_message_size_is_honoured() {
    let t0 = Instant::now();
    let mut c = TcpConnection::new(config(), t0, addr(PEER));
    drain(&mut c);
    c.handle_bytes(t0, &signal(1, &[], &[(2, 4000)]));
    assert_eq!(c.peer_max_message_size(), 4000);
}

#[test]
fn rfc8323_5_3_a_request_before_the_csm_aborts() {
    let t0 = Instant::now();
    let mut c = TcpConnection::new(config(), t0, addr(PEER));
    drain(&mut c);
    c.handle_bytes(t0, &frame(&Msg::get(0).token(b"t").path("r/T")));
    assert!(c.is_closed());
    let out = drain(&mut c);
    assert_eq!(code_byte(&out[0]), 0xE5, "7.05 Abort");
    assert!(String::from_utf8_lossy(&out[0].payload).contains("CSM"));
    assert!(requests(&mut c).is_empty());
}

#[test]
fn rfc8323_5_3_unknown_critical_csm_option_aborts_with_bad_csm_option() {
    let t0 = Instant::now();
    let mut c = TcpConnection::new(config(), t0, addr(PEER));
    drain(&mut c);
    c.handle_bytes(t0, &signal(1, &[], &[(9, 1)]));
    let out = drain(&mut c);
    assert_eq!(code_byte(&out[0]), 0xE5);
    assert_eq!(uint_opt(&out[0], 2), Some(9), "Bad-CSM-Option names it");
    assert!(c.is_closed());
}

#[test]
fn rfc8323_5_3_missing_csm_times_out() {
    let t0 = Instant::now();
    let mut c = TcpConnection::new(config(), t0, addr(PEER));
    drain(&mut c);
    let deadline = c.poll_timeout().expect("CSM timer");
    assert_eq!(deadline, t0 + config().csm_timeout);
    c.handle_timeout(at(t0, 1.0));
    assert!(!c.is_closed());
    c.handle_timeout(deadline);
    assert!(c.is_closed());
    assert_eq!(code_byte(&drain(&mut c)[0]), 0xE5);
}

#[test]
fn rfc8323_5_6_half_a_frame_that_stalls_is_aborted_after_the_frame_timeout() {
    let (mut c, t0) = connected(config());
    drain(&mut c);
    let ping = signal(2, b"pg", &[]);
    // Half of it, then nothing.
    c.handle_bytes(t0, &ping[..2]);
    let deadline = c.poll_timeout().expect("a frame deadline");
    assert_eq!(deadline, t0 + config().tcp_frame_timeout);
    c.handle_timeout(at(t0, 1.0));
    assert!(!c.is_closed(), "not before its deadline");
    c.handle_timeout(deadline);
    assert!(c.is_closed());
    let out = drain(&mut c);
    assert_eq!(code_byte(&out[0]), 0xE5, "7.05 Abort");
    assert!(String::from_utf8_lossy(&out[0].payload).contains("stalled"));
}

#[test]
fn rfc8323_a_frame_completed_in_time_clears_its_deadline_and_a_slow_one_earns_time() {
    let cfg = Config {
        tcp_frame_min_rate: 2,
        ..config()
    };
    let (mut c, t0) = connected(cfg.clone());
    drain(&mut c);
    let ping = signal(2, b"pg", &[]);
    c.handle_bytes(t0, &ping[..2]);
    c.handle_bytes(at(t0, 5.0), &ping[2..]);
    assert_eq!(c.poll_timeout(), None, "complete: no deadline");
    assert_eq!(code_byte(&drain(&mut c)[0]), 0xE3);
    // 4 bytes of a frame at 2 bytes/s earn 2 more seconds.
    let big = frame(&Msg::get(0).token(b"t").path("r/some/long/path"));
    c.handle_bytes(at(t0, 10.0), &big[..4]);
    assert_eq!(
        c.poll_timeout(),
        Some(at(t0, 10.0) + cfg.tcp_frame_timeout + std::time::Duration::from_secs(2))
    );
    assert!(!c.is_closed());
}

#[test]
fn rfc8323_5_4_ping_gets_pong_with_its_token() {
    let (mut c, t0) = connected(config());
    c.handle_bytes(t0, &signal(2, b"pg", &[]));
    let out = drain(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(code_byte(&out[0]), 0xE3, "7.03 Pong");
    assert_eq!(out[0].get_token(), b"pg");
    assert_eq!(c.stats().pings, 1);
}

#[test]
fn rfc8323_5_5_release_and_5_6_abort_close_and_end_observations() {
    for detail in [4u8, 5] {
        let (mut c, t0) = connected(config());
        c.handle_bytes(t0, &frame(&Msg::get(0).token(b"o").observe(0).path("r/T")));
        let req = requests(&mut c).remove(0);
        c.respond(t0, req.id, content("v"), Some("T".into()));
        drain(&mut c);
        assert_eq!(c.observer_count("T"), 1);
        c.handle_bytes(t0, &signal(detail, &[], &[]));
        assert!(c.is_closed(), "7.0{detail} closes");
        assert_eq!(c.observer_count("T"), 0);
        assert!(std::iter::from_fn(|| c.poll_event())
            .any(|e| matches!(e, Event::ObservationEnded { remaining: 0, .. })));
        c.notify(t0, "T", content("after"));
        assert!(drain(&mut c).is_empty());
    }
}

#[test]
fn rfc8323_3_2_get_is_answered_with_the_token_and_no_message_id() {
    let (mut c, t0) = connected(config());
    c.handle_bytes(
        t0,
        &frame(&Msg::get(0).token(b"tk").path("r/T").uint(17, 0)),
    );
    let req = requests(&mut c).remove(0);
    assert_eq!(req.path, vec!["r", "T"]);
    assert_eq!(req.accept, Some(0));
    c.respond(t0, req.id, content("hello"), None);
    let out = drain(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].header.code,
        MessageClass::Response(ResponseType::Content)
    );
    assert_eq!(out[0].get_token(), b"tk");
    assert_eq!(out[0].payload, b"hello");
}

#[test]
fn rfc8323_3_2_frames_split_at_every_byte_and_every_length_encoding() {
    // Payloads chosen for Len nibbles 0..12, 13 (1 extra byte) and 14 (2 extra bytes).
    for size in [0usize, 5, 20, 300, 3000] {
        let (mut c, t0) = connected(config());
        let m = Msg::con(RequestType::Put, 0)
            .token(b"p")
            .path("r/T")
            .payload(&vec![b'z'; size.max(1)]);
        let bytes = frame(&m);
        for b in &bytes {
            c.handle_bytes(t0, std::slice::from_ref(b));
        }
        let got = requests(&mut c);
        assert_eq!(got.len(), 1, "size {size}");
        assert_eq!(got[0].payload.len(), size.max(1));
    }
    // Two frames in one chunk.
    let (mut c, t0) = connected(config());
    let mut two = frame(&Msg::get(0).token(b"a").path("r/A"));
    two.extend(frame(&Msg::get(0).token(b"b").path("r/B")));
    c.handle_bytes(t0, &two);
    assert_eq!(requests(&mut c).len(), 2);
}

#[test]
fn rfc8323_7_2_observe_notifications_are_plain_messages_with_observe() {
    let (mut c, t0) = connected(config());
    c.handle_bytes(t0, &frame(&Msg::get(0).token(b"ob").observe(0).path("r/T")));
    let req = requests(&mut c).remove(0);
    c.respond(t0, req.id, content("v0"), Some("T".into()));
    let first = drain(&mut c).remove(0);
    let s0 = uint_opt(&first, 6).expect("Observe in the registration response");
    c.notify(at(t0, 1.0), "T", content("v1"));
    c.notify(at(t0, 2.0), "T", content("v2"));
    let out = drain(&mut c);
    assert_eq!(
        out.len(),
        2,
        "every change is sent: no CON, no waiting for ACKs"
    );
    assert_eq!(out[1].payload, b"v2");
    assert!(uint_opt(&out[0], 6) > Some(s0));
    assert!(uint_opt(&out[1], 6) > uint_opt(&out[0], 6));
    // Deregistration with Observe=1.
    c.handle_bytes(t0, &frame(&Msg::get(0).token(b"ob").observe(1).path("r/T")));
    assert_eq!(c.observer_count("T"), 0);
    // 4.04 ends the relation (RFC 7641 §3.2) with no Observe.
    c.handle_bytes(t0, &frame(&Msg::get(0).token(b"o2").observe(0).path("r/T")));
    let req = requests(&mut c).pop().expect("the registration");
    c.respond(t0, req.id, content("v"), Some("T".into()));
    drain(&mut c);
    c.notify(t0, "T", Response::new(ResponseType::NotFound));
    let f = drain(&mut c).remove(0);
    assert_eq!(
        f.header.code,
        MessageClass::Response(ResponseType::NotFound)
    );
    assert!(uint_opt(&f, 6).is_none());
    assert_eq!(c.observer_count("T"), 0);
}

#[test]
fn rfc8323_7_2_format_change_ends_observation_with_4_06() {
    let (mut c, t0) = connected(config());
    c.handle_bytes(
        t0,
        &frame(&Msg::get(0).token(b"ob").observe(0).path("r/T").uint(17, 0)),
    );
    let req = requests(&mut c).remove(0);
    c.respond(t0, req.id, content("v0"), Some("T".into()));
    drain(&mut c);
    let json = Response {
        content_format: Some(50),
        ..Response::with_payload(ResponseType::Content, b"{}".to_vec())
    };
    c.notify(t0, "T", json);
    let f = drain(&mut c).remove(0);
    assert_eq!(
        f.header.code,
        MessageClass::Response(ResponseType::NotAcceptable)
    );
    assert_eq!(c.observer_count("T"), 0);
}

#[test]
fn rfc8323_5_3_1_message_above_our_max_message_size_aborts_before_buffering() {
    let (mut c, t0) = connected(Config {
        tcp_max_message_size: 1000,
        ..config()
    });
    let m = Msg::con(RequestType::Put, 0)
        .path("r/T")
        .payload(&[1u8; 2000]);
    // Only the header arrives: the size is known, the connection aborts at once.
    c.handle_bytes(t0, &frame(&m)[..4]);
    assert!(c.is_closed());
    let out = drain(&mut c);
    assert_eq!(code_byte(&out[0]), 0xE5);
    assert!(String::from_utf8_lossy(&out[0].payload).contains("Max-Message-Size"));
}

#[test]
fn rfc8323_3_2_tkl_above_8_and_bad_options_abort_and_are_counted() {
    for junk in [
        vec![0x09u8, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        // Len 2, code GET, option byte with reserved delta nibble 15.
        vec![0x20, 0x01, 0xF1, 0x00],
        // Len 2: option claims a 5-byte value but only 1 byte follows.
        vec![0x20, 0x01, 0xB5, b'a'],
    ] {
        let (mut c, t0) = connected(config());
        c.handle_bytes(t0, &junk);
        assert!(c.is_closed(), "{junk:02x?}");
        assert_eq!(c.stats().malformed_dropped, 1);
        assert_eq!(code_byte(&drain(&mut c)[0]), 0xE5);
    }
}

#[test]
fn rfc8323_block2_large_value_is_sliced_with_etag_and_size2() {
    let (mut c, t0) = connected(config());
    c.handle_bytes(t0, &frame(&Msg::get(0).token(b"b").path("r/T")));
    let req = requests(&mut c).remove(0);
    c.respond(
        t0,
        req.id,
        Response::with_payload(ResponseType::Content, vec![3u8; 3000]),
        None,
    );
    let p = drain(&mut c).remove(0);
    assert!(p.get_first_option(CoapOption::Block2).is_some());
    assert_eq!(uint_opt(&p, 28), Some(3000), "Size2");
    assert!(p.get_first_option(CoapOption::ETag).is_some());
}
