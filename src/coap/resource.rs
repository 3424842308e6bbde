//! What a CoAP request on `/r/T` means for the broker, how values become responses, and
//! resource discovery: `GET /.well-known/core` (RFC 6690) lists `</r/T>;ct=…;obs` for every
//! stored thing, filtered by `href`, `rt`, `ct` queries (a trailing `*` is a prefix match).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use ponte_coap::content_format;
use ponte_coap::{ETag, Method, Request, Response, ResponseType};

use crate::auth::{Auth, Identity};
use crate::broker::retained::{Precondition, TagSet, WriteOutcome};
use crate::broker::{retained_message, Broker};
use crate::limits::RateLimiters;
use crate::model::TopicName;
use crate::model::{Message, Origin, RetainedValue};

/// Content-Format of `application/octet-stream`, the format of a value stored without one.
const OCTET_STREAM: u16 = 42;
/// Content-Format of `application/link-format` (RFC 6690 §7.2).
const LINK_FORMAT: u16 = 40;

/// Bytes escaped in a topic segment inside a link's `<…>`: everything outside RFC 3986
/// `pchar`, plus the link-format delimiters `,` `;` `<` `>` `"` so naive parsers stay safe.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// What the endpoint task needs to answer requests.
#[derive(Debug, Clone)]
pub(super) struct Context {
    /// The broker core.
    pub broker: Arc<Broker>,
    /// Who may read and write what (issue 5's ACL, shared with HTTP and MQTT).
    pub auth: Arc<Auth>,
    /// Max-Age to send with values.
    pub max_age: u32,
    /// Writes per client address (`[limits] publish_rate`), shared by every CoAP transport.
    pub writes: Arc<RateLimiters>,
}

/// Who sent a request, carried beside it into [`route`] so the per-request ACL (issue 5)
/// can decide with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The authenticated user name: the PSK identity of the DTLS session for `coaps`
    /// (RFC 7252 §9.1.3.1); `None` over plain CoAP (UDP or TCP), where nobody is
    /// authenticated.
    pub username: Option<Arc<str>>,
}

/// What a request does to its resource, as an ACL sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// GET, with or without Observe.
    Read,
    /// PUT, POST and DELETE.
    Write,
}

impl Access {
    /// The access `method` needs.
    pub(crate) fn of(method: Method) -> Access {
        match method {
            Method::Get => Access::Read,
            Method::Put | Method::Post | Method::Delete => Access::Write,
        }
    }
}

impl From<Access> for crate::auth::Access {
    fn from(a: Access) -> Self {
        match a {
            Access::Read => crate::auth::Access::Read,
            Access::Write => crate::auth::Access::Write,
        }
    }
}

/// The identity of `caller`, or 4.01 Unauthorized when it has none and anonymous access is
/// off (plain CoAP has no credentials: use `coaps` with a PSK).
fn identify(ctx: &Context, caller: &Caller) -> Result<Identity, Response> {
    match &caller.username {
        Some(u) => Ok(Identity::user(u.clone())),
        None if ctx.auth.anonymous_allowed() => Ok(Identity::anonymous()),
        None => Err(diag(
            ResponseType::Unauthorized,
            "anonymous access is disabled: use coaps with a PSK identity",
        )),
    }
}

/// Whether `caller` may have `access` to `topic`: 4.01 Unauthorized without an identity
/// when anonymous access is off, 4.03 Forbidden when the ACL does not grant it, each with a
/// diagnostic payload (RFC 7252 §5.5.2). An observation it refuses is never registered.
fn authorize(
    ctx: &Context,
    caller: &Caller,
    access: Access,
    topic: &TopicName,
) -> Result<(), Response> {
    let who = identify(ctx, caller)?;
    if ctx.auth.allows(&who, access.into(), topic.as_str()) {
        return Ok(());
    }
    tracing::debug!(user = ?who.username, topic = %topic, ?access, "CoAP request denied by the ACL");
    if matches!(access, Access::Write) && crate::auth::broker_only(topic.as_str()) {
        return Err(diag(
            ResponseType::Forbidden,
            format!("{topic}: {}", crate::auth::BROKER_ONLY),
        ));
    }
    let verb = match access {
        Access::Read => "read",
        Access::Write => "write",
    };
    Err(diag(
        ResponseType::Forbidden,
        format!(
            "{} may not {verb} {topic}",
            who.username
                .as_deref()
                .map(|u| format!("user {u:?}"))
                .unwrap_or_else(|| "an anonymous client".into())
        ),
    ))
}

