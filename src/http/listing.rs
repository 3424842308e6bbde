//! `GET /resources`: the things, listed (JSON, paged) or followed (Server-Sent Events).
//!
//! - `GET /resources?filter=F&limit=N&after=T` → `application/json`
//!   `{"items":[{"thing","content_type","size","etag","modified"}, …],"next":"T"}`: the
//!   retained things whose topic matches the MQTT filter `F` (default `#`, which like MQTT
//!   does not match `$`-topics), in byte order of the topic, at most `N` (default 100, at
//!   most 1,000) after the thing `T` (exclusive). `next` is the thing to pass as `after` for
//!   the next page, absent on the last one.
//! - The same with `Accept: text/event-stream`: every thing matching `F`, current values
//!   first (in byte order), then every publish, as long as the client stays. Each event's
//!   `data:` is one JSON object: `{"thing","content_type","text"}` for a UTF-8 payload,
//!   `{"thing","content_type","base64"}` otherwise; `event: delete` with `{"thing"}` when a
//!   value is cleared. `id:` counts the stream's events from 1.
//!
//! The query is percent-decoded as a URI component, not as a form: `+` is the MQTT
//! wildcard (`%2B` works too), `#` must be sent as `%23`. Only things the caller may read
//! are listed or streamed (the ACL is asked per thing).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};

use super::guard::Caller;
use super::headers::DEFAULT_TYPE;
use super::problem::Problem;
use super::AppState;
use crate::auth::{Access, Auth, Identity};
use crate::broker::mailbox::{Mailbox, OverflowPolicy};
use crate::broker::Broker;
use crate::model::{rfc3339, QoS, RetainedValue};
use crate::model::{TopicFilter, TopicName};
use crate::shutdown::Shutdown;

/// The methods `/resources` answers, for `Allow`.
pub const ALLOWED: &str = "GET, HEAD, OPTIONS";

/// Items per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;

/// Most items per page.
pub const MAX_LIMIT: usize = 1000;

/// What the query asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The MQTT filter things must match.
    pub filter: TopicFilter,
    /// Items per page.
    pub limit: usize,
    /// List things after this one (exclusive), in byte order.
    pub after: Option<String>,
}

impl Query {
    /// Parse `filter`, `limit` and `after` from a query string; any other parameter, a
    /// repeated one or a bad value is a 400 naming it.
    pub fn parse(query: Option<&str>) -> Result<Query, Problem> {
        let (mut filter, mut limit, mut after) = (None, None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(raw).decode_utf8().map_err(|_| {
                Problem::bad_request(format!(
                    "the query parameter {key:?} is not UTF-8 once percent-decoded"
                ))
            })?;
            let slot = match key {
                "filter" => &mut filter,
                "limit" => &mut limit,
                "after" => &mut after,
                _ => {
                    return Err(Problem::bad_request(format!(
                        "unknown query parameter {key:?}: /resources takes filter, limit and after"
                    )))
                }
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(Problem::bad_request(format!(
                    "the query parameter {key:?} is given twice"
                )));
            }
        }
        let text = filter.unwrap_or_else(|| "#".to_string());
        let filter = TopicFilter::parse(&text).map_err(|e| {
            Problem::bad_request(format!(
                "filter {text:?} is not an MQTT topic filter: {e} (send # as %23)"
            ))
        })?;
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(Problem::bad_request(format!(
                        "limit {l:?} is not a whole number from 1 to {MAX_LIMIT}"
                    )))
                }
            },
        };
        Ok(Query {
            filter,
            limit,
            after,
        })
    }
}

/// `GET`/`HEAD /resources`: the JSON listing, or the event stream when asked for.
pub fn handle(
    state: &AppState,
    parts: &Parts,
    caller: Caller,
    stream: bool,
) -> Result<Response, Problem> {
    let query = Query::parse(parts.uri.query())?;
    if stream && parts.method == Method::GET {
        return Ok(watch(state, query.filter, caller.identity));
    }
    let page = list(&state.broker, &state.auth, &caller.identity, &query);
    let body = serde_json::to_vec(&page).unwrap_or_default();
    let mut response = (
        StatusCode::OK,
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
    )
        .into_response();
    if parts.method != Method::HEAD {
        *response.body_mut() = Body::from(body);
    } else if let Ok(len) = HeaderValue::from_str(&body.len().to_string()) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, len);
    }
    Ok(response)
}

