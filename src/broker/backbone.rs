//! The seam between this node's broker core and other ponte nodes: what the core asks of
//! a cluster, as a trait the core owns. [`Local`] (a single node: nobody else to tell)
//! costs the core one `bool` per publish; [`crate::backbone`] implements it over NATS
//! JetStream (`--cluster`). The trait lives here, below its implementations, so the core
//! never imports the module that imports it (architecture.md, "Layers").
//!
//! What the core needs from a clustered backbone, in one place:
//! - publish a message and await its durable acknowledgement with its log sequence number
//!   ([`Write`] → [`Committed`]);
//! - the retained authority: conditional writes decided cluster-wide, the local mirror kept
//!   current (through [`super::Broker`]'s `mirror_*` methods);
//! - hear other nodes' messages (after [`Backbone::attach`]), delivered through
//!   [`super::Broker::deliver_remote`];
//! - shared groups spanning nodes ([`Backbone::join_shared`]);
//! - readiness ([`Backbone::ready`]) for `/readyz`.

use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use super::mailbox::Mailbox;
use super::retained::{Precondition, WriteOutcome};
use super::Broker;
use crate::durable::Seq;
use crate::model::SubOptions;
use crate::model::{Message, TopicFilter};
use crate::store::StoreError;

/// A write this node accepted, for the cluster to make durable before it is acknowledged.
#[derive(Debug)]
pub struct Write {
    /// The message (a cheap clone: shared topic, payload and properties).
    pub message: Message,
    /// For a retained write: the condition, evaluated against the cluster-wide value.
    pub precondition: Precondition,
    /// Where the answer goes: resolved once the write is durable in the cluster, or why not.
    pub reply: oneshot::Sender<Result<Committed, StoreError>>,
}

/// A write the cluster made durable.
#[derive(Debug, Clone)]
pub struct Committed {
    /// What the retained write did (for a retained message): its version is the
    /// cluster-wide revision, the same ETag on every node.
    pub retained: Option<WriteOutcome>,
    /// The message's sequence number in the cluster's message log (`None` when nothing
    /// was logged: a failed precondition). Its durable identity: the same on every node.
    pub sequence: Option<Seq>,
}

/// Where the core sends what other nodes must hear, and asks what the cluster decides.
pub trait Backbone: Send + Sync + std::fmt::Debug {
    /// Whether writes go through [`Backbone::submit`] (a cluster). `false` (single node):
    /// the core never calls the other methods on the hot path.
    fn clustered(&self) -> bool {
        false
    }

    /// Make `write` durable in the cluster and answer through its `reply`. Called in the
    /// order the core accepted writes; writes of one MQTT connection (`Message::publisher`)
    /// reach the log in that order.
    fn submit(&self, write: Write) {
        let _ = write.reply.send(Err(StoreError::Closed));
    }

    /// Start hearing other nodes: their messages go to `broker`.
    fn attach(&self, _broker: Weak<Broker>) {}

    /// Make `member` a member of shared group `group` on `filter`, spanning nodes.
    /// `None`: not handled here (single node: the subscription trie does it); otherwise
    /// whether an existing membership was replaced.
    fn join_shared(
        &self,
        _group: &str,
        _filter: &TopicFilter,
        _member: &Arc<Mailbox>,
        _opts: SubOptions,
    ) -> Option<bool> {
        None
    }

    /// Leave a shared group; `None`: not handled here, else whether it was a member.
    fn leave_shared(&self, _group: &str, _filter: &TopicFilter, _mailbox_id: u64) -> Option<bool> {
        None
    }

    /// Whether this node can take writes now: connected, its streams and buckets exist and
    /// its mirror of the retained values is in sync. Always true for a single node. The
    /// readiness check named "backbone".
    fn ready(&self) -> bool {
        true
    }

    /// This node's name in the cluster, published as `$SYS/broker/node`.
    fn node(&self) -> Option<&str> {
        None
    }

    /// Stop (shutdown): no more writes are taken, background tasks end.
    fn close(&self) {}
}

/// The single-node backbone: there is nobody else to tell.
#[derive(Debug, Default)]
pub struct Local;

impl Backbone for Local {}
