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
}

/// `t` as an RFC 3339 UTC timestamp with milliseconds (`2024-05-01T12:00:00.123Z`): how
/// a value's time is shown to clients (the listing's `modified`, a webhook event's `time`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    // Always three digits of fraction: time's well-known Rfc3339 format trims trailing
    // zeros (`.12Z`, or no fraction at all on a whole second), which the promise above and
    // clients that parse a fixed layout do not expect.
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_is_utc_with_three_digits_of_milliseconds_always() {
        let at = |ms| rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
        assert_eq!(at(1_700_000_000_120), "2023-11-14T22:13:20.120Z");
        assert_eq!(at(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(at(5), "1970-01-01T00:00:00.005Z");
    }
}
