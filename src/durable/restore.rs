//! Restore at start: what the keeper kept, turned back into sessions to resume.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::model::{Message, Origin, SubOptions, TopicFilter, TopicName};
use crate::store::session::QueuedRecord;

use super::{DurableSessions, Seq};

/// Session Expiry Interval meaning "never expires" (MQTT 5 §3.1.2.11.2: 0xFFFFFFFF).
const NEVER: u32 = u32::MAX;

/// What restore found: the sessions to resume, and how many queued messages it dropped
/// because their Message Expiry passed while the node was down.
#[derive(Debug, Default)]
pub struct Restored {
    /// The sessions, each with everything needed to resume it.
    pub sessions: Vec<RestoredSession>,
    /// Queued messages that expired while the node was down (deleted, for the metrics).
    pub expired: usize,
}

/// One stored persistent session, ready to be resumed.
#[derive(Debug)]
pub struct RestoredSession {
    /// Its client id.
    pub client: String,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry: u32,
    /// Since when the client is away: as stored, or — for a client that was connected when
    /// the previous run stopped — that run's last alive mark.
    pub away_since: SystemTime,
    /// How much of its expiry is left, `None` when it never expires.
    pub expires_in: Option<Duration>,
    /// It was stored as connected: its record must now be written with `away_since`, so a
    /// second restart does not extend it again.
    pub was_connected: bool,
    /// Its subscriptions with their options (a stored filter that no longer parses is
    /// logged and left out).
    pub subscriptions: Vec<(TopicFilter, SubOptions)>,
    /// Its unfinished outgoing exchanges, in their original order.
    pub outgoing: Vec<RestoredExchange>,
    /// Inbound QoS 2 ids acknowledged with PUBREC and not yet released.
    pub inbound_qos2: Vec<u16>,
    /// Next packet id to try.
    pub next_pkid: u16,
    /// The other queued messages, in the order they were queued; each message's `qos` and
    /// `retain` are its delivery's.
    pub queued: Vec<(Seq, Message)>,
}

/// One unfinished outgoing exchange of a restored session.
#[derive(Debug)]
pub enum RestoredExchange {
    /// PUBLISH sent, not acknowledged: re-sent with DUP=1 under its packet id
    /// (MQTT-4.4.0-1, MQTT-3.3.1-1). The message's `qos` and `retain` are its delivery's.
    Publish {
        /// Its packet identifier.
        pkid: u16,
        /// Its queue entry.
        seq: Seq,
        /// The message.
        message: Message,
    },
    /// PUBREC came: only the PUBREL is re-sent; the entry (if any) goes on PUBCOMP.
    Released {
        /// Its packet identifier.
        pkid: u16,
        /// Its queue entry, if it still has one.
        seq: Option<Seq>,
    },
}

