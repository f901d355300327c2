//! `tlsnet serve`: flags, then a [`tlsnet::tls::ServerTlsSource`] and a
//! [`tlsnet::net::Server`] with its services.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use tlsnet::config::serve::{ServeFile, ServiceKind};
use tlsnet::files::FILES_ALPN;
use tlsnet::net::systemd::Notice;
use tlsnet::net::{Server, ServerOptions};
use tlsnet::pki::dev::DevPki;
use tlsnet::service::echo::{DISCARD_ALPN, ECHO_ALPN};
use tlsnet::service::{Discard, Echo, Router, Service, UserIdSource};
use tlsnet::telemetry;
use tlsnet::tls::ClientAuth;
use tlsnet::tls::{Reloader, ServerTlsSource, TlsHandle};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::files::FilesServeArgs;
use crate::logging::{self, LogFormat};
use crate::tls_args::{shutdown_signal, spawn_sighup_listener, ServerLimitArgs, ServerTlsArgs};
use crate::UsageError;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Read settings from this TOML file: each key is a flag below without its `--` and with
    /// `_` for `-` (`client_ca = "ca.pem"`); a repeatable flag is an array (`listen =
    /// ["[::]:8443"]`). A flag given on the command line wins over the file's key; the file
    /// wins over the environment ($TLSNET_PKI_DIR) and the defaults. An unknown key or a bad
    /// value is refused (exit code 2) with the line and the key. See /etc/tlsnet/serve.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to listen on; repeat for several. A name listens on every address it resolves
    /// to (`localhost` gives 127.0.0.1 and ::1); `[::]:8443` and `0.0.0.0:8443` listen on all.
    #[arg(long, value_name = "ADDR", default_value = "localhost:8443")]
    listen: Vec<String>,

    #[command(flatten)]
    tls: ServerTlsArgs,

    /// The service for clients that ask for none by ALPN (the seeds' clients, openssl
    /// s_client). Every service is also reachable by its ALPN id: tlsnet-echo, tlsnet-discard,
    /// tlsnet-msg/1, tlsnet-files/1.
    #[arg(long, value_enum, default_value = "echo")]
    service: ServiceArg,

    /// Another ALPN id for the default service (repeatable), e.g. for a client that must
    /// send one.
    #[arg(long, value_name = "PROTOCOL")]
    alpn: Vec<String>,

    #[command(flatten)]
    limits: ServerLimitArgs,

    /// Which field of a client's certificate is its user id, for the services that keep
    /// something per user (msg, files).
    #[arg(long, value_name = "FIELD", default_value = "cn", value_parser = parse_user_id)]
    user_id: UserIdSource,

    #[command(flatten)]
    msg: crate::chat::MsgServeArgs,

    #[command(flatten)]
    files: FilesServeArgs,

    /// Serve Prometheus metrics on GET /metrics and a health check on GET /health at this
    /// address. A bare port (`9090`) binds to localhost; give an address to bind elsewhere.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,

    /// Log line format.
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ServiceArg {
    /// Send every byte back.
    Echo,
    /// Read and drop every byte (for benchmarks).
    Discard,
}

pub async fn run(mut args: ServeArgs, matches: Option<ArgMatches>) -> Result<ExitCode> {
    if let Some(path) = args.config.clone() {
        let file = tokio::task::spawn_blocking(move || ServeFile::load(&path))
            .await?
            .map_err(|e| UsageError(e.describe()))?;
        let given = |id: &str| {
            matches
                .as_ref()
                .is_some_and(|m| m.value_source(id) == Some(ValueSource::CommandLine))
        };
        merge(&mut args, file, given);
    }
    logging::init(args.log_format);
    if let Some(path) = &args.config {
        info!(file = %path.display(), "settings from the config file (flags on the command line win)");
    }
    let options = args.limits.options()?;

    // The recorder first, so that the expiry gauges of the first build are kept.
    let metrics = match &args.metrics {
        Some(spec) => Some((metrics_listener(spec).await?, telemetry::install()?)),
        None => None,
    };
    let (source, dev_pki) = args.tls.source()?;
    let tls = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || source.build()).await??
    };

    let listeners = crate::listen::listeners(&args.listen).await?;
    let addrs: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();

    let router = router(&args)?;
    info!(
        listen = %addrs.join(", "),
        service = router.default_name(),
        alpn = %router.protocols().iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>().join(","),
        client_auth = source.client_auth.name(),
        allow = %if source.policy.is_empty() { "any client the CA signed".to_owned() } else { source.policy.describe() },
        tls12 = args.tls.tls12,
        ktls = args.tls.ktls,
        hardware_rng = tlsnet::tls::cpu_has_hardware_rng(),
        keylog = args.tls.keylog.is_set(),
        "tlsnet serving"
    );
    if !tlsnet::tls::cpu_has_hardware_rng() {
        tracing::warn!("this CPU has no hardware random generator: aws-lc seeds from the kernel alone (see docs/SECURITY.md, \"Randomness\")");
    }
    if let Some(pki) = &dev_pki {
        print_how_to_connect(pki, &addrs);
    }

    let running = Running {
        source,
        tls,
        router,
        options,
        reload_every: args.tls.reload_every(),
        metrics,
    };
    running.run(listeners).await?;
    Ok(ExitCode::SUCCESS)
}

