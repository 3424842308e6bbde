//! The seam between the owner of durable sessions and where they are kept.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::model::{Message, QoS, TopicFilter};
use crate::store::session::{LoadedSessions, Seq, SessionRecord, StoredState};
use crate::store::StoreError;

use super::Receipt;

/// What a CONNECT asks of a keeper that decides who owns a session ([`Keeper::claim`]).
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// Clean Start / Clean Session: whatever is kept for the client is discarded.
    pub clean: bool,
    /// Whether the session outlives the connection (expiry > 0, or a v5 Clean Start 0
    /// that may resume one): only then is a new session kept.
    pub persistent: bool,
    /// Where a new session's queue starts in the log: the last sequence this node has
    /// fanned out (nothing before it is for a session that does not exist yet).
    pub start: u64,
    /// The Session Expiry Interval the connection asks for (a resumed session takes it).
    pub expiry: u32,
    /// Which session object on this node makes the claim (its mailbox id): a takeover or a
    /// lost session later closes exactly its connection ([`Kick`]), never a newer one of
    /// the same client that happens to be claiming on this node at that moment.
    pub holder: u64,
}

/// A connection on this node that must close because another node takes its session
/// over, or this node lost it ([`Keeper::kicks`]).
#[derive(Debug, Clone)]
pub struct Kick {
    /// The client whose session it is.
    pub client: Arc<str>,
    /// The [`Claim::holder`] of the claim that made this node its owner: only that
    /// session's connection closes (now, or as soon as it is connected).
    pub holder: u64,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claimed {
    /// Nothing was kept for the client, or a clean start discarded it: a new session.
    Fresh,
    /// The client's session as its last owner left it (Session Present 1).
    Kept(Box<KeptSession>),
}

/// A session kept in the cluster, as a claim took it over.
#[derive(Debug)]
pub struct KeptSession {
    /// Expiry, subscriptions (each with the log sequence it was made at).
    pub record: SessionRecord,
    /// Unfinished exchanges, inbound QoS 2 ids, next packet id, and the queue's place in
    /// the log ([`StoredState::log`]).
    pub state: StoredState,
}

/// One message of the cluster's log, as a replay or a fetch returns it.
#[derive(Debug)]
pub struct Logged {
    /// Its log sequence: its durable identity on every node.
    pub seq: Seq,
    /// The message as published.
    pub message: Message,
    /// The client id of the MQTT connection that published it (for No Local).
    pub publisher: Option<Arc<str>>,
}

/// What a replay of the log ([`Keeper::replay`]) yields, in log order.
#[derive(Debug)]
pub enum Replayed {
    /// A message matching the filters.
    Message(Logged),
    /// This many log messages after the replay's start were deleted by the log's
    /// retention before the session came back: some may have been for it.
    Lost(u64),
    /// Everything up to and including this sequence has been replayed; the replay is over.
    End(u64),
    /// The replay could not be completed.
    Failed(StoreError),
}

/// Where persistent sessions are kept durable. [`super::LocalKeeper`] keeps them through
/// one writer thread over a [`crate::store::session::SessionStore`] engine (sled, memory,
/// an embedder's); the cluster's keeper (`crate::backbone::nats::sessions::NatsKeeper`,
/// issue 11) keeps each session as one value of a KV bucket and its queue as a place in
/// the shared JetStream message log ([`Keeper::logged`]):
///
/// | operation | local writer | cluster (NATS) |
/// |---|---|---|
/// | [`Keeper::put_record`] (open/resume, subscriptions changed, away) | rewrite the record | the session's one value (record, state, place in the log), compare-and-set on its last revision; a record saying "away" releases it |
/// | [`Keeper::put_state`] (protocol-state sync) | rewrite the state record | the same value, with the position and done set ([`StoredState::log`]) |
/// | [`Keeper::append`] | a queue entry under the next counter value | never called: a tracked session's `Seq` is the message's log sequence |
/// | [`Keeper::acknowledge`], [`Keeper::forget`] | delete the entry | nothing to write: the [`super::Track`] counts it finished; the next state carries it |
/// | [`Keeper::discard`] | delete record, state and entries | delete the value, expecting its revision |
/// | [`Keeper::take_loaded`] (restore) | scan the trees once at start | nothing: a session is claimed when its client connects |
/// | [`Keeper::claim`] | — (the node owns its sessions) | compare-and-set after the owner handed over or was presumed dead |
/// | [`Keeper::replay`], [`Keeper::fetch`] | — | a short-lived filtered ordered consumer from the position; direct gets |
///
/// Who owns a session is decided where its record is written at CONNECT: the owning
/// connection awaits that write before CONNACK ([`super::DurableSession::write_record`], or
/// in a cluster the claim), and a write that fails refuses the CONNECT. Locally the node
/// always owns its sessions (the in-process ownership of `mqtt::session::Session` orders
/// connections); a cluster keeper makes the claim its compare-and-set, after the previous
/// owner handed over (its close wrote the last state) or was presumed dead, and every later
/// write expects the revision of the one before, so a node that lost a session learns it.
///
/// The contract every keeper keeps: a client's operations take effect in the order they
/// were made, and a [`Receipt`] resolves only once its operation *and every one made before
/// it* are durable. The owner relies on this (a state that names an entry is never durable
/// before the entry; a session's record before its first message).
pub trait Keeper: Send + Sync + fmt::Debug {
    /// Everything kept when the node started: the sessions to restore. Once; later calls
    /// get nothing.
    fn take_loaded(&self) -> LoadedSessions;

