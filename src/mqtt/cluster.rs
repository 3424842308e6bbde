//! A CONNECT in a cluster whose persistent sessions are kept in the message log (issue 11,
//! point 5): claim the session and resume it here, wherever its client was before.
//!
//! The claim ([`crate::durable::Keeper::claim`]) makes this node the session's owner by
//! compare-and-set, after its previous owner handed it over (its connection closed with v5
//! DISCONNECT 0x8E) or was presumed dead. Resuming then rebuilds, before CONNACK:
//!
//! 1. the subscriptions, into the index, each with the log sequence it was made at (Retain
//!    Handling 2: a resumed subscription is not new);
//! 2. the unfinished exchanges, their messages read from the log by sequence, re-sent in
//!    their order after CONNACK (PUBLISH with DUP=1 under the same packet id, or only the
//!    PUBREL once PUBREC came; MQTT-4.4.0-1);
//! 3. the queue: the log after the session's position, replayed through its subscriptions
//!    into its mailbox (skipping what it finished above the position and what is in flight),
//!    with the mailbox's bound and overflow policy, while live deliveries — held back from
//!    before step 1, when the first subscription enters the index — are merged behind it
//!    without a gap or a duplicate (see [`crate::durable::Track`]).
//!
//! Replaying before CONNACK keeps the merge exact (no SUBSCRIBE can change the
//! subscriptions meanwhile) and makes `max_queued` mean what it means on one node: what
//! waited for an away client is at most that much.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ponte_mqtt::{Inflight, SessionState};

use super::session::Session;
use super::{wire, Shared};
use crate::broker::mailbox::PushOutcome;
use crate::broker::Delivery;
use crate::durable::{Claim, Claimed, KeptSession, Logged, Replayed, Seq, Track};
use crate::model::{QoS, RetainHandling, SubOptions, TopicFilter};
use crate::store::StoreError;

/// One resumed subscription, for matching replayed messages.
struct Sub {
    filter: TopicFilter,
    options: SubOptions,
    /// The log sequence it was made at: earlier messages are not for it.
    since: u64,
}