/// One page of the listing, as JSON.
pub fn list(broker: &Broker, auth: &Auth, reader: &Identity, query: &Query) -> Value {
    let filtered = auth.filters_reads(reader);
    let mut found: Vec<(TopicName, Arc<RetainedValue>)> = broker
        .retained_matching(&query.filter)
        .into_iter()
        .filter(|(t, _)| {
            query
                .after
                .as_deref()
                .is_none_or(|a| t.as_str().as_bytes() > a.as_bytes())
        })
        .filter(|(t, _)| !filtered || auth.allows(reader, Access::Read, t.as_str()))
        .collect();
    let more = found.len() > query.limit;
    if more {
        // Only the first `limit` in byte order matter: select them, then sort those.
        found.select_nth_unstable_by(query.limit, |a, b| {
            a.0.as_str().as_bytes().cmp(b.0.as_str().as_bytes())
        });
        found.truncate(query.limit);
    }
    found.sort_unstable_by(|a, b| a.0.as_str().as_bytes().cmp(b.0.as_str().as_bytes()));
    let items: Vec<Value> = found.iter().map(|(t, v)| item(t, v)).collect();
    let mut page = Map::new();
    if more {
        if let Some((last, _)) = found.last() {
            page.insert("next".into(), Value::String(last.as_str().to_owned()));
        }
    }
    page.insert("items".into(), Value::Array(items));
    Value::Object(page)
}

/// One listed thing.
fn item(topic: &TopicName, value: &RetainedValue) -> Value {
    json!({
        "thing": topic.as_str(),
        "content_type": value.content_type.as_deref().unwrap_or(DEFAULT_TYPE),
        "size": value.payload.len(),
        "etag": value.http_etag(),
        "modified": rfc3339(value.updated),
    })
}

/// Silence after which a keep-alive comment is sent.
const KEEP_ALIVE: Duration = super::sse::KEEP_ALIVE;

/// Follow every thing matching `filter` for `reader` as Server-Sent Events.
fn watch(state: &AppState, filter: TopicFilter, reader: Identity) -> Response {
    // Subscribe first, then read the current values: no publish falls between the two (at
    // worst one is sent twice).
    let mailbox = Mailbox::new(state.config.http.sse_queue, OverflowPolicy::DropOldest);
    state
        .broker
        .subscribe(&filter, &mailbox, QoS::AtMostOnce, false);
    let mut current = state.broker.retained_matching(&filter);
    current.sort_unstable_by(|a, b| b.0.as_str().as_bytes().cmp(a.0.as_str().as_bytes()));
    tracing::debug!(filter = %filter, values = current.len(), "SSE filter stream opened");
    let feed = Feed {
        _counted: state.broker.ops.connection(crate::metrics::Transport::Sse),
        broker: state.broker.clone(),
        filter,
        mailbox,
        current,
        next_id: 1,
        shutdown: state.shutdown.clone(),
        auth: state.auth.clone(),
        reader,
    };
    let body = futures_util::stream::unfold(feed, |mut feed| async move {
        let frame = feed.next_frame().await?;
        Some((Ok::<Bytes, Infallible>(frame), feed))
    });
    super::sse::event_stream(body)
}

/// One filter stream between two events; unsubscribes when dropped.
struct Feed {
    /// Counted in `ponte_connections{protocol="sse"}` while the stream lives.
    _counted: crate::metrics::Connection,
    /// Where the subscription lives.
    broker: Arc<Broker>,
    /// The filter subscribed, needed again to unsubscribe.
    filter: TopicFilter,
    /// The queue the broker pushes into.
    mailbox: Arc<Mailbox>,
    /// Current values still to send, last in byte order first (sent by `pop`).
    current: Vec<(TopicName, Arc<RetainedValue>)>,
    /// The `id:` of the next event.
    next_id: u64,
    /// Ends the stream when the gateway stops.
    shutdown: Shutdown,
    /// Asked about each thing before it is sent.
    auth: Arc<Auth>,
    /// Who opened the stream.
    reader: Identity,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.broker.unsubscribe(&self.filter, self.mailbox.id());
        tracing::debug!(filter = %self.filter, "SSE filter stream closed");
    }
}

