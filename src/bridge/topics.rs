//! Topic mapping of one bridge: which local topics go out and under which remote name,
//! which remote topics come in and under which local name (mosquitto's `topic` rule:
//! local = `local_prefix` + T, remote = `remote_prefix` + T), and the echo guard that keeps
//! a 3.1.1 remote from sending a `both` message back.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::model::QoS;
use crate::model::{TopicFilter, TopicName};

use super::config::TopicRule;

/// One rule with its two filters parsed once.
#[derive(Debug, Clone)]
struct Compiled {
    /// `local_prefix` + pattern.
    local: TopicFilter,
    /// `remote_prefix` + pattern.
    remote: TopicFilter,
    /// Removed from a local topic going out.
    local_prefix: String,
    /// Removed from a remote topic coming in.
    remote_prefix: String,
    /// Highest QoS carried.
    qos: QoS,
    /// Carries local messages out.
    out: bool,
    /// Carries remote messages in.
    inward: bool,
}

/// The topic rules of one bridge, in configuration order (the first matching rule names
/// a topic when several match).
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// The rules.
    rules: Vec<Compiled>,
}

/// Where a local message goes at the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outward {
    /// The remote topic.
    pub topic: String,
    /// The rule's QoS: the message goes at min(its QoS, this).
    pub qos: QoS,
}

impl Rules {
    /// Compile `rules` (already validated: prefixes keep the filters valid).
    pub(crate) fn new(rules: &[TopicRule]) -> Self {
        Rules {
            rules: rules
                .iter()
                .map(|r| Compiled {
                    local: r.local_filter(),
                    remote: r.remote_filter(),
                    local_prefix: r.local_prefix.clone(),
                    remote_prefix: r.remote_prefix.clone(),
                    qos: r.qos.0,
                    out: r.goes_out(),
                    inward: r.comes_in(),
                })
                .collect(),
        }
    }

    /// The local subscriptions of the out side: each out rule's local filter at its QoS
    /// (one per filter, at the highest QoS of the rules sharing it).
    pub(crate) fn local_subscriptions(&self) -> Vec<(TopicFilter, QoS)> {
        let mut out: Vec<(TopicFilter, QoS)> = Vec::new();
        for r in self.rules.iter().filter(|r| r.out) {
            match out.iter_mut().find(|(f, _)| *f == r.local) {
                Some((_, q)) => *q = (*q).max(r.qos),
                None => out.push((r.local.clone(), r.qos)),
            }
        }
        out
    }

    /// The remote subscriptions of the in side: each in rule's remote filter at its QoS.
    pub(crate) fn remote_subscriptions(&self) -> Vec<(String, QoS)> {
        let mut out: Vec<(String, QoS)> = Vec::new();
        for r in self.rules.iter().filter(|r| r.inward) {
            match out.iter_mut().find(|(f, _)| f == r.remote.as_str()) {
                Some((_, q)) => *q = (*q).max(r.qos),
                None => out.push((r.remote.as_str().to_owned(), r.qos)),
            }
        }
        out
    }

    /// The local filters of the in rules (the remote's retained values under them are
    /// reconciled on connect).
    pub(crate) fn local_in_filters(&self) -> Vec<TopicFilter> {
        self.rules
            .iter()
            .filter(|r| r.inward)
            .map(|r| r.local.clone())
            .collect()
    }

    /// Where local `topic` goes out, if an out rule matches it.
    pub(crate) fn outward(&self, topic: &TopicName) -> Option<Outward> {
        let r = self
            .rules
            .iter()
            .find(|r| r.out && r.local.matches(topic))?;
        let rest = topic.as_str().strip_prefix(r.local_prefix.as_str())?;
        Some(Outward {
            topic: format!("{}{rest}", r.remote_prefix),
            qos: r.qos,
        })
    }

    /// The local name of remote `topic`, if an in rule matches it (`None` too when the
    /// result would not be a valid topic name).
    pub(crate) fn inward(&self, topic: &str) -> Option<TopicName> {
        let remote = TopicName::parse(topic).ok()?;
        let r = self
            .rules
            .iter()
            .find(|r| r.inward && r.remote.matches(&remote))?;
        let rest = topic.strip_prefix(r.remote_prefix.as_str())?;
        TopicName::parse(&format!("{}{rest}", r.local_prefix)).ok()
    }

    /// Whether an out rule matches local `topic`.
    pub(crate) fn is_out(&self, topic: &TopicName) -> bool {
        self.rules.iter().any(|r| r.out && r.local.matches(topic))
    }

    /// Whether an in rule brings local `topic` in (its local filter matches).
    pub(crate) fn is_in(&self, topic: &TopicName) -> bool {
        self.rules
            .iter()
            .any(|r| r.inward && r.local.matches(topic))
    }

    /// Whether remote `topic` would come back in (an in rule's remote filter matches it).
    pub(crate) fn comes_back(&self, remote_topic: &str) -> bool {
        TopicName::parse(remote_topic)
            .is_ok_and(|t| self.rules.iter().any(|r| r.inward && r.remote.matches(&t)))
    }
}

