//! The broker core: one publish path for every protocol.
//!
//! Every write — HTTP PUT/POST/DELETE, CoAP PUT/POST/DELETE, MQTT PUBLISH, a will — goes
//! through [`Broker::publish`]: a retained message is first made durable in [`retained`] (in
//! a cluster: the write is first made durable through the [`backbone`] seam — the cluster's
//! retained authority and message log), then the message is matched against the [`trie`] of
//! subscriptions and pushed into each matching subscriber's bounded [`mailbox`]. The
//! subscription index's read lock is held only while matching; pushing happens after it is
//! released, into per-subscriber queues that never block the publisher.

pub mod backbone;
pub mod budget;
mod delivery;
pub mod doorbell;
pub mod mailbox;
pub mod retained;
pub mod trie;

mod fanout;
mod staged;
mod subscribe;

use fanout::push;
pub use staged::{Delivered, PublishOutcome, Staged, Stored};

pub use delivery::Delivery;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::durable::{Admit, DurableSessions, Receipt, Registered, Seq, Track};
use crate::model::{Message, Origin, Properties, QoS, RetainHandling, RetainedValue};
use crate::model::{SubOptions, TopicFilter, TopicName};
use crate::store::{Store, StoreError};
use backbone::{Backbone, Committed};
use mailbox::{Mailbox, PushOutcome};
use retained::{Precondition, Retained, WriteOutcome};
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
    /// Messages not delivered because their MQTT 5 Message Expiry Interval had passed.
    pub expired: AtomicU64,
    /// Requests refused by a configured limit (topic levels, subscriptions per client, ...).
    pub limits_hit: AtomicU64,
    /// MQTT 5 deliveries discarded because they exceeded the recipient's Maximum Packet
    /// Size (MQTT-3.1.2-25: discarded "as if delivered", so counted here, not in `dropped`).
    pub too_large: AtomicU64,
    /// In a cluster: messages of the shared log deleted by its retention before a
    /// persistent session that may have been waiting for them came back (an upper bound:
    /// the log no longer says which were for it).
    pub log_retention: AtomicU64,
}

/// The MQTT 5 parts of a retained value that the store does not keep (in memory only):
/// its application properties and expiry, tagged with the value's version so a newer
/// value never inherits an older one's.
#[derive(Debug)]
struct RetainedMeta {
    /// Version of the retained value these belong to.
    version: u64,
    /// Application properties as published.
    properties: Option<Arc<Properties>>,
    /// When the retained message expires (it is then no longer sent to new subscribers).
    expires_at: Option<Instant>,
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
    /// `backbone.clustered()`, read once: a single node pays one branch per publish.
    clustered: bool,
    /// Whether persistent sessions are kept in the cluster's log (`durable.logged()`, read
    /// once): a single node pays one branch per delivery.
    logged: bool,
    /// MQTT 5 properties and expiry of retained values that have them; written only by
    /// retained MQTT 5 publishes, read when a subscription sends retained values.
    retained_meta: RwLock<HashMap<TopicName, RetainedMeta>>,
    /// Counters.
    pub metrics: Metrics,
    /// The gateway's operational counters (`/metrics`, `$SYS`): here because every
    /// front-end holds the broker.
    pub ops: Arc<crate::metrics::Metrics>,
    /// The owner of persistent sessions' durable state (issue 3); `None` when sessions are
    /// not persisted.
    durable: Option<Arc<DurableSessions>>,
    /// The budget every subscriber's mailbox draws on (`[limits] max_queued_bytes`, issue
    /// 16): no limit until [`Broker::budget`]'s is set.
    budget: Arc<budget::Budget>,
    /// In a cluster: live deliveries held back, by mailbox, while a resumed persistent
    /// session's queue is replayed from the log into its mailbox (see
    /// [`crate::durable::Track`]); empty otherwise.
    held: parking_lot::Mutex<HashMap<u64, Vec<(u64, Delivery)>>>,
}

/// Most live deliveries held back for one session while its queue is replayed; more are
/// dropped (counted), as a full mailbox would.
const MAX_HELD: usize = 65_536;

/// How a delivery reaches a mailbox: in a cluster, a persistent session kept in the log
/// takes every logged message from the log, in log order (see [`crate::durable::Track`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// A publish accepted on this node, fanned out once durable: a logged message skips
    /// the sessions kept in the log (hearing the log brings it to them).
    Local,
    /// A message heard from the log, published on another node.
    Heard,
    /// One of this node's own messages heard back from the log: only for the sessions
    /// kept in the log.
    HeardOwn,
    /// A resumed session's queue, replayed from the log.
    Replay,
    /// Anything else (a retained value at SUBSCRIBE, a shared group's message, a restored
    /// queue entry): pushed as it is.
    Other,
}

impl Route {
    /// Whether the message comes from hearing the log (the node's marks move with it).
    fn heard(self) -> bool {
        matches!(self, Route::Heard | Route::HeardOwn)
    }
}

