//! MQTT 5.0 packets, properties and reason codes, and their wire format.
//!
//! MQTT 5 keeps the 3.1.1 fixed header and field encodings and adds, to every packet, a
//! length-prefixed list of *properties* (section 2.2.2) and, to every acknowledgement, a
//! *reason code* (section 2.4). The 3.1.1 model in [`crate::packet`] stays as it is (other
//! code builds it by field); a v5 packet wraps it where the shapes agree ([`Connect5`] wraps
//! a [`Connect`], [`Publish5`] a [`Publish`]) and adds a [`Properties`] list.
//!
//! [`decode_v5`] refuses every malformation the specification names with a
//! [`DecodeError`]: unknown properties, properties not allowed in the packet (table 2-4),
//! duplicates, out-of-range values, undefined reason codes. [`encode_v5`] writes any
//! [`Packet5`]; acknowledgements with reason 0 and no properties use the short forms.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::{
    decode_connect_any, packet_kind, put_binary, put_remaining_length, take_frame, DecodeError,
    Reader,
};
use crate::packet::{Connect, ProtocolVersion, Publish, QoS};

/// MQTT 5 reason codes (section 2.4) the server sends or checks, by name.
pub mod reason {
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
}

/// Every MQTT 5 property (section 2.2.2.2, table 2-4), each present at most once except
/// User Property and Subscription Identifier. One struct serves every packet type; the
/// decoder refuses a property the packet does not allow, so only the allowed ones are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01 (PUBLISH, Will): 1 = the payload is UTF-8; passed through to subscribers.
    pub payload_format_indicator: Option<u8>,
    /// 0x02 (PUBLISH, Will): seconds the message lives; the server forwards what remains.
    pub message_expiry_interval: Option<u32>,
    /// 0x03 (PUBLISH, Will): the payload's media type; becomes the retained value's type.
    pub content_type: Option<String>,
    /// 0x08 (PUBLISH, Will): where the receiver should reply (request/response).
    pub response_topic: Option<String>,
    /// 0x09 (PUBLISH, Will): opaque data tying a response to its request.
    pub correlation_data: Option<Bytes>,
    /// 0x0B (PUBLISH out: any number; SUBSCRIBE: at most one): which subscriptions
    /// matched, so the client can dispatch without re-matching topics.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 (CONNECT, CONNACK, DISCONNECT): seconds the session outlives the connection.
    pub session_expiry_interval: Option<u32>,
    /// 0x12 (CONNACK): the client id the server assigned to an empty one (MQTT-3.2.2-16).
    pub assigned_client_identifier: Option<String>,
    /// 0x13 (CONNACK): the keep alive the server imposes instead of the client's.
    pub server_keep_alive: Option<u16>,
    /// 0x15 (CONNECT, CONNACK, AUTH): extended authentication method.
    pub authentication_method: Option<String>,
    /// 0x16 (CONNECT, CONNACK, AUTH): extended authentication data.
    pub authentication_data: Option<Bytes>,
    /// 0x17 (CONNECT): whether reason strings/user properties may be sent on failures.
    pub request_problem_information: Option<u8>,
    /// 0x18 (Will): seconds to wait after the connection ends before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// 0x19 (CONNECT): whether the client wants Response Information in CONNACK.
    pub request_response_information: Option<u8>,
    /// 0x1A (CONNACK): basis for response topics.
    pub response_information: Option<String>,
    /// 0x1C (CONNACK, DISCONNECT): another server to use.
    pub server_reference: Option<String>,
    /// 0x1F (acknowledgements, DISCONNECT, AUTH): human-readable diagnostics.
    pub reason_string: Option<String>,
    /// 0x21 (CONNECT, CONNACK): most unacknowledged QoS 1/2 PUBLISHes the sender accepts.
    pub receive_maximum: Option<u16>,
    /// 0x22 (CONNECT, CONNACK): highest topic alias the sender accepts.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 (PUBLISH): a number standing for the topic on this connection.
    pub topic_alias: Option<u16>,
    /// 0x24 (CONNACK): highest QoS the server supports (absent: 2).
    pub maximum_qos: Option<u8>,
    /// 0x25 (CONNACK): whether retained messages are supported (absent: yes).
    pub retain_available: Option<u8>,
    /// 0x26 (every packet): application key/value pairs, kept in order.
    pub user_properties: Vec<(String, String)>,
    /// 0x27 (CONNECT, CONNACK): largest packet the sender accepts.
    pub maximum_packet_size: Option<u32>,
    /// 0x28 (CONNACK): whether wildcard filters are supported (absent: yes).
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 (CONNACK): whether subscription identifiers are supported (absent: yes).
    pub subscription_identifiers_available: Option<u8>,
    /// 0x2A (CONNACK): whether shared subscriptions are supported (absent: yes).
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// Whether no property is set (the list encodes as a single 0 byte).
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// Which property list is being read: decides which identifiers are allowed (table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT properties.
    Connect,
    /// Will properties inside a CONNECT payload.
    Will,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    PubResponse,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK, UNSUBACK.
    SubResponse,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl PropertyContext {
    fn name(self) -> &'static str {
        match self {
            PropertyContext::Connect => "CONNECT",
            PropertyContext::Will => "Will properties",
            PropertyContext::ConnAck => "CONNACK",
            PropertyContext::Publish => "PUBLISH",
            PropertyContext::PubResponse => "PUBACK/PUBREC/PUBREL/PUBCOMP",
            PropertyContext::Subscribe => "SUBSCRIBE",
            PropertyContext::SubResponse => "SUBACK/UNSUBACK",
            PropertyContext::Unsubscribe => "UNSUBSCRIBE",
            PropertyContext::Disconnect => "DISCONNECT",
            PropertyContext::Auth => "AUTH",
        }
    }

    /// Whether property `id` may appear in this list (table 2-4).
    fn allows(self, id: u8) -> bool {
        use PropertyContext as C;
        match id {
            0x01 | 0x02 | 0x03 | 0x08 | 0x09 => matches!(self, C::Publish | C::Will),
            0x0B => matches!(self, C::Publish | C::Subscribe),
            0x11 => matches!(self, C::Connect | C::ConnAck | C::Disconnect),
            0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => self == C::ConnAck,
            0x15 | 0x16 => matches!(self, C::Connect | C::ConnAck | C::Auth),
            0x17 | 0x19 => self == C::Connect,
            0x18 => self == C::Will,
            0x1C => matches!(self, C::ConnAck | C::Disconnect),
            0x1F => matches!(
                self,
                C::ConnAck | C::PubResponse | C::SubResponse | C::Disconnect | C::Auth
            ),
            0x21 | 0x22 | 0x27 => matches!(self, C::Connect | C::ConnAck),
            0x23 => self == C::Publish,
            0x26 => true,
            _ => false,
        }
    }
}

