//! Where a persistent session's queue stands in the cluster's shared message log (issue 11,
//! a keeper whose [`super::Keeper::logged`] is true).
//!
//! Such a session keeps no queue entries: its queue is the log's messages after its
//! *position* that match its subscriptions, minus the ones it has finished above the
//! position and the ones in flight (its outgoing exchanges, recorded with their log
//! sequences). A [`Track`] is what the owning node knows to write that down consistently:
//!
//! - `pending`: log sequences pushed into the session's mailbox and not yet sent or settled;
//! - `finished`: sequences acknowledged, settled unsent, or dropped (overflow);
//! - `since`: the log sequence each subscription was made at (messages at or before it were
//!   published before it and are never replayed for it);
//! - the gate: while a resume replays the log into the mailbox, live deliveries are held
//!   back (so the mailbox stays in log order), and after it, live deliveries the replay
//!   already covered are dropped.
//!
//! The position written is `min(fanned, replay floor, oldest pending - 1)`, never less than
//! the last one written: everything at or below it is finished or in flight. `fanned` is the
//! node's [`LogMarks::fanned`]: every log message up to it has been fanned out here, so a
//! message for the session at or below it is in `pending`, finished or in flight.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::store::session::LogPosition;

/// This node's progress through the log, as its fan-out to persistent sessions saw it.
#[derive(Debug, Default)]
pub struct LogMarks {
    /// The last log sequence matched against the subscription index, stored while the
    /// index is read-locked: a subscription inserted under the write lock was made after
    /// every message up to this one and before every later one (its `since`).
    pub matched: AtomicU64,
    /// The last log sequence whose fan-out here is complete: every message up to it that
    /// a session here subscribed to is in its mailbox (or was dropped).
    pub fanned: AtomicU64,
}

impl LogMarks {
    /// A message's fan-out is over.
    pub fn fanned(&self, seq: u64) {
        self.fanned.fetch_max(seq, Ordering::AcqRel);
    }
}

/// What a live delivery to a logged session does ([`Track::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Push it into the mailbox.
    Push,
    /// A resume is replaying the log into the mailbox: hold it until the replay is over.
    Hold,
    /// The replay of a resume already covered it: drop it.
    Duplicate,
}

/// The replay gate of a session (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// No replay happened: every live delivery goes in.
    Open,
    /// A replay is filling the mailbox.
    Replaying,
    /// A replay covered every message up to `high`.
    After(u64),
}

/// One logged session's place in the log (see the module docs).
#[derive(Debug)]
pub struct Track {
    /// Everything, under one short lock (never held across I/O).
    state: Mutex<TrackState>,
}

/// The mutable part of a [`Track`].
#[derive(Debug)]
struct TrackState {
    /// The last position computed (and handed to the keeper): never goes back.
    position: u64,
    /// Sequences in the mailbox (or held by the gate's flush), not sent or settled yet.
    pending: BTreeSet<u64>,
    /// Sequences finished above `position`.
    finished: BTreeSet<u64>,
    /// Filter → the log sequence the subscription was made at.
    since: HashMap<String, u64>,
    /// See [`Gate`].
    gate: Gate,
    /// While replaying: the last sequence the replay has handled. The position stays at or
    /// below it, since messages after it are not in the mailbox yet.
    floor: Option<u64>,
}

impl Track {
    /// A session whose queue starts after `position` (a new session: where the node's
    /// fan-out was; a resumed one: the position it was kept with).
    pub fn new(position: u64) -> Self {
        Track {
            state: Mutex::new(TrackState {
                position,
                pending: BTreeSet::new(),
                finished: BTreeSet::new(),
                since: HashMap::new(),
                gate: Gate::Open,
                floor: None,
            }),
        }
    }

    /// The session's queue starts after `position`: where a new session's fan-out began,
    /// or the position a resumed session was kept with.
    pub fn start_at(&self, position: u64) {
        self.state.lock().position = position;
    }

    /// What a live delivery of log sequence `seq` does; with [`Admit::Push`] it is now
    /// pending. With [`Admit::Hold`], `hold` was called (under the track's lock, so the
    /// end of the replay cannot miss it) to keep the delivery aside.
    pub fn admit(&self, seq: u64, hold: impl FnOnce()) -> Admit {
        let mut st = self.state.lock();
        match st.gate {
            Gate::Replaying => {
                hold();
                Admit::Hold
            }
            Gate::After(high) if seq <= high => Admit::Duplicate,
            _ => {
                st.pending.insert(seq);
                Admit::Push
            }
        }
    }

    /// A replayed delivery of `seq` goes into the mailbox: pending, and the replay's floor
    /// moves up to it.
    pub fn replayed(&self, seq: u64) {
        let mut st = self.state.lock();
        st.pending.insert(seq);
        st.floor = Some(st.floor.map_or(seq, |f| f.max(seq)));
    }

    /// The replay handled `seq` without queueing it (not for the session, finished, in
    /// flight): only the floor moves.
    pub fn passed(&self, seq: u64) {
        let mut st = self.state.lock();
        st.floor = Some(st.floor.map_or(seq, |f| f.max(seq)));
    }

