//! The message log: every write a node accepts is published to the `<prefix>_LOG` stream,
//! and acknowledged to its client only after JetStream's PubAck (stored on the configured
//! replicas). Every node hears the log ([`super::hear`]).
//!
//! **The lane.** [`submit`] runs on the caller's thread (it encodes the envelope there, so
//! encoding spreads over the runtime's workers) and hands the write to one task, the lane,
//! which issues publishes to NATS in the order it received them. A retained write goes to
//! the KV bucket first (compare-and-set, [`super::retained`]) and only then to the log;
//! to keep each MQTT connection's messages in the log in the order it sent them (MQTT 4.6),
//! later writes of the same publisher wait in the lane until that retained write has been
//! decided — others' writes do not wait. PubAcks are awaited concurrently, so one
//! connection keeps many publishes in flight (the MQTT driver's pipeline works unchanged).
//!
//! **Batches.** Plain writes to one subject that the lane takes in together (queued at the
//! same time) go to the log as one message with one PubAck ([`Lane::flush`]); each keeps
//! its own position ([`super::position`]). The lane never waits for more: a write alone is
//! published at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::envelope::{self, instant_to_wall, Envelope};
use super::mapping;
use super::{position, Inner, NODE_HEADER, REVISION_HEADER};
use crate::backbone::{Committed, Write};
use crate::broker::retained::{Precondition, WriteOutcome};
use crate::model::{Origin, RetainedValue, TopicName};
use crate::store::StoreError;

/// The answer channel of a write.
type Reply = oneshot::Sender<Result<Committed, StoreError>>;

/// A write on its way through the lane.
pub struct Job {
    /// The topic.
    pub(crate) topic: TopicName,
    /// Its key (subject suffix and KV key).
    pub(crate) key: String,
    /// The encoded envelope: the log message's body and the KV value.
    pub(crate) body: Bytes,
    /// For a retained write: the condition and the value to mirror (`None` clears).
    pub(crate) retained: Option<(Precondition, Option<Arc<RetainedValue>>)>,
    /// The MQTT connection that published it (writes of one publisher stay in order).
    pub(crate) publisher: Option<u64>,
    /// When the write is refused if it is not decided yet (`[cluster] timeout_secs` after
    /// it was submitted): a client never waits longer for its answer, whatever NATS does.
    pub(crate) deadline: tokio::time::Instant,
    /// Where the answer goes.
    pub(crate) reply: Reply,
}

/// The error of a write refused because the backbone cannot take it now.
pub(crate) fn unavailable(why: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(format!(
        "the cluster backbone (NATS) cannot take the write now, so it was not stored: {why}"
    ))
}

/// Encode `write` on the caller's thread and hand it to the lane.
pub(crate) fn submit(inner: &Arc<Inner>, write: Write) {
    let Write {
        message,
        precondition,
        reply,
    } = write;
    if !inner.ready() {
        let _ = reply.send(Err(unavailable(if inner.connected() {
            "this node is still synchronising with it"
        } else {
            "it is unreachable"
        })));
        return;
    }
    let key = mapping::topic_key(&message.topic, inner.room());
    let updated = SystemTime::now();
    let body = Envelope {
        qos: message.qos,
        retain: message.retain,
        topic: key.hashed.then(|| message.topic.as_str().to_owned()),
        content_type: message.content_type.clone(),
        expires_at: message.expires_at.map(instant_to_wall),
        publisher: match &message.origin {
            Origin::Mqtt(client) => client.clone(),
            _ => None,
        },
        properties: message.properties.clone(),
        updated,
        payload: message.payload.clone(),
    }
    .encode();
    let retained = message.retain.then(|| {
        let value = (!message.payload.is_empty()).then(|| {
            Arc::new(RetainedValue {
                payload: message.payload.clone(),
                content_type: message.content_type.clone(),
                qos: message.qos,
                version: 0,
                updated,
            })
        });
        (precondition, value)
    });
    let job = Job {
        topic: message.topic,
        key: key.key,
        body,
        retained,
        publisher: message.publisher,
        deadline: tokio::time::Instant::now() + inner.config.timeout(),
        reply,
    };
    if let Err(mpsc::error::SendError(job)) = inner.lane.send(job) {
        let _ = job.reply.send(Err(StoreError::Closed));
    }
}

