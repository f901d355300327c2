//! `tlsnet inspect`: certificates from a file or from a remote server.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A certificate file (PEM, DER, PKCS#12) or a server's HOST:PORT.
    #[arg(value_name = "PATH|HOST:PORT")]
    target: String,
}

pub async fn run(args: InspectArgs) -> Result<ExitCode> {
    anyhow::bail!("inspect {}: not built yet", args.target)
}
