//! Server-Sent Events: `GET /resources/{topic}` with `Accept: text/event-stream`.
//!
//! The stream subscribes a [`Mailbox`] to the exact topic *first*, then sends the current
//! value (if any), then every message published on the topic — retained or not, from any
//! protocol — until the client leaves or the gateway shuts down. Subscribing before reading
//! the current value means no publish can fall between the two (at worst one is sent twice).
//!
//! Event format (also in `openapi/ponte.yaml`):
//! - a UTF-8 payload without CR: `event: message`, one `data:` line per LF-separated line;
//! - any other payload (not UTF-8, or containing CR, which SSE would turn into a line
//!   break): `event: binary`, one `data:` line holding the standard base64 of the bytes;
//! - the value was cleared (empty retained publish, DELETE): `event: delete`, empty `data:`;
//! - `id:` counts the events of this stream from 1;
//! - a `: keep-alive` comment every 15 s of silence keeps proxies from closing the stream.
//!
//! Access: the stream's topic is exact (never a wildcard), and the caller's read access to it
//! was checked before the stream opened. It is checked again before every event when an ACL or
//! token grants are in force, so a reload that revokes it ends the stream instead of letting
//! it run on under the old rules.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, StatusCode};

use super::AppState;
use crate::auth::{Access, Auth, Identity};
use crate::broker::mailbox::{Mailbox, OverflowPolicy};
use crate::broker::Broker;
use crate::model::QoS;
use crate::model::{TopicFilter, TopicName};
use crate::shutdown::Shutdown;

/// Silence after which a keep-alive comment is sent.
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The keep-alive comment.
const KEEP_ALIVE_FRAME: &[u8] = b": keep-alive\n\n";

/// Start an event stream on `topic` for `reader` (whose read access was already checked).
pub(super) fn stream(state: &AppState, topic: TopicName, reader: Identity) -> Response {
    let filter = TopicFilter::exact(&topic);
    // Slow readers get the latest values: old events are dropped, never the publisher.
    let mailbox = state
        .broker
        .mailbox(state.config.http.sse_queue, OverflowPolicy::DropOldest);
    state
        .broker
        .subscribe(&filter, &mailbox, QoS::AtMostOnce, false);
    let subscription = Subscription {
        broker: state.broker.clone(),
        filter,
        mailbox,
    };
    let mut feed = Feed {
        _counted: state.broker.ops.connection(crate::metrics::Transport::Sse),
        subscription,
        next_id: 1,
        first: None,
        shutdown: state.shutdown.clone(),
        access: ReadAccess {
            auth: state.auth.clone(),
            reader,
            topic: topic.clone(),
        },
    };
    if let Some(value) = state.broker.get(&topic) {
        feed.first = Some(feed.frame(&value.payload, false));
    }
    tracing::debug!(topic = %topic, "SSE stream opened");
    let body = futures_util::stream::unfold(feed, |mut feed| async move {
        let frame = feed.next_frame().await?;
        Some((Ok::<Bytes, Infallible>(frame), feed))
    });
    event_stream(body)
}

