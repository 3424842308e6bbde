//! Every MQTT session by client id: opening one for a CONNECT (fresh, resumed, or taken
//! over), closing it when its connection ends, ending away sessions past their expiry, and
//! rebuilding the persistent ones at start.
//!
//! Expiry (MQTT 5 §3.1.2.11, and `[mqtt] session_expiry_secs` for 3.1.1): a session whose
//! client is away longer than its expiry interval is ended by [`Registry::expire`], run
//! every second by the front-end.
//!
//! In a cluster whose sessions are kept in the message log (issue 11), a client's session
//! is here only while its client is connected here: [`Registry::open`] makes a new one
//! (the connection then claims and resumes it, `super::cluster`), [`Registry::close`]
//! writes it away and forgets it, and another node's takeover kicks its connection
//! ([`Registry::kick`]). The node's own sessions (its MQTT bridges' queues) stay as on a
//! single node.
//!
//! `[mqtt] max_persistent_sessions` bounds the persistent sessions a client can make the
//! node keep ([`Registry::open_for_client`]): each costs memory while its client is away,
//! and clients choose their ids, so without it a client cycling through ids could fill the
//! memory one away session at a time.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use ponte_mqtt::{Inflight, SessionState};

use super::session::{Owner, Session};
use super::wire;
use super::{ClientInfo, RESERVED_CLIENT_PREFIX};
use crate::broker::mailbox::OverflowPolicy;
use crate::broker::{Broker, Delivery};
use crate::durable::{Receipt, RestoredExchange};
use crate::model::RetainHandling;

/// All sessions by client id.
#[derive(Debug)]
pub(crate) struct Registry {
    /// The sessions; locked only to look up, insert or remove.
    sessions: Mutex<Sessions>,
    /// `[mqtt] max_persistent_sessions`: most persistent sessions clients may hold (0: no
    /// limit).
    max_persistent: usize,
    /// Capacity of each session's mailbox (0: no limit of its own, only the broker's budget).
    max_queued: usize,
    /// What a full mailbox does.
    policy: OverflowPolicy,
    /// `[mqtt] queue_qos0`: whether away sessions queue QoS 0 messages.
    queue_qos0: bool,
}

/// The sessions by client id, and how many are persistent (counted under the same lock).
#[derive(Debug, Default)]
struct Sessions {
    by_id: HashSet<Entry>,
    /// How many of `by_id` are persistent (what `max_persistent_sessions` bounds).
    persistent: usize,
}

impl Sessions {
    /// Register `s`, replacing (and returning) any session of the same client.
    fn insert(&mut self, s: Arc<Session>) -> Option<Arc<Session>> {
        self.persistent += usize::from(s.persistent);
        let old = self.by_id.replace(Entry(s)).map(|e| e.0);
        self.persistent -= old.as_ref().map_or(0, |o| usize::from(o.persistent));
        old
    }

    /// Unregister `client_id`'s session.
    fn remove(&mut self, client_id: &str) -> Option<Arc<Session>> {
        let old = self.by_id.take(client_id).map(|e| e.0);
        self.persistent -= old.as_ref().map_or(0, |o| usize::from(o.persistent));
        old
    }

    /// The session of `client_id`.
    fn get(&self, client_id: &str) -> Option<&Arc<Session>> {
        self.by_id.get(client_id).map(|e| &e.0)
    }

    /// Every session.
    fn iter(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.by_id.iter().map(|e| &e.0)
    }
}

