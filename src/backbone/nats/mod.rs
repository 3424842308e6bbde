//! The NATS JetStream backbone (`--cluster`, issue 11): N ponte nodes share one set of
//! things. What lives where, in NATS (names under `[cluster] prefix`, default `ponte`):
//!
//! | what | NATS | file |
//! |---|---|---|
//! | every accepted write, in order | stream `<prefix>_LOG`, subjects `<prefix>.{m,d,h}.…` | [`log`] |
//! | retained values (the authority) | KV bucket `<prefix>_retained`, key = the subject suffix | [`retained`] |
//! | node names (unique, heartbeat) | KV bucket `<prefix>_nodes` | [`connection`] |
//! | `$share` groups | one durable pull consumer per (group, filter) on the log | [`shared`] |
//!
//! [`log`] publishes writes (the lane, batching runs of them) and [`hear`] reads every
//! node's back; [`position`] numbers each write within a batch. [`mapping`] turns topics
//! into subjects and keys; [`envelope`] is what a message carries; [`connection`]
//! connects, provisions and claims the node name; [`health`] supervises the connection
//! (re-sync after a reconnect) and says whether the node is ready. The broker core sees only [`crate::backbone::Backbone`].

pub mod connection;
pub mod envelope;
pub mod health;
pub mod hear;
pub mod log;
pub mod mapping;
pub mod position;
pub mod retained;
pub mod sessions;
pub mod shared;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};

use super::{Backbone, ClusterConfig, Write};
use crate::broker::mailbox::Mailbox;
use crate::broker::Broker;
use crate::model::SubOptions;
use crate::model::TopicFilter;

pub use connection::ClusterError;

/// Header naming the node that published a log message (nodes skip their own).
pub const NODE_HEADER: &str = "Ponte-Node";
/// Header carrying a retained write's KV revision on its log message.
pub const REVISION_HEADER: &str = "Ponte-Revision";

/// A node of a ponte cluster over NATS.
#[derive(Clone)]
pub struct Nats {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("node", &self.inner.node)
            .field("ready", &self.inner.ready())
            .finish_non_exhaustive()
    }
}

/// What every part of the backbone shares.
pub(crate) struct Inner {
    /// `[cluster]`.
    pub(crate) config: ClusterConfig,
    /// This node's name.
    pub(crate) node: String,
    /// This run of the node (random per process start): a session record naming the node
    /// with another boot belongs to a previous run, which is gone.
    pub(crate) boot: u64,
    /// The NATS connection (reconnects by itself).
    pub(crate) client: async_nats::Client,
    /// JetStream over it.
    pub(crate) js: async_nats::jetstream::Context,
    /// The broker to hand other nodes' messages to, once attached.
    pub(crate) broker: OnceLock<Weak<Broker>>,
    /// The ordered publishing lane ([`log::Lane`]).
    pub(crate) lane: mpsc::UnboundedSender<log::Job>,
    /// The retained bucket, once provisioned.
    pub(crate) kv: RwLock<Option<async_nats::jetstream::kv::Store>>,
    /// The log stream, once provisioned.
    pub(crate) log: RwLock<Option<async_nats::jetstream::stream::Stream>>,
    /// The persistent MQTT sessions' bucket, once provisioned.
    pub(crate) sessions: RwLock<Option<async_nats::jetstream::kv::Store>>,
    /// Streams and buckets exist (since the last (re)connection).
    pub(crate) provisioned: AtomicBool,
    /// The mirror holds the whole bucket and the log is being heard.
    pub(crate) synced: AtomicBool,
    /// The node name is ours.
    pub(crate) claimed: AtomicBool,
    /// Why this node cannot run (its name is taken): the start fails with it.
    pub(crate) fatal: RwLock<Option<ClusterError>>,
    /// The last log sequence heard, so hearing resumes after it after a reconnect.
    pub(crate) heard: AtomicU64,
    /// Hearing has begun once (`heard` and the persistent sessions' marks are set): a
    /// session can be claimed only from then on.
    pub(crate) hearing: AtomicBool,
    /// Readiness changes, for [`Nats::wait_ready`].
    pub(crate) ready_tx: watch::Sender<bool>,
    /// Shared groups spanning nodes.
    pub(crate) shared: shared::Groups,
    /// Set at shutdown: background tasks end.
    pub(crate) closed: watch::Sender<bool>,
    /// The connection's events, until the supervisor takes them at [`Backbone::attach`].
    events: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<async_nats::Event>>>,
}

impl Inner {
    /// Whether writes can be taken now.
    pub(crate) fn ready(&self) -> bool {
        self.connected()
            && self.provisioned.load(Ordering::Acquire)
            && self.synced.load(Ordering::Acquire)
            && self.claimed.load(Ordering::Acquire)
    }

    /// Whether the NATS connection is up right now.
    pub(crate) fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Re-evaluate readiness and tell waiters.
    pub(crate) fn update_ready(&self) {
        let r = self.ready();
        self.ready_tx.send_if_modified(|v| {
            let changed = *v != r;
            *v = r;
            changed
        });
    }

