//! The subscription index: a trie over topic levels with MQTT wildcards.
//!
//! Each node is one level; `+` and `#` subscribers sit in their own slots so that matching a
//! topic walks at most the levels of the topic times the wildcard branches, independent of the
//! number of subscriptions elsewhere in the tree.
//!
//! MQTT 5 additions live here too: per-subscription options (No Local, Retain As Published,
//! Subscription Identifier) are merged per subscriber while matching, so overlapping
//! subscriptions still give one delivery that carries every matching identifier; shared
//! subscriptions (`$share/group/filter`) sit in groups beside the plain subscribers of the
//! same node, and each match picks one member of each group, round-robin, with an atomic
//! cursor so matching stays under the read lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::mailbox::Mailbox;
use crate::model::{QoS, SubOptions, TopicFilter, TopicName};

/// One subscription: who, and how.
#[derive(Debug, Clone)]
struct Sub {
    /// The subscriber's queue.
    mailbox: Arc<Mailbox>,
    /// Granted QoS and MQTT 5 options.
    opts: SubOptions,
}

/// The members of one shared subscription group on one filter (`$share/name/filter`).
#[derive(Debug)]
struct Group {
    /// The share name.
    name: Box<str>,
    /// Members in subscription order.
    members: Vec<Sub>,
    /// Round-robin cursor: advanced atomically at each match, so matching needs only the
    /// index's read lock.
    next: AtomicUsize,
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
    /// Shared groups whose filter is `<this level>/#`.
    shared_hash: Vec<Group>,
    /// Shared groups whose filter ends exactly at this level.
    shared_here: Vec<Group>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.here.is_empty()
            && self.shared_hash.is_empty()
            && self.shared_here.is_empty()
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

/// A subscriber matched by a topic, with its matching subscriptions merged: the highest QoS
/// (MQTT-3.3.5-1), Retain As Published if any asked for it, and every Subscription
/// Identifier (MQTT-3.3.4-3/5).
#[derive(Debug, Clone)]
pub struct Matched {
    /// The subscriber's queue.
    pub mailbox: Arc<Mailbox>,
    /// Highest granted QoS among the matching subscriptions.
    pub qos: QoS,
    /// Whether any matching subscription has Retain As Published.
    pub retain_as_published: bool,
    /// Identifiers of the matching subscriptions that have one (empty: no allocation).
    pub ids: Vec<u32>,
}

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
        self.insert_with(filter, None, mailbox, SubOptions::qos(qos))
    }

    /// Add or replace a subscription with MQTT 5 options; with `share`, as a member of the
    /// shared group of that name on `filter` (`$share/share/filter`). Returns true when it
    /// replaced the same subscriber's subscription to the same (group, filter).
    pub fn insert_with(
        &mut self,
        filter: &TopicFilter,
        share: Option<&str>,
        mailbox: Arc<Mailbox>,
        opts: SubOptions,
    ) -> bool {
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
        let sub = Sub { mailbox, opts };
        let list = match share {
            None => {
                if slot_hash {
                    &mut node.hash
                } else {
                    &mut node.here
                }
            }
            Some(name) => {
                let groups = if slot_hash {
                    &mut node.shared_hash
                } else {
                    &mut node.shared_here
                };
                let i = match groups.iter().position(|g| &*g.name == name) {
                    Some(i) => i,
                    None => {
                        groups.push(Group {
                            name: name.into(),
                            members: Vec::new(),
                            next: AtomicUsize::new(0),
                        });
                        groups.len() - 1
                    }
                };
                &mut groups[i].members
            }
        };
        if let Some(existing) = list.iter_mut().find(|s| s.mailbox.id() == sub.mailbox.id()) {
            existing.opts = opts;
            return true;
        }
        list.push(sub);
        self.count += 1;
        false
    }

    /// Remove one subscription. Returns whether it existed.
    pub fn remove(&mut self, filter: &TopicFilter, mailbox_id: u64) -> bool {
        self.remove_with(filter, None, mailbox_id)
    }

    /// Remove one subscription, shared (member of group `share`) or not. Returns whether it
    /// existed.
    pub fn remove_with(
        &mut self,
        filter: &TopicFilter,
        share: Option<&str>,
        mailbox_id: u64,
    ) -> bool {
        let levels: Vec<&str> = filter.levels().collect();
        let removed = remove_rec(&mut self.root, &levels, share, mailbox_id);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Every subscriber whose filters match `topic`, each once, with the maximum granted QoS
    /// of its matching subscriptions (MQTT-3.3.5-1). `out` is cleared first; callers reuse it
    /// to avoid allocating per message.
    pub fn matches(&self, topic: &TopicName, out: &mut Vec<Matched>) {
        self.matches_from(topic, None, out)
    }

    /// [`SubscriptionIndex::matches`] for a message published by the subscriber whose
    /// mailbox id is `publisher`: its No Local subscriptions are skipped (MQTT-3.8.3-3).
    /// Each matching shared group contributes one member, round-robin.
    pub fn matches_from(&self, topic: &TopicName, publisher: Option<u64>, out: &mut Vec<Matched>) {
        out.clear();
        let cx = Cx {
            system: topic.is_system(),
            publisher,
        };
        // The levels are cut from the name as the walk goes down (no list of them per
        // publish).
        match_rec(&self.root, Some(topic.as_str()), 0, &cx, out);
    }
}

