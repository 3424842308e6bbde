//! Application-facing request and response types, and the parser that turns
//! a decoded [`Message`] into a [`Request`] or a precise
//! [`RequestError`] (RFC 7252 §5.4 option rules, §5.8 methods, §5.10 option
//! table, RFC 7959 Block options).

use std::net::SocketAddr;

use bytes::Bytes;
use coap_lite::ResponseType;

use crate::etag::ETag;
use crate::path::{RawPath, UriPath};
use crate::wire::{uint, Message};

/// Identifies a request handed to the driver until it is answered.
pub type RequestId = u64;

/// The request methods the gateway serves (RFC 7252 §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// 0.01: read a resource, optionally observing it.
    Get,
    /// 0.02: process the payload (publish).
    Post,
    /// 0.03: create or replace the resource.
    Put,
    /// 0.04: delete the resource.
    Delete,
}

/// A decoded Block1/Block2 option value (RFC 7959 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOption {
    /// Block number, counted in units of this option's size.
    pub num: u32,
    /// More blocks follow (M bit).
    pub more: bool,
    /// Size exponent: the block holds `2^(szx + 4)` bytes; 0..=6 (7 is
    /// reserved for BERT and rejected by the parser).
    pub szx: u8,
}

impl BlockOption {
    /// Block size in bytes.
    pub fn size(&self) -> usize {
        1 << (usize::from(self.szx) + 4)
    }

    /// Parses a 0–3 byte option value; `None` for the reserved SZX 7.
    pub(crate) fn parse(value: &[u8]) -> Option<Self> {
        if value.len() > 3 {
            return None;
        }
        let v = uint(value);
        let szx = (v & 0x7) as u8;
        (szx != 7).then_some(Self {
            num: v >> 4,
            more: v & 0x8 != 0,
            szx,
        })
    }

    /// Encodes the option value.
    pub(crate) fn value(&self) -> u32 {
        (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx)
    }
}

/// A request handed to the driver via [`crate::Event::Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Pass back to [`crate::Endpoint::respond`].
    pub id: RequestId,
    /// The client; observations and deduplication are per peer.
    pub peer: SocketAddr,
    /// The method.
    pub method: Method,
    /// Uri-Path segments, each valid UTF-8 (otherwise the endpoint already
    /// answered 4.00); `/r/T` arrives as `["r", "T"]`.
    pub path: UriPath,
    /// Uri-Query arguments, each valid UTF-8 (`href=/r/a*` for RFC 6690 filters).
    pub query: Vec<String>,
    /// The whole body; Block1 uploads are reassembled before delivery.
    pub payload: Bytes,
    /// Content-Format of the payload, if the client said.
    pub content_format: Option<u16>,
    /// Accept: the format the client wants back (4.06 if it cannot be served).
    pub accept: Option<u16>,
    /// Observe option: 0 registers (answer with `observe: Some(resource)`),
    /// 1 deregisters (the endpoint already removed the observation).
    pub observe: Option<u32>,
    /// ETags the client holds (GET with a current one → 2.03 Valid).
    pub etags: Vec<ETag>,
    /// If-Match preconditions (empty value = "resource exists").
    pub if_match: Vec<Vec<u8>>,
    /// If-None-Match: the request only applies if the resource does not exist.
    pub if_none_match: bool,
    /// Whether the request was CON; informational (the endpoint handles
    /// ACK versus NON itself).
    pub confirmable: bool,
    /// Block2 the client asked for (early negotiation or a follow-up block).
    /// Informational: always answer with the whole representation; the
    /// endpoint slices out this block.
    pub block2: Option<BlockOption>,
}

/// The driver's answer to a request, or a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Response code (2.05, 4.04, ...).
    pub code: ResponseType,
    /// The whole representation; the endpoint applies Block2 when it does not
    /// fit one datagram.
    pub payload: Bytes,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// ETag. Block-wise responses without one get a payload hash so every
    /// block carries the same ETag.
    pub etag: Option<ETag>,
    /// Max-Age in seconds (absent means the RFC default of 60).
    pub max_age: Option<u32>,
    /// Location-Path segments for 2.01 Created.
    pub location_path: Vec<String>,
}

