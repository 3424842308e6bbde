//! One webhook event: what a write was, and its JSON body.
//!
//! ```json
//! {"id": "msg_…", "event": "put", "thing": "kitchen/temperature",
//!  "content_type": "text/plain", "payload": "21.5", "origin": "http", "client": "alice",
//!  "time": "2025-01-01T12:00:00.123Z", "qos": 1, "retain": true}
//! ```
//! `payload` is the payload as text when it is UTF-8, otherwise `payload_base64` holds it
//! (standard base64). `origin` is `http`, `coap`, `mqtt`, `bridge` (or `internal` for
//! ponte's own, e.g. a will is `mqtt`); `client` is the HTTP or CoAP user, the MQTT client
//! id or the bridge's name, `null` when unknown. `time` is when ponte accepted the write
//! (RFC 3339, UTC). `id` is also the `webhook-id` header, the same on every retry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;

use crate::model::{rfc3339, Message};

use super::config::EventKind;

/// One write to tell a webhook about.
#[derive(Debug)]
pub struct Event {
    /// Unique per event, kept across retries (`webhook-id`).
    pub id: String,
    /// Which kind of write.
    pub kind: EventKind,
    /// The message (payload shared, not copied).
    pub message: Arc<Message>,
    /// When ponte took it.
    pub time: SystemTime,
}

impl Event {
    /// The event for `message`, if it is of a kind in `kinds`.
    pub fn of(message: Arc<Message>, kinds: &[EventKind]) -> Option<Event> {
        let kind = if !message.retain {
            EventKind::Publish
        } else if message.payload.is_empty() {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        kinds.contains(&kind).then(|| Event {
            id: next_id(),
            kind,
            message,
            time: SystemTime::now(),
        })
    }

    /// The JSON body (built once per event; every attempt sends the same bytes).
    pub fn body(&self) -> Bytes {
        let m = &self.message;
        let (payload, payload_base64) = match std::str::from_utf8(&m.payload) {
            Ok(text) => (Some(text), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&m.payload)),
            ),
        };
        let body = Body {
            id: &self.id,
            event: self.kind.as_str(),
            thing: m.topic.as_str(),
            content_type: m.content_type.as_deref(),
            payload,
            payload_base64,
            origin: m.origin.kind(),
            client: m.origin.client(),
            time: rfc3339(self.time),
            qos: m.qos as u8,
            retain: m.retain,
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// The JSON layout.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    event: &'a str,
    thing: &'a str,
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
    origin: &'a str,
    client: Option<&'a str>,
    time: String,
    qos: u8,
    retain: bool,
}

/// `msg_` + 32 hex digits: a random per-process prefix and a counter, so ids are unique
/// across restarts without coordination.
fn next_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| fastrand::u64(..));
    format!(
        "msg_{prefix:016x}{:016x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TopicName;
    use crate::model::{Origin, QoS};

    fn msg(payload: &'static [u8], retain: bool, origin: Origin) -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::parse("kitchen/t").unwrap(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain,
            content_type: Some(Arc::from("text/plain")),
            origin,
            properties: None,
            expires_at: None,
            publisher: None,
            charge: crate::model::Charge::default(),
        })
    }

    #[test]
    fn kinds_and_body() {
        let all = [EventKind::Put, EventKind::Delete, EventKind::Publish];
        let put = Event::of(msg(b"21.5", true, Origin::Http(Some("alice".into()))), &all).unwrap();
        assert_eq!(put.kind, EventKind::Put);
        let v: serde_json::Value = serde_json::from_slice(&put.body()).unwrap();
        assert_eq!(v["event"], "put");
        assert_eq!(v["thing"], "kitchen/t");
        assert_eq!(v["payload"], "21.5");
        assert!(v.get("payload_base64").is_none());
        assert_eq!(v["origin"], "http");
        assert_eq!(v["client"], "alice");
        assert_eq!(v["qos"], 1);
        assert_eq!(v["retain"], true);
        assert_eq!(v["id"], put.id.as_str());
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{}", v["time"]);
        let bin = Event::of(msg(b"\xff\x00", false, Origin::Mqtt(None)), &all).unwrap();
        assert_eq!(bin.kind, EventKind::Publish);
        let v: serde_json::Value = serde_json::from_slice(&bin.body()).unwrap();
        assert_eq!(v["payload_base64"], "/wA=");
        assert!(v["client"].is_null());
        let del = Event::of(msg(b"", true, Origin::Coap(None)), &all).unwrap();
        assert_eq!(del.kind, EventKind::Delete);
        assert!(Event::of(msg(b"x", false, Origin::Internal), &[EventKind::Put]).is_none());
        assert_ne!(put.id, bin.id);
    }
}
