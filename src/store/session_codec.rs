//! The on-disk form of session records, states, queue entries and the alive mark (see
//! [`super::session`] for what each is): keys that sort a client's entries by sequence
//! number, versioned records that say what they are, and a bounds-checked reader that
//! turns every short or malformed record into [`StoreError::Corrupt`]. Only the engines
//! ([`super::sled`]) use these.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::cursor::Cursor;
use super::session::{
    QueuedRecord, Seq, SessionRecord, StoredInflight, StoredState, StoredSubscription,
};
use super::StoreError;
use crate::model::{PayloadFormat, Properties, QoS};

/// The key prefix of a client: `u16 BE length | bytes` (sessions and states are keyed by
/// it; the length makes a client's prefix unambiguous whatever bytes its id contains).
pub(crate) fn client_key(client: &str) -> Vec<u8> {
    let b = client.as_bytes();
    let mut k = Vec::with_capacity(2 + b.len() + 8);
    k.extend_from_slice(&(b.len() as u16).to_be_bytes());
    k.extend_from_slice(b);
    k
}

/// The key of one queue entry: the client's prefix, then `u64 BE seq`, so a prefix scan
/// returns a client's entries in sequence order.
pub(crate) fn queue_key(client: &str, seq: Seq) -> Vec<u8> {
    let mut k = client_key(client);
    k.extend_from_slice(&seq.get().to_be_bytes());
    k
}

/// Split a queue key back into client id and sequence number.
pub(crate) fn split_queue_key(k: &[u8]) -> Result<(String, Seq), StoreError> {
    let mut r = Reader::new(k, "queue key");
    let client = r.str16()?;
    let seq = Seq::new(r.u64()?).ok_or_else(|| r.corrupt("sequence number 0"))?;
    r.end()?;
    Ok((client, seq))
}

/// Split a session key back into the client id.
pub(crate) fn split_session_key(k: &[u8]) -> Result<String, StoreError> {
    let mut r = Reader::new(k, "session key");
    let client = r.str16()?;
    r.end()?;
    Ok(client)
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..s.len().min(usize::from(u16::MAX))]);
}

/// Encode an alive mark: milliseconds since the Unix epoch, u64 BE.
pub(crate) fn encode_alive(t: SystemTime) -> [u8; 8] {
    to_ms(Some(t)).to_be_bytes()
}

/// Decode a record written by [`encode_alive`].
pub(crate) fn decode_alive(rec: &[u8]) -> Result<Option<SystemTime>, StoreError> {
    let mut r = Reader::new(rec, "alive mark");
    let ms = r.u64()?;
    r.end()?;
    Ok(from_ms(ms))
}

/// Milliseconds since the Unix epoch; 0 stands for "none", so a real instant is at least 1.
fn to_ms(t: Option<SystemTime>) -> u64 {
    t.map_or(0, |t| {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX).max(1)
    })
}

