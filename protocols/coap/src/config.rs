//! Endpoint configuration: RFC 7252 §4.8 transmission parameters and the
//! resource caps that keep a hostile or buggy peer from exhausting memory.

use std::time::Duration;

/// Tunables of an [`crate::Endpoint`]. `Config::default()` follows the
/// RFC 7252 §4.8 defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Initial retransmission timeout of a CON message (RFC 7252 ACK_TIMEOUT);
    /// the first timeout is drawn from `[ack_timeout, ack_timeout × ack_random_factor]`.
    pub ack_timeout: Duration,
    /// Upper bound of the jitter factor (ACK_RANDOM_FACTOR); jitter keeps
    /// many endpoints from retransmitting in lock-step. Values below 1 are
    /// treated as 1.
    pub ack_random_factor: f64,
    /// Retransmissions of a CON notification before its observer is dropped
    /// (MAX_RETRANSMIT).
    pub max_retransmit: u32,
    /// How long a CON exchange is remembered for deduplication and how long a
    /// message ID stays unusable after it was sent (EXCHANGE_LIFETIME).
    pub exchange_lifetime: Duration,
    /// How long a NON request is remembered for deduplication (NON_LIFETIME).
    pub non_lifetime: Duration,
    /// Largest datagram the endpoint emits; without block-wise transfer
    /// RFC 7252 §4.6 assumes 1152 bytes fit the path MTU. Larger responses are
    /// sent with Block2; anything that still does not fit becomes 5.00.
    pub max_message_size: usize,
    /// Preferred Block2 size in bytes (16..=1024, rounded down to a power of
    /// two); payloads larger than this are fragmented (late negotiation) and a
    /// client may only lower it (early negotiation).
    pub block_size: usize,
    /// Largest request body accepted through Block1 reassembly; larger
    /// uploads are answered 4.13 with Size1 so the client knows the limit.
    pub max_body_size: usize,
    /// Cap on remembered exchanges (deduplication cache); the oldest is
    /// evicted first so a flood cannot grow memory without bound.
    pub max_exchanges: usize,
    /// Cap on requests handed to the driver but not yet answered; beyond it
    /// new requests get 5.03 from the endpoint itself.
    pub max_pending_requests: usize,
    /// Cap on registered observers across all resources; beyond it
    /// registrations are answered without Observe (RFC 7641 §4.1 allows this).
    pub max_observers: usize,
    /// Cap on concurrent Block1 reassemblies (each holds up to
    /// `max_body_size` bytes); beyond it a new transfer gets 5.03.
    pub max_block1_transfers: usize,
    /// Seed of the random source for the initial message ID and the
    /// retransmission jitter; fixed seeds make tests deterministic.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            exchange_lifetime: Duration::from_secs(247),
            non_lifetime: Duration::from_secs(145),
            max_message_size: 1152,
            block_size: 1024,
            max_body_size: 64 * 1024,
            max_exchanges: 8192,
            max_pending_requests: 1024,
            max_observers: 4096,
            max_block1_transfers: 64,
            seed: 0x706f_6e74_6521,
        }
    }
}
