//! The default store: sled 0.34 in the `--db` directory.
//!
//! Retained values live in the `retained` tree, keyed by topic. A batch is applied with one
//! `apply_batch` and made durable with one `flush` (fsync), so concurrent writers share the
//! cost of a sync (group commit, driven by the retained writer thread).

use std::path::Path;

use super::{decode_value, encode_value, RetainedOp, Store, StoreError};
use crate::broker::message::RetainedValue;
use crate::broker::topic::TopicName;

/// A sled database opened by ponte.
pub struct SledStore {
    /// The database: kept to flush it.
    db: sled::Db,
    /// The tree of retained values, keyed by topic name bytes.
    retained: sled::Tree,
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
    /// Open (or create) the database in `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| StoreError::Engine(format!("cannot open {}: {e}", path.display())))?;
        let retained = db.open_tree("retained").map_err(engine)?;
        Ok(SledStore { db, retained })
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
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                RetainedOp::Put(t, v) => batch.insert(t.as_str().as_bytes(), encode_value(v)),
                RetainedOp::Delete(t) => batch.remove(t.as_str().as_bytes()),
            }
        }
        self.retained.apply_batch(batch).map_err(engine)?;
        self.db.flush().map_err(engine)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.db.flush().map_err(engine).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::QoS;
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
        assert!(s.load_retained().unwrap().is_empty());
    }
}
