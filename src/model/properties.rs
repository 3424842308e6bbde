//! What a publisher attached to a message beyond its payload and content type: kept as
//! published and handed on unchanged to every subscriber that can receive it.
//!
//! These are MQTT 5's application properties (PUBLISH and Will, 3.3.2.3), the only
//! protocol that carries them today, but nothing here is a wire type: the MQTT front-end
//! converts at its boundary, and the store keeps them with a queued message. Content Type
//! is [`super::Message::content_type`] and Message Expiry [`super::Message::expires_at`],
//! because every protocol has a use for those.

use bytes::Bytes;

/// How the publisher says its payload is to be read (MQTT 5 Payload Format Indicator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// Unspecified bytes (indicator 0).
    Bytes,
    /// UTF-8 text (indicator 1).
    Utf8,
}

/// A message's application properties, shared (`Arc`) by every delivery of the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// Whether the payload is text, as the publisher said; `None` when it did not say
    /// (which differs from saying "bytes": it is forwarded unaltered, MQTT-3.3.2-4).
    pub payload_format: Option<PayloadFormat>,
    /// Where a receiver should send its response (request/response).
    pub response_topic: Option<String>,
    /// Opaque data tying a response to its request.
    pub correlation_data: Option<Bytes>,
    /// Application key/value pairs, in the order they were published (MQTT-3.3.2-17/18).
    pub user: Vec<(String, String)>,
}

impl Properties {
    /// Whether nothing is set (such a message carries no properties at all).
    pub fn is_empty(&self) -> bool {
        self.payload_format.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user.is_empty()
    }
}
