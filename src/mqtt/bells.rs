//! The bell of every live MQTT connection, so that shutdown reaches them all.
//!
//! A connection task waits on its socket, its timer, its mailbox and its takeover bell by
//! polling them itself (see `client`). Waiting on the shutdown signal as well would store
//! a waiter in every connection's task for its whole life — some 160 bytes of a `watch`
//! future per connection, most of them idle (issue 16). Instead each connection's
//! takeover bell ([`Doorbell`]) is listed here, and when shutdown is signalled the
//! front-end rings them all; a connection that hears its bell while the gateway is
//! shutting down closes with DISCONNECT 0x8B rather than as taken over. A list entry costs
//! a pointer.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::broker::doorbell::Doorbell;

/// The bells of the live connections (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Bells {
    /// Slots by index, and the free ones: a connection keeps its index to leave.
    slots: Mutex<Slots>,
}

/// The slab behind [`Bells`].
#[derive(Debug, Default)]
struct Slots {
    /// A slot per connection; `None` once it left (and in `free`).
    bells: Vec<Option<Arc<Doorbell>>>,
    /// Indices of the `None` slots, reused first.
    free: Vec<usize>,
}

impl Bells {
    /// List a connection's bell; the index to [`Bells::remove`] it with.
    pub(crate) fn add(&self, bell: Arc<Doorbell>) -> usize {
        let mut s = self.slots.lock();
        match s.free.pop() {
            Some(i) => {
                s.bells[i] = Some(bell);
                i
            }
            None => {
                s.bells.push(Some(bell));
                s.bells.len() - 1
            }
        }
    }

    /// The connection of slot `i` is over.
    pub(crate) fn remove(&self, i: usize) {
        let mut s = self.slots.lock();
        if let Some(slot) = s.bells.get_mut(i) {
            if slot.take().is_some() {
                s.free.push(i);
            }
        }
    }

    /// Ring every listed bell.
    pub(crate) fn ring_all(&self) {
        for bell in self.slots.lock().bells.iter().flatten() {
            bell.ring();
        }
    }

    /// Connections listed.
    #[cfg(test)]
    fn len(&self) -> usize {
        let s = self.slots.lock();
        s.bells.len() - s.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;

    #[test]
    fn every_listed_bell_rings_and_slots_are_reused() {
        let bells = Bells::default();
        let (a, b) = (Arc::new(Doorbell::new()), Arc::new(Doorbell::new()));
        let ia = bells.add(a.clone());
        let ib = bells.add(b.clone());
        bells.remove(ia);
        assert_eq!(bells.len(), 1);
        bells.ring_all();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(a.poll_rung(&mut cx).is_pending(), "a left before the ring");
        assert!(b.poll_rung(&mut cx).is_ready());
        let ic = bells.add(Arc::new(Doorbell::new()));
        assert_eq!(ic, ia, "the free slot is reused");
        bells.remove(ib);
        bells.remove(ib);
        assert_eq!(bells.len(), 1, "removing twice is harmless");
    }
}
