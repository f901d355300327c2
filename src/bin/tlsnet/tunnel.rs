//! `tlsnet tunnel server|client`: flags, then the library's [`tlsnet::tunnel`] in the
//! ordinary server (server side) or on a plain local listener (client side).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use tlsnet::config::tunnel::{ClientTunnel, ServerTunnel, TunnelsConfig};
use tlsnet::config::Naming;
use tlsnet::telemetry;
use tlsnet::tls::{Pattern, SpkiPin};
use tlsnet::tunnel::{Target, TunnelSet};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::logging::{self, LogFormat};
use crate::serve::{metrics_listener, Running};
use crate::tls_args::{
    setting, shutdown_signal, spawn_sighup_listener, ClientTlsArgs, ServerLimitArgs, ServerTlsArgs,
};
use crate::{parse_duration, UsageError};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, arg_required_else_help = true)]
pub struct TunnelArgs {
    /// Run every tunnel of this TOML file: `[[tunnel]]` tables with a `name`, a `mode`
    /// ("server" or "client") and that mode's flags as keys (`_` for `-`). SIGHUP, or a change
    /// of the file, adds, removes and restarts tunnels; the unchanged ones are left alone. See
    /// docs/OPERATIONS.md, "Config files".
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<TunnelCommand>,
}

#[derive(Subcommand, Debug)]
enum TunnelCommand {
    /// Terminate (mutual) TLS and relay each admitted client to a plain TCP or unix-socket
    /// backend.
    Server(ServerArgs),
    /// Listen on a local port and carry each connection over TLS to a server.
    Client(ClientArgs),
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Address to listen on for TLS clients; repeat for several.
    #[arg(long, value_name = "ADDR", required = true)]
    listen: Vec<String>,

    /// The backend: HOST:PORT, [IPv6]:PORT or unix:PATH. Must be on this machine (loopback
    /// or a unix socket) unless --unsafe-target is given.
    #[arg(long, value_name = "TARGET")]
    target: Target,

    /// Allow a --target that is not on this machine: the bytes behind the tunnel are plain
    /// text on the network.
    #[arg(long)]
    unsafe_target: bool,

    #[command(flatten)]
    tls: ServerTlsArgs,

    /// Admit every client whose certificate the client CA signed. With mutual TLS, either
    /// this or an --allow-* rule is required.
    #[arg(long, conflicts_with_all = ["allow_cn", "allow_ou", "allow_dns", "allow_uri", "allow_spki_pin"])]
    allow_all: bool,

    /// Send a PROXY protocol v2 header to the backend first: the client's address, ALPN, SNI,
    /// TLS version and cipher, and the client certificate's CN and DER (see docs/PROTOCOL.md).
    #[arg(long)]
    proxy_protocol: bool,

    /// An ALPN id to offer for the tunnel (repeatable): the backend sees the one a client
    /// chose in the PROXY header. Clients that offer none are tunnelled too.
    #[arg(long, value_name = "PROTOCOL")]
    alpn: Vec<String>,

    /// The backend must accept a connection within this time; else the client's connection
    /// is closed (with close_notify) and the cause logged.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Close a connection this long after it opened, busy or not (0: no limit).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    max_lifetime: Duration,

    #[command(flatten)]
    limits: ServerLimitArgs,

    /// Serve Prometheus metrics on GET /metrics and a health check on GET /health at this
    /// address (a bare port binds to localhost).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,

    /// Log line format.
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
}

#[derive(Args, Debug)]
struct ClientArgs {
    /// Local address to listen on for plain connections; repeat for several. Must be a
    /// loopback address unless --unsafe-listen is given.
    #[arg(long, value_name = "ADDR", required = true)]
    listen: Vec<String>,

    /// The TLS server: HOST:PORT or [IPv6]:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    target: String,

    /// Allow a --listen address that other machines can reach: they get a connection
    /// carrying this client's certificate.
    #[arg(long)]
    unsafe_listen: bool,

    /// Name to send as SNI and to check the certificate against [default: the HOST].
    #[arg(long, value_name = "NAME")]
    servername: Option<String>,

    #[command(flatten)]
    tls: ClientTlsArgs,

    /// Require the server's certificate to have this common name (repeatable; with any
    /// --verify-* rule the server must match one of them).
    #[arg(long, value_name = "NAME")]
    verify_cn: Vec<String>,

    /// Require a DNS name of the server's certificate to match this pattern (repeatable).
    #[arg(long, value_name = "PATTERN", value_parser = Pattern::dns)]
    verify_dns: Vec<Pattern>,

    /// Require a URI of the server's certificate to match this pattern (repeatable).
    #[arg(long, value_name = "PATTERN", value_parser = Pattern::uri)]
    verify_uri: Vec<Pattern>,

    /// Require the server's public key to have this pin (repeatable; sha256/BASE64).
    #[arg(long, value_name = "sha256/BASE64")]
    verify_spki_pin: Vec<SpkiPin>,

