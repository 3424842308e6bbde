//! Who owns a session: the claim a CONNECT makes, and the takeover requests a node answers.
//!
//! A claim reads the session's value. If another node owns it, that node is asked on its
//! control subject `<prefix>.ctl.<node>` to hand it over; it answers "released" once its
//! connection is closed and its final state written, "absent" when it does not have the
//! session (it restarted since), or "busy" when its connection did not close in time. No
//! answer at all (no node listens: it is dead or cut off from NATS) sends the claim to the
//! nodes bucket: a heartbeat that stops for [`WATCH`] means a dead owner. Then the claim
//! writes the session, expecting the revision it read: whoever loses that race reads again.
//! The compare-and-set is what decides; handing over and presuming dead only decide *when*
//! a claim may stop waiting, so a mistaken presumption costs at most some QoS 1
//! re-deliveries (the old owner's next write fails, and it closes its connection).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;

use super::record::{self, Kept};
use super::NatsKeeper;
use crate::durable::{Claim, Claimed, KeptSession};
use crate::store::session::{LogPosition, SessionRecord, StoredState};
use crate::store::StoreError;

/// How long a claim watches an unresponsive owner's heartbeat (1.5 heartbeats): unchanged,
/// the owner is dead.
const WATCH: Duration = Duration::from_millis(1500);
/// A takeover request's answers.
const RELEASED: u8 = 1;
const ABSENT: u8 = 0;
const BUSY: u8 = 2;

/// The control subject of `node`.
fn control(prefix: &str, node: &str) -> String {
    format!("{prefix}.ctl.{node}")
}

/// What an owner said to a takeover request.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Handed over: read the session again.
    Released,
    /// It does not have the session.
    Absent,
    /// Its connection did not close in time.
    Busy,
    /// Nobody listens on its control subject.
    NoResponders,
    /// No answer in time.
    Silent,
}

fn unavailable(why: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(format!(
        "the cluster backbone (NATS) could not give this node the session: {why}"
    ))
}

