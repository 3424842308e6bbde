//! A message's share of an accountant's budget, held while the message lives.
//!
//! The broker's global budget for queued bytes (`broker::budget`, `[limits]
//! max_queued_bytes`) charges a message once, when the first queue takes it, and must get the
//! bytes back when the last `Arc<Message>` goes, whichever queue or task drops it last. The
//! message carries that share as a [`Charge`]; what gives the bytes back is anything that
//! implements [`Release`], so this model stays below the broker that implements it.

use std::sync::{Arc, OnceLock};

/// Something that lent bytes to a message and takes them back when the message is freed.
pub trait Release: Send + Sync {
    /// Give back `bytes` lent to a message that is now freed.
    fn release(&self, bytes: usize);
}

/// The bytes a message holds from a [`Release`]r, given back when the message is dropped.
/// Every `Message` starts with an empty one (`Charge::default()`); a clone of a message starts
/// empty again, since it is a message of its own.
#[derive(Default)]
pub struct Charge(OnceLock<(Arc<dyn Release>, usize)>);

impl Charge {
    /// Record that the message holds `bytes` lent by `from`. Only the first call counts:
    /// when another queue charged the message meanwhile, `false` is returned and the caller
    /// gives its bytes back itself.
    pub fn hold(&self, from: Arc<dyn Release>, bytes: usize) -> bool {
        self.0.set((from, bytes)).is_ok()
    }

    /// Whether the message holds a share already.
    pub fn is_held(&self) -> bool {
        self.0.get().is_some()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some((from, bytes)) = self.0.get() {
            from.release(*bytes);
        }
    }
}

impl Clone for Charge {
    fn clone(&self) -> Self {
        Charge::default()
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some((_, bytes)) => write!(f, "Charge({bytes} bytes)"),
            None => f.write_str("Charge(none)"),
        }
    }
}