/// A write running on its own task.
pub(super) type WriteFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// How to answer a request.
pub(super) enum Action {
    /// Answer now; with `observe`, register the observation of that topic.
    Answer {
        /// The response.
        response: Response,
        /// The topic observed, for a successful GET with Observe=0.
        observe: Option<TopicName>,
    },
    /// Answer when this write is durable.
    Write(WriteFuture),
}

fn diag(code: ResponseType, text: impl Into<String>) -> Response {
    Response::with_payload(code, Bytes::from(text.into()))
}

fn answer(response: Response) -> Action {
    Action::Answer {
        response,
        observe: None,
    }
}

/// The final notification when a value is cleared (RFC 7641 §3.2: a 4.04 ends observation).
pub(super) fn gone(topic: &str) -> Response {
    diag(ResponseType::NotFound, format!("{topic} was deleted"))
}

/// The Content-Format of a stored media type (`None` if CoAP's registry lacks it).
fn format_of(content_type: Option<&str>) -> Option<u16> {
    match content_type {
        None => Some(OCTET_STREAM),
        Some(ct) => content_format::from_media_type(ct),
    }
}

/// The CoAP ETag of a stored value (RFC 7252 §5.10.6): its version's big-endian bytes
/// without leading zeros.
fn etag_of(v: &RetainedValue) -> ETag {
    ETag::from_u64(v.version)
}

