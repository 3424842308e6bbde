//! The handles of one publish as it moves through the core: staged (the store write under way), stored (durable, with its place in the log), delivered (queued to every subscriber, durable receipts gathered).

use super::*;

/// What a publish did.
#[derive(Debug, Clone)]
pub struct PublishOutcome {
    /// What happened to the retained value (`None` for a non-retained message).
    pub retained: Option<WriteOutcome>,
    /// How many subscribers it was queued to.
    pub receivers: usize,
    /// How many subscribers matched on this node, queued to or not (a full mailbox, an
    /// away session skipping QoS 0): 0 is MQTT 5's PUBACK/PUBREC 0x10 No matching
    /// subscribers. Other nodes' subscribers are not known here.
    pub matched: usize,
}

impl PublishOutcome {
    /// Whether the precondition failed, so nothing was stored or delivered.
    pub fn precondition_failed(&self) -> bool {
        matches!(self.retained, Some(WriteOutcome::PreconditionFailed(_)))
    }
}

/// A publish whose retained write (if any) has been handed to the store but may not be
/// durable yet: [`Broker::stage`]'s answer. A future (`Unpin`, so a connection can keep
/// several in a queue and poll the oldest) resolving to the [`Stored`] publish to pass to
/// [`Broker::deliver`].
#[derive(Debug)]
pub struct Staged {
    /// The message, delivered once its retained write is durable; taken when resolved.
    pub(super) message: Option<Message>,
    /// The retained write's answer, for a retained message.
    pub(super) write: Option<retained::PendingWrite>,
    /// Why the writer could not even take the write (store closed), reported when polled.
    pub(super) refused: Option<StoreError>,
    /// In a cluster: the backbone's answer, once the message log (and for a retained
    /// write, the cluster's retained authority) has the write.
    pub(super) cluster: Option<oneshot::Receiver<Result<Committed, StoreError>>>,
}

impl Staged {
    /// Whether there is nothing to wait for (not a retained message): polled, it resolves
    /// at once.
    pub fn is_stored(&self) -> bool {
        self.write.is_none() && self.cluster.is_none()
    }
}

impl std::future::Future for Staged {
    type Output = Result<Stored, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if let Some(e) = self.refused.take() {
            return std::task::Poll::Ready(Err(e));
        }
        let retained = match self.write.as_mut() {
            Some(write) => match std::pin::Pin::new(write).poll(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(r) => {
                    self.write = None;
                    Some(r)
                }
            },
            None => None,
        };
        let mut sequence = None;
        let retained = match self.cluster.as_mut() {
            Some(rx) => match std::pin::Pin::new(rx).poll(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(r) => {
                    self.cluster = None;
                    match r.unwrap_or(Err(StoreError::Closed)) {
                        Ok(committed) => {
                            sequence = committed.sequence;
                            committed.retained.map(Ok)
                        }
                        Err(e) => Some(Err(e)),
                    }
                }
            },
            None => retained,
        };
        let Some(message) = self.message.take() else {
            return std::task::Poll::Ready(Err(StoreError::Closed));
        };
        std::task::Poll::Ready(match retained {
            Some(Err(e)) => Err(e),
            Some(Ok(outcome)) => Ok(Stored {
                message,
                retained: Some(outcome),
                sequence,
            }),
            None => Ok(Stored {
                message,
                retained: None,
                sequence,
            }),
        })
    }
}

/// A publish whose retained write is durable, ready for [`Broker::deliver`].
#[derive(Debug)]
pub struct Stored {
    /// The message to fan out.
    pub(super) message: Message,
    /// What the retained write did, for a retained message.
    pub(super) retained: Option<WriteOutcome>,
    /// Its sequence number in the cluster's message log (`None`: single node or not
    /// logged), carried into every [`Delivery`] as [`Delivery::log_seq`].
    pub(super) sequence: Option<Seq>,
}

impl Stored {
    /// The message's sequence number in the cluster's message log (`--cluster`), its
    /// durable identity on every node; `None` on a single node.
    pub fn sequence(&self) -> Option<Seq> {
        self.sequence
    }
}

/// A delivered publish: everyone connected has it. A future (`Unpin`) resolving once every
/// persistent session's copy is durable, which is when it may be acknowledged.
#[derive(Debug)]
pub struct Delivered {
    /// What the publish did, for the acknowledgement; taken when resolved.
    pub(super) outcome: Option<PublishOutcome>,
    /// One wait per persistent session that queued the message, oldest first.
    pub(super) durable: std::collections::VecDeque<Receipt>,
}

impl Delivered {
    /// Whether nothing remains to be waited for (no persistent session queued the message).
    pub fn is_durable(&self) -> bool {
        self.durable.is_empty()
    }
}

impl std::future::Future for Delivered {
    type Output = Result<PublishOutcome, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        while let Some(wait) = self.durable.front_mut() {
            match std::pin::Pin::new(wait).poll(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(Ok(())) => {
                    self.durable.pop_front();
                }
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
            }
        }
        std::task::Poll::Ready(self.outcome.take().ok_or(StoreError::Closed))
    }
}
