//! `tlsnet inspect`: certificates from a file or from a remote server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tlsnet::inspect::remote::{RemoteOptions, TrustAnchors};
use tlsnet::inspect::starttls::StartTls;
use tlsnet::inspect::{self, file, remote, text};
use tlsnet::tls::{load_certs, Identity};

use crate::keylog::KeyLogArgs;
use crate::{parse_duration, UsageError};

#[derive(Args, Debug)]
#[command(
    after_help = "A TARGET that names an existing file is read as a file; otherwise it is \
a server's HOST:PORT. A server's chain is shown even when it is not trusted: the connection is \
closed without sending any data, and the verdict says whether `tlsnet connect` would trust it.\n\
Exit codes: 0 shown; 1 failure, or --check-expiry found a certificate expiring in time; \
2 usage error."
)]
pub struct InspectArgs {
    /// A certificate file (PEM, DER, PKCS#12) or a server's HOST:PORT.
    #[arg(value_name = "PATH|HOST:PORT")]
    target: String,

    /// Print JSON instead of text.
    #[arg(long, conflicts_with = "pem")]
    json: bool,

    /// Print the certificates as PEM (for a server: the chain it presented), nothing else.
    #[arg(long)]
    pem: bool,

    /// Exit 1 when a certificate expires within this time (or has expired), like
    /// `openssl x509 -checkend`. E.g. 30d, 12h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    check_expiry: Option<Duration>,

    /// Password of a PKCS#12 file: the first line of this file.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// Server: judge the chain against the CA certificates in this PEM file instead of the
    /// system's trust store.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Server: name to send as SNI and to check the certificate against [default: the HOST].
    #[arg(long, value_name = "NAME")]
    servername: Option<String>,

    /// Server: client certificate chain (PEM), for servers that require one.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// Server: private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,

    /// Server: speak this protocol in plain text first, then start TLS on the same connection.
    #[arg(long, value_name = "smtp|imap|pop3")]
    starttls: Option<StartTls>,

    /// Server: ALPN protocol to offer (repeatable), e.g. h2, http/1.1.
    #[arg(long, value_name = "PROTOCOL")]
    alpn: Vec<String>,

    /// Server: deadline for connecting, for STARTTLS and for the handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,

    // Server only. Lets Wireshark decrypt the handshake (TLS 1.3 encrypts the certificates).
    #[command(flatten)]
    keylog: KeyLogArgs,
}

pub async fn run(args: InspectArgs) -> Result<ExitCode> {
    let path = Path::new(&args.target);
    let chain = if path.exists() {
        inspect_file(&args, path)?
    } else if args.target.contains(':') {
        inspect_server(&args).await?
    } else {
        return Err(UsageError(format!(
            "{}: no such file, and not a server address (HOST:PORT)",
            args.target
        ))
        .into());
    };
    Ok(check_expiry(&args, &chain))
}

fn inspect_file(
    args: &InspectArgs,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let server_only = [
        (args.ca.is_some(), "--ca"),
        (args.servername.is_some(), "--servername"),
        (args.cert.is_some(), "--cert"),
        (args.starttls.is_some(), "--starttls"),
        (!args.alpn.is_empty(), "--alpn"),
        (args.keylog.is_set(), "--keylog"),
    ];
    if let Some((_, flag)) = server_only.iter().find(|(set, _)| *set) {
        return Err(UsageError(format!(
            "{flag} applies to a server, and {} is a file",
            args.target
        ))
        .into());
    }
    let password = match &args.password_file {
        Some(f) => Some(file::read_password_file(f).context("--password-file")?),
        None => None,
    };
    let inspection = file::inspect(path, password.as_deref())?;
    if args.pem {
        emit(&inspect::to_pem(&inspection.chain))?;
    } else if args.json {
        let json = serde_json::json!({
            "path": inspection.path,
            "format": inspection.format,
            "friendly_name": inspection.friendly_name,
            "private_key": inspection.private_key,
            "certificates": inspection.certificates,
        });
        emit(&format!("{}\n", serde_json::to_string_pretty(&json)?))?;
    } else {
        emit(&text::file(&inspection))?;
    }
    Ok(inspection.chain)
}

async fn inspect_server(
    args: &InspectArgs,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    if args.password_file.is_some() {
        return Err(
            UsageError("--password-file applies to a PKCS#12 file, not a server".into()).into(),
        );
    }
    tlsnet::net::client::split_host_port(&args.target).map_err(|e| UsageError(e.to_string()))?;
    if let Some(name) = &args.servername {
        tlsnet::tls::server_name(name).map_err(|e| UsageError(format!("--servername: {e}")))?;
    }
    let anchors = match &args.ca {
        Some(ca) => TrustAnchors::Roots {
            source: ca.display().to_string(),
            certs: load_certs(ca)?,
        },
        None => TrustAnchors::System,
    };
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(Identity::from_files(cert, key)?),
        _ => None,
    };
    let options = RemoteOptions {
        server_name: args.servername.clone(),
        anchors,
        identity,
        starttls: args.starttls,
        alpn: args.alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
        timeout: args.timeout,
        key_log: args.keylog.open()?,
    };
    let inspection = remote::fetch(&args.target, &options).await?;
    if args.pem {
        emit(&inspect::to_pem(&inspection.chain))?;
    } else if args.json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&inspection.to_json())?
        ))?;
    } else {
        emit(&text::remote(&inspection))?;
    }
    Ok(inspection.chain)
}

fn check_expiry(
    args: &InspectArgs,
    chain: &[rustls::pki_types::CertificateDer<'static>],
) -> ExitCode {
    let Some(within) = args.check_expiry else {
        return ExitCode::SUCCESS;
    };
    let expiring = inspect::expiring_within(chain, within);
    let period = period(within);
    if expiring.is_empty() {
        eprintln!("tlsnet: no certificate expires within {period}");
        return ExitCode::SUCCESS;
    }
    for e in &expiring {
        let when = if e.expired {
            "EXPIRED on"
        } else {
            "expires on"
        };
        eprintln!(
            "tlsnet: certificate {} ({}) {when} {}: within {period}",
            e.index, e.subject, e.not_after
        );
    }
    ExitCode::from(1)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// A period in the largest whole unit: `30d`, `12h`, `90m`, `45s`.
fn period(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => tlsnet::duration::format(d),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        _ => tlsnet::duration::format(d),
    }
}
