//! The accept loop, reusable by every kind of listener (the TLS server, a tunnel's plain
//! client side): a connection limit checked at accept, backoff on accept(2) errors (out of
//! file descriptors must not spin or stop the loop), and every connection task tracked so
//! that a shutdown can wait for them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use super::stats::ServerStats;
use crate::error::{Error, Result};
use crate::service::Shutdown;

/// What every accept loop of one server shares: the connection limit, the counters and the
/// set of running connection tasks.
#[derive(Clone, Debug)]
pub struct Gate {
    slots: Arc<Semaphore>,
    limit: usize,
    stats: Arc<ServerStats>,
    tasks: TaskTracker,
}

impl Gate {
    /// At most `limit` connections at once (at least 1).
    pub fn new(limit: usize, stats: Arc<ServerStats>) -> Self {
        let limit = limit.max(1);
        Gate {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            stats,
            tasks: TaskTracker::new(),
        }
    }

    /// The running connection tasks.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }
}

/// Accepts on `listener` until `stop` is cancelled. Each accepted connection within the limit
/// runs `handle(tcp, peer, permit)` as a tracked task inside a `conn{peer=…}` span; the permit
/// is the connection's slot, freed when the task drops it. Connections beyond the limit are
/// closed at once and logged.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    gate: Gate,
    stop: CancellationToken,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(10);
                ServerStats::count(&gate.stats.accepted);
                let Ok(slot) = gate.slots.clone().try_acquire_owned() else {
                    ServerStats::count(&gate.stats.refused);
                    warn!(%peer, limit = gate.limit, "connection refused: connection limit reached");
                    continue; // dropping `tcp` closes it
                };
                let _ = tcp.set_nodelay(true);
                let span = info_span!("conn", %peer);
                gate.tasks.spawn(handle(tcp, peer, slot).instrument(span));
            }
            Err(e) => {
                // accept(2) errors are about one connection or about the process (out of file
                // descriptors); neither may stop the loop. Back off so that a persistent error
                // does not spin, and retry.
                ServerStats::count(&gate.stats.accept_errors);
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

/// Runs an [`accept_loop`] on every listener until `shutdown` completes; then stops accepting,
/// tells the connections to drain (`signal`), returns as soon as the last has ended, or after
/// `grace`, when the rest are forced to close (and given two more seconds to do so).
pub async fn serve_listeners<H, F>(
    listeners: Vec<TcpListener>,
    gate: Gate,
    handle: H,
    shutdown: impl Future<Output = ()>,
    signal: &Shutdown,
    grace: Duration,
) -> Result<()>
where
    H: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    if listeners.is_empty() {
        return Err(Error::InvalidInput("no address to listen on".into()));
    }
    let stop_accepting = CancellationToken::new();
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            // In the caller's span (a tunnel's `tunnel=NAME`), as its connections are.
            tokio::spawn(
                accept_loop(
                    listener,
                    gate.clone(),
                    stop_accepting.clone(),
                    handle.clone(),
                )
                .in_current_span(),
            )
        })
        .collect();
    shutdown.await;
    stop_accepting.cancel();
    for task in loops {
        let _ = task.await;
    }
    let connections = gate.tasks();
    connections.close();
    signal.start_draining();
    let open = connections.len();
    if open > 0 {
        info!(open, grace = %crate::duration::format(grace), "stopped accepting; draining open connections");
    }
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "shutdown grace period over; closing the remaining connections"
        );
        signal.force();
        let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
    }
    Ok(())
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    // Linux errno values: ENOMEM 12, ENFILE 23, EMFILE 24, ENOBUFS 105.
    matches!(e.raw_os_error(), Some(12 | 23 | 24 | 105))
}