/// What every step of one match needs.
struct Cx {
    /// Whether the topic starts with `$` (MQTT-4.7.2-1).
    system: bool,
    /// The publishing subscriber, for No Local.
    publisher: Option<u64>,
}

fn add_one(out: &mut Vec<Matched>, s: &Sub, cx: &Cx) {
    if s.opts.no_local && cx.publisher == Some(s.mailbox.id()) {
        return;
    }
    if let Some(existing) = out.iter_mut().find(|m| m.mailbox.id() == s.mailbox.id()) {
        if s.opts.qos > existing.qos {
            existing.qos = s.opts.qos;
        }
        existing.retain_as_published |= s.opts.retain_as_published;
        if let Some(id) = s.opts.id {
            if !existing.ids.contains(&id) {
                existing.ids.push(id);
            }
        }
    } else {
        out.push(Matched {
            mailbox: s.mailbox.clone(),
            qos: s.opts.qos,
            retain_as_published: s.opts.retain_as_published,
            ids: s.opts.id.into_iter().collect(),
        });
    }
}

fn add(out: &mut Vec<Matched>, subs: &[Sub], groups: &[Group], cx: &Cx) {
    for s in subs {
        add_one(out, s, cx);
    }
    for g in groups {
        // One member per message; No Local members are passed over for their own messages.
        let n = g.members.len();
        if n == 0 {
            continue;
        }
        let start = g.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let s = &g.members[(start + k) % n];
            if !(s.opts.no_local && cx.publisher == Some(s.mailbox.id())) {
                add_one(out, s, cx);
                break;
            }
        }
    }
}

/// Matches the levels `levels` (the rest of a topic name, `None` past its last level)
/// below `node`, which is `depth` levels down.
fn match_rec(node: &Node, levels: Option<&str>, depth: usize, cx: &Cx, out: &mut Vec<Matched>) {
    // MQTT-4.7.2-1: a wildcard in the first level does not match a `$` topic.
    let wild_ok = !(depth == 0 && cx.system);
    if wild_ok {
        add(out, &node.hash, &node.shared_hash, cx);
    }
    let Some(levels) = levels else {
        add(out, &node.here, &node.shared_here, cx);
        return;
    };
    let (level, rest) = match levels.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (levels, None),
    };
    if let Some(child) = node.children.get(level) {
        match_rec(child, rest, depth + 1, cx, out);
    }
    if wild_ok {
        if let Some(plus) = &node.plus {
            match_rec(plus, rest, depth + 1, cx, out);
        }
    }
}

