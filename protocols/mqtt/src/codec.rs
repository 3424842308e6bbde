//! Byte-level encoding and decoding of MQTT 3.1 / 3.1.1 packets.
//!
//! [`decode`] turns the front of a receive buffer into one [`Packet`], refusing every
//! malformation the specification names with a [`DecodeError`] that cites the clause. The
//! packet size limit is enforced from the fixed header alone, before the body is buffered,
//! so an oversized packet is refused without holding it in memory. Payloads are zero-copy
//! slices of the receive buffer.
//!
//! [`encode`] writes any [`Packet`]; [`encode_publish`] writes a PUBLISH from borrowed
//! parts, for the broker's fan-out path where building a [`Publish`] would clone the topic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::packet::{
    Connect, ConnectReturnCode, LastWill, Packet, ProtocolVersion, Publish, QoS,
    SubscribeReturnCode,
};

/// The largest value the four-byte Remaining Length field can carry (MQTT 2.2.3).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Why received bytes are not a valid MQTT packet. After any of these the connection must be
/// closed (MQTT-4.8.0-1); the state of the buffer is then unspecified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The fifth byte of Remaining Length still had the continuation bit.
    #[error("MQTT-2.2.3: Remaining Length continues past 4 bytes")]
    MalformedRemainingLength,
    /// The fixed header announced more bytes than the configured limit.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Total size (fixed header + remaining length) announced by the header.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Control packet type 0 or 15, which 3.1.1 reserves.
    #[error("MQTT-2.2.1: reserved control packet type {packet_type}")]
    ReservedPacketType {
        /// The four high bits of the first byte.
        packet_type: u8,
    },
    /// Fixed-header flag bits that 3.1.1 fixes to a value were different.
    #[error(
        "MQTT-2.2.2-1/2: {packet} has fixed-header flags {flags:#06b}, must be {expected:#06b}"
    )]
    InvalidHeaderFlags {
        /// Packet type name.
        packet: &'static str,
        /// The received four low bits.
        flags: u8,
        /// The only allowed value.
        expected: u8,
    },
    /// PUBLISH with both QoS bits set.
    #[error("MQTT-3.3.1-4: PUBLISH with QoS 3")]
    PublishQoS3,
    /// PUBLISH with DUP set although QoS is 0.
    #[error("MQTT-3.3.1-2: PUBLISH with DUP=1 at QoS 0")]
    DupOnQoS0,
    /// A UTF-8 string field was not well-formed UTF-8.
    #[error("MQTT-1.5.3-1: {field} is not well-formed UTF-8")]
    InvalidUtf8 {
        /// Which field carried the string.
        field: &'static str,
    },
    /// A UTF-8 string field contained U+0000.
    #[error("MQTT-1.5.3-2: {field} contains U+0000")]
    NullCharacter {
        /// Which field carried the string.
        field: &'static str,
    },
    /// A topic name (PUBLISH or will) contained `+` or `#`.
    #[error("MQTT-3.3.2-2: topic name {topic:?} contains a wildcard")]
    WildcardInTopicName {
        /// The offending topic name.
        topic: String,
    },
    /// A topic name (PUBLISH or will) was the empty string.
    #[error("MQTT-4.7.3-1: empty topic name")]
    EmptyTopicName,
    /// SUBSCRIBE without any topic filter.
    #[error("MQTT-3.8.3-3: SUBSCRIBE with no topic filter")]
    NoSubscribeFilters,
    /// UNSUBSCRIBE without any topic filter.
    #[error("MQTT-3.10.3-2: UNSUBSCRIBE with no topic filter")]
    NoUnsubscribeFilters,
    /// A SUBSCRIBE requested-QoS byte had reserved bits set or asked for QoS 3.
    #[error("MQTT-3.8.3-4: SUBSCRIBE requested-QoS byte {byte:#04x} (reserved bits or QoS 3)")]
    InvalidRequestedQoS {
        /// The received options byte.
        byte: u8,
    },
    /// Packet identifier 0 where a non-zero one is required.
    #[error("MQTT-2.3.1-1: {packet} with packet identifier 0")]
    ZeroPacketId {
        /// Packet type name.
        packet: &'static str,
    },
    /// CONNECT flags bit 0 was set.
    #[error("MQTT-3.1.2-3: CONNECT flags reserved bit is set")]
    ConnectReservedFlag,
    /// Will Flag 0 but Will QoS or Will Retain set.
    #[error("MQTT-3.1.2-11/13/15: Will Flag is 0 but Will QoS/Retain bits are set (flags {flags:#010b})")]
    WillFieldsWithoutWill {
        /// The received CONNECT flags byte.
        flags: u8,
    },
    /// Will QoS 3.
    #[error("MQTT-3.1.2-14: Will QoS 3")]
    WillQoS3,
    /// Password flag set without user name flag.
    #[error("MQTT-3.1.2-22: password present without user name")]
    PasswordWithoutUsername,
    /// The protocol name was neither "MQTT" nor "MQIsdp".
    #[error("MQTT-3.1.2-1: unknown protocol name {name:?}")]
    InvalidProtocolName {
        /// The received protocol name.
        name: String,
    },
    /// A known protocol name with a level this crate does not speak (e.g. MQTT 5). The
    /// connection answers with CONNACK 0x01 before closing.
    #[error("MQTT-3.1.2-2: unsupported protocol level {level} for protocol name {name:?}")]
    UnsupportedProtocolLevel {
        /// The received protocol name.
        name: String,
        /// The received protocol level.
        level: u8,
    },
    /// A field ran past the end of the packet's Remaining Length.
    #[error("{packet}: field {field} runs past the end of the packet")]
    Truncated {
        /// Packet type name.
        packet: &'static str,
        /// The field being read.
        field: &'static str,
    },
    /// Bytes were left inside the Remaining Length after the last field.
    #[error("{packet}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Packet type name.
        packet: &'static str,
        /// Number of unread bytes.
        extra: usize,
    },
    /// CONNACK acknowledge flags with reserved bits set.
    #[error("MQTT-3.2.2-1: CONNACK flags {flags:#04x} have reserved bits set")]
    InvalidConnAckFlags {
        /// The received flags byte.
        flags: u8,
    },
    /// CONNACK return code outside 0-5.
    #[error("MQTT 3.2.2.3: reserved CONNACK return code {code}")]
    InvalidConnectReturnCode {
        /// The received code.
        code: u8,
    },
    /// SUBACK return code other than 0, 1, 2, 0x80.
    #[error("MQTT-3.9.3-2: reserved SUBACK return code {code:#04x}")]
    InvalidSubAckCode {
        /// The received code.
        code: u8,
    },
    /// MQTT 5: a Variable Byte Integer (property length, Subscription Identifier) longer
    /// than four bytes.
    #[error("MQTT-1.5.5-1: {field}: Variable Byte Integer continues past 4 bytes")]
    MalformedVarInt {
        /// Which field carried the integer.
        field: &'static str,
    },
    /// MQTT 5: a property identifier that does not exist or is not allowed in this packet
    /// (table 2-4).
    #[error("MQTT-2.2.2-2: property {id:#04x} is not allowed in {context}")]
    PropertyNotAllowed {
        /// Packet (or Will) whose property list carried it.
        context: &'static str,
        /// The received identifier.
        id: u8,
    },
    /// MQTT 5: a property that may appear once appeared twice.
    #[error("MQTT 2.2.2.2: property {id:#04x} appears more than once in {context}")]
    DuplicateProperty {
        /// Packet (or Will) whose property list carried it.
        context: &'static str,
        /// The repeated identifier.
        id: u8,
    },
    /// MQTT 5: a property value outside its allowed range (e.g. Receive Maximum 0,
    /// Payload Format Indicator 2, Subscription Identifier 0).
    #[error("MQTT 3.x: property {property} has the invalid value {value}")]
    InvalidPropertyValue {
        /// The property's name.
        property: &'static str,
        /// The received value.
        value: u32,
    },
    /// MQTT 5: a reason code that this packet type does not define.
    #[error("MQTT 2.4: {packet} with undefined reason code {code:#04x}")]
    InvalidReasonCode {
        /// Packet type name.
        packet: &'static str,
        /// The received code.
        code: u8,
    },
    /// MQTT 5: SUBSCRIBE options with reserved bits set or Retain Handling 3.
    #[error("MQTT-3.8.3-5: subscription options {byte:#010b} have reserved bits set or Retain Handling 3")]
    InvalidSubscriptionOptions {
        /// The received options byte.
        byte: u8,
    },
    /// MQTT 5: a PUBLISH with an empty topic name and no Topic Alias.
    #[error("MQTT-3.3.2-1: PUBLISH with an empty topic name and no Topic Alias")]
    EmptyTopicWithoutAlias,
}

