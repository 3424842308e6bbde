//! RFC 7252 message-layer conformance: pings, piggybacked and NON responses,
//! message IDs, deduplication, option handling, format errors and sizes.

mod common;

use std::time::Duration;
use std::time::Instant;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::*;
use ponte_coap::{Config, ETag, Endpoint, Event, Method, Response};

#[test]
fn rfc7252_4_3_empty_con_is_pinged_with_rst() {
    let mut ep = endpoint();
    ep.handle_datagram(Instant::now(), addr(PEER), &[0x40, 0x00, 0x12, 0x34]);
    let rst = one_transmit(&mut ep);
    assert_eq!(rst.header.get_type(), MessageType::Reset);
    assert_eq!(rst.header.code, MessageClass::Empty);
    assert_eq!(rst.header.message_id, 0x1234);
    assert!(events(&mut ep).is_empty());
    assert_eq!(ep.stats().pings, 1);
}

#[test]
fn rfc7252_5_2_1_con_request_gets_piggybacked_ack() {
    let (mut ep, now) = fresh();
    ep.feed(now, &Msg::get(0x0101).token(b"tok").path("r/T"));
    let req = one_request(&mut ep);
    assert_eq!(req.method, Method::Get);
    assert_eq!(req.path, ["r", "T"]);
    assert!(req.confirmable);
    ep.respond(now, req.id, content("hello"), None);
    let ack = one_transmit(&mut ep);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 0x0101);
    assert_eq!(ack.get_token(), b"tok");
    assert!(is(&ack, ResponseType::Content));
    assert_eq!(ack.payload, b"hello");
    assert_eq!(uint_opt(&ack, 12), Some(0));
    assert_eq!(
        ack.get_option(CoapOption::ContentFormat).map(|l| l.len()),
        Some(1)
    );
    assert!(ack.get_option(CoapOption::Observe).is_none());
}

#[test]
fn rfc7252_5_2_2_non_request_gets_non_with_fresh_mid() {
    let (mut ep, now) = fresh();
    let mut mids = Vec::new();
    for mid in [0x0202, 0x0203] {
        ep.feed(
            now,
            &Msg::non(RequestType::Get, mid).token(b"n").path("r/T"),
        );
        let req = one_request(&mut ep);
        assert!(!req.confirmable);
        ep.respond(now, req.id, content("x"), None);
        let res = one_transmit(&mut ep);
        assert_eq!(res.header.get_type(), MessageType::NonConfirmable);
        assert_ne!(res.header.message_id, mid);
        assert_eq!(res.get_token(), b"n");
        mids.push(res.header.message_id);
    }
    assert_ne!(mids[0], mids[1]);
}

#[test]
fn rfc7252_4_4_message_ids_start_randomly_and_depend_on_the_seed() {
    let first_mid = |seed| {
        let mut ep = Endpoint::new(Config { seed, ..config() });
        let now = Instant::now();
        ep.feed(now, &Msg::non(RequestType::Get, 1).path("r/T"));
        let req = one_request(&mut ep);
        ep.respond(now, req.id, content("x"), None);
        one_transmit(&mut ep).header.message_id
    };
    assert_eq!(first_mid(1), first_mid(1));
    assert_ne!(first_mid(1), first_mid(2));
}

#[test]
fn rfc7252_4_4_message_ids_are_not_reused_within_exchange_lifetime() {
    let (mut ep, now) = fresh_with(|c| c.max_exchanges = 16);
    let mut seen = std::collections::HashSet::new();
    let mut sent = 0u32;
    for i in 0..70_000u32 {
        ep.feed(
            now,
            &Msg::non(RequestType::Get, (i % 65_536) as u16).path("r/T"),
        );
        let Some(Event::Request(req)) = ep.poll_event() else {
            continue; // a duplicate MID still remembered
        };
        ep.respond(now, req.id, content("x"), None);
        if let Some((_, bytes)) = ep.poll_transmit() {
            let p = Packet::from_bytes(&bytes).unwrap();
            assert!(seen.insert(p.header.message_id), "MID reused");
            sent += 1;
        }
    }
    assert!(sent < 65_536);
    assert!(ep.stats().message_ids_exhausted > 0);
    // After EXCHANGE_LIFETIME the IDs become usable again.
    let later = now + Duration::from_secs(248);
    ep.feed(
        later,
        &Msg::non(RequestType::Get, 9).token(b"z").path("r/T"),
    );
    let req = one_request(&mut ep);
    ep.respond(later, req.id, content("x"), None);
    assert_eq!(transmits(&mut ep).len(), 1);
}