fn remove_rec(node: &mut Node, levels: &[&str], share: Option<&str>, id: u64) -> bool {
    let Some((level, rest)) = levels.split_first() else {
        return match share {
            None => remove_from(&mut node.here, id),
            Some(name) => remove_shared(&mut node.shared_here, name, id),
        };
    };
    match *level {
        "#" => match share {
            None => remove_from(&mut node.hash, id),
            Some(name) => remove_shared(&mut node.shared_hash, name, id),
        },
        "+" => {
            let Some(plus) = node.plus.as_mut() else {
                return false;
            };
            let removed = remove_rec(plus, rest, share, id);
            if plus.is_empty() {
                node.plus = None;
            }
            removed
        }
        l => {
            let Some(child) = node.children.get_mut(l) else {
                return false;
            };
            let removed = remove_rec(child, rest, share, id);
            if child.is_empty() {
                node.children.remove(l);
            }
            removed
        }
    }
}

fn remove_shared(groups: &mut Vec<Group>, name: &str, id: u64) -> bool {
    let Some(i) = groups.iter().position(|g| &*g.name == name) else {
        return false;
    };
    let removed = remove_from(&mut groups[i].members, id);
    if groups[i].members.is_empty() {
        groups.swap_remove(i);
    }
    removed
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
        assert_eq!(out[0].qos, QoS::ExactlyOnce);
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
        assert_eq!(out[0].qos, QoS::AtLeastOnce);
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

    #[test]
    fn mqtt5_3_3_4_3_overlapping_subscriptions_carry_every_identifier_in_one_match() {
        let mut idx = SubscriptionIndex::new();
        let a = mb();
        let o = |qos, id| SubOptions {
            id: Some(id),
            ..SubOptions::qos(qos)
        };
        idx.insert_with(&f("a/#"), None, a.clone(), o(QoS::AtMostOnce, 1));
        idx.insert_with(&f("a/+"), None, a.clone(), o(QoS::AtLeastOnce, 2));
        let mut out = Vec::new();
        idx.matches(&t("a/b"), &mut out);
        assert_eq!(out.len(), 1);
        let mut ids = out[0].ids.clone();
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(out[0].qos, QoS::AtLeastOnce);
    }

    #[test]
    fn mqtt5_3_8_3_3_no_local_skips_only_the_publisher() {
        let mut idx = SubscriptionIndex::new();
        let (a, b) = (mb(), mb());
        let nl = SubOptions {
            no_local: true,
            ..SubOptions::qos(QoS::AtMostOnce)
        };
        idx.insert_with(&f("x"), None, a.clone(), nl);
        idx.insert_with(&f("x"), None, b.clone(), nl);
        let mut out = Vec::new();
        idx.matches_from(&t("x"), Some(a.id()), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].mailbox.id(), b.id());
    }

    #[test]
    fn mqtt5_4_8_2_shared_group_delivers_to_one_member_round_robin() {
        let mut idx = SubscriptionIndex::new();
        let (a, b, c) = (mb(), mb(), mb());
        idx.insert_with(
            &f("s/+"),
            Some("g"),
            a.clone(),
            SubOptions::qos(QoS::AtMostOnce),
        );
        idx.insert_with(
            &f("s/+"),
            Some("g"),
            b.clone(),
            SubOptions::qos(QoS::AtMostOnce),
        );
        idx.insert(&f("s/+"), c.clone(), QoS::AtMostOnce);
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for _ in 0..4 {
            idx.matches(&t("s/1"), &mut out);
            assert_eq!(out.len(), 2, "one group member plus the plain subscriber");
            let member = out.iter().find(|m| m.mailbox.id() != c.id()).unwrap();
            seen.push(member.mailbox.id());
        }
        assert_eq!(seen, vec![a.id(), b.id(), a.id(), b.id()]);
        assert!(idx.remove_with(&f("s/+"), Some("g"), a.id()));
        assert!(idx.remove_with(&f("s/+"), Some("g"), b.id()));
        assert!(idx.remove(&f("s/+"), c.id()));
        assert!(idx.root.is_empty());
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
            let mut got: Vec<u64> = out.iter().map(|m| m.mailbox.id()).collect();
            got.sort();
            let mut want: Vec<u64> = parsed.iter().filter(|(f, _)| f.matches(&topic)).map(|(_, m)| m.id()).collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
