//! How a message travels through NATS: one self-describing binary envelope, the same in
//! the message log and as a retained value in the KV bucket.
//!
//! NATS headers would carry the metadata too, but their values are HTTP-like text (no line
//! breaks; non-ASCII is not portable), while an MQTT 5 Content Type, User Property or
//! Correlation Data is any UTF-8 or any bytes. So everything that must come out unchanged
//! is in the body, length-prefixed; only the publishing node's name (and a retained write's
//! revision) ride in headers, where other tools can see them.
//!
//! Layout (version 1), all integers big-endian:
//! `0x01 | flags u8 | updated ms u64 | [topic u32+bytes] | [content type u32+bytes] |
//! [expiry ms u64] | [publisher u32+bytes] | [properties] | payload`, where `flags` holds the
//! QoS (bits 0-1), RETAIN (0x04) and which optional parts follow: topic (0x08, only for
//! hashed long topics), content type (0x10), expiry (0x20, wall-clock ms since the epoch),
//! publisher (0x80: the client id of the MQTT connection that published it, for MQTT 5 No
//! Local when the message reaches a persistent session on another node), properties (0x40:
//! a mask u8 — 1 Payload Format Indicator u8 (0 bytes, 1 UTF-8), 4 Response Topic,
//! 8 Correlation Data, each u32-length-prefixed; 2 is unused, the content type being the
//! envelope's own part — then u32 count of User Properties, each name and value
//! u32-length-prefixed). The payload is the rest and is never copied on
//! decode (a slice of the received buffer).
//!
//! A log message may carry a run of writes to one subject instead (a batch, made by the
//! lane under load, see [`super::position`]): `0xB0 | count u16 | count × (envelope
//! u32+bytes)`, 1 ≤ count ≤ 1,024 (one position each). The first byte tells the two apart
//! (an envelope starts with its version).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use crate::model::{PayloadFormat, Properties, QoS};
use crate::store::cursor::Cursor;

/// The envelope's version byte.
const VERSION: u8 = 1;
const F_RETAIN: u8 = 0x04;
const F_TOPIC: u8 = 0x08;
const F_CONTENT_TYPE: u8 = 0x10;
const F_EXPIRY: u8 = 0x20;
const F_PROPERTIES: u8 = 0x40;
const F_PUBLISHER: u8 = 0x80;
const P_FORMAT: u8 = 1;
const P_RESPONSE_TOPIC: u8 = 4;
const P_CORRELATION: u8 = 8;
/// Every property bit this version writes; a mask with another bit set is refused.
const P_KNOWN: u8 = P_FORMAT | P_RESPONSE_TOPIC | P_CORRELATION;

/// What a message carries besides its topic (the subject says that, except for long topics).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// QoS as published.
    pub qos: QoS,
    /// RETAIN as published.
    pub retain: bool,
    /// The full topic, when the subject is a hash of it.
    pub topic: Option<String>,
    /// Media type of the payload.
    pub content_type: Option<Arc<str>>,
    /// MQTT 5 Message Expiry as a wall-clock deadline (nodes' clocks are assumed to agree
    /// to well under a second; the interval is in whole seconds anyway).
    pub expires_at: Option<SystemTime>,
    /// The client id of the MQTT connection that published it (`None`: HTTP, CoAP, a
    /// will or anything else).
    pub publisher: Option<Arc<str>>,
    /// The message's application properties (MQTT 5's), as published.
    pub properties: Option<Arc<Properties>>,
    /// When the write was accepted (a retained value's Last-Modified on every node).
    pub updated: SystemTime,
    /// The payload.
    pub payload: Bytes,
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed ponte envelope: {0}")]
pub struct EnvelopeError(&'static str);

impl From<&'static str> for EnvelopeError {
    fn from(why: &'static str) -> Self {
        EnvelopeError(why)
    }
}

/// A monotonic deadline as wall-clock time (for another node), `None` if already past.
pub fn instant_to_wall(at: Instant) -> SystemTime {
    let now = Instant::now();
    let wall = SystemTime::now();
    if at <= now {
        wall
    } else {
        wall + (at - now)
    }
}

