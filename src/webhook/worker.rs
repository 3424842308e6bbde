//! The task of one webhook: takes the writes the broker put in its mailbox, turns them
//! into events, keeps them in order per thing ([`OrderQueue`]) and runs up to
//! `concurrency` deliveries at once. Nothing here is awaited by a writer: fan-out only
//! pushes into the mailbox, so a slow or dead endpoint costs the writes nothing (EMQX
//! #5121: a dead webhook server made MQTT CONNECTs time out), and each webhook has its own
//! task, client and queue, so one endpoint cannot slow another.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;

use crate::broker::mailbox::Mailbox;
use crate::model::TopicName;

use super::deliver::{deliver, Outcome, Settings};
use super::event::Event;
use super::order::OrderQueue;
use super::stats::Stats;
use crate::bridge::Stop;

/// Deliver until stopped. Events still held then are dropped (counted, logged): webhook
/// events live in memory only.
pub(crate) async fn run(
    settings: Arc<ArcSwap<Settings>>,
    mailbox: Arc<Mailbox>,
    stats: Arc<Stats>,
    mut stop: Stop,
) {
    let mut order: OrderQueue<TopicName, Event> = OrderQueue::default();
    let mut flying: JoinSet<(TopicName, Outcome)> = JoinSet::new();
    loop {
        let s = settings.load_full();
        while let Some(d) = mailbox.pop() {
            let Some(event) = Event::of(d.message, &s.events) else {
                continue;
            };
            if order.len() + order.in_flight() >= s.queue {
                let n = stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(webhook = %s.name, queue = s.queue, dropped = n, "webhook queue full; event dropped");
                }
                continue;
            }
            order.push(event.message.topic.clone(), event);
        }
        while flying.len() < s.concurrency {
            let Some((topic, event)) = order.next() else {
                break;
            };
            let (s, stats) = (s.clone(), stats.clone());
            flying.spawn(async move {
                let outcome = deliver(s, &event, &stats).await;
                (topic, outcome)
            });
        }
        stats
            .queued
            .store(order.len() + order.in_flight(), Ordering::Relaxed);
        tokio::select! {
            biased;
            _ = stop.wait() => break,
            done = flying.join_next(), if !flying.is_empty() => {
                if let Some(Ok((topic, outcome))) = done {
                    order.finish(&topic);
                    count(&s.name, &topic, &outcome, &stats);
                }
            }
            _ = mailbox.notified() => {}
        }
    }
    let left = order.len() + order.in_flight() + mailbox.len();
    if left > 0 {
        stats.dropped.fetch_add(left as u64, Ordering::Relaxed);
        tracing::warn!(webhook = %settings.load().name, events = left, "webhook stopped with events not delivered; dropped");
    }
    stats.queued.store(0, Ordering::Relaxed);
}

fn count(name: &str, topic: &TopicName, outcome: &Outcome, stats: &Stats) {
    match outcome {
        Outcome::Delivered => {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Rejected(why) => {
            let n = stats.rejected.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(webhook = name, thing = %topic, error = %why, rejected = n, "webhook endpoint refused an event; not retried");
        }
        Outcome::Failed(why) => {
            let n = stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(webhook = name, thing = %topic, error = %why, failed = n, "webhook event given up after every retry failed");
        }
    }
}
