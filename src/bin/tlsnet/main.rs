//! `tlsnet`: a thin command line over the `tlsnet` library.
//!
//! Exit codes: 0 success; 1 connection, verification or runtime failure (a one-line cause is
//! printed); 2 usage error.

mod chat;
mod connect;
mod files;
mod inspect;
mod keylog;
mod listen;
mod logging;
mod pki;
mod serve;
mod tls_args;
mod tooling;
mod tunnel;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// A secure network on TLS 1.3 and mutual TLS: server, client and certificates.
#[derive(Parser, Debug)]
#[command(name = "tlsnet", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success, 1 connection or verification failure, 2 usage error.\n\
Start with `tlsnet serve` (no files needed), then `tlsnet connect localhost:8443` in another terminal."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a TLS server (echo service by default; a development PKI is made on first run).
    Serve(serve::ServeArgs),
    /// Connect to a TLS server: verify it, report the handshake, then relay stdin/stdout.
    Connect(connect::ConnectArgs),
    /// Send and receive messages through a server's msg service (users are certificates).
    Chat(chat::ChatArgs),
    /// Show the X.509 details of certificates in a file or presented by a server.
    Inspect(inspect::InspectArgs),
    /// Transfer files: put, get, ls, rm in your space on a server; send to other users.
    Files(files::FilesArgs),
    /// Put (mutual) TLS in front of a plain TCP service, or carry a local port to a TLS server.
    Tunnel(tunnel::TunnelArgs),
    /// Run a private certificate authority: init, issue, list, renew, revoke, crl.
    Pki(pki::PkiArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(tooling::CompletionsArgs),
    /// Write the manual pages (tlsnet.1, tlsnet-serve.1, ...) to a directory.
    #[command(hide = true)]
    Man(tooling::ManArgs),
}

/// An error in what the user asked for: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    // The matches too: `serve --config` asks them which flags were given on the command line.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let serve_matches = matches.subcommand_matches("serve").cloned();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tlsnet: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args, serve_matches).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Inspect(args) => inspect::run(args).await,
            Command::Tunnel(args) => tunnel::run(args).await,
            Command::Files(args) => files::run(args).await,
            Command::Pki(args) => pki::run(args).await,
            Command::Completions(args) => tooling::completions(args),
            Command::Man(args) => tooling::man(args),
        }
    });
    // A read of stdin may still be blocked in a worker thread; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tlsnet: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Parses a duration flag (`10s`, `500ms`, `5m`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, tlsnet::error::ParseError> {
    tlsnet::duration::parse(text)
}
