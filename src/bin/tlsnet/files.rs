//! `tlsnet files put|get|ls|rm`, and the files service's flags of `tlsnet serve`. Thin: the
//! work is in [`tlsnet::files`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tlsnet::files::codec::{Area, EntryKind};
use tlsnet::files::{
    FilesClient, FilesService, GetOptions, Limits, Progress, PutOptions, RemotePath, Spaces,
    Summary, FILES_ALPN,
};
use tlsnet::net::client::{split_host_port, Connector};
use tlsnet::net::ClientStream;
use tlsnet::service::{Service, UserIdSource};
use tlsnet::tls::server_name;
use tracing::info;

use crate::tls_args::ClientTlsArgs;
use crate::{parse_duration, UsageError};

/// The files service's flags of `tlsnet serve`.
#[derive(Args, Debug)]
pub struct FilesServeArgs {
    /// Where the files service keeps every user's space [default: $XDG_STATE_HOME/tlsnet/files
    /// or ~/.local/state/tlsnet/files].
    #[arg(long, value_name = "DIR", env = "TLSNET_FILES_ROOT")]
    pub files_root: Option<PathBuf>,

    /// Bytes each user may store (own files, inbox, partial uploads): 500M, 10G, ... (0: no
    /// limit).
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    pub quota: u64,

    /// Largest file the files service stores.
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = parse_size)]
    pub max_file_size: u64,

    /// A partial upload untouched for this long is removed (at start, and when its user's
    /// next session starts): 7d, 12h, ...
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub partial_ttl: Duration,

    /// Do not run the files service (ALPN tlsnet-files/1).
    #[arg(long)]
    pub no_files: bool,
}

fn parse_size(text: &str) -> Result<u64, tlsnet::error::ParseError> {
    tlsnet::files::parse_size(text)
}

impl FilesServeArgs {
    /// The service, with its root made; `None` with --no-files.
    pub fn service(&self, user_id: UserIdSource) -> Result<Option<Arc<dyn Service>>> {
        if self.no_files {
            return Ok(None);
        }
        let root = match &self.files_root {
            Some(dir) => dir.clone(),
            None => tlsnet::files::default_root().ok_or_else(|| {
                UsageError(
                    "cannot find a home for the files service: set --files-root DIR (or HOME)"
                        .into(),
                )
            })?,
        };
        let limits = Limits {
            quota: (self.quota > 0).then_some(self.quota),
            max_file: self.max_file_size,
            partial_ttl: self.partial_ttl,
        };
        let spaces = Spaces::open(&root, limits)
            .with_context(|| format!("files service: cannot use {}", root.display()))?;
        info!(
            root = %root.display(),
            quota = %limits.quota.map_or("none".to_owned(), |q| q.to_string()),
            max_file = limits.max_file,
            partial_ttl = ?limits.partial_ttl,
            user_id = %user_id,
            "files service on ALPN tlsnet-files/1"
        );
        Ok(Some(Arc::new(FilesService::new(spaces, user_id))))
    }
}

#[derive(Args, Debug)]
pub struct FilesArgs {
    #[command(subcommand)]
    command: FilesCommand,
}