/// A wall-clock deadline as a monotonic one on this node.
pub fn wall_to_instant(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(left) => now + left,
        Err(_) => now,
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

impl Envelope {
    /// The encoded envelope.
    pub fn encode(&self) -> Bytes {
        let mut flags = self.qos as u8;
        if self.retain {
            flags |= F_RETAIN;
        }
        let extra = self.topic.as_ref().map_or(0, |t| t.len() + 4)
            + self.content_type.as_ref().map_or(0, |c| c.len() + 4);
        let mut out = BytesMut::with_capacity(10 + 8 + extra + 64 + self.payload.len());
        out.put_u8(VERSION);
        let flags_at = out.len();
        out.put_u8(0);
        out.put_u64(ms(self.updated));
        if let Some(t) = &self.topic {
            flags |= F_TOPIC;
            put_bytes(&mut out, t.as_bytes());
        }
        if let Some(c) = &self.content_type {
            flags |= F_CONTENT_TYPE;
            put_bytes(&mut out, c.as_bytes());
        }
        if let Some(at) = self.expires_at {
            flags |= F_EXPIRY;
            out.put_u64(ms(at));
        }
        if let Some(p) = &self.publisher {
            flags |= F_PUBLISHER;
            put_bytes(&mut out, p.as_bytes());
        }
        if let Some(p) = &self.properties {
            flags |= F_PROPERTIES;
            let mut mask = 0;
            if p.payload_format.is_some() {
                mask |= P_FORMAT;
            }
            if p.response_topic.is_some() {
                mask |= P_RESPONSE_TOPIC;
            }
            if p.correlation_data.is_some() {
                mask |= P_CORRELATION;
            }
            out.put_u8(mask);
            if let Some(f) = p.payload_format {
                out.put_u8(match f {
                    PayloadFormat::Bytes => 0,
                    PayloadFormat::Utf8 => 1,
                });
            }
            if let Some(t) = &p.response_topic {
                put_bytes(&mut out, t.as_bytes());
            }
            if let Some(d) = &p.correlation_data {
                put_bytes(&mut out, d);
            }
            out.put_u32(p.user.len() as u32);
            for (k, v) in &p.user {
                put_bytes(&mut out, k.as_bytes());
                put_bytes(&mut out, v.as_bytes());
            }
        }
        out[flags_at] = flags;
        out.put_slice(&self.payload);
        out.freeze()
    }

    /// Read an envelope; the payload is a slice of `buf`.
    pub fn decode(buf: &Bytes) -> Result<Envelope, EnvelopeError> {
        let mut r = Cursor::new(buf);
        if r.u8()? != VERSION {
            return Err(EnvelopeError("unknown version"));
        }
        let flags = r.u8()?;
        let qos = QoS::from_u8(flags & 3).ok_or(EnvelopeError("QoS 3"))?;
        let updated = UNIX_EPOCH + Duration::from_millis(r.u64()?);
        let topic = if flags & F_TOPIC != 0 {
            Some(r.string32()?)
        } else {
            None
        };
        let content_type = if flags & F_CONTENT_TYPE != 0 {
            Some(Arc::from(r.string32()?))
        } else {
            None
        };
        let expires_at = if flags & F_EXPIRY != 0 {
            Some(UNIX_EPOCH + Duration::from_millis(r.u64()?))
        } else {
            None
        };
        let publisher = if flags & F_PUBLISHER != 0 {
            Some(Arc::from(r.string32()?))
        } else {
            None
        };
        let properties = if flags & F_PROPERTIES != 0 {
            let mask = r.u8()?;
            if mask & !P_KNOWN != 0 {
                return Err(EnvelopeError("unknown property"));
            }
            let mut p = Properties::default();
            if mask & P_FORMAT != 0 {
                p.payload_format = Some(match r.u8()? {
                    0 => PayloadFormat::Bytes,
                    1 => PayloadFormat::Utf8,
                    _ => return Err(EnvelopeError("payload format indicator not 0 or 1")),
                });
            }
            if mask & P_RESPONSE_TOPIC != 0 {
                p.response_topic = Some(r.string32()?);
            }
            if mask & P_CORRELATION != 0 {
                p.correlation_data = Some(bytes(&mut r, buf)?);
            }
            let n = r.u32()?;
            for _ in 0..n {
                let k = r.string32()?;
                let v = r.string32()?;
                p.user.push((k, v));
            }
            Some(Arc::new(p))
        } else {
            None
        };
        Ok(Envelope {
            qos,
            retain: flags & F_RETAIN != 0,
            topic,
            content_type,
            expires_at,
            publisher,
            properties,
            updated,
            payload: buf.slice(r.at()..),
        })
    }
}

/// The first byte of a batch of envelopes.
const BATCH: u8 = 0xB0;

/// The bytes a batch of `entries` envelopes of `body_bytes` in all takes.
pub fn batch_len(entries: usize, body_bytes: usize) -> usize {
    3 + 4 * entries + body_bytes
}

/// One log message carrying several encoded envelopes, in order (at most
/// [`super::position::SLOTS`]: each needs a position of its own).
pub fn encode_batch<'a>(envelopes: impl ExactSizeIterator<Item = &'a Bytes> + Clone) -> Bytes {
    let n = envelopes.len();
    debug_assert!(
        n as u64 <= super::position::SLOTS,
        "a batch of {n} writes has more than a log message's positions"
    );
    let total: usize = envelopes.clone().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(batch_len(n, total));
    out.put_u8(BATCH);
    out.put_u16(n as u16);
    for e in envelopes {
        put_bytes(&mut out, e);
    }
    out.freeze()
}

