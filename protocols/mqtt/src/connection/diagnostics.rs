//! What the server may add to the v5 packets it sends (other than PUBLISH): a Reason String
//! for every error, within what the client asked for (Request Problem Information, Maximum
//! Packet Size).

use bytes::BytesMut;

use crate::codec::encode;
use crate::packet::{Packet, ProtocolVersion};
use crate::properties::PropertyList;
use crate::reason;

/// Longest Reason String the server sends (bytes, cut at a character boundary): enough to
/// name the offending topic or filter, short enough to stay a diagnostic.
pub const MAX_REASON_STRING: usize = 1024;

/// The diagnostic parts of a server-sent v5 packet: its properties, the error reason code
/// that needs explaining (the first >= 0x80, if any), and whether Reason String and User
/// Properties may be sent even with Request Problem Information 0 (CONNACK, DISCONNECT;
/// MQTT-3.1.2-29). `None` for packets without them (PUBLISH is handled on its own).
fn problem_fields(packet: &mut Packet) -> Option<(&mut PropertyList, Option<u8>, bool)> {
    let failure = |code: u8| (code >= 0x80).then_some(code);
    match packet {
        Packet::ConnAck {
            reason_code,
            properties,
            ..
        } => Some((properties, failure(*reason_code), true)),
        Packet::Disconnect(r) => Some((&mut r.properties, failure(r.reason_code), true)),
        Packet::Auth(r) => Some((&mut r.properties, None, false)),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            Some((&mut r.properties, failure(r.reason_code), false))
        }
        Packet::SubAck(r) | Packet::UnsubAck(r) => {
            let code = r.reason_codes.iter().copied().find(|c| *c >= 0x80);
            Some((&mut r.properties, code, false))
        }
        Packet::Connect(_)
        | Packet::Publish(_)
        | Packet::Subscribe(_)
        | Packet::Unsubscribe(_)
        | Packet::PingReq
        | Packet::PingResp => None,
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// What a v5 client asked of the server's diagnostics in its CONNECT.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientAsks {
    /// Request Problem Information 0: no Reason String or User Property on any packet but
    /// PUBLISH, CONNACK and DISCONNECT (MQTT-3.1.2-29).
    pub no_problem_information: bool,
    /// The client's Maximum Packet Size, if it announced one.
    pub max_packet_size: Option<u32>,
}

/// Writes a v5 packet other than PUBLISH to `tx`, applying the rules on what the server
/// may add to it:
/// - an error reason code (>= 0x80) without a Reason String gets the code's name
///   ([`reason::describe`]), so every failure says what went wrong; a Reason String is
///   cut to [`MAX_REASON_STRING`] bytes;
/// - with Request Problem Information 0, only CONNACK and DISCONNECT keep their Reason
///   String and User Properties (MQTT-3.1.2-29);
/// - a packet above the client's Maximum Packet Size loses its Reason String, then its
///   User Properties (MQTT-3.1.2-24; MQTT-3.2.2-19/20, 3.4.2-2/3, 3.5.2-2/3, 3.6.2-2/3,
///   3.7.2-2/3, 3.9.2-1/2, 3.11.2-1/2, 3.14.2-3/4), and a CONNACK then its Response
///   Information. A packet still too large without them (only possible below a few
///   dozen bytes, or with a huge client id) is sent anyway: it is a required answer,
///   and a client announcing such a size cannot be served at all.
///
/// Properties are only written to where something changes, so a plain acknowledgement
/// (no properties) stays without an allocation.
pub(crate) fn write_v5(tx: &mut BytesMut, mut packet: Packet, asks: ClientAsks) {
    if let Some((props, failure, always_allowed)) = problem_fields(&mut packet) {
        if let (Some(code), None) = (failure, &props.reason_string) {
            props.reason_string = reason::describe(code).map(str::to_string);
        }
        if props
            .reason_string
            .as_ref()
            .is_some_and(|t| t.len() > MAX_REASON_STRING)
        {
            if let Some(text) = &mut props.reason_string {
                truncate_utf8(text, MAX_REASON_STRING);
            }
        }
        let has_problem_information =
            props.reason_string.is_some() || !props.user_properties.is_empty();
        if asks.no_problem_information && !always_allowed && has_problem_information {
            props.reason_string = None;
            props.user_properties.clear();
        }
    }
    let start = tx.len();
    encode(&packet, ProtocolVersion::V5, tx);
    let Some(max) = asks.max_packet_size else {
        return;
    };
    let max = max as usize;
    for step in 0..3 {
        if tx.len() - start <= max {
            return;
        }
        let changed = match (&mut packet, step) {
            // Response Information is optional too; it goes last (3.2.2.3.15).
            (Packet::ConnAck { properties, .. }, 2) => {
                properties.response_information.is_some()
                    && properties.response_information.take().is_some()
            }
            (_, 2) => false,
            (p, _) => {
                let Some((props, _, _)) = problem_fields(p) else {
                    return;
                };
                if step == 0 {
                    props.reason_string.is_some() && props.reason_string.take().is_some()
                } else {
                    let had = !props.user_properties.is_empty();
                    if had {
                        props.user_properties.clear();
                    }
                    had
                }
            }
        };
        if changed {
            tx.truncate(start);
            encode(&packet, ProtocolVersion::V5, tx);
        }
    }
}