/// What a 3.1.1 remote may echo: MQTT 3.1.1 has no No Local, so a message the bridge
/// publishes on a remote topic that its own in subscription also matches comes straight
/// back. The guard remembers (topic, payload) of such messages sent and swallows one
/// matching arrival for each. Bounded: the oldest entries are forgotten first.
#[derive(Debug)]
pub(crate) struct EchoGuard {
    /// Hash of (topic, payload) → echoes still expected.
    expected: HashMap<u64, u32>,
    /// Insertion order, to forget the oldest when full.
    order: VecDeque<u64>,
    /// Most entries kept.
    capacity: usize,
}

impl EchoGuard {
    /// A guard remembering at most `capacity` sent messages.
    pub(crate) fn new(capacity: usize) -> Self {
        EchoGuard {
            expected: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn key(topic: &str, payload: &[u8]) -> u64 {
        let mut h = DefaultHasher::new();
        topic.hash(&mut h);
        payload.hash(&mut h);
        h.finish()
    }

    /// A message was sent on `topic` and will come back.
    pub(crate) fn sent(&mut self, topic: &str, payload: &[u8]) {
        let k = Self::key(topic, payload);
        *self.expected.entry(k).or_insert(0) += 1;
        self.order.push_back(k);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.forget_one(old);
            }
        }
    }

    fn forget_one(&mut self, k: u64) {
        if let Some(n) = self.expected.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                self.expected.remove(&k);
            }
        }
    }

    /// Whether an arriving message is the echo of one sent (and if so, forget that one).
    pub(crate) fn is_echo(&mut self, topic: &str, payload: &[u8]) -> bool {
        let k = Self::key(topic, payload);
        if !self.expected.contains_key(&k) {
            return false;
        }
        self.forget_one(k);
        if let Some(pos) = self.order.iter().position(|o| *o == k) {
            self.order.remove(pos);
        }
        true
    }

    /// Forget everything (the connection ended: echoes of what was sent on it may never
    /// come, and whatever is re-sent is remembered again).
    pub(crate) fn clear(&mut self) {
        self.expected.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bridge::{Direction, Filter, Qos};

    fn rule(pattern: &str, d: Direction, local: &str, remote: &str) -> TopicRule {
        TopicRule {
            pattern: Filter(TopicFilter::parse(pattern).unwrap()),
            direction: d,
            qos: Qos(QoS::AtLeastOnce),
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        }
    }

    fn t(s: &str) -> TopicName {
        TopicName::parse(s).unwrap()
    }

    #[test]
    fn prefixes_are_swapped_both_ways() {
        let r = Rules::new(&[
            rule("sensors/#", Direction::Out, "", "edge-1/"),
            rule("cmd/+", Direction::In, "remote/", "edge-1/"),
            rule("shared/#", Direction::Both, "site/", "cloud/"),
        ]);
        assert_eq!(
            r.outward(&t("sensors/a/b")).unwrap().topic,
            "edge-1/sensors/a/b"
        );
        assert_eq!(r.outward(&t("cmd/x")), None, "an in rule does not go out");
        assert_eq!(r.inward("edge-1/cmd/x").unwrap().as_str(), "remote/cmd/x");
        assert_eq!(
            r.inward("edge-1/sensors/a"),
            None,
            "an out rule does not come in"
        );
        assert_eq!(
            r.outward(&t("site/shared/k")).unwrap().topic,
            "cloud/shared/k"
        );
        assert_eq!(
            r.inward("cloud/shared/k").unwrap().as_str(),
            "site/shared/k"
        );
        assert_eq!(
            r.outward(&t("shared/k")),
            None,
            "the local prefix is part of the match"
        );
        assert_eq!(
            r.local_subscriptions()
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>(),
            ["sensors/#", "site/shared/#"]
        );
        assert_eq!(
            r.remote_subscriptions()
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>(),
            ["edge-1/cmd/+", "cloud/shared/#"]
        );
        assert!(r.comes_back("cloud/shared/k"));
        assert!(!r.comes_back("edge-1/sensors/a"));
    }

    #[test]
    fn system_topics_need_an_explicit_rule() {
        let r = Rules::new(&[rule("#", Direction::Out, "", "")]);
        assert!(
            r.outward(&t("$SYS/broker/uptime")).is_none(),
            "MQTT-4.7.2-1"
        );
        assert!(r.outward(&t("a")).is_some());
    }

    #[test]
    fn echo_guard_swallows_each_echo_once_and_is_bounded() {
        let mut g = EchoGuard::new(2);
        g.sent("a", b"1");
        g.sent("a", b"1");
        assert!(g.is_echo("a", b"1"));
        assert!(g.is_echo("a", b"1"));
        assert!(!g.is_echo("a", b"1"), "only as many as were sent");
        assert!(!g.is_echo("b", b"1"));
        g.sent("x", b"1");
        g.sent("y", b"1");
        g.sent("z", b"1");
        assert!(
            !g.is_echo("x", b"1"),
            "the oldest is forgotten beyond the bound"
        );
        assert!(g.is_echo("z", b"1"));
        g.clear();
        assert!(!g.is_echo("y", b"1"));
    }
}
