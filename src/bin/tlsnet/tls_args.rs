//! Flags shared by the commands: a server's TLS material and access policy (`serve`,
//! `tunnel server`), a client's trust (`connect`, `tunnel client`), and the signals a
//! long-running command answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use tlsnet::config::{ClientTlsSettings, Naming, ServerLimits, ServerTlsSettings, SettingError};
use tlsnet::net::ServerOptions;
use tlsnet::pki::dev::{is_local_host, DevPki};
use tlsnet::tls::{ClientAuth, ClientTlsOptions, Identity, Pattern, ServerTlsSource, SpkiPin};
use tracing::info;

use crate::keylog::KeyLogArgs;
use crate::{parse_duration, UsageError};

/// A server's certificates, client authentication and `--allow-*` rules.
#[derive(Args, Debug)]
pub struct ServerTlsArgs {
    /// Server certificate chain (PEM, leaf first). Repeat with --key for several: each client
    /// gets the one whose names cover the name it asked for (SNI), the first one otherwise.
    /// Without it, a development PKI is used.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Vec<PathBuf>,

    /// Private key of the --cert at the same position (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Vec<PathBuf>,

    /// CA certificates (PEM) that sign acceptable client certificates; makes client
    /// certificates required unless --client-auth says otherwise.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,

    /// Whether clients must present a certificate. Default: required with --client-ca or the
    /// development PKI, none otherwise.
    #[arg(long, value_enum, value_name = "MODE")]
    pub client_auth: Option<ClientAuthArg>,

    /// CRL file (PEM or DER, e.g. from `tlsnet pki crl`): client certificates listed there are
    /// refused. Re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,

    /// Admit clients whose certificate's common name is NAME (repeatable). With any --allow-*
    /// rule, a client must match one of them; the others get the alert access_denied.
    #[arg(long, value_name = "NAME")]
    pub allow_cn: Vec<String>,

    /// Admit clients with this organizational unit (OU) in their subject (repeatable).
    #[arg(long, value_name = "OU")]
    pub allow_ou: Vec<String>,

    /// Admit clients with a DNS name matching this pattern (repeatable; `*` is one label,
    /// `**` one or more: `*.acme.internal`).
    #[arg(long, value_name = "PATTERN", value_parser = Pattern::dns)]
    pub allow_dns: Vec<Pattern>,

    /// Admit clients with a URI matching this pattern (repeatable; `*` is one path segment,
    /// `**` one or more: `spiffe://acme/**`).
    #[arg(long, value_name = "PATTERN", value_parser = Pattern::uri)]
    pub allow_uri: Vec<Pattern>,

    /// Admit clients whose public key has this pin (repeatable; sha256/BASE64, as `tlsnet
    /// connect` and `tlsnet inspect` print it).
    #[arg(long, value_name = "sha256/BASE64")]
    pub allow_spki_pin: Vec<SpkiPin>,

    /// How often certificate, key, client CA and CRL files are checked for changes (0: only
    /// on SIGHUP). A changed file that does not load is refused and the old material kept.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub reload_interval: Duration,

    /// Also accept TLS 1.2 (ECDHE key exchange with AEAD ciphers only). Default: TLS 1.3 only.
    #[arg(long)]
    pub tls12: bool,

    /// After each handshake, let the kernel encrypt and decrypt the connection's records
    /// (Linux kernel TLS, the `tls` module). Where the kernel cannot (no module, say), the
    /// connection stays on rustls, and the log says why. See docs/OPERATIONS.md.
    #[arg(long)]
    pub ktls: bool,

    /// Directory of the development PKI [default: $XDG_STATE_HOME/tlsnet/dev-pki or
    /// ~/.local/state/tlsnet/dev-pki].
    #[arg(long, value_name = "DIR", env = "TLSNET_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,

    #[command(flatten)]
    pub keylog: KeyLogArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ClientAuthArg {
    Required,
    Optional,
    None,
}

impl From<ClientAuth> for ClientAuthArg {
    fn from(mode: ClientAuth) -> Self {
        match mode {
            ClientAuth::Required => ClientAuthArg::Required,
            ClientAuth::Optional => ClientAuthArg::Optional,
            ClientAuth::None => ClientAuthArg::None,
        }
    }
}

impl From<ClientAuthArg> for ClientAuth {
    fn from(arg: ClientAuthArg) -> Self {
        match arg {
            ClientAuthArg::Required => ClientAuth::Required,
            ClientAuthArg::Optional => ClientAuth::Optional,
            ClientAuthArg::None => ClientAuth::None,
        }
    }
}

impl ServerTlsArgs {
    /// The settings these flags give (the key log is opened by [`ServerTlsArgs::source`],
    /// with the warning on stderr).
    pub fn settings(&self) -> ServerTlsSettings {
        ServerTlsSettings {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
            client_auth: self.client_auth.map(Into::into),
            crl: self.crl.clone(),
            allow_cn: self.allow_cn.clone(),
            allow_ou: self.allow_ou.clone(),
            allow_dns: self.allow_dns.clone(),
            allow_uri: self.allow_uri.clone(),
            allow_spki_pin: self.allow_spki_pin.clone(),
            tls12: self.tls12,
            ktls: self.ktls,
            pki_dir: self.pki_dir.clone(),
            keylog: None,
        }
    }

    /// The reload interval, `None` for "only on SIGHUP".
    pub fn reload_every(&self) -> Option<Duration> {
        (!self.reload_interval.is_zero()).then_some(self.reload_interval)
    }