/// A `200 text/event-stream` response streaming `frames`, unbuffered by proxies.
pub(super) fn event_stream(
    frames: impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> Response {
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // nginx and friends buffer responses unless told not to.
            (
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

/// The subscription of one stream; removed from the broker when the stream is dropped
/// (client gone, gateway stopping), so no mailbox outlives its reader.
struct Subscription {
    /// Where the subscription lives.
    broker: Arc<Broker>,
    /// The exact-topic filter it was made with, needed again to remove it.
    filter: TopicFilter,
    /// The queue the broker pushes into and the stream pops from.
    mailbox: Arc<Mailbox>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.unsubscribe(&self.filter, self.mailbox.id());
        tracing::debug!(topic = %self.filter, "SSE stream closed");
    }
}

/// The state of one event stream between two events.
struct Feed {
    /// Counted in `ponte_connections{protocol="sse"}` while the stream lives.
    _counted: crate::metrics::Connection,
    /// The subscription, unsubscribed when the feed is dropped.
    subscription: Subscription,
    /// The `id:` of the next event: a per-stream counter so a client can tell events apart.
    next_id: u64,
    /// The current value, sent before anything from the mailbox.
    first: Option<Bytes>,
    /// Ends the stream when the gateway stops, so graceful shutdown is not held up.
    shutdown: Shutdown,
    /// Re-checked before each event, so a reload that revokes read access ends the stream.
    access: ReadAccess,
}

/// Who reads a stream, and the authority that says whether they still may.
struct ReadAccess {
    /// The gateway's authority (its policy changes on reload).
    auth: Arc<Auth>,
    /// Who opened the stream.
    reader: Identity,
    /// The stream's topic.
    topic: TopicName,
}

impl ReadAccess {
    /// May the reader still read the topic? Always yes when no ACL applies to it.
    fn still_allowed(&self) -> bool {
        if !self.auth.filters_reads(&self.reader) {
            return true;
        }
        let ok = self
            .auth
            .allows(&self.reader, Access::Read, self.topic.as_str());
        if !ok {
            tracing::debug!(
                topic = %self.topic,
                user = self.reader.username.as_deref().unwrap_or("<anonymous>"),
                "SSE stream ended: read access was revoked"
            );
        }
        ok
    }
}

impl Feed {
    /// The next frame to send, or `None` when the stream must end.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            if self.shutdown.is_shutdown() {
                return None;
            }
            if let Some(d) = self.subscription.mailbox.pop() {
                if !self.access.still_allowed() {
                    return None;
                }
                let frame = self.frame(&d.message.payload, d.message.clears_retained());
                return Some(frame);
            }
            let mailbox = self.subscription.mailbox.clone();
            tokio::select! {
                _ = mailbox.notified() => {}
                _ = self.shutdown.recv() => return None,
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    return Some(Bytes::from_static(KEEP_ALIVE_FRAME));
                }
            }
        }
    }

    /// Encode one event and advance the id.
    fn frame(&mut self, payload: &[u8], cleared: bool) -> Bytes {
        let id = self.next_id;
        self.next_id += 1;
        self.subscription
            .broker
            .ops
            .sent(crate::metrics::Protocol::Http, 1);
        encode_event(id, payload, cleared)
    }
}

/// One event in the format described in the module documentation.
pub fn encode_event(id: u64, payload: &[u8], cleared: bool) -> Bytes {
    let mut out = String::with_capacity(payload.len() + payload.len() / 3 + 48);
    if cleared {
        out.push_str("event: delete\n");
        out.push_str(&format!("id: {id}\n"));
        out.push_str("data:\n\n");
        return Bytes::from(out);
    }
    match std::str::from_utf8(payload) {
        Ok(text) if !text.contains('\r') => {
            out.push_str("event: message\n");
            out.push_str(&format!("id: {id}\n"));
            for line in text.split('\n') {
                out.push_str("data: ");
                out.push_str(line);
                out.push('\n');
            }
        }
        _ => {
            out.push_str("event: binary\n");
            out.push_str(&format!("id: {id}\n"));
            out.push_str("data: ");
            base64::engine::general_purpose::STANDARD.encode_string(payload, &mut out);
            out.push('\n');
        }
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whatwg_sse_utf8_lines_become_data_lines() {
        assert_eq!(
            encode_event(3, b"a\nb", false),
            "event: message\nid: 3\ndata: a\ndata: b\n\n"
        );
    }

    #[test]
    fn whatwg_sse_binary_and_cr_payloads_are_base64() {
        assert_eq!(
            encode_event(1, &[0xff, 0x00], false),
            "event: binary\nid: 1\ndata: /wA=\n\n"
        );
        assert_eq!(
            encode_event(2, b"a\r\nb", false),
            "event: binary\nid: 2\ndata: YQ0KYg==\n\n"
        );
    }

    #[test]
    fn whatwg_sse_delete_has_an_empty_data_line_so_it_is_dispatched() {
        assert_eq!(
            encode_event(9, b"", true),
            "event: delete\nid: 9\ndata:\n\n"
        );
    }
}
