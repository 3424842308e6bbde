//! RFC 7959 block-wise conformance: Block2 late/early negotiation and
//! follow-up blocks, first-block notifications, Block1 reassembly with
//! 2.31 Continue, 4.08 and 4.13, and RFC 9175 Request-Tag keyed transfers.

mod common;

use std::time::Instant;

use coap_lite::{CoapOption, Packet, RequestType, ResponseType};
use common::*;
use ponte_coap::{ETag, Endpoint, Response};

/// A 2.05 with `len` bytes counting 0..=255 and an explicit ETag.
fn big(len: usize) -> Response {
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    Response {
        etag: ETag::new(b"v1"),
        ..Response::with_payload(ResponseType::Content, body)
    }
}

/// Decodes a Block option into (num, more, szx).
fn block(p: &Packet, number: u16) -> Option<(u32, bool, u8)> {
    uint_opt(p, number).map(|v| (v >> 4, v & 8 != 0, (v & 7) as u8))
}

/// GETs /r/T with an optional Block2 and answers with `response`.
fn get_block(ep: &mut Endpoint, mid: u16, block2: Option<(u32, u8)>, response: Response) -> Packet {
    let now = Instant::now();
    let mut msg = Msg::get(mid).token(&mid.to_be_bytes()).path("r/T");
    if let Some((num, szx)) = block2 {
        msg = msg.block(23, num, false, szx);
    }
    send(ep, now, PEER, &msg);
    let req = one_request(ep);
    assert_eq!(req.block2.map(|b| (b.num, b.szx)), block2);
    ep.respond(now, req.id, response, None);
    one_transmit(ep)
}

#[test]
fn rfc7959_2_4_late_negotiation_fragments_large_response() {
    let mut ep = endpoint();
    let p = get_block(&mut ep, 1, None, big(2500));
    assert_eq!(block(&p, 23), Some((0, true, 6)));
    assert_eq!(p.payload.len(), 1024);
    assert_eq!(uint_opt(&p, 28), Some(2500));
    assert_eq!(p.get_first_option(CoapOption::ETag), Some(&b"v1".to_vec()));
}

#[test]
fn rfc7959_2_4_follow_up_blocks_are_sliced_from_the_whole_response() {
    let mut ep = endpoint();
    let whole = big(2500);
    let mut body = Vec::new();
    for num in 0..3 {
        let p = get_block(&mut ep, 10 + num as u16, Some((num, 6)), whole.clone());
        assert_eq!(block(&p, 23), Some((num, num < 2, 6)));
        assert_eq!(p.get_first_option(CoapOption::ETag), Some(&b"v1".to_vec()));
        assert_eq!(uint_opt(&p, 28), Some(2500));
        body.extend_from_slice(&p.payload);
    }
    assert_eq!(body, whole.payload);
}

#[test]
fn rfc7959_2_4_blocks_without_driver_etag_share_a_content_hash() {
    let mut ep = endpoint();
    let whole = Response::with_payload(ResponseType::Content, vec![7u8; 2000]);
    let a = get_block(&mut ep, 1, None, whole.clone());
    let b = get_block(&mut ep, 2, Some((1, 6)), whole);
    let etag = a.get_first_option(CoapOption::ETag).cloned();
    assert!(etag.is_some());
    assert_eq!(etag.as_ref(), b.get_first_option(CoapOption::ETag));
}

#[test]
fn rfc7959_2_4_early_negotiation_client_may_lower_the_size() {
    let mut ep = endpoint();
    let p = get_block(&mut ep, 1, Some((0, 2)), big(200));
    assert_eq!(block(&p, 23), Some((0, true, 2)));
    assert_eq!(p.payload.len(), 64);
    let p = get_block(&mut ep, 2, Some((3, 2)), big(200));
    assert_eq!(block(&p, 23), Some((3, false, 2)));
    assert_eq!(p.payload.len(), 8);
}

#[test]
fn rfc7959_2_4_server_lowers_a_larger_client_size() {
    let (mut ep, _) = fresh_with(|c| c.block_size = 256);
    // Client asks for block 1 of 1024 bytes: the server answers the same
    // offset (1024) in its 256-byte blocks, i.e. NUM 4.
    let p = get_block(&mut ep, 1, Some((1, 6)), big(3000));
    assert_eq!(block(&p, 23), Some((4, true, 4)));
    assert_eq!(p.payload.len(), 256);
    assert_eq!(p.payload[0], (1024 % 251) as u8);
}

#[test]
fn rfc7959_2_4_block2_beyond_the_body_is_4_02() {
    let mut ep = endpoint();
    let p = get_block(&mut ep, 1, Some((5, 6)), big(2000));
    assert!(is(&p, ResponseType::BadOption));
}

#[test]
fn rfc7959_2_4_small_response_with_block2_0_is_a_single_block() {
    let mut ep = endpoint();
    let p = get_block(&mut ep, 1, Some((0, 6)), content("tiny"));
    assert_eq!(block(&p, 23), Some((0, false, 6)));
    assert_eq!(p.payload, b"tiny");
}

#[test]
fn rfc7959_2_6_notification_carries_only_the_first_block() {
    let (mut ep, now) = fresh();
    observe(&mut ep, now, PEER, 1, b"ob");
    ep.notify(now, "T", big(3000));
    let n = one_transmit(&mut ep);
    assert_eq!(block(&n, 23), Some((0, true, 6)));
    assert!(uint_opt(&n, 6).is_some());
    assert_eq!(uint_opt(&n, 28), Some(3000));
}

