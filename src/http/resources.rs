//! `/resources/{topic}`: read, write and clear the retained value of one thing.
//!
//! The topic comes from the raw request path (never axum's decoded wildcard), so empty
//! segments survive (`/resources//x` is topic `/x`) and each segment is percent-decoded on
//! its own by [`TopicName::from_encoded_segments`]. Every write goes through
//! [`Broker::publish`](crate::broker::Broker::publish) — the one path MQTT and CoAP use — so
//! HTTP writes reach subscribers of every protocol.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{
    ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE,
    LAST_MODIFIED, LOCATION, RETRY_AFTER,
};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::conditional::Conditions;
use super::guard::{self, Caller};
use super::headers;
use super::problem::Problem;
use super::{listing, sse, AppState};
use crate::auth::Access;
use crate::broker::retained::{Precondition, TagSet, WriteOutcome};
use crate::broker::retained_message;
use crate::model::TopicName;
use crate::model::{Origin, RetainedValue};
use crate::store::StoreError;

/// The methods `/resources/{topic}` answers, for `Allow`.
pub(super) const ALLOWED: &str = "GET, HEAD, PUT, POST, DELETE, OPTIONS";

/// Every method on `/resources`, `/resources/` and `/resources/{topic}`.
///
/// Reads and writes are authenticated first, then the path is parsed into a topic, then the
/// ACL is asked about that parsed topic ([`guard`]) — all before the value is looked up, so a
/// refusal does not reveal whether a value exists. OPTIONS and 405 reveal nothing and need no
/// credentials (CORS preflights never carry any).
/// `peer` is the client's address (`None` when unknown, as in unit tests).
pub(super) async fn handle(
    State(state): State<AppState>,
    peer: Option<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    if parts.uri.path() == "/resources" {
        return collection(&state, &parts, peer).await;
    }
    let access = match parts.method {
        Method::GET | Method::HEAD => Access::Read,
        Method::PUT | Method::POST | Method::DELETE => Access::Write,
        Method::OPTIONS => return options(ALLOWED),
        _ => return method_not_allowed(&parts.method, parts.uri.path(), ALLOWED).into_response(),
    };
    let result = async {
        let caller = authenticate(&state, &parts, peer).await?;
        let topic = topic_of(parts.uri.path())?;
        guard::authorize(&state.auth, &caller, access, &topic)?;
        if access == Access::Write {
            limit_writes(&state, peer)?;
        }
        match parts.method {
            Method::GET | Method::HEAD => get(&state, &parts, topic, caller).await,
            Method::PUT | Method::POST => put(&state, &parts, topic, body, &caller).await,
            _ => delete(&state, &parts, topic, &caller).await,
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `/resources` itself: the listing of the things ([`listing`]).
async fn collection(state: &AppState, parts: &Parts, peer: Option<SocketAddr>) -> Response {
    match parts.method {
        Method::GET | Method::HEAD => {}
        Method::OPTIONS => return options(listing::ALLOWED),
        _ => {
            return method_not_allowed(&parts.method, parts.uri.path(), listing::ALLOWED)
                .into_response()
        }
    }
    let result = async {
        let caller = authenticate(state, parts, peer).await?;
        listing::handle(state, parts, caller, wants_event_stream(&parts.headers))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// [`guard::authenticate`], with a refusal counted (`ponte_auth_failures_total`) and
/// logged at info with the address and the claimed username (never the password), as
/// mosquitto logs refused logins.
async fn authenticate(
    state: &AppState,
    parts: &Parts,
    peer: Option<SocketAddr>,
) -> Result<Caller, Problem> {
    match guard::authenticate(&state.auth, &parts.headers).await {
        Ok(caller) => Ok(caller),
        Err(problem) => {
            state
                .broker
                .ops
                .auth_failure(crate::metrics::Protocol::Http);
            let peer = peer.map(|p| p.to_string()).unwrap_or_default();
            tracing::info!(
                protocol = %"http",
                peer = %peer,
                username = %guard::claimed_user(&parts.headers).unwrap_or_default(),
                reason = %problem.detail(),
                "login refused"
            );
            Err(problem)
        }
    }
}

/// `[limits] publish_rate` per client address: 429 Too Many Requests with `Retry-After`
/// (whole seconds, rounded up) once the address's bucket is empty (RFC 6585 §4).
fn limit_writes(state: &AppState, peer: Option<SocketAddr>) -> Result<(), Problem> {
    let ip = peer
        .map(|p| p.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let Err(wait) = state.writes.check(ip, std::time::Instant::now()) else {
        return Ok(());
    };
    let secs = crate::limits::whole_seconds(wait);
    tracing::debug!(%ip, retry_after = secs, "HTTP write refused: over [limits] publish_rate");
    let limits = &state.config.limits;
    Err(Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "{ip} writes faster than the {} writes per second (burst {}) allowed per client; retry in {secs} s",
            limits.publish_rate,
            limits.publish_burst.max(limits.publish_rate)
        ),
    )
    .with_header(RETRY_AFTER, &secs.to_string()))
}

/// 204 with `Allow`: the answer to a plain (non-CORS) OPTIONS.
pub(super) fn options(allowed: &'static str) -> Response {
    (
        StatusCode::NO_CONTENT,
        [(ALLOW, HeaderValue::from_static(allowed))],
    )
        .into_response()
}

/// 405 with `Allow` and a problem naming the method.
pub(super) fn method_not_allowed(method: &Method, path: &str, allowed: &'static str) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not supported on {path:?}; the methods allowed there are {allowed}"),
    )
    .with_header(ALLOW, allowed)
}

/// The thing a request path names: everything after `/resources/`, split at `/`, each
/// segment percent-decoded. The query string is not part of the path, hence not of the topic.
pub(super) fn topic_of(path: &str) -> Result<TopicName, Problem> {
    let rest = path
        .strip_prefix("/resources")
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or("");
    if rest.is_empty() {
        return Err(Problem::bad_request(format!(
            "the path {path:?} names no thing: put the topic after /resources/, as in /resources/kitchen/temperature"
        )));
    }
    if !rest.contains('%') {
        // Nothing is encoded: each segment decodes to itself, so the topic is the path as
        // it is (the common case, parsed without a string per segment).
        return TopicName::parse(rest).map_err(|e| {
            Problem::bad_request(format!("the path {path:?} does not name a thing: {e}"))
        });
    }
    TopicName::from_encoded_segments(rest.split('/'))
        .map_err(|e| Problem::bad_request(format!("the path {path:?} does not name a thing: {e}")))
}

/// GET and HEAD: the stored value, a Server-Sent Events stream, or 304/404/412.
async fn get(
    state: &AppState,
    request: &Parts,
    topic: TopicName,
    caller: Caller,
) -> Result<Response, Problem> {
    let headers = &request.headers;
    let conditions = Conditions::from_headers(headers)?;
    if request.method == Method::GET && wants_event_stream(headers) {
        return Ok(sse::stream(state, topic, caller.identity));
    }
    let Some(value) = state.broker.get(&topic) else {
        if conditions.if_match.is_some() {
            return Err(Problem::precondition_failed(format!(
                "If-Match was given but no value is stored for {topic:?} (RFC 9110 §13.1.1)"
            )));
        }
        return Err(Problem::not_found(format!(
            "no value is stored for {topic:?}"
        )));
    };
    if let Some(m) = &conditions.if_match {
        if !m.matches_strong(&value) {
            let etag = value.http_etag();
            return Err(Problem::precondition_failed(format!(
                "If-Match {:?} does not match the current ETag {etag} of {topic:?}",
                header_text(headers, &http::header::IF_MATCH)
            ))
            .with_header(ETAG, &etag));
        }
    }
    let stored_type = value
        .content_type
        .as_deref()
        .unwrap_or(headers::DEFAULT_TYPE);
    if !acceptable(headers, stored_type) {
        // As CoAP answers 4.06: the value exists, but not in a form the client takes.
        return Err(Problem::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "{topic:?} is stored as {stored_type:?}, which the Accept header {:?} does not take (send */* or leave Accept out to get it as it is)",
                header_text(headers, &ACCEPT)
            ),
        ));
    }
    let not_modified = match &conditions.if_none_match {
        Some(n) => n.matches_weak(&value),
        None => modified_since(headers, &value) == Some(false),
    };
    let formatted = headers::of(&value);
    if not_modified {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().reserve(RESPONSE_HEADERS);
        value_headers(response.headers_mut(), &formatted);
        return Ok(response);
    }
    // The stored bytes are shared, not copied; the headers come whole from the cache.
    let mut response = Response::new(Body::from(value.payload.clone()));
    *response.headers_mut() = formatted.ok.clone();
    Ok(response)
}

/// Headers of a 201, 204 or 304 answer: ETag, Last-Modified, Cache-Control, and the sandbox
/// layer's Content-Security-Policy and X-Content-Type-Options (`edge.rs`), with room to spare
/// for Location and Content-Length.
const RESPONSE_HEADERS: usize = 8;

/// ETag, Last-Modified and Cache-Control of a value (on 304, 201 and 204), from the
/// per-version cache of formatted headers.
fn value_headers(headers: &mut HeaderMap, formatted: &headers::ValueHeaders) {
    headers.insert(ETAG, formatted.etag.clone());
    headers.insert(LAST_MODIFIED, formatted.last_modified.clone());
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(headers::CACHE_POLICY),
    );
}

