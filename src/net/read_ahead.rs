//! Large reads from the socket under rustls.
//!
//! rustls's buffered API reads the socket into its own record buffer, which is at most one
//! record (about 16 KiB) long, so a bulk transfer costs one `recv` per record. [`ReadAhead`]
//! sits between rustls and the socket: when rustls asks for bytes and none are buffered, it
//! reads as much as the socket has, up to [`READ_AHEAD`] bytes, and hands them out from memory.
//!
//! The buffer costs only what is used:
//! - it starts at [`FIRST_READ`] (one full TLS record) and grows to [`READ_AHEAD`] only once a
//!   read has filled it (a bulk transfer), so interactive traffic never touches more;
//! - it is never zeroed: the socket reads into its spare capacity (`tokio_util::io::
//!   poll_read_buf`), which matters when a request/response connection drains it after every
//!   message (a 128 KiB `memset` per message was 7% of a tunnel's CPU in the latency case);
//! - it is freed as soon as the socket has nothing more to give (the read would block), so an
//!   idle connection holds none.
//!
//! Writes pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes read from the socket at once.
pub const READ_AHEAD: usize = 128 * 1024;

/// The first read's size: one TLS record of the largest kind (16 KiB of ciphertext, the
/// record header and the AEAD tag, with room to spare).
pub const FIRST_READ: usize = 17 * 1024;

/// A stream whose reads are made up to [`READ_AHEAD`] bytes at a time (see the module docs).
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    buf: BytesMut,
    /// How much the next read from the socket asks for.
    want: usize,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`; nothing is allocated until the first read.
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: BytesMut::new(),
            want: FIRST_READ,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes read from the socket and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            if out.remaining() >= this.want {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.buf.reserve(this.want);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf) {
                Poll::Ready(Ok(0)) => {
                    this.buf = BytesMut::new();
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(n)) => {
                    if n >= this.want {
                        this.want = READ_AHEAD;
                    }
                }
                Poll::Ready(Err(e)) => {
                    this.buf = BytesMut::new();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // Nothing more for now: an idle connection keeps no buffer.
                    this.buf = BytesMut::new();
                    return Poll::Pending;
                }
            }
        }
        let n = out.remaining().min(this.buf.len());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn hands_out_every_byte_in_order_in_small_reads() {
        let (mut a, b) = tokio::io::duplex(READ_AHEAD * 2);
        let data: Vec<u8> = (0..READ_AHEAD * 3 + 17).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
        });
        let mut r = ReadAhead::new(b);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4000];
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data);
    }

    #[tokio::test]
    async fn an_idle_stream_holds_no_buffer() {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut r = ReadAhead::new(b);
        a.write_all(b"hello").await.unwrap();
        let mut two = [0u8; 2];
        r.read_exact(&mut two).await.unwrap();
        assert_eq!(r.buffered(), 3);
        let mut rest = [0u8; 3];
        r.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"llo");
        // The next read waits: the buffer goes.
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(50), r.read(&mut two)).await;
        assert!(pending.is_err());
        assert_eq!(r.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn reads_grow_from_one_record_only_when_a_read_fills_the_buffer() {
        let (mut a, b) = tokio::io::duplex(READ_AHEAD * 2);
        let mut r = ReadAhead::new(b);
        let mut one = [0u8; 1];
        // A small message: one small read, the buffer stays at its first size.
        a.write_all(&[7u8; 100]).await.unwrap();
        r.read_exact(&mut one).await.unwrap();
        assert_eq!(r.want, FIRST_READ);
        assert!(r.buf.capacity() < READ_AHEAD);
        let mut rest = [0u8; 99];
        r.read_exact(&mut rest).await.unwrap();
        // A burst larger than the first read: it fills it, and the next read asks for more.
        a.write_all(&vec![9u8; READ_AHEAD + FIRST_READ])
            .await
            .unwrap();
        r.read_exact(&mut one).await.unwrap();
        assert_eq!(r.buffered(), FIRST_READ - 1);
        assert_eq!(r.want, READ_AHEAD);
        let mut first = vec![0u8; FIRST_READ - 1];
        r.read_exact(&mut first).await.unwrap();
        r.read_exact(&mut one).await.unwrap();
        assert_eq!(r.buffered(), READ_AHEAD - 1);
    }
}
