//! The sans-IO CoAP server endpoint over UDP: RFC 7252 message layer,
//! RFC 7641 observe and RFC 7959 block-wise transfer.
//!
//! Driving loop: feed every received datagram to
//! [`Endpoint::handle_datagram`], drain [`Endpoint::poll_event`] (answer each
//! [`Event::Request`] with [`Endpoint::respond`]) and
//! [`Endpoint::poll_transmit`], and call [`Endpoint::handle_timeout`] when
//! [`Endpoint::poll_timeout`] is reached. Store changes go out through
//! [`Endpoint::notify`] and [`Endpoint::end_observations`].
//!
//! Towards each client at most [`Config::nstart`] CON messages are
//! outstanding (RFC 7252 §4.7); further CON notifications wait in a per-peer
//! queue and carry the newest value when they finally go out. Notifications
//! are CON or NON by [`crate::NotifyPolicy`]; the MIDs of NON notifications
//! are remembered so an RST to one still ends the observation (RFC 7641 §3.6).

use std::collections::VecDeque;

use crate::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{MessageType, ResponseType};

use crate::block1::{self, Reassembler};
use crate::config::{Config, NotifyPolicy};
use crate::encode::{self, suppressed, Extra, Limits, Slice};
use crate::request::{self, is_success, BlockOption, Method, Request, RequestId, Response};
use crate::rng::Rng;
use crate::wire;

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request to answer with [`Endpoint::respond`].
    Request(Request),
    /// An observer of `resource` was removed (deregistration, RST, timeout,
    /// replacement, [`Endpoint::end_observations`]); `remaining` observers
    /// are left, so the driver can unsubscribe from the store at 0.
    ObservationEnded {
        /// The resource the observer watched.
        resource: String,
        /// Observers of `resource` left after the removal.
        remaining: usize,
    },
}

/// Counters for monitoring; all monotonically increasing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams (or TCP frames) that were not well-formed CoAP (RFC 7252
    /// §3/§4.2, RFC 8323 §3.2): truncated headers, bad option deltas,
    /// TKL > 8, payload markers with nothing after them.
    pub malformed_dropped: u64,
    /// Datagrams larger than `Config::max_datagram_size` (answered 4.13 when
    /// they were CON requests, otherwise dropped).
    pub oversized_dropped: u64,
    /// Well-formed messages rejected or ignored (response codes in CON/NON,
    /// reserved classes, bad critical options in NON requests).
    pub rejected: u64,
    /// Empty CON pings answered with RST (UDP) or Ping signals answered with
    /// Pong (TCP).
    pub pings: u64,
    /// Duplicate requests (same peer and message ID within EXCHANGE_LIFETIME
    /// for CON, NON_LIFETIME for NON).
    pub duplicates: u64,
    /// Requests handed to the driver.
    pub requests: u64,
    /// Requests the endpoint answered itself (4.02, 4.05, 2.31, 4.08, ...).
    pub answered_locally: u64,
    /// Requests refused with 5.03 (or observations refused) because a cap
    /// was reached.
    pub overloaded: u64,
    /// `respond` calls for unknown or expired request ids.
    pub late_responses: u64,
    /// Requests dropped because the driver did not answer within the lifetime.
    pub pending_expired: u64,
    /// CON retransmissions sent.
    pub retransmissions: u64,
    /// Notifications sent (first transmissions, CON and NON).
    pub notifications: u64,
    /// Notifications sent as NON.
    pub non_notifications: u64,
    /// CON notifications that waited because NSTART CONs were already
    /// outstanding towards their client (RFC 7252 §4.7).
    pub nstart_deferred: u64,
    /// Observers registered (including replacements).
    pub observers_registered: u64,
    /// Observers dropped because a notification was never acknowledged.
    pub observers_dropped: u64,
    /// Observers removed by an RST from the client.
    pub observers_reset: u64,
    /// Observers ended with 4.06 because a value's format no longer matched
    /// their Accept (RFC 7641 §3.2 / RFC 7252 §5.10.4).
    pub observers_not_acceptable: u64,
    /// Responses that did not fit a datagram even with Block2 (sent as 5.00).
    pub oversized_responses: u64,
    /// Messages not sent because every message ID was used within
    /// EXCHANGE_LIFETIME.
    pub message_ids_exhausted: u64,
}

/// Key of a remembered exchange: the peer and its message ID.
type ExchangeKey = (SocketAddr, u16);
/// Key of an observation: the client and its token (RFC 7641 §3.1).
type ObserverKey = (SocketAddr, Vec<u8>);

/// What the endpoint knows about a received request message.
#[derive(Debug)]
enum ExchangeState {
    /// Handed to the driver, not answered yet: duplicates are swallowed.
    Processing,
    /// Answered: a duplicate CON gets these bytes again (RFC 7252 §4.5).
    Answered(Bytes),
    /// Seen and finished without a cached answer (NON, RST-rejected).
    Seen,
}

/// A remembered exchange for deduplication.
#[derive(Debug)]
struct Exchange {
    /// When the entry stops suppressing duplicates.
    expires: Instant,
    /// What a duplicate gets.
    state: ExchangeState,
}

