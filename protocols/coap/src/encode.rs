//! Response encoding shared by the UDP endpoint and the TCP connection:
//! Block2 slicing (RFC 7959 §2.4, early and late negotiation), the options a
//! response carries, and the 5.00 fallback when a message would not fit.
//!
//! It always produces the RFC 7252 datagram layout; [`crate::tcp`] converts
//! that to the RFC 8323 framing (the options and payload are identical).

use bytes::Bytes;
use coap_lite::{MessageClass, MessageType, ResponseType};

use crate::etag::ETag;
use crate::request::{is_success, BlockOption, Response};

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
    let mut payload = &response.payload[..];
    // Options in ascending number order (RFC 7252 §3.1), written straight into the
    // datagram: ETag 4, Observe 6, Location-Path 8, Content-Format 12, Max-Age 14,
    // Block2 23, Block1 27, Size2 28, Size1 60.
    let mut block2 = None;
    let mut etag = response.etag;
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
        // All 8 bytes of the hash, leading zeros too: every block carries the same tag.
        etag = etag.or_else(|| ETag::new(&fnv1a(&response.payload).to_be_bytes()));
        block2 = Some(BlockOption {
            num: slice.num,
            more: end < total,
            szx: slice.szx,
        });
    }
    let path_len: usize = response.location_path.iter().map(|s| s.len() + 3).sum();
    let mut out = Writer::new(
        mtype,
        u8::from(MessageClass::Response(code)),
        mid,
        token,
        4 + 8 + 48 + path_len + 1 + payload.len(),
    );
    if let Some(etag) = etag {
        out.option(4, &etag);
    }
    if let Some(seq) = extra.observe {
        out.uint(6, seq & 0x00FF_FFFF);
    }
    for segment in &response.location_path {
        out.option(8, segment.as_bytes());
    }
    if let Some(cf) = response.content_format {
        out.uint(12, u32::from(cf));
    }
    if let Some(max_age) = response.max_age {
        out.uint(14, max_age);
    }
    if let Some(block) = block2 {
        out.uint(23, block.value());
    }
    if let Some(block1) = extra.block1 {
        out.uint(27, block1.value());
    }
    if block2.is_some() {
        out.uint(28, u32::try_from(total).unwrap_or(u32::MAX));
    }
    if let Some(size1) = extra.size1 {
        out.uint(60, size1);
    }
    out.payload(payload);
    match out.finish() {
        Some(bytes) if bytes.len() <= limits.max_message_size => (bytes.freeze(), false),
        _ => {
            let mut fallback = Writer::new(
                mtype,
                u8::from(MessageClass::Response(ResponseType::InternalServerError)),
                mid,
                token,
                32,
            );
            fallback.payload(b"response too large");
            // 4 + 8 + 1 + 18 bytes: always encodable.
            let bytes = fallback.finish().map(Buf::freeze).unwrap_or_default();
            (bytes, true)
        }
    }
}

/// A datagram-layout CoAP message written option by option (RFC 7252 §3), without an
/// intermediate packet: the per-response cost is one buffer, not a map of option lists.
struct Writer {
    /// The message so far.
    buf: Buf,
    /// Number of the last option written (deltas are relative to it).
    last: u16,
    /// Set when an option came out of order or was too long to encode.
    invalid: bool,
}

impl Writer {
    /// Header and token; `capacity` is a guess of the whole message's size.
    fn new(mtype: MessageType, code: u8, mid: u16, token: &[u8], capacity: usize) -> Writer {
        let t: u8 = match mtype {
            MessageType::Confirmable => 0,
            MessageType::NonConfirmable => 1,
            MessageType::Acknowledgement => 2,
            MessageType::Reset => 3,
        };
        // Tokens reaching here were decoded (≤ 8 bytes) or are our own; clamp anyway.
        let token = &token[..token.len().min(8)];
        let mut buf = Buf::with_capacity(capacity);
        let [hi, lo] = mid.to_be_bytes();
        buf.extend_from_slice(&[0x40 | (t << 4) | token.len() as u8, code, hi, lo]);
        buf.extend_from_slice(token);
        Writer {
            buf,
            last: 0,
            invalid: false,
        }
    }

    /// One option; numbers must not decrease.
    fn option(&mut self, number: u16, value: &[u8]) {
        if number < self.last || value.len() > 65_804 {
            self.invalid = true;
            return;
        }
        let delta = usize::from(number - self.last);
        self.last = number;
        let at = self.buf.len();
        self.buf.push(0);
        let d = self.nibble(delta);
        let l = self.nibble(value.len());
        self.buf.set(at, (d << 4) | l);
        self.buf.extend_from_slice(value);
    }

    /// An unsigned-integer option in its shortest form (0 is the empty value).
    fn uint(&mut self, number: u16, value: u32) {
        let bytes = value.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        self.option(number, &bytes[skip..]);
    }

