//! The local keeper: one writer thread that owns a
//! [`SessionStore`](crate::store::session::SessionStore) engine and makes session ops
//! durable with group commit.
//!
//! The writer drains everything queued into one batch, applies it and syncs once, then
//! answers every waiter; a batch that nobody waits for first lingers up to [`LAZY_DELAY`]
//! for company, so acknowledgements do not cost a sync each. It is the same group commit
//! as the retained writer ([`crate::broker::retained`]), on its own thread so the two never
//! block each other. Ops are applied in the order they were submitted, which is what the
//! [`Keeper`] contract asks.
//!
//! Every [`ALIVE_PERIOD`] the writer also stores an alive mark (in a batch it syncs anyway,
//! or in one of its own when idle): after a crash, restore counts the sessions that were
//! connected as away since that mark.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::model::{Message, QoS};
use crate::store::session::{
    LoadedSessions, QueuedRecord, Seq, SessionOp, SessionRecord, SessionStore, StoredState,
};
use crate::store::StoreError;

use super::{Keeper, Receipt};

/// The most ops folded into one durable batch.
const MAX_BATCH: usize = 8192;

/// How long a batch that nobody waits for may wait for company before it is synced: ops
/// that are not awaited (queue removals, QoS 1 progress of a connected session) would
/// otherwise each cost a sync of their own on an idle writer. Bounds how much of that
/// progress a crash can lose (at worst a QoS 1 message is re-sent).
const LAZY_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// How often the writer stores an alive mark ([`SessionOp::MarkAlive`]). After a crash, a
/// session that was connected counts as away since the last mark, so its expiry starts at
/// most this much before the crash; an idle broker pays one small write and sync per period.
pub const ALIVE_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// One op for the writer thread, with an optional waiter.
struct Job {
    /// The change.
    op: SessionOp,
    /// Told once the batch holding `op` is durable (or failed); `None`: nobody waits.
    reply: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// Keeps sessions in a [`SessionStore`] through one group-committing writer thread.
pub struct LocalKeeper {
    /// The way to the writer thread; dropped at shutdown so the thread ends.
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    /// The writer thread, joined at shutdown after its last batch.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Next queue sequence number; global, so one counter orders every client's entries.
    next_seq: AtomicU64,
    /// What the store held at start, taken once by restore.
    loaded: Mutex<Option<LoadedSessions>>,
}

impl std::fmt::Debug for LocalKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeeper")
            .field("next_seq", &self.next_seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl LocalKeeper {
    /// Load everything `store` holds, store a first alive mark (the loaded one is the
    /// previous run's), and start the writer thread that owns it.
    pub fn open<S: SessionStore>(mut store: S) -> Result<Self, StoreError> {
        let loaded = store.load_sessions()?;
        // Before any client connects: a session opened now and caught by a crash before
        // the next mark must not count as away since the previous run's last mark.
        store.apply_sessions(&[SessionOp::MarkAlive(SystemTime::now())])?;
        let next_seq = loaded
            .queued
            .iter()
            .map(|q| q.1.get() + 1)
            .max()
            .unwrap_or(1);
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("ponte-session-writer".into())
            .spawn(move || writer_loop(store, rx))
            .map_err(|e| StoreError::Engine(format!("cannot start the session writer: {e}")))?;
        Ok(LocalKeeper {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            next_seq: AtomicU64::new(next_seq),
            loaded: Mutex::new(Some(loaded)),
        })
    }

    /// Send one op; with `wait`, the returned receipt resolves when it is durable.
    fn submit(&self, op: SessionOp, wait: bool) -> Option<Receipt> {
        let (reply, receipt) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(Receipt(rx)))
        } else {
            (None, None)
        };
        let tx = self.tx.lock();
        match tx.as_ref() {
            Some(tx) if tx.send(Job { op, reply }).is_ok() => receipt,
            _ => {
                // Shut down: a waiter sees the closed channel as `StoreError::Closed`.
                tracing::debug!("session writer is gone; op not stored");
                receipt
            }
        }
    }