/// Reads a Variable Byte Integer (section 1.5.5).
fn var_int(r: &mut Reader, field: &'static str) -> Result<u32, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let byte = r.u8(field)?;
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::MalformedVarInt { field })
}

fn u32_field(r: &mut Reader, field: &'static str) -> Result<u32, DecodeError> {
    if r.body.len() < 4 {
        return Err(r.truncated(field));
    }
    Ok(r.body.get_u32())
}

/// Bytes a Variable Byte Integer takes.
fn var_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    id: u8,
    ctx: PropertyContext,
) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty {
            context: ctx.name(),
            id,
        });
    }
    *slot = Some(value);
    Ok(())
}

fn flag(value: u8, property: &'static str) -> Result<u8, DecodeError> {
    if value > 1 {
        return Err(DecodeError::InvalidPropertyValue {
            property,
            value: u32::from(value),
        });
    }
    Ok(value)
}

/// Reads a property list (length, then properties) for `ctx`.
pub(crate) fn decode_properties(
    r: &mut Reader,
    ctx: PropertyContext,
) -> Result<Properties, DecodeError> {
    let len = var_int(r, "property length")? as usize;
    if r.body.len() < len {
        return Err(r.truncated("properties"));
    }
    let mut pr = Reader {
        body: r.body.split_to(len),
        packet: r.packet,
    };
    let mut p = Properties::default();
    while !pr.body.is_empty() {
        let id = pr.u8("property identifier")?;
        if !ctx.allows(id) {
            return Err(DecodeError::PropertyNotAllowed {
                context: ctx.name(),
                id,
            });
        }
        match id {
            0x01 => {
                let v = flag(
                    pr.u8("Payload Format Indicator")?,
                    "Payload Format Indicator",
                )?;
                set_once(&mut p.payload_format_indicator, v, id, ctx)?
            }
            0x02 => set_once(
                &mut p.message_expiry_interval,
                u32_field(&mut pr, "Message Expiry Interval")?,
                id,
                ctx,
            )?,
            0x03 => set_once(&mut p.content_type, pr.string("Content Type")?, id, ctx)?,
            0x08 => {
                let topic = pr.topic_name("Response Topic")?;
                set_once(&mut p.response_topic, topic, id, ctx)?
            }
            0x09 => set_once(
                &mut p.correlation_data,
                pr.binary("Correlation Data")?,
                id,
                ctx,
            )?,
            0x0B => {
                let v = var_int(&mut pr, "Subscription Identifier")?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue {
                        property: "Subscription Identifier",
                        value: 0,
                    });
                }
                if ctx == PropertyContext::Subscribe && !p.subscription_identifiers.is_empty() {
                    return Err(DecodeError::DuplicateProperty {
                        context: ctx.name(),
                        id,
                    });
                }
                p.subscription_identifiers.push(v);
            }
            0x11 => set_once(
                &mut p.session_expiry_interval,
                u32_field(&mut pr, "Session Expiry Interval")?,
                id,
                ctx,
            )?,
            0x12 => set_once(
                &mut p.assigned_client_identifier,
                pr.string("Assigned Client Identifier")?,
                id,
                ctx,
            )?,
            0x13 => set_once(
                &mut p.server_keep_alive,
                pr.u16("Server Keep Alive")?,
                id,
                ctx,
            )?,
            0x15 => set_once(
                &mut p.authentication_method,
                pr.string("Authentication Method")?,
                id,
                ctx,
            )?,
            0x16 => set_once(
                &mut p.authentication_data,
                pr.binary("Authentication Data")?,
                id,
                ctx,
            )?,
            0x17 => {
                let v = flag(
                    pr.u8("Request Problem Information")?,
                    "Request Problem Information",
                )?;
                set_once(&mut p.request_problem_information, v, id, ctx)?
            }
            0x18 => set_once(
                &mut p.will_delay_interval,
                u32_field(&mut pr, "Will Delay Interval")?,
                id,
                ctx,
            )?,
            0x19 => {
                let v = flag(
                    pr.u8("Request Response Information")?,
                    "Request Response Information",
                )?;
                set_once(&mut p.request_response_information, v, id, ctx)?
            }
            0x1A => set_once(
                &mut p.response_information,
                pr.string("Response Information")?,
                id,
                ctx,
            )?,
            0x1C => set_once(
                &mut p.server_reference,
                pr.string("Server Reference")?,
                id,
                ctx,
            )?,
            0x1F => set_once(&mut p.reason_string, pr.string("Reason String")?, id, ctx)?,
            0x21 => {
                let v = pr.u16("Receive Maximum")?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue {
                        property: "Receive Maximum",
                        value: 0,
                    });
                }
                set_once(&mut p.receive_maximum, v, id, ctx)?
            }
            0x22 => set_once(
                &mut p.topic_alias_maximum,
                pr.u16("Topic Alias Maximum")?,
                id,
                ctx,
            )?,
            0x23 => {
                let v = pr.u16("Topic Alias")?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue {
                        property: "Topic Alias",
                        value: 0,
                    });
                }
                set_once(&mut p.topic_alias, v, id, ctx)?
            }
            0x24 => {
                let v = flag(pr.u8("Maximum QoS")?, "Maximum QoS")?;
                set_once(&mut p.maximum_qos, v, id, ctx)?
            }
            0x25 => {
                let v = flag(pr.u8("Retain Available")?, "Retain Available")?;
                set_once(&mut p.retain_available, v, id, ctx)?
            }
            0x26 => {
                let k = pr.string("User Property name")?;
                let v = pr.string("User Property value")?;
                p.user_properties.push((k, v));
            }
            0x27 => {
                let v = u32_field(&mut pr, "Maximum Packet Size")?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue {
                        property: "Maximum Packet Size",
                        value: 0,
                    });
                }
                set_once(&mut p.maximum_packet_size, v, id, ctx)?
            }
            0x28 => {
                let v = flag(
                    pr.u8("Wildcard Subscription Available")?,
                    "Wildcard Subscription Available",
                )?;
                set_once(&mut p.wildcard_subscription_available, v, id, ctx)?
            }
            0x29 => {
                let v = flag(
                    pr.u8("Subscription Identifier Available")?,
                    "Subscription Identifier Available",
                )?;
                set_once(&mut p.subscription_identifiers_available, v, id, ctx)?
            }
            _ => {
                let v = flag(
                    pr.u8("Shared Subscription Available")?,
                    "Shared Subscription Available",
                )?;
                set_once(&mut p.shared_subscription_available, v, id, ctx)?
            }
        }
    }
    Ok(p)
}

