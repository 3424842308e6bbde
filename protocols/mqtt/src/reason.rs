//! MQTT 5 reason codes (section 2.4) the server sends or checks, by name, and the mapping
//! of the 3.1/3.1.1 CONNACK return codes onto them: the one packet model speaks reason
//! codes, and the codec translates at the 3.1.1 boundary.

/// 0x00: success / normal disconnection / granted QoS 0.
pub const SUCCESS: u8 = 0x00;
/// 0x01: granted QoS 1.
pub const GRANTED_QOS_1: u8 = 0x01;
/// 0x02: granted QoS 2.
pub const GRANTED_QOS_2: u8 = 0x02;
/// 0x04: DISCONNECT, publish the Will anyway.
pub const DISCONNECT_WITH_WILL: u8 = 0x04;
/// 0x10: PUBACK/PUBREC, accepted but nobody subscribed.
pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
/// 0x11: UNSUBACK, there was no such subscription.
pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
/// 0x80: unspecified error.
pub const UNSPECIFIED_ERROR: u8 = 0x80;
/// 0x81: malformed packet.
pub const MALFORMED_PACKET: u8 = 0x81;
/// 0x82: protocol error.
pub const PROTOCOL_ERROR: u8 = 0x82;
/// 0x83: implementation specific error.
pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
/// 0x84: unsupported protocol version.
pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
/// 0x85: client identifier not valid.
pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
/// 0x86: bad user name or password.
pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
/// 0x87: not authorized.
pub const NOT_AUTHORIZED: u8 = 0x87;
/// 0x88: server unavailable (CONNACK; 3.1.1 return code 3).
pub const SERVER_UNAVAILABLE: u8 = 0x88;
/// 0x8B: server shutting down.
pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
/// 0x8C: bad authentication method.
pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
/// 0x8D: keep alive timeout.
pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
/// 0x8E: session taken over.
pub const SESSION_TAKEN_OVER: u8 = 0x8E;
/// 0x8F: topic filter invalid.
pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
/// 0x90: topic name invalid.
pub const TOPIC_NAME_INVALID: u8 = 0x90;
/// 0x91: packet identifier in use.
pub const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
/// 0x92: packet identifier not found (PUBREL/PUBCOMP for an exchange that is not open).
pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
/// 0x93: receive maximum exceeded.
pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
/// 0x94: topic alias invalid.
pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
/// 0x95: packet too large.
pub const PACKET_TOO_LARGE: u8 = 0x95;
/// 0x96: message rate too high.
pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
/// 0x97: quota exceeded.
pub const QUOTA_EXCEEDED: u8 = 0x97;
/// 0x9E: shared subscriptions not supported.
pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
/// 0xA1: subscription identifiers not supported.
pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 = 0xA1;
/// 0xA2: wildcard subscriptions not supported.
pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0xA2;

/// The specification's name of a reason code (section 2.4, table 2-6), used as the
/// Reason String of an error the server sends when nothing more specific is known, so
/// every failure reaches the client with a human-readable explanation. `None` for a code
/// the table does not define.
pub fn describe(code: u8) -> Option<&'static str> {
    Some(match code {
        0x00 => "success",
        0x01 => "granted QoS 1",
        0x02 => "granted QoS 2",
        0x04 => "disconnect with will message",
        0x10 => "no matching subscribers",
        0x11 => "no subscription existed",
        0x18 => "continue authentication",
        0x19 => "re-authenticate",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8A => "banned",
        0x8B => "server shutting down",
        0x8C => "bad authentication method",
        0x8D => "keep alive timeout",
        0x8E => "session taken over",
        0x8F => "topic filter invalid",
        0x90 => "topic name invalid",
        0x91 => "packet identifier in use",
        0x92 => "packet identifier not found",
        0x93 => "receive maximum exceeded",
        0x94 => "topic alias invalid",
        0x95 => "packet too large",
        0x96 => "message rate too high",
        0x97 => "quota exceeded",
        0x98 => "administrative action",
        0x99 => "payload format invalid",
        0x9A => "retain not supported",
        0x9B => "QoS not supported",
        0x9C => "use another server",
        0x9D => "server moved",
        0x9E => "shared subscriptions not supported",
        0x9F => "connection rate exceeded",
        0xA0 => "maximum connect time",
        0xA1 => "subscription identifiers not supported",
        0xA2 => "wildcard subscriptions not supported",
        _ => return None,
    })
}

/// The v5 reason code a 3.1/3.1.1 CONNACK return code stands for (table 3.1 → table 3-1);
/// `None` for the reserved values 6-255.
pub(crate) fn from_v3_connack(code: u8) -> Option<u8> {
    Some(match code {
        0 => SUCCESS,
        1 => UNSUPPORTED_PROTOCOL_VERSION,
        2 => CLIENT_IDENTIFIER_NOT_VALID,
        3 => SERVER_UNAVAILABLE,
        4 => BAD_USER_NAME_OR_PASSWORD,
        5 => NOT_AUTHORIZED,
        _ => return None,
    })
}

/// The 3.1/3.1.1 CONNACK return code for a v5 reason code: the closest one, and 3 (Server
/// unavailable) for every refusal 3.1.1 has no code for.
pub(crate) fn to_v3_connack(reason_code: u8) -> u8 {
    match reason_code {
        SUCCESS => 0,
        UNSUPPORTED_PROTOCOL_VERSION => 1,
        CLIENT_IDENTIFIER_NOT_VALID => 2,
        BAD_USER_NAME_OR_PASSWORD => 4,
        NOT_AUTHORIZED => 5,
        _ => 3,
    }
}

/// The 3.1.1 SUBACK return code for a v5 reason code: the granted QoS, or 0x80 for any
/// refusal.
pub(crate) fn to_v3_suback(reason_code: u8) -> u8 {
    match reason_code {
        0..=2 => reason_code,
        _ => 0x80,
    }
}
