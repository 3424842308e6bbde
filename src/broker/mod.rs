//! The broker core: one publish path for every protocol.
//!
//! Every write — HTTP PUT/POST/DELETE, CoAP PUT/POST/DELETE, MQTT PUBLISH, a will — goes
//! through [`Broker::publish`]: a retained message is first made durable in [`retained`], then
//! the message is matched against the [`trie`] of subscriptions and pushed into each matching
//! subscriber's bounded [`mailbox`], then handed to the [`crate::backbone`]. The subscription
//! index's read lock is held only while matching; pushing happens after it is released, into
//! per-subscriber queues that never block the publisher.

pub mod budget;
mod delivery;
pub mod mailbox;
pub mod queue;
pub mod retained;
pub mod trie;

pub use delivery::Delivery;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::backbone::Backbone;
use crate::model::{Message, Origin, QoS, RetainedValue};
use crate::model::{TopicFilter, TopicName};
use crate::store::{Store, StoreError};
use mailbox::{Mailbox, PushOutcome};
use retained::{Precondition, Retained, WriteOutcome};
use trie::{Matched, SubOptions, SubscriptionIndex};

/// Counters the broker keeps for logs and (later) `$SYS`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages accepted by [`Broker::publish`].
    pub published: AtomicU64,
    /// Deliveries queued to subscribers.
    pub delivered: AtomicU64,
    /// Deliveries dropped by a full mailbox.
    pub dropped: AtomicU64,
    /// Messages not delivered because their MQTT 5 Message Expiry Interval had passed.
    pub expired: AtomicU64,
    /// Requests refused by a configured limit (topic levels, subscriptions per client, ...).
    pub limits_hit: AtomicU64,
    /// MQTT 5 deliveries discarded because they exceeded the recipient's Maximum Packet
    /// Size (MQTT-3.1.2-25: discarded "as if delivered", so counted here, not in `dropped`).
    pub too_large: AtomicU64,
}

/// The MQTT 5 parts of a retained value that the store does not keep (in memory only):
/// its application properties and expiry, tagged with the value's version so a newer
/// value never inherits an older one's.
#[derive(Debug)]
struct RetainedMeta {
    /// Version of the retained value these belong to.
    version: u64,
    /// Application properties as published.
    properties: Option<Arc<ponte_mqtt::Properties>>,
    /// When the retained message expires (it is then no longer sent to new subscribers).
    expires_at: Option<Instant>,
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct PublishOutcome {
    /// What happened to the retained value (`None` for a non-retained message).
    pub retained: Option<WriteOutcome>,
    /// How many subscribers it was queued to.
    pub receivers: usize,
    /// How many subscribers matched on this node, queued to or not (a full mailbox, an
    /// away session skipping QoS 0): 0 is MQTT 5's PUBACK/PUBREC 0x10 No matching
    /// subscribers. Other nodes' subscribers are not known here.
    pub matched: usize,
}

impl PublishOutcome {
    /// Whether the precondition failed, so nothing was stored or delivered.
    pub fn precondition_failed(&self) -> bool {
        matches!(self.retained, Some(WriteOutcome::PreconditionFailed(_)))
    }
}

/// A publish whose retained write (if any) has been handed to the store but may not be
/// durable yet: [`Broker::stage`]'s answer. A future (`Unpin`, so a connection can keep
/// several in a queue and poll the oldest) resolving to the [`Stored`] publish to pass to
/// [`Broker::deliver`].
#[derive(Debug)]
pub struct Staged {
    /// The message, delivered once its retained write is durable; taken when resolved.
    message: Option<Message>,
    /// The retained write's answer, for a retained message.
    write: Option<retained::PendingWrite>,
    /// Why the writer could not even take the write (store closed), reported when polled.
    refused: Option<StoreError>,
}

impl Staged {
    /// Whether there is nothing to wait for (not a retained message): polled, it resolves
    /// at once.
    pub fn is_stored(&self) -> bool {
        self.write.is_none()
    }
}

impl std::future::Future for Staged {
    type Output = Result<Stored, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if let Some(e) = self.refused.take() {
            return std::task::Poll::Ready(Err(e));
        }
        let retained = match self.write.as_mut() {
            Some(write) => match std::pin::Pin::new(write).poll(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(r) => {
                    self.write = None;
                    Some(r)
                }
            },
            None => None,
        };
        let Some(message) = self.message.take() else {
            return std::task::Poll::Ready(Err(StoreError::Closed));
        };
        std::task::Poll::Ready(match retained {
            Some(Err(e)) => Err(e),
            Some(Ok(outcome)) => Ok(Stored {
                message,
                retained: Some(outcome),
            }),
            None => Ok(Stored {
                message,
                retained: None,
            }),
        })
    }
}