/// The inverse of [`to_ms`].
fn from_ms(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

/// Encode a session record: version 2, expiry u32, away-since u64 (ms since the Unix epoch,
/// 0 while connected), subscription count u32, then per subscription filter (str16), qos
/// u8, flags u8 (1 no local, 2 retain as published, 4 has id), id u32.
pub(crate) fn encode_session(r: &SessionRecord) -> Vec<u8> {
    let mut out = vec![2u8];
    out.extend_from_slice(&r.expiry.to_be_bytes());
    out.extend_from_slice(&to_ms(r.away_since).to_be_bytes());
    out.extend_from_slice(&(r.subscriptions.len() as u32).to_be_bytes());
    for s in &r.subscriptions {
        put_str16(&mut out, &s.filter);
        out.push(s.qos as u8);
        let flags = u8::from(s.no_local)
            | (u8::from(s.retain_as_published) << 1)
            | (u8::from(s.id.is_some()) << 2);
        out.push(flags);
        out.extend_from_slice(&s.id.unwrap_or(0).to_be_bytes());
    }
    out
}

/// Decode a record written by [`encode_session`], or by the version 1 format, which also
/// held the protocol state (returned as the second value): pending PUBRELs and inbound
/// QoS 2 ids (u16 count, u16 each), next packet id u16, in-flight publishes (u16 count,
/// pkid u16 + seq u64 each), after the subscriptions and without away-since.
pub(crate) fn decode_session(
    rec: &[u8],
) -> Result<(SessionRecord, Option<StoredState>), StoreError> {
    let mut r = Reader::new(rec, "session record");
    let version = r.u8()?;
    if version != 1 && version != 2 {
        return Err(r.corrupt("unknown session record version"));
    }
    let expiry = r.u32()?;
    let away_since = if version == 2 {
        from_ms(r.u64()?)
    } else {
        None
    };
    let n = r.u32()?;
    let mut subscriptions = Vec::new();
    for _ in 0..n {
        let filter = r.str16()?;
        let qos = QoS::from_u8(r.u8()?).ok_or_else(|| r.corrupt("subscription QoS above 2"))?;
        let flags = r.u8()?;
        let id = r.u32()?;
        subscriptions.push(StoredSubscription {
            filter,
            qos,
            no_local: flags & 1 != 0,
            retain_as_published: flags & 2 != 0,
            id: (flags & 4 != 0).then_some(id),
            since: None,
        });
    }
    let record = SessionRecord {
        expiry,
        away_since,
        subscriptions,
    };
    if version == 2 {
        r.end()?;
        return Ok((record, None));
    }
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        let n = r.u16()?;
        for _ in 0..n {
            list.push(r.u16()?);
        }
    }
    let next_pkid = r.u16()?;
    let [pending_pubrel, inbound_qos2] = lists;
    let mut outgoing: Vec<StoredInflight> = pending_pubrel
        .into_iter()
        .map(|pkid| StoredInflight {
            pkid,
            seq: None,
            released: true,
        })
        .collect();
    let n = r.u16()?;
    for _ in 0..n {
        outgoing.push(StoredInflight {
            pkid: r.u16()?,
            seq: Seq::new(r.u64()?),
            released: false,
        });
    }
    r.end()?;
    Ok((
        record,
        Some(StoredState {
            next_pkid,
            outgoing,
            inbound_qos2,
            log: None,
        }),
    ))
}

/// Encode protocol state: version 1, next packet id u16, outgoing count u16 then per
/// exchange pkid u16, flags u8 (1 released), seq u64; inbound QoS 2 count u16, u16 each.
pub(crate) fn encode_state(s: &StoredState) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + s.outgoing.len() * 11 + s.inbound_qos2.len() * 2);
    out.push(1u8);
    out.extend_from_slice(&s.next_pkid.to_be_bytes());
    out.extend_from_slice(&(s.outgoing.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    for o in s.outgoing.iter().take(usize::from(u16::MAX)) {
        out.extend_from_slice(&o.pkid.to_be_bytes());
        out.push(u8::from(o.released));
        out.extend_from_slice(&o.seq.map_or(0, Seq::get).to_be_bytes());
    }
    let n = s.inbound_qos2.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_be_bytes());
    for id in s.inbound_qos2.iter().take(n) {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out
}

/// Decode a record written by [`encode_state`].
pub(crate) fn decode_state(rec: &[u8]) -> Result<StoredState, StoreError> {
    let mut r = Reader::new(rec, "session state");
    if r.u8()? != 1 {
        return Err(r.corrupt("unknown session state version"));
    }
    let next_pkid = r.u16()?;
    let n = r.u16()?;
    let mut outgoing = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let pkid = r.u16()?;
        let released = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(r.corrupt("exchange flags neither 0 nor 1")),
        };
        let seq = Seq::new(r.u64()?);
        outgoing.push(StoredInflight {
            pkid,
            seq,
            released,
        });
    }
    let n = r.u16()?;
    let mut inbound_qos2 = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        inbound_qos2.push(r.u16()?);
    }
    r.end()?;
    Ok(StoredState {
        next_pkid,
        outgoing,
        inbound_qos2,
        log: None,
    })
}

