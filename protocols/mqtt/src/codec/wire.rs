//! The field encodings every packet shares (MQTT 1.5, 2.2): a bounds-checked reader over one
//! packet body, the fixed header, Variable Byte Integers, length-prefixed strings.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use crate::packet::ProtocolVersion;

/// The largest value the four-byte Remaining Length field can carry (MQTT 2.2.3).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

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
/// whose flags carry DUP/QoS/RETAIN). Type 15 is AUTH in MQTT 5 and reserved before.
pub(crate) fn packet_kind(
    packet_type: u8,
    version: ProtocolVersion,
) -> Result<(&'static str, Option<u8>), DecodeError> {
    Ok(match packet_type {
        15 if version.is_v5() => ("AUTH", Some(0)),
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

/// Reads a Variable Byte Integer (section 1.5.5).
pub(crate) fn var_int(r: &mut Reader, field: &'static str) -> Result<u32, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let byte = r.u8(field)?;
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::MalformedVarInt { field })
}

/// Reads a Four Byte Integer (section 1.5.3).
pub(crate) fn u32_field(r: &mut Reader, field: &'static str) -> Result<u32, DecodeError> {
    if r.body.len() < 4 {
        return Err(r.truncated(field));
    }
    Ok(r.body.get_u32())
}

/// Bytes a Variable Byte Integer takes.
pub(crate) fn var_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}
