//! Datagram framing (RFC 7252 §3) and packet construction.
//!
//! [`decode`] walks the framing strictly (coap-lite's decoder accepts things
//! RFC 7252 calls message format errors: version ≠ 1, a payload marker
//! followed by nothing, an Empty message with a token or options), so the
//! rest of the endpoint only ever sees well-formed messages, and reports the
//! header when it was readable so a malformed CON can be answered with RST
//! (§4.2). The [`Message`] it returns borrows token, options and payload from
//! the datagram: a request costs no packet structure of maps and lists.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

/// A datagram that is not a well-formed CoAP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer than the 4 fixed header bytes arrived.
    #[error("datagram of {len} bytes is shorter than the 4-byte CoAP header")]
    Truncated {
        /// Length of the received datagram.
        len: usize,
    },
    /// The version field is not 1; RFC 7252 §3 says ignore such messages.
    #[error("version {version} is not CoAP version 1")]
    Version {
        /// The received version field.
        version: u8,
    },
    /// TKL 9..=15 is reserved (RFC 7252 §3).
    #[error("token length {tkl} exceeds the maximum of 8")]
    TokenLength {
        /// The received TKL field.
        tkl: u8,
    },
    /// The token runs past the end of the datagram.
    #[error("token of {tkl} bytes runs past the end of a {len}-byte datagram")]
    TokenTruncated {
        /// The received TKL field.
        tkl: u8,
        /// Length of the received datagram.
        len: usize,
    },
    /// An option delta or length nibble is 15 outside a payload marker.
    #[error("option at byte {offset} uses the reserved nibble 15")]
    ReservedNibble {
        /// Offset of the option's first byte.
        offset: usize,
    },
    /// An option header or value runs past the end of the datagram.
    #[error("option at byte {offset} runs past the end of the datagram")]
    OptionTruncated {
        /// Offset of the option's first byte.
        offset: usize,
    },
    /// Accumulated option deltas exceed the 16-bit option number space.
    #[error("option number at byte {offset} exceeds 65535")]
    OptionNumberOverflow {
        /// Offset of the option's first byte.
        offset: usize,
    },
    /// A payload marker with a zero-length payload (RFC 7252 §3).
    #[error("payload marker at byte {offset} is followed by an empty payload")]
    EmptyPayload {
        /// Offset of the 0xFF marker.
        offset: usize,
    },
    /// Code 0.00 with a token, options or payload (RFC 7252 §4.1).
    #[error("empty message (code 0.00) carries {extra} bytes after the header")]
    NonEmptyEmpty {
        /// Bytes following the 4-byte header.
        extra: usize,
    },
}

/// The fixed header fields, readable even when the rest is malformed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Header {
    /// Message type; decides whether a format error is answered with RST.
    pub(crate) mtype: MessageType,
    /// Message ID, echoed in the RST.
    pub(crate) mid: u16,
}

/// A well-formed message, borrowed from the datagram it was decoded from: the
/// endpoint reads a request's fields from it without copying them into a
/// packet structure first (no allocation: the options are read again from the
/// datagram's bytes, which [`decode`] has already walked and checked).
#[derive(Debug, Clone)]
pub(crate) struct Message<'a> {
    /// Message type.
    pub(crate) mtype: MessageType,
    /// The code byte (class << 5 | detail).
    pub(crate) code: u8,
    /// Message ID.
    pub(crate) mid: u16,
    /// The token (0–8 bytes).
    pub(crate) token: &'a [u8],
    /// The options in the order they came, which is ascending by number
    /// (deltas are never negative).
    pub(crate) options: Options<'a>,
    /// The payload (empty without a payload marker).
    pub(crate) payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The options grouped by number, ascending: each group yields every
    /// occurrence of one option, in order.
    pub(crate) fn option_groups(&self) -> Groups<'a> {
        Groups {
            options: self.options.clone(),
        }
    }
}

/// The options of a decoded message, (number, value), read from bytes that
/// [`decode`] has already checked: iterating cannot fail.
#[derive(Debug, Clone)]
pub(crate) struct Options<'a> {
    /// The option bytes (no payload marker).
    bytes: &'a [u8],
    /// Where the next option starts in `bytes`.
    at: usize,
    /// Number of the option before it (deltas are relative to it).
    number: u32,
}

