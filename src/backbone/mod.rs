//! The seam between this node's broker core and other ponte nodes.
//!
//! Every message that the core accepts is handed to the [`Backbone`] after local fan-out;
//! messages heard from other nodes come back through [`crate::broker::Broker::deliver_remote`],
//! which fans them out locally without storing or forwarding them again. Today the only
//! backbone is [`Local`] (a single node); a NATS backbone (subjects for live messages,
//! JetStream + KV for retained values) plugs in here without touching the front-ends.

use std::sync::Arc;

use crate::model::Message;

/// Where the core sends what other nodes must hear.
pub trait Backbone: Send + Sync + std::fmt::Debug {
    /// A message was accepted by this node (after it is durable, when retained).
    fn forward(&self, message: &Arc<Message>);
}

/// The single-node backbone: there is nobody else to tell.
#[derive(Debug, Default)]
pub struct Local;

impl Backbone for Local {
    fn forward(&self, _message: &Arc<Message>) {}
}
