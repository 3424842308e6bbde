//! Byte counters around a connection's reader and writer, for `$SYS/broker/bytes/*`, without
//! the connection driver having to know.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Totals over every MQTT connection.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Bytes read from clients.
    pub bytes_received: Arc<AtomicU64>,
    /// Bytes written to clients.
    pub bytes_sent: Arc<AtomicU64>,
}

/// A reader or writer that adds what passes through it to a counter.
#[derive(Debug)]
pub(crate) struct Counted<T> {
    /// The wrapped half.
    inner: T,
    /// The counter it adds to.
    count: Arc<AtomicU64>,
}

/// Wrap a connection's halves so their bytes are counted in `stats`.
pub(crate) fn wrap<R, W>(reader: R, writer: W, stats: &Stats) -> (Counted<R>, Counted<W>) {
    (
        Counted {
            inner: reader,
            count: stats.bytes_received.clone(),
        },
        Counted {
            inner: writer,
            count: stats.bytes_sent.clone(),
        },
    )
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.count.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.count.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