/// Claim `session`'s client's session for this connection and resume what was kept of it
/// (see the module docs). Returns Session Present.
pub(super) async fn resume(
    session: &Arc<Session>,
    clean: bool,
    expiry: u32,
    shared: &Shared,
) -> Result<bool, StoreError> {
    let broker = &shared.broker;
    let Some(owner) = broker.durable() else {
        return Ok(false);
    };
    let keeper = owner.keeper();
    let start = owner.marks().fanned.load(Ordering::Acquire);
    let claimed = keeper
        .claim(
            &session.client_id,
            Claim {
                clean,
                persistent: session.persistent,
                start,
                expiry,
                holder: session.mailbox.id(),
            },
        )
        .await?;
    let track = session.durable.as_ref().and_then(|d| d.track()).cloned();
    let (kept, track) = match (claimed, track) {
        (Claimed::Kept(kept), Some(track)) => (kept, track),
        (_, track) => {
            if let Some(track) = track {
                track.start_at(start);
            }
            return Ok(false);
        }
    };
    let KeptSession { record, state } = *kept;
    let log = state.log.clone().unwrap_or_default();
    track.start_at(log.position);
    // Live deliveries are held from before the first subscription enters the index (step
    // 1) until the replay is over (step 3): one that came in between would otherwise go
    // into the mailbox ahead of older replayed messages, and again from the replay.
    broker.begin_replay(&track);
    session.set_expiry(expiry);

    // 1. Subscriptions.
    let mut subs = Vec::with_capacity(record.subscriptions.len());
    for stored in record.subscriptions {
        let Ok(filter) = TopicFilter::parse(&stored.filter) else {
            tracing::warn!(client_id = %session.client_id, filter = %stored.filter, "kept subscription is not a valid filter; skipped");
            continue;
        };
        let options = SubOptions {
            qos: stored.qos,
            no_local: stored.no_local,
            retain_as_published: stored.retain_as_published,
            id: stored.id,
        };
        if let Some(since) = stored.since {
            track.subscribed(filter.as_str(), since);
        }
        broker.subscribe_with(&filter, &session.mailbox, options, RetainHandling::Never);
        session.restored_subscription(filter.clone(), options);
        if !filter.as_str().starts_with("$share/") {
            let since = track.since(filter.as_str()).unwrap_or(0);
            subs.push(Sub {
                filter,
                options,
                since,
            });
        }
    }

    // 2. Unfinished exchanges.
    let durable = session.durable.as_ref();
    let sent_qos: HashMap<u16, QoS> = log.sent_qos.iter().copied().collect();
    let wanted: Vec<Seq> = state
        .outgoing
        .iter()
        .filter(|o| !o.released)
        .filter_map(|o| o.seq)
        .collect();
    let fetched = match keeper.fetch(wanted).await {
        Ok(f) => f,
        Err(e) => {
            broker.abort_replay(&session.mailbox);
            return Err(e);
        }
    };
    let mut fetched: HashMap<Seq, Logged> =
        fetched.into_iter().flatten().map(|l| (l.seq, l)).collect();
    let mut outgoing = Vec::with_capacity(state.outgoing.len());
    let mut in_flight = HashSet::new();
    for o in &state.outgoing {
        if let Some(seq) = o.seq {
            in_flight.insert(seq.get());
        }
        if o.released {
            if let (Some(d), Some(seq)) = (durable, o.seq) {
                d.sent(o.pkid, seq);
            }
            outgoing.push(Inflight::PubRel { pkid: o.pkid });
            continue;
        }
        // No copy in the log (a retained value sent at SUBSCRIBE): nothing to re-send.
        let Some(seq) = o.seq else {
            continue;
        };
        let qos = sent_qos.get(&o.pkid).copied();
        match fetched.remove(&seq) {
            Some(l) => {
                let (matched, retain, ids) = matching(&subs, &l, &session.client_id);
                let qos = qos
                    .or(matched.map(|m| m.min(l.message.qos)))
                    .unwrap_or(l.message.qos);
                let out = wire::outgoing(&l.message, qos, retain && l.message.retain, ids);
                if let Some(d) = durable {
                    d.sent(o.pkid, seq);
                }
                outgoing.push(Inflight::Publish {
                    pkid: o.pkid,
                    message: out,
                });
            }
            None if qos == Some(QoS::ExactlyOnce) => {
                // Gone from the log (retention) while in flight: only a PUBREL can still
                // end the exchange on the client's side (it answers PUBCOMP either way).
                tracing::warn!(client_id = %session.client_id, seq = seq.get(), "message of an unfinished QoS 2 exchange is no longer in the log; ending the exchange with PUBREL");
                if let Some(d) = durable {
                    d.sent(o.pkid, seq);
                }
                outgoing.push(Inflight::PubRel { pkid: o.pkid });
            }
            None => {
                tracing::warn!(client_id = %session.client_id, seq = seq.get(), "message of an unfinished exchange is no longer in the log; not re-sent");
                track.finished(seq.get());
            }
        }
    }
    session.save(SessionState {
        outgoing,
        inbound_qos2: state.inbound_qos2,
        next_pkid: state.next_pkid.max(1),
    });

    // 3. The queue.
    let skip: HashSet<u64> = log.done.iter().copied().chain(in_flight).collect();
    replay(session, shared, &track, &subs, log.position, skip).await?;
    Ok(true)
}

