//! The broker core: one publish path for every protocol.
//!
//! Every write — HTTP PUT/POST/DELETE, CoAP PUT/POST/DELETE, MQTT PUBLISH, a will — goes
//! through [`Broker::publish`]: a retained message is first made durable in [`retained`], then
//! the message is matched against the [`trie`] of subscriptions and pushed into each matching
//! subscriber's bounded [`mailbox`], then handed to the [`crate::backbone`]. The subscription
//! index's read lock is held only while matching; pushing happens after it is released, into
//! per-subscriber queues that never block the publisher.

pub mod mailbox;
pub mod message;
pub mod retained;
pub mod topic;
pub mod trie;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::backbone::Backbone;
use crate::store::{Store, StoreError};
use mailbox::{Mailbox, PushOutcome};
use message::{Delivery, Message, Origin, QoS, RetainedValue};
use retained::{Precondition, Retained, WriteOutcome};
use topic::{TopicFilter, TopicName};
use trie::{Matched, SubscriptionIndex};

/// Counters the broker keeps for logs and (later) `$SYS`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages accepted by [`Broker::publish`].
    pub published: AtomicU64,
    /// Deliveries queued to subscribers.
    pub delivered: AtomicU64,
    /// Deliveries dropped by a full mailbox.
    pub dropped: AtomicU64,
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct PublishOutcome {
    /// What happened to the retained value (`None` for a non-retained message).
    pub retained: Option<WriteOutcome>,
    /// How many subscribers it was queued to.
    pub receivers: usize,
}

impl PublishOutcome {
    /// Whether the precondition failed, so nothing was stored or delivered.
    pub fn precondition_failed(&self) -> bool {
        matches!(self.retained, Some(WriteOutcome::PreconditionFailed(_)))
    }
}

/// The broker core shared by every front-end.
#[derive(Debug)]
pub struct Broker {
    /// The retained values and their writer.
    retained: Retained,
    /// Who is subscribed to what; read-locked only while matching a topic.
    subscriptions: RwLock<SubscriptionIndex>,
    /// Where accepted messages go for other nodes.
    backbone: Arc<dyn Backbone>,
    /// Counters.
    pub metrics: Metrics,
}

