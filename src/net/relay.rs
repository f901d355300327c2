//! Copies bytes both ways between two streams, with half-close and an idle deadline: what
//! `tlsnet connect` does between the terminal and the server, and what a tunnel does
//! between a client and its backend.
//!
//! When one side's read ends, the other side's write is shut down (for TLS: close_notify)
//! and the other direction goes on, so request/response protocols that half-close work.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Which way bytes were going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From `a` to `b`.
    AToB,
    /// From `b` to `a`.
    BToA,
}

/// When a relay is over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Until {
    /// Both directions have ended (each side closed its write half).
    #[default]
    BothClosed,
    /// `a` has closed: what `connect` wants (the server is gone; stdin may never end).
    AClosed,
}

/// How a relay ends.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayOptions {
    /// Give up after this long without a byte in either direction.
    pub idle_timeout: Option<Duration>,
    /// When the relay is over.
    pub until: Until,
}

/// Bytes moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transferred {
    /// From `a` to `b`.
    pub a_to_b: u64,
    /// From `b` to `a`.
    pub b_to_a: u64,
}

/// Why a relay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or writing failed.
    #[error("relay {direction:?}: {action} failed")]
    Io {
        /// Which way.
        direction: Direction,
        /// "read" or "write".
        action: &'static str,
        /// The error.
        #[source]
        source: io::Error,
        /// What had moved until then.
        transferred: Transferred,
    },
    /// Nothing moved for the idle timeout.
    #[error("no traffic for {}", crate::duration::format(*.0))]
    Idle(Duration),
}

