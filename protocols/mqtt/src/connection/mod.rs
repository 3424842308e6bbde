//! The per-connection MQTT server state machine, free of I/O and clocks.
//!
//! A driver feeds received bytes ([`Connection::handle_bytes`]), end of stream
//! ([`Connection::handle_eof`]) and timer expiry ([`Connection::handle_timeout`]) in, and
//! drains outgoing bytes ([`Connection::poll_transmit`]), events for the broker
//! ([`Connection::poll_event`]) and the next deadline ([`Connection::poll_timeout`]). The
//! broker answers events with commands ([`Connection::accept`], [`Connection::publish_done`],
//! [`Connection::suback`], ...). Time is always passed in as `now`, so tests use a fake clock.
//!
//! The machine speaks whichever version the CONNECT asked for. Every packet it decodes is
//! in the one packet model, so there is one handler per packet type (`inbound.rs`); the
//! v5-only rules (Receive Maximum, Topic Alias, Session Expiry on DISCONNECT, diagnostics)
//! are branches inside them. Commands (`commands.rs`) and outgoing PUBLISHes
//! (`outbound.rs`) are written in the connection's version by the codec.
//!
//! Bytes that arrive after the CONNECT but before the driver has called `accept` are kept
//! undecoded: clients may pipeline packets behind CONNECT (MQTT 3.1.4), and a server that
//! rejects the CONNECT must not process them (MQTT-3.1.4-5).

mod aliases;
mod commands;
mod config;
mod diagnostics;
mod event;
mod inbound;
mod outbound;
mod pkid;
mod session;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::codec::{decode, encode, DecodeError};
use crate::packet::{LastWill, Packet, ProtocolVersion, ReasonPacket};
use crate::properties::Properties;
use crate::reason;

pub use config::Config;
pub use diagnostics::MAX_REASON_STRING;
pub use event::{Accept, CloseReason, Event, Violation};
pub use session::{Inflight, Outgoing, SessionState};

use aliases::{inbound_heap_size, InboundAliases, OutboundAliases};
use diagnostics::{write_v5, ClientAsks};
use pkid::PkidMap;

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

/// What a v5 client announced in its CONNECT, and the per-connection v5 tables. Boxed in
/// [`Connection`] and made only for a v5 client, so a 3.1.1 connection carries none of it;
/// the alias tables inside are made at their first use.
#[derive(Debug, Default)]
struct V5State {
    /// The client's Receive Maximum: caps our outgoing window (MQTT-3.3.4-9).
    client_receive_maximum: u16,
    /// The client's Topic Alias Maximum: caps the aliases we assign.
    client_topic_alias_max: u16,
    /// Session Expiry Interval in force: CONNECT's, at most `max_session_expiry`; checks
    /// DISCONNECT's (MQTT-3.14.2-2).
    session_expiry_interval: u32,
    /// Session Expiry Interval we imposed in CONNACK (below what CONNECT asked), if any.
    server_session_expiry: Option<u32>,
    /// Keep Alive we imposed in CONNACK (Server Keep Alive), if any.
    server_keep_alive: Option<u16>,
    /// Request Problem Information and Maximum Packet Size: what every non-PUBLISH packet
    /// we send must respect (see `diagnostics.rs`); the size also bounds PUBLISHes.
    asks: ClientAsks,
    /// The client set Request Response Information to 1; without it the server must not
    /// send Response Information (MQTT-3.1.2-28).
    response_information_requested: bool,
    /// Client → server aliases set on this connection (`None` until the first).
    inbound_aliases: Option<Box<InboundAliases>>,
    /// Server → client aliases we assigned (`None` until the first).
    outbound_aliases: Option<Box<OutboundAliases>>,
    /// Messages not sent because they exceeded the client's Maximum Packet Size.
    dropped_too_large: u64,
    /// Messages not sent because their Message Expiry Interval had passed.
    dropped_expired: u64,
    /// Reused buffer for encoding outgoing property lists (no allocation per message;
    /// given back by [`Connection::trim`]).
    scratch: BytesMut,
}

