//! Robustness harness shared by the cargo-fuzz targets (`fuzz/`, libFuzzer, nightly only)
//! and the stable proptests in `tests/fuzz_harness.rs`, so the same code runs in
//! `cargo test` on every build.
//!
//! [`decode_bytes`] decodes arbitrary bytes with both codecs and checks that every packet
//! they accept survives `encode` then `decode` unchanged. [`connection_bytes`] feeds
//! arbitrary chunks to a [`Connection`] on a fake clock, answers every event the way a
//! broker would, pushes outgoing messages through it, and checks that everything it emits
//! is a sequence of well-formed packets of the negotiated version. Both panic on any
//! violation, which is what the fuzzer looks for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::{
    decode, encode, reason, Accept, Config, Connection, Event, Outgoing, Packet, Properties,
    ProtocolVersion, QoS,
};

/// Largest packet the harness decoders accept: small enough that a fuzzer cannot make them
/// buffer much, large enough for every packet the inputs can hold.
const MAX_PACKET: usize = 64 * 1024;

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

/// Decodes `data` as a stream of MQTT 3.1/3.1.1 packets and, separately, of MQTT 5 packets.
/// Every decoded packet must re-encode (in the same version) to bytes that decode to the
/// same packet, whole; a decoder that returns `Ok(None)` must not have consumed anything.
pub fn decode_bytes(data: &[u8]) {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            match decode(&mut buf, MAX_PACKET, version) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before, "{version:?} decode consumed nothing");
                    let mut wire = BytesMut::new();
                    encode(&packet, version, &mut wire);
                    let encoded = wire.clone();
                    let again = decode(&mut wire, usize::MAX, version);
                    assert!(
                        matches!(&again, Ok(Some(p)) if *p == packet),
                        "{version:?} roundtrip: {packet:?} encoded as {encoded:02x?} decodes as {again:?}"
                    );
                    assert!(wire.is_empty(), "{version:?} re-encoding left {wire:02x?}");
                }
                Ok(None) => {
                    assert_eq!(
                        buf.len(),
                        before,
                        "{version:?} decode consumed a partial packet"
                    );
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// A valid CONNECT: client id "f", keep alive 10 s, clean session; level 4 or 5 (with an
/// empty property block and, on v5, Topic Alias Maximum 4 so server aliases are exercised).
fn connect_packet(v5: bool) -> Vec<u8> {
    if v5 {
        vec![
            0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 5, 0b10, 0, 10, 3, 0x22, 0, 4, 0, 1, b'f',
        ]
    } else {
        vec![
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0b10, 0, 10, 0, 1, b'f',
        ]
    }
}

/// Maximum Packet Size announced by the limited v5 CONNECT ([`limited_connect_packet`]).
const CLIENT_MAX_PACKET: usize = 48;

/// A v5 CONNECT like [`connect_packet`]'s that also announces Maximum Packet Size
/// [`CLIENT_MAX_PACKET`], Request Problem Information 0 and Request Response Information 1.
fn limited_connect_packet() -> Vec<u8> {
    let props = [
        0x22,
        0,
        4,
        0x27,
        0,
        0,
        0,
        CLIENT_MAX_PACKET as u8,
        0x17,
        0,
        0x19,
        1,
    ];
    let mut c = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 5, 0b10, 0, 10];
    c.push(props.len() as u8);
    c.extend_from_slice(&props);
    c.extend_from_slice(&[0, 1, b'f']);
    c[1] = (c.len() - 2) as u8;
    c
}