/// Relays between `a` and `b` (see the module documentation).
pub async fn relay<A, B>(a: A, b: B, options: RelayOptions) -> Result<Transferred, RelayError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let started = Instant::now();
    let last = AtomicU64::new(0);
    let a_to_b = AtomicU64::new(0);
    let b_to_a = AtomicU64::new(0);
    let moved = || Transferred {
        a_to_b: a_to_b.load(Ordering::Relaxed),
        b_to_a: b_to_a.load(Ordering::Relaxed),
    };
    let forward = copy(&mut a_read, &mut b_write, &a_to_b, &last, started);
    let backward = copy(&mut b_read, &mut a_write, &b_to_a, &last, started);
    let wrap = |direction: Direction| {
        move |(action, source): (&'static str, io::Error)| (direction, action, source)
    };
    let both = async {
        match options.until {
            Until::BothClosed => {
                // A failure one way ends both: a client that vanished (a reset, no
                // close_notify) must not keep its backend connection open until the idle
                // deadline, waiting for an end of input that will never come.
                tokio::try_join!(
                    async { forward.await.map_err(wrap(Direction::AToB)) },
                    async { backward.await.map_err(wrap(Direction::BToA)) },
                )?;
            }
            Until::AClosed => {
                tokio::pin!(forward);
                tokio::select! {
                    f = &mut forward => f.map_err(wrap(Direction::AToB))?,
                    b = backward => match b {
                        // `b` is done (stdin ended); wait for `a` to close too.
                        Ok(()) => forward.await.map_err(wrap(Direction::AToB))?,
                        // A failed write to `a` often has its reason (a TLS alert) waiting on
                        // the read side: prefer that one.
                        Err(b) => match tokio::time::timeout(Duration::from_secs(1), &mut forward).await {
                            Ok(Err(f)) => return Err(wrap(Direction::AToB)(f)),
                            _ => return Err(wrap(Direction::BToA)(b)),
                        },
                    },
                }
            }
        }
        Ok::<(), (Direction, &'static str, io::Error)>(())
    };
    let result = match options.idle_timeout {
        None => both.await.map_err(Some),
        Some(limit) => {
            tokio::pin!(both);
            let timer = tokio::time::sleep(limit);
            tokio::pin!(timer);
            loop {
                tokio::select! {
                    r = &mut both => break r.map_err(Some),
                    _ = &mut timer => {
                        let deadline = started
                            + Duration::from_millis(last.load(Ordering::Relaxed))
                            + limit;
                        if deadline <= Instant::now() {
                            break Err(None);
                        }
                        timer.as_mut().reset(deadline);
                    }
                }
            }
        }
    };
    match result {
        Ok(()) => Ok(moved()),
        Err(Some((direction, action, source))) => Err(RelayError::Io {
            direction,
            action,
            source,
            transferred: moved(),
        }),
        Err(None) => Err(RelayError::Idle(options.idle_timeout.unwrap_or_default())),
    }
}

/// A direction's buffer once its first byte has arrived.
const SMALL_BUF: usize = 16 * 1024;
/// A direction's buffer once a read has filled the small one (a bulk transfer).
const LARGE_BUF: usize = 128 * 1024;

/// Copies until `from` ends, then shuts `to` down.
async fn copy<R, W>(
    from: &mut R,
    to: &mut W,
    count: &AtomicU64,
    last: &AtomicU64,
    started: Instant,
) -> Result<(), (&'static str, io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Allocated when the first byte arrives, not before: idle relays hold no buffers.
    let mut buf = Vec::new();
    let mut eof = false;
    while !eof {
        let mut n = if buf.is_empty() {
            let mut first = [0u8; 1];
            if from.read(&mut first).await.map_err(|e| ("read", e))? == 0 {
                break;
            }
            buf = vec![0u8; SMALL_BUF];
            buf[0] = first[0];
            1
        } else {
            let n = from.read(&mut buf).await.map_err(|e| ("read", e))?;
            if n == 0 {
                break;
            }
            n
        };
        // Whatever else is there already goes out in the same write: reads that do not wait,
        // until the buffer is full. A TLS stream gives one record (16 KiB) per read; one write
        // of several costs the kernel one send and one wake-up of the receiver instead of
        // several (the larger part of a relay's CPU on loopback).
        while n < buf.len() {
            let more = tokio::select! {
                biased;
                r = from.read(&mut buf[n..]) => r.map_err(|e| ("read", e))?,
                _ = std::future::ready(()) => break,
            };
            if more == 0 {
                eof = true;
                break;
            }
            n += more;
        }
        to.write_all(&buf[..n]).await.map_err(|e| ("write", e))?;
        to.flush().await.map_err(|e| ("write", e))?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        // A bulk transfer (the buffer came back full) gets the large buffer; interactive
        // traffic keeps the small one.
        if n == buf.len() && buf.len() < LARGE_BUF {
            buf.resize(LARGE_BUF, 0);
        }
    }
    to.shutdown().await.map_err(|e| ("write", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream whose reads fail (a peer that reset the connection).
    struct Reset;

    impl AsyncRead for Reset {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
        }
    }

    impl AsyncWrite for Reset {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_failure_one_way_ends_both_ways() {
        // `b` stays open and silent: the relay must not wait for it.
        let (b, _b_peer) = tokio::io::duplex(1024);
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            relay(Reset, b, RelayOptions::default()),
        )
        .await
        .expect("the relay ends when one direction fails");
        assert!(matches!(
            result,
            Err(RelayError::Io {
                direction: Direction::AToB,
                action: "read",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn half_close_lets_the_other_direction_finish() {
        let (a, mut a_peer) = tokio::io::duplex(1024);
        let (b, mut b_peer) = tokio::io::duplex(1024);
        let relaying = tokio::spawn(relay(a, b, RelayOptions::default()));
        a_peer.write_all(b"request").await.unwrap();
        a_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        b_peer.write_all(b"response").await.unwrap();
        b_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        a_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"response");
        let moved = relaying.await.unwrap().unwrap();
        assert_eq!(
            moved,
            Transferred {
                a_to_b: 7,
                b_to_a: 8
            }
        );
    }

    #[tokio::test]
    async fn idle_relay_gives_up() {
        let (a, _a_peer) = tokio::io::duplex(64);
        let (b, _b_peer) = tokio::io::duplex(64);
        let options = RelayOptions {
            idle_timeout: Some(Duration::from_millis(100)),
            until: Until::BothClosed,
        };
        let err = relay(a, b, options).await.unwrap_err();
        assert!(matches!(err, RelayError::Idle(_)), "{err}");
    }
}