    /// A resume begins replaying the log after the session's position: live deliveries
    /// are held until [`Track::end_replay`].
    pub fn begin_replay(&self) {
        let mut st = self.state.lock();
        st.gate = Gate::Replaying;
        st.floor = Some(st.position);
    }

    /// `seq` left the mailbox in an exchange (it is in flight: the exchanges record it).
    pub fn sent(&self, seq: u64) {
        self.state.lock().pending.remove(&seq);
    }

    /// `seq` is finished: acknowledged, settled unsent, or dropped.
    pub fn finished(&self, seq: u64) {
        let mut st = self.state.lock();
        st.pending.remove(&seq);
        if seq > st.position {
            st.finished.insert(seq);
        }
    }

    /// A subscription to `filter` was made at `seq` (kept when it already exists: a
    /// replaced subscription keeps what it was made at).
    pub fn subscribed(&self, filter: &str, seq: u64) {
        self.state
            .lock()
            .since
            .entry(filter.to_owned())
            .or_insert(seq);
    }

    /// The subscription to `filter` is gone.
    pub fn unsubscribed(&self, filter: &str) {
        self.state.lock().since.remove(filter);
    }

    /// What `filter`'s subscription was made at.
    pub fn since(&self, filter: &str) -> Option<u64> {
        self.state.lock().since.get(filter).copied()
    }

    /// The queue's place in the log now, given that every message up to `fanned` has been
    /// fanned out on this node (read *before* calling, so nothing fanned after the read can
    /// be missing from `pending`). Finished sequences at or below it are forgotten.
    pub fn position(&self, fanned: u64) -> LogPosition {
        let mut st = self.state.lock();
        let mut p = fanned;
        if let Some(floor) = st.floor {
            p = p.min(floor);
        }
        if let Some(first) = st.pending.first() {
            p = p.min(first.saturating_sub(1));
        }
        // Never back: everything at or below a written position stays finished, and
        // nothing at or below it can become pending again (the gate drops what a replay
        // covered; fan-out here is past it).
        let p = p.max(st.position);
        st.position = p;
        st.finished = st.finished.split_off(&(p + 1));
        LogPosition {
            position: p,
            done: st.finished.iter().copied().collect(),
            sent_qos: Vec::new(),
        }
    }

    /// The replay covered everything up to `high`: from now on a live delivery at or below
    /// it is a duplicate. What the gate held back (`take`, called under the lock, in
    /// arrival order) is returned filtered to what comes after `high`, which is now
    /// pending; the floor goes.
    pub fn end_replay<T>(&self, high: u64, take: impl FnOnce() -> Vec<(u64, T)>) -> Vec<(u64, T)> {
        let mut st = self.state.lock();
        st.gate = Gate::After(high);
        let mut held = take();
        held.retain(|(seq, _)| *seq > high);
        for (seq, _) in &held {
            st.pending.insert(*seq);
        }
        st.floor = None;
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_is_below_the_oldest_pending_and_never_goes_back() {
        let t = Track::new(10);
        assert_eq!(t.admit(12, || {}), Admit::Push);
        assert_eq!(t.admit(15, || {}), Admit::Push);
        assert_eq!(t.position(20).position, 11);
        t.sent(12);
        t.finished(12);
        let p = t.position(20);
        assert_eq!(
            (p.position, p.done),
            (14, vec![]),
            "12 finished, 15 pending"
        );
        t.finished(15);
        assert_eq!(t.position(20).position, 20, "nothing pending: fanned");
        assert_eq!(t.position(3).position, 20, "never back");
    }

    #[test]
    fn finished_above_an_older_pending_is_done() {
        let t = Track::new(0);
        t.admit(5, || {});
        t.admit(6, || {});
        t.admit(7, || {});
        t.sent(5);
        t.sent(7);
        t.finished(7);
        // 5 is in flight (the exchanges name it), 6 pending, 7 done above the position.
        let p = t.position(9);
        assert_eq!((p.position, p.done), (5, vec![7]));
    }

    #[test]
    fn replay_holds_live_deliveries_then_drops_what_it_covered() {
        let t = Track::new(100);
        t.begin_replay();
        let mut held = Vec::new();
        assert_eq!(t.admit(120, || held.push((120u64, ()))), Admit::Hold);
        assert_eq!(t.admit(130, || held.push((130u64, ()))), Admit::Hold);
        t.replayed(105);
        t.passed(110);
        assert_eq!(
            t.position(200).position,
            104,
            "below the replayed, pending 105"
        );
        t.finished(105);
        assert_eq!(
            t.position(200).position,
            110,
            "the floor: nothing after it is queued yet"
        );
        let held = t.end_replay(125, || held);
        assert_eq!(held.iter().map(|h| h.0).collect::<Vec<_>>(), vec![130]);
        assert_eq!(t.admit(124, || {}), Admit::Duplicate);
        assert_eq!(t.admit(140, || {}), Admit::Push);
        assert_eq!(t.position(200).position, 129, "130 held back, now pending");
    }
}
