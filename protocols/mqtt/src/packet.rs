//! The one packet model, for MQTT 3.1, 3.1.1 and 5.0.
//!
//! It is MQTT 5's: every packet may carry a [`PropertyList`] and every acknowledgement a
//! reason code. A 3.1/3.1.1 packet is normalised into it at the codec boundary (no
//! properties; CONNACK return codes and SUBACK codes mapped to their v5 reason codes, and
//! back when encoded), so the state machine has one handler per packet type.
//!
//! Every type here is the *parsed* form of a packet: a value that came out of
//! [`crate::decode`] already satisfies the wire-level rules of the specification (non-zero
//! packet ids where required, topic names without wildcards, no U+0000 in strings, ...).
//! Later layers never re-check them.

use bytes::Bytes;

use crate::properties::PropertyList;

/// Quality of service of a PUBLISH or a subscription (MQTT 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// QoS 0: fire and forget, no packet id, no acknowledgement.
    AtMostOnce = 0,
    /// QoS 1: PUBLISH → PUBACK.
    AtLeastOnce = 1,
    /// QoS 2: PUBLISH → PUBREC → PUBREL → PUBCOMP.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for the two-bit wire value, `None` for the forbidden value 3.
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The wire value (0, 1 or 2).
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Which protocol revision a connection speaks: decides the wire form of every packet
/// after CONNECT and the rules the connection applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1: protocol name "MQTT", level 4.
    V311,
    /// MQTT 5.0: protocol name "MQTT", level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of the CONNECT variable header.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The protocol name string of the CONNECT variable header.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolVersion::V31 => "MQIsdp",
            ProtocolVersion::V311 | ProtocolVersion::V5 => "MQTT",
        }
    }

    /// The version for a protocol name and level pair, `None` when the pair is unknown.
    pub fn from_name_and_level(name: &str, level: u8) -> Option<ProtocolVersion> {
        match (name, level) {
            ("MQIsdp", 3) => Some(ProtocolVersion::V31),
            ("MQTT", 4) => Some(ProtocolVersion::V311),
            ("MQTT", 5) => Some(ProtocolVersion::V5),
            _ => None,
        }
    }

    /// Whether packets carry properties and reason codes (MQTT 5).
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// The Will Message of a CONNECT (MQTT 3.1.2.5, 3.1.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Where the broker publishes the will; a valid topic name (no wildcards, not empty).
    pub topic: String,
    /// The will payload, a zero-copy slice of the CONNECT packet.
    pub payload: Bytes,
    /// QoS the will is published with.
    pub qos: QoS,
    /// Whether the will is published as a retained message.
    pub retain: bool,
    /// MQTT 5 Will Properties (Will Delay, Message Expiry, Content Type, ...).
    pub properties: PropertyList,
}

/// A CONNECT packet (MQTT 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol revision the client speaks; decides the rules applied to the connection.
    pub protocol: ProtocolVersion,
    /// Client identifier; may be empty (the broker then assigns one, MQTT-3.1.3-6).
    pub client_id: String,
    /// Clean Session (3.1.1) / Clean Start (5.0): whether a stored session is discarded.
    pub clean_session: bool,
    /// Keep Alive in seconds; 0 turns the keepalive mechanism off (3.1.2.10).
    pub keep_alive: u16,
    /// User Name, for the broker's authentication.
    pub username: Option<String>,
    /// Password (binary); in 3.1.1 only present together with a user name (MQTT-3.1.2-22).
    pub password: Option<Bytes>,
    /// Will message published when the connection ends without DISCONNECT.
    pub will: Option<LastWill>,
    /// MQTT 5 CONNECT properties (Session Expiry, Receive Maximum, Maximum Packet Size, ...).
    pub properties: PropertyList,
}

/// A PUBLISH packet (MQTT 3.3). On the v5 wire `topic` may be empty when a Topic Alias
/// stands for it; the connection resolves it before the broker sees the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: this may be a re-delivery of an earlier attempt (always false for QoS 0).
    pub dup: bool,
    /// Delivery QoS of this packet.
    pub qos: QoS,
    /// RETAIN flag: store as the topic's retained message (inbound) / sent because of a
    /// subscription (outbound, MQTT-3.3.1-8).
    pub retain: bool,
    /// Topic name; never contains `+` or `#` (MQTT-3.3.2-2); empty only with a v5 alias.
    pub topic: String,
    /// Packet identifier; 0 for QoS 0, non-zero otherwise (MQTT-2.3.1-1).
    pub pkid: u16,
    /// Application payload, a zero-copy slice of the received packet.
    pub payload: Bytes,
    /// MQTT 5 PUBLISH properties.
    pub properties: PropertyList,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    /// Packet identifier of the exchange.
    pub pkid: u16,
    /// Outcome (0x00 success; >= 0x80 failure); always 0 on 3.1/3.1.1.
    pub reason_code: u8,
    /// Reason String and User Properties.
    pub properties: PropertyList,
}