    /// The nibble for `v`, writing its extended bytes after the option's first byte.
    fn nibble(&mut self, v: usize) -> u8 {
        match v {
            0..=12 => v as u8,
            13..=268 => {
                self.buf.push((v - 13) as u8);
                13
            }
            _ => {
                self.buf
                    .extend_from_slice(&((v - 269) as u16).to_be_bytes());
                14
            }
        }
    }

    /// The payload marker and payload, when there is one.
    fn payload(&mut self, payload: &[u8]) {
        if !payload.is_empty() {
            self.buf.push(0xFF);
            self.buf.extend_from_slice(payload);
        }
    }

    /// The encoded message, `None` if an option could not be encoded.
    fn finish(self) -> Option<Buf> {
        (!self.invalid).then_some(self.buf)
    }
}

/// A message being written: inline while it is small, so that the finished datagram is
/// one allocation even though the transmit queue and the exchange cache both hold it
/// (a `Bytes` made from a `Vec` takes a second one, for its reference count, when it is
/// first shared). Two sizes, so that a cached answer to a write (about 20 bytes) does not
/// hold room for a value.
enum Buf {
    /// An answer without a value, or with a short one.
    Small(Inline<64>),
    /// An answer with a value of up to about 200 bytes.
    Large(Inline<256>),
    /// A larger message.
    Heap(Vec<u8>),
}

/// A small finished message; as the owner of a `Bytes` it is its one allocation.
struct Inline<const N: usize> {
    /// Bytes of `bytes` in use.
    len: usize,
    /// The message, then unused room.
    bytes: [u8; N],
}

impl<const N: usize> Inline<N> {
    /// An empty buffer.
    fn new() -> Self {
        Inline {
            len: 0,
            bytes: [0; N],
        }
    }

