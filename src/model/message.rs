//! One published message, as every front-end and the core see it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{Properties, QoS, TopicName};

/// Which front-end a message came from and, when the front-end knows it, who wrote it: for
/// logs, metrics and webhooks (`"origin"`, `"client"`). Routing never looks at it (No Local
/// uses [`Message::publisher`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An HTTP PUT/POST/DELETE, with the authenticated user (`None`: anonymous).
    Http(Option<Arc<str>>),
    /// A CoAP PUT/POST/DELETE, with the DTLS PSK identity (`None`: plain CoAP).
    Coap(Option<Arc<str>>),
    /// An MQTT PUBLISH (or will), with the publisher's client id.
    Mqtt(Option<Arc<str>>),
    /// A message an MQTT bridge (named here) brought in from its remote broker.
    Bridge(Arc<str>),
    /// Another ponte node, through the backbone.
    Backbone,
    /// The broker itself (e.g. `$SYS`).
    Internal,
}

impl Origin {
    /// The front-end as a lower-case word: `http`, `coap`, `mqtt`, `bridge`, `backbone`,
    /// `internal` (a webhook's `"origin"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Http(_) => "http",
            Origin::Coap(_) => "coap",
            Origin::Mqtt(_) => "mqtt",
            Origin::Bridge(_) => "bridge",
            Origin::Backbone => "backbone",
            Origin::Internal => "internal",
        }
    }

    /// Who wrote it, when known: the HTTP or CoAP user, the MQTT client id, the bridge's
    /// name.
    pub fn client(&self) -> Option<&str> {
        match self {
            Origin::Http(u) | Origin::Coap(u) | Origin::Mqtt(u) => u.as_deref(),
            Origin::Bridge(name) => Some(name),
            Origin::Backbone | Origin::Internal => None,
        }
    }
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
    /// Application properties as published (User Properties in order, Response Topic,
    /// Correlation Data, Payload Format), shared unchanged by every recipient that can
    /// receive them; `None` when there are none (3.1.1, HTTP and CoAP writes).
    pub properties: Option<Arc<Properties>>,
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
