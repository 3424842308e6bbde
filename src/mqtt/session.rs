//! MQTT sessions: what outlives a connection (v3 Clean Session 0, v5 Session Expiry > 0).
//!
//! A session owns the client's [`Mailbox`] (so messages keep arriving while the client is
//! away), its subscriptions, and the protocol state of unfinished QoS 1/2 exchanges. The
//! registry maps client ids to sessions; a connection *owns* a session by holding its
//! `owner` lock for its whole life, which is how a takeover (MQTT-3.1.4-2) waits for the old
//! connection to hand the session over before the new one resumes it.
//!
//! Persistent sessions are durable when the broker has a session store
//! ([`crate::broker::queue`]): their mailbox is registered there (so QoS 1/2 deliveries are
//! appended to disk before the publisher is acknowledged), their record (subscriptions
//! with options, expiry, when the client went away) is rewritten on every change, and
//! their protocol state (unfinished exchanges, inbound QoS 2 ids) while connected by
//! [`Session::sync_state`], awaited where the next packets depend on it. At start,
//! [`Registry::restore`] rebuilds them before any listener accepts.
//!
//! Expiry (MQTT 5 §3.1.2.11, and `[mqtt] session_expiry_secs` for 3.1.1): a session whose
//! client is away longer than its expiry interval is ended by [`Registry::expire`], run
//! every second by the front-end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use ponte_mqtt::{Connection, Inflight, SessionState};
use tokio::sync::Notify;

use crate::broker::budget::Budget;
use crate::broker::mailbox::{Mailbox, OverflowPolicy};
use crate::broker::queue::Durable;
use crate::broker::trie::SubOptions;
use crate::broker::Broker;
use crate::broker::Delivery;
use crate::model::{Message, Origin};
use crate::model::{TopicFilter, TopicName};
use crate::store::session::{
    QueuedRecord, SessionOp, SessionRecord, StoredInflight, StoredState, StoredSubscription,
};

fn to_wire(q: crate::model::QoS) -> ponte_mqtt::QoS {
    use crate::model::QoS;
    match q {
        QoS::AtMostOnce => ponte_mqtt::QoS::AtMostOnce,
        QoS::AtLeastOnce => ponte_mqtt::QoS::AtLeastOnce,
        QoS::ExactlyOnce => ponte_mqtt::QoS::ExactlyOnce,
    }
}

/// Session Expiry Interval meaning "never expires" (MQTT 5 §3.1.2.11.2: 0xFFFFFFFF).
pub const NEVER: u32 = u32::MAX;

/// One client's session.
#[derive(Debug)]
pub struct Session {
    /// The client identifier it belongs to.
    pub client_id: String,
    /// The client id shared with durable-queue ops (one allocation per session).
    pub key: Arc<str>,
    /// Whether it was opened to outlive the connection (expiry > 0): decides whether its
    /// mailbox is durable.
    pub persistent: bool,
    /// Seconds the session lives on once the client is away: 0 ends it at disconnect,
    /// [`NEVER`] keeps it. A v5 DISCONNECT may change it.
    pub expiry: AtomicU32,
    /// When an away session ends; `None` while connected or when it never expires.
    pub expires_at: Mutex<Option<Instant>>,
    /// When the client went away (wall clock), `None` while connected: stored, so the
    /// expiry keeps counting across a restart.
    pub away_since: Mutex<Option<SystemTime>>,
    /// Where the broker queues the client's messages, online or away.
    pub mailbox: Arc<Mailbox>,
    /// The client's subscriptions with their options: to remove them from the index when
    /// the session ends, to count them against `max_subscriptions`, and to persist them.
    pub subscriptions: Mutex<HashMap<TopicFilter, SubOptions>>,
    /// Unfinished QoS 1/2 exchanges saved by the last connection, resumed by the next.
    pub saved: Mutex<Option<SessionState>>,
    /// Outgoing packet id → durable queue sequence number of the message in flight under
    /// it: the entry is removed once the exchange is over (PUBACK / PUBCOMP).
    pub inflight_seqs: Mutex<HashMap<u16, u64>>,
    /// The protocol state as last handed to the session writer, so an unchanged state is
    /// not written again and a change can be classified (does it need to be durable before
    /// the packets that follow from it go out?).
    pub written_state: Mutex<Option<Arc<StoredState>>>,
    /// Held by the connection that owns the session, for its whole life.
    pub owner: Arc<tokio::sync::Mutex<()>>,
    /// The owning connection's takeover bell: rung to make it close (MQTT-3.1.4-2). Each
    /// connection installs its own, so a ring meant for an old connection can never be
    /// left behind for the next one.
    pub kick: Mutex<Option<Arc<Notify>>>,
    /// Who is connected to it right now (client id, username, TLS identity, address), for
    /// [`Registry::connected`]; `None` while the client is away.
    pub connection: Mutex<Option<super::ClientInfo>>,
}

