//! The supervisor: the one task that follows the NATS connection. Whenever the connection
//! is (re)established it provisions the streams and buckets, claims the node name (once),
//! re-reads the retained bucket into the mirror and resumes hearing the log after the last
//! message heard; then the node is ready. When the connection drops the node stops being
//! ready (writes are refused with "unavailable"; reads go on from the mirror) until the
//! next round. Each transition is logged once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{connection, hear, retained, Inner};

/// How often the supervisor looks at the connection state besides the client's events.
const POLL: Duration = Duration::from_millis(250);

/// Wait for the next connection event or [`POLL`].
async fn next_event(events: &mut mpsc::UnboundedReceiver<async_nats::Event>) {
    let _ = tokio::time::timeout(POLL, events.recv()).await;
}

/// Run until shutdown.
pub(crate) async fn supervise(
    inner: Arc<Inner>,
    mut events: mpsc::UnboundedReceiver<async_nats::Event>,
) {
    let mut first = true;
    let mut warned_down = false;
    let mut claimed = false;
    while !inner.is_closed() {
        if !inner.connected() {
            if !warned_down {
                tracing::warn!(urls = %inner.config.urls.join(","), "NATS not reachable; retrying, and this node is not ready (writes are refused) until it connects");
                warned_down = true;
            }
            next_event(&mut events).await;
            continue;
        }
        let provisioned = match connection::provision(&inner).await {
            Ok(p) => p,
            Err(e) => {
                let hint = if e.contains("insufficient storage") {
                    "JetStream cannot reserve [cluster] retention_bytes: lower it, or give nats-server more storage"
                } else {
                    ""
                };
                tracing::warn!(error = %e, hint, "cannot create ponte's streams and buckets in NATS yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !claimed {
            match connection::claim(&inner).await {
                Ok(rev) => {
                    claimed = true;
                    inner.claimed.store(true, Ordering::Release);
                    tokio::spawn(connection::heartbeat(inner.clone(), rev));
                }
                Err(Ok(fatal)) => {
                    tracing::error!(error = %fatal, "this node cannot join the cluster");
                    *inner.fatal.write() = Some(fatal);
                    return;
                }
                Err(Err(e)) => {
                    tracing::warn!(error = %e, "cannot claim the node name yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        // Fill the mirror and hear the log, from where we left off.
        let (synced_tx, synced_rx) = oneshot::channel();
        let watch: JoinHandle<()> = tokio::spawn(retained::watch(inner.clone(), synced_tx));
        let hear: JoinHandle<()> = tokio::spawn(hear::hear(inner.clone()));
        let synced = tokio::select! {
            r = synced_rx => r.is_ok(),
            _ = wait_down(&inner, &mut events) => false,
        };
        if synced {
            inner.synced.store(true, Ordering::Release);
            inner.update_ready();
            if first {
                tracing::info!(
                    urls = %inner.config.urls.join(","),
                    node = %inner.node,
                    log = %provisioned.log,
                    retained = %provisioned.retained,
                    nodes = %provisioned.nodes,
                    sessions = %provisioned.sessions,
                    values = provisioned.values,
                    log_last_sequence = provisioned.last_sequence,
                    replicas = inner.config.replicas,
                    "cluster backbone ready: connected to NATS, streams and buckets in place, mirror in sync"
                );
            } else {
                tracing::info!(
                    node = %inner.node,
                    values = provisioned.values,
                    resumed_after = inner.heard.load(Ordering::Relaxed),
                    "NATS is back: mirror re-synced, hearing the log again; taking writes"
                );
            }
            first = false;
            warned_down = false;
            wait_down(&inner, &mut events).await;
        }
        inner.synced.store(false, Ordering::Release);
        inner.provisioned.store(false, Ordering::Release);
        inner.update_ready();
        watch.abort();
        hear.abort();
        if !inner.is_closed() {
            tracing::warn!(node = %inner.node, "lost NATS: writes are refused (503 / 5.03 / 0x80) and reads come from the mirror until it returns");
            warned_down = true;
        }
    }
}

/// Wait until the connection is down (or shutdown).
async fn wait_down(inner: &Inner, events: &mut mpsc::UnboundedReceiver<async_nats::Event>) {
    while inner.connected() && !inner.is_closed() {
        next_event(events).await;
    }
}
