//! RFC 7641 observe conformance: registration, notifications, the
//! retransmission/replacement rules of §4.5 and every way an observation ends.

mod common;

use std::time::Instant;

use coap_lite::{CoapOption, MessageType, ResponseType};
use common::*;
use ponte_coap::{Endpoint, Event, Response};

/// Sends an empty ACK or RST for `mid` from `peer`.
fn empty(ep: &mut Endpoint, now: Instant, peer: &str, rst: bool, mid: u16) {
    let [hi, lo] = mid.to_be_bytes();
    let first = if rst { 0x70 } else { 0x60 };
    ep.handle_datagram(now, addr(peer), &[first, 0, hi, lo]);
}

/// A fresh endpoint where [`PEER`] observes "T" with token "ob" (MID 1), and the instant.
fn observed() -> (Endpoint, Instant) {
    let (mut ep, now) = fresh();
    observe(&mut ep, now, PEER, 1, b"ob");
    (ep, now)
}

/// [`observed`], and the first notification of "T" ("v1", CON) sent to the observer.
fn notified() -> (Endpoint, Instant, coap_lite::Packet) {
    let (mut ep, now) = observed();
    ep.notify(now, "T", content("v1"));
    let n = one_transmit(&mut ep);
    (ep, now, n)
}

/// The only event is the end of the last observation of "T".
fn assert_last_observation_ended(ep: &mut Endpoint) {
    let ended = Event::ObservationEnded {
        resource: "T".into(),
        remaining: 0,
    };
    assert_eq!(events(ep), [ended]);
}

/// The registration GET /r/T with Observe=0 and token "ob", as MID `mid`.
fn registration(mid: u16) -> Msg {
    Msg::get(mid).token(b"ob").observe(0).path("r/T")
}

/// A 4.04 Not Found.
fn not_found() -> Response {
    Response::new(ResponseType::NotFound)
}

#[test]
fn rfc7641_3_1_registration_response_carries_observe() {
    let mut ep = endpoint();
    let ack = observe(&mut ep, Instant::now(), PEER, 1, b"ob");
    assert!(is(&ack, ResponseType::Content));
    assert!(uint_opt(&ack, 6).is_some());
    assert_eq!(ack.get_token(), b"ob");
    assert_eq!(ep.observer_count("T"), 1);
}

#[test]
fn rfc7641_4_1_non_2xx_answer_does_not_register() {
    let (mut ep, now) = fresh();
    answered(&mut ep, now, registration(1), not_found(), Some("T"));
    let ack = one_transmit(&mut ep);
    assert!(ack.get_option(CoapOption::Observe).is_none(), "{ack:?}");
    assert_eq!(ep.observer_count("T"), 0);
}

#[test]
fn rfc7641_4_1_observe_is_only_honoured_for_get_with_observe_0() {
    let (mut ep, now) = fresh();
    let get = Msg::get(1).token(b"ob").path("r/T");
    answered(&mut ep, now, get, content("v"), Some("T"));
    assert!(one_transmit(&mut ep)
        .get_option(CoapOption::Observe)
        .is_none());
    assert_eq!(ep.observer_count("T"), 0);
}

#[test]
fn rfc7641_4_1_reregistration_with_same_token_replaces() {
    let (mut ep, now) = fresh();
    let first = observe(&mut ep, now, PEER, 1, b"ob");
    let second = observe(&mut ep, now, PEER, 2, b"ob");
    assert_eq!(ep.observer_count("T"), 1);
    assert!(uint_opt(&second, 6) > uint_opt(&first, 6));
    // Another token (or peer) is another observer.
    observe(&mut ep, now, PEER, 3, b"o2");
    observe(&mut ep, now, PEER2, 1, b"ob");
    assert_eq!(ep.observer_count("T"), 3);
}

#[test]
fn rfc7641_4_4_notifications_are_con_with_token_fresh_mid_and_increasing_sequence() {
    let (mut ep, now) = fresh();
    let reg = observe(&mut ep, now, PEER, 1, b"ob");
    let mut last_seq = uint_opt(&reg, 6).unwrap();
    let mut mids = std::collections::HashSet::new();
    for i in 0..3 {
        ep.notify(now, "T", content(&format!("v{i}")));
        let n = one_transmit(&mut ep);
        assert_eq!(n.header.get_type(), MessageType::Confirmable);
        assert_eq!(n.get_token(), b"ob");
        assert!(is(&n, ResponseType::Content));
        let seq = uint_opt(&n, 6).unwrap();
        assert!(seq > last_seq && seq < 1 << 24);
        last_seq = seq;
        assert!(mids.insert(n.header.message_id));
        assert_eq!(n.payload, format!("v{i}").as_bytes());
        empty(&mut ep, now, PEER, false, n.header.message_id);
    }
    assert_eq!(ep.stats().notifications, 3);
}