impl Response {
    /// A response with `code` and nothing else.
    pub fn new(code: ResponseType) -> Self {
        Self {
            code,
            payload: Bytes::new(),
            content_format: None,
            etag: None,
            max_age: None,
            location_path: Vec::new(),
        }
    }

    /// A response with `code` and a payload.
    pub fn with_payload(code: ResponseType, payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::new(code)
        }
    }

    /// A response with a short UTF-8 diagnostic payload (RFC 7252 §5.5.2).
    pub(crate) fn diagnostic(code: ResponseType, text: &str) -> Self {
        Self::with_payload(code, Bytes::copy_from_slice(text.as_bytes()))
    }
}

/// Why the endpoint answers a request itself instead of handing it over.
/// The `Display` text is sent as the diagnostic payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A method code other than GET/POST/PUT/DELETE (RFC 7252 §5.8) → 4.05.
    #[error("method code 0.{detail:02} is not supported")]
    MethodNotAllowed {
        /// Detail of the 0.xx code.
        detail: u8,
    },
    /// A critical option this endpoint does not know (RFC 7252 §5.4.1) → 4.02.
    #[error("unrecognized critical option {number}")]
    UnrecognizedCriticalOption {
        /// The option number.
        number: u16,
    },
    /// A non-repeatable critical option occurring more than once (§5.4.5) → 4.02.
    #[error("critical option {number} occurs {count} times but is not repeatable")]
    RepeatedCriticalOption {
        /// The option number.
        number: u16,
        /// How often it occurred.
        count: usize,
    },
    /// A critical option whose value length is outside its range (§5.4.3) → 4.02.
    #[error("critical option {number} has {len} bytes, allowed {min}..={max}")]
    CriticalOptionLength {
        /// The option number.
        number: u16,
        /// The received value length.
        len: usize,
        /// Minimum allowed length.
        min: usize,
        /// Maximum allowed length.
        max: usize,
    },
    /// A Block option with the reserved SZX 7 (BERT is TCP only) → 4.02.
    #[error("block option {number} uses the reserved size exponent 7")]
    ReservedBlockSize {
        /// 23 (Block2) or 27 (Block1).
        number: u16,
    },
    /// Proxy-Uri or Proxy-Scheme: this is not a proxy (§5.10.2) → 5.05.
    #[error("option {number} asks for proxying, which this server does not do")]
    ProxyingNotSupported {
        /// 35 or 39.
        number: u16,
    },
    /// A Uri-Path segment that is not UTF-8 (§5.10.1 requires it) → 4.00.
    #[error("Uri-Path segment {index} is not valid UTF-8")]
    NonUtf8UriPath {
        /// Zero-based segment index.
        index: usize,
    },
    /// A Uri-Query argument that is not UTF-8 → 4.00.
    #[error("Uri-Query argument {index} is not valid UTF-8")]
    NonUtf8UriQuery {
        /// Zero-based argument index.
        index: usize,
    },
}

impl RequestError {
    /// The response code this error is answered with.
    pub fn code(&self) -> ResponseType {
        match self {
            Self::MethodNotAllowed { .. } => ResponseType::MethodNotAllowed,
            Self::UnrecognizedCriticalOption { .. }
            | Self::RepeatedCriticalOption { .. }
            | Self::CriticalOptionLength { .. }
            | Self::ReservedBlockSize { .. } => ResponseType::BadOption,
            Self::ProxyingNotSupported { .. } => ResponseType::ProxyingNotSupported,
            Self::NonUtf8UriPath { .. } | Self::NonUtf8UriQuery { .. } => ResponseType::BadRequest,
        }
    }

    /// Whether a NON request with this error is rejected (RST) rather than
    /// answered: RFC 7252 §5.4.1 rejects NON messages with bad critical options.
    pub(crate) fn rejects_non(&self) -> bool {
        self.code() == ResponseType::BadOption
    }
}

