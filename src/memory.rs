//! Giving memory back to the operating system once queued messages are gone (issue 16).
//!
//! glibc's malloc keeps what is freed inside its arenas: it returns memory only from the top
//! of a heap, so once many small blocks (message payloads, queue entries) were allocated by
//! several threads and freed again, most of the pages stay resident although nothing uses
//! them. Measured with `ponte-loadgen stall` (50 stalled CoAP/TCP observers, 50 MQTT
//! subscribers and 50 SSE streams under 200,000 × 1 KiB publishes): after the readers left,
//! RSS stayed 25–40 MiB above the baseline; `malloc_trim(0)` — which also releases the free
//! pages in the middle of the heaps — brings it back to within ~3 MiB. Tuning the
//! thresholds instead (`M_MMAP_THRESHOLD`, `M_ARENA_MAX`) left 18–28 MiB.
//!
//! So a small task watches the queued-bytes budget ([`Budget::used`]) and, when it has
//! fallen by [`TRIM_AFTER`] since its high point, trims on the blocking pool. Trimming costs
//! a walk over the arenas' free lists (milliseconds), and happens only after a large
//! release, never per message. On other C libraries (musl, macOS) this is a no-op.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::budget::Budget;
use crate::shutdown::Shutdown;

/// How often the budget is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// How far the queued bytes must fall below their high point before memory is trimmed.
pub const TRIM_AFTER: usize = 8 << 20;

/// Watch `budget` until shutdown and trim the heap after large releases.
pub async fn trim_after_release(budget: Arc<Budget>, mut shutdown: Shutdown) {
    let mut high = budget.used();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let used = budget.used();
        high = high.max(used);
        if high - used >= TRIM_AFTER {
            tracing::debug!(
                released = high - used,
                "queued messages released; trimming the heap"
            );
            high = used;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Return the free pages of every malloc arena to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim only walks glibc's own heap structures under their locks; any
    // thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Nothing to do where the allocator is not glibc's.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}