impl DurableSessions {
    /// Rebuild the stored persistent sessions (start-up, before listeners accept). A session
    /// whose expiry passed while the node was down — counted from when its client went
    /// away, or, for a client connected at a crash, from the last alive mark the crashed
    /// node stored ([`super::ALIVE_PERIOD`]) — is deleted instead, and so is a session stored
    /// with expiry 0 (it ended when its connection did). Entries that no session names,
    /// entries with a topic that no longer parses, and messages that expired are deleted.
    pub fn restore(&self) -> Restored {
        // The node's own sessions: in a cluster, only those of the node-local keeper are
        // restored at start (the cluster's are claimed when their clients connect).
        let keeper = self.keeper_of(true);
        let mut loaded = keeper.take_loaded();
        let now = Instant::now();
        let wall = SystemTime::now();
        // When the previous run was last known alive: a client connected at a crash lost
        // its connection then (at most `ALIVE_PERIOD` later). No mark (a database from
        // before the marks): the restart is all we know.
        let crashed_at = loaded.alive_at.map_or(wall, |t| t.min(wall));
        let mut queued: HashMap<String, BTreeMap<Seq, QueuedRecord>> = HashMap::new();
        for (client_id, seq, rec) in loaded.queued {
            queued.entry(client_id).or_default().insert(seq, rec);
        }
        let mut out = Restored::default();
        for (client_id, rec) in loaded.sessions {
            let key: Arc<str> = Arc::from(client_id.as_str());
            let expiry = rec.expiry;
            // Connected when the node stopped: away since the last alive mark.
            let away_since = rec.away_since.unwrap_or(crashed_at);
            let remaining = if expiry == NEVER {
                Some(None)
            } else {
                // What is left of the interval (none: it expired while the node was down).
                Duration::from_secs(u64::from(expiry))
                    .checked_sub(wall.duration_since(away_since).unwrap_or_default())
                    .filter(|left| !left.is_zero())
                    .map(Some)
            };
            let Some(expires_in) = remaining.filter(|_| expiry > 0) else {
                tracing::info!(%client_id, "stored MQTT session expired while ponte was down; removed");
                keeper.discard(&key);
                queued.remove(&client_id);
                continue;
            };
            let subscriptions = rec
                .subscriptions
                .into_iter()
                .filter_map(|sub| match TopicFilter::parse(&sub.filter) {
                    Ok(f) => Some((
                        f,
                        SubOptions {
                            qos: sub.qos,
                            no_local: sub.no_local,
                            retain_as_published: sub.retain_as_published,
                            id: sub.id,
                        },
                    )),
                    Err(_) => {
                        tracing::warn!(%client_id, filter = %sub.filter, "stored subscription is not a valid filter; skipped");
                        None
                    }
                })
                .collect();
            let mut entries = queued.remove(&client_id).unwrap_or_default();
            let state = loaded.states.remove(&client_id).unwrap_or_default();
            let mut outgoing = Vec::with_capacity(state.outgoing.len());
            for o in &state.outgoing {
                let entry = o.seq.and_then(|seq| Some((seq, entries.remove(&seq)?)));
                if o.released {
                    outgoing.push(RestoredExchange::Released {
                        pkid: o.pkid,
                        seq: entry.map(|(seq, _)| seq),
                    });
                    continue;
                }
                let Some((seq, rec)) = entry else {
                    // Acknowledged in the batch the state was not yet rewritten in, or a
                    // message that had no durable copy: nothing to re-send.
                    continue;
                };
                match restored_message(&client_id, rec, now, wall) {
                    Some(message) => outgoing.push(RestoredExchange::Publish {
                        pkid: o.pkid,
                        seq,
                        message,
                    }),
                    None => keeper.acknowledge(&key, seq),
                }
            }
            let mut rest = Vec::with_capacity(entries.len());
            for (seq, rec) in entries {
                let Some(message) = restored_message(&client_id, rec, now, wall) else {
                    keeper.acknowledge(&key, seq);
                    continue;
                };
                if message.expired(now) {
                    out.expired += 1;
                    keeper.acknowledge(&key, seq);
                    continue;
                }
                rest.push((seq, message));
            }
            out.sessions.push(RestoredSession {
                client: client_id,
                expiry,
                away_since,
                expires_in,
                was_connected: rec.away_since.is_none(),
                subscriptions,
                outgoing,
                inbound_qos2: state.inbound_qos2,
                next_pkid: state.next_pkid.max(1),
                queued: rest,
            });
        }
        // Left behind by sessions that ended while a publish was in flight.
        for (client_id, entries) in queued {
            let key: Arc<str> = Arc::from(client_id.as_str());
            for seq in entries.keys() {
                keeper.forget(&key, *seq);
            }
        }
        out
    }
}

/// A stored queue entry as a message (`None`, logged, when its topic is invalid). The
/// expiry deadline, stored as wall-clock time, becomes an `Instant` again.
fn restored_message(
    client_id: &str,
    rec: QueuedRecord,
    now: Instant,
    wall: SystemTime,
) -> Option<Message> {
    let Ok(topic) = TopicName::parse(&rec.topic) else {
        tracing::warn!(%client_id, topic = %rec.topic, "stored message has an invalid topic; dropped");
        return None;
    };
    let expires_at = rec.expires_at.map(|t| match t.duration_since(wall) {
        Ok(left) => now + left,
        Err(_) => now,
    });
    Some(Message {
        topic,
        payload: rec.payload,
        qos: rec.qos,
        retain: rec.retain,
        content_type: rec.content_type.map(Arc::from),
        origin: Origin::Internal,
        properties: rec.properties,
        expires_at,
        publisher: None,
        charge: crate::model::Charge::default(),
    })
}