    /// Deadline for connecting to the server and for the handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Close a connection after this long without traffic (0 disables).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// Local connections served at once; more are refused (and logged).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,

    /// On SIGINT/SIGTERM, how long open connections may take to finish before they are closed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// Log line format.
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
}

pub async fn run(args: TunnelArgs) -> Result<ExitCode> {
    match (args.command, args.config) {
        (Some(TunnelCommand::Server(args)), _) => server(args).await,
        (Some(TunnelCommand::Client(args)), _) => client(args).await,
        (None, Some(path)) => from_config(path).await,
        (None, None) => Err(UsageError(
            "give `tlsnet tunnel server ...`, `tlsnet tunnel client ...` or `tlsnet tunnel --config FILE`".into(),
        )
        .into()),
    }
}

async fn server(args: ServerArgs) -> Result<ExitCode> {
    logging::init(args.log_format);
    let spec = ServerTunnel {
        listen: args.listen.clone(),
        target: args.target.clone(),
        unsafe_target: args.unsafe_target,
        tls: args.tls.settings(),
        reload_interval: args.tls.reload_interval,
        allow_all: args.allow_all,
        proxy_protocol: args.proxy_protocol,
        alpn: args.alpn.clone(),
        connect_timeout: args.connect_timeout,
        max_lifetime: args.max_lifetime,
        limits: args.limits.limits(),
    };
    spec.check(Naming::Flags).map_err(setting)?;
    let options = args.limits.options()?;
    let metrics = match &args.metrics {
        Some(spec) => Some((metrics_listener(spec).await?, telemetry::install()?)),
        None => None,
    };
    let (source, _dev_pki) = args.tls.source()?;
    let tls = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || source.build()).await??
    };
    let listeners = crate::listen::listeners(&args.listen).await?;
    let local: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    info!(
        listen = %local.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        target = %args.target,
        client_auth = source.client_auth.name(),
        allow = %if source.policy.is_empty() { "any client the CA signed".to_owned() } else { source.policy.describe() },
        proxy_protocol = args.proxy_protocol,
        "tlsnet tunnel serving"
    );
    let running = Running {
        source,
        tls,
        router: spec.router(),
        options,
        reload_every: spec.reload_every(),
        metrics,
    };
    running.run(listeners).await?;
    Ok(ExitCode::SUCCESS)
}

async fn client(args: ClientArgs) -> Result<ExitCode> {
    logging::init(args.log_format);
    let spec = ClientTunnel {
        listen: args.listen.clone(),
        target: args.target.clone(),
        unsafe_listen: args.unsafe_listen,
        servername: args.servername.clone(),
        tls: args.tls.settings(),
        verify_cn: args.verify_cn.clone(),
        verify_dns: args.verify_dns.clone(),
        verify_uri: args.verify_uri.clone(),
        verify_spki_pin: args.verify_spki_pin.clone(),
        connect_timeout: args.connect_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        shutdown_timeout: args.shutdown_timeout,
    };
    let (host, name) = spec.check(Naming::Flags).map_err(setting)?;
    let options = args.tls.options(&host, false, false, &[])?;
    let verify = spec.policy();
    let client = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || spec.client(options, name)).await??
    };
    let listeners = crate::listen::listeners(&args.listen).await?;
    info!(
        listen = %listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        target = %args.target,
        verify = %if verify.is_empty() { "-".to_owned() } else { verify.describe() },
        "tlsnet tunnel client listening"
    );
    telemetry::register("", client.stats());
    crate::listen::notify(tlsnet::net::systemd::Notice::Ready);
    client.run(listeners, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `tlsnet tunnel --config FILE`: every tunnel of the file, changed on SIGHUP and when the
/// file changes.
async fn from_config(path: PathBuf) -> Result<ExitCode> {
    let config = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || TunnelsConfig::load(&path)).await?
    }
    .map_err(|e| UsageError(e.describe()))?;
    logging::init(config.log_format.map_or(LogFormat::Human, Into::into));
    let stop_metrics = CancellationToken::new();
    if let Some(spec) = &config.metrics {
        let listener = metrics_listener(spec).await?;
        let handle = telemetry::install()?;
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "metrics on http://{addr}/metrics, health on /health");
        }
        tokio::spawn(telemetry::serve_http(
            listener,
            handle,
            stop_metrics.clone(),
        ));
    }
    let mut set = TunnelSet::new();
    let applied = set.apply(&config).await?;
    info!(file = %path.display(), tunnels = config.tunnels.len(), "tlsnet tunnels running");
    applied.log();
    let trigger = Arc::new(Notify::new());
    spawn_sighup_listener(trigger.clone());
    set.run(config, trigger, shutdown_signal()).await;
    stop_metrics.cancel();
    Ok(ExitCode::SUCCESS)
}
