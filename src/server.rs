//! The server: accept loop, connection limit, handshake deadline, per-connection logging and
//! graceful shutdown. What happens on a connection after the handshake is a [`Service`].
//!
//! ```no_run
//! # async fn demo(tls: std::sync::Arc<rustls::ServerConfig>) -> tlsnet::Result<()> {
//! use tlsnet::server::{Server, bind};
//! let listeners = bind("127.0.0.1:8443").await?;
//! Server::new(tls, tlsnet::service::Echo)
//!     .run(listeners, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::error::{Error, Result};
use crate::failure::{FailureCause, Side};
use crate::reload::TlsHandle;
use crate::report::HandshakeReport;
use crate::service::{ConnectionContext, ServerStream, Service};
use crate::telemetry;

/// Limits and deadlines.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; more are refused at accept.
    pub max_connections: usize,
    /// A client must finish the handshake within this time.
    pub handshake_timeout: Duration,
    /// Close a connection after this long without progress (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// On shutdown, how long open connections may take to finish.
    pub shutdown_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// TCP connections accepted (including refused ones).
    pub accepted: AtomicU64,
    /// Connections refused because of the connection limit.
    pub refused: AtomicU64,
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Handshakes failed.
    pub handshake_failures: AtomicU64,
    /// Errors from accept(2).
    pub accept_errors: AtomicU64,
    /// Handshake failures by [`FailureCause::label`].
    failures_by_cause: Mutex<BTreeMap<&'static str, u64>>,
}

impl ServerStats {
    /// How many handshakes failed with this cause label (`no_client_certificate`, ...).
    pub fn failures(&self, label: &str) -> u64 {
        self.failures_by_cause
            .lock()
            .map(|m| m.get(label).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// All failure counts by cause label.
    pub fn failures_by_cause(&self) -> BTreeMap<&'static str, u64> {
        self.failures_by_cause
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    fn record_failure(&self, cause: &FailureCause) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.failures_by_cause.lock() {
            *m.entry(cause.label()).or_insert(0) += 1;
        }
    }
}

/// A TLS server running one [`Service`].
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    tls: TlsHandle,
    service: Arc<dyn Service>,
    options: ServerOptions,
    stats: Arc<ServerStats>,
    slots: Arc<Semaphore>,
    /// Cancelled when the shutdown grace period is over.
    force_close: CancellationToken,
}

impl Server {
    /// A server with default [`ServerOptions`].
    pub fn new(tls: Arc<ServerConfig>, service: impl Service) -> Self {
        Self::with_options(tls, Arc::new(service), ServerOptions::default())
    }

    /// A server with the given options.
    pub fn with_options(
        tls: Arc<ServerConfig>,
        service: Arc<dyn Service>,
        options: ServerOptions,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
        Server {
            shared: Arc::new(Shared {
                tls: TlsHandle::new(tls),
                service,
                options,
                stats: Arc::default(),
                slots,
                force_close: CancellationToken::new(),
            }),
        }
    }

