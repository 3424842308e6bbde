//! The sans-IO CoAP server endpoint: RFC 7252 message layer, RFC 7641
//! observe and RFC 7959 block-wise transfer.
//!
//! Driving loop: feed every received datagram to
//! [`Endpoint::handle_datagram`], drain [`Endpoint::poll_event`] (answer each
//! [`Event::Request`] with [`Endpoint::respond`]) and
//! [`Endpoint::poll_transmit`], and call [`Endpoint::handle_timeout`] when
//! [`Endpoint::poll_timeout`] is reached. Store changes go out through
//! [`Endpoint::notify`] and [`Endpoint::end_observations`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, ResponseType};

use crate::config::Config;
use crate::request::{self, is_success, BlockOption, Method, Parsed, Request, RequestId, Response};
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
    /// Datagrams that were not well-formed CoAP (RFC 7252 §3/§4.2).
    pub malformed_dropped: u64,
    /// Well-formed messages rejected or ignored (response codes in CON/NON,
    /// reserved classes, bad critical options in NON requests).
    pub rejected: u64,
    /// Empty CON pings answered with RST.
    pub pings: u64,
    /// Duplicate requests (same peer and message ID within the lifetime).
    pub duplicates: u64,
    /// Requests handed to the driver.
    pub requests: u64,
    /// Requests the endpoint answered itself (4.02, 4.05, 2.31, 4.08, ...).
    pub answered_locally: u64,
    /// Requests refused with 5.03 because a cap was reached.
    pub overloaded: u64,
    /// `respond` calls for unknown or expired request ids.
    pub late_responses: u64,
    /// Requests dropped because the driver did not answer within the lifetime.
    pub pending_expired: u64,
    /// CON retransmissions sent.
    pub retransmissions: u64,
    /// Notifications sent (first transmissions).
    pub notifications: u64,
    /// Observers registered (including replacements).
    pub observers_registered: u64,
    /// Observers dropped because a notification was never acknowledged.
    pub observers_dropped: u64,
    /// Observers removed by an RST from the client.
    pub observers_reset: u64,
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
/// Key of a Block1 transfer: peer, Request-Tag values and Uri-Path.
type TransferKey = (SocketAddr, Vec<Vec<u8>>, Vec<String>);

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
    /// MID of the unacknowledged CON notification, if any (§4.5.2 allows one).
    outstanding: Option<u16>,
    /// Newest value that arrived while a notification was outstanding; it
    /// replaces the old one at the next retransmission.
    newer: Option<Response>,
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

/// An upload being reassembled from Block1 requests.
#[derive(Debug)]
struct Transfer {
    /// The bytes received so far, in order.
    body: Vec<u8>,
    /// Dropped when the client stalls for this long.
    expires: Instant,
}

