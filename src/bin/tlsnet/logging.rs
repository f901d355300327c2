//! Log output: human-readable lines by default, JSON objects with `--log-format json`.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

impl From<tlsnet::config::LogFormat> for LogFormat {
    fn from(format: tlsnet::config::LogFormat) -> Self {
        match format {
            tlsnet::config::LogFormat::Human => LogFormat::Human,
            tlsnet::config::LogFormat::Json => LogFormat::Json,
        }
    }
}

/// Logs to stderr at `info` (or what `RUST_LOG` says).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            // Every enclosing span too: a tunnel's name is on its connections' lines.
            .with_span_list(true)
            .try_init(),
    };
}