    /// A fresh sequence number. The counter starts at 1; it would take 2^64 messages to
    /// wrap to 0.
    fn next_seq(&self) -> Seq {
        Seq::new(self.next_seq.fetch_add(1, Ordering::Relaxed)).unwrap_or(Seq::FIRST)
    }
}

impl Keeper for LocalKeeper {
    fn take_loaded(&self) -> LoadedSessions {
        self.loaded.lock().take().unwrap_or_default()
    }

    fn put_record(&self, client: &Arc<str>, record: SessionRecord, wait: bool) -> Option<Receipt> {
        self.submit(
            SessionOp::PutSession(client.clone(), Arc::new(record)),
            wait,
        )
    }

    fn put_state(&self, client: &Arc<str>, state: Arc<StoredState>, wait: bool) -> Option<Receipt> {
        self.submit(SessionOp::PutState(client.clone(), state), wait)
    }

    fn append(
        &self,
        client: &Arc<str>,
        message: &Message,
        qos: QoS,
        retain: bool,
        wait: bool,
    ) -> (Seq, Option<Receipt>) {
        let seq = self.next_seq();
        let rec = QueuedRecord {
            topic: message.topic.as_str().to_owned(),
            qos,
            retain,
            content_type: message.content_type.as_deref().map(str::to_owned),
            properties: message.properties.clone(),
            // Kept as wall-clock time: an `Instant` means nothing after a restart.
            expires_at: message.expires_at.map(|at| {
                let now = Instant::now();
                let wall = SystemTime::now();
                match at.checked_duration_since(now) {
                    Some(left) => wall + left,
                    None => wall
                        .checked_sub(now.duration_since(at))
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                }
            }),
            payload: message.payload.clone(),
        };
        let receipt = self.submit(SessionOp::Append(client.clone(), seq, Arc::new(rec)), wait);
        (seq, receipt)
    }

    fn acknowledge(&self, client: &Arc<str>, seq: Seq) {
        self.submit(SessionOp::Remove(client.clone(), seq), false);
    }

    fn forget(&self, client: &Arc<str>, seq: Seq) {
        self.submit(SessionOp::Remove(client.clone(), seq), false);
    }

    fn discard(&self, client: &Arc<str>) {
        self.submit(SessionOp::DeleteSession(client.clone()), false);
    }

    fn close(&self) {
        self.tx.lock().take();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for LocalKeeper {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer_loop<S: SessionStore>(mut store: S, rx: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut ops: Vec<SessionOp> = Vec::new();
    let mut next_mark = Instant::now() + ALIVE_PERIOD;
    loop {
        // Idle until the next op, or until the alive mark is due (a batch of its own).
        let first = match rx.recv_timeout(next_mark.saturating_duration_since(Instant::now())) {
            Ok(first) => Some(first),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut waited = first.as_ref().is_some_and(|j| j.reply.is_some());
        jobs.extend(first);
        let lazy_until = Instant::now() + LAZY_DELAY;
        while !jobs.is_empty() {
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => {
                        waited |= j.reply.is_some();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            if waited || jobs.len() >= MAX_BATCH {
                break;
            }
            // Nobody waits for these (acknowledgements, QoS 1 progress): give them a moment
            // to share one sync with what comes next instead of costing a sync each.
            match rx.recv_timeout(lazy_until.saturating_duration_since(Instant::now())) {
                Ok(j) => {
                    waited |= j.reply.is_some();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        ops.extend(jobs.iter().map(|j| j.op.clone()));
        if Instant::now() >= next_mark {
            // A busy writer carries the mark in a batch it syncs anyway.
            ops.push(SessionOp::MarkAlive(SystemTime::now()));
            next_mark = Instant::now() + ALIVE_PERIOD;
        }
        if ops.is_empty() {
            continue;
        }
        let result = store.apply_sessions(&ops);
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = ops.len(), "session batch failed; publishes refused");
        }
        for job in jobs.drain(..) {
            if let Some(reply) = job.reply {
                let _ = reply.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::Engine(e.to_string())),
                });
            }
        }
        ops.clear();
    }
}