    /// The broker, while it lives.
    pub(crate) fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.get().and_then(Weak::upgrade)
    }

    /// The full subject of a key (`<prefix>.<key>`).
    pub(crate) fn subject(&self, key: &str) -> String {
        let mut s = String::with_capacity(self.config.prefix.len() + 1 + key.len());
        s.push_str(&self.config.prefix);
        s.push('.');
        s.push_str(key);
        s
    }

    /// Bytes a subject takes besides the key: the prefix and its dot, or the KV subject
    /// `$KV.<bucket>.` (the longer of the two).
    pub(crate) fn room(&self) -> usize {
        (self.config.prefix.len() + 1).max(5 + self.config.retained_bucket().len())
    }

    /// Whether shutdown began.
    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}

impl Nats {
    /// Connect to `[cluster] urls` (retrying in the background while they are
    /// unreachable). Once a broker is attached ([`Backbone::attach`], done by
    /// [`Broker::new`]) a supervisor provisions the streams and buckets, claims the node
    /// name, fills the mirror and hears the log. Returns at once; see
    /// [`Nats::wait_ready`].
    pub async fn start(config: &ClusterConfig) -> Result<Nats, ClusterError> {
        config.validate()?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let client = connection::connect(config, events_tx).await?;
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(config.timeout())
            .ack_timeout(config.timeout())
            .build(client.clone());
        let (lane_tx, lane_rx) = mpsc::unbounded_channel();
        let (ready_tx, _) = watch::channel(false);
        let (closed, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            node: config.node_name(),
            boot: fastrand::u64(1..),
            config: config.clone(),
            client,
            js,
            broker: OnceLock::new(),
            lane: lane_tx,
            kv: RwLock::new(None),
            log: RwLock::new(None),
            sessions: RwLock::new(None),
            provisioned: AtomicBool::new(false),
            synced: AtomicBool::new(false),
            claimed: AtomicBool::new(false),
            fatal: RwLock::new(None),
            heard: AtomicU64::new(0),
            hearing: AtomicBool::new(false),
            ready_tx,
            shared: shared::Groups::default(),
            closed,
            events: parking_lot::Mutex::new(Some(events_rx)),
        });
        tokio::spawn(log::Lane::run(inner.clone(), lane_rx));
        Ok(Nats { inner })
    }

    /// Wait until the node is ready (connected, provisioned, name claimed, mirror in sync)
    /// or `limit` passed: `Ok(true)` ready, `Ok(false)` not yet (NATS unreachable: the
    /// node keeps trying), `Err` when it can never be (the node name is taken).
    pub async fn wait_ready(&self, limit: Duration) -> Result<bool, ClusterError> {
        let mut rx = self.inner.ready_tx.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(e) = self.inner.fatal.read().clone() {
                return Err(e);
            }
            if *rx.borrow_and_update() {
                return Ok(true);
            }
            // Woken by readiness changes; a fatal error is noticed within 100 ms.
            let step = tokio::time::Instant::now() + Duration::from_millis(100);
            let until = step.min(deadline);
            let _ = tokio::time::timeout_at(until, rx.changed()).await;
            if tokio::time::Instant::now() >= deadline {
                if let Some(e) = self.inner.fatal.read().clone() {
                    return Err(e);
                }
                return Ok(*rx.borrow());
            }
        }
    }

    /// The largest message the connected NATS server takes (`max_payload`), once
    /// connected.
    pub fn max_payload(&self) -> Option<usize> {
        self.inner
            .connected()
            .then(|| self.inner.client.server_info().max_payload)
            .filter(|m| *m > 0)
    }

    /// The keeper of persistent MQTT sessions in this cluster (sessions follow their
    /// client from node to node; see [`sessions`]). Its background tasks start now.
    pub fn keeper(&self) -> sessions::NatsKeeper {
        sessions::NatsKeeper::start(self.inner.clone())
    }

    /// What the start-up line says: servers, node, prefix.
    pub fn describe(&self) -> String {
        format!(
            "NATS {} as node {:?} (prefix {:?}, replicas {})",
            self.inner.config.urls.join(","),
            self.inner.node,
            self.inner.config.prefix,
            self.inner.config.replicas
        )
    }
}

impl Backbone for Nats {
    fn clustered(&self) -> bool {
        true
    }

    fn submit(&self, write: Write) {
        log::submit(&self.inner, write);
    }

    fn attach(&self, broker: Weak<Broker>) {
        let _ = self.inner.broker.set(broker);
        // The mirror and the log need the broker: supervise only from now on.
        if let Some(events) = self.inner.events.lock().take() {
            tokio::spawn(health::supervise(self.inner.clone(), events));
        }
    }

    fn join_shared(
        &self,
        group: &str,
        filter: &TopicFilter,
        member: &Arc<Mailbox>,
        opts: SubOptions,
    ) -> Option<bool> {
        Some(shared::join(&self.inner, group, filter, member, opts))
    }

    fn leave_shared(&self, group: &str, filter: &TopicFilter, mailbox_id: u64) -> Option<bool> {
        Some(self.inner.shared.leave(group, filter, mailbox_id))
    }

    fn ready(&self) -> bool {
        self.inner.ready()
    }

    fn node(&self) -> Option<&str> {
        Some(&self.inner.node)
    }

    fn close(&self) {
        self.inner.closed.send_replace(true);
        self.inner.shared.close();
        // A node holding its name frees it and then drains the connection (the heartbeat
        // task does both); otherwise drain now.
        if !self.inner.claimed.load(Ordering::Acquire) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let client = self.inner.client.clone();
                rt.spawn(async move {
                    let _ = client.drain().await;
                });
            }
        }
    }
}