/// The per-send overrides of an outgoing PUBLISH's properties: the parts that differ per
/// recipient or per send, written instead of the shared list's own.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishOverrides<'a> {
    /// Remaining Message Expiry Interval (replaces the shared one when `Some`).
    pub message_expiry_interval: Option<u32>,
    /// This connection's topic alias for the topic.
    pub topic_alias: Option<u16>,
    /// Identifiers of the recipient's matching subscriptions.
    pub subscription_identifiers: &'a [u32],
}

/// Writes the body of a property list (without its length) into `out`. With `overrides`,
/// the shared list's Message Expiry, Topic Alias and Subscription Identifiers are replaced.
pub fn put_properties(out: &mut BytesMut, p: &Properties, overrides: Option<&PublishOverrides>) {
    fn s(out: &mut BytesMut, id: u8, v: &str) {
        out.put_u8(id);
        put_binary(out, v.as_bytes());
    }
    fn vi(out: &mut BytesMut, mut v: u32) {
        loop {
            let mut byte = (v & 0x7f) as u8;
            v >>= 7;
            if v > 0 {
                byte |= 0x80;
            }
            out.put_u8(byte);
            if v == 0 {
                break;
            }
        }
    }
    let byte = |out: &mut BytesMut, id: u8, v: Option<u8>| {
        if let Some(v) = v {
            out.put_slice(&[id, v]);
        }
    };
    let short = |out: &mut BytesMut, id: u8, v: Option<u16>| {
        if let Some(v) = v {
            out.put_u8(id);
            out.put_u16(v);
        }
    };
    let long = |out: &mut BytesMut, id: u8, v: Option<u32>| {
        if let Some(v) = v {
            out.put_u8(id);
            out.put_u32(v);
        }
    };
    byte(out, 0x01, p.payload_format_indicator);
    match overrides {
        Some(o) => long(out, 0x02, o.message_expiry_interval),
        None => long(out, 0x02, p.message_expiry_interval),
    }
    if let Some(v) = &p.content_type {
        s(out, 0x03, v);
    }
    if let Some(v) = &p.response_topic {
        s(out, 0x08, v);
    }
    if let Some(v) = &p.correlation_data {
        out.put_u8(0x09);
        put_binary(out, v);
    }
    let ids = match overrides {
        Some(o) => o.subscription_identifiers,
        None => &p.subscription_identifiers[..],
    };
    for id in ids {
        out.put_u8(0x0B);
        vi(out, *id);
    }
    long(out, 0x11, p.session_expiry_interval);
    if let Some(v) = &p.assigned_client_identifier {
        s(out, 0x12, v);
    }
    short(out, 0x13, p.server_keep_alive);
    if let Some(v) = &p.authentication_method {
        s(out, 0x15, v);
    }
    if let Some(v) = &p.authentication_data {
        out.put_u8(0x16);
        put_binary(out, v);
    }
    byte(out, 0x17, p.request_problem_information);
    long(out, 0x18, p.will_delay_interval);
    byte(out, 0x19, p.request_response_information);
    if let Some(v) = &p.response_information {
        s(out, 0x1A, v);
    }
    if let Some(v) = &p.server_reference {
        s(out, 0x1C, v);
    }
    if let Some(v) = &p.reason_string {
        s(out, 0x1F, v);
    }
    short(out, 0x21, p.receive_maximum);
    short(out, 0x22, p.topic_alias_maximum);
    match overrides {
        Some(o) => short(out, 0x23, o.topic_alias),
        None => short(out, 0x23, p.topic_alias),
    }
    byte(out, 0x24, p.maximum_qos);
    byte(out, 0x25, p.retain_available);
    for (k, v) in &p.user_properties {
        out.put_u8(0x26);
        put_binary(out, k.as_bytes());
        put_binary(out, v.as_bytes());
    }
    long(out, 0x27, p.maximum_packet_size);
    byte(out, 0x28, p.wildcard_subscription_available);
    byte(out, 0x29, p.subscription_identifiers_available);
    byte(out, 0x2A, p.shared_subscription_available);
}