/// A block to cut out of a response.
#[derive(Debug, Clone, Copy)]
struct Slice {
    /// Block number in units of `2^(szx+4)`.
    num: u32,
    /// Size exponent actually used.
    szx: u8,
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
    /// MIDs of notifications replaced by newer values: an RST to them still
    /// cancels the observation (RFC 7641 §3.6). Value: owner and expiry.
    superseded: HashMap<ExchangeKey, (ObserverKey, Instant)>,
    /// Block1 reassembly state.
    transfers: HashMap<TransferKey, Transfer>,
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
        let size = config.block_size.clamp(16, 1024);
        let szx = (usize::BITS - 1 - size.leading_zeros()) as u8 - 4;
        Self {
            config,
            szx,
            rng,
            next_mid,
            mid_block_used: [None; 16],
            current_mid_block: usize::from(next_mid >> 12),
            next_request_id: 1,
            next_observe: 2,
            exchanges: HashMap::new(),
            exchange_order: VecDeque::new(),
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            observers: HashMap::new(),
            by_resource: HashMap::new(),
            outgoing: HashMap::new(),
            superseded: HashMap::new(),
            transfers: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Processes one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
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
        let mid = packet.header.message_id;
        let code = data.get(1).copied().unwrap_or(0);
        let mtype = packet.header.get_type();
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
        let key: ObserverKey = (p.peer, p.token.clone());
        let mut observe_seq = None;
        if p.method == Method::Get && p.observe == Some(0) {
            match observe {
                Some(resource) if is_success(response.code) => {
                    if self.register(key, resource) {
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
            Some(self.encode_response(
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
    }

    /// Sends `response` as a CON notification to every observer of
    /// `resource`, each with its token and a new Observe number. An observer
    /// with an unacknowledged notification gets the newest value at the next
    /// retransmission instead (RFC 7641 §4.5.2). A non-2.xx `response` ends
    /// the observations as [`Endpoint::end_observations`] does.
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
            if observer.outstanding.is_some() {
                observer.newer = Some(response.clone());
            } else {
                self.send_notification(now, &key, &response);
            }
        }
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
            self.remove_observer(&key);
            let Some(mid) = self.allocate_mid(now) else {
                continue;
            };
            let bytes = self.encode_response(
                MessageType::Confirmable,
                mid,
                &key.1,
                &response,
                Extra::default(),
            );
            self.send_con(now, key.0, mid, bytes, Purpose::Final);
        }
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
        let transfers = self.transfers.values().map(|t| t.expires);
        let superseded = self.superseded.values().map(|(_, t)| *t);
        outgoing
            .chain(exchanges)
            .chain(pending)
            .chain(transfers)
            .chain(superseded)
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
                self.pending.remove(&id);
                self.stats.pending_expired += 1;
            }
        }
        self.transfers.retain(|_, t| t.expires > now);
        self.superseded.retain(|_, (_, t)| *t > now);

        let due: Vec<ExchangeKey> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.retransmit(now, key);
        }
    }

    /// Number of observers of `resource`.
    pub fn observer_count(&self, resource: &str) -> usize {
        self.by_resource.get(resource).map_or(0, HashSet::len)
    }

    /// Monitoring counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    // ---------------------------------------------------------------- input

