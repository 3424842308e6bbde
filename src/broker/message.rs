//! What flows through the broker: messages, retained values and deliveries.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::topic::TopicName;

/// Quality of service, as MQTT defines it. HTTP and CoAP writes are published at
/// [`QoS::AtLeastOnce`] so that persistent MQTT sessions queue them like any MQTT publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// Fire and forget.
    AtMostOnce = 0,
    /// Acknowledged, possibly duplicated.
    AtLeastOnce = 1,
    /// Acknowledged exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a numeric level, if there is one.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

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

/// The stored value of a thing: the last retained message on its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedValue {
    /// The payload bytes.
    pub payload: Bytes,
    /// The media type given by the writer, if any.
    pub content_type: Option<Arc<str>>,
    /// The QoS it was published with: a new MQTT subscriber receives it at
    /// min(this, granted) (MQTT-3.3.5).
    pub qos: QoS,
    /// Monotonic across the whole store: the ETag in HTTP and CoAP, so one value has one tag
    /// in every protocol, and writes can be conditional on it.
    pub version: u64,
    /// When it was written, for `Last-Modified`.
    pub updated: SystemTime,
}

impl RetainedValue {
    /// The HTTP entity tag of this value (a quoted string, RFC 9110 §8.8.3).
    pub fn http_etag(&self) -> String {
        format!("\"{:x}\"", self.version)
    }

    /// The CoAP ETag of this value (1 to 8 bytes, RFC 7252 §5.10.6): the version's
    /// big-endian bytes without leading zeros.
    pub fn coap_etag(&self) -> Vec<u8> {
        let bytes = self.version.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
        bytes[first..].to_vec()
    }
}

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
    /// Queue sequence number when this delivery is durable (a QoS 1/2 message for a
    /// persistent MQTT session, see [`super::queue`]): the entry to remove once the client
    /// acknowledged it. 0: not durable.
    pub durable: u64,
}
