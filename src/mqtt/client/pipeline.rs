//! The publish pipeline of one connection: PUBLISHes handed to the broker, delivered and
//! acknowledged strictly in arrival order, while their durable writes overlap.
//!
//! A publisher that waited for each durable write before reading its next PUBLISH would
//! make every group commit one write long (15% of `--memory` throughput with sled,
//! BENCHMARKS.md). So each PUBLISH is handed to the broker at once ([`Broker::stage`]: its
//! retained write goes to the store's writer), and the connection goes on reading while the
//! writes are made durable, so one group commit covers every PUBLISH in flight. They are
//! delivered ([`Broker::deliver`]) strictly in arrival order once their own write and every
//! earlier one are durable (per-publisher ordering, MQTT 4.6), and acknowledged in arrival
//! order once persistent sessions' copies are durable too — never before.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::broker::{Broker, Delivered, PublishOutcome, Staged, Stored};
use crate::model::QoS;
use crate::store::StoreError;

/// Most PUBLISHes a connection has handed to the broker and not yet acknowledged; beyond
/// this the connection stops reading its socket until some are done (backpressure).
pub(super) const MAX_PIPELINED: usize = 1024;

/// What a pipelined PUBLISH is answered with once it is done.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ack {
    /// The PUBLISH's packet id (meaningless at QoS 0).
    pub pkid: u16,
    /// The PUBLISH's QoS: QoS 0 gets no acknowledgement.
    pub qos: QoS,
}

/// A PUBLISH that is done: stored, delivered and durable — or failed.
pub(super) type Done = (Ack, Result<PublishOutcome, StoreError>);

/// The PUBLISHes of one connection between the broker and their acknowledgement. Its
/// queues are boxed and made when a PUBLISH first has to wait (a retained write, a
/// persistent subscriber), and given back by [`Pipeline::trim`]: a connection whose
/// PUBLISHes are done at once, or none, carries a pointer.
#[derive(Debug, Default)]
pub(super) struct Pipeline(Option<Box<Queues>>);

/// The queues of a [`Pipeline`].
#[derive(Debug, Default)]
struct Queues {
    /// PUBLISHes handed to the broker whose retained writes are not durable yet, oldest
    /// first; delivered strictly in this order.
    storing: VecDeque<(Ack, Staged)>,
    /// Delivered PUBLISHes whose copies for persistent sessions are not durable yet, oldest
    /// first; each is done when it and all before it are durable.
    persisting: VecDeque<(Ack, Delivered)>,
}

/// Poll a future that is known to be ready (nothing to wait for) without a task context.
fn poll_now<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(std::task::Waker::noop()))
}

impl Pipeline {
    /// PUBLISHes handed to the broker and not acknowledged yet.
    pub(super) fn len(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |q| q.storing.len() + q.persisting.len())
    }

    /// Whether nothing is in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The connection is quiet: give back the queues if they are empty (after a burst
    /// they keep up to [`MAX_PIPELINED`] entries' worth).
    pub(super) fn trim(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }

    /// The queues, made if need be.
    fn queues(&mut self) -> &mut Queues {
        self.0.get_or_insert_with(Box::default)
    }

    /// Take a PUBLISH the broker has staged. When nothing is ahead of it and nothing has to
    /// become durable (not retained, no persistent subscriber), it is delivered and done at
    /// once and comes back.
    pub(super) fn push(&mut self, broker: &Broker, ack: Ack, mut staged: Staged) -> Option<Done> {
        let nothing_ahead = self.0.as_ref().is_none_or(|q| q.storing.is_empty());
        if staged.is_stored() && nothing_ahead {
            if let Poll::Ready(stored) = poll_now(&mut staged) {
                return self.stored(broker, ack, stored);
            }
        }
        self.queues().storing.push_back((ack, staged));
        None
    }

    /// A PUBLISH's retained write is done (or failed): deliver it; done now if nothing
    /// else has to become durable first.
    fn stored(
        &mut self,
        broker: &Broker,
        ack: Ack,
        stored: Result<Stored, StoreError>,
    ) -> Option<Done> {
        match stored {
            Err(e) => Some((ack, Err(e))),
            Ok(stored) => {
                let mut delivered = broker.deliver(stored);
                let nothing_ahead = self.0.as_ref().is_none_or(|q| q.persisting.is_empty());
                if delivered.is_durable() && nothing_ahead {
                    if let Poll::Ready(outcome) = poll_now(&mut delivered) {
                        return Some((ack, outcome));
                    }
                }
                self.queues().persisting.push_back((ack, delivered));
                None
            }
        }
    }

    /// Move the pipeline on: deliver the oldest PUBLISHes whose writes are durable, and
    /// return the oldest one that is done. `Pending` when nothing moved (the waker is
    /// registered with what the oldest waits for).
    pub(super) fn poll_done(&mut self, cx: &mut Context<'_>, broker: &Broker) -> Poll<Done> {
        loop {
            let Some(q) = self.0.as_mut() else {
                return Poll::Pending;
            };
            if let Some((_, staged)) = q.storing.front_mut() {
                if let Poll::Ready(stored) = Pin::new(staged).poll(cx) {
                    if let Some((ack, _)) = q.storing.pop_front() {
                        if let Some(done) = self.stored(broker, ack, stored) {
                            return Poll::Ready(done);
                        }
                    }
                    continue;
                }
            }
            if let Some((_, delivered)) = q.persisting.front_mut() {
                if let Poll::Ready(outcome) = Pin::new(delivered).poll(cx) {
                    if let Some((ack, _)) = q.persisting.pop_front() {
                        return Poll::Ready((ack, outcome));
                    }
                }
            }
            return Poll::Pending;
        }
    }
}
