//! Hot reload of the server's TLS material: certificate, key, client CA and CRL.
//!
//! [`TlsHandle`] holds the configuration that new connections use; open connections keep the
//! one they started with. [`Reloader`] rebuilds it when a watched file changes (checked by
//! content, so an atomic rename or an in-place edit both count) or when asked (SIGHUP). A new
//! configuration that fails to build — a half-written file, a key that does not match — is
//! refused with a log line, and the old one stays in use.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Result;

/// The server configuration in force; cheap to clone and to read.
#[derive(Clone, Debug)]
pub struct TlsHandle(Arc<RwLock<Arc<ServerConfig>>>);

impl TlsHandle {
    /// A handle holding `config`.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsHandle(Arc::new(RwLock::new(config)))
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the configuration for new connections.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        match self.0.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

/// Rebuilds a [`TlsHandle`]'s configuration when files change or on request.
pub struct Reloader<F> {
    files: Vec<PathBuf>,
    build: F,
    handle: TlsHandle,
    interval: Duration,
    trigger: Arc<Notify>,
}

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new material is in use.
    Reloaded,
    /// The new material was refused; the message says why. The old material stays in use.
    Refused(String),
}

impl<F> Reloader<F>
where
    F: Fn() -> Result<Arc<ServerConfig>> + Send + Sync + 'static,
{
    /// Watches `files`; `build` makes a configuration from them.
    pub fn new(files: Vec<PathBuf>, build: F, handle: TlsHandle) -> Self {
        Reloader {
            files,
            build,
            handle,
            interval: Duration::from_secs(1),
            trigger: Arc::new(Notify::new()),
        }
    }

    /// How often files are checked (default 1 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// A handle that requests a reload (what SIGHUP does).
    pub fn trigger(&self) -> Arc<Notify> {
        self.trigger.clone()
    }

    /// Rebuilds now.
    pub fn reload(&self) -> ReloadOutcome {
        match (self.build)() {
            Ok(config) => {
                self.handle.replace(config);
                crate::telemetry::reload(true);
                info!(files = ?self.files, "reloaded TLS material; new connections use it");
                ReloadOutcome::Reloaded
            }
            Err(e) => {
                warn!(error = %e, "reload refused; the current TLS material stays in use");
                crate::telemetry::reload(false);
                ReloadOutcome::Refused(e.to_string())
            }
        }
    }

    fn snapshot(&self) -> Vec<Option<Vec<u8>>> {
        self.files.iter().map(|f| std::fs::read(f).ok()).collect()
    }

    /// Runs until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut last = self.snapshot();
        loop {
            let requested = tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.trigger.notified() => true,
                _ = tokio::time::sleep(self.interval) => false,
            };
            let now = self.snapshot();
            if requested || now != last {
                // A file may still be being written; a refused reload is retried on the next
                // change.
                self.reload();
                last = now;
            }
        }
    }
}