/// Reads fields out of one packet body, tagging errors with the packet's name.
pub(crate) struct Reader {
    /// The rest of the packet body; slicing it gives zero-copy payloads.
    pub(crate) body: Bytes,
    /// Packet type name for error messages.
    pub(crate) packet: &'static str,
}

impl Reader {
    pub(crate) fn truncated(&self, field: &'static str) -> DecodeError {
        DecodeError::Truncated {
            packet: self.packet,
            field,
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        if self.body.is_empty() {
            return Err(self.truncated(field));
        }
        Ok(self.body.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        if self.body.len() < 2 {
            return Err(self.truncated(field));
        }
        Ok(self.body.get_u16())
    }

    pub(crate) fn pkid(&mut self) -> Result<u16, DecodeError> {
        match self.u16("packet identifier")? {
            0 => Err(DecodeError::ZeroPacketId {
                packet: self.packet,
            }),
            id => Ok(id),
        }
    }

    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if self.body.len() < len {
            return Err(self.truncated(field));
        }
        Ok(self.body.split_to(len))
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let raw = self.binary(field)?;
        let text = std::str::from_utf8(&raw).map_err(|_| DecodeError::InvalidUtf8 { field })?;
        if text.contains('\0') {
            return Err(DecodeError::NullCharacter { field });
        }
        Ok(text.to_owned())
    }

    pub(crate) fn topic_name(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let topic = self.string(field)?;
        if topic.is_empty() {
            return Err(DecodeError::EmptyTopicName);
        }
        if topic.contains(['+', '#']) {
            return Err(DecodeError::WildcardInTopicName { topic });
        }
        Ok(topic)
    }

    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet: self.packet,
                extra: self.body.len(),
            })
        }
    }
}