/// The server side of one MQTT connection. See the module docs.
///
/// Kept small, because a server holds one per connection and most connections are idle:
/// the limits are shared ([`Arc<Config>`]), the v5 state and the will are boxed and exist
/// only when the client has them, and the buffers and exchange tables are one box
/// ([`Io`]) made at their first use, grown with the traffic and given back by
/// [`Connection::trim`] once the driver finds the connection quiet: an idle connection is
/// 72 bytes and holds nothing else.
#[derive(Debug)]
pub struct Connection {
    /// Limits and timers, shared by every connection of a server.
    config: Arc<Config>,
    /// Life-cycle state; decides which packets are legal.
    state: State,
    /// Protocol revision from the CONNECT; `None` before it.
    protocol: Option<ProtocolVersion>,
    /// Whether `will` is armed: `accept` arms the CONNECT's will; until then it is kept
    /// only to be armed.
    will_armed: bool,
    /// Next packet id to try for an outgoing QoS 1/2 PUBLISH.
    next_pkid: u16,
    /// Keep Alive × `keep_alive_factor`, `None` when Keep Alive is 0 (timer off, 3.1.2.10).
    keep_alive: Option<Duration>,
    /// When `handle_timeout` must act (connect timeout or keepalive expiry).
    deadline: Option<Instant>,
    /// The buffers and exchange tables: made at their first use, and given back whole by
    /// [`Connection::trim`] when they are all empty (an idle connection holds none).
    io: Option<Box<Io>>,
    /// Will from the CONNECT: published (handed out in `Closed`) on any close except
    /// DISCONNECT once `will_armed`.
    will: Option<Box<LastWill>>,
    /// MQTT 5 state; `Some` exactly when `protocol` is V5.
    v5: Option<Box<V5State>>,
}

/// A connection's buffers and exchange tables, boxed together in [`Connection::io`]: 160
/// bytes that a busy connection uses every turn and an idle one needs none of.
#[derive(Debug, Default)]
struct Io {
    /// Received bytes not yet decoded (partial packets, or pipelined before `accept`).
    read_buf: BytesMut,
    /// Encoded bytes waiting for `poll_transmit`, in wire order.
    tx: BytesMut,
    /// Events waiting for `poll_event`, in order.
    events: VecDeque<Event>,
    /// Unacknowledged outgoing QoS 1/2 exchanges in send order (ack lookups scan from the
    /// front, where in-order acks hit immediately).
    outgoing: VecDeque<Inflight>,
    /// Inbound QoS 1/2 publishes by packet id, for acknowledgement and QoS 2 de-duplication.
    inbound: PkidMap<Inbound>,
}

impl Io {
    fn is_empty(&self) -> bool {
        self.read_buf.is_empty()
            && self.tx.is_empty()
            && self.events.is_empty()
            && self.outgoing.is_empty()
            && self.inbound.is_empty()
    }
}

/// No outgoing exchanges: what [`Connection::outgoing`] shows without [`Io`].
static NO_OUTGOING: VecDeque<Inflight> = VecDeque::new();

/// The connection's [`Io`], made if it has none (a function of the field, so that it
/// borrows the field alone).
fn io(io: &mut Option<Box<Io>>) -> &mut Io {
    io.get_or_insert_with(Box::default)
}

impl Connection {
    /// A connection whose socket was accepted at `now`; CONNECT must arrive within
    /// `config.connect_timeout`. `config` is usually one `Arc` shared by every connection.
    pub fn new(now: Instant, config: impl Into<Arc<Config>>) -> Self {
        let config = config.into();
        let deadline = Some(now + config.connect_timeout);
        Connection {
            config,
            state: State::AwaitingConnect,
            protocol: None,
            will_armed: false,
            next_pkid: 1,
            keep_alive: None,
            deadline,
            io: None,
            will: None,
            v5: None,
        }
    }

    fn is_v5(&self) -> bool {
        self.protocol == Some(ProtocolVersion::V5)
    }

    /// The version packets are written in: the CONNECT's, 3.1.1 before it.
    fn version(&self) -> ProtocolVersion {
        self.protocol.unwrap_or(ProtocolVersion::V311)
    }

