//! The server's TLS material from files, reloadable: certificates and keys, client CA, CRL.
//!
//! [`ServerTlsSource`] names the files and the settings; [`ServerTlsSource::build`] reads them
//! into a rustls configuration. [`TlsHandle`] holds the configuration that new connections
//! use; open connections keep the one they started with. [`Reloader`] rebuilds it when a
//! watched file changes (checked by content, so an atomic rename or an in-place edit both
//! count) or when asked (SIGHUP). A new configuration that fails to build (a half-written
//! file, a key that does not match) is refused with a log line, and the old one stays in use.
//! Files are read on a blocking thread, never on the async runtime's workers.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::{KeyLog, ServerConfig};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::{ClientAuth, ServerTlsOptions};
use super::files::{load_certs, load_crls, Identity};
use super::policy::AccessPolicy;
use crate::error::{Error, Result};

/// Where a server's TLS material comes from: everything one listener needs, so that a
/// configuration with many servers (or tunnels) holds one of these per server.
#[derive(Debug, Clone)]
pub struct ServerTlsSource {
    /// Certificate chain and key files, in pairs; the first pair is the default (see
    /// [`super::sni`]).
    pub certs: Vec<(PathBuf, PathBuf)>,
    /// CA certificates that sign acceptable client certificates.
    pub client_ca: Option<PathBuf>,
    /// A CRL for client certificates.
    pub crl: Option<PathBuf>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
    /// Also accept TLS 1.2.
    pub tls12: bool,
    /// Which client certificates are admitted.
    pub policy: AccessPolicy,
    /// Where connection secrets are written (see [`super::keylog`]); every configuration
    /// built from this source, reloads included, writes to it.
    pub key_log: Option<Arc<dyn KeyLog>>,
    /// Try kernel TLS for each connection's data path (see [`ServerTlsOptions::kernel_tls`]).
    pub kernel_tls: bool,
}

impl ServerTlsSource {
    /// Checks the combination of settings (before any file is read).
    pub fn validate(&self) -> Result<()> {
        if self.certs.is_empty() {
            return Err(Error::InvalidInput(
                "a server needs a certificate and a key (--cert FILE --key FILE)".into(),
            ));
        }
        if self.client_auth != ClientAuth::None && self.client_ca.is_none() {
            return Err(Error::InvalidInput(
                "client authentication needs the CA that signs client certificates (--client-ca FILE)"
                    .into(),
            ));
        }
        if self.crl.is_some() && self.client_auth == ClientAuth::None {
            return Err(Error::InvalidInput(
                "--crl checks client certificates: it needs --client-ca".into(),
            ));
        }
        if !self.policy.is_empty() && self.client_auth != ClientAuth::Required {
            return Err(Error::InvalidInput(
                "--allow-* rules admit clients by their certificate: they need client certificates to be required (--client-ca, no --client-auth optional|none)".into(),
            ));
        }
        Ok(())
    }

    /// Every file the material is read from (what the reloader watches).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for (cert, key) in &self.certs {
            files.push(cert.clone());
            files.push(key.clone());
        }
        files.extend(self.client_ca.iter().cloned());
        files.extend(self.crl.iter().cloned());
        files
    }

    /// Reads the files into options (blocking).
    pub fn load(&self) -> Result<ServerTlsOptions> {
        self.validate()?;
        let identities = self
            .certs
            .iter()
            .map(|(cert, key)| Identity::from_files(cert, key))
            .collect::<Result<Vec<_>>>()?;
        let client_ca = match (&self.client_ca, self.client_auth) {
            (Some(path), mode) if mode != ClientAuth::None => load_certs(path)?,
            _ => Vec::new(),
        };
        let crls = match &self.crl {
            Some(path) => load_crls(path)?,
            None => Vec::new(),
        };
        Ok(ServerTlsOptions {
            identities,
            client_ca,
            client_auth: self.client_auth,
            allow_tls12: self.tls12,
            alpn: Vec::new(),
            crls,
            policy: self.policy.clone(),
            key_log: self.key_log.clone(),
            kernel_tls: self.kernel_tls,
        })
    }

    /// Reads the files and builds the configuration (blocking); records the expiry gauges.
    pub fn build(&self) -> Result<Arc<ServerConfig>> {
        let options = self.load()?;
        let config = options.build()?;
        let leaves: Vec<_> = options
            .identities
            .iter()
            .filter_map(|id| id.chain.first().cloned())
            .collect();
        crate::telemetry::record_expiry(&leaves, &options.client_ca, &options.crls);
        Ok(config)
    }
}