/// A key's current entry: its value (`None`: a delete marker) and its revision.
pub(crate) type Current = (Option<Arc<RetainedValue>>, u64);

/// What an in-flight NATS request came back with.
pub(crate) enum Step {
    /// A log publish was acknowledged (or not); its reply is already sent.
    Logged,
    /// A KV compare-and-set finished.
    Kv {
        /// The write.
        job: Job,
        /// The value the CAS expected to replace (what the write saw).
        seen: Option<Arc<RetainedValue>>,
        /// Attempts so far.
        tries: u8,
        /// The new revision, or why not.
        result: Result<u64, async_nats::jetstream::context::PublishError>,
    },
    /// The current entry was read after a CAS lost or a precondition failed on the mirror.
    Fetched {
        /// The write.
        job: Job,
        /// Attempts so far.
        tries: u8,
        /// The current entry (value, revision), or why not.
        result: Result<Option<Current>, String>,
    },
}

/// The ordered publishing lane (one task per node).
pub struct Lane {
    inner: Arc<Inner>,
    /// Publishers with a retained write being decided, and their writes waiting behind it.
    blocked: HashMap<u64, VecDeque<Job>>,
    /// Requests in flight.
    inflight: FuturesUnordered<BoxFuture<'static, Step>>,
    /// Plain writes to one subject, queued in the lane at the same time, that go to the
    /// log as one message (a batch, [`position`]) when the lane has taken in what was
    /// queued: never waiting for more, so a write alone goes alone and at once.
    batch: Vec<Job>,
    /// The bytes of the batch (its envelopes and their framing).
    batch_bytes: usize,
    /// The most bytes of a batch: [`BATCH_BYTES`], less if the NATS server's `max_payload`
    /// is smaller, and when that was last read from the server (at most once a second).
    batch_limit: (usize, Option<tokio::time::Instant>),
}

/// Most writes in one log message (a position has [`position::SLOTS`] per message).
const BATCH_MAX: usize = 1000;
// Each write of a batch needs a position of its own (`envelope::entries` refuses more).
const _: () = assert!(BATCH_MAX as u64 <= position::SLOTS);

/// Most envelope bytes in one log message: well under NATS's default `max_payload` (1 MiB),
/// and small enough that a batch never holds a large write back (a write this large or
/// larger goes alone).
const BATCH_BYTES: usize = 64 * 1024;

/// Most queued writes the lane takes in before it publishes what it has.
const INTAKE: usize = 4 * BATCH_MAX;

/// The shortest wait for a log acknowledgement, even for a write whose deadline passed
/// while its retained value was being decided (it is already in the bucket).
const MIN_ACK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Most compare-and-set rounds for one retained write under contention.
const MAX_TRIES: u8 = 8;

