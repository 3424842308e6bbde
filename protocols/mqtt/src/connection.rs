//! The per-connection MQTT server state machine, free of I/O and clocks.
//!
//! A driver feeds received bytes ([`Connection::handle_bytes`]), end of stream
//! ([`Connection::handle_eof`]) and timer expiry ([`Connection::handle_timeout`]) in, and
//! drains outgoing bytes ([`Connection::poll_transmit`]), events for the broker
//! ([`Connection::poll_event`]) and the next deadline ([`Connection::poll_timeout`]). The
//! broker answers events with commands ([`Connection::accept`], [`Connection::publish_done`],
//! [`Connection::suback`], ...). Time is always passed in as `now`, so tests use a fake clock.
//!
//! Bytes that arrive after the CONNECT but before the driver has called `accept` are kept
//! undecoded: clients may pipeline packets behind CONNECT (MQTT 3.1.4), and a server that
//! rejects the CONNECT must not process them (MQTT-3.1.4-5).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::codec::{decode, encode, encode_publish, DecodeError};
use crate::packet::{
    Connect, ConnectReturnCode, LastWill, Packet, ProtocolVersion, Publish, QoS,
    SubscribeReturnCode,
};
use crate::v5::{
    decode_v5, encode_publish5, encode_v5, publish5_size, reason, Connect5, Packet5, Properties,
    PubResponse, Publish5, PublishOverrides, ReasonPacket, SubResponse, Subscribe5,
};

/// The empty property list, for outgoing messages that carry none.
static NO_PROPERTIES: Properties = Properties {
    payload_format_indicator: None,
    message_expiry_interval: None,
    content_type: None,
    response_topic: None,
    correlation_data: None,
    subscription_identifiers: Vec::new(),
    session_expiry_interval: None,
    assigned_client_identifier: None,
    server_keep_alive: None,
    authentication_method: None,
    authentication_data: None,
    request_problem_information: None,
    will_delay_interval: None,
    request_response_information: None,
    response_information: None,
    server_reference: None,
    reason_string: None,
    receive_maximum: None,
    topic_alias_maximum: None,
    topic_alias: None,
    maximum_qos: None,
    retain_available: None,
    user_properties: Vec::new(),
    maximum_packet_size: None,
    wildcard_subscription_available: None,
    subscription_identifiers_available: None,
    shared_subscription_available: None,
};

/// Limits and timers of one connection.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest inbound packet (fixed header included) accepted; bigger ones close the
    /// connection before their body is buffered, bounding memory per connection. Also caps
    /// the bytes buffered between CONNECT and `accept`.
    pub max_packet_size: usize,
    /// Outgoing QoS 1/2 window: how many unacknowledged PUBLISHes the server keeps in flight
    /// to this client, so a slow client cannot make the broker hold unbounded state here.
    pub max_inflight: u16,
    /// How long a fresh connection may take to send CONNECT before it is dropped, so idle
    /// sockets cannot hold server resources.
    pub connect_timeout: Duration,
    /// Multiple of the client's Keep Alive after which a silent connection is closed; the
    /// specification says 1.5 (MQTT-3.1.2-24).
    pub keep_alive_factor: f64,
    /// MQTT 5: most unacknowledged inbound QoS 1/2 PUBLISHes a client may have open, announced
    /// in CONNACK; one more closes the connection with 0x93 (MQTT-3.3.4-7/8), bounding the
    /// per-connection state a client can make the server hold.
    pub receive_maximum: u16,
    /// MQTT 5: highest topic alias accepted from a client (announced in CONNACK; 0 = none)
    /// and most aliases the server assigns to a client's repeated topics, bounding both
    /// alias tables per connection.
    pub topic_alias_maximum: u16,
    /// MQTT 5: largest Keep Alive the server allows; a client asking for more (or for 0, no
    /// keepalive) is told Server Keep Alive = this in CONNACK. 0 = no limit. Bounds how long
    /// a dead client's session can look alive.
    pub max_keep_alive: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_packet_size: 1024 * 1024,
            max_inflight: 32,
            connect_timeout: Duration::from_secs(10),
            keep_alive_factor: 1.5,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            max_keep_alive: 0,
        }
    }
}

/// A message the broker wants delivered to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Topic name; an `Arc<str>` so fan-out to many subscribers shares one allocation.
    /// Must be a valid topic name of at most 65535 bytes (the broker validates it).
    pub topic: Arc<str>,
    /// Payload, shared with every other recipient without copying.
    pub payload: Bytes,
    /// Delivery QoS, already min(published, granted) (MQTT-3.8.4-6).
    pub qos: QoS,
    /// RETAIN flag on the wire (1 only for retained messages sent because of a new
    /// subscription, MQTT-3.3.1-8/9, or with v5 Retain As Published).
    pub retain: bool,
    /// MQTT 5 application properties as published (User Properties in order, Response
    /// Topic, Correlation Data, Payload Format Indicator, Content Type), shared by every
    /// recipient; ignored on 3.1.1 connections. Message Expiry, Topic Alias and
    /// Subscription Identifiers in it are ignored: they are per send (below).
    pub properties: Option<Arc<Properties>>,
    /// MQTT 5: identifiers of this recipient's subscriptions that matched (MQTT-3.3.4-3/4).
    pub subscription_ids: Vec<u32>,
    /// MQTT 5: when the message expires; it is sent with the remaining interval, and not
    /// at all once expired (MQTT-3.3.2-5/6).
    pub expires_at: Option<Instant>,
}

/// One unacknowledged outgoing QoS 1/2 exchange, in the order it was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inflight {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2); resent with DUP=1 on
    /// session resume.
    Publish {
        /// Packet identifier allocated for it.
        pkid: u16,
        /// The message, kept for re-sending on reconnect.
        message: Outgoing,
    },
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP; the payload is no longer needed,
    /// PUBREL is resent on session resume.
    PubRel {
        /// Packet identifier of the exchange.
        pkid: u16,
    },
}

impl Inflight {
    /// Packet identifier of the exchange.
    pub fn pkid(&self) -> u16 {
        match self {
            Inflight::Publish { pkid, .. } | Inflight::PubRel { pkid } => *pkid,
        }
    }
}

/// Protocol state that outlives a connection when Clean Session is 0 (MQTT 3.1.2.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Unacknowledged outgoing exchanges in original order, resent on resume (MQTT-4.4.0-1).
    pub outgoing: Vec<Inflight>,
    /// Inbound QoS 2 packet ids already delivered to the broker and acknowledged with PUBREC
    /// but not yet released: a DUP re-send of these must not be delivered again.
    pub inbound_qos2: Vec<u16>,
    /// Next packet identifier to try, so ids are not reused too eagerly across reconnects.
    pub next_pkid: u16,
}

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
    /// CONNECT refused with this CONNACK code (by the driver or by the machine itself).
    #[error("CONNECT refused with return code {0:?}")]
    Rejected(ConnectReturnCode),
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
    /// The server closes with this v5 reason code (sent in DISCONNECT on v5 connections,
    /// with the code's name as Reason String).
    #[error("closed by the server with reason code {0:#04x}")]
    Server(u8),
    /// The server closes with this v5 reason code and says why: `reason_string` is sent as
    /// the DISCONNECT's Reason String (within the client's Maximum Packet Size).
    #[error("closed by the server with reason code {reason_code:#04x}: {reason_string}")]
    ServerWithReason {
        /// The DISCONNECT reason code (>= 0x80).
        reason_code: u8,
        /// What the client did wrong, for a human reading the client's logs.
        reason_string: String,
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
            CloseReason::Server(code) => *code,
            CloseReason::ServerWithReason { reason_code, .. } => *reason_code,
        })
    }
}

