//! The tunnel client: a plain local listener whose every connection is carried over TLS (or
//! mutual TLS) to an upstream server, such as a tunnel server.
//!
//! Accepting is the shared [`accept_loop`] (connection limit, backoff, task tracking); the
//! upstream connection is a [`Connector`]'s, verified with the client's trust settings and
//! the `--verify-*` rules (`ClientTlsOptions::server_policy`, checked in the handshake, the
//! same rules a server applies to its clients), so no byte of the local client reaches a
//! server that fails them. The bytes go both ways through [`relay`] with half-close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, warn};

use crate::error::Result;
use crate::net::accept::{serve_listeners, Gate};
use crate::net::client::{read_error_cause, Connector};
use crate::net::relay::{relay, Direction, RelayError, RelayOptions, Until};
use crate::net::ServerStats;
use crate::service::Shutdown;

/// Limits of a tunnel client.
#[derive(Clone, Debug)]
pub struct TunnelClientOptions {
    /// Local connections served at once; more are refused at accept.
    pub max_connections: usize,
    /// Close a connection after this long without a byte in either direction.
    pub idle_timeout: Option<Duration>,
    /// On shutdown, how long open connections may take to finish.
    pub shutdown_timeout: Duration,
}

impl Default for TunnelClientOptions {
    fn default() -> Self {
        TunnelClientOptions {
            max_connections: 10_000,
            idle_timeout: Some(Duration::from_secs(300)),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// A local listener that tunnels to a TLS server.
pub struct TunnelClient {
    shared: Arc<Shared>,
}

struct Shared {
    connector: Connector,
    upstream: String,
    server_name: ServerName<'static>,
    options: TunnelClientOptions,
    stats: Arc<ServerStats>,
    /// Byte streams have nothing to say at draining: connections end when their peers close
    /// them, or are forced at the end of the grace period.
    shutdown: Shutdown,
}

impl TunnelClient {
    /// Tunnels to `upstream` (`HOST:PORT`), checking its certificate for `server_name`.
    pub fn new(
        connector: Connector,
        upstream: impl Into<String>,
        server_name: ServerName<'static>,
    ) -> Self {
        Self::with_options(
            connector,
            upstream,
            server_name,
            TunnelClientOptions::default(),
        )
    }

    /// Like [`TunnelClient::new`], with limits.
    pub fn with_options(
        connector: Connector,
        upstream: impl Into<String>,
        server_name: ServerName<'static>,
        options: TunnelClientOptions,
    ) -> Self {
        TunnelClient {
            shared: Arc::new(Shared {
                connector,
                upstream: upstream.into(),
                server_name,
                options,
                stats: Arc::default(),
                shutdown: Shutdown::new(),
            }),
        }
    }

    /// The counters of the local listener (accepted, refused at the limit, open).
    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// Serves on already bound listeners until `shutdown` completes; then stops accepting
    /// and waits for open connections, closing the rest after `shutdown_timeout`.
    pub async fn run(
        self,
        listeners: Vec<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let shared = self.shared;
        let gate = Gate::new(shared.options.max_connections, shared.stats.clone());
        let handler = {
            let shared = shared.clone();
            move |tcp, peer, slot| connection(tcp, peer, shared.clone(), slot)
        };
        serve_listeners(
            listeners,
            gate,
            handler,
            shutdown,
            &shared.shutdown,
            shared.options.shutdown_timeout,
        )
        .await?;
        info!("tunnel client stopped");
        Ok(())
    }
}

async fn connection(
    local: TcpStream,
    _peer: SocketAddr,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) {
    let forced = &shared.shutdown;
    let started = Instant::now();
    let upstream = &shared.upstream;
    let connecting = shared
        .connector
        .connect(upstream, shared.server_name.clone());
    let connected = tokio::select! {
        connected = connecting => connected,
        _ = forced.forced() => return,
    };
    let (mut tls, _report) = match connected {
        Ok(connected) => connected,
        Err(e) => {
            warn!(%upstream, error = %e.describe(), "tunnel client: cannot reach the upstream; closing the local connection");
            return;
        }
    };
    ServerStats::count(&shared.stats.handshakes);
    let options = RelayOptions {
        idle_timeout: shared.options.idle_timeout,
        until: Until::BothClosed,
    };
    let result = tokio::select! {
        result = relay(local, &mut tls, options) => Some(result),
        _ = forced.forced() => None,
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Some(Ok(moved)) => info!(
            %upstream,
            bytes_up = moved.a_to_b,
            bytes_down = moved.b_to_a,
            duration_ms,
            "tunnel connection closed"
        ),
        Some(Err(RelayError::Io {
            direction,
            action,
            source,
            transferred,
        })) => {
            let side = match (direction, action) {
                (Direction::AToB, "write") | (Direction::BToA, "read") => "upstream",
                _ => "local client",
            };
            let cause = if side == "upstream" {
                read_error_cause(&source)
            } else {
                source.to_string()
            };
            warn!(
                %upstream,
                %side,
                error = %cause,
                bytes_up = transferred.a_to_b,
                bytes_down = transferred.b_to_a,
                duration_ms,
                "tunnel connection failed"
            );
        }
        Some(Err(e @ RelayError::Idle(_))) => {
            info!(%upstream, reason = %e, duration_ms, "tunnel connection closed: idle");
            let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
        }
        None => {
            let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
            info!(%upstream, duration_ms, "tunnel connection closed at shutdown");
        }
    }
}