impl Lane {
    /// Run until every sender is gone.
    pub(crate) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut lane = Lane {
            inner,
            blocked: HashMap::new(),
            inflight: FuturesUnordered::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            batch_limit: (BATCH_BYTES, None),
        };
        let mut closed = lane.inner.closed.subscribe();
        loop {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => {
                        lane.admit(job).await;
                        // Whatever else is queued now joins it (batches form only from
                        // writes that are already waiting).
                        for _ in 1..INTAKE {
                            match rx.try_recv() {
                                Ok(job) => lane.admit(job).await,
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                // Shutdown: writes still queued are answered "closed" as they drop.
                _ = closed.changed() => break,
                Some(step) = lane.inflight.next(), if !lane.inflight.is_empty() => {
                    lane.step(step).await;
                }
            }
            lane.flush().await;
        }
        lane.flush().await;
        while let Some(step) = lane.inflight.next().await {
            lane.step(step).await;
            lane.flush().await;
        }
    }

    /// A new write: behind its publisher's undecided retained write, or on its way now.
    async fn admit(&mut self, job: Job) {
        if let Some(p) = job.publisher {
            if let Some(waiting) = self.blocked.get_mut(&p) {
                waiting.push_back(job);
                return;
            }
        }
        let publisher = job.publisher;
        if self.start(job).await {
            self.unblock(publisher).await;
        }
    }

    /// Start a write: a retained one at the KV (its publisher's later writes wait until it
    /// is decided), any other straight to the log. Returns whether it is already finished
    /// (nothing of it is pending in the lane).
    async fn start(&mut self, job: Job) -> bool {
        if job.retained.is_some() {
            if let Some(p) = job.publisher {
                self.blocked.entry(p).or_default();
            }
            let seen = self.inner.broker().and_then(|b| b.get(&job.topic));
            let expected = seen.as_ref().map_or(0, |v| v.version);
            self.decide(job, seen, expected, false, 0).await
        } else {
            self.log(job, None, 0).await;
            true
        }
    }

    /// Evaluate a retained write's precondition against `seen` (revision `expected` of the
    /// key, a delete marker's included) and send the compare-and-set. A precondition that
    /// fails on the mirror is checked again against the bucket (`confirmed`) before the
    /// client is told 412, so a stale mirror never refuses a write. Returns whether the
    /// write is finished (else a request for it is in flight).
    async fn decide(
        &mut self,
        job: Job,
        seen: Option<Arc<RetainedValue>>,
        expected: u64,
        confirmed: bool,
        tries: u8,
    ) -> bool {
        let Some((precondition, value)) = &job.retained else {
            return true;
        };
        if !precondition.holds(seen.as_deref()) {
            if confirmed {
                let _ = job.reply.send(Ok(Committed {
                    retained: Some(WriteOutcome::PreconditionFailed(seen)),
                    sequence: None,
                }));
                return true;
            }
            self.fetch(job, tries);
            return false;
        }
        if value.is_none() && seen.is_none() {
            if !confirmed {
                // The mirror may not have another node's value yet: ask the bucket.
                self.fetch(job, tries);
                return false;
            }
            // Clearing nothing: no KV change, but the (empty, retained) message is still
            // a message subscribers get, as on a single node.
            self.log(job, Some(WriteOutcome::Cleared { existed: false }), 0)
                .await;
            return true;
        }
        if !self.inner.ready() {
            let _ = job.reply.send(Err(unavailable("it is unreachable")));
            return true;
        }
        if tokio::time::Instant::now() >= job.deadline {
            let _ = job.reply.send(Err(unavailable(format!(
                "the write was not decided within {:?} ([cluster] timeout_secs)",
                self.inner.config.timeout()
            ))));
            return true;
        }
        let subject = format!("$KV.{}.{}", self.inner.config.retained_bucket(), job.key);
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expected.to_string().as_str(),
        );
        if value.is_none() {
            headers.insert("KV-Operation", "DEL");
        }
        // A delete marker carries the envelope too: a hashed (long) topic's watchers learn
        // from it which topic was deleted.
        let body = job.body.clone();
        let sent = self
            .inner
            .js
            .publish_with_headers(subject, headers, body)
            .await;
        let tries = tries + 1;
        match sent {
            Ok(ack) => {
                let deadline = job.deadline;
                self.inflight.push(Box::pin(async move {
                    let result = match tokio::time::timeout_at(deadline, ack).await {
                        Ok(r) => r.map(|a| a.sequence),
                        Err(_) => Err(async_nats::jetstream::context::PublishError::new(
                            async_nats::jetstream::context::PublishErrorKind::TimedOut,
                        )),
                    };
                    Step::Kv {
                        job,
                        seen,
                        tries,
                        result,
                    }
                }));
                false
            }
            Err(e) => {
                let _ = job.reply.send(Err(unavailable(e)));
                true
            }
        }
    }

