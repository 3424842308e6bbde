//! The default store: sled 0.34 in the `--db` directory.
//!
//! Retained values live in the `retained` tree, keyed by topic. A batch of writes (a group
//! commit, driven by the retained writer thread) is made durable by the write-ahead log in
//! front of it ([`super::wal`]): one record written to the disk per batch. The tree gets
//! the latest op of each topic at a checkpoint (every [`CHECKPOINT_EVERY`], or sooner when
//! much is pending), with the number of the log generation it covers in `retained_meta`,
//! and that generation's file is then retired (recycled as a later one's, or deleted).
//! Opening the database applies what the log holds beyond the last checkpoint first.
//! With [`LogSync::Every`] (`[store] sync = "periodic"`), a batch is acknowledged once the
//! operating system has its record, and the writer calls [`Store::sync`] when it is due.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::session::{LoadedSessions, SessionOp, SessionStore};
use super::session_codec::{
    client_key, decode_alive, decode_queued, decode_session, decode_state, encode_alive,
    encode_queued, encode_session, encode_state, queue_key, split_queue_key, split_session_key,
};
pub use super::wal::LogSync;
use super::wal::Wal;
use super::{decode_value, encode_value, RetainedOp, Store, StoreError};
use crate::model::RetainedValue;
use crate::model::TopicName;

/// How often pending writes move from the write-ahead log into the tree.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Topics pending a checkpoint beyond which it comes early (bounds the memory they hold).
const CHECKPOINT_TOPICS: usize = 4096;
/// Bytes of log beyond which a checkpoint comes early (bounds the replay at start).
const CHECKPOINT_BYTES: u64 = 16 << 20;
/// The key in `retained_meta` naming the last log generation checkpointed into the tree.
const CHECKPOINTED: &[u8] = b"wal_checkpointed";

/// A sled database opened by ponte.
pub struct SledStore {
    /// The database: kept to flush it.
    db: sled::Db,
    /// The tree of retained values, keyed by topic name bytes.
    retained: sled::Tree,
    /// `retained_meta`: the last checkpointed log generation.
    meta: sled::Tree,
    /// The write-ahead log: where a batch becomes durable.
    wal: Wal,
    /// The latest op of each topic written since the last checkpoint.
    pending: HashMap<TopicName, RetainedOp>,
    /// When the last checkpoint was.
    checkpointed_at: Instant,
    /// When a checkpoint last failed, while none has succeeded since (retried after
    /// [`CHECKPOINT_EVERY`], not on every batch).
    checkpoint_failed: Option<Instant>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl SledStore {
    /// Open (or create) the database in `path`, each commit synced.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_db(path, LogSync::Always).map(|(s, _)| s)
    }

    /// Open the database in `path`, its retained writes synced as `sync` says, with a
    /// handle on its session trees for the session writer (which syncs every batch).
    pub fn open_with_sessions(
        path: &Path,
        sync: LogSync,
    ) -> Result<(Self, SledSessions), StoreError> {
        let (store, db) = Self::open_db(path, sync)?;
        let sessions = SledSessions {
            sessions: db.open_tree("sessions").map_err(engine)?,
            state: db.open_tree("session_state").map_err(engine)?,
            queue: db.open_tree("queue").map_err(engine)?,
            meta: db.open_tree("session_meta").map_err(engine)?,
            db,
        };
        Ok((store, sessions))
    }

    fn open_db(path: &Path, sync: LogSync) -> Result<(Self, sled::Db), StoreError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match e {
                // sled takes an exclusive lock on its directory (flock); a second process
                // gets EWOULDBLOCK.
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    StoreError::Locked {
                        dir: path.display().to_string(),
                    }
                }
                e => StoreError::Engine(format!("cannot open {}: {e}", path.display())),
            })?;
        let retained = db.open_tree("retained").map_err(engine)?;
        let meta = db.open_tree("retained_meta").map_err(engine)?;
        let checkpointed = meta
            .get(CHECKPOINTED)
            .map_err(engine)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let (wal, replay, last) = Wal::open(&path.join("wal"), checkpointed, sync)?;
        let store = SledStore {
            db: db.clone(),
            retained,
            meta,
            wal,
            pending: HashMap::new(),
            checkpointed_at: Instant::now(),
            checkpoint_failed: None,
        };
        if let Some(last) = last {
            // What was acknowledged after the last checkpoint, before a crash (or a stop
            // that could not checkpoint): into the tree before anything reads it.
            store.write_tree(replay.into_iter(), last)?;
            store.wal.forget(last)?;
        }
        Ok((store, db))
    }
}