/// Name of a control packet type and the fixed-header flags it requires (`None`: PUBLISH,
/// whose flags carry DUP/QoS/RETAIN).
pub(crate) fn packet_kind(packet_type: u8) -> Result<(&'static str, Option<u8>), DecodeError> {
    Ok(match packet_type {
        1 => ("CONNECT", Some(0)),
        2 => ("CONNACK", Some(0)),
        3 => ("PUBLISH", None),
        4 => ("PUBACK", Some(0)),
        5 => ("PUBREC", Some(0)),
        6 => ("PUBREL", Some(0b0010)),
        7 => ("PUBCOMP", Some(0)),
        8 => ("SUBSCRIBE", Some(0b0010)),
        9 => ("SUBACK", Some(0)),
        10 => ("UNSUBSCRIBE", Some(0b0010)),
        11 => ("UNSUBACK", Some(0)),
        12 => ("PINGREQ", Some(0)),
        13 => ("PINGRESP", Some(0)),
        14 => ("DISCONNECT", Some(0)),
        _ => return Err(DecodeError::ReservedPacketType { packet_type }),
    })
}

/// Checks the fixed header's flags against `expected`, reads the Remaining Length, enforces
/// `max_packet_size` as soon as the fixed header is complete, and once the whole packet is
/// buffered splits it off and returns its body (variable header + payload). `Ok(None)`
/// consumes nothing. Shared by the 3.1.1 and the 5.0 decoders.
pub(crate) fn take_frame(
    buf: &mut BytesMut,
    max_packet_size: usize,
    name: &'static str,
    flags: u8,
    expected_flags: Option<u8>,
) -> Result<Option<Bytes>, DecodeError> {
    if let Some(expected) = expected_flags {
        if flags != expected {
            return Err(DecodeError::InvalidHeaderFlags {
                packet: name,
                flags,
                expected,
            });
        }
    }
    let mut remaining: usize = 0;
    let mut header_len = 1;
    loop {
        if header_len > 4 {
            return Err(DecodeError::MalformedRemainingLength);
        }
        let Some(&byte) = buf.get(header_len) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * (header_len - 1));
        header_len += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let total = header_len + remaining;
    if total > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(header_len);
    Ok(Some(frame.freeze()))
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a complete packet (nothing is consumed),
/// `Ok(Some(packet))` after consuming exactly that packet's bytes, or an error for a
/// malformed packet or one whose announced total size exceeds `max_packet_size`. The size
/// check happens as soon as the fixed header is complete, before the body arrives.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    let flags = first & 0x0f;
    let (name, expected_flags) = packet_kind(packet_type)?;
    let Some(body) = take_frame(buf, max_packet_size, name, flags, expected_flags)? else {
        return Ok(None);
    };
    let mut r = Reader { body, packet: name };
    let packet = match packet_type {
        1 => Packet::Connect(decode_connect(&mut r)?),
        2 => {
            let ack_flags = r.u8("acknowledge flags")?;
            if ack_flags & !1 != 0 {
                return Err(DecodeError::InvalidConnAckFlags { flags: ack_flags });
            }
            let raw = r.u8("return code")?;
            let code = ConnectReturnCode::from_u8(raw)
                .ok_or(DecodeError::InvalidConnectReturnCode { code: raw })?;
            Packet::ConnAck {
                session_present: ack_flags & 1 == 1,
                code,
            }
        }
        3 => Packet::Publish(decode_publish(&mut r, flags)?),
        4 => Packet::PubAck(r.pkid()?),
        5 => Packet::PubRec(r.pkid()?),
        6 => Packet::PubRel(r.pkid()?),
        7 => Packet::PubComp(r.pkid()?),
        8 => {
            let pkid = r.pkid()?;
            let mut filters = Vec::new();
            while !r.body.is_empty() {
                let filter = r.string("topic filter")?;
                let byte = r.u8("requested QoS")?;
                let qos = QoS::from_u8(byte).ok_or(DecodeError::InvalidRequestedQoS { byte })?;
                filters.push((filter, qos));
            }
            if filters.is_empty() {
                return Err(DecodeError::NoSubscribeFilters);
            }
            Packet::Subscribe { pkid, filters }
        }
        9 => {
            let pkid = r.pkid()?;
            let codes = r
                .rest()
                .iter()
                .map(|&code| match code {
                    0x80 => Ok(SubscribeReturnCode::Failure),
                    _ => QoS::from_u8(code)
                        .map(SubscribeReturnCode::Success)
                        .ok_or(DecodeError::InvalidSubAckCode { code }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Packet::SubAck { pkid, codes }
        }
        10 => {
            let pkid = r.pkid()?;
            let mut filters = Vec::new();
            while !r.body.is_empty() {
                filters.push(r.string("topic filter")?);
            }
            if filters.is_empty() {
                return Err(DecodeError::NoUnsubscribeFilters);
            }
            Packet::Unsubscribe { pkid, filters }
        }
        11 => Packet::UnsubAck(r.pkid()?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        _ => Packet::Disconnect,
    };
    r.finish()?;
    Ok(Some(packet))
}

fn decode_publish(r: &mut Reader, flags: u8) -> Result<Publish, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::PublishQoS3)?;
    let retain = flags & 1 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupOnQoS0);
    }
    let topic = r.topic_name("topic name")?;
    let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        pkid,
        payload: r.rest(),
    })
}

fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    decode_connect_any(r, false).map(|(c, _)| c)
}

/// Decodes a CONNECT body; with `allow_v5`, an MQTT 5 CONNECT too, returning its CONNECT
/// and Will properties.
pub(crate) fn decode_connect_any(
    r: &mut Reader,
    allow_v5: bool,
) -> Result<
    (
        Connect,
        Option<(crate::v5::Properties, crate::v5::Properties)>,
    ),
    DecodeError,
> {
    let name = r.string("protocol name")?;
    if name != "MQTT" && name != "MQIsdp" {
        return Err(DecodeError::InvalidProtocolName { name });
    }
    let level = r.u8("protocol level")?;
    let protocol = match ProtocolVersion::from_name_and_level(&name, level) {
        Some(p @ (ProtocolVersion::V31 | ProtocolVersion::V311)) => p,
        Some(ProtocolVersion::V5) if allow_v5 => ProtocolVersion::V5,
        _ => return Err(DecodeError::UnsupportedProtocolLevel { name, level }),
    };
    let flags = r.u8("connect flags")?;
    if flags & 1 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let clean_session = flags & 0b10 != 0;
    let will_flag = flags & 0b100 != 0;
    let will_qos_bits = (flags >> 3) & 0b11;
    let will_retain = flags & 0b10_0000 != 0;
    let has_password = flags & 0b100_0000 != 0;
    let has_username = flags & 0b1000_0000 != 0;
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        return Err(DecodeError::WillFieldsWithoutWill { flags });
    }
    let v5 = protocol == ProtocolVersion::V5;
    // 3.1.1 only: MQTT 5 allows a password without a user name (3.1.2.9), e.g. a token.
    if has_password && !has_username && !v5 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = if v5 {
        Some(crate::v5::decode_properties(
            r,
            crate::v5::PropertyContext::Connect,
        )?)
    } else {
        None
    };
    let client_id = r.string("client identifier")?;
    let mut will_properties = crate::v5::Properties::default();
    let will = if will_flag {
        let qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::WillQoS3)?;
        if v5 {
            will_properties = crate::v5::decode_properties(r, crate::v5::PropertyContext::Will)?;
        }
        let topic = r.topic_name("will topic")?;
        let payload = r.binary("will message")?;
        Some(LastWill {
            topic,
            payload,
            qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary("password")?)
    } else {
        None
    };
    let connect = Connect {
        protocol,
        client_id,
        clean_session,
        keep_alive,
        username,
        password,
        will,
    };
    Ok((connect, properties.map(|p| (p, will_properties))))
}