impl Broker {
    /// A broker over `store`, loading its retained values.
    pub fn new<S: Store>(store: S, backbone: Arc<dyn Backbone>) -> Result<Arc<Self>, StoreError> {
        let broker = Arc::new(Broker {
            retained: Retained::open(store)?,
            subscriptions: RwLock::new(SubscriptionIndex::new()),
            clustered: backbone.clustered(),
            logged: false,
            backbone,
            retained_meta: RwLock::new(HashMap::new()),
            metrics: Metrics::default(),
            ops: crate::metrics::Metrics::new(),
            durable: None,
            budget: budget::Budget::new(None),
            held: parking_lot::Mutex::new(HashMap::new()),
        });
        broker.backbone.attach(Arc::downgrade(&broker));
        Ok(broker)
    }

    /// A broker over `store` whose persistent MQTT sessions live in `sessions` (kept by
    /// the local session writer).
    pub fn with_sessions<S: Store, Q: crate::store::session::SessionStore>(
        store: S,
        sessions: Q,
        backbone: Arc<dyn Backbone>,
    ) -> Result<Arc<Self>, StoreError> {
        Self::with_durable(store, DurableSessions::local(sessions)?, backbone)
    }

    /// A broker over `store` whose persistent MQTT sessions are kept by `durable`, over
    /// whichever [`crate::durable::Keeper`] it was made with.
    pub fn with_durable<S: Store>(
        store: S,
        durable: Arc<DurableSessions>,
        backbone: Arc<dyn Backbone>,
    ) -> Result<Arc<Self>, StoreError> {
        let broker = Arc::new(Broker {
            retained: Retained::open(store)?,
            subscriptions: RwLock::new(SubscriptionIndex::new()),
            clustered: backbone.clustered(),
            logged: durable.logged(),
            backbone,
            retained_meta: RwLock::new(HashMap::new()),
            metrics: Metrics::default(),
            ops: crate::metrics::Metrics::new(),
            durable: Some(durable),
            budget: budget::Budget::new(None),
            held: parking_lot::Mutex::new(HashMap::new()),
        });
        broker.backbone.attach(Arc::downgrade(&broker));
        Ok(broker)
    }

    /// The backbone: [`Backbone::ready`] for readiness, [`Backbone::node`] for `$SYS`.
    pub fn backbone(&self) -> &Arc<dyn Backbone> {
        &self.backbone
    }

    /// Whether this broker is one node of a cluster (`--cluster`).
    pub fn clustered(&self) -> bool {
        self.clustered
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

    /// The owner of persistent sessions' durable state, when sessions are persisted.
    pub fn durable(&self) -> Option<&Arc<DurableSessions>> {
        self.durable.as_ref()
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
        if self.clustered && !node_local(&message.topic) {
            // The cluster decides (retained: compare-and-set in its authority) and logs it;
            // nothing is delivered here before that is durable.
            let (reply, rx) = oneshot::channel();
            self.backbone.submit(backbone::Write {
                message: message.clone(),
                precondition,
                reply,
            });
            return Staged {
                message: Some(message),
                write: None,
                refused: None,
                cluster: Some(rx),
            };
        }
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
            cluster: None,
        }
    }

    /// Second step: tell everyone about a message whose retained write (if any) is durable.
    /// Synchronous, so a sender that delivers its staged publishes in staging order keeps
    /// MQTT's per-publisher ordering (MQTT 4.6) while their writes overlap.
    pub fn deliver(&self, stored: Stored) -> Delivered {
        let Stored {
            message,
            retained,
            sequence,
        } = stored;
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
            Origin::Http(_) => self.ops.received(crate::metrics::Protocol::Http),
            Origin::Coap(_) => self.ops.received(crate::metrics::Protocol::Coap),
            Origin::Mqtt(_) => self.ops.received(crate::metrics::Protocol::Mqtt),
            Origin::Bridge(_) | Origin::Backbone | Origin::Internal => {}
        }
        let message = Arc::new(message);
        let mut durable = Vec::new();
        let (receivers, mut matched) =
            self.fan_out(&message, sequence, Some(&mut durable), Route::Local);
        if self.clustered {
            // Other nodes' subscribers are not known here: no MQTT 5 0x10 No matching
            // subscribers in a cluster.
            matched = matched.max(1);
        }
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
    /// `sequence` is its place in the cluster's message log. Returns how many local
    /// subscribers it was queued to.
    pub fn deliver_remote(&self, message: Arc<Message>, sequence: Option<Seq>) -> usize {
        self.fan_out(&message, sequence, None, Route::Heard).0
    }

    /// One of this node's own messages, heard back from the cluster's log at `sequence`:
    /// delivered only to the persistent sessions kept in the log, which take every logged
    /// message from the log (everyone else had it when it was published here).
    pub fn deliver_own(&self, message: Arc<Message>, sequence: Seq) {
        self.fan_out(&message, Some(sequence), None, Route::HeardOwn);
    }

