//! The retained values: an in-memory index for reads, one writer thread for changes.
//!
//! Reads (`GET`, a new subscription's retained messages) take a short read lock on the index.
//! Every change goes to the single writer thread, which owns the [`Store`]: it evaluates the
//! write's precondition, assigns the next version, and collects everything that arrived while
//! the previous batch was syncing into one batch — one `apply` + fsync for all of them (group
//! commit). Only after the batch is durable does it update the index and answer the writers,
//! so an acknowledged value is on disk and a reader never sees a value that could be lost.
//! (With `[store] sync = "periodic"`, "on disk" is "with the operating system", and the
//! writer also syncs the store when [`Store::sync_due`] says, between batches or while idle.)
//!
//! A store that keeps nothing (`--memory`) has no sync to share: there each write is applied
//! by its writer under the index's write lock (precondition, version, index, in that order,
//! one writer at a time), with no thread hand-off.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::model::{QoS, RetainedValue};
use crate::model::{TopicFilter, TopicName};
use crate::store::{RetainedOp, Store, StoreError};

mod mirror;

/// The most writes folded into one durable batch.
const MAX_BATCH: usize = 4096;

/// At most this long the writer thread polls its channel after a batch before it blocks on
/// it, and at most a quarter of the time that batch's `apply` (the sync) took: blocking
/// costs a futex wait here and a futex wake in the next sender, and under a steady stream of
/// durable writes the next ones arrive within microseconds of the answers going out
/// (issue 6, fix 2).
const MAX_POLL: Duration = Duration::from_micros(50);

/// At least this long the writer polls after a batch, however cheap its `apply` was: with
/// `[store] sync = "periodic"` a commit takes ~10 µs, and a quarter of that (blocking
/// almost at once) missed the next batch, which the answers' senders start within tens of
/// microseconds (CoAP PUT, 50 clients: 131–148k/s polling ~2 µs, 144–157k polling 20–30 µs,
/// 134–147k polling 50–100 µs; HTTP PUT unchanged). A commit that waits for the device
/// polls a quarter of it anyway (~27 µs).
const MIN_POLL: Duration = Duration::from_micros(25);

/// A set of entity tags in a conditional request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSet {
    /// `*`: any current value.
    Any,
    /// These versions.
    Versions(Vec<u64>),
}

impl TagSet {
    fn matches(&self, current: Option<&RetainedValue>) -> bool {
        match (self, current) {
            (_, None) => false,
            (TagSet::Any, Some(_)) => true,
            (TagSet::Versions(v), Some(cur)) => v.contains(&cur.version),
        }
    }
}

/// Conditions a write must meet (HTTP If-Match / If-None-Match, CoAP likewise).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Precondition {
    /// The current value must match one of these.
    pub if_match: Option<TagSet>,
    /// The current value must match none of these (`Any`: there must be no value).
    pub if_none_match: Option<TagSet>,
}

impl Precondition {
    /// No condition.
    pub fn none() -> Self {
        Self::default()
    }

    /// Only if a value exists: DELETE answers 404 instead of clearing nothing.
    pub fn exists() -> Self {
        Precondition {
            if_match: Some(TagSet::Any),
            if_none_match: None,
        }
    }

    /// Whether the condition holds when `current` is the value (`None`: no value).
    pub fn holds(&self, current: Option<&RetainedValue>) -> bool {
        if let Some(m) = &self.if_match {
            if !m.matches(current) {
                return false;
            }
        }
        if let Some(n) = &self.if_none_match {
            if n.matches(current) {
                return false;
            }
        }
        true
    }
}

/// What a retained write did.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// There was no value; now there is.
    Created(Arc<RetainedValue>),
    /// A value was replaced.
    Replaced(Arc<RetainedValue>),
    /// The value was cleared; `existed` says whether there was one.
    Cleared {
        /// Whether there was a value to clear.
        existed: bool,
    },
    /// The precondition failed; nothing changed. Carries the current value, if any.
    PreconditionFailed(Option<Arc<RetainedValue>>),
}

