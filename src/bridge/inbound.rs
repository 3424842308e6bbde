//! The `in` side of a bridge: every message the remote sends on an `in` rule is published
//! locally through [`Broker::publish`] (the one publish path: a retained one becomes a
//! thing readable over HTTP and CoAP), in arrival order, and acknowledged to the remote
//! only after that returned — so a message the remote was told we have is on disk here.
//! A failing store is retried (nothing acknowledged meanwhile) until it works or the
//! bridge stops; the remote re-sends what was not acknowledged.
//!
//! On each connection it subscribes, then reconciles retained values ([`Reconcile`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::backoff::Backoff;
use crate::broker::retained::{Precondition, TagSet};
use crate::model::TopicName;
use crate::model::{Message, Origin, QoS};

use super::link::{Link, Stop};
use super::reconcile::Reconcile;
use super::remote::{AckToken, Inbound};

/// What the poller forwards, in the remote's order.
#[derive(Debug)]
pub(crate) enum In {
    /// Connected: subscribe and reconcile.
    Connected {
        /// The remote kept the session.
        session_present: bool,
    },
    /// A PUBLISH from the remote.
    Message(Inbound),
    /// A SUBACK (per filter: granted QoS, `None` refused).
    SubAck(Vec<Option<QoS>>),
    /// An UNSUBACK (3.1.1's reconciliation marker).
    UnsubAck,
    /// The connection was lost.
    Down,
}

/// Store what comes in until stopped.
pub(crate) async fn run(
    link: Arc<Link>,
    mut rx: UnboundedReceiver<In>,
    backlog: Arc<AtomicUsize>,
    republish: UnboundedSender<Vec<TopicName>>,
    mut stop: Stop,
) {
    let mut rec = Reconcile::default();
    let subscriptions = link.rules.remote_subscriptions();
    let publisher = Some(link.outbox.mailbox().id());
    let mut subacks = 0usize;
    loop {
        let deadline = rec.deadline();
        tokio::select! {
            biased;
            _ = stop.wait() => return,
            msg = rx.recv() => match msg {
                None => return,
                Some(In::Connected { session_present }) => {
                    subacks = 0;
                    if subscriptions.is_empty() {
                        continue;
                    }
                    let filters = link.rules.local_in_filters();
                    rec.begin(
                        session_present,
                        link.broker
                            .retained_topics()
                            .into_iter()
                            .filter(|(t, _)| filters.iter().any(|f| f.matches(t)))
                            .map(|(t, v)| (t, v.version)),
                    );
                    let sent = match link.client.subscribe(&subscriptions).await {
                        Ok(()) => link.client.marker(&subscriptions[0]).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = sent {
                        tracing::debug!(bridge = %link.name, error = %e, "subscription not sent; rumqttc is gone");
                        return;
                    }
                }
                Some(In::Message(m)) => {
                    let stored = store(&link, m, publisher, &mut rec, &mut stop).await;
                    backlog.fetch_sub(1, Ordering::Relaxed);
                    if !stored {
                        return;
                    }
                }
                Some(In::SubAck(granted)) => {
                    subacks += 1;
                    if subacks == 1 {
                        for ((filter, _), g) in subscriptions.iter().zip(&granted) {
                            if g.is_none() {
                                tracing::warn!(bridge = %link.name, %filter, "the remote refused the bridge's subscription; nothing comes in on it");
                            }
                        }
                    }
                    rec.acknowledged(Instant::now());
                }
                Some(In::UnsubAck) => rec.acknowledged(Instant::now()),
                Some(In::Down) => rec.reset(),
            },
            _ = sleep_until(deadline), if deadline.is_some() => {
                let settled = rec.settle(|t| link.rules.is_out(t));
                if !settled.republish.is_empty() {
                    tracing::info!(bridge = %link.name, values = settled.republish.len(), "reconciliation: local values the remote lost are republished");
                    let _ = republish.send(settled.republish);
                }
                if !settled.clear.is_empty() {
                    tracing::info!(bridge = %link.name, values = settled.clear.len(), "reconciliation: local values the remote no longer has are cleared");
                }
                for (topic, version) in settled.clear {
                    let m = Message {
                        topic: topic.clone(),
                        payload: Bytes::new(),
                        qos: QoS::AtLeastOnce,
                        retain: true,
                        content_type: None,
                        origin: Origin::Bridge(link.name.clone()),
                        properties: None,
                        expires_at: None,
                        publisher,
                        charge: crate::model::Charge::default(),
                    };
                    // Only the value the reconciliation saw: a newer local write stays.
                    let only_if = Precondition {
                        if_match: Some(TagSet::Versions(vec![version])),
                        if_none_match: None,
                    };
                    if let Err(e) = link.broker.publish(m, only_if).await {
                        tracing::warn!(bridge = %link.name, %topic, error = %e, "reconciliation could not clear a value");
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Publish one remote message locally (retrying a failing store), then acknowledge it.
/// Returns false when the bridge stops meanwhile or rumqttc is gone.
async fn store(
    link: &Link,
    m: Inbound,
    publisher: Option<u64>,
    rec: &mut Reconcile,
    stop: &mut Stop,
) -> bool {
    let ack = m.ack;
    let Some(topic) = link.rules.inward(&m.topic) else {
        // A subscription left at the remote by an earlier configuration.
        let n = link.stats.dropped_in.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::info!(bridge = %link.name, topic = %m.topic, dropped = n, "message from the remote on a topic no `in` rule maps; acknowledged and dropped");
        }
        return acknowledge(link, ack).await;
    };
    if let Some(echo) = &link.echo {
        if echo.lock().is_echo(&m.topic, &m.payload) {
            link.stats.echoes.fetch_add(1, Ordering::Relaxed);
            return acknowledge(link, ack).await;
        }
    }
    if m.retain {
        rec.retained(&topic, Instant::now());
    }
    let message = Message {
        topic,
        payload: m.payload,
        qos: m.qos,
        retain: m.retain,
        content_type: m.content_type,
        origin: Origin::Bridge(link.name.clone()),
        properties: m.properties,
        expires_at: m.expires_at,
        // The out side's subscriptions are No Local: this message never goes back.
        publisher,
        charge: crate::model::Charge::default(),
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let result = tokio::select! {
            r = link.broker.publish(message.clone(), Precondition::none()) => r,
            _ = stop.wait() => return false,
        };
        match result {
            Ok(_) => break,
            Err(e) => {
                let delay = backoff.fail();
                if backoff.attempts() == 1 || backoff.attempts().is_power_of_two() {
                    tracing::error!(bridge = %link.name, topic = %message.topic, error = %e, attempts = backoff.attempts(), "message from the remote not stored; not acknowledged, retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait() => return false,
                }
            }
        }
    }
    link.stats.received.fetch_add(1, Ordering::Relaxed);
    acknowledge(link, ack).await
}

/// Acknowledge a stored (or deliberately dropped) message; false when rumqttc is gone.
async fn acknowledge(link: &Link, ack: Option<AckToken>) -> bool {
    match ack {
        Some(token) => link.client.ack(token).await.is_ok(),
        None => true,
    }
}
