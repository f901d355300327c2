//! Configuration files (TOML): `tlsnet serve --config FILE` ([`serve`]) and `tlsnet tunnel
//! --config FILE` ([`tunnel`]), and the settings both they and the command-line flags turn
//! into library values ([`settings`]).
//!
//! A key is the flag's name with `_` for `-` (`--client-ca` is `client_ca`); a repeatable flag
//! is an array (a single string is taken as an array of one); a duration is a string as on
//! the command line (`"10s"`, `"5m"`) or a number of seconds. Unknown keys are errors. Every
//! error names the file, the line and the key at fault (and the tunnel, in a tunnels file):
//!
//! ```text
//! tunnels.toml:7:1: tunnel "db": key `bogus`: unknown field `bogus`, expected one of ...
//! ```

pub mod serve;
pub mod settings;
pub mod tunnel;

mod de;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::BoxError;

pub use settings::{ClientTlsSettings, ServerLimits, ServerTlsSettings};

/// How a setting is named in messages: as a flag (`--client-ca`) or as a key of a file
/// (`client_ca`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// `--client-ca`.
    Flags,
    /// `client_ca`.
    Keys,
}

impl Naming {
    /// The setting `key` (written with `_`) as this naming spells it.
    pub fn name(self, key: &str) -> String {
        match self {
            Naming::Flags => format!("--{}", key.replace('_', "-")),
            Naming::Keys => format!("`{key}`"),
        }
    }
}

/// A setting whose value cannot be used, or that does not go with the others.
#[derive(Debug, thiserror::Error)]
#[error("{problem}")]
pub struct SettingError {
    /// The setting at fault, written with `_` (`client_ca`).
    pub key: &'static str,
    /// What is wrong, with the other settings named as the context names them.
    pub problem: String,
    /// The parser's or the library's reason, if any.
    #[source]
    pub source: Option<BoxError>,
}

impl SettingError {
    /// `key` is wrong: `problem`.
    pub fn new(key: &'static str, problem: impl Into<String>) -> Self {
        SettingError {
            key,
            problem: problem.into(),
            source: None,
        }
    }

    /// `key` is wrong: `problem`, because of `source`.
    pub fn caused_by(
        key: &'static str,
        problem: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        SettingError {
            key,
            problem: problem.into(),
            source: Some(source.into()),
        }
    }

    /// The error with the setting's name first (`--max-connections: must be at least 1`).
    pub fn describe(&self, naming: Naming) -> String {
        format!("{}: {}", naming.name(self.key), crate::error::chain(self))
    }
}

/// Where in a file: 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column (in characters), from 1.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text`.
    pub fn of(text: &str, offset: usize) -> Self {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The message of a TOML error (without the excerpt of the file that its `Display` adds: the
/// position is in [`ConfigError`]).
#[derive(Debug)]
pub struct TomlError(pub Box<toml::de::Error>);

impl fmt::Display for TomlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.message().trim_end())
    }
}

impl std::error::Error for TomlError {}

/// Why a configuration file was refused.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or a key that is unknown, of the wrong type or with a value that does not
    /// parse: what the TOML parser found.
    #[error("{}:{at}: {}key {}", path.display(), tunnel_prefix(tunnel), key.as_deref().map_or("?".into(), |k| format!("`{k}`")))]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where.
        at: Position,
        /// The tunnel whose table holds the error, by name (tunnels files).
        tunnel: Option<String>,
        /// The key at fault, when the position shows one.
        key: Option<String>,
        /// The parser's message.
        #[source]
        source: TomlError,
    },
    /// Values that parse but do not go together (a missing target, a key of the other mode,
    /// a certificate without its key, ...).
    #[error("{}:{}: {}key `{}`", path.display(), line, tunnel_prefix(tunnel), source.key)]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line of the key (or of the table that lacks it).
        line: usize,
        /// The tunnel, by name (tunnels files).
        tunnel: Option<String>,
        /// What is wrong.
        #[source]
        source: SettingError,
    },
}

fn tunnel_prefix(tunnel: &Option<String>) -> String {
    match tunnel {
        Some(name) => format!("tunnel \"{name}\": "),
        None => String::new(),
    }
}

impl ConfigError {
    /// The error with its causes, on one line.
    pub fn describe(&self) -> String {
        crate::error::chain(self).to_string()
    }

    /// The line at fault, when the error has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { at, .. } => Some(at.line),
            ConfigError::Invalid { line, .. } => Some(*line),
        }
    }
}

/// Reads a whole configuration file (blocking).
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Deserializes `text` (the contents of `path`), turning a TOML error into a
/// [`ConfigError::Parse`] with its position and key; `tunnel_at` names the tunnel that holds
/// a byte offset, if any.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
    tunnel_at: impl Fn(usize) -> Option<String>,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigError::Parse {
            path: path.to_owned(),
            at: Position::of(text, span.start),
            tunnel: tunnel_at(span.start),
            key: key_at(text, span, e.message()),
            source: TomlError(Box::new(e)),
        }
    })
}

/// The key an error at `span` is about: the bare key the span is (an unknown key), the key
/// of the `key = value` line it is on (a bad value), or the field a "missing field" message
/// names.
fn key_at(text: &str, span: Range<usize>, message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("missing field `") {
        return rest.split('`').next().map(str::to_owned);
    }
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let spanned = text.get(span).unwrap_or("");
    if is_bare_key(spanned) && text[line_start..start].trim().is_empty() {
        return Some(spanned.to_owned());
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    is_bare_key(key).then(|| key.to_owned())
}

fn is_bare_key(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The line of `key = ...` in `text[region]`, if it is there; else the region's first line.
pub(crate) fn line_of_key(text: &str, region: Range<usize>, key: &str) -> usize {
    let start = floor_char_boundary(text, region.start.min(text.len()));
    let end = floor_char_boundary(text, region.end.min(text.len()));
    let mut offset = start;
    for line in text[start..end].split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Position::of(text, offset).line;
            }
        }
        offset += line.len();
    }
    Position::of(text, start).line
}

/// Log line format (`log_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_keys() {
        let text = "a = 1\nbogus_key = \"x\"\n";
        assert_eq!(Position::of(text, 6), Position { line: 2, column: 1 });
        assert_eq!(Position::of(text, 18).line, 2);
        assert_eq!(
            key_at(text, 6..15, "unknown field"),
            Some("bogus_key".into())
        );
        assert_eq!(key_at(text, 18..21, "bad value"), Some("bogus_key".into()));
        assert_eq!(
            key_at(text, 0..0, "missing field `target`"),
            Some("target".into())
        );
        assert_eq!(line_of_key(text, 0..text.len(), "bogus_key"), 2);
        assert_eq!(line_of_key(text, 6..text.len(), "absent"), 2);
    }

    #[test]
    fn naming() {
        assert_eq!(Naming::Flags.name("client_ca"), "--client-ca");
        assert_eq!(Naming::Keys.name("client_ca"), "`client_ca`");
    }
}