impl Broker {
    /// A broker over `store`, loading its retained values.
    pub fn new<S: Store>(store: S, backbone: Arc<dyn Backbone>) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Broker {
            retained: Retained::open(store)?,
            subscriptions: RwLock::new(SubscriptionIndex::new()),
            backbone,
            metrics: Metrics::default(),
        }))
    }

    /// The current retained value of a thing.
    pub fn get(&self, topic: &TopicName) -> Option<Arc<RetainedValue>> {
        self.retained.get(topic)
    }

    /// Number of retained values.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Every retained topic with its value (not `$`-topics): the listing behind CoAP
    /// resource discovery (`/.well-known/core`, RFC 6690). Read-only.
    pub fn retained_topics(&self) -> Vec<(TopicName, Arc<RetainedValue>)> {
        match TopicFilter::parse("#") {
            Ok(all) => self.retained.matching(&all),
            Err(_) => Vec::new(),
        }
    }

    /// Number of subscriptions of every protocol.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }

    /// Publish a message from any front-end. A retained message (including one that clears
    /// the value) is durable before this returns and before anyone is told; if the
    /// precondition fails, nothing is stored or delivered.
    pub async fn publish(
        &self,
        message: Message,
        precondition: Precondition,
    ) -> Result<PublishOutcome, StoreError> {
        let retained = if message.retain {
            let value = (!message.payload.is_empty()).then(|| {
                (
                    message.payload.clone(),
                    message.content_type.clone(),
                    message.qos,
                )
            });
            let outcome = self
                .retained
                .write(message.topic.clone(), value, precondition)
                .await?;
            if matches!(outcome, WriteOutcome::PreconditionFailed(_)) {
                return Ok(PublishOutcome {
                    retained: Some(outcome),
                    receivers: 0,
                });
            }
            Some(outcome)
        } else {
            None
        };
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(message);
        let receivers = self.fan_out(&message);
        self.backbone.forward(&message);
        Ok(PublishOutcome {
            retained,
            receivers,
        })
    }

    /// A message heard from another node: deliver it here, neither store nor forward it.
    pub fn deliver_remote(&self, message: Arc<Message>) -> usize {
        self.fan_out(&message)
    }

    /// Queue `message` to every matching subscriber. Returns how many it was queued to.
    fn fan_out(&self, message: &Arc<Message>) -> usize {
        thread_local! {
            static MATCHED: std::cell::RefCell<Vec<Matched>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        MATCHED.with(|cell| {
            let mut matched = cell.borrow_mut();
            self.subscriptions
                .read()
                .matches(&message.topic, &mut matched);
            let mut queued = 0;
            for (mailbox, granted) in matched.drain(..) {
                let d = Delivery {
                    message: message.clone(),
                    qos: message.qos.min(granted),
                    retain: false,
                };
                match mailbox.push(d) {
                    PushOutcome::Queued | PushOutcome::ReplacedOldest => queued += 1,
                    PushOutcome::SkippedOffline => {}
                    PushOutcome::Dropped | PushOutcome::Overflowed => {
                        self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.metrics
                .delivered
                .fetch_add(queued as u64, Ordering::Relaxed);
            queued
        })
    }

    /// Subscribe `mailbox` to `filter` at `qos`. When `send_retained`, the retained values
    /// matching the filter are queued to it with RETAIN=1 (MQTT-3.3.1-8), each at
    /// min(stored QoS, granted). Returns whether an existing subscription was replaced.
    pub fn subscribe(
        &self,
        filter: &TopicFilter,
        mailbox: &Arc<Mailbox>,
        qos: QoS,
        send_retained: bool,
    ) -> bool {
        let replaced = self
            .subscriptions
            .write()
            .insert(filter, mailbox.clone(), qos);
        if send_retained {
            for (topic, v) in self.retained.matching(filter) {
                let message = Arc::new(Message {
                    topic,
                    payload: v.payload.clone(),
                    qos: v.qos,
                    retain: true,
                    content_type: v.content_type.clone(),
                    origin: Origin::Internal,
                });
                mailbox.push(Delivery {
                    qos: v.qos.min(qos),
                    message,
                    retain: true,
                });
            }
        }
        replaced
    }

    /// Remove a subscription. Returns whether it existed.
    pub fn unsubscribe(&self, filter: &TopicFilter, mailbox_id: u64) -> bool {
        self.subscriptions.write().remove(filter, mailbox_id)
    }

    /// Flush and stop the store writer (shutdown).
    pub fn close(&self) {
        self.retained.close();
    }
}

/// Convenience for front-ends: a retained publish of `payload` (empty clears).
pub fn retained_message(
    topic: TopicName,
    payload: Bytes,
    content_type: Option<Arc<str>>,
    origin: Origin,
) -> Message {
    Message {
        topic,
        payload,
        qos: QoS::AtLeastOnce,
        retain: true,
        content_type,
        origin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::Local;
    use crate::store::memory::MemoryStore;
    use mailbox::OverflowPolicy;

    #[tokio::test]
    async fn publish_reaches_matching_subscribers_after_store() {
        let b = Broker::new(MemoryStore, Arc::new(Local)).unwrap();
        let m = Mailbox::new(16, OverflowPolicy::DropNewest);
        b.subscribe(
            &TopicFilter::parse("a/+").unwrap(),
            &m,
            QoS::AtMostOnce,
            true,
        );
        let t = TopicName::parse("a/b").unwrap();
        let out = b
            .publish(
                retained_message(t.clone(), Bytes::from_static(b"v"), None, Origin::Http),
                Precondition::none(),
            )
            .await
            .unwrap();
        assert_eq!(out.receivers, 1);
        assert!(matches!(out.retained, Some(WriteOutcome::Created(_))));
        let d = m.pop().unwrap();
        assert_eq!(d.qos, QoS::AtMostOnce);
        assert!(
            !d.retain,
            "MQTT-3.3.1-9: live messages are not flagged retained"
        );
        assert_eq!(b.get(&t).unwrap().payload, "v");
        // A new subscriber gets the retained copy with RETAIN=1 (MQTT-3.3.1-8).
        let m2 = Mailbox::new(16, OverflowPolicy::DropNewest);
        b.subscribe(
            &TopicFilter::parse("#").unwrap(),
            &m2,
            QoS::ExactlyOnce,
            true,
        );
        let d = m2.pop().unwrap();
        assert!(d.retain);
        assert_eq!(d.qos, QoS::AtLeastOnce, "min(stored QoS 1, granted 2)");
    }

    #[tokio::test]
    async fn failed_precondition_delivers_nothing() {
        let b = Broker::new(MemoryStore, Arc::new(Local)).unwrap();
        let m = Mailbox::new(16, OverflowPolicy::DropNewest);
        b.subscribe(
            &TopicFilter::parse("x").unwrap(),
            &m,
            QoS::AtMostOnce,
            false,
        );
        let out = b
            .publish(
                retained_message(
                    TopicName::parse("x").unwrap(),
                    Bytes::new(),
                    None,
                    Origin::Http,
                ),
                Precondition::exists(),
            )
            .await
            .unwrap();
        assert!(out.precondition_failed());
        assert!(m.is_empty());
    }
}
