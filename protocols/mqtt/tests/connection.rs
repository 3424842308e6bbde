#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! Connection state machine tests, named after the clause they check. A fake clock
//! (`Instant` + `Duration`) makes every timer deterministic; no sockets.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use ponte_mqtt::*;

fn enc(p: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    encode(p, ProtocolVersion::V311, &mut out);
    out
}

fn connect_packet(client_id: &str, clean: bool, keep_alive: u16) -> Connect {
    Connect {
        protocol: ProtocolVersion::V311,
        client_id: client_id.into(),
        clean_session: clean,
        keep_alive,
        username: None,
        password: None,
        will: Some(LastWill {
            topic: "will/t".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        }),
        properties: Default::default(),
    }
}

/// Test harness: a connection plus a fake clock.
struct H {
    conn: Connection,
    t0: Instant,
}

impl H {
    fn new() -> H {
        let (conn, t0) = machine(|c| c.max_inflight = 2);
        H { conn, t0 }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn send(&mut self, secs: u64, p: &Packet) {
        let now = self.at(secs);
        self.conn.handle_bytes(now, &enc(p));
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    fn sent(&mut self) -> Vec<Packet> {
        let mut out = BytesMut::new();
        self.conn.poll_transmit(&mut out);
        let mut packets = Vec::new();
        while let Some(p) =
            decode(&mut out, usize::MAX, ProtocolVersion::V311).expect("server sent valid bytes")
        {
            packets.push(p);
        }
        packets
    }

    /// CONNECT (keep alive 10 s, clean) + accept, outputs drained.
    fn connected() -> H {
        let mut h = H::new();
        h.send(0, &Packet::Connect(Box::new(connect_packet("c", true, 10))));
        assert!(matches!(h.events()[..], [Event::Connect(_)]));
        let now = h.at(0);
        h.conn.accept(now, Accept::default());
        assert_eq!(h.sent(), vec![connack(false, reason::SUCCESS)]);
        h
    }

    /// Queue `topic` at `qos` for the client at second `secs` (it fits the window).
    fn push(&mut self, secs: u64, topic: &str, qos: QoS) {
        let now = self.at(secs);
        self.conn.send_publish(now, out(topic, qos)).unwrap();
    }

    /// The client's acknowledgement `ack` at second `secs` ends the last delivery in flight.
    fn frees_window(&mut self, secs: u64, ack: Packet) {
        self.send(secs, &ack);
        assert_eq!(self.events(), vec![Event::InflightFreed]);
        assert_eq!(self.conn.inflight_available(), 2);
    }

    /// The packet ids of what the server sent, all PUBLISH packets.
    fn sent_publish_ids(&mut self) -> Vec<u16> {
        let sent = self.sent();
        sent.iter()
            .map(|p| match p {
                Packet::Publish(p) => p.pkid,
                other => panic!("not a PUBLISH: {other:?}"),
            })
            .collect()
    }

    /// CONNECT (as [`H::connected`]) with a PINGREQ pipelined behind it, in one read.
    fn connect_then_ping() -> H {
        let mut h = H::new();
        let mut wire = enc(&Packet::Connect(Box::new(connect_packet("c", true, 10))));
        wire.extend_from_slice(&enc(&Packet::PingReq));
        let now = h.at(0);
        h.conn.handle_bytes(now, &wire);
        h
    }

    /// The connection closed for `reason`; the will it leaves.
    fn closed_for(&mut self, reason: CloseReason) -> Option<LastWill> {
        let (got, will) = self.closed_reason();
        assert_eq!(got, reason);
        will
    }

    fn closed_reason(&mut self) -> (CloseReason, Option<LastWill>) {
        let events = self.events();
        let closed: Vec<_> = events
            .into_iter()
            .filter_map(|e| match e {
                Event::Closed { reason, will } => Some((reason, will)),
                _ => None,
            })
            .collect();
        assert_eq!(closed.len(), 1, "exactly one Closed event");
        assert!(self.conn.is_closed());
        closed.into_iter().next().unwrap()
    }
}

fn connack(session_present: bool, code: u8) -> Packet {
    Packet::ConnAck {
        session_present,
        reason_code: code,
        properties: Default::default(),
    }
}

fn out(topic: &str, qos: QoS) -> Outgoing {
    Outgoing {
        topic: Arc::from(topic),
        payload: Bytes::from_static(b"m"),
        qos,
        retain: false,
        content_type: None,
        properties: None,
        subscription_ids: Vec::new(),
        expires_at: None,
    }
}

fn inbound(qos: QoS, pkid: u16, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic: "in".into(),
        pkid,
        payload: Bytes::from_static(b"x"),
        properties: Default::default(),
    })
}

