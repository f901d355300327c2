//! `tlsnet serve`: flags, then a [`tlsnet::tls::ServerTlsSource`] and a
//! [`tlsnet::net::Server`] with its services.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use tlsnet::net::{bind, Server, ServerOptions};
use tlsnet::pki::dev::{DevPki, DevPkiState};
use tlsnet::service::echo::{DISCARD_ALPN, ECHO_ALPN};
use tlsnet::service::{Discard, Echo, Router, Service};
use tlsnet::telemetry;
use tlsnet::tls::{
    AccessPolicy, ClientAuth, Pattern, Reloader, Rule, ServerTlsSource, SpkiPin, TlsHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::keylog::KeyLogArgs;
use crate::logging::{self, LogFormat};
use crate::{parse_duration, UsageError};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; repeat for several. A name listens on every address it resolves
    /// to (`localhost` gives 127.0.0.1 and ::1); `[::]:8443` and `0.0.0.0:8443` listen on all.
    #[arg(long, value_name = "ADDR", default_value = "localhost:8443")]
    listen: Vec<String>,

    /// Server certificate chain (PEM, leaf first). Repeat with --key for several: each client
    /// gets the one whose names cover the name it asked for (SNI), the first one otherwise.
    /// Without it, a development PKI is used.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Vec<PathBuf>,

    /// Private key of the --cert at the same position (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Vec<PathBuf>,

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

    /// Admit clients whose certificate's common name is NAME (repeatable). With any --allow-*
    /// rule, a client must match one of them; the others get the alert access_denied.
    #[arg(long, value_name = "NAME")]
    allow_cn: Vec<String>,

    /// Admit clients with this organizational unit (OU) in their subject (repeatable).
    #[arg(long, value_name = "OU")]
    allow_ou: Vec<String>,

    /// Admit clients with a DNS name matching this pattern (repeatable; `*` is one label,
    /// `**` one or more: `*.acme.internal`).
    #[arg(long, value_name = "PATTERN", value_parser = Pattern::dns)]
    allow_dns: Vec<Pattern>,

    /// Admit clients with a URI matching this pattern (repeatable; `*` is one path segment,
    /// `**` one or more: `spiffe://acme/**`).
    #[arg(long, value_name = "PATTERN", value_parser = Pattern::uri)]
    allow_uri: Vec<Pattern>,

    /// Admit clients whose public key has this pin (repeatable; sha256/BASE64, as `tlsnet
    /// connect` and `tlsnet inspect` print it).
    #[arg(long, value_name = "sha256/BASE64")]
    allow_spki_pin: Vec<SpkiPin>,

    /// How often certificate, key, client CA and CRL files are checked for changes (0: only
    /// on SIGHUP). A changed file that does not load is refused and the old material kept.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    reload_interval: Duration,

    /// Also accept TLS 1.2 (ECDHE key exchange with AEAD ciphers only). Default: TLS 1.3 only.
    #[arg(long)]
    tls12: bool,

    /// The service for clients that ask for none by ALPN (the seeds' clients, openssl
    /// s_client). Every service is also reachable by its ALPN id: tlsnet-echo, tlsnet-discard.
    #[arg(long, value_enum, default_value = "echo")]
    service: ServiceArg,

    /// Another ALPN id for the default service (repeatable), e.g. for a client that must
    /// send one.
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
    /// Services with sessions (not echo) are told to say goodbye at once; the server exits as
    /// soon as the last connection has ended.
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

    #[command(flatten)]
    keylog: KeyLogArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ClientAuthArg {
    Required,
    Optional,
    None,
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
    if args.cert.len() != args.key.len() {
        return Err(UsageError(format!(
            "--cert and --key come in pairs: {} --cert and {} --key given",
            args.cert.len(),
            args.key.len()
        ))
        .into());
    }

    // The recorder first, so that the expiry gauges of the first build are kept.
    let metrics = match &args.metrics {
        Some(spec) => Some((metrics_listener(spec).await?, telemetry::install()?)),
        None => None,
    };
    let (mut source, dev_pki) = tls_source(&args)?;
    source.validate().map_err(|e| UsageError(e.to_string()))?;
    source.key_log = args.keylog.open()?;
    let tls = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || source.build()).await??
    };

    let mut listeners = Vec::new();
    for spec in &args.listen {
        listeners.extend(bind(spec).await?);
    }
    let addrs: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();

    let router = router(&args);
    info!(
        listen = %addrs.join(", "),
        service = router.default_name(),
        alpn = %router.protocols().iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>().join(","),
        client_auth = source.client_auth.name(),
        allow = %if source.policy.is_empty() { "any client the CA signed".to_owned() } else { source.policy.describe() },
        tls12 = args.tls12,
        hardware_rng = tlsnet::tls::cpu_has_hardware_rng(),
        keylog = args.keylog.is_set(),
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
    let handle = TlsHandle::new(tls);
    let server = Server::with_options(handle.clone(), router, options);
    telemetry::register("", server.stats());
    let reloader = Reloader::new(source, handle)
        .interval((!args.reload_interval.is_zero()).then_some(args.reload_interval));
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

/// Every service under its ALPN id; the chosen one (and any --alpn) also as the default.
fn router(args: &ServeArgs) -> Router {
    let echo: Arc<dyn Service> = Arc::new(Echo);
    let discard: Arc<dyn Service> = Arc::new(Discard);
    let default = match args.service {
        ServiceArg::Echo => echo.clone(),
        ServiceArg::Discard => discard.clone(),
    };
    let mut router = Router::new(default.clone())
        .route(ECHO_ALPN, echo)
        .route(DISCARD_ALPN, discard);
    for id in &args.alpn {
        router = router.route(id.as_bytes(), default.clone());
    }
    router
}

fn policy(args: &ServeArgs) -> AccessPolicy {
    let mut rules = Vec::new();
    rules.extend(args.allow_cn.iter().cloned().map(Rule::CommonName));
    rules.extend(args.allow_ou.iter().cloned().map(Rule::OrganizationalUnit));
    rules.extend(args.allow_dns.iter().cloned().map(Rule::Dns));
    rules.extend(args.allow_uri.iter().cloned().map(Rule::Uri));
    rules.extend(args.allow_spki_pin.iter().copied().map(Rule::SpkiPin));
    AccessPolicy::new(rules)
}

fn tls_source(args: &ServeArgs) -> Result<(ServerTlsSource, Option<DevPki>)> {
    let (certs, client_ca, dev_pki) = if args.cert.is_empty() {
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
        let ca = args.client_ca.clone().unwrap_or_else(|| pki.ca_cert());
        (
            vec![(pki.server_cert(), pki.server_key())],
            Some(ca),
            Some(pki),
        )
    } else {
        let pairs = args.cert.iter().cloned().zip(args.key.iter().cloned());
        (pairs.collect(), args.client_ca.clone(), None)
    };
    let client_auth = ClientAuth::resolve(args.client_auth.map(Into::into), client_ca.is_some())
        .map_err(|e| UsageError(e.to_string()))?;
    let source = ServerTlsSource {
        certs,
        client_ca,
        crl: args.crl.clone(),
        client_auth,
        tls12: args.tls12,
        policy: policy(args),
        key_log: None,
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
