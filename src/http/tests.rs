//! Unit tests of the HTTP front-end, driven through [`app`] with `tower::ServiceExt::oneshot`.
//!
//! Tests are named after the RFC clause they check where there is one.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::header::{
    ACCEPT, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, LOCATION,
};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{app, AppState, PROBLEM_JSON};
use crate::backbone::Local;
use crate::broker::Broker;
use crate::config::Config;
use crate::model::RetainedValue;
use crate::model::TopicName;
use crate::shutdown::ShutdownController;
use crate::store::memory::MemoryStore;
use crate::store::{RetainedOp, Store, StoreError};

/// A router over a fresh in-memory broker.
struct Harness {
    /// The router under test.
    app: Router,
    /// The broker behind it, to check what a request did.
    broker: Arc<Broker>,
    /// Kept alive so SSE streams do not see the gateway stop.
    controller: ShutdownController,
}

fn harness_with(config: Config) -> Harness {
    let broker = Broker::new(MemoryStore, Arc::new(Local)).expect("memory broker");
    harness_over(broker, config)
}

fn harness_over(broker: Arc<Broker>, config: Config) -> Harness {
    let controller = ShutdownController::new();
    let config = Arc::new(config);
    let mqtt = crate::mqtt::Mqtt::new(
        broker.clone(),
        config.clone(),
        Arc::new(crate::auth::Auth::open()),
        crate::limits::Limits::new(config.limits.clone()),
        controller.subscribe(),
    );
    let state = AppState::new(broker.clone(), config, controller.subscribe()).with_mqtt(mqtt);
    Harness {
        app: app(state),
        broker,
        controller,
    }
}

fn harness() -> Harness {
    harness_with(Config::ephemeral())
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Response {
        self.app
            .clone()
            .oneshot(request)
            .await
            .expect("infallible router")
    }

    async fn call(&self, method: Method, uri: &str, body: &'static str) -> Response {
        self.send(req(method, uri).body(Body::from(body)).expect("request"))
            .await
    }

    async fn put(&self, uri: &str, body: &'static str) -> Response {
        self.call(Method::PUT, uri, body).await
    }

    fn value(&self, topic: &str) -> Option<Arc<RetainedValue>> {
        self.broker
            .get(&TopicName::parse(topic).expect("test topic"))
    }
}

fn req(method: Method, uri: &str) -> http::request::Builder {
    Request::builder().method(method).uri(uri)
}

async fn body_of(r: Response) -> Bytes {
    r.into_body().collect().await.expect("body").to_bytes()
}

/// Assert `r` is a problem document with `status`; return its `detail`.
async fn problem(r: Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    assert_eq!(
        r.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(PROBLEM_JSON.as_bytes())
    );
    let v: serde_json::Value = serde_json::from_slice(&body_of(r).await).expect("json");
    assert_eq!(v["type"], "about:blank");
    assert_eq!(v["status"], status.as_u16());
    assert_eq!(v["title"], status.canonical_reason().unwrap_or(""));
    let detail = v["detail"].as_str().unwrap_or_default().to_owned();
    assert!(!detail.is_empty());
    detail
}

