//! What joins ponte nodes together: the implementations of the broker core's seam to other
//! nodes, [`Backbone`] (defined in [`crate::broker::backbone`]).
//!
//! [`Local`] (a single node: nobody else to tell) is the core's own. [`nats::Nats`]
//! (`--cluster`, issue 11) makes N nodes share one set of things over NATS JetStream: every
//! accepted write is [`Backbone::submit`]ted and acknowledged only once the cluster's
//! message log has it (and, for a retained write, once the cluster's retained authority
//! accepted it by compare-and-set); other nodes' messages come back through
//! [`crate::broker::Broker::deliver_remote`]; shared subscriptions are the backbone's
//! ([`Backbone::join_shared`]) so each message reaches one member across all nodes.
//!
//! This module sits above the broker core (it calls into it); the core sees only the trait.

pub mod config;
pub mod nats;

pub use crate::broker::backbone::{Backbone, Committed, Local, Write};
pub use config::ClusterConfig;
