//! Which local message each of rumqttc's packet ids stands for.
//!
//! The bridge hands PUBLISH requests to rumqttc in order; rumqttc assigns packet ids as it
//! takes them and reports each as `Sent(pkid)` (or `Collided(pkid)` when the id is still
//! in use and the PUBLISH must wait for its acknowledgement), in the same order. So the
//! oldest handed message is the one the next fresh `Sent` names. A `Sent` for an id still
//! in flight is rumqttc re-sending it after a reconnect — except for a held-back PUBLISH:
//! rumqttc sends it (`Sent(pkid)`) while handling the acknowledgement that frees its id,
//! and reports that acknowledgement (`Done(pkid)`) just after, so for a moment two
//! messages share the id. `Done(pkid)` (PUBACK, PUBCOMP) completes one. After a
//! connection error, rumqttc keeps the exchanges it will resume; any other in flight was
//! ended by the remote with an error code.

use std::collections::{HashMap, HashSet, VecDeque};

/// One message handed to rumqttc, with its rank in the order of handing.
#[derive(Debug)]
struct Entry<T> {
    /// Order of handing; sorts the re-sends and what is put back at stop.
    rank: u64,
    /// What the bridge keeps about it (the delivery, to put back or forget).
    item: T,
}

/// What a `Sent(pkid)` meant.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent<T> {
    /// A QoS 0 message went out: nothing more will be heard of it.
    Fired(T),
    /// A QoS 1/2 message went out and waits for its acknowledgement.
    InFlight,
    /// rumqttc re-sent one already in flight (after a reconnect).
    Resent,
    /// Nothing was handed: the bridge and rumqttc disagree (logged by the caller).
    Unexpected,
}

/// Messages handed to rumqttc and not yet complete.
#[derive(Debug)]
pub(crate) struct Ledger<T> {
    /// Rank of the next message handed.
    next_rank: u64,
    /// Handed, no packet id yet; oldest first.
    handed: VecDeque<Entry<T>>,
    /// Sent under a packet id, waiting for PUBACK/PUBCOMP.
    inflight: HashMap<u16, Entry<T>>,
    /// Held back by rumqttc until its packet id is free.
    collided: Option<(u16, Entry<T>)>,
    /// A held-back message sent under an id whose previous message's `Done` is next.
    replacing: Option<(u16, Entry<T>)>,
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Ledger {
            next_rank: 0,
            handed: VecDeque::new(),
            inflight: HashMap::new(),
            collided: None,
            replacing: None,
        }
    }
}

impl<T> Ledger<T> {
    /// Record a message about to be handed to rumqttc (call before the request is sent).
    pub(crate) fn hand(&mut self, item: T) {
        self.handed.push_back(Entry {
            rank: self.next_rank,
            item,
        });
        self.next_rank += 1;
    }

    /// Messages handed and not complete: the bridge's out window.
    pub(crate) fn outstanding(&self) -> usize {
        self.handed.len()
            + self.inflight.len()
            + usize::from(self.collided.is_some())
            + usize::from(self.replacing.is_some())
    }

