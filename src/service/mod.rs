//! Services: what runs on a connection once the handshake is done and the access policy has
//! admitted the client.
//!
//! The server owns accepting, the handshake, the policy, limits, byte counting, the idle
//! deadline and shutdown; a service sees a byte stream and a [`Context`] (who the peer is,
//! what was negotiated, when to stop). The stream is any `AsyncBufRead + AsyncWrite`, so a
//! service is tested in memory over `tokio::io::duplex` (wrapped in a `tokio::io::BufReader`)
//! with no sockets and no TLS. New services (the tunnel, messaging, file transfer) implement
//! [`Service`] and register with a [`Router`] under their ALPN id; the server never changes
//! for them.
//!
//! ```
//! use tlsnet::service::{BoxFuture, BoxStream, Context, End, Service};
//!
//! /// Says hello, then waits for the server to ask it to stop.
//! struct Hello;
//!
//! impl Service for Hello {
//!     fn name(&self) -> &'static str { "hello" }
//!     fn serve<'a>(&'a self, mut stream: BoxStream, ctx: &'a Context) -> BoxFuture<'a, End> {
//!         Box::pin(async move {
//!             use tokio::io::AsyncWriteExt;
//!             if let Err(e) = stream.write_all(b"hello\n").await {
//!                 return End::from_io(e);
//!             }
//!             ctx.shutdown.draining().await;
//!             let _ = stream.write_all(b"goodbye\n").await;
//!             let _ = stream.shutdown().await;
//!             End::Drained
//!         })
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::error::BoxError;
use crate::tls::{HandshakeReport, PeerIdentity};

pub mod echo;
pub mod router;
pub mod user;

pub use echo::{Discard, Echo};
pub use router::Router;
pub use user::{UserId, UserIdError, UserIdSource};

/// The byte stream a service reads and writes: the decrypted TLS stream in the server, any
/// in-memory stream in tests.
pub trait Stream: AsyncBufRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncBufRead + AsyncWrite + Unpin + Send + ?Sized> Stream for T {}

/// A boxed [`Stream`], as a service receives it.
pub type BoxStream = Box<dyn Stream>;

/// A boxed future, as returned by [`Service::serve`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that runs on an established connection.
pub trait Service: Send + Sync + 'static {
    /// A short name for logs and metrics (`echo`, `discard`, `msg`).
    fn name(&self) -> &'static str;

    /// Serves one connection until it ends, and says how it ended. The service closes the
    /// stream itself (`shutdown()` sends TLS close_notify) when it ends cleanly.
    fn serve<'a>(&'a self, stream: BoxStream, ctx: &'a Context) -> BoxFuture<'a, End>;
}

/// What a service knows about its connection.
#[derive(Debug, Clone)]
pub struct Context {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Our address on this connection (the one the peer connected to).
    pub local: SocketAddr,
    /// What the handshake negotiated, with the peer's identity.
    pub handshake: Arc<HandshakeReport>,
    /// When to stop.
    pub shutdown: Shutdown,
}

impl Context {
    /// A context for a connection.
    pub fn new(
        peer: SocketAddr,
        local: SocketAddr,
        handshake: Arc<HandshakeReport>,
        shutdown: Shutdown,
    ) -> Self {
        Context {
            peer,
            local,
            handshake,
            shutdown,
        }
    }

    /// Who the client is (its verified certificate), when it sent one.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.handshake.peer.as_ref()
    }

    /// The server name the client asked for (SNI).
    pub fn sni(&self) -> Option<&str> {
        self.handshake.sni.as_deref()
    }

    /// The application protocol the client chose (ALPN).
    pub fn alpn(&self) -> Option<&str> {
        self.handshake.alpn.as_deref()
    }
}

/// The server's stop signal, in two phases.
///
/// - **draining**: the server stopped accepting (SIGTERM). Finish what you are doing, tell
///   the peer goodbye in your protocol, close. Byte-stream services such as echo keep going
///   until the peer closes: they have no message boundary to stop at.
/// - **forced**: the grace period is over, or this connection was idle too long. Close now.
///
/// Forced implies draining: [`Shutdown::draining`] also completes when forced.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    draining: CancellationToken,
    forced: CancellationToken,
}