#[test]
fn mqtt_3_1_0_1_first_packet_not_connect_closes() {
    let mut h = H::new();
    h.send(0, &Packet::PingReq);
    let will = h.closed_for(CloseReason::Violation(Violation::FirstPacketNotConnect(
        "PINGREQ",
    )));
    assert_eq!(will, None);
    assert!(h.sent().is_empty());
}

#[test]
fn mqtt_3_1_0_2_second_connect_closes_with_will() {
    let mut h = H::connected();
    h.send(1, &Packet::Connect(Box::new(connect_packet("c", true, 10))));
    let will = h.closed_for(CloseReason::Violation(Violation::SecondConnect));
    assert_eq!(will.map(|w| w.topic), Some("will/t".to_string()));
}

#[test]
fn mqtt_3_1_2_2_unsupported_level_gets_connack_0x01_then_close() {
    let mut h = H::new();
    // Level 6 does not exist (MQTT 5 is level 5 and is accepted, see tests/v5.rs).
    let v6 = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 6, 0b10, 0, 10, 0, 0, 1, b'c',
    ];
    h.conn.handle_bytes(h.at(0), &v6);
    assert_eq!(
        h.sent(),
        vec![connack(false, reason::UNSUPPORTED_PROTOCOL_VERSION)]
    );
    assert_eq!(h.conn.protocol(), None);
    let will = h.closed_for(CloseReason::Rejected(reason::UNSUPPORTED_PROTOCOL_VERSION));
    assert_eq!(will, None);
}

#[test]
fn mqtt_3_1_3_8_empty_client_id_with_persistent_session_rejected_by_machine() {
    let mut h = H::new();
    h.send(0, &Packet::Connect(Box::new(connect_packet("", false, 10))));
    assert_eq!(
        h.sent(),
        vec![connack(false, reason::CLIENT_IDENTIFIER_NOT_VALID)]
    );
    let (reason, will) = h.closed_reason(); // no Connect event before it
    assert_eq!(
        reason,
        CloseReason::Rejected(reason::CLIENT_IDENTIFIER_NOT_VALID)
    );
    assert_eq!(will, None);
}

#[test]
fn mqtt_3_1_3_6_empty_client_id_with_clean_session_is_emitted() {
    let mut h = H::new();
    h.send(0, &Packet::Connect(Box::new(connect_packet("", true, 10))));
    assert!(matches!(&h.events()[..], [Event::Connect(c)] if c.client_id.is_empty()));
}

