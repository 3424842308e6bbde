//! Counters of one bridge, read by [`crate::Gateway::bridge_stats`]: the numbers behind
//! `ponte_bridge_up{bridge}` and `ponte_bridge_messages_total{bridge,direction}`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::broker::mailbox::Mailbox;

/// Live counters, shared by a bridge's tasks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connected to the remote (CONNACK accepted, not yet lost).
    pub up: AtomicBool,
    /// Messages delivered to the remote: acknowledged (QoS 1/2) or sent (QoS 0).
    pub sent: AtomicU64,
    /// Messages from the remote stored locally (and then acknowledged).
    pub received: AtomicU64,
    /// Outgoing messages the remote refused with an error reason code (v5), or that were
    /// larger than its Maximum Packet Size; dropped.
    pub refused: AtomicU64,
    /// Outgoing messages not sent because their Message Expiry passed while queued.
    pub expired: AtomicU64,
    /// Incoming messages dropped: QoS 0 ones while the local side was backlogged, and
    /// ones on topics no `in` rule maps (left from an earlier configuration).
    pub dropped_in: AtomicU64,
    /// Incoming 3.1.1 echoes of the bridge's own messages, swallowed.
    pub echoes: AtomicU64,
    /// Successful connections (a rising count means the link flaps).
    pub connects: AtomicU64,
    /// Failed connection attempts and lost connections.
    pub failures: AtomicU64,
    /// The out queue, once open (its length and overflow count).
    pub queue: Mutex<Option<Arc<Mailbox>>>,
}

impl Stats {
    /// A snapshot under `name`.
    pub fn snapshot(&self, name: &str) -> BridgeStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (queued, dropped_out) = self
            .queue
            .lock()
            .as_ref()
            .map_or((0, 0), |m| (m.len(), m.dropped()));
        BridgeStats {
            name: name.to_owned(),
            up: self.up.load(Ordering::Relaxed),
            messages_out: load(&self.sent),
            messages_in: load(&self.received),
            queued,
            dropped_out,
            refused: load(&self.refused),
            expired: load(&self.expired),
            dropped_in: load(&self.dropped_in),
            echoes: load(&self.echoes),
            connects: load(&self.connects),
            failures: load(&self.failures),
        }
    }
}

/// One bridge's counters at one moment. For metrics: `ponte_bridge_up{bridge=name}` is
/// `up`, `ponte_bridge_messages_total{bridge=name,direction="out"|"in"}` are
/// `messages_out` and `messages_in`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeStats {
    /// The bridge's `name`.
    pub name: String,
    /// Connected to its remote now.
    pub up: bool,
    /// Local messages delivered to the remote.
    pub messages_out: u64,
    /// Remote messages stored locally.
    pub messages_in: u64,
    /// Local messages waiting to go out.
    pub queued: usize,
    /// Local messages dropped because the queue was full (`max_queued`).
    pub dropped_out: u64,
    /// Outgoing messages the remote refused or could not take (too large).
    pub refused: u64,
    /// Outgoing messages expired while queued.
    pub expired: u64,
    /// Incoming messages dropped (QoS 0 under backlog, unmapped topics).
    pub dropped_in: u64,
    /// 3.1.1 echoes swallowed.
    pub echoes: u64,
    /// Successful connections so far.
    pub connects: u64,
    /// Failed connection attempts and lost connections so far.
    pub failures: u64,
}
