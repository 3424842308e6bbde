//! A resumed session's queue, read back from the message log: a short-lived ordered
//! consumer from the session's position, filtered (on the server) by its subscriptions'
//! subjects, read up to where the log ended when the replay began; and single messages of
//! unfinished exchanges, read by sequence (direct get).

use std::sync::Arc;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::super::hear::{decode_message, HEAR_EXPIRES};
use super::super::log::unavailable;
use super::super::{envelope, mapping, position, Inner};
use crate::durable::{Logged, Replayed, Seq};
use crate::model::TopicFilter;
use crate::store::StoreError;

/// Replayed messages buffered between NATS and the resume (back-pressure beyond).
const BUFFER: usize = 256;

/// Start replaying the log after `after` through `filters` (see [`crate::durable::Keeper::replay`]).
pub(super) fn replay(
    inner: Arc<Inner>,
    after: u64,
    filters: Vec<TopicFilter>,
) -> mpsc::Receiver<Replayed> {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        if let Err(e) = run(&inner, after, &filters, &tx).await {
            let _ = tx.send(Replayed::Failed(unavailable(e))).await;
        }
    });
    rx
}

async fn run(
    inner: &Arc<Inner>,
    after: u64,
    filters: &[TopicFilter],
    tx: &mpsc::Sender<Replayed>,
) -> Result<(), String> {
    let timeout = inner.config.timeout();
    let stream = inner
        .log
        .read()
        .clone()
        .ok_or("the log is not provisioned")?;
    let info = tokio::time::timeout(timeout, stream.get_info())
        .await
        .map_err(|_| "reading the log's state timed out".to_string())?
        .map_err(|e| e.to_string())?;
    // Everything up to here is covered by the replay; later messages arrive live. `after`
    // and what is sent are positions ([`position`]); the stream counts messages.
    let last = info.state.last_sequence;
    let end = position::through(last);
    let first = info.state.first_sequence;
    let from = first_message_after(after);
    if from < first && after < end {
        // Deleted by the log's retention before the session came back (counted in log
        // messages: a batch deleted counts once).
        let lost = first.min(last + 1) - from;
        if tx.send(Replayed::Lost(lost)).await.is_err() {
            return Ok(());
        }
    }
    let start = from.max(first);
    let mut subjects: Vec<String> = filters
        .iter()
        .flat_map(|f| mapping::filter_subjects(f, inner.config.prefix.len() + 1))
        .map(|s| inner.subject(&s))
        .collect();
    subjects.sort();
    subjects.dedup();
    if start > last || subjects.is_empty() {
        let _ = tx.send(Replayed::End(end.max(after))).await;
        return Ok(());
    }
    let consumer = tokio::time::timeout(
        timeout,
        stream.create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            filter_subjects: subjects,
            max_expires: HEAR_EXPIRES,
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| "creating the replay consumer timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let pending = consumer.cached_info().num_pending;
    if pending == 0 {
        let _ = tx.send(Replayed::End(end.max(after))).await;
        return Ok(());
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut high = after;
    loop {
        let next = tokio::time::timeout(timeout, messages.next())
            .await
            .map_err(|_| "the replay stalled".to_string())?;
        let Some(m) = next else {
            return Err("the replay consumer ended".into());
        };
        let m = m.map_err(|e| e.to_string())?;
        let info = m.info().map_err(|e| e.to_string())?;
        let seq = info.stream_sequence;
        let left = info.pending;
        if seq > last {
            break;
        }
        high = high.max(position::through(seq));
        for (i, entry) in envelope::entries(&m.payload).enumerate() {
            let Some(pos) = position::at(seq, i) else {
                continue;
            };
            if pos.get() <= after {
                // The part of a batch the session already had.
                continue;
            }
            let decoded = entry
                .map_err(|e| e.to_string())
                .and_then(|e| decode_message(inner, m.subject.as_str(), &e));
            match decoded {
                Ok((message, _, publisher)) => {
                    let logged = Logged {
                        seq: pos,
                        message,
                        publisher,
                    };
                    if tx.send(Replayed::Message(logged)).await.is_err() {
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::warn!(seq, entry = i, subject = %m.subject, error = %e, "log message not understood; not replayed")
                }
            }
        }
        if left == 0 || seq >= last {
            break;
        }
    }
    let _ = tx.send(Replayed::End(end.max(high))).await;
    Ok(())
}

/// The log's messages at `seqs` (`None` for one it no longer has).
pub(super) async fn fetch(
    inner: &Arc<Inner>,
    seqs: Vec<Seq>,
) -> Result<Vec<Option<Logged>>, StoreError> {
    let stream = inner
        .log
        .read()
        .clone()
        .ok_or_else(|| unavailable("the log is not provisioned"))?;
    let timeout = inner.config.timeout();
    let mut out = Vec::with_capacity(seqs.len());
    // Several positions of one batch are read with one get.
    let mut held: Option<(u64, async_nats::jetstream::message::StreamMessage)> = None;
    for seq in seqs {
        let (stream_seq, index) = position::split(seq.get());
        if held.as_ref().is_none_or(|(s, _)| *s != stream_seq) {
            let got = tokio::time::timeout(timeout, stream.direct_get(stream_seq))
                .await
                .map_err(|_| unavailable("reading a message of the log timed out"))?;
            held = match got {
                Ok(m) => Some((stream_seq, m)),
                Err(e)
                    if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
                {
                    None
                }
                Err(e) => return Err(unavailable(e)),
            };
        }
        let Some((_, m)) = &held else {
            out.push(None);
            continue;
        };
        let decoded = envelope::entries(&m.payload)
            .nth(index)
            .ok_or_else(|| format!("the log message has no entry {index}"))
            .and_then(|e| e.map_err(|e| e.to_string()))
            .and_then(|e| decode_message(inner, m.subject.as_str(), &e));
        match decoded {
            Ok((message, _, publisher)) => out.push(Some(Logged {
                seq,
                message,
                publisher,
            })),
            Err(e) => {
                tracing::warn!(seq = seq.get(), error = %e, "log message not understood; not re-sent");
                out.push(None);
            }
        }
    }
    Ok(out)
}

/// The log message holding the first position after `after` (the rest of a batch, or the
/// next message). Stream sequences start at 1: a version 1 record converted at position 0
/// ("nothing yet") splits to message 0, which would count a message as lost.
fn first_message_after(after: u64) -> u64 {
    position::split(after.saturating_add(1)).0.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_message_after_a_position_exists_in_the_log() {
        // Position 0 (nothing yet): the log's first message, not a lost message 0.
        assert_eq!(first_message_after(0), 1);
        // The rest of a batch, then the next message.
        assert_eq!(first_message_after(position::through(4) - 1), 4);
        assert_eq!(first_message_after(position::through(4)), 5);
    }
}
