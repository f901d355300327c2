//! File transfer: per-user spaces on the server, sending to other users' inboxes, resumable
//! and verified transfers (`tlsnet-files/1`).
//!
//! | module | concern |
//! |---|---|
//! | [`codec`] | the frames, bytes in and out (no I/O) |
//! | [`tree`] | chunk and file hashes in one BLAKE3 pass (no I/O) |
//! | [`wire`] | frames over an async stream |
//! | [`paths`] | name rules, shared by the server and the client |
//! | [`space`] | per-user spaces on disk, quota, partial uploads |
//! | [`atomic`] | temporary name, sync, rename; group commits |
//! | [`service`] | the server side: a [`crate::service::Service`] |
//! | [`client`] | the client side: put, get, ls, rm |
//!
//! docs/PROTOCOL.md has the protocol byte by byte, docs/SECURITY.md the name rules.

use std::path::PathBuf;

use crate::error::ParseError;

pub mod atomic;
pub mod client;
pub mod codec;
pub mod journal;
pub mod paths;
pub mod service;
pub mod space;
pub mod tree;
pub mod wire;

pub use client::{connect, FilesClient, GetOptions, NoProgress, Progress, PutOptions, Summary};
pub use paths::{PathError, RemotePath};
pub use service::{FilesService, FILES_ALPN};
pub use space::{Limits, Spaces, StoreError};

/// What can go wrong in a session, on either side.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer sent an invalid frame.
    #[error("invalid frame")]
    Codec(#[source] codec::CodecError),
    /// The connection failed.
    #[error("connection to {peer} failed")]
    Connection {
        /// The server.
        peer: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Connecting (TCP, TLS) failed.
    #[error("cannot connect")]
    Connect(#[source] crate::Error),
    /// The client has no usable user id.
    #[error("no user id")]
    NoUser(#[source] crate::service::UserIdError),
    /// The server refused the session or a request as a whole.
    #[error("the server refused: {}", .0.message)]
    Refused(codec::Failure),
    /// A name (local, or from the server) breaks the rules.
    #[error("'{}': refused name", .path.escape_debug())]
    BadName {
        /// The name.
        path: String,
        /// The rule it breaks.
        #[source]
        source: PathError,
    },
    /// A local file could not be read or written.
    #[error("cannot {action} {}", .path.display())]
    Local {
        /// The file.
        path: PathBuf,
        /// What we were doing.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Received bytes do not match their hash.
    #[error("{path}: {what}")]
    Integrity {
        /// The file.
        path: String,
        /// What did not match.
        what: String,
    },
}

impl FilesError {
    pub(crate) fn local(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        FilesError::Local {
            path: path.into(),
            action,
            source,
        }
    }
}

/// The default root of the files service: `$XDG_STATE_HOME/tlsnet/files`, else
/// `~/.local/state/tlsnet/files`.
pub fn default_root() -> Option<PathBuf> {
    Some(crate::pki::dev::state_dir()?.join("files"))
}

/// Parses a size: `1048576`, `512K`, `100M`, `10G`, `1T` (powers of 1024; `KiB`, `MB`, ...
/// are read the same way).
pub fn parse_size(text: &str) -> Result<u64, ParseError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| ParseError::new(format!("'{text}' is not a size (e.g. 500M, 10G)")))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => {
            return Err(ParseError::new(format!(
                "unknown unit '{other}' in '{text}' (use K, M, G or T)"
            )))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| ParseError::new(format!("size '{text}' is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("1K").unwrap(), 1024);
        assert_eq!(parse_size("5MiB").unwrap(), 5 << 20);
        assert_eq!(parse_size("10g").unwrap(), 10 << 30);
        assert!(parse_size("x").is_err());
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