/// Puts the file's keys into the arguments, except where `given(id)` says the flag was
/// given on the command line.
fn merge(args: &mut ServeArgs, file: ServeFile, given: impl Fn(&str) -> bool) {
    // `take!(place, key, convert)`: the key's value (converted) unless the flag was given.
    macro_rules! take {
        ($place:expr, $key:ident, $convert:expr) => {
            if let Some(value) = file.$key {
                if !given(stringify!($key)) {
                    $place = $convert(value);
                }
            }
        };
        ($place:expr, $key:ident) => {
            take!($place, $key, |v| v)
        };
    }
    let tls = &mut args.tls;
    take!(args.listen, listen);
    take!(tls.cert, cert);
    take!(tls.key, key);
    take!(tls.client_ca, client_ca, Some);
    take!(tls.client_auth, client_auth, |v: ClientAuth| Some(v.into()));
    take!(tls.crl, crl, Some);
    take!(tls.allow_cn, allow_cn);
    take!(tls.allow_ou, allow_ou);
    take!(tls.allow_dns, allow_dns);
    take!(tls.allow_uri, allow_uri);
    take!(tls.allow_spki_pin, allow_spki_pin);
    take!(tls.reload_interval, reload_interval);
    take!(tls.tls12, tls12);
    take!(tls.ktls, ktls);
    take!(tls.pki_dir, pki_dir, Some);
    if let Some(target) = file.keylog {
        if !given("keylog") {
            tls.keylog.set(target);
        }
    }
    take!(args.service, service, |v| match v {
        ServiceKind::Echo => ServiceArg::Echo,
        ServiceKind::Discard => ServiceArg::Discard,
    });
    take!(args.alpn, alpn);
    let limits = &mut args.limits;
    take!(limits.max_connections, max_connections);
    take!(limits.handshake_timeout, handshake_timeout);
    take!(limits.idle_timeout, idle_timeout);
    take!(limits.shutdown_timeout, shutdown_timeout);
    take!(args.metrics, metrics, Some);
    take!(args.log_format, log_format, Into::into);
    take!(args.user_id, user_id);
    let msg = &mut args.msg;
    take!(msg.no_msg, no_msg);
    take!(msg.store, store, Some);
    take!(msg.nats_ca, nats_ca, Some);
    take!(msg.nats_cert, nats_cert, Some);
    take!(msg.nats_key, nats_key, Some);
    take!(msg.nats_replicas, nats_replicas, Some);
    take!(msg.sync, sync, Into::into);
    take!(msg.max_message_size, max_message_size);
    take!(msg.rate_limit, rate_limit);
    take!(msg.rate_burst, rate_burst);
    take!(msg.max_queue, max_queue);
    let files = &mut args.files;
    take!(files.no_files, no_files);
    take!(files.files_root, files_root, Some);
    take!(files.quota, quota);
    take!(files.max_file_size, max_file_size);
    take!(files.partial_ttl, partial_ttl);
}

/// A server ready to run, with its reloader and metrics endpoint: what `serve` and `tunnel
/// server` both end with.
pub(crate) struct Running {
    pub source: ServerTlsSource,
    pub tls: Arc<rustls::ServerConfig>,
    pub router: Router,
    pub options: ServerOptions,
    pub reload_every: Option<Duration>,
    pub metrics: Option<(
        tokio::net::TcpListener,
        metrics_exporter_prometheus::PrometheusHandle,
    )>,
}

impl Running {
    /// Serves until SIGINT or SIGTERM; reloads the TLS material on change and on SIGHUP.
    pub async fn run(self, listeners: Vec<tokio::net::TcpListener>) -> Result<()> {
        let handle = TlsHandle::new(self.tls);
        let server = Server::with_options(handle.clone(), self.router, self.options);
        telemetry::register("", server.stats());
        let reloader = Reloader::new(self.source, handle).interval(self.reload_every);
        let stop_reloading = CancellationToken::new();
        spawn_sighup_listener(reloader.trigger());
        let reload_task = tokio::spawn(reloader.run(stop_reloading.clone()));
        if let Some((listener, handle)) = self.metrics {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "metrics on http://{addr}/metrics, health on /health");
            }
            tokio::spawn(telemetry::serve_http(
                listener,
                handle,
                stop_reloading.clone(),
            ));
        }
        crate::listen::notify(Notice::Ready);
        server.run(listeners, shutdown_signal()).await?;
        stop_reloading.cancel();
        let _ = reload_task.await;
        Ok(())
    }
}

/// Every service under its ALPN id; the chosen one (and any --alpn) also as the default.
fn router(args: &ServeArgs) -> Result<Router> {
    let echo: Arc<dyn Service> = Arc::new(Echo);
    let discard: Arc<dyn Service> = Arc::new(Discard);
    let default = match args.service {
        ServiceArg::Echo => echo.clone(),
        ServiceArg::Discard => discard.clone(),
    };
    let mut router = Router::new(default.clone())
        .route(ECHO_ALPN, echo)
        .route(DISCARD_ALPN, discard);
    if let Some(msg) = args.msg.service(args.user_id)? {
        router = router.route(tlsnet::msg::ALPN, Arc::new(msg));
    }
    if let Some(files) = args.files.service(args.user_id)? {
        router = router.route(FILES_ALPN, files);
    }
    for id in &args.alpn {
        router = router.route(id.as_bytes(), default.clone());
    }
    Ok(router)
}

fn parse_user_id(text: &str) -> Result<UserIdSource, tlsnet::error::ParseError> {
    text.parse()
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

pub(crate) async fn metrics_listener(spec: &str) -> Result<tokio::net::TcpListener> {
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