    /// Store `client`'s session record (expiry, away-since, subscriptions). With `wait`,
    /// the receipt resolves once it is durable.
    fn put_record(&self, client: &Arc<str>, record: SessionRecord, wait: bool) -> Option<Receipt>;

    /// Store `client`'s protocol state (unfinished exchanges with the sequence numbers of
    /// their messages, inbound QoS 2 ids, next packet id).
    fn put_state(&self, client: &Arc<str>, state: Arc<StoredState>, wait: bool) -> Option<Receipt>;

    /// Make `message`, delivered at `qos` with `retain`, durable in `client`'s queue, and
    /// give it its durable identity.
    fn append(
        &self,
        client: &Arc<str>,
        message: &Message,
        qos: QoS,
        retain: bool,
        wait: bool,
    ) -> (Seq, Option<Receipt>);

    /// `client` is done with `seq`: acknowledged by the client, or settled without being
    /// sent (withheld by the ACL, expired, discarded as too large). Nobody waits.
    fn acknowledge(&self, client: &Arc<str>, seq: Seq);

    /// `seq` left `client`'s queue unsent: displaced by `drop-oldest`, or never queued (a
    /// full mailbox). Nobody waits.
    fn forget(&self, client: &Arc<str>, seq: Seq);

    /// End `client`'s session: record, state and queue. Nobody waits.
    fn discard(&self, client: &Arc<str>);

    /// Stop: make what was handed over durable, then accept nothing more (shutdown).
    fn close(&self);

    /// Whether this keeper's queue is a shared message log (a cluster keeper): then a
    /// message's `Seq` is its log sequence, given before fan-out; [`Keeper::append`],
    /// [`Keeper::acknowledge`] and [`Keeper::forget`] have nothing to write (the state
    /// record carries the session's place in the log, [`StoredState::log`]); sessions are
    /// taken with [`Keeper::claim`] and resumed by [`Keeper::replay`]. False: the keeper
    /// keeps queue entries, and the node owns its sessions.
    fn logged(&self) -> bool {
        false
    }

    /// Take ownership of `client`'s session for a connection on this node, before its
    /// CONNACK: by compare-and-set, after the previous owner handed it over or was
    /// presumed dead. A local keeper's node always owns its sessions.
    fn claim(
        &self,
        _client: &Arc<str>,
        _claim: Claim,
    ) -> BoxFuture<'static, Result<Claimed, StoreError>> {
        Box::pin(async { Ok(Claimed::Fresh) })
    }

    /// The log's messages after `after` whose topics match `filters`, in order, up to at
    /// least the log's end when the replay began (a logged keeper only).
    fn replay(&self, _after: u64, _filters: Vec<TopicFilter>) -> mpsc::Receiver<Replayed> {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Replayed::Failed(StoreError::Engine(
            "this keeper has no message log to replay".into(),
        )));
        rx
    }

    /// The log's messages with these sequences (`None` for one the log no longer has): the
    /// messages of a resumed session's unfinished exchanges (a logged keeper only).
    fn fetch(
        &self,
        _seqs: Vec<Seq>,
    ) -> BoxFuture<'static, Result<Vec<Option<Logged>>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Connections on this node that must close: another node takes the session over, or
    /// this node lost it. Taken once by the MQTT front-end.
    fn kicks(&self) -> Option<mpsc::UnboundedReceiver<Kick>> {
        None
    }

    /// Taken when `client`'s connection ends: resolves, when polled later, to whether the
    /// same session was resumed by a new connection meanwhile, on any node (a delayed will
    /// is then dropped, MQTT-3.1.3-9). `None`: the node knows by itself (its sessions are
    /// its own).
    fn resumed(&self, _client: &Arc<str>) -> Option<BoxFuture<'static, bool>> {
        None
    }
}
