//! Operational counters: what `/metrics` exposes and `$SYS/broker/...` publishes.
//!
//! **One source of truth.** Counters that already existed stay where they are counted
//! ([`crate::broker::Metrics`] for fan-out drops and expiries, [`crate::auth::AuthMetrics`],
//! the `[limits]` gates, the MQTT byte counters, the retained writer's
//! [`crate::broker::retained::StoreStats`]); the ones that had no home live here, in
//! [`Metrics`]. [`crate::stats`] reads all of them into one snapshot, and both the
//! Prometheus text and the `$SYS` publisher are built from that snapshot, so the two can
//! never disagree about what a number means. (The counters are here, below the broker
//! core that counts into them; the reading is there, above every module it reads.)
//!
//! **Cheap on the hot path.** Every counter is an atomic indexed by a small enum (no label
//! map, no lock, no allocation per message); labels are bounded by construction — a
//! protocol, a reason, an HTTP method and status — never a topic, client id or address.

pub mod histogram;
pub mod io;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use histogram::Histogram;

/// A protocol whose messages, bytes and logins are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP and HTTPS (writes, SSE events, wire bytes of the HTTP ports).
    Http = 0,
    /// CoAP over UDP, TCP and DTLS.
    Coap = 1,
    /// MQTT over every transport.
    Mqtt = 2,
}

impl Protocol {
    /// Every protocol, in label order.
    pub const ALL: [Protocol; 3] = [Protocol::Http, Protocol::Coap, Protocol::Mqtt];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Coap => "coap",
            Protocol::Mqtt => "mqtt",
        }
    }
}

/// A kind of long-lived connection, for `ponte_connections{protocol}` and refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over TCP.
    Mqtt = 0,
    /// MQTT over TLS.
    Mqtts = 1,
    /// MQTT over WebSocket (`/mqtt` on the HTTP port, and `mqtt.ws_port`).
    MqttWs = 2,
    /// MQTT over secure WebSocket (`/mqtt` on the HTTPS port, and `mqtt.wss_port`).
    MqttWss = 3,
    /// CoAP over TCP (RFC 8323).
    CoapTcp = 4,
    /// CoAP over DTLS sessions.
    Coaps = 5,
    /// Server-Sent Events streams.
    Sse = 6,
    /// HTTP connections (plain).
    Http = 7,
    /// HTTPS connections.
    Https = 8,
}

impl Transport {
    /// Every transport, in label order.
    pub const ALL: [Transport; 9] = [
        Transport::Mqtt,
        Transport::Mqtts,
        Transport::MqttWs,
        Transport::MqttWss,
        Transport::CoapTcp,
        Transport::Coaps,
        Transport::Sse,
        Transport::Http,
        Transport::Https,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Mqtts => "mqtts",
            Transport::MqttWs => "mqtt_ws",
            Transport::MqttWss => "mqtt_wss",
            Transport::CoapTcp => "coap_tcp",
            Transport::Coaps => "coaps",
            Transport::Sse => "sse",
            Transport::Http => "http",
            Transport::Https => "https",
        }
    }

    /// The transport of a `[limits]` gate's listener name (`"mqtt-ws"` → `MqttWs`).
    pub fn of_listener(name: &str) -> Option<Transport> {
        Transport::ALL
            .into_iter()
            .find(|t| t.label() == name.replace('-', "_"))
    }
}

/// The HTTP methods counted by name; anything else is `other`.
pub const HTTP_METHODS: [&str; 8] = [
    "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "other",
];

/// Status codes 100..=599 are counted one by one.
pub(crate) const HTTP_CODES: usize = 500;

/// The counters that had no home before `/metrics` (see the module documentation).
#[derive(Debug)]
pub struct Metrics {
    /// When the gateway started, for `ponte_uptime_seconds` and `$SYS/broker/uptime`.
    pub(crate) started: Instant,
    /// Open connections per [`Transport`].
    pub(crate) connections: [AtomicI64; Transport::ALL.len()],
    /// Highest number of MQTT connections open at once (`$SYS/broker/clients/maximum`).
    pub(crate) mqtt_max: AtomicI64,
    /// Connections refused because `max_connections` (or its CoAP/DTLS equivalent) was
    /// reached, per [`Transport`]. (`[limits]` refusals are counted by their gates.)
    pub(crate) refused_full: [AtomicU64; Transport::ALL.len()],
    /// Accepted writes per [`Protocol`] (counted once per message in the broker).
    pub(crate) received: [AtomicU64; 3],
    /// Deliveries per [`Protocol`]: MQTT PUBLISHes, CoAP notifications, SSE events.
    pub(crate) sent: [AtomicU64; 3],
    /// Bytes read from clients per [`Protocol`] (MQTT's are in its own counters).
    pub(crate) bytes_received: [AtomicU64; 3],
    /// Bytes written to clients per [`Protocol`] (MQTT's are in its own counters).
    pub(crate) bytes_sent: [AtomicU64; 3],
    /// Messages not delivered or not accepted because the ACL refused them.
    pub(crate) acl_dropped: AtomicU64,
    /// Refused logins (bad credentials, anonymous refused, bad token, failed PSK
    /// handshake) per [`Protocol`].
    pub(crate) auth_failures: [AtomicU64; 3],
    /// HTTP requests by method ([`HTTP_METHODS`]) and status (100..=599).
    pub(crate) http_requests: Box<[AtomicU64]>,
    /// CoAP observations registered right now (UDP, TCP and DTLS together).
    pub(crate) coap_observers: AtomicI64,
    /// MQTT connections parked without a task right now (idle; `mqtt/client/park.rs`).
    pub(crate) mqtt_parked: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            connections: Default::default(),
            mqtt_max: AtomicI64::new(0),
            refused_full: Default::default(),
            received: Default::default(),
            sent: Default::default(),
            bytes_received: Default::default(),
            bytes_sent: Default::default(),
            acl_dropped: AtomicU64::new(0),
            auth_failures: Default::default(),
            http_requests: (0..HTTP_METHODS.len() * HTTP_CODES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            coap_observers: AtomicI64::new(0),
            mqtt_parked: AtomicI64::new(0),
        }
    }
}