pub(crate) fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len & 0x7f) as u8;
        len >>= 7;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Writes a length-prefixed string or binary field. Callers guarantee `data.len() <= 65535`
/// (everything decoded does; the broker validates what it originates).
pub(crate) fn put_binary(out: &mut BytesMut, data: &[u8]) {
    out.put_u16(data.len() as u16);
    out.put_slice(data);
}

/// Appends a PUBLISH built from borrowed parts to `out` (the broker fan-out fast path).
///
/// Preconditions (not checked on this hot path): `topic` is at most 65535 bytes, `pkid` is 0
/// exactly when `qos` is 0, and the packet fits in [`MAX_REMAINING_LENGTH`].
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

fn put_id_packet(out: &mut BytesMut, first: u8, pkid: u16) {
    out.put_slice(&[first, 2]);
    out.put_u16(pkid);
}

/// Appends the wire form of `packet` to `out`.
///
/// Strings and binary fields must be at most 65535 bytes and the packet must fit in
/// [`MAX_REMAINING_LENGTH`]; every decoded packet satisfies this.
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    match packet {
        Packet::Connect(c) => encode_connect(c, out),
        Packet::ConnAck {
            session_present,
            code,
        } => out.put_slice(&[0x20, 2, u8::from(*session_present), code.as_u8()]),
        Packet::Publish(p) => {
            encode_publish(out, p.dup, p.qos, p.retain, &p.topic, p.pkid, &p.payload)
        }
        Packet::PubAck(id) => put_id_packet(out, 0x40, *id),
        Packet::PubRec(id) => put_id_packet(out, 0x50, *id),
        Packet::PubRel(id) => put_id_packet(out, 0x62, *id),
        Packet::PubComp(id) => put_id_packet(out, 0x70, *id),
        Packet::Subscribe { pkid, filters } => {
            let remaining = 2 + filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>();
            out.put_u8(0x82);
            put_remaining_length(out, remaining);
            out.put_u16(*pkid);
            for (filter, qos) in filters {
                put_binary(out, filter.as_bytes());
                out.put_u8(qos.as_u8());
            }
        }
        Packet::SubAck { pkid, codes } => {
            out.put_u8(0x90);
            put_remaining_length(out, 2 + codes.len());
            out.put_u16(*pkid);
            for code in codes {
                out.put_u8(code.as_u8());
            }
        }
        Packet::Unsubscribe { pkid, filters } => {
            let remaining = 2 + filters.iter().map(|f| 2 + f.len()).sum::<usize>();
            out.put_u8(0xa2);
            put_remaining_length(out, remaining);
            out.put_u16(*pkid);
            for filter in filters {
                put_binary(out, filter.as_bytes());
            }
        }
        Packet::UnsubAck(id) => put_id_packet(out, 0xb0, *id),
        Packet::PingReq => out.put_slice(&[0xc0, 0]),
        Packet::PingResp => out.put_slice(&[0xd0, 0]),
        Packet::Disconnect => out.put_slice(&[0xe0, 0]),
    }
}

fn encode_connect(c: &Connect, out: &mut BytesMut) {
    let name = c.protocol.name();
    let mut remaining = 2 + name.len() + 1 + 1 + 2 + 2 + c.client_id.len();
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0b10;
    }
    if let Some(w) = &c.will {
        flags |= 0b100 | (w.qos.as_u8() << 3) | (u8::from(w.retain) << 5);
        remaining += 4 + w.topic.len() + w.payload.len();
    }
    if let Some(u) = &c.username {
        flags |= 0b1000_0000;
        remaining += 2 + u.len();
    }
    if let Some(p) = &c.password {
        flags |= 0b100_0000;
        remaining += 2 + p.len();
    }
    out.put_u8(0x10);
    put_remaining_length(out, remaining);
    put_binary(out, name.as_bytes());
    out.put_u8(c.protocol.level());
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    put_binary(out, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        put_binary(out, w.topic.as_bytes());
        put_binary(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_binary(out, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_binary(out, p);
    }
}
