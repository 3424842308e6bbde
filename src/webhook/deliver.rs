//! Delivering one event: a signed POST, re-sent with back-off until it succeeds, the
//! endpoint refuses it for good, or `max_retries` re-sends failed.
//!
//! - 2xx: delivered.
//! - 4xx other than 408 and 429: the endpoint refuses this request; sending it again
//!   would get the same answer, so it is not retried ("rejected").
//! - 408, 429, 5xx, a timeout or a connection error: retried, after
//!   `retry_min_ms` × 2ⁿ with jitter (at most `retry_max_secs`), or after the response's
//!   `Retry-After` seconds when it gives one (same cap).
//! - A redirect is followed only to the same scheme, host and port, and only with 307 or
//!   308 (which keep the POST and its body); any other is not followed and counts as
//!   rejected: webhook URLs are the operator's choice, an endpoint must not send ponte's
//!   signed events elsewhere.
//!
//! A retry sends the same body under the same `webhook-id`, with a new
//! `webhook-timestamp` and signature.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::StatusCode;

use crate::backoff::Backoff;

use super::config::{EventKind, WebhookConfig};
use super::event::Event;
use super::sign::Secret;
use super::stats::Stats;

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// What a webhook delivers with, rebuilt whole from its configuration (and files) on
/// every reload and swapped in; a delivery in progress keeps the one it started with.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The webhook's name.
    pub name: Arc<str>,
    /// Where events go.
    pub url: reqwest::Url,
    /// The HTTP client (timeout, redirect policy, trusted roots).
    pub client: reqwest::Client,
    /// The signing key, if any.
    pub secret: Option<Secret>,
    /// Which writes are events.
    pub events: Vec<EventKind>,
    /// Re-sends after the first attempt.
    pub max_retries: u32,
    /// First re-send delay.
    pub retry_min: Duration,
    /// Longest re-send delay.
    pub retry_max: Duration,
    /// Events held at most.
    pub queue: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
}

impl Settings {
    /// Build from `cfg`, reading its secret and CA files (errors name the file).
    pub(crate) fn build(cfg: &WebhookConfig) -> Result<Settings, String> {
        let at = |e: String| format!("webhook {:?}: {e}", cfg.name.as_str());
        let secret = match &cfg.secret_file {
            Some(p) => Some(Secret::read(p).map_err(at)?),
            None => None,
        };
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.timeout_secs))
            .user_agent(concat!("ponte/", env!("CARGO_PKG_VERSION"), " (webhook)"))
            .redirect(same_origin_only(cfg.url.0.clone()))
            .tls_built_in_root_certs(false);
        if cfg.url.0.scheme() == "https" {
            for cert in crate::roots::load(cfg.ca_file.as_deref()).map_err(at)? {
                let cert = reqwest::Certificate::from_der(cert.as_ref())
                    .map_err(|e| at(format!("a CA certificate cannot be used: {e}")))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| at(format!("HTTP client: {e}")))?;
        Ok(Settings {
            name: Arc::from(cfg.name.as_str()),
            url: cfg.url.0.clone(),
            client,
            secret,
            events: cfg.events.clone(),
            max_retries: cfg.max_retries,
            retry_min: Duration::from_millis(cfg.retry_min_ms),
            retry_max: Duration::from_secs(cfg.retry_max_secs),
            queue: cfg.queue,
            concurrency: cfg.concurrency,
        })
    }
}

/// Follow 307/308 to the same scheme, host and port, at most [`MAX_REDIRECTS`] times.
fn same_origin_only(origin: reqwest::Url) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let to = attempt.url();
        let same = to.scheme() == origin.scheme()
            && to.host_str() == origin.host_str()
            && to.port_or_known_default() == origin.port_or_known_default();
        let keeps_post = matches!(
            attempt.status(),
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
        );
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if same && keeps_post {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// The endpoint refused it for good (4xx other than 408/429, a redirect not
    /// followed).
    Rejected(String),
    /// Every attempt failed (`max_retries` re-sends).
    Failed(String),
}

/// One attempt's result.
enum Attempt {
    /// 2xx.
    Ok,
    /// Do not retry.
    Refused(String),
    /// Retry (after `Retry-After` when given).
    Again(String, Option<Duration>),
}

/// Deliver `event`, retrying as the module says; counts retries in `stats`.
pub(crate) async fn deliver(settings: Arc<Settings>, event: &Event, stats: &Stats) -> Outcome {
    let body = event.body();
    let mut backoff = Backoff::new(settings.retry_min, settings.retry_max);
    loop {
        match attempt(&settings, event, &body).await {
            Attempt::Ok => return Outcome::Delivered,
            Attempt::Refused(why) => return Outcome::Rejected(why),
            Attempt::Again(why, retry_after) => {
                if backoff.attempts() >= settings.max_retries {
                    return Outcome::Failed(why);
                }
                let mut delay = backoff.fail();
                if let Some(after) = retry_after {
                    delay = after.min(settings.retry_max);
                }
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(webhook = %settings.name, id = %event.id, error = %why, retry_in = ?delay, "webhook delivery failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One POST.
async fn attempt(settings: &Settings, event: &Event, body: &bytes::Bytes) -> Attempt {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut req = settings
        .client
        .post(settings.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .body(body.clone());
    if let Some(secret) = &settings.secret {
        req = req.header("webhook-signature", secret.sign(&event.id, timestamp, body));
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let what = if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                format!("cannot connect: {e}")
            } else if e.is_redirect() {
                return Attempt::Refused(format!("redirects: {e}"));
            } else {
                e.to_string()
            };
            return Attempt::Again(what, None);
        }
    };
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if status.is_success() {
        Attempt::Ok
    } else if status.is_redirection() {
        let to = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        Attempt::Refused(format!(
            "{status} to {to} not followed (only 307/308 to the same scheme, host and port are)"
        ))
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Attempt::Again(status.to_string(), retry_after)
    } else {
        Attempt::Refused(status.to_string())
    }
}