/// The parsed content of a request packet, before the endpoint assigns an id.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    /// See [`Request::method`].
    pub(crate) method: Method,
    /// See [`Request::path`].
    pub(crate) path: UriPath,
    /// See [`Request::query`].
    pub(crate) query: Vec<String>,
    /// See [`Request::content_format`].
    pub(crate) content_format: Option<u16>,
    /// See [`Request::accept`].
    pub(crate) accept: Option<u16>,
    /// See [`Request::observe`].
    pub(crate) observe: Option<u32>,
    /// See [`Request::etags`].
    pub(crate) etags: Vec<ETag>,
    /// See [`Request::if_match`].
    pub(crate) if_match: Vec<Vec<u8>>,
    /// See [`Request::if_none_match`].
    pub(crate) if_none_match: bool,
    /// Block1 of an upload being reassembled.
    pub(crate) block1: Option<BlockOption>,
    /// See [`Request::block2`].
    pub(crate) block2: Option<BlockOption>,
    /// Size1: announced total upload size, checked against the body cap early.
    pub(crate) size1: Option<u32>,
    /// Request-Tag values (RFC 9175), part of the Block1 transfer key.
    pub(crate) request_tag: Vec<Vec<u8>>,
    /// No-Response bitmask (RFC 7967): 2 = suppress 2.xx, 8 = 4.xx, 16 = 5.xx.
    pub(crate) no_response: u8,
}

impl Parsed {
    /// The request the application sees: this content, the `id` the endpoint assigned,
    /// the whole (reassembled) `payload`.
    pub(crate) fn into_request(
        self,
        id: RequestId,
        peer: std::net::SocketAddr,
        payload: bytes::Bytes,
        confirmable: bool,
    ) -> Request {
        Request {
            id,
            peer,
            method: self.method,
            path: self.path,
            query: self.query,
            payload,
            content_format: self.content_format,
            accept: self.accept,
            observe: self.observe,
            etags: self.etags,
            if_match: self.if_match,
            if_none_match: self.if_none_match,
            confirmable,
            block2: self.block2,
        }
    }
}

/// Option properties from RFC 7252 §5.10 and the later RFCs.
struct OptionSpec {
    /// May occur more than once.
    repeatable: bool,
    /// Minimum value length.
    min: usize,
    /// Maximum value length.
    max: usize,
}

/// Returns the properties of a known option number.
fn spec(number: u16) -> Option<OptionSpec> {
    let (repeatable, min, max) = match number {
        1 => (true, 0, 8),        // If-Match
        3 => (false, 1, 255),     // Uri-Host
        4 => (true, 1, 8),        // ETag
        5 => (false, 0, 0),       // If-None-Match
        6 => (false, 0, 3),       // Observe
        7 => (false, 0, 2),       // Uri-Port
        8 => (true, 0, 255),      // Location-Path
        11 => (true, 0, 255),     // Uri-Path
        12 => (false, 0, 2),      // Content-Format
        14 => (false, 0, 4),      // Max-Age
        15 => (true, 0, 255),     // Uri-Query
        17 => (false, 0, 2),      // Accept
        20 => (true, 0, 255),     // Location-Query
        23 | 27 => (false, 0, 3), // Block2, Block1
        28 | 60 => (false, 0, 4), // Size2, Size1
        35 => (false, 1, 1034),   // Proxy-Uri
        39 => (false, 1, 255),    // Proxy-Scheme
        258 => (false, 0, 1),     // No-Response
        292 => (true, 0, 8),      // Request-Tag
        _ => return None,
    };
    Some(OptionSpec {
        repeatable,
        min,
        max,
    })
}