/// Writes `props` (already encoded, without length) with its Variable Byte Integer length.
fn put_property_block(out: &mut BytesMut, props: &[u8]) {
    put_remaining_length(out, props.len());
    out.put_slice(props);
}

fn encoded_properties(p: &Properties) -> BytesMut {
    let mut b = BytesMut::new();
    put_properties(&mut b, p, None);
    b
}

/// A v5 CONNECT: the 3.1.1 fields plus CONNECT and Will properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect5 {
    /// The fields shared with 3.1.1 (`clean_session` is v5's Clean Start).
    pub connect: Connect,
    /// CONNECT properties (Session Expiry, Receive Maximum, Maximum Packet Size, ...).
    pub properties: Properties,
    /// Will properties (Will Delay, Message Expiry, Content Type, ...); empty without a will.
    pub will_properties: Properties,
}

/// A v5 PUBLISH: the 3.1.1 fields plus properties. On the wire `publish.topic` may be empty
/// when a Topic Alias stands for it; the connection resolves it before the broker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish5 {
    /// The fields shared with 3.1.1.
    pub publish: Publish,
    /// PUBLISH properties.
    pub properties: Properties,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP in v5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    /// Packet identifier of the exchange.
    pub pkid: u16,
    /// Outcome (0x00 success; >= 0x80 failure).
    pub reason_code: u8,
    /// Reason String and User Properties.
    pub properties: Properties,
}