/// A request handed to the driver and awaiting [`Endpoint::respond`].
#[derive(Debug)]
struct Pending {
    /// Where the response goes.
    peer: SocketAddr,
    /// The request's MID: the ACK echoes it, and the exchange cache is keyed by it.
    mid: u16,
    /// Echoed in the response and the observation key.
    token: Vec<u8>,
    /// CON requests get piggybacked ACKs, NON requests a NON with a fresh MID.
    confirmable: bool,
    /// Only a GET can register an observation.
    method: Method,
    /// Observe=0 is a registration request.
    observe: Option<u32>,
    /// The observer's Accept, kept with the observation so a later value in
    /// another format ends it with 4.06.
    accept: Option<u16>,
    /// The block the client asked for; the endpoint slices the response.
    block2: Option<BlockOption>,
    /// Last Block1 of a reassembled upload, echoed in the final response.
    block1: Option<BlockOption>,
    /// RFC 7967 suppression mask.
    no_response: u8,
    /// Forget the request (and count it) if the driver never answers.
    expires: Instant,
}

/// A registered observer (RFC 7641 §2).
#[derive(Debug)]
struct Observer {
    /// The resource it watches; notifications are routed by it.
    resource: String,
    /// Accept of the registration; a value in another format ends the
    /// observation with 4.06 instead of being sent.
    accept: Option<u16>,
    /// MID of the unacknowledged CON notification, if any (§4.5.2 allows one).
    outstanding: Option<u16>,
    /// Newest value that arrived while a notification was outstanding or
    /// deferred by NSTART; it replaces the old one at the next transmission.
    newer: Option<Response>,
    /// Waiting in its peer's NSTART queue.
    deferred: bool,
    /// When it last got a CON (or registered): drives the periodic CON of
    /// [`NotifyPolicy::NonWithPeriodicCon`].
    last_con: Instant,
}

/// What waits in a peer's NSTART queue.
#[derive(Debug)]
enum Deferred {
    /// A notification for this observer (its `newer` value at send time).
    Notification(ObserverKey),
    /// A final non-2.xx response of an ended observation, to this token.
    Final(Vec<u8>, Response),
}

/// Per-client state that must outlive single messages. An entry exists only
/// while the peer has observers, pending requests, outstanding CONs or queued
/// messages, so the table is bounded by those caps.
#[derive(Debug, Default)]
struct Peer {
    /// CON messages sent to it and not yet acknowledged (≤ NSTART).
    outstanding: usize,
    /// CON messages waiting for `outstanding` to drop below NSTART.
    queue: VecDeque<Deferred>,
    /// Observers it registered (for the per-peer cap).
    observers: usize,
    /// Its requests awaiting the driver (for the per-peer cap).
    pending: usize,
}

impl Peer {
    /// Whether nothing needs this entry any more.
    fn is_idle(&self) -> bool {
        self.outstanding == 0 && self.queue.is_empty() && self.observers == 0 && self.pending == 0
    }
}

/// Why a CON we sent is being retransmitted.
#[derive(Debug, Clone)]
enum Purpose {
    /// A notification for this observer.
    Notification(ObserverKey),
    /// A final response of an ended observation; nobody to tell on failure.
    Final,
}

/// An outgoing CON awaiting its ACK (RFC 7252 §4.2).
#[derive(Debug)]
struct OutCon {
    /// The encoded message, resent as is.
    bytes: Bytes,
    /// Retransmissions already sent.
    attempts: u32,
    /// Current timeout; doubles after each retransmission.
    timeout: Duration,
    /// When to retransmit or give up.
    deadline: Instant,
    /// What to do on ACK, RST or give-up.
    purpose: Purpose,
}

/// The sans-IO CoAP server endpoint. See the module documentation.
#[derive(Debug)]
pub struct Endpoint {
    /// Timing and cap parameters.
    config: Config,
    /// Our preferred block size exponent, derived from `config.block_size`.
    szx: u8,
    /// Jitter and initial MID source.
    rng: Rng,
    /// Next message ID to try.
    next_mid: u16,
    /// For each 4096-MID block, when an ID in it was last allocated; a block
    /// is re-entered only after EXCHANGE_LIFETIME so no ID is reused early.
    mid_block_used: [Option<Instant>; 16],
    /// The 4096-MID block `next_mid` is currently in.
    current_mid_block: usize,
    /// Next request id.
    next_request_id: RequestId,
    /// Next Observe sequence number (masked to 24 bits when sent); one
    /// endpoint-wide counter keeps values increasing across re-registrations.
    next_observe: u32,
    /// Deduplication cache.
    exchanges: HashMap<ExchangeKey, Exchange>,
    /// Insertion (≈ expiry) order of `exchanges`, for expiry and eviction.
    exchange_order: VecDeque<(Instant, ExchangeKey)>,
    /// Requests awaiting the driver.
    pending: HashMap<RequestId, Pending>,
    /// Insertion order of `pending` for expiry.
    pending_order: VecDeque<(Instant, RequestId)>,
    /// Observers by (peer, token).
    observers: HashMap<ObserverKey, Observer>,
    /// Observers by resource.
    by_resource: HashMap<String, HashSet<ObserverKey>>,
    /// CON messages awaiting ACK, by (peer, MID).
    outgoing: HashMap<ExchangeKey, OutCon>,
    /// MIDs of notifications that are not (or no longer) in `outgoing`: NON
    /// notifications and CONs replaced by newer values. An RST to them still
    /// cancels the observation (RFC 7641 §3.6). Value: owner and expiry.
    notification_mids: HashMap<ExchangeKey, (ObserverKey, Instant)>,
    /// Insertion order of `notification_mids`, for the cap.
    notification_order: VecDeque<ExchangeKey>,
    /// Per-client NSTART accounting, queues and cap counters.
    peers: HashMap<SocketAddr, Peer>,
    /// Peers whose outstanding count dropped: their queue may move.
    ready: Vec<SocketAddr>,
    /// Block1 reassembly state.
    transfers: Reassembler,
    /// Datagrams to send.
    transmits: VecDeque<(SocketAddr, Bytes)>,
    /// Events for the driver.
    events: VecDeque<Event>,
    /// Counters.
    stats: Stats,
}