    /// Read the key's current entry from the bucket.
    fn fetch(&mut self, job: Job, tries: u8) {
        let kv = self.inner.kv.read().clone();
        let key = job.key.clone();
        let topic = job.topic.clone();
        let deadline = job.deadline;
        self.inflight.push(Box::pin(async move {
            let result = match kv {
                None => Err("the retained bucket is not provisioned".to_string()),
                Some(kv) => match tokio::time::timeout_at(deadline, kv.entry(key)).await {
                    Err(_) => Err("reading the current value timed out".to_string()),
                    Ok(Ok(None)) => Ok(None),
                    Ok(Ok(Some(e))) => Ok(Some((
                        super::retained::entry_value(&topic, &e).and_then(|(v, _)| v),
                        e.revision,
                    ))),
                    Ok(Err(e)) => Err(e.to_string()),
                },
            };
            Step::Fetched { job, tries, result }
        }));
    }

    /// Handle a finished request.
    async fn step(&mut self, step: Step) {
        match step {
            Step::Logged => {}
            Step::Kv {
                job,
                seen,
                tries,
                result,
            } => match result {
                Ok(rev) => {
                    let publisher = job.publisher;
                    let outcome = self.committed_retained(&job, seen, rev);
                    self.log(job, Some(outcome), rev).await;
                    self.unblock(publisher).await;
                }
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence
                        && tries < MAX_TRIES =>
                {
                    // Another node wrote first (or our mirror was behind): look again.
                    self.fetch(job, tries);
                }
                Err(e) => {
                    let publisher = job.publisher;
                    let why = if e.kind()
                        == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence
                    {
                        format!("{MAX_TRIES} compare-and-set rounds lost to concurrent writers")
                    } else {
                        e.to_string()
                    };
                    let _ = job.reply.send(Err(unavailable(why)));
                    self.unblock(publisher).await;
                }
            },
            Step::Fetched { job, tries, result } => match result {
                Ok(current) => {
                    let (seen, expected) = match current {
                        Some((v, rev)) => (v, rev),
                        None => (None, 0),
                    };
                    let publisher = job.publisher;
                    if self.decide(job, seen, expected, true, tries).await {
                        self.unblock(publisher).await;
                    }
                }
                Err(e) => {
                    let publisher = job.publisher;
                    let _ = job.reply.send(Err(unavailable(e)));
                    self.unblock(publisher).await;
                }
            },
        }
    }

    /// The bucket accepted a retained write at revision `rev`: put it in the mirror (the
    /// client reads its own write on this node before it hears 2xx) and say what it did.
    fn committed_retained(
        &self,
        job: &Job,
        seen: Option<Arc<RetainedValue>>,
        rev: u64,
    ) -> WriteOutcome {
        let Some((_, value)) = &job.retained else {
            return WriteOutcome::Cleared { existed: false };
        };
        let broker = self.inner.broker();
        match value {
            Some(v) => {
                let v = Arc::new(RetainedValue {
                    version: rev,
                    ..(**v).clone()
                });
                if let Some(b) = &broker {
                    b.retained().mirror_put(&job.topic, v.clone());
                }
                if seen.is_some() {
                    WriteOutcome::Replaced(v)
                } else {
                    WriteOutcome::Created(v)
                }
            }
            None => {
                if let Some(b) = &broker {
                    b.retained().mirror_delete(&job.topic, rev, true);
                }
                WriteOutcome::Cleared {
                    existed: seen.is_some(),
                }
            }
        }
    }

    /// Publish `job` to the log; its reply is sent when JetStream acknowledges it. A plain
    /// write joins the batch (published by [`Lane::flush`]); a retained one goes alone, after
    /// the batch, so the log keeps the order the lane took them in.
    async fn log(&mut self, job: Job, retained: Option<WriteOutcome>, rev: u64) {
        if retained.is_none() && rev == 0 {
            let size = job.body.len() + 4;
            let fits = match self.batch.first() {
                None => true,
                Some(first) => {
                    first.key == job.key
                        && self.batch.len() < BATCH_MAX
                        && self.batch_bytes + size <= self.batch_limit()
                }
            };
            if !fits {
                self.flush().await;
            }
            self.batch_bytes += size;
            self.batch.push(job);
            return;
        }
        self.flush().await;
        self.publish(job, retained, rev).await;
    }