/// A CoAP ETag as a version number (1 to 8 bytes, big-endian).
fn version_of(etag: &[u8]) -> Option<u64> {
    if etag.is_empty() || etag.len() > 8 {
        return None;
    }
    Some(etag.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
}

impl Context {
    fn content(&self, v: &RetainedValue) -> Response {
        Response {
            code: ResponseType::Content,
            payload: v.payload.clone(),
            content_format: format_of(v.content_type.as_deref()),
            etag: Some(etag_of(v)),
            max_age: Some(self.max_age),
            location_path: Vec::new(),
        }
    }

    /// The notification for a message published on an observed topic (retained or not).
    pub(super) fn notification(&self, m: &Message) -> Response {
        // The ETag belongs to the stored value; a live, non-retained message has none.
        let etag = self
            .broker
            .get(&m.topic)
            .filter(|v| m.retain && v.payload == m.payload)
            .map(|v| etag_of(&v));
        Response {
            code: ResponseType::Content,
            payload: m.payload.clone(),
            content_format: format_of(m.content_type.as_deref()),
            etag,
            max_age: Some(self.max_age),
            location_path: Vec::new(),
        }
    }
}

/// The topic a GET with Observe=0 asks to observe, if the path names one.
pub(super) fn observed_topic(req: &Request) -> Option<TopicName> {
    if req.method != Method::Get || req.observe != Some(0) {
        return None;
    }
    TopicName::parse(req.path.after("r")?).ok()
}

/// `[limits] publish_rate` per client address: 5.03 Service Unavailable with Max-Age = the
/// seconds until the address may write again (RFC 7252 §5.9.3.4) and a diagnostic payload.
fn limit_writes(ctx: &Context, req: &Request) -> Result<(), Response> {
    let ip = req.peer.ip();
    let Err(wait) = ctx.writes.check(ip, std::time::Instant::now()) else {
        return Ok(());
    };
    let secs = crate::limits::whole_seconds(wait);
    tracing::debug!(%ip, max_age = secs, "CoAP write refused: over [limits] publish_rate");
    Err(Response {
        max_age: Some(u32::try_from(secs).unwrap_or(u32::MAX)),
        ..diag(
            ResponseType::ServiceUnavailable,
            format!("{ip} writes faster than allowed per client ([limits] publish_rate); retry in {secs} s"),
        )
    })
}

/// Decide how to answer `req`, sent by `caller`.
pub(super) fn route(ctx: &Context, req: &Request, caller: &Caller) -> Action {
    if req.path == [".well-known", "core"] {
        return answer(match identify(ctx, caller) {
            Ok(who) => discovery(ctx, req, &who),
            Err(refused) => refused,
        });
    }
    // The topic is the path after `r`, its segments joined by `/` as they already are.
    let topic = match req.path.after("r") {
        Some(rest) => {
            match TopicName::parse(rest) {
                Ok(t) => t,
                // Said in words, as HTTP does: what was asked, and what to ask instead.
                // (`/r/` alone: one empty segment after `r`; `/r//` is the topic `/`.)
                Err(_) if rest.is_empty() => {
                    return answer(diag(
                        ResponseType::BadRequest,
                        "the path /r/ names no thing: put the topic after /r/, as in /r/kitchen/temperature".to_string(),
                    ))
                }
                Err(e) => {
                    return answer(diag(
                        ResponseType::BadRequest,
                        format!("the path /{} does not name a thing: {e}", req.path.as_str()),
                    ))
                }
            }
        }
        _ => {
            return answer(diag(
                ResponseType::NotFound,
                format!(
                    "no resource at /{}; things live under /r/",
                    req.path.as_str()
                ),
            ))
        }
    };
    if let Err(refused) = authorize(ctx, caller, Access::of(req.method), &topic) {
        return answer(refused);
    }
    if Access::of(req.method) == Access::Write {
        if let Err(refused) = limit_writes(ctx, req) {
            return answer(refused);
        }
    }
    match req.method {
        Method::Get => get(ctx, req, topic),
        Method::Put | Method::Post => write(ctx, req, topic, caller),
        Method::Delete => delete(ctx, req, topic, caller),
    }
}

/// `/.well-known/core` (RFC 6690 §4): one link per stored thing, Content-Format 40. The
/// endpoint fragments it with Block2 when it is larger than a block.
/// Only things `who` may read are listed.
fn discovery(ctx: &Context, req: &Request, who: &Identity) -> Response {
    if req.method != Method::Get {
        return diag(
            ResponseType::MethodNotAllowed,
            "/.well-known/core is read-only: use GET",
        );
    }
    if let Some(accept) = req.accept.filter(|a| *a != LINK_FORMAT) {
        return diag(
            ResponseType::NotAcceptable,
            format!("/.well-known/core is application/link-format (40), not {accept}"),
        );
    }
    let mut things = ctx.broker.retained_topics();
    if ctx.auth.filters_reads(who) {
        things.retain(|(t, _)| ctx.auth.allows(who, crate::auth::Access::Read, t.as_str()));
    }
    things.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let links: Vec<String> = things
        .iter()
        .map(|(topic, v)| Link {
            href: href_of(topic),
            ct: format_of(v.content_type.as_deref()),
        })
        .filter(|link| req.query.iter().all(|q| link.matches(q)))
        .map(|link| link.to_string())
        .collect();
    Response {
        content_format: Some(LINK_FORMAT),
        max_age: Some(ctx.max_age),
        ..Response::with_payload(ResponseType::Content, Bytes::from(links.join(",")))
    }
}

/// The CoAP path of a thing, each topic level percent-encoded: `/r/a/b`.
fn href_of(topic: &TopicName) -> String {
    let mut href = String::from("/r");
    for level in topic.levels() {
        href.push('/');
        href.extend(percent_encoding::utf8_percent_encode(level, SEGMENT));
    }
    href
}

/// One entry of the link-format listing.
struct Link {
    /// Target path (`/r/T`).
    href: String,
    /// Content-Format of the stored value, when CoAP's registry has it.
    ct: Option<u16>,
}

impl Link {
    /// Whether the link passes an RFC 6690 §4.1 query filter `name=value` (trailing `*`:
    /// prefix match). The links carry `href`, `ct` and `obs`; a filter on any other
    /// attribute (`rt`, `if`, …) matches nothing, since no link has it. Queries without
    /// `=` are not filters and are ignored (RFC 7252 allows unknown Uri-Query).
    fn matches(&self, query: &str) -> bool {
        let Some((name, pattern)) = query.split_once('=') else {
            return true;
        };
        let value = match name {
            "href" => Some(self.href.clone()),
            "ct" => self.ct.map(|ct| ct.to_string()),
            _ => None,
        };
        match (value, pattern.strip_suffix('*')) {
            (Some(v), Some(prefix)) => v.starts_with(prefix),
            (Some(v), None) => v == pattern,
            (None, _) => false,
        }
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}>", self.href)?;
        if let Some(ct) = self.ct {
            write!(f, ";ct={ct}")?;
        }
        write!(f, ";obs")
    }
}

