//! The subscription index: a trie over topic levels with MQTT wildcards.
//!
//! Each node is one level; `+` and `#` subscribers sit in their own slots so that matching a
//! topic walks at most the levels of the topic times the wildcard branches, independent of the
//! number of subscriptions elsewhere in the tree.

use std::collections::HashMap;
use std::sync::Arc;

use super::mailbox::Mailbox;
use super::message::QoS;
use super::topic::{TopicFilter, TopicName};

/// One subscription: who, and at which granted QoS.
#[derive(Debug, Clone)]
struct Sub {
    /// The subscriber's queue.
    mailbox: Arc<Mailbox>,
    /// The QoS granted in SUBACK: deliveries are downgraded to it.
    qos: QoS,
}

#[derive(Debug, Default)]
struct Node {
    /// Children by exact level name.
    children: HashMap<Box<str>, Node>,
    /// The `+` child: matches any single level.
    plus: Option<Box<Node>>,
    /// Subscribers of `<this level>/#` (and of `#` at the root): they match this level and
    /// everything below it (MQTT-4.7.1-2).
    hash: Vec<Sub>,
    /// Subscribers whose filter ends exactly at this level.
    here: Vec<Sub>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.here.is_empty()
    }
}

/// The set of all subscriptions of every protocol.
#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    /// The root level.
    root: Node,
    /// Number of (filter, subscriber) pairs, for metrics.
    count: usize,
}

/// A subscriber matched by a topic, with the highest QoS among its matching subscriptions.
pub type Matched = (Arc<Mailbox>, QoS);

impl SubscriptionIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (filter, subscriber) pairs.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Add or replace a subscription. Returns true when it replaced an existing subscription
    /// of the same subscriber to the same filter (MQTT-3.8.4-3: the QoS is updated, not
    /// duplicated).
    pub fn insert(&mut self, filter: &TopicFilter, mailbox: Arc<Mailbox>, qos: QoS) -> bool {
        let mut node = &mut self.root;
        let mut slot_hash = false;
        for level in filter.levels() {
            match level {
                "#" => {
                    slot_hash = true;
                    break;
                }
                "+" => node = node.plus.get_or_insert_with(Default::default),
                l => node = node.children.entry(l.into()).or_default(),
            }
        }
        let list = if slot_hash {
            &mut node.hash
        } else {
            &mut node.here
        };
        if let Some(existing) = list.iter_mut().find(|s| s.mailbox.id() == mailbox.id()) {
            existing.qos = qos;
            return true;
        }
        list.push(Sub { mailbox, qos });
        self.count += 1;
        false
    }

    /// Remove one subscription. Returns whether it existed.
    pub fn remove(&mut self, filter: &TopicFilter, mailbox_id: u64) -> bool {
        let levels: Vec<&str> = filter.levels().collect();
        let removed = remove_rec(&mut self.root, &levels, mailbox_id);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Every subscriber whose filters match `topic`, each once, with the maximum granted QoS
    /// of its matching subscriptions (MQTT-3.3.5-1). `out` is cleared first; callers reuse it
    /// to avoid allocating per message.
    pub fn matches(&self, topic: &TopicName, out: &mut Vec<Matched>) {
        out.clear();
        let levels: Vec<&str> = topic.levels().collect();
        match_rec(&self.root, &levels, 0, topic.is_system(), out);
    }
}

fn add(out: &mut Vec<Matched>, subs: &[Sub]) {
    for s in subs {
        if let Some(existing) = out.iter_mut().find(|(m, _)| m.id() == s.mailbox.id()) {
            if s.qos > existing.1 {
                existing.1 = s.qos;
            }
        } else {
            out.push((s.mailbox.clone(), s.qos));
        }
    }
}

fn match_rec(node: &Node, levels: &[&str], depth: usize, system: bool, out: &mut Vec<Matched>) {
    // MQTT-4.7.2-1: a wildcard in the first level does not match a `$` topic.
    let wild_ok = !(depth == 0 && system);
    if wild_ok {
        add(out, &node.hash);
    }
    let Some((level, rest)) = levels.split_first() else {
        add(out, &node.here);
        return;
    };
    if let Some(child) = node.children.get(*level) {
        match_rec(child, rest, depth + 1, system, out);
    }
    if wild_ok {
        if let Some(plus) = &node.plus {
            match_rec(plus, rest, depth + 1, system, out);
        }
    }
}