/// First byte of a version 2 queue entry. Version 1 entries start with their QoS (0..=2),
/// so the high bit tells the two apart.
const QUEUED_V2: u8 = 0x82;

/// Property mask bits of a version 2 queue entry.
const P_FORMAT: u8 = 1;
/// Content Type inside the properties: written by earlier versions (the same value as the
/// entry's own content type), skipped when read, no longer written.
const P_CONTENT_TYPE: u8 = 2;
const P_RESPONSE_TOPIC: u8 = 4;
const P_CORRELATION: u8 = 8;

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&b[..n]);
}

/// Encode a queued message (version 2): 0x82, qos u8, retain u8, topic (str16), content
/// type (str16, empty for none), expiry u64 (ms since the Unix epoch, 0 for none), a
/// property mask u8 (0x80: properties follow) with, for the set bits, Payload Format
/// Indicator u8 (1), Response Topic str16 (4), Correlation Data (u16 length + bytes, 8),
/// then User Properties (u16 count, name and value str16 each); then the payload (the
/// rest). Bit 2 (a Content Type str16 after the indicator) is only read, see
/// [`P_CONTENT_TYPE`].
pub(crate) fn encode_queued(m: &QueuedRecord) -> Vec<u8> {
    let ct = m.content_type.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(16 + m.topic.len() + ct.len() + m.payload.len());
    out.push(QUEUED_V2);
    out.push(m.qos as u8);
    out.push(u8::from(m.retain));
    put_str16(&mut out, &m.topic);
    put_str16(&mut out, ct);
    out.extend_from_slice(&to_ms(m.expires_at).to_be_bytes());
    match m.properties.as_deref() {
        None => out.push(0),
        Some(p) => {
            let bit = |set: bool, bit: u8| if set { bit } else { 0 };
            out.push(
                0x80 | bit(p.payload_format.is_some(), P_FORMAT)
                    | bit(p.response_topic.is_some(), P_RESPONSE_TOPIC)
                    | bit(p.correlation_data.is_some(), P_CORRELATION),
            );
            if let Some(f) = p.payload_format {
                out.push(match f {
                    PayloadFormat::Bytes => 0,
                    PayloadFormat::Utf8 => 1,
                });
            }
            if let Some(t) = &p.response_topic {
                put_str16(&mut out, t);
            }
            if let Some(d) = &p.correlation_data {
                put_bytes16(&mut out, d);
            }
            let n = p.user.len().min(usize::from(u16::MAX));
            out.extend_from_slice(&(n as u16).to_be_bytes());
            for (k, v) in p.user.iter().take(n) {
                put_str16(&mut out, k);
                put_str16(&mut out, v);
            }
        }
    }
    out.extend_from_slice(&m.payload);
    out
}