/// Claim `client`'s session for a connection on this node (see the module docs).
pub(super) async fn claim(
    keeper: &NatsKeeper,
    client: &Arc<str>,
    claim: Claim,
) -> Result<Claimed, StoreError> {
    let inner = &keeper.inner;
    if !inner.ready() || !inner.hearing.load(Ordering::Acquire) {
        if claim.clean && !claim.persistent {
            // Degraded mode (point 8): a client that keeps nothing may still connect and
            // read; a session kept for its id elsewhere cannot be ended now and stays.
            return Ok(Claimed::Fresh);
        }
        return Err(unavailable("it is not connected or not in sync yet"));
    }
    let kv = inner
        .sessions
        .read()
        .clone()
        .ok_or_else(|| unavailable("the sessions bucket is not provisioned"))?;
    let key = record::key(client);
    let timeout = inner.config.timeout();
    let started = Instant::now();
    // Past this, an owner that answers but does not let go is overruled (its next write
    // fails); past twice this, the claim gives up.
    let patience = timeout * 2;
    loop {
        if started.elapsed() > patience * 2 {
            return Err(unavailable("the session stayed busy on another node"));
        }
        let entry = tokio::time::timeout(timeout, kv.entry(&key))
            .await
            .map_err(|_| unavailable("reading the session timed out"))?
            .map_err(unavailable)?;
        let (rev, kept) = match entry {
            None => (0, None),
            Some(e) if e.operation != Operation::Put => (e.revision, None),
            Some(e) => match Kept::decode(&e.value) {
                Ok(k) => (e.revision, Some(k)),
                Err(err) => {
                    tracing::warn!(client_id = %client, error = %err, "kept MQTT session not understood; replaced");
                    (e.revision, None)
                }
            },
        };
        if let Some(owner) = kept.as_ref().and_then(|k| k.owner.clone()) {
            if owner != inner.node {
                match ask(keeper, &owner, client).await {
                    Answer::Released => continue,
                    Answer::Absent => {}
                    Answer::Busy | Answer::Silent if started.elapsed() < patience => continue,
                    Answer::Busy | Answer::Silent => {
                        tracing::warn!(client_id = %client, %owner, "the node owning this MQTT session did not hand it over in time; taking it");
                    }
                    Answer::NoResponders => {
                        if alive(keeper, &owner).await && started.elapsed() < patience {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                        tracing::info!(client_id = %client, %owner, "the node owning this MQTT session is gone; taking it over");
                    }
                }
            }
            // Owned by this node but not here (it restarted since, or a connection
            // that could not write its release): this claim supersedes it.
        }
        let now = SystemTime::now();
        let resume = kept
            .as_ref()
            .filter(|k| !claim.clean && !k.expired(now))
            .cloned();
        if let Some(k) = kept.as_ref().filter(|k| k.expired(now)) {
            tracing::info!(client_id = %k.client, "MQTT session expired while its client was away; a new one begins");
        }
        if resume.is_none() && !claim.persistent {
            // Nothing to keep: end what was kept (a clean start ends it, MQTT-3.1.2-4).
            if kept.is_some() {
                let deleted =
                    tokio::time::timeout(timeout, kv.delete_expect_revision(&key, Some(rev)))
                        .await
                        .map_err(|_| unavailable("deleting the session timed out"))?;
                if let Err(e) = deleted {
                    if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision {
                        continue;
                    }
                    return Err(unavailable(e));
                }
            }
            return Ok(Claimed::Fresh);
        }
        let taken = match resume {
            Some(mut k) => {
                k.owner = Some(inner.node.clone());
                k.boot = inner.boot;
                k.epoch += 1;
                k.record.away_since = None;
                k.record.expiry = claim.expiry;
                k
            }
            None => Kept {
                client: client.to_string(),
                session_id: fastrand::u64(1..),
                epoch: 1,
                owner: Some(inner.node.clone()),
                boot: inner.boot,
                record: SessionRecord {
                    expiry: claim.expiry,
                    ..SessionRecord::default()
                },
                state: StoredState {
                    next_pkid: 1,
                    log: Some(LogPosition {
                        position: claim.start,
                        ..LogPosition::default()
                    }),
                    ..StoredState::default()
                },
            },
        };
        let present = taken.epoch > 1;
        match keeper.update(&key, taken.encode(), rev).await {
            Ok(new_rev) => {
                keeper.own(client, key, new_rev, &taken, claim.holder);
                return Ok(if present {
                    Claimed::Kept(Box::new(KeptSession {
                        record: taken.record,
                        state: taken.state,
                    }))
                } else {
                    Claimed::Fresh
                });
            }
            Err(super::WriteError::Conflict) => continue,
            Err(super::WriteError::Other(why)) => return Err(unavailable(why)),
        }
    }
}

/// Ask `owner` to hand `client`'s session over.
async fn ask(keeper: &NatsKeeper, owner: &str, client: &str) -> Answer {
    let inner = &keeper.inner;
    let subject = control(&inner.config.prefix, owner);
    let asked = tokio::time::timeout(
        inner.config.timeout(),
        inner
            .client
            .request(subject, bytes::Bytes::copy_from_slice(client.as_bytes())),
    )
    .await;
    match asked {
        Err(_) => Answer::Silent,
        Ok(Ok(m)) => match m.payload.first() {
            Some(&RELEASED) => Answer::Released,
            Some(&ABSENT) => Answer::Absent,
            Some(&BUSY) => Answer::Busy,
            _ => Answer::Silent,
        },
        Ok(Err(e)) => match e.kind() {
            async_nats::client::RequestErrorKind::NoResponders => Answer::NoResponders,
            _ => Answer::Silent,
        },
    }
}

/// Whether `node` is alive: its key in the nodes bucket is renewed within [`WATCH`].
async fn alive(keeper: &NatsKeeper, node: &str) -> bool {
    let inner = &keeper.inner;
    let Ok(kv) = inner.js.get_key_value(inner.config.nodes_bucket()).await else {
        return true;
    };
    let revision = |e: Option<async_nats::jetstream::kv::Entry>| {
        e.filter(|e| e.operation == Operation::Put)
            .map(|e| e.revision)
    };
    let Ok(before) = kv.entry(node).await else {
        return true;
    };
    let Some(before) = revision(before) else {
        return false;
    };
    tokio::time::sleep(WATCH).await;
    match kv.entry(node).await {
        Ok(now) => revision(now).is_some_and(|r| r != before),
        Err(_) => true,
    }
}

/// Answer takeover requests on this node's control subject until shutdown: close the
/// connection that owns the session here (the MQTT front-end does, through
/// [`crate::durable::Keeper::kicks`]) and say "released" once its final state is
/// written.
pub(super) async fn serve_takeovers(keeper: NatsKeeper) {
    let inner = keeper.inner.clone();
    let subject = control(&inner.config.prefix, &inner.node);
    let mut closed = inner.closed.subscribe();
    let mut requests = loop {
        match inner.client.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot listen for session takeovers yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = closed.wait_for(|c| *c) => return,
                }
            }
        }
    };
    loop {
        let m = tokio::select! {
            m = requests.next() => m,
            _ = closed.wait_for(|c| *c) => return,
        };
        let Some(m) = m else {
            return;
        };
        let Some(reply) = m.reply.clone() else {
            continue;
        };
        let client = String::from_utf8_lossy(&m.payload).into_owned();
        let keeper = keeper.clone();
        tokio::spawn(async move {
            let answer = match keeper.on_release(&client) {
                None => ABSENT,
                Some((holder, released)) => {
                    tracing::debug!(client_id = %client, "another node takes this MQTT session over");
                    let _ = keeper.book.kicks.send(crate::durable::Kick {
                        client: Arc::from(client.as_str()),
                        holder,
                    });
                    match tokio::time::timeout(keeper.inner.config.timeout(), released).await {
                        Ok(_) => RELEASED,
                        Err(_) => BUSY,
                    }
                }
            };
            let _ = keeper
                .inner
                .client
                .publish(reply, bytes::Bytes::copy_from_slice(&[answer]))
                .await;
        });
    }
}
