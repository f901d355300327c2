//! Metrics in Prometheus text format and a health endpoint.
//!
//! The server records through the `metrics` facade (free when no recorder is installed);
//! [`install`] installs the Prometheus recorder and [`serve_http`] answers `GET /metrics` and
//! `GET /health` on a listener of its own. Beyond the usual connection and byte counters, it
//! exports the days left before the server certificate, the client CA and the CRL's next
//! update expire: the outage that no peer tool warns about.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::error::{Error, Result};
use crate::net::ServerStats;
use crate::x509::CertSummary;

/// Metric names, in one place.
pub mod names {
    /// Counter: TCP connections accepted.
    pub const ACCEPTED: &str = "tlsnet_connections_accepted_total";
    /// Counter: connections refused at the connection limit.
    pub const REFUSED: &str = "tlsnet_connections_refused_total";
    /// Counter: errors from accept(2) (out of file descriptors, ...).
    pub const ACCEPT_ERRORS: &str = "tlsnet_accept_errors_total";
    /// Gauge: connections open now.
    pub const OPEN: &str = "tlsnet_connections_open";
    /// Counter: handshakes completed.
    pub const HANDSHAKES: &str = "tlsnet_handshakes_total";
    /// Counter: handshake failures, label `cause` (`access_denied` for access-policy
    /// refusals, `unknown_issuer`, `no_client_certificate`, ...).
    pub const FAILURES: &str = "tlsnet_handshake_failures_total";
    /// Histogram: handshake duration in seconds.
    pub const HANDSHAKE_SECONDS: &str = "tlsnet_handshake_seconds";
    /// Counter: application bytes received.
    pub const BYTES_IN: &str = "tlsnet_bytes_received_total";
    /// Counter: application bytes sent.
    pub const BYTES_OUT: &str = "tlsnet_bytes_sent_total";
    /// Gauge: days until expiry, label `what` (`server_certificate`, `client_ca`,
    /// `crl_next_update`).
    pub const EXPIRY_DAYS: &str = "tlsnet_expiry_days";
    /// Counter: `--ktls` connections by `path`: `kernel` (the kernel carries the records) or
    /// `rustls` (the fallback).
    pub const KERNEL_TLS: &str = "tlsnet_kernel_tls_connections_total";
    /// Counter: reloads, label `result` (`ok`, `refused`).
    pub const RELOADS: &str = "tlsnet_reloads_total";
}

pub(crate) fn handshake_time(elapsed: Duration) {
    histogram!(names::HANDSHAKE_SECONDS).record(elapsed.as_secs_f64());
}
pub(crate) fn reload(ok: bool) {
    counter!(names::RELOADS, "result" => if ok { "ok" } else { "refused" }).increment(1);
}

/// The servers whose counters the metrics endpoint shows, with their names (`""` for the
/// one server of `tlsnet serve`; a tunnel's name otherwise, as the label `server`).
static SOURCES: Mutex<Vec<(String, Arc<ServerStats>)>> = Mutex::new(Vec::new());

/// Shows `stats` on the metrics endpoint, labelled `server="NAME"` unless `name` is empty.
pub fn register(name: &str, stats: Arc<ServerStats>) {
    let mut sources = SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    sources.retain(|(n, _)| n != name);
    sources.push((name.to_owned(), stats));
}

/// Stops showing the counters registered as `name` (a tunnel that was removed).
pub fn unregister(name: &str) {
    let mut sources = SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    sources.retain(|(n, _)| n != name);
}

