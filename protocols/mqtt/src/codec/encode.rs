//! Encoding: one [`Packet`] in the wire form of a protocol version, and the PUBLISH fast
//! paths the fan-out uses (written from borrowed parts, without building a packet).
//!
//! On 3.1/3.1.1 the v5-only parts of the model are left out: properties, the reason codes
//! of acknowledgements, UNSUBACK's codes, DISCONNECT's reason; a CONNACK reason code
//! becomes the closest 3.1.1 return code and SUBACK refusals become 0x80.

use bytes::{BufMut, BytesMut};

use super::properties::{
    encoded_properties, put_property_block, put_publish_properties, PublishExtras,
};
use super::wire::{put_binary, put_remaining_length, var_int_len};
use crate::packet::{Connect, Packet, ProtocolVersion, PubResponse, QoS, ReasonPacket};
use crate::properties::{Properties, PublishProperties};
use crate::reason;

/// Appends the wire form of `packet` in `version` to `out`.
///
/// Strings and binary fields must be at most 65535 bytes and the packet must fit in
/// [`crate::MAX_REMAINING_LENGTH`]; every decoded packet satisfies this. A
/// [`Packet::Connect`] is written at its own level; [`Packet::Auth`], which only MQTT 5
/// has, is always written in its v5 form.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => encode_connect(c, out),
        Packet::ConnAck {
            session_present,
            reason_code,
            properties,
        } => {
            if v5 {
                let mut body = BytesMut::new();
                body.put_u8(u8::from(*session_present));
                body.put_u8(*reason_code);
                put_property_block(&mut body, &encoded_properties(properties));
                put_frame(out, 0x20, &body);
            } else {
                let code = reason::to_v3_connack(*reason_code);
                out.put_slice(&[0x20, 2, u8::from(*session_present), code]);
            }
        }
        Packet::Publish(p) => {
            if v5 {
                let mut scratch = BytesMut::new();
                let extras = PublishExtras {
                    content_type: p.properties.content_type.as_deref(),
                    message_expiry_interval: p.properties.message_expiry_interval,
                    topic_alias: p.properties.topic_alias,
                    subscription_identifiers: &p.properties.subscription_identifiers,
                };
                let shared: &Properties = &p.properties;
                encode_publish5(
                    out,
                    &mut scratch,
                    &PublishHeader {
                        dup: p.dup,
                        qos: p.qos,
                        retain: p.retain,
                        topic: &p.topic,
                        pkid: p.pkid,
                    },
                    &p.payload,
                    Some(shared),
                    &extras,
                );
            } else {
                encode_publish(out, p.dup, p.qos, p.retain, &p.topic, p.pkid, &p.payload)
            }
        }
        Packet::PubAck(r) => put_pub_response(out, 0x40, r, v5),
        Packet::PubRec(r) => put_pub_response(out, 0x50, r, v5),
        Packet::PubRel(r) => put_pub_response(out, 0x62, r, v5),
        Packet::PubComp(r) => put_pub_response(out, 0x70, r, v5),
        Packet::Subscribe(s) => {
            let mut body = BytesMut::new();
            body.put_u16(s.pkid);
            if v5 {
                put_property_block(&mut body, &encoded_properties(&s.properties));
            }
            for (filter, options) in &s.filters {
                put_binary(&mut body, filter.as_bytes());
                body.put_u8(if v5 {
                    options.qos.as_u8()
                        | u8::from(options.no_local) << 2
                        | u8::from(options.retain_as_published) << 3
                        | (options.retain_handling as u8) << 4
                } else {
                    options.qos.as_u8()
                });
            }
            put_frame(out, 0x82, &body);
        }
        Packet::SubAck(a) => {
            let mut body = BytesMut::new();
            body.put_u16(a.pkid);
            if v5 {
                put_property_block(&mut body, &encoded_properties(&a.properties));
                body.put_slice(&a.reason_codes);
            } else {
                body.extend(a.reason_codes.iter().map(|c| reason::to_v3_suback(*c)));
            }
            put_frame(out, 0x90, &body);
        }
        Packet::Unsubscribe(u) => {
            let mut body = BytesMut::new();
            body.put_u16(u.pkid);
            if v5 {
                put_property_block(&mut body, &encoded_properties(&u.properties));
            }
            for filter in &u.filters {
                put_binary(&mut body, filter.as_bytes());
            }
            put_frame(out, 0xa2, &body);
        }
        Packet::UnsubAck(a) => {
            if v5 {
                let mut body = BytesMut::new();
                body.put_u16(a.pkid);
                put_property_block(&mut body, &encoded_properties(&a.properties));
                body.put_slice(&a.reason_codes);
                put_frame(out, 0xb0, &body);
            } else {
                put_id_packet(out, 0xb0, a.pkid);
            }
        }
        Packet::PingReq => out.put_slice(&[0xc0, 0]),
        Packet::PingResp => out.put_slice(&[0xd0, 0]),
        Packet::Disconnect(d) => {
            if v5 {
                put_reason_packet(out, 0xe0, d);
            } else {
                out.put_slice(&[0xe0, 0]);
            }
        }
        Packet::Auth(a) => put_reason_packet(out, 0xf0, a),
    }
}