#[test]
fn rfc7252_4_5_duplicate_con_is_answered_from_cache() {
    let (mut ep, now) = fresh();
    let msg = Msg::con(RequestType::Put, 7).token(b"a");
    let msg = msg.path("r/T").payload(b"1");
    answered(
        &mut ep,
        now,
        msg.clone(),
        Response::new(ResponseType::Changed),
        None,
    );
    let first = ep.poll_transmit().unwrap();
    send(&mut ep, at(now, 3.0), PEER, &msg);
    assert!(
        events(&mut ep).is_empty(),
        "a retransmitted PUT must publish once"
    );
    assert_eq!(ep.poll_transmit().unwrap(), first);
    assert_eq!(ep.stats().duplicates, 1);
}

#[test]
fn rfc7252_4_5_duplicate_con_in_processing_emits_one_request() {
    let (mut ep, now) = fresh();
    let msg = Msg::con(RequestType::Put, 8)
        .token(b"a")
        .path("r/T")
        .payload(b"1");
    ep.feed(now, &msg);
    send(&mut ep, at(now, 2.0), PEER, &msg);
    let req = one_request(&mut ep);
    assert!(transmits(&mut ep).is_empty());
    ep.respond(now, req.id, Response::new(ResponseType::Changed), None);
    assert_eq!(transmits(&mut ep).len(), 1);
    // The same MID from another peer is a different exchange.
    send(&mut ep, now, PEER2, &msg);
    one_request(&mut ep);
}

#[test]
fn rfc7252_4_5_deduplication_expires_after_exchange_lifetime() {
    let (mut ep, now) = fresh();
    let msg = Msg::con(RequestType::Post, 9).path("r/T").payload(b"1");
    ep.feed(now, &msg);
    let req = one_request(&mut ep);
    ep.respond(now, req.id, Response::new(ResponseType::Changed), None);
    transmits(&mut ep);
    let later = at(now, 248.0);
    assert!(ep.poll_timeout().is_some_and(|t| t <= later));
    ep.handle_timeout(later);
    ep.feed(later, &msg);
    one_request(&mut ep);
}

#[test]
fn rfc7252_4_5_deduplication_cache_is_bounded() {
    let (mut ep, now) = fresh_with(|c| c.max_exchanges = 2);
    for mid in [1, 2, 3] {
        ep.feed(now, &Msg::con(RequestType::Post, mid).path("r/T"));
        let req = one_request(&mut ep);
        ep.respond(now, req.id, Response::new(ResponseType::Changed), None);
    }
    transmits(&mut ep);
    // MID 1 was evicted (oldest) and is processed again; MID 3 is still cached.
    ep.feed(now, &Msg::con(RequestType::Post, 1).path("r/T"));
    one_request(&mut ep);
    ep.feed(now, &Msg::con(RequestType::Post, 3).path("r/T"));
    assert!(events(&mut ep).is_empty());
}

#[test]
fn rfc7252_4_2_empty_ack_and_rst_for_unknown_mids_are_ignored() {
    let (mut ep, now) = fresh();
    ep.handle_datagram(now, addr(PEER), &[0x60, 0x00, 0, 1]);
    ep.handle_datagram(now, addr(PEER), &[0x70, 0x00, 0, 2]);
    assert!(transmits(&mut ep).is_empty());
    assert!(events(&mut ep).is_empty());
}