/// The Subscription Options byte of a v5 SUBSCRIBE entry (section 3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS the client accepts on this subscription.
    pub qos: QoS,
    /// Do not send the client its own publishes (MQTT-3.8.3-3).
    pub no_local: bool,
    /// Forward with the RETAIN flag as published instead of 0 (MQTT-3.3.1-12/13).
    pub retain_as_published: bool,
    /// 0: send retained messages on subscribe; 1: only if the subscription is new;
    /// 2: never (MQTT-3.3.1-9/10/11).
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    /// The 3.1.1 meaning of a requested QoS: no v5 option set.
    pub fn qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }

    fn to_byte(self) -> u8 {
        self.qos.as_u8()
            | u8::from(self.no_local) << 2
            | u8::from(self.retain_as_published) << 3
            | (self.retain_handling & 3) << 4
    }

    fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        let qos = QoS::from_u8(byte & 3);
        let handling = (byte >> 4) & 3;
        match qos {
            Some(qos) if byte & 0xc0 == 0 && handling != 3 => Ok(SubscriptionOptions {
                qos,
                no_local: byte & 0b100 != 0,
                retain_as_published: byte & 0b1000 != 0,
                retain_handling: handling,
            }),
            _ => Err(DecodeError::InvalidSubscriptionOptions { byte }),
        }
    }
}

/// A v5 SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe5 {
    /// Packet identifier echoed by the SUBACK.
    pub pkid: u16,
    /// At least one (filter, options) pair, in packet order.
    pub filters: Vec<(String, SubscriptionOptions)>,
    /// Subscription Identifier (at most one) and User Properties.
    pub properties: Properties,
}

/// A v5 SUBACK or UNSUBACK: one reason code per filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubResponse {
    /// Packet identifier of the request being answered.
    pub pkid: u16,
    /// One reason code per filter, in request order.
    pub reason_codes: Vec<u8>,
    /// Reason String and User Properties.
    pub properties: Properties,
}

/// A v5 UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe5 {
    /// Packet identifier echoed by the UNSUBACK.
    pub pkid: u16,
    /// At least one topic filter.
    pub filters: Vec<String>,
    /// User Properties.
    pub properties: Properties,
}

/// A v5 DISCONNECT (either direction) or AUTH: a reason code and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonPacket {
    /// Why (DISCONNECT) or which step (AUTH: 0x00, 0x18 continue, 0x19 re-authenticate).
    pub reason_code: u8,
    /// Session Expiry, Reason String, Server Reference, Authentication Method/Data, ...
    pub properties: Properties,
}

/// Every MQTT 5 control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet5 {
    /// Client → server: open a session (may also carry a 3.1/3.1.1 CONNECT, see
    /// [`decode_v5`]).
    Connect(Box<Connect5>),
    /// Server → client: answer to CONNECT.
    ConnAck {
        /// Whether a stored session was resumed.
        session_present: bool,
        /// Outcome (0x00 success, >= 0x80 refusal).
        reason_code: u8,
        /// The server's limits and assignments.
        properties: Properties,
    },
    /// Both directions: an application message.
    Publish(Box<Publish5>),
    /// QoS 1 acknowledgement.
    PubAck(PubResponse),
    /// QoS 2 step 1.
    PubRec(PubResponse),
    /// QoS 2 step 2.
    PubRel(PubResponse),
    /// QoS 2 step 3.
    PubComp(PubResponse),
    /// Client → server: subscribe.
    Subscribe(Subscribe5),
    /// Server → client: answer to SUBSCRIBE.
    SubAck(SubResponse),
    /// Client → server: unsubscribe.
    Unsubscribe(Unsubscribe5),
    /// Server → client: answer to UNSUBSCRIBE.
    UnsubAck(SubResponse),
    /// Keepalive probe.
    PingReq,
    /// Keepalive answer.
    PingResp,
    /// Either direction: end of the connection with a reason.
    Disconnect(ReasonPacket),
    /// Either direction: extended authentication exchange.
    Auth(ReasonPacket),
}

