//! `tlsnet serve`: flags, then a [`tlsnet::server::Server`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use tlsnet::pki::dev::{DevPki, DevPkiState};
use tlsnet::reload::Reloader;
use tlsnet::server::{bind, Server, ServerOptions};
use tlsnet::service::{Discard, Echo, Service};
use tlsnet::telemetry;
use tlsnet::tls::{load_certs, load_crls, ClientAuth, Identity, ServerTlsOptions};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::logging::{self, LogFormat};
use crate::{parse_duration, UsageError};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; repeat for several. A name listens on every address it resolves
    /// to (`localhost` gives 127.0.0.1 and ::1); `[::]:8443` and `0.0.0.0:8443` listen on all.
    #[arg(long, value_name = "ADDR", default_value = "localhost:8443")]
    listen: Vec<String>,

    /// Server certificate chain (PEM, leaf first). Without it, a development PKI is used.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// Private key of --cert (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,

    /// CA certificates (PEM) that sign acceptable client certificates; makes client
    /// certificates required unless --client-auth says otherwise.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,

    /// Whether clients must present a certificate. Default: required with --client-ca or the
    /// development PKI, none otherwise.
    #[arg(long, value_enum, value_name = "MODE")]
    client_auth: Option<ClientAuthArg>,

    /// CRL file (PEM or DER, e.g. from `tlsnet pki crl`): client certificates listed there are
    /// refused. Re-read when it changes.
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,

    /// How often certificate, key, client CA and CRL files are checked for changes (0: only
    /// on SIGHUP). A changed file that does not load is refused and the old material kept.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    reload_interval: Duration,

    /// Also accept TLS 1.2 (ECDHE key exchange with AEAD ciphers only). Default: TLS 1.3 only.
    #[arg(long)]
    tls12: bool,

    /// What to do with a connection once it is established.
    #[arg(long, value_enum, default_value = "echo")]
    service: ServiceArg,

    /// ALPN protocol to offer (repeatable, in order of preference).
    #[arg(long, value_name = "PROTOCOL")]
    alpn: Vec<String>,

    /// Connections served at once; more are refused (and logged).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,

    /// A client must complete the TLS handshake within this time, or is dropped.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,

    /// Close a connection after this long without traffic (0 disables).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// On SIGINT/SIGTERM, how long open connections may take to finish before they are closed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// Directory of the development PKI [default: $XDG_STATE_HOME/tlsnet/dev-pki or
    /// ~/.local/state/tlsnet/dev-pki].
    #[arg(long, value_name = "DIR", env = "TLSNET_PKI_DIR")]
    pki_dir: Option<PathBuf>,

    /// Serve Prometheus metrics on GET /metrics and a health check on GET /health at this
    /// address. A bare port (`9090`) binds to localhost; give an address to bind elsewhere.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,

    /// Log line format.
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ClientAuthArg {
    Required,
    Optional,
    None,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ServiceArg {
    /// Send every byte back.
    Echo,
    /// Read and drop every byte (for benchmarks).
    Discard,
}

pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    logging::init(args.log_format);
    if args.max_connections == 0 {
        return Err(UsageError("--max-connections must be at least 1".into()).into());
    }
    if args.handshake_timeout.is_zero() {
        return Err(UsageError("--handshake-timeout must be more than 0".into()).into());
    }

    // The recorder first, so that the expiry gauges of the first build are kept.
    let metrics = match &args.metrics {
        Some(spec) => Some((metrics_listener(spec).await?, telemetry::install()?)),
        None => None,
    };
    let (source, dev_pki) = tls_source(&args)?;
    let client_auth = source.client_auth;
    let tls = source.build()?;

    let mut listeners = Vec::new();
    for spec in &args.listen {
        listeners.extend(bind(spec).await?);
    }
    let addrs: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();

    let service: Arc<dyn Service> = match args.service {
        ServiceArg::Echo => Arc::new(Echo),
        ServiceArg::Discard => Arc::new(Discard),
    };
    info!(
        listen = %addrs.join(", "),
        service = service.name(),
        client_auth = ?client_auth,
        tls12 = args.tls12,
        "tlsnet serving"
    );
    if let Some(pki) = &dev_pki {
        print_how_to_connect(pki, &addrs);
    }

    let options = ServerOptions {
        max_connections: args.max_connections,
        handshake_timeout: args.handshake_timeout,
        idle_timeout: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
        shutdown_timeout: args.shutdown_timeout,
    };
    let server = Server::with_options(tls, service, options);
    let reloader = Reloader::new(source.files(), move || source.build(), server.tls_handle())
        .interval(if args.reload_interval.is_zero() {
            Duration::from_secs(365 * 86400)
        } else {
            args.reload_interval
        });
    let stop_reloading = CancellationToken::new();
    spawn_sighup_listener(reloader.trigger());
    let reload_task = tokio::spawn(reloader.run(stop_reloading.clone()));
    if let Some((listener, handle)) = metrics {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "metrics on http://{addr}/metrics, health on /health");
        }
        tokio::spawn(telemetry::serve_http(
            listener,
            handle,
            stop_reloading.clone(),
        ));
    }
    server.run(listeners, shutdown_signal()).await?;
    stop_reloading.cancel();
    let _ = reload_task.await;
    Ok(ExitCode::SUCCESS)
}

