//! `tlsnet completions SHELL` and `tlsnet man --out-dir DIR`: shell completions and manual
//! pages made from the same clap definitions as `--help`, so they never drift from the flags.
//! `scripts/package` runs both with the built binary to fill the Debian package.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::{Cli, UsageError};

/// The name completions and manual pages are written for.
const BIN: &str = "tlsnet";

#[derive(Args, Debug)]
#[command(after_help = "Install, for example:\n  \
bash: tlsnet completions bash > ~/.local/share/bash-completion/completions/tlsnet\n  \
zsh:  tlsnet completions zsh > ~/.zfunc/_tlsnet   (with ~/.zfunc on $fpath)\n  \
fish: tlsnet completions fish > ~/.config/fish/completions/tlsnet.fish\n\
The Debian package installs them for bash, zsh and fish.")]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum, value_name = "SHELL")]
    shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages to (made if missing): tlsnet.1, tlsnet-serve.1, ...
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> Result<ExitCode> {
    // Rendered into memory first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), BIN, &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .context("cannot write the completion script to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a section-1 page for `tlsnet` and for each of its visible subcommands, nested ones
/// included (`tlsnet-pki-init.1`); prints the path of each page written.
pub fn man(args: ManArgs) -> Result<ExitCode> {
    let dir = &args.out_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let date = page_date()?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Names the subcommands `tlsnet-serve`, `tlsnet-pki-init`, ... (their page titles).
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, &date, dir, &mut written)?;
    let mut stdout = std::io::stdout().lock();
    for path in &written {
        writeln!(stdout, "{}", path.display()).context("cannot write to stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The date in the pages' footer: that of `SOURCE_DATE_EPOCH` when set (reproducible
/// builds; `scripts/package` sets it to the commit's date), else today (UTC).
fn page_date() -> Result<String> {
    let when = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
            .ok_or_else(|| {
                UsageError(format!(
                    "SOURCE_DATE_EPOCH must be a number of seconds since 1970, not {text:?}"
                ))
            })?,
        Err(_) => time::OffsetDateTime::now_utc(),
    };
    when.format(time::macros::format_description!("[year]-[month]-[day]"))
        .context("cannot format the date of the manual pages")
}

fn write_pages(
    cmd: &clap::Command,
    date: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    // A date must be given: clap_mangen writes an empty one as nothing, which shifts the
    // other fields of `.TH`.
    let page = clap_mangen::Man::new(cmd.clone())
        .date(date)
        .source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")))
        .manual("tlsnet manual");
    let path = dir.join(page.get_filename());
    let mut roff = Vec::new();
    page.render(&mut roff)
        .with_context(|| format!("cannot render {}", path.display()))?;
    std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, date, dir, written)?;
    }
    Ok(())
}
