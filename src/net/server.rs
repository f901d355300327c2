//! The TLS server: for every accepted connection, the pipeline
//!
//! 1. sniff the first bytes (plaintext HTTP and other protocols are named, not guessed);
//! 2. the handshake under a deadline, with the access policy inside the client verifier;
//! 3. the report and the peer's identity, one log line;
//! 4. the service the client chose by ALPN (see [`Router`]);
//! 5. the service runs on a metered stream: the server counts the bytes and enforces the
//!    idle deadline, and passes on the two-phase shutdown signal;
//! 6. one log line when it ends, with how.
//!
//! ```no_run
//! # async fn demo(tls: std::sync::Arc<rustls::ServerConfig>) -> tlsnet::Result<()> {
//! use tlsnet::net::{bind, Server};
//! let listeners = bind("127.0.0.1:8443").await?;
//! Server::new(tls, tlsnet::service::Echo)
//!     .run(listeners, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::accept::{serve_listeners, Gate};
use super::kernel_tls::{self, Fallback, Offload};
use super::metered::{Meter, Metered};
use super::read_ahead::ReadAhead;
use super::sniff::{classify_first_bytes, client_hello_version, SNIFF_LEN};
use super::stats::ServerStats;
use crate::error::Result;
use crate::service::{BoxStream, Context, End, Router, Service, Shutdown};
use crate::tls::{FailureCause, HandshakeReport, Side, TlsHandle};

/// The server end of an established TLS connection, before it is handed to a service. The
/// socket is read in large pieces ([`ReadAhead`]), not one TLS record per `recv`.
pub type ServerStream = tokio_rustls::server::TlsStream<ReadAhead<TcpStream>>;

/// Limits and deadlines.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; more are refused at accept.
    pub max_connections: usize,
    /// A client must finish the handshake within this time.
    pub handshake_timeout: Duration,
    /// Close a connection after this long without a byte in either direction (`None`: never).
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

/// A TLS server running the services of a [`Router`].
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    tls: TlsHandle,
    router: Router,
    options: ServerOptions,
    stats: Arc<ServerStats>,
    shutdown: Shutdown,
}

impl Server {
    /// A server with default [`ServerOptions`].
    pub fn new(tls: Arc<ServerConfig>, router: impl Into<Router>) -> Self {
        Self::with_options(TlsHandle::new(tls), router, ServerOptions::default())
    }

    /// A server whose configuration comes from `tls` (which a reloader may replace). The
    /// ALPN ids of the router's services are offered from now on.
    pub fn with_options(
        tls: impl Into<TlsHandle>,
        router: impl Into<Router>,
        options: ServerOptions,
    ) -> Self {
        let tls = tls.into();
        let router = router.into();
        tls.offer_alpn(router.protocols());
        Server {
            shared: Arc::new(Shared {
                tls,
                router,
                options,
                stats: Arc::default(),
                shutdown: Shutdown::new(),
            }),
        }
    }

    /// The handle through which the TLS configuration can be replaced while the server runs.
    pub fn tls_handle(&self) -> TlsHandle {
        self.shared.tls.clone()
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// Serves on already bound listeners until `shutdown` completes. Then it stops accepting
    /// and tells every connection to drain; it returns as soon as the last one has ended, or
    /// after `shutdown_timeout`, when the rest are forced to close (with close_notify).
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
        info!("server stopped");
        Ok(())
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let local = tcp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    // The handshake's state lives in this block only, so that it takes no room in this task
    // while the service runs (the service future holds the stream).
    let (service, ctx, meter, serving) = {
        let deadline = shared.options.handshake_timeout;
        let config = shared.tls.current();
        // A configuration that lets the keys out is one for kernel TLS (`--ktls`).
        let kernel = config.enable_secret_extraction;
        let acceptor = TlsAcceptor::from(config);
        // Boxed: an unfinished handshake holds a whole rustls connection (about 1.2 KB) and its
        // futures; inline, that space would stay in this task for the connection's lifetime.
        let handshake = handshake(tcp, &acceptor, kernel);
        let handshake = tokio::time::timeout(deadline, Box::pin(handshake)).await;
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(cause)) => return failed(&shared, cause, started),
            Err(_) => return failed(&shared, FailureCause::Timeout(deadline), started),
        };
        ServerStats::count(&shared.stats.handshakes);
        crate::telemetry::handshake_time(started.elapsed());
        let (_, conn) = stream.get_ref();
        let report = Arc::new(HandshakeReport::from_state(
            conn,
            conn.server_name(),
            started.elapsed(),
        ));
        log_handshake(&report);
        let Some(service) = shared.router.pick(conn.alpn_protocol()).cloned() else {
            // Only when there is no default service and the client chose none.
            warn!("no service for a client without ALPN; closing");
            // A task of its own: an await here would keep room for the stream in this task.
            tokio::spawn(close(stream));
            return;
        };
        let meter = Meter::new(shared.stats.clone());
        let stream: BoxStream = if kernel {
            match kernel_tls::offload(stream) {
                Offload::Kernel(stream) => {
                    kernel_tls_used(&shared.stats, None);
                    Box::new(Metered::new(stream, meter.clone()))
                }
                Offload::Rustls(stream, why) => {
                    kernel_tls_used(&shared.stats, Some(&why));
                    Box::new(Metered::new(*stream, meter.clone()))
                }
                Offload::Lost(e) => {
                    warn!(error = %crate::error::chain(&e), "kernel TLS failed after the handshake; the connection is closed");
                    return;
                }
            }
        } else {
            Box::new(Metered::new(stream, meter.clone()))
        };
        let ctx = Context::new(peer, local, report, shared.shutdown.for_connection());
        (service, ctx, meter, stream)
    };
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    let end = serve(
        &*service,
        serving,
        &ctx,
        &meter,
        shared.options.idle_timeout,
    )
    .await;
    shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    info!(
        service = service.name(),
        bytes_in = meter.bytes_in(),
        bytes_out = meter.bytes_out(),
        duration_ms = started.elapsed().as_millis() as u64,
        end = %end,
        "connection closed"
    );
}