impl Session {
    fn new(client_id: String, expiry: u32, mailbox: Arc<Mailbox>) -> Arc<Self> {
        Arc::new(Session {
            key: Arc::from(client_id.as_str()),
            client_id,
            persistent: expiry > 0,
            expiry: AtomicU32::new(expiry),
            expires_at: Mutex::new(None),
            away_since: Mutex::new(None),
            mailbox,
            subscriptions: Mutex::new(HashMap::new()),
            saved: Mutex::new(None),
            inflight_seqs: Mutex::new(HashMap::new()),
            written_state: Mutex::new(None),
            owner: Arc::new(tokio::sync::Mutex::new(())),
            kick: Mutex::new(None),
            connection: Mutex::new(None),
        })
    }

    /// Ask the connection that owns this session, if any, to close.
    pub fn kick_owner(&self) {
        if let Some(bell) = self.kick.lock().take() {
            bell.notify_one();
        }
    }

    /// Remove every subscription of this session from the broker.
    pub fn unsubscribe_all(&self, broker: &Broker) {
        let subs = std::mem::take(&mut *self.subscriptions.lock());
        for filter in subs.keys() {
            broker.unsubscribe(filter, self.mailbox.id());
        }
    }

    /// The session record as stored: expiry, when the client went away, subscriptions.
    fn record(&self) -> SessionRecord {
        let subscriptions = self
            .subscriptions
            .lock()
            .iter()
            .map(|(f, o)| StoredSubscription {
                filter: f.as_str().to_owned(),
                qos: o.qos,
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                id: o.id,
            })
            .collect();
        SessionRecord {
            expiry: self.expiry.load(Ordering::Relaxed),
            away_since: *self.away_since.lock(),
            subscriptions,
        }
    }

