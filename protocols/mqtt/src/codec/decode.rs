//! Decoding: the front of a receive buffer into one [`Packet`], in the wire form of a
//! protocol version, refusing every malformation the specification names.
//!
//! A 3.1/3.1.1 packet is normalised here into the one model: no properties, the CONNACK
//! return code as its v5 reason code, SUBACK codes as reason codes, an UNSUBACK without
//! codes, a DISCONNECT with reason 0.

use bytes::BytesMut;

use super::error::DecodeError;
use super::properties::{decode_properties, PropertyContext};
use super::wire::{packet_kind, take_frame, Reader};
use crate::packet::{
    Connect, LastWill, Packet, ProtocolVersion, PubResponse, Publish, QoS, ReasonPacket,
    RetainHandling, SubResponse, Subscribe, SubscriptionOptions, Unsubscribe,
};
use crate::properties::PropertyList;
use crate::reason;

/// Decodes one packet from the front of `buf`, in the wire form of `version`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a complete packet (nothing is consumed),
/// `Ok(Some(packet))` after consuming exactly that packet's bytes, or an error for a
/// malformed packet or one whose announced total size exceeds `max_packet_size`. The size
/// check happens as soon as the fixed header is complete, before the body arrives.
///
/// A CONNECT names its own level: with `version` [`ProtocolVersion::V5`] a CONNECT of any
/// supported level is decoded (so a server can decode the first packet of every connection
/// that way); with 3.1/3.1.1, a level-5 CONNECT is
/// [`DecodeError::UnsupportedProtocolLevel`].
pub fn decode(
    buf: &mut BytesMut,
    max_packet_size: usize,
    version: ProtocolVersion,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    let flags = first & 0x0f;
    let (name, expected_flags) = packet_kind(packet_type, version)?;
    let Some(body) = take_frame(buf, max_packet_size, name, flags, expected_flags)? else {
        return Ok(None);
    };
    let mut r = Reader { body, packet: name };
    let v5 = version.is_v5();
    let packet = match packet_type {
        1 => Packet::Connect(Box::new(decode_connect(&mut r, v5)?)),
        2 => decode_connack(&mut r, v5)?,
        3 => Packet::Publish(decode_publish(&mut r, flags, v5)?),
        4 => Packet::PubAck(pub_response(&mut r, v5, PUBACK_CODES)?),
        5 => Packet::PubRec(pub_response(&mut r, v5, PUBACK_CODES)?),
        6 => Packet::PubRel(pub_response(&mut r, v5, PUBREL_CODES)?),
        7 => Packet::PubComp(pub_response(&mut r, v5, PUBREL_CODES)?),
        8 => Packet::Subscribe(decode_subscribe(&mut r, v5)?),
        9 => Packet::SubAck(decode_sub_response(&mut r, v5, SUBACK_CODES)?),
        10 => {
            let pkid = r.pkid()?;
            let properties = v5_properties(&mut r, v5, PropertyContext::Unsubscribe)?;
            let mut filters = Vec::new();
            while !r.body.is_empty() {
                filters.push(r.string("topic filter")?);
            }
            if filters.is_empty() {
                return Err(DecodeError::NoUnsubscribeFilters);
            }
            Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters,
                properties,
            })
        }
        11 => Packet::UnsubAck(decode_sub_response(&mut r, v5, UNSUBACK_CODES)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(reason_packet(
            &mut r,
            v5,
            DISCONNECT_CODES,
            PropertyContext::Disconnect,
        )?),
        _ => Packet::Auth(reason_packet(
            &mut r,
            v5,
            AUTH_CODES,
            PropertyContext::Auth,
        )?),
    };
    r.finish()?;
    Ok(Some(packet))
}

/// A v5 property list for `ctx`; nothing on 3.1/3.1.1.
fn v5_properties(
    r: &mut Reader,
    v5: bool,
    ctx: PropertyContext,
) -> Result<PropertyList, DecodeError> {
    if v5 {
        decode_properties(r, ctx)
    } else {
        Ok(PropertyList::default())
    }
}

fn check_reason(packet: &'static str, code: u8, allowed: &[u8]) -> Result<u8, DecodeError> {
    if allowed.contains(&code) {
        Ok(code)
    } else {
        Err(DecodeError::InvalidReasonCode { packet, code })
    }
}

const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