/// Parses a request packet whose code byte is `code` (class 0, detail ≥ 1).
pub(crate) fn parse(code: u8, packet: &Message<'_>) -> Result<Parsed, RequestError> {
    let method = match code {
        1 => Method::Get,
        2 => Method::Post,
        3 => Method::Put,
        4 => Method::Delete,
        other => {
            return Err(RequestError::MethodNotAllowed {
                detail: other & 0x1F,
            })
        }
    };
    let mut parsed = Parsed {
        method,
        path: UriPath::default(),
        query: Vec::new(),
        content_format: None,
        accept: None,
        observe: None,
        etags: Vec::new(),
        if_match: Vec::new(),
        if_none_match: false,
        block1: None,
        block2: None,
        size1: None,
        request_tag: Vec::new(),
        no_response: 0,
    };
    // One pass over the options, which come in ascending order: `index` counts the
    // occurrences of one number, and the Uri-Path is read into one buffer that is checked
    // as UTF-8 once its last segment is in (before any later option, as if each segment
    // had been checked when it came).
    let mut previous = None;
    let mut index = 0;
    let mut path: Option<RawPath> = None;
    let mut options = packet.options.clone();
    while let Some((number, value)) = options.next() {
        index = if previous == Some(number) {
            index + 1
        } else {
            0
        };
        previous = Some(number);
        if number > 11 {
            if let Some(raw) = path.take() {
                parsed.path = finish_path(raw)?;
            }
        }
        let critical = number & 1 == 1;
        let Some(spec) = spec(number) else {
            if critical {
                return Err(RequestError::UnrecognizedCriticalOption { number });
            }
            continue;
        };
        if number == 35 || number == 39 {
            return Err(RequestError::ProxyingNotSupported { number });
        }
        if index > 0 && !spec.repeatable {
            if critical {
                let later = options.clone().take_while(|(n, _)| *n == number).count();
                return Err(RequestError::RepeatedCriticalOption {
                    number,
                    count: index + 1 + later,
                });
            }
            continue; // §5.4.5: later occurrences are unrecognized electives.
        }
        if value.len() < spec.min || value.len() > spec.max {
            if critical {
                // A segment before this one that is not UTF-8 is the first error.
                if let Some(raw) = path.take() {
                    finish_path(raw)?;
                }
                return Err(RequestError::CriticalOptionLength {
                    number,
                    len: value.len(),
                    min: spec.min,
                    max: spec.max,
                });
            }
            continue; // §5.4.3: treat like an unrecognized elective.
        }
        if number == 11 {
            // Room for the whole path at once: the options left are at least as long.
            path.get_or_insert_with(|| RawPath::with_capacity(value.len() + options.remaining()))
                .push(value);
            continue;
        }
        apply(&mut parsed, number, index, value)?;
    }
    if let Some(raw) = path {
        parsed.path = finish_path(raw)?;
    }
    Ok(parsed)
}

/// The Uri-Path read so far, or which segment is not UTF-8 (RFC 7252 §5.10.1).
fn finish_path(raw: RawPath) -> Result<UriPath, RequestError> {
    raw.finish()
        .map_err(|index| RequestError::NonUtf8UriPath { index })
}

/// Stores one well-sized option occurrence in `parsed`.
fn apply(parsed: &mut Parsed, number: u16, index: usize, value: &[u8]) -> Result<(), RequestError> {
    let short = || u16::try_from(uint(value)).unwrap_or(u16::MAX);
    match number {
        1 => parsed.if_match.push(value.to_vec()),
        // `parse` checked the length (1..=8): every value is an ETag.
        4 => parsed.etags.extend(ETag::new(value)),
        5 => parsed.if_none_match = true,
        6 => parsed.observe = Some(uint(value)),
        12 => parsed.content_format = Some(short()),
        15 => parsed.query.push(
            String::from_utf8(value.to_vec())
                .map_err(|_| RequestError::NonUtf8UriQuery { index })?,
        ),
        17 => parsed.accept = Some(short()),
        23 | 27 => {
            let block =
                BlockOption::parse(value).ok_or(RequestError::ReservedBlockSize { number })?;
            if number == 23 {
                parsed.block2 = Some(block);
            } else {
                parsed.block1 = Some(block);
            }
        }
        60 => parsed.size1 = Some(uint(value)),
        258 => parsed.no_response = value.first().copied().unwrap_or(0),
        292 => parsed.request_tag.push(value.to_vec()),
        // Uri-Host/Uri-Port (we serve every name), response-only options and
        // Size2 (we always send Size2 with Block2) need no action.
        _ => {}
    }
    Ok(())
}

/// Whether `code` is a 2.xx success class.
pub(crate) fn is_success(code: ResponseType) -> bool {
    u8::from(coap_lite::MessageClass::Response(code)) >> 5 == 2
}
