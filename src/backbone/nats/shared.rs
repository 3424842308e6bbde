//! Shared subscriptions spanning nodes (`$share/g/f`, MQTT 4.8.2; issue 11, point 6).
//!
//! Each (group, filter) is one durable JetStream pull consumer on the log, named from a
//! hash of both and shared by every node that has members of the group: JetStream hands
//! each message to exactly one of the nodes pulling, and that node gives it to one of its
//! local members (round-robin), then acknowledges it. A node without a usable member
//! (they left meanwhile, or the mailbox refused) naks it, so another node gets it. Local
//! fan-out never sees these groups in a cluster (they are not in the subscription trie).
//! A new consumer starts after the last message this node had heard when its first
//! member joined (so a message acknowledged after the SUBACK is never missed while the
//! consumer is being created); once no node pulls from it for
//! [`INACTIVE`], NATS deletes it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::{envelope, hear, mapping, position, Inner};
use crate::broker::mailbox::Mailbox;
use crate::model::SubOptions;
use crate::model::TopicFilter;

/// A group's consumer is deleted by NATS after this long without a node pulling from it.
pub const INACTIVE: Duration = Duration::from_secs(60);
/// Unacknowledged messages a group's consumer hands out at once (across nodes).
const MAX_ACK_PENDING: i64 = 1024;
/// How soon a message naked by one node is offered again.
const NAK_DELAY: Duration = Duration::from_millis(100);

/// One group on one filter, on this node.
struct Group {
    /// Local members, in subscription order, with their options.
    members: Vec<(Arc<Mailbox>, SubOptions)>,
    /// Round-robin cursor.
    next: usize,
    /// The task pulling from the group's consumer.
    task: JoinHandle<()>,
}

/// This node's shared groups.
#[derive(Default)]
pub struct Groups {
    /// By (group name, filter).
    map: Mutex<HashMap<(String, String), Group>>,
}

/// Join `member` to `group` on `filter`; the first local member starts pulling.
pub(crate) fn join(
    inner: &Arc<Inner>,
    group: &str,
    filter: &TopicFilter,
    member: &Arc<Mailbox>,
    opts: SubOptions,
) -> bool {
    let key = (group.to_owned(), filter.as_str().to_owned());
    let mut map = inner.shared.map.lock();
    if let Some(g) = map.get_mut(&key) {
        if let Some(m) = g.members.iter_mut().find(|(m, _)| m.id() == member.id()) {
            m.1 = opts;
            return true;
        }
        g.members.push((member.clone(), opts));
        return false;
    }
    // Messages from the next one this node has not heard yet: nothing acknowledged to a
    // publisher after this SUBACK is missed while the consumer is being created.
    // (0: nothing heard yet — this node is not synced — so new messages only.)
    let heard = inner.heard.load(Ordering::Acquire);
    let start = if heard == 0 { 0 } else { heard + 1 };
    let task = tokio::spawn(consume(
        inner.clone(),
        group.to_owned(),
        filter.clone(),
        start,
    ));
    map.insert(
        key,
        Group {
            members: vec![(member.clone(), opts)],
            next: 0,
            task,
        },
    );
    false
}

impl Groups {
    /// Leave; the last local member stops this node's pulling.
    pub fn leave(&self, group: &str, filter: &TopicFilter, mailbox_id: u64) -> bool {
        let key = (group.to_owned(), filter.as_str().to_owned());
        let mut map = self.map.lock();
        let Some(g) = map.get_mut(&key) else {
            return false;
        };
        let before = g.members.len();
        g.members.retain(|(m, _)| m.id() != mailbox_id);
        let left = g.members.len() < before;
        if g.members.is_empty() {
            if let Some(g) = map.remove(&key) {
                g.task.abort();
            }
        }
        left
    }

    /// The next local member of a group (round-robin), if any.
    fn pick(&self, group: &str, filter: &str) -> Option<(Arc<Mailbox>, SubOptions)> {
        let mut map = self.map.lock();
        let g = map.get_mut(&(group.to_owned(), filter.to_owned()))?;
        if g.members.is_empty() {
            return None;
        }
        let i = g.next % g.members.len();
        g.next = g.next.wrapping_add(1);
        Some(g.members[i].clone())
    }

