//! Shared subscriptions spanning nodes (`$share/g/f`, MQTT 4.8.2; issue 11, point 6).
//!
//! Each (group, filter) is one durable JetStream pull consumer on the log, named from a
//! hash of both and shared by every node that has members of the group: JetStream hands
//! each message to exactly one of the nodes pulling, and that node gives each write it
//! carries to one of its local members (round-robin; a member that refuses, the next one),
//! then acknowledges it. A node none of whose members could take the message's first write
//! (they left meanwhile, or their mailboxes refused) naks it, so another node gets it; once
//! a write of the message is delivered, it is acknowledged and a later write no member
//! could take is dropped and counted, never offered again ([`settle`]). Local
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

/// A local member of a group, with its subscription's options.
type Member = (Arc<Mailbox>, SubOptions);

/// One group on one filter, on this node.
struct Group {
    /// Local members, in subscription order, with their options (copied on change, so
    /// the pulling task takes them for each write without holding the lock).
    members: Arc<Vec<Member>>,
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
        let members = Arc::make_mut(&mut g.members);
        if let Some(m) = members.iter_mut().find(|(m, _)| m.id() == member.id()) {
            m.1 = opts;
            return true;
        }
        members.push((member.clone(), opts));
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
            members: Arc::new(vec![(member.clone(), opts)]),
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
        Arc::make_mut(&mut g.members).retain(|(m, _)| m.id() != mailbox_id);
        let left = g.members.len() < before;
        if g.members.is_empty() {
            if let Some(g) = map.remove(&key) {
                g.task.abort();
            }
        }
        left
    }

    /// A group's local members now (none if the group is gone here).
    fn members(&self, key: &(String, String)) -> Arc<Vec<Member>> {
        self.map
            .lock()
            .get(key)
            .map_or_else(Default::default, |g| g.members.clone())
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
    let key = (group.to_owned(), filter.as_str().to_owned());
    // Round-robin cursor over the local members (only this task uses it).
    let mut next = 0usize;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| e.to_string())?;
        let seq = m.info().ok().map(|i| i.stream_sequence);
        let broker = inner.broker();
        // The message's writes (a batch carries several) this group wants.
        let writes = envelope::entries(&m.payload)
            .enumerate()
            .filter_map(|(i, entry)| {
                let decoded = entry
                    .map_err(|e| e.to_string())
                    .and_then(|e| hear::decode_message(inner, m.subject.as_str(), &e));
                match decoded {
                    // Hashed long topics and long filters are matched broadly by NATS:
                    // check here.
                    Ok((message, _, _)) => filter
                        .matches(&message.topic)
                        .then(|| (seq.and_then(|s| position::at(s, i)), Arc::new(message))),
                    Err(e) => {
                        tracing::warn!(subject = %m.subject, entry = i, error = %e, "shared group: log message not understood; skipped");
                        None
                    }
                }
            });
        let settled = settle(writes, |(sequence, message)| {
            let Some(broker) = &broker else {
                return false;
            };
            let members = inner.shared.members(&key);
            offer(members.len(), &mut next, |k| {
                let (member, opts) = &members[k];
                broker.deliver_shared(message, *sequence, member, *opts)
            })
        });
        let kind = match settled {
            Settled::Ack { dropped } => {
                if let Some(broker) = &broker {
                    for _ in 0..dropped {
                        broker.drop_shared();
                    }
                }
                AckKind::Ack
            }
            Settled::Nak => AckKind::Nak(Some(NAK_DELAY)),
        };
        if let Err(e) = m.ack_with(kind).await {
            tracing::debug!(error = %e, "shared group: acknowledgement not sent");
        }
    }
    Err("the consumer's messages ended".into())
}

/// What became of one log message offered to a group's local members.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// Every write was delivered, or `dropped` of them no member could take after an
    /// earlier one was delivered: acknowledge, never offer it again.
    Ack { dropped: usize },
    /// Nothing of it was delivered (its first write was refused by every local member):
    /// offer it again, to this or another node.
    Nak,
}

