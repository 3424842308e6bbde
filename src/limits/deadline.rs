//! Request bodies that must keep arriving (`[http] body_timeout_secs`, `body_min_rate`;
//! issue 16).
//!
//! hyper's `header_read_timeout` covers the header only: a client that sends
//! `Content-Length: 100000` and then nothing (or one byte a second) held its connection, and
//! a file descriptor, forever. Every request body is therefore wrapped in a [`Deadline`]
//! (by the accept loop, [`crate::tls::serve_http`], on every HTTP-served listener) that
//! fails with [`BodyTimedOut`] once the body is late by the [`TransferDeadline`] rule; the
//! handler reading it answers 408 (problem+json, `Connection: close`) and hyper closes the
//! connection, whose body it can no longer frame. A body nobody reads costs nothing: the
//! timer is armed only when the body is first found waiting.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::TransferDeadline;

/// The body was not complete by its deadline.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the request body stalled: {received} bytes arrived in {elapsed_secs} s, and the rule is [http] body_timeout_secs = {timeout_secs} plus one second per {min_rate} bytes (body_min_rate)")]
pub struct BodyTimedOut {
    /// Body bytes received before the deadline.
    pub received: u64,
    /// Seconds since the header was in.
    pub elapsed_secs: u64,
    /// `body_timeout_secs`.
    pub timeout_secs: u64,
    /// `body_min_rate`.
    pub min_rate: u32,
}

/// A request body with a deadline (see the module documentation).
pub struct Deadline<B> {
    /// The body as hyper delivers it.
    inner: B,
    /// The rule.
    rule: TransferDeadline,
    /// When the header was in (the wrapper is made then).
    started: Instant,
    /// Body bytes received so far.
    received: u64,
    /// The timer, armed when the body is first found waiting and moved on as bytes come.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set once the deadline passed: the body is over.
    expired: bool,
}

impl<B> Deadline<B> {
    /// Wrap `inner`, timed from now.
    pub fn new(inner: B, rule: TransferDeadline) -> Self {
        Deadline {
            inner,
            rule,
            started: Instant::now(),
            received: 0,
            sleep: None,
            expired: false,
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if let Some(sleep) = this.sleep.as_mut() {
                        let at = this.rule.deadline(this.started, this.received);
                        sleep.as_mut().reset(at.into());
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let at = this.rule.deadline(this.started, this.received);
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at.into())));
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        this.expired = true;
                        Poll::Ready(Some(Err(Box::new(BodyTimedOut {
                            received: this.received,
                            elapsed_secs: this.started.elapsed().as_secs(),
                            timeout_secs: this.rule.timeout.as_secs(),
                            min_rate: this.rule.min_rate,
                        }))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The [`BodyTimedOut`] somewhere in `error`'s chain of sources, if the body stalled.
pub fn timed_out<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimedOut> {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = e {
        if let Some(t) = current.downcast_ref::<BodyTimedOut>() {
            return Some(t);
        }
        e = current.source();
    }
    None
}