impl Endpoint {
    /// Creates an endpoint. `block_size` is clamped to 16..=1024 and rounded
    /// down to a power of two.
    pub fn new(config: Config) -> Self {
        let mut rng = Rng::new(config.seed);
        let next_mid = (rng.next_u64() & 0xFFFF) as u16;
        let szx = encode::szx_of(config.block_size);
        Self {
            config,
            szx,
            rng,
            next_mid,
            mid_block_used: [None; 16],
            current_mid_block: usize::from(next_mid >> 12),
            next_request_id: 1,
            next_observe: 2,
            exchanges: HashMap::default(),
            exchange_order: VecDeque::new(),
            pending: HashMap::default(),
            pending_order: VecDeque::new(),
            observers: HashMap::default(),
            by_resource: HashMap::default(),
            outgoing: HashMap::default(),
            notification_mids: HashMap::default(),
            notification_order: VecDeque::new(),
            peers: HashMap::default(),
            ready: Vec::new(),
            transfers: Reassembler::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Processes one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        if data.len() > self.config.max_datagram_size {
            self.on_oversized(now, peer, data);
            return;
        }
        let packet = match wire::decode(data) {
            Ok(packet) => packet,
            Err((header, _error)) => {
                self.stats.malformed_dropped += 1;
                if let Some(h) = header {
                    if h.mtype == MessageType::Confirmable {
                        self.send_empty(peer, MessageType::Reset, h.mid);
                    }
                }
                return;
            }
        };
        let mid = packet.mid;
        let code = packet.code;
        let mtype = packet.mtype;
        match (mtype, code >> 5, code & 0x1F) {
            (MessageType::Confirmable, 0, 0) => {
                self.stats.pings += 1;
                self.send_empty(peer, MessageType::Reset, mid);
            }
            (MessageType::Acknowledgement, 0, 0) => self.on_ack(now, peer, mid),
            (MessageType::Reset, 0, 0) => self.on_reset(peer, mid),
            (MessageType::Confirmable | MessageType::NonConfirmable, 0, _) => {
                self.on_request(now, peer, code, mtype == MessageType::Confirmable, &packet)
            }
            (MessageType::Confirmable, _, _) => {
                // §4.2: a CON that is neither request nor empty is rejected.
                self.stats.rejected += 1;
                self.send_empty(peer, MessageType::Reset, mid);
            }
            _ => {
                // Empty NON, responses in NON/ACK (we send no requests),
                // non-empty RST: silently ignored (§4.3).
                self.stats.rejected += 1;
            }
        }
        self.dispatch(now);
    }

    /// Answers request `id`. With `observe = Some(resource)` a 2.xx answer to
    /// a GET with Observe=0 registers (or replaces) the observation of
    /// `resource` by this (peer, token) and carries an Observe number;
    /// otherwise the answer has no Observe option. Unknown or expired ids are
    /// counted in [`Stats::late_responses`] and ignored.
    pub fn respond(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response,
        observe: Option<String>,
    ) {
        let Some(p) = self.pending.remove(&id) else {
            self.stats.late_responses += 1;
            return;
        };
        self.peer_update(p.peer, |peer| peer.pending = peer.pending.saturating_sub(1));
        let key: ObserverKey = (p.peer, p.token.clone());
        let mut observe_seq = None;
        if p.method == Method::Get && p.observe == Some(0) {
            match observe {
                Some(resource) if is_success(response.code) => {
                    if self.register(now, key, resource, p.accept) {
                        observe_seq = Some(self.next_observe_seq());
                    }
                }
                // RFC 7641 §4.1: an unsuccessful or unobservable answer ends
                // any earlier observation by this (peer, token).
                _ => self.remove_observer(&key),
            }
        }
        let suppressed = suppressed(p.no_response, response.code);
        let (mtype, mid) = if p.confirmable {
            (MessageType::Acknowledgement, p.mid)
        } else {
            match self.allocate_mid(now) {
                Some(mid) => (MessageType::NonConfirmable, mid),
                None => return,
            }
        };
        let bytes = if suppressed {
            p.confirmable
                .then(|| Bytes::from(wire::empty(MessageType::Acknowledgement, p.mid)))
        } else {
            Some(self.encode(
                mtype,
                mid,
                &p.token,
                &response,
                Extra {
                    observe: observe_seq,
                    block2: p.block2.map(|b| Slice {
                        num: b.num,
                        szx: b.szx,
                    }),
                    block1: p.block1,
                    size1: None,
                },
            ))
        };
        self.finish_exchange(p.peer, p.mid, p.confirmable, bytes);
        self.dispatch(now);
    }

    /// Sends `response` as a notification to every observer of `resource`,
    /// each with its token and a new Observe number, CON or NON as
    /// [`Config::notify`] says. An observer with an unacknowledged (or
    /// NSTART-deferred) notification gets the newest value when it goes out
    /// instead (RFC 7641 §4.5.2). An observer whose Accept differs from the
    /// response's Content-Format is ended with a final 4.06. A non-2.xx
    /// `response` ends the observations as [`Endpoint::end_observations`] does.
    pub fn notify(&mut self, now: Instant, resource: &str, response: Response) {
        if !is_success(response.code) {
            self.end_observations(now, resource, response);
            return;
        }
        let keys: Vec<ObserverKey> = self
            .by_resource
            .get(resource)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            let Some(observer) = self.observers.get_mut(&key) else {
                continue;
            };
            if let Some(accept) = observer.accept {
                if response.content_format != Some(accept) {
                    self.stats.observers_not_acceptable += 1;
                    let text = not_acceptable(accept, response.content_format);
                    let final_ = Response::diagnostic(ResponseType::NotAcceptable, &text);
                    self.end_one(now, &key, final_);
                    continue;
                }
            }
            if observer.outstanding.is_some() || observer.deferred {
                observer.newer = Some(response.clone());
            } else {
                self.send_notification(now, &key, &response);
            }
        }
        self.dispatch(now);
    }

