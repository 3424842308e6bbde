//! `/metrics`, `/livez`, `/readyz`: what a person or an orchestrator running ponte asks it.
//!
//! - `GET /metrics`: Prometheus text exposition of [`crate::metrics`] (no credentials, unless
//!   `[http] metrics_auth = true`: then any authenticated user, Basic or Bearer).
//! - `GET /livez`: 200 `ok` while the process serves HTTP at all.
//! - `GET /readyz`: 200 `ok` when every [`Readiness`](crate::health::Readiness) check passes,
//!   else 503 with a problem document naming the failed checks. `?verbose` lists every check
//!   the way Kubernetes' own endpoints do (`[+]store ok`, `[-]store failed: …`), as text,
//!   with the same status.
//!
//! Every request of the router is also counted, by method and status (`edge.rs`).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};

use super::guard;
use super::problem::Problem;
use super::resources::{method_not_allowed, options};
use super::AppState;
use crate::stats::exposition;

/// The methods the operational endpoints answer.
const ALLOWED: &str = "GET, HEAD, OPTIONS";

/// Answer OPTIONS and refuse methods other than GET/HEAD; `None` lets GET and HEAD through.
fn only_reads(request: &Request) -> Option<Response> {
    match *request.method() {
        Method::GET | Method::HEAD => None,
        Method::OPTIONS => Some(options(ALLOWED)),
        _ => Some(
            method_not_allowed(request.method(), request.uri().path(), ALLOWED).into_response(),
        ),
    }
}

/// A text/plain answer that no cache keeps.
fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from(body),
    )
        .into_response()
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    if let Some(r) = only_reads(&request) {
        return r;
    }
    if state.config.http.metrics_auth {
        match guard::authenticate(&state.auth, request.headers()).await {
            Ok(caller) if caller.identity.username.is_some() => {}
            Ok(_) => {
                return Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "/metrics needs credentials ([http] metrics_auth = true): send Basic credentials or a bearer token",
                )
                .with_header(http::header::WWW_AUTHENTICATE, guard::CHALLENGE)
                .into_response()
            }
            Err(problem) => return problem.into_response(),
        }
    }
    let Some(sources) = &state.sources else {
        return Problem::not_found("this router has no metrics attached").into_response();
    };
    let body = exposition::render(&sources.snapshot());
    text(StatusCode::OK, exposition::CONTENT_TYPE, body)
}

/// Whether the query string asks for `verbose` (present, with any value but `false`/`0`).
fn verbose(request: &Request) -> bool {
    request.uri().query().is_some_and(|q| {
        q.split('&').any(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            k == "verbose" && v != "false" && v != "0"
        })
    })
}

/// `GET /livez`: the process is alive and serving.
pub(crate) async fn livez(request: Request) -> Response {
    if let Some(r) = only_reads(&request) {
        return r;
    }
    let body = if verbose(&request) {
        "[+]ping ok\nlivez check passed\n".to_string()
    } else {
        "ok\n".to_string()
    };
    text(StatusCode::OK, "text/plain; charset=utf-8", body)
}

/// `GET /readyz`: every readiness check passes.
pub(crate) async fn readyz(State(state): State<AppState>, request: Request) -> Response {
    if let Some(r) = only_reads(&request) {
        return r;
    }
    let outcomes = state.readiness.check();
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match &o.result {
            Ok(()) => None,
            Err(why) => Some(format!("{}: {why}", o.name)),
        })
        .collect();
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if verbose(&request) {
        let mut body = String::new();
        for o in &outcomes {
            match &o.result {
                Ok(()) => body.push_str(&format!("[+]{} ok\n", o.name)),
                Err(why) => body.push_str(&format!("[-]{} failed: {why}\n", o.name)),
            }
        }
        body.push_str(if failed.is_empty() {
            "readyz check passed\n"
        } else {
            "readyz check failed\n"
        });
        return text(status, "text/plain; charset=utf-8", body);
    }
    if failed.is_empty() {
        return text(status, "text/plain; charset=utf-8", "ok\n".into());
    }
    Problem::unavailable(format!("not ready: {}", failed.join("; "))).into_response()
}