/// `If-Modified-Since`: `Some(false)` when the value has not changed since the given date
/// (RFC 9110 §13.1.3; only consulted without `If-None-Match`). An unparsable date is ignored,
/// as the RFC requires.
fn modified_since(headers: &HeaderMap, value: &RetainedValue) -> Option<bool> {
    let text = headers.get(IF_MODIFIED_SINCE)?.to_str().ok()?;
    let since = httpdate::parse_http_date(text).ok()?;
    // Last-Modified has one-second resolution: compare at that resolution.
    let updated = httpdate::parse_http_date(&httpdate::fmt_http_date(value.updated)).ok()?;
    Some(updated > since)
}

/// Whether `Accept` (RFC 9110 §12.5.1) takes `media_type` (parameters ignored): the most
/// specific matching range decides (`type/subtype` over `type/*` over `*/*`), and `q=0`
/// refuses. No `Accept` takes everything; so does one without a single media range in it
/// (`Accept: -+xq`), whose ranges that are not `type/subtype` are ignored.
pub(super) fn acceptable(headers: &HeaderMap, media_type: &str) -> bool {
    let mut values = headers.get_all(ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return true;
    }
    // Media types and ranges are case-insensitive (RFC 9110 §8.3.1): compared as such,
    // without lowercased copies.
    let wanted = media_type.split(';').next().unwrap_or("").trim();
    let (wtype, wsub) = wanted.split_once('/').unwrap_or((wanted, ""));
    let mut best: Option<(u8, bool)> = None; // (specificity, q > 0)
    let mut any = false;
    for value in values {
        let Ok(text) = value.to_str() else {
            return true;
        };
        for range in text.split(',') {
            let mut parts = range.split(';');
            let mt = parts.next().unwrap_or("").trim();
            if !mt.contains('/') {
                // Not a media range (RFC 9110 §12.5.1): ignored, as a server may.
                continue;
            }
            any = true;
            let q_positive = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .next()
                .is_none_or(|q| q.trim().parse::<f32>().map_or(true, |q| q > 0.0));
            let (rtype, rsub) = mt.split_once('/').unwrap_or((mt, ""));
            let specificity = if rtype == "*" && rsub == "*" {
                1
            } else if rtype.eq_ignore_ascii_case(wtype) && rsub == "*" {
                2
            } else if rtype.eq_ignore_ascii_case(wtype) && rsub.eq_ignore_ascii_case(wsub) {
                3
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, q_positive));
            }
        }
    }
    !any || best.is_some_and(|(_, ok)| ok)
}

