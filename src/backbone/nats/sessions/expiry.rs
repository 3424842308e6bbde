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
use std::collections::BinaryHeap;
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

/// Delete released sessions at their expiry, and sweep when elected, until shutdown.
pub(super) async fn run(inner: Arc<Inner>, mut due: mpsc::UnboundedReceiver<Due>) {
    let mut closed = inner.closed.subscribe();
    let mut timers: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    // Not all nodes sweep at the same moment after a common start.
    let every = inner.config.session_sweep();
    let jitter = Duration::from_millis(fastrand::u64(0..=every.as_millis().min(5000) as u64));
    let mut next_sweep = tokio::time::Instant::now() + every + jitter;
    loop {
        let next_timer = timers.peek().map(|Reverse(d)| {
            let left = d.at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        let wake = next_timer.map_or(next_sweep, |t| t.min(next_sweep));
        tokio::select! {
            d = due.recv() => match d {
                Some(d) => timers.push(Reverse(d)),
                None => return,
            },
            _ = tokio::time::sleep_until(wake) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        let now = SystemTime::now();
        while timers.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(d)) = timers.pop() else {
                break;
            };
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