fn decode_connack(r: &mut Reader, v5: bool) -> Result<Packet, DecodeError> {
    let ack_flags = r.u8("acknowledge flags")?;
    if ack_flags & !1 != 0 {
        return Err(DecodeError::InvalidConnAckFlags { flags: ack_flags });
    }
    let raw = r.u8(if v5 { "reason code" } else { "return code" })?;
    let reason_code = if v5 {
        check_reason(r.packet, raw, CONNACK_CODES)?
    } else {
        reason::from_v3_connack(raw).ok_or(DecodeError::InvalidConnectReturnCode { code: raw })?
    };
    Ok(Packet::ConnAck {
        session_present: ack_flags & 1 == 1,
        reason_code,
        properties: v5_properties(r, v5, PropertyContext::ConnAck)?,
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: v5 may leave out the reason code (0) and the
/// properties (none).
fn pub_response(r: &mut Reader, v5: bool, allowed: &[u8]) -> Result<PubResponse, DecodeError> {
    let pkid = r.pkid()?;
    if !v5 || r.body.is_empty() {
        return Ok(PubResponse::success(pkid));
    }
    let reason_code = check_reason(r.packet, r.u8("reason code")?, allowed)?;
    let properties = if r.body.is_empty() {
        PropertyList::default()
    } else {
        decode_properties(r, PropertyContext::PubResponse)?
    };
    Ok(PubResponse {
        pkid,
        reason_code,
        properties,
    })
}

/// DISCONNECT or AUTH; v5 may leave out the reason code (0) and the properties.
fn reason_packet(
    r: &mut Reader,
    v5: bool,
    allowed: &[u8],
    ctx: PropertyContext,
) -> Result<ReasonPacket, DecodeError> {
    if !v5 || r.body.is_empty() {
        return Ok(ReasonPacket {
            reason_code: 0,
            properties: PropertyList::default(),
        });
    }
    let reason_code = check_reason(r.packet, r.u8("reason code")?, allowed)?;
    let properties = if r.body.is_empty() {
        PropertyList::default()
    } else {
        decode_properties(r, ctx)?
    };
    Ok(ReasonPacket {
        reason_code,
        properties,
    })
}

fn decode_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let pkid = r.pkid()?;
    let properties = v5_properties(r, v5, PropertyContext::Subscribe)?;
    let mut filters = Vec::new();
    while !r.body.is_empty() {
        let filter = r.string("topic filter")?;
        let options = if v5 {
            subscription_options(r.u8("subscription options")?)?
        } else {
            let byte = r.u8("requested QoS")?;
            let qos = QoS::from_u8(byte).ok_or(DecodeError::InvalidRequestedQoS { byte })?;
            SubscriptionOptions::qos(qos)
        };
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::NoSubscribeFilters);
    }
    Ok(Subscribe {
        pkid,
        filters,
        properties,
    })
}

/// The v5 Subscription Options byte (3.8.3.1).
fn subscription_options(byte: u8) -> Result<SubscriptionOptions, DecodeError> {
    let qos = QoS::from_u8(byte & 3);
    let handling = RetainHandling::from_u8((byte >> 4) & 3);
    match (qos, handling) {
        (Some(qos), Some(retain_handling)) if byte & 0xc0 == 0 => Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0b100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        }),
        _ => Err(DecodeError::InvalidSubscriptionOptions { byte }),
    }
}

/// SUBACK or UNSUBACK. On 3.1/3.1.1 a SUBACK's codes are 0, 1, 2 or 0x80 and an UNSUBACK
/// has none.
fn decode_sub_response(
    r: &mut Reader,
    v5: bool,
    allowed: &[u8],
) -> Result<SubResponse, DecodeError> {
    let pkid = r.pkid()?;
    let properties = v5_properties(r, v5, PropertyContext::SubResponse)?;
    let codes = r.rest();
    let reason_codes = if v5 {
        codes
            .iter()
            .map(|&c| check_reason(r.packet, c, allowed))
            .collect::<Result<Vec<_>, _>>()?
    } else if r.packet == "SUBACK" {
        codes
            .iter()
            .map(|&code| match code {
                0 | 1 | 2 | 0x80 => Ok(code),
                _ => Err(DecodeError::InvalidSubAckCode { code }),
            })
            .collect::<Result<Vec<_>, _>>()?
    } else if codes.is_empty() {
        Vec::new()
    } else {
        return Err(DecodeError::TrailingBytes {
            packet: r.packet,
            extra: codes.len(),
        });
    };
    Ok(SubResponse {
        pkid,
        reason_codes,
        properties,
    })
}

fn decode_publish(r: &mut Reader, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::PublishQoS3)?;
    let retain = flags & 1 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupOnQoS0);
    }
    let topic = if v5 {
        // Empty only with a Topic Alias, checked once the properties are read.
        let topic = r.string("topic name")?;
        if topic.contains(['+', '#']) {
            return Err(DecodeError::WildcardInTopicName { topic });
        }
        topic
    } else {
        r.topic_name("topic name")?
    };
    let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
    let properties = v5_properties(r, v5, PropertyContext::Publish)?;
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::EmptyTopicWithoutAlias);
    }
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        pkid,
        payload: r.rest(),
        properties,
    })
}

/// Decodes a CONNECT body of any supported level; with `allow_v5` false a level-5 CONNECT
/// is refused as an unsupported level.
fn decode_connect(r: &mut Reader, allow_v5: bool) -> Result<Connect, DecodeError> {
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
    let v5 = protocol.is_v5();
    // 3.1.1 only: MQTT 5 allows a password without a user name (3.1.2.9), e.g. a token.
    if has_password && !has_username && !v5 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = v5_properties(r, v5, PropertyContext::Connect)?;
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::WillQoS3)?;
        let properties = v5_properties(r, v5, PropertyContext::Will)?;
        let topic = r.topic_name("will topic")?;
        let payload = r.binary("will message")?;
        Some(LastWill {
            topic,
            payload,
            qos,
            retain: will_retain,
            properties,
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
    Ok(Connect {
        protocol,
        client_id,
        clean_session,
        keep_alive,
        username,
        password,
        will,
        properties,
    })
}
