//! Quality of service, shared by every protocol (HTTP and CoAP writes are QoS 1).

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