    /// The protocol state as stored, from a connection's (or a saved session's) outgoing
    /// exchanges and inbound QoS 2 ids.
    fn state_of<'a>(
        &self,
        outgoing: impl Iterator<Item = &'a Inflight>,
        inbound_qos2: impl Iterator<Item = u16>,
        next_pkid: u16,
    ) -> StoredState {
        let seqs = self.inflight_seqs.lock();
        let outgoing = outgoing
            .map(|i| {
                let pkid = i.pkid();
                StoredInflight {
                    pkid,
                    seq: seqs.get(&pkid).copied().unwrap_or(0),
                    released: matches!(i, Inflight::PubRel { .. }),
                }
            })
            .collect();
        let mut inbound_qos2: Vec<u16> = inbound_qos2.collect();
        inbound_qos2.sort_unstable();
        inbound_qos2.dedup();
        StoredState {
            next_pkid,
            outgoing,
            inbound_qos2,
        }
    }

    /// Whether this session's state goes to disk (persistent, and the broker has a store).
    pub fn is_durable(&self, broker: &Broker) -> bool {
        self.persistent && broker.queue().is_some()
    }

    /// Write the session's record, and the protocol state saved by the last connection if
    /// there is one (nobody waits: the ops are ordered before any later publish's appends,
    /// which are awaited). No-op for non-durable sessions.
    pub fn persist(&self, broker: &Broker) {
        self.write(broker, false);
    }

    /// [`Session::persist`], returning the receipt to await before acknowledging what
    /// changed (CONNACK, SUBACK, UNSUBACK), so an acknowledged session or subscription
    /// survives `kill -9`; `None` for a session that is not persisted.
    pub fn persist_durable(&self, broker: &Broker) -> Option<Durable> {
        self.write(broker, true)
    }

    /// [`Session::persist`], returning the receipt of the batch holding the writes.
    fn write(&self, broker: &Broker, wait: bool) -> Option<Durable> {
        if !self.persistent {
            return None;
        }
        let q = broker.queue()?;
        let state = self.saved.lock().as_ref().map(|s| {
            Arc::new(self.state_of(
                s.outgoing.iter(),
                s.inbound_qos2.iter().copied(),
                s.next_pkid,
            ))
        });
        let record = SessionOp::PutSession(self.key.clone(), Arc::new(self.record()));
        match state {
            None => q.submit(record, wait),
            Some(state) => {
                q.submit(record, false);
                *self.written_state.lock() = Some(state.clone());
                // Batches are applied in order: this one durable means both are.
                q.submit(SessionOp::PutState(self.key.clone(), state), wait)
            }
        }
    }

    /// Bring the stored protocol state up to date with the live connection: called once per
    /// turn of the connection loop, after its events were handled and before anything it
    /// wrote goes out. `unrecorded_qos2` are inbound QoS 2 ids the broker has handled
    /// whose PUBREC waits for this write.
    ///
    /// Returns the receipt to await *before* the connection's pending output is written
    /// when the change must be durable first: an inbound QoS 2 id recorded (its PUBREC
    /// follows) or released (PUBCOMP: the client may reuse the id at once), an outgoing
    /// QoS 2 PUBLISH sent (re-sent after a crash as a new message it would be delivered
    /// twice) or moved to PUBREL. QoS 1 sends and every acknowledgement ride along
    /// unawaited (after a crash they cost at most a duplicate QoS 1 delivery, which QoS 1
    /// allows). `None` when nothing changed, nothing needs waiting, or the session is not
    /// durable.
    pub fn sync_state(
        &self,
        broker: &Broker,
        conn: &Connection,
        unrecorded_qos2: &[u16],
    ) -> Option<Durable> {
        if !self.persistent {
            return None;
        }
        let q = broker.queue()?;
        let state = self.state_of(
            conn.outgoing(),
            conn.inbound_qos2().chain(unrecorded_qos2.iter().copied()),
            conn.next_pkid(),
        );
        let mut written = self.written_state.lock();
        let empty = StoredState::default();
        let prev = written.as_deref().unwrap_or(&empty);
        if prev.outgoing == state.outgoing && prev.inbound_qos2 == state.inbound_qos2 {
            return None;
        }
        let mut wait = prev.inbound_qos2 != state.inbound_qos2;
        let any_qos2 = || {
            conn.outgoing().any(|i| match i {
                Inflight::Publish { message, .. } => message.qos == ponte_mqtt::QoS::ExactlyOnce,
                Inflight::PubRel { .. } => true,
            })
        };
        if !wait && any_qos2() {
            let before: std::collections::HashSet<(u16, bool)> =
                prev.outgoing.iter().map(|o| (o.pkid, o.released)).collect();
            wait = conn.outgoing().any(|i| {
                let stage = matches!(i, Inflight::PubRel { .. });
                let qos2 = match i {
                    Inflight::Publish { message, .. } => {
                        message.qos == ponte_mqtt::QoS::ExactlyOnce
                    }
                    Inflight::PubRel { .. } => true,
                };
                qos2 && !before.contains(&(i.pkid(), stage))
            });
        }
        let state = Arc::new(state);
        *written = Some(state.clone());
        drop(written);
        q.submit(SessionOp::PutState(self.key.clone(), state), wait)
    }

    /// Record that the durable message `seq` went out under packet id `pkid`.
    pub fn sent_durable(&self, pkid: u16, seq: u64) {
        self.inflight_seqs.lock().insert(pkid, seq);
    }

    /// Forget the durable entries of exchanges no longer in flight (`in_flight` are the
    /// connection's outgoing packet ids).
    pub fn acknowledged(&self, broker: &Broker, in_flight: impl Iterator<Item = u16>) {
        let mut seqs = self.inflight_seqs.lock();
        if seqs.is_empty() {
            return;
        }
        let live: Vec<u16> = in_flight.collect();
        seqs.retain(|pkid, seq| {
            let keep = live.contains(pkid);
            if !keep {
                if let Some(q) = broker.queue() {
                    q.remove(&self.key, *seq);
                }
            }
            keep
        });
    }

    /// End the session for good: subscriptions out of the index, durable state deleted.
    fn discard(&self, broker: &Broker) {
        self.unsubscribe_all(broker);
        if self.persistent {
            if let Some(q) = broker.queue() {
                q.unregister(self.mailbox.id());
                q.submit(SessionOp::DeleteSession(self.key.clone()), false);
            }
        }
    }
}