    /// Stop every group's pulling (shutdown).
    pub fn close(&self) {
        for (_, g) in self.map.lock().drain() {
            g.task.abort();
        }
    }
}

/// The durable consumer's name for a group on a filter.
pub fn consumer_name(prefix: &str, group: &str, filter: &str) -> String {
    let mut h = Sha256::new();
    h.update(group.as_bytes());
    h.update([0]);
    h.update(filter.as_bytes());
    let d = h.finalize();
    let mut name = format!("{prefix}_share_");
    for b in &d[..12] {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

/// Pull the group's messages and hand each to a local member, until this node's last
/// member leaves (the task is aborted) or shutdown; reconnects are retried.
async fn consume(inner: Arc<Inner>, group: String, filter: TopicFilter, start: u64) {
    let mut closed = inner.closed.subscribe();
    loop {
        if inner.is_closed() {
            return;
        }
        if inner.provisioned.load(Ordering::Acquire) && inner.connected() {
            if let Err(e) = consume_once(&inner, &group, &filter, start).await {
                tracing::debug!(group = %group, filter = %filter, error = %e, "shared group consumer stopped; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
    }
}

/// One consumer session.
async fn consume_once(
    inner: &Arc<Inner>,
    group: &str,
    filter: &TopicFilter,
    start: u64,
) -> Result<(), String> {
    let stream = inner
        .log
        .read()
        .clone()
        .ok_or("the log is not provisioned")?;
    let name = consumer_name(&inner.config.prefix, group, filter.as_str());
    let subjects: Vec<String> = mapping::filter_subjects(filter, inner.config.prefix.len() + 1)
        .into_iter()
        .map(|s| inner.subject(&s))
        .collect();
    let consumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("ponte $share/{group}/{filter}")),
                filter_subjects: subjects,
                ack_policy: AckPolicy::Explicit,
                deliver_policy: if start == 0 {
                    DeliverPolicy::New
                } else {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: start,
                    }
                },
                inactive_threshold: INACTIVE,
                max_ack_pending: MAX_ACK_PENDING,
                num_replicas: inner.config.replicas,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {name}: {e}"))?;
    let mut messages = consumer
        .stream()
        .expires(hear::HEAR_EXPIRES)
        .heartbeat(hear::HEAR_EXPIRES / 2)
        .messages()
        .await
        .map_err(|e| format!("consumer {name}: {e}"))?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| e.to_string())?;
        let seq = m.info().ok().map(|i| i.stream_sequence);
        // Each write of the message (a batch carries several) to one member; the message
        // is acknowledged when every write found one, else offered again (to this or
        // another node) a moment later.
        let mut delivered = true;
        for (i, entry) in envelope::entries(&m.payload).enumerate() {
            let decoded = entry
                .map_err(|e| e.to_string())
                .and_then(|e| hear::decode_message(inner, m.subject.as_str(), &e));
            let message = match decoded {
                Ok((message, _, _)) => message,
                Err(e) => {
                    tracing::warn!(subject = %m.subject, entry = i, error = %e, "shared group: log message not understood; skipped");
                    continue;
                }
            };
            // Hashed long topics and long filters are matched broadly by NATS: check here.
            if !filter.matches(&message.topic) {
                continue;
            }
            let sequence = seq.and_then(|s| position::at(s, i));
            delivered &= match (inner.broker(), inner.shared.pick(group, filter.as_str())) {
                (Some(broker), Some((member, opts))) => {
                    broker.deliver_shared(&Arc::new(message), sequence, &member, opts)
                }
                _ => false,
            };
            if !delivered {
                break;
            }
        }
        let kind = if delivered {
            AckKind::Ack
        } else {
            AckKind::Nak(Some(NAK_DELAY))
        };
        if let Err(e) = m.ack_with(kind).await {
            tracing::debug!(error = %e, "shared group: acknowledgement not sent");
        }
    }
    Err("the consumer's messages ended".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        let a = consumer_name("ponte", "g", "a/#");
        let b = consumer_name("ponte", "g/a", "#");
        assert_ne!(a, b, "the separator keeps group and filter apart");
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'));
    }
}