/// A change for the writer thread.
struct Job {
    /// The thing.
    topic: TopicName,
    /// The new value (payload, content type, QoS), or `None` to clear.
    value: Option<(Bytes, Option<Arc<str>>, QoS)>,
    /// Condition evaluated against the value current at the time of the write.
    precondition: Precondition,
    /// Where the outcome goes once durable.
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

type Index = RwLock<HashMap<TopicName, Arc<RetainedValue>>>;

/// What the retained writer reports about its work, for `/metrics`, `$SYS` and `/readyz`:
/// kept up to date by the writer thread itself (atomics; the error slot is touched only
/// when a commit fails or first succeeds again).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Payload bytes of every retained value (`ponte_retained_bytes`).
    pub bytes: std::sync::atomic::AtomicU64,
    /// How long each group commit took (apply + sync), `ponte_store_commit_seconds`.
    pub commit: crate::metrics::Histogram,
    /// How long each sync the store asked for took (`[store] sync = "periodic"`: the
    /// commits acknowledged before the disk had them, brought there), `ponte_store_sync_seconds`.
    pub sync: crate::metrics::Histogram,
    /// Why the last commit failed, while no commit has succeeded since (`/readyz`).
    pub failing: parking_lot::Mutex<Option<String>>,
    /// Whether the writer has stopped (the store is closed).
    pub closed: std::sync::atomic::AtomicBool,
}

/// The answer to a write begun by [`Retained::begin_write`]: resolves once the write is
/// durable (or failed).
#[derive(Debug)]
pub struct PendingWrite(Pending);

/// Where a [`PendingWrite`]'s answer comes from.
#[derive(Debug)]
enum Pending {
    /// The writer thread answers once the batch holding the write is durable.
    Writer(oneshot::Receiver<Result<WriteOutcome, StoreError>>),
    /// Applied already (a store that keeps nothing): the answer, until it is taken.
    Done(Option<Result<WriteOutcome, StoreError>>),
}

impl std::future::Future for PendingWrite {
    type Output = Result<WriteOutcome, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            Pending::Writer(rx) => std::pin::Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StoreError::Closed))),
            Pending::Done(answer) => {
                std::task::Poll::Ready(answer.take().unwrap_or(Err(StoreError::Closed)))
            }
        }
    }
}

/// How writes reach the index.
enum Writes {
    /// Through the writer thread, which owns a store that persists: it groups the writes
    /// that arrive while a batch syncs into the next batch (group commit).
    Thread {
        /// The way to the writer thread; dropped at shutdown so the thread ends.
        tx: parking_lot::Mutex<Option<mpsc::Sender<Job>>>,
        /// The writer thread, joined at shutdown after its last batch.
        writer: parking_lot::Mutex<Option<JoinHandle<()>>>,
    },
    /// By the writer itself, under the index's write lock, for a store that keeps nothing
    /// (`--memory`): there is no sync to share, and a hand-off to a thread and back (two
    /// wake-ups) would be all a write costs (issue 16: HTTP and CoAP PUT).
    Inline {
        /// The version the next value gets.
        next_version: std::sync::atomic::AtomicU64,
        /// Cleared by [`Retained::close`]: later writes are refused, as with the thread.
        open: std::sync::atomic::AtomicBool,
    },
}

/// The retained values of every thing.
pub struct Retained {
    /// The in-memory index, readable by every front-end; written by the writer thread (or
    /// inline, see [`Writes`]) and the cluster mirror.
    index: Arc<Index>,
    /// How writes are applied.
    writes: Writes,
    /// The writer's report: bytes stored, commit latency, health.
    stats: Arc<StoreStats>,
    /// In a cluster, the revisions of values this node deleted that the cluster's watch
    /// has not reported yet, so an older value still on its way is not brought back
    /// (see `mirror`). Empty on a single node.
    tombstones: parking_lot::Mutex<HashMap<TopicName, u64>>,
}

