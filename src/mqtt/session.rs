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
//! appended to disk before the publisher is acknowledged), and their record (subscriptions
//! with options, pending PUBRELs, inbound QoS 2 ids) is rewritten on every change. At start,
//! [`Registry::restore`] rebuilds them before any listener accepts.
//!
//! Expiry (MQTT 5 §3.1.2.11, and `[mqtt] session_expiry_secs` for 3.1.1): a session whose
//! client is away longer than its expiry interval is ended by [`Registry::expire`], run
//! every second by the front-end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ponte_mqtt::{Inflight, SessionState};
use tokio::sync::Notify;

use crate::broker::mailbox::{Mailbox, OverflowPolicy};
use crate::broker::message::{Delivery, Message, Origin};
use crate::broker::topic::{TopicFilter, TopicName};
use crate::broker::trie::SubOptions;
use crate::broker::Broker;
use crate::store::session::{SessionOp, SessionRecord, StoredSubscription};

fn to_wire(q: crate::broker::message::QoS) -> ponte_mqtt::QoS {
    use crate::broker::message::QoS;
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
    fn new(client_id: String, expiry: u32, max_queued: usize, policy: OverflowPolicy) -> Arc<Self> {
        Arc::new(Session {
            key: Arc::from(client_id.as_str()),
            client_id,
            persistent: expiry > 0,
            expiry: AtomicU32::new(expiry),
            expires_at: Mutex::new(None),
            mailbox: Mailbox::new(max_queued, policy),
            subscriptions: Mutex::new(HashMap::new()),
            saved: Mutex::new(None),
            inflight_seqs: Mutex::new(HashMap::new()),
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

    /// The session as stored: subscriptions and the payload-free protocol state.
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
        let mut r = SessionRecord {
            expiry: self.expiry.load(Ordering::Relaxed),
            subscriptions,
            ..SessionRecord::default()
        };
        if let Some(s) = &*self.saved.lock() {
            r.pending_pubrel = s
                .outgoing
                .iter()
                .filter_map(|i| match i {
                    Inflight::PubRel { pkid } => Some(*pkid),
                    Inflight::Publish { .. } => None,
                })
                .collect();
            r.inbound_qos2 = s.inbound_qos2.clone();
            r.next_pkid = s.next_pkid;
            let seqs = self.inflight_seqs.lock();
            r.inflight = s
                .outgoing
                .iter()
                .filter_map(|i| match i {
                    Inflight::Publish { pkid, .. } => seqs.get(pkid).map(|seq| (*pkid, *seq)),
                    Inflight::PubRel { .. } => None,
                })
                .collect();
        }
        r
    }

    /// Write the session's record (nobody waits: the ops are ordered before any later
    /// publish's appends, which are awaited). No-op for non-durable sessions.
    pub fn persist(&self, broker: &Broker) {
        if !self.persistent {
            return;
        }
        if let Some(q) = broker.queue() {
            q.submit(
                SessionOp::PutSession(self.key.clone(), Arc::new(self.record())),
                false,
            );
        }
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
    /// An empty registry.
    pub fn new(max_queued: usize, policy: OverflowPolicy, queue_qos0: bool) -> Self {
        Registry {
            sessions: Mutex::new(HashMap::new()),
            max_queued,
            policy,
            queue_qos0,
        }
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
                let s = Session::new(client_id.to_owned(), expiry, self.max_queued, self.policy);
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
    /// registered one); any other stays, away, until it expires.
    pub fn close(&self, session: &Arc<Session>, broker: &Broker) {
        let expiry = session.expiry.load(Ordering::Relaxed);
        if expiry > 0 && session.persistent {
            session.mailbox.set_online(false);
            if expiry != NEVER {
                *session.expires_at.lock() =
                    Some(Instant::now() + Duration::from_secs(u64::from(expiry)));
            }
            session.persist(broker);
            return;
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
    /// subscriptions go back into the index with their mailbox, their queued messages back
    /// into the mailbox in order, their protocol state is kept for the next connection.
    /// Returns (sessions, messages) restored.
    pub fn restore(&self, broker: &Broker) -> (usize, usize) {
        let Some(q) = broker.queue() else {
            return (0, 0);
        };
        let loaded = q.take_loaded();
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        // Queue entries that were in flight at the last disconnect: seq → (client, pkid).
        let mut inflight_by_seq: HashMap<u64, (String, u16)> = HashMap::new();
        for (client_id, rec) in loaded.sessions {
            if rec.expiry == 0 {
                // Resumed with expiry 0: it ended when that connection did (the crash).
                q.submit(
                    SessionOp::DeleteSession(Arc::from(client_id.as_str())),
                    false,
                );
                continue;
            }
            let expiry = rec.expiry;
            let s = Session::new(client_id.clone(), expiry, self.max_queued, self.policy);
            s.mailbox.set_queue_qos0(self.queue_qos0);
            s.mailbox.set_online(false);
            if expiry != NEVER {
                // The downtime is not counted: the interval starts again at restart.
                *s.expires_at.lock() = Some(now + Duration::from_secs(u64::from(expiry)));
            }
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
            inflight_by_seq.extend(
                rec.inflight
                    .iter()
                    .map(|&(pkid, seq)| (seq, (client_id.clone(), pkid))),
            );
            *s.saved.lock() = Some(SessionState {
                outgoing: rec
                    .pending_pubrel
                    .iter()
                    .map(|&pkid| Inflight::PubRel { pkid })
                    .collect(),
                inbound_qos2: rec.inbound_qos2,
                next_pkid: rec.next_pkid.max(1),
            });
            q.register(s.mailbox.id(), s.key.clone());
            sessions.insert(client_id, s);
        }
        let mut messages = 0;
        for (client_id, seq, rec) in loaded.queued {
            let Some(s) = sessions.get(&client_id) else {
                // Left behind by a session that ended while a publish was in flight.
                q.remove(&Arc::from(client_id.as_str()), seq);
                continue;
            };
            let Ok(topic) = TopicName::parse(&rec.topic) else {
                tracing::warn!(%client_id, topic = %rec.topic, "stored message has an invalid topic; dropped");
                q.remove(&s.key, seq);
                continue;
            };
            let message = Arc::new(Message {
                topic,
                payload: rec.payload,
                qos: rec.qos,
                retain: rec.retain,
                content_type: rec.content_type.map(Arc::from),
                origin: Origin::Internal,
                properties: None,
                expires_at: None,
                publisher: None,
            });
            if let Some((_, pkid)) = inflight_by_seq.get(&seq).filter(|(c, _)| *c == client_id) {
                // Resumed as in flight: re-sent with DUP=1 under its packet id.
                if let Some(saved) = s.saved.lock().as_mut() {
                    saved.outgoing.push(Inflight::Publish {
                        pkid: *pkid,
                        message: ponte_mqtt::Outgoing {
                            topic: message.topic.as_arc().clone(),
                            payload: message.payload.clone(),
                            qos: to_wire(rec.qos),
                            retain: rec.retain,
                            properties: None,
                            subscription_ids: Vec::new(),
                            expires_at: None,
                        },
                    });
                    s.sent_durable(*pkid, seq);
                    messages += 1;
                    continue;
                }
            }
            let d = Delivery {
                message,
                qos: rec.qos,
                retain: rec.retain,
                subscription_ids: Vec::new(),
                durable: seq,
            };
            use crate::broker::mailbox::PushOutcome;
            match s.mailbox.push(d) {
                PushOutcome::Queued | PushOutcome::ReplacedOldest => messages += 1,
                _ => q.remove(&s.key, seq),
            }
        }
        (sessions.len(), messages)
    }
}
