//! How a subscriber wants the messages of one subscription: the options the subscription
//! index keeps per subscription and the session record stores.

use super::QoS;

/// How one subscription wants its messages (MQTT 5 subscription options; the 3.1.1, SSE
/// and CoAP meaning is [`SubOptions::qos`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOptions {
    /// The QoS granted: deliveries are downgraded to it.
    pub qos: QoS,
    /// Never deliver messages this subscriber itself published (MQTT-3.8.3-3).
    pub no_local: bool,
    /// Forward live messages with their RETAIN flag instead of 0 (MQTT-3.3.1-12/13).
    pub retain_as_published: bool,
    /// Subscription Identifier, returned with every message this subscription matches
    /// (MQTT-3.3.4-3).
    pub id: Option<u32>,
}

impl SubOptions {
    /// A plain subscription at `qos` (MQTT 3.1.1, HTTP SSE, CoAP observe).
    pub fn qos(qos: QoS) -> Self {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            id: None,
        }
    }
}

/// When the retained values matching a new subscription are sent to it (MQTT 5 Retain
/// Handling, MQTT-3.3.1-9/10/11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// At every subscribe (3.1.1, SSE and CoAP: a new observer gets the current value).
    #[default]
    OnSubscribe,
    /// Only when the subscription did not exist before.
    OnNewSubscription,
    /// Never (a restored subscription, or the client asked).
    Never,
}