    /// rumqttc sent a PUBLISH under `pkid` (0: QoS 0).
    pub(crate) fn sent(&mut self, pkid: u16) -> Sent<T> {
        if pkid == 0 {
            return match self.handed.pop_front() {
                Some(e) => Sent::Fired(e.item),
                None => Sent::Unexpected,
            };
        }
        if self.collided.as_ref().is_some_and(|(p, _)| *p == pkid) {
            if let Some((p, e)) = self.collided.take() {
                match self.inflight.entry(p) {
                    // The acknowledgement that freed the id is reported next.
                    std::collections::hash_map::Entry::Occupied(_) => self.replacing = Some((p, e)),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(e);
                    }
                }
            }
            return Sent::InFlight;
        }
        if self.inflight.contains_key(&pkid) {
            return Sent::Resent;
        }
        match self.handed.pop_front() {
            Some(e) => {
                self.inflight.insert(pkid, e);
                Sent::InFlight
            }
            None => Sent::Unexpected,
        }
    }

    /// rumqttc held the oldest handed PUBLISH back: `pkid` is still in flight.
    pub(crate) fn collided(&mut self, pkid: u16) -> bool {
        match self.handed.pop_front() {
            Some(e) => {
                self.collided = Some((pkid, e));
                true
            }
            None => false,
        }
    }

    /// The exchange of `pkid` completed.
    pub(crate) fn done(&mut self, pkid: u16) -> Option<T> {
        let done = self.inflight.remove(&pkid).map(|e| e.item);
        if self.replacing.as_ref().is_some_and(|(p, _)| *p == pkid) {
            if let Some((p, e)) = self.replacing.take() {
                self.inflight.insert(p, e);
            }
        }
        done
    }

    /// After a connection error: the exchanges in flight that rumqttc will not resume
    /// (not in `kept`), oldest first. `released`: the packet id of a held-back message
    /// rumqttc was made to send anyway (its id's previous message was dropped), which
    /// counts as in flight from now on.
    pub(crate) fn dropped_except(&mut self, kept: &HashSet<u16>, released: Option<u16>) -> Vec<T> {
        if let Some((p, e)) = self.replacing.take() {
            // Its predecessor's `Done` was lost with the connection: the id is its own.
            self.inflight.insert(p, e);
        }
        let gone: Vec<u16> = self
            .inflight
            .keys()
            .filter(|p| !kept.contains(p))
            .copied()
            .collect();
        let mut out: Vec<Entry<T>> = gone
            .iter()
            .filter_map(|p| self.inflight.remove(p))
            .collect();
        out.sort_by_key(|e| e.rank);
        if released.is_some() && released == self.collided.as_ref().map(|(p, _)| *p) {
            if let Some((p, e)) = self.collided.take() {
                self.inflight.insert(p, e);
            }
        }
        out.into_iter().map(|e| e.item).collect()
    }

    /// Packet id → rank of every exchange in flight (the order rumqttc should re-send in).
    pub(crate) fn ranks(&self) -> HashMap<u16, u64> {
        let mut r: HashMap<u16, u64> = self.inflight.iter().map(|(p, e)| (*p, e.rank)).collect();
        for (p, e) in self.collided.iter().chain(&self.replacing) {
            r.entry(*p).or_insert(e.rank);
        }
        r
    }

    /// Everything not complete, oldest first (the bridge stops: these go back in the queue).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<Entry<T>> = self.inflight.drain().map(|(_, e)| e).collect();
        all.extend(self.collided.take().map(|(_, e)| e));
        all.extend(self.replacing.take().map(|(_, e)| e));
        all.extend(self.handed.drain(..));
        all.sort_by_key(|e| e.rank);
        all.into_iter().map(|e| e.item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_order_of_handing() {
        let mut l = Ledger::default();
        l.hand("a");
        l.hand("b0");
        l.hand("c");
        assert_eq!(l.sent(1), Sent::InFlight);
        assert_eq!(l.sent(0), Sent::Fired("b0"));
        assert_eq!(l.sent(2), Sent::InFlight);
        assert_eq!(l.outstanding(), 2);
        assert_eq!(l.sent(1), Sent::Resent, "a re-send after a reconnect");
        assert_eq!(l.done(2), Some("c"));
        assert_eq!(l.done(1), Some("a"));
        assert_eq!(l.done(1), None);
        assert_eq!(l.sent(3), Sent::Unexpected);
    }

    #[test]
    fn a_collision_waits_for_its_id() {
        let mut l = Ledger::default();
        l.hand("q2");
        l.hand("q1");
        l.hand("next");
        assert_eq!(l.sent(1), Sent::InFlight);
        assert_eq!(l.sent(2), Sent::InFlight);
        assert_eq!(l.done(2), Some("q1"));
        assert!(l.collided(1), "id 1 (QoS 2) is still in flight");
        // rumqttc sends the held-back one while handling the PUBCOMP that frees id 1,
        // and reports that PUBCOMP right after.
        assert_eq!(l.sent(1), Sent::InFlight);
        assert_eq!(l.outstanding(), 2);
        assert_eq!(l.done(1), Some("q2"));
        assert_eq!(l.sent(1), Sent::Resent, "a re-send of the new one");
        assert_eq!(l.done(1), Some("next"));
        assert_eq!(l.outstanding(), 0);
    }

    #[test]
    fn after_an_error_what_rumqttc_dropped_is_reported_and_stop_drains_in_order() {
        let mut l = Ledger::default();
        for x in ["a", "b", "c", "d"] {
            l.hand(x);
        }
        l.sent(1);
        l.sent(2);
        l.sent(3);
        let kept: HashSet<u16> = [1, 3].into();
        assert_eq!(l.dropped_except(&kept, None), vec!["b"]);
        assert_eq!(l.ranks().len(), 2);
        assert_eq!(l.drain(), vec!["a", "c", "d"]);
        assert_eq!(l.outstanding(), 0);
    }

    #[test]
    fn a_held_back_message_whose_id_was_dropped_goes_out_under_it() {
        let mut l = Ledger::default();
        l.hand("old");
        l.hand("waiting");
        l.sent(7);
        assert!(l.collided(7));
        // The remote refused "old" (v5 error code): rumqttc dropped it and was made to
        // send the held-back one under 7.
        assert_eq!(l.dropped_except(&HashSet::new(), Some(7)), vec!["old"]);
        assert_eq!(l.sent(7), Sent::Resent);
        assert_eq!(l.done(7), Some("waiting"));
    }
}