/// A publish whose retained write is durable, ready for [`Broker::deliver`].
#[derive(Debug)]
pub struct Stored {
    /// The message to fan out.
    message: Message,
    /// What the retained write did, for a retained message.
    retained: Option<WriteOutcome>,
}

/// A delivered publish: everyone connected has it. A future (`Unpin`) resolving once every
/// persistent session's copy is durable, which is when it may be acknowledged.
#[derive(Debug)]
pub struct Delivered {
    /// What the publish did, for the acknowledgement; taken when resolved.
    outcome: Option<PublishOutcome>,
    /// One wait per persistent session that queued the message, oldest first.
    durable: std::collections::VecDeque<queue::Durable>,
}

impl Delivered {
    /// Whether nothing remains to be waited for (no persistent session queued the message).
    pub fn is_durable(&self) -> bool {
        self.durable.is_empty()
    }
}

impl std::future::Future for Delivered {
    type Output = Result<PublishOutcome, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        while let Some(wait) = self.durable.front_mut() {
            match std::pin::Pin::new(wait).poll(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(Ok(Ok(()))) => {
                    self.durable.pop_front();
                }
                std::task::Poll::Ready(Ok(Err(e))) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Ready(Err(_)) => {
                    return std::task::Poll::Ready(Err(StoreError::Closed))
                }
            }
        }
        std::task::Poll::Ready(self.outcome.take().ok_or(StoreError::Closed))
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
    /// MQTT 5 properties and expiry of retained values that have them; written only by
    /// retained MQTT 5 publishes, read when a subscription sends retained values.
    retained_meta: RwLock<HashMap<TopicName, RetainedMeta>>,
    /// Counters.
    pub metrics: Metrics,
    /// The gateway's operational counters (`/metrics`, `$SYS`): here because every
    /// front-end holds the broker.
    pub ops: Arc<crate::metrics::Metrics>,
    /// Durable persistent-session queues (issue 3); `None` when sessions are not persisted.
    queue: Option<queue::Queue>,
    /// The budget every subscriber's mailbox draws on (`[limits] max_queued_bytes`, issue
    /// 16): no limit until [`Broker::budget`]'s is set.
    budget: Arc<budget::Budget>,
}