fn get(ctx: &Context, req: &Request, topic: TopicName) -> Action {
    let Some(v) = ctx.broker.get(&topic) else {
        // RFC 7641 §4.1: observing a missing thing gets 4.04 and no observation.
        return answer(diag(
            ResponseType::NotFound,
            format!("no value is stored for {topic}"),
        ));
    };
    if let Some(accept) = req.accept {
        if format_of(v.content_type.as_deref()) != Some(accept) {
            return answer(diag(
                ResponseType::NotAcceptable,
                format!(
                    "the value is {}, not Content-Format {accept}",
                    v.content_type
                        .as_deref()
                        .unwrap_or("application/octet-stream")
                ),
            ));
        }
    }
    let observe = (req.observe == Some(0)).then(|| topic.clone());
    let etag = etag_of(&v);
    // RFC 7252 §5.10.6.2: a GET naming the current ETag is answered 2.03 Valid.
    let response = if observe.is_none() && req.etags.contains(&etag) {
        Response {
            etag: Some(etag),
            max_age: Some(ctx.max_age),
            ..Response::new(ResponseType::Valid)
        }
    } else {
        ctx.content(&v)
    };
    Action::Answer { response, observe }
}

fn precondition(req: &Request, default_if_match: Option<TagSet>) -> Precondition {
    let if_match = if req.if_match.is_empty() {
        default_if_match
    } else if req.if_match.iter().any(|e| e.is_empty()) {
        // An empty If-Match value means "the resource exists" (RFC 7252 §5.10.8.1).
        Some(TagSet::Any)
    } else {
        Some(TagSet::Versions(
            req.if_match.iter().filter_map(|e| version_of(e)).collect(),
        ))
    };
    Precondition {
        if_match,
        if_none_match: req.if_none_match.then_some(TagSet::Any),
    }
}

