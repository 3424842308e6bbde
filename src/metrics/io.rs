//! A stream that counts the bytes through it, for the HTTP listeners' `ponte_bytes_*_total`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Connection, Metrics, Protocol, Transport};

/// `inner`, with every byte read or written added to `protocol`'s counters, and counted as
/// an open connection while it lives. Without metrics it only passes through.
#[derive(Debug)]
pub struct Counted<S> {
    /// The stream.
    inner: S,
    /// Where bytes are added, and as which protocol.
    metrics: Option<(Arc<Metrics>, Protocol)>,
    /// The open-connection count this stream holds.
    _open: Option<Connection>,
}

impl<S> Counted<S> {
    /// Count `inner` as a `transport` connection carrying `protocol`; `metrics` `None`
    /// counts nothing.
    pub fn new(
        inner: S,
        metrics: Option<&Arc<Metrics>>,
        transport: Transport,
        protocol: Protocol,
    ) -> Self {
        Counted {
            inner,
            _open: metrics.map(|m| m.connection(transport)),
            metrics: metrics.map(|m| (m.clone(), protocol)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if let (Some((m, p)), true) = (&self.metrics, n > 0) {
            m.bytes_received(*p, n as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Some((m, p)), Poll::Ready(Ok(n))) = (&self.metrics, &r) {
            m.bytes_sent(*p, *n as u64);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let (Some((m, p)), Poll::Ready(Ok(n))) = (&self.metrics, &r) {
            m.bytes_sent(*p, *n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
