//! CoAP over TCP (RFC 8323), sans-IO: the length-prefixed framing (§3.2),
//! the signaling messages (§5: CSM 7.01, Ping 7.02, Pong 7.03, Release 7.04,
//! Abort 7.05) and the same request/observe/block-wise semantics as the UDP
//! [`crate::Endpoint`], minus everything the reliable transport makes moot
//! (message types, IDs, ACKs, retransmission, deduplication). Notifications
//! are plain messages (§7.2: observe without CON).
//!
//! Driving loop, one [`TcpConnection`] per accepted socket: feed received
//! bytes to [`TcpConnection::handle_bytes`] in any chunking, drain
//! [`TcpConnection::poll_event`] (answer requests with
//! [`TcpConnection::respond`]) and [`TcpConnection::poll_transmit`], call
//! [`TcpConnection::handle_timeout`] at [`TcpConnection::poll_timeout`], and
//! close the socket once [`TcpConnection::is_closed`] is true and the
//! transmit queue is drained.

use std::collections::VecDeque;

use crate::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use coap_lite::{MessageType, ResponseType};

use crate::block1::{self, Reassembler};
use crate::config::Config;
use crate::encode::{self, Extra, Limits, Slice};
use crate::endpoint::{not_acceptable, Event, Stats};
use crate::request::{self, is_success, BlockOption, Method, RequestId, Response};
use crate::wire::{self, FormatError};

mod inbound;

/// Signaling code 7.01 Capabilities and Settings Message.
const CSM: u8 = 0xE1;
/// Signaling code 7.02 Ping.
const PING: u8 = 0xE2;
/// Signaling code 7.03 Pong.
const PONG: u8 = 0xE3;
/// Signaling code 7.04 Release.
const RELEASE: u8 = 0xE4;
/// Signaling code 7.05 Abort.
const ABORT: u8 = 0xE5;
/// CSM option Max-Message-Size (RFC 8323 §5.3.1).
const OPT_MAX_MESSAGE_SIZE: u16 = 2;
/// Abort option Bad-CSM-Option (RFC 8323 §5.6).
const OPT_BAD_CSM_OPTION: u16 = 2;
/// The Max-Message-Size assumed until the peer's CSM says otherwise (§5.3.1).
const DEFAULT_MAX_MESSAGE_SIZE: usize = 1152;

/// Why a connection is aborted (the `Display` text is the Abort's
/// diagnostic payload, RFC 8323 §5.6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    /// The frame is not well-formed CoAP (§3.2 framing, §3 options).
    #[error("malformed message: {0}")]
    Malformed(#[from] FormatError),
    /// TKL 9..=15 is reserved.
    #[error("token length {tkl} exceeds the maximum of 8")]
    TokenLength {
        /// The received TKL field.
        tkl: u8,
    },
    /// A message larger than the Max-Message-Size we announced (§5.3.1).
    #[error("message of {size} bytes exceeds our Max-Message-Size of {max}")]
    TooLarge {
        /// Its size (header, token, options and payload).
        size: usize,
        /// What our CSM announced.
        max: usize,
    },
    /// The first message was not a CSM (§5.3: it MUST be).
    #[error("the first message must be a CSM (7.01), got code {class}.{detail:02}")]
    MissingCsm {
        /// Class of the received code.
        class: u8,
        /// Detail of the received code.
        detail: u8,
    },
    /// A CSM carried a critical option we do not know (§5.3).
    #[error("CSM option {number} is critical and not understood")]
    BadCsmOption {
        /// The option number.
        number: u16,
    },
    /// The peer's CSM did not arrive in time.
    #[error("no CSM received within the timeout")]
    CsmTimeout,
    /// A message began to arrive and did not complete in time.
    #[error("a message stalled: {received} of its bytes arrived in {elapsed_secs} s")]
    FrameTimeout {
        /// Bytes of the incomplete message received.
        received: usize,
        /// Seconds since its first byte.
        elapsed_secs: u64,
    },
}

/// A request handed to the driver and awaiting [`TcpConnection::respond`].
#[derive(Debug)]
struct Pending {
    /// Echoed in the response and the observation key.
    token: Vec<u8>,
    /// Only a GET can register an observation.
    method: Method,
    /// Observe=0 is a registration request.
    observe: Option<u32>,
    /// Kept with the observation (4.06 when the format changes).
    accept: Option<u16>,
    /// The block the client asked for.
    block2: Option<BlockOption>,
    /// Last Block1 of a reassembled upload, echoed in the final response.
    block1: Option<BlockOption>,
}