    /// Where the TLS material comes from (the development PKI, made or renewed here, when no
    /// --cert is given), checked for usage errors.
    pub fn source(&self) -> Result<(ServerTlsSource, Option<DevPki>)> {
        let (source, dev_pki) = self.settings().source(Naming::Flags).map_err(usage)?;
        let source = ServerTlsSource {
            key_log: self.keylog.open()?,
            ..source
        };
        Ok((source, dev_pki))
    }
}

/// A library error as the command reports it: a wrong setting (named as a flag) or a wrong
/// value is a usage error (exit code 2).
pub fn usage(error: tlsnet::Error) -> anyhow::Error {
    match error {
        tlsnet::Error::Setting(e) => UsageError(e.describe(Naming::Flags)).into(),
        tlsnet::Error::InvalidInput(why) => UsageError(why).into(),
        other => other.into(),
    }
}

/// A wrong setting, named as a flag: a usage error.
pub fn setting(error: SettingError) -> anyhow::Error {
    UsageError(error.describe(Naming::Flags)).into()
}

/// A server's limits and deadlines.
#[derive(Args, Debug)]
pub struct ServerLimitArgs {
    /// Connections served at once; more are refused (and logged).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,

    /// A client must complete the TLS handshake within this time, or is dropped.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Close a connection after this long without traffic (0 disables).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// On SIGINT/SIGTERM, how long open connections may take to finish before they are closed.
    /// Services with sessions (not echo, not the tunnel) are told to say goodbye at once; the
    /// server exits as soon as the last connection has ended.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

impl ServerLimitArgs {
    /// The limits as given.
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            max_connections: self.max_connections,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            shutdown_timeout: self.shutdown_timeout,
        }
    }

    /// The server options, checked.
    pub fn options(&self) -> Result<ServerOptions> {
        self.limits().options().map_err(setting)
    }
}

/// How a client trusts the server, and its own certificate.
#[derive(Args, Debug)]
pub struct ClientTlsArgs {
    /// Trust the CA certificates in this PEM file instead of the system's trust store.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Require the server's public key to match this pin (sha256/BASE64, as the report
    /// prints). Without --ca, the pin replaces the CA check; the name and dates are still checked.
    #[arg(long, value_name = "sha256/BASE64")]
    pub pin: Option<SpkiPin>,

    /// Client certificate chain (PEM), for servers that require one.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// CRL file (PEM or DER): a server certificate listed there is refused. Needs a CA
    /// (system roots or --ca).
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,

    /// Also offer TLS 1.2.
    #[arg(long)]
    pub tls12: bool,

    /// Development PKI used for local hosts when no --ca is given [default: as for serve].
    #[arg(long, value_name = "DIR", env = "TLSNET_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,

    #[command(flatten)]
    pub keylog: KeyLogArgs,
}

impl ClientTlsArgs {
    /// The settings these flags give (the key log is opened by [`ClientTlsArgs::options`]).
    pub fn settings(&self) -> ClientTlsSettings {
        ClientTlsSettings {
            ca: self.ca.clone(),
            pin: self.pin,
            cert: self.cert.clone(),
            key: self.key.clone(),
            crl: self.crl.clone(),
            tls12: self.tls12,
            pki_dir: self.pki_dir.clone(),
            keylog: None,
        }
    }

    /// The client's TLS options for a server on `host`. `insecure` skips verification
    /// (`connect --insecure` only); `quiet` leaves out the note about the development PKI.
    pub fn options(
        &self,
        host: &str,
        insecure: bool,
        quiet: bool,
        alpn: &[String],
    ) -> Result<ClientTlsOptions> {
        if insecure {
            eprintln!(
                "tlsnet: WARNING: --insecure: the server's certificate is NOT verified; anyone on the \
                 network path can read and change this connection"
            );
        }
        let (mut options, dev_pki) = self
            .settings()
            .options(host, insecure, Naming::Flags)
            .map_err(usage)?;
        if let (Some(pki), false) = (dev_pki, quiet) {
            eprintln!(
                "tlsnet: local host and no --ca: using the development PKI in {}",
                pki.dir().display()
            );
        }
        options.alpn = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        options.key_log = self.keylog.open()?;
        Ok(options)
    }

    /// `--as NAME` of `chat` and `files`: a client certificate for NAME from the development
    /// PKI (of `--pki-dir`, else the default one), issued on first use. Only for a server on
    /// this machine (whose development PKI it is).
    pub fn identity_as(&self, host: &str, name: &str) -> Result<Identity> {
        if !is_local_host(host) {
            return Err(
                UsageError("--as works with a local server's development PKI only".into()).into(),
            );
        }
        let dir = self
            .pki_dir
            .clone()
            .or_else(DevPki::default_dir)
            .ok_or_else(|| UsageError("--as: no development PKI: set --pki-dir DIR".into()))?;
        let pki = DevPki::at(dir);
        if !pki.exists() {
            return Err(anyhow!(
                "--as: no development PKI in {} (run `tlsnet serve` once, or give --pki-dir)",
                pki.dir().display()
            ));
        }
        let (cert, key) = pki
            .client_identity_for(name)
            .with_context(|| format!("--as {name}: a certificate in {}", pki.dir().display()))?;
        Ok(Identity::from_files(&cert, &key)?)
    }
}

/// Reloads on SIGHUP (the TLS material; a tunnels file).
pub fn spawn_sighup_listener(trigger: Arc<tokio::sync::Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    info!("SIGHUP received: reloading");
                    trigger.notify_one();
                }
            });
        }
    }
    #[cfg(not(unix))]
    let _ = trigger;
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                    _ = term.recv() => info!("SIGTERM received"),
                }
                crate::listen::notify(tlsnet::net::systemd::Notice::Stopping);
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