impl Shutdown {
    /// A signal that nothing has fired yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Completes when draining starts (or the connection is forced to close).
    pub async fn draining(&self) {
        tokio::select! {
            _ = self.draining.cancelled() => {}
            _ = self.forced.cancelled() => {}
        }
    }

    /// Completes when the connection must close now.
    pub async fn forced(&self) {
        self.forced.cancelled().await
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled() || self.forced.is_cancelled()
    }

    /// Whether the connection must close now.
    pub fn is_forced(&self) -> bool {
        self.forced.is_cancelled()
    }

    /// Starts draining (for every connection sharing this signal).
    pub fn start_draining(&self) {
        self.draining.cancel();
    }

    /// Forces a close (for every connection sharing this signal).
    pub fn force(&self) {
        self.forced.cancel();
    }

    /// A signal for one connection: it drains and is forced with this one, and can also be
    /// forced alone (idle deadline). Both are child tokens: a connection that polls its
    /// signal at every turn takes a lock of its own, not one shared by every connection
    /// (which the server's worker threads would contend for).
    pub fn for_connection(&self) -> Shutdown {
        Shutdown {
            draining: self.draining.child_token(),
            forced: self.forced.child_token(),
        }
    }
}

/// How a connection ended.
#[non_exhaustive]
#[derive(Debug)]
pub enum End {
    /// The peer sent close_notify (or we finished and sent ours).
    Closed,
    /// The peer closed TCP without close_notify: the data may have been truncated.
    Truncated,
    /// The service said goodbye because the server is draining.
    Drained,
    /// Nothing moved for the idle timeout (set by the server).
    IdleTimeout,
    /// The server closed the connection at the end of its shutdown grace period.
    Shutdown,
    /// A TLS error: a bad record, an alert from the peer.
    Tls(rustls::Error),
    /// A network error.
    Io(io::Error),
    /// The service could not do its job; the error says why, with its causes (a tunnel's
    /// backend refused, a client broke the protocol).
    Failed(BoxError),
}

impl End {
    /// Classifies the error that ended a stream: a missing close_notify is a truncation, a
    /// rustls error inside the `io::Error` is a TLS error.
    pub fn from_io(e: io::Error) -> End {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return End::Truncated;
        }
        if !e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
            return End::Io(e);
        }
        let kind = e.kind();
        match e
            .into_inner()
            .map(|inner| inner.downcast::<rustls::Error>())
        {
            Some(Ok(tls)) => End::Tls(*tls),
            Some(Err(other)) => End::Io(io::Error::new(kind, other)),
            None => End::Io(io::Error::from(kind)),
        }
    }

    /// A short stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Truncated => "truncated",
            End::Drained => "drained",
            End::IdleTimeout => "idle_timeout",
            End::Shutdown => "shutdown",
            End::Tls(_) => "tls_error",
            End::Io(_) => "io_error",
            End::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => write!(f, "closed"),
            End::Truncated => write!(f, "peer closed without close_notify (possible truncation)"),
            End::Drained => write!(f, "drained (said goodbye at server shutdown)"),
            End::IdleTimeout => write!(f, "idle timeout"),
            End::Shutdown => write!(f, "server shutdown"),
            End::Tls(e) => write!(f, "TLS error: {e}"),
            End::Io(e) => write!(f, "network error: {e}"),
            End::Failed(e) => write!(f, "failed: {}", crate::error::chain(e.as_ref())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shutdown;
    use std::time::Duration;

    #[tokio::test]
    async fn a_connection_drains_with_the_server_and_is_forced_alone() {
        let server = Shutdown::new();
        let (one, two) = (server.for_connection(), server.for_connection());
        one.force();
        assert!(
            one.is_forced() && one.is_draining(),
            "forced implies draining"
        );
        assert!(
            !two.is_draining() && !server.is_draining(),
            "forcing one is for it alone"
        );
        let waiting = tokio::spawn(async move { two.draining().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        server.start_draining();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a connection's wait ends when the server drains")
            .unwrap();
        let late = server.for_connection();
        assert!(
            late.is_draining(),
            "a connection made while draining is draining"
        );
        server.force();
        assert!(late.is_forced());
    }
}