impl Feed {
    /// May the reader see `topic`? (Checked per event: the ACL may change on reload.)
    fn readable(&self, topic: &TopicName) -> bool {
        !self.auth.filters_reads(&self.reader)
            || self.auth.allows(&self.reader, Access::Read, topic.as_str())
    }

    /// The next frame, or `None` when the stream must end.
    async fn next_frame(&mut self) -> Option<Bytes> {
        while let Some((topic, value)) = self.current.pop() {
            if self.readable(&topic) {
                let ct = value.content_type.clone();
                return Some(self.event(&topic, &value.payload, ct.as_deref(), false));
            }
        }
        loop {
            if self.shutdown.is_shutdown() {
                return None;
            }
            if let Some(d) = self.mailbox.pop() {
                let m = &d.message;
                if !self.readable(&m.topic) {
                    continue;
                }
                let frame = self.event(
                    &m.topic,
                    &m.payload,
                    m.content_type.as_deref(),
                    m.clears_retained(),
                );
                return Some(frame);
            }
            let mailbox = self.mailbox.clone();
            tokio::select! {
                _ = mailbox.notified() => {}
                _ = self.shutdown.recv() => return None,
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
            }
        }
    }

    /// One event, counted as a delivery.
    fn event(
        &mut self,
        topic: &TopicName,
        payload: &[u8],
        content_type: Option<&str>,
        cleared: bool,
    ) -> Bytes {
        let id = self.next_id;
        self.next_id += 1;
        self.broker.ops.sent(crate::metrics::Protocol::Http, 1);
        encode(id, topic, payload, content_type, cleared)
    }
}

/// One filter-stream event (see the module documentation).
pub fn encode(
    id: u64,
    topic: &TopicName,
    payload: &[u8],
    content_type: Option<&str>,
    cleared: bool,
) -> Bytes {
    let (event, data) = if cleared {
        ("delete", json!({ "thing": topic.as_str() }))
    } else {
        let ct = content_type.unwrap_or(DEFAULT_TYPE);
        match std::str::from_utf8(payload) {
            Ok(text) => (
                "message",
                json!({ "thing": topic.as_str(), "content_type": ct, "text": text }),
            ),
            Err(_) => (
                "message",
                json!({
                    "thing": topic.as_str(),
                    "content_type": ct,
                    "base64": base64::engine::general_purpose::STANDARD.encode(payload),
                }),
            ),
        }
    };
    // serde_json escapes every control character, so the JSON is one line.
    Bytes::from(format!("event: {event}\nid: {id}\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_defaults_and_limits() {
        let q = Query::parse(None).unwrap();
        assert_eq!(q.filter.as_str(), "#");
        assert_eq!(q.limit, DEFAULT_LIMIT);
        let q = Query::parse(Some("filter=%2B/temp&limit=1000&after=a%2Fb")).unwrap();
        assert_eq!(q.filter.as_str(), "+/temp");
        assert_eq!(q.after.as_deref(), Some("a/b"));
        let q = Query::parse(Some("filter=+/temp")).unwrap();
        assert_eq!(
            q.filter.as_str(),
            "+/temp",
            "+ is the wildcard, not a space"
        );
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "filter=a/%23/b",
            "x=1",
            "limit=1&limit=2",
        ] {
            assert_eq!(
                Query::parse(Some(bad)).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn events_carry_the_thing_as_json() {
        let t = TopicName::parse("a/b").unwrap();
        assert_eq!(
            encode(1, &t, b"x\ny", Some("text/plain"), false),
            "event: message\nid: 1\ndata: {\"thing\":\"a/b\",\"content_type\":\"text/plain\",\"text\":\"x\\ny\"}\n\n"
        );
        assert!(std::str::from_utf8(&encode(2, &t, &[0xff], None, false))
            .unwrap()
            .contains("\"base64\":\"/w==\""));
        assert_eq!(
            encode(3, &t, b"", None, true),
            "event: delete\nid: 3\ndata: {\"thing\":\"a/b\"}\n\n"
        );
    }
}
