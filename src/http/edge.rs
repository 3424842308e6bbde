//! The one service around the router: each request is counted by method and status
//! (`ponte_http_requests_total`), and values at `/resources/{topic}` are served with
//! `Content-Security-Policy: sandbox` and `X-Content-Type-Options: nosniff`.
//!
//! Why the headers: a value is whatever someone stored; with the explorer on this origin
//! holding credentials, a stored `text/html` value opened in a tab must not run as this
//! origin.
//!
//! Why a hand-written layer rather than two `axum::middleware::from_fn`: a `from_fn`
//! middleware clones its state and the inner service, boxes the inner service and boxes its
//! future on every request; this one moves the inner future into a small future of its own
//! and holds one reference count (issue 16: with the other changes of that pass, a GET went
//! from 38k to 23k instructions; BENCHMARKS.md, fifth pass).
//!
//! Why around the router rather than `Router::layer`: `layer` wraps every route (and the
//! fallback) on its own, and axum turns each wrapped route back into a boxed, cloned-per-request
//! service with its own boxed future and response mapping; around the whole router the edge is
//! one plain struct and one future (BENCHMARKS.md, "HTTP GET overhead").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use http::header::{CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderMap, HeaderValue, Method};
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// The layer: counts into `metrics`; with `sandbox`, marks values as sandboxed.
#[derive(Debug, Clone)]
pub(super) struct Edge {
    /// Where requests are counted.
    metrics: Arc<Metrics>,
    /// Whether `/resources/…` responses get the sandbox headers (the main router; the
    /// operations port serves no values).
    sandbox: bool,
}

impl Edge {
    /// Count into `metrics`; sandbox values when `sandbox`.
    pub(super) fn new(metrics: Arc<Metrics>, sandbox: bool) -> Self {
        Edge { metrics, sandbox }
    }
}

impl<S> Layer<S> for Edge {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> EdgeService<S> {
        EdgeService {
            inner,
            edge: self.clone(),
        }
    }
}

/// The edge (request counts, sandbox headers) around the service `S`: the HTTP front-end
/// as served ([`super::App`]).
#[derive(Debug, Clone)]
pub struct EdgeService<S> {
    /// The routes ([`super::Front`]).
    inner: S,
    /// What to do around them.
    edge: Edge,
}

impl<S> EdgeService<S> {
    /// The service inside.
    pub(super) fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S> Service<Request> for EdgeService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let sandbox = self.edge.sandbox && request.uri().path().starts_with("/resources/");
        let method = request.method().clone();
        EdgeFuture {
            inner: self.inner.call(request),
            method,
            sandbox,
            metrics: self.edge.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response, then the count and the headers.
    pub struct EdgeFuture<F> {
        #[pin]
        inner: F,
        method: Method,
        sandbox: bool,
        metrics: Arc<Metrics>,
    }
}

impl<F, E> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(r)) => r,
        };
        if *this.sandbox {
            sandbox(response.headers_mut());
        }
        this.metrics
            .http_request(this.method, response.status().as_u16());
        Poll::Ready(Ok(response))
    }
}

/// Mark an answer as a stored value: `Content-Security-Policy: sandbox` and
/// `X-Content-Type-Options: nosniff`, unless it already has them (the cached header set of a
/// 200 answer does, `headers.rs`).
pub(super) fn sandbox(headers: &mut HeaderMap) {
    headers
        .entry(CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("sandbox"));
    headers
        .entry(X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
}
