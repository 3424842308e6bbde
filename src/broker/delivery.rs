//! What a subscriber's mailbox holds: one message on its way to one subscriber.

use std::sync::Arc;

use crate::durable::Seq;
use crate::model::{Message, QoS};

/// A message on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message, shared with every other subscriber.
    pub message: Arc<Message>,
    /// min(published QoS, granted QoS), computed once at fan-out (MQTT-3.8.4-6).
    pub qos: QoS,
    /// The RETAIN flag to send: true only when the message is sent because of a new
    /// subscription (MQTT-3.3.1-8), false for live forwarding (MQTT-3.3.1-9) unless the
    /// subscription has MQTT 5 Retain As Published.
    pub retain: bool,
    /// MQTT 5 Subscription Identifiers of the recipient's matching subscriptions; empty
    /// (no allocation) for subscriptions without one.
    pub subscription_ids: Vec<u32>,
    /// The message's durable identity when this delivery is kept durable (a QoS 1/2 message
    /// for a persistent MQTT session, see [`crate::durable`]): what is acknowledged once
    /// the client acknowledged it. `None`: not durable.
    pub durable: Option<Seq>,
    /// The message's sequence number in the cluster's message log (`--cluster`): its
    /// durable identity, the same on every node, which a cluster keeper of durable
    /// sessions will use as the queue entry's [`Seq`]. `None`: not logged (single node,
    /// `$SYS`, a retained value sent at SUBSCRIBE time).
    pub log_seq: Option<Seq>,
}
