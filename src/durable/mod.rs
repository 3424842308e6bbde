//! Durable sessions: the one owner of what persistent MQTT sessions keep across a crash.
//!
//! A persistent session (3.1.1 Clean Session 0; v5 Session Expiry > 0) has durable state
//! in four parts, and this module is the only one that touches any of them:
//!
//! - its **queue**: every QoS 1/2 message delivered to it gets a durable identity, a
//!   [`Seq`], when it is made durable ([`Keeper::append`]), before its publisher is
//!   acknowledged; the entry goes when the exchange is over ([`DurableSession::finished`],
//!   [`DurableSession::acknowledge`]) or when the message leaves the queue unsent
//!   ([`Registered::forget`]: `drop-oldest`, a full mailbox);
//! - its **record**: expiry, when the client went away, subscriptions with their options
//!   ([`DurableSession::write_record`]; on open/resume, (un)subscribe, close);
//! - its **protocol state**: unfinished exchanges as packet id + sequence number + stage,
//!   inbound QoS 2 ids, next packet id ([`DurableSession::sync`] once per turn of the
//!   connection, [`DurableSession::write_saved`] when the connection ends);
//! - and, at start, **restore** ([`DurableSessions::restore`]): records, states and queued
//!   messages back in order, expired sessions and stray entries deleted.
//!
//! [`DurableSessions`] is the owner: it knows which mailbox belongs to which persistent
//! session (fan-out asks it, one atomic load when there is none) and hands out one
//! [`DurableSession`] per session to the MQTT front-end. Where the state is kept is behind
//! the [`Keeper`] trait: [`LocalKeeper`], a group-committing writer thread over a
//! [`crate::store::session::SessionStore`] engine, on a single node; in a cluster
//! (issue 11) a keeper over NATS JetStream whose queue is the cluster's shared message log
//! ([`Keeper::logged`]): a session there is a [`Track`] of its place in that log, claimed
//! by the node its client connects to and replayed from its position. A cluster node keeps
//! its MQTT bridges' out queues, which are its own, with a local keeper beside it
//! ([`DurableSessions::with_local`]).

mod keeper;
mod local;
mod restore;
mod session;
#[cfg(test)]
mod tests;
mod track;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::{RwLock, RwLockReadGuard};
use tokio::sync::oneshot;

use crate::model::{Message, QoS};
use crate::store::session::SessionStore;
use crate::store::StoreError;

pub use crate::store::session::Seq;
pub use keeper::{Claim, Claimed, Keeper, KeptSession, Kick, Logged, Replayed};
pub use local::{LocalKeeper, ALIVE_PERIOD};
pub use restore::{Restored, RestoredExchange, RestoredSession};
pub use session::{DurableSession, Exchange, Record, Stage};
pub use track::{Admit, LogMarks, Track};

/// The receipt of an operation someone waits for: resolves once the operation, and every
/// one made before it, is durable (or could not be made durable).
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<Result<(), StoreError>>);

impl Receipt {
    /// A receipt and the sender that resolves it (for a keeper outside this module).
    pub fn pending() -> (oneshot::Sender<Result<(), StoreError>>, Receipt) {
        let (tx, rx) = oneshot::channel();
        (tx, Receipt(rx))
    }
}

impl Future for Receipt {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// The owner of every persistent session's durable state (see the module docs).
#[derive(Debug)]
pub struct DurableSessions {
    /// Where sessions are kept.
    keeper: Box<dyn Keeper>,
    /// In a cluster: where the node's own sessions (its MQTT bridges' out queues) are
    /// kept, beside the cluster keeper. `None`: every session is `keeper`'s.
    local: Option<Box<dyn Keeper>>,
    /// `keeper.logged()`, read once.
    logged: bool,
    /// Mailbox id → the session: the fan-out's lookup.
    registry: RwLock<HashMap<u64, Entry>>,
    /// Client id → mailbox id of every logged session, so a message heard from the log
    /// can carry its publisher's mailbox here (MQTT 5 No Local).
    by_client: RwLock<HashMap<Arc<str>, u64>>,
    /// `registry.len()`, read without a lock so fan-out with no persistent session costs
    /// one atomic load.
    count: AtomicUsize,
    /// How many registered sessions are kept in the log (`by_client.len()`).
    tracked: AtomicUsize,
    /// How far this node's fan-out of the log got (a logged keeper).
    marks: LogMarks,
}

/// One registered persistent session.
#[derive(Debug)]
struct Entry {
    /// Its client id.
    client: Arc<str>,
    /// Kept by the node-local keeper ([`DurableSessions::local`]).
    local: bool,
    /// Its place in the log, when the session is kept by a logged keeper.
    track: Option<Arc<Track>>,
}

impl DurableSessions {
    /// The owner over `keeper`.
    pub fn new(keeper: Box<dyn Keeper>) -> Arc<Self> {
        Self::build(keeper, None)
    }

    /// The owner over a cluster `keeper`, with the node's own sessions (opened with
    /// `local`: its MQTT bridges' out queues) kept by `local`.
    pub fn with_local(keeper: Box<dyn Keeper>, local: Box<dyn Keeper>) -> Arc<Self> {
        Self::build(keeper, Some(local))
    }

    fn build(keeper: Box<dyn Keeper>, local: Option<Box<dyn Keeper>>) -> Arc<Self> {
        Arc::new(DurableSessions {
            logged: keeper.logged(),
            keeper,
            local,
            registry: RwLock::new(HashMap::new()),
            by_client: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
            tracked: AtomicUsize::new(0),
            marks: LogMarks::default(),
        })
    }

    /// The owner keeping sessions in `store` through the local writer thread.
    pub fn local<S: SessionStore>(store: S) -> Result<Arc<Self>, StoreError> {
        Ok(Self::new(Box::new(LocalKeeper::open(store)?)))
    }