fn etag(r: &Response) -> String {
    r.headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn rfc9110_15_5_5_get_missing_is_404_problem() {
    let h = harness();
    let r = h.call(Method::GET, "/resources/kitchen", "").await;
    let detail = problem(r, StatusCode::NOT_FOUND).await;
    assert_eq!(detail, "no value is stored for \"kitchen\"");
}

#[tokio::test]
async fn rfc9110_15_3_2_put_new_is_201_with_location_and_etag() {
    let h = harness();
    let r = h
        .send(
            req(Method::PUT, "/resources/kitchen/temp?ignored=1")
                .header(CONTENT_TYPE, "text/plain")
                .body(Body::from("21.5"))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()[LOCATION], "/resources/kitchen/temp");
    let v = h.value("kitchen/temp").expect("stored");
    assert_eq!(etag(&r), v.http_etag());
    assert_eq!(v.payload, "21.5");
    assert_eq!(v.content_type.as_deref(), Some("text/plain"));

    let r = h.call(Method::GET, "/resources/kitchen/temp", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/plain");
    assert_eq!(etag(&r), v.http_etag());
    assert!(r.headers().contains_key(LAST_MODIFIED));
    assert_eq!(body_of(r).await, "21.5");
}

#[tokio::test]
async fn rfc9110_15_3_5_put_existing_is_204_with_new_etag() {
    let h = harness();
    let first = etag(&h.put("/resources/a", "1").await);
    let r = h.call(Method::POST, "/resources/a", "2").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!r.headers().contains_key(LOCATION));
    assert_ne!(etag(&r), first);
    assert_eq!(h.value("a").expect("stored").payload, "2");
}

#[tokio::test]
async fn get_without_stored_type_is_octet_stream() {
    let h = harness();
    h.put("/resources/raw", "x").await;
    let r = h.call(Method::GET, "/resources/raw", "").await;
    assert_eq!(r.headers()[CONTENT_TYPE], "application/octet-stream");
}

#[tokio::test]
async fn rfc9110_9_3_2_head_is_get_without_body() {
    let h = harness();
    h.put("/resources/a", "hello").await;
    let r = h.call(Method::HEAD, "/resources/a", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_LENGTH], "5");
    assert!(r.headers().contains_key(ETAG));
    assert!(body_of(r).await.is_empty());
    let r = h.call(Method::HEAD, "/resources/none", "").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rfc9110_13_1_2_if_none_match_matching_get_is_304() {
    let h = harness();
    let tag = etag(&h.put("/resources/a", "v").await);
    for given in [
        tag.clone(),
        format!("W/{tag}"),
        "\"0\", ".to_owned() + &tag,
        "*".into(),
    ] {
        let r = h
            .send(
                req(Method::GET, "/resources/a")
                    .header(IF_NONE_MATCH, &given)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{given}");
        assert_eq!(etag(&r), tag);
        assert!(body_of(r).await.is_empty());
    }
    let r = h
        .send(
            req(Method::GET, "/resources/a")
                .header(IF_NONE_MATCH, "\"ffff\"")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn rfc9110_13_1_3_if_modified_since_unchanged_is_304() {
    let h = harness();
    let r = h.put("/resources/a", "v").await;
    let date = r.headers()[LAST_MODIFIED].clone();
    let r = h
        .send(
            req(Method::GET, "/resources/a")
                .header(IF_MODIFIED_SINCE, date)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = h
        .send(
            req(Method::GET, "/resources/a")
                .header(IF_MODIFIED_SINCE, "Thu, 01 Jan 1970 00:00:00 GMT")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn rfc9110_13_1_1_if_match_stale_on_get_is_412() {
    let h = harness();
    h.put("/resources/a", "v").await;
    let r = h
        .send(
            req(Method::GET, "/resources/a")
                .header(IF_MATCH, "\"ffff\"")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    problem(r, StatusCode::PRECONDITION_FAILED).await;
}

#[tokio::test]
async fn rfc9110_13_1_2_if_none_match_star_on_existing_is_412() {
    let h = harness();
    let put_if_absent = |body: &'static str| {
        req(Method::PUT, "/resources/once")
            .header(IF_NONE_MATCH, "*")
            .body(Body::from(body))
            .expect("request")
    };
    assert_eq!(
        h.send(put_if_absent("1")).await.status(),
        StatusCode::CREATED
    );
    let r = h.send(put_if_absent("2")).await;
    let current = h.value("once").expect("stored");
    assert_eq!(etag(&r), current.http_etag());
    let detail = problem(r, StatusCode::PRECONDITION_FAILED).await;
    assert!(detail.contains("If-None-Match"), "{detail}");
    assert_eq!(current.payload, "1");
}

#[tokio::test]
async fn rfc9110_13_1_1_if_match_stale_on_put_is_412_and_current_replaces() {
    let h = harness();
    let tag = etag(&h.put("/resources/a", "1").await);
    let put = |m: &str| {
        req(Method::PUT, "/resources/a")
            .header(IF_MATCH, m)
            .body(Body::from("2"))
            .expect("request")
    };
    let detail = problem(
        h.send(put("\"ffff\"")).await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert!(detail.contains(&tag), "{detail}");
    // A weak tag never matches with the strong comparison.
    let weak = format!("W/{tag}");
    problem(h.send(put(&weak)).await, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(h.send(put(&tag)).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.value("a").expect("stored").payload, "2");
}

#[tokio::test]
async fn rfc9110_13_1_1_if_match_on_missing_put_is_412() {
    let h = harness();
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .header(IF_MATCH, "*")
                .body(Body::from("x"))
                .expect("request"),
        )
        .await;
    problem(r, StatusCode::PRECONDITION_FAILED).await;
    assert!(h.value("a").is_none());
}

#[tokio::test]
async fn rfc9110_8_8_3_malformed_if_match_is_400() {
    let h = harness();
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .header(IF_MATCH, "no-quotes")
                .body(Body::from("x"))
                .expect("request"),
        )
        .await;
    let detail = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("no-quotes"), "{detail}");
}

#[tokio::test]
async fn mqtt_3_3_1_10_empty_put_clears_the_value() {
    let h = harness();
    h.put("/resources/a", "v").await;
    let r = h.put("/resources/a", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(h.value("a").is_none());
    let r = h.call(Method::GET, "/resources/a", "").await;
    problem(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn rfc9110_9_3_5_delete_existing_204_missing_404_stale_412() {
    let h = harness();
    let tag = etag(&h.put("/resources/a", "v").await);
    let r = h
        .send(
            req(Method::DELETE, "/resources/a")
                .header(IF_MATCH, "\"ffff\"")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(etag(&r), tag);
    problem(r, StatusCode::PRECONDITION_FAILED).await;
    let r = h.call(Method::DELETE, "/resources/a", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(h.value("a").is_none());
    let r = h.call(Method::DELETE, "/resources/a", "").await;
    let detail = problem(r, StatusCode::NOT_FOUND).await;
    assert!(detail.contains("\"a\""), "{detail}");
}

#[tokio::test]
async fn rfc9110_9_3_7_options_is_204_with_allow() {
    let h = harness();
    let r = h.call(Method::OPTIONS, "/resources/a", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()[ALLOW], "GET, HEAD, PUT, POST, DELETE, OPTIONS");
}

#[tokio::test]
async fn rfc9110_15_5_6_other_methods_are_405_with_allow() {
    let h = harness();
    for m in ["PATCH", "TRACE", "BREW"] {
        let method = Method::from_bytes(m.as_bytes()).expect("method");
        let r = h.call(method, "/resources/a", "").await;
        assert_eq!(r.headers()[ALLOW], "GET, HEAD, PUT, POST, DELETE, OPTIONS");
        let detail = problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
        assert!(detail.contains(m), "{detail}");
    }
    let r = h.call(Method::DELETE, "/openapi.yaml", "").await;
    assert_eq!(r.headers()[ALLOW], "GET, HEAD, OPTIONS");
    problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn mqtt_3_3_2_2_wildcards_and_bad_segments_are_400() {
    let h = harness();
    for path in [
        "/resources/a/+",
        "/resources/a/%2B",
        "/resources/%23",
        "/resources/a%2Fb",
        "/resources/a%00",
        "/resources/%FF",
        "/resources/",
        "/resources/?x=1",
    ] {
        let r = h.put(path, "v").await;
        let detail = problem(r, StatusCode::BAD_REQUEST).await;
        assert!(detail.contains("/resources"), "{path}: {detail}");
        let r = h.call(Method::GET, path, "").await;
        problem(r, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(h.broker.retained_count(), 0);
    // `/resources` itself is the listing: it is not written to.
    let r = h.put("/resources", "v").await;
    problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn raw_path_keeps_empty_segments_and_decodes_each_segment() {
    let h = harness();
    assert_eq!(
        h.put("/resources//x", "1").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(h.value("/x").expect("stored").payload, "1");
    assert_eq!(
        h.put("/resources/a%20b/c", "2").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(h.value("a b/c").expect("stored").payload, "2");
    assert_eq!(
        h.put("/resources/a/", "3").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(h.value("a/").expect("stored").payload, "3");
    let r = h.call(Method::GET, "/resources//x", "").await;
    assert_eq!(body_of(r).await, "1");
}

#[tokio::test]
async fn rfc9110_15_5_14_content_length_over_max_is_413() {
    let mut config = Config::ephemeral();
    config.http.max_body = 8;
    let h = harness_with(config);
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .header(CONTENT_LENGTH, "9")
                .body(Body::from("123456789"))
                .expect("request"),
        )
        .await;
    // The body is left unread: the connection closes after the answer (RFC 9110 §15.5.14).
    assert_eq!(r.headers()[CONNECTION], "close");
    let detail = problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(detail.contains('9') && detail.contains('8'), "{detail}");
    // Exactly the limit is fine.
    assert_eq!(
        h.put("/resources/a", "12345678").await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn rfc9110_15_5_14_chunked_body_over_max_is_413() {
    let mut config = Config::ephemeral();
    config.http.max_body = 8;
    let h = harness_with(config);
    let chunks = futures_util::stream::iter(
        ["12345", "67890"].map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes()))),
    );
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .body(Body::from_stream(chunks))
                .expect("request"),
        )
        .await;
    problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(h.value("a").is_none());
}

#[tokio::test]
async fn chunked_body_is_stored_whole() {
    let h = harness();
    let chunks = futures_util::stream::iter(
        (0..64u8).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i; 4096]))),
    );
    let r = h
        .send(
            req(Method::PUT, "/resources/big")
                .body(Body::from_stream(chunks))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = h.value("big").expect("stored");
    assert_eq!(v.payload.len(), 64 * 4096);
    assert!(v
        .payload
        .chunks(4096)
        .enumerate()
        .all(|(i, c)| c.iter().all(|b| *b as usize == i)));
}

#[tokio::test]
async fn non_ascii_content_type_is_400() {
    let h = harness();
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .header(
                    CONTENT_TYPE,
                    http::HeaderValue::from_bytes(b"text/\xff").expect("value"),
                )
                .body(Body::from("x"))
                .expect("request"),
        )
        .await;
    problem(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn unknown_route_is_404_problem() {
    let h = harness();
    let r = h.call(Method::GET, "/nope", "").await;
    let detail = problem(r, StatusCode::NOT_FOUND).await;
    assert!(detail.contains("/nope"), "{detail}");
}

#[tokio::test]
async fn openapi_yaml_is_served() {
    let h = harness();
    let r = h.call(Method::GET, "/openapi.yaml", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/yaml");
    assert_eq!(body_of(r).await, super::OPENAPI_YAML);
}

/// A store whose writes all fail, as a full disk would.
struct FailingStore;

impl Store for FailingStore {
    fn load_retained(&self) -> Result<Vec<(TopicName, RetainedValue)>, StoreError> {
        Ok(Vec::new())
    }
    fn apply(&mut self, _ops: &[RetainedOp]) -> Result<(), StoreError> {
        Err(StoreError::Engine("no space left on device".into()))
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn failing_harness() -> Harness {
    let broker = Broker::new(FailingStore, Arc::new(Local)).expect("broker");
    harness_over(broker, Config::ephemeral())
}

#[tokio::test]
async fn rfc9110_15_6_4_store_failure_is_503_problem() {
    let h = failing_harness();
    let r = h.put("/resources/a", "v").await;
    let detail = problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(detail.contains("no space left"), "{detail}");
}

fn cors_harness(origins: &[&str]) -> Harness {
    let mut config = Config::ephemeral();
    config.http.cors_origins = origins.iter().map(|s| s.to_string()).collect();
    harness_with(config)
}

async fn preflight(h: &Harness, origin: &str) -> Response {
    h.send(
        req(Method::OPTIONS, "/resources/a")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "if-match, content-type")
            .body(Body::empty())
            .expect("request"),
    )
    .await
}

#[tokio::test]
async fn fetch_cors_allow_list() {
    let h = cors_harness(&["https://a.example"]);
    let r = preflight(&h, "https://a.example").await;
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://a.example"
    );
    let r = preflight(&h, "https://evil.example").await;
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .header("origin", "https://a.example")
                .body(Body::from("v"))
                .expect("request"),
        )
        .await;
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://a.example"
    );
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in ["etag", "location", "last-modified"] {
        assert!(exposed.contains(h), "{exposed}");
    }
}

#[tokio::test]
async fn fetch_cors_any_origin_without_credentials() {
    let h = cors_harness(&["*"]);
    let r = preflight(&h, "https://b.example").await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(!r.headers().contains_key("access-control-allow-credentials"));
}

#[tokio::test]
async fn no_cors_configured_means_no_cors_headers() {
    let h = harness();
    let r = preflight(&h, "https://b.example").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

/// The next SSE frame that is not a keep-alive, within a deadline.
async fn next_event(body: &mut Body) -> Option<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an SSE frame within 5 s")?
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            let text = String::from_utf8(data.to_vec()).expect("utf-8 frame");
            if !text.starts_with(':') {
                return Some(text);
            }
        }
    }
}

fn sse_request(uri: &str) -> Request<Body> {
    req(Method::GET, uri)
        .header(ACCEPT, "text/event-stream")
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn whatwg_sse_current_value_then_every_publish_then_unsubscribe_on_drop() {
    let h = harness();
    h.put("/resources/s", "first\nline").await;
    let r = h.send(sse_request("/resources/s")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/event-stream");
    assert_eq!(h.broker.subscription_count(), 1);
    let mut body = r.into_body();
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: message\nid: 1\ndata: first\ndata: line\n\n")
    );
    h.send(
        req(Method::PUT, "/resources/s")
            .body(Body::from(vec![0xffu8, 0]))
            .expect("request"),
    )
    .await;
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: binary\nid: 2\ndata: /wA=\n\n")
    );
    h.call(Method::DELETE, "/resources/s", "").await;
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: delete\nid: 3\ndata:\n\n")
    );
    drop(body);
    assert_eq!(h.broker.subscription_count(), 0);
}

#[tokio::test]
async fn whatwg_sse_on_missing_value_waits_for_the_first_publish() {
    let h = harness();
    let r = h.send(sse_request("/resources/later")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    h.put("/resources/later", "now").await;
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: message\nid: 1\ndata: now\n\n")
    );
}

#[tokio::test]
async fn sse_stream_ends_on_shutdown() {
    let Harness {
        app,
        broker,
        controller,
    } = harness();
    let r = app
        .clone()
        .oneshot(sse_request("/resources/x"))
        .await
        .expect("response");
    drop(app);
    let mut body = r.into_body();
    let stopping = tokio::spawn(controller.shutdown());
    assert_eq!(next_event(&mut body).await, None, "the stream ends");
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown is not held up by the stream")
        .expect("join");
    assert_eq!(broker.subscription_count(), 0);
}

/// The declared response codes of `method` on `path` in the spec.
fn declared(spec: &serde_yaml::Value, path: &str, method: &str) -> Option<Vec<u16>> {
    let op = spec.get("paths")?.get(path)?.get(method)?;
    let responses = op.get("responses")?.as_mapping()?;
    Some(
        responses
            .keys()
            .filter_map(|k| {
                k.as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| k.as_u64().and_then(|n| u16::try_from(n).ok()))
            })
            .collect(),
    )
}

#[tokio::test]
async fn openapi_spec_and_router_agree() {
    let spec: serde_yaml::Value =
        serde_yaml::from_str(super::OPENAPI_YAML).expect("openapi/ponte.yaml parses");
    assert_eq!(spec["openapi"].as_str(), Some("3.1.0"));
    let paths = spec["paths"].as_mapping().expect("paths");
    let methods = [
        "get", "head", "put", "post", "delete", "options", "patch", "trace",
    ];
    // Every declared operation is routed; every undeclared method is 405.
    for (template, _) in paths {
        let template = template.as_str().expect("path");
        let concrete = template.replace("{topic}", "spec/t");
        for m in methods {
            let h = harness();
            h.put("/resources/spec/t", "v").await;
            let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).expect("method");
            let r = h.call(method, &concrete, "").await;
            match declared(&spec, template, m) {
                Some(codes) => {
                    assert!(
                        codes.contains(&r.status().as_u16()),
                        "{m} {concrete} gave {} not declared in {codes:?}",
                        r.status()
                    );
                }
                None => assert_eq!(
                    r.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {template} is not in the spec"
                ),
            }
        }
    }

    // Every status the tests provoke is declared for its operation.
    let t = "/resources/{topic}";
    let h = harness();
    let mut seen: Vec<(&str, u16)> = Vec::new();
    let mut record = |m: &'static str, r: &Response| seen.push((m, r.status().as_u16()));
    let with = |m: Method, uri: &str, name: http::HeaderName, v: &str, body: &'static str| {
        req(m, uri)
            .header(name, v)
            .body(Body::from(body))
            .expect("request")
    };
    let r = h.put("/resources/p", "1").await;
    record("put", &r);
    let tag = etag(&r);
    record("put", &h.put("/resources/p", "2").await);
    record("post", &h.call(Method::POST, "/resources/q", "1").await);
    record("post", &h.call(Method::POST, "/resources/q", "2").await);
    record("put", &h.put("/resources/+", "1").await);
    record("post", &h.call(Method::POST, "/resources/#", "1").await);
    record(
        "put",
        &h.send(with(Method::PUT, "/resources/p", IF_MATCH, &tag, "3"))
            .await,
    );
    record(
        "post",
        &h.send(with(Method::POST, "/resources/p", IF_NONE_MATCH, "*", "3"))
            .await,
    );
    record("get", &h.call(Method::GET, "/resources/p", "").await);
    record("head", &h.call(Method::HEAD, "/resources/p", "").await);
    record("get", &h.call(Method::GET, "/resources/none", "").await);
    record("head", &h.call(Method::HEAD, "/resources/none", "").await);
    record("get", &h.call(Method::GET, "/resources/+", "").await);
    record("head", &h.call(Method::HEAD, "/resources/+", "").await);
    record(
        "get",
        &h.send(with(Method::GET, "/resources/p", IF_NONE_MATCH, "*", ""))
            .await,
    );
    record(
        "head",
        &h.send(with(Method::HEAD, "/resources/p", IF_NONE_MATCH, "*", ""))
            .await,
    );
    record(
        "get",
        &h.send(with(Method::GET, "/resources/p", IF_MATCH, "\"0\"", ""))
            .await,
    );
    record(
        "head",
        &h.send(with(Method::HEAD, "/resources/p", IF_MATCH, "\"0\"", ""))
            .await,
    );
    record("get", &h.send(sse_request("/resources/p")).await);
    record(
        "delete",
        &h.send(with(Method::DELETE, "/resources/p", IF_MATCH, "\"0\"", ""))
            .await,
    );
    record("delete", &h.call(Method::DELETE, "/resources/p", "").await);
    record("delete", &h.call(Method::DELETE, "/resources/p", "").await);
    record("delete", &h.call(Method::DELETE, "/resources/+", "").await);
    record(
        "options",
        &h.call(Method::OPTIONS, "/resources/p", "").await,
    );
    let mut small = Config::ephemeral();
    small.http.max_body = 1;
    let hs = harness_with(small);
    record("put", &hs.put("/resources/p", "too big").await);
    record(
        "post",
        &hs.call(Method::POST, "/resources/p", "too big").await,
    );
    let hf = failing_harness();
    record("put", &hf.put("/resources/p", "v").await);
    record("post", &hf.call(Method::POST, "/resources/p", "v").await);
    for (m, status) in &seen {
        let codes = declared(&spec, t, m).unwrap_or_default();
        assert!(
            codes.contains(status),
            "{m} {t} answered {status}, which the spec does not declare ({codes:?})"
        );
    }
    let distinct: std::collections::BTreeSet<u16> = seen.iter().map(|(_, s)| *s).collect();
    for expected in [200, 201, 204, 304, 400, 404, 412, 413, 503] {
        assert!(
            distinct.contains(&expected),
            "{expected} was not provoked: {distinct:?}"
        );
    }
}

// ---- Authentication and authorization (issue 5) ----

use crate::auth::{password, Auth, AuthConfig};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use std::sync::atomic::Ordering;

/// The HS256 secret of the auth harness.
const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A router whose `/resources` are guarded by a password file (alice:pw, bob:pw), `acl` and
/// an HS256 JWT key; the temp dir holds the files (rewrite `acl` and reload to change rules).
struct Guarded {
    /// The router and broker.
    h: Harness,
    /// The authority the router asks.
    auth: Arc<Auth>,
    /// Where the password and ACL files live.
    dir: tempfile::TempDir,
}

fn guarded(acl: &str, anonymous: bool) -> Guarded {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = password::hash_password("pw").expect("hash");
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, format!("alice:{hash}\nbob:{hash}\n")).expect("passwd");
    let acl_path = dir.path().join("acl");
    std::fs::write(&acl_path, acl).expect("acl");
    let auth = Arc::new(
        Auth::new(AuthConfig {
            password_file: Some(passwd),
            acl_file: Some(acl_path),
            allow_anonymous: Some(anonymous),
            jwt_hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        })
        .expect("auth config"),
    );
    let broker = Broker::new(MemoryStore, Arc::new(Local)).expect("memory broker");
    let controller = ShutdownController::new();
    let state = AppState::new(
        broker.clone(),
        Arc::new(Config::ephemeral()),
        controller.subscribe(),
    )
    .with_auth(auth.clone());
    Guarded {
        h: Harness {
            app: app(state),
            broker,
            controller,
        },
        auth,
        dir,
    }
}

/// anonymous: read public/#; alice: readwrite alice/# and public/#, read secret; bob: nothing.
const ACL: &str = "\
topic read public/#
user alice
topic readwrite alice/#
topic readwrite public/#
topic read secret
user bob
";

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn jwt(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn in_a_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 60
}

impl Guarded {
    async fn with_auth(
        &self,
        method: Method,
        uri: &str,
        authz: &str,
        body: &'static str,
    ) -> Response {
        self.h
            .send(
                req(method, uri)
                    .header(AUTHORIZATION, authz)
                    .body(Body::from(body))
                    .expect("request"),
            )
            .await
    }

    /// Store `value` at `topic` directly through the broker (no HTTP, no ACL).
    async fn seed(&self, topic: &str, value: &'static str) {
        self.h
            .broker
            .publish(
                crate::broker::retained_message(
                    TopicName::parse(topic).expect("topic"),
                    Bytes::from_static(value.as_bytes()),
                    None,
                    crate::model::Origin::Http(None),
                ),
                Default::default(),
            )
            .await
            .expect("seed");
    }
}

fn challenge(r: &Response) -> String {
    r.headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn rfc7235_missing_credentials_is_401_with_both_challenges_when_anonymous_is_off() {
    let g = guarded(ACL, false);
    g.seed("public/a", "1").await;
    let r = g.h.call(Method::GET, "/resources/public/a", "").await;
    assert_eq!(
        challenge(&r),
        r#"Basic realm="ponte", Bearer realm="ponte""#
    );
    let detail = problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(detail.contains("anonymous access is disabled"), "{detail}");
    let r = g.h.put("/resources/public/a", "2").await;
    problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(g.h.value("public/a").expect("kept").payload, "1");
    assert_eq!(g.auth.metrics.logins_refused.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn rfc7617_basic_good_credentials_read_and_write_what_the_acl_grants() {
    let g = guarded(ACL, false);
    let alice = basic("alice", "pw");
    let r = g
        .with_auth(Method::PUT, "/resources/alice/x", &alice, "v")
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = g
        .with_auth(Method::GET, "/resources/alice/x", &alice, "")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_of(r).await, "v");
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let lower = alice.replacen("Basic", "bAsIc", 1);
    let r = g
        .with_auth(Method::HEAD, "/resources/alice/x", &lower, "")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = g
        .with_auth(Method::DELETE, "/resources/alice/x", &alice, "")
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn rfc7617_bad_password_unknown_user_and_empty_user_are_401() {
    let g = guarded(ACL, true);
    g.seed("public/a", "1").await;
    for authz in [basic("alice", "wrong"), basic("eve", "pw"), basic("", "pw")] {
        let r = g
            .with_auth(Method::GET, "/resources/public/a", &authz, "")
            .await;
        assert_eq!(
            challenge(&r),
            r#"Basic realm="ponte", Bearer realm="ponte""#
        );
        let detail = problem(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(detail, "bad username or password", "{authz}");
    }
    assert_eq!(g.auth.metrics.logins_refused.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn rfc9110_15_5_1_malformed_authorization_is_400_not_401() {
    let g = guarded(ACL, true);
    g.seed("public/a", "1").await;
    for (authz, needle) in [
        ("Basic", "carries no credentials"),
        ("Basic !!!not-base64", "not standard base64"),
        ("Basic YWxpY2U=", "no colon"), // base64("alice")
        ("Basic /w==", "no colon"),
        ("Basic /zpwdw==", "not UTF-8"), // 0xff ':' "pw"
    ] {
        let r = g
            .with_auth(Method::GET, "/resources/public/a", authz, "")
            .await;
        let detail = problem(r, StatusCode::BAD_REQUEST).await;
        assert!(detail.contains(needle), "{authz}: {detail}");
    }
    // RFC 6750 §3.1: a malformed bearer request is invalid_request, 400.
    for authz in ["Bearer", "Bearer a b", "Bearer ä.b.c", "Bearer =abc"] {
        let r =
            g.h.send(
                req(Method::GET, "/resources/public/a")
                    .header(
                        AUTHORIZATION,
                        http::HeaderValue::from_bytes(authz.as_bytes()).expect("value"),
                    )
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
        if authz.is_ascii() {
            assert_eq!(
                challenge(&r),
                r#"Bearer realm="ponte", error="invalid_request""#
            );
        }
        problem(r, StatusCode::BAD_REQUEST).await;
    }
    // Two Authorization fields: which one counts would be a guess.
    let r =
        g.h.send(
            req(Method::GET, "/resources/public/a")
                .header(AUTHORIZATION, basic("alice", "pw"))
                .header(AUTHORIZATION, basic("bob", "pw"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    let detail = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("more than one"), "{detail}");
}

#[tokio::test]
async fn rfc9110_11_6_1_unsupported_scheme_is_401_with_the_supported_challenges() {
    let g = guarded(ACL, true);
    let r = g
        .with_auth(
            Method::GET,
            "/resources/public/a",
            "Digest username=\"alice\"",
            "",
        )
        .await;
    assert_eq!(
        challenge(&r),
        r#"Basic realm="ponte", Bearer realm="ponte""#
    );
    let detail = problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(detail.contains("\"Digest\""), "{detail}");
}

#[tokio::test]
async fn anonymous_allowed_reads_what_the_anonymous_block_grants_and_nothing_else() {
    let g = guarded(ACL, true);
    g.seed("public/a", "open").await;
    g.seed("secret", "s3cr3t").await;
    let r = g.h.call(Method::GET, "/resources/public/a", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_of(r).await, "open");
    // Denied to an anonymous client: 401 (credentials may help), not 403.
    let r = g.h.call(Method::GET, "/resources/secret", "").await;
    assert_eq!(
        challenge(&r),
        r#"Basic realm="ponte", Bearer realm="ponte""#
    );
    let detail = problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(
        detail.contains("anonymous clients may not read \"secret\""),
        "{detail}"
    );
    let r = g.h.put("/resources/public/a", "changed").await;
    problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(g.h.value("public/a").expect("kept").payload, "open");
    assert_eq!(g.auth.metrics.acl_denied.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn rfc9110_15_5_4_authenticated_but_not_granted_is_403() {
    let g = guarded(ACL, false);
    g.seed("secret", "s3cr3t").await;
    g.seed("alice/x", "mine").await;
    let alice = basic("alice", "pw");
    let bob = basic("bob", "pw");
    // alice may read secret but not write it.
    let r = g
        .with_auth(Method::GET, "/resources/secret", &alice, "")
        .await;
    assert_eq!(body_of(r).await, "s3cr3t");
    for m in [Method::PUT, Method::POST, Method::DELETE] {
        let r = g
            .with_auth(m.clone(), "/resources/secret", &alice, "x")
            .await;
        assert!(!r.headers().contains_key(WWW_AUTHENTICATE), "{m}");
        let detail = problem(r, StatusCode::FORBIDDEN).await;
        assert!(
            detail.contains("\"alice\" may not write \"secret\""),
            "{detail}"
        );
    }
    assert_eq!(g.h.value("secret").expect("kept").payload, "s3cr3t");
    // bob has an empty block: nothing. Denied before the lookup: a missing topic is 403 too,
    // so a refusal does not tell whether a value exists.
    for uri in ["/resources/alice/x", "/resources/alice/none"] {
        let r = g.with_auth(Method::GET, uri, &bob, "").await;
        problem(r, StatusCode::FORBIDDEN).await;
    }
}

#[tokio::test]
async fn rfc6750_bearer_jwt_identifies_the_user_and_acl_claims_replace_the_file() {
    let g = guarded(ACL, false);
    g.seed("secret", "s3cr3t").await;
    // No acl claim: the file's rules for `sub`.
    let t = jwt(serde_json::json!({"sub": "alice", "exp": in_a_minute()}));
    let r = g
        .with_auth(Method::GET, "/resources/secret", &format!("Bearer {t}"), "")
        .await;
    assert_eq!(body_of(r).await, "s3cr3t");
    // acl claim: only what it grants, even where the file would grant more.
    let t = jwt(serde_json::json!({
        "sub": "alice", "exp": in_a_minute(),
        "acl": {"read": ["tok/#"], "write": ["tok/w"]}
    }));
    let bearer = format!("Bearer {t}");
    let r = g
        .with_auth(Method::PUT, "/resources/tok/w", &bearer, "v")
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = g
        .with_auth(Method::GET, "/resources/tok/w", &bearer, "")
        .await;
    assert_eq!(body_of(r).await, "v");
    let r = g
        .with_auth(Method::PUT, "/resources/tok/r", &bearer, "v")
        .await;
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="ponte", error="insufficient_scope""#
    );
    let detail = problem(r, StatusCode::FORBIDDEN).await;
    assert!(detail.contains("the token's acl claim"), "{detail}");
    let r = g
        .with_auth(Method::GET, "/resources/secret", &bearer, "")
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
    let r = g
        .with_auth(Method::PUT, "/resources/alice/x", &bearer, "v")
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn rfc6750_3_1_invalid_token_is_401_with_error_invalid_token() {
    let g = guarded(ACL, true);
    g.seed("public/a", "1").await;
    let expired = jwt(serde_json::json!({"sub": "alice", "exp": 1000}));
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice", "exp": in_a_minute()}),
        &jsonwebtoken::EncodingKey::from_secret(b"another secret another secret 12"),
    )
    .expect("sign");
    let no_sub = jwt(serde_json::json!({"exp": in_a_minute()}));
    for t in [expired, other_key, no_sub, "abc.def.ghi".to_owned()] {
        let r = g
            .with_auth(
                Method::GET,
                "/resources/public/a",
                &format!("Bearer {t}"),
                "",
            )
            .await;
        assert_eq!(
            challenge(&r),
            r#"Basic realm="ponte", Bearer realm="ponte", error="invalid_token""#
        );
        problem(r, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(g.auth.metrics.logins_refused.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn bearer_without_a_configured_key_is_401() {
    let h = harness();
    let t = jwt(serde_json::json!({"sub": "alice", "exp": in_a_minute()}));
    let r = h
        .send(
            req(Method::GET, "/resources/a")
                .header(AUTHORIZATION, format!("Bearer {t}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    let detail = problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(detail.contains("no JWT key is configured"), "{detail}");
}

#[tokio::test]
async fn acl_is_checked_on_the_decoded_topic_so_encoding_tricks_never_reach_secret() {
    // The ACL grants `public/#` only (anonymous and alice alike for this test).
    let g = guarded(
        "topic readwrite public/#\nuser alice\ntopic readwrite public/#\n",
        true,
    );
    g.seed("secret", "s3cr3t").await;
    g.seed("public/x", "p").await;
    let before = g.h.value("secret").expect("seeded");
    let alice = basic("alice", "pw");
    let attempts = [
        "/resources/public/..%2Fsecret",
        "/resources/public%2F..%2Fsecret",
        "/resources/public%2Fsecret",
        "/resources/public/%2E%2E/secret",
        "/resources/public/../secret",
        "/resources/public/./../secret",
        "/resources/%23",
        "/resources/public/%23",
        "/resources/public/%2B",
        "/resources/%2B/..",
        "/resources/public/%2B/../../secret",
        "/resources/secret%00",
        "/resources/%73ecret",
        "/resources//secret",
        "/resources/secret/",
        "/resources/./secret",
        "/resources/public/..%5Csecret",
    ];
    for uri in attempts {
        for who in [None, Some(alice.as_str())] {
            for m in [
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::POST,
                Method::DELETE,
            ] {
                let mut b = req(m.clone(), uri);
                if let Some(a) = who {
                    b = b.header(AUTHORIZATION, a);
                }
                let r =
                    g.h.send(b.body(Body::from("pwned")).expect("request"))
                        .await;
                let status = r.status();
                let body = body_of(r).await;
                assert!(
                    !String::from_utf8_lossy(&body).contains("s3cr3t"),
                    "{m} {uri} ({who:?}) revealed the secret: {status}"
                );
                let still = g.h.value("secret").expect("secret still stored");
                assert_eq!(
                    still.version, before.version,
                    "{m} {uri} ({who:?}) changed secret"
                );
                // Only topics inside public/ can ever succeed.
                if status.is_success() {
                    assert!(
                        uri.starts_with("/resources/public/"),
                        "{m} {uri} ({who:?}) succeeded: {status}"
                    );
                }
            }
        }
    }
    // The decoded name is what is checked: `%73ecret` is `secret`, refused like it.
    let r = g
        .with_auth(Method::GET, "/resources/%73ecret", &alice, "")
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
    // And what a literal `..` level names is its own topic inside public/, not secret.
    let r = g.h.put("/resources/public/../secret", "mine").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        g.h.value("public/../secret").expect("own topic").payload,
        "mine"
    );
    assert_eq!(g.h.value("secret").expect("kept").payload, "s3cr3t");
}

#[tokio::test]
async fn sse_read_needs_read_access_and_a_revoked_grant_ends_the_stream() {
    let g = guarded("user alice\ntopic read feed\ntopic readwrite w/#\n", false);
    g.seed("feed", "one").await;
    let alice = basic("alice", "pw");
    // Anonymous (off) and bob (no grant): no stream, no subscription.
    let r = g.h.send(sse_request("/resources/feed")).await;
    problem(r, StatusCode::UNAUTHORIZED).await;
    let r =
        g.h.send(
            req(Method::GET, "/resources/feed")
                .header(ACCEPT, "text/event-stream")
                .header(AUTHORIZATION, basic("bob", "pw"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
    assert_eq!(g.h.broker.subscription_count(), 0);
    let r =
        g.h.send(
            req(Method::GET, "/resources/feed")
                .header(ACCEPT, "text/event-stream")
                .header(AUTHORIZATION, &alice)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: message\nid: 1\ndata: one\n\n")
    );
    g.seed("feed", "two").await;
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: message\nid: 2\ndata: two\n\n")
    );
    // Reload without the grant: the next event is not sent, the stream ends.
    std::fs::write(
        g.dir.path().join("acl"),
        "user alice\ntopic readwrite w/#\n",
    )
    .expect("acl");
    g.auth.reload().expect("reload");
    g.seed("feed", "three").await;
    assert_eq!(next_event(&mut body).await, None, "the stream ends");
    drop(body);
    assert_eq!(g.h.broker.subscription_count(), 0);
}

#[tokio::test]
async fn options_and_openapi_need_no_credentials() {
    let g = guarded(ACL, false);
    let r = g.h.call(Method::OPTIONS, "/resources/secret", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = g.h.call(Method::GET, "/openapi.yaml", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    // Unknown methods stay 405 (nothing is revealed, nothing to authenticate).
    let r = g.h.call(Method::PATCH, "/resources/secret", "").await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn openapi_declares_401_and_403_where_the_guard_answers_them() {
    let spec: serde_yaml::Value =
        serde_yaml::from_str(super::OPENAPI_YAML).expect("openapi/ponte.yaml parses");
    let g = guarded(ACL, false);
    let t = "/resources/{topic}";
    let bob = basic("bob", "pw");
    for (m, name) in [
        (Method::GET, "get"),
        (Method::HEAD, "head"),
        (Method::PUT, "put"),
        (Method::POST, "post"),
        (Method::DELETE, "delete"),
    ] {
        let codes = declared(&spec, t, name).expect("declared");
        let r = g.h.call(m.clone(), "/resources/x", "").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(codes.contains(&401), "{name} does not declare 401");
        let r = g.with_auth(m.clone(), "/resources/x", &bob, "").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(codes.contains(&403), "{name} does not declare 403");
    }
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["basic"]["scheme"].as_str(), Some("basic"));
    assert_eq!(schemes["bearer"]["scheme"].as_str(), Some("bearer"));
    assert_eq!(schemes["bearer"]["bearerFormat"].as_str(), Some("JWT"));
}