/// All sessions by client id.
#[derive(Debug)]
pub struct Registry {
    /// The sessions; locked only to look up, insert or remove.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Capacity of each session's mailbox.
    max_queued: usize,
    /// What a full mailbox does.
    policy: OverflowPolicy,
    /// `[mqtt] queue_qos0`: whether away sessions queue QoS 0 messages.
    queue_qos0: bool,
    /// The broker's budget for queued bytes, which every session's mailbox draws on.
    budget: Arc<Budget>,
}

/// The result of opening a session for a CONNECT.
#[derive(Debug)]
pub struct Opened {
    /// The session the connection now works with.
    pub session: Arc<Session>,
    /// Whether an existing persistent session is resumed (CONNACK Session Present).
    pub present: bool,
    /// A session being replaced or resumed that another connection still owns: the caller
    /// must have kicked it and must wait on its owner lock.
    pub previous: Option<Arc<Session>>,
}

impl Registry {
    /// An empty registry whose sessions' mailboxes (at most `max_queued` deliveries, 0: no
    /// limit of their own) draw on `budget`.
    pub fn new(
        max_queued: usize,
        policy: OverflowPolicy,
        queue_qos0: bool,
        budget: Arc<Budget>,
    ) -> Self {
        Registry {
            sessions: Mutex::new(HashMap::new()),
            max_queued,
            policy,
            queue_qos0,
            budget,
        }
    }

    /// A mailbox for a new session.
    fn mailbox(&self) -> Arc<Mailbox> {
        Mailbox::with_budget(self.max_queued, self.policy, self.budget.clone())
    }