#[test]
fn rfc7641_3_6_rst_deregisters() {
    let (mut ep, now, n) = notified();
    empty(&mut ep, now, PEER, true, n.header.message_id);
    assert_eq!(ep.observer_count("T"), 0);
    assert_last_observation_ended(&mut ep);
    assert_eq!(ep.stats().observers_reset, 1);
    ep.notify(now, "T", content("v2"));
    assert!(transmits(&mut ep).is_empty());
}

#[test]
fn rfc7641_3_6_rst_from_another_peer_does_not_deregister() {
    let (mut ep, now, n) = notified();
    empty(&mut ep, now, PEER2, true, n.header.message_id);
    assert_eq!(ep.observer_count("T"), 1);
}

#[test]
fn rfc7641_3_6_get_with_observe_1_deregisters() {
    let (mut ep, now) = observed();
    ep.feed(now, &Msg::get(2).token(b"ob").observe(1).path("r/T"));
    let evs = events(&mut ep);
    assert_eq!(
        evs[0],
        Event::ObservationEnded {
            resource: "T".into(),
            remaining: 0
        }
    );
    let Event::Request(req) = &evs[1] else {
        panic!("expected the request to be handed over: {evs:?}");
    };
    assert_eq!(req.observe, Some(1));
    ep.respond(now, req.id, content("v"), Some("T".into()));
    let ack = one_transmit(&mut ep);
    assert!(is(&ack, ResponseType::Content));
    assert!(ack.get_option(CoapOption::Observe).is_none());
    assert_eq!(ep.observer_count("T"), 0);
}

#[test]
fn rfc7641_3_6_plain_get_with_another_token_keeps_observation() {
    let (mut ep, now) = observed();
    answered(
        &mut ep,
        now,
        Msg::get(2).token(b"other").path("r/T"),
        content("v"),
        None,
    );
    transmits(&mut ep);
    // Observe=1 with a different token does not cancel either.
    ep.feed(now, &Msg::get(3).token(b"other").observe(1).path("r/T"));
    one_request(&mut ep);
    assert_eq!(ep.observer_count("T"), 1);
}

#[test]
fn rfc7641_4_5_ack_stops_retransmission() {
    let (mut ep, now, n) = notified();
    empty(&mut ep, at(now, 1.0), PEER, false, n.header.message_id);
    ep.handle_timeout(at(now, 100.0));
    assert!(transmits(&mut ep).is_empty());
    assert_eq!(ep.stats().retransmissions, 0);
}

#[test]
fn rfc7641_4_5_unacknowledged_notification_drops_observer_after_max_retransmit() {
    let (mut ep, now, n) = notified();
    let mut deadlines = Vec::new();
    let mut t = now;
    while let Some(deadline) = ep.poll_timeout().filter(|d| *d < at(now, 200.0)) {
        deadlines.push(deadline.duration_since(t).as_secs_f64());
        t = deadline;
        ep.handle_timeout(t);
        for (_, p) in transmits(&mut ep) {
            assert_eq!(p.header.message_id, n.header.message_id);
            assert_eq!(p.payload, b"v1");
        }
        if ep.observer_count("T") == 0 {
            break;
        }
    }
    // Initial timeout in [2, 3) s, then doubling: 4 retransmissions, 5 waits.
    assert_eq!(deadlines.len(), 5, "{deadlines:?}");
    assert!((2.0..3.0).contains(&deadlines[0]));
    for w in deadlines.windows(2) {
        assert!((w[1] / w[0] - 2.0).abs() < 1e-6, "{deadlines:?}");
    }
    assert_eq!(ep.stats().retransmissions, 4);
    assert_eq!(ep.stats().observers_dropped, 1);
    assert_last_observation_ended(&mut ep);
}

