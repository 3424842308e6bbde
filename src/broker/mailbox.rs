//! Bounded per-subscriber queues with an explicit overflow policy.
//!
//! Fan-out never waits on a subscriber: it pushes into the subscriber's [`Mailbox`] under that
//! mailbox's own short lock and moves on, so a slow subscriber only ever fills its own queue.
//! What happens when it is full is the configured [`OverflowPolicy`], counted and logged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::Notify;

use super::Delivery;
use crate::model::QoS;

/// What a full mailbox does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Keep what is queued and drop the new message (mosquitto's behaviour, but counted).
    #[default]
    DropNewest,
    /// Drop the oldest queued message to make room: for subscribers that want the latest.
    DropOldest,
    /// Close the mailbox: the subscriber's connection is dropped rather than lose messages
    /// silently; a persistent session keeps what was queued.
    Disconnect,
}

/// Why a push did not enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued.
    Queued,
    /// Queued after dropping the oldest message.
    ReplacedOldest,
    /// Not queued: the mailbox is full (drop-newest) or closed.
    Dropped,
    /// Not queued, and the mailbox now asks its owner to disconnect.
    Overflowed,
    /// Not queued: a QoS 0 message for a subscriber that is away.
    SkippedOffline,
}

/// A subscriber's queue. Held by the subscription index (to push) and by the subscriber's
/// task (to pop).
#[derive(Debug)]
pub struct Mailbox {
    /// Identity in the subscription index: overlapping subscriptions of one subscriber are
    /// merged into one delivery by this id (MQTT-3.3.5-1).
    id: u64,
    /// The queue itself; its lock is held only to push or pop, never across I/O.
    queue: Mutex<VecDeque<Delivery>>,
    /// Wakes the subscriber's task when something arrives.
    notify: Notify,
    /// Bound on queued messages.
    capacity: usize,
    /// What happens when the bound is reached.
    policy: OverflowPolicy,
    /// Messages dropped by the policy, for metrics and logs.
    dropped: AtomicU64,
    /// Set by [`OverflowPolicy::Disconnect`] so the owner can close its connection.
    overflowed: AtomicBool,
    /// Whether the subscriber is connected. An away MQTT session queues only QoS 1/2
    /// messages (MQTT 3.1.2.4 leaves QoS 0 optional; like mosquitto, ponte drops them).
    online: AtomicBool,
    /// QoS 0 messages not queued because the subscriber was away (not an overflow).
    skipped_offline: AtomicU64,
    /// `[mqtt] queue_qos0`: queue QoS 0 messages for an away subscriber too (in memory
    /// only; default off, like mosquitto).
    queue_qos0: AtomicBool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Mailbox {
    /// A new empty mailbox with its own id.
    pub fn new(capacity: usize, policy: OverflowPolicy) -> Arc<Self> {
        Arc::new(Mailbox {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            policy,
            dropped: AtomicU64::new(0),
            overflowed: AtomicBool::new(false),
            online: AtomicBool::new(true),
            skipped_offline: AtomicU64::new(0),
            queue_qos0: AtomicBool::new(false),
        })
    }

    /// Queue QoS 0 messages while the subscriber is away (`[mqtt] queue_qos0`).
    pub fn set_queue_qos0(&self, queue: bool) {
        self.queue_qos0.store(queue, Ordering::Relaxed);
    }

    /// The mailbox's identity.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Enqueue one delivery, applying the overflow policy.
    pub fn push(&self, d: Delivery) -> PushOutcome {
        self.push_displacing(d).0
    }

    /// [`Mailbox::push`], also handing back the delivery that `drop-oldest` displaced (with
    /// [`PushOutcome::ReplacedOldest`]), so a durable copy of it can be deleted too.
    pub fn push_displacing(&self, d: Delivery) -> (PushOutcome, Option<Delivery>) {
        if d.qos == QoS::AtMostOnce
            && !self.online.load(Ordering::Acquire)
            && !self.queue_qos0.load(Ordering::Relaxed)
        {
            let n = self.skipped_offline.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_power_of_two() {
                tracing::info!(
                    mailbox = self.id,
                    skipped = n,
                    "QoS 0 message not queued for an away session (queue_qos0 = false)"
                );
            }
            return (PushOutcome::SkippedOffline, None);
        }
        let mut displaced = None;
        let outcome = {
            let mut q = self.queue.lock();
            if q.len() < self.capacity {
                q.push_back(d);
                PushOutcome::Queued
            } else {
                match self.policy {
                    OverflowPolicy::DropNewest => PushOutcome::Dropped,
                    OverflowPolicy::DropOldest => {
                        displaced = q.pop_front();
                        q.push_back(d);
                        PushOutcome::ReplacedOldest
                    }
                    OverflowPolicy::Disconnect => {
                        self.overflowed.store(true, Ordering::Release);
                        PushOutcome::Overflowed
                    }
                }
            }
        };
        match outcome {
            PushOutcome::Queued | PushOutcome::SkippedOffline => {}
            PushOutcome::ReplacedOldest | PushOutcome::Dropped | PushOutcome::Overflowed => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_power_of_two() {
                    tracing::warn!(
                        mailbox = self.id,
                        dropped = n,
                        policy = ?self.policy,
                        capacity = self.capacity,
                        "subscriber queue full; message dropped"
                    );
                }
            }
        }
        self.notify.notify_one();
        (outcome, displaced)
    }