/// Something the driver/broker must act upon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The CONNECT (first packet only); answer with `accept` or `reject`. An empty client id
    /// only arrives here with clean session 1: the broker assigns an id.
    Connect(Connect),
    /// An inbound application message; for QoS 1/2 call `publish_done(pkid)` once handled.
    Publish(Publish),
    /// A SUBSCRIBE; answer with `suback(pkid, codes)` in filter order.
    Subscribe {
        /// Packet identifier to echo.
        pkid: u16,
        /// Filters (not validated here) with requested QoS.
        filters: Vec<(String, QoS)>,
    },
    /// An UNSUBSCRIBE; answer with `unsuback(pkid)`.
    Unsubscribe {
        /// Packet identifier to echo.
        pkid: u16,
        /// Filters to remove.
        filters: Vec<String>,
    },
    /// An outgoing QoS 1/2 exchange completed: the window has room for another message.
    InflightFreed,
    /// A PINGREQ; answer with `ping_response` once everything the client sent before it is
    /// handled. Left to the application so a PINGRESP can keep its meaning as a barrier —
    /// clients (and test suites) send PINGREQ after a QoS 0 PUBLISH to know it was processed —
    /// when the application handles PUBLISHes asynchronously.
    PingRequest,
    /// MQTT 5 CONNECT (first packet only), with its properties; answer with `accept_with`
    /// or `reject_v5`. An empty client id may arrive with either Clean Start.
    Connect5(Box<Connect5>),
    /// MQTT 5 inbound message: the topic is resolved (never empty, Topic Alias removed);
    /// for QoS 1/2 call `publish_done(pkid)` or `publish_failed(pkid, code)`.
    Publish5(Box<Publish5>),
    /// MQTT 5 SUBSCRIBE with subscription options and identifier; answer with
    /// `suback_reasons`.
    Subscribe5(Box<Subscribe5>),
    /// The connection is over (emitted exactly once). Flush `poll_transmit`, then close.
    Closed {
        /// Why it ended.
        reason: CloseReason,
        /// The will to publish: `Some` on every close after `accept` other than DISCONNECT.
        will: Option<LastWill>,
    },
}

/// Longest Reason String the server sends (bytes, cut at a character boundary): enough to
/// name the offending topic or filter, short enough to stay a diagnostic.
pub const MAX_REASON_STRING: usize = 1024;

/// The diagnostic parts of a server-sent v5 packet: its properties, the error reason code
/// that needs explaining (the first >= 0x80, if any), and whether Reason String and User
/// Properties may be sent even with Request Problem Information 0 (CONNACK, DISCONNECT;
/// MQTT-3.1.2-29). `None` for packets without them (PUBLISH is handled on its own).
fn problem_fields(packet: &mut Packet5) -> Option<(&mut Properties, Option<u8>, bool)> {
    let failure = |code: u8| (code >= 0x80).then_some(code);
    match packet {
        Packet5::ConnAck {
            reason_code,
            properties,
            ..
        } => Some((properties, failure(*reason_code), true)),
        Packet5::Disconnect(r) => Some((&mut r.properties, failure(r.reason_code), true)),
        Packet5::Auth(r) => Some((&mut r.properties, None, false)),
        Packet5::PubAck(r) | Packet5::PubRec(r) | Packet5::PubRel(r) | Packet5::PubComp(r) => {
            Some((&mut r.properties, failure(r.reason_code), false))
        }
        Packet5::SubAck(r) | Packet5::UnsubAck(r) => {
            let code = r.reason_codes.iter().copied().find(|c| *c >= 0x80);
            Some((&mut r.properties, code, false))
        }
        Packet5::Connect(_)
        | Packet5::Publish(_)
        | Packet5::Subscribe(_)
        | Packet5::Unsubscribe(_)
        | Packet5::PingReq
        | Packet5::PingResp => None,
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

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the first packet.
    AwaitingConnect,
    /// CONNECT emitted, waiting for the driver's `accept`/`reject`; input is buffered.
    AwaitingAccept,
    /// Session established.
    Connected,
    /// Closed event emitted; input ignored, commands ignored.
    Closed,
}

/// Progress of one inbound QoS 1/2 PUBLISH that the broker has not yet finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    /// QoS 1 deliveries emitted and not yet `publish_done` (a DUP re-send may add one).
    Qos1(u32),
    /// QoS 2 emitted; `done` once PUBREC was sent, then waiting for PUBREL.
    Qos2 {
        /// Whether the broker called `publish_done` (PUBREC sent).
        done: bool,
    },
}

/// What a v5 client announced in its CONNECT, and the per-connection v5 tables.
#[derive(Debug, Default)]
struct V5State {
    /// The client's Receive Maximum: caps our outgoing window (MQTT-3.3.4-9).
    client_receive_maximum: u16,
    /// The client's Maximum Packet Size: larger PUBLISHes are dropped for it (MQTT-3.1.2-24
    /// in v5 numbering, 3.1.2.11.4).
    client_max_packet_size: Option<u32>,
    /// The client's Topic Alias Maximum: caps the aliases we assign.
    client_topic_alias_max: u16,
    /// Session Expiry Interval from CONNECT, to check DISCONNECT's (MQTT-3.14.2-2).
    session_expiry_interval: u32,
    /// Keep Alive we imposed in CONNACK (Server Keep Alive), if any.
    server_keep_alive: Option<u16>,
    /// The client set Request Problem Information to 0: no Reason String or User Property
    /// on any packet but PUBLISH, CONNACK and DISCONNECT (MQTT-3.1.2-29).
    no_problem_information: bool,
    /// The client set Request Response Information to 1; without it the server must not
    /// send Response Information (MQTT-3.1.2-28).
    response_information_requested: bool,
    /// The response-topic basis the driver offered (`offer_response_information`), sent in
    /// CONNACK only when requested.
    response_information: Option<String>,
    /// Client → server aliases set on this connection.
    inbound_aliases: HashMap<u16, String>,
    /// Server → client aliases we assigned, by topic: (alias, stamp of its last use).
    outbound_aliases: HashMap<Arc<str>, (u16, u64)>,
    /// The same aliases by stamp of last use, oldest first: when all the client's aliases
    /// are taken, the first one is reassigned to a new topic (3.3.2.3.4) instead of sending
    /// every further topic in full.
    alias_lru: BTreeMap<u64, Arc<str>>,
    /// Source of alias-use stamps (increases by one per aliased PUBLISH).
    alias_clock: u64,
    /// Messages not sent because they exceeded the client's Maximum Packet Size.
    dropped_too_large: u64,
    /// Messages not sent because their Message Expiry Interval had passed.
    dropped_expired: u64,
    /// Reused buffer for encoding outgoing property lists (no allocation per message).
    scratch: BytesMut,
}

