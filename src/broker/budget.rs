//! The global budget for queued message bytes (`[limits] max_queued_bytes`, issue 16).
//!
//! Every [`super::mailbox::Mailbox`] — MQTT sessions (online or away), CoAP observers over
//! UDP, TCP and DTLS, SSE streams — takes from one [`Budget`] per broker before it queues
//! a delivery, and gives back when the delivery leaves the queue. Per-subscriber limits
//! (`max_queued`, `notify_queue`, `sse_queue`) bound one subscriber; the budget bounds all
//! of them together, so no mix of slow, stalled or away subscribers can make the gateway
//! hold more queued messages than the machine can afford. When it is spent, the mailbox
//! that wants to queue applies its own overflow policy (drop the new message, drop its
//! oldest, or disconnect), exactly as if it were full; such drops are counted here.
//!
//! What is counted is what is held: a message shared by many queues (one `Arc<Message>`,
//! one payload `Bytes`) is charged *once*, when the first queue takes it, and given back
//! when the last reference to it goes ([`crate::model::Charge`]); each queued delivery is charged its own
//! small fixed cost ([`DELIVERY_COST`]). So a 1 KiB message fanned out to 10,000 stalled
//! subscribers costs ~1 KiB plus 10,000 small entries, not 10 MB.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::Delivery;
use crate::model::{Message, Release};

/// What one queued delivery costs besides its message: the entry itself (a slot of the
/// queue holds exactly this) and its MQTT 5 subscription identifiers.
pub const DELIVERY_COST: usize = std::mem::size_of::<Delivery>();

/// What a message costs while any queue holds it, besides its payload and topic: the
/// `Message` itself and its `Arc` header.
pub const MESSAGE_OVERHEAD: usize = std::mem::size_of::<Message>() + 16;

/// How often a spent budget is logged at most (the drops are counted every time).
const LOG_EVERY_MS: u64 = 10_000;

/// One broker's budget for queued message bytes. See the module documentation.
#[derive(Debug)]
pub struct Budget {
    /// Most bytes queued at once; `usize::MAX`: no limit.
    limit: AtomicUsize,
    /// Bytes charged now (messages once, deliveries each).
    used: AtomicUsize,
    /// Deliveries not queued (or displaced) because the budget was spent.
    dropped: AtomicU64,
    /// Milliseconds after `epoch` of the last warning, so a spent budget under load logs
    /// once per [`LOG_EVERY_MS`] instead of once per message.
    last_log_ms: AtomicU64,
    /// Origin of `last_log_ms`.
    epoch: Instant,
}

