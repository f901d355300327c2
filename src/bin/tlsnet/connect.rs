//! `tlsnet connect`: verify the server, report the handshake, relay stdin and stdout.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;
use tlsnet::net::client::{read_error_cause, split_host_port, Connector};
use tlsnet::net::relay::{relay, Direction, RelayError, RelayOptions, Until};
use tlsnet::tls::server_name;

use crate::tls_args::ClientTlsArgs;
use crate::{parse_duration, UsageError};

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Server address: HOST:PORT, or [IPv6]:PORT.
    #[arg(value_name = "HOST:PORT")]
    addr: String,

    /// Name to send as SNI and to check the certificate against [default: the HOST].
    #[arg(long, value_name = "NAME")]
    servername: Option<String>,

    #[command(flatten)]
    tls: ClientTlsArgs,

    /// DANGEROUS: do not verify the server at all. Anyone on the path can read and change the
    /// traffic. A warning is printed on every use.
    #[arg(long, conflicts_with_all = ["ca", "pin", "crl"])]
    insecure: bool,

    /// ALPN protocol to offer (repeatable).
    #[arg(long, value_name = "PROTOCOL")]
    alpn: Vec<String>,

    /// Do not print the handshake report.
    #[arg(long, short)]
    quiet: bool,

    /// Print the handshake report as JSON (on stderr, like the human report).
    #[arg(long, conflicts_with = "quiet")]
    json: bool,

    /// Deadline for connecting and for the handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

pub async fn run(args: ConnectArgs) -> Result<ExitCode> {
    let (host, _port) = split_host_port(&args.addr).map_err(|e| UsageError(e.to_string()))?;
    let name = args.servername.clone().unwrap_or_else(|| host.clone());
    let name = server_name(&name).map_err(|e| UsageError(format!("--servername: {e}")))?;
    let options = args
        .tls
        .options(&host, args.insecure, args.quiet, &args.alpn)?;
    // Building may read the system trust store: not on the runtime's workers.
    let config = tokio::task::spawn_blocking(move || options.build()).await??;
    let mut connector = Connector::new(config);
    connector.connect_timeout = args.timeout;
    connector.handshake_timeout = args.timeout;

    let (stream, report) = connector.connect(&args.addr, name).await?;
    if args.json {
        eprintln!("{}", serde_json::to_string_pretty(&report)?);
    } else if !args.quiet {
        eprint!("connected to {}\n{report}", args.addr);
    }
    relay_stdio(stream)
        .await
        .map_err(|cause| anyhow!("connection to {} failed: {cause}", args.addr))?;
    Ok(ExitCode::SUCCESS)
}

/// stdin → server and server → stdout. On stdin EOF, sends close_notify and keeps reading
/// until the server closes. Returns the cause in words if the connection fails.
async fn relay_stdio(stream: tlsnet::net::ClientStream) -> Result<(), String> {
    let terminal = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let options = RelayOptions {
        idle_timeout: None,
        until: Until::AClosed,
    };
    match relay(stream, terminal, options).await {
        Ok(_) => Ok(()),
        Err(RelayError::Io {
            direction: Direction::AToB,
            action: "write",
            source,
            ..
        }) => Err(format!("cannot write to stdout: {source}")),
        Err(RelayError::Io {
            direction: Direction::BToA,
            action: "read",
            source,
            ..
        }) => Err(format!("cannot read stdin: {source}")),
        Err(RelayError::Io { source, .. }) => {
            if source.kind() == std::io::ErrorKind::BrokenPipe {
                Ok(())
            } else {
                Err(read_error_cause(&source))
            }
        }
        Err(other) => Err(other.to_string()),
    }
}