/// An observer on this connection, keyed by token (RFC 8323 §7.2).
#[derive(Debug)]
struct Observer {
    /// The resource it watches.
    resource: String,
    /// Its Accept; another format ends the observation with 4.06.
    accept: Option<u16>,
}

/// One CoAP-over-TCP connection. See the module documentation.
#[derive(Debug)]
pub struct TcpConnection {
    /// Caps and block size (shared with the UDP endpoint's configuration).
    config: Config,
    /// The client; appears in [`Request::peer`] and keys Block1 transfers.
    peer: SocketAddr,
    /// Bytes received but not yet a whole frame.
    inbuf: BytesMut,
    /// When the incomplete frame at the start of `inbuf` began to arrive, and how many of
    /// its bytes have arrived: its deadline is [`Config::tcp_frame_timeout`] after that,
    /// plus a second per [`Config::tcp_frame_min_rate`] bytes.
    partial: Option<(Instant, usize)>,
    /// Whether the peer's CSM arrived (it must be the first message).
    csm_received: bool,
    /// Deadline for the peer's CSM.
    csm_deadline: Instant,
    /// The largest message the peer accepts (its CSM, default 1152).
    peer_max_message_size: usize,
    /// Set after Abort (sent or received) or Release: stop reading, flush
    /// and close.
    closed: bool,
    /// Next request id.
    next_request_id: RequestId,
    /// Next Observe sequence number (24-bit when sent).
    next_observe: u32,
    /// Requests awaiting the driver.
    pending: HashMap<RequestId, Pending>,
    /// Observers by token.
    observers: HashMap<Vec<u8>, Observer>,
    /// Block1 reassembly (a client may still use Block1 over TCP).
    transfers: Reassembler,
    /// Encoded frames to write.
    transmits: VecDeque<Bytes>,
    /// Events for the driver.
    events: VecDeque<Event>,
    /// Counters (the UDP [`Stats`] fields that apply).
    stats: Stats,
}

impl TcpConnection {
    /// A new connection from `peer`; our CSM is queued at once (§5.3).
    pub fn new(config: Config, now: Instant, peer: SocketAddr) -> Self {
        let mut conn = Self {
            csm_deadline: now + config.csm_timeout,
            config,
            peer,
            inbuf: BytesMut::new(),
            partial: None,
            csm_received: false,
            peer_max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            closed: false,
            next_request_id: 1,
            next_observe: 2,
            pending: HashMap::default(),
            observers: HashMap::default(),
            transfers: Reassembler::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        };
        let mut csm = wire::packet(
            MessageType::Confirmable,
            coap_lite::MessageClass::from(CSM),
            0,
            &[],
        );
        let max = u32::try_from(conn.config.tcp_max_message_size).unwrap_or(u32::MAX);
        wire::add_uint(
            &mut csm,
            coap_lite::CoapOption::Unknown(OPT_MAX_MESSAGE_SIZE),
            max,
        );
        if let Ok(bytes) = csm.to_bytes_unlimited() {
            conn.transmits.push_back(Bytes::from(to_tcp(&bytes)));
        }
        conn
    }

