//! Endpoint configuration: RFC 7252 §4.8 transmission parameters and the
//! resource caps that keep a hostile or buggy peer from exhausting memory.

use std::time::Duration;

/// How notifications are sent over UDP (RFC 7641 §4.5). Over TCP (RFC 8323)
/// every notification is a plain message: the transport is reliable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyPolicy {
    /// Every notification is CON: the server learns at once when an observer
    /// is gone (its retransmissions run out), at the cost of one ACK each.
    #[default]
    Con,
    /// Every notification is NON: cheapest, but a vanished observer is only
    /// noticed when it answers RST. RFC 7641 §4.5 asks for a CON at least
    /// every 24 h, so prefer [`NotifyPolicy::NonWithPeriodicCon`].
    Non,
    /// NON notifications, except that one is sent CON when the observer has
    /// not had a CON for [`Config::con_notify_interval`] (RFC 7641 §4.5: at
    /// least every 24 hours).
    NonWithPeriodicCon,
}

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
    /// Whether notifications are CON, NON, or NON with a periodic CON.
    pub notify: NotifyPolicy,
    /// Longest time an observer goes without a CON notification under
    /// [`NotifyPolicy::NonWithPeriodicCon`] (RFC 7641 §4.5: 24 hours).
    pub con_notify_interval: Duration,
    /// CON messages outstanding towards one client at a time (RFC 7252 §4.7
    /// NSTART); further CON notifications to that client wait for an ACK.
    pub nstart: usize,
    /// Cap on observers registered by one client, so a single peer cannot
    /// take the whole observer table.
    pub max_observers_per_peer: usize,
    /// Cap on unanswered requests from one client; beyond it 5.03.
    pub max_pending_per_peer: usize,
    /// Cap on concurrent Block1 uploads from one client; beyond it 5.03.
    pub max_transfers_per_peer: usize,
    /// Largest datagram processed. A larger CON request is answered 4.13
    /// (with Size1) so the client can switch to Block1; anything else
    /// larger is dropped and counted.
    pub max_datagram_size: usize,
    /// Largest CoAP-over-TCP message accepted (RFC 8323 §5.3.1), announced
    /// as Max-Message-Size in our CSM; a larger one aborts the connection.
    pub tcp_max_message_size: usize,
    /// How long a TCP peer has to send its CSM (RFC 8323 §5.3) before the
    /// connection is aborted, so idle sockets cannot pile up.
    pub csm_timeout: Duration,
    /// How long a CoAP-over-TCP message that has begun to arrive may take to
    /// complete, plus one second for every `tcp_frame_min_rate` bytes of it
    /// received: a peer that sends half a frame and stalls is aborted, so it
    /// cannot hold the connection (and its buffer) forever.
    pub tcp_frame_timeout: Duration,
    /// Bytes per second that earn a slow frame one more second (0: none).
    pub tcp_frame_min_rate: u32,
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
            notify: NotifyPolicy::Con,
            con_notify_interval: Duration::from_secs(24 * 60 * 60),
            nstart: 1,
            max_observers_per_peer: 256,
            max_pending_per_peer: 64,
            max_transfers_per_peer: 4,
            max_datagram_size: 8192,
            tcp_max_message_size: 8192,
            csm_timeout: Duration::from_secs(10),
            tcp_frame_timeout: Duration::from_secs(30),
            tcp_frame_min_rate: 500,
            seed: 0x706f_6e74_6521,
        }
    }
}