fn write(ctx: &Context, req: &Request, topic: TopicName, caller: &Caller) -> Action {
    let content_type: Option<Arc<str>> = match req.content_format {
        None | Some(OCTET_STREAM) => None,
        Some(cf) => match content_format::to_media_type(cf) {
            Some(mt) => Some(Arc::from(mt)),
            None => {
                return answer(diag(
                    ResponseType::UnsupportedContentFormat,
                    format!("Content-Format {cf} is not in the registry ponte knows"),
                ))
            }
        },
    };
    let broker = ctx.broker.clone();
    let pre = precondition(req, None);
    let payload = req.payload.clone();
    let origin = Origin::Coap(caller.username.clone());
    Action::Write(Box::pin(async move {
        let msg = retained_message(topic.clone(), payload, content_type, origin);
        match broker.publish(msg, pre).await {
            Ok(out) => match out.retained {
                Some(WriteOutcome::Created(v)) => Response {
                    etag: Some(etag_of(&v)),
                    // One Location-Path option per level of the thing created (built
                    // here, not copied from every request: most writes replace).
                    location_path: std::iter::once("r")
                        .chain(topic.levels())
                        .map(str::to_owned)
                        .collect(),
                    ..Response::new(ResponseType::Created)
                },
                Some(WriteOutcome::Replaced(v)) => Response {
                    etag: Some(etag_of(&v)),
                    ..Response::new(ResponseType::Changed)
                },
                Some(WriteOutcome::Cleared { .. }) | None => Response::new(ResponseType::Changed),
                Some(WriteOutcome::PreconditionFailed(_)) => diag(
                    ResponseType::PreconditionFailed,
                    format!("precondition failed for {topic}"),
                ),
            },
            Err(e) => diag(ResponseType::ServiceUnavailable, format!("not stored: {e}")),
        }
    }))
}

fn delete(ctx: &Context, req: &Request, topic: TopicName, caller: &Caller) -> Action {
    let broker = ctx.broker.clone();
    let pre = precondition(req, Some(TagSet::Any));
    let origin = Origin::Coap(caller.username.clone());
    Action::Write(Box::pin(async move {
        let msg = retained_message(topic.clone(), Bytes::new(), None, origin);
        match broker.publish(msg, pre).await {
            Ok(out) => match out.retained {
                Some(WriteOutcome::PreconditionFailed(None)) => diag(
                    ResponseType::NotFound,
                    format!("no value is stored for {topic}"),
                ),
                Some(WriteOutcome::PreconditionFailed(Some(_))) => diag(
                    ResponseType::PreconditionFailed,
                    format!("precondition failed for {topic}"),
                ),
                _ => Response::new(ResponseType::Deleted),
            },
            Err(e) => diag(
                ResponseType::ServiceUnavailable,
                format!("not deleted: {e}"),
            ),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7252_5_10_6_etag_to_version() {
        assert_eq!(version_of(&[0x01, 0x00]), Some(256));
        assert_eq!(version_of(&[]), None);
        assert_eq!(version_of(&[0; 9]), None);
    }

    #[test]
    fn rfc6690_4_1_query_filters_with_trailing_star() {
        let link = Link {
            href: "/r/kitchen/temp".into(),
            ct: Some(50),
        };
        assert!(link.matches("href=/r/kitchen*"));
        assert!(link.matches("href=/r/kitchen/temp"));
        assert!(!link.matches("href=/r/kitchen"));
        assert!(link.matches("ct=50"));
        assert!(link.matches("ct=5*"));
        assert!(!link.matches("ct=0"));
        assert!(!link.matches("rt=temperature"), "no link has rt");
        assert!(!link.matches("rt=*"));
        assert!(link.matches("plain-query"), "not a filter");
        assert_eq!(link.to_string(), "</r/kitchen/temp>;ct=50;obs");
    }

    #[test]
    fn rfc6690_2_hrefs_escape_link_format_delimiters() {
        let topic = TopicName::parse("a b/c,d;e/<f>").unwrap();
        assert_eq!(href_of(&topic), "/r/a%20b/c%2Cd%3Be/%3Cf%3E");
        assert_eq!(href_of(&TopicName::parse("/x").unwrap()), "/r//x");
    }

    #[test]
    fn issue_5_reads_are_get_and_writes_are_put_post_delete() {
        assert_eq!(Access::of(Method::Get), Access::Read);
        assert_eq!(Access::of(Method::Put), Access::Write);
        assert_eq!(Access::of(Method::Post), Access::Write);
        assert_eq!(Access::of(Method::Delete), Access::Write);
    }

    #[test]
    fn values_without_type_are_octet_stream() {
        assert_eq!(format_of(None), Some(42));
        assert_eq!(format_of(Some("application/json")), Some(50));
        assert_eq!(format_of(Some("application/x-odd")), None);
    }
}