    /// Number of sessions (connected or away).
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// The clients connected right now.
    pub fn connected(&self) -> Vec<super::ClientInfo> {
        self.sessions
            .lock()
            .values()
            .filter_map(|s| s.connection.lock().clone())
            .collect()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Find or create the session for a CONNECT. With `clean` (3.1.1 Clean Session, v5
    /// Clean Start), any existing session is discarded (MQTT-3.1.2-6, v5 MQTT-3.1.2-4) and
    /// a fresh one is made; without, an existing session is resumed (MQTT-3.1.2-4 / v5
    /// MQTT-3.1.2-5). `expiry` is how long it outlives the connection (0: not at all,
    /// [`NEVER`]: forever); a resumed session takes the new value. Any connection still
    /// owning the old session is kicked (MQTT-3.1.4-2).
    pub fn open(&self, client_id: &str, clean: bool, expiry: u32, broker: &Broker) -> Opened {
        let mut sessions = self.sessions.lock();
        let existing = sessions.get(client_id).cloned();
        if let Some(old) = &existing {
            old.kick_owner();
        }
        match existing {
            Some(old) if !clean && old.persistent => {
                old.expiry.store(expiry, Ordering::Relaxed);
                *old.expires_at.lock() = None;
                *old.away_since.lock() = None;
                if old.persistent {
                    old.persist(broker);
                }
                Opened {
                    session: old.clone(),
                    present: true,
                    previous: Some(old),
                }
            }
            existing => {
                if let Some(old) = &existing {
                    old.discard(broker);
                }
                let s = Session::new(client_id.to_owned(), expiry, self.mailbox());
                s.mailbox.set_queue_qos0(self.queue_qos0);
                if s.persistent {
                    if let Some(q) = broker.queue() {
                        q.register(s.mailbox.id(), s.key.clone());
                    }
                    s.persist(broker);
                }
                sessions.insert(client_id.to_owned(), s.clone());
                Opened {
                    session: s,
                    present: false,
                    previous: existing,
                }
            }
        }
    }

    /// A connection ended. A session whose expiry is 0 is discarded (if it is still the
    /// registered one); any other stays, away, until it expires. Returns the receipt of the
    /// durable session's last write, which the connection awaits before its last bytes
    /// (a PUBCOMP, say) go out.
    pub fn close(&self, session: &Arc<Session>, broker: &Broker) -> Option<Durable> {
        let expiry = session.expiry.load(Ordering::Relaxed);
        if expiry > 0 && session.persistent {
            session.mailbox.set_online(false);
            *session.away_since.lock() = Some(SystemTime::now());
            if expiry != NEVER {
                *session.expires_at.lock() =
                    Some(Instant::now() + Duration::from_secs(u64::from(expiry)));
            }
            return session.write(broker, true);
        }
        let mut sessions = self.sessions.lock();
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
        }
        drop(sessions);
        session.discard(broker);
        None
    }

    /// End every away session whose expiry has passed (MQTT 5 §3.1.2.11.2). Returns how many.
    pub fn expire(&self, now: Instant, broker: &Broker) -> usize {
        let expired: Vec<Arc<Session>> = {
            let mut sessions = self.sessions.lock();
            let ids: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| {
                    s.expires_at.lock().is_some_and(|at| at <= now) && s.owner.try_lock().is_ok()
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for s in &expired {
            tracing::info!(client_id = %s.client_id, "MQTT session expired");
            s.discard(broker);
        }
        expired.len()
    }

    /// Rebuild the stored persistent sessions (start-up, before listeners accept): their
    /// subscriptions go back into the index with their mailbox, their unfinished outgoing
    /// exchanges are kept for the next connection in their original order (PUBLISH re-sent
    /// with DUP=1 under its packet id, or only the PUBREL once PUBREC came, MQTT-4.4.0-1),
    /// the rest of their queued messages go back into the mailbox in order, and their
    /// inbound QoS 2 ids are kept. A session whose expiry passed while the broker was down
    /// (counted from when its client went away — for a client connected at a crash, from
    /// the last alive mark the crashed broker stored, see [`crate::broker::queue`]) is
    /// deleted instead. Returns (sessions,
    /// messages) restored.
    pub fn restore(&self, broker: &Broker) -> (usize, usize) {
        let Some(q) = broker.queue() else {
            return (0, 0);
        };
        let mut loaded = q.take_loaded();
        let now = Instant::now();
        let wall = SystemTime::now();
        // When the previous run was last known alive: a client connected at a crash lost
        // its connection then (at most `ALIVE_PERIOD` later). No mark (a database from
        // before the marks): the restart is all we know.
        let crashed_at = loaded.alive_at.map_or(wall, |t| t.min(wall));
        let mut queued: HashMap<String, std::collections::BTreeMap<u64, QueuedRecord>> =
            HashMap::new();
        for (client_id, seq, rec) in loaded.queued {
            queued.entry(client_id).or_default().insert(seq, rec);
        }
        let mut sessions = self.sessions.lock();
        let mut messages = 0;
        for (client_id, rec) in loaded.sessions {
            let key: Arc<str> = Arc::from(client_id.as_str());
            let expiry = rec.expiry;
            // Connected when the broker stopped: away since the last alive mark.
            let away = rec.away_since.unwrap_or(crashed_at);
            let remaining = if expiry == NEVER {
                Some(None)
            } else {
                // What is left of the interval (none: it expired while the broker was down).
                Duration::from_secs(u64::from(expiry))
                    .checked_sub(wall.duration_since(away).unwrap_or_default())
                    .filter(|left| !left.is_zero())
                    .map(Some)
            };
            let Some(left) = remaining.filter(|_| expiry > 0) else {
                // Expired while the broker was down, or resumed with expiry 0 (it ended
                // when that connection did: the crash).
                tracing::info!(%client_id, "stored MQTT session expired while ponte was down; removed");
                q.submit(SessionOp::DeleteSession(key), false);
                queued.remove(&client_id);
                continue;
            };
            let s = Session::new(client_id.clone(), expiry, self.mailbox());
            s.mailbox.set_queue_qos0(self.queue_qos0);
            s.mailbox.set_online(false);
            *s.away_since.lock() = Some(away);
            *s.expires_at.lock() = left.map(|left| now + left);
            for sub in rec.subscriptions {
                let Ok(f) = TopicFilter::parse(&sub.filter) else {
                    tracing::warn!(%client_id, filter = %sub.filter, "stored subscription is not a valid filter; skipped");
                    continue;
                };
                let opts = SubOptions {
                    qos: sub.qos,
                    no_local: sub.no_local,
                    retain_as_published: sub.retain_as_published,
                    id: sub.id,
                };
                // Retain Handling 2: a restored subscription is not new.
                broker.subscribe_with(&f, &s.mailbox, opts, 2);
                s.subscriptions.lock().insert(f, opts);
            }
            q.register(s.mailbox.id(), s.key.clone());
            if rec.away_since.is_none() {
                // Record when it went away, so a second restart does not extend it again.
                s.persist(broker);
            }
            let mut entries = queued.remove(&client_id).unwrap_or_default();
            let state = loaded.states.remove(&client_id).unwrap_or_default();
            let mut outgoing = Vec::with_capacity(state.outgoing.len());
            for o in &state.outgoing {
                let rec = (o.seq != 0).then(|| entries.remove(&o.seq)).flatten();
                if o.released {
                    // PUBREC came: only the PUBREL is re-sent; the entry goes on PUBCOMP.
                    outgoing.push(Inflight::PubRel { pkid: o.pkid });
                    if rec.is_some() {
                        s.sent_durable(o.pkid, o.seq);
                    }
                    continue;
                }
                let Some(rec) = rec else {
                    // Acknowledged in the batch the state was not yet rewritten in, or a
                    // message that had no durable copy: nothing to re-send.
                    continue;
                };
                let Some(message) = restored_message(&client_id, rec, now, wall) else {
                    q.remove(&s.key, o.seq);
                    continue;
                };
                outgoing.push(Inflight::Publish {
                    pkid: o.pkid,
                    message: ponte_mqtt::Outgoing {
                        topic: message.topic.as_arc().clone(),
                        payload: message.payload.clone(),
                        qos: to_wire(message.qos),
                        retain: message.retain,
                        properties: message.properties.clone(),
                        subscription_ids: Vec::new(),
                        expires_at: message.expires_at,
                    },
                });
                s.sent_durable(o.pkid, o.seq);
                messages += 1;
            }
            *s.saved.lock() = Some(SessionState {
                outgoing,
                inbound_qos2: state.inbound_qos2,
                next_pkid: state.next_pkid.max(1),
            });
            for (seq, rec) in entries {
                let (qos, retain) = (rec.qos, rec.retain);
                let Some(message) = restored_message(&client_id, rec, now, wall) else {
                    q.remove(&s.key, seq);
                    continue;
                };
                if message.expired(now) {
                    broker.metrics.expired.fetch_add(1, Ordering::Relaxed);
                    q.remove(&s.key, seq);
                    continue;
                }
                let d = Delivery {
                    message: Arc::new(message),
                    qos,
                    retain,
                    subscription_ids: Vec::new(),
                    durable: seq,
                };
                use crate::broker::mailbox::PushOutcome;
                let (outcome, displaced) = s.mailbox.push_displacing(d);
                broker.forget_displaced(s.mailbox.id(), displaced);
                match outcome {
                    PushOutcome::Queued | PushOutcome::ReplacedOldest => messages += 1,
                    _ => q.remove(&s.key, seq),
                }
            }
            sessions.insert(client_id, s);
        }
        // Left behind by sessions that ended while a publish was in flight.
        for (client_id, entries) in queued {
            let key: Arc<str> = Arc::from(client_id.as_str());
            for seq in entries.keys() {
                q.remove(&key, *seq);
            }
        }
        (sessions.len(), messages)
    }
}

/// A stored queue entry as a broker message (`None`, logged, when its topic is invalid).
/// The expiry deadline, stored as wall-clock time, becomes an `Instant` again.
fn restored_message(
    client_id: &str,
    rec: QueuedRecord,
    now: Instant,
    wall: SystemTime,
) -> Option<Message> {
    let Ok(topic) = TopicName::parse(&rec.topic) else {
        tracing::warn!(%client_id, topic = %rec.topic, "stored message has an invalid topic; dropped");
        return None;
    };
    let expires_at = rec.expires_at.map(|t| match t.duration_since(wall) {
        Ok(left) => now + left,
        Err(_) => now,
    });
    Some(Message {
        topic,
        payload: rec.payload,
        qos: rec.qos,
        retain: rec.retain,
        content_type: rec.content_type.map(Arc::from),
        origin: Origin::Internal,
        properties: rec.properties,
        expires_at,
        publisher: None,
        charge: crate::model::Charge::default(),
    })
}
