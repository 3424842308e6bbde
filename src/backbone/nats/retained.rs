//! Retained values in a cluster: the KV bucket `<prefix>_retained` is the authority (one
//! key per topic, history 1, a value's version is its KV revision — the same ETag on every
//! node); every node reads from its in-memory mirror (`broker::retained`'s `mirror_*`),
//! fed by a watch of the whole bucket.
//!
//! The write side (compare-and-set, then the log) is in [`super::log`]: `If-None-Match: *`
//! expects the key's last revision to be 0 (or its delete marker's), `If-Match` and every
//! other write expect the revision the precondition was checked against, and a lost race
//! re-reads the entry and decides again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Entry, Operation};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::envelope::{wall_to_instant, Envelope};
use super::mapping::{self, Decoded};
use super::Inner;
use crate::model::{RetainedValue, TopicName};

/// What a KV entry holds: the value (`None` for a delete marker) and its MQTT 5 parts.
pub(crate) type EntryMeta = (
    Option<Arc<crate::model::Properties>>,
    Option<std::time::SystemTime>,
);

/// The value of an entry for `topic` (`None`: deleted or unreadable), with its MQTT 5 meta.
pub(crate) fn entry_value(
    topic: &TopicName,
    e: &Entry,
) -> Option<(Option<Arc<RetainedValue>>, EntryMeta)> {
    if e.operation != Operation::Put {
        return Some((None, (None, None)));
    }
    match Envelope::decode(&e.value) {
        Ok(env) => Some((
            Some(Arc::new(RetainedValue {
                payload: env.payload,
                content_type: env.content_type,
                qos: env.qos,
                version: e.revision,
                updated: env.updated,
            })),
            (env.properties, env.expires_at),
        )),
        Err(err) => {
            tracing::warn!(topic = %topic, revision = e.revision, error = %err, "retained value in the bucket not understood; ignored");
            None
        }
    }
}

/// The topic of an entry's key (hashed keys: from the value).
fn entry_topic(e: &Entry) -> Option<TopicName> {
    match mapping::decode_key(&e.key) {
        Ok(Decoded::Topic(t)) => Some(t),
        Ok(Decoded::Hashed) => {
            let env = Envelope::decode(&e.value).ok()?;
            TopicName::parse(env.topic.as_deref()?).ok()
        }
        Err(err) => {
            tracing::warn!(key = %e.key, error = %err, "key in the retained bucket is not a ponte topic; ignored");
            None
        }
    }
}

/// Fill the mirror from the whole bucket, tell `synced`, then follow every change, until
/// the connection drops (the supervisor starts it again, from scratch, after a reconnect).
pub(crate) async fn watch(inner: Arc<Inner>, synced: oneshot::Sender<()>) {
    let mut synced = Some(synced);
    loop {
        if inner.is_closed() {
            return;
        }
        match watch_once(&inner, &mut synced).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, "retained watch stopped; restarting"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One watch; `Err` when it failed.
async fn watch_once(
    inner: &Arc<Inner>,
    synced: &mut Option<oneshot::Sender<()>>,
) -> Result<(), String> {
    let kv = inner
        .kv
        .read()
        .clone()
        .ok_or("the retained bucket is not provisioned")?;
    let Some(broker) = inner.broker() else {
        return Ok(());
    };
    let values = kv.status().await.map_err(|e| e.to_string())?.values();
    // Every key's last value (delete markers included), then every change.
    let mut watch = kv
        .watch_with_history(">")
        .await
        .map_err(|e| e.to_string())?;
    // Until the snapshot is complete, changes collect here and replace the mirror whole.
    let mut snapshot: Option<HashMap<TopicName, Arc<RetainedValue>>> = Some(HashMap::new());
    let mut metas: Vec<(TopicName, u64, EntryMeta)> = Vec::new();
    if values == 0 {
        broker.retained().mirror_replace(HashMap::new());
        snapshot = None;
        if let Some(s) = synced.take() {
            let _ = s.send(());
        }
    }
    while let Some(e) = watch.next().await {
        let e = e.map_err(|e| e.to_string())?;
        let Some(topic) = entry_topic(&e) else {
            continue;
        };
        let Some((value, meta)) = entry_value(&topic, &e) else {
            continue;
        };
        match &mut snapshot {
            Some(snap) => {
                match value {
                    Some(v) => {
                        metas.push((topic.clone(), e.revision, meta));
                        snap.insert(topic, v);
                    }
                    None => {
                        snap.remove(&topic);
                    }
                }
                if e.seen_current || e.delta == 0 {
                    if let Some(snap) = snapshot.take() {
                        broker.retained().mirror_replace(snap);
                    }
                    for (t, rev, (props, exp)) in metas.drain(..) {
                        broker.note_mirrored_meta(&t, rev, props, exp.map(wall_to_instant));
                    }
                    if let Some(s) = synced.take() {
                        let _ = s.send(());
                    }
                }
            }
            None => match value {
                Some(v) => {
                    if broker.retained().mirror_put(&topic, v) {
                        let (props, exp) = meta;
                        broker.note_mirrored_meta(
                            &topic,
                            e.revision,
                            props,
                            exp.map(wall_to_instant),
                        );
                    }
                }
                None => {
                    broker.retained().mirror_delete(&topic, e.revision, false);
                }
            },
        }
    }
    Err("the watch ended".into())
}
