//! One persistent session's handle on its durable state: what the MQTT front-end calls as
//! the session is opened, used and closed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use crate::model::{QoS, SubOptions, TopicFilter};
use crate::store::session::{SessionRecord, StoredInflight, StoredState, StoredSubscription};

use super::{DurableSessions, Keeper, Receipt, Seq, Track};

/// What a session record holds, as the session knows it: written on open/resume, on every
/// (un)subscribe, and when the client goes away.
#[derive(Debug, Clone)]
pub struct Record<I> {
    /// Session Expiry Interval in seconds once the client is away; `u32::MAX`: never.
    pub expiry: u32,
    /// When the client went away, `None` while it is connected: the expiry counts from
    /// here across restarts.
    pub away_since: Option<SystemTime>,
    /// The subscriptions with their options.
    pub subscriptions: I,
}

/// One unfinished outgoing exchange, as the protocol reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Its packet identifier.
    pub pkid: u16,
    /// How far it got.
    pub stage: Stage,
}

/// How far an outgoing exchange got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// PUBLISH sent at this QoS, waiting for PUBACK (1) or PUBREC (2): re-sent with DUP=1
    /// on resume.
    Published(QoS),
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP: only the PUBREL is re-sent
    /// (re-sending the PUBLISH could make the client deliver a QoS 2 message twice).
    Released,
}

/// One persistent session's durable state (see [`super`]): its record, its protocol state,
/// and which queued message is in flight under which packet id.
#[derive(Debug)]
pub struct DurableSession {
    /// The owner: the keeper and the fan-out's registry.
    owner: Arc<DurableSessions>,
    /// The client id the session is kept under (one allocation, shared by every op).
    client: Arc<str>,
    /// The session's mailbox, as registered for fan-out.
    mailbox_id: u64,
    /// Kept by the node-local keeper (an MQTT bridge's queue in a cluster).
    local: bool,
    /// Its place in the cluster's log, when its keeper's queue is that log.
    track: Option<Arc<Track>>,
    /// Outgoing packet id → sequence number of the queued message in flight under it: the
    /// entry is acknowledged once the exchange is over (PUBACK / PUBCOMP), and the stored
    /// protocol state names it so it can be re-sent after a crash.
    inflight: Mutex<HashMap<u16, Seq>>,
    /// The protocol state as last handed to the keeper, so an unchanged state is not
    /// written again and a change can be classified (must it be durable before the packets
    /// that follow from it go out?).
    written: Mutex<Option<Arc<StoredState>>>,
}

impl DurableSession {
    pub(super) fn new(
        owner: Arc<DurableSessions>,
        client: Arc<str>,
        mailbox_id: u64,
        local: bool,
        track: Option<Arc<Track>>,
    ) -> Self {
        DurableSession {
            owner,
            client,
            mailbox_id,
            local,
            track,
            inflight: Mutex::new(HashMap::new()),
            written: Mutex::new(None),
        }
    }

    /// Where this session is kept.
    fn keeper(&self) -> &dyn Keeper {
        self.owner.keeper_of(self.local)
    }

    /// The client id the session is kept under.
    pub fn client(&self) -> &Arc<str> {
        &self.client
    }

    /// Its place in the cluster's log, when it is kept there (see [`Track`]).
    pub fn track(&self) -> Option<&Arc<Track>> {
        self.track.as_ref()
    }

    /// The owner of every durable session (the keeper's claims and replays, the marks).
    pub fn owner(&self) -> &Arc<DurableSessions> {
        &self.owner
    }

