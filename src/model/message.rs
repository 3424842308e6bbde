//! One published message, as every front-end and the core see it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{QoS, TopicName};

/// Which front-end a message came from: for logs and metrics, never for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An HTTP PUT/POST/DELETE.
    Http,
    /// A CoAP PUT/POST/DELETE.
    Coap,
    /// An MQTT PUBLISH (or will).
    Mqtt,
    /// Another ponte node, through the backbone.
    Backbone,
    /// The broker itself (e.g. `$SYS`).
    Internal,
}

/// One published message, shared by every subscriber it reaches.
#[derive(Debug, Clone)]
pub struct Message {
    /// The thing the message is about.
    pub topic: TopicName,
    /// The payload, shared without copying by every delivery.
    pub payload: Bytes,
    /// The QoS it was published with; each delivery is downgraded to the granted QoS.
    pub qos: QoS,
    /// Whether it replaces the retained value (an empty retained payload clears it).
    pub retain: bool,
    /// Media type of the payload when the publisher said (HTTP Content-Type, CoAP
    /// Content-Format); readers in other protocols report it back.
    pub content_type: Option<Arc<str>>,
    /// Where it came from, for logs.
    pub origin: Origin,
    /// MQTT 5 application properties as published (User Properties in order, Response
    /// Topic, Correlation Data, Payload Format Indicator, Content Type), shared unchanged by
    /// every v5 recipient; `None` for 3.1.1, HTTP and CoAP writes. Per-send properties
    /// (Message Expiry, Topic Alias, Subscription Identifiers) are not kept here.
    pub properties: Option<Arc<ponte_mqtt::Properties>>,
    /// When the message expires (MQTT 5 Message Expiry Interval, from its arrival): it is
    /// not delivered after that, and v5 recipients get the remaining interval.
    pub expires_at: Option<Instant>,
    /// Mailbox id of the MQTT session that published it, so its own No Local
    /// subscriptions skip it (MQTT-3.8.3-3).
    pub publisher: Option<u64>,
    /// Its share of the global queued-bytes budget (`[limits] max_queued_bytes`), taken by
    /// the first queue that holds it and given back when the message is freed: a message
    /// shared by many queues is counted once. Create messages with `Charge::default()`.
    pub charge: super::Charge,
}

impl Message {
    /// Whether the message's Message Expiry Interval has passed at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether this message clears the retained value of its topic (MQTT-3.3.1-10).
    pub fn clears_retained(&self) -> bool {
        self.retain && self.payload.is_empty()
    }
}
