//! The durable side of persistent MQTT sessions: one writer thread with group commit for
//! session records and queued messages, and the set of mailboxes that need it.
//!
//! A persistent session's mailbox is *registered* here with its client id. At fan-out, a
//! QoS 1/2 delivery to a registered mailbox gets a sequence number and an `Append` op is
//! sent to the writer *before* the delivery is pushed (so the client's acknowledgement —
//! a `Remove` — can only come after it, in channel order); the publisher awaits the batch
//! that holds its appends before it is acknowledged. Nobody waits for `Remove` or session
//! record updates: they ride along in later batches. Non-persistent subscribers never touch
//! this module (fan-out checks one atomic counter).
//!
//! The writer drains everything queued into one batch, applies it and syncs once, then
//! answers every waiter (a batch that nobody waits for first lingers up to 5 ms for more
//! ops, so acknowledgements do not cost a sync each) — the same group commit as the retained writer
//! ([`super::retained`]), on its own thread so the two never block each other's code.
//!
//! Every [`ALIVE_PERIOD`] the writer also stores an alive mark (in a batch it syncs anyway,
//! or in one of its own when idle): after a crash, [`crate::mqtt::session::Registry::restore`]
//! counts the sessions that were connected as away since that mark.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use tokio::sync::oneshot;

use crate::store::session::{LoadedSessions, QueuedRecord, SessionOp, SessionStore};
use crate::store::StoreError;

use super::Delivery;
use crate::model::QoS;

/// The receipt of an op someone waits for: resolves once its batch is durable.
pub type Durable = oneshot::Receiver<Result<(), StoreError>>;

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

/// The session writer and the registry of durable mailboxes.
pub struct Queue {
    /// The way to the writer thread; dropped at shutdown so the thread ends.
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    /// The writer thread, joined at shutdown after its last batch.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Mailbox id → client id of every persistent session: the fan-out's lookup.
    durable: RwLock<HashMap<u64, Arc<str>>>,
    /// `durable.len()`, read without a lock so fan-out with no persistent sessions costs one
    /// atomic load.
    count: AtomicUsize,
    /// Next queue sequence number; global, so one counter orders every client's entries.
    next_seq: AtomicU64,
    /// What the store held at start, taken once by the session registry.
    loaded: Mutex<Option<LoadedSessions>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("durable_sessions", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Load everything `store` holds, store a first alive mark (the loaded one is the
    /// previous run's), and start the writer thread that owns it.
    pub fn open<S: SessionStore>(mut store: S) -> Result<Self, StoreError> {
        let loaded = store.load_sessions()?;
        // Before any client connects: a session opened now and caught by a crash before
        // the next mark must not count as away since the previous run's last mark.
        store.apply_sessions(&[SessionOp::MarkAlive(SystemTime::now())])?;
        let next_seq = loaded.queued.iter().map(|q| q.1 + 1).max().unwrap_or(1);
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("ponte-session-writer".into())
            .spawn(move || writer_loop(store, rx))
            .map_err(|e| StoreError::Engine(format!("cannot start the session writer: {e}")))?;
        Ok(Queue {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            durable: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
            next_seq: AtomicU64::new(next_seq),
            loaded: Mutex::new(Some(loaded)),
        })
    }

    /// The stored sessions and queued messages (once; later calls get nothing).
    pub fn take_loaded(&self) -> LoadedSessions {
        self.loaded.lock().take().unwrap_or_default()
    }

    /// Make `mailbox_id`'s QoS 1/2 deliveries durable under `client`.
    pub fn register(&self, mailbox_id: u64, client: Arc<str>) {
        let mut d = self.durable.write();
        d.insert(mailbox_id, client);
        self.count.store(d.len(), Ordering::Release);
    }

    /// Stop making `mailbox_id`'s deliveries durable.
    pub fn unregister(&self, mailbox_id: u64) {
        let mut d = self.durable.write();
        d.remove(&mailbox_id);
        self.count.store(d.len(), Ordering::Release);
    }

    /// The registry, read-locked, if any mailbox is registered (fan-out's fast check).
    pub(crate) fn registered(&self) -> Option<RwLockReadGuard<'_, HashMap<u64, Arc<str>>>> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        Some(self.durable.read())
    }

    /// A fresh sequence number.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Send one op; with `wait`, the returned receiver resolves when it is durable.
    pub fn submit(&self, op: SessionOp, wait: bool) -> Option<Durable> {
        let (reply, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let tx = self.tx.lock();
        match tx.as_ref() {
            Some(tx) if tx.send(Job { op, reply }).is_ok() => rx,
            _ => {
                // Shut down: a waiter sees the closed channel as `StoreError::Closed`.
                tracing::debug!("session writer is gone; op not stored");
                rx
            }
        }
    }

    /// Append a delivery for `client` under `seq`; resolves once durable.
    pub fn append(&self, client: &Arc<str>, seq: u64, d: &Delivery) -> Option<Durable> {
        self.append_op(client, seq, d, true)
    }

    /// Append a delivery for `client` under `seq` that nobody waits for (a retained
    /// message sent at SUBSCRIBE time: no publisher awaits its acknowledgement).
    pub fn submit_append(&self, client: &Arc<str>, seq: u64, d: &Delivery) {
        self.append_op(client, seq, d, false);
    }

    fn append_op(&self, client: &Arc<str>, seq: u64, d: &Delivery, wait: bool) -> Option<Durable> {
        let m = &d.message;
        let rec = QueuedRecord {
            topic: m.topic.as_str().to_owned(),
            qos: d.qos,
            retain: d.retain,
            content_type: m.content_type.as_deref().map(str::to_owned),
            properties: m.properties.clone(),
            // Kept as wall-clock time: an `Instant` means nothing after a restart.
            expires_at: m.expires_at.map(|at| {
                let now = Instant::now();
                let wall = SystemTime::now();
                match at.checked_duration_since(now) {
                    Some(left) => wall + left,
                    None => wall
                        .checked_sub(now.duration_since(at))
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                }
            }),
            payload: m.payload.clone(),
        };
        self.submit(SessionOp::Append(client.clone(), seq, Arc::new(rec)), wait)
    }

    /// Forget one queue entry (acknowledged or dropped); nobody waits.
    pub fn remove(&self, client: &Arc<str>, seq: u64) {
        self.submit(SessionOp::Remove(client.clone(), seq), false);
    }

    /// Stop accepting ops, let the writer finish, and join it.
    pub fn close(&self) {
        self.tx.lock().take();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.close();
    }
}

/// Whether a delivery of `qos` to a persistent session is made durable.
pub fn is_durable(qos: QoS) -> bool {
    qos != QoS::AtMostOnce
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
