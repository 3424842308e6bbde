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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::codec::{decode, encode, encode_publish, DecodeError};
use crate::packet::{
    Connect, ConnectReturnCode, LastWill, Packet, ProtocolVersion, Publish, QoS,
    SubscribeReturnCode,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_packet_size: 1024 * 1024,
            max_inflight: 32,
            connect_timeout: Duration::from_secs(10),
            keep_alive_factor: 1.5,
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
    /// subscription, MQTT-3.3.1-8/9).
    pub retain: bool,
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
    /// The connection is over (emitted exactly once). Flush `poll_transmit`, then close.
    Closed {
        /// Why it ended.
        reason: CloseReason,
        /// The will to publish: `Some` on every close after `accept` other than DISCONNECT.
        will: Option<LastWill>,
    },
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
        if self.state != State::AwaitingAccept {
            return;
        }
        self.state = State::Connected;
        self.will = self.pending_will.take();
        encode(
            &Packet::ConnAck {
                session_present,
                code: ConnectReturnCode::Accepted,
            },
            &mut self.tx,
        );
        if let Some(session) = resume {
            self.next_pkid = session.next_pkid.max(1);
            for id in session.inbound_qos2 {
                self.inbound.insert(id, Inbound::Qos2 { done: true });
            }
            for entry in session.outgoing {
                match &entry {
                    Inflight::Publish { pkid, message } => encode_publish(
                        &mut self.tx,
                        message.qos != QoS::AtMostOnce,
                        message.qos,
                        message.retain,
                        &message.topic,
                        *pkid,
                        &message.payload,
                    ),
                    Inflight::PubRel { pkid } => encode(&Packet::PubRel(*pkid), &mut self.tx),
                }
                self.outgoing.push_back(entry);
            }
        }
        self.deadline = self.keep_alive.map(|ka| now + ka);
        self.process(now);
    }

    /// Refuses the CONNECT: sends CONNACK `code` and closes without will.
    pub fn reject(&mut self, code: ConnectReturnCode) {
        if self.state != State::AwaitingAccept {
            return;
        }
        self.reject_now(code);
    }

    /// The broker finished with inbound PUBLISH `pkid`: PUBACK (QoS 1) or PUBREC (QoS 2).
    /// Unknown ids are ignored.
    pub fn publish_done(&mut self, pkid: u16) {
        if self.state != State::Connected {
            return;
        }
        match self.inbound.get_mut(&pkid) {
            Some(Inbound::Qos1(count)) => {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.inbound.remove(&pkid);
                }
                encode(&Packet::PubAck(pkid), &mut self.tx);
            }
            Some(Inbound::Qos2 { done }) if !*done => {
                *done = true;
                encode(&Packet::PubRec(pkid), &mut self.tx);
            }
            _ => {}
        }
    }

    /// Answers SUBSCRIBE `pkid` with one code per filter, in filter order.
    pub fn suback(&mut self, pkid: u16, codes: Vec<SubscribeReturnCode>) {
        if self.state == State::Connected {
            encode(&Packet::SubAck { pkid, codes }, &mut self.tx);
        }
    }

    /// Answers UNSUBSCRIBE `pkid`.
    pub fn unsuback(&mut self, pkid: u16) {
        if self.state == State::Connected {
            encode(&Packet::UnsubAck(pkid), &mut self.tx);
        }
    }

    /// Sends a message to the client. QoS 0 is written immediately; QoS 1/2 gets a free
    /// packet id and is tracked until acknowledged. Returns the message back when the
    /// in-flight window is full or the connection is not (yet / any more) established, so
    /// the driver keeps it queued.
    pub fn send_publish(&mut self, _now: Instant, msg: Outgoing) -> Result<(), Outgoing> {
        if self.state != State::Connected {
            return Err(msg);
        }
        if msg.qos == QoS::AtMostOnce {
            encode_publish(
                &mut self.tx,
                false,
                msg.qos,
                msg.retain,
                &msg.topic,
                0,
                &msg.payload,
            );
            return Ok(());
        }
        if self.inflight_available() == 0 {
            return Err(msg);
        }
        let Some(pkid) = self.allocate_pkid() else {
            return Err(msg);
        };
        encode_publish(
            &mut self.tx,
            false,
            msg.qos,
            msg.retain,
            &msg.topic,
            pkid,
            &msg.payload,
        );
        self.outgoing
            .push_back(Inflight::Publish { pkid, message: msg });
        Ok(())
    }

    /// How many more QoS 1/2 messages `send_publish` accepts now.
    pub fn inflight_available(&self) -> usize {
        if self.state != State::Connected {
            return 0;
        }
        usize::from(self.config.max_inflight).saturating_sub(self.outgoing.len())
    }

    /// Driver-initiated close (takeover, shutdown); the will is handed out since this is not
    /// a DISCONNECT.
    pub fn close(&mut self, reason: CloseReason) {
        self.close_with(reason);
    }

    /// Moves the persistent-session state out of the connection (for Clean Session 0).
    pub fn take_session(&mut self) -> SessionState {
        let inbound_qos2 = self
            .inbound
            .iter()
            .filter(|(_, state)| **state == Inbound::Qos2 { done: true })
            .map(|(id, _)| *id)
            .collect();
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
        self.state = State::Closed;
        self.deadline = None;
        self.read_buf = BytesMut::new();
        self.pending_will = None;
        let will = match reason {
            CloseReason::Disconnect => None,
            _ => self.will.take(),
        };
        self.will = None;
        self.events.push_back(Event::Closed { reason, will });
    }

    fn reject_now(&mut self, code: ConnectReturnCode) {
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
            Packet::PingReq => encode(&Packet::PingResp, &mut self.tx),
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
                    encode(&Packet::PubRec(publish.pkid), &mut self.tx);
                    return;
                }
                Some(Inbound::Qos2 { done: false }) => return,
                _ => {
                    self.inbound
                        .insert(publish.pkid, Inbound::Qos2 { done: false });
                }
            },
        }
        self.events.push_back(Event::Publish(publish));
    }
}
