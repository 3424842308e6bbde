//! The wire form of MQTT 5 property lists (section 2.2.2): which property each packet
//! allows (table 2-4), decoding with every rule the specification names (unknown, not
//! allowed, duplicated, out of range), and encoding — including the fan-out form of a
//! PUBLISH's list, written from a shared [`PublishProperties`] view and per-send values.

use bytes::{BufMut, BytesMut};

use super::error::DecodeError;
use super::wire::{put_binary, put_remaining_length, u32_field, var_int, Reader};
use crate::properties::{Properties, PropertyList, PublishProperties};

/// Which property list is being read: decides which identifiers are allowed (table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropertyContext {
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

/// Reads a property list (length, then properties) for `ctx`. An empty list (the common
/// case) allocates nothing.
pub(crate) fn decode_properties(
    r: &mut Reader,
    ctx: PropertyContext,
) -> Result<PropertyList, DecodeError> {
    let len = var_int(r, "property length")? as usize;
    if len == 0 {
        return Ok(PropertyList::default());
    }
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
    Ok(p.into())
}

fn put_str(out: &mut BytesMut, id: u8, v: &str) {
    out.put_u8(id);
    put_binary(out, v.as_bytes());
}

fn put_var_int(out: &mut BytesMut, mut v: u32) {
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

fn put_byte(out: &mut BytesMut, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        out.put_slice(&[id, v]);
    }
}

fn put_short(out: &mut BytesMut, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        out.put_u8(id);
        out.put_u16(v);
    }
}

fn put_long(out: &mut BytesMut, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        out.put_u8(id);
        out.put_u32(v);
    }
}

fn put_user_property(out: &mut BytesMut, k: &str, v: &str) {
    out.put_u8(0x26);
    put_binary(out, k.as_bytes());
    put_binary(out, v.as_bytes());
}

/// Writes the body of a property list (without its length) into `out`, in identifier order.
pub(crate) fn put_properties(out: &mut BytesMut, p: &Properties) {
    put_byte(out, 0x01, p.payload_format_indicator);
    put_long(out, 0x02, p.message_expiry_interval);
    if let Some(v) = &p.content_type {
        put_str(out, 0x03, v);
    }
    if let Some(v) = &p.response_topic {
        put_str(out, 0x08, v);
    }
    if let Some(v) = &p.correlation_data {
        out.put_u8(0x09);
        put_binary(out, v);
    }
    for id in &p.subscription_identifiers {
        out.put_u8(0x0B);
        put_var_int(out, *id);
    }
    put_long(out, 0x11, p.session_expiry_interval);
    if let Some(v) = &p.assigned_client_identifier {
        put_str(out, 0x12, v);
    }
    put_short(out, 0x13, p.server_keep_alive);
    if let Some(v) = &p.authentication_method {
        put_str(out, 0x15, v);
    }
    if let Some(v) = &p.authentication_data {
        out.put_u8(0x16);
        put_binary(out, v);
    }
    put_byte(out, 0x17, p.request_problem_information);
    put_long(out, 0x18, p.will_delay_interval);
    put_byte(out, 0x19, p.request_response_information);
    if let Some(v) = &p.response_information {
        put_str(out, 0x1A, v);
    }
    if let Some(v) = &p.server_reference {
        put_str(out, 0x1C, v);
    }
    if let Some(v) = &p.reason_string {
        put_str(out, 0x1F, v);
    }
    put_short(out, 0x21, p.receive_maximum);
    put_short(out, 0x22, p.topic_alias_maximum);
    put_short(out, 0x23, p.topic_alias);
    put_byte(out, 0x24, p.maximum_qos);
    put_byte(out, 0x25, p.retain_available);
    for (k, v) in &p.user_properties {
        put_user_property(out, k, v);
    }
    put_long(out, 0x27, p.maximum_packet_size);
    put_byte(out, 0x28, p.wildcard_subscription_available);
    put_byte(out, 0x29, p.subscription_identifiers_available);
    put_byte(out, 0x2A, p.shared_subscription_available);
}

/// What an outgoing PUBLISH carries besides its shared application properties: the parts
/// that differ per message, per recipient or per send.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PublishExtras<'a> {
    /// Content Type of the message.
    pub content_type: Option<&'a str>,
    /// Remaining Message Expiry Interval, in seconds.
    pub message_expiry_interval: Option<u32>,
    /// This connection's topic alias for the topic.
    pub topic_alias: Option<u16>,
    /// Identifiers of the recipient's matching subscriptions.
    pub subscription_identifiers: &'a [u32],
}

/// Writes the body of an outgoing PUBLISH's property list (without its length), in the
/// identifier order [`put_properties`] uses: the shared application properties read
/// through their view, the per-send values from `extras`.
pub(crate) fn put_publish_properties(
    out: &mut BytesMut,
    shared: Option<&dyn PublishProperties>,
    extras: &PublishExtras<'_>,
) {
    put_byte(out, 0x01, shared.and_then(|p| p.payload_format_indicator()));
    put_long(out, 0x02, extras.message_expiry_interval);
    if let Some(v) = extras.content_type {
        put_str(out, 0x03, v);
    }
    if let Some(p) = shared {
        if let Some(v) = p.response_topic() {
            put_str(out, 0x08, v);
        }
        if let Some(v) = p.correlation_data() {
            out.put_u8(0x09);
            put_binary(out, v);
        }
    }
    for id in extras.subscription_identifiers {
        out.put_u8(0x0B);
        put_var_int(out, *id);
    }
    put_short(out, 0x23, extras.topic_alias);
    if let Some(p) = shared {
        p.user_properties(&mut |k, v| put_user_property(out, k, v));
    }
}

/// Writes `props` (already encoded, without length) with its Variable Byte Integer length.
pub(crate) fn put_property_block(out: &mut BytesMut, props: &[u8]) {
    put_remaining_length(out, props.len());
    out.put_slice(props);
}

/// The encoded body of `p`'s property list.
pub(crate) fn encoded_properties(p: &Properties) -> BytesMut {
    let mut b = BytesMut::new();
    put_properties(&mut b, p);
    b
}