/// Decode a record written by [`encode_queued`] (or by an earlier version, with a Content
/// Type in its properties), or a version 1 entry (qos u8, retain u8, topic, content type,
/// payload: no properties, no expiry).
pub(crate) fn decode_queued(rec: &[u8]) -> Result<QueuedRecord, StoreError> {
    let mut r = Reader::new(rec, "queued message");
    let first = r.u8()?;
    let v2 = first == QUEUED_V2;
    let qos = if v2 { r.u8()? } else { first };
    let qos = QoS::from_u8(qos).ok_or_else(|| r.corrupt("QoS above 2"))?;
    let retain = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(r.corrupt("retain flag neither 0 nor 1")),
    };
    let topic = r.str16()?;
    let ct = r.str16()?;
    let mut expires_at = None;
    let mut properties = None;
    if v2 {
        expires_at = from_ms(r.u64()?);
        let mask = r.u8()?;
        if mask & 0x80 != 0 {
            let mut p = Properties::default();
            if mask & P_FORMAT != 0 {
                p.payload_format = Some(match r.u8()? {
                    0 => PayloadFormat::Bytes,
                    1 => PayloadFormat::Utf8,
                    _ => return Err(r.corrupt("payload format indicator neither 0 nor 1")),
                });
            }
            if mask & P_CONTENT_TYPE != 0 {
                // The entry's own content type holds the same value.
                r.str16()?;
            }
            if mask & P_RESPONSE_TOPIC != 0 {
                p.response_topic = Some(r.str16()?);
            }
            if mask & P_CORRELATION != 0 {
                let n = usize::from(r.u16()?);
                p.correlation_data = Some(Bytes::copy_from_slice(r.take(n)?));
            }
            let n = r.u16()?;
            for _ in 0..n {
                let k = r.str16()?;
                let v = r.str16()?;
                p.user.push((k, v));
            }
            properties = (!p.is_empty()).then(|| Arc::new(p));
        }
    }
    let payload = Bytes::copy_from_slice(r.rest());
    Ok(QueuedRecord {
        topic,
        qos,
        retain,
        content_type: (!ct.is_empty()).then_some(ct),
        properties,
        expires_at,
        payload,
    })
}