/// Whether the client asked for `text/event-stream`.
fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|item| {
                item.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
            })
        })
    })
}

/// The text of a header for an error message.
fn header_text(headers: &HeaderMap, name: &http::header::HeaderName) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// PUT and POST: store the body as the value (an empty body clears it).
async fn put(
    state: &AppState,
    parts: &Parts,
    topic: TopicName,
    body: Body,
    caller: &Caller,
) -> Result<Response, Problem> {
    let path = parts.uri.path();
    let conditions = Conditions::from_headers(&parts.headers)?;
    let content_type = match parts.headers.get(CONTENT_TYPE) {
        None => None,
        Some(v) => Some(Arc::<str>::from(v.to_str().map_err(|_| {
            Problem::bad_request(format!(
                "the Content-Type {v:?} is not visible ASCII, so it cannot be stored and reported back"
            ))
        })?)),
    };
    let payload = read_body(body, &parts.headers, state.config.http.max_body).await?;
    let precondition = conditions.precondition();
    let outcome = state
        .broker
        .publish(
            retained_message(
                topic.clone(),
                payload,
                content_type,
                Origin::Http(caller.identity.username.clone()),
            ),
            precondition,
        )
        .await
        .map_err(|e| store_failed(&topic, &e))?;
    match outcome.retained {
        Some(WriteOutcome::Created(v)) => {
            let mut r = StatusCode::CREATED.into_response();
            r.headers_mut().reserve(RESPONSE_HEADERS);
            value_headers(r.headers_mut(), &headers::of(&v));
            if let Ok(location) = HeaderValue::from_str(path) {
                r.headers_mut().insert(LOCATION, location);
            }
            Ok(r)
        }
        Some(WriteOutcome::Replaced(v)) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.headers_mut().reserve(RESPONSE_HEADERS);
            value_headers(r.headers_mut(), &headers::of(&v));
            Ok(r)
        }
        Some(WriteOutcome::Cleared { .. }) | None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(WriteOutcome::PreconditionFailed(current)) => Err(write_precondition_failed(
            &topic,
            &parts.headers,
            current.as_deref(),
        )),
    }
}