#[test]
fn mqtt_3_1_2_24_keepalive_one_and_a_half_times_closes_with_will() {
    let mut h = H::connected();
    assert_eq!(h.conn.poll_timeout(), Some(h.at(15)));
    h.send(5, &Packet::PingReq);
    // MQTT-3.12.4-1: PINGREQ is handed to the application, which answers it once
    // everything before it is handled.
    assert_eq!(h.events(), vec![Event::PingRequest]);
    assert!(
        h.sent().is_empty(),
        "no PINGRESP before the application answers"
    );
    h.conn.ping_response();
    assert_eq!(h.sent(), vec![Packet::PingResp]);
    assert_eq!(h.conn.poll_timeout(), Some(h.at(20)));
    h.conn.handle_timeout(h.at(19));
    assert!(!h.conn.is_closed());
    h.conn.handle_timeout(h.at(20));
    let will = h.closed_for(CloseReason::KeepAliveTimeout);
    assert!(will.is_some());
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn mqtt_3_1_2_10_keepalive_zero_disables_the_timer() {
    let mut h = H::new();
    h.send(0, &Packet::Connect(Box::new(connect_packet("c", true, 0))));
    h.events();
    h.conn.accept(h.at(0), Accept::default());
    assert_eq!(h.conn.poll_timeout(), None);
    h.conn.handle_timeout(h.at(1_000_000));
    assert!(!h.conn.is_closed());
}

#[test]
fn connect_timeout_closes_without_will() {
    let mut h = H::new();
    assert_eq!(h.conn.poll_timeout(), Some(h.at(10)));
    h.conn.handle_bytes(h.at(1), &[0x10]); // partial CONNECT does not stop the timer
    h.conn.handle_timeout(h.at(10));
    assert_eq!(h.closed_reason(), (CloseReason::ConnectTimeout, None));
}

#[test]
fn mqtt_3_1_4_5_pipelined_packets_wait_for_accept_and_are_dropped_on_reject() {
    let mut h = H::connect_then_ping();
    assert!(matches!(h.events()[..], [Event::Connect(_)]));
    assert!(h.sent().is_empty(), "PINGREQ not processed before accept");
    h.conn.reject(reason::NOT_AUTHORIZED, None);
    assert_eq!(h.sent(), vec![connack(false, reason::NOT_AUTHORIZED)]);
    assert_eq!(
        h.closed_reason(),
        (CloseReason::Rejected(reason::NOT_AUTHORIZED), None)
    );
    // After close, input is ignored and nothing more is sent.
    h.send(1, &Packet::PingReq);
    h.conn.suback(1, vec![0x80], None);
    h.conn.ping_response();
    assert!(h.sent().is_empty());
    assert!(h.events().is_empty());
}

#[test]
fn mqtt_3_1_4_pipelined_packets_processed_after_accept_in_order() {
    let mut h = H::connect_then_ping();
    h.events();
    h.conn.accept(h.at(0), Accept::default());
    assert_eq!(h.events(), vec![Event::PingRequest], "held until accepted");
    h.conn.ping_response();
    assert_eq!(
        h.sent(),
        vec![connack(false, reason::SUCCESS), Packet::PingResp]
    );
}

#[test]
fn bytes_before_accept_are_bounded() {
    let (mut conn, t0) = machine(|c| c.max_packet_size = 64);
    conn.handle_bytes(
        t0,
        &enc(&Packet::Connect(Box::new(connect_packet("c", true, 10)))),
    );
    conn.handle_bytes(t0, &[0xc0, 0].repeat(40));
    assert!(conn.is_closed());
}

#[test]
fn packet_over_max_packet_size_closes() {
    let (mut conn, t0) = machine(|c| c.max_packet_size = 16);
    conn.handle_bytes(t0, &[0x10, 0x7f]);
    assert!(matches!(
        conn.poll_event(),
        Some(Event::Closed {
            reason: CloseReason::Malformed(DecodeError::PacketTooLarge { .. }),
            ..
        })
    ));
}

#[test]
fn mqtt_3_14_4_3_disconnect_discards_will() {
    let mut h = H::connected();
    h.send(1, &Packet::disconnect());
    assert_eq!(h.closed_reason(), (CloseReason::Disconnect, None));
}

#[test]
fn eof_and_protocol_error_publish_the_will() {
    let mut h = H::connected();
    h.conn.handle_eof(h.at(1));
    let will = h.closed_for(CloseReason::Eof);
    assert!(will.is_some());

    let mut h = H::connected();
    h.conn.handle_bytes(h.at(1), &[0x36, 0]); // QoS 3 publish
    let will = h.closed_for(CloseReason::Malformed(DecodeError::PublishQoS3));
    assert!(will.is_some());
}

#[test]
fn mqtt_3_1_4_2_takeover_close_publishes_will_once() {
    let mut h = H::connected();
    h.conn.close(CloseReason::TakenOver);
    h.conn.close(CloseReason::ServerClose);
    h.conn.handle_eof(h.at(1));
    let will = h.closed_for(CloseReason::TakenOver);
    assert!(will.is_some());
}

#[test]
fn client_sending_server_only_packet_closes() {
    let mut h = H::connected();
    h.send(1, &Packet::PingResp);
    h.closed_for(CloseReason::Violation(Violation::ServerOnlyPacket(
        "PINGRESP",
    )));
}

#[test]
fn mqtt_4_3_2_inbound_qos1_puback_only_after_publish_done() {
    let mut h = H::connected();
    h.send(1, &inbound(QoS::AtLeastOnce, 5, false));
    assert!(matches!(&h.events()[..], [Event::Publish(p)] if p.pkid == 5));
    assert!(h.sent().is_empty());
    h.conn.publish_done(5, reason::SUCCESS, None);
    assert_eq!(h.sent(), vec![Packet::PubAck(PubResponse::success(5))]);
    h.conn.publish_done(5, reason::SUCCESS, None); // unknown now: ignored
    assert!(h.sent().is_empty());
}

#[test]
fn mqtt_4_3_3_inbound_qos2_method_b_delivers_once() {
    let mut h = H::connected();
    h.send(1, &inbound(QoS::ExactlyOnce, 9, false));
    assert_eq!(h.events().len(), 1);
    // DUP re-send before publish_done: not delivered again, nothing sent yet.
    h.send(2, &inbound(QoS::ExactlyOnce, 9, true));
    assert!(h.events().is_empty());
    assert!(h.sent().is_empty());
    h.conn.publish_done(9, reason::SUCCESS, None);
    assert_eq!(h.sent(), vec![Packet::PubRec(PubResponse::success(9))]);
    // DUP re-send after PUBREC: PUBREC again, still not delivered.
    h.send(3, &inbound(QoS::ExactlyOnce, 9, true));
    assert!(h.events().is_empty());
    assert_eq!(h.sent(), vec![Packet::PubRec(PubResponse::success(9))]);
    h.send(4, &Packet::PubRel(PubResponse::success(9)));
    assert_eq!(h.sent(), vec![Packet::PubComp(PubResponse::success(9))]);
    // After release the id is free: a new publish with it is a new message.
    h.send(5, &inbound(QoS::ExactlyOnce, 9, false));
    assert_eq!(h.events().len(), 1);
}

#[test]
fn mqtt_4_3_3_pubrel_for_unknown_id_gets_pubcomp() {
    let mut h = H::connected();
    h.send(1, &Packet::PubRel(PubResponse::success(77)));
    assert_eq!(h.sent(), vec![Packet::PubComp(PubResponse::success(77))]);
}

#[test]
fn mqtt_4_3_outgoing_qos1_and_unknown_acks_ignored() {
    let mut h = H::connected();
    assert_eq!(h.conn.inflight_available(), 2);
    h.push(1, "a", QoS::AtLeastOnce);
    let sent = h.sent();
    let [Packet::Publish(p)] = &sent[..] else {
        panic!("{sent:?}")
    };
    assert_eq!(
        (p.qos, p.dup, p.topic.as_str()),
        (QoS::AtLeastOnce, false, "a")
    );
    h.send(2, &Packet::PubAck(PubResponse::success(p.pkid + 1))); // unknown
    h.send(2, &Packet::PubRec(PubResponse::success(p.pkid))); // wrong QoS: unknown for QoS 2
    h.send(2, &Packet::PubComp(PubResponse::success(p.pkid)));
    assert!(h.events().is_empty());
    assert!(h.sent().is_empty());
    h.frees_window(3, Packet::PubAck(PubResponse::success(p.pkid)));
}

#[test]
fn mqtt_4_3_3_outgoing_qos2_flow() {
    let mut h = H::connected();
    h.push(1, "a", QoS::ExactlyOnce);
    let sent = h.sent();
    let [Packet::Publish(p)] = &sent[..] else {
        panic!("{sent:?}")
    };
    let id = p.pkid;
    h.send(2, &Packet::PubRec(PubResponse::success(id)));
    assert_eq!(h.sent(), vec![Packet::PubRel(PubResponse::success(id))]);
    assert!(h.events().is_empty());
    assert_eq!(
        h.conn.inflight_available(),
        1,
        "still in flight until PUBCOMP"
    );
    h.frees_window(3, Packet::PubComp(PubResponse::success(id)));
}

#[test]
fn inflight_window_full_returns_message() {
    let mut h = H::connected();
    h.push(1, "a", QoS::AtLeastOnce);
    h.push(1, "b", QoS::ExactlyOnce);
    assert_eq!(h.conn.inflight_available(), 0);
    let back = h.conn.send_publish(h.at(1), out("c", QoS::AtLeastOnce));
    assert_eq!(back, Err(out("c", QoS::AtLeastOnce)));
    // QoS 0 is never limited.
    h.push(1, "d", QoS::AtMostOnce);
    let ids = h.sent_publish_ids();
    assert_eq!(ids[2], 0);
    assert!(ids[0] != 0 && ids[1] != 0 && ids[0] != ids[1]);
}

#[test]
fn send_publish_before_accept_returns_message() {
    let mut h = H::new();
    assert!(h
        .conn
        .send_publish(h.at(0), out("a", QoS::AtMostOnce))
        .is_err());
}

#[test]
fn mqtt_4_4_0_1_resumed_session_resends_with_dup_and_pubrel_in_order() {
    let mut h = H::connected();
    h.push(1, "first", QoS::ExactlyOnce);
    h.push(1, "second", QoS::AtLeastOnce);
    let ids = h.sent_publish_ids();
    h.send(2, &Packet::PubRec(PubResponse::success(ids[0])));
    h.send(2, &inbound(QoS::ExactlyOnce, 40, false));
    h.conn.publish_done(40, reason::SUCCESS, None);
    h.send(2, &inbound(QoS::ExactlyOnce, 41, false)); // not done: not persisted as received
    h.conn.handle_eof(h.at(3));
    let session = h.conn.take_session();
    assert_eq!(session.inbound_qos2, vec![40]);
    assert_eq!(
        session.outgoing,
        vec![
            Inflight::PubRel { pkid: ids[0] },
            Inflight::Publish {
                pkid: ids[1],
                message: out("second", QoS::AtLeastOnce)
            }
        ]
    );

    let mut h2 = H::new();
    h2.send(
        0,
        &Packet::Connect(Box::new(connect_packet("c", false, 10))),
    );
    h2.events();
    h2.conn.accept(
        h2.at(0),
        Accept {
            session_present: true,
            resume: Some(session),
            ..Accept::default()
        },
    );
    let sent = h2.sent();
    assert_eq!(sent[0], connack(true, reason::SUCCESS));
    assert_eq!(sent[1], Packet::PubRel(PubResponse::success(ids[0])));
    let Packet::Publish(p) = &sent[2] else {
        panic!("{sent:?}")
    };
    assert_eq!((p.dup, p.pkid, p.topic.as_str()), (true, ids[1], "second"));
    // Stored inbound QoS 2 id is not delivered again.
    h2.send(1, &inbound(QoS::ExactlyOnce, 40, true));
    assert!(h2.events().is_empty());
    assert_eq!(h2.sent(), vec![Packet::PubRec(PubResponse::success(40))]);
    // New ids skip those in flight.
    h2.conn
        .send_publish(h2.at(1), out("x", QoS::AtLeastOnce))
        .unwrap_err();
    h2.send(2, &Packet::PubAck(PubResponse::success(ids[1])));
    h2.conn
        .send_publish(h2.at(2), out("x", QoS::AtLeastOnce))
        .unwrap();
    let sent = h2.sent();
    let Packet::Publish(p) = &sent[0] else {
        panic!("{sent:?}")
    };
    assert!(p.pkid != ids[0]);
}

#[test]
fn subscribe_and_unsubscribe_round_trip_through_driver() {
    let mut h = H::connected();
    let subscribe = Subscribe {
        pkid: 3,
        filters: vec![("a/#".into(), SubscriptionOptions::qos(QoS::ExactlyOnce))],
        properties: Default::default(),
    };
    let unsubscribe = Unsubscribe {
        pkid: 4,
        filters: vec!["a/#".into()],
        properties: Default::default(),
    };
    h.send(1, &Packet::Subscribe(subscribe.clone()));
    h.send(1, &Packet::Unsubscribe(unsubscribe.clone()));
    assert_eq!(
        h.events(),
        vec![Event::Subscribe(subscribe), Event::Unsubscribe(unsubscribe)]
    );
    h.conn.suback(3, vec![QoS::AtLeastOnce.as_u8()], None);
    h.conn.unsuback(4, vec![reason::SUCCESS], None);
    assert_eq!(
        h.sent(),
        vec![
            Packet::SubAck(SubResponse {
                pkid: 3,
                reason_codes: vec![QoS::AtLeastOnce.as_u8()],
                properties: Default::default(),
            }),
            // 3.1.1 UNSUBACK carries no codes.
            Packet::UnsubAck(SubResponse {
                pkid: 4,
                reason_codes: vec![],
                properties: Default::default(),
            })
        ]
    );
}

#[test]
fn bytes_split_one_at_a_time_decode_the_same() {
    let mut h = H::new();
    let wire = enc(&Packet::Connect(Box::new(connect_packet("c", true, 10))));
    for b in wire.iter() {
        h.conn.handle_bytes(h.at(0), &[*b]);
    }
    assert!(matches!(h.events()[..], [Event::Connect(_)]));
    assert_eq!(h.conn.protocol(), Some(ProtocolVersion::V311));
}

#[test]
fn mqtt_3_1_will_not_published_when_closed_before_accept() {
    let mut h = H::new();
    h.send(0, &Packet::Connect(Box::new(connect_packet("c", true, 10))));
    h.events();
    h.conn.handle_eof(h.at(1));
    assert_eq!(h.closed_reason(), (CloseReason::Eof, None));
}

#[test]
fn mqtt_3_1_v31_empty_client_id_rejected() {
    let mut h = H::new();
    let mut c = connect_packet("", true, 10);
    c.protocol = ProtocolVersion::V31;
    h.send(0, &Packet::Connect(Box::new(c)));
    assert_eq!(
        h.sent(),
        vec![connack(false, reason::CLIENT_IDENTIFIER_NOT_VALID)]
    );
    assert!(h.conn.is_closed());
}

proptest::proptest! {
    #[test]
    fn arbitrary_input_never_panics_and_closes_at_most_once(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..8),
        accept in proptest::prelude::any::<bool>(),
    ) {
        let t0 = Instant::now();
        let mut conn = Connection::new(t0, Config { max_packet_size: 128, keep_alive_factor: f64::NAN, ..Config::default() });
        // A valid CONNECT first so the fuzz reaches the connected state.
        if accept {
            conn.handle_bytes(t0, &enc(&Packet::Connect(Box::new(connect_packet("c", true, 10)))));
            conn.accept(t0, Accept::default());
        }
        let mut closed = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            let now = t0 + Duration::from_secs(i as u64);
            conn.handle_bytes(now, chunk);
            conn.handle_timeout(now);
            let mut out = BytesMut::new();
            conn.poll_transmit(&mut out);
            while let Some(e) = conn.poll_event() {
                match e {
                    Event::Closed { .. } => closed += 1,
                    Event::Publish(p) => conn.publish_done(p.pkid, reason::SUCCESS, None),
                    Event::Subscribe(s) => conn.suback(s.pkid, vec![0x80; s.filters.len()], None),
                    _ => {}
                }
            }
        }
        conn.handle_eof(t0);
        while let Some(e) = conn.poll_event() {
            if matches!(e, Event::Closed { .. }) { closed += 1; }
        }
        proptest::prop_assert_eq!(closed, 1);
    }
}

