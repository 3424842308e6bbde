//! Durable MQTT sessions: the records behind persistent sessions (issue 3).
//!
//! Two kinds of record, written only by the queue writer thread
//! ([`crate::broker::queue`]) in group-committed batches:
//!
//! - a **session record** per persistent client: expiry, subscriptions with their options,
//!   and the protocol state that carries no payload (pending PUBRELs, inbound QoS 2 ids,
//!   next packet id);
//! - a **queue entry** per QoS 1/2 message the session must receive, keyed by
//!   (client, global sequence number) so a prefix scan returns a session's messages in the
//!   order they were queued. An entry is appended before the publisher is acknowledged and
//!   removed (lazily, nobody waits) once the client acknowledged it.
//!
//! Keys: `u16 BE length | client id bytes` for sessions, the same followed by `u64 BE seq`
//! for queue entries — the length prefix makes a client's prefix unambiguous whatever bytes
//! its id contains.

use std::sync::Arc;

use bytes::Bytes;

use super::StoreError;
use crate::broker::message::QoS;

/// One change to the durable session state.
#[derive(Debug, Clone)]
pub enum SessionOp {
    /// Create or replace a session record.
    PutSession(Arc<str>, Arc<SessionRecord>),
    /// Remove a session record and every queue entry of the client.
    DeleteSession(Arc<str>),
    /// Append a message to a client's queue.
    Append(Arc<str>, u64, Arc<QueuedRecord>),
    /// Remove one queue entry (acknowledged, or dropped by the overflow policy).
    Remove(Arc<str>, u64),
}

/// One persisted subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The filter as the client sent it (a `$share/...` filter included).
    pub filter: String,
    /// Granted QoS.
    pub qos: QoS,
    /// MQTT 5 No Local, so a resumed subscription still skips the client's own messages.
    pub no_local: bool,
    /// MQTT 5 Retain As Published, kept for the same reason.
    pub retain_as_published: bool,
    /// MQTT 5 Subscription Identifier, still sent with every match after a restart.
    pub id: Option<u32>,
}

/// A persistent session as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session Expiry Interval in seconds once the client is away; `u32::MAX`: never.
    pub expiry: u32,
    /// The subscriptions, re-inserted into the index at start.
    pub subscriptions: Vec<StoredSubscription>,
    /// Outgoing QoS 2 exchanges waiting for PUBCOMP (PUBREL re-sent on resume).
    pub pending_pubrel: Vec<u16>,
    /// Inbound QoS 2 packet ids acknowledged with PUBREC and not yet released: a DUP
    /// re-send of these is not delivered again.
    pub inbound_qos2: Vec<u16>,
    /// Next outgoing packet id to try.
    pub next_pkid: u16,
    /// Outgoing QoS 1/2 PUBLISHes in flight when the client went away, in send order:
    /// (packet id, queue sequence number). After a restart these queue entries are
    /// resumed as in-flight and re-sent with DUP=1 under the same id (MQTT-4.4.0-1).
    pub inflight: Vec<(u16, u64)>,
}

/// A queued message as stored (v5 application properties are not kept on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    /// Topic name.
    pub topic: String,
    /// Delivery QoS (already downgraded to the subscription's).
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Content type, if the message had one.
    pub content_type: Option<String>,
    /// The payload.
    pub payload: Bytes,
}

/// Everything stored, loaded once at start.
#[derive(Debug, Default)]
pub struct LoadedSessions {
    /// Session records by client id.
    pub sessions: Vec<(String, SessionRecord)>,
    /// Queue entries: client id, sequence number, message — in key order (per client in
    /// sequence order).
    pub queued: Vec<(String, u64, QueuedRecord)>,
}

/// A durable home for persistent sessions; owned by the queue writer thread.
pub trait SessionStore: Send + 'static {
    /// Every stored session and queued message.
    fn load_sessions(&self) -> Result<LoadedSessions, StoreError>;
    /// Apply a batch; when this returns `Ok`, the batch survives a crash.
    fn apply_sessions(&mut self, ops: &[SessionOp]) -> Result<(), StoreError>;
}

/// The no-persistence session store (`--memory`, tests).
#[derive(Debug, Default)]
pub struct MemorySessions;

impl SessionStore for MemorySessions {
    fn load_sessions(&self) -> Result<LoadedSessions, StoreError> {
        Ok(LoadedSessions::default())
    }