/// DELETE: clear the value; 404 when there is none.
async fn delete(
    state: &AppState,
    request: &Parts,
    topic: TopicName,
    caller: &Caller,
) -> Result<Response, Problem> {
    let conditions = Conditions::from_headers(&request.headers)?;
    let mut precondition: Precondition = conditions.precondition();
    precondition.if_match.get_or_insert(TagSet::Any);
    let outcome = state
        .broker
        .publish(
            retained_message(
                topic.clone(),
                Bytes::new(),
                None,
                Origin::Http(caller.identity.username.clone()),
            ),
            precondition,
        )
        .await
        .map_err(|e| store_failed(&topic, &e))?;
    match outcome.retained {
        Some(WriteOutcome::PreconditionFailed(None)) => Err(Problem::not_found(format!(
            "no value is stored for {topic:?}, so there is nothing to delete"
        ))),
        Some(WriteOutcome::PreconditionFailed(Some(current))) => Err(write_precondition_failed(
            &topic,
            &request.headers,
            Some(&current),
        )),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// The 412 of a write, naming the conditions and the current ETag.
fn write_precondition_failed(
    topic: &TopicName,
    headers: &HeaderMap,
    current: Option<&RetainedValue>,
) -> Problem {
    let mut given = Vec::new();
    for (label, name) in [
        ("If-Match", &http::header::IF_MATCH),
        ("If-None-Match", &http::header::IF_NONE_MATCH),
    ] {
        if headers.contains_key(name) {
            given.push(format!("{label}: {}", header_text(headers, name)));
        }
    }
    let given = given.join("; ");
    match current {
        Some(v) => {
            let etag = v.http_etag();
            Problem::precondition_failed(format!(
                "the precondition ({given}) does not hold: the current value of {topic:?} has ETag {etag}"
            ))
            .with_header(ETAG, &etag)
        }
        None => Problem::precondition_failed(format!(
            "the precondition ({given}) does not hold: no value is stored for {topic:?}"
        )),
    }
}

/// A store failure: the write was not made durable, so it was not made at all.
fn store_failed(topic: &TopicName, e: &StoreError) -> Problem {
    tracing::error!(topic = %topic, error = %e, "HTTP write failed in the store");
    // A store (or, in a cluster, NATS) that cannot take writes now is transient: the
    // client may try again shortly.
    Problem::unavailable(format!(
        "the write to {topic:?} was not stored and not delivered: {e}"
    ))
    .with_header(RETRY_AFTER, STORE_RETRY_AFTER_SECS)
}

/// `Retry-After` of a 503 for a write the store could not take, in seconds.
const STORE_RETRY_AFTER_SECS: &str = "1";

/// Read the whole body, refusing more than `max` bytes: up front from `Content-Length`,
/// and while reading for bodies without one (chunked).
async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, Problem> {
    if let Some(len) = headers.get(CONTENT_LENGTH) {
        let len = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                Problem::bad_request(format!("the Content-Length {len:?} is not a number"))
            })?;
        if len > max as u64 {
            // RFC 9110 §15.5.14: the body is left unread, so the connection cannot carry
            // another request; say so, or a client reusing it races the close.
            return Err(Problem::too_large(format!(
                "the request body is {len} bytes (Content-Length), more than the {max} bytes this gateway accepts (http.max_body)"
            ))
            .with_header(http::header::CONNECTION, "close"));
        }
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Problem::too_large(format!(
                "the request body grew past the {max} bytes this gateway accepts (http.max_body) while it was being read"
            ))
            .with_header(http::header::CONNECTION, "close"))
        }
        Err(e) => match crate::limits::deadline::timed_out(e.as_ref()) {
            // RFC 9110 §15.5.9: the connection cannot carry another request (the rest of
            // this body may still come), so it is closed after the answer.
            Some(stalled) => Err(Problem::new(StatusCode::REQUEST_TIMEOUT, stalled.to_string())
                .with_header(http::header::CONNECTION, "close")),
            None => Err(Problem::bad_request(format!(
                "the request body could not be read: {e}"
            ))),
        },
    }
}