#[test]
fn rfc7252_4_2_con_with_response_or_reserved_code_is_rejected_with_rst() {
    let (mut ep, now) = fresh();
    for code in [0x45u8, 0x20, 0xE0] {
        ep.handle_datagram(now, addr(PEER), &[0x40, code, 0, 5]);
        let rst = one_transmit(&mut ep);
        assert_eq!(rst.header.get_type(), MessageType::Reset);
        assert_eq!(rst.header.message_id, 5);
    }
    // The same in NON (or a non-empty ACK) is silently ignored.
    ep.handle_datagram(now, addr(PEER), &[0x50, 0x45, 0, 6]);
    ep.handle_datagram(now, addr(PEER), &[0x60, 0x45, 0, 7]);
    assert!(transmits(&mut ep).is_empty());
    assert!(events(&mut ep).is_empty());
    assert_eq!(ep.stats().rejected, 5);
}

#[test]
fn rfc7252_5_4_1_unrecognized_critical_option_in_con_is_4_02() {
    let (mut ep, now) = fresh();
    ep.feed(now, &Msg::get(11).token(b"t").path("r/T").opt(2049, b"x"));
    assert!(events(&mut ep).is_empty());
    let ack = one_transmit(&mut ep);
    assert!(is(&ack, ResponseType::BadOption));
    assert_eq!(ack.header.message_id, 11);
    assert_eq!(ack.get_token(), b"t");
    assert_eq!(ack.payload, b"unrecognized critical option 2049");
    // OSCORE (9) is critical and not supported either.
    ep.feed(now, &Msg::get(12).path("r/T").opt(9, b""));
    assert!(is(&one_transmit(&mut ep), ResponseType::BadOption));
}

#[test]
fn rfc7252_5_4_1_unrecognized_critical_option_in_non_is_rejected() {
    let mut ep = endpoint();
    ep.feed(
        Instant::now(),
        &Msg::non(RequestType::Get, 13).path("r/T").opt(65001, b""),
    );
    assert!(events(&mut ep).is_empty());
    let rst = one_transmit(&mut ep);
    assert_eq!(rst.header.get_type(), MessageType::Reset);
    assert_eq!(rst.header.message_id, 13);
}

#[test]
fn rfc7252_5_4_1_unrecognized_elective_option_is_ignored() {
    let mut ep = endpoint();
    ep.feed(Instant::now(), &Msg::get(14).path("r/T").opt(2048, b"x"));
    assert_eq!(one_request(&mut ep).path, ["r", "T"]);
}

#[test]
fn rfc7252_5_4_5_repeated_critical_option_is_4_02() {
    let (mut ep, now) = fresh();
    ep.feed(now, &Msg::get(15).path("r/T").uint(17, 50).uint(17, 0));
    refused(&mut ep, ResponseType::BadOption);
}

#[test]
fn rfc7252_5_4_5_repeated_elective_option_keeps_the_first() {
    let mut ep = endpoint();
    send(
        &mut ep,
        Instant::now(),
        PEER,
        &Msg::con(RequestType::Put, 16)
            .path("r/T")
            .uint(12, 50)
            .uint(12, 0),
    );
    assert_eq!(one_request(&mut ep).content_format, Some(50));
}

#[test]
fn rfc7252_5_4_3_critical_option_with_bad_length_is_4_02() {
    let mut ep = endpoint();
    ep.feed(Instant::now(), &Msg::get(17).path("r/T").opt(5, b"x"));
    assert!(is(&one_transmit(&mut ep), ResponseType::BadOption));
}

#[test]
fn rfc7252_5_10_2_proxy_options_are_5_05() {
    let (mut ep, now) = fresh();
    ep.feed(now, &Msg::get(18).opt(35, b"coap://example/"));
    assert!(is(
        &one_transmit(&mut ep),
        ResponseType::ProxyingNotSupported
    ));
    ep.feed(now, &Msg::get(19).opt(39, b"http"));
    assert!(is(
        &one_transmit(&mut ep),
        ResponseType::ProxyingNotSupported
    ));
    assert!(events(&mut ep).is_empty());
}

#[test]
fn rfc7252_5_8_unsupported_method_is_4_05() {
    let mut ep = endpoint();
    ep.feed(
        Instant::now(),
        &Msg::con(RequestType::Fetch, 20).path("r/T"),
    );
    refused(&mut ep, ResponseType::MethodNotAllowed);
}