    /// Writes a packet other than PUBLISH in the connection's version; on v5 with the
    /// diagnostics rules of `diagnostics.rs`.
    fn send(&mut self, packet: Packet) {
        let version = self.version();
        let tx = &mut io(&mut self.io).tx;
        match &self.v5 {
            Some(v5) => write_v5(tx, packet, v5.asks),
            None => encode(&packet, version, tx),
        }
    }

    /// Feeds received bytes; decodes and handles every complete packet.
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        io(&mut self.io).read_buf.extend_from_slice(data);
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
        let Some(io) = self.io.as_mut().filter(|io| !io.tx.is_empty()) else {
            return false;
        };
        if out.is_empty() {
            std::mem::swap(out, &mut io.tx);
        } else {
            out.extend_from_slice(&io.tx);
            io.tx.clear();
        }
        true
    }

    /// The bytes waiting to be sent, in wire order, for a driver that writes them from
    /// here — advancing the buffer past what was written — instead of moving them out with
    /// [`Connection::poll_transmit`]: one copy less, and one buffer per connection.
    pub fn transmit(&mut self) -> &mut BytesMut {
        &mut io(&mut self.io).tx
    }

    /// How many bytes wait to be sent: [`Connection::transmit`]'s length, without making
    /// the buffers of a connection that has none.
    pub fn transmit_len(&self) -> usize {
        self.io.as_ref().map_or(0, |io| io.tx.len())
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.io.as_mut()?.events.pop_front()
    }

    /// Gives back the memory of the buffers and tables that are empty now: received bytes,
    /// bytes to send, events, outgoing and inbound exchanges, the v5 encoding scratch.
    /// Nothing observable changes. A driver calls it when the connection has been quiet for
    /// a while, so an idle connection holds none of them, while a busy one keeps their
    /// capacity from one turn to the next instead of allocating it again.
    pub fn trim(&mut self) {
        if let Some(io) = &mut self.io {
            if io.is_empty() {
                self.io = None;
            } else {
                if io.read_buf.is_empty() {
                    io.read_buf = BytesMut::new();
                }
                if io.tx.is_empty() {
                    io.tx = BytesMut::new();
                }
                if io.events.is_empty() {
                    io.events = VecDeque::new();
                }
                if io.outgoing.is_empty() {
                    io.outgoing = VecDeque::new();
                }
                if io.inbound.is_empty() {
                    io.inbound = PkidMap::default();
                }
            }
        }
        if let Some(v5) = &mut self.v5 {
            v5.scratch = BytesMut::new();
        }
    }

    /// Bytes of memory this connection holds outside itself right now (buffer and table
    /// capacities, the boxed v5 state and will), not counting what is shared with others
    /// (payloads, topics). For tests and diagnostics: after [`Connection::trim`] an idle
    /// 3.1.1 connection without a will holds 0.
    pub fn heap_size(&self) -> usize {
        let v5 = self.v5.as_ref().map_or(0, |v5| {
            std::mem::size_of::<V5State>()
                + v5.scratch.capacity()
                + v5.inbound_aliases.as_deref().map_or(0, inbound_heap_size)
                + v5.outbound_aliases.as_ref().map_or(0, |a| a.heap_size())
        });
        let io = self.io.as_ref().map_or(0, |io| {
            std::mem::size_of::<Io>()
                + io.read_buf.capacity()
                + io.tx.capacity()
                + io.events.capacity() * std::mem::size_of::<Event>()
                + io.outgoing.capacity() * std::mem::size_of::<Inflight>()
                + pkid::heap_size(&io.inbound)
        });
        io + self
            .will
            .as_ref()
            .map_or(0, |w| std::mem::size_of::<LastWill>() + w.topic.capacity())
            + v5
    }

    /// Whether the connection has closed (the Closed event was queued).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Protocol revision announced by the CONNECT, once received.
    pub fn protocol(&self) -> Option<ProtocolVersion> {
        self.protocol
    }

    /// MQTT 5: the Session Expiry Interval in force after CONNECT — the client's, at most
    /// `max_session_expiry` (0 before a v5 CONNECT and for 3.1.1, which has none).
    pub fn session_expiry_interval(&self) -> u32 {
        self.v5.as_ref().map_or(0, |v5| v5.session_expiry_interval)
    }

    /// MQTT 5: messages dropped for this client because they were larger than its Maximum
    /// Packet Size (MQTT-3.1.2-25), and because they expired before they could be sent.
    pub fn dropped(&self) -> (u64, u64) {
        self.v5
            .as_ref()
            .map_or((0, 0), |v5| (v5.dropped_too_large, v5.dropped_expired))
    }

    /// Keep Alive × the configured factor, for a Keep Alive of `secs` (0: no timer).
    fn keep_alive_for(&self, secs: u16) -> Option<Duration> {
        (secs != 0).then(|| {
            // A nonsensical configured factor falls back to the specification's 1.5.
            Duration::try_from_secs_f64(f64::from(secs) * self.config.keep_alive_factor)
                .unwrap_or_else(|_| Duration::from_millis(u64::from(secs) * 1500))
        })
    }

    /// Decodes and handles buffered packets until the buffer is short of a whole packet,
    /// the connection waits for `accept`, or it closed.
    fn process(&mut self, now: Instant) {
        loop {
            match self.state {
                State::Closed => return,
                State::AwaitingAccept => {
                    let buffered = self.io.as_ref().map_or(0, |io| io.read_buf.len());
                    if buffered > self.config.max_packet_size {
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
            // Before CONNECT a CONNECT of any level is decoded (its level is in it); any
            // other first packet in the 3.1.1 form, and refused as not a CONNECT.
            let read_buf = &mut io(&mut self.io).read_buf;
            let version = match self.protocol {
                Some(v) => v,
                None if read_buf.first().is_some_and(|b| b >> 4 == 1) => ProtocolVersion::V5,
                None => ProtocolVersion::V311,
            };
            match decode(read_buf, self.config.max_packet_size, version) {
                Ok(None) => return,
                Ok(Some(packet)) => self.on_packet(now, packet),
                Err(DecodeError::UnsupportedProtocolLevel { name, level })
                    if self.state == State::AwaitingConnect =>
                {
                    self.protocol = ProtocolVersion::from_name_and_level(&name, level);
                    self.refuse_now(reason::UNSUPPORTED_PROTOCOL_VERSION, None);
                }
                Err(e) => self.close_with(e.into()),
            }
        }
    }

    /// Sends CONNACK with refusal `reason_code` (the closest return code on 3.1/3.1.1) and
    /// closes without will.
    fn refuse_now(&mut self, reason_code: u8, reason_string: Option<String>) {
        let properties = Properties {
            reason_string,
            ..Properties::default()
        };
        self.send(Packet::ConnAck {
            session_present: false,
            reason_code,
            properties: properties.into(),
        });
        self.close_with(CloseReason::Rejected(reason_code));
    }

    /// Ends the connection: a v5 DISCONNECT saying why when the server closes an
    /// established one, then the `Closed` event with the will unless the client
    /// disconnected normally.
    fn close_with(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        if self.is_v5() && self.state == State::Connected {
            if let Some(code) = reason.v5_reason_code() {
                // Every server-side close says why; a bare `Server` code gets the code's
                // name in `write_v5`.
                let reason_string = match &reason {
                    CloseReason::Malformed(e) => Some(e.to_string()),
                    CloseReason::Violation(v) => Some(v.to_string()),
                    CloseReason::Server { reason_string, .. } => reason_string.clone(),
                    other => Some(other.to_string()),
                };
                let properties = Properties {
                    reason_string,
                    ..Properties::default()
                };
                self.send(Packet::Disconnect(ReasonPacket {
                    reason_code: code,
                    properties: properties.into(),
                }));
            }
        }
        self.state = State::Closed;
        self.deadline = None;
        if let Some(io) = &mut self.io {
            io.read_buf = BytesMut::new();
        }
        let will = self.will.take().filter(|_| self.will_armed);
        let will = match reason {
            CloseReason::Disconnect => None,
            CloseReason::ClientDisconnect { reason_code, .. }
                if reason_code != reason::DISCONNECT_WITH_WILL =>
            {
                None
            }
            _ => will.map(|w| *w),
        };
        io(&mut self.io)
            .events
            .push_back(Event::Closed { reason, will });
    }
}
