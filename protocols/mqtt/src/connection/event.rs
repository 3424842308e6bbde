//! What the machine tells its driver ([`Event`]), why a connection ended ([`CloseReason`],
//! [`Violation`]), and how the driver accepts a CONNECT ([`Accept`]).

use crate::codec::DecodeError;
use crate::packet::{Connect, LastWill, Publish, Subscribe, Unsubscribe};
use crate::reason;

use super::session::SessionState;

/// Protocol rules broken by the client that are not malformed bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The first packet was not CONNECT.
    #[error("MQTT-3.1.0-1: first packet was {0}, not CONNECT")]
    FirstPacketNotConnect(&'static str),
    /// A second CONNECT arrived on the same connection.
    #[error("MQTT-3.1.0-2: second CONNECT on a connection")]
    SecondConnect,
    /// The client sent a packet that only flows server → client.
    #[error("MQTT 2.2.1: client sent {0}, which only a server may send")]
    ServerOnlyPacket(&'static str),
    /// MQTT 5: more unacknowledged QoS 1/2 PUBLISHes than the Receive Maximum we announced.
    #[error("MQTT-3.3.4-8: client exceeded the Receive Maximum of {limit}")]
    ReceiveMaximumExceeded {
        /// The announced Receive Maximum.
        limit: u16,
    },
    /// MQTT 5: Topic Alias 0 or above the Topic Alias Maximum we announced.
    #[error("MQTT-3.3.2-9/10: Topic Alias {alias} outside 1..={max}")]
    TopicAliasInvalid {
        /// The received alias.
        alias: u16,
        /// The announced Topic Alias Maximum.
        max: u16,
    },
    /// MQTT 5: a PUBLISH with an empty topic and an alias that was never set.
    #[error("MQTT 3.3.2.3.4: Topic Alias {0} used before it was set on this connection")]
    UnknownTopicAlias(u16),
    /// MQTT 5: a client PUBLISH carrying a Subscription Identifier.
    #[error("MQTT-3.3.4-6: client PUBLISH carries a Subscription Identifier")]
    SubscriptionIdentifierFromClient,
    /// MQTT 5: DISCONNECT sets a Session Expiry Interval although CONNECT's was 0.
    #[error("MQTT-3.14.2-2: DISCONNECT sets Session Expiry {0} after CONNECT set 0")]
    SessionExpiryAfterZero(u32),
    /// MQTT 5: AUTH although the CONNECT named no Authentication Method (none is
    /// supported: a CONNECT naming one already got CONNACK 0x8C). DISCONNECT 0x82, as 0x8C
    /// is not a DISCONNECT reason code (table 3-10).
    #[error("MQTT 4.12: AUTH received without an Authentication Method in CONNECT")]
    AuthNotSupported,
    /// The client pipelined more bytes behind CONNECT than the limit, before `accept`.
    #[error(
        "MQTT-3.1.4-5: {buffered} bytes received before the CONNECT was accepted (limit {limit})"
    )]
    TooMuchBeforeAccept {
        /// Bytes buffered.
        buffered: usize,
        /// The limit (`Config::max_packet_size`).
        limit: usize,
    },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// The client sent DISCONNECT (the will is discarded, MQTT-3.14.4-3).
    #[error("client sent DISCONNECT")]
    Disconnect,
    /// The transport reported end of stream or an I/O error.
    #[error("connection closed by the peer")]
    Eof,
    /// Malformed bytes (MQTT-4.8.0-1).
    #[error("malformed packet: {0}")]
    Malformed(#[from] DecodeError),
    /// Well-formed packet breaking a protocol rule.
    #[error("protocol violation: {0}")]
    Violation(#[from] Violation),
    /// No CONNECT within `Config::connect_timeout`.
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    /// Nothing received for 1.5 × Keep Alive (MQTT-3.1.2-24).
    #[error("MQTT-3.1.2-24: no packet within 1.5 x Keep Alive")]
    KeepAliveTimeout,
    /// CONNECT refused with this CONNACK reason code (by the driver or by the machine
    /// itself; a 3.1.1 client got the closest return code, see [`crate::reason`]).
    #[error("CONNECT refused with reason code {0:#04x}")]
    Rejected(u8),
    /// Another connection with the same client id took the session over (MQTT-3.1.4-2).
    #[error("MQTT-3.1.4-2: session taken over by a new connection")]
    TakenOver,
    /// The server is shutting down or the operator dropped the client.
    #[error("closed by the server")]
    ServerClose,
    /// MQTT 5: the client sent DISCONNECT with this reason code; the will is published
    /// only for 0x04 (Disconnect with Will Message).
    #[error("client sent DISCONNECT with reason code {reason_code:#04x}")]
    ClientDisconnect {
        /// The client's reason code.
        reason_code: u8,
        /// A new Session Expiry Interval set by the DISCONNECT (MQTT 3.14.2.2.2).
        session_expiry_interval: Option<u32>,
    },
    /// The server closes with this v5 reason code, sent in DISCONNECT on v5 connections
    /// with `reason_string` as its Reason String (the code's name when `None`; within the
    /// client's Maximum Packet Size).
    #[error("closed by the server with reason code {reason_code:#04x}{}", colon(.reason_string))]
    Server {
        /// The DISCONNECT reason code (>= 0x80).
        reason_code: u8,
        /// What the client did wrong, for a human reading the client's logs.
        reason_string: Option<String>,
    },
}

impl CloseReason {
    /// The reason code of the DISCONNECT a v5 server sends for this close, `None` when no
    /// DISCONNECT is sent (the client disconnected or vanished, or no CONNACK was sent).
    pub fn v5_reason_code(&self) -> Option<u8> {
        Some(match self {
            CloseReason::Disconnect
            | CloseReason::ClientDisconnect { .. }
            | CloseReason::Eof
            | CloseReason::ConnectTimeout
            | CloseReason::Rejected(_) => return None,
            CloseReason::Malformed(DecodeError::PacketTooLarge { .. }) => reason::PACKET_TOO_LARGE,
            CloseReason::Malformed(_) => reason::MALFORMED_PACKET,
            CloseReason::Violation(Violation::ReceiveMaximumExceeded { .. }) => {
                reason::RECEIVE_MAXIMUM_EXCEEDED
            }
            CloseReason::Violation(Violation::TopicAliasInvalid { .. }) => {
                reason::TOPIC_ALIAS_INVALID
            }
            CloseReason::Violation(_) => reason::PROTOCOL_ERROR,
            CloseReason::KeepAliveTimeout => reason::KEEP_ALIVE_TIMEOUT,
            CloseReason::TakenOver => reason::SESSION_TAKEN_OVER,
            CloseReason::ServerClose => reason::SERVER_SHUTTING_DOWN,
            CloseReason::Server { reason_code, .. } => *reason_code,
        })
    }
}

/// Something the driver must act upon. One variant per kind, whatever the protocol version:
/// a 3.1/3.1.1 packet arrives in the v5 model, with no properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The CONNECT (first packet only); answer with [`super::Connection::accept`] or
    /// [`super::Connection::reject`]. An empty client id arrives here only when the broker
    /// may assign one (3.1.1: with Clean Session 1; v5: always).
    Connect(Box<Connect>),
    /// An inbound application message, its topic resolved (never empty, Topic Alias
    /// removed); for QoS 1/2 answer with [`super::Connection::publish_done`].
    Publish(Publish),
    /// A SUBSCRIBE (filters not validated here; 3.1.1 entries carry only their QoS);
    /// answer with [`super::Connection::suback`], one code per filter in filter order.
    Subscribe(Subscribe),
    /// An UNSUBSCRIBE; answer with [`super::Connection::unsuback`].
    Unsubscribe(Unsubscribe),
    /// An outgoing QoS 1/2 exchange completed: the window has room for another message.
    InflightFreed,
    /// A PINGREQ; answer with [`super::Connection::ping_response`] once everything the
    /// client sent before it is handled. Left to the application so a PINGRESP can keep its
    /// meaning as a barrier — clients (and test suites) send PINGREQ after a QoS 0 PUBLISH
    /// to know it was processed — when the application handles PUBLISHes asynchronously.
    PingRequest,
    /// The connection is over (emitted exactly once). Flush `poll_transmit`, then close.
    Closed {
        /// Why it ended.
        reason: CloseReason,
        /// The will to publish: `Some` on every close after `accept` other than DISCONNECT
        /// (and v5 DISCONNECT 0x04, which asks for it).
        will: Option<LastWill>,
    },
}

/// How the driver accepts a CONNECT ([`super::Connection::accept`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accept {
    /// CONNACK Session Present: an existing session is resumed.
    pub session_present: bool,
    /// The resumed session's protocol state: its unacknowledged PUBLISHes (re-sent with
    /// DUP=1) and PUBRELs, in original order (MQTT-4.4.0-1), inbound QoS 2 ids, next id.
    pub resume: Option<SessionState>,
    /// MQTT 5: the client id the server assigned to an empty one (CONNACK Assigned Client
    /// Identifier, MQTT-3.2.2-16).
    pub assigned_client_id: Option<String>,
    /// MQTT 5: the response-topic basis offered as CONNACK Response Information
    /// (3.2.2.3.15); sent only when the client set Request Response Information 1
    /// (MQTT-3.1.2-28), and ignored when longer than a UTF-8 string field can be.
    pub response_information: Option<String>,
}

/// `": why"`, or nothing: the tail of a [`CloseReason::Server`] message.
fn colon(why: &Option<String>) -> String {
    why.as_deref().map(|s| format!(": {s}")).unwrap_or_default()
}