impl Packet5 {
    /// The packet type's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Packet5::Connect(_) => "CONNECT",
            Packet5::ConnAck { .. } => "CONNACK",
            Packet5::Publish(_) => "PUBLISH",
            Packet5::PubAck(_) => "PUBACK",
            Packet5::PubRec(_) => "PUBREC",
            Packet5::PubRel(_) => "PUBREL",
            Packet5::PubComp(_) => "PUBCOMP",
            Packet5::Subscribe(_) => "SUBSCRIBE",
            Packet5::SubAck(_) => "SUBACK",
            Packet5::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet5::UnsubAck(_) => "UNSUBACK",
            Packet5::PingReq => "PINGREQ",
            Packet5::PingResp => "PINGRESP",
            Packet5::Disconnect(_) => "DISCONNECT",
            Packet5::Auth(_) => "AUTH",
        }
    }
}

fn check_reason(packet: &'static str, code: u8, allowed: &[u8]) -> Result<u8, DecodeError> {
    if allowed.contains(&code) {
        Ok(code)
    } else {
        Err(DecodeError::InvalidReasonCode { packet, code })
    }
}

const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

fn pub_response(r: &mut Reader, allowed: &[u8]) -> Result<PubResponse, DecodeError> {
    let pkid = r.pkid()?;
    if r.body.is_empty() {
        return Ok(PubResponse {
            pkid,
            reason_code: 0,
            properties: Properties::default(),
        });
    }
    let reason_code = check_reason(r.packet, r.u8("reason code")?, allowed)?;
    let properties = if r.body.is_empty() {
        Properties::default()
    } else {
        decode_properties(r, PropertyContext::PubResponse)?
    };
    Ok(PubResponse {
        pkid,
        reason_code,
        properties,
    })
}

fn reason_packet(
    r: &mut Reader,
    allowed: &[u8],
    ctx: PropertyContext,
) -> Result<ReasonPacket, DecodeError> {
    if r.body.is_empty() {
        return Ok(ReasonPacket {
            reason_code: 0,
            properties: Properties::default(),
        });
    }
    let reason_code = check_reason(r.packet, r.u8("reason code")?, allowed)?;
    let properties = if r.body.is_empty() {
        Properties::default()
    } else {
        decode_properties(r, ctx)?
    };
    Ok(ReasonPacket {
        reason_code,
        properties,
    })
}

/// Decodes one MQTT 5 packet from the front of `buf`, with the same contract as
/// [`crate::decode`]: `Ok(None)` (nothing consumed) until a whole packet is buffered, an
/// error for a malformed packet or one larger than `max_packet_size` (checked from the
/// fixed header alone). A CONNECT of any supported level is decoded too (a 3.1/3.1.1
/// CONNECT comes back with empty properties and its own [`ProtocolVersion`]), so a server
/// can use this for the first packet of every connection.
pub fn decode_v5(
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<Packet5>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    let flags = first & 0x0f;
    let (name, expected_flags) = if packet_type == 15 {
        ("AUTH", Some(0))
    } else {
        packet_kind(packet_type)?
    };
    let Some(body) = take_frame(buf, max_packet_size, name, flags, expected_flags)? else {
        return Ok(None);
    };
    let mut r = Reader { body, packet: name };
    let packet = match packet_type {
        1 => {
            let (connect, props) = decode_connect_any(&mut r, true)?;
            let (properties, will_properties) = props.unwrap_or_default();
            Packet5::Connect(Box::new(Connect5 {
                connect,
                properties,
                will_properties,
            }))
        }
        2 => {
            let ack_flags = r.u8("acknowledge flags")?;
            if ack_flags & !1 != 0 {
                return Err(DecodeError::InvalidConnAckFlags { flags: ack_flags });
            }
            let reason_code = check_reason(name, r.u8("reason code")?, CONNACK_CODES)?;
            let properties = decode_properties(&mut r, PropertyContext::ConnAck)?;
            Packet5::ConnAck {
                session_present: ack_flags & 1 == 1,
                reason_code,
                properties,
            }
        }
        3 => Packet5::Publish(Box::new(decode_publish5(&mut r, flags)?)),
        4 => Packet5::PubAck(pub_response(&mut r, PUBACK_CODES)?),
        5 => Packet5::PubRec(pub_response(&mut r, PUBACK_CODES)?),
        6 => Packet5::PubRel(pub_response(&mut r, PUBREL_CODES)?),
        7 => Packet5::PubComp(pub_response(&mut r, PUBREL_CODES)?),
        8 => {
            let pkid = r.pkid()?;
            let properties = decode_properties(&mut r, PropertyContext::Subscribe)?;
            let mut filters = Vec::new();
            while !r.body.is_empty() {
                let filter = r.string("topic filter")?;
                let options = SubscriptionOptions::from_byte(r.u8("subscription options")?)?;
                filters.push((filter, options));
            }
            if filters.is_empty() {
                return Err(DecodeError::NoSubscribeFilters);
            }
            Packet5::Subscribe(Subscribe5 {
                pkid,
                filters,
                properties,
            })
        }
        9 | 11 => {
            let pkid = r.pkid()?;
            let properties = decode_properties(&mut r, PropertyContext::SubResponse)?;
            let allowed = if packet_type == 9 {
                SUBACK_CODES
            } else {
                UNSUBACK_CODES
            };
            let reason_codes = r
                .rest()
                .iter()
                .map(|&c| check_reason(name, c, allowed))
                .collect::<Result<Vec<_>, _>>()?;
            let ack = SubResponse {
                pkid,
                reason_codes,
                properties,
            };
            if packet_type == 9 {
                Packet5::SubAck(ack)
            } else {
                Packet5::UnsubAck(ack)
            }
        }
        10 => {
            let pkid = r.pkid()?;
            let properties = decode_properties(&mut r, PropertyContext::Unsubscribe)?;
            let mut filters = Vec::new();
            while !r.body.is_empty() {
                filters.push(r.string("topic filter")?);
            }
            if filters.is_empty() {
                return Err(DecodeError::NoUnsubscribeFilters);
            }
            Packet5::Unsubscribe(Unsubscribe5 {
                pkid,
                filters,
                properties,
            })
        }
        12 => Packet5::PingReq,
        13 => Packet5::PingResp,
        14 => Packet5::Disconnect(reason_packet(
            &mut r,
            DISCONNECT_CODES,
            PropertyContext::Disconnect,
        )?),
        _ => Packet5::Auth(reason_packet(&mut r, AUTH_CODES, PropertyContext::Auth)?),
    };
    r.finish()?;
    Ok(Some(packet))
}