    fn apply_sessions(&mut self, _ops: &[SessionOp]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The key prefix of a client: `u16 BE length | bytes`.
pub(crate) fn client_key(client: &str) -> Vec<u8> {
    let b = client.as_bytes();
    let mut k = Vec::with_capacity(2 + b.len() + 8);
    k.extend_from_slice(&(b.len() as u16).to_be_bytes());
    k.extend_from_slice(b);
    k
}

/// The key of one queue entry.
pub(crate) fn queue_key(client: &str, seq: u64) -> Vec<u8> {
    let mut k = client_key(client);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Split a queue key back into client id and sequence number.
pub(crate) fn split_queue_key(k: &[u8]) -> Result<(String, u64), StoreError> {
    let mut r = Reader::new(k, "queue key");
    let client = r.str16()?;
    let seq = r.u64()?;
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

/// Encode a session record: version 1, expiry u32, subscription count u32, then per
/// subscription filter (str16), qos u8, flags u8 (1 no local, 2 retain as published,
/// 4 has id), id u32; then pending PUBRELs and inbound QoS 2 ids (u16 count, u16 each),
/// next packet id u16, and in-flight publishes (u16 count, then pkid u16 + seq u64 each).
pub(crate) fn encode_session(r: &SessionRecord) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&r.expiry.to_be_bytes());
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
    for ids in [&r.pending_pubrel, &r.inbound_qos2] {
        out.extend_from_slice(&(ids.len() as u16).to_be_bytes());
        for id in ids.iter() {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out.extend_from_slice(&r.next_pkid.to_be_bytes());
    out.extend_from_slice(&(r.inflight.len() as u16).to_be_bytes());
    for (pkid, seq) in &r.inflight {
        out.extend_from_slice(&pkid.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
    }
    out
}

/// Decode a record written by [`encode_session`].
pub(crate) fn decode_session(rec: &[u8]) -> Result<SessionRecord, StoreError> {
    let mut r = Reader::new(rec, "session record");
    let version = r.u8()?;
    if version != 1 {
        return Err(r.corrupt("unknown session record version"));
    }
    let expiry = r.u32()?;
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
        });
    }
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        let n = r.u16()?;
        for _ in 0..n {
            list.push(r.u16()?);
        }
    }
    let next_pkid = r.u16()?;
    let n = r.u16()?;
    let mut inflight = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        inflight.push((r.u16()?, r.u64()?));
    }
    r.end()?;
    let [pending_pubrel, inbound_qos2] = lists;
    Ok(SessionRecord {
        expiry,
        subscriptions,
        pending_pubrel,
        inbound_qos2,
        next_pkid,
        inflight,
    })
}

/// Encode a queued message: qos u8, retain u8, topic (str16), content type (str16, empty
/// for none), payload (the rest).
pub(crate) fn encode_queued(m: &QueuedRecord) -> Vec<u8> {
    let ct = m.content_type.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(6 + m.topic.len() + ct.len() + m.payload.len());
    out.push(m.qos as u8);
    out.push(u8::from(m.retain));
    put_str16(&mut out, &m.topic);
    put_str16(&mut out, ct);
    out.extend_from_slice(&m.payload);
    out
}

/// Decode a record written by [`encode_queued`].
pub(crate) fn decode_queued(rec: &[u8]) -> Result<QueuedRecord, StoreError> {
    let mut r = Reader::new(rec, "queued message");
    let qos = QoS::from_u8(r.u8()?).ok_or_else(|| r.corrupt("QoS above 2"))?;
    let retain = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(r.corrupt("retain flag neither 0 nor 1")),
    };
    let topic = r.str16()?;
    let ct = r.str16()?;
    let payload = Bytes::copy_from_slice(r.rest());
    Ok(QueuedRecord {
        topic,
        qos,
        retain,
        content_type: (!ct.is_empty()).then_some(ct),
        payload,
    })
}

/// A bounds-checked cursor over a record; every short read is a [`StoreError::Corrupt`].
struct Reader<'a> {
    /// The record.
    buf: &'a [u8],
    /// Read position.
    pos: usize,
    /// What the record is, for the error.
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn corrupt(&self, why: &'static str) -> StoreError {
        StoreError::Corrupt {
            key: format!("{} ({} bytes)", self.what, self.buf.len()),
            why,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| self.corrupt("record ends early"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn str16(&mut self) -> Result<String, StoreError> {
        let n = usize::from(self.u16()?);
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| self.corrupt("string is not UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    fn end(&self) -> Result<(), StoreError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes after the record"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_record_roundtrip() {
        let r = SessionRecord {
            expiry: 30,
            subscriptions: vec![StoredSubscription {
                filter: "a/+".into(),
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: false,
                id: Some(7),
            }],
            pending_pubrel: vec![3],
            inbound_qos2: vec![9, 10],
            next_pkid: 11,
            inflight: vec![(4, 99)],
        };
        let enc = encode_session(&r);
        assert_eq!(decode_session(&enc).unwrap(), r);
        assert!(decode_session(&enc[..enc.len() - 1]).is_err());
    }

    #[test]
    fn queued_record_roundtrip_and_keys() {
        let m = QueuedRecord {
            topic: "t/1".into(),
            qos: QoS::ExactlyOnce,
            retain: true,
            content_type: Some("text/plain".into()),
            payload: Bytes::from_static(b"xyz"),
        };
        assert_eq!(decode_queued(&encode_queued(&m)).unwrap(), m);
        assert!(decode_queued(&[3, 0]).is_err());
        let k = queue_key("c\0x", 42);
        assert_eq!(split_queue_key(&k).unwrap(), ("c\0x".to_string(), 42));
        assert!(k.starts_with(&client_key("c\0x")));
        assert!(!k.starts_with(&client_key("c")));
    }
}
