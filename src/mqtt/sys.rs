//! `$SYS/broker/...`: the broker's own statistics as retained topics, mosquitto's names.
//!
//! Every `sys_interval_secs` (10 by default, 0 turns it off) the values below are published
//! through the ordinary publish path as retained QoS 0 messages, so MQTT clients subscribe
//! to `$SYS/#` (a leading wildcard never matches them, MQTT-4.7.2-1) and HTTP or CoAP can
//! read them like any other thing (`GET /resources/$SYS/broker/uptime`). A value is only
//! republished when it changed, so an idle broker writes nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Mqtt;
use crate::broker::retained::Precondition;
use crate::model::TopicName;
use crate::model::{Message, Origin, QoS};

/// Run the `$SYS` publisher until shutdown.
pub(super) async fn run(mqtt: Mqtt) {
    let secs = mqtt.shared.config.mqtt.sys_interval_secs;
    if secs == 0 {
        return;
    }
    let mut shutdown = mqtt.shutdown.clone();
    let started = Instant::now();
    let mut last: HashMap<&'static str, String> = HashMap::new();
    let mut max_clients = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs(secs));
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        let connected = mqtt.connected();
        max_clients = max_clients.max(connected);
        let broker = &mqtt.shared.broker;
        let m = &broker.metrics;
        let s = &mqtt.shared.stats;
        let refused = mqtt.shared.limits.refused();
        let mut values: Vec<(&'static str, String)> = vec![
            (
                "$SYS/broker/version",
                format!("ponte version {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/uptime",
                format!("{} seconds", started.elapsed().as_secs()),
            ),
            ("$SYS/broker/clients/connected", connected.to_string()),
            ("$SYS/broker/clients/maximum", max_clients.to_string()),
            (
                "$SYS/broker/clients/total",
                mqtt.shared.sessions.len().to_string(),
            ),
            (
                "$SYS/broker/messages/received",
                m.published.load(Ordering::Relaxed).to_string(),
            ),
            (
                "$SYS/broker/messages/sent",
                m.delivered.load(Ordering::Relaxed).to_string(),
            ),
            (
                "$SYS/broker/publish/messages/dropped",
                m.dropped.load(Ordering::Relaxed).to_string(),
            ),
            // mosquitto's name: bytes of messages held for subscribers ([limits]
            // max_queued_bytes counts them); and what that budget made them drop.
            (
                "$SYS/broker/store/messages/bytes",
                broker.budget().used().to_string(),
            ),
            (
                "$SYS/broker/publish/messages/dropped/budget",
                broker.budget().dropped().to_string(),
            ),
            (
                "$SYS/broker/bytes/received",
                s.bytes_received.load(Ordering::Relaxed).to_string(),
            ),
            (
                "$SYS/broker/bytes/sent",
                s.bytes_sent.load(Ordering::Relaxed).to_string(),
            ),
            (
                "$SYS/broker/retained messages/count",
                broker.retained_count().to_string(),
            ),
            (
                "$SYS/broker/subscriptions/count",
                broker.subscription_count().to_string(),
            ),
            // Refused by `[limits]`, every listener and protocol together (ponte's own).
            (
                "$SYS/broker/connections/refused",
                refused.connections_total().to_string(),
            ),
            (
                "$SYS/broker/publish/messages/refused",
                refused.writes_total().to_string(),
            ),
        ];
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