/// The server configuration in force; cheap to clone and to read.
///
/// The server sets the ALPN protocols of its services here ([`TlsHandle::offer_alpn`]); every
/// configuration put in later gets them too, so the TLS material and the services stay
/// separate concerns.
#[derive(Clone, Debug)]
pub struct TlsHandle(Arc<RwLock<Inner>>);

#[derive(Debug)]
struct Inner {
    config: Arc<ServerConfig>,
    alpn: Option<Vec<Vec<u8>>>,
}

impl TlsHandle {
    /// A handle holding `config`.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsHandle(Arc::new(RwLock::new(Inner { config, alpn: None })))
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.0.read() {
            Ok(guard) => guard.config.clone(),
            Err(poisoned) => poisoned.into_inner().config.clone(),
        }
    }

    /// Replaces the configuration for new connections.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        let mut guard = self.0.write().unwrap_or_else(|p| p.into_inner());
        guard.config = with_alpn(config, guard.alpn.as_deref());
    }

    /// Offers these ALPN protocols from now on (in the current and every later configuration).
    pub fn offer_alpn(&self, protocols: Vec<Vec<u8>>) {
        let mut guard = self.0.write().unwrap_or_else(|p| p.into_inner());
        guard.config = with_alpn(guard.config.clone(), Some(&protocols));
        guard.alpn = Some(protocols);
    }
}

fn with_alpn(config: Arc<ServerConfig>, alpn: Option<&[Vec<u8>]>) -> Arc<ServerConfig> {
    match alpn {
        Some(protocols) if config.alpn_protocols != protocols => {
            let mut changed = (*config).clone();
            changed.alpn_protocols = protocols.to_vec();
            Arc::new(changed)
        }
        _ => config,
    }
}

impl From<Arc<ServerConfig>> for TlsHandle {
    fn from(config: Arc<ServerConfig>) -> Self {
        TlsHandle::new(config)
    }
}

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new material is in use.
    Reloaded,
    /// The new material was refused; the message says why. The old material stays in use.
    Refused(String),
}

/// Rebuilds a [`TlsHandle`]'s configuration when files change or on request.
pub struct Reloader {
    source: Arc<ServerTlsSource>,
    handle: TlsHandle,
    interval: Option<Duration>,
    trigger: Arc<Notify>,
    name: String,
}

impl Reloader {
    /// Watches the files of `source`, putting what they build into `handle`.
    pub fn new(source: ServerTlsSource, handle: TlsHandle) -> Self {
        Reloader {
            source: Arc::new(source),
            handle,
            interval: Some(Duration::from_secs(1)),
            trigger: Arc::new(Notify::new()),
            name: String::new(),
        }
    }

    /// How often files are checked (default 1 s; `None`: only when triggered).
    pub fn interval(mut self, interval: Option<Duration>) -> Self {
        self.interval = interval;
        self
    }

    /// A name for the log lines (a tunnel's name).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A handle that requests a reload (what SIGHUP does).
    pub fn trigger(&self) -> Arc<Notify> {
        self.trigger.clone()
    }

    /// Rebuilds now.
    pub async fn reload(&self) -> ReloadOutcome {
        let source = self.source.clone();
        let built = tokio::task::spawn_blocking(move || source.build()).await;
        let built = match built {
            Ok(result) => result,
            Err(e) => Err(Error::unusable("the reload task", e)),
        };
        match built {
            Ok(config) => {
                self.handle.replace(config);
                crate::telemetry::reload(true);
                info!(name = %self.name, files = ?self.source.files(), "reloaded TLS material; new connections use it");
                ReloadOutcome::Reloaded
            }
            Err(e) => {
                let why = e.describe();
                warn!(name = %self.name, error = %why, "reload refused; the current TLS material stays in use");
                crate::telemetry::reload(false);
                ReloadOutcome::Refused(why)
            }
        }
    }

    /// Runs until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut watch =
            crate::watch::Watch::new(self.source.files(), self.interval, self.trigger.clone())
                .await;
        // A file may still be being written; a refused reload is retried on the next change.
        while watch.changed(&stop).await.is_some() {
            self.reload().await;
        }
    }
}