/// A session in [`Sessions::by_id`], found by its client id: a set of sessions keyed by
/// their own ids holds one pointer each (a map from a copy of the id held 24 bytes a
/// session, 40 with the table's spare room: issue 16, bytes per idle connection).
#[derive(Debug)]
struct Entry(Arc<Session>);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for Entry {}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow<str>` requires it.
        self.0.client_id.hash(state)
    }
}

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

/// A CONNECT refused by `[mqtt] max_persistent_sessions` (the limit): the client asked
/// for a new persistent session, and the node holds that many already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManySessions(pub usize);

/// The result of opening a session for a CONNECT.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The session the connection now works with.
    pub session: Arc<Session>,
    /// Whether an existing persistent session is resumed (CONNACK Session Present).
    pub present: bool,
    /// A session being replaced or resumed that another connection still owns: the caller
    /// must have kicked it and must wait for it to be let go.
    pub previous: Option<Arc<Session>>,
    /// The connection's claim on `session` ([`Session::own`]): taken under the registry's
    /// lock after any takeover, so the latest CONNECT holds the latest claim.
    pub claim: u32,
    /// A session made for this open is owned by it from the start
    /// ([`Session::owned_from_the_start`]); a resumed one must be waited for
    /// ([`Session::own`]).
    pub owner: Option<Owner>,
}

impl Registry {
    /// An empty registry.
    pub(crate) fn new(
        max_queued: usize,
        policy: OverflowPolicy,
        queue_qos0: bool,
        max_persistent: usize,
    ) -> Self {
        Registry {
            sessions: Mutex::new(Sessions::default()),
            max_persistent,
            max_queued,
            policy,
            queue_qos0,
        }
    }

    /// A new session, with its mailbox as configured.
    fn session(&self, client_id: Arc<str>, expiry: u32, broker: &Broker) -> Arc<Session> {
        let mailbox = broker.mailbox(self.max_queued, self.policy);
        mailbox.set_queue_qos0(self.queue_qos0);
        Session::new(client_id, expiry, mailbox, broker.durable())
    }

    /// Whether `client_id`'s session is kept in the cluster (claimed on CONNECT, replayed
    /// from the log) rather than by this node: every client's in a cluster, except the
    /// node's own MQTT bridges' queues.
    pub(crate) fn clustered(client_id: &str, broker: &Broker) -> bool {
        broker.durable().is_some_and(|d| d.logged())
            && !client_id.starts_with(RESERVED_CLIENT_PREFIX)
    }

    /// Whether the session `open` makes for this CONNECT is persistent: it outlives its
    /// connection (expiry > 0), or, kept in the cluster, a v5 Clean Start 0 with expiry 0
    /// may resume a kept session (which then ends at disconnect).
    fn persistent(client_id: &str, clean: bool, expiry: u32, broker: &Broker) -> bool {
        expiry > 0 || (!clean && Self::clustered(client_id, broker))
    }

    /// Close the connection of the session that claimed `kick.client`'s session here, if it
    /// is still registered: another node takes it over, or this node lost it. A newer
    /// session of the same client (a new connection here, still claiming) is not the one
    /// meant and stays.
    pub(crate) fn kick(&self, kick: &crate::durable::Kick) {
        if let Some(s) = self
            .sessions
            .lock()
            .get(&kick.client)
            .filter(|s| s.mailbox.id() == kick.holder)
        {
            s.taken_over();
        }
    }

    /// Number of sessions (connected or away).
    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().by_id.len()
    }

    /// The clients connected right now.
    pub(crate) fn connected(&self) -> Vec<ClientInfo> {
        self.sessions
            .lock()
            .iter()
            .filter_map(|s| s.connection())
            .collect()
    }

    /// The client ids of every session, connected or away (an MQTT bridge looks for the
    /// durable queues of bridges no longer configured).
    pub(crate) fn client_ids(&self) -> Vec<String> {
        self.sessions
            .lock()
            .iter()
            .map(|s| s.client_id.to_string())
            .collect()
    }

    /// Find or create the session for a CONNECT. With `clean` (3.1.1 Clean Session, v5
    /// Clean Start), any existing session is discarded (MQTT-3.1.2-6, v5 MQTT-3.1.2-4) and
    /// a fresh one is made; without, an existing session is resumed (MQTT-3.1.2-4 / v5
    /// MQTT-3.1.2-5). `expiry` is how long it outlives the connection (0: not at all,
    /// [`super::session::NEVER`]: forever); a resumed session takes the new value. Any
    /// connection still owning the old session is kicked (MQTT-3.1.4-2). A persistent
    /// session's record is submitted here (nobody waits: it goes ahead of any message
    /// queued for it).
    pub(crate) fn open(
        &self,
        client_id: &str,
        clean: bool,
        expiry: u32,
        broker: &Broker,
    ) -> Opened {
        self.open_locked(&mut self.sessions.lock(), client_id, clean, expiry, broker)
    }

    /// [`Registry::open`] for a client's CONNECT: refused, taking nothing over, when it
    /// would add a persistent session beyond `[mqtt] max_persistent_sessions`. Resuming or
    /// replacing the client's own persistent session adds none, and a session that ends
    /// with its connection is bounded by the connection limits instead.
    pub(crate) fn open_for_client(
        &self,
        client_id: &str,
        clean: bool,
        expiry: u32,
        broker: &Broker,
    ) -> Result<Opened, TooManySessions> {
        let mut sessions = self.sessions.lock();
        let replaces_persistent = sessions.get(client_id).is_some_and(|s| s.persistent);
        if self.max_persistent > 0
            && Self::persistent(client_id, clean, expiry, broker)
            && !replaces_persistent
            && sessions.persistent >= self.max_persistent
        {
            return Err(TooManySessions(self.max_persistent));
        }
        Ok(self.open_locked(&mut sessions, client_id, clean, expiry, broker))
    }

    /// [`Registry::open`] under the registry's lock: the existing session kicked, then
    /// resumed or replaced, or a new one owned by the CONNECT from the start; with the
    /// CONNECT's claim, taken after the kick.
    fn open_locked(
        &self,
        sessions: &mut Sessions,
        client_id: &str,
        clean: bool,
        expiry: u32,
        broker: &Broker,
    ) -> Opened {
        let existing = sessions.get(client_id).cloned();
        if let Some(old) = &existing {
            old.kick_owner();
        }
        if Self::clustered(client_id, broker) {
            // A session kept in the cluster is claimed and resumed by the connection
            // (`super::cluster::resume`) once the previous owner here let it go; this is
            // the empty session it resumes into. A v5 Clean Start 0 with expiry 0 may
            // resume a kept session, which then ends at disconnect.
            let mailbox = broker.mailbox(self.max_queued, self.policy);
            mailbox.set_queue_qos0(self.queue_qos0);
            let s = Session::kept(
                Arc::from(client_id),
                expiry,
                Self::persistent(client_id, clean, expiry, broker),
                mailbox,
                broker.durable(),
                false,
            );
            sessions.insert(s.clone());
            return Opened {
                owner: Some(s.owned_from_the_start()),
                claim: s.claim(),
                session: s,
                present: false,
                previous: existing,
            };
        }
        match existing {
            Some(old) if !clean && old.persistent => {
                old.resume(expiry);
                old.persist(false);
                Opened {
                    session: old.clone(),
                    present: true,
                    claim: old.claim(),
                    previous: Some(old),
                    owner: None,
                }
            }
            existing => {
                if let Some(old) = &existing {
                    old.discard(broker);
                }
                let s = self.session(Arc::from(client_id), expiry, broker);
                s.persist(false);
                sessions.insert(s.clone());
                Opened {
                    owner: Some(s.owned_from_the_start()),
                    claim: s.claim(),
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
    pub(crate) fn close(&self, session: &Arc<Session>, broker: &Broker) -> Option<Receipt> {
        let kept = session
            .durable
            .as_ref()
            .is_some_and(|d| d.track().is_some());
        if session.persistent && session.expiry() > 0 {
            session.mailbox.set_online(false);
            session.away(SystemTime::now(), Instant::now());
            let written = session.persist(true);
            if kept {
                // Kept in the cluster: written away (no owner), it leaves this node; the
                // log keeps its messages until its client is back, on any node.
                session.unsubscribe_all(broker);
                if let Some(d) = &session.durable {
                    d.unregister();
                }
                self.forget(session);
            }
            return written;
        }
        self.forget(session);
        session.discard(broker);
        None
    }

    /// Remove `session` from the registry if it is still the registered one.
    fn forget(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock();
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
        }
    }

    /// End every away session whose expiry has passed (MQTT 5 §3.1.2.11.2). Returns how many.
    pub(crate) fn expire(&self, now: Instant, broker: &Broker) -> usize {
        let expired: Vec<Arc<Session>> = {
            let mut sessions = self.sessions.lock();
            let ids: Vec<Arc<str>> = sessions
                .iter()
                .filter(|s| s.expired(now))
                .map(|s| s.client_id.clone())
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for s in &expired {
            tracing::info!(client_id = %s.client_id, "MQTT session expired");
            s.discard(broker);
        }
        expired.len()
    }

    /// Rebuild the stored persistent sessions (start-up, before listeners accept), as the
    /// owner of durable state restores them ([`crate::durable::DurableSessions::restore`]):
    /// their subscriptions go back into the index with their mailbox (Retain Handling 2: a
    /// restored subscription is not new), their unfinished outgoing exchanges are kept for
    /// the next connection in their original order (PUBLISH re-sent with DUP=1 under its
    /// packet id, or only the PUBREL once PUBREC came, MQTT-4.4.0-1), the rest of their
    /// queued messages go back into the mailbox in order, and their inbound QoS 2 ids are
    /// kept. Returns (sessions, messages) restored.
    pub(crate) fn restore(&self, broker: &Broker) -> (usize, usize) {
        let Some(durable) = broker.durable() else {
            return (0, 0);
        };
        let restored = durable.restore();
        broker
            .metrics
            .expired
            .fetch_add(restored.expired as u64, Ordering::Relaxed);
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        let mut messages = 0;
        for r in restored.sessions {
            if Self::clustered(&r.client, broker) {
                // Written by this node before it joined a cluster: the cluster keeps its
                // clients' sessions now, and this one stays in `--db`, untouched.
                tracing::warn!(client_id = %r.client, "a persistent MQTT session from single-node mode is in the database; in a cluster it is not resumed");
                continue;
            }
            let s = self.session(Arc::from(r.client.as_str()), r.expiry, broker);
            s.mailbox.set_online(false);
            s.restored_away(r.away_since, r.expires_in, now);
            for (filter, options) in r.subscriptions {
                broker.subscribe_with(&filter, &s.mailbox, options, RetainHandling::Never);
                s.restored_subscription(filter, options);
            }
            if r.was_connected {
                // Record when it went away, so a second restart does not extend it again.
                s.persist(false);
            }
            let durable = s.durable.as_ref();
            let mut outgoing = Vec::with_capacity(r.outgoing.len());
            for exchange in r.outgoing {
                match exchange {
                    RestoredExchange::Released { pkid, seq } => {
                        if let (Some(d), Some(seq)) = (durable, seq) {
                            d.sent(pkid, seq);
                        }
                        outgoing.push(Inflight::PubRel { pkid });
                    }
                    RestoredExchange::Publish { pkid, seq, message } => {
                        if let Some(d) = durable {
                            d.sent(pkid, seq);
                        }
                        let out = wire::outgoing(&message, message.qos, message.retain, Vec::new());
                        outgoing.push(Inflight::Publish { pkid, message: out });
                        messages += 1;
                    }
                }
            }
            s.save(SessionState {
                outgoing,
                inbound_qos2: r.inbound_qos2,
                next_pkid: r.next_pkid,
            });
            for (seq, message) in r.queued {
                let d = Delivery {
                    qos: message.qos,
                    retain: message.retain,
                    message: Arc::new(message),
                    subscription_ids: Vec::new(),
                    durable: Some(seq),
                    log_seq: None,
                };
                if broker.push_restored(&s.mailbox, d) {
                    messages += 1;
                }
            }
            sessions.insert(s);
        }
        (sessions.by_id.len(), messages)
    }
}
