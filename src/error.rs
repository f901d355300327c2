//! The library's error type.

use std::io;
use std::path::PathBuf;

use crate::failure::FailureCause;

/// Everything that can go wrong in tlsnet, with the context a user needs to act on it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, written or created.
    #[error("cannot {action} {}: {error}", path.display())]
    File {
        /// The file in question.
        path: PathBuf,
        /// What we were doing: "read", "write", "create directory", ...
        action: &'static str,
        /// The operating system's error.
        error: io::Error,
    },

    /// A file was read but does not hold what was expected.
    #[error("{}: {problem}", path.display())]
    BadFile {
        /// The file in question.
        path: PathBuf,
        /// What is wrong with it, and what was expected.
        problem: String,
    },

    /// rustls refused a configuration (for example a key that does not match its certificate).
    #[error("{context}: {error}")]
    TlsConfig {
        /// What was being configured.
        context: String,
        /// rustls' reason.
        error: rustls::Error,
    },

    /// A value given by the user is not usable (an address, a name, a pin, ...).
    #[error("{0}")]
    InvalidInput(String),

    /// A network operation failed before or outside the TLS handshake.
    #[error("{action} {peer}: {error}")]
    Network {
        /// "connect to", "listen on", "resolve", ...
        action: &'static str,
        /// The address involved.
        peer: String,
        /// The operating system's error.
        error: io::Error,
    },

    /// The TLS handshake failed; `cause` says why in words.
    #[error("TLS handshake with {peer} failed: {cause}")]
    Handshake {
        /// The peer's address.
        peer: String,
        /// The classified cause.
        cause: FailureCause,
    },

    /// Making a key or a certificate failed.
    #[error("certificate generation failed: {0}")]
    Pki(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn file(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        Error::File {
            path: path.into(),
            action,
            error: source,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Pki(e.to_string())
    }
}