/// The encoded envelopes a log message carries, in order: itself, or a batch's entries
/// (slices of `body`, not copies). A malformed batch yields one error and ends; so does
/// one of more entries than a log message has positions ([`super::position::SLOTS`]),
/// whose later entries would otherwise take the positions of its first ones.
pub fn entries(body: &Bytes) -> Entries {
    Entries {
        body: body.clone(),
        at: 0,
        left: if body.first() == Some(&BATCH) {
            None
        } else {
            Some(1)
        },
    }
}

/// The iterator of [`entries`].
#[derive(Debug)]
pub struct Entries {
    /// The log message's body.
    body: Bytes,
    /// Where the next entry's length is (a batch), or 0 (not read yet / not a batch).
    at: usize,
    /// Entries still to yield; `None` until a batch's count is read.
    left: Option<u16>,
}

impl Entries {
    fn next_entry(&mut self) -> Result<Option<Bytes>, EnvelopeError> {
        let left = match self.left {
            Some(0) => return Ok(None),
            Some(n) => n,
            None => {
                let mut r = Cursor::new(&self.body);
                r.u8()?;
                let n = r.u16()?;
                if n == 0 {
                    return Err(EnvelopeError("empty batch"));
                }
                if u64::from(n) > super::position::SLOTS {
                    return Err(EnvelopeError(
                        "more entries than a log message has positions",
                    ));
                }
                self.at = r.at();
                n
            }
        };
        self.left = Some(left - 1);
        if self.at == 0 {
            return Ok(Some(self.body.clone()));
        }
        let mut r = Cursor::new(&self.body);
        r.take(self.at)?;
        let entry = bytes(&mut r, &self.body)?;
        self.at = r.at();
        if left == 1 && self.at != self.body.len() {
            return Err(EnvelopeError("bytes after the last entry of a batch"));
        }
        Ok(Some(entry))
    }
}

impl Iterator for Entries {
    type Item = Result<Bytes, EnvelopeError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_entry() {
            Ok(e) => e.map(Ok),
            Err(e) => {
                self.left = Some(0);
                Some(Err(e))
            }
        }
    }
}

