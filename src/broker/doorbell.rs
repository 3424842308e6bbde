//! A doorbell: one task waits, anyone rings. What a subscriber's [`Mailbox`] rings when a
//! delivery arrives, and what a session rings to take an MQTT connection over.
//!
//! tokio's `Notify` does this for any number of waiters, at a price paid by every waiter
//! while it waits: a `Notified` future, an intrusive list node of some 60 bytes that must
//! stay pinned in the waiting task for as long as it waits. A task that waits on several
//! things at once (an MQTT connection waits on its socket, its timer, its mailbox, its
//! takeover bell and the shutdown signal) carries one per source, and a server holds one
//! such task per connection, idle or not (issue 16). A doorbell has exactly one waiter, so
//! it keeps the waiter's `Waker` itself and is polled, not awaited: nothing is stored in
//! the task. Rings between two polls are one ring (a permit, like `Notify::notify_one`),
//! and a ring that finds the bell already rung wakes nobody again.
//!
//! [`Mailbox`]: super::mailbox::Mailbox

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// A bell with one waiter (see the module docs).
#[derive(Debug, Default)]
pub struct Doorbell {
    /// Rung since the waiter last answered.
    rung: AtomicBool,
    /// The waiter's waker, from its last poll.
    waker: AtomicWaker,
}

impl Doorbell {
    /// A bell nobody has rung.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ring: the waiter's next poll is ready, and a waiting waiter is woken. A ring on a
    /// bell already rung costs one atomic swap.
    pub fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Ready (answering the ring) if the bell was rung since the last ready poll;
    /// otherwise the waiter is woken at the next ring. Only one task may poll a bell: the
    /// waker of the last poll is the one woken.
    pub fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rung.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A ring between the check above and the registration found no waker to wake.
        if self.rung.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The bell as a future, for `select!`: ready at the next ring (or at once if it was
    /// rung since the last answer). Two bytes of state are borrowed, nothing is registered
    /// until it is polled, and dropping it leaves nothing behind.
    pub fn rung(&self) -> Rung<'_> {
        Rung(self)
    }
}

/// The future of [`Doorbell::rung`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Rung<'a>(&'a Doorbell);

impl Future for Rung<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_rung(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_ring_before_the_wait_is_kept_and_rings_coalesce() {
        let bell = Doorbell::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(bell.poll_rung(&mut cx).is_pending());
        bell.ring();
        bell.ring();
        assert!(bell.poll_rung(&mut cx).is_ready());
        assert!(bell.poll_rung(&mut cx).is_pending(), "two rings are one");
    }

    #[tokio::test]
    async fn a_waiting_task_is_woken_by_a_ring_from_another_thread() {
        let bell = Arc::new(Doorbell::new());
        let ringer = bell.clone();
        let waiter = tokio::spawn(async move { bell.rung().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        std::thread::spawn(move || ringer.ring());
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("waiter");
    }

    #[test]
    fn waiting_stores_nothing_in_the_waiter() {
        assert!(std::mem::size_of::<Rung<'_>>() <= 8);
    }
}
