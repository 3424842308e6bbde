//! Deterministic fake-clock tests of the rules added for reliable observe and
//! the bounded message layer: the CON/NON notification policy with a CON at
//! least every 24 h (RFC 7641 §4.5), RST to a NON notification (§3.6), the
//! final 4.06 when a value leaves the observer's Accept (§3.2, RFC 7252
//! §5.10.4), NSTART towards each client (RFC 7252 §4.7), NON deduplication
//! for NON_LIFETIME (§4.5), oversized datagrams (§4.6, RFC 7959 §2.9.3) and
//! per-peer caps.

mod common;

use std::time::{Duration, Instant};

use coap_lite::{MessageType, RequestType, ResponseType};
use common::*;
use ponte_coap::{Config, Endpoint, Event, NotifyPolicy, Response};

const DAY: f64 = 24.0 * 3600.0;

/// An empty ACK or RST for `mid` from `peer`.
fn empty(ep: &mut Endpoint, now: Instant, peer: &str, rst: bool, mid: u16) {
    let [hi, lo] = mid.to_be_bytes();
    ep.handle_datagram(now, addr(peer), &[if rst { 0x70 } else { 0x60 }, 0, hi, lo]);
}

fn json(payload: &str) -> Response {
    Response {
        content_format: Some(50),
        ..Response::with_payload(ResponseType::Content, payload.as_bytes().to_vec())
    }
}

#[test]
fn rfc7641_4_5_non_policy_sends_non_notifications() {
    let (mut ep, t0) = observed_with(|c| c.notify = NotifyPolicy::Non);
    for i in 1..=3 {
        ep.notify(at(t0, i as f64), "T", content(&format!("v{i}")));
        let n = one_transmit(&mut ep);
        assert_eq!(
            n.header.get_type(),
            MessageType::NonConfirmable,
            "notification {i}"
        );
        assert_eq!(n.get_token(), b"ob");
        assert!(uint_opt(&n, 6).is_some(), "Observe in a NON notification");
    }
    // Even after days, the pure NON policy never switches to CON.
    ep.notify(at(t0, 3.0 * DAY), "T", content("late"));
    assert_eq!(
        one_transmit(&mut ep).header.get_type(),
        MessageType::NonConfirmable
    );
    assert_eq!(ep.stats().non_notifications, 4);
}

/// A fresh endpoint configured by `f` where [`PEER`] observes "T" (token "ob"), and the
/// instant.
fn observed_with(f: impl FnOnce(&mut Config)) -> (Endpoint, Instant) {
    let (mut ep, t0) = fresh_with(f);
    observe(&mut ep, t0, PEER, 1, b"ob");
    (ep, t0)
}

/// A fresh endpoint where [`PEER`] observes "T" (token "t") and "U" (token "u"), and the
/// instant.
fn observing_t_and_u() -> (Endpoint, Instant) {
    let (mut ep, t0) = fresh();
    observe(&mut ep, t0, PEER, 1, b"t");
    let u = Msg::get(2).token(b"u").observe(0).path("r/U");
    answered(&mut ep, t0, u, content("u0"), Some("U"));
    one_transmit(&mut ep);
    (ep, t0)
}

#[test]
fn rfc7641_4_5_a_con_notification_at_least_every_24_hours() {
    let (mut ep, t0) = observed_with(|c| c.notify = NotifyPolicy::NonWithPeriodicCon);
    ep.notify(at(t0, 60.0), "T", content("a"));
    assert_eq!(
        one_transmit(&mut ep).header.get_type(),
        MessageType::NonConfirmable
    );
    ep.notify(at(t0, DAY - 1.0), "T", content("b"));
    assert_eq!(
        one_transmit(&mut ep).header.get_type(),
        MessageType::NonConfirmable,
        "less than 24 h since registration: NON"
    );
    ep.notify(at(t0, DAY + 1.0), "T", content("c"));
    let con = one_transmit(&mut ep);
    assert_eq!(
        con.header.get_type(),
        MessageType::Confirmable,
        "24 h passed: CON"
    );
    empty(
        &mut ep,
        at(t0, DAY + 2.0),
        PEER,
        false,
        con.header.message_id,
    );
    ep.notify(at(t0, DAY + 3.0), "T", content("d"));
    assert_eq!(
        one_transmit(&mut ep).header.get_type(),
        MessageType::NonConfirmable,
        "the clock restarts at the CON"
    );
}