    /// The most bytes a batch may take now (see `batch_limit`).
    fn batch_limit(&mut self) -> usize {
        let now = tokio::time::Instant::now();
        let stale = self
            .batch_limit
            .1
            .is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_secs(1));
        if stale && self.inner.connected() {
            // Room for the headers and the batch's own first bytes.
            let max = self.inner.client.server_info().max_payload;
            self.batch_limit = (BATCH_BYTES.min(max.saturating_sub(1024)), Some(now));
        }
        self.batch_limit.0
    }

    /// Publish the batch: one write as itself, several as one log message whose
    /// acknowledgement answers them all, each with its own position.
    async fn flush(&mut self) {
        self.batch_bytes = 0;
        if self.batch.len() <= 1 {
            if let Some(job) = self.batch.pop() {
                self.publish(job, None, 0).await;
            }
            return;
        }
        let jobs = std::mem::take(&mut self.batch);
        if !self.inner.connected() {
            for job in jobs {
                let _ = job.reply.send(Err(unavailable("it is unreachable")));
            }
            return;
        }
        let body = envelope::encode_batch(jobs.iter().map(|j| &j.body));
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, self.inner.node.as_str());
        let subject = self.inner.subject(&jobs[0].key);
        match self
            .inner
            .js
            .publish_with_headers(subject, headers, body)
            .await
        {
            Ok(ack) => {
                let waiting = jobs.into_iter().map(|j| (j.deadline, j.reply)).collect();
                let ack = async move { ack.await.map(|a| a.sequence) };
                self.inflight.push(Box::pin(async move {
                    answer_batch(waiting, ack).await;
                    Step::Logged
                }));
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(unavailable(&e)));
                }
            }
        }
    }

    /// Publish one write as one log message.
    async fn publish(&mut self, job: Job, retained: Option<WriteOutcome>, rev: u64) {
        let Job {
            key,
            body,
            reply,
            deadline,
            ..
        } = job;
        if !self.inner.connected() {
            let _ = reply.send(Err(unavailable("it is unreachable")));
            return;
        }
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, self.inner.node.as_str());
        if rev != 0 {
            headers.insert(REVISION_HEADER, rev.to_string().as_str());
        }
        let subject = self.inner.subject(&key);
        match self
            .inner
            .js
            .publish_with_headers(subject, headers, body)
            .await
        {
            Ok(ack) => self.inflight.push(Box::pin(async move {
                // At least a moment for the acknowledgement, however late the write got
                // here; never longer than its deadline otherwise.
                let until = deadline.max(tokio::time::Instant::now() + MIN_ACK_WAIT);
                let _ = reply.send(match tokio::time::timeout_at(until, ack).await {
                    Ok(Ok(a)) => Ok(Committed {
                        retained,
                        sequence: position::at(a.sequence, 0),
                    }),
                    Ok(Err(e)) => Err(unavailable(e)),
                    Err(_) => Err(unavailable(
                        "JetStream did not acknowledge the write in time ([cluster] timeout_secs)",
                    )),
                });
                Step::Logged
            })),
            Err(e) => {
                let _ = reply.send(Err(unavailable(e)));
            }
        }
    }

    /// A publisher's retained write is decided: start what waited behind it, in order,
    /// up to its next retained write.
    async fn unblock(&mut self, publisher: Option<u64>) {
        let Some(p) = publisher else {
            return;
        };
        loop {
            let next = match self.blocked.get_mut(&p) {
                None => return,
                Some(waiting) => waiting.pop_front(),
            };
            match next {
                None => {
                    self.blocked.remove(&p);
                    return;
                }
                Some(job) if job.retained.is_some() => {
                    // Pending: it keeps the publisher blocked (and the queue behind it).
                    if !self.start(job).await {
                        return;
                    }
                }
                Some(job) => self.log(job, None, 0).await,
            }
        }
    }
}