    /// Processes received bytes (any chunking: partial frames are kept).
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        if self.closed {
            return;
        }
        self.inbuf.extend_from_slice(data);
        let mut completed = false;
        while !self.closed {
            match self.next_frame() {
                Ok(Some((code, token, rest))) => {
                    completed = true;
                    self.on_frame(now, code, token, rest);
                }
                Ok(None) => break,
                Err(error) => {
                    self.stats.malformed_dropped += 1;
                    self.abort(&error, None);
                }
            }
        }
        // The clock of an incomplete frame starts with its first byte.
        self.partial = match self.partial {
            _ if self.inbuf.is_empty() || self.closed => None,
            Some((since, _)) if !completed => Some((since, self.inbuf.len())),
            _ => Some((now, self.inbuf.len())),
        };
    }

    /// When the incomplete frame being received must have completed.
    fn frame_deadline(&self) -> Option<Instant> {
        let (since, received) = self.partial?;
        let earned = match self.config.tcp_frame_min_rate {
            0 => 0,
            rate => received as u64 / u64::from(rate),
        };
        Some(since + self.config.tcp_frame_timeout + std::time::Duration::from_secs(earned))
    }

    /// Answers request `id` (see [`crate::Endpoint::respond`]).
    pub fn respond(
        &mut self,
        _now: Instant,
        id: RequestId,
        response: Response,
        observe: Option<String>,
    ) {
        let Some(p) = self.pending.remove(&id) else {
            self.stats.late_responses += 1;
            return;
        };
        if self.closed {
            return;
        }
        let mut observe_seq = None;
        if p.method == Method::Get && p.observe == Some(0) {
            match observe {
                Some(resource) if is_success(response.code) => {
                    if self.register(p.token.clone(), resource, p.accept) {
                        observe_seq = Some(self.next_observe_seq());
                    }
                }
                _ => self.remove_observer(&p.token),
            }
        }
        let extra = Extra {
            observe: observe_seq,
            block2: p.block2.map(|b| Slice {
                num: b.num,
                szx: b.szx,
            }),
            block1: p.block1,
            size1: None,
        };
        self.send_response(&p.token, &response, extra);
    }

    /// Sends `response` to every observer of `resource` on this connection
    /// (a plain message with Observe, RFC 8323 §7.2); a non-2.xx response
    /// ends them, and an observer whose Accept no longer matches gets a
    /// final 4.06.
    pub fn notify(&mut self, _now: Instant, resource: &str, response: Response) {
        if self.closed {
            return;
        }
        if !is_success(response.code) {
            self.end_observations(_now, resource, response);
            return;
        }
        let tokens: Vec<(Vec<u8>, Option<u16>)> = self
            .observers
            .iter()
            .filter(|(_, o)| o.resource == resource)
            .map(|(t, o)| (t.clone(), o.accept))
            .collect();
        for (token, accept) in tokens {
            match accept {
                Some(accept) if response.content_format != Some(accept) => {
                    self.stats.observers_not_acceptable += 1;
                    self.remove_observer(&token);
                    let text = not_acceptable(accept, response.content_format);
                    let final_ = Response::diagnostic(ResponseType::NotAcceptable, &text);
                    self.send_response(&token, &final_, Extra::default());
                }
                _ => {
                    let seq = self.next_observe_seq();
                    self.stats.notifications += 1;
                    let extra = Extra {
                        observe: Some(seq),
                        ..Extra::default()
                    };
                    self.send_response(&token, &response, extra);
                }
            }
        }
    }

    /// Sends `response` without Observe to every observer of `resource` and
    /// removes them (RFC 7641 §3.2).
    pub fn end_observations(&mut self, _now: Instant, resource: &str, response: Response) {
        let tokens: Vec<Vec<u8>> = self
            .observers
            .iter()
            .filter(|(_, o)| o.resource == resource)
            .map(|(t, _)| t.clone())
            .collect();
        for token in tokens {
            self.remove_observer(&token);
            if !self.closed {
                self.send_response(&token, &response, Extra::default());
            }
        }
    }

    /// Next frame to write.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`TcpConnection::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let csm = (!self.csm_received && !self.closed).then_some(self.csm_deadline);
        csm.into_iter()
            .chain(self.frame_deadline())
            .chain(self.transfers.next_expiry())
            .min()
    }

    /// Aborts a connection whose CSM never came or whose incomplete message stalled;
    /// expires stalled uploads.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.csm_received && !self.closed && now >= self.csm_deadline {
            self.abort(&TcpError::CsmTimeout, None);
        }
        if let (Some(at), Some((since, received))) = (self.frame_deadline(), self.partial) {
            if now >= at && !self.closed {
                self.stats.malformed_dropped += 1;
                let elapsed_secs = now.saturating_duration_since(since).as_secs();
                self.abort(
                    &TcpError::FrameTimeout {
                        received,
                        elapsed_secs,
                    },
                    None,
                );
            }
        }
        self.transfers.expire(now);
    }

    /// Whether the connection is over (Abort or Release): write what
    /// [`TcpConnection::poll_transmit`] still has, then close the socket.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Ends the connection from our side (server shutdown): a Release
    /// (RFC 8323 §5.5) is queued and every observation ends.
    pub fn release(&mut self) {
        if !self.closed {
            self.transmits.push_back(signal(RELEASE, &[], None, &[]));
            self.close();
        }
    }

    /// The largest message the peer accepts (from its CSM; 1152 before).
    pub fn peer_max_message_size(&self) -> usize {
        self.peer_max_message_size
    }

    /// Number of observers of `resource` on this connection.
    pub fn observer_count(&self, resource: &str) -> usize {
        self.observers
            .values()
            .filter(|o| o.resource == resource)
            .count()
    }

    /// Monitoring counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    // --------------------------------------------------------------- output

    /// Registers (or renews) the observer with `token`.
    fn register(&mut self, token: Vec<u8>, resource: String, accept: Option<u16>) -> bool {
        if let Some(existing) = self.observers.get_mut(&token) {
            if existing.resource == resource {
                existing.accept = accept;
                self.stats.observers_registered += 1;
                return true;
            }
            self.remove_observer(&token);
        }
        if self.observers.len() >= self.config.max_observers_per_peer {
            self.stats.overloaded += 1;
            return false;
        }
        self.observers.insert(token, Observer { resource, accept });
        self.stats.observers_registered += 1;
        true
    }

    /// Removes an observer and emits [`Event::ObservationEnded`].
    fn remove_observer(&mut self, token: &[u8]) {
        let Some(observer) = self.observers.remove(token) else {
            return;
        };
        let remaining = self.observer_count(&observer.resource);
        self.events.push_back(Event::ObservationEnded {
            resource: observer.resource,
            remaining,
        });
    }

    /// Encodes a response within the peer's Max-Message-Size and queues it.
    fn send_response(&mut self, token: &[u8], response: &Response, extra: Extra) {
        let limits = Limits {
            szx: encode::szx_of(self.config.block_size),
            // The datagram layout is 4 bytes of header; the TCP header is at
            // most 6: leave room so the framed message fits.
            max_message_size: self.peer_max_message_size.saturating_sub(2),
        };
        let (bytes, oversized) =
            encode::response(limits, MessageType::Confirmable, 0, token, response, extra);
        if oversized {
            self.stats.oversized_responses += 1;
        }
        self.transmits.push_back(Bytes::from(to_tcp(&bytes)));
    }

    /// Sends Abort with a diagnostic (and Bad-CSM-Option) and closes (§5.6).
    fn abort(&mut self, error: &TcpError, bad_option: Option<u16>) {
        if self.closed {
            return;
        }
        let option = bad_option.map(|n| (OPT_BAD_CSM_OPTION, u32::from(n)));
        self.transmits
            .push_back(signal(ABORT, &[], option, error.to_string().as_bytes()));
        self.close();
    }

    /// Marks the connection closed and ends every observation on it.
    fn close(&mut self) {
        self.closed = true;
        self.inbuf.clear();
        self.partial = None;
        let tokens: Vec<Vec<u8>> = self.observers.keys().cloned().collect();
        for token in tokens {
            self.remove_observer(&token);
        }
    }

    /// Next Observe value, masked to 24 bits (RFC 7641 §3.4).
    fn next_observe_seq(&mut self) -> u32 {
        let seq = self.next_observe & 0x00FF_FFFF;
        self.next_observe = self.next_observe.wrapping_add(1);
        seq
    }
}