/// Checks that `out` is a whole number of well-formed packets of the connection's version.
/// With `client_max`, a packet above it must be one that cannot be made smaller: never a
/// PUBLISH, never one still carrying a Reason String, User Properties or Response
/// Information (MQTT-3.1.2-24 and the per-packet rules); and with `no_problem_information`
/// only PUBLISH, CONNACK and DISCONNECT carry them (MQTT-3.1.2-29).
fn check_transmitted(
    conn: &Connection,
    out: &mut BytesMut,
    client_max: Option<usize>,
    no_problem_information: bool,
) {
    let version = conn.protocol().unwrap_or(ProtocolVersion::V311);
    let v5 = version.is_v5();
    let snapshot = out.clone();
    while !out.is_empty() {
        let before = out.len();
        let decoded = decode(out, usize::MAX, version).map(|p| {
            if let (Some(p), true) = (&p, v5) {
                check_v5_limits(p, before - out.len(), client_max, no_problem_information);
            }
            p.is_some()
        });
        match decoded {
            Ok(true) => {}
            other => panic!(
                "connection (v5: {v5}) emitted bytes that do not decode ({other:?}): \
                 {snapshot:02x?}"
            ),
        }
    }
}

/// The [`check_transmitted`] rules for one decoded v5 packet of `size` bytes.
fn check_v5_limits(
    packet: &Packet,
    size: usize,
    client_max: Option<usize>,
    no_problem_information: bool,
) {
    let props = match packet {
        Packet::ConnAck { properties, .. } => Some(&**properties),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            Some(&*r.properties)
        }
        Packet::SubAck(r) | Packet::UnsubAck(r) => Some(&*r.properties),
        Packet::Disconnect(r) | Packet::Auth(r) => Some(&*r.properties),
        _ => None,
    };
    let diagnostic = props.is_some_and(|p| {
        p.reason_string.is_some()
            || !p.user_properties.is_empty()
            || p.response_information.is_some()
    });
    if client_max.is_some_and(|max| size > max) {
        assert!(
            !matches!(packet, Packet::Publish(_)) && !diagnostic,
            "{size}-byte packet above the client's Maximum Packet Size: {packet:?}"
        );
    }
    let always_allowed = matches!(packet, Packet::ConnAck { .. } | Packet::Disconnect(_));
    if no_problem_information && !always_allowed {
        assert!(
            props.is_none_or(|p| p.reason_string.is_none() && p.user_properties.is_empty()),
            "Request Problem Information 0, yet: {packet:?}"
        );
    }
}

