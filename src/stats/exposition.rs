//! Reading every counter into one [`Snapshot`], and writing it as Prometheus text
//! exposition (format 0.0.4) for `GET /metrics`.
//!
//! Names follow Prometheus's conventions: one `ponte_` prefix, base units (seconds, bytes),
//! `_total` on counters. The writer is ours (about a hundred lines) rather than a client
//! library's registry, because the counters are spread over the modules that own them and
//! are only *read* here; see architecture.md, "Operations".

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::broker::Broker;
use crate::coap::DtlsStats;
use crate::limits::Limits;
use crate::metrics::histogram::HistogramSnapshot;
use crate::metrics::{Metrics, Protocol, Transport, HTTP_CODES, HTTP_METHODS};
use crate::mqtt::Clients;

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where every number comes from: the modules that count them.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Counters without another home.
    pub metrics: Arc<Metrics>,
    /// Fan-out counters, retained values, subscriptions, the store writer's report.
    pub broker: Arc<Broker>,
    /// `[limits]` refusals.
    pub limits: Arc<Limits>,
    /// MQTT sessions and byte counters (`None`: a router without the MQTT front-end, in
    /// unit tests).
    pub mqtt: Option<Clients>,
    /// The `coaps` listener's counters, when it runs.
    pub coaps: Option<Arc<DtlsStats>>,
    /// The MQTT bridges (`[[bridge]]`), when the gateway runs them.
    pub bridges: Option<Arc<crate::bridge::Bridges>>,
    /// The webhooks (`[[webhook]]`), when the gateway runs them.
    pub webhooks: Option<Arc<crate::webhook::Webhooks>>,
}