impl Store for SledStore {
    fn load_retained(&self) -> Result<Vec<(TopicName, RetainedValue)>, StoreError> {
        let mut out = Vec::new();
        for item in self.retained.iter() {
            let (k, v) = item.map_err(engine)?;
            let topic = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| TopicName::parse(s).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    why: "key is not a valid topic name",
                })?;
            out.push((topic, decode_value(&k, &v)?));
        }
        Ok(out)
    }

    fn apply(&mut self, ops: &[RetainedOp]) -> Result<(), StoreError> {
        self.wal.append(ops)?;
        // Durable from here on: whatever the checkpoint does, the batch is applied.
        for op in ops {
            self.pending.insert(op.topic().clone(), op.clone());
        }
        let due = self.checkpointed_at.elapsed() >= CHECKPOINT_EVERY
            || self.pending.len() >= CHECKPOINT_TOPICS
            || self.wal.len() >= CHECKPOINT_BYTES;
        let retry = self
            .checkpoint_failed
            .is_none_or(|at| at.elapsed() >= CHECKPOINT_EVERY);
        if due && retry {
            match self.checkpoint() {
                Ok(()) => {
                    if self.checkpoint_failed.take().is_some() {
                        tracing::info!("retained checkpoints into sled succeed again");
                    }
                }
                Err(e) => {
                    // The log still holds every write: nothing is lost, the log grows
                    // until a checkpoint succeeds (tried again every CHECKPOINT_EVERY).
                    tracing::error!(error = %e, pending = self.pending.len(), "retained checkpoint into sled failed; the write-ahead log keeps the writes");
                    self.checkpoint_failed = Some(Instant::now());
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.checkpoint()?;
        self.db.flush().map_err(engine).map(|_| ())
    }

    fn sync_due(&self) -> Option<Instant> {
        self.wal.sync_due()
    }

    /// The log synced; should that fail, a checkpoint puts what it holds into the tree
    /// (flushed): the writes are on the disk either way, or the error says they may not be.
    fn sync(&mut self) -> Result<(), StoreError> {
        let Err(e) = self.wal.sync() else {
            return Ok(());
        };
        tracing::error!(error = %e, "syncing the retained log failed; checkpointing into sled instead");
        self.checkpoint()
            .map_err(|c| StoreError::Engine(format!("{e}; and the checkpoint instead failed: {c}")))
    }
}

impl SledStore {
    /// Move the pending writes into the tree. In this order, so that a failure or a crash
    /// at any step loses nothing: writes go to a new log generation first (none may land
    /// in one marked checkpointed); then the tree gets every pending op, marked with the
    /// last generation they came from, and is flushed; only then are the ops dropped from
    /// memory and the generations' files deleted. A failed checkpoint keeps `pending` (the
    /// next one writes it all, marked with a later generation).
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.checkpointed_at = Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        let generation = self.wal.generation();
        self.wal.start_next()?;
        self.write_tree(self.pending.values().cloned(), generation)?;
        self.pending.clear();
        self.wal.forget(generation)
    }

    /// Apply `ops` to the tree, then record `generation` as checkpointed, and flush: sled
    /// recovers a prefix of its writes, so the mark never survives without the ops (and
    /// ops applied twice, when the mark is lost, end the same).
    fn write_tree(
        &self,
        ops: impl Iterator<Item = RetainedOp>,
        generation: u64,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                RetainedOp::Put(t, v) => batch.insert(t.as_str().as_bytes(), encode_value(&v)),
                RetainedOp::Delete(t) => batch.remove(t.as_str().as_bytes()),
            }
        }
        self.retained.apply_batch(batch).map_err(engine)?;
        self.meta
            .insert(CHECKPOINTED, &generation.to_be_bytes())
            .map_err(engine)?;
        self.db.flush().map_err(engine)?;
        Ok(())
    }
}

/// The persistent-session trees of the same database: `sessions` (one record per client),
/// `session_state` (its unfinished exchanges, rewritten as they progress), `queue` (one
/// entry per queued message, keyed by client and sequence number) and `session_meta` (one
/// key, `alive_at`: when the broker was last known alive).
pub struct SledSessions {
    /// The database: flushed once per batch (fsync).
    db: sled::Db,
    /// Session records by client key.
    sessions: sled::Tree,
    /// Protocol state by client key: small, so rewriting it per packet stays cheap.
    state: sled::Tree,
    /// Queued messages by client key + sequence number.
    queue: sled::Tree,
    /// Broker-wide session bookkeeping: the alive mark, rewritten every few seconds.
    meta: sled::Tree,
}

/// The key of the alive mark in `session_meta`.
const ALIVE_KEY: &[u8] = b"alive_at";

impl std::fmt::Debug for SledSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledSessions").finish_non_exhaustive()
    }
}