    /// The handle through which the TLS configuration can be replaced while the server runs
    /// (see [`crate::reload`]).
    pub fn tls_handle(&self) -> TlsHandle {
        self.shared.tls.clone()
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// Serves on already bound listeners until `shutdown` completes, then stops accepting,
    /// gives open connections `shutdown_timeout` to finish, closes the rest with close_notify
    /// and returns.
    pub async fn run(
        self,
        listeners: Vec<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        if listeners.is_empty() {
            return Err(Error::InvalidInput("no address to listen on".into()));
        }
        let connections = TaskTracker::new();
        let stop_accepting = CancellationToken::new();
        let mut accept_loops = Vec::new();
        for listener in listeners {
            accept_loops.push(tokio::spawn(accept_loop(
                listener,
                self.shared.clone(),
                connections.clone(),
                stop_accepting.clone(),
            )));
        }
        shutdown.await;
        stop_accepting.cancel();
        for task in accept_loops {
            let _ = task.await;
        }
        connections.close();
        let open = connections.len();
        let grace = self.shared.options.shutdown_timeout;
        if open > 0 {
            info!(open, grace = %crate::duration::format(grace), "stopped accepting; waiting for open connections");
        }
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            warn!(
                open = connections.len(),
                "shutdown grace period over; closing the remaining connections"
            );
            self.shared.force_close.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
        }
        info!("server stopped");
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: TaskTracker,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(10);
                shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                telemetry::accepted();
                let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
                    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    telemetry::refused();
                    warn!(%peer, limit = shared.options.max_connections, "connection refused: connection limit reached");
                    continue; // dropping `tcp` closes it
                };
                let _ = tcp.set_nodelay(true);
                let span = info_span!("conn", %peer);
                connections.spawn(handle(tcp, peer, shared.clone(), slot).instrument(span));
            }
            Err(e) => {
                // accept(2) errors are about one connection or about the process (out of file
                // descriptors); neither may stop the loop. Back off so that a persistent error
                // does not spin, and retry.
                shared.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if is_resource_exhaustion(&e) {
                    warn!(error = %e, retry_in = ?backoff, "accept failed: out of resources (file descriptors?); retrying");
                } else {
                    debug!(error = %e, "accept failed");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    // Linux errno values: ENOMEM 12, ENFILE 23, EMFILE 24, ENOBUFS 105.
    matches!(e.raw_os_error(), Some(12 | 23 | 24 | 105))
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    // The handshake's result and the stream live in this block only, so that they take no
    // room in this task while the service runs (the service future holds its own stream).
    let ctx;
    let serving = {
        let deadline = shared.options.handshake_timeout;
        let acceptor = TlsAcceptor::from(shared.tls.current());
        // Boxed: an unfinished handshake holds a whole rustls connection (about 1.2 KB) and its
        // futures; inline, that space would stay in this task for the connection's lifetime.
        let handshake = tokio::time::timeout(deadline, Box::pin(handshake(tcp, &acceptor))).await;
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(cause)) => return failed(&shared, cause, started),
            Err(_) => return failed(&shared, FailureCause::Timeout(deadline), started),
        };
        shared.stats.handshakes.fetch_add(1, Ordering::Relaxed);
        telemetry::handshake_ok(started.elapsed());
        let (_, conn) = stream.get_ref();
        let report = Arc::new(HandshakeReport::from_state(
            conn,
            conn.server_name(),
            started.elapsed(),
        ));
        log_handshake(&report);

        ctx = ConnectionContext {
            peer,
            handshake: report,
            idle_timeout: shared.options.idle_timeout,
            shutdown: shared.force_close.clone(),
        };
        shared.service.serve(stream, &ctx)
    };
    telemetry::opened();
    let outcome = serving.await;
    telemetry::closed(outcome.bytes_in, outcome.bytes_out);
    info!(
        service = shared.service.name(),
        bytes_in = outcome.bytes_in,
        bytes_out = outcome.bytes_out,
        duration_ms = started.elapsed().as_millis() as u64,
        end = %outcome.end,
        "connection closed"
    );
}

async fn handshake(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
) -> std::result::Result<ServerStream, FailureCause> {
    sniff(&tcp).await?;
    acceptor
        .accept(tcp)
        .await
        .map_err(|e| FailureCause::classify(&e, Side::Server))
}

/// Looks at the first bytes without consuming them, to name the common mistakes (plaintext
/// HTTP, a non-TLS protocol) instead of reporting a generic decode error.
async fn sniff(tcp: &TcpStream) -> std::result::Result<(), FailureCause> {
    let mut first = [0u8; 8];
    let n = tcp
        .peek(&mut first)
        .await
        .map_err(|e| FailureCause::classify(&e, Side::Server))?;
    match classify_first_bytes(&first[..n]) {
        None => Ok(()),
        Some(FailureCause::PlaintextHttp) => {
            // Tell a browser or curl what went wrong; best effort, never blocks.
            let _ = tcp.try_write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nThis port speaks TLS: use https://\r\n",
            );
            Err(FailureCause::PlaintextHttp)
        }
        Some(cause) => Err(cause),
    }
}

