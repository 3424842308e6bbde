//! Session expiry across the cluster (MQTT 5 §3.1.2.11.2; 3.1.1: `[mqtt]
//! session_expiry_secs`).
//!
//! A session ends when its client has been away longer than its expiry, whichever node
//! it was last on. Three things see to it, each deciding by compare-and-set so that doing
//! it twice, or late, is harmless:
//!
//! - a claim treats an expired session as gone (a CONNECT after the expiry gets a new
//!   session, Session Present 0) — so what a client sees never depends on a timer;
//! - the node that released a session deletes it at its expiry, expecting the revision of
//!   its release (a session resumed since has another revision and stays);
//! - every `[cluster] session_sweep_secs` (30 s), the live node whose name sorts first reads the whole bucket and
//!   deletes what expired (a releasing node may have died), and releases the sessions of
//!   nodes that are gone (their clients were connected when the node died: away since the
//!   sweep noticed), so those expire too.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::super::Inner;
use super::record::Kept;

/// A released session to delete at its expiry.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due {
    /// When it expires.
    pub at: SystemTime,
    /// Its key.
    pub key: String,
    /// The revision of its release: only that value is deleted.
    pub rev: u64,
}

/// Stale timers a [`Timers`] may hold beyond its live ones before it drops them.
const STALE_SLACK: usize = 64;

/// The released sessions to delete at their expiry, soonest first. A session released
/// again (its client came back and left) has a newer timer, and the older one is stale:
/// its delete would expect a revision that is gone. Without the bookkeeping of the newest
/// release per session, a client that reconnects and leaves over and over would leave a
/// timer each time until its expiry — for a session expiry of days or years, for good.
#[derive(Debug, Default)]
struct Timers {
    /// Every timer not yet due, stale ones included until they are dropped.
    heap: BinaryHeap<Reverse<Due>>,
    /// The revision of the newest release of each session with a timer.
    newest: HashMap<String, u64>,
}

impl Timers {
    /// Add `due`; drop the stale timers once they outnumber the live ones (O(1)
    /// amortized), so there are at most about twice as many as sessions released.
    fn push(&mut self, due: Due) {
        let newest = self.newest.entry(due.key.clone()).or_insert(due.rev);
        *newest = (*newest).max(due.rev);
        self.heap.push(Reverse(due));
        if self.heap.len() > 2 * self.newest.len() + STALE_SLACK {
            let newest = &self.newest;
            self.heap
                .retain(|Reverse(d)| newest.get(&d.key) == Some(&d.rev));
        }
    }

    /// When the soonest timer is due.
    fn next_at(&self) -> Option<SystemTime> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// The next live timer due at `now`, if any (stale ones are dropped on the way).
    fn pop_due(&mut self, now: SystemTime) -> Option<Due> {
        while self.heap.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Reverse(d) = self.heap.pop()?;
            if self.newest.get(&d.key) == Some(&d.rev) {
                self.newest.remove(&d.key);
                return Some(d);
            }
        }
        None
    }

    /// Timers held, stale ones included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

/// Delete released sessions at their expiry, and sweep when elected, until shutdown.
pub(super) async fn run(inner: Arc<Inner>, mut due: mpsc::UnboundedReceiver<Due>) {
    let mut closed = inner.closed.subscribe();
    let mut timers = Timers::default();
    // Not all nodes sweep at the same moment after a common start.
    let every = inner.config.session_sweep();
    let jitter = Duration::from_millis(fastrand::u64(0..=every.as_millis().min(5000) as u64));
    let mut next_sweep = tokio::time::Instant::now() + every + jitter;
    loop {
        let next_timer = timers.next_at().map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        let wake = next_timer.map_or(next_sweep, |t| t.min(next_sweep));
        tokio::select! {
            d = due.recv() => match d {
                Some(d) => timers.push(d),
                None => return,
            },
            _ = tokio::time::sleep_until(wake) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        let now = SystemTime::now();
        while let Some(d) = timers.pop_due(now) {
            delete_expired(&inner, &d.key, Some(d.rev)).await;
        }
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + every;
            if elected(&inner).await {
                if let Err(e) = sweep(&inner).await {
                    tracing::debug!(error = %e, "session sweep stopped; next time");
                }
            }
        }
    }
}

/// Delete `key` if it is still an expired away session (at revision `rev`, when given).
async fn delete_expired(inner: &Inner, key: &str, rev: Option<u64>) {
    let Some(kv) = inner.sessions.read().clone() else {
        return;
    };
    let timeout = inner.config.timeout();
    let Ok(Ok(Some(e))) = tokio::time::timeout(timeout, kv.entry(key)).await else {
        return;
    };
    if e.operation != Operation::Put || rev.is_some_and(|r| r != e.revision) {
        return;
    }
    let Ok(k) = Kept::decode(&e.value) else {
        return;
    };
    if !k.expired(SystemTime::now()) {
        return;
    }
    if let Ok(Ok(())) =
        tokio::time::timeout(timeout, kv.delete_expect_revision(key, Some(e.revision))).await
    {
        tracing::info!(client_id = %k.client, "MQTT session expired");
    }
}

