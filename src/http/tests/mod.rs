//! Unit tests of the HTTP front-end, driven through [`app`] with `tower::ServiceExt::oneshot`.
//!
//! Tests are named after the RFC clause they check where there is one.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;

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

mod auth;
mod cors;
mod openapi;
mod resources;
mod sse;
use openapi::declared;
use resources::failing_harness;
use sse::{next_event, sse_request};

/// A router over a fresh in-memory broker.
struct Harness {
    /// The router under test.
    app: super::App,
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
