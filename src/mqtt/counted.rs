//! Byte counters for `$SYS/broker/bytes/*` and `/metrics`: what every MQTT connection, of
//! any transport, read from and wrote to its client. The connection driver adds to them
//! where it reads and writes (`client`), once per read or write: a wrapper around each
//! connection's reader and writer did the same at the cost of two counter handles in every
//! connection (issue 16).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Totals over every MQTT connection.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Bytes read from clients.
    pub bytes_received: Arc<AtomicU64>,
    /// Bytes written to clients.
    pub bytes_sent: Arc<AtomicU64>,
}

impl Stats {
    /// `n` bytes were read from a client.
    pub(crate) fn received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` bytes were written to a client.
    pub(crate) fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}
