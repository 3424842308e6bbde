//! Graceful shutdown, the mini-redis way: one signal every task listens to, and a drain
//! channel whose senders every task holds — when the last sender is dropped, every task has
//! finished its in-flight work.
//!
//! The signal is a `watch` rather than a `broadcast` so that a connection task created after
//! the signal still sees it.

use tokio::sync::{mpsc, watch};

/// A task's view of the shutdown signal. Clone it for each task you spawn.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Becomes `true` when the gateway stops.
    notify: watch::Receiver<bool>,
    /// Held until the task is done; the gateway waits for every copy to be dropped.
    drain: mpsc::Sender<()>,
}

/// A task's hold on the drain without the signal: 8 bytes where a [`Shutdown`] is 24, for
/// work that waits a long time without listening (a parked idle connection, woken by its
/// bell at shutdown) and gets the signal back when it resumes ([`Drain::with_signal`]).
#[derive(Debug)]
pub struct Drain(mpsc::Sender<()>);

impl Drain {
    /// A [`Shutdown`] again, listening to `notify` (a [`Shutdown::signal`]).
    pub fn with_signal(self, notify: watch::Receiver<bool>) -> Shutdown {
        Shutdown {
            notify,
            drain: self.0,
        }
    }
}

impl Shutdown {
    /// The signal alone (holding it never delays shutdown).
    pub fn signal(&self) -> watch::Receiver<bool> {
        self.notify.clone()
    }

    /// Keep only the hold on the drain (see [`Drain`]).
    pub fn into_drain(self) -> Drain {
        Drain(self.drain)
    }

    /// Whether shutdown has been signalled.
    pub fn is_shutdown(&self) -> bool {
        *self.notify.borrow()
    }

    /// Wait for the signal.
    pub async fn recv(&mut self) {
        let _ = self.notify.wait_for(|s| *s).await;
    }

    /// The next connection on `listener`, or `None` once shutdown is signalled. A failed
    /// accept (out of file descriptors and the like) is logged with `what` and retried
    /// after 50 ms instead of spinning.
    pub async fn accept(
        &mut self,
        listener: &tokio::net::TcpListener,
        what: &str,
    ) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
        loop {
            tokio::select! {
                _ = self.recv() => return None,
                r = listener.accept() => match r {
                    Ok(x) => return Some(x),
                    Err(e) => {
                        tracing::warn!(error = %e, listener = what, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}

/// The sending side, owned by the gateway.
#[derive(Debug)]
pub struct ShutdownController {
    /// Sends the signal.
    notify: watch::Sender<bool>,
    /// Cloned into every [`Shutdown`].
    drain_tx: mpsc::Sender<()>,
    /// Completes when every [`Shutdown`] is dropped.
    drain_rx: mpsc::Receiver<()>,
}

impl Default for ShutdownController {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownController {
    /// A new controller.
    pub fn new() -> Self {
        let (notify, _) = watch::channel(false);
        let (drain_tx, drain_rx) = mpsc::channel(1);
        ShutdownController {
            notify,
            drain_tx,
            drain_rx,
        }
    }

    /// A handle for one more task.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            notify: self.notify.subscribe(),
            drain: self.drain_tx.clone(),
        }
    }

    /// The signal alone, without a drain handle (so holding it never delays shutdown): for
    /// readiness, which must fail as soon as the gateway starts stopping.
    pub fn signal(&self) -> watch::Receiver<bool> {
        self.notify.subscribe()
    }

    /// Signal every task and wait until all of them have finished.
    pub async fn shutdown(self) {
        let ShutdownController {
            notify,
            drain_tx,
            mut drain_rx,
        } = self;
        let _ = notify.send(true);
        drop(drain_tx);
        let _ = drain_rx.recv().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_subscribers_see_the_signal_and_drain_waits() {
        let c = ShutdownController::new();
        let mut s = c.subscribe();
        let t = tokio::spawn(async move {
            s.recv().await;
            let mut late = s.clone();
            late.recv().await;
            assert!(late.is_shutdown());
        });
        c.shutdown().await;
        t.await.unwrap();
    }
}
