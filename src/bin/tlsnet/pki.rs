//! `tlsnet pki`: a private certificate authority.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct PkiArgs {}

pub async fn run(_args: PkiArgs) -> Result<ExitCode> {
    anyhow::bail!("pki: not built yet")
}