impl std::fmt::Debug for Retained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retained")
            .field("values", &self.index.read().len())
            .finish_non_exhaustive()
    }
}

impl Retained {
    /// Load every stored value and start the writer thread that owns `store`.
    pub fn open<S: Store>(store: S) -> Result<Self, StoreError> {
        let loaded = store.load_retained()?;
        let mut next_version = 1;
        let mut map = HashMap::with_capacity(loaded.len());
        let stats = Arc::new(StoreStats::default());
        let mut bytes = 0u64;
        for (t, v) in loaded {
            next_version = next_version.max(v.version + 1);
            bytes += v.payload.len() as u64;
            map.insert(t, Arc::new(v));
        }
        stats.bytes.store(bytes, Ordering::Relaxed);
        let index = Arc::new(RwLock::new(map));
        if store.keeps_nothing() {
            return Ok(Retained {
                index,
                writes: Writes::Inline {
                    next_version: std::sync::atomic::AtomicU64::new(next_version),
                    open: std::sync::atomic::AtomicBool::new(true),
                },
                stats,
                tombstones: parking_lot::Mutex::new(HashMap::new()),
            });
        }
        let (tx, rx) = mpsc::channel();
        let idx = index.clone();
        let report = stats.clone();
        let writer = std::thread::Builder::new()
            .name("ponte-retained-writer".into())
            .spawn(move || writer_loop(store, idx, rx, next_version, &report))
            .map_err(|e| StoreError::Engine(format!("cannot start the writer thread: {e}")))?;
        Ok(Retained {
            index,
            writes: Writes::Thread {
                tx: parking_lot::Mutex::new(Some(tx)),
                writer: parking_lot::Mutex::new(Some(writer)),
            },
            stats,
            tombstones: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// What the writer reports: bytes stored, commit latency, whether commits fail.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// The current value of a thing.
    pub fn get(&self, topic: &TopicName) -> Option<Arc<RetainedValue>> {
        self.index.read().get(topic).cloned()
    }

    /// Every value whose topic matches `filter`, for a new subscription.
    pub fn matching(&self, filter: &TopicFilter) -> Vec<(TopicName, Arc<RetainedValue>)> {
        self.index
            .read()
            .iter()
            .filter(|(t, _)| filter.matches(t))
            .map(|(t, v)| (t.clone(), v.clone()))
            .collect()
    }

    /// Number of retained values.
    pub fn len(&self) -> usize {
        self.index.read().len()
    }

    /// Whether there are no retained values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Set (`Some`) or clear (`None`) a value; resolves once the change is durable.
    pub async fn write(
        &self,
        topic: TopicName,
        value: Option<(Bytes, Option<Arc<str>>, QoS)>,
        precondition: Precondition,
    ) -> Result<WriteOutcome, StoreError> {
        self.begin_write(topic, value, precondition)?.await
    }

    /// Hand a write to the writer now and return its answer to await: writes begun in some
    /// order are applied in that order, and several begun before any is awaited share one
    /// group commit.
    pub fn begin_write(
        &self,
        topic: TopicName,
        value: Option<(Bytes, Option<Arc<str>>, QoS)>,
        precondition: Precondition,
    ) -> Result<PendingWrite, StoreError> {
        let tx = match &self.writes {
            Writes::Thread { tx, .. } => tx,
            Writes::Inline { next_version, open } => {
                if !open.load(Ordering::Acquire) {
                    return Err(StoreError::Closed);
                }
                let outcome = self.apply_inline(next_version, topic, value, &precondition);
                return Ok(PendingWrite(Pending::Done(Some(Ok(outcome)))));
            }
        };
        let (reply, rx) = oneshot::channel();
        let tx = tx.lock();
        let tx = tx.as_ref().ok_or(StoreError::Closed)?;
        tx.send(Job {
            topic,
            value,
            precondition,
            reply,
        })
        .map_err(|_| StoreError::Closed)?;
        Ok(PendingWrite(Pending::Writer(rx)))
    }

    /// One write to a store that keeps nothing, as the writer thread would apply it in a
    /// batch of one: the precondition against the current value, the next version, the
    /// index. The index's write lock orders writers exactly as the thread's channel did.
    fn apply_inline(
        &self,
        next_version: &std::sync::atomic::AtomicU64,
        topic: TopicName,
        value: Option<(Bytes, Option<Arc<str>>, QoS)>,
        precondition: &Precondition,
    ) -> WriteOutcome {
        let started = Instant::now();
        let mut idx = self.index.write();
        // One lookup (the topic is hashed once) for the check and the write.
        let entry = idx.entry(topic);
        let cur = match &entry {
            Entry::Occupied(e) => Some(e.get().clone()),
            Entry::Vacant(_) => None,
        };
        if !precondition.holds(cur.as_deref()) {
            return WriteOutcome::PreconditionFailed(cur);
        }
        // What the writer thread would have handed the store: a put, or a delete of a
        // value that existed.
        let wrote = value.is_some() || cur.is_some();
        let (outcome, added, removed) = match value {
            Some((payload, content_type, qos)) => {
                let v = Arc::new(RetainedValue {
                    payload,
                    content_type,
                    qos,
                    version: next_version.fetch_add(1, Ordering::Relaxed),
                    updated: SystemTime::now(),
                });
                let added = v.payload.len() as u64;
                let old = match entry {
                    Entry::Occupied(mut e) => Some(e.insert(v.clone())),
                    Entry::Vacant(e) => {
                        e.insert(v.clone());
                        None
                    }
                };
                let removed = old.map_or(0, |o| o.payload.len() as u64);
                let outcome = if cur.is_some() {
                    WriteOutcome::Replaced(v)
                } else {
                    WriteOutcome::Created(v)
                };
                (outcome, added, removed)
            }
            None => {
                let removed = match entry {
                    Entry::Occupied(e) => e.remove().payload.len() as u64,
                    Entry::Vacant(_) => 0,
                };
                let existed = cur.is_some();
                (WriteOutcome::Cleared { existed }, 0, removed)
            }
        };
        drop(idx);
        self.stats.bytes.fetch_add(added, Ordering::Relaxed);
        self.stats.bytes.fetch_sub(removed, Ordering::Relaxed);
        if wrote {
            // A commit of one write, with nothing to sync.
            self.stats.commit.observe(started.elapsed());
        }
        outcome
    }

    /// Stop accepting writes, let the writer finish what it has, flush, and join it.
    pub fn close(&self) {
        match &self.writes {
            Writes::Thread { tx, writer } => {
                tx.lock().take();
                if let Some(h) = writer.lock().take() {
                    let _ = h.join();
                }
            }
            Writes::Inline { open, .. } => {
                open.store(false, Ordering::Release);
                self.stats.closed.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Retained {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer_loop<S: Store>(
    mut store: S,
    index: Arc<Index>,
    rx: mpsc::Receiver<Job>,
    mut next_version: u64,
    stats: &StoreStats,
) {
    let mut jobs = Vec::new();
    let mut ops = Vec::new();
    let mut outcomes = Vec::new();
    // The values as they will be after this batch, for preconditions of later jobs in it.
    let mut overlay: HashMap<TopicName, Option<Arc<RetainedValue>>> = HashMap::new();
    // How long to poll before blocking for the next batch (see MAX_POLL).
    let mut poll_for = Duration::ZERO;
    loop {
        sync_if_due(&mut store, stats);
        let first = match next_job(&rx, poll_for, store.sync_due()) {
            Next::Job(job) => job,
            Next::SyncDue => continue,
            Next::Closed => break,
        };
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        {
            let current = index.read();
            for job in &jobs {
                let cur = match overlay.get(&job.topic) {
                    Some(v) => v.clone(),
                    None => current.get(&job.topic).cloned(),
                };
                if !job.precondition.holds(cur.as_deref()) {
                    outcomes.push(WriteOutcome::PreconditionFailed(cur));
                    continue;
                }
                match &job.value {
                    Some((payload, ct, qos)) => {
                        let v = Arc::new(RetainedValue {
                            payload: payload.clone(),
                            content_type: ct.clone(),
                            qos: *qos,
                            version: next_version,
                            updated: SystemTime::now(),
                        });
                        next_version += 1;
                        ops.push(RetainedOp::Put(job.topic.clone(), v.clone()));
                        overlay.insert(job.topic.clone(), Some(v.clone()));
                        outcomes.push(if cur.is_some() {
                            WriteOutcome::Replaced(v)
                        } else {
                            WriteOutcome::Created(v)
                        });
                    }
                    None => {
                        if cur.is_some() {
                            ops.push(RetainedOp::Delete(job.topic.clone()));
                            overlay.insert(job.topic.clone(), None);
                        }
                        outcomes.push(WriteOutcome::Cleared {
                            existed: cur.is_some(),
                        });
                    }
                }
            }
        }
        let applying = Instant::now();
        let result = if ops.is_empty() {
            Ok(())
        } else {
            store.apply(&ops)
        };
        let took = applying.elapsed();
        poll_for = (took / 4).clamp(MIN_POLL, MAX_POLL);
        if !ops.is_empty() {
            stats.commit.observe(took);
        }
        match result {
            Ok(()) => {
                if !overlay.is_empty() {
                    let mut idx = index.write();
                    let (mut added, mut removed) = (0u64, 0u64);
                    for (t, v) in overlay.drain() {
                        added += v.as_ref().map_or(0, |v| v.payload.len() as u64);
                        let old = match v {
                            Some(v) => idx.insert(t, v),
                            None => idx.remove(&t),
                        };
                        removed += old.map_or(0, |v| v.payload.len() as u64);
                    }
                    stats.bytes.fetch_add(added, Ordering::Relaxed);
                    stats.bytes.fetch_sub(removed, Ordering::Relaxed);
                }
                if !ops.is_empty() && stats.failing.lock().take().is_some() {
                    tracing::info!("retained store commits succeed again");
                }
                for (job, outcome) in jobs.drain(..).zip(outcomes.drain(..)) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = jobs.len(), "retained batch failed; writes refused");
                *stats.failing.lock() = Some(e.to_string());
                overlay.clear();
                outcomes.clear();
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Engine(e.to_string())));
                }
            }
        }
        ops.clear();
    }
    if let Err(e) = store.flush() {
        tracing::error!(error = %e, "final flush of the store failed");
    }
    stats.closed.store(true, Ordering::Relaxed);
}

/// Sync the store if it says a sync is due: writes it acknowledged before the disk had
/// them have waited their interval.
fn sync_if_due<S: Store>(store: &mut S, stats: &StoreStats) {
    if store.sync_due().is_none_or(|due| due > Instant::now()) {
        return;
    }
    let started = Instant::now();
    match store.sync() {
        Ok(()) => stats.sync.observe(started.elapsed()),
        Err(e) => {
            tracing::error!(error = %e, "retained store sync failed; acknowledged writes may not survive a crash of the operating system");
            *stats.failing.lock() = Some(e.to_string());
        }
    }
}

/// What the writer waits for next.
enum Next<T> {
    /// A write.
    Job(T),
    /// Nothing came before the store's sync was due.
    SyncDue,
    /// Every sender is gone.
    Closed,
}

/// The writer's next job: the channel is polled for up to `poll_for` (yielding the CPU
/// between polls, so that on a shared or pinned core the tasks sending the next writes get
/// to run) before the thread blocks on it, until `sync_due` at the latest.
fn next_job<T>(rx: &mpsc::Receiver<T>, poll_for: Duration, sync_due: Option<Instant>) -> Next<T> {
    if !poll_for.is_zero() {
        let until = Instant::now() + poll_for;
        loop {
            match rx.try_recv() {
                Ok(job) => return Next::Job(job),
                Err(mpsc::TryRecvError::Disconnected) => return Next::Closed,
                Err(mpsc::TryRecvError::Empty) if Instant::now() < until => {
                    std::thread::yield_now()
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
    }
    let Some(due) = sync_due else {
        return rx.recv().map_or(Next::Closed, Next::Job);
    };
    match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
        Ok(job) => Next::Job(job),
        Err(mpsc::RecvTimeoutError::Timeout) => Next::SyncDue,
        Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn t(s: &str) -> TopicName {
        TopicName::parse(s).unwrap()
    }

    fn val(s: &'static str) -> Option<(Bytes, Option<Arc<str>>, QoS)> {
        Some((Bytes::from_static(s.as_bytes()), None, QoS::AtLeastOnce))
    }

    #[tokio::test]
    async fn create_replace_clear() {
        let r = Retained::open(MemoryStore).unwrap();
        let o = r
            .write(t("a"), val("1"), Precondition::none())
            .await
            .unwrap();
        let v1 = match o {
            WriteOutcome::Created(v) => v,
            o => panic!("{o:?}"),
        };
        let o = r
            .write(t("a"), val("2"), Precondition::none())
            .await
            .unwrap();
        let v2 = match o {
            WriteOutcome::Replaced(v) => v,
            o => panic!("{o:?}"),
        };
        assert!(v2.version > v1.version);
        assert_eq!(r.get(&t("a")).unwrap().payload, "2");
        let o = r.write(t("a"), None, Precondition::exists()).await.unwrap();
        assert!(matches!(o, WriteOutcome::Cleared { existed: true }));
        let o = r.write(t("a"), None, Precondition::exists()).await.unwrap();
        assert!(matches!(o, WriteOutcome::PreconditionFailed(None)));
        assert!(r.get(&t("a")).is_none());
    }

    #[tokio::test]
    async fn preconditions() {
        let r = Retained::open(MemoryStore).unwrap();
        let ifnone = Precondition {
            if_match: None,
            if_none_match: Some(TagSet::Any),
        };
        assert!(matches!(
            r.write(t("a"), val("1"), ifnone.clone()).await.unwrap(),
            WriteOutcome::Created(_)
        ));
        assert!(matches!(
            r.write(t("a"), val("2"), ifnone).await.unwrap(),
            WriteOutcome::PreconditionFailed(Some(_))
        ));
        let v = r.get(&t("a")).unwrap().version;
        let stale = Precondition {
            if_match: Some(TagSet::Versions(vec![v + 100])),
            if_none_match: None,
        };
        assert!(matches!(
            r.write(t("a"), val("3"), stale).await.unwrap(),
            WriteOutcome::PreconditionFailed(_)
        ));
        let fresh = Precondition {
            if_match: Some(TagSet::Versions(vec![v])),
            if_none_match: None,
        };
        assert!(matches!(
            r.write(t("a"), val("4"), fresh).await.unwrap(),
            WriteOutcome::Replaced(_)
        ));
    }

    #[tokio::test]
    async fn concurrent_writes_all_acknowledged_with_distinct_versions() {
        let r = Arc::new(Retained::open(MemoryStore).unwrap());
        let mut hs = Vec::new();
        for i in 0..200 {
            let r = r.clone();
            hs.push(tokio::spawn(async move {
                match r
                    .write(t(&format!("t/{i}")), val("x"), Precondition::none())
                    .await
                    .unwrap()
                {
                    WriteOutcome::Created(v) => v.version,
                    o => panic!("{o:?}"),
                }
            }));
        }
        let mut versions = Vec::new();
        for h in hs {
            versions.push(h.await.unwrap());
        }
        versions.sort();
        versions.dedup();
        assert_eq!(versions.len(), 200);
        assert_eq!(r.len(), 200);
    }
}