#[test]
fn rfc7641_4_5_con_notify_interval_is_configurable() {
    let (mut ep, t0) = observed_with(|c| {
        c.notify = NotifyPolicy::NonWithPeriodicCon;
        c.con_notify_interval = Duration::from_secs(10);
    });
    ep.notify(at(t0, 5.0), "T", content("a"));
    assert_eq!(
        one_transmit(&mut ep).header.get_type(),
        MessageType::NonConfirmable
    );
    ep.notify(at(t0, 11.0), "T", content("b"));
    assert_eq!(
        one_transmit(&mut ep).header.get_type(),
        MessageType::Confirmable
    );
}

#[test]
fn rfc7641_3_6_rst_to_a_non_notification_deregisters() {
    let (mut ep, t0) = observed_with(|c| c.notify = NotifyPolicy::Non);
    ep.notify(at(t0, 1.0), "T", content("a"));
    let first = one_transmit(&mut ep);
    ep.notify(at(t0, 2.0), "T", content("b"));
    one_transmit(&mut ep);
    events(&mut ep);
    // An RST to the older of the two NON notifications still counts.
    empty(&mut ep, at(t0, 3.0), PEER, true, first.header.message_id);
    assert_eq!(ep.observer_count("T"), 0);
    assert_eq!(ep.stats().observers_reset, 1);
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::ObservationEnded { remaining: 0, .. })));
    ep.notify(at(t0, 4.0), "T", content("c"));
    assert!(transmits(&mut ep).is_empty(), "nothing after the RST");
}

#[test]
fn rfc7641_3_6_rst_from_another_peer_or_unknown_mid_deregisters_nothing() {
    let (mut ep, t0) = observed_with(|c| c.notify = NotifyPolicy::Non);
    ep.notify(at(t0, 1.0), "T", content("a"));
    let n = one_transmit(&mut ep);
    empty(&mut ep, at(t0, 2.0), PEER2, true, n.header.message_id);
    empty(
        &mut ep,
        at(t0, 2.0),
        PEER,
        true,
        n.header.message_id.wrapping_add(99),
    );
    assert_eq!(ep.observer_count("T"), 1);
}

#[test]
fn rfc7641_3_2_value_in_another_format_ends_the_observation_with_4_06() {
    let (mut ep, t0) = fresh();
    // Observe with Accept: application/json (17 = Accept).
    ep.feed(
        t0,
        &Msg::get(1).token(b"js").observe(0).path("r/T").uint(17, 50),
    );
    let req = one_request(&mut ep);
    assert_eq!(req.accept, Some(50));
    ep.respond(t0, req.id, json("{}"), Some("T".into()));
    one_transmit(&mut ep);
    // A JSON value is notified normally.
    ep.notify(at(t0, 1.0), "T", json("{\"a\":1}"));
    let n = one_transmit(&mut ep);
    assert!(is(&n, ResponseType::Content));
    empty(&mut ep, at(t0, 1.5), PEER, false, n.header.message_id);
    events(&mut ep);
    // A text/plain value ends it: 4.06 without Observe.
    ep.notify(at(t0, 2.0), "T", content("plain"));
    let f = one_transmit(&mut ep);
    assert!(is(&f, ResponseType::NotAcceptable), "{f:?}");
    assert!(
        uint_opt(&f, 6).is_none(),
        "a final notification has no Observe"
    );
    assert_eq!(f.get_token(), b"js");
    assert_eq!(f.header.get_type(), MessageType::Confirmable);
    assert_eq!(ep.observer_count("T"), 0);
    assert_eq!(ep.stats().observers_not_acceptable, 1);
    events(&mut ep);
    // An observer without Accept is unaffected.
    observe(&mut ep, at(t0, 3.0), PEER2, 1, b"any");
    ep.notify(at(t0, 4.0), "T", json("{}"));
    ep.notify(at(t0, 4.0), "T", content("x"));
    let all = transmits(&mut ep);
    assert!(all.iter().all(|(_, p)| is(p, ResponseType::Content)));
}