    /// Taken as the connection ends: resolves later to whether the session was resumed
    /// by a new connection meanwhile, on any node ([`Keeper::resumed`]). `None`: the
    /// node's own bookkeeping knows.
    pub fn resumed_check(&self) -> Option<BoxFuture<'static, bool>> {
        self.keeper().resumed(&self.client)
    }

    /// Store the session record. With `wait`, the receipt to await before acknowledging
    /// what changed (CONNACK, SUBACK, UNSUBACK), so an acknowledged session or
    /// subscription survives `kill -9` however soon it follows; without, it still goes
    /// ahead of any later op of this session (a later publish's append, which is awaited).
    pub fn write_record<'a, I>(&self, record: Record<I>, wait: bool) -> Option<Receipt>
    where
        I: Iterator<Item = (&'a TopicFilter, &'a SubOptions)>,
    {
        self.keeper()
            .put_record(&self.client, self.stored_record(record), wait)
    }

    /// Store the session record and the protocol state a connection left behind (its
    /// unfinished exchanges in send order, inbound QoS 2 ids, next packet id): when the
    /// client goes away, and when a saved state is written again on resume. The receipt
    /// covers both.
    pub fn write_saved<'a, I, O>(
        &self,
        record: Record<I>,
        outgoing: O,
        inbound_qos2: impl Iterator<Item = u16>,
        next_pkid: u16,
        wait: bool,
    ) -> Option<Receipt>
    where
        I: Iterator<Item = (&'a TopicFilter, &'a SubOptions)>,
        O: Iterator<Item = Exchange>,
    {
        let keeper = self.keeper();
        let state = Arc::new(self.stored_state(outgoing, inbound_qos2, next_pkid));
        keeper.put_record(&self.client, self.stored_record(record), false);
        *self.written.lock() = Some(state.clone());
        // Ops take effect in order: this one durable means both are.
        keeper.put_state(&self.client, state, wait)
    }

    /// Bring the stored protocol state up to date with the live connection: called once per
    /// turn of the connection loop, after its events were handled and before anything it
    /// wrote goes out. `inbound_qos2` includes the ids the broker has handled whose PUBREC
    /// waits for this write.
    ///
    /// Returns the receipt to await *before* the connection's pending output is written
    /// when the change must be durable first: an inbound QoS 2 id recorded (its PUBREC
    /// follows) or released (PUBCOMP: the client may reuse the id at once), an outgoing
    /// QoS 2 PUBLISH sent (re-sent after a crash as a new message it would be delivered
    /// twice) or moved to PUBREL. QoS 1 sends and every acknowledgement ride along
    /// unawaited (after a crash they cost at most a duplicate QoS 1 delivery, which QoS 1
    /// allows). `None` when nothing changed or nothing needs waiting.
    pub fn sync<O>(
        &self,
        outgoing: O,
        inbound_qos2: impl Iterator<Item = u16>,
        next_pkid: u16,
    ) -> Option<Receipt>
    where
        O: Iterator<Item = Exchange> + Clone,
    {
        let state = self.stored_state(outgoing.clone(), inbound_qos2, next_pkid);
        let mut written = self.written.lock();
        let empty = StoredState::default();
        let prev = written.as_deref().unwrap_or(&empty);
        if prev.outgoing == state.outgoing && prev.inbound_qos2 == state.inbound_qos2 {
            if prev.log == state.log {
                return None;
            }
            // Only the place in the log moved (acknowledgements, fan-out): nobody waits.
            let state = Arc::new(state);
            *written = Some(state.clone());
            drop(written);
            return self.keeper().put_state(&self.client, state, false);
        }
        let qos2 = |e: &Exchange| {
            matches!(
                e.stage,
                Stage::Published(QoS::ExactlyOnce) | Stage::Released
            )
        };
        let mut wait = prev.inbound_qos2 != state.inbound_qos2;
        if !wait && outgoing.clone().any(|e| qos2(&e)) {
            let before: HashSet<(u16, bool)> =
                prev.outgoing.iter().map(|o| (o.pkid, o.released)).collect();
            wait = outgoing.filter(qos2).any(|e| {
                let released = e.stage == Stage::Released;
                !before.contains(&(e.pkid, released))
            });
        }
        let state = Arc::new(state);
        *written = Some(state.clone());
        drop(written);
        self.keeper().put_state(&self.client, state, wait)
    }

    /// The queued message `seq` went out under packet id `pkid`.
    pub fn sent(&self, pkid: u16, seq: Seq) {
        self.inflight.lock().insert(pkid, seq);
        if let Some(track) = &self.track {
            track.sent(seq.get());
        }
    }

    /// Exchanges ended: every message in flight under a packet id that is no longer in
    /// `in_flight` (the connection's outgoing packet ids) is acknowledged. Nobody waits.
    pub fn finished(&self, in_flight: impl Iterator<Item = u16>) {
        let mut inflight = self.inflight.lock();
        if inflight.is_empty() {
            return;
        }
        let live: Vec<u16> = in_flight.collect();
        inflight.retain(|pkid, seq| {
            let keep = live.contains(pkid);
            if !keep {
                self.done(*seq);
            }
            keep
        });
    }

    /// `seq` is finished: its queue entry goes, or (tracked in the log) it is done.
    fn done(&self, seq: Seq) {
        match &self.track {
            Some(track) => track.finished(seq.get()),
            None => self.keeper().acknowledge(&self.client, seq),
        }
    }

    /// The queued message `seq` is settled without an exchange: withheld by the ACL,
    /// expired, or discarded by the machine (larger than the client's Maximum Packet
    /// Size). Nobody waits.
    pub fn acknowledge(&self, seq: Seq) {
        self.done(seq);
    }

    /// End the session for good: its mailbox is no longer made durable, and its record,
    /// state and queue are deleted. Nobody waits.
    pub fn discard(&self) {
        self.owner.unregister(self.mailbox_id);
        self.keeper().discard(&self.client);
    }

    /// The session leaves this node without ending (its client went away, or another
    /// node took it over): its mailbox is no longer made durable here. Its record stays
    /// with the keeper.
    pub fn unregister(&self) {
        self.owner.unregister(self.mailbox_id);
    }

    /// The protocol state as stored, from the protocol's exchanges (their messages'
    /// sequence numbers from [`DurableSession::sent`]) and inbound QoS 2 ids.
    fn stored_state(
        &self,
        outgoing: impl Iterator<Item = Exchange>,
        inbound_qos2: impl Iterator<Item = u16>,
        next_pkid: u16,
    ) -> StoredState {
        // Read before the track: every message fanned out up to here is pending,
        // finished or in flight by the time the track is looked at.
        let fanned = self.track.as_ref().map(|_| {
            self.owner
                .marks()
                .fanned
                .load(std::sync::atomic::Ordering::Acquire)
        });
        let seqs = self.inflight.lock();
        let mut sent_qos = Vec::new();
        let outgoing = outgoing
            .map(|e| {
                if let Stage::Published(qos) = e.stage {
                    sent_qos.push((e.pkid, qos));
                }
                StoredInflight {
                    pkid: e.pkid,
                    seq: seqs.get(&e.pkid).copied(),
                    released: e.stage == Stage::Released,
                }
            })
            .collect();
        drop(seqs);
        let mut inbound_qos2: Vec<u16> = inbound_qos2.collect();
        inbound_qos2.sort_unstable();
        inbound_qos2.dedup();
        let log = match (&self.track, fanned) {
            (Some(track), Some(fanned)) => {
                let mut log = track.position(fanned);
                log.sent_qos = sent_qos;
                Some(log)
            }
            _ => None,
        };
        StoredState {
            next_pkid,
            outgoing,
            inbound_qos2,
            log,
        }
    }

    /// The record as stored (with, for a session tracked in the log, the sequence each
    /// subscription was made at).
    fn stored_record<'a, I>(&self, record: Record<I>) -> SessionRecord
    where
        I: Iterator<Item = (&'a TopicFilter, &'a SubOptions)>,
    {
        SessionRecord {
            expiry: record.expiry,
            away_since: record.away_since,
            subscriptions: record
                .subscriptions
                .map(|(f, o)| StoredSubscription {
                    filter: f.as_str().to_owned(),
                    qos: o.qos,
                    no_local: o.no_local,
                    retain_as_published: o.retain_as_published,
                    id: o.id,
                    since: self.track.as_ref().and_then(|t| t.since(f.as_str())),
                })
                .collect(),
        }
    }
}