    /// Whether sessions are kept in the cluster's message log (their queue is a place in
    /// it, see [`Track`]).
    pub fn logged(&self) -> bool {
        self.logged
    }

    /// How far this node's fan-out of the cluster's log got.
    pub fn marks(&self) -> &LogMarks {
        &self.marks
    }

    /// The keeper of a session: the node-local one for `local` sessions when there is one.
    fn keeper_of(&self, local: bool) -> &dyn Keeper {
        match (&self.local, local) {
            (Some(k), true) => k.as_ref(),
            _ => self.keeper.as_ref(),
        }
    }

    /// The cluster keeper, for what only it does (claims, replays).
    pub fn keeper(&self) -> &dyn Keeper {
        self.keeper.as_ref()
    }

    /// Take charge of `client`'s persistent session, whose messages arrive in mailbox
    /// `mailbox_id`: from now on its QoS 1/2 deliveries are made durable. With `local`,
    /// the session is the node's own (kept by the node-local keeper when there is one).
    /// A session of a logged keeper is tracked ([`Track`]); where its queue begins in the
    /// log is set once it is claimed ([`Track::start_at`]).
    pub fn open(
        self: &Arc<Self>,
        client: Arc<str>,
        mailbox_id: u64,
        local: bool,
    ) -> DurableSession {
        let local = local && self.local.is_some();
        let track = (self.logged && !local).then(|| Arc::new(Track::new(0)));
        let mut registry = self.registry.write();
        registry.insert(
            mailbox_id,
            Entry {
                client: client.clone(),
                local,
                track: track.clone(),
            },
        );
        self.count.store(registry.len(), Ordering::Release);
        drop(registry);
        if track.is_some() {
            self.tracked.fetch_add(1, Ordering::AcqRel);
            self.by_client.write().insert(client.clone(), mailbox_id);
        }
        DurableSession::new(self.clone(), client, mailbox_id, local, track)
    }

    /// Stop making `mailbox_id`'s deliveries durable.
    fn unregister(&self, mailbox_id: u64) {
        let mut registry = self.registry.write();
        let entry = registry.remove(&mailbox_id);
        self.count.store(registry.len(), Ordering::Release);
        drop(registry);
        if let Some(Entry {
            client,
            track: Some(_),
            ..
        }) = entry
        {
            self.tracked.fetch_sub(1, Ordering::AcqRel);
            let mut by_client = self.by_client.write();
            if by_client.get(&client) == Some(&mailbox_id) {
                by_client.remove(&client);
            }
        }
    }

    /// Whether any registered session is kept in the cluster's log (one atomic load).
    pub fn tracked(&self) -> bool {
        self.tracked.load(Ordering::Acquire) > 0
    }

    /// The mailbox of `client`'s logged session on this node, if it has one: a message it
    /// published, heard back from the log, is not delivered to its No Local subscriptions.
    pub fn mailbox_of(&self, client: &str) -> Option<u64> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.by_client.read().get(client).copied()
    }

    /// Whether any persistent session is registered (one atomic load).
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// The persistent sessions' mailboxes, read-locked for one fan-out, if there are any.
    pub fn registered(&self) -> Option<Registered<'_>> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        Some(Registered {
            owner: self,
            registry: self.registry.read(),
        })
    }

    /// Flush what was handed over and stop (shutdown).
    pub fn close(&self) {
        self.keeper.close();
        if let Some(local) = &self.local {
            local.close();
        }
    }
}

/// The persistent sessions' mailboxes, read-locked while one message is fanned out.
pub struct Registered<'a> {
    /// The owner, to reach the keeper.
    owner: &'a DurableSessions,
    /// Mailbox id → session.
    registry: RwLockReadGuard<'a, HashMap<u64, Entry>>,
}

impl Registered<'_> {
    /// If `mailbox_id` is a persistent session's and the delivery is QoS 1/2 (the only ones
    /// kept durable): make `message` durable in that session's queue before it is pushed,
    /// so the client's acknowledgement can only come after it. Returns its sequence number,
    /// and with `wait` the receipt its publisher awaits before being acknowledged.
    ///
    /// A session tracked in the cluster's log ([`Registered::track`]) is not appended to:
    /// `None`.
    pub fn append(
        &self,
        mailbox_id: u64,
        message: &Message,
        qos: QoS,
        retain: bool,
        wait: bool,
    ) -> Option<(Seq, Option<Receipt>)> {
        if qos == QoS::AtMostOnce {
            return None;
        }
        let entry = self.registry.get(&mailbox_id)?;
        if entry.track.is_some() {
            return None;
        }
        let keeper = self.owner.keeper_of(entry.local);
        Some(keeper.append(&entry.client, message, qos, retain, wait))
    }

    /// Message `seq` left `mailbox_id`'s queue unsent (displaced by `drop-oldest`, or
    /// refused by a full mailbox): its durable copy goes too, or it would come back after a
    /// restart (a tracked session counts it finished).
    pub fn forget(&self, mailbox_id: u64, seq: Seq) {
        if let Some(entry) = self.registry.get(&mailbox_id) {
            match &entry.track {
                Some(track) => track.finished(seq.get()),
                None => self.owner.keeper_of(entry.local).forget(&entry.client, seq),
            }
        }
    }

    /// The place in the cluster's log of `mailbox_id`'s session, when it is a persistent
    /// session kept there: its deliveries take the log's sequence as their identity and
    /// reach it only through the log (see [`Track`]).
    pub fn track(&self, mailbox_id: u64) -> Option<&Arc<Track>> {
        self.registry.get(&mailbox_id)?.track.as_ref()
    }
}