impl SessionStore for SledSessions {
    fn load_sessions(&self) -> Result<LoadedSessions, StoreError> {
        let mut out = LoadedSessions::default();
        for item in self.sessions.iter() {
            let (k, v) = item.map_err(engine)?;
            let client = split_session_key(&k)?;
            let (record, v1_state) = decode_session(&v)?;
            if let Some(state) = v1_state {
                out.states.insert(client.clone(), state);
            }
            out.sessions.push((client, record));
        }
        for item in self.state.iter() {
            let (k, v) = item.map_err(engine)?;
            out.states.insert(split_session_key(&k)?, decode_state(&v)?);
        }
        for item in self.queue.iter() {
            let (k, v) = item.map_err(engine)?;
            let (client, seq) = split_queue_key(&k)?;
            out.queued.push((client, seq, decode_queued(&v)?));
        }
        if let Some(v) = self.meta.get(ALIVE_KEY).map_err(engine)? {
            out.alive_at = decode_alive(&v)?;
        }
        Ok(out)
    }

    fn apply_sessions(&mut self, ops: &[SessionOp]) -> Result<(), StoreError> {
        let mut sessions = sled::Batch::default();
        let mut state = sled::Batch::default();
        let mut queue = sled::Batch::default();
        let mut alive = None;
        for op in ops {
            match op {
                SessionOp::PutSession(c, r) => sessions.insert(client_key(c), encode_session(r)),
                SessionOp::PutState(c, s) => state.insert(client_key(c), encode_state(s)),
                SessionOp::DeleteSession(c) => {
                    sessions.remove(client_key(c));
                    state.remove(client_key(c));
                    // Entries appended earlier in this batch must be seen by the scan.
                    let earlier = std::mem::take(&mut queue);
                    self.queue.apply_batch(earlier).map_err(engine)?;
                    for item in self.queue.scan_prefix(client_key(c)) {
                        let (k, _) = item.map_err(engine)?;
                        queue.remove(k);
                    }
                }
                SessionOp::Append(c, seq, m) => queue.insert(queue_key(c, *seq), encode_queued(m)),
                SessionOp::Remove(c, seq) => queue.remove(queue_key(c, *seq)),
                SessionOp::MarkAlive(t) => alive = Some(*t),
            }
        }
        if let Some(t) = alive {
            self.meta
                .insert(ALIVE_KEY, &encode_alive(t))
                .map_err(engine)?;
        }
        // Every tree, one sync: every batch is in the log before the flush returns. The
        // queue goes first: should a crash keep only a prefix of the log, an exchange's
        // state never refers to an entry that was not appended, and an entry removed on
        // PUBCOMP is never left behind by a state that already forgot it (it would come
        // back as a new message).
        self.queue.apply_batch(queue).map_err(engine)?;
        self.state.apply_batch(state).map_err(engine)?;
        self.sessions.apply_batch(sessions).map_err(engine)?;
        self.db.flush().map_err(engine)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QoS;
    use bytes::Bytes;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn values_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t = TopicName::parse("a/b").unwrap();
        let v = Arc::new(RetainedValue {
            payload: Bytes::from_static(b"x"),
            content_type: None,
            qos: QoS::AtMostOnce,
            version: 7,
            updated: UNIX_EPOCH + Duration::from_millis(1000),
        });
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            s.apply(&[RetainedOp::Put(t.clone(), v.clone())]).unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let loaded = s.load_retained().unwrap();
        assert_eq!(loaded, vec![(t.clone(), (*v).clone())]);
        drop(s);
        let mut s = SledStore::open(dir.path()).unwrap();
        s.apply(&[RetainedOp::Delete(t)]).unwrap();
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert!(s.load_retained().unwrap().is_empty());
    }

    #[test]
    fn alive_mark_survives_reopen_and_the_latest_of_a_batch_wins() {
        let dir = tempfile::tempdir().unwrap();
        let t = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        {
            let (_, sessions) = SledStore::open_with_sessions(dir.path(), LogSync::Always).unwrap();
            assert_eq!(sessions.load_sessions().unwrap().alive_at, None);
            let mut sessions = sessions;
            sessions
                .apply_sessions(&[
                    SessionOp::MarkAlive(t(1_700_000_000_000)),
                    SessionOp::MarkAlive(t(1_700_000_002_000)),
                ])
                .unwrap();
        }
        // sled releases its lock from its flusher thread, which may still be finishing.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let sessions = loop {
            match SledStore::open_with_sessions(dir.path(), LogSync::Always) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                r => break r.unwrap().1,
            }
        };
        assert_eq!(
            sessions.load_sessions().unwrap().alive_at,
            Some(t(1_700_000_002_000))
        );
    }
}