#[derive(Subcommand, Debug)]
enum FilesCommand {
    /// Send local files and directories (recursively, with modes and times) to your space,
    /// or with --to to another user's inbox. Run it again after an interruption: it goes on
    /// where it stopped.
    Put {
        #[command(flatten)]
        common: Common,
        /// Local files and directories.
        #[arg(value_name = "LOCAL", required = true)]
        local: Vec<PathBuf>,
        /// Send to this user's inbox (they fetch it with `get --inbox`, also later).
        #[arg(long, value_name = "USER")]
        to: Option<String>,
        /// The remote directory to put them in [default: the top of the space].
        #[arg(long, value_name = "REMOTE_DIR")]
        dir: Option<String>,
    },
    /// Fetch files and directories from your space (or, with --inbox, what others sent you:
    /// fetched files leave the inbox).
    Get {
        #[command(flatten)]
        common: Common,
        /// Remote files and directories (in the inbox: SENDER/PATH).
        #[arg(value_name = "REMOTE", required = true)]
        remote: Vec<String>,
        /// From the inbox.
        #[arg(long)]
        inbox: bool,
        /// Where to put them.
        #[arg(
            short = 'o',
            long = "out",
            value_name = "LOCAL_DIR",
            default_value = "."
        )]
        out: PathBuf,
    },
    /// List a directory of your space (or of the inbox).
    Ls {
        #[command(flatten)]
        common: Common,
        /// The directory [default: the top].
        #[arg(value_name = "REMOTE_DIR")]
        remote: Option<String>,
        /// The inbox.
        #[arg(long)]
        inbox: bool,
        /// Everything below, too.
        #[arg(long, short = 'R')]
        recursive: bool,
    },
    /// Remove files or directory trees from your space (or the inbox).
    Rm {
        #[command(flatten)]
        common: Common,
        /// Remote files and directories.
        #[arg(value_name = "REMOTE", required = true)]
        remote: Vec<String>,
        /// From the inbox.
        #[arg(long)]
        inbox: bool,
    },
}

/// Flags every `files` command takes.
#[derive(Args, Debug)]
struct Common {
    /// The server: HOST:PORT, or [IPv6]:PORT.
    #[arg(value_name = "HOST:PORT")]
    addr: String,

    /// Act as NAME: a client certificate for NAME from the development PKI of a local
    /// server (issued on first use). The server takes NAME as the user id.
    #[arg(long = "as", value_name = "NAME", conflicts_with_all = ["cert", "key"])]
    as_name: Option<String>,

    /// Name to send as SNI and to check the certificate against [default: the HOST].
    #[arg(long, value_name = "NAME")]
    servername: Option<String>,

    #[command(flatten)]
    tls: ClientTlsArgs,

    /// Print a JSON summary (or listing) on stdout, no progress bar.
    #[arg(long)]
    json: bool,

    /// No progress bar and no notes; errors are still printed.
    #[arg(long, short)]
    quiet: bool,

    /// Bytes per second at most: 500K, 10M (default: as fast as possible).
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    limit_rate: Option<u64>,

    /// Deadline for connecting and for the handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

impl Common {
    async fn connect(&self) -> Result<FilesClient<ClientStream>> {
        let (host, _) = split_host_port(&self.addr).map_err(|e| UsageError(e.to_string()))?;
        let name = self.servername.clone().unwrap_or_else(|| host.clone());
        let name = server_name(&name).map_err(|e| UsageError(format!("--servername: {e}")))?;
        let alpn = [String::from_utf8_lossy(FILES_ALPN).into_owned()];
        let mut options = self
            .tls
            .options(&host, false, self.quiet || self.json, &alpn)?;
        if let Some(user) = &self.as_name {
            options.identity = Some(self.tls.identity_as(&host, user)?);
        }
        let config = tokio::task::spawn_blocking(move || options.build()).await??;
        let mut connector = Connector::new(config);
        connector.connect_timeout = self.timeout;
        connector.handshake_timeout = self.timeout;
        let (client, _report) = tlsnet::files::client::connect(&connector, &self.addr, name)
            .await
            .with_context(|| format!("files on {}", self.addr))?;
        Ok(client)
    }