fn remove_rec(node: &mut Node, levels: &[&str], id: u64) -> bool {
    let Some((level, rest)) = levels.split_first() else {
        return remove_from(&mut node.here, id);
    };
    match *level {
        "#" => remove_from(&mut node.hash, id),
        "+" => {
            let Some(plus) = node.plus.as_mut() else {
                return false;
            };
            let removed = remove_rec(plus, rest, id);
            if plus.is_empty() {
                node.plus = None;
            }
            removed
        }
        l => {
            let Some(child) = node.children.get_mut(l) else {
                return false;
            };
            let removed = remove_rec(child, rest, id);
            if child.is_empty() {
                node.children.remove(l);
            }
            removed
        }
    }
}

fn remove_from(list: &mut Vec<Sub>, id: u64) -> bool {
    let before = list.len();
    list.retain(|s| s.mailbox.id() != id);
    list.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::mailbox::OverflowPolicy;
    use proptest::prelude::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }
    fn t(s: &str) -> TopicName {
        TopicName::parse(s).unwrap()
    }
    fn mb() -> Arc<Mailbox> {
        Mailbox::new(10, OverflowPolicy::DropNewest)
    }

    #[test]
    fn mqtt_3_3_5_1_overlapping_subscriptions_deliver_once_at_max_qos() {
        let mut idx = SubscriptionIndex::new();
        let a = mb();
        idx.insert(&f("a/#"), a.clone(), QoS::AtMostOnce);
        idx.insert(&f("a/+"), a.clone(), QoS::ExactlyOnce);
        idx.insert(&f("a/b"), a.clone(), QoS::AtLeastOnce);
        let mut out = Vec::new();
        idx.matches(&t("a/b"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, QoS::ExactlyOnce);
    }

    #[test]
    fn mqtt_3_8_4_3_resubscribe_replaces() {
        let mut idx = SubscriptionIndex::new();
        let a = mb();
        assert!(!idx.insert(&f("x"), a.clone(), QoS::AtMostOnce));
        assert!(idx.insert(&f("x"), a.clone(), QoS::AtLeastOnce));
        assert_eq!(idx.len(), 1);
        let mut out = Vec::new();
        idx.matches(&t("x"), &mut out);
        assert_eq!(out[0].1, QoS::AtLeastOnce);
    }

    #[test]
    fn remove_prunes_and_stops_matching() {
        let mut idx = SubscriptionIndex::new();
        let a = mb();
        idx.insert(&f("a/+/c"), a.clone(), QoS::AtMostOnce);
        assert!(idx.remove(&f("a/+/c"), a.id()));
        assert!(!idx.remove(&f("a/+/c"), a.id()));
        assert!(idx.root.is_empty());
        let mut out = Vec::new();
        idx.matches(&t("a/b/c"), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn mqtt_4_7_2_1_dollar_not_matched_by_leading_wildcards() {
        let mut idx = SubscriptionIndex::new();
        let a = mb();
        idx.insert(&f("#"), a.clone(), QoS::AtMostOnce);
        idx.insert(&f("+/x"), a.clone(), QoS::AtMostOnce);
        let mut out = Vec::new();
        idx.matches(&t("$SYS/x"), &mut out);
        assert!(out.is_empty());
        idx.matches(&t("s/x"), &mut out);
        assert_eq!(out.len(), 1);
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("".to_string()),
            Just("$s".to_string())
        ]
    }
    fn filter_level() -> impl Strategy<Value = String> {
        prop_oneof![level(), Just("+".to_string())]
    }

    proptest! {
        /// The trie agrees with the reference matcher in `TopicFilter::matches`.
        #[test]
        fn trie_agrees_with_reference_matcher(
            filters in prop::collection::vec((prop::collection::vec(filter_level(), 1..4), any::<bool>()), 1..12),
            topic in prop::collection::vec(level(), 1..5),
        ) {
            let mut idx = SubscriptionIndex::new();
            let mut parsed = Vec::new();
            for (levels, hash) in &filters {
                let mut s = levels.join("/");
                if *hash { s.push_str("/#"); }
                let Ok(filter) = TopicFilter::parse(&s) else { continue };
                let m = mb();
                idx.insert(&filter, m.clone(), QoS::AtMostOnce);
                parsed.push((filter, m));
            }
            let topic = TopicName::parse(&topic.join("/"));
            prop_assume!(topic.is_ok());
            let topic = topic.unwrap();
            let mut out = Vec::new();
            idx.matches(&topic, &mut out);
            let mut got: Vec<u64> = out.iter().map(|(m, _)| m.id()).collect();
            got.sort();
            let mut want: Vec<u64> = parsed.iter().filter(|(f, _)| f.matches(&topic)).map(|(_, m)| m.id()).collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
