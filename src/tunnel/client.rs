//! The tunnel client: a plain local listener whose every connection is carried over TLS (or
//! mutual TLS) to an upstream server, such as a tunnel server.
//!
//! Accepting is the shared [`accept_loop`] (connection limit, backoff, task tracking); the
//! upstream connection is a [`Connector`]'s, verified with the client's trust settings, and
//! then the server's certificate is checked against the `--verify-*` rules (an
//! [`AccessPolicy`], the same rules a server applies to its clients) before a byte of the
//! local client is sent. The bytes go both ways through [`relay`] with half-close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::net::accept::{accept_loop, Gate};
use crate::net::client::{read_error_cause, Connector};
use crate::net::relay::{relay, Direction, RelayError, RelayOptions, Until};
use crate::net::ServerStats;
use crate::tls::AccessPolicy;

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
    verify: AccessPolicy,
    options: TunnelClientOptions,
    stats: Arc<ServerStats>,
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
            AccessPolicy::default(),
            TunnelClientOptions::default(),
        )
    }

    /// Like [`TunnelClient::new`]; the server's certificate must also satisfy `verify` (empty:
    /// no rule beyond the trust settings).
    pub fn with_options(
        connector: Connector,
        upstream: impl Into<String>,
        server_name: ServerName<'static>,
        verify: AccessPolicy,
        options: TunnelClientOptions,
    ) -> Self {
        TunnelClient {
            shared: Arc::new(Shared {
                connector,
                upstream: upstream.into(),
                server_name,
                verify,
                options,
                stats: Arc::default(),
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
        if listeners.is_empty() {
            return Err(Error::InvalidInput("no address to listen on".into()));
        }
        let shared = self.shared;
        let gate = Gate::new(shared.options.max_connections, shared.stats.clone());
        let stop_accepting = CancellationToken::new();
        let forced = CancellationToken::new();
        let mut loops = Vec::new();
        for listener in listeners {
            let shared = shared.clone();
            let forced = forced.clone();
            loops.push(tokio::spawn(accept_loop(
                listener,
                gate.clone(),
                stop_accepting.clone(),
                move |tcp, peer, slot| connection(tcp, peer, shared.clone(), slot, forced.clone()),
            )));
        }
        shutdown.await;
        stop_accepting.cancel();
        for task in loops {
            let _ = task.await;
        }
        let connections = gate.tasks();
        connections.close();
        let grace = shared.options.shutdown_timeout;
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            warn!(
                open = connections.len(),
                "shutdown grace period over; closing the remaining tunnel connections"
            );
            forced.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
        }
        info!("tunnel client stopped");
        Ok(())
    }
}

async fn connection(
    local: TcpStream,
    _peer: SocketAddr,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
    forced: CancellationToken,
) {
    let started = Instant::now();
    let upstream = &shared.upstream;
    let connecting = shared
        .connector
        .connect(upstream, shared.server_name.clone());
    let connected = tokio::select! {
        connected = connecting => connected,
        _ = forced.cancelled() => return,
    };
    let (mut tls, report) = match connected {
        Ok(connected) => connected,
        Err(e) => {
            warn!(%upstream, error = %e.describe(), "tunnel client: cannot reach the upstream; closing the local connection");
            return;
        }
    };
    if !shared.verify.is_empty() {
        let admitted = report
            .peer
            .as_ref()
            .and_then(|id| shared.verify.admitting_rule(id));
        if admitted.is_none() {
            warn!(
                %upstream,
                server = %report.peer.as_ref().map_or_else(|| "no certificate".to_owned(), |p| p.to_string()),
                rules = %shared.verify.describe(),
                "tunnel client: the upstream's certificate matches no --verify-* rule; closing"
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
            return;
        }
    }
    ServerStats::count(&shared.stats.handshakes);
    let options = RelayOptions {
        idle_timeout: shared.options.idle_timeout,
        until: Until::BothClosed,
    };
    let result = tokio::select! {
        result = relay(local, &mut tls, options) => Some(result),
        _ = forced.cancelled() => None,
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