#[test]
fn rfc7641_4_5_2_newer_value_replaces_outstanding_notification() {
    let (mut ep, now, first) = notified();
    ep.notify(now, "T", content("v2"));
    ep.notify(now, "T", content("v3"));
    assert!(
        transmits(&mut ep).is_empty(),
        "one CON outstanding per observer"
    );
    let deadline = ep.poll_timeout().unwrap();
    ep.handle_timeout(deadline);
    let retx = one_transmit(&mut ep);
    assert_eq!(retx.payload, b"v3");
    assert_ne!(retx.header.message_id, first.header.message_id);
    assert!(uint_opt(&retx, 6) > uint_opt(&first, 6));
    assert_eq!(retx.get_token(), b"ob");
    // An RST to the replaced notification still cancels the observation.
    empty(&mut ep, deadline, PEER, true, first.header.message_id);
    assert_eq!(ep.observer_count("T"), 0);
}

#[test]
fn rfc7641_4_5_2_newer_value_is_sent_when_outstanding_one_is_acknowledged() {
    let (mut ep, now, first) = notified();
    ep.notify(now, "T", content("v2"));
    empty(&mut ep, now, PEER, false, first.header.message_id);
    let next = one_transmit(&mut ep);
    assert_eq!(next.payload, b"v2");
    assert!(uint_opt(&next, 6) > uint_opt(&first, 6));
}

#[test]
fn rfc7641_3_2_end_observations_sends_final_response_without_observe() {
    let (mut ep, now) = fresh();
    observe(&mut ep, now, PEER, 1, b"o1");
    observe(&mut ep, now, PEER2, 1, b"o2");
    ep.end_observations(now, "T", not_found());
    let finals = transmits(&mut ep);
    assert_eq!(finals.len(), 2);
    for (peer, p) in &finals {
        assert!(is(p, ResponseType::NotFound));
        assert!(p.get_option(CoapOption::Observe).is_none());
        assert_eq!(p.header.get_type(), MessageType::Confirmable);
        let token: &[u8] = if *peer == addr(PEER) { b"o1" } else { b"o2" };
        assert_eq!(p.get_token(), token);
    }
    let mut remaining: Vec<usize> = events(&mut ep)
        .into_iter()
        .map(|e| match e {
            Event::ObservationEnded { remaining, .. } => remaining,
            other => panic!("{other:?}"),
        })
        .collect();
    remaining.sort();
    assert_eq!(remaining, [0, 1]);
    assert_eq!(ep.observer_count("T"), 0);
    // The final response is retransmitted until acknowledged.
    let deadline = ep.poll_timeout().unwrap();
    ep.handle_timeout(deadline);
    assert!(!transmits(&mut ep).is_empty());
}

#[test]
fn rfc7641_4_2_non_2xx_notify_ends_observations() {
    let (mut ep, now) = observed();
    ep.notify(now, "T", Response::new(ResponseType::NotAcceptable));
    let p = one_transmit(&mut ep);
    assert!(p.get_option(CoapOption::Observe).is_none());
    assert_eq!(ep.observer_count("T"), 0);
}

#[test]
fn rfc7641_4_1_failed_reregistration_removes_the_observation() {
    let (mut ep, now) = observed();
    // The same registration again, refused this time.
    answered(&mut ep, now, registration(2), not_found(), Some("T"));
    assert_eq!(ep.observer_count("T"), 0);
    assert!(matches!(
        events(&mut ep)[..],
        [Event::ObservationEnded { remaining: 0, .. }]
    ));
}

#[test]
fn rfc7641_4_1_reregistration_for_another_resource_moves_the_observation() {
    let (mut ep, now) = observed();
    let elsewhere = Msg::get(2).token(b"ob").observe(0).path("r/U");
    answered(&mut ep, now, elsewhere, content("u"), Some("U"));
    assert_eq!(ep.observer_count("T"), 0);
    assert_eq!(ep.observer_count("U"), 1);
    assert_last_observation_ended(&mut ep);
}

#[test]
fn rfc7641_4_1_observer_cap_answers_without_observe() {
    let (mut ep, now) = fresh_with(|c| c.max_observers = 1);
    observe(&mut ep, now, PEER, 1, b"o1");
    let second = observe(&mut ep, now, PEER, 2, b"o2");
    assert!(second.get_option(CoapOption::Observe).is_none());
    assert_eq!(ep.observer_count("T"), 1);
}
