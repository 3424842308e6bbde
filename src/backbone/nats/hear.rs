//! Hearing the log: every node reads the whole `<prefix>_LOG` stream with one ordered
//! consumer and fans other nodes' messages out locally; its own messages it fanned out when
//! it published them, except to persistent sessions kept in the log (they take everything
//! in log order). A log message may carry a batch of writes ([`super::position`]): each
//! entry is heard as its own message, at its own position.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use bytes::Bytes;
use futures_util::StreamExt;

use super::envelope::{self, wall_to_instant, Envelope};
use super::mapping::{self, Decoded};
use super::{position, Inner, NODE_HEADER, REVISION_HEADER};
use crate::model::{Message, Origin, RetainedValue, TopicName};

/// How long one pull of the hearing consumer waits (its heartbeat is half of it).
pub(crate) const HEAR_EXPIRES: std::time::Duration = std::time::Duration::from_secs(2);

/// Hear the log until the connection drops: from the message after the last one heard
/// (or, the first time, from the end of the log), skipping this node's own messages.
pub(crate) async fn hear(inner: Arc<Inner>) {
    let mut closed = inner.closed.subscribe();
    loop {
        if inner.is_closed() {
            return;
        }
        if let Err(e) = hear_once(&inner).await {
            tracing::debug!(error = %e, "hearing the log stopped; resuming");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
    }
}

/// One ordered consumer over the log, until it fails.
async fn hear_once(inner: &Arc<Inner>) -> Result<(), String> {
    let stream = inner
        .log
        .read()
        .clone()
        .ok_or("the log is not provisioned")?;
    let info = stream.get_info().await.map_err(|e| e.to_string())?;
    let heard = inner.heard.load(Ordering::Acquire);
    let last = info.state.last_sequence;
    let first = !inner.hearing.load(Ordering::Acquire);
    let start = if first || heard > last {
        if heard > last {
            tracing::warn!(
                heard,
                last,
                "the message log is shorter than what this node heard (recreated?); hearing new messages only"
            );
        }
        inner.heard.store(last, Ordering::Release);
        // Nothing before this is fanned out here: persistent sessions made from now on
        // begin after it.
        if let Some(d) = inner.broker().as_ref().and_then(|b| b.durable().cloned()) {
            d.marks()
                .matched
                .store(position::through(last), Ordering::Release);
            d.marks()
                .fanned
                .store(position::through(last), Ordering::Release);
        }
        inner.hearing.store(true, Ordering::Release);
        last + 1
    } else {
        heard + 1
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            // Short pulls with a 1 s heartbeat: a consumer lost with a nats-server is
            // noticed (and recreated after the last message heard) within seconds, not
            // after the client's default 30 s.
            max_expires: HEAR_EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| e.to_string())?;
        let seq = match m.info() {
            Ok(i) => i.stream_sequence,
            Err(e) => return Err(e.to_string()),
        };
        inner.heard.store(seq, Ordering::Release);
        let own = m
            .headers
            .as_ref()
            .and_then(|h| h.get(NODE_HEADER))
            .is_some_and(|n| n.as_str() == inner.node);
        let Some(broker) = inner.broker() else {
            continue;
        };
        // A retained write (never batched) carries its KV revision: the mirror has it
        // before any subscriber here hears of it (the watch would bring it a moment later).
        let rev = m
            .headers
            .as_ref()
            .and_then(|h| h.get(REVISION_HEADER))
            .and_then(|v| v.as_str().parse::<u64>().ok());
        for (i, entry) in envelope::entries(&m.payload).enumerate() {
            let Some(sequence) = position::at(seq, i) else {
                continue;
            };
            // A node never delivers its own message twice: it was fanned out here when it
            // was published. Only the persistent sessions kept in the log take it from the
            // log (in log order, like every other message they get).
            if own && broker.pass_own(sequence) {
                continue;
            }
            let decoded = entry
                .map_err(|e| e.to_string())
                .and_then(|e| decode_message(inner, m.subject.as_str(), &e));
            match decoded {
                Ok((mut message, updated, publisher)) => {
                    // No Local (MQTT-3.8.3-3) for a publisher whose persistent session is here.
                    message.publisher = publisher
                        .as_deref()
                        .and_then(|p| broker.durable().and_then(|d| d.mailbox_of(p)));
                    if own {
                        broker.deliver_own(Arc::new(message), sequence);
                        continue;
                    }
                    if let (Some(rev), true) = (rev, message.retain) {
                        mirror_logged(&broker, &message, rev, updated);
                    }
                    broker.deliver_remote(Arc::new(message), Some(sequence));
                }
                Err(e) => {
                    tracing::warn!(seq, entry = i, subject = %m.subject, error = %e, "log message not understood; skipped")
                }
            }
        }
    }
    Err("the log consumer ended".into())
}

/// Apply a retained write heard in the log (revision `rev`) to the mirror.
fn mirror_logged(broker: &crate::broker::Broker, message: &Message, rev: u64, updated: SystemTime) {
    if message.payload.is_empty() {
        // A tombstone, until the watch (which may still bring an older value) reports it.
        broker.retained().mirror_delete(&message.topic, rev, true);
        return;
    }
    let value = Arc::new(RetainedValue {
        payload: message.payload.clone(),
        content_type: message.content_type.clone(),
        qos: message.qos,
        version: rev,
        updated,
    });
    if broker.retained().mirror_put(&message.topic, value) {
        broker.note_mirrored_meta(
            &message.topic,
            rev,
            message.properties.clone(),
            message.expires_at,
        );
    }
}

/// An envelope of a log message (one entry of it, [`envelope::entries`]) as a [`Message`] from another node, with when it was accepted and the
/// client id of the MQTT connection that published it.
pub(crate) fn decode_message(
    inner: &Inner,
    subject: &str,
    body: &Bytes,
) -> Result<(Message, SystemTime, Option<Arc<str>>), String> {
    let key = subject
        .strip_prefix(inner.config.prefix.as_str())
        .and_then(|s| s.strip_prefix('.'))
        .ok_or_else(|| format!("subject {subject:?} is outside the prefix"))?;
    let env = Envelope::decode(body).map_err(|e| e.to_string())?;
    let topic = match mapping::decode_key(key).map_err(|e| e.to_string())? {
        Decoded::Topic(t) => t,
        Decoded::Hashed => {
            let t = env
                .topic
                .as_deref()
                .ok_or("hashed subject without a topic")?;
            TopicName::parse(t).map_err(|e| e.to_string())?
        }
    };
    let message = Message {
        topic,
        payload: env.payload,
        qos: env.qos,
        retain: env.retain,
        content_type: env.content_type,
        origin: Origin::Backbone,
        properties: env.properties,
        expires_at: env.expires_at.map(wall_to_instant),
        publisher: None,
        charge: crate::model::Charge::default(),
    };
    Ok((message, env.updated, env.publisher))
}