/// Offer each of a log message's `writes`, in order, with `offer` (true: a member took
/// it). The first write refused stops it with [`Settled::Nak`] only while nothing was
/// delivered; after that a refused write is dropped, as a full mailbox drops a `$share`
/// message on a single node, because a redelivery would give the writes already delivered
/// again (twice for QoS 0 and QoS 2) and, with a member that keeps refusing, could be
/// naked forever and stall the group.
fn settle<W>(writes: impl IntoIterator<Item = W>, mut offer: impl FnMut(&W) -> bool) -> Settled {
    let mut delivered = false;
    let mut dropped = 0;
    for w in writes {
        if offer(&w) {
            delivered = true;
        } else if !delivered {
            return Settled::Nak;
        } else {
            dropped += 1;
        }
    }
    Settled::Ack { dropped }
}

/// Offer one write to `members` local members, each once, starting at the round-robin
/// cursor `next`, until `give(member)` takes it. The cursor moves past the member that
/// took it (or by one if none did). Returns whether one took it.
fn offer(members: usize, next: &mut usize, mut give: impl FnMut(usize) -> bool) -> bool {
    if members == 0 {
        return false;
    }
    let start = *next % members;
    for k in 0..members {
        let i = (start + k) % members;
        if give(i) {
            *next = i + 1;
            return true;
        }
    }
    *next = start + 1;
    false
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

    /// Deliver `writes` writes to members whose `takes` say whether they accept anything,
    /// through the cursor `next`: the verdict and who got which write.
    fn run(writes: usize, takes: &[bool], next: &mut usize) -> (Settled, Vec<(usize, usize)>) {
        let mut got = Vec::new();
        let settled = settle(0..writes, |w| {
            offer(takes.len(), next, |k| {
                if takes[k] {
                    got.push((*w, k));
                }
                takes[k]
            })
        });
        (settled, got)
    }

    #[test]
    fn mqtt_4_8_2_a_refusing_member_passes_each_write_to_the_next_one() {
        // A batch of more writes than members, one member refusing everything: each write
        // goes to the other member, round-robin carries on, and the message is acknowledged
        // (it was naked forever when a write tried only the member the cursor named).
        let mut next = 0;
        let (settled, got) = run(4, &[true, false], &mut next);
        assert_eq!(settled, Settled::Ack { dropped: 0 });
        assert_eq!(got, vec![(0, 0), (1, 0), (2, 0), (3, 0)]);
        // Members that take round-robin still alternate.
        let (settled, got) = run(4, &[true, true, true], &mut 1);
        assert_eq!(settled, Settled::Ack { dropped: 0 });
        assert_eq!(got, vec![(0, 1), (1, 2), (2, 0), (3, 1)]);
    }

    #[test]
    fn mqtt_4_8_2_a_batch_partly_delivered_is_never_offered_again() {
        // The first write goes; then every member refuses: the rest is dropped (counted)
        // and the message acknowledged, so the first write is never delivered twice.
        let mut takes = vec![true, true];
        let mut calls = 0;
        let settled = settle(0..3, |_| {
            calls += 1;
            let ok = offer(2, &mut 0, |k| takes[k]);
            takes = vec![false, false];
            ok
        });
        assert_eq!(settled, Settled::Ack { dropped: 2 });
        assert_eq!(calls, 3);
    }

    #[test]
    fn mqtt_4_8_2_nothing_delivered_is_naked_for_another_node() {
        let (settled, got) = run(3, &[false, false], &mut 0);
        assert_eq!(settled, Settled::Nak);
        assert!(got.is_empty());
        // No local member left at all.
        let (settled, _) = run(1, &[], &mut 0);
        assert_eq!(settled, Settled::Nak);
        // Nothing the group wants in the message: acknowledged.
        assert_eq!(settle(0..0, |_: &i32| false), Settled::Ack { dropped: 0 });
    }
}