/// Where the server's TLS material comes from; rebuilt on every reload.
#[derive(Debug, Clone)]
struct TlsSource {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    crl: Option<PathBuf>,
    client_auth: ClientAuth,
    tls12: bool,
    alpn: Vec<Vec<u8>>,
}

impl TlsSource {
    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert.clone(), self.key.clone()];
        files.extend(self.client_ca.iter().cloned());
        files.extend(self.crl.iter().cloned());
        files
    }

    fn build(&self) -> tlsnet::Result<Arc<rustls::ServerConfig>> {
        let client_ca = match (&self.client_ca, self.client_auth) {
            (Some(path), mode) if mode != ClientAuth::None => load_certs(path)?,
            _ => Vec::new(),
        };
        let crls = match &self.crl {
            Some(path) => load_crls(path)?,
            None => Vec::new(),
        };
        let options = ServerTlsOptions {
            identity: Identity::from_files(&self.cert, &self.key)?,
            client_ca,
            client_auth: self.client_auth,
            allow_tls12: self.tls12,
            alpn: self.alpn.clone(),
            crls,
        };
        let config = options.build()?;
        telemetry::record_expiry(&options.identity.chain, &options.client_ca, &options.crls);
        Ok(config)
    }
}

fn tls_source(args: &ServeArgs) -> Result<(TlsSource, Option<DevPki>)> {
    let (cert, key, client_ca_path, dev_pki) = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), args.client_ca.clone(), None),
        _ => {
            let pki = DevPki::at(match &args.pki_dir {
                Some(dir) => dir.clone(),
                None => DevPki::default_dir().ok_or_else(|| {
                    UsageError(
                        "cannot find a home for the development PKI: set --pki-dir DIR (or HOME)"
                            .into(),
                    )
                })?,
            });
            let state = pki
                .ensure()
                .with_context(|| format!("development PKI in {}", pki.dir().display()))?;
            match state {
                DevPkiState::Created => {
                    info!(dir = %pki.dir().display(), "created a development PKI (CA, server and client certificates)")
                }
                DevPkiState::Renewed => {
                    info!(dir = %pki.dir().display(), "re-issued development certificates close to expiry")
                }
                DevPkiState::Existing => {
                    info!(dir = %pki.dir().display(), "using the development PKI")
                }
            }
            let ca = args.client_ca.clone().unwrap_or_else(|| pki.ca_cert());
            (pki.server_cert(), pki.server_key(), Some(ca), Some(pki))
        }
    };
    let client_auth = match (args.client_auth, &client_ca_path) {
        (Some(ClientAuthArg::None), _) => ClientAuth::None,
        (Some(ClientAuthArg::Required), Some(_)) | (None, Some(_)) => ClientAuth::Required,
        (Some(ClientAuthArg::Optional), Some(_)) => ClientAuth::Optional,
        (Some(mode), None) => {
            return Err(UsageError(format!(
                "--client-auth {} needs --client-ca FILE (the CA that signs client certificates)",
                format!("{mode:?}").to_lowercase()
            ))
            .into());
        }
        (None, None) => ClientAuth::None,
    };
    if args.crl.is_some() && client_auth == ClientAuth::None {
        return Err(
            UsageError("--crl checks client certificates: it needs --client-ca".into()).into(),
        );
    }
    let source = TlsSource {
        cert,
        key,
        client_ca: client_ca_path,
        crl: args.crl.clone(),
        client_auth,
        tls12: args.tls12,
        alpn: args.alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
    };
    Ok((source, dev_pki))
}

fn print_how_to_connect(pki: &DevPki, addrs: &[String]) {
    let port = addrs
        .first()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, p)| p.to_owned())
        .unwrap_or_else(|| "8443".into());
    let me = std::env::args()
        .next()
        .filter(|a| a.contains('/'))
        .unwrap_or_else(|| "tlsnet".into());
    let d = pki.dir().display();
    eprintln!(
        "\nThe server requires client certificates from the development CA in {d}.\n\
         Connect from another terminal (type a line, it comes back; Ctrl-D ends):\n\
         \n    {me} connect localhost:{port}\n\
         \nor with OpenSSL:\n\
         \n    openssl s_client -connect localhost:{port} -CAfile {d}/ca.pem -cert {d}/client.pem -key {d}/client-key.pem\n"
    );
}

async fn metrics_listener(spec: &str) -> Result<tokio::net::TcpListener> {
    let spec = if spec.parse::<u16>().is_ok() {
        format!("127.0.0.1:{spec}")
    } else {
        spec.to_owned()
    };
    let listener = tokio::net::TcpListener::bind(&spec)
        .await
        .with_context(|| format!("--metrics: cannot listen on {spec}"))?;
    if let Ok(addr) = listener.local_addr() {
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "metrics are reachable from other machines");
        }
    }
    Ok(listener)
}

fn spawn_sighup_listener(trigger: Arc<tokio::sync::Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    info!("SIGHUP received: reloading TLS material");
                    trigger.notify_one();
                }
            });
        }
    }
    #[cfg(not(unix))]
    let _ = trigger;
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                    _ = term.recv() => info!("SIGTERM received"),
                }
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
