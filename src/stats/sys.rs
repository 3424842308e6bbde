//! `$SYS/broker/...`: the broker's own statistics as retained topics, mosquitto's names.
//!
//! Every `sys_interval_secs` (10 by default, 0 turns it off) the values below are published
//! through the ordinary publish path as retained QoS 0 messages, so MQTT clients subscribe
//! to `$SYS/#` (a leading wildcard never matches them, MQTT-4.7.2-1) and HTTP or CoAP can
//! read them like any other thing (`GET /resources/$SYS/broker/uptime`). A value is only
//! republished when it changed, so an idle broker writes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Snapshot, Sources};
use crate::broker::retained::Precondition;
use crate::broker::Broker;
use crate::model::{Message, Origin, QoS, TopicName};
use crate::shutdown::Shutdown;

/// Run the `$SYS` publisher until shutdown. Every value is read from the same
/// [`Snapshot`] as `GET /metrics` (one source of truth; README lists which metric each
/// topic is), every `secs` seconds (`[mqtt] sys_interval_secs`; 0: never).
pub(crate) async fn run(broker: Arc<Broker>, secs: u64, sources: Sources, mut shutdown: Shutdown) {
    if secs == 0 {
        return;
    }
    let mut last: HashMap<&'static str, String> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(secs));
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        let mut values = values(&sources.snapshot()).to_vec();
        // In a cluster, which node this is (issue 11, point 7): `$SYS` is node-local.
        if let Some(node) = broker.backbone().node() {
            values.push(("$SYS/broker/node", node.to_owned()));
        }
        for (topic, value) in values {
            if last.get(topic) == Some(&value) {
                continue;
            }
            let Ok(name) = TopicName::parse(topic) else {
                continue;
            };
            let message = Message {
                topic: name,
                payload: Bytes::from(value.clone()),
                qos: QoS::AtMostOnce,
                retain: true,
                content_type: Some(Arc::from("text/plain")),
                origin: Origin::Internal,
                properties: None,
                expires_at: None,
                publisher: None,
                charge: crate::model::Charge::default(),
            };
            match broker.publish(message, Precondition::none()).await {
                Ok(_) => {
                    last.insert(topic, value);
                }
                Err(e) => tracing::warn!(topic, error = %e, "$SYS value not published"),
            }
        }
    }
}

/// The `$SYS` topics and their values, from the metrics snapshot.
fn values(s: &Snapshot) -> [(&'static str, String); 16] {
    [
        (
            "$SYS/broker/version",
            format!("ponte version {}", env!("CARGO_PKG_VERSION")),
        ),
        ("$SYS/broker/uptime", format!("{} seconds", s.uptime_secs)),
        (
            "$SYS/broker/clients/connected",
            s.mqtt_connected.to_string(),
        ),
        ("$SYS/broker/clients/maximum", s.mqtt_max.to_string()),
        (
            "$SYS/broker/clients/total",
            (s.sessions_online + s.sessions_offline).to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            Snapshot::total(&s.received).to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            Snapshot::total(&s.sent).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            Snapshot::of(&s.dropped, "queue_full").to_string(),
        ),
        // mosquitto's name: bytes of messages held for subscribers ([limits]
        // max_queued_bytes counts them); and what that budget made them drop.
        (
            "$SYS/broker/store/messages/bytes",
            s.queued_bytes.to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped/budget",
            s.budget_dropped.to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            Snapshot::total(&s.bytes_received).to_string(),
        ),
        (
            "$SYS/broker/bytes/sent",
            Snapshot::total(&s.bytes_sent).to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            s.retained.to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            s.subscriptions.to_string(),
        ),
        // Refused before any protocol work, every listener and reason together.
        (
            "$SYS/broker/connections/refused",
            s.refused.iter().map(|(_, _, n)| n).sum::<u64>().to_string(),
        ),
        (
            "$SYS/broker/publish/messages/refused",
            Snapshot::of(&s.dropped, "rate_limited").to_string(),
        ),
    ]
}