/// Sends Block1 `num` of `body` in `size`-byte blocks with a fresh token.
fn put_block(
    ep: &mut Endpoint,
    peer: &str,
    mid: u16,
    tag: Option<&[u8]>,
    body: &[u8],
    num: u32,
    szx: u8,
) -> Packet {
    let size = 1usize << (szx + 4);
    let start = num as usize * size;
    let end = (start + size).min(body.len());
    let more = end < body.len();
    let mut msg = Msg::con(RequestType::Put, mid)
        .token(&[mid as u8, 0xB1])
        .path("r/T")
        .uint(12, 42)
        .block(27, num, more, szx)
        .payload(&body[start..end]);
    if let Some(tag) = tag {
        msg = msg.opt(292, tag);
    }
    send(ep, Instant::now(), peer, &msg);
    let mut out = transmits(ep);
    if out.is_empty() {
        return Packet::new();
    }
    out.remove(0).1
}

#[test]
fn rfc7959_2_5_block1_is_reassembled_into_one_request() {
    let mut ep = endpoint();
    let body: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    for num in 0..4 {
        let p = put_block(&mut ep, PEER, 100 + num as u16, None, &body, num, 2);
        assert!(is(&p, ResponseType::Continue), "{p:?}");
        assert_eq!(block(&p, 27), Some((num, true, 2)));
        assert!(events(&mut ep).is_empty());
    }
    put_block(&mut ep, PEER, 104, None, &body, 4, 2);
    let req = one_request(&mut ep);
    assert_eq!(&req.payload[..], &body[..]);
    assert_eq!(req.content_format, Some(42));
    ep.respond(
        Instant::now(),
        req.id,
        Response::new(ResponseType::Changed),
        None,
    );
    let fin = one_transmit(&mut ep);
    assert!(is(&fin, ResponseType::Changed));
    assert_eq!(block(&fin, 27), Some((4, false, 2)));
}

#[test]
fn rfc7959_2_5_block1_gap_is_4_08() {
    let mut ep = endpoint();
    let body = vec![1u8; 300];
    put_block(&mut ep, PEER, 1, None, &body, 0, 2);
    let p = put_block(&mut ep, PEER, 2, None, &body, 2, 2);
    assert!(is(&p, ResponseType::RequestEntityIncomplete));
    // A block without a transfer in progress is incomplete too.
    let p = put_block(&mut ep, PEER, 3, None, &body, 1, 2);
    assert!(is(&p, ResponseType::RequestEntityIncomplete));
    assert!(events(&mut ep).is_empty());
}

#[test]
fn rfc7959_2_9_3_block1_over_max_body_size_is_4_13_with_size1() {
    let (mut ep, _) = fresh_with(|c| c.max_body_size = 100);
    let body = vec![1u8; 300];
    put_block(&mut ep, PEER, 1, None, &body, 0, 2);
    let p = put_block(&mut ep, PEER, 2, None, &body, 1, 2);
    assert!(is(&p, ResponseType::RequestEntityTooLarge));
    assert_eq!(uint_opt(&p, 60), Some(100));
    // An announced Size1 above the cap is refused up front.
    let msg = Msg::con(RequestType::Put, 3)
        .path("r/T")
        .uint(60, 5000)
        .block(27, 0, true, 2)
        .payload(&[0; 64]);
    ep.feed(Instant::now(), &msg);
    assert!(is(
        &one_transmit(&mut ep),
        ResponseType::RequestEntityTooLarge
    ));
}

#[test]
fn rfc9175_request_tag_and_peer_separate_concurrent_transfers() {
    let mut ep = endpoint();
    let a = vec![b'a'; 70];
    let b = vec![b'b'; 70];
    put_block(&mut ep, PEER, 1, Some(b"A"), &a, 0, 1);
    put_block(&mut ep, PEER, 2, Some(b"B"), &b, 0, 1);
    put_block(&mut ep, PEER2, 1, Some(b"A"), &b, 0, 1);
    put_block(&mut ep, PEER, 3, Some(b"A"), &a, 1, 1);
    put_block(&mut ep, PEER, 4, Some(b"A"), &a, 2, 1);
    assert_eq!(&one_request(&mut ep).payload[..], &a[..]);
    put_block(&mut ep, PEER, 5, Some(b"B"), &b, 1, 1);
    put_block(&mut ep, PEER, 6, Some(b"B"), &b, 2, 1);
    assert_eq!(&one_request(&mut ep).payload[..], &b[..]);
}

#[test]
fn rfc7959_2_5_retransmitted_block_is_answered_from_cache() {
    let mut ep = endpoint();
    let body = vec![1u8; 200];
    let first = put_block(&mut ep, PEER, 1, None, &body, 0, 2);
    let again = put_block(&mut ep, PEER, 1, None, &body, 0, 2);
    assert_eq!(first, again);
    let p = put_block(&mut ep, PEER, 2, None, &body, 1, 2);
    assert!(is(&p, ResponseType::Continue));
}

#[test]
fn rfc7959_2_5_stalled_transfer_expires() {
    let mut ep = endpoint();
    let body = vec![1u8; 100];
    put_block(&mut ep, PEER, 1, None, &body, 0, 2);
    ep.handle_timeout(at(Instant::now(), 1000.0));
    let p = put_block(&mut ep, PEER, 2, None, &body, 1, 2);
    assert!(is(&p, ResponseType::RequestEntityIncomplete));
}
