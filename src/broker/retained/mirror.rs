//! The retained index as a *mirror* of the cluster's retained authority (`--cluster`,
//! issue 11): the NATS KV bucket decides every value and its revision; each node keeps all
//! values in this same in-memory index, so a GET or a new subscription never waits for
//! NATS. Two writers feed it — the node's own acknowledged writes (read-your-writes: the
//! value is in the mirror before the client hears 2xx) and the bucket's watch (everyone's
//! writes, in revision order) — and a change is applied only if it is newer than what the
//! mirror holds, so neither can bring back an older value. A deletion leaves a tombstone
//! until the watch reports it, for the same reason.
//!
//! `$SYS` values are node-local and still go through the local writer thread; the mirror
//! never touches them.

use std::collections::HashMap;
use std::sync::Arc;

use super::Retained;
use crate::broker::node_local;
use crate::model::{RetainedValue, TopicName};

impl Retained {
    /// Set `topic` to `value` (its version is the cluster's revision) unless the mirror
    /// already has that revision or a newer one. Returns whether it was applied.
    pub fn mirror_put(&self, topic: &TopicName, value: Arc<RetainedValue>) -> bool {
        let rev = value.version;
        {
            let mut tombs = self.tombstones.lock();
            if let Some(&dead) = tombs.get(topic) {
                if dead >= rev {
                    return false;
                }
                tombs.remove(topic);
            }
        }
        let mut idx = self.index.write();
        if idx.get(topic).is_some_and(|cur| cur.version >= rev) {
            return false;
        }
        idx.insert(topic.clone(), value);
        true
    }

    /// Remove `topic`'s value, deleted at revision `rev`, unless the mirror holds a newer
    /// one. `tombstone`: the delete comes from elsewhere than the bucket's watch (this
    /// node's own acknowledged delete, or one heard in the log), so a tombstone stays until
    /// the watch, which may still bring an older value, reports the deletion. Returns
    /// whether a value was removed.
    pub fn mirror_delete(&self, topic: &TopicName, rev: u64, tombstone: bool) -> bool {
        let local = tombstone;
        {
            let mut tombs = self.tombstones.lock();
            match tombs.get(topic).copied() {
                Some(dead) if dead > rev => return false,
                Some(_) if !local => {
                    tombs.remove(topic);
                }
                _ if local => {
                    tombs.insert(topic.clone(), rev);
                }
                _ => {}
            }
        }
        let mut idx = self.index.write();
        match idx.get(topic) {
            Some(cur) if cur.version < rev => {
                idx.remove(topic);
                true
            }
            _ => false,
        }
    }

    /// Replace every value the cluster owns with `snapshot` (a complete re-read of the
    /// bucket, after (re)connecting: values deleted while this node was away disappear,
    /// and a bucket recreated with lower revisions is taken as it is). `$SYS` values stay.
    pub fn mirror_replace(&self, snapshot: HashMap<TopicName, Arc<RetainedValue>>) {
        let mut idx = self.index.write();
        self.tombstones.lock().clear();
        idx.retain(|t, _| node_local(t));
        idx.extend(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QoS;
    use crate::store::memory::MemoryStore;
    use bytes::Bytes;
    use std::time::SystemTime;

    fn v(rev: u64, p: &'static str) -> Arc<RetainedValue> {
        Arc::new(RetainedValue {
            payload: Bytes::from_static(p.as_bytes()),
            content_type: None,
            qos: QoS::AtLeastOnce,
            version: rev,
            updated: SystemTime::now(),
        })
    }

    #[test]
    fn older_revisions_never_replace_newer_ones() {
        let r = Retained::open(MemoryStore).unwrap();
        let t = TopicName::parse("a").unwrap();
        assert!(r.mirror_put(&t, v(5, "five")));
        assert!(!r.mirror_put(&t, v(4, "four")), "the watch is behind");
        assert_eq!(r.get(&t).unwrap().payload, "five");
        // Our own delete at 7; the watch then reports 6 (older) and 7 (ours).
        assert!(r.mirror_delete(&t, 7, true));
        assert!(!r.mirror_put(&t, v(6, "six")), "tombstone keeps 6 out");
        assert!(r.get(&t).is_none());
        assert!(!r.mirror_delete(&t, 7, false));
        assert!(r.mirror_put(&t, v(8, "eight")), "newer than the delete");
        assert_eq!(r.get(&t).unwrap().version, 8);
    }

    #[test]
    fn replace_keeps_node_local_values() {
        let r = Retained::open(MemoryStore).unwrap();
        let sys = TopicName::parse("$SYS/broker/node").unwrap();
        let a = TopicName::parse("a").unwrap();
        r.index.write().insert(sys.clone(), v(1, "n"));
        r.mirror_put(&a, v(100, "old"));
        let b = TopicName::parse("b").unwrap();
        r.mirror_replace(HashMap::from([(b.clone(), v(3, "new"))]));
        assert!(r.get(&a).is_none(), "gone from the bucket, gone here");
        assert_eq!(r.get(&b).unwrap().version, 3);
        assert!(r.get(&sys).is_some());
    }
}