fn decode_publish5(r: &mut Reader, flags: u8) -> Result<Publish5, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::PublishQoS3)?;
    let retain = flags & 1 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupOnQoS0);
    }
    let topic = r.string("topic name")?;
    if topic.contains(['+', '#']) {
        return Err(DecodeError::WildcardInTopicName { topic });
    }
    let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
    let properties = decode_properties(r, PropertyContext::Publish)?;
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::EmptyTopicWithoutAlias);
    }
    Ok(Publish5 {
        publish: Publish {
            dup,
            qos,
            retain,
            topic,
            pkid,
            payload: r.rest(),
        },
        properties,
    })
}

/// Appends a v5 PUBLISH to `out` from borrowed parts: the fan-out path, where the shared
/// properties are written once per recipient with that recipient's overrides. Returns the
/// packet's total size. Preconditions as [`crate::encode_publish`].
#[allow(clippy::too_many_arguments)]
pub fn encode_publish5(
    out: &mut BytesMut,
    scratch: &mut BytesMut,
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &str,
    pkid: u16,
    payload: &[u8],
    properties: &Properties,
    overrides: Option<&PublishOverrides>,
) -> usize {
    scratch.clear();
    put_properties(scratch, properties, overrides);
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining =
        2 + topic.len() + id_len + var_int_len(scratch.len()) + scratch.len() + payload.len();
    let start = out.len();
    out.reserve(5 + remaining);
    out.put_u8(0x30 | (u8::from(dup) << 3) | (qos.as_u8() << 1) | u8::from(retain));
    put_remaining_length(out, remaining);
    put_binary(out, topic.as_bytes());
    if id_len == 2 {
        out.put_u16(pkid);
    }
    put_property_block(out, scratch);
    out.put_slice(payload);
    out.len() - start
}

/// The total size [`encode_publish5`] would write, without writing the packet.
#[allow(clippy::too_many_arguments)]
pub fn publish5_size(
    scratch: &mut BytesMut,
    qos: QoS,
    topic: &str,
    payload_len: usize,
    properties: &Properties,
    overrides: Option<&PublishOverrides>,
) -> usize {
    scratch.clear();
    put_properties(scratch, properties, overrides);
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining =
        2 + topic.len() + id_len + var_int_len(scratch.len()) + scratch.len() + payload_len;
    1 + var_int_len(remaining) + remaining
}

fn put_frame(out: &mut BytesMut, first: u8, body: &[u8]) {
    out.put_u8(first);
    put_remaining_length(out, body.len());
    out.put_slice(body);
}

fn put_pub_response(out: &mut BytesMut, first: u8, r: &PubResponse) {
    let mut body = BytesMut::new();
    body.put_u16(r.pkid);
    if r.reason_code != 0 || !r.properties.is_empty() {
        body.put_u8(r.reason_code);
        if !r.properties.is_empty() {
            put_property_block(&mut body, &encoded_properties(&r.properties));
        }
    }
    put_frame(out, first, &body);
}