/// Every number at one moment; `/metrics` and `$SYS` are both written from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Seconds since the start.
    pub uptime_secs: u64,
    /// Open connections per transport label.
    pub connections: Vec<(&'static str, u64)>,
    /// MQTT connections open now, every transport together.
    pub mqtt_connected: u64,
    /// Most MQTT connections open at once since the start.
    pub mqtt_max: u64,
    /// Connections refused: `(transport label, reason, count)`.
    pub refused: Vec<(&'static str, &'static str, u64)>,
    /// Accepted writes per protocol label.
    pub received: Vec<(&'static str, u64)>,
    /// Deliveries per protocol label.
    pub sent: Vec<(&'static str, u64)>,
    /// Bytes read per protocol label.
    pub bytes_received: Vec<(&'static str, u64)>,
    /// Bytes written per protocol label.
    pub bytes_sent: Vec<(&'static str, u64)>,
    /// Messages dropped per reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Retained values.
    pub retained: u64,
    /// Payload bytes of the retained values.
    pub retained_bytes: u64,
    /// MQTT sessions whose client is connected.
    pub sessions_online: u64,
    /// Persistent MQTT sessions whose client is away.
    pub sessions_offline: u64,
    /// Subscriptions of every protocol (MQTT, SSE, CoAP observations' topics).
    pub subscriptions: u64,
    /// Group commit latency of the retained store.
    pub store_commit: HistogramSnapshot,
    /// Latency of the retained store's periodic syncs (`[store] sync = "periodic"`).
    pub store_sync: HistogramSnapshot,
    /// HTTP requests: `(method, status, count)`, only those seen.
    pub http_requests: Vec<(&'static str, u16, u64)>,
    /// Refused logins per protocol label.
    pub auth_failures: Vec<(&'static str, u64)>,
    /// CoAP observations registered now.
    pub coap_observers: u64,
    /// MQTT connections parked without a task now (idle).
    pub mqtt_parked: u64,
    /// Bytes held by queued messages now (`[limits] max_queued_bytes` counts them).
    pub queued_bytes: u64,
    /// The global queued-bytes budget; `None`: no limit.
    pub queued_bytes_limit: Option<u64>,
    /// Deliveries not queued, or displaced, because the budget was spent.
    pub budget_dropped: u64,
    /// Every MQTT bridge's counters.
    pub bridges: Vec<crate::bridge::BridgeStats>,
    /// Every webhook's counters.
    pub webhooks: Vec<crate::webhook::WebhookStats>,
}

impl Snapshot {
    /// The value of `label` in a per-label list (0 when absent).
    pub fn of(list: &[(&'static str, u64)], label: &str) -> u64 {
        list.iter()
            .filter(|(l, _)| *l == label)
            .map(|(_, n)| n)
            .sum()
    }

    /// The sum of a per-label list.
    pub fn total(list: &[(&'static str, u64)]) -> u64 {
        list.iter().map(|(_, n)| n).sum()
    }
}

impl Sources {
    /// Read every counter now.
    pub fn snapshot(&self) -> Snapshot {
        let m = &self.metrics;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let per_protocol = |counters: &[std::sync::atomic::AtomicU64; 3]| {
            Protocol::ALL
                .iter()
                .map(|p| (p.label(), load(&counters[*p as usize])))
                .collect::<Vec<_>>()
        };
        let mqtt_transports = [
            Transport::Mqtt,
            Transport::Mqtts,
            Transport::MqttWs,
            Transport::MqttWss,
        ];
        let connections = Transport::ALL
            .iter()
            .map(|t| (t.label(), m.connections(*t)))
            .collect::<Vec<_>>();
        let mqtt_connected = mqtt_transports.iter().map(|t| m.connections(*t)).sum();
        let mut refused = Vec::new();
        for (listener, per_ip, rate) in self.limits.refused_by_reason() {
            let label = Transport::of_listener(listener).map_or(listener, |t| t.label());
            refused.push((label, "per_ip", per_ip));
            refused.push((label, "rate", rate));
        }
        for t in Transport::ALL {
            let n = load(&m.refused_full[t as usize]);
            let n = match (&self.coaps, t) {
                (Some(s), Transport::Coaps) => n + load(&s.refused_full),
                _ => n,
            };
            if n > 0 || matches!(t, Transport::Mqtt) {
                refused.push((t.label(), "max_connections", n));
            }
        }
        let (mqtt_in, mqtt_out) = self.mqtt.as_ref().map_or((0, 0), Clients::bytes);
        let mut bytes_received = per_protocol(&m.bytes_received);
        let mut bytes_sent = per_protocol(&m.bytes_sent);
        bytes_received[Protocol::Mqtt as usize].1 += mqtt_in;
        bytes_sent[Protocol::Mqtt as usize].1 += mqtt_out;
        let b = &self.broker.metrics;
        let limits = self.limits.refused();
        let dropped = vec![
            ("queue_full", load(&b.dropped)),
            ("too_large", load(&b.too_large)),
            ("expired", load(&b.expired)),
            ("acl_denied", load(&m.acl_dropped)),
            ("rate_limited", limits.writes_total()),
            ("log_retention", load(&b.log_retention)),
        ];
        let store = self.broker.retained_stats();
        let (sessions_online, sessions_offline) =
            self.mqtt.as_ref().map_or((0, 0), Clients::sessions);
        let mut http_requests = Vec::new();
        for (i, method) in HTTP_METHODS.iter().enumerate() {
            for code in 0..HTTP_CODES {
                let n = load(&m.http_requests[i * HTTP_CODES + code]);
                if n > 0 {
                    http_requests.push((*method, (code + 100) as u16, n));
                }
            }
        }
        let mut auth_failures = per_protocol(&m.auth_failures);
        if let Some(s) = &self.coaps {
            auth_failures[Protocol::Coap as usize].1 += load(&s.handshakes_failed);
        }
        Snapshot {
            uptime_secs: m.uptime_secs(),
            connections,
            mqtt_connected,
            mqtt_max: m.mqtt_max.load(Ordering::Relaxed).max(0) as u64,
            refused,
            received: per_protocol(&m.received),
            sent: per_protocol(&m.sent),
            bytes_received,
            bytes_sent,
            dropped,
            retained: self.broker.retained_count() as u64,
            retained_bytes: store.bytes.load(Ordering::Relaxed),
            sessions_online,
            sessions_offline,
            subscriptions: self.broker.subscription_count() as u64,
            store_commit: store.commit.snapshot(),
            store_sync: store.sync.snapshot(),
            http_requests,
            auth_failures,
            coap_observers: m.coap_observers.load(Ordering::Relaxed).max(0) as u64,
            mqtt_parked: m.mqtt_parked.load(Ordering::Relaxed).max(0) as u64,
            queued_bytes: self.broker.budget().used() as u64,
            queued_bytes_limit: self.broker.budget().limit().map(|n| n as u64),
            budget_dropped: self.broker.budget().dropped(),
            bridges: self.bridges.as_ref().map(|b| b.stats()).unwrap_or_default(),
            webhooks: self
                .webhooks
                .as_ref()
                .map(|w| w.stats())
                .unwrap_or_default(),
        }
    }
}

/// One metric family being written: `# HELP`, `# TYPE`, then samples.
struct Family<'a> {
    /// The text being written.
    out: &'a mut String,
    /// The family's name.
    name: &'static str,
}

/// The samples of histogram `h` into its family `f`.
fn histogram(mut f: Family<'_>, h: &HistogramSnapshot) {
    for (bound, n) in &h.buckets {
        f.sample("_bucket", &[("le", &bound.to_string())], n);
    }
    f.sample("_bucket", &[("le", "+Inf")], h.count);
    f.sample("_sum", &[], h.sum);
    f.sample("_count", &[], h.count);
}

impl<'a> Family<'a> {
    /// Start a family.
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    /// One sample; `labels` are `(name, value)` pairs whose values need no escaping (they
    /// are ours: protocols, reasons, methods, numbers, the version).
    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// One sample per `(label value, number)`.
    fn per(&mut self, label: &str, list: &[(&'static str, u64)]) {
        for (l, n) in list {
            self.sample("", &[(label, l)], n);
        }
    }
}

/// The snapshot as Prometheus text exposition (format 0.0.4).
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let o = &mut out;
    Family::new(
        o,
        "ponte_build_info",
        "gauge",
        "Always 1; the version is in the label.",
    )
    .sample("", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    Family::new(
        o,
        "ponte_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
    )
    .sample("", &[], s.uptime_secs);
    Family::new(
        o,
        "ponte_connections",
        "gauge",
        "Open connections (SSE: open event streams; coaps: DTLS sessions).",
    )
    .per("protocol", &s.connections);
    let mut f = Family::new(
        o,
        "ponte_connections_refused_total",
        "counter",
        "Connections refused before any protocol work, by listener and reason.",
    );
    for (p, r, n) in &s.refused {
        f.sample("", &[("protocol", p), ("reason", r)], n);
    }
    Family::new(
        o,
        "ponte_coap_observers",
        "gauge",
        "CoAP observations registered (UDP, TCP and DTLS).",
    )
    .sample("", &[], s.coap_observers);
    Family::new(
        o,
        "ponte_mqtt_parked_connections",
        "gauge",
        "MQTT connections idle and parked without a task of their own (also in ponte_connections).",
    )
    .sample("", &[], s.mqtt_parked);
    Family::new(
        o,
        "ponte_messages_received_total",
        "counter",
        "Accepted writes: HTTP PUT/POST/DELETE, CoAP PUT/POST/DELETE, MQTT PUBLISH.",
    )
    .per("protocol", &s.received);
    Family::new(
        o,
        "ponte_messages_sent_total",
        "counter",
        "Deliveries: MQTT PUBLISH, CoAP notifications, SSE events.",
    )
    .per("protocol", &s.sent);
    Family::new(
        o,
        "ponte_bytes_received_total",
        "counter",
        "Bytes read from clients.",
    )
    .per("protocol", &s.bytes_received);
    Family::new(
        o,
        "ponte_bytes_sent_total",
        "counter",
        "Bytes written to clients.",
    )
    .per("protocol", &s.bytes_sent);
    Family::new(
        o,
        "ponte_messages_dropped_total",
        "counter",
        "Messages not delivered or not accepted, by reason.",
    )
    .per("reason", &s.dropped);
    Family::new(
        o,
        "ponte_queued_bytes",
        "gauge",
        "Bytes held by queued messages (every mailbox, observer and SSE stream; a message shared by many queues counts once).",
    )
    .sample("", &[], s.queued_bytes);
    if let Some(limit) = s.queued_bytes_limit {
        Family::new(
            o,
            "ponte_queued_bytes_limit",
            "gauge",
            "[limits] max_queued_bytes: the most bytes queued messages may hold.",
        )
        .sample("", &[], limit);
    }
    Family::new(
        o,
        "ponte_queued_budget_drops_total",
        "counter",
        "Deliveries not queued, or displaced, because max_queued_bytes was spent (also in messages_dropped_total as queue_full when the overflow policy dropped them).",
    )
    .sample("", &[], s.budget_dropped);
    if !s.bridges.is_empty() {
        let mut f = Family::new(
            o,
            "ponte_bridge_up",
            "gauge",
            "1 while the MQTT bridge is connected to its remote broker, else 0.",
        );
        for b in &s.bridges {
            f.sample("", &[("bridge", &b.name)], u8::from(b.up));
        }
        let mut f = Family::new(
            o,
            "ponte_bridge_messages_total",
            "counter",
            "Messages a bridge carried: out (local to remote, acknowledged) and in (remote to local, stored).",
        );
        for b in &s.bridges {
            f.sample(
                "",
                &[("bridge", &b.name), ("direction", "out")],
                b.messages_out,
            );
            f.sample(
                "",
                &[("bridge", &b.name), ("direction", "in")],
                b.messages_in,
            );
        }
        let mut f = Family::new(
            o,
            "ponte_bridge_queue",
            "gauge",
            "Local messages waiting to go out over a bridge.",
        );
        for b in &s.bridges {
            f.sample("", &[("bridge", &b.name)], b.queued);
        }
        let mut f = Family::new(
            o,
            "ponte_bridge_dropped_total",
            "counter",
            "Messages a bridge did not carry: out (queue full, refused, expired) and in (dropped).",
        );
        for b in &s.bridges {
            let out = b.dropped_out + b.refused + b.expired;
            f.sample("", &[("bridge", &b.name), ("direction", "out")], out);
            f.sample(
                "",
                &[("bridge", &b.name), ("direction", "in")],
                b.dropped_in,
            );
        }
    }
    if !s.webhooks.is_empty() {
        let mut f = Family::new(
            o,
            "ponte_webhook_deliveries_total",
            "counter",
            "Webhook events by outcome: delivered (2xx), rejected (4xx, not retried), failed (every retry failed), dropped (queue full).",
        );
        for w in &s.webhooks {
            for (outcome, n) in [
                ("delivered", w.delivered),
                ("rejected", w.rejected),
                ("failed", w.failed),
                ("dropped", w.dropped),
            ] {
                f.sample("", &[("webhook", &w.name), ("outcome", outcome)], n);
            }
        }
        let mut f = Family::new(
            o,
            "ponte_webhook_retries_total",
            "counter",
            "Webhook requests sent again after a retryable failure.",
        );
        for w in &s.webhooks {
            f.sample("", &[("webhook", &w.name)], w.retries);
        }
        let mut f = Family::new(
            o,
            "ponte_webhook_queue",
            "gauge",
            "Webhook events held (queued or being delivered).",
        );
        for w in &s.webhooks {
            f.sample("", &[("webhook", &w.name)], w.queue);
        }
    }
    Family::new(
        o,
        "ponte_retained_messages",
        "gauge",
        "Retained values stored.",
    )
    .sample("", &[], s.retained);
    Family::new(
        o,
        "ponte_retained_bytes",
        "gauge",
        "Payload bytes of the retained values.",
    )
    .sample("", &[], s.retained_bytes);
    let mut f = Family::new(
        o,
        "ponte_sessions",
        "gauge",
        "MQTT sessions: online (connected) or offline (persistent, client away).",
    );
    f.sample("", &[("state", "online")], s.sessions_online);
    f.sample("", &[("state", "offline")], s.sessions_offline);
    Family::new(
        o,
        "ponte_subscriptions",
        "gauge",
        "Subscriptions of every protocol (MQTT filters, SSE streams, observed CoAP topics).",
    )
    .sample("", &[], s.subscriptions);
    histogram(
        Family::new(
            o,
            "ponte_store_commit_seconds",
            "histogram",
            "Duration of each group commit of the retained store (apply and sync).",
        ),
        &s.store_commit,
    );
    histogram(
        Family::new(
            o,
            "ponte_store_sync_seconds",
            "histogram",
            "Duration of each periodic sync of the retained store's log ([store] sync = \"periodic\").",
        ),
        &s.store_sync,
    );
    let mut f = Family::new(
        o,
        "ponte_http_requests_total",
        "counter",
        "HTTP requests answered, by method and status code.",
    );
    for (m, code, n) in &s.http_requests {
        f.sample("", &[("method", m), ("code", &code.to_string())], n);
    }
    Family::new(
        o,
        "ponte_auth_failures_total",
        "counter",
        "Refused logins: bad credentials, anonymous refused, bad tokens, failed PSK handshakes.",
    )
    .per("protocol", &s.auth_failures);
    out
}
