//! The stored value of a thing: what a retained publish leaves behind.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::QoS;

/// The stored value of a thing: the last retained message on its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedValue {
    /// The payload bytes.
    pub payload: Bytes,
    /// The media type given by the writer, if any.
    pub content_type: Option<Arc<str>>,
    /// The QoS it was published with: a new MQTT subscriber receives it at
    /// min(this, granted) (MQTT-3.3.5).
    pub qos: QoS,
    /// Monotonic across the whole store: the ETag in HTTP and CoAP, so one value has one tag
    /// in every protocol, and writes can be conditional on it.
    pub version: u64,
    /// When it was written, for `Last-Modified`.
    pub updated: SystemTime,
}

impl RetainedValue {
    /// The HTTP entity tag of this value (a quoted string, RFC 9110 §8.8.3).
    pub fn http_etag(&self) -> String {
        format!("\"{:x}\"", self.version)
    }

    /// The CoAP ETag of this value (1 to 8 bytes, RFC 7252 §5.10.6): the version's
    /// big-endian bytes without leading zeros.
    pub fn coap_etag(&self) -> Vec<u8> {
        let bytes = self.version.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
        bytes[first..].to_vec()
    }
}

/// `t` as an RFC 3339 UTC timestamp with milliseconds (`2024-05-01T12:00:00.123Z`): how
/// a value's time is shown to clients (the listing's `modified`, a webhook event's `time`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
