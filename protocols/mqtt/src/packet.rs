//! The MQTT 3.1 / 3.1.1 packet model.
//!
//! Every type here is the *parsed* form of a packet: if a value of one of these types exists
//! and came out of [`crate::codec::decode`], it already satisfies the wire-level rules of the
//! specification (non-zero packet ids where required, topic names without wildcards, no
//! U+0000 in strings, ...). Later layers never re-check them. MQTT 5 packets wrap these
//! types and add their properties and reason codes in [`crate::v5`].

use bytes::Bytes;

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

/// Which protocol revision a connection speaks; kept on the connection so that MQTT 5
/// behaviour (properties, reason codes) can later be switched on per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1: protocol name "MQTT", level 4.
    V311,
    /// MQTT 5.0: protocol name "MQTT", level 5 (see [`crate::v5`]).
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
}

/// The Will Message of a CONNECT (MQTT 3.1.2.5).
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
}

/// A parsed CONNECT packet (MQTT 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol revision the client speaks; decides the rules applied to the connection.
    pub protocol: ProtocolVersion,
    /// Client identifier; may be empty (the broker then assigns one, MQTT-3.1.3-6).
    pub client_id: String,
    /// Clean Session flag: whether session state is discarded at connect and disconnect.
    pub clean_session: bool,
    /// Keep Alive in seconds; 0 turns the keepalive mechanism off (3.1.2.10).
    pub keep_alive: u16,
    /// User Name, for the broker's authentication.
    pub username: Option<String>,
    /// Password (binary in 3.1.1), only present together with a user name (MQTT-3.1.2-22).
    pub password: Option<Bytes>,
    /// Will message published when the connection ends without DISCONNECT.
    pub will: Option<LastWill>,
}

/// CONNACK return codes of MQTT 3.1.1 (table 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectReturnCode {
    /// 0x00: connection accepted.
    Accepted = 0,
    /// 0x01: the server does not support the requested protocol level.
    UnacceptableProtocolVersion = 1,
    /// 0x02: the client identifier is not allowed.
    IdentifierRejected = 2,
    /// 0x03: the MQTT service is unavailable.
    ServerUnavailable = 3,
    /// 0x04: malformed user name or password.
    BadUserNameOrPassword = 4,
    /// 0x05: the client is not authorized to connect.
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The code for a wire byte, `None` for the reserved values 6-255.
    pub fn from_u8(value: u8) -> Option<ConnectReturnCode> {
        Some(match value {
            0 => ConnectReturnCode::Accepted,
            1 => ConnectReturnCode::UnacceptableProtocolVersion,
            2 => ConnectReturnCode::IdentifierRejected,
            3 => ConnectReturnCode::ServerUnavailable,
            4 => ConnectReturnCode::BadUserNameOrPassword,
            5 => ConnectReturnCode::NotAuthorized,
            _ => return None,
        })
    }

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A PUBLISH packet (MQTT 3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: this may be a re-delivery of an earlier attempt (always false for QoS 0).
    pub dup: bool,
    /// Delivery QoS of this packet.
    pub qos: QoS,
    /// RETAIN flag: store as the topic's retained message (inbound) / sent because of a
    /// subscription (outbound, MQTT-3.3.1-8).
    pub retain: bool,
    /// Topic name; never empty, never contains `+` or `#` (MQTT-3.3.2-2).
    pub topic: String,
    /// Packet identifier; 0 for QoS 0, non-zero otherwise (MQTT-2.3.1-1).
    pub pkid: u16,
    /// Application payload, a zero-copy slice of the received packet.
    pub payload: Bytes,
}

/// One entry of a SUBACK payload (MQTT 3.9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscribeReturnCode {
    /// The subscription was granted with this maximum QoS.
    Success(QoS),
    /// 0x80: the subscription was refused.
    Failure,
}

impl SubscribeReturnCode {
    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        match self {
            SubscribeReturnCode::Success(qos) => qos.as_u8(),
            SubscribeReturnCode::Failure => 0x80,
        }
    }
}

/// Every MQTT 3.1.1 control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client → server: open a session.
    Connect(Connect),
    /// Server → client: answer to CONNECT.
    ConnAck {
        /// Whether the server resumed a stored session (always false unless accepted).
        session_present: bool,
        /// Outcome of the connection attempt.
        code: ConnectReturnCode,
    },
    /// Both directions: an application message.
    Publish(Publish),
    /// QoS 1 acknowledgement.
    PubAck(u16),
    /// QoS 2, step 1 of the acknowledgement: publish received.
    PubRec(u16),
    /// QoS 2, step 2: publish release.
    PubRel(u16),
    /// QoS 2, step 3: publish complete.
    PubComp(u16),
    /// Client → server: subscribe to topic filters.
    Subscribe {
        /// Packet identifier echoed by the SUBACK.
        pkid: u16,
        /// At least one (filter, requested QoS) pair, in packet order (MQTT-3.8.3-3).
        filters: Vec<(String, QoS)>,
    },
    /// Server → client: answer to SUBSCRIBE.
    SubAck {
        /// Packet identifier of the SUBSCRIBE being answered.
        pkid: u16,
        /// One return code per requested filter, in the same order (MQTT-3.8.4-5).
        codes: Vec<SubscribeReturnCode>,
    },
    /// Client → server: remove subscriptions.
    Unsubscribe {
        /// Packet identifier echoed by the UNSUBACK.
        pkid: u16,
        /// At least one topic filter (MQTT-3.10.3-2).
        filters: Vec<String>,
    },
    /// Server → client: answer to UNSUBSCRIBE, carrying its packet identifier.
    UnsubAck(u16),
    /// Client → server: keepalive probe.
    PingReq,
    /// Server → client: keepalive answer.
    PingResp,
    /// Client → server: clean end of the connection; discards the will.
    Disconnect,
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
            Packet::Subscribe { .. } => "SUBSCRIBE",
            Packet::SubAck { .. } => "SUBACK",
            Packet::Unsubscribe { .. } => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect => "DISCONNECT",
        }
    }
}