    /// Sends `response` (normally a non-2.xx such as 4.04 after DELETE)
    /// without Observe option to every observer of `resource` and removes
    /// them (RFC 7641 §3.2), emitting [`Event::ObservationEnded`] for each.
    pub fn end_observations(&mut self, now: Instant, resource: &str, response: Response) {
        let keys: Vec<ObserverKey> = self
            .by_resource
            .get(resource)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.end_one(now, &key, response.clone());
        }
        self.dispatch(now);
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.transmits.pop_front()
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let outgoing = self.outgoing.values().map(|o| o.deadline);
        let exchanges = self.exchange_order.front().map(|(t, _)| *t);
        let pending = self.pending_order.front().map(|(t, _)| *t);
        let transfers = self.transfers.next_expiry();
        let mids = self.notification_mids.values().map(|(_, t)| *t).min();
        outgoing
            .chain(exchanges)
            .chain(pending)
            .chain(transfers)
            .chain(mids)
            .min()
    }

    /// Retransmits due CON messages, drops observers whose notifications ran
    /// out of retransmissions, and expires caches.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(expires, key)) = self.exchange_order.front() {
            if expires > now {
                break;
            }
            self.exchange_order.pop_front();
            if self.exchanges.get(&key).is_some_and(|e| e.expires <= now) {
                self.exchanges.remove(&key);
            }
        }
        while let Some(&(expires, id)) = self.pending_order.front() {
            if expires > now {
                break;
            }
            self.pending_order.pop_front();
            if self.pending.get(&id).is_some_and(|p| p.expires <= now) {
                if let Some(p) = self.pending.remove(&id) {
                    self.peer_update(p.peer, |peer| peer.pending = peer.pending.saturating_sub(1));
                }
                self.stats.pending_expired += 1;
            }
        }
        self.transfers.expire(now);
        self.notification_mids.retain(|_, (_, t)| *t > now);
        self.notification_order
            .retain(|k| self.notification_mids.contains_key(k));

        let due: Vec<ExchangeKey> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.retransmit(now, key);
        }
        self.dispatch(now);
    }

    /// Number of observers of `resource`.
    pub fn observer_count(&self, resource: &str) -> usize {
        self.by_resource.get(resource).map_or(0, HashSet::len)
    }

    /// Number of clients the endpoint currently keeps state for (observers,
    /// pending requests, outstanding or queued CONs): the bounded peer table.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Monitoring counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    // ---------------------------------------------------------------- input

    /// A datagram above `max_datagram_size`: a CON request whose header and
    /// token are readable gets 4.13 with Size1 (RFC 7252 §5.9.2.9, RFC 7959
    /// §2.9.3) so the client can retry with Block1; the rest is dropped.
    fn on_oversized(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        self.stats.oversized_dropped += 1;
        let [b0, code, hi, lo, ..] = *data else {
            return;
        };
        let tkl = usize::from(b0 & 0x0F);
        let is_con_request = b0 >> 6 == 1 && (b0 >> 4) & 0x3 == 0 && code >> 5 == 0 && code != 0;
        let Some(token) = data.get(4..4 + tkl).filter(|_| tkl <= 8 && is_con_request) else {
            return;
        };
        let mid = u16::from_be_bytes([hi, lo]);
        if let Some(exchange) = self.exchanges.get(&(peer, mid)) {
            if let ExchangeState::Answered(bytes) = &exchange.state {
                self.stats.duplicates += 1;
                self.transmits.push_back((peer, bytes.clone()));
                return;
            }
        }
        self.remember_exchange(now + self.config.exchange_lifetime, (peer, mid));
        let text = format!(
            "a {}-byte datagram exceeds the {}-byte limit; use Block1",
            data.len(),
            self.config.max_datagram_size
        );
        let response = Response::diagnostic(ResponseType::RequestEntityTooLarge, &text);
        let extra = Extra {
            size1: Some(u32::try_from(self.config.max_body_size).unwrap_or(u32::MAX)),
            ..Extra::default()
        };
        let token = token.to_vec();
        self.answer_locally(now, peer, mid, &token, true, &response, extra);
    }

    /// Handles a CON/NON request message (code class 0, detail ≥ 1).
    fn on_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        code: u8,
        confirmable: bool,
        packet: &wire::Message<'_>,
    ) {
        let mid = packet.mid;
        if let Some(exchange) = self.exchanges.get(&(peer, mid)) {
            if exchange.expires > now {
                // §4.5: CON duplicates within EXCHANGE_LIFETIME get the same
                // answer; NON duplicates within NON_LIFETIME are ignored.
                self.stats.duplicates += 1;
                if let (true, ExchangeState::Answered(bytes)) = (confirmable, &exchange.state) {
                    self.transmits.push_back((peer, bytes.clone()));
                }
                return;
            }
        }
        let lifetime = if confirmable {
            self.config.exchange_lifetime
        } else {
            self.config.non_lifetime
        };
        self.remember_exchange(now + lifetime, (peer, mid));
        let token = packet.token.to_vec();

        let parsed = match request::parse(code, packet) {
            Ok(parsed) => parsed,
            Err(error) => {
                if !confirmable && error.rejects_non() {
                    // §5.4.1: a NON with a bad critical option is rejected.
                    self.stats.rejected += 1;
                    self.send_empty(peer, MessageType::Reset, mid);
                    return;
                }
                let response = Response::diagnostic(error.code(), &error.to_string());
                self.answer_locally(
                    now,
                    peer,
                    mid,
                    &token,
                    confirmable,
                    &response,
                    Extra::default(),
                );
                return;
            }
        };

        // RFC 7641 §3.6: GET with Observe=1 and the same token deregisters.
        if parsed.method == Method::Get && parsed.observe == Some(1) {
            self.remove_observer(&(peer, token.clone()));
        }

        let mut payload = Bytes::copy_from_slice(packet.payload);
        let mut block1 = None;
        if let (Some(block), Method::Put | Method::Post) = (parsed.block1, parsed.method) {
            let limits = block1::Limits {
                max_body: self.config.max_body_size,
                max_transfers: self.config.max_block1_transfers,
                max_per_peer: self.config.max_transfers_per_peer,
                lifetime: self.config.exchange_lifetime,
            };
            match self
                .transfers
                .add(now, limits, peer, &parsed, block, packet.payload)
            {
                Ok(Some(body)) => {
                    payload = body;
                    block1 = Some(block);
                }
                Ok(None) => {
                    let continue_ = Response::new(ResponseType::Continue);
                    let extra = Extra {
                        block1: Some(block),
                        ..Extra::default()
                    };
                    self.answer_locally(now, peer, mid, &token, confirmable, &continue_, extra);
                    return;
                }
                Err(error) => {
                    if error.code() == ResponseType::ServiceUnavailable {
                        self.stats.overloaded += 1;
                    }
                    let response = Response::diagnostic(error.code(), &error.to_string());
                    let extra = Extra {
                        size1: error.size1(),
                        ..Extra::default()
                    };
                    self.answer_locally(now, peer, mid, &token, confirmable, &response, extra);
                    return;
                }
            }
        }

        let peer_pending = self.peers.get(&peer).map_or(0, |p| p.pending);
        if self.pending.len() >= self.config.max_pending_requests
            || peer_pending >= self.config.max_pending_per_peer
        {
            self.stats.overloaded += 1;
            let response = Response::diagnostic(ResponseType::ServiceUnavailable, "server busy");
            self.answer_locally(
                now,
                peer,
                mid,
                &token,
                confirmable,
                &response,
                Extra::default(),
            );
            return;
        }

        let id = self.next_request_id;
        self.next_request_id += 1;
        let expires = now + lifetime;
        self.pending.insert(
            id,
            Pending {
                peer,
                mid,
                token,
                confirmable,
                method: parsed.method,
                observe: parsed.observe,
                accept: parsed.accept,
                block2: parsed.block2,
                block1,
                no_response: parsed.no_response,
                expires,
            },
        );
        self.peers.entry(peer).or_default().pending += 1;
        self.pending_order.push_back((expires, id));
        if let Some(exchange) = self.exchanges.get_mut(&(peer, mid)) {
            exchange.state = ExchangeState::Processing;
        }
        self.stats.requests += 1;
        self.events.push_back(Event::Request(Request {
            id,
            peer,
            method: parsed.method,
            path: parsed.path,
            query: parsed.query,
            payload,
            content_format: parsed.content_format,
            accept: parsed.accept,
            observe: parsed.observe,
            etags: parsed.etags,
            if_match: parsed.if_match,
            if_none_match: parsed.if_none_match,
            confirmable,
            block2: parsed.block2,
        }));
    }

    /// Handles an empty ACK: a notification or final response arrived.
    fn on_ack(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let Some(out) = self.take_outgoing(&(peer, mid)) else {
            return; // unknown or superseded MID: ignore (§4.2)
        };
        if let Purpose::Notification(key) = out.purpose {
            let newer = self.observers.get_mut(&key).and_then(|observer| {
                observer.outstanding = None;
                observer.last_con = now;
                observer.newer.take()
            });
            if let Some(response) = newer {
                self.send_notification(now, &key, &response);
            }
        }
    }

    /// Handles an empty RST: the client rejects a notification, CON or NON
    /// (RFC 7641 §3.6).
    fn on_reset(&mut self, peer: SocketAddr, mid: u16) {
        let key = match self.take_outgoing(&(peer, mid)) {
            Some(OutCon {
                purpose: Purpose::Notification(key),
                ..
            }) => Some(key),
            Some(_) => None,
            None => self.notification_mids.remove(&(peer, mid)).map(|(k, _)| k),
        };
        if let Some(key) = key {
            if self.observers.contains_key(&key) {
                self.stats.observers_reset += 1;
                self.remove_observer(&key);
            }
        }
    }

    // --------------------------------------------------------------- output

    /// Registers `key` as an observer of `resource`; false when a cap is
    /// reached (the answer then goes out without Observe, RFC 7641 §4.1).
    fn register(
        &mut self,
        now: Instant,
        key: ObserverKey,
        resource: String,
        accept: Option<u16>,
    ) -> bool {
        if let Some(existing) = self.observers.get_mut(&key) {
            if existing.resource == resource {
                // Same relation renewed: the registration response carries
                // the current value, so a pending newer one is obsolete.
                existing.newer = None;
                existing.accept = accept;
                existing.last_con = now;
                self.stats.observers_registered += 1;
                return true;
            }
            self.remove_observer(&key);
        }
        let mine = self.peers.get(&key.0).map_or(0, |p| p.observers);
        if self.observers.len() >= self.config.max_observers
            || mine >= self.config.max_observers_per_peer
        {
            self.stats.overloaded += 1;
            return false;
        }
        self.by_resource
            .entry(resource.clone())
            .or_default()
            .insert(key.clone());
        self.peers.entry(key.0).or_default().observers += 1;
        self.observers.insert(
            key,
            Observer {
                resource,
                accept,
                outstanding: None,
                newer: None,
                deferred: false,
                last_con: now,
            },
        );
        self.stats.observers_registered += 1;
        true
    }

    /// Removes an observer, cancels its outstanding notification and emits
    /// [`Event::ObservationEnded`]. No-op for unknown keys.
    fn remove_observer(&mut self, key: &ObserverKey) {
        let Some(observer) = self.observers.remove(key) else {
            return;
        };
        if let Some(mid) = observer.outstanding {
            self.take_outgoing(&(key.0, mid));
        }
        self.notification_mids.retain(|_, (owner, _)| owner != key);
        self.peer_update(key.0, |peer| {
            peer.observers = peer.observers.saturating_sub(1);
            peer.queue
                .retain(|d| !matches!(d, Deferred::Notification(k) if k == key));
        });
        let remaining = match self.by_resource.get_mut(&observer.resource) {
            Some(set) => {
                set.remove(key);
                set.len()
            }
            None => 0,
        };
        if remaining == 0 {
            self.by_resource.remove(&observer.resource);
        }
        self.events.push_back(Event::ObservationEnded {
            resource: observer.resource,
            remaining,
        });
    }

    /// Ends one observation with a final CON `response` without Observe
    /// (RFC 7641 §3.2), queued behind NSTART like any CON.
    fn end_one(&mut self, now: Instant, key: &ObserverKey, response: Response) {
        self.remove_observer(key);
        if self.peer_busy(key.0) {
            self.stats.nstart_deferred += 1;
            let peer = self.peers.entry(key.0).or_default();
            // Bounded: one final per former observer; beyond the per-peer
            // observer cap the oldest final is dropped.
            if peer.queue.len() >= self.config.max_observers_per_peer.max(1) {
                peer.queue.pop_front();
            }
            peer.queue
                .push_back(Deferred::Final(key.1.clone(), response));
            return;
        }
        self.send_final(now, key.0, &key.1, &response);
    }

    /// Transmits a final response as CON.
    fn send_final(&mut self, now: Instant, peer: SocketAddr, token: &[u8], response: &Response) {
        let Some(mid) = self.allocate_mid(now) else {
            return;
        };
        let bytes = self.encode(
            MessageType::Confirmable,
            mid,
            token,
            response,
            Extra::default(),
        );
        self.send_con(now, peer, mid, bytes, Purpose::Final);
    }

    /// Sends a fresh notification to one observer: CON or NON by policy;
    /// a CON to a client that already has NSTART CONs outstanding waits.
    fn send_notification(&mut self, now: Instant, key: &ObserverKey, response: &Response) {
        let Some(observer) = self.observers.get(key) else {
            return;
        };
        let con = match self.config.notify {
            NotifyPolicy::Con => true,
            NotifyPolicy::Non => false,
            NotifyPolicy::NonWithPeriodicCon => {
                now >= observer.last_con + self.config.con_notify_interval
            }
        };
        if con && self.peer_busy(key.0) {
            self.stats.nstart_deferred += 1;
            if let Some(observer) = self.observers.get_mut(key) {
                observer.newer = Some(response.clone());
                observer.deferred = true;
            }
            self.peers
                .entry(key.0)
                .or_default()
                .queue
                .push_back(Deferred::Notification(key.clone()));
            return;
        }
        let Some(mid) = self.allocate_mid(now) else {
            return;
        };
        let seq = self.next_observe_seq();
        let mtype = if con {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let bytes = self.encode(
            mtype,
            mid,
            &key.1,
            response,
            Extra {
                observe: Some(seq),
                ..Extra::default()
            },
        );
        self.stats.notifications += 1;
        if con {
            if let Some(observer) = self.observers.get_mut(key) {
                observer.outstanding = Some(mid);
                observer.last_con = now;
            }
            self.send_con(now, key.0, mid, bytes, Purpose::Notification(key.clone()));
        } else {
            self.stats.non_notifications += 1;
            self.remember_notification_mid(
                (key.0, mid),
                key.clone(),
                now + self.config.non_lifetime,
            );
            self.transmits.push_back((key.0, bytes));
        }
    }

    /// Remembers the MID of a notification no longer in `outgoing`, so an
    /// RST to it ends the observation; capped like the exchange cache.
    fn remember_notification_mid(&mut self, mid: ExchangeKey, owner: ObserverKey, until: Instant) {
        while self.notification_mids.len() >= self.config.max_exchanges.max(1) {
            let Some(old) = self.notification_order.pop_front() else {
                break;
            };
            self.notification_mids.remove(&old);
        }
        self.notification_mids.insert(mid, (owner, until));
        self.notification_order.push_back(mid);
    }

    /// Sends what waits in the NSTART queues of peers that became ready.
    fn dispatch(&mut self, now: Instant) {
        while let Some(addr) = self.ready.pop() {
            while !self.peer_busy(addr) {
                let Some(next) = self.peers.get_mut(&addr).and_then(|p| p.queue.pop_front()) else {
                    break;
                };
                match next {
                    Deferred::Notification(key) => {
                        let newer = self.observers.get_mut(&key).and_then(|o| {
                            o.deferred = false;
                            o.newer.take()
                        });
                        if let Some(response) = newer {
                            self.send_notification(now, &key, &response);
                        }
                    }
                    Deferred::Final(token, response) => {
                        self.send_final(now, addr, &token, &response)
                    }
                }
            }
            self.peer_update(addr, |_| {});
        }
    }

    /// Whether `peer` has NSTART CONs outstanding.
    fn peer_busy(&self, peer: SocketAddr) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.outstanding >= self.config.nstart.max(1))
    }

    /// Applies `f` to an existing peer entry and drops the entry when idle.
    fn peer_update(&mut self, addr: SocketAddr, f: impl FnOnce(&mut Peer)) {
        if let Some(peer) = self.peers.get_mut(&addr) {
            f(peer);
            if peer.is_idle() {
                self.peers.remove(&addr);
            }
        }
    }

    /// Removes an outgoing CON, releasing its NSTART slot.
    fn take_outgoing(&mut self, key: &ExchangeKey) -> Option<OutCon> {
        let out = self.outgoing.remove(key)?;
        self.peer_update(key.0, |peer| {
            peer.outstanding = peer.outstanding.saturating_sub(1)
        });
        self.ready.push(key.0);
        Some(out)
    }

    /// Transmits a CON and arms its retransmission timer.
    fn send_con(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        bytes: Bytes,
        purpose: Purpose,
    ) {
        let factor = match self.config.ack_random_factor {
            f if f.is_finite() => f.clamp(1.0, 16.0),
            _ => 1.0,
        };
        let jitter = 1.0 + self.rng.next_f64() * (factor - 1.0);
        let timeout = self.config.ack_timeout.mul_f64(jitter);
        self.transmits.push_back((peer, bytes.clone()));
        self.peers.entry(peer).or_default().outstanding += 1;
        self.outgoing.insert(
            (peer, mid),
            OutCon {
                bytes,
                attempts: 0,
                timeout,
                deadline: now + timeout,
                purpose,
            },
        );
    }

    /// Handles an expired retransmission timer.
    fn retransmit(&mut self, now: Instant, key: ExchangeKey) {
        let Some(mut out) = self.outgoing.remove(&key) else {
            return;
        };
        if out.attempts >= self.config.max_retransmit {
            // Give up: the NSTART slot is free again.
            self.peer_update(key.0, |peer| {
                peer.outstanding = peer.outstanding.saturating_sub(1)
            });
            self.ready.push(key.0);
            if let Purpose::Notification(owner) = out.purpose {
                if self.observers.contains_key(&owner) {
                    self.stats.observers_dropped += 1;
                    if let Some(observer) = self.observers.get_mut(&owner) {
                        observer.outstanding = None;
                    }
                    self.remove_observer(&owner);
                }
            }
            return;
        }
        out.attempts += 1;
        out.timeout *= 2;
        out.deadline = now + out.timeout;
        let mut mid = key.1;
        if let Purpose::Notification(owner) = &out.purpose {
            let newer = self
                .observers
                .get_mut(owner)
                .and_then(|observer| observer.newer.take());
            if let Some(response) = newer {
                // RFC 7641 §4.5.2: retransmit the newest state instead, with a
                // new sequence number, keeping the retransmission counter.
                if let Some(new_mid) = self.allocate_mid(now) {
                    let seq = self.next_observe_seq();
                    out.bytes = self.encode(
                        MessageType::Confirmable,
                        new_mid,
                        &owner.1,
                        &response,
                        Extra {
                            observe: Some(seq),
                            ..Extra::default()
                        },
                    );
                    self.remember_notification_mid(
                        key,
                        owner.clone(),
                        now + self.config.exchange_lifetime,
                    );
                    if let Some(observer) = self.observers.get_mut(owner) {
                        observer.outstanding = Some(new_mid);
                    }
                    mid = new_mid;
                }
            }
        }
        self.stats.retransmissions += 1;
        self.transmits.push_back((key.0, out.bytes.clone()));
        self.outgoing.insert((key.0, mid), out);
    }

    /// Answers a request without involving the driver.
    #[allow(clippy::too_many_arguments)]
    fn answer_locally(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        token: &[u8],
        confirmable: bool,
        response: &Response,
        extra: Extra,
    ) {
        self.stats.answered_locally += 1;
        let (mtype, out_mid) = if confirmable {
            (MessageType::Acknowledgement, mid)
        } else {
            match self.allocate_mid(now) {
                Some(m) => (MessageType::NonConfirmable, m),
                None => {
                    self.finish_exchange(peer, mid, confirmable, None);
                    return;
                }
            }
        };
        let bytes = self.encode(mtype, out_mid, token, response, extra);
        self.finish_exchange(peer, mid, confirmable, Some(bytes));
    }

    /// Sends an answer and records it for duplicates of a CON.
    fn finish_exchange(
        &mut self,
        peer: SocketAddr,
        mid: u16,
        confirmable: bool,
        bytes: Option<Bytes>,
    ) {
        if let Some(exchange) = self.exchanges.get_mut(&(peer, mid)) {
            exchange.state = match (&bytes, confirmable) {
                (Some(b), true) => ExchangeState::Answered(b.clone()),
                _ => ExchangeState::Seen,
            };
        }
        if let Some(bytes) = bytes {
            self.transmits.push_back((peer, bytes));
        }
    }

    /// Records an exchange for deduplication, evicting the oldest at the cap.
    fn remember_exchange(&mut self, expires: Instant, key: ExchangeKey) {
        while self.exchanges.len() >= self.config.max_exchanges.max(1) {
            let Some((old_expiry, old)) = self.exchange_order.pop_front() else {
                break;
            };
            if self
                .exchanges
                .get(&old)
                .is_some_and(|e| e.expires == old_expiry)
            {
                self.exchanges.remove(&old);
            }
        }
        self.exchanges.insert(
            key,
            Exchange {
                expires,
                state: ExchangeState::Seen,
            },
        );
        self.exchange_order.push_back((expires, key));
    }

    /// Queues an Empty ACK or RST.
    fn send_empty(&mut self, peer: SocketAddr, mtype: MessageType, mid: u16) {
        self.transmits
            .push_back((peer, Bytes::from(wire::empty(mtype, mid))));
    }

    /// Allocates a message ID not used within EXCHANGE_LIFETIME (RFC 7252 §4.4).
    fn allocate_mid(&mut self, now: Instant) -> Option<u16> {
        let mid = self.next_mid;
        let block = usize::from(mid >> 12);
        if block != self.current_mid_block {
            if let Some(last) = self.mid_block_used[block] {
                if now < last + self.config.exchange_lifetime {
                    self.stats.message_ids_exhausted += 1;
                    return None;
                }
            }
            self.current_mid_block = block;
        }
        self.mid_block_used[block] = Some(now);
        self.next_mid = mid.wrapping_add(1);
        Some(mid)
    }

    /// Next Observe value, masked to 24 bits (RFC 7641 §3.4).
    fn next_observe_seq(&mut self) -> u32 {
        let seq = self.next_observe & 0x00FF_FFFF;
        self.next_observe = self.next_observe.wrapping_add(1);
        seq
    }

    /// Encodes a response within the datagram limits, counting oversize.
    fn encode(
        &mut self,
        mtype: MessageType,
        mid: u16,
        token: &[u8],
        response: &Response,
        extra: Extra,
    ) -> Bytes {
        let limits = Limits {
            szx: self.szx,
            max_message_size: self.config.max_message_size,
        };
        let (bytes, oversized) = encode::response(limits, mtype, mid, token, response, extra);
        if oversized {
            self.stats.oversized_responses += 1;
        }
        bytes
    }
}

/// The diagnostic of a final 4.06 notification.
pub(crate) fn not_acceptable(accept: u16, format: Option<u16>) -> String {
    match format {
        Some(cf) => format!("the value is now Content-Format {cf}; the observer accepts {accept}"),
        None => format!("the value now has no Content-Format; the observer accepts {accept}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7641_3_4_observe_sequence_is_masked_to_24_bits() {
        let mut endpoint = Endpoint::new(Config::default());
        endpoint.next_observe = 0x00FF_FFFF;
        assert_eq!(endpoint.next_observe_seq(), 0x00FF_FFFF);
        assert_eq!(endpoint.next_observe_seq(), 0);
    }
}