impl Options<'_> {
    /// Bytes of options not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // Checked by `decode`; an error here would mean other bytes, so it ends the walk.
        next_option(self.bytes, &mut self.at, &mut self.number)
            .ok()
            .flatten()
    }
}

/// [`Message::option_groups`]: one [`Group`] per option number.
#[derive(Debug, Clone)]
pub(crate) struct Groups<'a> {
    /// The options not grouped yet.
    options: Options<'a>,
}

impl<'a> Iterator for Groups<'a> {
    type Item = (u16, Group<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let group = Group {
            number: self.options.clone().next()?.0,
            options: self.options.clone(),
        };
        while self
            .options
            .clone()
            .next()
            .is_some_and(|(n, _)| n == group.number)
        {
            self.options.next();
        }
        Some((group.number, group))
    }
}

/// The values of every occurrence of one option number, in order.
#[derive(Debug, Clone)]
pub(crate) struct Group<'a> {
    /// The option number.
    number: u16,
    /// Options from this group's first occurrence on.
    options: Options<'a>,
}

impl<'a> Iterator for Group<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<Self::Item> {
        match self.options.next()? {
            (n, value) if n == self.number => Some(value),
            _ => {
                self.options.bytes = &[];
                None
            }
        }
    }
}

/// A request's token (0–8 bytes, RFC 7252 §5.3.1), kept inline while the request is
/// pending: remembering it costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    /// How many bytes of `bytes` are the token.
    len: u8,
    /// The token, then zeros.
    bytes: [u8; 8],
}

impl Token {
    /// The token of a decoded message: its first 8 bytes (there are never more).
    pub(crate) fn new(token: &[u8]) -> Token {
        let token = &token[..token.len().min(8)];
        let mut bytes = [0; 8];
        bytes[..token.len()].copy_from_slice(token);
        Token {
            len: token.len() as u8,
            bytes,
        }
    }
}

impl std::ops::Deref for Token {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Decodes a datagram, rejecting every RFC 7252 message format error.
///
/// On error, the header is returned when it was readable and the version is
/// 1, so the caller can reject a CON with RST.
pub(crate) fn decode(data: &[u8]) -> Result<Message<'_>, (Option<Header>, FormatError)> {
    let [b0, code, mid_hi, mid_lo, ..] = *data else {
        return Err((None, FormatError::Truncated { len: data.len() }));
    };
    let version = b0 >> 6;
    if version != 1 {
        return Err((None, FormatError::Version { version }));
    }
    let header = Header {
        mtype: match (b0 >> 4) & 0x3 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        },
        mid: u16::from_be_bytes([mid_hi, mid_lo]),
    };
    let fail = |e| Err((Some(header), e));
    let tkl = b0 & 0x0F;
    if tkl > 8 {
        return fail(FormatError::TokenLength { tkl });
    }
    if code == 0 && data.len() > 4 {
        return fail(FormatError::NonEmptyEmpty {
            extra: data.len() - 4,
        });
    }
    let mut i = 4 + usize::from(tkl);
    if i > data.len() {
        return fail(FormatError::TokenTruncated {
            tkl,
            len: data.len(),
        });
    }
    let token = &data[4..i];
    let start = i;
    let mut number: u32 = 0;
    loop {
        match next_option(data, &mut i, &mut number) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return fail(e),
        }
    }
    let mut payload: &[u8] = &[];
    if i < data.len() {
        // `next_option` stopped at a payload marker.
        if i + 1 == data.len() {
            return fail(FormatError::EmptyPayload { offset: i });
        }
        payload = &data[i + 1..];
    }
    Ok(Message {
        mtype: header.mtype,
        code,
        mid: header.mid,
        token,
        options: Options {
            bytes: &data[start..i],
            at: 0,
            number: 0,
        },
        payload,
    })
}

/// Reads the option at `data[*i..]` (RFC 7252 §3.1), whose number is `*number` plus its
/// delta, and moves past it; `None` at the end of `data` or at a payload marker (which is
/// not consumed).
fn next_option<'a>(
    data: &'a [u8],
    i: &mut usize,
    number: &mut u32,
) -> Result<Option<(u16, &'a [u8])>, FormatError> {
    let Some(&byte) = data.get(*i).filter(|b| **b != 0xFF) else {
        return Ok(None);
    };
    let offset = *i;
    *i += 1;
    let delta = extended(byte >> 4, data, i, offset)?;
    let length = extended(byte & 0x0F, data, i, offset)?;
    *number += delta;
    let Ok(n) = u16::try_from(*number) else {
        return Err(FormatError::OptionNumberOverflow { offset });
    };
    let value = data
        .get(*i..*i + length as usize)
        .ok_or(FormatError::OptionTruncated { offset })?;
    *i += length as usize;
    Ok(Some((n, value)))
}