#[test]
fn rfc7252_4_7_nstart_one_con_outstanding_per_client() {
    // One client observes two resources: "T" and "U".
    let (mut ep, t0) = observing_t_and_u();
    // Another client observes "U" too.
    send(
        &mut ep,
        t0,
        PEER2,
        &Msg::get(1).token(b"u").observe(0).path("r/U"),
    );
    let req = one_request(&mut ep);
    ep.respond(t0, req.id, content("u0"), Some("U".into()));
    one_transmit(&mut ep);

    ep.notify(at(t0, 1.0), "T", content("t1"));
    let t1 = one_transmit(&mut ep);
    assert_eq!(t1.header.get_type(), MessageType::Confirmable);
    ep.notify(at(t0, 1.1), "U", content("u1"));
    ep.notify(at(t0, 1.2), "U", content("u2"));
    // PEER already has one CON outstanding: only PEER2 gets "U" now.
    let sent = transmits(&mut ep);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, addr(PEER2));
    assert_eq!(ep.stats().nstart_deferred, 1);
    // The ACK frees the slot: the deferred notification carries the newest value.
    empty(&mut ep, at(t0, 2.0), PEER, false, t1.header.message_id);
    let u = one_transmit(&mut ep);
    assert_eq!(u.get_token(), b"u");
    assert_eq!(u.payload, b"u2", "the newest value, not u1");
    assert!(uint_opt(&u, 6) > uint_opt(&t1, 6));
}

#[test]
fn rfc7252_4_7_nstart_slot_is_freed_when_retransmissions_run_out() {
    let (mut ep, t0) = observing_t_and_u();
    ep.notify(t0, "T", content("t1"));
    one_transmit(&mut ep);
    ep.notify(t0, "U", content("u1"));
    assert!(transmits(&mut ep).is_empty(), "deferred by NSTART");
    // Never ACKed: 4 retransmissions over ~93 s at most, then "T" is dropped ...
    while ep.observer_count("T") == 1 {
        let now = ep.poll_timeout().expect("a timer is armed");
        ep.handle_timeout(now);
        assert!(now < at(t0, 200.0), "gives up in time");
    }
    // ... and the "U" notification finally goes out.
    let sent = transmits(&mut ep);
    assert!(
        sent.iter()
            .any(|(_, p)| p.get_token() == b"u" && p.payload == b"u1"),
        "{sent:?}"
    );
    assert_eq!(ep.observer_count("U"), 1);
}

#[test]
fn rfc7252_4_5_duplicate_non_is_ignored_for_non_lifetime() {
    let (mut ep, t0) = fresh();
    let put = Msg::non(RequestType::Put, 9)
        .token(b"p")
        .path("r/T")
        .payload(b"x");
    answered(
        &mut ep,
        t0,
        put.clone(),
        Response::new(ResponseType::Changed),
        None,
    );
    one_transmit(&mut ep);
    // The same NON within NON_LIFETIME (145 s): no request, no answer.
    send(&mut ep, at(t0, 100.0), PEER, &put);
    assert!(
        events(&mut ep).is_empty(),
        "duplicate NON not processed again"
    );
    assert!(transmits(&mut ep).is_empty());
    assert_eq!(ep.stats().duplicates, 1);
    // After NON_LIFETIME the MID may be a new message.
    ep.handle_timeout(at(t0, 146.0));
    send(&mut ep, at(t0, 146.0), PEER, &put);
    one_request(&mut ep);
}