impl PubResponse {
    /// A successful acknowledgement of `pkid`, without properties (the 3.1.1 form).
    pub fn success(pkid: u16) -> Self {
        PubResponse {
            pkid,
            reason_code: 0,
            properties: PropertyList::default(),
        }
    }
}

/// When retained messages are sent for a new subscription (MQTT 5 Retain Handling,
/// 3.8.3.1; MQTT-3.3.1-9/10/11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: at every SUBSCRIBE (the 3.1.1 behaviour).
    #[default]
    OnSubscribe = 0,
    /// 1: only when the subscription did not exist.
    OnNewSubscription = 1,
    /// 2: never.
    Never = 2,
}

impl RetainHandling {
    /// The two-bit wire value, `None` for the reserved value 3.
    pub fn from_u8(value: u8) -> Option<RetainHandling> {
        match value {
            0 => Some(RetainHandling::OnSubscribe),
            1 => Some(RetainHandling::OnNewSubscription),
            2 => Some(RetainHandling::Never),
            _ => None,
        }
    }
}

/// The options of one SUBSCRIBE entry (section 3.8.3.1); a 3.1.1 entry has only its QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS the client accepts on this subscription.
    pub qos: QoS,
    /// Do not send the client its own publishes (MQTT-3.8.3-3).
    pub no_local: bool,
    /// Forward with the RETAIN flag as published instead of 0 (MQTT-3.3.1-12/13).
    pub retain_as_published: bool,
    /// When retained messages are sent for this subscription.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// The 3.1.1 meaning of a requested QoS: no v5 option set.
    pub fn qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::OnSubscribe,
        }
    }
}

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier echoed by the SUBACK.
    pub pkid: u16,
    /// At least one (filter, options) pair, in packet order (MQTT-3.8.3-3). Filters are
    /// not validated here: that is the broker's decision (it answers per filter).
    pub filters: Vec<(String, SubscriptionOptions)>,
    /// Subscription Identifier (at most one) and User Properties.
    pub properties: PropertyList,
}

/// A SUBACK or UNSUBACK: one reason code per filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubResponse {
    /// Packet identifier of the request being answered.
    pub pkid: u16,
    /// One reason code per filter, in request order (SUBACK on 3.1.1: 0x00-0x02 granted,
    /// 0x80 refused; UNSUBACK on 3.1/3.1.1: none on the wire).
    pub reason_codes: Vec<u8>,
    /// Reason String and User Properties.
    pub properties: PropertyList,
}

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier echoed by the UNSUBACK.
    pub pkid: u16,
    /// At least one topic filter (MQTT-3.10.3-2).
    pub filters: Vec<String>,
    /// User Properties.
    pub properties: PropertyList,
}

/// A DISCONNECT (either direction) or AUTH: a reason code and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonPacket {
    /// Why (DISCONNECT) or which step (AUTH: 0x00, 0x18 continue, 0x19 re-authenticate);
    /// always 0 for a 3.1/3.1.1 DISCONNECT.
    pub reason_code: u8,
    /// Session Expiry, Reason String, Server Reference, Authentication Method/Data, ...
    pub properties: PropertyList,
}

/// Every MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client → server: open a session (written at its own protocol level).
    Connect(Box<Connect>),
    /// Server → client: answer to CONNECT.
    ConnAck {
        /// Whether a stored session was resumed.
        session_present: bool,
        /// Outcome (0x00 success, >= 0x80 refusal). On 3.1/3.1.1 the return codes 1-5 are
        /// 0x84, 0x85, 0x88, 0x86, 0x87 (see [`crate::reason`]).
        reason_code: u8,
        /// The server's limits and assignments.
        properties: PropertyList,
    },
    /// Both directions: an application message.
    Publish(Publish),
    /// QoS 1 acknowledgement.
    PubAck(PubResponse),
    /// QoS 2 step 1: publish received.
    PubRec(PubResponse),
    /// QoS 2 step 2: publish release.
    PubRel(PubResponse),
    /// QoS 2 step 3: publish complete.
    PubComp(PubResponse),
    /// Client → server: subscribe.
    Subscribe(Subscribe),
    /// Server → client: answer to SUBSCRIBE.
    SubAck(SubResponse),
    /// Client → server: unsubscribe.
    Unsubscribe(Unsubscribe),
    /// Server → client: answer to UNSUBSCRIBE.
    UnsubAck(SubResponse),
    /// Keepalive probe.
    PingReq,
    /// Keepalive answer.
    PingResp,
    /// Either direction: end of the connection (with a reason on v5).
    Disconnect(ReasonPacket),
    /// MQTT 5, either direction: extended authentication exchange.
    Auth(ReasonPacket),
}

impl Packet {
    /// The packet type's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck { .. } => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }

    /// A DISCONNECT with reason 0 and no properties (the 3.1.1 form).
    pub fn disconnect() -> Packet {
        Packet::Disconnect(ReasonPacket {
            reason_code: 0,
            properties: PropertyList::default(),
        })
    }
}