/// Feeds `data` to a [`Connection`]: the first byte picks the configuration and whether a
/// valid v3.1.1 or v5 CONNECT goes first (so most inputs exercise the connected state);
/// the rest is length-prefixed chunks, each at a later instant of a fake clock. Every event
/// is answered (accept, acknowledge, grant or refuse, sometimes with a failure code), a
/// message is offered to the client after every chunk, and everything transmitted must be
/// well-formed.
pub fn connection_bytes(data: &[u8]) {
    let selector = data.first().copied().unwrap_or(0);
    let config = Config {
        max_packet_size: 512 + usize::from(selector & 0x30) * 64,
        max_inflight: u16::from(selector >> 6) + 1,
        connect_timeout: Duration::from_secs(5),
        receive_maximum: u16::from(selector >> 6) + 1,
        topic_alias_maximum: u16::from(selector & 0x0c) >> 2,
        max_keep_alive: if selector & 0x80 != 0 { 5 } else { 0 },
        ..Config::default()
    };
    let start = Instant::now();
    let mut conn = Connection::new(start, config);
    let mut out = BytesMut::new();
    let mut closed = 0usize;
    let mut queued: Vec<Outgoing> = Vec::new();

    let limited = selector % 4 == 3;
    let client_max = limited.then_some(CLIENT_MAX_PACKET);
    match selector % 4 {
        0 => conn.handle_bytes(start, &connect_packet(false)),
        1 => conn.handle_bytes(start, &connect_packet(true)),
        3 => conn.handle_bytes(start, &limited_connect_packet()),
        _ => {}
    }

    let chunks = std::iter::once(&[][..]).chain(records(data.get(1..).unwrap_or(&[])));
    for (i, chunk) in chunks.enumerate() {
        let step = u64::from(chunk.first().copied().unwrap_or(0) % 8);
        let now = start + Duration::from_millis(i as u64 * 100 + step * step * 300);
        conn.handle_bytes(now, chunk);
        let hint = chunk.last().copied().unwrap_or(0);
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Connect(c) if c.protocol.is_v5() => conn.accept(
                    now,
                    Accept {
                        session_present: hint % 2 == 1,
                        assigned_client_id: Some("assigned".into()),
                        response_information: Some("ponte/response/f/".into()),
                        ..Accept::default()
                    },
                ),
                Event::Connect(_) => conn.accept(now, Accept::default()),
                Event::Publish(p) if conn.protocol() == Some(ProtocolVersion::V5) => {
                    match hint % 5 {
                        0 => conn.publish_done(p.pkid, 0x80, None),
                        1 => conn.publish_done(
                            p.pkid,
                            0x80,
                            Some(format!("could not store {:?}", p.topic)),
                        ),
                        2 => conn.publish_done(p.pkid, reason::NO_MATCHING_SUBSCRIBERS, None),
                        _ => conn.publish_done(p.pkid, reason::SUCCESS, None),
                    }
                }
                Event::Publish(p) => conn.publish_done(p.pkid, reason::SUCCESS, None),
                Event::Subscribe(s) => conn.suback(
                    s.pkid,
                    s.filters
                        .iter()
                        .map(|(_, o)| if hint % 4 == 0 { 0x87 } else { o.qos.as_u8() })
                        .collect(),
                    (hint % 8 == 0).then(|| format!("refused: {:?}", s.filters)),
                ),
                Event::Unsubscribe(u) => conn.unsuback(
                    u.pkid,
                    vec![if hint % 2 == 0 { 0 } else { 0x11 }; u.filters.len()],
                    None,
                ),
                Event::InflightFreed => {
                    while conn.inflight_available() > 0 {
                        let Some(msg) = queued.pop() else { break };
                        if let Err(msg) = conn.send_publish(now, msg) {
                            queued.push(msg);
                            break;
                        }
                    }
                }
                Event::PingRequest => conn.ping_response(),
                Event::Closed { .. } => closed += 1,
            }
        }

        // Offer the client a message, varying QoS, topic (so aliases repeat), size and
        // expiry.
        let qos = QoS::from_u8(hint % 3).unwrap_or(QoS::AtMostOnce);
        let properties = (hint & 0x08 != 0).then(|| {
            Arc::new(Properties {
                response_topic: Some("r".into()),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
                ..Properties::default()
            }) as Arc<dyn crate::PublishProperties>
        });
        let msg = Outgoing {
            topic: Arc::from(format!("t/{}", hint % 6)),
            payload: Bytes::from(vec![b'p'; usize::from(hint) * 7]),
            qos,
            retain: hint & 0x10 != 0,
            content_type: (hint & 0x08 != 0).then(|| Arc::from("text/plain")),
            properties,
            subscription_ids: (0..u32::from(hint % 3)).map(|n| n * 1000 + 1).collect(),
            expires_at: (hint & 0x20 != 0).then(|| now + Duration::from_millis(150)),
        };
        if let Err(msg) = conn.send_publish(now, msg) {
            if queued.len() < 64 {
                queued.push(msg);
            }
        }

        conn.handle_timeout(now);
        while conn.poll_transmit(&mut out) {}
        check_transmitted(&conn, &mut out, client_max, limited);
    }

    let end = start + Duration::from_secs(3600);
    conn.handle_eof(end);
    conn.handle_timeout(end);
    while let Some(event) = conn.poll_event() {
        if matches!(event, Event::Closed { .. }) {
            closed += 1;
        }
    }
    while conn.poll_transmit(&mut out) {}
    check_transmitted(&conn, &mut out, client_max, limited);
    assert!(closed <= 1, "Closed emitted {closed} times");
    let _ = conn.take_session();
}