// ---------------------------------------------------------------------------------------
// Memory of an idle connection (issue 16: a server holds one machine per connection)

#[test]
fn a_machine_is_small_and_holds_nothing_of_its_own_before_connect() {
    let (conn, _) = machine(|_| {});
    assert!(
        std::mem::size_of::<Connection>() <= 256,
        "Connection is {} bytes",
        std::mem::size_of::<Connection>()
    );
    assert_eq!(conn.heap_size(), 0);
}

#[test]
fn trim_gives_back_every_empty_buffer_and_the_connection_goes_on() {
    let mut h = H::connected();
    // Traffic in both directions: inbound QoS 1 and 2, an outbound QoS 1, a ping.
    h.send(1, &inbound(QoS::AtLeastOnce, 1, false));
    h.send(1, &inbound(QoS::ExactlyOnce, 2, false));
    h.send(1, &Packet::PingReq);
    for e in h.events() {
        if let Event::Publish(p) = e {
            h.conn.publish_done(p.pkid, reason::SUCCESS, None);
        }
    }
    h.send(1, &Packet::PubRel(PubResponse::success(2)));
    h.push(1, "out", QoS::AtLeastOnce);
    let sent = h.sent();
    assert_eq!(sent.len(), 4, "PUBACK, PUBREC, PUBCOMP, PUBLISH: {sent:?}");
    h.frees_window(2, Packet::PubAck(PubResponse::success(1)));
    assert!(h.conn.heap_size() > 0, "the traffic left capacity behind");
    h.conn.trim();
    // Only the armed will is left: it is the client's, to publish if the connection dies.
    let will = std::mem::size_of::<LastWill>() + "will/t".len();
    assert_eq!(
        h.conn.heap_size(),
        will,
        "an idle connection holds no buffer"
    );
    // Trimmed, it still works: a ping is answered, a message goes out.
    h.send(3, &Packet::PingReq);
    assert_eq!(h.events(), vec![Event::PingRequest]);
    h.conn.ping_response();
    h.push(3, "out", QoS::AtLeastOnce);
    let sent = h.sent();
    assert!(
        matches!(sent[..], [Packet::PingResp, Packet::Publish(_)]),
        "{sent:?}"
    );
}

#[test]
fn trim_keeps_what_is_not_empty() {
    let mut h = H::connected();
    h.push(1, "out", QoS::AtLeastOnce);
    h.send(1, &inbound(QoS::ExactlyOnce, 7, false));
    let _ = h.events();
    h.conn.trim();
    // The unacknowledged exchange and the open QoS 2 id survive, and so does the half
    // packet received.
    h.conn.handle_bytes(h.at(1), &[0x40]);
    h.conn.trim();
    h.conn.handle_bytes(h.at(1), &[2, 0, 1]);
    assert_eq!(h.events(), vec![Event::InflightFreed]);
    h.conn.publish_done(7, reason::SUCCESS, None);
    let sent = h.sent();
    assert!(
        matches!(&sent[..], [Packet::Publish(_), Packet::PubRec(r)] if r.pkid == 7),
        "{sent:?}"
    );
}