fn put_reason_packet(out: &mut BytesMut, first: u8, r: &ReasonPacket) {
    let mut body = BytesMut::new();
    if r.reason_code != 0 || !r.properties.is_empty() {
        body.put_u8(r.reason_code);
        if !r.properties.is_empty() {
            put_property_block(&mut body, &encoded_properties(&r.properties));
        }
    }
    put_frame(out, first, &body);
}

/// Appends the wire form of `packet` to `out`. Strings and binary fields must be at most
/// 65535 bytes and the packet must fit in [`crate::codec::MAX_REMAINING_LENGTH`]; every
/// decoded packet satisfies this. A [`Packet5::Connect`] is written at its own level.
pub fn encode_v5(packet: &Packet5, out: &mut BytesMut) {
    match packet {
        Packet5::Connect(c) => encode_connect5(c, out),
        Packet5::ConnAck {
            session_present,
            reason_code,
            properties,
        } => {
            let mut body = BytesMut::new();
            body.put_u8(u8::from(*session_present));
            body.put_u8(*reason_code);
            put_property_block(&mut body, &encoded_properties(properties));
            put_frame(out, 0x20, &body);
        }
        Packet5::Publish(p) => {
            let mut scratch = BytesMut::new();
            encode_publish5(
                out,
                &mut scratch,
                p.publish.dup,
                p.publish.qos,
                p.publish.retain,
                &p.publish.topic,
                p.publish.pkid,
                &p.publish.payload,
                &p.properties,
                None,
            );
        }
        Packet5::PubAck(r) => put_pub_response(out, 0x40, r),
        Packet5::PubRec(r) => put_pub_response(out, 0x50, r),
        Packet5::PubRel(r) => put_pub_response(out, 0x62, r),
        Packet5::PubComp(r) => put_pub_response(out, 0x70, r),
        Packet5::Subscribe(s) => {
            let mut body = BytesMut::new();
            body.put_u16(s.pkid);
            put_property_block(&mut body, &encoded_properties(&s.properties));
            for (filter, options) in &s.filters {
                put_binary(&mut body, filter.as_bytes());
                body.put_u8(options.to_byte());
            }
            put_frame(out, 0x82, &body);
        }
        Packet5::SubAck(a) | Packet5::UnsubAck(a) => {
            let first = if matches!(packet, Packet5::SubAck(_)) {
                0x90
            } else {
                0xb0
            };
            let mut body = BytesMut::new();
            body.put_u16(a.pkid);
            put_property_block(&mut body, &encoded_properties(&a.properties));
            body.put_slice(&a.reason_codes);
            put_frame(out, first, &body);
        }
        Packet5::Unsubscribe(u) => {
            let mut body = BytesMut::new();
            body.put_u16(u.pkid);
            put_property_block(&mut body, &encoded_properties(&u.properties));
            for filter in &u.filters {
                put_binary(&mut body, filter.as_bytes());
            }
            put_frame(out, 0xa2, &body);
        }
        Packet5::PingReq => out.put_slice(&[0xc0, 0]),
        Packet5::PingResp => out.put_slice(&[0xd0, 0]),
        Packet5::Disconnect(d) => put_reason_packet(out, 0xe0, d),
        Packet5::Auth(a) => put_reason_packet(out, 0xf0, a),
    }
}

fn encode_connect5(c: &Connect5, out: &mut BytesMut) {
    let v5 = c.connect.protocol == ProtocolVersion::V5;
    let cn = &c.connect;
    let mut body = BytesMut::new();
    put_binary(&mut body, cn.protocol.name().as_bytes());
    body.put_u8(cn.protocol.level());
    let mut flags = 0u8;
    if cn.clean_session {
        flags |= 0b10;
    }
    if let Some(w) = &cn.will {
        flags |= 0b100 | (w.qos.as_u8() << 3) | (u8::from(w.retain) << 5);
    }
    if cn.username.is_some() {
        flags |= 0b1000_0000;
    }
    if cn.password.is_some() {
        flags |= 0b100_0000;
    }
    body.put_u8(flags);
    body.put_u16(cn.keep_alive);
    if v5 {
        put_property_block(&mut body, &encoded_properties(&c.properties));
    }
    put_binary(&mut body, cn.client_id.as_bytes());
    if let Some(w) = &cn.will {
        if v5 {
            put_property_block(&mut body, &encoded_properties(&c.will_properties));
        }
        put_binary(&mut body, w.topic.as_bytes());
        put_binary(&mut body, &w.payload);
    }
    if let Some(u) = &cn.username {
        put_binary(&mut body, u.as_bytes());
    }
    if let Some(p) = &cn.password {
        put_binary(&mut body, p);
    }
    put_frame(out, 0x10, &body);
}
