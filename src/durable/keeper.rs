//! The seam between the owner of durable sessions and where they are kept.

use std::fmt;
use std::sync::Arc;

use crate::model::{Message, QoS};
use crate::store::session::{LoadedSessions, Seq, SessionRecord, StoredState};

use super::Receipt;

/// Where persistent sessions are kept durable. [`super::LocalKeeper`] keeps them through
/// one writer thread over a [`crate::store::session::SessionStore`] engine (sled, memory,
/// an embedder's); a cluster keeper keeps them in NATS (issue 11), where the same
/// operations map onto a shared JetStream message log and a KV bucket of session records:
///
/// | operation | local writer | cluster (NATS) |
/// |---|---|---|
/// | [`Keeper::put_record`] (open/resume, subscriptions changed, away) | rewrite the record | compare-and-set the record: who owns the session moves with it |
/// | [`Keeper::put_state`] (protocol-state sync) | rewrite the state record | the same record, or a second key |
/// | [`Keeper::append`] | a queue entry under the next counter value | nothing to write: the message is already in the log, its log sequence is the `Seq` |
/// | [`Keeper::acknowledge`], [`Keeper::forget`] | delete the entry | drop the `Seq` from the session's unfinished set, move its log position |
/// | [`Keeper::discard`] | delete record, state and entries | delete the record |
/// | [`Keeper::take_loaded`] (restore) | scan the trees once at start | read the records, replay the log from each position through the session's filters |
///
/// Who owns a session is decided where its record is written at CONNECT: the owning
/// connection awaits that write before CONNACK ([`super::DurableSession::write_record`]),
/// and a write that fails refuses the CONNECT. Locally the node always owns its sessions
/// (the in-process owner lock of `mqtt::session::Session` orders connections); a cluster
/// keeper makes that write its compare-and-set, after the previous owner handed over (its
/// close wrote the last state) or was presumed dead.
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
}
