//! Durable storage behind the retained-message index.
//!
//! The broker keeps every retained value in memory for reads and fan-out; a [`Store`] is where
//! those values are made durable. It is a small trait so the engine can be swapped: [`sled`]
//! (the default, on disk) and [`memory`] (no persistence, for `--memory` and tests).
//!
//! A store is owned by exactly one thread, the retained writer in
//! [`crate::broker::retained`], which hands it whole batches (group commit): `apply` returns
//! only once the batch is durable — on the disk, or with `[store] sync = "periodic"` with
//! the operating system (it survives `kill -9`), synced by `sync` when `sync_due` says.
//!
//! Persistent MQTT sessions have their own [`session::SessionStore`] (the same sled database,
//! other trees), owned by the session writer of [`crate::durable`].

pub(crate) mod cursor;
pub mod memory;
pub mod session;
mod session_codec;
pub mod sled;
mod wal;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use crate::model::TopicName;
use crate::model::{QoS, RetainedValue};

/// One change to the retained values.
#[derive(Debug, Clone)]
pub enum RetainedOp {
    /// Set the value of a thing.
    Put(TopicName, Arc<RetainedValue>),
    /// Remove the value of a thing.
    Delete(TopicName),
}

impl RetainedOp {
    /// The thing the op changes.
    pub fn topic(&self) -> &TopicName {
        match self {
            RetainedOp::Put(t, _) | RetainedOp::Delete(t) => t,
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine reported an error (disk full, I/O error, corruption).
    #[error("storage engine error: {0}")]
    Engine(String),
    /// A stored record could not be decoded.
    #[error("stored record for {key:?} is corrupt: {why}")]
    Corrupt {
        /// The record's key, lossily decoded.
        key: String,
        /// What was wrong with it.
        why: &'static str,
    },
    /// The database directory is locked by another process (another ponte using it).
    #[error("another ponte is using {dir} (its database is locked); stop that one, or give this one another --db")]
    Locked {
        /// The directory.
        dir: String,
    },
    /// The writer thread is gone (the gateway is shutting down).
    #[error("the store is shut down")]
    Closed,
}

/// A durable home for retained values.
pub trait Store: Send + 'static {
    /// Every stored value, to rebuild the in-memory index at start.
    fn load_retained(&self) -> Result<Vec<(TopicName, RetainedValue)>, StoreError>;
    /// Apply a batch of changes; when this returns `Ok`, the batch survives a crash.
    fn apply(&mut self, ops: &[RetainedOp]) -> Result<(), StoreError>;
    /// Flush anything outstanding (called at shutdown).
    fn flush(&mut self) -> Result<(), StoreError>;

    /// When [`Store::sync`] must be called: a store that acknowledges batches before they
    /// reach the disk (`[store] sync = "periodic"`) says when the oldest of them is due
    /// there. `None` (the default): every applied batch is on the disk already.
    fn sync_due(&self) -> Option<std::time::Instant> {
        None
    }

    /// Bring every batch applied so far to the disk (called by the writer when
    /// [`Store::sync_due`] has passed, whether or not writes keep coming).
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the store keeps nothing (`--memory`): then there is no sync for writers to
    /// share, and the retained values apply writes inline instead of through the writer
    /// thread ([`crate::broker::retained::Retained`]).
    fn keeps_nothing(&self) -> bool {
        false
    }
}

/// Encode a retained value as a record: version (u64 BE), update time in ms since the epoch
/// (u64 BE), QoS (u8), content-type length (u16 BE), content type, payload.
pub(crate) fn encode_value(v: &RetainedValue) -> Vec<u8> {
    let ct = v.content_type.as_deref().unwrap_or("");
    let ms = v
        .updated
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut out = Vec::with_capacity(19 + ct.len() + v.payload.len());
    out.extend_from_slice(&v.version.to_be_bytes());
    out.extend_from_slice(&ms.to_be_bytes());
    out.push(v.qos as u8);
    out.extend_from_slice(&(ct.len() as u16).to_be_bytes());
    out.extend_from_slice(ct.as_bytes());
    out.extend_from_slice(&v.payload);
    out
}

/// Decode a record written by [`encode_value`].
pub(crate) fn decode_value(key: &[u8], rec: &[u8]) -> Result<RetainedValue, StoreError> {
    let corrupt = |why| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        why,
    };
    if rec.len() < 19 {
        return Err(corrupt("shorter than the 19-byte header"));
    }
    let version = u64::from_be_bytes(rec[0..8].try_into().map_err(|_| corrupt("version"))?);
    let ms = u64::from_be_bytes(rec[8..16].try_into().map_err(|_| corrupt("time"))?);
    let qos = QoS::from_u8(rec[16]).ok_or_else(|| corrupt("QoS above 2"))?;
    let ct_len = u16::from_be_bytes([rec[17], rec[18]]) as usize;
    let ct_end = 19 + ct_len;
    if rec.len() < ct_end {
        return Err(corrupt("content type runs past the record"));
    }
    let ct =
        std::str::from_utf8(&rec[19..ct_end]).map_err(|_| corrupt("content type not UTF-8"))?;
    Ok(RetainedValue {
        payload: Bytes::copy_from_slice(&rec[ct_end..]),
        content_type: (!ct.is_empty()).then(|| Arc::from(ct)),
        qos,
        version,
        updated: UNIX_EPOCH + Duration::from_millis(ms),
    })
}

/// Whether `t` is a plausible update time (used by tests).
#[cfg(test)]
pub(crate) fn now_ms_roundtrip(t: std::time::SystemTime) -> std::time::SystemTime {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip() {
        let v = RetainedValue {
            payload: Bytes::from_static(b"21.5"),
            content_type: Some(Arc::from("text/plain")),
            qos: QoS::AtLeastOnce,
            version: 42,
            updated: now_ms_roundtrip(std::time::SystemTime::now()),
        };
        let rec = encode_value(&v);
        assert_eq!(decode_value(b"k", &rec).unwrap(), v);
        assert!(decode_value(b"k", &rec[..10]).is_err());
    }
}
