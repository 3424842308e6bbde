//! Response encoding shared by the UDP endpoint and the TCP connection:
//! Block2 slicing (RFC 7959 §2.4, early and late negotiation), the options a
//! response carries, and the 5.00 fallback when a message would not fit.
//!
//! It always produces the RFC 7252 datagram layout; [`crate::tcp`] converts
//! that to the RFC 8323 framing (the options and payload are identical).

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, ResponseType};

use crate::request::{is_success, BlockOption, Response};
use crate::wire;

/// A block to cut out of a response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slice {
    /// Block number in units of `2^(szx+4)`.
    pub(crate) num: u32,
    /// Size exponent actually used.
    pub(crate) szx: u8,
}

/// Message-specific options added to an encoded response.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Extra {
    /// Observe sequence number (registration responses and notifications).
    pub(crate) observe: Option<u32>,
    /// The block the client asked for.
    pub(crate) block2: Option<Slice>,
    /// Block1 echo for 2.31 Continue and the final upload response.
    pub(crate) block1: Option<BlockOption>,
    /// Size1 for 4.13 (the largest acceptable body).
    pub(crate) size1: Option<u32>,
}

/// Encoding limits of one transport.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Our preferred block size exponent; payloads larger than its block
    /// size are fragmented unasked (late negotiation).
    pub(crate) szx: u8,
    /// Largest encoded message (datagram layout) allowed.
    pub(crate) max_message_size: usize,
}

/// Converts a configured block size to an SZX: clamped to 16..=1024 and
/// rounded down to a power of two.
pub(crate) fn szx_of(block_size: usize) -> u8 {
    let size = block_size.clamp(16, 1024);
    (usize::BITS - 1 - size.leading_zeros()) as u8 - 4
}

/// Encodes a response message, applying Block2 when the payload exceeds
/// the block size or the client asked for a block. Never truncates: what
/// does not fit `limits.max_message_size` becomes a 5.00 diagnostic, and the
/// returned flag says so (the caller counts it).
pub(crate) fn response(
    limits: Limits,
    mtype: MessageType,
    mid: u16,
    token: &[u8],
    response: &Response,
    extra: Extra,
) -> (Bytes, bool) {
    let code = match response.code {
        ResponseType::UnKnown => ResponseType::InternalServerError,
        code => code,
    };
    let total = response.payload.len();
    let our_size = 1usize << (limits.szx + 4);
    let slice = match extra.block2 {
        // Early negotiation / follow-up: the client may only lower the size;
        // if we lower it, the block number is rescaled to the same offset.
        Some(asked) if is_success(code) || total > our_size => {
            let szx = asked.szx.min(limits.szx);
            let num = asked.num << (asked.szx - szx);
            Some(Slice { num, szx })
        }
        _ if total > our_size => Some(Slice {
            num: 0,
            szx: limits.szx,
        }),
        _ => None,
    };
    let mut packet = wire::packet(mtype, MessageClass::Response(code), mid, token);
    let mut payload = &response.payload[..];
    if let Some(slice) = slice {
        let size = 1usize << (slice.szx + 4);
        let start = slice.num as usize * size;
        if start >= total && !(start == 0 && total == 0) {
            let text = format!("Block2 NUM {} is beyond the {total}-byte body", slice.num);
            let error = Response::diagnostic(ResponseType::BadOption, &text);
            return self::response(limits, mtype, mid, token, &error, Extra::default());
        }
        let end = (start + size).min(total);
        payload = &response.payload[start..end];
        let etag = match &response.etag {
            Some(etag) => etag.clone(),
            None => fnv1a(&response.payload).to_be_bytes().to_vec(),
        };
        if (1..=8).contains(&etag.len()) {
            packet.add_option(CoapOption::ETag, etag);
        }
        let block = BlockOption {
            num: slice.num,
            more: end < total,
            szx: slice.szx,
        };
        wire::add_uint(&mut packet, CoapOption::Block2, block.value());
        wire::add_uint(
            &mut packet,
            CoapOption::Size2,
            u32::try_from(total).unwrap_or(u32::MAX),
        );
    } else if let Some(etag) = response
        .etag
        .as_ref()
        .filter(|e| (1..=8).contains(&e.len()))
    {
        packet.add_option(CoapOption::ETag, etag.clone());
    }
    if let Some(seq) = extra.observe {
        wire::add_uint(&mut packet, CoapOption::Observe, seq & 0x00FF_FFFF);
    }
    for segment in &response.location_path {
        packet.add_option(CoapOption::LocationPath, segment.as_bytes().to_vec());
    }
    if let Some(cf) = response.content_format {
        wire::add_uint(&mut packet, CoapOption::ContentFormat, u32::from(cf));
    }
    if let Some(max_age) = response.max_age {
        wire::add_uint(&mut packet, CoapOption::MaxAge, max_age);
    }
    if let Some(block1) = extra.block1 {
        wire::add_uint(&mut packet, CoapOption::Block1, block1.value());
    }
    if let Some(size1) = extra.size1 {
        wire::add_uint(&mut packet, CoapOption::Size1, size1);
    }
    packet.payload = payload.to_vec();
    match packet.to_bytes_unlimited() {
        Ok(bytes) if bytes.len() <= limits.max_message_size => (Bytes::from(bytes), false),
        _ => {
            let mut fallback = wire::packet(
                mtype,
                MessageClass::Response(ResponseType::InternalServerError),
                mid,
                token,
            );
            fallback.payload = b"response too large".to_vec();
            // 4 + 8 + 1 + 18 bytes: always encodable.
            (
                Bytes::from(fallback.to_bytes_unlimited().unwrap_or_default()),
                true,
            )
        }
    }
}

/// Whether RFC 7967 No-Response suppresses a response with `code`.
pub(crate) fn suppressed(mask: u8, code: ResponseType) -> bool {
    let class = u8::from(MessageClass::Response(code)) >> 5;
    match class {
        2 => mask & 0x02 != 0,
        4 => mask & 0x08 != 0,
        5 => mask & 0x10 != 0,
        _ => false,
    }
}

/// FNV-1a 64-bit hash: a stable ETag for block-wise bodies without one.
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7959_2_2_block_size_is_clamped_to_a_power_of_two() {
        for (size, szx) in [(1024, 6), (5000, 6), (700, 5), (16, 0), (1, 0)] {
            assert_eq!(szx_of(size), szx, "block_size {size}");
        }
    }
}
