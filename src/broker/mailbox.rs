//! Bounded per-subscriber queues with an explicit overflow policy.
//!
//! Fan-out never waits on a subscriber: it pushes into the subscriber's [`Mailbox`] under that
//! mailbox's own short lock and moves on, so a slow subscriber only ever fills its own queue.
//! What happens when it is full is the configured [`OverflowPolicy`], counted and logged.
//!
//! Every mailbox of a broker also draws on one [`Budget`] (`[limits] max_queued_bytes`):
//! a delivery is queued only if the budget has room for it, and when the budget is spent
//! the mailbox applies its overflow policy as if it were full. A capacity of 0 means no
//! limit of the mailbox's own (mosquitto's `max_queued_messages 0`): only the budget bounds it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;

use super::budget::Budget;
use super::doorbell::{Doorbell, Rung};
use super::Delivery;
use crate::model::QoS;

/// What a full mailbox does with one more message.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema, Default,
)]
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
    /// Wakes the subscriber's task when something arrives. A doorbell rather than a
    /// `Notify`: a mailbox has one consumer, and a waiting consumer then stores nothing
    /// (see [`Doorbell`]).
    bell: Doorbell,
    /// Bound on queued messages (`usize::MAX` when set to 0: no bound of its own);
    /// changeable (an MQTT bridge's queue takes its own bound when it resumes its session).
    capacity: AtomicUsize,
    /// The broker's budget for queued bytes, shared by every mailbox; taken from for each
    /// queued delivery and given back when it leaves.
    budget: Arc<Budget>,
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

/// A mailbox's bound on queued deliveries: `capacity`, or none of its own for 0 (as
/// mosquitto's `max_queued_messages 0`; the budget still bounds it).
fn bound(capacity: usize) -> usize {
    if capacity == 0 {
        usize::MAX
    } else {
        capacity
    }
}

impl Mailbox {
    /// A new empty mailbox with its own id and a budget of its own without a limit (tests,
    /// benches); a broker's front-ends use [`Mailbox::with_budget`] with the broker's.
    /// `capacity` 0: no limit of its own.
    pub fn new(capacity: usize, policy: OverflowPolicy) -> Arc<Self> {
        Self::with_budget(capacity, policy, Budget::new(None))
    }

    /// A new empty mailbox drawing on `budget` (see [`crate::broker::Broker::mailbox`]).
    /// `capacity` 0: no limit of its own, only the budget's.
    pub fn with_budget(capacity: usize, policy: OverflowPolicy, budget: Arc<Budget>) -> Arc<Self> {
        Arc::new(Mailbox {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            queue: Mutex::new(VecDeque::new()),
            bell: Doorbell::new(),
            capacity: AtomicUsize::new(bound(capacity)),
            budget,
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

    /// Change the bound (0: no bound of its own, only the budget's). Deliveries already
    /// queued beyond a smaller bound stay; only new pushes see it.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(bound(capacity), Ordering::Relaxed);
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
        // Whether the budget, not the capacity, refused the delivery.
        let mut spent = false;
        let outcome = {
            let mut q = self.queue.lock();
            if q.len() < self.capacity.load(Ordering::Relaxed) && self.budget.take_for(&d, false) {
                q.push_back(d);
                PushOutcome::Queued
            } else {
                spent = q.len() < self.capacity.load(Ordering::Relaxed);
                match self.policy {
                    OverflowPolicy::DropNewest => PushOutcome::Dropped,
                    OverflowPolicy::DropOldest => match q.pop_front() {
                        Some(old) => {
                            self.budget.give_for(&old);
                            // Its replacement may cost more than it frees (a message no
                            // queue held yet): bounded by one message per push.
                            self.budget.take_for(&d, true);
                            q.push_back(d);
                            displaced = Some(old);
                            PushOutcome::ReplacedOldest
                        }
                        // Nothing of its own to give up: the budget is spent by others.
                        None => PushOutcome::Dropped,
                    },
                    OverflowPolicy::Disconnect => {
                        self.overflowed.store(true, Ordering::Release);
                        PushOutcome::Overflowed
                    }
                }
            }
        };
        if spent {
            self.budget.note_drop(self.id, self.policy);
        }
        match outcome {
            PushOutcome::Queued | PushOutcome::SkippedOffline => {}
            PushOutcome::ReplacedOldest | PushOutcome::Dropped | PushOutcome::Overflowed => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_power_of_two() {
                    tracing::warn!(
                        mailbox = self.id,
                        dropped = n,
                        policy = ?self.policy,
                        capacity = self.capacity.load(Ordering::Relaxed),
                        "subscriber queue full; message dropped"
                    );
                }
            }
        }
        self.bell.ring();
        (outcome, displaced)
    }

    /// Take the next delivery, if any.
    pub fn pop(&self) -> Option<Delivery> {
        let d = self.queue.lock().pop_front();
        if let Some(d) = &d {
            self.budget.give_for(d);
        }
        d
    }

    /// Put a delivery back at the front (the consumer could not send it yet). It was
    /// queued before, so it goes back whatever the capacity and the budget.
    pub fn push_front(&self, d: Delivery) {
        self.budget.take_for(&d, true);
        self.queue.lock().push_front(d);
    }

    /// Take up to `max` deliveries at once, to batch writes.
    pub fn drain_into(&self, out: &mut Vec<Delivery>, max: usize) {
        let mut q = self.queue.lock();
        let n = q.len().min(max);
        for d in q.drain(..n) {
            self.budget.give_for(&d);
            out.push(d);
        }
    }

    /// Ready when something may have been pushed since the last ready wait: for the
    /// mailbox's one consumer (its waker is the one woken).
    pub fn notified(&self) -> Rung<'_> {
        self.bell.rung()
    }