impl Budget {
    /// A budget of `limit` bytes (`None`: no limit, only counted).
    pub fn new(limit: Option<usize>) -> Arc<Self> {
        Arc::new(Budget {
            limit: AtomicUsize::new(limit.unwrap_or(usize::MAX)),
            used: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            last_log_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Change the limit (`None`: none). Queues already over it are not trimmed; they
    /// drain, and nothing new is queued until they are under it.
    pub fn set_limit(&self, limit: Option<usize>) {
        self.limit
            .store(limit.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// The limit in bytes; `None` when there is none.
    pub fn limit(&self) -> Option<usize> {
        match self.limit.load(Ordering::Relaxed) {
            usize::MAX => None,
            n => Some(n),
        }
    }

    /// Bytes held by queued messages now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Deliveries dropped (not queued, or displaced by `drop-oldest`) because the budget
    /// was spent, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Take `n` bytes if they fit under the limit.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    /// Take `n` bytes whatever the limit: for what is already held elsewhere and only
    /// moves (a delivery put back at the front of its queue), and for the one message that
    /// replaces a displaced one, so the overshoot is bounded by one message per push.
    pub(crate) fn force_take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Give back `n` bytes.
    pub(crate) fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Count one delivery dropped because the budget is spent, and say so in the log at
    /// most every ten seconds.
    pub(crate) fn note_drop(&self, mailbox: u64, policy: super::mailbox::OverflowPolicy) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if (n == 1 || now.saturating_sub(last) >= LOG_EVERY_MS)
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                mailbox,
                ?policy,
                queued_bytes = self.used(),
                limit = self.limit.load(Ordering::Relaxed),
                dropped = n,
                "[limits] max_queued_bytes reached: queued messages dropped by the subscribers' overflow policy"
            );
        }
    }

    /// Take what queueing `d` costs, if it fits (always with `force`): its entry, and its
    /// message when no queue holds that yet.
    pub(crate) fn take_for(self: &Arc<Self>, d: &Delivery, force: bool) -> bool {
        let entry = entry_cost(d);
        let message = Self::cost_of(&d.message);
        if force {
            self.force_take(entry + message);
        } else if !self.try_take(entry + message) {
            return false;
        }
        if message > 0 {
            self.hold(&d.message, message);
        }
        true
    }

    /// Give back the entry of a delivery that left its queue (its message is given back
    /// when it is freed).
    pub(crate) fn give_for(&self, d: &Delivery) {
        self.give(entry_cost(d));
    }

    /// Record that `message` holds `bytes` already taken.
    fn hold(self: &Arc<Self>, message: &Message, bytes: usize) {
        // Only one fan-out pushes a given message at a time; if another charged it
        // meanwhile, the bytes just taken go back.
        if !message.charge.hold(self.clone(), bytes) {
            self.give(bytes);
        }
    }

    /// Whether `message` still needs charging (the cost of queueing it for the first time).
    pub(crate) fn cost_of(message: &Message) -> usize {
        if message.charge.is_held() {
            0
        } else {
            message_cost(message)
        }
    }
}

/// What one queued delivery costs besides its message.
fn entry_cost(d: &Delivery) -> usize {
    DELIVERY_COST + 4 * d.subscription_ids.len()
}

/// What a message costs while it is held: payload, topic, content type and the fixed
/// overhead. (MQTT 5 properties are bounded by the packet size and rare; not counted.)
fn message_cost(m: &Message) -> usize {
    m.payload.len()
        + m.topic.as_str().len()
        + m.content_type.as_deref().map_or(0, str::len)
        + MESSAGE_OVERHEAD
}

impl Release for Budget {
    fn release(&self, bytes: usize) {
        self.give(bytes);
    }
}

/// The default budget: a quarter of the memory this process may use — the smaller of
/// the machine's RAM (`/proc/meminfo`) and the cgroup's memory limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`) — or 1 GiB where neither can be read.
pub fn default_limit() -> usize {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| meminfo_total(&s));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .find_map(|s| s.trim().parse::<u64>().ok());
    let available = match (ram, cgroup) {
        (Some(r), Some(c)) => r.min(c),
        (Some(r), None) => r,
        (None, Some(c)) => c,
        (None, None) => 4 << 30,
    };
    usize::try_from(available / 4).unwrap_or(usize::MAX)
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Charge, Origin, QoS, TopicName};
    use bytes::Bytes;

    fn delivery(m: &Arc<Message>) -> Delivery {
        Delivery {
            message: m.clone(),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Vec::new(),
            durable: None,
            log_seq: None,
        }
    }

    fn message(len: usize) -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::parse("t").unwrap(),
            payload: Bytes::from(vec![0u8; len]),
            qos: QoS::AtMostOnce,
            retain: false,
            content_type: None,
            origin: Origin::Internal,
            properties: None,
            expires_at: None,
            publisher: None,
            charge: Charge::default(),
        })
    }

    #[test]
    fn a_message_is_charged_once_and_given_back_when_freed() {
        let b = Budget::new(Some(10_000));
        let m = message(1000);
        let (d1, d2) = (delivery(&m), delivery(&m));
        assert!(b.take_for(&d1, false));
        let once = b.used();
        assert_eq!(once, DELIVERY_COST + 1000 + 1 + MESSAGE_OVERHEAD);
        assert!(b.take_for(&d2, false));
        assert_eq!(
            b.used(),
            once + DELIVERY_COST,
            "a second queue does not charge the payload again"
        );
        let copy = (*m).clone();
        assert_eq!(
            Budget::cost_of(&copy),
            1000 + 1 + MESSAGE_OVERHEAD,
            "a clone is a message of its own"
        );
        b.give_for(&d1);
        b.give_for(&d2);
        drop((m, d1, d2));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn the_limit_refuses_what_does_not_fit_and_force_does_not() {
        let b = Budget::new(Some(100));
        assert!(b.try_take(60));
        assert!(!b.try_take(60));
        b.force_take(60);
        assert_eq!(b.used(), 120);
        b.give(120);
        let d = delivery(&message(1000));
        assert!(!b.take_for(&d, false));
        assert_eq!(b.used(), 0);
        assert!(b.take_for(&d, true));
        assert!(b.used() > 1000);
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       24684544 kB\nMemFree:          219012 kB\n";
        assert_eq!(meminfo_total(text), Some(24_684_544 * 1024));
        assert_eq!(meminfo_total("nothing"), None);
        assert!(default_limit() > 0);
    }
}