/// Appends a 3.1/3.1.1 PUBLISH built from borrowed parts to `out` (the fan-out fast path,
/// where building a [`crate::Publish`] would clone the topic).
///
/// Preconditions (not checked on this hot path): `topic` is at most 65535 bytes, `pkid` is 0
/// exactly when `qos` is 0, and the packet fits in [`crate::MAX_REMAINING_LENGTH`].
pub fn encode_publish(
    out: &mut BytesMut,
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &str,
    pkid: u16,
    payload: &[u8],
) {
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + id_len + payload.len();
    out.reserve(5 + remaining);
    out.put_u8(0x30 | (u8::from(dup) << 3) | (qos.as_u8() << 1) | u8::from(retain));
    put_remaining_length(out, remaining);
    put_binary(out, topic.as_bytes());
    if id_len == 2 {
        out.put_u16(pkid);
    }
    out.put_slice(payload);
}

/// The fixed parts of an outgoing PUBLISH, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishHeader<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS of this send.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (empty when a topic alias stands for it).
    pub topic: &'a str,
    /// Packet identifier (0 at QoS 0).
    pub pkid: u16,
}

/// Appends a v5 PUBLISH to `out` from borrowed parts: the fan-out path, where the shared
/// application properties are written once per recipient with that recipient's per-send
/// values, without copying them. `scratch` is reused for the property list. Returns the
/// packet's total size. Preconditions as [`encode_publish`].
pub(crate) fn encode_publish5(
    out: &mut BytesMut,
    scratch: &mut BytesMut,
    header: &PublishHeader<'_>,
    payload: &[u8],
    shared: Option<&dyn PublishProperties>,
    extras: &PublishExtras<'_>,
) -> usize {
    scratch.clear();
    put_publish_properties(scratch, shared, extras);
    let id_len = if header.qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2
        + header.topic.len()
        + id_len
        + var_int_len(scratch.len())
        + scratch.len()
        + payload.len();
    let start = out.len();
    out.reserve(5 + remaining);
    out.put_u8(
        0x30 | (u8::from(header.dup) << 3) | (header.qos.as_u8() << 1) | u8::from(header.retain),
    );
    put_remaining_length(out, remaining);
    put_binary(out, header.topic.as_bytes());
    if id_len == 2 {
        out.put_u16(header.pkid);
    }
    put_property_block(out, scratch);
    out.put_slice(payload);
    out.len() - start
}

/// The total size [`encode_publish5`] would write, without writing the packet (`scratch`
/// then holds the encoded property list).
pub(crate) fn publish5_size(
    scratch: &mut BytesMut,
    header: &PublishHeader<'_>,
    payload_len: usize,
    shared: Option<&dyn PublishProperties>,
    extras: &PublishExtras<'_>,
) -> usize {
    scratch.clear();
    put_publish_properties(scratch, shared, extras);
    let id_len = if header.qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining =
        2 + header.topic.len() + id_len + var_int_len(scratch.len()) + scratch.len() + payload_len;
    1 + var_int_len(remaining) + remaining
}

fn put_frame(out: &mut BytesMut, first: u8, body: &[u8]) {
    out.put_u8(first);
    put_remaining_length(out, body.len());
    out.put_slice(body);
}

fn put_id_packet(out: &mut BytesMut, first: u8, pkid: u16) {
    out.put_slice(&[first, 2]);
    out.put_u16(pkid);
}

/// An acknowledgement; v5 uses the short form for reason 0 without properties.
fn put_pub_response(out: &mut BytesMut, first: u8, r: &PubResponse, v5: bool) {
    if !v5 || (r.reason_code == 0 && r.properties.is_empty()) {
        put_id_packet(out, first, r.pkid);
        return;
    }
    let mut body = BytesMut::new();
    body.put_u16(r.pkid);
    body.put_u8(r.reason_code);
    if !r.properties.is_empty() {
        put_property_block(&mut body, &encoded_properties(&r.properties));
    }
    put_frame(out, first, &body);
}

fn put_reason_packet(out: &mut BytesMut, first: u8, r: &ReasonPacket) {
    let mut body = BytesMut::new();
    if r.reason_code != 0 || !r.properties.is_empty() {
        body.put_u8(r.reason_code);
        if !r.properties.is_empty() {
            put_property_block(&mut body, &encoded_properties(&r.properties));
        }
    }
    put_frame(out, first, &body);
}

/// A CONNECT at its own level: the v5 form adds the CONNECT and Will property lists.
fn encode_connect(c: &Connect, out: &mut BytesMut) {
    let v5 = c.protocol.is_v5();
    let mut body = BytesMut::new();
    put_binary(&mut body, c.protocol.name().as_bytes());
    body.put_u8(c.protocol.level());
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0b10;
    }
    if let Some(w) = &c.will {
        flags |= 0b100 | (w.qos.as_u8() << 3) | (u8::from(w.retain) << 5);
    }
    if c.username.is_some() {
        flags |= 0b1000_0000;
    }
    if c.password.is_some() {
        flags |= 0b100_0000;
    }
    body.put_u8(flags);
    body.put_u16(c.keep_alive);
    if v5 {
        put_property_block(&mut body, &encoded_properties(&c.properties));
    }
    put_binary(&mut body, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            put_property_block(&mut body, &encoded_properties(&w.properties));
        }
        put_binary(&mut body, w.topic.as_bytes());
        put_binary(&mut body, &w.payload);
    }
    if let Some(u) = &c.username {
        put_binary(&mut body, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_binary(&mut body, p);
    }
    put_frame(out, 0x10, &body);
}