/// A `u32`-length-prefixed part of `buf` read at `r`, shared with `buf` (no copy).
fn bytes(r: &mut Cursor<'_>, buf: &Bytes) -> Result<Bytes, EnvelopeError> {
    let n = r.u32()? as usize;
    let start = r.at();
    r.take(n)?;
    Ok(buf.slice(start..start + n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_yields_its_envelopes_in_order_and_a_single_one_itself() {
        let a = Bytes::from_static(b"\x01first");
        let b = Bytes::from_static(b"\x01second, longer");
        let batch = encode_batch([&a, &b].into_iter());
        assert_eq!(batch.len(), batch_len(2, a.len() + b.len()));
        let got: Vec<_> = entries(&batch)
            .collect::<Result<_, _>>()
            .expect("well formed");
        assert_eq!(got, vec![a.clone(), b]);
        let single: Vec<_> = entries(&a).collect::<Result<_, _>>().expect("itself");
        assert_eq!(single, vec![a]);
    }

    #[test]
    fn a_malformed_batch_is_one_error_never_a_panic() {
        for bad in [
            &b"\xb0"[..],
            b"\xb0\x00\x00",
            b"\xb0\x00\x02\x00\x00\x00\x01x",
            b"\xb0\x00\x01\x00\x00\x00\x01xtrailing",
            b"\xb0\x00\x01\xff\xff\xff\xffx",
        ] {
            let got: Vec<_> = entries(&Bytes::from_static(bad)).collect();
            assert!(
                got.last().is_some_and(|r| r.is_err()),
                "{bad:?} must end in an error, got {got:?}"
            );
            assert!(
                got.len() <= 2,
                "{bad:?}: at most one entry before the error"
            );
        }
    }

    #[test]
    fn a_batch_of_more_entries_than_positions_is_refused() {
        let one = Bytes::from_static(b"x");
        let fits = encode_batch(
            std::iter::repeat_n(&one, 1024)
                .collect::<Vec<_>>()
                .into_iter(),
        );
        assert_eq!(entries(&fits).filter(Result::is_ok).count(), 1024);
        // 1,025 well-formed entries: one error, nothing delivered at a wrapped position.
        let mut body = BytesMut::new();
        body.put_u8(BATCH);
        body.put_u16(1025);
        for _ in 0..1025 {
            put_bytes(&mut body, &one);
        }
        let got: Vec<_> = entries(&body.freeze()).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }
    use proptest::prelude::*;

    fn at_ms(v: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(v)
    }

    #[test]
    fn every_part_round_trips() {
        let e = Envelope {
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: Some("x/".repeat(3000)),
            content_type: Some(Arc::from("application/json; charset=\"ü\"\r\n")),
            expires_at: Some(at_ms(1_700_000_000_123)),
            publisher: Some(Arc::from("client/ü 1")),
            properties: Some(Arc::new(Properties {
                payload_format: Some(PayloadFormat::Utf8),
                response_topic: Some("r/1".into()),
                correlation_data: Some(Bytes::from_static(&[0, 1, 2, 255])),
                user: vec![("b".into(), "2".into()), ("a".into(), "\n".into())],
            })),
            updated: at_ms(1_700_000_000_000),
            payload: Bytes::from_static(b"\x00payload\xff"),
        };
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        let plain = Envelope {
            qos: QoS::AtMostOnce,
            retain: false,
            topic: None,
            content_type: None,
            expires_at: None,
            publisher: None,
            properties: None,
            updated: at_ms(5),
            payload: Bytes::new(),
        };
        assert_eq!(Envelope::decode(&plain.encode()).unwrap(), plain);
    }

    proptest! {
        #[test]
        fn truncated_or_garbled_input_is_an_error_never_a_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Envelope::decode(&Bytes::from(data));
        }

        #[test]
        fn payloads_and_strings_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..300), ct in ".{0,20}", q in 0u8..3, retain: bool) {
            let e = Envelope {
                qos: QoS::from_u8(q).unwrap(),
                retain,
                topic: None,
                content_type: Some(Arc::from(ct.as_str())),
                expires_at: None,
                publisher: None,
                properties: None,
                updated: at_ms(42),
                payload: Bytes::from(payload),
            };
            prop_assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        }
    }
}
