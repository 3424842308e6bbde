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
    ACCEPT, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED, LOCATION,
};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{app, AppState, PROBLEM_JSON};
use crate::backbone::Local;
use crate::broker::message::RetainedValue;
use crate::broker::topic::TopicName;
use crate::broker::Broker;
use crate::config::Config;
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
        "/resources",
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