/// Copies every registered server's counters into the exporter (at each scrape: the counters
/// are kept in one place, [`ServerStats`]).
fn export_stats() {
    let sources = SOURCES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (name, stats) in sources {
        let labels: Vec<(&'static str, String)> = if name.is_empty() {
            Vec::new()
        } else {
            vec![("server", name.clone())]
        };
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        for (metric, value) in [
            (names::ACCEPTED, get(&stats.accepted)),
            (names::REFUSED, get(&stats.refused)),
            (names::ACCEPT_ERRORS, get(&stats.accept_errors)),
            (names::HANDSHAKES, get(&stats.handshakes)),
            (names::BYTES_IN, get(&stats.bytes_in)),
            (names::BYTES_OUT, get(&stats.bytes_out)),
        ] {
            counter!(metric, &labels).absolute(value);
        }
        gauge!(names::OPEN, &labels).set(stats.open.load(Ordering::Relaxed) as f64);
        for (path, value) in [
            ("kernel", get(&stats.kernel_tls)),
            ("rustls", get(&stats.kernel_tls_fallbacks)),
        ] {
            if value > 0 {
                let mut labels = labels.clone();
                labels.push(("path", path.to_owned()));
                counter!(names::KERNEL_TLS, &labels).absolute(value);
            }
        }
        for (cause, n) in stats.failures_by_cause() {
            let mut labels = labels.clone();
            labels.push(("cause", cause.to_owned()));
            counter!(names::FAILURES, &labels).absolute(n);
        }
    }
}

/// Records days until expiry of the server certificates (the soonest of the leaves given),
/// the client CA (the soonest of its certificates) and the CRL's next update (the soonest).
pub fn record_expiry(
    server_leaves: &[CertificateDer<'_>],
    client_ca: &[CertificateDer<'_>],
    crls: &[CertificateRevocationListDer<'_>],
) {
    let days =
        |der: &CertificateDer<'_>| CertSummary::from_der(der).ok().map(|s| s.days_left as f64);
    if let Some(d) = server_leaves.iter().filter_map(days).reduce(f64::min) {
        gauge!(names::EXPIRY_DAYS, "what" => "server_certificate").set(d);
    }
    if let Some(d) = client_ca.iter().filter_map(days).reduce(f64::min) {
        gauge!(names::EXPIRY_DAYS, "what" => "client_ca").set(d);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let crl_days = crls
        .iter()
        .filter_map(|crl| {
            let (_, parsed) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(crl).ok()?;
            let next = parsed.next_update()?.timestamp();
            Some((next - now) as f64 / 86400.0)
        })
        .reduce(f64::min);
    if let Some(d) = crl_days {
        gauge!(names::EXPIRY_DAYS, "what" => "crl_next_update").set(d.floor());
    }
}

use x509_parser::prelude::FromDer;

/// Installs the Prometheus recorder for this process.
pub fn install() -> Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(names::HANDSHAKE_SECONDS.into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ],
        )
        .map_err(|e| Error::unusable("metrics: histogram buckets", e))?
        .install_recorder()
        .map_err(|e| Error::unusable("metrics: cannot install the recorder", e))
}

/// How many metrics requests are answered at once; more connections wait in the backlog.
const MAX_METRICS_CONNECTIONS: usize = 16;

/// Answers `GET /metrics` (Prometheus text) and `GET /health` (`ok`) until `stop`.
/// Requests are tiny and bounded: 8 KiB and 5 s each, 16 at a time.
pub async fn serve_http(listener: TcpListener, handle: PrometheusHandle, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (mut tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let answer = tokio::time::timeout(Duration::from_secs(5), async {
                let mut buf = vec![0u8; 8192];
                let mut len = 0;
                while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
                    let n = tcp.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                }
                let request = String::from_utf8_lossy(&buf[..len]);
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match (request.split_whitespace().next(), path) {
                    (Some("GET"), "/metrics") => ("200 OK", {
                        export_stats();
                        handle.render()
                    }),
                    (Some("GET"), "/health") => ("200 OK", "ok\n".to_owned()),
                    (Some("GET"), _) => ("404 Not Found", "try /metrics or /health\n".to_owned()),
                    _ => ("405 Method Not Allowed", "GET only\n".to_owned()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                tcp.write_all(head.as_bytes()).await?;
                tcp.write_all(body.as_bytes()).await?;
                tcp.shutdown().await
            })
            .await;
            if let Ok(Err(e)) = answer {
                debug!(%peer, error = %e, "metrics request failed");
            }
        });
    }
}
