//! Large reads from the socket under rustls.
//!
//! rustls's buffered API reads the socket into its own record buffer, which is at most one
//! record (about 16 KiB) long, so a bulk transfer costs one `recv` per record. [`ReadAhead`]
//! sits between rustls and the socket: when rustls asks for bytes and none are buffered, it
//! reads as much as the socket has, up to [`READ_AHEAD`] bytes, and hands them out from memory.
//!
//! The buffer costs only what is used:
//! - a read that fits in the caller's buffer goes there directly, with no buffer of ours at all:
//!   only a read that fills the caller's buffer (there may be more in the socket) makes the next
//!   ones go through the buffer, until the socket has less than they ask for;
//! - it starts at [`FIRST_READ`] (one full TLS record) and grows to [`READ_AHEAD`] only once a
//!   read has filled it (a bulk transfer), so interactive traffic never touches more;
//! - it is never zeroed: the socket reads into its spare capacity (`tokio_util::io::
//!   poll_read_buf`), which matters when a request/response connection drains it after every
//!   message (a 128 KiB `memset` per message was 7% of a tunnel's CPU in the latency case);
//! - it is freed as soon as the socket has nothing more to give (the read would block), so an
//!   idle connection holds none.
//!
//! For a connection that may move to kernel TLS after its handshake, [`ReadAhead::whole_records`]
//! turns the read-ahead off during the handshake: every read then stops at the end of the TLS
//! record it is in, so that when the handshake ends no byte of a later record has left the
//! socket (the kernel must see those), and [`ReadAhead::between_records`] tells whether rustls
//! holds only whole records.
//!
//! Writes pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
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
    /// The next read goes straight into the caller's buffer (the last one did not fill its
    /// buffer: the socket is drained, or nearly).
    direct: bool,
    /// Set while reads must stop at record boundaries (see the module docs).
    records: Option<Records>,
}

/// Where the byte stream is in the TLS record layer: the header's bytes seen so far, then the
/// body's bytes still to come.
#[derive(Debug, Default, Clone, Copy)]
struct Records {
    header: [u8; 5],
    header_len: usize,
    body_left: usize,
}

impl Records {
    /// How many bytes may be read without passing the end of the current record.
    fn room(&self) -> usize {
        if self.header_len < self.header.len() {
            self.header.len() - self.header_len
        } else {
            self.body_left
        }
    }

    /// Notes bytes read (at most [`Records::room`]).
    fn saw(&mut self, bytes: &[u8]) {
        if self.header_len < self.header.len() {
            self.header[self.header_len..self.header_len + bytes.len()].copy_from_slice(bytes);
            self.header_len += bytes.len();
            if self.header_len == self.header.len() {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                if self.body_left == 0 {
                    self.header_len = 0;
                }
            }
        } else {
            self.body_left -= bytes.len();
            if self.body_left == 0 {
                self.header_len = 0;
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.header_len == 0
    }
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`; nothing is allocated until the first read.
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: BytesMut::new(),
            want: FIRST_READ,
            direct: true,
            records: None,
        }
    }

    /// Like [`ReadAhead::new`], but reading stops at the end of each TLS record until
    /// [`ReadAhead::read_ahead`] is called (see the module docs).
    pub fn whole_records(inner: S) -> Self {
        ReadAhead {
            records: Some(Records::default()),
            ..Self::new(inner)
        }
    }

    /// Reads ahead from now on (after [`ReadAhead::whole_records`]).
    pub fn read_ahead(&mut self) {
        self.records = None;
    }

    /// With [`ReadAhead::whole_records`]: whether everything read from the socket so far has
    /// been handed out and ends at a record boundary. Always false in read-ahead mode.
    pub fn between_records(&self) -> bool {
        self.buf.is_empty() && self.records.is_some_and(|r| r.at_boundary())
    }

    /// The wrapped stream, and nothing buffered is kept.
    pub fn into_inner(self) -> S {
        self.inner
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
        if let Some(records) = &mut this.records {
            if this.buf.is_empty() {
                let room = records.room();
                this.buf.reserve(room);
                let limited = &mut (&mut this.buf).limit(room);
                match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, limited) {
                    Poll::Ready(Ok(_)) => records.saw(&this.buf),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        } else if this.buf.is_empty() {
            if this.direct || out.remaining() >= this.want {
                if this.buf.capacity() != 0 {
                    this.buf = BytesMut::new();
                }
                let room = out.remaining();
                let before = out.filled().len();
                let read = Pin::new(&mut this.inner).poll_read(cx, out);
                if matches!(read, Poll::Ready(Ok(()))) && out.filled().len() - before == room {
                    // It filled the caller's buffer: the socket may hold more.
                    this.direct = room >= this.want;
                }
                return read;
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
                    } else {
                        // Less than asked for: the socket is drained.
                        this.direct = true;
                    }
                }
                Poll::Ready(Err(e)) => {
                    this.buf = BytesMut::new();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // Nothing more for now: an idle connection keeps no buffer.
                    this.buf = BytesMut::new();
                    this.direct = true;
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
        // That read filled its buffer: the next one reads ahead.
        assert_eq!(r.buffered(), 0);
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
        let mut page = [0u8; 4096];
        // A small message: it goes straight into the caller's buffer, none of ours is made.
        a.write_all(&[7u8; 100]).await.unwrap();
        assert_eq!(r.read(&mut page).await.unwrap(), 100);
        assert_eq!(r.want, FIRST_READ);
        assert_eq!(r.buf.capacity(), 0);
        // A burst: the read that fills the caller's buffer makes the next one read ahead, one
        // record's worth; that one fills ours, and the one after asks for more.
        a.write_all(&vec![9u8; page.len() + READ_AHEAD + FIRST_READ])
            .await
            .unwrap();
        assert_eq!(r.read(&mut page).await.unwrap(), page.len());
        assert_eq!(r.buf.capacity(), 0);
        r.read_exact(&mut one).await.unwrap();
        assert_eq!(r.buffered(), FIRST_READ - 1);
        assert_eq!(r.want, READ_AHEAD);
        let mut first = vec![0u8; FIRST_READ - 1];
        r.read_exact(&mut first).await.unwrap();
        r.read_exact(&mut one).await.unwrap();
        assert_eq!(r.buffered(), READ_AHEAD - 1);
    }

    /// A TLS record header (type, version, length) and its body.
    fn record(body: &[u8]) -> Vec<u8> {
        let mut r = vec![23, 3, 3];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    #[tokio::test]
    async fn whole_records_never_reads_past_the_record_it_is_in() {
        let (mut a, b) = tokio::io::duplex(READ_AHEAD);
        let mut r = ReadAhead::whole_records(b);
        assert!(r.between_records());
        let mut two = record(b"first record");
        two.extend(record(b"second"));
        a.write_all(&two).await.unwrap();
        let mut big = vec![0u8; 4096];
        let mut got = Vec::new();
        while got.len() < 17 {
            let n = r.read(&mut big).await.unwrap();
            got.extend_from_slice(&big[..n]);
            assert!(got.len() <= 17, "read past the first record: {got:?}");
            assert_eq!(r.between_records(), got.len() == 17);
        }
        assert_eq!(got, record(b"first record"));
        // The second record is still in the socket; reading ahead again takes it at once.
        r.read_ahead();
        let n = r.read(&mut big).await.unwrap();
        assert_eq!(&big[..n], &record(b"second")[..]);
        assert!(
            !r.between_records(),
            "read-ahead mode never claims a boundary"
        );
    }
}
