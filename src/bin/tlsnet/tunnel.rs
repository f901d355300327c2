//! `tlsnet tunnel server|client`: flags, then the library's [`tlsnet::tunnel`] in the
//! ordinary server (server side) or on a plain local listener (client side).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use tlsnet::net::client::{split_host_port, Connector};
use tlsnet::service::{Router, Service};
use tlsnet::telemetry;
use tlsnet::tls::{server_name, AccessPolicy, ClientAuth, Pattern, Rule, SpkiPin};
use tlsnet::tunnel::target::is_loopback_listen;
use tlsnet::tunnel::{Target, TunnelClient, TunnelClientOptions, TunnelOptions, TunnelService};
use tracing::info;

use crate::logging::{self, LogFormat};
use crate::serve::{metrics_listener, Running};
use crate::tls_args::{shutdown_signal, ClientTlsArgs, ServerLimitArgs, ServerTlsArgs};
use crate::{parse_duration, UsageError};

#[derive(Args, Debug)]
pub struct TunnelArgs {
    #[command(subcommand)]
    command: TunnelCommand,
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
    match args.command {
        TunnelCommand::Server(args) => server(args).await,
        TunnelCommand::Client(args) => client(args).await,
    }
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

async fn server(args: ServerArgs) -> Result<ExitCode> {
    logging::init(args.log_format);
    if !args.target.is_local() && !args.unsafe_target {
        return Err(UsageError(format!(
            "--target {} is not on this machine: the bytes behind the tunnel would cross the network in plain text; give --unsafe-target if that is what you want",
            args.target
        ))
        .into());
    }
    let options = args.limits.options()?;
    if args.connect_timeout.is_zero() {
        return Err(UsageError("--connect-timeout must be more than 0".into()).into());
    }
    let metrics = match &args.metrics {
        Some(spec) => Some((metrics_listener(spec).await?, telemetry::install()?)),
        None => None,
    };
    let (source, _dev_pki) = args.tls.source()?;
    if source.client_auth == ClientAuth::Required && source.policy.is_empty() && !args.allow_all {
        return Err(UsageError(
            "who may use the tunnel? give --allow-cn, --allow-ou, --allow-dns, --allow-uri or --allow-spki-pin, or --allow-all for every client the CA signed"
                .into(),
        )
        .into());
    }
    let tls = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || source.build()).await??
    };
    let listeners = crate::listen::listeners(&args.listen).await?;
    let local: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let tunnel = TunnelService::new(
        args.target.clone(),
        TunnelOptions {
            connect_timeout: args.connect_timeout,
            max_lifetime: nonzero(args.max_lifetime),
            proxy_protocol: args.proxy_protocol,
        },
    );
    info!(
        listen = %local.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        target = %args.target,
        client_auth = source.client_auth.name(),
        allow = %if source.policy.is_empty() { "any client the CA signed".to_owned() } else { source.policy.describe() },
        proxy_protocol = args.proxy_protocol,
        "tlsnet tunnel serving"
    );
    let tunnel: Arc<dyn Service> = Arc::new(tunnel);
    let mut router = Router::new(tunnel.clone());
    for id in &args.alpn {
        router = router.route(id.as_bytes(), tunnel.clone());
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

async fn client(args: ClientArgs) -> Result<ExitCode> {
    logging::init(args.log_format);
    for spec in &args.listen {
        if !is_loopback_listen(spec) && !args.unsafe_listen {
            return Err(UsageError(format!(
                "--listen {spec} is not a loopback address: other machines could use this client's identity; give --unsafe-listen if that is what you want"
            ))
            .into());
        }
    }
    if args.max_connections == 0 {
        return Err(UsageError("--max-connections must be at least 1".into()).into());
    }
    let (host, _) =
        split_host_port(&args.target).map_err(|e| UsageError(format!("--target: {e}")))?;
    let name = args.servername.clone().unwrap_or_else(|| host.clone());
    let name = server_name(&name).map_err(|e| UsageError(format!("--servername: {e}")))?;
    let mut rules = Vec::new();
    rules.extend(args.verify_cn.iter().cloned().map(Rule::CommonName));
    rules.extend(args.verify_dns.iter().cloned().map(Rule::Dns));
    rules.extend(args.verify_uri.iter().cloned().map(Rule::Uri));
    rules.extend(args.verify_spki_pin.iter().copied().map(Rule::SpkiPin));
    let verify = AccessPolicy::new(rules);
    let mut options = args.tls.options(&host, false, false, &[])?;
    // Checked in the handshake: a server that matches no rule never gets a byte.
    options.server_policy = verify.clone();
    let config = tokio::task::spawn_blocking(move || options.build()).await??;
    let mut connector = Connector::new(config);
    connector.connect_timeout = args.connect_timeout;
    connector.handshake_timeout = args.connect_timeout;

    let listeners = crate::listen::listeners(&args.listen).await?;
    info!(
        listen = %listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        target = %args.target,
        verify = %if verify.is_empty() { "-".to_owned() } else { verify.describe() },
        "tlsnet tunnel client listening"
    );
    let client = TunnelClient::with_options(
        connector,
        args.target.clone(),
        name,
        TunnelClientOptions {
            max_connections: args.max_connections,
            idle_timeout: nonzero(args.idle_timeout),
            shutdown_timeout: args.shutdown_timeout,
        },
    );
    telemetry::register("", client.stats());
    crate::listen::notify(tlsnet::net::systemd::Notice::Ready);
    client.run(listeners, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