#[test]
fn rfc7252_5_10_1_non_utf8_uri_path_is_4_00() {
    let mut ep = endpoint();
    ep.feed(
        Instant::now(),
        &Msg::get(21).opt(11, b"r").opt(11, &[0xFF, 0xFE]),
    );
    let ack = one_transmit(&mut ep);
    assert!(is(&ack, ResponseType::BadRequest));
    assert_eq!(ack.payload, b"Uri-Path segment 1 is not valid UTF-8");
    assert!(events(&mut ep).is_empty());
}

#[test]
fn rfc7252_5_4_5_a_repeated_critical_option_is_counted_in_the_diagnostic() {
    let mut ep = endpoint();
    let msg = Msg::get(23)
        .path("r/T")
        .uint(17, 50)
        .uint(17, 0)
        .uint(17, 1);
    ep.feed(Instant::now(), &msg);
    let ack = one_transmit(&mut ep);
    assert!(is(&ack, ResponseType::BadOption));
    assert_eq!(
        ack.payload,
        b"critical option 17 occurs 3 times but is not repeatable"
    );
}

#[test]
fn rfc7252_5_10_1_the_first_bad_uri_path_segment_is_the_error() {
    // A segment that is not UTF-8 comes before a segment that is too long (§5.4.3) and
    // before an unknown critical option: it is the one reported.
    for msg in [
        Msg::get(24)
            .opt(11, b"r")
            .opt(11, &[0xC3])
            .opt(11, &[b'x'; 256]),
        Msg::get(25).opt(11, b"r").opt(11, &[0xC3]).opt(2049, b"x"),
    ] {
        let mut ep = endpoint();
        ep.feed(Instant::now(), &msg);
        let ack = one_transmit(&mut ep);
        assert!(is(&ack, ResponseType::BadRequest));
        assert_eq!(ack.payload, b"Uri-Path segment 1 is not valid UTF-8");
    }
    // Without the bad segment the long one is the error.
    let mut ep = endpoint();
    ep.feed(
        Instant::now(),
        &Msg::get(26).opt(11, b"r").opt(11, &[b'x'; 256]),
    );
    assert!(is(&one_transmit(&mut ep), ResponseType::BadOption));
}

#[test]
fn rfc7252_6_4_a_uri_path_segment_may_contain_a_slash() {
    let mut ep = endpoint();
    let msg = Msg::get(27)
        .opt(11, b"r")
        .opt(11, b"a/b")
        .opt(11, b"")
        .uint(17, 50);
    ep.feed(Instant::now(), &msg);
    let req = one_request(&mut ep);
    assert_eq!(req.path, ["r", "a/b", ""]);
    assert_eq!(req.path.len(), 3);
    assert_eq!(req.path.as_str(), "r/a/b/");
    assert_eq!(req.path.after("r"), Some("a/b/"));
    assert_eq!(req.accept, Some(50));
}

#[test]
fn rfc7252_5_10_request_options_are_parsed() {
    let mut ep = endpoint();
    let msg = Msg::con(RequestType::Put, 22)
        .token(b"tk")
        .path("r/a/b")
        .opt(15, b"x=1")
        .opt(15, b"y")
        .uint(12, 50)
        .uint(17, 60)
        .opt(4, b"e1")
        .opt(4, b"e2")
        .opt(1, b"m1")
        .opt(5, b"")
        .opt(3, b"example.com")
        .payload(b"{}");
    ep.feed(Instant::now(), &msg);
    let r = one_request(&mut ep);
    assert_eq!(r.method, Method::Put);
    assert_eq!(r.path, ["r", "a", "b"]);
    assert_eq!(r.query, ["x=1", "y"]);
    assert_eq!(r.content_format, Some(50));
    assert_eq!(r.accept, Some(60));
    assert_eq!(
        r.etags,
        [ETag::new(b"e1").unwrap(), ETag::new(b"e2").unwrap()]
    );
    assert_eq!(r.if_match, [b"m1".to_vec()]);
    assert!(r.if_none_match);
    assert_eq!(&r.payload[..], b"{}");
    assert_eq!(r.peer, addr(PEER));
}

