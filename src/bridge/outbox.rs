//! The durable out queue of a bridge: a persistent MQTT session in the front-end's
//! registry under the reserved client id `$bridge/<name>`, whose "connection" is the
//! bridge. This is the only file of the bridge that touches the session machinery.
//!
//! Being a persistent session gives the bridge exactly what it promises, with no second
//! queue implementation: its mailbox is registered with the owner of durable sessions
//! ([`crate::durable`]), so fan-out makes every QoS 1/2 message for it durable *before* the
//! local publisher is acknowledged; the registry's restore puts those messages back in
//! order after `kill -9`; the session record keeps its subscriptions. The bridge
//! acknowledges a message's durable copy only once the remote acknowledged it
//! (PUBACK/PUBCOMP), through the session's [`crate::durable::DurableSession`]. The subscriptions have No Local set, and a
//! message the bridge itself brought in carries the mailbox's id as its publisher, so it
//! is never queued to go back out (MQTT-3.8.3-3 semantics, applied to the bridge).

use std::sync::Arc;

use crate::broker::mailbox::Mailbox;
use crate::broker::Broker;
use crate::broker::Delivery;
use crate::durable::Seq;
use crate::model::{QoS, SubOptions, TopicFilter};
use crate::mqtt::session::{Owner, Session, NEVER};
use crate::mqtt::{Clients, RESERVED_CLIENT_PREFIX};
use crate::store::StoreError;

/// The client id of bridge `name`'s out queue.
pub(crate) fn client_id(name: &str) -> String {
    format!("{RESERVED_CLIENT_PREFIX}{name}")
}

/// A bridge's out queue, owned (like a connection owns its session) while it is open.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// The broker the session lives in: closing the session needs it.
    broker: Arc<Broker>,
    /// The front-end's sessions, for closing the session when the bridge stops.
    clients: Clients,
    /// The session: its mailbox is the queue, its durable side keeps the messages.
    session: Arc<Session>,
    /// Held for the outbox's life: the session has one owner at a time.
    _owner: Owner,
}

impl Outbox {
    /// Open (or resume) bridge `name`'s session, bound its queue to `max_queued`, and make
    /// its local subscriptions exactly `subscriptions` (each with No Local and Retain As
    /// Published; no retained values sent, see the bridge's reconciliation). Returns once
    /// the session record is durable.
    pub(crate) async fn open(
        clients: &Clients,
        broker: &Arc<Broker>,
        name: &str,
        subscriptions: &[(TopicFilter, QoS)],
        max_queued: usize,
    ) -> Result<Outbox, StoreError> {
        let registry = clients.registry();
        let mut opened = registry.open(&client_id(name), false, NEVER, broker);
        let owner = match opened.owner.take() {
            Some(owner) => owner,
            None => opened.session.own_in_turn().await,
        };
        if let Some(prev) = &opened.previous {
            if !Arc::ptr_eq(prev, &opened.session) {
                prev.released().await;
            }
        }
        let session = opened.session;
        session.mailbox.set_capacity(max_queued);
        let want: Vec<(TopicFilter, SubOptions)> = subscriptions
            .iter()
            .map(|(filter, qos)| {
                let opts = SubOptions {
                    qos: *qos,
                    no_local: true,
                    retain_as_published: true,
                    id: None,
                };
                (filter.clone(), opts)
            })
            .collect();
        session.set_subscriptions(&want, broker);
        // Not needed by the bridge: a connection's saved exchanges.
        session.drop_saved();
        if let Some(durable) = session.persist(true) {
            durable.await?;
        }
        Ok(Outbox {
            broker: broker.clone(),
            clients: clients.clone(),
            session,
            _owner: owner,
        })
    }

    /// The queue: fan-out pushes into it, the bridge pops.
    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        &self.session.mailbox
    }

    /// Whether the remote is reachable: while it is not, QoS 0 messages are not queued
    /// (as for an away MQTT session), QoS 1/2 ones are.
    pub(crate) fn set_online(&self, online: bool) {
        self.session.mailbox.set_online(online);
    }

    /// The remote acknowledged (or refused for good) the delivery whose durable identity
    /// is `seq`: its durable copy goes. `None`: it had none (QoS 0, a republished retained
    /// value).
    pub(crate) fn done(&self, seq: Option<Seq>) {
        if let (Some(seq), Some(durable)) = (seq, &self.session.durable) {
            durable.acknowledge(seq);
        }
    }

    /// Put unacknowledged deliveries (oldest first) back at the front of the queue, so
    /// whoever opens the outbox next sends them first.
    pub(crate) fn put_back(&self, deliveries: Vec<Delivery>) {
        for d in deliveries.into_iter().rev() {
            self.session.mailbox.push_front(d);
        }
    }

    /// Release the session; it stays (away, never expiring) with its queue. The ownership
    /// goes when the outbox is dropped.
    pub(crate) async fn close(&self) {
        self.session.mailbox.set_online(false);
        if let Some(durable) = self.clients.registry().close(&self.session, &self.broker) {
            let _ = durable.await;
        }
    }

    /// Delete bridge `name`'s session and queue for good (the bridge was removed).
    pub(crate) async fn discard(clients: &Clients, broker: &Arc<Broker>, name: &str) {
        let registry = clients.registry();
        let mut opened = registry.open(&client_id(name), true, 0, broker);
        if let Some(prev) = &opened.previous {
            prev.released().await;
        }
        let _owner = match opened.owner.take() {
            Some(owner) => owner,
            None => opened.session.own_in_turn().await,
        };
        let _ = registry.close(&opened.session, broker);
    }

    /// Names of the bridges whose sessions exist (restored from disk or open).
    pub(crate) fn existing(clients: &Clients) -> Vec<String> {
        clients
            .registry()
            .client_ids()
            .into_iter()
            .filter_map(|id| id.strip_prefix(RESERVED_CLIENT_PREFIX).map(str::to_owned))
            .collect()
    }
}