/// Encodes a signaling message (always small: never fails).
fn signal(code: u8, token: &[u8], option: Option<(u16, u32)>, payload: &[u8]) -> Bytes {
    let mut p = wire::packet(
        MessageType::Confirmable,
        coap_lite::MessageClass::from(code),
        0,
        token,
    );
    if let Some((number, value)) = option {
        wire::add_uint(&mut p, coap_lite::CoapOption::Unknown(number), value);
    }
    p.payload = payload.to_vec();
    Bytes::from(to_tcp(&p.to_bytes_unlimited().unwrap_or_default()))
}

/// Converts a message in datagram layout (RFC 7252 §3) to the RFC 8323 §3.2
/// framing: `Len|TKL`, extended length, code, token, options and payload.
/// Input shorter than a header yields nothing.
pub fn to_tcp(datagram: &[u8]) -> Vec<u8> {
    let [b0, code, _, _, ..] = *datagram else {
        return Vec::new();
    };
    let tkl = usize::from(b0 & 0x0F).min(datagram.len() - 4);
    let token = &datagram[4..4 + tkl];
    let rest = &datagram[4 + tkl..];
    let len = rest.len();
    let mut out = Vec::with_capacity(len + tkl + 6);
    let tkl = tkl as u8;
    if len < 13 {
        out.push(((len as u8) << 4) | tkl);
    } else if len < 269 {
        out.push((13 << 4) | tkl);
        out.push((len - 13) as u8);
    } else if len < 65_805 {
        out.push((14 << 4) | tkl);
        out.extend_from_slice(&((len - 269) as u16).to_be_bytes());
    } else {
        out.push((15 << 4) | tkl);
        out.extend_from_slice(&(u32::try_from(len - 65_805).unwrap_or(u32::MAX)).to_be_bytes());
    }
    out.push(code);
    out.extend_from_slice(token);
    out.extend_from_slice(rest);
    out
}