/// The server side of one MQTT connection. See the module docs.
#[derive(Debug)]
pub struct Connection {
    /// Limits and timers.
    config: Config,
    /// Life-cycle state; decides which packets are legal.
    state: State,
    /// Protocol revision from the CONNECT; `None` before it.
    protocol: Option<ProtocolVersion>,
    /// Received bytes not yet decoded (partial packets, or pipelined before `accept`).
    read_buf: BytesMut,
    /// Encoded bytes waiting for `poll_transmit`, in wire order.
    tx: BytesMut,
    /// Events waiting for `poll_event`, in order.
    events: VecDeque<Event>,
    /// Will from the CONNECT, kept pending until `accept` arms it.
    pending_will: Option<LastWill>,
    /// Armed will: published (handed out in `Closed`) on any close except DISCONNECT.
    will: Option<LastWill>,
    /// 1.5 × Keep Alive, `None` when Keep Alive is 0 (timer disabled, 3.1.2.10).
    keep_alive: Option<Duration>,
    /// When `handle_timeout` must act (connect timeout or keepalive expiry).
    deadline: Option<Instant>,
    /// Unacknowledged outgoing QoS 1/2 exchanges in send order (ack lookups scan from the
    /// front, where in-order acks hit immediately).
    outgoing: VecDeque<Inflight>,
    /// Next packet id to try for an outgoing QoS 1/2 PUBLISH.
    next_pkid: u16,
    /// Inbound QoS 1/2 publishes by packet id, for acknowledgement and QoS 2 de-duplication.
    inbound: HashMap<u16, Inbound>,
    /// MQTT 5 state; meaningful only when `protocol` is V5.
    v5: V5State,
}

impl Connection {
    /// A connection whose socket was accepted at `now`; CONNECT must arrive within
    /// `config.connect_timeout`.
    pub fn new(now: Instant, config: Config) -> Self {
        let deadline = Some(now + config.connect_timeout);
        Connection {
            config,
            state: State::AwaitingConnect,
            protocol: None,
            read_buf: BytesMut::new(),
            tx: BytesMut::new(),
            events: VecDeque::new(),
            pending_will: None,
            will: None,
            keep_alive: None,
            deadline,
            outgoing: VecDeque::new(),
            next_pkid: 1,
            inbound: HashMap::new(),
            v5: V5State::default(),
        }
    }

    fn is_v5(&self) -> bool {
        self.protocol == Some(ProtocolVersion::V5)
    }

    /// Writes a v5 packet other than PUBLISH, applying the rules on what the server may
    /// add to it:
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
    fn send_v5(&mut self, mut packet: Packet5) {
        let no_problem_information = self.v5.no_problem_information;
        if let Some((props, failure, always_allowed)) = problem_fields(&mut packet) {
            if let (Some(code), None) = (failure, &props.reason_string) {
                props.reason_string = reason::describe(code).map(str::to_string);
            }
            if let Some(text) = &mut props.reason_string {
                truncate_utf8(text, MAX_REASON_STRING);
            }
            if no_problem_information && !always_allowed {
                props.reason_string = None;
                props.user_properties.clear();
            }
        }
        let start = self.tx.len();
        encode_v5(&packet, &mut self.tx);
        let Some(max) = self.v5.client_max_packet_size else {
            return;
        };
        let max = max as usize;
        for step in 0..3 {
            if self.tx.len() - start <= max {
                return;
            }
            let changed = match (&mut packet, step) {
                // Response Information is optional too; it goes last (3.2.2.3.15).
                (Packet5::ConnAck { properties, .. }, 2) => {
                    properties.response_information.take().is_some()
                }
                (_, 2) => false,
                (p, _) => {
                    let Some((props, _, _)) = problem_fields(p) else {
                        return;
                    };
                    if step == 0 {
                        props.reason_string.take().is_some()
                    } else {
                        let had = !props.user_properties.is_empty();
                        props.user_properties.clear();
                        had
                    }
                }
            };
            if changed {
                self.tx.truncate(start);
                encode_v5(&packet, &mut self.tx);
            }
        }
    }