#[test]
fn rfc7252_4_6_oversized_con_request_is_4_13_with_size1() {
    let (mut ep, _) = fresh_with(|c| c.max_datagram_size = 600);
    let t0 = Instant::now();
    let big = Msg::con(coap_lite::RequestType::Put, 5)
        .token(b"big")
        .path("r/T")
        .payload(&[7u8; 700]);
    ep.feed(t0, &big);
    assert!(events(&mut ep).is_empty(), "not handed to the driver");
    let r = one_transmit(&mut ep);
    assert!(is(&r, ResponseType::RequestEntityTooLarge));
    assert_eq!(r.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(r.header.message_id, 5);
    assert_eq!(r.get_token(), b"big");
    assert!(uint_opt(&r, 60).is_some(), "Size1");
    // A NON of the same size is dropped; both counted.
    let non = Msg::non(coap_lite::RequestType::Put, 6)
        .path("r/T")
        .payload(&[7u8; 700]);
    ep.feed(t0, &non);
    assert!(transmits(&mut ep).is_empty());
    assert_eq!(ep.stats().oversized_dropped, 2);
}

#[test]
fn per_peer_caps_bound_observers_and_pending_requests() {
    let (mut ep, _) = fresh_with(|c| {
        c.max_observers_per_peer = 2;
        c.max_pending_per_peer = 3;
    });
    let t0 = Instant::now();
    for (mid, token) in [(1u16, b"a"), (2, b"b"), (3, b"c")] {
        observe(&mut ep, t0, PEER, mid, token);
    }
    assert_eq!(
        ep.observer_count("T"),
        2,
        "the third registration is refused"
    );
    observe(&mut ep, t0, PEER2, 1, b"a");
    assert_eq!(
        ep.observer_count("T"),
        3,
        "another client has its own quota"
    );

    for mid in 10..13 {
        ep.feed(t0, &Msg::get(mid).path("r/T"));
    }
    assert_eq!(events(&mut ep).len(), 3);
    ep.feed(t0, &Msg::get(13).path("r/T"));
    assert!(events(&mut ep).is_empty());
    assert!(is(&one_transmit(&mut ep), ResponseType::ServiceUnavailable));
    send(&mut ep, t0, PEER2, &Msg::get(13).path("r/T"));
    assert_eq!(events(&mut ep).len(), 1, "PEER2 is not affected");
}

#[test]
fn peer_table_entries_are_dropped_when_idle() {
    let (mut ep, t0) = fresh();
    for i in 0..50u16 {
        let peer = format!("192.0.2.{}:5683", i + 10);
        send(&mut ep, t0, &peer, &Msg::get(1).path("r/T"));
        let req = one_request(&mut ep);
        ep.respond(t0, req.id, content("v"), None);
        one_transmit(&mut ep);
    }
    assert_eq!(ep.peer_count(), 0, "answered clients leave no state behind");
    observe(&mut ep, t0, PEER, 1, b"o");
    assert_eq!(ep.peer_count(), 1);
    ep.feed(t0, &Msg::get(2).token(b"o").observe(1).path("r/T"));
    let req = events(&mut ep)
        .into_iter()
        .find_map(|e| match e {
            Event::Request(r) => Some(r),
            _ => None,
        })
        .expect("the deregistering GET");
    ep.respond(t0, req.id, content("v"), None);
    assert_eq!(ep.peer_count(), 0);
}

#[test]
fn rfc9175_block1_new_token_per_block_is_one_transfer() {
    // libcoap sends every Block1 block with a new token; the transfer is
    // keyed by peer, Request-Tag and path, so it still reassembles.
    let (mut ep, t0) = fresh();
    let body: Vec<u8> = (0..40u8).collect();
    for (i, chunk) in body.chunks(16).enumerate() {
        let more = (i + 1) * 16 < body.len();
        let m = Msg::con(coap_lite::RequestType::Put, 100 + i as u16)
            .token(&[i as u8, 0xAA])
            .path("r/T")
            .block(27, i as u32, more, 0)
            .payload(chunk);
        ep.feed(t0, &m);
        if more {
            let r = one_transmit(&mut ep);
            assert!(is(&r, ResponseType::Continue));
            assert_eq!(r.get_token(), &[i as u8, 0xAA]);
        }
    }
    let req = one_request(&mut ep);
    assert_eq!(&req.payload[..], &body[..]);
}

#[test]
fn answered_requests_leave_no_expiry_entries_behind() {
    // Each request queued an entry to expire its pending state an exchange lifetime
    // (247 s) later, and answering it did not take the entry away: at 250k requests/s
    // the server grew by 26 bytes per request until the entries expired.
    let (mut ep, now) = fresh_with(|c| c.max_exchanges = 16);
    for mid in 1..=20_000u16 {
        let msg = if mid % 2 == 0 {
            Msg::con(RequestType::Put, mid)
        } else {
            Msg::non(RequestType::Put, mid)
        };
        ep.feed(now, &msg.path("r/T"));
        let req = one_request(&mut ep);
        ep.respond(now, req.id, Response::new(ResponseType::Changed), None);
        transmits(&mut ep);
    }
    assert!(
        ep.expiry_entries() <= 2 * 16 + 2 * 64 + 2,
        "{} entries after 20,000 answered requests",
        ep.expiry_entries()
    );
    // The entries still there expire the exchanges they track (RFC 7252 §4.5).
    ep.feed(now, &Msg::con(RequestType::Put, 20_000).path("r/T"));
    assert!(
        events(&mut ep).is_empty(),
        "a duplicate is answered from the cache"
    );
}
