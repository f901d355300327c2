//! Settings as the user gives them (flags or keys of a file), turned into the library's
//! values: a server's [`ServerTlsSource`], a client's [`ClientTlsOptions`], a server's
//! [`ServerOptions`]. The command line and the configuration files both go through here, so
//! a setting means the same in both and is refused with the same words (the setting named
//! as the context names it, see [`Naming`]).

use std::path::PathBuf;
use std::time::Duration;

use tracing::info;

use super::{Naming, SettingError};
use crate::error::{Error, Result};
use crate::net::ServerOptions;
use crate::pki::dev::{is_local_host, DevPki, DevPkiState};
use crate::tls::{
    load_certs, load_crls, AccessPolicy, ClientAuth, ClientTlsOptions, Identity, KeyLogTarget,
    Pattern, Rule, ServerTlsSource, ServerTrust, SpkiPin,
};

/// How often a server's certificate files are checked for changes unless told otherwise.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// A server's certificates, client authentication and `allow_*` rules (the flags of
/// `tlsnet serve` and `tlsnet tunnel server` of the same names).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerTlsSettings {
    /// Certificate chains; without any, the development PKI is used.
    pub cert: Vec<PathBuf>,
    /// The key of the `cert` at the same position.
    pub key: Vec<PathBuf>,
    /// The CA that signs client certificates.
    pub client_ca: Option<PathBuf>,
    /// Whether client certificates are required (default: with a client CA, required).
    pub client_auth: Option<ClientAuth>,
    /// A CRL for client certificates.
    pub crl: Option<PathBuf>,
    /// Admit these common names.
    pub allow_cn: Vec<String>,
    /// Admit these organizational units.
    pub allow_ou: Vec<String>,
    /// Admit DNS names matching these patterns.
    pub allow_dns: Vec<Pattern>,
    /// Admit URIs matching these patterns.
    pub allow_uri: Vec<Pattern>,
    /// Admit these public keys.
    pub allow_spki_pin: Vec<SpkiPin>,
    /// Also accept TLS 1.2.
    pub tls12: bool,
    /// Try kernel TLS for each connection's data path, rustls as the fallback.
    pub ktls: bool,
    /// The development PKI's directory (default: under `$XDG_STATE_HOME` or `~/.local/state`).
    pub pki_dir: Option<PathBuf>,
    /// Write connection secrets here (debugging only).
    pub keylog: Option<KeyLogTarget>,
}

impl ServerTlsSettings {
    /// The `allow_*` rules.
    pub fn policy(&self) -> AccessPolicy {
        let mut rules = Vec::new();
        rules.extend(self.allow_cn.iter().cloned().map(Rule::CommonName));
        rules.extend(self.allow_ou.iter().cloned().map(Rule::OrganizationalUnit));
        rules.extend(self.allow_dns.iter().cloned().map(Rule::Dns));
        rules.extend(self.allow_uri.iter().cloned().map(Rule::Uri));
        rules.extend(self.allow_spki_pin.iter().copied().map(Rule::SpkiPin));
        AccessPolicy::new(rules)
    }

