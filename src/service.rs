//! Services: what runs on a connection once the handshake is done.
//!
//! The server owns accepting, the handshake, limits and shutdown; a service only sees an
//! established TLS stream and a [`ConnectionContext`] (who the peer is, what was negotiated,
//! when to give up). New services (messaging, tunnel, file transfer) implement [`Service`] and
//! plug into [`crate::server::Server`] without touching it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::report::HandshakeReport;

/// The server end of an established TLS connection.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A boxed future, as returned by [`Service::serve`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a service knows about its connection.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    /// The peer's address.
    pub peer: SocketAddr,
    /// What the handshake negotiated, with the client's certificate chain (if any).
    pub handshake: Arc<HandshakeReport>,
    /// Close the connection after this long without progress (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Cancelled when the server stops waiting for connections to finish: send close_notify
    /// and return.
    pub shutdown: CancellationToken,
}

/// How a connection ended.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The peer sent close_notify (or we finished and sent ours).
    Closed,
    /// The peer closed TCP without close_notify: the data may have been truncated.
    Truncated,
    /// Nothing happened for the idle timeout.
    IdleTimeout,
    /// The server shut down.
    Shutdown,
    /// An error, in words.
    Error(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => write!(f, "closed"),
            End::Truncated => write!(f, "peer closed without close_notify (possible truncation)"),
            End::IdleTimeout => write!(f, "idle timeout"),
            End::Shutdown => write!(f, "server shutdown"),
            End::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// What a service reports when its connection is over.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Application bytes received.
    pub bytes_in: u64,
    /// Application bytes sent.
    pub bytes_out: u64,
    /// How it ended.
    pub end: End,
}

/// Something that runs on an established connection.
pub trait Service: Send + Sync + 'static {
    /// A short name for logs (`echo`, `discard`).
    fn name(&self) -> &'static str;

    /// Serves one connection until it ends.
    fn serve<'a>(
        &'a self,
        stream: ServerStream,
        ctx: &'a ConnectionContext,
    ) -> BoxFuture<'a, Outcome>;
}

/// Sends every byte back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

/// Reads and drops every byte (for benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl Service for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn serve<'a>(
        &'a self,
        stream: ServerStream,
        ctx: &'a ConnectionContext,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(pump(stream, ctx, true))
    }
}

impl Service for Discard {
    fn name(&self) -> &'static str {
        "discard"
    }

    fn serve<'a>(
        &'a self,
        stream: ServerStream,
        ctx: &'a ConnectionContext,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(pump(stream, ctx, false))
    }
}

/// Reads until the peer closes; writes what it read back when `echo` is set. A peer that does
/// not read its echo stops us reading too (backpressure), so buffers stay bounded.
//
// Not an `async fn`: one with a `mut` argument keeps the argument and its `mut` copy side by
// side in its state, and the stream is 1.2 KB. The `async move` block holds it once.
#[allow(clippy::manual_async_fn)]
fn pump(
    mut stream: ServerStream,
    ctx: &ConnectionContext,
    echo: bool,
) -> impl Future<Output = Outcome> + Send + '_ {
    async move {
        // No buffer until the peer sends something: an idle connection does not hold 16 KiB.
        let mut buf: Vec<u8> = Vec::new();
        let mut outcome = Outcome {
            bytes_in: 0,
            bytes_out: 0,
            end: End::Closed,
        };
        // One idle timer for the connection, re-armed at every step. (A timeout future per step,
        // wrapped around a nested future, made this future 3.3 KB: each layer kept its own copy of
        // the one inside. It is now about half of that, which is most of an idle connection.)
        let idle = tokio::time::sleep(ctx.idle_timeout.unwrap_or(Duration::MAX));
        tokio::pin!(idle);
        loop {
            if let Some(limit) = ctx.idle_timeout {
                idle.as_mut().reset(tokio::time::Instant::now() + limit);
            }
            let result = tokio::select! {
                _ = ctx.shutdown.cancelled() => {
                    outcome.end = End::Shutdown;
                    break;
                }
                _ = &mut idle, if ctx.idle_timeout.is_some() => None,
                r = step(&mut stream, &mut buf, echo) => Some(r),
            };
            match result {
                None => {
                    outcome.end = End::IdleTimeout;
                    break;
                }
                Some(Ok(0)) => break,
                Some(Ok(n)) => {
                    outcome.bytes_in += n as u64;
                    if echo {
                        outcome.bytes_out += n as u64;
                    }
                }
                Some(Err(e)) => {
                    outcome.end = end_of(&e);
                    return outcome;
                }
            }
        }
        // Our close_notify; bounded, since a peer that does not read could block it forever.
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        outcome
    }
}

/// Reads once, and writes back what it read when `echo` is set. The echo buffer is allocated
/// when the first bytes arrive; discarding needs none.
async fn step(stream: &mut ServerStream, buf: &mut Vec<u8>, echo: bool) -> io::Result<usize> {
    if !echo {
        // Discard: take the plaintext where rustls decrypted it, without copying it out.
        let n = stream.fill_buf().await?.len();
        stream.consume(n);
        return Ok(n);
    }
    if buf.is_empty() {
        // Wait on the socket itself unless rustls already holds plaintext (or the peer's
        // close_notify) that came in with the end of the handshake.
        let (tcp, conn) = stream.get_mut();
        let buffered = conn.process_new_packets().map_or(true, |s| {
            s.plaintext_bytes_to_read() > 0 || s.peer_has_closed()
        });
        if !buffered {
            // peek, not readable(): readiness left over from the handshake's last read would
            // wake us at once.
            tcp.peek(&mut [0u8; 1]).await?;
        }
        *buf = vec![0u8; 16 * 1024];
    }
    let n = stream.read(buf).await?;
    if n > 0 && echo {
        stream.write_all(&buf[..n]).await?;
        stream.flush().await?;
    }
    Ok(n)
}

/// Classifies the error that ended a stream.
pub fn end_of(e: &io::Error) -> End {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => End::Truncated,
        _ => {
            if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                End::Error(tls.to_string())
            } else {
                End::Error(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection is mostly this future: it must hold the stream once, not twice.
    #[test]
    fn pump_holds_the_stream_once() {
        fn size<A, B, F>(_: &impl Fn(A, B) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let pump = size(&|s: ServerStream, c: &'static ConnectionContext| pump(s, c, false));
        assert!(
            pump < 2 * std::mem::size_of::<ServerStream>(),
            "pump future: {pump} bytes"
        );
    }
}