/// One open connection, counted in `ponte_connections` until dropped.
#[derive(Debug)]
pub struct Connection {
    /// Where it is counted.
    metrics: Arc<Metrics>,
    /// As what.
    transport: Transport,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.metrics.connections[self.transport as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// A fresh set of counters; the uptime counts from now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Seconds since the gateway started.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Count an open connection until the returned guard is dropped.
    pub fn connection(self: &Arc<Self>, transport: Transport) -> Connection {
        let now = self.connections[transport as usize].fetch_add(1, Ordering::Relaxed) + 1;
        if matches!(
            transport,
            Transport::Mqtt | Transport::Mqtts | Transport::MqttWs | Transport::MqttWss
        ) {
            let total: i64 = [
                Transport::Mqtt,
                Transport::Mqtts,
                Transport::MqttWs,
                Transport::MqttWss,
            ]
            .iter()
            .map(|t| self.connections[*t as usize].load(Ordering::Relaxed))
            .sum::<i64>()
            .max(now);
            self.mqtt_max.fetch_max(total, Ordering::Relaxed);
        }
        Connection {
            metrics: self.clone(),
            transport,
        }
    }

    /// Open connections of `transport` right now.
    pub fn connections(&self, transport: Transport) -> u64 {
        self.connections[transport as usize]
            .load(Ordering::Relaxed)
            .max(0) as u64
    }

    /// A connection of `transport` refused because its listener was full.
    pub fn refused_full(&self, transport: Transport) {
        self.refused_full[transport as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// An accepted write from `protocol`.
    #[inline]
    pub fn received(&self, protocol: Protocol) {
        self.received[protocol as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `n` deliveries sent over `protocol`.
    #[inline]
    pub fn sent(&self, protocol: Protocol, n: u64) {
        self.sent[protocol as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes read from a client of `protocol`.
    #[inline]
    pub fn bytes_received(&self, protocol: Protocol, n: u64) {
        self.bytes_received[protocol as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes written to a client of `protocol`.
    #[inline]
    pub fn bytes_sent(&self, protocol: Protocol, n: u64) {
        self.bytes_sent[protocol as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// A message refused or withheld by the ACL.
    pub fn acl_dropped(&self) {
        self.acl_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A refused login over `protocol`.
    pub fn auth_failure(&self, protocol: Protocol) {
        self.auth_failures[protocol as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// One HTTP request answered with `status`.
    pub fn http_request(&self, method: &http::Method, status: u16) {
        let m = HTTP_METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(HTTP_METHODS.len() - 1);
        let code = usize::from(status.clamp(100, 599)) - 100;
        self.http_requests[m * HTTP_CODES + code].fetch_add(1, Ordering::Relaxed);
    }

    /// CoAP observations changed by `delta`.
    pub fn coap_observers(&self, delta: i64) {
        if delta != 0 {
            self.coap_observers.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// MQTT connections parked (`1`) or resumed (`-1`).
    pub(crate) fn mqtt_parked(&self, delta: i64) {
        self.mqtt_parked.fetch_add(delta, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_guards_count_up_and_down_and_keep_the_mqtt_maximum() {
        let m = Metrics::new();
        let a = m.connection(Transport::Mqtt);
        let b = m.connection(Transport::MqttWs);
        assert_eq!(m.connections(Transport::Mqtt), 1);
        drop(a);
        drop(b);
        assert_eq!(m.connections(Transport::Mqtt), 0);
        assert_eq!(m.mqtt_max.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn listener_names_map_to_transports() {
        assert_eq!(Transport::of_listener("mqtt-ws"), Some(Transport::MqttWs));
        assert_eq!(Transport::of_listener("coap-tcp"), Some(Transport::CoapTcp));
        assert_eq!(Transport::of_listener("https"), Some(Transport::Https));
        assert_eq!(Transport::of_listener("nope"), None);
    }
}
