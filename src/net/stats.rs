//! A server's counters: the one place they are kept. Tests read them directly; the metrics
//! endpoint ([`crate::telemetry`]) renders them at each scrape.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::tls::FailureCause;

/// Counters of one server (one listener set), readable while it runs.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// TCP connections accepted (including refused ones).
    pub accepted: AtomicU64,
    /// Connections refused because of the connection limit.
    pub refused: AtomicU64,
    /// Errors from accept(2).
    pub accept_errors: AtomicU64,
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Handshakes failed (any cause, access-policy refusals included).
    pub handshake_failures: AtomicU64,
    /// Connections served now (handshake done, service running).
    pub open: AtomicI64,
    /// `--ktls` connections whose records the kernel carries.
    pub kernel_tls: AtomicU64,
    /// `--ktls` connections that stayed on rustls (see [`super::kernel_tls::Fallback`]).
    pub kernel_tls_fallbacks: AtomicU64,
    /// Application bytes received, over all connections.
    pub bytes_in: AtomicU64,
    /// Application bytes sent, over all connections.
    pub bytes_out: AtomicU64,
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

    pub(crate) fn record_failure(&self, cause: &FailureCause) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.failures_by_cause.lock() {
            *m.entry(cause.label()).or_insert(0) += 1;
        }
    }

    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
