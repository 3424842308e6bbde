//! MQTT sessions: what outlives a connection when Clean Session is 0.
//!
//! A session owns the client's [`Mailbox`] (so messages keep arriving while the client is
//! away), its subscriptions, and the protocol state of unfinished QoS 1/2 exchanges. The
//! registry maps client ids to sessions; a connection *owns* a session by holding its
//! `owner` lock for its whole life, which is how a takeover (MQTT-3.1.4-2) waits for the old
//! connection to hand the session over before the new one resumes it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use ponte_mqtt::SessionState;
use tokio::sync::Notify;

use crate::broker::mailbox::{Mailbox, OverflowPolicy};
use crate::broker::message::QoS;
use crate::broker::topic::TopicFilter;
use crate::broker::Broker;

/// One client's session.
#[derive(Debug)]
pub struct Session {
    /// The client identifier it belongs to.
    pub client_id: String,
    /// Whether it outlives the connection (Clean Session 0).
    pub persistent: bool,
    /// Where the broker queues the client's messages, online or away.
    pub mailbox: Arc<Mailbox>,
    /// The client's subscriptions, to remove them from the index when the session ends.
    pub subscriptions: Mutex<HashMap<TopicFilter, QoS>>,
    /// Unfinished QoS 1/2 exchanges saved by the last connection, resumed by the next.
    pub saved: Mutex<Option<SessionState>>,
    /// Held by the connection that owns the session, for its whole life.
    pub owner: Arc<tokio::sync::Mutex<()>>,
    /// The owning connection's takeover bell: rung to make it close (MQTT-3.1.4-2). Each
    /// connection installs its own, so a ring meant for an old connection can never be
    /// left behind for the next one.
    pub kick: Mutex<Option<Arc<Notify>>>,
}

impl Session {
    fn new(
        client_id: String,
        persistent: bool,
        max_queued: usize,
        policy: OverflowPolicy,
    ) -> Arc<Self> {
        Arc::new(Session {
            client_id,
            persistent,
            mailbox: Mailbox::new(max_queued, policy),
            subscriptions: Mutex::new(HashMap::new()),
            saved: Mutex::new(None),
            owner: Arc::new(tokio::sync::Mutex::new(())),
            kick: Mutex::new(None),
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
    pub fn new(max_queued: usize, policy: OverflowPolicy) -> Self {
        Registry {
            sessions: Mutex::new(HashMap::new()),
            max_queued,
            policy,
        }
    }

    /// Number of sessions (connected or away).
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Find or create the session for a CONNECT. With `clean`, any existing session is
    /// discarded (MQTT-3.1.2-6) and a fresh one is made; without, an existing persistent
    /// session is resumed (MQTT-3.1.2-4). Any connection still owning the old session is
    /// kicked (MQTT-3.1.4-2).
    pub fn open(&self, client_id: &str, clean: bool, broker: &Broker) -> Opened {
        let mut sessions = self.sessions.lock();
        let existing = sessions.get(client_id).cloned();
        if let Some(old) = &existing {
            old.kick_owner();
        }
        match existing {
            Some(old) if !clean && old.persistent => Opened {
                session: old.clone(),
                present: true,
                previous: Some(old),
            },
            existing => {
                if let Some(old) = &existing {
                    old.unsubscribe_all(broker);
                }
                let s = Session::new(client_id.to_owned(), !clean, self.max_queued, self.policy);
                sessions.insert(client_id.to_owned(), s.clone());
                Opened {
                    session: s,
                    present: false,
                    previous: existing,
                }
            }
        }
    }

    /// A connection ended. A clean session is discarded (if it is still the registered
    /// one); a persistent one stays, away.
    pub fn close(&self, session: &Arc<Session>, broker: &Broker) {
        if session.persistent {
            session.mailbox.set_online(false);
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
        session.unsubscribe_all(broker);
    }
}