    /// [`Mailbox::notified`] as a poll, for a consumer that polls its sources itself.
    pub fn poll_notified(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.bell.poll_rung(cx)
    }

    /// Give back the memory of the queue if it is empty (its capacity stays after a burst
    /// otherwise): for a consumer that finds its connection quiet.
    pub fn trim(&self) {
        let mut q = self.queue.lock();
        if q.is_empty() && q.capacity() > 0 {
            *q = VecDeque::new();
        }
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

impl Drop for Mailbox {
    fn drop(&mut self) {
        // What is still queued leaves with the mailbox.
        for d in self.queue.get_mut().iter() {
            self.budget.give_for(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::budget::{DELIVERY_COST, MESSAGE_OVERHEAD};
    use crate::model::{Message, Origin, TopicName};
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
                charge: crate::model::Charge::default(),
            }),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Vec::new(),
            durable: None,
            log_seq: None,
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
    fn capacity_0_is_no_limit_of_its_own() {
        let m = Mailbox::new(0, OverflowPolicy::DropNewest);
        for n in 0..=255u8 {
            assert_eq!(m.push(d(n)), PushOutcome::Queued);
        }
        assert_eq!(m.len(), 256);
    }

    #[test]
    fn a_spent_budget_applies_each_policy_and_is_given_back() {
        let budget = Budget::new(Some(2 * DELIVERY_COST + 2 * (MESSAGE_OVERHEAD + 2)));
        let newest = Mailbox::with_budget(0, OverflowPolicy::DropNewest, budget.clone());
        assert_eq!(newest.push(d(1)), PushOutcome::Queued);
        assert_eq!(newest.push(d(2)), PushOutcome::Queued);
        assert_eq!(
            newest.push(d(3)),
            PushOutcome::Dropped,
            "the budget is spent"
        );
        assert_eq!(budget.dropped(), 1);
        assert_eq!(newest.dropped(), 1);
        let oldest = Mailbox::with_budget(0, OverflowPolicy::DropOldest, budget.clone());
        assert_eq!(
            oldest.push(d(4)),
            PushOutcome::Dropped,
            "nothing of its own to displace"
        );
        assert_eq!(newest.pop().unwrap().message.payload[0], 1);
        assert_eq!(oldest.push(d(5)), PushOutcome::Queued);
        assert_eq!(oldest.push(d(6)), PushOutcome::ReplacedOldest);
        let closing = Mailbox::with_budget(0, OverflowPolicy::Disconnect, budget.clone());
        assert_eq!(closing.push(d(7)), PushOutcome::Overflowed);
        assert!(closing.overflowed());
        assert_eq!(oldest.pop().unwrap().message.payload[0], 6);
        drop((newest, oldest, closing));
        assert_eq!(budget.used(), 0, "everything queued was given back");
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
