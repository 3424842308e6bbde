//! Durable MQTT sessions: the records behind persistent sessions (issue 3).
//!
//! Three kinds of record, kept by a [`SessionStore`] engine for the one owner of durable
//! sessions ([`crate::durable`]), which alone makes and reads them:
//!
//! - a **session record** per persistent client: expiry, when the client went away (so
//!   expiry counts across restarts), subscriptions with their options;
//! - a **state record** per persistent client: its unfinished QoS 1/2 exchanges (packet id,
//!   queue sequence number, PUBLISH or PUBREL stage, in send order), inbound QoS 2 ids and
//!   next packet id — small, because it is rewritten as exchanges progress;
//! - a **queue entry** per QoS 1/2 message the session must receive, keyed by
//!   (client, global sequence number) so a prefix scan returns a session's messages in the
//!   order they were queued, with its v5 properties and expiry. An entry is appended before
//!   the publisher is acknowledged and removed (lazily, nobody waits) once the client
//!   acknowledged it;
//! - one **alive mark** for the whole broker: a wall-clock time rewritten every few seconds,
//!   so after a crash a session that was connected counts as away since about the crash.
//!
//! Their on-disk form is private to the engines (`session_codec.rs`).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::StoreError;
use crate::model::{Properties, QoS};

/// The durable identity of one queued message: the sequence number its queue entry is kept
/// under, assigned by whoever makes it durable (the local session writer's counter; in a
/// cluster, the shared message log's sequence). One counter orders every client's entries,
/// so a client's entries in key order are its messages in the order they were queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(NonZeroU64);

impl Seq {
    /// The first sequence number, 1.
    pub const FIRST: Seq = Seq(NonZeroU64::MIN);

    /// The sequence number `n`; `None` for 0, which the formats use for "none".
    pub fn new(n: u64) -> Option<Seq> {
        NonZeroU64::new(n).map(Seq)
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

/// One change to the durable session state.
#[derive(Debug, Clone)]
pub enum SessionOp {
    /// Create or replace a session record.
    PutSession(Arc<str>, Arc<SessionRecord>),
    /// Replace a client's protocol state (unfinished QoS 1/2 exchanges); written while the
    /// client is connected, whenever an exchange starts, moves on or ends.
    PutState(Arc<str>, Arc<StoredState>),
    /// Remove a session record, its protocol state and every queue entry of the client.
    DeleteSession(Arc<str>),
    /// Append a message to a client's queue.
    Append(Arc<str>, Seq, Arc<QueuedRecord>),
    /// Remove one queue entry (acknowledged, or dropped by the overflow policy).
    Remove(Arc<str>, Seq),
    /// The broker is alive at this wall-clock time: written every few seconds by the
    /// session writer, so after a crash the sessions that were connected can be counted
    /// as away since the last mark, i.e. since about when their connections died.
    MarkAlive(SystemTime),
}

/// One persisted subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The filter as the client sent it (a `$share/...` filter included).
    pub filter: String,
    /// Granted QoS.
    pub qos: QoS,
    /// MQTT 5 No Local, so a resumed subscription still skips the client's own messages.
    pub no_local: bool,
    /// MQTT 5 Retain As Published, kept for the same reason.
    pub retain_as_published: bool,
    /// MQTT 5 Subscription Identifier, still sent with every match after a restart.
    pub id: Option<u32>,
    /// In a cluster (a keeper whose queue is the shared message log): the log sequence
    /// the subscription was made at. A message at or before it was published before the
    /// subscription and is never replayed for it. `None` in local records, whose queue
    /// entries are made at fan-out. (0: before the log's first message.)
    pub since: Option<u64>,
}

/// A persistent session as stored: what changes only on CONNECT, (UN)SUBSCRIBE and
/// disconnect. The protocol state that changes with every packet is a [`StoredState`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session Expiry Interval in seconds once the client is away; `u32::MAX`: never.
    pub expiry: u32,
    /// When the client went away (wall clock, millisecond precision), `None` while it is
    /// connected: the expiry counts from here across restarts, so a session is not kept
    /// longer because the broker was down.
    pub away_since: Option<SystemTime>,
    /// The subscriptions, re-inserted into the index at start.
    pub subscriptions: Vec<StoredSubscription>,
}