/// Reads an option delta or length with its extended bytes (RFC 7252 §3.1).
fn extended(nibble: u8, data: &[u8], i: &mut usize, offset: usize) -> Result<u32, FormatError> {
    match nibble {
        0..=12 => Ok(u32::from(nibble)),
        13 => {
            let b = *data
                .get(*i)
                .ok_or(FormatError::OptionTruncated { offset })?;
            *i += 1;
            Ok(u32::from(b) + 13)
        }
        14 => {
            let (Some(&hi), Some(&lo)) = (data.get(*i), data.get(*i + 1)) else {
                return Err(FormatError::OptionTruncated { offset });
            };
            *i += 2;
            Ok(u32::from(u16::from_be_bytes([hi, lo])) + 269)
        }
        _ => Err(FormatError::ReservedNibble { offset }),
    }
}

/// Builds a packet skeleton with the given header fields and token.
pub(crate) fn packet(mtype: MessageType, code: MessageClass, mid: u16, token: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(mtype);
    p.header.code = code;
    p.header.message_id = mid;
    // Tokens reaching here were decoded (≤ 8 bytes) or are our own; clamp
    // anyway because coap-lite asserts on TKL > 15.
    p.set_token(token.iter().take(8).copied().collect());
    p
}

/// Encodes an Empty message (ACK or RST) carrying `mid`.
pub(crate) fn empty(mtype: MessageType, mid: u16) -> Vec<u8> {
    let [hi, lo] = mid.to_be_bytes();
    let t: u8 = match mtype {
        MessageType::Confirmable => 0,
        MessageType::NonConfirmable => 1,
        MessageType::Acknowledgement => 2,
        MessageType::Reset => 3,
    };
    vec![0x40 | (t << 4), 0, hi, lo]
}

/// Appends an unsigned-integer option in its minimal encoding (RFC 7252 §3.2).
pub(crate) fn add_uint(p: &mut Packet, option: CoapOption, value: u32) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    p.add_option(option, bytes[skip..].to_vec());
}

/// Decodes an unsigned-integer option value of at most 4 bytes.
pub(crate) fn uint(value: &[u8]) -> u32 {
    value
        .iter()
        .take(4)
        .fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7252_3_rejects_format_errors() {
        assert!(matches!(
            decode(&[0x40, 1]),
            Err((None, FormatError::Truncated { len: 2 }))
        ));
        assert!(matches!(
            decode(&[0x80, 1, 0, 1]),
            Err((None, FormatError::Version { version: 2 }))
        ));
        assert!(matches!(
            decode(&[0x49, 1, 0, 1]),
            Err((Some(_), FormatError::TokenLength { tkl: 9 }))
        ));
        assert!(matches!(
            decode(&[0x40, 1, 0, 1, 0xFF]),
            Err((Some(_), FormatError::EmptyPayload { offset: 4 }))
        ));
        assert!(matches!(
            decode(&[0x40, 1, 0, 1, 0xF1, 0]),
            Err((Some(_), FormatError::ReservedNibble { offset: 4 }))
        ));
        assert!(matches!(
            decode(&[0x40, 1, 0, 1, 0xB5, b'a']),
            Err((Some(_), FormatError::OptionTruncated { offset: 4 }))
        ));
        assert!(matches!(
            decode(&[0x41, 0, 0, 1, 7]),
            Err((Some(_), FormatError::NonEmptyEmpty { extra: 1 }))
        ));
    }

    #[test]
    fn rfc7252_3_2_uint_round_trip() {
        for v in [0u32, 1, 255, 256, 0xFF_FFFF, u32::MAX] {
            let mut p = Packet::new();
            add_uint(&mut p, CoapOption::MaxAge, v);
            let raw = p
                .get_first_option(CoapOption::MaxAge)
                .cloned()
                .unwrap_or_default();
            assert_eq!(uint(&raw), v);
        }
    }
}
