//! The MQTT boundary: the one place where ponte-mqtt's wire types become the model's and
//! back, so neither the broker core nor the store sees a wire type.
//!
//! - QoS: the two enums convert with `From` both ways, here and nowhere else.
//! - Topics: a PUBLISH or will topic the codec decoded already satisfies every rule of
//!   [`TopicName`], so it becomes one without being validated a second time.
//! - Properties: a v5 PUBLISH's (or will's) property list splits into the message's content
//!   type, its expiry deadline and its protocol-neutral application [`Properties`];
//!   outgoing, the shared [`Properties`] are read by the encoder through
//!   [`ponte_mqtt::PublishProperties`], so every v5 recipient shares one value, uncopied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ponte_mqtt::{Outgoing, PublishProperties, SubscriptionOptions};

use crate::broker::Delivery;
use crate::model::{
    Message, PayloadFormat, Properties, QoS, RetainHandling, SubOptions, TopicName,
};

impl From<ponte_mqtt::QoS> for QoS {
    fn from(q: ponte_mqtt::QoS) -> Self {
        match q {
            ponte_mqtt::QoS::AtMostOnce => QoS::AtMostOnce,
            ponte_mqtt::QoS::AtLeastOnce => QoS::AtLeastOnce,
            ponte_mqtt::QoS::ExactlyOnce => QoS::ExactlyOnce,
        }
    }
}

impl From<QoS> for ponte_mqtt::QoS {
    fn from(q: QoS) -> Self {
        match q {
            QoS::AtMostOnce => ponte_mqtt::QoS::AtMostOnce,
            QoS::AtLeastOnce => ponte_mqtt::QoS::AtLeastOnce,
            QoS::ExactlyOnce => ponte_mqtt::QoS::ExactlyOnce,
        }
    }
}

/// A topic name as the codec decoded it (a PUBLISH's, resolved from its alias, or a
/// will's): already checked against the rules of [`TopicName::parse`].
pub(crate) fn topic(decoded: &str) -> TopicName {
    TopicName::trusted(decoded)
}

/// A SUBSCRIBE entry's options as the subscription index keeps them, with the request's
/// Subscription Identifier, and when its retained messages are sent.
pub(crate) fn sub_options(
    o: &SubscriptionOptions,
    id: Option<u32>,
) -> (SubOptions, RetainHandling) {
    let options = SubOptions {
        qos: o.qos.into(),
        no_local: o.no_local,
        retain_as_published: o.retain_as_published,
        id,
    };
    let handling = match o.retain_handling {
        ponte_mqtt::RetainHandling::OnSubscribe => RetainHandling::OnSubscribe,
        ponte_mqtt::RetainHandling::OnNewSubscription => RetainHandling::OnNewSubscription,
        ponte_mqtt::RetainHandling::Never => RetainHandling::Never,
    };
    (options, handling)
}

/// Fill a message from the properties of a v5 PUBLISH (or Will): Content Type becomes its
/// content type (and so the retained value's), Message Expiry its deadline counted from
/// `now`, and the application properties travel unchanged, in order, for v5 subscribers.
/// Topic Alias and Subscription Identifiers are per connection and stay behind.
pub(crate) fn apply_properties(m: &mut Message, props: ponte_mqtt::Properties, now: Instant) {
    let ponte_mqtt::Properties {
        payload_format_indicator,
        message_expiry_interval,
        content_type,
        response_topic,
        correlation_data,
        user_properties,
        ..
    } = props;
    m.content_type = content_type.as_deref().map(Arc::from);
    m.expires_at = message_expiry_interval.map(|s| now + Duration::from_secs(u64::from(s)));
    let application = Properties {
        // The codec accepts only 0 and 1 (MQTT-3.3.2-4 "unaltered": both are kept).
        payload_format: payload_format_indicator.map(|v| {
            if v == 0 {
                PayloadFormat::Bytes
            } else {
                PayloadFormat::Utf8
            }
        }),
        response_topic,
        correlation_data,
        user: user_properties,
    };
    if !application.is_empty() {
        m.properties = Some(Arc::new(application));
    }
}

/// The encoder reads a message's shared application properties directly.
impl PublishProperties for Properties {
    fn payload_format_indicator(&self) -> Option<u8> {
        self.payload_format.map(|f| match f {
            PayloadFormat::Bytes => 0,
            PayloadFormat::Utf8 => 1,
        })
    }

    fn response_topic(&self) -> Option<&str> {
        self.response_topic.as_deref()
    }

    fn correlation_data(&self) -> Option<&[u8]> {
        self.correlation_data.as_deref()
    }

    fn user_properties(&self, visit: &mut dyn FnMut(&str, &str)) {
        for (k, v) in &self.user {
            visit(k, v);
        }
    }
}

/// The machine's view of a message on its way to one client, at `qos` with `retain`:
/// topic, payload, content type (an HTTP or CoAP write's too) and properties are shared,
/// not copied.
pub(crate) fn outgoing(
    m: &Message,
    qos: QoS,
    retain: bool,
    subscription_ids: Vec<u32>,
) -> Outgoing {
    Outgoing {
        topic: m.topic.as_arc().clone(),
        payload: m.payload.clone(),
        qos: qos.into(),
        retain,
        content_type: m.content_type.clone(),
        properties: m
            .properties
            .clone()
            .map(|p| p as Arc<dyn PublishProperties>),
        subscription_ids,
        expires_at: m.expires_at,
    }
}

/// [`outgoing`] for one delivery from a mailbox.
pub(crate) fn delivery(d: &Delivery) -> Outgoing {
    outgoing(&d.message, d.qos, d.retain, d.subscription_ids.clone())
}

/// An unfinished outgoing exchange as the owner of durable sessions records it.
pub(crate) fn exchange(i: &ponte_mqtt::Inflight) -> crate::durable::Exchange {
    use crate::durable::{Exchange, Stage};
    match i {
        ponte_mqtt::Inflight::Publish { pkid, message } => Exchange {
            pkid: *pkid,
            stage: Stage::Published(message.qos.into()),
        },
        ponte_mqtt::Inflight::PubRel { pkid } => Exchange {
            pkid: *pkid,
            stage: Stage::Released,
        },
    }
}