/// Whether this node sweeps: the live node (in the nodes bucket) whose name sorts first.
async fn elected(inner: &Inner) -> bool {
    if !inner.ready() {
        return false;
    }
    let Ok(kv) = inner.js.get_key_value(inner.config.nodes_bucket()).await else {
        return false;
    };
    let Ok(mut keys) = kv.keys().await else {
        return false;
    };
    let mut first: Option<String> = None;
    while let Some(Ok(k)) = keys.next().await {
        if first.as_ref().is_none_or(|f| k < *f) {
            first = Some(k);
        }
    }
    first.as_deref() == Some(inner.node.as_str())
}

/// One sweep of the whole bucket.
async fn sweep(inner: &Inner) -> Result<(), String> {
    let kv = inner
        .sessions
        .read()
        .clone()
        .ok_or("the sessions bucket is not provisioned")?;
    let nodes = inner
        .js
        .get_key_value(inner.config.nodes_bucket())
        .await
        .map_err(|e| e.to_string())?;
    // Live node → the boot (run) its claim names.
    let mut live = std::collections::HashMap::new();
    let mut names = nodes.keys().await.map_err(|e| e.to_string())?;
    while let Some(Ok(n)) = names.next().await {
        if let Ok(Some(e)) = nodes.entry(&n).await {
            live.insert(n, super::super::connection::claimed_boot(&e.value));
        }
    }
    let mut keys = kv.keys().await.map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    while let Some(k) = keys.next().await {
        let key = k.map_err(|e| e.to_string())?;
        let Ok(Some(e)) = kv.entry(&key).await else {
            continue;
        };
        if e.operation != Operation::Put {
            continue;
        }
        let Ok(mut kept) = Kept::decode(&e.value) else {
            continue;
        };
        match kept.owner.clone() {
            None if kept.expired(now) => delete_expired(inner, &key, Some(e.revision)).await,
            Some(owner)
                if live
                    .get(&owner)
                    .is_none_or(|boot| boot.is_some_and(|b| b != kept.boot)) =>
            {
                // Its node died (or restarted) with the client connected: away from now on.
                kept.owner = None;
                kept.record.away_since = Some(now);
                if kv
                    .update(&key, kept.encode().into(), e.revision)
                    .await
                    .is_ok()
                {
                    tracing::info!(client_id = %kept.client, node = %owner, "MQTT session of a node that is gone released; it expires from now");
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether session `sid` (stored under `key`) was resumed by a new connection since its
/// connection at `epoch` ended: a delayed will is then dropped. A session that ended (or
/// was replaced by a clean start) was not resumed: the will goes.
pub(super) async fn resumed(inner: &Inner, key: &str, sid: u64, epoch: u64) -> bool {
    let Some(kv) = inner.sessions.read().clone() else {
        return false;
    };
    match tokio::time::timeout(inner.config.timeout(), kv.entry(key)).await {
        Ok(Ok(Some(e))) if e.operation == Operation::Put => {
            Kept::decode(&e.value).is_ok_and(|k| k.session_id == sid && k.epoch > epoch)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(key: &str, rev: u64, secs: u64) -> Due {
        Due {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            key: key.to_string(),
            rev,
        }
    }

    #[test]
    fn a_session_released_over_and_over_keeps_one_live_timer() {
        let mut timers = Timers::default();
        // One client reconnecting and leaving 10,000 times, its session expiring a year
        // after each release; another session released once.
        for rev in 1..=10_000 {
            timers.push(due("flapping", rev, 1_000 + rev));
        }
        timers.push(due("steady", 20_000, 500));
        assert!(
            timers.len() <= 2 * 2 + STALE_SLACK + 1,
            "{} timers held for 2 sessions",
            timers.len()
        );
        // Only the newest release of each is deleted, in expiry order.
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(timers.pop_due(far).map(|d| d.rev), Some(20_000));
        assert_eq!(timers.pop_due(far).map(|d| d.rev), Some(10_000));
        assert!(timers.pop_due(far).is_none());
    }

    #[test]
    fn a_timer_fires_only_when_due() {
        let mut timers = Timers::default();
        timers.push(due("a", 7, 100));
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(timers.next_at(), Some(at(100)));
        assert!(timers.pop_due(at(99)).is_none());
        assert_eq!(timers.pop_due(at(100)).map(|d| d.rev), Some(7));
    }
}
