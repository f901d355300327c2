//! A stream wrapper that counts application bytes and notes when the connection last moved,
//! so that the server (not each service) keeps the byte counters and the idle deadline.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::stats::ServerStats;

/// One connection's counters, shared between its stream and the server.
#[derive(Debug)]
pub struct Meter {
    started: Instant,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Milliseconds from `started` to the last byte in either direction.
    last_active_ms: AtomicU64,
    server: Arc<ServerStats>,
}

impl Meter {
    /// A meter that also adds to `server`'s totals.
    pub fn new(server: Arc<ServerStats>) -> Arc<Self> {
        Arc::new(Meter {
            started: Instant::now(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(0),
            server,
        })
    }

    /// Bytes received so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes sent so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// When a byte last moved (the start, if none has).
    pub fn last_active(&self) -> Instant {
        self.started + std::time::Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }

    fn moved(&self, total: &AtomicU64, server_total: &AtomicU64, n: usize) {
        if n == 0 {
            return;
        }
        total.fetch_add(n as u64, Ordering::Relaxed);
        server_total.fetch_add(n as u64, Ordering::Relaxed);
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    fn received(&self, n: usize) {
        self.moved(&self.bytes_in, &self.server.bytes_in, n);
    }

    fn sent(&self, n: usize) {
        self.moved(&self.bytes_out, &self.server.bytes_out, n);
    }
}

/// A stream whose traffic is counted by a [`Meter`].
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S> Metered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, meter: Arc<Meter>) -> Self {
        Metered { inner, meter }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.meter.received(buf.filled().len() - before);
        }
        poll
    }
}

impl<S: AsyncBufRead + Unpin> AsyncBufRead for Metered<S> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        self.meter.received(amt);
        Pin::new(&mut self.inner).consume(amt);
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.meter.sent(n);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.meter.sent(n);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_both_directions() {
        let stats = Arc::new(ServerStats::default());
        let meter = Meter::new(stats.clone());
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Metered::new(a, meter.clone());
        a.write_all(b"hello").await.unwrap();
        b.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!((meter.bytes_in(), meter.bytes_out()), (2, 5));
        assert_eq!(stats.bytes_out.load(Ordering::Relaxed), 5);
    }
}