#[test]
fn rfc7252_3_malformed_datagrams_are_dropped_and_counted() {
    let (mut ep, now) = fresh();
    let bad: [&[u8]; 5] = [
        &[0x40, 0x01],             // truncated header
        &[0x80, 0x01, 0, 1],       // version 2: silently ignored
        &[0x50, 0x01, 0, 1, 0xFF], // NON with empty payload after marker
        &[0x70, 0x01, 0, 1],       // non-empty RST... well-formed, ignored
        &[0x60, 0x00, 0, 1, 0xAA], // empty ACK with a byte after the header
    ];
    for d in bad {
        ep.handle_datagram(now, addr(PEER), d);
    }
    assert!(transmits(&mut ep).is_empty());
    assert!(events(&mut ep).is_empty());
    assert_eq!(ep.stats().malformed_dropped, 4);
    // A CON whose header is readable is rejected with RST (§4.2).
    ep.handle_datagram(
        now,
        addr(PEER),
        &[0x49, 0x01, 0x00, 0x2A, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    ep.handle_datagram(now, addr(PEER), &[0x40, 0x01, 0x00, 0x2B, 0xF1, 0]);
    let rsts = transmits(&mut ep);
    assert_eq!(rsts.len(), 2);
    assert!(rsts
        .iter()
        .all(|(_, p)| p.header.get_type() == MessageType::Reset));
    assert_eq!(rsts[0].1.header.message_id, 0x2A);
}

#[test]
fn rfc7252_4_6_large_response_is_never_truncated() {
    let (mut ep, now) = fresh();
    ep.feed(now, &Msg::get(23).path("r/T"));
    let req = one_request(&mut ep);
    let body = vec![b'a'; 5000];
    ep.respond(
        now,
        req.id,
        Response::with_payload(ResponseType::Content, body),
        None,
    );
    let (_, bytes) = ep.poll_transmit().unwrap();
    assert!(bytes.len() <= 1152);
    let p = Packet::from_bytes(&bytes).unwrap();
    assert_eq!(p.payload.len(), 1024);
    assert_eq!(uint_opt(&p, 28), Some(5000));

    // Options that cannot fit become a 5.00 diagnostic, never a cut message.
    ep.feed(now, &Msg::get(24).path("r/T"));
    let req = one_request(&mut ep);
    let huge = Response {
        location_path: vec!["x".repeat(200); 8],
        ..Response::new(ResponseType::Created)
    };
    ep.respond(now, req.id, huge, None);
    let p = one_transmit(&mut ep);
    assert!(is(&p, ResponseType::InternalServerError));
    assert_eq!(ep.stats().oversized_responses, 1);
}

#[test]
fn rfc7252_4_8_unanswered_request_expires_and_late_respond_is_counted() {
    let (mut ep, now) = fresh();
    ep.feed(now, &Msg::get(25).path("r/T"));
    let req = one_request(&mut ep);
    ep.handle_timeout(at(now, 300.0));
    ep.respond(at(now, 300.0), req.id, content("x"), None);
    assert!(transmits(&mut ep).is_empty());
    assert_eq!(ep.stats().pending_expired, 1);
    assert_eq!(ep.stats().late_responses, 1);
}

#[test]
fn rfc7252_pending_cap_answers_5_03() {
    let (mut ep, now) = fresh_with(|c| c.max_pending_requests = 1);
    ep.feed(now, &Msg::get(26).path("r/T"));
    one_request(&mut ep);
    ep.feed(now, &Msg::get(27).path("r/T"));
    assert!(events(&mut ep).is_empty());
    assert!(is(&one_transmit(&mut ep), ResponseType::ServiceUnavailable));
}

#[test]
fn rfc7967_no_response_suppresses_non_answers() {
    let (mut ep, now) = fresh();
    ep.feed(
        now,
        &Msg::non(RequestType::Put, 28).path("r/T").uint(258, 2),
    );
    let req = one_request(&mut ep);
    ep.respond(now, req.id, Response::new(ResponseType::Changed), None);
    assert!(transmits(&mut ep).is_empty());
    // For a CON the exchange still needs an (empty) ACK.
    ep.feed(
        now,
        &Msg::con(RequestType::Put, 29).path("r/T").uint(258, 2),
    );
    let req = one_request(&mut ep);
    ep.respond(now, req.id, Response::new(ResponseType::Changed), None);
    let ack = one_transmit(&mut ep);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(code(&ack), MessageClass::Empty);
}