impl Broker {
    /// A broker over `store`, loading its retained values.
    pub fn new<S: Store>(store: S, backbone: Arc<dyn Backbone>) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Broker {
            retained: Retained::open(store)?,
            subscriptions: RwLock::new(SubscriptionIndex::new()),
            backbone,
            retained_meta: RwLock::new(HashMap::new()),
            metrics: Metrics::default(),
            ops: crate::metrics::Metrics::new(),
            queue: None,
            budget: budget::Budget::new(None),
        }))
    }

    /// A broker over `store` whose persistent MQTT sessions live in `sessions`.
    pub fn with_sessions<S: Store, Q: crate::store::session::SessionStore>(
        store: S,
        sessions: Q,
        backbone: Arc<dyn Backbone>,
    ) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Broker {
            retained: Retained::open(store)?,
            subscriptions: RwLock::new(SubscriptionIndex::new()),
            backbone,
            retained_meta: RwLock::new(HashMap::new()),
            metrics: Metrics::default(),
            ops: crate::metrics::Metrics::new(),
            queue: Some(queue::Queue::open(sessions)?),
            budget: budget::Budget::new(None),
        }))
    }

    /// The budget for queued message bytes shared by every mailbox made with
    /// [`Broker::mailbox`]: its limit, what is queued now, what it made subscribers drop.
    pub fn budget(&self) -> &Arc<budget::Budget> {
        &self.budget
    }

    /// A new subscriber queue of at most `capacity` deliveries (0: no limit of its own)
    /// applying `policy` when full, drawing on this broker's [`Broker::budget`].
    pub fn mailbox(&self, capacity: usize, policy: mailbox::OverflowPolicy) -> Arc<Mailbox> {
        Mailbox::with_budget(capacity, policy, self.budget.clone())
    }

    /// The durable session queue, when sessions are persisted.
    pub fn queue(&self) -> Option<&queue::Queue> {
        self.queue.as_ref()
    }

    /// The current retained value of a thing.
    pub fn get(&self, topic: &TopicName) -> Option<Arc<RetainedValue>> {
        self.retained.get(topic)
    }

    /// Every retained topic with its value (not `$`-topics): the listing behind CoAP
    /// resource discovery (`/.well-known/core`, RFC 6690). Read-only.
    pub fn retained_topics(&self) -> Vec<(TopicName, Arc<RetainedValue>)> {
        match TopicFilter::parse("#") {
            Ok(all) => self.retained.matching(&all),
            Err(_) => Vec::new(),
        }
    }

    /// Every retained value whose topic matches `filter` (a leading wildcard never matches a
    /// `$`-topic), in no particular order: the `/resources` listing. Read-only.
    pub fn retained_matching(&self, filter: &TopicFilter) -> Vec<(TopicName, Arc<RetainedValue>)> {
        self.retained.matching(filter)
    }

    /// Number of retained values.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// The retained writer's report (bytes stored, commit latency, health).
    pub fn retained_stats(&self) -> &Arc<retained::StoreStats> {
        self.retained.stats()
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
        let stored = self.stage(message, precondition).await?;
        self.deliver(stored).await
    }

    /// First step of a publish that is pipelined with others from the same sender (see
    /// [`Staged`]): a retained write is handed to the store's writer now, in call order, and
    /// nothing is awaited. Writes from one sender therefore reach the store in the order
    /// they were staged, and one group commit covers all the sender's writes in flight.
    pub fn stage(&self, message: Message, precondition: Precondition) -> Staged {
        let write = if message.retain {
            let value = (!message.payload.is_empty()).then(|| {
                (
                    message.payload.clone(),
                    message.content_type.clone(),
                    message.qos,
                )
            });
            match self
                .retained
                .begin_write(message.topic.clone(), value, precondition)
            {
                Ok(write) => (Some(write), None),
                Err(e) => (None, Some(e)),
            }
        } else {
            (None, None)
        };
        let (write, refused) = write;
        Staged {
            message: Some(message),
            write,
            refused,
        }
    }

    /// Second step: tell everyone about a message whose retained write (if any) is durable.
    /// Synchronous, so a sender that delivers its staged publishes in staging order keeps
    /// MQTT's per-publisher ordering (MQTT 4.6) while their writes overlap.
    pub fn deliver(&self, stored: Stored) -> Delivered {
        let Stored { message, retained } = stored;
        if let Some(outcome) = &retained {
            if matches!(outcome, WriteOutcome::PreconditionFailed(_)) {
                return Delivered {
                    outcome: Some(PublishOutcome {
                        retained,
                        receivers: 0,
                        matched: 0,
                    }),
                    durable: Default::default(),
                };
            }
            self.note_retained_meta(&message, outcome);
        }
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        match message.origin {
            Origin::Http => self.ops.received(crate::metrics::Protocol::Http),
            Origin::Coap => self.ops.received(crate::metrics::Protocol::Coap),
            Origin::Mqtt => self.ops.received(crate::metrics::Protocol::Mqtt),
            Origin::Backbone | Origin::Internal => {}
        }
        let message = Arc::new(message);
        let mut durable = Vec::new();
        let (receivers, matched) = self.fan_out(&message, &mut durable);
        self.backbone.forward(&message);
        Delivered {
            outcome: Some(PublishOutcome {
                retained,
                receivers,
                matched,
            }),
            durable: durable.into(),
        }
    }

    /// Keep (or forget) the MQTT 5 properties and expiry of a newly written retained value.
    fn note_retained_meta(&self, message: &Message, outcome: &WriteOutcome) {
        let version = match outcome {
            WriteOutcome::Created(v) | WriteOutcome::Replaced(v) => Some(v.version),
            _ => None,
        };
        let has_meta = message.properties.is_some() || message.expires_at.is_some();
        match version {
            Some(version) if has_meta => {
                let meta = RetainedMeta {
                    version,
                    properties: message.properties.clone(),
                    expires_at: message.expires_at,
                };
                let mut map = self.retained_meta.write();
                // Concurrent writers may finish out of order: keep the newest version's.
                if map.get(&message.topic).is_none_or(|m| m.version < version) {
                    map.insert(message.topic.clone(), meta);
                }
            }
            _ => {
                if self.retained_meta.read().contains_key(&message.topic) {
                    let mut map = self.retained_meta.write();
                    if let Some(v) = version {
                        if map.get(&message.topic).is_some_and(|m| m.version < v) {
                            map.remove(&message.topic);
                        }
                    } else {
                        map.remove(&message.topic);
                    }
                }
            }
        }
    }

    /// A message heard from another node: deliver it here, neither store nor forward it.
    pub fn deliver_remote(&self, message: Arc<Message>) -> usize {
        self.fan_out(&message, &mut Vec::new()).0
    }

    /// Queue `message` to every matching subscriber. Returns how many it was queued to and
    /// how many matched.
    /// A QoS 1/2 delivery to a persistent session is appended to its durable queue first;
    /// the batch's receipt goes into `durable` for the publisher to await.
    fn fan_out(&self, message: &Arc<Message>, durable: &mut Vec<queue::Durable>) -> (usize, usize) {
        thread_local! {
            static MATCHED: std::cell::RefCell<Vec<Matched>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        if message.expired(Instant::now()) {
            self.metrics.expired.fetch_add(1, Ordering::Relaxed);
            return (0, 0);
        }
        MATCHED.with(|cell| {
            let mut matched = cell.borrow_mut();
            self.subscriptions
                .read()
                .matches_from(&message.topic, message.publisher, &mut matched);
            let mut queued = 0;
            let found = matched.len();
            // One atomic load when no persistent session exists.
            let registered = self.queue.as_ref().and_then(|q| Some((q, q.registered()?)));
            for m in matched.drain(..) {
                let mut d = Delivery {
                    message: message.clone(),
                    qos: message.qos.min(m.qos),
                    // MQTT-3.3.1-12/13: Retain As Published keeps the publisher's flag.
                    retain: m.retain_as_published && message.retain,
                    subscription_ids: m.ids,
                    durable: 0,
                };
                let mut client = None;
                if let Some((q, reg)) = &registered {
                    if queue::is_durable(d.qos) {
                        if let Some(c) = reg.get(&m.mailbox.id()) {
                            d.durable = q.next_seq();
                            durable.extend(q.append(c, d.durable, &d));
                            client = Some(c);
                        }
                    }
                }
                let seq = d.durable;
                let (outcome, displaced) = m.mailbox.push_displacing(d);
                if let (Some(old), Some((q, reg))) = (displaced, &registered) {
                    // drop-oldest: the displaced message's disk copy goes too, or it would
                    // come back after a restart.
                    if old.durable != 0 {
                        if let Some(c) = reg.get(&m.mailbox.id()) {
                            q.remove(c, old.durable);
                        }
                    }
                }
                match outcome {
                    PushOutcome::Queued | PushOutcome::ReplacedOldest => queued += 1,
                    PushOutcome::SkippedOffline => {}
                    PushOutcome::Dropped | PushOutcome::Overflowed => {
                        self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                        if let (Some((q, _)), Some(c)) = (&registered, client) {
                            q.remove(c, seq);
                        }
                    }
                }
            }
            self.metrics
                .delivered
                .fetch_add(queued as u64, Ordering::Relaxed);
            (queued, found)
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
        let handling = if send_retained { 0 } else { 2 };
        self.subscribe_with(filter, mailbox, SubOptions::qos(qos), handling)
    }

    /// Subscribe with MQTT 5 options. A filter `$share/group/f` makes `mailbox` a member of
    /// the shared group `group` on `f` (one member per message, round-robin, MQTT 4.8.2);
    /// the caller keeps and unsubscribes the whole `$share/...` filter. `retain_handling` (MQTT
    /// 3.8.3.1): 0 send the matching retained values, 1 only if the subscription is new,
    /// 2 never; a shared subscription never gets them (MQTT 4.8.2). Expired retained values
    /// are not sent. Returns whether an existing subscription was replaced.
    pub fn subscribe_with(
        &self,
        filter: &TopicFilter,
        mailbox: &Arc<Mailbox>,
        opts: SubOptions,
        retain_handling: u8,
    ) -> bool {
        let shared = split_shared(filter.as_str());
        let (share, inner) = match &shared {
            Some((group, inner)) => (Some(*group), inner),
            None => (None, filter),
        };
        let replaced = self
            .subscriptions
            .write()
            .insert_with(inner, share, mailbox.clone(), opts);
        let send = share.is_none()
            && match retain_handling {
                0 => true,
                1 => !replaced,
                _ => false,
            };
        if send {
            let now = Instant::now();
            // A persistent session's copy goes to disk like a fan-out delivery: an
            // unacknowledged retained message must come back after a crash too
            // (MQTT-4.4.0-1), and the connection finds its sequence number in `durable`.
            let durable_client = self.queue.as_ref().and_then(|q| {
                let c = q.registered()?.get(&mailbox.id()).cloned()?;
                Some((q, c))
            });
            for (topic, v) in self.retained.matching(filter) {
                let (properties, expires_at) = {
                    let meta = self.retained_meta.read();
                    match meta.get(&topic) {
                        Some(m) if m.version == v.version => (m.properties.clone(), m.expires_at),
                        _ => (None, None),
                    }
                };
                if expires_at.is_some_and(|at| at <= now) {
                    self.metrics.expired.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let message = Arc::new(Message {
                    topic,
                    payload: v.payload.clone(),
                    qos: v.qos,
                    retain: true,
                    content_type: v.content_type.clone(),
                    origin: Origin::Internal,
                    properties,
                    expires_at,
                    publisher: None,
                    charge: crate::model::Charge::default(),
                });
                let mut d = Delivery {
                    qos: v.qos.min(opts.qos),
                    message,
                    retain: true,
                    subscription_ids: opts.id.into_iter().collect(),
                    durable: 0,
                };
                if let Some((q, client)) = &durable_client {
                    if queue::is_durable(d.qos) {
                        d.durable = q.next_seq();
                        // Not awaited: the connection's state record that refers to this
                        // entry is submitted later on the same channel, so a crash that
                        // keeps the state keeps the entry (batches are applied in order).
                        q.submit_append(client, d.durable, &d);
                    }
                }
                let seq = d.durable;
                let (outcome, displaced) = mailbox.push_displacing(d);
                self.forget_displaced(mailbox.id(), displaced);
                if seq != 0 && !matches!(outcome, PushOutcome::Queued | PushOutcome::ReplacedOldest)
                {
                    if let Some((q, client)) = &durable_client {
                        q.remove(client, seq);
                    }
                }
            }
        }
        replaced
    }

    /// Delete the disk copy of a delivery that `drop-oldest` displaced from a persistent
    /// session's mailbox (nobody waits).
    pub(crate) fn forget_displaced(&self, mailbox_id: u64, displaced: Option<Delivery>) {
        let Some(old) = displaced.filter(|d| d.durable != 0) else {
            return;
        };
        if let Some(q) = &self.queue {
            let client = q.registered().and_then(|reg| reg.get(&mailbox_id).cloned());
            if let Some(c) = client {
                q.remove(&c, old.durable);
            }
        }
    }

    /// Remove a subscription (a `$share/group/f` filter leaves that shared group).
    /// Returns whether it existed.
    pub fn unsubscribe(&self, filter: &TopicFilter, mailbox_id: u64) -> bool {
        match split_shared(filter.as_str()) {
            Some((group, inner)) => {
                self.subscriptions
                    .write()
                    .remove_with(&inner, Some(group), mailbox_id)
            }
            None => self.subscriptions.write().remove(filter, mailbox_id),
        }
    }

    /// Flush and stop the store writer (shutdown).
    pub fn close(&self) {
        self.retained.close();
        if let Some(q) = &self.queue {
            q.close();
        }
    }
}

/// The share name and inner filter of a shared subscription filter `$share/{name}/{filter}`
/// (MQTT 4.8.2): `None` when `filter` is not one or is not a valid one (empty name, a
/// wildcard in the name, no inner filter, or an invalid inner filter).
pub fn split_shared(filter: &str) -> Option<(&str, TopicFilter)> {
    let rest = filter.strip_prefix("$share/")?;
    let (name, inner) = rest.split_once('/')?;
    if name.is_empty() || name.contains(['+', '#']) {
        return None;
    }
    Some((name, TopicFilter::parse(inner).ok()?))
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
        properties: None,
        expires_at: None,
        publisher: None,
        charge: crate::model::Charge::default(),
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