    /// Hearing the log passed this node's own message `sequence`: when no persistent
    /// session is kept in the log here, nothing more is needed (true). False: there are
    /// such sessions, and the message must be decoded and given to
    /// [`Broker::deliver_own`]. Decided under the subscription index's read lock, like a
    /// fan-out, so a subscription made meanwhile is dated after it.
    pub fn pass_own(&self, sequence: Seq) -> bool {
        let Some(durable) = self.durable.as_ref().filter(|d| d.logged()) else {
            return true;
        };
        let subs = self.subscriptions.read();
        if durable.tracked() {
            return false;
        }
        durable
            .marks()
            .matched
            .store(sequence.get(), Ordering::Release);
        drop(subs);
        durable.marks().fanned(sequence.get());
        true
    }

    /// A resumed persistent session kept in the log starts replaying its queue into
    /// `mailbox`: live deliveries are held back until [`Broker::end_replay`].
    pub fn begin_replay(&self, track: &Track) {
        track.begin_replay();
    }

    /// Push a message replayed from the log (`d.log_seq` set) into a resumed session's
    /// mailbox, with its overflow policy.
    pub fn push_replayed(&self, mailbox: &Mailbox, track: &Track, d: Delivery) -> PushOutcome {
        self.push_tracked(track, mailbox, d, Route::Replay)
    }

    /// The replay covered the log up to `high`: the held live deliveries after it go into
    /// the mailbox (in order, after the replayed ones), those at or before it were
    /// duplicates; from now on a live delivery at or before it is dropped.
    pub fn end_replay(&self, mailbox: &Mailbox, track: &Track, high: u64) {
        let held = track.end_replay(high, || {
            self.held.lock().remove(&mailbox.id()).unwrap_or_default()
        });
        for (seq, d) in held {
            self.push_settled(track, mailbox, seq, d);
        }
    }

    /// A replay failed (the connection is refused): what was held for it goes.
    pub fn abort_replay(&self, mailbox: &Mailbox) {
        self.held.lock().remove(&mailbox.id());
    }

    /// A message of a cluster-wide shared group, fetched by this node for `member`
    /// (cluster mode; the backbone picked the member): queued like a fan-out delivery at
    /// min(published QoS, granted). Returns whether it was queued (an expired message
    /// counts as taken: nobody else should get it). A refusal is not counted here: the
    /// backbone offers the message to the group's other local members, and counts it with
    /// [`Broker::drop_shared`] only if it is finally dropped.
    pub fn deliver_shared(
        &self,
        message: &Arc<Message>,
        sequence: Option<Seq>,
        member: &Arc<Mailbox>,
        opts: SubOptions,
    ) -> bool {
        if message.expired(Instant::now()) {
            self.metrics.expired.fetch_add(1, Ordering::Relaxed);
            // Nothing to deliver, and nobody else should get it either.
            return true;
        }
        let matched = Matched {
            mailbox: member.clone(),
            qos: opts.qos,
            retain_as_published: opts.retain_as_published,
            ids: opts.id.into_iter().collect(),
        };
        let registered = self
            .durable
            .as_deref()
            .and_then(DurableSessions::registered);
        let outcome = self.offer_matched(
            message,
            sequence,
            matched,
            registered.as_ref(),
            None,
            Route::Other,
        );
        let queued = matches!(
            outcome,
            Some(mailbox::PushOutcome::Queued | mailbox::PushOutcome::ReplacedOldest)
        );
        if queued {
            self.metrics.delivered.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// A shared group's message no local member could take, dropped (not offered again:
    /// part of its log message was delivered): counted as a full mailbox's drop is on a
    /// single node, where the one member picked refusing it drops it.
    pub fn drop_shared(&self) {
        self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The retained values, for a clustered backbone keeping this node's mirror of the
    /// cluster's authority current (`Retained::mirror_*`).
    pub fn retained(&self) -> &Retained {
        &self.retained
    }

    /// Remember the MQTT 5 properties and expiry of a retained value heard from the
    /// cluster (version `version`), as a local retained write does in [`Broker::deliver`].
    pub fn note_mirrored_meta(
        &self,
        topic: &TopicName,
        version: u64,
        properties: Option<Arc<Properties>>,
        expires_at: Option<Instant>,
    ) {
        if properties.is_none() && expires_at.is_none() {
            if self.retained_meta.read().contains_key(topic) {
                let mut map = self.retained_meta.write();
                if map.get(topic).is_some_and(|m| m.version < version) {
                    map.remove(topic);
                }
            }
            return;
        }
        let mut map = self.retained_meta.write();
        if map.get(topic).is_none_or(|m| m.version < version) {
            map.insert(
                topic.clone(),
                RetainedMeta {
                    version,
                    properties,
                    expires_at,
                },
            );
        }
    }

    /// Flush and stop the store writer (shutdown).
    pub fn close(&self) {
        self.backbone.close();
        self.retained.close();
        if let Some(d) = &self.durable {
            d.close();
        }
    }
}

/// Whether a topic stays on this node in a cluster: `$SYS/...`, each node's own
/// statistics (issue 11, point 7), neither sent to the cluster nor heard from it.
pub fn node_local(topic: &TopicName) -> bool {
    let t = topic.as_str();
    t == "$SYS" || t.starts_with("$SYS/")
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
mod tests;
