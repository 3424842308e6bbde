//! Counters of one webhook, read by [`crate::Gateway::webhook_stats`]: the numbers behind
//! `ponte_webhook_deliveries_total{webhook,outcome}` and `ponte_webhook_queue{webhook}`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::broker::mailbox::Mailbox;

/// Live counters, shared by a webhook's tasks.
#[derive(Debug)]
pub struct Stats {
    /// Events answered 2xx.
    pub delivered: AtomicU64,
    /// Events the endpoint refused for good (4xx other than 408/429, redirects).
    pub rejected: AtomicU64,
    /// Events given up after `max_retries` re-sends.
    pub failed: AtomicU64,
    /// Events dropped because `queue` events were already held.
    pub dropped: AtomicU64,
    /// Re-sends so far.
    pub retries: AtomicU64,
    /// Events held now (waiting or being delivered).
    pub queued: AtomicUsize,
    /// Where the broker puts the writes (its overflow counts as dropped too).
    pub mailbox: Arc<Mailbox>,
}

impl Stats {
    /// Counters over `mailbox`.
    pub fn new(mailbox: Arc<Mailbox>) -> Self {
        Stats {
            delivered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            mailbox,
        }
    }

    /// A snapshot under `name`.
    pub fn snapshot(&self, name: &str) -> WebhookStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WebhookStats {
            name: name.to_owned(),
            delivered: load(&self.delivered),
            rejected: load(&self.rejected),
            failed: load(&self.failed),
            dropped: load(&self.dropped) + self.mailbox.dropped(),
            retries: load(&self.retries),
            queue: self.queued.load(Ordering::Relaxed) + self.mailbox.len(),
        }
    }
}

/// One webhook's counters at one moment. For metrics:
/// `ponte_webhook_deliveries_total{webhook=name,outcome="delivered"|"rejected"|"failed"|"dropped"}`
/// and `ponte_webhook_queue{webhook=name}` = `queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStats {
    /// The webhook's `name`.
    pub name: String,
    /// Events answered 2xx.
    pub delivered: u64,
    /// Events refused for good by the endpoint.
    pub rejected: u64,
    /// Events given up after every retry failed.
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Re-sends so far.
    pub retries: u64,
    /// Events held now.
    pub queue: usize,
}