    /// Feeds received bytes; decodes and handles every complete packet.
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.read_buf.extend_from_slice(data);
        self.process(now);
    }

    /// The peer closed the stream (or it failed): close, publishing the will if armed.
    pub fn handle_eof(&mut self, _now: Instant) {
        self.close_with(CloseReason::Eof);
    }

    /// Acts on an expired deadline: connect timeout or keepalive (MQTT-3.1.2-24).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        let reason = match self.state {
            State::AwaitingConnect => CloseReason::ConnectTimeout,
            State::AwaitingAccept | State::Connected => CloseReason::KeepAliveTimeout,
            State::Closed => return,
        };
        self.close_with(reason);
    }

    /// When `handle_timeout` should next be called; `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            _ => self.deadline,
        }
    }

    /// Appends every pending outgoing byte to `out`; true if anything was written.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> bool {
        if self.tx.is_empty() {
            return false;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut self.tx);
        } else {
            out.extend_from_slice(&self.tx);
            self.tx.clear();
        }
        true
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Accepts the CONNECT: sends CONNACK 0, arms the will and keepalive, restores `resume`
    /// and resends its unacknowledged PUBLISHes (DUP=1) and PUBRELs in original order
    /// (MQTT-4.4.0-1), then handles any packets pipelined behind the CONNECT.
    pub fn accept(&mut self, now: Instant, session_present: bool, resume: Option<SessionState>) {
        self.accept_with(now, session_present, resume, None);
    }

    /// [`Connection::accept`], and on a v5 connection name the client id the server assigned
    /// to an empty one (CONNACK Assigned Client Identifier, MQTT-3.2.2-16). The v5 CONNACK
    /// also announces the server's limits: Receive Maximum, Maximum Packet Size, Topic Alias
    /// Maximum, Retain / Wildcard / Subscription Identifier / Shared Subscription Available,
    /// Server Keep Alive when the client's Keep Alive was above `max_keep_alive`, and the
    /// Response Information offered with [`Connection::offer_response_information`] when the
    /// client asked for it.
    pub fn accept_with(
        &mut self,
        now: Instant,
        session_present: bool,
        resume: Option<SessionState>,
        assigned_client_id: Option<String>,
    ) {
        if self.state != State::AwaitingAccept {
            return;
        }
        self.state = State::Connected;
        self.will = self.pending_will.take();
        if self.is_v5() {
            let properties = Properties {
                receive_maximum: Some(self.config.receive_maximum.max(1)),
                maximum_packet_size: Some(
                    u32::try_from(self.config.max_packet_size).unwrap_or(u32::MAX),
                ),
                topic_alias_maximum: Some(self.config.topic_alias_maximum),
                retain_available: Some(1),
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(1),
                shared_subscription_available: Some(1),
                server_keep_alive: self.v5.server_keep_alive,
                assigned_client_identifier: assigned_client_id,
                // MQTT-3.1.2-28: only when the client asked for it.
                response_information: if self.v5.response_information_requested {
                    self.v5.response_information.take()
                } else {
                    None
                },
                ..Properties::default()
            };
            self.send_v5(Packet5::ConnAck {
                session_present,
                reason_code: reason::SUCCESS,
                properties,
            });
        } else {
            encode(
                &Packet::ConnAck {
                    session_present,
                    code: ConnectReturnCode::Accepted,
                },
                &mut self.tx,
            );
        }
        if let Some(session) = resume {
            self.next_pkid = session.next_pkid.max(1);
            for id in session.inbound_qos2 {
                self.inbound.insert(id, Inbound::Qos2 { done: true });
            }
            for entry in session.outgoing {
                match &entry {
                    Inflight::Publish { pkid, message } => {
                        if !self.write_publish(now, true, *pkid, message, None) {
                            // Too large for this connection's client (its Maximum Packet
                            // Size may have shrunk): discarded as if delivered
                            // (MQTT-3.1.2-25), so it must not hold a window slot.
                            self.events.push_back(Event::InflightFreed);
                            continue;
                        }
                    }
                    Inflight::PubRel { pkid } => self.write_pubrel(*pkid),
                }
                self.outgoing.push_back(entry);
            }
        }
        self.deadline = self.keep_alive.map(|ka| now + ka);
        self.process(now);
    }

    /// Refuses the CONNECT: sends CONNACK `code` and closes without will. On a v5
    /// connection the code is translated to its v5 reason code (0x01 → 0x84, 0x02 → 0x85,
    /// 0x03 → 0x88, 0x04 → 0x86, 0x05 → 0x87).
    pub fn reject(&mut self, code: ConnectReturnCode) {
        if self.state != State::AwaitingAccept {
            return;
        }
        self.reject_now(code);
    }

    /// Refuses a v5 CONNECT with a v5 reason code (>= 0x80); on 3.1.1 connections the
    /// closest 3.1.1 code is sent instead.
    pub fn reject_v5(&mut self, reason_code: u8) {
        self.refuse_v5(reason_code, None);
    }

    /// [`Connection::reject_v5`] with a Reason String saying why the CONNECT was refused.
    pub fn reject_v5_because(&mut self, reason_code: u8, reason_string: impl Into<String>) {
        self.refuse_v5(reason_code, Some(reason_string.into()));
    }

    /// MQTT 5: the response-topic basis to send as CONNACK Response Information
    /// (3.2.2.3.15) if the client sets Request Response Information 1; call before
    /// `accept_with`. Without the request nothing is sent (MQTT-3.1.2-28).
    /// Ignored when longer than a UTF-8 string field can be (65535 bytes).
    pub fn offer_response_information(&mut self, info: String) {
        if info.len() <= usize::from(u16::MAX) {
            self.v5.response_information = Some(info);
        }
    }

    fn refuse_v5(&mut self, reason_code: u8, reason_string: Option<String>) {
        if self.state != State::AwaitingAccept {
            return;
        }
        if self.is_v5() {
            self.send_v5(Packet5::ConnAck {
                session_present: false,
                reason_code,
                properties: Properties {
                    reason_string,
                    ..Properties::default()
                },
            });
            self.close_with(CloseReason::Server(reason_code));
        } else {
            let code = match reason_code {
                reason::CLIENT_IDENTIFIER_NOT_VALID => ConnectReturnCode::IdentifierRejected,
                0x86 => ConnectReturnCode::BadUserNameOrPassword,
                reason::NOT_AUTHORIZED => ConnectReturnCode::NotAuthorized,
                _ => ConnectReturnCode::ServerUnavailable,
            };
            self.reject_now(code);
        }
    }

    /// Answer an [`Event::PingRequest`] with PINGRESP (MQTT-3.12.4-1). Nothing is sent once
    /// the connection is closed.
    pub fn ping_response(&mut self) {
        if self.state == State::Closed {
            return;
        }
        if self.is_v5() {
            self.send_v5(Packet5::PingResp);
        } else {
            encode(&Packet::PingResp, &mut self.tx);
        }
    }

    /// The broker finished with inbound PUBLISH `pkid`: PUBACK (QoS 1) or PUBREC (QoS 2).
    /// Unknown ids are ignored.
    pub fn publish_done(&mut self, pkid: u16) {
        self.publish_answer(pkid, reason::SUCCESS, None);
    }

    /// [`Connection::publish_done`] with a v5 success reason code: 0x00, or 0x10 No
    /// matching subscribers when the broker knows nobody received the message (the
    /// exchange completes as usual). On 3.1.1 the code is not sent.
    pub fn publish_done_with(&mut self, pkid: u16, reason_code: u8) {
        let code = if reason_code < 0x80 {
            reason_code
        } else {
            reason::SUCCESS
        };
        self.publish_answer(pkid, code, None);
    }

    /// MQTT 5: the broker refused inbound PUBLISH `pkid` (e.g. 0x80 it could not be stored,
    /// 0x90 topic name invalid): PUBACK/PUBREC with that reason code; a refused QoS 2
    /// exchange ends there (MQTT 4.3.3). On 3.1.1, which has no negative acknowledgement,
    /// the connection is closed instead so the client resends after reconnecting.
    pub fn publish_failed(&mut self, pkid: u16, reason_code: u8) {
        self.publish_failed_because(pkid, reason_code, None);
    }

    /// [`Connection::publish_failed`] with a Reason String saying why (on v5; dropped when
    /// the client asked for no problem information or it would exceed its Maximum Packet
    /// Size).
    pub fn publish_failed_because(
        &mut self,
        pkid: u16,
        reason_code: u8,
        reason_string: Option<String>,
    ) {
        if self.state != State::Connected {
            return;
        }
        if self.is_v5() {
            self.publish_answer(pkid, reason_code, reason_string);
        } else {
            self.close_with(CloseReason::ServerClose);
        }
    }

    fn publish_answer(&mut self, pkid: u16, reason_code: u8, reason_string: Option<String>) {
        if self.state != State::Connected {
            return;
        }
        let v5 = self.is_v5();
        let resp = |pkid| PubResponse {
            pkid,
            reason_code,
            properties: Properties {
                reason_string,
                ..Properties::default()
            },
        };
        match self.inbound.get_mut(&pkid) {
            Some(Inbound::Qos1(count)) => {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.inbound.remove(&pkid);
                }
                if v5 {
                    self.send_v5(Packet5::PubAck(resp(pkid)));
                } else {
                    encode(&Packet::PubAck(pkid), &mut self.tx);
                }
            }
            Some(Inbound::Qos2 { done }) if !*done => {
                *done = true;
                if v5 {
                    if reason_code >= 0x80 {
                        self.inbound.remove(&pkid);
                    }
                    self.send_v5(Packet5::PubRec(resp(pkid)));
                } else {
                    encode(&Packet::PubRec(pkid), &mut self.tx);
                }
            }
            _ => {}
        }
    }

    /// Answers SUBSCRIBE `pkid` with one code per filter, in filter order.
    pub fn suback(&mut self, pkid: u16, codes: Vec<SubscribeReturnCode>) {
        if self.state != State::Connected {
            return;
        }
        if self.is_v5() {
            let reasons = codes.iter().map(|c| c.as_u8()).collect();
            self.suback_reasons(pkid, reasons);
        } else {
            encode(&Packet::SubAck { pkid, codes }, &mut self.tx);
        }
    }

    /// Answers SUBSCRIBE `pkid` with one v5 reason code per filter (0x00-0x02 granted QoS,
    /// >= 0x80 refused). On 3.1.1 connections every refusal becomes 0x80.
    pub fn suback_reasons(&mut self, pkid: u16, reason_codes: Vec<u8>) {
        self.suback_reasons_because(pkid, reason_codes, None);
    }

    /// [`Connection::suback_reasons`] with a v5 Reason String explaining the refusals
    /// (without one, a refusal gets its code's name).
    pub fn suback_reasons_because(
        &mut self,
        pkid: u16,
        reason_codes: Vec<u8>,
        reason_string: Option<String>,
    ) {
        if self.state != State::Connected {
            return;
        }
        if self.is_v5() {
            self.send_v5(Packet5::SubAck(SubResponse {
                pkid,
                reason_codes,
                properties: Properties {
                    reason_string,
                    ..Properties::default()
                },
            }));
        } else {
            let codes = reason_codes
                .into_iter()
                .map(|c| match QoS::from_u8(c) {
                    Some(q) => SubscribeReturnCode::Success(q),
                    None => SubscribeReturnCode::Failure,
                })
                .collect();
            encode(&Packet::SubAck { pkid, codes }, &mut self.tx);
        }
    }

    /// Answers UNSUBSCRIBE `pkid`.
    pub fn unsuback(&mut self, pkid: u16) {
        if self.state == State::Connected {
            encode(&Packet::UnsubAck(pkid), &mut self.tx);
        }
    }

    /// Answers UNSUBSCRIBE `pkid`; on v5 with one reason code per filter (0x00 removed,
    /// 0x11 no subscription existed, ...), on 3.1.1 the codes are not sent.
    pub fn unsuback_reasons(&mut self, pkid: u16, reason_codes: Vec<u8>) {
        self.unsuback_reasons_because(pkid, reason_codes, None);
    }

    /// [`Connection::unsuback_reasons`] with a v5 Reason String explaining the refusals.
    pub fn unsuback_reasons_because(
        &mut self,
        pkid: u16,
        reason_codes: Vec<u8>,
        reason_string: Option<String>,
    ) {
        if self.state != State::Connected {
            return;
        }
        if self.is_v5() {
            self.send_v5(Packet5::UnsubAck(SubResponse {
                pkid,
                reason_codes,
                properties: Properties {
                    reason_string,
                    ..Properties::default()
                },
            }));
        } else {
            encode(&Packet::UnsubAck(pkid), &mut self.tx);
        }
    }

    /// MQTT 5: messages dropped for this client because they were larger than its Maximum
    /// Packet Size (MQTT-3.1.2-25), and because they expired before they could be sent.
    pub fn dropped(&self) -> (u64, u64) {
        (self.v5.dropped_too_large, self.v5.dropped_expired)
    }

    /// Writes one PUBLISH (3.1.1 or v5 form); on v5 it may get a topic alias (`alias`
    /// `Some((alias, first_use))`). Returns false when the message was dropped instead
    /// (v5: expired, or larger than the client's Maximum Packet Size).
    fn write_publish(
        &mut self,
        now: Instant,
        dup: bool,
        pkid: u16,
        msg: &Outgoing,
        alias: Option<(u16, bool)>,
    ) -> bool {
        if !self.is_v5() {
            encode_publish(
                &mut self.tx,
                dup,
                msg.qos,
                msg.retain,
                &msg.topic,
                pkid,
                &msg.payload,
            );
            return true;
        }
        let remaining = match msg.expires_at {
            Some(at) if at <= now && !dup => {
                self.v5.dropped_expired += 1;
                return false;
            }
            // Round up: a message with 0.4 s left still has "1 s" left, not 0.
            Some(at) => {
                let left = at.saturating_duration_since(now);
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX))
            }
            None => None,
        };
        let props = msg.properties.as_deref().unwrap_or(&NO_PROPERTIES);
        let topic: &str = match alias {
            Some((_, false)) => "",
            _ => &msg.topic,
        };
        let overrides = PublishOverrides {
            message_expiry_interval: remaining,
            topic_alias: alias.map(|(a, _)| a),
            subscription_identifiers: &msg.subscription_ids,
        };
        let mut scratch = std::mem::take(&mut self.v5.scratch);
        let size = publish5_size(
            &mut scratch,
            msg.qos,
            topic,
            msg.payload.len(),
            props,
            Some(&overrides),
        );
        let fits = self
            .v5
            .client_max_packet_size
            .is_none_or(|max| size <= max as usize);
        if fits {
            encode_publish5(
                &mut self.tx,
                &mut scratch,
                dup,
                msg.qos,
                msg.retain,
                topic,
                pkid,
                &msg.payload,
                props,
                Some(&overrides),
            );
        } else {
            self.v5.dropped_too_large += 1;
        }
        self.v5.scratch = scratch;
        fits
    }

    fn write_pubrel(&mut self, pkid: u16) {
        if self.is_v5() {
            self.send_v5(Packet5::PubRel(PubResponse {
                pkid,
                reason_code: 0,
                properties: Properties::default(),
            }));
        } else {
            encode(&Packet::PubRel(pkid), &mut self.tx);
        }
    }

    /// Most aliases this connection assigns: the client's Topic Alias Maximum (none when
    /// it announced none, MQTT-3.1.2-26/27), capped by ours.
    fn alias_limit(&self) -> u16 {
        if !self.is_v5() {
            return 0;
        }
        self.v5
            .client_topic_alias_max
            .min(self.config.topic_alias_maximum)
    }

    /// The alias to use for `topic` on a v5 connection: `(alias, first use)`, or `None` when
    /// the client takes no aliases. A new topic gets the next unused alias or, once all are
    /// in use, the least recently used one (reassigned when the PUBLISH is written,
    /// [`Connection::alias_used`]). Nothing changes here, so a message that is then dropped
    /// leaves the table as it was.
    fn alias_for(&self, topic: &Arc<str>) -> Option<(u16, bool)> {
        let limit = self.alias_limit();
        if limit == 0 {
            return None;
        }
        if let Some((a, _)) = self.v5.outbound_aliases.get(topic) {
            return Some((*a, false));
        }
        let n = self.v5.outbound_aliases.len();
        if n < usize::from(limit) {
            // Aliases are handed out 1, 2, ... and never freed, only reassigned, so the
            // next unused one is n + 1 (<= limit).
            return Some((n as u16 + 1, true));
        }
        let oldest = self.v5.alias_lru.values().next()?;
        self.v5
            .outbound_aliases
            .get(oldest)
            .map(|(a, _)| (*a, true))
    }

    /// Records that a PUBLISH for `topic` was written with `alias` (`set`: topic and alias
    /// sent, the alias now stands for `topic`; otherwise the alias alone was sent).
    fn alias_used(&mut self, topic: &Arc<str>, alias: u16, set: bool) {
        let v5 = &mut self.v5;
        v5.alias_clock += 1;
        let stamp = v5.alias_clock;
        if let Some(entry) = v5.outbound_aliases.get_mut(topic) {
            v5.alias_lru.remove(&entry.1);
            entry.1 = stamp;
            v5.alias_lru.insert(stamp, topic.clone());
            return;
        }
        if set {
            // Reassigning the least recently used alias: forget the topic it stood for.
            if let Some((&old_stamp, old_topic)) = v5.alias_lru.first_key_value() {
                if v5
                    .outbound_aliases
                    .get(old_topic)
                    .is_some_and(|(a, _)| *a == alias)
                {
                    let old_topic = old_topic.clone();
                    v5.alias_lru.remove(&old_stamp);
                    v5.outbound_aliases.remove(&old_topic);
                }
            }
            v5.outbound_aliases.insert(topic.clone(), (alias, stamp));
            v5.alias_lru.insert(stamp, topic.clone());
        }
    }

    /// Sends a message to the client. QoS 0 is written immediately; QoS 1/2 gets a free
    /// packet id and is tracked until acknowledged. Returns the message back when the
    /// in-flight window is full or the connection is not (yet / any more) established, so
    /// the driver keeps it queued.
    ///
    /// On a v5 connection the message is dropped (and counted, see [`Connection::dropped`])
    /// rather than sent when it has expired or exceeds the client's Maximum Packet Size;
    /// repeated topics get a server-assigned Topic Alias; the window is also capped by the
    /// client's Receive Maximum (MQTT-3.3.4-9).
    pub fn send_publish(&mut self, now: Instant, msg: Outgoing) -> Result<(), Outgoing> {
        if self.state != State::Connected {
            return Err(msg);
        }
        if msg.qos != QoS::AtMostOnce && self.inflight_available() == 0 {
            return Err(msg);
        }
        let pkid = if msg.qos == QoS::AtMostOnce {
            0
        } else {
            match self.allocate_pkid() {
                Some(id) => id,
                None => return Err(msg),
            }
        };
        let alias = self.alias_for(&msg.topic);
        if !self.write_publish(now, false, pkid, &msg, alias) {
            return Ok(());
        }
        if let Some((a, set)) = alias {
            self.alias_used(&msg.topic, a, set);
        }
        if msg.qos != QoS::AtMostOnce {
            self.outgoing
                .push_back(Inflight::Publish { pkid, message: msg });
        }
        Ok(())
    }

    /// Packet ids of the unacknowledged outgoing exchanges, in send order (the last one is
    /// the message `send_publish` just took, if it was tracked). Lets a driver that keeps
    /// per-message state (a durable queue entry) notice which exchanges finished.
    pub fn outgoing_pkids(&self) -> impl ExactSizeIterator<Item = u16> + DoubleEndedIterator + '_ {
        self.outgoing.iter().map(Inflight::pkid)
    }

    /// The unacknowledged outgoing exchanges in send order, each at its stage (PUBLISH sent,
    /// or PUBREC received and PUBREL sent): what [`Connection::take_session`] would save,
    /// for a driver that keeps it durable while the connection lives.
    pub fn outgoing(&self) -> impl ExactSizeIterator<Item = &Inflight> + '_ {
        self.outgoing.iter()
    }

    /// Inbound QoS 2 packet ids acknowledged with PUBREC and not yet released by PUBREL
    /// (what [`Connection::take_session`] would save).
    pub fn inbound_qos2(&self) -> impl Iterator<Item = u16> + '_ {
        self.inbound
            .iter()
            .filter(|(_, state)| **state == Inbound::Qos2 { done: true })
            .map(|(id, _)| *id)
    }

    /// The next packet id an outgoing exchange will try.
    pub fn next_pkid(&self) -> u16 {
        self.next_pkid
    }

    /// How many more QoS 1/2 messages `send_publish` accepts now.
    pub fn inflight_available(&self) -> usize {
        if self.state != State::Connected {
            return 0;
        }
        let mut window = self.config.max_inflight;
        if self.is_v5() {
            window = window.min(self.v5.client_receive_maximum);
        }
        usize::from(window).saturating_sub(self.outgoing.len())
    }

    /// Driver-initiated close (takeover, shutdown); the will is handed out since this is not
    /// a DISCONNECT.
    pub fn close(&mut self, reason: CloseReason) {
        self.close_with(reason);
    }

    /// Moves the persistent-session state out of the connection (for Clean Session 0).
    pub fn take_session(&mut self) -> SessionState {
        let inbound_qos2 = self.inbound_qos2().collect();
        self.inbound.clear();
        SessionState {
            outgoing: std::mem::take(&mut self.outgoing).into(),
            inbound_qos2,
            next_pkid: self.next_pkid,
        }
    }

    /// Whether the connection has closed (the Closed event was queued).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Protocol revision announced by the CONNECT, once received.
    pub fn protocol(&self) -> Option<ProtocolVersion> {
        self.protocol
    }

    fn allocate_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let candidate = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.outgoing.iter().any(|e| e.pkid() == candidate) {
                return Some(candidate);
            }
        }
        None
    }

    fn close_with(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        if self.is_v5() && self.state == State::Connected {
            if let Some(code) = reason.v5_reason_code() {
                // Every server-side close says why; a bare `Server(code)` gets the code's
                // name in `send_v5`.
                let reason_string = match &reason {
                    CloseReason::Malformed(e) => Some(e.to_string()),
                    CloseReason::Violation(v) => Some(v.to_string()),
                    CloseReason::ServerWithReason { reason_string, .. } => {
                        Some(reason_string.clone())
                    }
                    CloseReason::Server(_) => None,
                    other => Some(other.to_string()),
                };
                let properties = Properties {
                    reason_string,
                    ..Properties::default()
                };
                self.send_v5(Packet5::Disconnect(ReasonPacket {
                    reason_code: code,
                    properties,
                }));
            }
        }
        self.state = State::Closed;
        self.deadline = None;
        self.read_buf = BytesMut::new();
        self.pending_will = None;
        let will = match reason {
            CloseReason::Disconnect => None,
            CloseReason::ClientDisconnect { reason_code, .. }
                if reason_code != reason::DISCONNECT_WITH_WILL =>
            {
                None
            }
            _ => self.will.take(),
        };
        self.will = None;
        self.events.push_back(Event::Closed { reason, will });
    }

    fn reject_now(&mut self, code: ConnectReturnCode) {
        if self.is_v5() {
            let reason_code = match code {
                ConnectReturnCode::Accepted => reason::SUCCESS,
                ConnectReturnCode::UnacceptableProtocolVersion => {
                    reason::UNSUPPORTED_PROTOCOL_VERSION
                }
                ConnectReturnCode::IdentifierRejected => reason::CLIENT_IDENTIFIER_NOT_VALID,
                ConnectReturnCode::ServerUnavailable => 0x88,
                ConnectReturnCode::BadUserNameOrPassword => 0x86,
                ConnectReturnCode::NotAuthorized => reason::NOT_AUTHORIZED,
            };
            self.send_v5(Packet5::ConnAck {
                session_present: false,
                reason_code,
                properties: Properties::default(),
            });
            self.close_with(CloseReason::Rejected(code));
            return;
        }
        encode(
            &Packet::ConnAck {
                session_present: false,
                code,
            },
            &mut self.tx,
        );
        self.close_with(CloseReason::Rejected(code));
    }

    fn process(&mut self, now: Instant) {
        loop {
            match self.state {
                State::Closed => return,
                State::AwaitingAccept => {
                    if self.read_buf.len() > self.config.max_packet_size {
                        let buffered = self.read_buf.len();
                        self.close_with(
                            Violation::TooMuchBeforeAccept {
                                buffered,
                                limit: self.config.max_packet_size,
                            }
                            .into(),
                        );
                    }
                    return;
                }
                State::AwaitingConnect | State::Connected => {}
            }
            let use_v5 = self.is_v5()
                || (self.state == State::AwaitingConnect
                    && self.read_buf.first().is_some_and(|b| b >> 4 == 1));
            if use_v5 {
                match decode_v5(&mut self.read_buf, self.config.max_packet_size) {
                    Ok(None) => return,
                    Ok(Some(packet)) => self.handle_packet5(now, packet),
                    Err(DecodeError::UnsupportedProtocolLevel { name, level })
                        if self.state == State::AwaitingConnect =>
                    {
                        self.protocol = ProtocolVersion::from_name_and_level(&name, level);
                        self.reject_now(ConnectReturnCode::UnacceptableProtocolVersion);
                    }
                    Err(e) => self.close_with(e.into()),
                }
                continue;
            }
            match decode(&mut self.read_buf, self.config.max_packet_size) {
                Ok(None) => return,
                Ok(Some(packet)) => self.handle_packet(now, packet),
                Err(DecodeError::UnsupportedProtocolLevel { name, level })
                    if self.state == State::AwaitingConnect =>
                {
                    self.protocol = ProtocolVersion::from_name_and_level(&name, level);
                    self.reject_now(ConnectReturnCode::UnacceptableProtocolVersion);
                }
                Err(e) => self.close_with(e.into()),
            }
        }
    }

    fn handle_packet(&mut self, now: Instant, packet: Packet) {
        if self.state == State::AwaitingConnect {
            let Packet::Connect(connect) = packet else {
                self.close_with(Violation::FirstPacketNotConnect(packet.name()).into());
                return;
            };
            self.protocol = Some(connect.protocol);
            self.keep_alive = (connect.keep_alive != 0).then(|| {
                let secs = f64::from(connect.keep_alive);
                // A nonsensical configured factor falls back to the specification's 1.5.
                Duration::try_from_secs_f64(secs * self.config.keep_alive_factor)
                    .unwrap_or_else(|_| Duration::from_millis(u64::from(connect.keep_alive) * 1500))
            });
            self.deadline = self.keep_alive.map(|ka| now + ka);
            // MQTT-3.1.3-8 (empty id with clean session 0); 3.1 requires 1-23 characters.
            if connect.client_id.is_empty()
                && (!connect.clean_session || connect.protocol == ProtocolVersion::V31)
            {
                self.reject_now(ConnectReturnCode::IdentifierRejected);
                return;
            }
            self.state = State::AwaitingAccept;
            self.pending_will = connect.will.clone();
            self.events.push_back(Event::Connect(connect));
            return;
        }

        self.deadline = self.keep_alive.map(|ka| now + ka);
        match packet {
            Packet::Connect(_) => self.close_with(Violation::SecondConnect.into()),
            Packet::Publish(publish) => self.handle_publish(publish),
            Packet::PubAck(pkid) => {
                if let Some(i) = self.find_outgoing(pkid, Some(QoS::AtLeastOnce)) {
                    self.outgoing.remove(i);
                    self.events.push_back(Event::InflightFreed);
                }
            }
            Packet::PubRec(pkid) => {
                if let Some(i) = self.find_outgoing(pkid, Some(QoS::ExactlyOnce)) {
                    self.outgoing[i] = Inflight::PubRel { pkid };
                    encode(&Packet::PubRel(pkid), &mut self.tx);
                } else if self.find_outgoing(pkid, None).is_some() {
                    // A re-sent PUBREC after our PUBREL: answer again (MQTT 4.3.3).
                    encode(&Packet::PubRel(pkid), &mut self.tx);
                }
            }
            Packet::PubComp(pkid) => {
                if let Some(i) = self.find_outgoing(pkid, None) {
                    self.outgoing.remove(i);
                    self.events.push_back(Event::InflightFreed);
                }
            }
            Packet::PubRel(pkid) => {
                if matches!(self.inbound.get(&pkid), Some(Inbound::Qos2 { .. })) {
                    self.inbound.remove(&pkid);
                }
                encode(&Packet::PubComp(pkid), &mut self.tx);
            }
            Packet::Subscribe { pkid, filters } => {
                self.events.push_back(Event::Subscribe { pkid, filters })
            }
            Packet::Unsubscribe { pkid, filters } => {
                self.events.push_back(Event::Unsubscribe { pkid, filters })
            }
            Packet::PingReq => self.events.push_back(Event::PingRequest),
            Packet::Disconnect => self.close_with(CloseReason::Disconnect),
            other @ (Packet::ConnAck { .. }
            | Packet::SubAck { .. }
            | Packet::UnsubAck(_)
            | Packet::PingResp) => {
                self.close_with(Violation::ServerOnlyPacket(other.name()).into())
            }
        }
    }

    /// Index of the outgoing exchange `pkid`: a PUBLISH of `qos`, or a PUBREL when `qos` is
    /// `None`.
    fn find_outgoing(&self, pkid: u16, qos: Option<QoS>) -> Option<usize> {
        self.outgoing.iter().position(|entry| match (entry, qos) {
            (Inflight::Publish { pkid: id, message }, Some(q)) => *id == pkid && message.qos == q,
            (Inflight::PubRel { pkid: id }, None) => *id == pkid,
            _ => false,
        })
    }

    fn handle_publish(&mut self, publish: Publish) {
        if self.track_inbound(&publish) {
            self.events.push_back(Event::Publish(publish));
        }
    }

    /// Inbound QoS bookkeeping; false when the PUBLISH must not be delivered (again).
    fn track_inbound(&mut self, publish: &Publish) -> bool {
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.inbound.get_mut(&publish.pkid) {
                Some(Inbound::Qos1(count)) => *count = count.saturating_add(1),
                _ => {
                    self.inbound.insert(publish.pkid, Inbound::Qos1(1));
                }
            },
            QoS::ExactlyOnce => match self.inbound.get(&publish.pkid) {
                // Method B (MQTT 4.3.3): id stored, a re-send is not delivered again.
                Some(Inbound::Qos2 { done: true }) => {
                    if self.is_v5() {
                        self.send_v5(Packet5::PubRec(PubResponse {
                            pkid: publish.pkid,
                            reason_code: 0,
                            properties: Properties::default(),
                        }));
                    } else {
                        encode(&Packet::PubRec(publish.pkid), &mut self.tx);
                    }
                    return false;
                }
                Some(Inbound::Qos2 { done: false }) => return false,
                _ => {
                    self.inbound
                        .insert(publish.pkid, Inbound::Qos2 { done: false });
                }
            },
        }
        true
    }

    fn handle_connect5(&mut self, now: Instant, c: Box<Connect5>) {
        self.protocol = Some(ProtocolVersion::V5);
        let requested = c.connect.keep_alive;
        let max = self.config.max_keep_alive;
        let effective = if max > 0 && (requested == 0 || requested > max) {
            self.v5.server_keep_alive = Some(max);
            max
        } else {
            requested
        };
        self.keep_alive = (effective != 0).then(|| {
            Duration::try_from_secs_f64(f64::from(effective) * self.config.keep_alive_factor)
                .unwrap_or_else(|_| Duration::from_millis(u64::from(effective) * 1500))
        });
        self.deadline = self.keep_alive.map(|ka| now + ka);
        let p = &c.properties;
        self.v5.client_receive_maximum = p.receive_maximum.unwrap_or(u16::MAX);
        self.v5.client_max_packet_size = p.maximum_packet_size;
        self.v5.client_topic_alias_max = p.topic_alias_maximum.unwrap_or(0);
        self.v5.session_expiry_interval = p.session_expiry_interval.unwrap_or(0);
        // Absent Request Problem Information means 1, absent Request Response Information 0
        // (3.1.2.11.7, 3.1.2.11.6).
        self.v5.no_problem_information = p.request_problem_information == Some(0);
        self.v5.response_information_requested = p.request_response_information == Some(1);
        self.state = State::AwaitingAccept;
        if let Some(method) = &p.authentication_method {
            // MQTT 4.12: no extended authentication method is supported.
            let why = format!("authentication method {method:?} is not supported (none is)");
            self.reject_v5_because(reason::BAD_AUTHENTICATION_METHOD, why);
            return;
        }
        self.pending_will = c.connect.will.clone();
        self.events.push_back(Event::Connect5(c));
    }

    fn handle_packet5(&mut self, now: Instant, packet: Packet5) {
        if self.state == State::AwaitingConnect {
            let Packet5::Connect(c) = packet else {
                self.close_with(Violation::FirstPacketNotConnect(packet.name()).into());
                return;
            };
            if c.connect.protocol == ProtocolVersion::V5 {
                self.handle_connect5(now, c);
            } else {
                self.handle_packet(now, Packet::Connect(c.connect));
            }
            return;
        }
        self.deadline = self.keep_alive.map(|ka| now + ka);
        match packet {
            Packet5::Connect(_) => self.close_with(Violation::SecondConnect.into()),
            Packet5::Publish(p) => self.handle_publish5(p),
            Packet5::PubAck(r) => {
                if let Some(i) = self.find_outgoing(r.pkid, Some(QoS::AtLeastOnce)) {
                    self.outgoing.remove(i);
                    self.events.push_back(Event::InflightFreed);
                }
            }
            Packet5::PubRec(r) => {
                if let Some(i) = self.find_outgoing(r.pkid, Some(QoS::ExactlyOnce)) {
                    if r.reason_code >= 0x80 {
                        // A refused QoS 2 message ends here, without PUBREL (MQTT 4.3.3).
                        self.outgoing.remove(i);
                        self.events.push_back(Event::InflightFreed);
                    } else {
                        self.outgoing[i] = Inflight::PubRel { pkid: r.pkid };
                        self.write_pubrel(r.pkid);
                    }
                } else if self.find_outgoing(r.pkid, None).is_some() {
                    self.write_pubrel(r.pkid);
                }
            }
            Packet5::PubComp(r) => {
                if let Some(i) = self.find_outgoing(r.pkid, None) {
                    self.outgoing.remove(i);
                    self.events.push_back(Event::InflightFreed);
                }
            }
            Packet5::PubRel(r) => {
                let known = matches!(self.inbound.get(&r.pkid), Some(Inbound::Qos2 { .. }));
                if known {
                    self.inbound.remove(&r.pkid);
                }
                let reason_string = (!known).then(|| {
                    format!(
                        "PUBREL for packet identifier {}, which has no QoS 2 exchange open",
                        r.pkid
                    )
                });
                self.send_v5(Packet5::PubComp(PubResponse {
                    pkid: r.pkid,
                    // 0x92: Packet Identifier not found.
                    reason_code: if known { 0 } else { 0x92 },
                    properties: Properties {
                        reason_string,
                        ..Properties::default()
                    },
                }));
            }
            Packet5::Subscribe(s) => self.events.push_back(Event::Subscribe5(Box::new(s))),
            Packet5::Unsubscribe(u) => self.events.push_back(Event::Unsubscribe {
                pkid: u.pkid,
                filters: u.filters,
            }),
            Packet5::PingReq => self.events.push_back(Event::PingRequest),
            Packet5::Disconnect(d) => {
                let expiry = d.properties.session_expiry_interval;
                match expiry {
                    Some(e) if e > 0 && self.v5.session_expiry_interval == 0 => {
                        self.close_with(Violation::SessionExpiryAfterZero(e).into())
                    }
                    _ => self.close_with(CloseReason::ClientDisconnect {
                        reason_code: d.reason_code,
                        session_expiry_interval: expiry,
                    }),
                }
            }
            Packet5::Auth(_) => self.close_with(Violation::AuthNotSupported.into()),
            other @ (Packet5::ConnAck { .. }
            | Packet5::SubAck(_)
            | Packet5::UnsubAck(_)
            | Packet5::PingResp) => {
                self.close_with(Violation::ServerOnlyPacket(other.name()).into())
            }
        }
    }

    fn handle_publish5(&mut self, mut p: Box<Publish5>) {
        if !p.properties.subscription_identifiers.is_empty() {
            self.close_with(Violation::SubscriptionIdentifierFromClient.into());
            return;
        }
        if let Some(alias) = p.properties.topic_alias.take() {
            let max = self.config.topic_alias_maximum;
            if alias == 0 || alias > max {
                self.close_with(Violation::TopicAliasInvalid { alias, max }.into());
                return;
            }
            if p.publish.topic.is_empty() {
                match self.v5.inbound_aliases.get(&alias) {
                    Some(t) => p.publish.topic = t.clone(),
                    None => {
                        self.close_with(Violation::UnknownTopicAlias(alias).into());
                        return;
                    }
                }
            } else {
                self.v5
                    .inbound_aliases
                    .insert(alias, p.publish.topic.clone());
            }
        }
        if p.publish.qos != QoS::AtMostOnce
            && !self.inbound.contains_key(&p.publish.pkid)
            && self.inbound.len() >= usize::from(self.config.receive_maximum.max(1))
        {
            let limit = self.config.receive_maximum.max(1);
            self.close_with(Violation::ReceiveMaximumExceeded { limit }.into());
            return;
        }
        if self.track_inbound(&p.publish) {
            self.events.push_back(Event::Publish5(p));
        }
    }
}
