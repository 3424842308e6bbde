//! The task that owns a bridge's rumqttc event loop: polls it (and so connects and
//! reconnects), books outgoing packet ids in the ledger, forwards what comes in, and waits
//! out the back-off between attempts.
//!
//! A failure is logged once per back-off step (the delay doubled), with the attempt count,
//! not once per attempt: a remote down for a day costs a handful of lines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use crate::backoff::Backoff;
use crate::model::QoS;

use super::inbound::In;
use super::ledger::Sent;
use super::link::{Link, Stop, Up};
use super::remote::{Event, EventLoop};

/// Incoming messages waiting to be stored locally beyond which QoS 0 ones are dropped
/// (QoS 1/2 ones are bounded by the remote's in-flight window, since they are
/// acknowledged only once stored).
const MAX_BACKLOG: usize = 4096;

/// Poll until stopped (or until the DISCONNECT of a stopping bridge went out).
pub(crate) async fn run(
    link: Arc<Link>,
    mut eventloop: EventLoop,
    up: UnboundedSender<Up>,
    inbound: UnboundedSender<In>,
    backlog: Arc<AtomicUsize>,
    mut stop: Stop,
) {
    let cfg = &link.config;
    let mut backoff = Backoff::new(
        Duration::from_secs(cfg.reconnect_min_secs),
        Duration::from_secs(cfg.reconnect_max_secs),
    );
    let mut connected = false;
    let mut logged_step: Option<u32> = None;
    let mut disagreements = 0u64;
    loop {
        let ev = match eventloop.poll().await {
            Ok(ev) => ev,
            Err(error) => {
                link.stats.failures.fetch_add(1, Ordering::Relaxed);
                if connected {
                    connected = false;
                    let (kept, released) = eventloop.after_error(&link.ledger.lock().ranks());
                    let dropped = link.ledger.lock().dropped_except(&kept, released);
                    if !dropped.is_empty() {
                        let n = link
                            .stats
                            .refused
                            .fetch_add(dropped.len() as u64, Ordering::Relaxed)
                            + dropped.len() as u64;
                        tracing::warn!(bridge = %link.name, messages = dropped.len(), refused = n, "the remote refused messages (v5 error reason code); dropped");
                        for item in dropped {
                            link.outbox.done(item.seq);
                        }
                    }
                    if let Some(echo) = &link.echo {
                        echo.lock().clear();
                    }
                    let _ = up.send(Up::Down);
                    let _ = inbound.send(In::Down);
                    link.room.notify_one();
                    if stop.is_stopped() {
                        return;
                    }
                    tracing::warn!(bridge = %link.name, %error, "bridge lost its connection to the remote broker; reconnecting with back-off");
                    // The first retry needs no second line.
                    logged_step = Some(backoff.step());
                }
                if stop.is_stopped() {
                    return;
                }
                let step = backoff.step();
                let delay = backoff.fail();
                if logged_step != Some(step) {
                    logged_step = Some(step);
                    tracing::warn!(
                        bridge = %link.name,
                        remote = %cfg.url.text,
                        %error,
                        attempts = backoff.attempts(),
                        retry_in = ?delay,
                        "bridge cannot connect to the remote broker; retrying with back-off (logged once per back-off step)"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait() => return,
                }
                continue;
            }
        };
        tracing::trace!(bridge = %link.name, event = ?ev, "rumqttc event");
        match ev {
            Event::Connected {
                session_present,
                max_packet_size,
            } => {
                connected = true;
                tracing::info!(bridge = %link.name, remote = %cfg.url.text, session_present, attempts = backoff.attempts() + 1, "bridge connected");
                backoff.reset();
                logged_step = None;
                let _ = up.send(Up::Connected {
                    session_present,
                    max_packet_size,
                });
                let _ = inbound.send(In::Connected { session_present });
            }
            Event::Sent(pkid) => {
                let fired = match link.ledger.lock().sent(pkid) {
                    Sent::Fired(item) => Some(item),
                    Sent::InFlight | Sent::Resent => None,
                    Sent::Unexpected => {
                        disagreements += 1;
                        if disagreements.is_power_of_two() {
                            tracing::warn!(bridge = %link.name, pkid, disagreements, "rumqttc sent a PUBLISH the bridge did not hand it");
                        }
                        None
                    }
                };
                if let Some(item) = fired {
                    link.outbox.done(item.seq);
                    link.stats.sent.fetch_add(1, Ordering::Relaxed);
                    link.room.notify_one();
                }
            }
            Event::Collided(pkid) => {
                link.ledger.lock().collided(pkid);
            }
            Event::Done(pkid) => {
                let done = link.ledger.lock().done(pkid);
                if let Some(item) = done {
                    link.outbox.done(item.seq);
                    link.stats.sent.fetch_add(1, Ordering::Relaxed);
                    link.room.notify_one();
                }
            }
            Event::Message(m) => {
                tracing::trace!(bridge = %link.name, topic = %m.topic, qos = ?m.qos, retain = m.retain, "message from the remote");
                if m.qos == QoS::AtMostOnce && backlog.load(Ordering::Relaxed) >= MAX_BACKLOG {
                    let n = link.stats.dropped_in.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(bridge = %link.name, dropped = n, "QoS 0 messages from the remote dropped: the local side is behind");
                    }
                    continue;
                }
                backlog.fetch_add(1, Ordering::Relaxed);
                let _ = inbound.send(In::Message(m));
            }
            Event::SubAck(granted) => {
                let _ = inbound.send(In::SubAck(granted));
            }
            Event::UnsubAck => {
                let _ = inbound.send(In::UnsubAck);
            }
            Event::Gone => return,
            Event::Other => {}
        }
    }
}