/// Replay the log after `position` into the session's mailbox (step 3 of the module docs);
/// the gate holding live deliveries back was closed before step 1.
async fn replay(
    session: &Arc<Session>,
    shared: &Shared,
    track: &Arc<Track>,
    subs: &[Sub],
    position: u64,
    skip: HashSet<u64>,
) -> Result<(), StoreError> {
    let broker = &shared.broker;
    let Some(owner) = broker.durable() else {
        return Ok(());
    };
    let filters: Vec<TopicFilter> = subs.iter().map(|s| s.filter.clone()).collect();
    let queue_qos0 = shared.config.mqtt.queue_qos0;
    let mailbox = &session.mailbox;
    let mut rx = owner.keeper().replay(position, filters);
    let (mut queued, mut dropped, mut lost) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let high = loop {
        let next = rx.recv().await;
        let l = match next {
            Some(Replayed::Message(l)) => l,
            Some(Replayed::Lost(n)) => {
                lost += n;
                continue;
            }
            Some(Replayed::End(high)) => break high,
            Some(Replayed::Failed(e)) => {
                broker.abort_replay(mailbox);
                return Err(e);
            }
            None => {
                broker.abort_replay(mailbox);
                return Err(StoreError::Engine("the replay of the log stopped".into()));
            }
        };
        let seq = l.seq.get();
        tracing::trace!(client_id = %session.client_id, seq, topic = %l.message.topic, subs = subs.len(), "replayed");
        if skip.contains(&seq) {
            track.passed(seq);
            continue;
        }
        let (qos, retain, ids) = matching(subs, &l, &session.client_id);
        let Some(qos) = qos.map(|q| q.min(l.message.qos)) else {
            track.passed(seq);
            continue;
        };
        if l.message.expired(Instant::now()) {
            broker.metrics.expired.fetch_add(1, Ordering::Relaxed);
            track.passed(seq);
            continue;
        }
        let retain = retain && l.message.retain;
        let d = Delivery {
            message: Arc::new(l.message),
            qos,
            retain,
            subscription_ids: ids,
            durable: None,
            log_seq: Some(l.seq),
        };
        if qos == QoS::AtMostOnce {
            // Not kept across a crash, and for an away client only with `queue_qos0`.
            track.passed(seq);
            if queue_qos0 {
                mailbox.push(d);
            }
            continue;
        }
        match broker.push_replayed(mailbox, track, d) {
            PushOutcome::Queued | PushOutcome::ReplacedOldest => queued += 1,
            PushOutcome::Dropped | PushOutcome::Overflowed | PushOutcome::SkippedOffline => {
                dropped += 1;
                broker.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    broker.end_replay(mailbox, track, high);
    if lost > 0 {
        broker
            .metrics
            .log_retention
            .fetch_add(lost, Ordering::Relaxed);
        tracing::warn!(client_id = %session.client_id, lost, "messages the session may have been waiting for were deleted by the message log's retention ([cluster] retention_secs / retention_bytes) before its client came back");
    }
    if dropped > 0 {
        tracing::warn!(client_id = %session.client_id, dropped, queued, max_queued = shared.config.mqtt.max_queued, "more messages waited for the resumed MQTT session than its queue holds; the rest were dropped");
    }
    tracing::debug!(client_id = %session.client_id, queued, position, high, took = ?started.elapsed(), "MQTT session resumed from the log");
    Ok(())
}

/// How a logged message matches a session's subscriptions: the highest QoS among them
/// (MQTT-3.3.4-2; `None`: none matches), whether one has Retain As Published, and every
/// Subscription Identifier. A subscription matches only messages logged after it was made,
/// and a No Local one never the client's own (MQTT-3.8.3-3).
fn matching(subs: &[Sub], l: &Logged, client: &str) -> (Option<QoS>, bool, Vec<u32>) {
    let mut qos: Option<QoS> = None;
    let mut retain = false;
    let mut ids = Vec::new();
    let own = l.publisher.as_deref() == Some(client);
    for s in subs {
        if l.seq.get() <= s.since
            || (own && s.options.no_local)
            || !s.filter.matches(&l.message.topic)
        {
            continue;
        }
        qos = Some(qos.map_or(s.options.qos, |q| q.max(s.options.qos)));
        retain |= s.options.retain_as_published;
        ids.extend(s.options.id);
    }
    (qos, retain, ids)
}