/// Answer a batch's writes (`(deadline, reply)`, in batch order) from its one PubAck
/// (`ack`: the log message's stream sequence). The PubAck is awaited until the latest
/// write's deadline, each write being refused at its own (but given at least
/// [`MIN_ACK_WAIT`] from now, as a single write is); a write is either acknowledged with
/// its position after the PubAck or refused, never both. Why: waiting only until the
/// earliest deadline let one write that had queued long cut the wait of every fresh write
/// of its batch to `MIN_ACK_WAIT`, refusing them although the log stored them.
async fn answer_batch<E: std::fmt::Display>(
    writes: Vec<(tokio::time::Instant, Reply)>,
    ack: impl std::future::Future<Output = Result<u64, E>>,
) {
    let floor = tokio::time::Instant::now() + MIN_ACK_WAIT;
    // Latest deadline first: the next to refuse is the last.
    let mut waiting: Vec<(usize, tokio::time::Instant, Reply)> = writes
        .into_iter()
        .enumerate()
        .map(|(i, (deadline, reply))| (i, deadline.max(floor), reply))
        .collect();
    waiting.sort_by_key(|w| std::cmp::Reverse(w.1));
    tokio::pin!(ack);
    while let Some(&(_, until, _)) = waiting.last() {
        match tokio::time::timeout_at(until, &mut ack).await {
            Ok(Ok(sequence)) => {
                for (i, _, reply) in waiting {
                    let _ = reply.send(Ok(Committed {
                        retained: None,
                        sequence: position::at(sequence, i),
                    }));
                }
                return;
            }
            Ok(Err(e)) => {
                for (_, _, reply) in waiting {
                    let _ = reply.send(Err(unavailable(&e)));
                }
                return;
            }
            Err(_) => {
                let now = tokio::time::Instant::now();
                while let Some((_, _, reply)) = waiting.pop_if(|w| w.1 <= now) {
                    let _ = reply.send(Err(unavailable(
                        "JetStream did not acknowledge the write in time ([cluster] timeout_secs)",
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_batch_refuses_each_write_at_its_own_deadline_only() {
        let now = tokio::time::Instant::now();
        let (old_tx, mut old_rx) = oneshot::channel();
        let (fresh_tx, mut fresh_rx) = oneshot::channel();
        let (late_tx, mut late_rx) = oneshot::channel();
        // A write that queued long (its deadline is near) before two fresh ones; the
        // PubAck (stream sequence 7) comes after the old one's deadline.
        let writes = vec![
            (now + Duration::from_millis(100), old_tx),
            (now + Duration::from_secs(10), fresh_tx),
            (now + Duration::from_secs(5), late_tx),
        ];
        let ack = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<u64, String>(7)
        };
        answer_batch(writes, ack).await;
        assert!(
            matches!(old_rx.try_recv(), Ok(Err(_))),
            "refused at its deadline (at least MIN_ACK_WAIT)"
        );
        let fresh = fresh_rx.try_recv().ok().and_then(Result::ok);
        assert_eq!(
            fresh.and_then(|c| c.sequence),
            position::at(7, 1),
            "acknowledged with its own position"
        );
        let late = late_rx.try_recv().ok().and_then(Result::ok);
        assert_eq!(late.and_then(|c| c.sequence), position::at(7, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_whose_ack_never_comes_is_refused_by_the_latest_deadline() {
        let now = tokio::time::Instant::now();
        let (a_tx, mut a_rx) = oneshot::channel();
        let (b_tx, mut b_rx) = oneshot::channel();
        let writes = vec![
            (now + Duration::from_secs(1), a_tx),
            (now + Duration::from_secs(3), b_tx),
        ];
        answer_batch(writes, std::future::pending::<Result<u64, String>>()).await;
        assert_eq!(tokio::time::Instant::now(), now + Duration::from_secs(3));
        assert!(matches!(a_rx.try_recv(), Ok(Err(_))));
        assert!(matches!(b_rx.try_recv(), Ok(Err(_))));
    }
}