    /// Appends `data` if it fits; otherwise the whole message so far, then `data`, on
    /// the heap.
    fn extend(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        match self.bytes.get_mut(self.len..self.len + data.len()) {
            Some(room) => {
                room.copy_from_slice(data);
                self.len += data.len();
                None
            }
            None => {
                let mut v = Vec::with_capacity(2 * (self.len + data.len()));
                v.extend_from_slice(self.as_ref());
                v.extend_from_slice(data);
                Some(v)
            }
        }
    }
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Buf {
    /// Room for `capacity` bytes: inline when they fit.
    fn with_capacity(capacity: usize) -> Buf {
        match capacity {
            0..=64 => Buf::Small(Inline::new()),
            65..=256 => Buf::Large(Inline::new()),
            _ => Buf::Heap(Vec::with_capacity(capacity)),
        }
    }

    /// Bytes written so far.
    fn len(&self) -> usize {
        match self {
            Buf::Small(i) => i.len,
            Buf::Large(i) => i.len,
            Buf::Heap(v) => v.len(),
        }
    }

    /// Appends `data`, moving to the heap when it does not fit inline.
    fn extend_from_slice(&mut self, data: &[u8]) {
        let spilled = match self {
            Buf::Small(i) => i.extend(data),
            Buf::Large(i) => i.extend(data),
            Buf::Heap(v) => {
                v.extend_from_slice(data);
                None
            }
        };
        if let Some(v) = spilled {
            *self = Buf::Heap(v);
        }
    }

    /// Appends one byte.
    fn push(&mut self, byte: u8) {
        self.extend_from_slice(&[byte]);
    }

    /// Overwrites the byte at `at` (< `len`).
    fn set(&mut self, at: usize, byte: u8) {
        let slot = match self {
            Buf::Small(i) => i.bytes[..i.len].get_mut(at),
            Buf::Large(i) => i.bytes[..i.len].get_mut(at),
            Buf::Heap(v) => v.get_mut(at),
        };
        if let Some(slot) = slot {
            *slot = byte;
        }
    }

    /// The finished message.
    fn freeze(self) -> Bytes {
        match self {
            Buf::Small(i) => Bytes::from_owner(i),
            Buf::Large(i) => Bytes::from_owner(i),
            Buf::Heap(v) => Bytes::from(v),
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

    use coap_lite::{CoapOption, Packet};

    /// What coap-lite makes of the same message: the reference the writer must equal
    /// byte for byte (options sorted by number, shortest uints, extended nibbles).
    fn reference(
        mid: u16,
        token: &[u8],
        options: &[(CoapOption, Vec<u8>)],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Acknowledgement);
        p.header.code = MessageClass::Response(ResponseType::Content);
        p.header.message_id = mid;
        p.set_token(token.to_vec());
        for (o, v) in options {
            p.add_option(*o, v.clone());
        }
        p.payload = payload.to_vec();
        p.to_bytes_unlimited().unwrap()
    }

    #[test]
    fn rfc7252_3_1_options_are_written_as_coap_lite_writes_them() {
        let limits = Limits {
            szx: 6,
            max_message_size: 1152,
        };
        let long = "x".repeat(300);
        let response = Response {
            code: ResponseType::Content,
            payload: Bytes::from_static(b"hello"),
            content_format: Some(50),
            etag: ETag::new(&[0, 0, 1, 2]),
            max_age: Some(60),
            location_path: vec!["r".into(), "a-longer-segment".into(), long.clone()],
        };
        let extra = Extra {
            observe: Some(0x0123_4567),
            size1: Some(0),
            ..Extra::default()
        };
        let (bytes, fallback) = super::response(
            limits,
            MessageType::Acknowledgement,
            0x1234,
            b"tok",
            &response,
            extra,
        );
        assert!(!fallback);
        let expected = reference(
            0x1234,
            b"tok",
            &[
                (CoapOption::ETag, vec![0, 0, 1, 2]),
                (CoapOption::Observe, vec![0x23, 0x45, 0x67]),
                (CoapOption::LocationPath, b"r".to_vec()),
                (CoapOption::LocationPath, b"a-longer-segment".to_vec()),
                (CoapOption::LocationPath, long.into_bytes()),
                (CoapOption::ContentFormat, vec![50]),
                (CoapOption::MaxAge, vec![60]),
                (CoapOption::Size1, vec![]),
            ],
            b"hello",
        );
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[test]
    fn rfc7959_2_4_a_large_body_is_sliced_with_block2_size2_and_an_etag() {
        let limits = Limits {
            szx: 2, // 64-byte blocks
            max_message_size: 1152,
        };
        let body = vec![7u8; 100];
        let response = Response {
            code: ResponseType::Content,
            payload: Bytes::from(body.clone()),
            content_format: None,
            etag: None,
            max_age: None,
            location_path: Vec::new(),
        };
        let (bytes, _) = super::response(
            limits,
            MessageType::Acknowledgement,
            7,
            &[],
            &response,
            Extra::default(),
        );
        let etag = fnv1a(&body).to_be_bytes().to_vec();
        let block = BlockOption {
            num: 0,
            more: true,
            szx: 2,
        };
        let value = |v: u32| {
            let b = v.to_be_bytes();
            b[b.iter().take_while(|x| **x == 0).count()..].to_vec()
        };
        let expected = reference(
            7,
            &[],
            &[
                (CoapOption::ETag, etag),
                (CoapOption::Block2, value(block.value())),
                (CoapOption::Size2, value(100)),
            ],
            &body[..64],
        );
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[test]
    fn a_message_outgrowing_its_inline_buffer_moves_to_the_heap_whole() {
        for capacity in [0, 64, 65, 256, 257] {
            let mut buf = Buf::with_capacity(capacity);
            let mut expected = Vec::new();
            for i in 0..300u16 {
                let chunk = vec![i as u8; usize::from(i % 7)];
                buf.extend_from_slice(&chunk);
                buf.push(0xAB);
                expected.extend_from_slice(&chunk);
                expected.push(0xAB);
                buf.set(0, 1);
                expected[0] = 1;
                assert_eq!(buf.len(), expected.len());
            }
            let bytes = buf.freeze();
            assert_eq!(&bytes[..], &expected[..], "capacity {capacity}");
            assert_eq!(bytes.clone(), bytes);
        }
    }

    #[test]
    fn answers_of_every_size_match_coap_lite() {
        let limits = Limits {
            szx: 6,
            max_message_size: 1152,
        };
        for size in [0, 1, 20, 40, 60, 100, 150, 200, 250, 300, 1000] {
            let response = Response {
                content_format: Some(0),
                etag: ETag::new(&[1, 2, 3]),
                max_age: Some(60),
                ..Response::with_payload(ResponseType::Content, vec![b'v'; size])
            };
            let (bytes, fallback) = super::response(
                limits,
                MessageType::Acknowledgement,
                9,
                b"tk",
                &response,
                Extra::default(),
            );
            assert!(!fallback);
            let expected = reference(
                9,
                b"tk",
                &[
                    (CoapOption::ETag, vec![1, 2, 3]),
                    (CoapOption::ContentFormat, vec![]),
                    (CoapOption::MaxAge, vec![60]),
                ],
                &vec![b'v'; size],
            );
            assert_eq!(&bytes[..], &expected[..], "{size}-byte value");
        }
    }

    #[test]
    fn rfc7959_2_2_block_size_is_clamped_to_a_power_of_two() {
        for (size, szx) in [(1024, 6), (5000, 6), (700, 5), (16, 0), (1, 0)] {
            assert_eq!(szx_of(size), szx, "block_size {size}");
        }
    }
}
