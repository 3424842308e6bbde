//! What the broker hands the machine to send ([`Outgoing`]), the unacknowledged exchanges
//! it keeps ([`Inflight`]), and the protocol state that outlives a connection
//! ([`SessionState`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::packet::QoS;
use crate::properties::{same_publish_properties, PublishProperties};

/// A message the broker wants delivered to this client.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Topic name; an `Arc<str>` so fan-out to many subscribers shares one allocation.
    /// Must be a valid topic name of at most 65535 bytes (the broker validates it).
    pub topic: Arc<str>,
    /// Payload, shared with every other recipient without copying.
    pub payload: Bytes,
    /// Delivery QoS, already min(published, granted) (MQTT-3.8.4-6).
    pub qos: QoS,
    /// RETAIN flag on the wire (1 only for retained messages sent because of a new
    /// subscription, MQTT-3.3.1-8/9, or with v5 Retain As Published).
    pub retain: bool,
    /// MQTT 5 Content Type of the message; ignored on 3.1.1 connections.
    pub content_type: Option<Arc<str>>,
    /// MQTT 5 application properties as published (User Properties in order, Response
    /// Topic, Correlation Data, Payload Format Indicator), shared unchanged by every
    /// recipient and read through [`PublishProperties`] when encoded; ignored on 3.1.1.
    pub properties: Option<Arc<dyn PublishProperties>>,
    /// MQTT 5: identifiers of this recipient's subscriptions that matched (MQTT-3.3.4-3/4).
    pub subscription_ids: Vec<u32>,
    /// MQTT 5: when the message expires; it is sent with the remaining interval, and not
    /// at all once expired (MQTT-3.3.2-5/6).
    pub expires_at: Option<Instant>,
}

impl PartialEq for Outgoing {
    fn eq(&self, other: &Self) -> bool {
        let same_properties = match (&self.properties, &other.properties) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || same_publish_properties(&**a, &**b),
            _ => false,
        };
        self.topic == other.topic
            && self.payload == other.payload
            && self.qos == other.qos
            && self.retain == other.retain
            && self.content_type == other.content_type
            && same_properties
            && self.subscription_ids == other.subscription_ids
            && self.expires_at == other.expires_at
    }
}

impl Eq for Outgoing {}

/// One unacknowledged outgoing QoS 1/2 exchange, in the order it was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inflight {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2); resent with DUP=1 on
    /// session resume.
    Publish {
        /// Packet identifier allocated for it.
        pkid: u16,
        /// The message, kept for re-sending on reconnect.
        message: Outgoing,
    },
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP; the payload is no longer needed,
    /// PUBREL is resent on session resume.
    PubRel {
        /// Packet identifier of the exchange.
        pkid: u16,
    },
}

impl Inflight {
    /// Packet identifier of the exchange.
    pub fn pkid(&self) -> u16 {
        match self {
            Inflight::Publish { pkid, .. } | Inflight::PubRel { pkid } => *pkid,
        }
    }

    /// Whether it is a QoS 2 exchange (a QoS 2 PUBLISH, or a PUBREL).
    pub fn is_qos2(&self) -> bool {
        match self {
            Inflight::Publish { message, .. } => message.qos == QoS::ExactlyOnce,
            Inflight::PubRel { .. } => true,
        }
    }
}

/// Protocol state that outlives a connection when the session does (MQTT 3.1.2.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Unacknowledged outgoing exchanges in original order, resent on resume (MQTT-4.4.0-1).
    pub outgoing: Vec<Inflight>,
    /// Inbound QoS 2 packet ids already delivered to the broker and acknowledged with PUBREC
    /// but not yet released: a DUP re-send of these must not be delivered again.
    pub inbound_qos2: Vec<u16>,
    /// Next packet identifier to try, so ids are not reused too eagerly across reconnects.
    pub next_pkid: u16,
}