    /// The first `allow_*` setting that is given, for messages.
    fn first_allow_key(&self) -> &'static str {
        [
            ("allow_cn", self.allow_cn.is_empty()),
            ("allow_ou", self.allow_ou.is_empty()),
            ("allow_dns", self.allow_dns.is_empty()),
            ("allow_uri", self.allow_uri.is_empty()),
            ("allow_spki_pin", self.allow_spki_pin.is_empty()),
        ]
        .into_iter()
        .find(|(_, empty)| !empty)
        .map_or("allow_cn", |(key, _)| key)
    }

    /// The client authentication in force: as given, else required with a client CA (the
    /// development PKI has one) and none without.
    pub fn resolved_client_auth(&self, naming: Naming) -> Result<ClientAuth, SettingError> {
        let have_ca = self.client_ca.is_some() || self.cert.is_empty();
        match (self.client_auth, have_ca) {
            (Some(ClientAuth::None), _) => Ok(ClientAuth::None),
            (Some(mode), true) => Ok(mode),
            (None, true) => Ok(ClientAuth::Required),
            (None, false) => Ok(ClientAuth::None),
            (Some(mode), false) => Err(SettingError::new(
                "client_auth",
                format!(
                    "{} needs {} (the CA that signs client certificates)",
                    mode.name(),
                    naming.name("client_ca")
                ),
            )),
        }
    }

    /// Checks the combination without reading a file.
    pub fn check(&self, naming: Naming) -> Result<ClientAuth, SettingError> {
        if self.cert.len() != self.key.len() {
            return Err(SettingError::new(
                if self.cert.len() > self.key.len() {
                    "key"
                } else {
                    "cert"
                },
                format!(
                    "{} and {} come in pairs: {} {} and {} {} given",
                    naming.name("cert"),
                    naming.name("key"),
                    self.cert.len(),
                    naming.name("cert"),
                    self.key.len(),
                    naming.name("key")
                ),
            ));
        }
        let client_auth = self.resolved_client_auth(naming)?;
        if self.crl.is_some() && client_auth == ClientAuth::None {
            return Err(SettingError::new(
                "crl",
                format!(
                    "checks client certificates: it needs {}",
                    naming.name("client_ca")
                ),
            ));
        }
        if !self.policy().is_empty() && client_auth != ClientAuth::Required {
            return Err(SettingError::new(
                self.first_allow_key(),
                format!(
                    "{} rules admit clients by their certificate: they need client certificates to be required ({}, no {} optional|none)",
                    naming.name("allow_*"),
                    naming.name("client_ca"),
                    naming.name("client_auth")
                ),
            ));
        }
        Ok(client_auth)
    }

    /// The development PKI these settings use (when no `cert` is given).
    pub fn dev_pki(&self, naming: Naming) -> Result<Option<DevPki>, SettingError> {
        if !self.cert.is_empty() {
            return Ok(None);
        }
        let dir = match &self.pki_dir {
            Some(dir) => dir.clone(),
            None => DevPki::default_dir().ok_or_else(|| {
                SettingError::new(
                    "pki_dir",
                    format!(
                        "cannot find a home for the development PKI: set {} DIR (or HOME)",
                        naming.name("pki_dir")
                    ),
                )
            })?,
        };
        Ok(Some(DevPki::at(dir)))
    }

    /// Where the TLS material comes from: the files given, or the development PKI (made or
    /// renewed here; blocking). Opens the key log if one is set.
    pub fn source(&self, naming: Naming) -> Result<(ServerTlsSource, Option<DevPki>)> {
        let client_auth = self.check(naming)?;
        let dev_pki = self.dev_pki(naming)?;
        let (certs, client_ca) = match &dev_pki {
            Some(pki) => {
                let state = pki.ensure().map_err(|e| {
                    Error::unusable(format!("development PKI in {}", pki.dir().display()), e)
                })?;
                let dir = pki.dir().display();
                match state {
                    DevPkiState::Created => {
                        info!(dir = %dir, "created a development PKI (CA, server and client certificates)")
                    }
                    DevPkiState::Renewed => {
                        info!(dir = %dir, "re-issued development certificates close to expiry")
                    }
                    DevPkiState::Existing => info!(dir = %dir, "using the development PKI"),
                }
                let ca = self.client_ca.clone().unwrap_or_else(|| pki.ca_cert());
                (vec![(pki.server_cert(), pki.server_key())], Some(ca))
            }
            None => {
                let pairs = self.cert.iter().cloned().zip(self.key.iter().cloned());
                (pairs.collect(), self.client_ca.clone())
            }
        };
        let source = ServerTlsSource {
            certs,
            client_ca,
            crl: self.crl.clone(),
            client_auth,
            tls12: self.tls12,
            policy: self.policy(),
            key_log: match &self.keylog {
                Some(target) => Some(target.open()?),
                None => None,
            },
            kernel_tls: self.ktls,
        };
        source.validate()?;
        Ok((source, dev_pki))
    }
}

/// How a client trusts its server, and its own certificate (the flags of `tlsnet connect`
/// and `tlsnet tunnel client` of the same names).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientTlsSettings {
    /// Trust these CA certificates instead of the system's.
    pub ca: Option<PathBuf>,
    /// The server's key must have this pin (without `ca`, instead of a CA).
    pub pin: Option<SpkiPin>,
    /// This client's certificate chain.
    pub cert: Option<PathBuf>,
    /// Its key.
    pub key: Option<PathBuf>,
    /// A CRL for the server's certificate.
    pub crl: Option<PathBuf>,
    /// Also offer TLS 1.2.
    pub tls12: bool,
    /// The development PKI, used for local hosts when no `ca` is given.
    pub pki_dir: Option<PathBuf>,
    /// Write connection secrets here (debugging only).
    pub keylog: Option<KeyLogTarget>,
}

