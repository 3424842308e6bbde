//! Why received bytes are not a valid MQTT packet: every variant names what was received
//! and the clause it breaks.

/// Why received bytes are not a valid MQTT packet. After any of these the connection must be
/// closed (MQTT-4.8.0-1); the state of the buffer is then unspecified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The fifth byte of Remaining Length still had the continuation bit.
    #[error("MQTT-2.2.3: Remaining Length continues past 4 bytes")]
    MalformedRemainingLength,
    /// The fixed header announced more bytes than the configured limit.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Total size (fixed header + remaining length) announced by the header.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Control packet type 0 or 15, which 3.1.1 reserves.
    #[error("MQTT-2.2.1: reserved control packet type {packet_type}")]
    ReservedPacketType {
        /// The four high bits of the first byte.
        packet_type: u8,
    },
    /// Fixed-header flag bits that 3.1.1 fixes to a value were different.
    #[error(
        "MQTT-2.2.2-1/2: {packet} has fixed-header flags {flags:#06b}, must be {expected:#06b}"
    )]
    InvalidHeaderFlags {
        /// Packet type name.
        packet: &'static str,
        /// The received four low bits.
        flags: u8,
        /// The only allowed value.
        expected: u8,
    },
    /// PUBLISH with both QoS bits set.
    #[error("MQTT-3.3.1-4: PUBLISH with QoS 3")]
    PublishQoS3,
    /// PUBLISH with DUP set although QoS is 0.
    #[error("MQTT-3.3.1-2: PUBLISH with DUP=1 at QoS 0")]
    DupOnQoS0,
    /// A UTF-8 string field was not well-formed UTF-8.
    #[error("MQTT-1.5.3-1: {field} is not well-formed UTF-8")]
    InvalidUtf8 {
        /// Which field carried the string.
        field: &'static str,
    },
    /// A UTF-8 string field contained U+0000.
    #[error("MQTT-1.5.3-2: {field} contains U+0000")]
    NullCharacter {
        /// Which field carried the string.
        field: &'static str,
    },
    /// A topic name (PUBLISH or will) contained `+` or `#`.
    #[error("MQTT-3.3.2-2: topic name {topic:?} contains a wildcard")]
    WildcardInTopicName {
        /// The offending topic name.
        topic: String,
    },
    /// A topic name (PUBLISH or will) was the empty string.
    #[error("MQTT-4.7.3-1: empty topic name")]
    EmptyTopicName,
    /// SUBSCRIBE without any topic filter.
    #[error("MQTT-3.8.3-3: SUBSCRIBE with no topic filter")]
    NoSubscribeFilters,
    /// UNSUBSCRIBE without any topic filter.
    #[error("MQTT-3.10.3-2: UNSUBSCRIBE with no topic filter")]
    NoUnsubscribeFilters,
    /// A SUBSCRIBE requested-QoS byte had reserved bits set or asked for QoS 3.
    #[error("MQTT-3.8.3-4: SUBSCRIBE requested-QoS byte {byte:#04x} (reserved bits or QoS 3)")]
    InvalidRequestedQoS {
        /// The received options byte.
        byte: u8,
    },
    /// Packet identifier 0 where a non-zero one is required.
    #[error("MQTT-2.3.1-1: {packet} with packet identifier 0")]
    ZeroPacketId {
        /// Packet type name.
        packet: &'static str,
    },
    /// CONNECT flags bit 0 was set.
    #[error("MQTT-3.1.2-3: CONNECT flags reserved bit is set")]
    ConnectReservedFlag,
    /// Will Flag 0 but Will QoS or Will Retain set.
    #[error("MQTT-3.1.2-11/13/15: Will Flag is 0 but Will QoS/Retain bits are set (flags {flags:#010b})")]
    WillFieldsWithoutWill {
        /// The received CONNECT flags byte.
        flags: u8,
    },
    /// Will QoS 3.
    #[error("MQTT-3.1.2-14: Will QoS 3")]
    WillQoS3,
    /// Password flag set without user name flag.
    #[error("MQTT-3.1.2-22: password present without user name")]
    PasswordWithoutUsername,
    /// The protocol name was neither "MQTT" nor "MQIsdp".
    #[error("MQTT-3.1.2-1: unknown protocol name {name:?}")]
    InvalidProtocolName {
        /// The received protocol name.
        name: String,
    },
    /// A known protocol name with a level this crate does not speak (e.g. MQTT 5). The
    /// connection answers with CONNACK 0x01 before closing.
    #[error("MQTT-3.1.2-2: unsupported protocol level {level} for protocol name {name:?}")]
    UnsupportedProtocolLevel {
        /// The received protocol name.
        name: String,
        /// The received protocol level.
        level: u8,
    },
    /// A field ran past the end of the packet's Remaining Length.
    #[error("{packet}: field {field} runs past the end of the packet")]
    Truncated {
        /// Packet type name.
        packet: &'static str,
        /// The field being read.
        field: &'static str,
    },
    /// Bytes were left inside the Remaining Length after the last field.
    #[error("{packet}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Packet type name.
        packet: &'static str,
        /// Number of unread bytes.
        extra: usize,
    },
    /// CONNACK acknowledge flags with reserved bits set.
    #[error("MQTT-3.2.2-1: CONNACK flags {flags:#04x} have reserved bits set")]
    InvalidConnAckFlags {
        /// The received flags byte.
        flags: u8,
    },
    /// CONNACK return code outside 0-5.
    #[error("MQTT 3.2.2.3: reserved CONNACK return code {code}")]
    InvalidConnectReturnCode {
        /// The received code.
        code: u8,
    },
    /// SUBACK return code other than 0, 1, 2, 0x80.
    #[error("MQTT-3.9.3-2: reserved SUBACK return code {code:#04x}")]
    InvalidSubAckCode {
        /// The received code.
        code: u8,
    },
    /// MQTT 5: a Variable Byte Integer (property length, Subscription Identifier) longer
    /// than four bytes.
    #[error("MQTT-1.5.5-1: {field}: Variable Byte Integer continues past 4 bytes")]
    MalformedVarInt {
        /// Which field carried the integer.
        field: &'static str,
    },
    /// MQTT 5: a property identifier that does not exist or is not allowed in this packet
    /// (table 2-4).
    #[error("MQTT-2.2.2-2: property {id:#04x} is not allowed in {context}")]
    PropertyNotAllowed {
        /// Packet (or Will) whose property list carried it.
        context: &'static str,
        /// The received identifier.
        id: u8,
    },
    /// MQTT 5: a property that may appear once appeared twice.
    #[error("MQTT 2.2.2.2: property {id:#04x} appears more than once in {context}")]
    DuplicateProperty {
        /// Packet (or Will) whose property list carried it.
        context: &'static str,
        /// The repeated identifier.
        id: u8,
    },
    /// MQTT 5: a property value outside its allowed range (e.g. Receive Maximum 0,
    /// Payload Format Indicator 2, Subscription Identifier 0).
    #[error("MQTT 3.x: property {property} has the invalid value {value}")]
    InvalidPropertyValue {
        /// The property's name.
        property: &'static str,
        /// The received value.
        value: u32,
    },
    /// MQTT 5: a reason code that this packet type does not define.
    #[error("MQTT 2.4: {packet} with undefined reason code {code:#04x}")]
    InvalidReasonCode {
        /// Packet type name.
        packet: &'static str,
        /// The received code.
        code: u8,
    },
    /// MQTT 5: SUBSCRIBE options with reserved bits set or Retain Handling 3.
    #[error("MQTT-3.8.3-5: subscription options {byte:#010b} have reserved bits set or Retain Handling 3")]
    InvalidSubscriptionOptions {
        /// The received options byte.
        byte: u8,
    },
    /// MQTT 5: a PUBLISH with an empty topic name and no Topic Alias.
    #[error("MQTT-3.3.2-1: PUBLISH with an empty topic name and no Topic Alias")]
    EmptyTopicWithoutAlias,
}