    /// Handles a CON/NON request message (code class 0, detail ≥ 1).
    fn on_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        code: u8,
        confirmable: bool,
        packet: &coap_lite::Packet,
    ) {
        let mid = packet.header.message_id;
        if let Some(exchange) = self.exchanges.get(&(peer, mid)) {
            if exchange.expires > now {
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
        let token = packet.get_token().to_vec();

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

        let mut payload = Bytes::copy_from_slice(&packet.payload);
        let mut block1 = None;
        if let (Some(block), Method::Put | Method::Post) = (parsed.block1, parsed.method) {
            match self.reassemble(now, peer, &parsed, block, payload) {
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
                    let response = Response::diagnostic(error.code(), &error.to_string());
                    let extra = Extra {
                        size1: match error {
                            Block1Error::TooLarge { max, .. } => {
                                Some(u32::try_from(max).unwrap_or(u32::MAX))
                            }
                            _ => None,
                        },
                        ..Extra::default()
                    };
                    self.answer_locally(now, peer, mid, &token, confirmable, &response, extra);
                    return;
                }
            }
        }

        if self.pending.len() >= self.config.max_pending_requests {
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
                block2: parsed.block2,
                block1,
                no_response: parsed.no_response,
                expires,
            },
        );
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

    /// Adds one Block1 block to its transfer (RFC 7959 §2.5). Returns the
    /// whole body after the last block, `None` while more are expected, or
    /// the error answer.
    fn reassemble(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        parsed: &Parsed,
        block: BlockOption,
        payload: Bytes,
    ) -> Result<Option<Bytes>, Block1Error> {
        let max = self.config.max_body_size;
        let key: TransferKey = (peer, parsed.request_tag.clone(), parsed.path.clone());
        if let Some(announced) = parsed.size1.filter(|s| *s as usize > max) {
            self.transfers.remove(&key);
            return Err(Block1Error::TooLarge {
                size: announced as usize,
                max,
            });
        }
        if block.num == 0 {
            if !self.transfers.contains_key(&key)
                && self.transfers.len() >= self.config.max_block1_transfers
            {
                self.stats.overloaded += 1;
                return Err(Block1Error::TooManyTransfers {
                    max: self.config.max_block1_transfers,
                });
            }
            self.transfers.insert(
                key.clone(),
                Transfer {
                    body: Vec::new(),
                    expires: now,
                },
            );
        }
        let Some(transfer) = self.transfers.get_mut(&key) else {
            return Err(Block1Error::NoTransfer { num: block.num });
        };
        let offset = block.num as usize * block.size();
        let received = transfer.body.len();
        let error = if offset != received {
            Some(Block1Error::Gap { offset, received })
        } else if block.more && payload.len() != block.size() {
            Some(Block1Error::ShortBlock {
                len: payload.len(),
                size: block.size(),
            })
        } else if received + payload.len() > max {
            Some(Block1Error::TooLarge {
                size: received + payload.len(),
                max,
            })
        } else {
            None
        };
        if let Some(error) = error {
            self.transfers.remove(&key);
            return Err(error);
        }
        transfer.body.extend_from_slice(&payload);
        transfer.expires = now + self.config.exchange_lifetime;
        if block.more {
            return Ok(None);
        }
        Ok(self.transfers.remove(&key).map(|t| Bytes::from(t.body)))
    }

    /// Handles an empty ACK: a notification or final response arrived.
    fn on_ack(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let Some(out) = self.outgoing.remove(&(peer, mid)) else {
            return; // unknown or superseded MID: ignore (§4.2)
        };
        if let Purpose::Notification(key) = out.purpose {
            let newer = self.observers.get_mut(&key).and_then(|observer| {
                observer.outstanding = None;
                observer.newer.take()
            });
            if let Some(response) = newer {
                self.send_notification(now, &key, &response);
            }
        }
    }

    /// Handles an empty RST: the client rejects a notification (RFC 7641 §3.6).
    fn on_reset(&mut self, peer: SocketAddr, mid: u16) {
        let key = match self.outgoing.remove(&(peer, mid)) {
            Some(OutCon {
                purpose: Purpose::Notification(key),
                ..
            }) => Some(key),
            Some(_) => None,
            None => self.superseded.remove(&(peer, mid)).map(|(key, _)| key),
        };
        if let Some(key) = key {
            if self.observers.contains_key(&key) {
                self.stats.observers_reset += 1;
                self.remove_observer(&key);
            }
        }
    }

    // --------------------------------------------------------------- output

    /// Registers `key` as an observer of `resource`; false when the cap is
    /// reached (the answer then goes out without Observe).
    fn register(&mut self, key: ObserverKey, resource: String) -> bool {
        if let Some(existing) = self.observers.get_mut(&key) {
            if existing.resource == resource {
                // Same relation renewed: the registration response carries
                // the current value, so a pending newer one is obsolete.
                existing.newer = None;
                self.stats.observers_registered += 1;
                return true;
            }
            self.remove_observer(&key);
        }
        if self.observers.len() >= self.config.max_observers {
            self.stats.overloaded += 1;
            return false;
        }
        self.by_resource
            .entry(resource.clone())
            .or_default()
            .insert(key.clone());
        self.observers.insert(
            key,
            Observer {
                resource,
                outstanding: None,
                newer: None,
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
            self.outgoing.remove(&(key.0, mid));
        }
        self.superseded.retain(|_, (owner, _)| owner != key);
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

    /// Sends a fresh CON notification to one observer.
    fn send_notification(&mut self, now: Instant, key: &ObserverKey, response: &Response) {
        let Some(mid) = self.allocate_mid(now) else {
            return;
        };
        let seq = self.next_observe_seq();
        let bytes = self.encode_response(
            MessageType::Confirmable,
            mid,
            &key.1,
            response,
            Extra {
                observe: Some(seq),
                ..Extra::default()
            },
        );
        if let Some(observer) = self.observers.get_mut(key) {
            observer.outstanding = Some(mid);
        }
        self.stats.notifications += 1;
        self.send_con(now, key.0, mid, bytes, Purpose::Notification(key.clone()));
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
            if let Purpose::Notification(owner) = out.purpose {
                if self.observers.contains_key(&owner) {
                    self.stats.observers_dropped += 1;
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
                    out.bytes = self.encode_response(
                        MessageType::Confirmable,
                        new_mid,
                        &owner.1,
                        &response,
                        Extra {
                            observe: Some(seq),
                            ..Extra::default()
                        },
                    );
                    self.superseded
                        .insert(key, (owner.clone(), now + self.config.exchange_lifetime));
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
        let bytes = self.encode_response(mtype, out_mid, token, response, extra);
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

    /// Encodes a response message, applying Block2 when the payload exceeds
    /// the block size or the client asked for a block. Never truncates: what
    /// does not fit `max_message_size` becomes a 5.00 diagnostic.
    fn encode_response(
        &mut self,
        mtype: MessageType,
        mid: u16,
        token: &[u8],
        response: &Response,
        extra: Extra,
    ) -> Bytes {
        let code = match response.code {
            ResponseType::UnKnown => ResponseType::InternalServerError,
            code => code,
        };
        let total = response.payload.len();
        let our_size = 1usize << (self.szx + 4);
        let slice = match extra.block2 {
            // Early negotiation / follow-up: the client may only lower the size;
            // if we lower it, the block number is rescaled to the same offset.
            Some(asked) if is_success(code) || total > our_size => {
                let szx = asked.szx.min(self.szx);
                let num = asked.num << (asked.szx - szx);
                Some(Slice { num, szx })
            }
            _ if total > our_size => Some(Slice {
                num: 0,
                szx: self.szx,
            }),
            _ => None,
        };
        let mut packet = wire::packet(mtype, MessageClass::Response(code), mid, token);
        let mut payload = &response.payload[..];
        if let Some(slice) = slice {
            let size = 1usize << (slice.szx + 4);
            let start = slice.num as usize * size;
            if start >= total && !(start == 0 && total == 0) {
                let text = format!("Block2 NUM {} is beyond the {total}-byte body", slice.num);
                let error = Response::diagnostic(ResponseType::BadOption, &text);
                return self.encode_response(mtype, mid, token, &error, Extra::default());
            }
            let end = (start + size).min(total);
            payload = &response.payload[start..end];
            let etag = match &response.etag {
                Some(etag) => etag.clone(),
                None => fnv1a(&response.payload).to_be_bytes().to_vec(),
            };
            if (1..=8).contains(&etag.len()) {
                packet.add_option(CoapOption::ETag, etag);
            }
            let block = BlockOption {
                num: slice.num,
                more: end < total,
                szx: slice.szx,
            };
            wire::add_uint(&mut packet, CoapOption::Block2, block.value());
            wire::add_uint(
                &mut packet,
                CoapOption::Size2,
                u32::try_from(total).unwrap_or(u32::MAX),
            );
        } else if let Some(etag) = response
            .etag
            .as_ref()
            .filter(|e| (1..=8).contains(&e.len()))
        {
            packet.add_option(CoapOption::ETag, etag.clone());
        }
        if let Some(seq) = extra.observe {
            wire::add_uint(&mut packet, CoapOption::Observe, seq & 0x00FF_FFFF);
        }
        for segment in &response.location_path {
            packet.add_option(CoapOption::LocationPath, segment.as_bytes().to_vec());
        }
        if let Some(cf) = response.content_format {
            wire::add_uint(&mut packet, CoapOption::ContentFormat, u32::from(cf));
        }
        if let Some(max_age) = response.max_age {
            wire::add_uint(&mut packet, CoapOption::MaxAge, max_age);
        }
        if let Some(block1) = extra.block1 {
            wire::add_uint(&mut packet, CoapOption::Block1, block1.value());
        }
        if let Some(size1) = extra.size1 {
            wire::add_uint(&mut packet, CoapOption::Size1, size1);
        }
        packet.payload = payload.to_vec();
        match packet.to_bytes_unlimited() {
            Ok(bytes) if bytes.len() <= self.config.max_message_size => Bytes::from(bytes),
            _ => {
                self.stats.oversized_responses += 1;
                let mut fallback = wire::packet(
                    mtype,
                    MessageClass::Response(ResponseType::InternalServerError),
                    mid,
                    token,
                );
                fallback.payload = b"response too large".to_vec();
                // 4 + 8 + 1 + 18 bytes: always encodable.
                Bytes::from(fallback.to_bytes_unlimited().unwrap_or_default())
            }
        }
    }
}

/// Message-specific options added to an encoded response.
#[derive(Debug, Clone, Copy, Default)]
struct Extra {
    /// Observe sequence number (registration responses and notifications).
    observe: Option<u32>,
    /// The block the client asked for.
    block2: Option<Slice>,
    /// Block1 echo for 2.31 Continue and the final upload response.
    block1: Option<BlockOption>,
    /// Size1 for 4.13 (the largest acceptable body).
    size1: Option<u32>,
}

/// Why a Block1 upload step is refused (RFC 7959 §2.5, §2.9). The
/// `Display` text is the diagnostic payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Block1Error {
    /// The body (announced by Size1 or accumulated) exceeds the cap → 4.13 + Size1.
    #[error("request body of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced or accumulated size.
        size: usize,
        /// `Config::max_body_size`.
        max: usize,
    },
    /// A block with NUM > 0 but no transfer in progress → 4.08.
    #[error("Block1 NUM {num} without an upload in progress")]
    NoTransfer {
        /// The received block number.
        num: u32,
    },
    /// A block that does not continue where the last one ended → 4.08.
    #[error("Block1 starts at byte {offset}, expected {received}")]
    Gap {
        /// Offset the received block starts at.
        offset: usize,
        /// Bytes received so far.
        received: usize,
    },
    /// A non-final block shorter or longer than its size → 4.00.
    #[error("Block1 with M=1 carries {len} bytes, not its block size {size}")]
    ShortBlock {
        /// Received payload length.
        len: usize,
        /// Size announced by SZX.
        size: usize,
    },
    /// The reassembly table is full → 5.03.
    #[error("too many concurrent uploads (limit {max})")]
    TooManyTransfers {
        /// `Config::max_block1_transfers`.
        max: usize,
    },
}

impl Block1Error {
    /// The response code for this error.
    fn code(&self) -> ResponseType {
        match self {
            Self::TooLarge { .. } => ResponseType::RequestEntityTooLarge,
            Self::NoTransfer { .. } | Self::Gap { .. } => ResponseType::RequestEntityIncomplete,
            Self::ShortBlock { .. } => ResponseType::BadRequest,
            Self::TooManyTransfers { .. } => ResponseType::ServiceUnavailable,
        }
    }
}

/// Whether RFC 7967 No-Response suppresses a response with `code`.
fn suppressed(mask: u8, code: ResponseType) -> bool {
    let class = u8::from(MessageClass::Response(code)) >> 5;
    match class {
        2 => mask & 0x02 != 0,
        4 => mask & 0x08 != 0,
        5 => mask & 0x10 != 0,
        _ => false,
    }
}

/// FNV-1a 64-bit hash: a stable ETag for block-wise bodies without one.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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

    #[test]
    fn rfc7959_2_2_block_size_is_clamped_to_a_power_of_two() {
        for (size, szx) in [(1024, 6), (5000, 6), (700, 5), (16, 0), (1, 0)] {
            let endpoint = Endpoint::new(Config {
                block_size: size,
                ..Config::default()
            });
            assert_eq!(endpoint.szx, szx, "block_size {size}");
        }
    }
}