impl ClientTlsSettings {
    /// Checks the combination without reading a file.
    pub fn check(&self, naming: Naming) -> Result<(), SettingError> {
        match (&self.cert, &self.key) {
            (Some(_), None) => Err(SettingError::new(
                "cert",
                format!("needs {} (its private key)", naming.name("key")),
            )),
            (None, Some(_)) => Err(SettingError::new(
                "key",
                format!("needs {} (its certificate)", naming.name("cert")),
            )),
            _ if self.ca.is_none() && self.pin.is_some() && self.crl.is_some() => {
                Err(SettingError::new(
                    "crl",
                    format!(
                        "needs a CA to check against ({} FILE); with {} alone there is none",
                        naming.name("ca"),
                        naming.name("pin")
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The client's TLS options for a server on `host` (reads the files: blocking). Without
    /// `ca` or `pin`, a local host is trusted through the development PKI when there is one
    /// (returned, so that the caller can say so), any other through the system's roots.
    /// `insecure` skips verification (`tlsnet connect --insecure` only).
    pub fn options(
        &self,
        host: &str,
        insecure: bool,
        naming: Naming,
    ) -> Result<(ClientTlsOptions, Option<DevPki>)> {
        self.check(naming)?;
        let mut identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(Identity::from_files(cert, key)?),
            _ => None,
        };
        let mut dev_pki = None;
        let trust = if insecure {
            ServerTrust::Insecure
        } else if let Some(ca) = &self.ca {
            ServerTrust::Roots(load_certs(ca)?)
        } else if self.pin.is_some() {
            ServerTrust::PinOnly
        } else if let Some(pki) = self.local_dev_pki(host) {
            if identity.is_none() {
                identity = Some(
                    Identity::from_files(&pki.client_cert(), &pki.client_key())
                        .map_err(|e| Error::unusable("development client certificate", e))?,
                );
            }
            let roots = load_certs(&pki.ca_cert())?;
            dev_pki = Some(pki);
            ServerTrust::Roots(roots)
        } else {
            ServerTrust::System
        };
        let options = ClientTlsOptions {
            trust,
            pin: self.pin,
            identity,
            allow_tls12: self.tls12,
            alpn: Vec::new(),
            crls: match &self.crl {
                Some(path) => load_crls(path)?,
                None => Vec::new(),
            },
            key_log: match &self.keylog {
                Some(target) => Some(target.open()?),
                None => None,
            },
            server_policy: AccessPolicy::default(),
        };
        Ok((options, dev_pki))
    }

    fn local_dev_pki(&self, host: &str) -> Option<DevPki> {
        if !is_local_host(host) {
            return None;
        }
        let dir = self.pki_dir.clone().or_else(DevPki::default_dir)?;
        let pki = DevPki::at(dir);
        pki.exists().then_some(pki)
    }
}

/// A server's limits and deadlines as given (`idle_timeout` 0: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Deadline of the handshake.
    pub handshake_timeout: Duration,
    /// Close after this long without traffic (0: never).
    pub idle_timeout: Duration,
    /// How long open connections may take to finish at shutdown.
    pub shutdown_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        let d = ServerOptions::default();
        ServerLimits {
            max_connections: d.max_connections,
            handshake_timeout: d.handshake_timeout,
            idle_timeout: d.idle_timeout.unwrap_or_default(),
            shutdown_timeout: d.shutdown_timeout,
        }
    }
}

impl ServerLimits {
    /// The server options, checked.
    pub fn options(&self) -> Result<ServerOptions, SettingError> {
        if self.max_connections == 0 {
            return Err(SettingError::new("max_connections", "must be at least 1"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(SettingError::new(
                "handshake_timeout",
                "must be more than 0",
            ));
        }
        Ok(ServerOptions {
            max_connections: self.max_connections,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: nonzero(self.idle_timeout),
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// `None` for zero: "no limit".
pub fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}
