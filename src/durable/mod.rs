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
//! [`crate::store::session::SessionStore`] engine, today; a cluster keeper over NATS
//! JetStream (issue 11) slots in there without touching the MQTT driver or the broker's
//! fan-out.

mod keeper;
mod local;
mod restore;
mod session;
#[cfg(test)]
mod tests;

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
pub use keeper::Keeper;
pub use local::{LocalKeeper, ALIVE_PERIOD};
pub use restore::{Restored, RestoredExchange, RestoredSession};
pub use session::{DurableSession, Exchange, Record, Stage};

/// The receipt of an operation someone waits for: resolves once the operation, and every
/// one made before it, is durable (or could not be made durable).
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<Result<(), StoreError>>);

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
    /// Where it is kept.
    keeper: Box<dyn Keeper>,
    /// Mailbox id → client id of every persistent session: the fan-out's lookup.
    registry: RwLock<HashMap<u64, Arc<str>>>,
    /// `registry.len()`, read without a lock so fan-out with no persistent session costs
    /// one atomic load.
    count: AtomicUsize,
}

impl DurableSessions {
    /// The owner over `keeper`.
    pub fn new(keeper: Box<dyn Keeper>) -> Arc<Self> {
        Arc::new(DurableSessions {
            keeper,
            registry: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
        })
    }

    /// The owner keeping sessions in `store` through the local writer thread.
    pub fn local<S: SessionStore>(store: S) -> Result<Arc<Self>, StoreError> {
        Ok(Self::new(Box::new(LocalKeeper::open(store)?)))
    }

    /// Take charge of `client`'s persistent session, whose messages arrive in mailbox
    /// `mailbox_id`: from now on its QoS 1/2 deliveries are made durable.
    pub fn open(self: &Arc<Self>, client: Arc<str>, mailbox_id: u64) -> DurableSession {
        let mut registry = self.registry.write();
        registry.insert(mailbox_id, client.clone());
        self.count.store(registry.len(), Ordering::Release);
        DurableSession::new(self.clone(), client, mailbox_id)
    }

    /// Stop making `mailbox_id`'s deliveries durable.
    fn unregister(&self, mailbox_id: u64) {
        let mut registry = self.registry.write();
        registry.remove(&mailbox_id);
        self.count.store(registry.len(), Ordering::Release);
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
    }
}

/// The persistent sessions' mailboxes, read-locked while one message is fanned out.
pub struct Registered<'a> {
    /// The owner, to reach the keeper.
    owner: &'a DurableSessions,
    /// Mailbox id → client id.
    registry: RwLockReadGuard<'a, HashMap<u64, Arc<str>>>,
}

impl Registered<'_> {
    /// If `mailbox_id` is a persistent session's and the delivery is QoS 1/2 (the only ones
    /// kept durable): make `message` durable in that session's queue before it is pushed,
    /// so the client's acknowledgement can only come after it. Returns its sequence number,
    /// and with `wait` the receipt its publisher awaits before being acknowledged.
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
        let client = self.registry.get(&mailbox_id)?;
        Some(self.owner.keeper.append(client, message, qos, retain, wait))
    }

    /// Message `seq` left `mailbox_id`'s queue unsent (displaced by `drop-oldest`, or
    /// refused by a full mailbox): its durable copy goes too, or it would come back after a
    /// restart.
    pub fn forget(&self, mailbox_id: u64, seq: Seq) {
        if let Some(client) = self.registry.get(&mailbox_id) {
            self.owner.keeper.forget(client, seq);
        }
    }
}