/// Runs the service; when nothing has moved for `idle`, forces this connection to close
/// (the service sends close_notify), and drops it if it does not end within a second.
async fn serve(
    service: &dyn Service,
    stream: BoxStream,
    ctx: &Context,
    meter: &Meter,
    idle: Option<Duration>,
) -> End {
    let mut serving = service.serve(stream, ctx);
    let Some(limit) = idle else {
        return serving.await;
    };
    let timer = tokio::time::sleep(limit);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            end = &mut serving => return end,
            _ = &mut timer => {
                let deadline = meter.last_active() + limit;
                if deadline > tokio::time::Instant::now() {
                    timer.as_mut().reset(deadline);
                    continue;
                }
                ctx.shutdown.force();
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut serving).await;
                return End::IdleTimeout;
            }
        }
    }
}

/// Sends close_notify, bounded: a peer that does not read could block it forever.
async fn close(mut stream: ServerStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncWriteExt::shutdown(&mut stream),
    )
    .await;
}

/// Counts the path a `--ktls` connection took, and says so in the log: the first time for
/// each outcome at info level (one line per process, not per connection), then at debug.
fn kernel_tls_used(stats: &ServerStats, fallback: Option<&Fallback>) {
    use std::sync::atomic::AtomicBool;
    static SAID_KERNEL: AtomicBool = AtomicBool::new(false);
    static SAID_RUSTLS: AtomicBool = AtomicBool::new(false);
    match fallback {
        None => {
            ServerStats::count(&stats.kernel_tls);
            if !SAID_KERNEL.swap(true, Ordering::Relaxed) {
                info!("kernel TLS: the kernel carries the records of this connection (later ones: debug log)");
            } else {
                debug!("kernel TLS: the kernel carries the records of this connection");
            }
        }
        Some(why) => {
            ServerStats::count(&stats.kernel_tls_fallbacks);
            if !SAID_RUSTLS.swap(true, Ordering::Relaxed) {
                info!(
                    reason = why.label(),
                    "kernel TLS: this connection stays on rustls: {why} (later ones: debug log)"
                );
            } else {
                debug!(
                    reason = why.label(),
                    "kernel TLS: this connection stays on rustls: {why}"
                );
            }
        }
    }
}

/// The handshake. For kernel TLS, reads stop at record boundaries until it ends (see
/// [`ReadAhead::whole_records`]).
async fn handshake(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    kernel: bool,
) -> std::result::Result<ServerStream, FailureCause> {
    let hello_version = sniff(&tcp).await?;
    let reader = if kernel {
        ReadAhead::whole_records(tcp)
    } else {
        ReadAhead::new(tcp)
    };
    acceptor.accept(reader).await.map_err(|e| {
        let cause = FailureCause::classify(&e, Side::Server);
        match (cause, hello_version) {
            // rustls checks other extensions before the version; a hello that says TLS 1.1 or
            // older is a version problem whatever else it lacks.
            (FailureCause::NothingInCommon(_) | FailureCause::ProtocolVersion { .. }, Some(v))
                if v < 0x0303 =>
            {
                FailureCause::ProtocolVersion {
                    side: Side::Server,
                    client_max: Some(v),
                }
            }
            (cause, _) => cause,
        }
    })
}

/// Looks at the first bytes without consuming them, to name the common mistakes (plaintext
/// HTTP, a non-TLS protocol) instead of reporting a generic decode error. Returns the
/// ClientHello's version when the bytes show it.
async fn sniff(tcp: &TcpStream) -> std::result::Result<Option<u16>, FailureCause> {
    let mut first = [0u8; SNIFF_LEN];
    let n = tcp
        .peek(&mut first)
        .await
        .map_err(|e| FailureCause::classify(&e, Side::Server))?;
    match classify_first_bytes(&first[..n]) {
        None => Ok(client_hello_version(&first[..n])),
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

fn failed(shared: &Shared, cause: FailureCause, started: Instant) {
    shared.stats.record_failure(&cause);
    warn!(
        cause = %cause,
        reason = cause.label(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "handshake failed"
    );
}

fn log_handshake(report: &HandshakeReport) {
    let peer = report.peer.as_ref();
    info!(
        sni = report.sni.as_deref().unwrap_or("-"),
        version = %report.protocol,
        suite = %report.cipher_suite,
        group = %report.key_exchange,
        post_quantum = report.post_quantum,
        alpn = report.alpn.as_deref().unwrap_or("-"),
        resumed = report.resumed,
        client_cn = peer.and_then(|p| p.common_name.as_deref()).unwrap_or("-"),
        client_sans = %peer
            .map(|p| p.alt_names())
            .filter(|names| !names.is_empty())
            .map(|names| names.join(","))
            .unwrap_or_else(|| "-".into()),
        client_sha256 = %peer.map(|p| p.sha256_hex()).unwrap_or_else(|| "-".into()),
        handshake_ms = format_args!("{:.2}", report.handshake_ms),
        "handshake ok"
    );
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
        let task = size(&|t, p, s, slot| connection(t, p, s, slot));
        assert!(
            task < std::mem::size_of::<ServerStream>(),
            "connection future: {task} bytes"
        );
    }
}
