//! `[[webhook]]`: parsed into types that cannot hold a bad value, then checked across
//! webhooks by [`validate`]. Errors name the webhook and the key.

use std::collections::HashSet;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bridge::{Filter, Name};
use crate::model::TopicFilter;

/// One `[[webhook]]`: POST every matching write to `url`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names it in logs and metrics: letters, digits, `-`, `_`, `.`.
    #[schemars(with = "String")]
    pub name: Name,
    /// Where events are POSTed: `http://` or `https://`.
    #[schemars(with = "String")]
    pub url: HookUrl,
    /// Which things: an MQTT filter over topics (default `#`, every thing).
    #[serde(default = "default_filter")]
    #[schemars(with = "String")]
    pub filter: Filter,
    /// Which writes: `put` (a value stored), `delete` (a value cleared), `publish` (a
    /// message not retained, e.g. MQTT without RETAIN). Default: put and delete.
    #[serde(default = "default_events")]
    pub events: Vec<EventKind>,
    /// The signing key (Standard Webhooks): `whsec_` followed by base64, or else the
    /// file's bytes as they are (a trailing newline removed). No file: requests are not
    /// signed.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// CA certificates (PEM) an `https://` endpoint must chain to; default: the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Seconds one attempt may take (connect, send, response headers).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Re-sends after the first attempt fails with a retryable outcome.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// First delay before a re-send, milliseconds; it doubles (with jitter) up to
    /// `retry_max_secs`.
    #[serde(default = "default_retry_min")]
    pub retry_min_ms: u64,
    /// Longest delay between re-sends, seconds.
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// Events waiting (queued or being delivered); beyond it new events are dropped,
    /// counted and logged.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Requests in flight at once (each for a different thing: one thing's events go one
    /// at a time, in order).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_filter() -> Filter {
    Filter(TopicFilter::parse("#").expect("# is a filter"))
}
fn default_events() -> Vec<EventKind> {
    vec![EventKind::Put, EventKind::Delete]
}
fn default_timeout() -> u64 {
    5
}
fn default_retries() -> u32 {
    8
}
fn default_retry_min() -> u64 {
    1000
}
fn default_retry_max() -> u64 {
    60
}
fn default_queue() -> usize {
    10_000
}
fn default_concurrency() -> usize {
    8
}

/// Which writes a webhook hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A value stored (a retained write with a payload: HTTP PUT/POST, CoAP PUT/POST,
    /// MQTT retained PUBLISH).
    Put,
    /// A value cleared (HTTP/CoAP DELETE, an empty retained PUBLISH).
    Delete,
    /// A message that is not retained (MQTT PUBLISH without RETAIN).
    Publish,
}

impl EventKind {
    /// As it appears in the event's `"event"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Put => "put",
            EventKind::Delete => "delete",
            EventKind::Publish => "publish",
        }
    }
}

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HookUrl(pub reqwest::Url);

impl From<HookUrl> for String {
    fn from(u: HookUrl) -> String {
        u.0.into()
    }
}

impl TryFrom<String> for HookUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let url = reqwest::Url::parse(&s).map_err(|e| format!("url {s:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url {s:?}: use http:// or https://"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("url {s:?}: no host"));
        }
        Ok(HookUrl(url))
    }
}

/// Check what one field cannot: unique names, events listed, limits at least 1.
pub fn validate(hooks: &[WebhookConfig]) -> Result<(), String> {
    let mut names = HashSet::new();
    for h in hooks {
        let at = format!("webhook {:?}", h.name.as_str());
        if !names.insert(h.name.as_str()) {
            return Err(format!("{at}: two [[webhook]] sections have this name"));
        }
        if h.events.is_empty() {
            return Err(format!(
                "{at}: events is empty; list \"put\", \"delete\" and/or \"publish\""
            ));
        }
        for (key, v) in [
            ("timeout_secs", h.timeout_secs),
            ("retry_min_ms", h.retry_min_ms),
            ("retry_max_secs", h.retry_max_secs),
            ("queue", h.queue as u64),
            ("concurrency", h.concurrency as u64),
        ] {
            if v == 0 {
                return Err(format!("{at}: {key} must be at least 1"));
            }
        }
        if h.ca_file.is_some() && h.url.0.scheme() != "https" {
            return Err(format!(
                "{at}: ca_file needs an https:// url, not {}",
                h.url.0
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        webhook: Vec<WebhookConfig>,
    }

    fn parse(s: &str) -> Result<Vec<WebhookConfig>, String> {
        let f: File = toml::from_str(s).map_err(|e| e.to_string())?;
        validate(&f.webhook)?;
        Ok(f.webhook)
    }

    const GOOD: &str = r#"
[[webhook]]
name = "audit"
url = "https://hooks.example/ponte"
filter = "kitchen/#"
secret_file = "hook.secret"
"#;

    #[test]
    fn defaults_follow_the_issue() {
        let h = &parse(GOOD).unwrap()[0];
        assert_eq!(h.events, [EventKind::Put, EventKind::Delete]);
        assert_eq!(
            (h.timeout_secs, h.max_retries, h.queue, h.retry_max_secs),
            (5, 8, 10_000, 60)
        );
        assert_eq!(h.filter.0.as_str(), "kitchen/#");
        let all = parse("[[webhook]]\nname = \"a\"\nurl = \"http://h/\"\n").unwrap();
        assert_eq!(all[0].filter.0.as_str(), "#");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, needle) in [
            (
                GOOD.replace("https://hooks.example/ponte", "ftp://x"),
                "use http:// or https://",
            ),
            (GOOD.replace("kitchen/#", "kitchen/#/x"), "filter"),
            (format!("{GOOD}events = [\"poke\"]\n"), "poke"),
            (format!("{GOOD}events = []\n"), "events is empty"),
            (format!("{GOOD}queue = 0\n"), "queue must be at least 1"),
            (format!("{GOOD}{GOOD}"), "two [[webhook]]"),
            (format!("{GOOD}retries = 3\n"), "retries"),
            (
                format!(
                    "{}ca_file = \"ca.pem\"\n",
                    GOOD.replace("https://", "http://")
                ),
                "ca_file needs an https:// url",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(needle), "expected {needle:?} in: {e}");
        }
    }
}
