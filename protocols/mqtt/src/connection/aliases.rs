//! MQTT 5 topic aliases (3.3.2.3.4) of one connection: the ones the client set, and the
//! ones the server assigns to topics it sends repeatedly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::pkid::{self, PkidMap};

/// The client → server aliases of one connection: alias → topic.
pub(crate) type InboundAliases = PkidMap<String>;

/// Memory the client's aliases hold: the table and its topics.
pub(crate) fn inbound_heap_size(aliases: &InboundAliases) -> usize {
    pkid::heap_size(aliases) + aliases.values().map(String::capacity).sum::<usize>()
}

/// The server → client aliases of one connection. Aliases are handed out 1, 2, ... and
/// never freed, only reassigned: once all the client accepts are in use, the least
/// recently used one is given to the next new topic instead of sending every further topic
/// in full. A `BTreeMap` by last use keeps finding it O(log n).
#[derive(Debug, Default)]
pub(crate) struct OutboundAliases {
    /// Assigned aliases by topic: (alias, stamp of its last use).
    by_topic: HashMap<Arc<str>, (u16, u64)>,
    /// The same aliases by stamp of last use, oldest first.
    lru: BTreeMap<u64, Arc<str>>,
    /// Source of use stamps (increases by one per aliased PUBLISH).
    clock: u64,
}

impl OutboundAliases {
    /// Memory the table holds outside itself (its two maps; the topics are shared).
    pub(crate) fn heap_size(&self) -> usize {
        pkid::heap_size(&self.by_topic)
            + self.lru.len() * (std::mem::size_of::<(u64, Arc<str>)>() + 8)
    }

    /// The alias to use for `topic` when at most `limit` may be assigned: `(alias, first
    /// use)`, or `None` when the client takes no aliases. A new topic gets the next unused
    /// alias or, once all are in use, the least recently used one (reassigned by
    /// [`OutboundAliases::used`] when the PUBLISH is written). Nothing changes here, so a
    /// message that is then dropped leaves the table as it was.
    pub(crate) fn pick(&self, topic: &Arc<str>, limit: u16) -> Option<(u16, bool)> {
        if limit == 0 {
            return None;
        }
        if let Some((a, _)) = self.by_topic.get(topic) {
            return Some((*a, false));
        }
        let n = self.by_topic.len();
        if n < usize::from(limit) {
            // The next unused one is n + 1 (<= limit).
            return Some((n as u16 + 1, true));
        }
        let oldest = self.lru.values().next()?;
        self.by_topic.get(oldest).map(|(a, _)| (*a, true))
    }

    /// Records that a PUBLISH for `topic` was written with `alias` (`set`: topic and alias
    /// sent, the alias now stands for `topic`; otherwise the alias alone was sent).
    pub(crate) fn used(&mut self, topic: &Arc<str>, alias: u16, set: bool) {
        self.clock += 1;
        let stamp = self.clock;
        if let Some(entry) = self.by_topic.get_mut(topic) {
            self.lru.remove(&entry.1);
            entry.1 = stamp;
            self.lru.insert(stamp, topic.clone());
            return;
        }
        if set {
            // Reassigning the least recently used alias: forget the topic it stood for.
            if let Some((&old_stamp, old_topic)) = self.lru.first_key_value() {
                if self
                    .by_topic
                    .get(old_topic)
                    .is_some_and(|(a, _)| *a == alias)
                {
                    let old_topic = old_topic.clone();
                    self.lru.remove(&old_stamp);
                    self.by_topic.remove(&old_topic);
                }
            }
            self.by_topic.insert(topic.clone(), (alias, stamp));
            self.lru.insert(stamp, topic.clone());
        }
    }
}
