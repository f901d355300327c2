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

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    fn serve<'a>(&'a self, stream: ServerStream, ctx: &'a ConnectionContext) -> BoxFuture<'a, Outcome>;
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

    fn serve<'a>(&'a self, stream: ServerStream, ctx: &'a ConnectionContext) -> BoxFuture<'a, Outcome> {
        Box::pin(pump(stream, ctx, true))
    }
}

impl Service for Discard {
    fn name(&self) -> &'static str {
        "discard"
    }

    fn serve<'a>(&'a self, stream: ServerStream, ctx: &'a ConnectionContext) -> BoxFuture<'a, Outcome> {
        Box::pin(pump(stream, ctx, false))
    }
}

/// Reads until the peer closes; writes what it read back when `echo` is set. A peer that does
/// not read its echo stops us reading too (backpressure), so buffers stay bounded.
async fn pump(mut stream: ServerStream, ctx: &ConnectionContext, echo: bool) -> Outcome {
    let mut buf = vec![0u8; 16 * 1024];
    let mut outcome = Outcome {
        bytes_in: 0,
        bytes_out: 0,
        end: End::Closed,
    };
    loop {
        let step = async {
            let n = stream.read(&mut buf).await?;
            if n > 0 && echo {
                stream.write_all(&buf[..n]).await?;
                stream.flush().await?;
            }
            io::Result::Ok(n)
        };
        let step = async {
            match ctx.idle_timeout {
                Some(limit) => tokio::time::timeout(limit, step).await.ok(),
                None => Some(step.await),
            }
        };
        let result = tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                outcome.end = End::Shutdown;
                break;
            }
            r = step => r,
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
