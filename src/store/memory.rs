//! A store that keeps nothing: `--memory` mode and tests. Values live only in the broker's
//! in-memory index and are gone when the process ends.

use super::{RetainedOp, Store, StoreError};
use crate::model::RetainedValue;
use crate::model::TopicName;

/// The no-persistence store.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn load_retained(&self) -> Result<Vec<(TopicName, RetainedValue)>, StoreError> {
        Ok(Vec::new())
    }

    fn apply(&mut self, _ops: &[RetainedOp]) -> Result<(), StoreError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn keeps_nothing(&self) -> bool {
        true
    }
}
