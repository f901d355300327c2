//! `tlsnet connect`: verify the server, report the handshake, relay stdin and stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use tlsnet::net::client::{read_error_cause, split_host_port, Connector};
use tlsnet::net::relay::{relay, Direction, RelayError, RelayOptions, Until};
use tlsnet::pki::dev::{is_local_host, DevPki};
use tlsnet::tls::{
    load_certs, load_crls, server_name, ClientTlsOptions, Identity, ServerTrust, SpkiPin,
};

use crate::keylog::KeyLogArgs;
use crate::{parse_duration, UsageError};

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Server address: HOST:PORT, or [IPv6]:PORT.
    #[arg(value_name = "HOST:PORT")]
    addr: String,

    /// Trust the CA certificates in this PEM file instead of the system's trust store.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Name to send as SNI and to check the certificate against [default: the HOST].
    #[arg(long, value_name = "NAME")]
    servername: Option<String>,

    /// Require the server's public key to match this pin (sha256/BASE64, as the report
    /// prints). Without --ca, the pin replaces the CA check; the name and dates are still checked.
    #[arg(long, value_name = "sha256/BASE64")]
    pin: Option<SpkiPin>,

    /// Client certificate chain (PEM), for servers that require one.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// Private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,

    /// CRL file (PEM or DER): a server certificate listed there is refused. Needs a CA
    /// (system roots or --ca).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    crl: Option<PathBuf>,

    /// DANGEROUS: do not verify the server at all. Anyone on the path can read and change the
    /// traffic. A warning is printed on every use.
    #[arg(long, conflicts_with_all = ["ca", "pin"])]
    insecure: bool,

    /// Also offer TLS 1.2.
    #[arg(long)]
    tls12: bool,

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

    /// Development PKI used for local hosts when no --ca is given [default: as for serve].
    #[arg(long, value_name = "DIR", env = "TLSNET_PKI_DIR")]
    pki_dir: Option<PathBuf>,

    #[command(flatten)]
    keylog: KeyLogArgs,
}

pub async fn run(args: ConnectArgs) -> Result<ExitCode> {
    let (host, _port) = split_host_port(&args.addr).map_err(|e| UsageError(e.to_string()))?;
    let name = args.servername.clone().unwrap_or_else(|| host.clone());
    let name = server_name(&name).map_err(|e| UsageError(format!("--servername: {e}")))?;
    let options = client_options(&args, &host)?;
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

fn client_options(args: &ConnectArgs, host: &str) -> Result<ClientTlsOptions> {
    let mut identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(Identity::from_files(cert, key)?),
        _ => None,
    };
    let trust = if args.insecure {
        eprintln!(
            "tlsnet: WARNING: --insecure: the server's certificate is NOT verified; anyone on the \
             network path can read and change this connection"
        );
        ServerTrust::Insecure
    } else if let Some(ca) = &args.ca {
        ServerTrust::Roots(load_certs(ca)?)
    } else if args.pin.is_some() {
        if args.crl.is_some() {
            return Err(UsageError(
                "--crl needs a CA to check against (--ca FILE); with --pin alone there is none"
                    .into(),
            )
            .into());
        }
        ServerTrust::PinOnly
    } else if let Some(pki) = local_dev_pki(args, host) {
        if !args.quiet {
            eprintln!(
                "tlsnet: local host and no --ca: using the development PKI in {}",
                pki.dir().display()
            );
        }
        if identity.is_none() {
            identity = Some(
                Identity::from_files(&pki.client_cert(), &pki.client_key())
                    .context("development client certificate")?,
            );
        }
        ServerTrust::Roots(load_certs(&pki.ca_cert())?)
    } else {
        ServerTrust::System
    };
    Ok(ClientTlsOptions {
        trust,
        pin: args.pin,
        identity,
        allow_tls12: args.tls12,
        alpn: args.alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
        crls: match &args.crl {
            Some(path) => load_crls(path)?,
            None => Vec::new(),
        },
        key_log: args.keylog.open()?,
    })
}

fn local_dev_pki(args: &ConnectArgs, host: &str) -> Option<DevPki> {
    if !is_local_host(host) {
        return None;
    }
    let dir = args.pki_dir.clone().or_else(DevPki::default_dir)?;
    let pki = DevPki::at(dir);
    pki.exists().then_some(pki)
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