/// One unfinished outgoing QoS 1/2 exchange as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredInflight {
    /// Its packet identifier, reused when it is re-sent (MQTT-4.4.0-1).
    pub pkid: u16,
    /// The queue entry holding the message, so it can be re-sent after a restart (`None`
    /// for a message that had no durable copy; retained messages sent at SUBSCRIBE time
    /// have one too).
    pub seq: Option<Seq>,
    /// PUBREC received and PUBREL sent: only the PUBREL is re-sent, never the PUBLISH
    /// (re-sending it could make the client deliver a QoS 2 message twice).
    pub released: bool,
}

/// The protocol state of a persistent session that carries no payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Next outgoing packet id to try, so ids are not reused eagerly after a restart.
    pub next_pkid: u16,
    /// Outgoing exchanges in send order: re-sent in this order on resume.
    pub outgoing: Vec<StoredInflight>,
    /// Inbound QoS 2 packet ids acknowledged with PUBREC and not yet released: a DUP
    /// re-send of these is not delivered again (MQTT 4.3.3 method B).
    pub inbound_qos2: Vec<u16>,
    /// In a cluster: where the session's queue stands in the shared message log. `None`
    /// in local records, which keep queue entries instead.
    pub log: Option<LogPosition>,
}

/// A persistent session's queue as a place in the cluster's shared message log (issue
/// 11): its messages are the log's messages after `position` that match its
/// subscriptions, minus `done` and the outgoing exchanges. Written in the same record as
/// the exchanges, so a crash can never keep one without the other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPosition {
    /// Every message for the session at or before this log sequence is finished
    /// (acknowledged, settled unsent or dropped) or is one of the outgoing exchanges.
    pub position: u64,
    /// Log sequences after `position` that are finished, ascending: a replay skips them.
    pub done: Vec<u64>,
    /// The QoS each outgoing PUBLISH was sent at, by packet id: the log keeps the message
    /// at the publisher's QoS, and a re-send must repeat the delivery's (MQTT-4.3.3).
    pub sent_qos: Vec<(u16, QoS)>,
}

/// A queued message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    /// Topic name.
    pub topic: String,
    /// Delivery QoS (already downgraded to the subscription's).
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Content type, if the message had one.
    pub content_type: Option<String>,
    /// Application properties (Payload Format, Response Topic, Correlation Data, User
    /// Properties in order), so a v5 subscriber gets the message as published after a
    /// restart too.
    pub properties: Option<Arc<Properties>>,
    /// MQTT 5 Message Expiry as a wall-clock deadline, so the interval sent after a restart
    /// is what remains of it (MQTT-3.3.2-6) and an expired message is not sent at all.
    pub expires_at: Option<SystemTime>,
    /// The payload.
    pub payload: Bytes,
}

/// Everything stored, loaded once at start.
#[derive(Debug, Default)]
pub struct LoadedSessions {
    /// Session records by client id.
    pub sessions: Vec<(String, SessionRecord)>,
    /// Protocol state by client id (absent: nothing was unfinished).
    pub states: HashMap<String, StoredState>,
    /// Queue entries: client id, sequence number, message — in key order (per client in
    /// sequence order).
    pub queued: Vec<(String, Seq, QueuedRecord)>,
    /// The last [`SessionOp::MarkAlive`] time stored (`None`: none yet, e.g. a database
    /// from before the marks): when the previous run was last known alive.
    pub alive_at: Option<SystemTime>,
}

/// A durable home for persistent sessions: the engine under the local session writer
/// ([`crate::durable`]), which owns it and hands it whole batches.
pub trait SessionStore: Send + 'static {
    /// Every stored session and queued message.
    fn load_sessions(&self) -> Result<LoadedSessions, StoreError>;
    /// Apply a batch; when this returns `Ok`, the batch survives a crash.
    fn apply_sessions(&mut self, ops: &[SessionOp]) -> Result<(), StoreError>;
}

/// The no-persistence session store (`--memory`, tests).
#[derive(Debug, Default)]
pub struct MemorySessions;

impl SessionStore for MemorySessions {
    fn load_sessions(&self) -> Result<LoadedSessions, StoreError> {
        Ok(LoadedSessions::default())
    }

    fn apply_sessions(&mut self, _ops: &[SessionOp]) -> Result<(), StoreError> {
        Ok(())
    }
}