    /// Take the next delivery, if any.
    pub fn pop(&self) -> Option<Delivery> {
        self.queue.lock().pop_front()
    }

    /// Put a delivery back at the front (the consumer could not send it yet).
    pub fn push_front(&self, d: Delivery) {
        self.queue.lock().push_front(d);
    }

    /// Take up to `max` deliveries at once, to batch writes.
    pub fn drain_into(&self, out: &mut Vec<Delivery>, max: usize) {
        let mut q = self.queue.lock();
        let n = q.len().min(max);
        out.extend(q.drain(..n));
    }

    /// Wait until something may have been pushed.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Number of queued deliveries.
    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages dropped by the overflow policy so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether [`OverflowPolicy::Disconnect`] fired: the owner should drop its connection.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Mark the subscriber connected or away (see the `online` field).
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    /// QoS 0 messages skipped while the subscriber was away.
    pub fn skipped_offline(&self) -> u64 {
        self.skipped_offline.load(Ordering::Relaxed)
    }

    /// Clear the overflow flag (a reconnecting persistent session starts afresh).
    pub fn reset_overflow(&self) {
        self.overflowed.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TopicName;
    use crate::model::{Message, Origin};
    use bytes::Bytes;

    fn d(n: u8) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: TopicName::parse("t").unwrap(),
                payload: Bytes::from(vec![n]),
                qos: QoS::AtMostOnce,
                retain: false,
                content_type: None,
                origin: Origin::Internal,
                properties: None,
                expires_at: None,
                publisher: None,
            }),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Vec::new(),
            durable: 0,
            log_seq: 0,
        }
    }

    #[test]
    fn drop_newest_keeps_the_queue_and_counts() {
        let m = Mailbox::new(2, OverflowPolicy::DropNewest);
        assert_eq!(m.push(d(1)), PushOutcome::Queued);
        assert_eq!(m.push(d(2)), PushOutcome::Queued);
        assert_eq!(m.push(d(3)), PushOutcome::Dropped);
        assert_eq!(m.dropped(), 1);
        assert_eq!(m.pop().unwrap().message.payload[0], 1);
    }

    #[test]
    fn drop_oldest_keeps_the_latest() {
        let m = Mailbox::new(2, OverflowPolicy::DropOldest);
        m.push(d(1));
        m.push(d(2));
        assert_eq!(m.push(d(3)), PushOutcome::ReplacedOldest);
        assert_eq!(m.pop().unwrap().message.payload[0], 2);
        assert_eq!(m.pop().unwrap().message.payload[0], 3);
    }

    #[test]
    fn disconnect_policy_flags_the_owner() {
        let m = Mailbox::new(1, OverflowPolicy::Disconnect);
        m.push(d(1));
        assert!(!m.overflowed());
        assert_eq!(m.push(d(2)), PushOutcome::Overflowed);
        assert!(m.overflowed());
        assert_eq!(m.len(), 1);
    }
}