    fn progress(&self) -> Bar {
        let shown = !self.json && !self.quiet && std::io::stderr().is_terminal();
        Bar {
            bar: shown.then(|| {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar
            }),
            quiet: self.quiet,
        }
    }
}

/// The progress bar (on a terminal only) and the notes.
struct Bar {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress for Bar {
    fn start(&self, _files: u64, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
    fn note(&self, message: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(format!("tlsnet: {message}")),
            None => eprintln!("tlsnet: {message}"),
        }
    }
    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn remote_path(text: &str) -> Result<RemotePath> {
    RemotePath::parse_or_root(text)
        .map_err(|e| UsageError(format!("'{}': refused name: {e}", text.escape_debug())).into())
}

fn remote_paths(texts: &[String]) -> Result<Vec<RemotePath>> {
    texts.iter().map(|t| remote_path(t)).collect()
}

/// A put or a get, with its flags parsed.
enum Transfer {
    Put(Vec<PathBuf>, PutOptions),
    Get(Vec<RemotePath>, GetOptions),
}

/// Runs a put or a get: connect, transfer with a progress bar, close, report.
async fn transfer(common: &Common, job: Transfer) -> Result<ExitCode> {
    let mut client = common.connect().await?;
    let bar = common.progress();
    let (what, summary) = match &job {
        Transfer::Put(local, options) => ("put", client.put(local, options, &bar).await?),
        Transfer::Get(remote, options) => ("get", client.get(remote, options, &bar).await?),
    };
    client.close().await;
    report(what, common, &summary)
}

pub async fn run(args: FilesArgs) -> Result<ExitCode> {
    match args.command {
        FilesCommand::Put {
            common,
            local,
            to,
            dir,
        } => {
            let options = PutOptions {
                to,
                dir: remote_path(dir.as_deref().unwrap_or(""))?,
                limit_rate: common.limit_rate,
            };
            transfer(&common, Transfer::Put(local, options)).await
        }
        FilesCommand::Get {
            common,
            remote,
            inbox,
            out,
        } => {
            let options = GetOptions {
                inbox,
                out,
                limit_rate: common.limit_rate,
            };
            transfer(&common, Transfer::Get(remote_paths(&remote)?, options)).await
        }
        FilesCommand::Rm {
            common,
            remote,
            inbox,
        } => {
            let remote = remote_paths(&remote)?;
            let mut client = common.connect().await?;
            let area = if inbox { Area::Inbox } else { Area::Files };
            let summary = client.remove(area, &remote).await?;
            client.close().await;
            report("rm", &common, &summary)
        }
        FilesCommand::Ls {
            common,
            remote,
            inbox,
            recursive,
        } => {
            let path = remote_path(remote.as_deref().unwrap_or(""))?;
            let mut client = common.connect().await?;
            let area = if inbox { Area::Inbox } else { Area::Files };
            let entries = client.list(area, &path, recursive).await?;
            let welcome = client.welcome().clone();
            client.close().await;
            if common.json {
                let list: Vec<_> = entries
                    .iter()
                    .map(|(path, e)| {
                        serde_json::json!({
                            "path": path.as_str(),
                            "kind": if e.kind == EntryKind::Dir { "dir" } else { "file" },
                            "size": e.meta.size,
                            "mode": format!("{:04o}", e.meta.mode & 0o7777),
                            "mtime": e.meta.mtime.secs,
                            "mtime_nanos": e.meta.mtime.nanos,
                        })
                    })
                    .collect();
                let out = serde_json::json!({
                    "user": welcome.user,
                    "used": welcome.used,
                    "quota": (welcome.quota > 0).then_some(welcome.quota),
                    "entries": list,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for (path, e) in &entries {
                    let dir = e.kind == EntryKind::Dir;
                    println!(
                        "{}{} {:>12} {} {}{}",
                        if dir { 'd' } else { '-' },
                        mode_text(e.meta.mode),
                        e.meta.size,
                        time_text(e.meta.mtime.secs),
                        path.as_str(),
                        if dir { "/" } else { "" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn mode_text(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn time_text(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]"
            ))
            .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn report(what: &str, common: &Common, summary: &Summary) -> Result<ExitCode> {
    if common.json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        for failed in &summary.failed {
            eprintln!(
                "tlsnet: {}: {} ({})",
                failed.path, failed.error, failed.code
            );
        }
        if !common.quiet {
            let mib = summary.bytes as f64 / 1048576.0;
            let rate = if summary.seconds > 0.0 {
                mib / summary.seconds
            } else {
                0.0
            };
            let resumed = if summary.resumed_bytes > 0 {
                format!(", {} bytes kept from before", summary.resumed_bytes)
            } else {
                String::new()
            };
            eprintln!(
                "{what}: {} files, {} directories, {mib:.1} MiB in {:.2} s ({rate:.1} MiB/s){resumed}{}",
                summary.files,
                summary.dirs,
                summary.seconds,
                if summary.failed.is_empty() {
                    String::new()
                } else {
                    format!(", {} failed", summary.failed.len())
                }
            );
        }
    }
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