/// A [`Cursor`] over a record whose every short read is a [`StoreError::Corrupt`].
struct Reader<'a> {
    /// The record's bytes, read field by field.
    c: Cursor<'a>,
    /// The record's length, for the error.
    len: usize,
    /// What the record is, for the error.
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader {
            c: Cursor::new(buf),
            len: buf.len(),
            what,
        }
    }

    fn corrupt(&self, why: &'static str) -> StoreError {
        StoreError::Corrupt {
            key: format!("{} ({} bytes)", self.what, self.len),
            why,
        }
    }

    /// `read` on the cursor; a short read is "record ends early".
    fn field<T>(
        &mut self,
        read: impl FnOnce(&mut Cursor<'a>) -> Result<T, &'static str>,
    ) -> Result<T, StoreError> {
        read(&mut self.c).map_err(|_| self.corrupt("record ends early"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        self.field(|c| c.take(n))
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        self.field(Cursor::u8)
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        self.field(Cursor::u16)
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        self.field(Cursor::u32)
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        self.field(Cursor::u64)
    }

    fn str16(&mut self) -> Result<String, StoreError> {
        let n = usize::from(self.u16()?);
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| self.corrupt("string is not UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        self.c.rest()
    }

    fn end(&self) -> Result<(), StoreError> {
        if self.c.remaining() == 0 {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes after the record"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64) -> Seq {
        Seq::new(n).expect("not 0")
    }

    #[test]
    fn session_record_roundtrip() {
        let r = SessionRecord {
            expiry: 30,
            away_since: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            subscriptions: vec![StoredSubscription {
                filter: "a/+".into(),
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: false,
                id: Some(7),
                since: None,
            }],
        };
        let enc = encode_session(&r);
        assert_eq!(decode_session(&enc).unwrap(), (r, None));
        assert!(decode_session(&enc[..enc.len() - 1]).is_err());
    }

    #[test]
    fn version_1_session_record_still_loads_with_its_protocol_state() {
        // v1: expiry 30, no subscriptions, pending PUBREL [3], inbound [9], next 11,
        // in flight [(4, 99)].
        let mut v1 = vec![1u8, 0, 0, 0, 30, 0, 0, 0, 0];
        v1.extend_from_slice(&[0, 1, 0, 3, 0, 1, 0, 9, 0, 11, 0, 1, 0, 4]);
        v1.extend_from_slice(&99u64.to_be_bytes());
        let (rec, state) = decode_session(&v1).unwrap();
        assert_eq!(rec.expiry, 30);
        assert_eq!(rec.away_since, None);
        let state = state.expect("v1 carries the protocol state");
        assert_eq!(state.next_pkid, 11);
        assert_eq!(state.inbound_qos2, vec![9]);
        assert_eq!(
            state.outgoing,
            vec![
                StoredInflight {
                    pkid: 3,
                    seq: None,
                    released: true
                },
                StoredInflight {
                    pkid: 4,
                    seq: Seq::new(99),
                    released: false
                },
            ]
        );
    }

    #[test]
    fn state_record_roundtrip() {
        let s = StoredState {
            next_pkid: 12,
            outgoing: vec![
                StoredInflight {
                    pkid: 4,
                    seq: Seq::new(99),
                    released: false,
                },
                StoredInflight {
                    pkid: 5,
                    seq: Seq::new(100),
                    released: true,
                },
            ],
            inbound_qos2: vec![9, 10],
            log: None,
        };
        let enc = encode_state(&s);
        assert_eq!(decode_state(&enc).unwrap(), s);
        assert!(decode_state(&enc[..enc.len() - 1]).is_err());
        assert!(decode_state(&[2]).is_err());
    }

    #[test]
    fn queued_record_roundtrip_with_v5_properties_and_keys() {
        let m = QueuedRecord {
            topic: "t/1".into(),
            qos: QoS::ExactlyOnce,
            retain: true,
            content_type: Some("text/plain".into()),
            properties: Some(Arc::new(Properties {
                payload_format: Some(PayloadFormat::Utf8),
                response_topic: Some("reply/here".into()),
                correlation_data: Some(Bytes::from_static(b"\x00id")),
                user: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            })),
            expires_at: Some(UNIX_EPOCH + Duration::from_millis(5_000)),
            payload: Bytes::from_static(b"xyz"),
        };
        assert_eq!(decode_queued(&encode_queued(&m)).unwrap(), m);
        let plain = QueuedRecord {
            properties: None,
            expires_at: None,
            content_type: None,
            ..m.clone()
        };
        assert_eq!(decode_queued(&encode_queued(&plain)).unwrap(), plain);
        assert!(decode_queued(&[3, 0]).is_err());
        assert!(decode_queued(&encode_queued(&m)[..20]).is_err());
        let k = queue_key("c\0x", seq(42));
        assert_eq!(split_queue_key(&k).unwrap(), ("c\0x".to_string(), seq(42)));
        assert!(k.starts_with(&client_key("c\0x")));
        assert!(!k.starts_with(&client_key("c")));
    }

    #[test]
    fn a_queued_record_with_a_content_type_in_its_properties_still_loads() {
        // As written before the properties became protocol-neutral: mask 0x80|1|2|4, the
        // Content Type (the entry's own, again) between the indicator and the Response
        // Topic.
        let mut rec = vec![QUEUED_V2, 1, 0, 0, 1, b't', 0, 2, b'c', b't'];
        rec.extend_from_slice(&0u64.to_be_bytes());
        rec.extend_from_slice(&[0x80 | 1 | 2 | 4, 1, 0, 2, b'c', b't', 0, 1, b'r', 0, 0]);
        rec.extend_from_slice(b"body");
        let m = decode_queued(&rec).unwrap();
        assert_eq!(m.content_type.as_deref(), Some("ct"));
        assert_eq!(
            m.properties.as_deref(),
            Some(&Properties {
                payload_format: Some(PayloadFormat::Utf8),
                response_topic: Some("r".into()),
                ..Properties::default()
            })
        );
        assert_eq!(&m.payload[..], b"body");
    }

    #[test]
    fn version_1_queued_record_still_loads() {
        let mut v1 = vec![1u8, 0, 0, 3, b't', b'/', b'1', 0, 0];
        v1.extend_from_slice(b"payload");
        let m = decode_queued(&v1).unwrap();
        assert_eq!(
            (m.topic.as_str(), m.qos, m.retain),
            ("t/1", QoS::AtLeastOnce, false)
        );
        assert_eq!((m.properties, m.expires_at), (None, None));
        assert_eq!(&m.payload[..], b"payload");
    }
}
