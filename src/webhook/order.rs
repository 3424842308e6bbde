//! Events waiting for one webhook, kept in order per thing: at most one event of a thing
//! is being delivered at a time, so a thing's events arrive in the order they happened,
//! while a thing whose delivery is being retried holds back only its own later events.
//! Things take turns (round robin), so a busy thing does not starve the others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

/// Per-key FIFO queues with one item in flight per key.
#[derive(Debug)]
pub(crate) struct OrderQueue<K, T> {
    /// Waiting items by key, oldest first.
    waiting: HashMap<K, VecDeque<T>>,
    /// Keys with waiting items and nothing in flight, in turn order.
    ready: VecDeque<K>,
    /// Keys with an item in flight.
    busy: HashSet<K>,
    /// Items waiting (not in flight).
    len: usize,
}

impl<K: Clone + Eq + Hash, T> Default for OrderQueue<K, T> {
    fn default() -> Self {
        OrderQueue {
            waiting: HashMap::new(),
            ready: VecDeque::new(),
            busy: HashSet::new(),
            len: 0,
        }
    }
}

impl<K: Clone + Eq + Hash, T> OrderQueue<K, T> {
    /// Add an item behind the others of its key.
    pub(crate) fn push(&mut self, key: K, item: T) {
        let q = self.waiting.entry(key.clone()).or_default();
        let first = q.is_empty();
        q.push_back(item);
        self.len += 1;
        if first && !self.busy.contains(&key) {
            self.ready.push_back(key);
        }
    }

    /// The next item whose key has nothing in flight; its key is busy until
    /// [`OrderQueue::finish`].
    pub(crate) fn next(&mut self) -> Option<(K, T)> {
        let key = self.ready.pop_front()?;
        let q = self.waiting.get_mut(&key)?;
        let item = q.pop_front()?;
        if q.is_empty() {
            self.waiting.remove(&key);
        }
        self.len -= 1;
        self.busy.insert(key.clone());
        Some((key, item))
    }

    /// The item of `key` in flight is done (delivered or given up): the key's next item
    /// may go.
    pub(crate) fn finish(&mut self, key: &K) {
        self.busy.remove(key);
        if self.waiting.contains_key(key) {
            self.ready.push_back(key.clone());
        }
    }

    /// Items waiting, not counting those in flight.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Items in flight (one per busy key).
    pub(crate) fn in_flight(&self) -> usize {
        self.busy.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_in_flight_per_key_in_order_others_not_held() {
        let mut q = OrderQueue::default();
        q.push("a", 1);
        q.push("a", 2);
        q.push("b", 10);
        assert_eq!(q.next(), Some(("a", 1)));
        assert_eq!(q.next(), Some(("b", 10)), "a's second waits; b does not");
        assert_eq!(q.next(), None);
        q.push("b", 11);
        assert_eq!(q.next(), None, "b is busy");
        q.finish(&"a");
        assert_eq!(q.next(), Some(("a", 2)));
        q.finish(&"b");
        assert_eq!(q.next(), Some(("b", 11)));
        assert_eq!((q.len(), q.in_flight()), (0, 2));
        q.finish(&"a");
        q.finish(&"b");
        assert_eq!((q.len(), q.in_flight()), (0, 0));
    }

    #[test]
    fn keys_take_turns() {
        let mut q = OrderQueue::default();
        for i in 0..3 {
            q.push("busy", i);
        }
        q.push("quiet", 100);
        let (k, _) = q.next().unwrap();
        q.finish(&k);
        let (k2, _) = q.next().unwrap();
        assert_eq!((k, k2), ("busy", "quiet"));
    }
}
