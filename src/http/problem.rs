//! RFC 9457 problem details: the body of every error the HTTP front-end sends.
//!
//! Every error response — a bad topic, a missing value, a failed precondition, an oversized
//! body, an unknown route, a store failure — carries `application/problem+json` with a
//! `detail` that says what was received and why it was refused, so a client never has to
//! guess from a bare status code.

use axum::response::{IntoResponse, Response};
use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};

/// The media type of a problem document (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One error response, rendered as an RFC 9457 problem document.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status; also the document's `status` member and, through its reason
    /// phrase, its `title` (with `type` `about:blank`, RFC 9457 §4.2.1 says the title is the
    /// status phrase).
    status: StatusCode,
    /// The human-readable explanation: what was received and why it is wrong.
    detail: String,
    /// Extra response headers some errors need (`Allow` on 405, `ETag` on 412); a short
    /// list rather than a `HeaderMap` keeps `Result<_, Problem>` small on the hot path.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            status,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404 Not Found.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 412 Precondition Failed.
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, detail)
    }

    /// 413 Content Too Large.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
    }

    /// 503 Service Unavailable: the store could not do what was asked.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// Add a response header (ignored if `value` is not a valid header value, which only
    /// happens for values we did not build ourselves).
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// The status this problem is sent with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The explanation sent in `detail`.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        })
        .to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}
