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

/// Entries an expiry queue may hold beyond twice what it tracks before its stale ones
/// (answered, evicted, replaced) are dropped: compaction then runs at most once per this
/// many pushes.
const COMPACT_SLACK: usize = 64;

/// Drop the entries of `queue` that `live` no longer wants once they outnumber the `tracked`
/// ones it stands for (O(1) amortized per push): an entry whose request was answered or
/// whose exchange was evicted would otherwise stay until its expiry, an exchange lifetime.
fn compact<T>(queue: &mut VecDeque<T>, tracked: usize, live: impl FnMut(&T) -> bool) {
    if queue.len() > 2 * tracked + COMPACT_SLACK {
        queue.retain(live);
    }
}

mod inbound;
mod observe;
mod transmit;

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
    /// Being handled (by the endpoint, then the driver), not answered yet:
    /// duplicates are swallowed.
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
    token: wire::Token,
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
        let mut observe_seq = None;
        if p.method == Method::Get && p.observe == Some(0) {
            let key: ObserverKey = (p.peer, p.token.to_vec());
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
        let keys = self.observers_of(resource);
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

    /// The observers of `resource` now (a copy: answering one may end it).
    fn observers_of(&self, resource: &str) -> Vec<ObserverKey> {
        self.by_resource
            .get(resource)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Sends `response` (normally a non-2.xx such as 4.04 after DELETE)
    /// without Observe option to every observer of `resource` and removes
    /// them (RFC 7641 §3.2), emitting [`Event::ObservationEnded`] for each.
    pub fn end_observations(&mut self, now: Instant, resource: &str, response: Response) {
        let keys = self.observers_of(resource);
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

    /// Entries kept to expire or evict exchanges, pending requests and notification
    /// MIDs in order: bounded by the caps of what they track (`max_exchanges`,
    /// `max_pending_requests`), however many requests were answered.
    pub fn expiry_entries(&self) -> usize {
        self.exchange_order.len() + self.pending_order.len() + self.notification_order.len()
    }

    /// Monitoring counters.
    pub fn stats(&self) -> Stats {
        self.stats
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