/// What the first bytes of a connection say, before any TLS parsing: `None` when they may
/// start a TLS handshake, else the cause to report.
pub fn classify_first_bytes(first: &[u8]) -> Option<FailureCause> {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    match first.first() {
        None => Some(FailureCause::ClosedDuringHandshake),
        Some(&TLS_HANDSHAKE_RECORD) => None,
        Some(_) if looks_like_http(first) => Some(FailureCause::PlaintextHttp),
        Some(&first_byte) => Some(FailureCause::NotTls { first_byte }),
    }
}

fn looks_like_http(start: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"PRI ",
    ];
    METHODS
        .iter()
        .any(|m| m.starts_with(start) || start.starts_with(m))
}

fn failed(shared: &Shared, cause: FailureCause, started: Instant) {
    shared.stats.record_failure(&cause);
    telemetry::handshake_failed(cause.label());
    warn!(
        cause = %cause,
        reason = cause.label(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "handshake failed"
    );
}

fn log_handshake(report: &HandshakeReport) {
    let leaf = report.peer_leaf();
    info!(
        sni = report.sni.as_deref().unwrap_or("-"),
        version = %report.protocol,
        suite = %report.cipher_suite,
        group = %report.key_exchange,
        post_quantum = report.post_quantum,
        alpn = report.alpn.as_deref().unwrap_or("-"),
        resumed = report.resumed,
        client_cn = leaf.and_then(|l| l.common_name.as_deref()).unwrap_or("-"),
        client_sans = %leaf
            .filter(|l| !l.subject_alt_names.is_empty())
            .map(|l| l.subject_alt_names.join(","))
            .unwrap_or_else(|| "-".into()),
        client_sha256 = leaf.map(|l| l.sha256.as_str()).unwrap_or("-"),
        handshake_ms = format_args!("{:.2}", report.handshake_ms),
        "handshake ok"
    );
}

/// Binds every address `spec` resolves to (`localhost:8443` gives 127.0.0.1 and ::1).
/// IPv6 sockets are IPv6-only, so `0.0.0.0:PORT` and `[::]:PORT` can both be given.
pub async fn bind(spec: &str) -> Result<Vec<TcpListener>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(spec)
        .await
        .map_err(|e| Error::Network {
            action: "resolve",
            peer: spec.to_owned(),
            error: e,
        })?
        .collect();
    let mut listeners = Vec::new();
    let mut last_error = None;
    for addr in dedup(addrs) {
        match bind_one(addr) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                warn!(%addr, error = %e, "cannot listen on this address");
                last_error = Some(Error::Network {
                    action: "listen on",
                    peer: addr.to_string(),
                    error: e,
                });
            }
        }
    }
    match (listeners.is_empty(), last_error) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(Error::InvalidInput(format!(
            "'{spec}' resolves to no address"
        ))),
        (false, _) => Ok(listeners),
    }
}

fn dedup(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut seen = Vec::new();
    addrs.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    addrs
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection task must not keep room for the handshake or the stream (the service
    /// future has the stream): that would cost every idle connection over a kilobyte.
    #[test]
    fn connection_task_is_small() {
        fn size<A, B, C, D, F>(_: &impl Fn(A, B, C, D) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let task = size(&|t, p, s, slot| handle(t, p, s, slot));
        assert!(
            task < std::mem::size_of::<ServerStream>(),
            "connection future: {task} bytes"
        );
    }

    #[test]
    fn recognises_http() {
        assert!(looks_like_http(b"GET / HT"));
        assert!(looks_like_http(b"POST /x"));
        assert!(looks_like_http(b"G"));
        assert!(!looks_like_http(b"\x16\x03\x01"));
        assert!(!looks_like_http(b"SSH-2.0-"));
    }
}
