//! The library's error types.
//!
//! Every error that wraps another keeps it as its `source()`, and its own message says only
//! what it adds (which file, which peer, what we were doing). Print the whole chain with
//! [`chain`] (or `{:#}` through `anyhow`): `cannot read /etc/tls/ca.pem: No such file or
//! directory`.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::tls::FailureCause;

/// Any error, boxed, as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Bytes (a file, a flag's value, a peer's message) that do not hold what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{problem}")]
pub struct ParseError {
    problem: Cow<'static, str>,
    #[source]
    source: Option<BoxError>,
}

impl ParseError {
    /// A problem found by tlsnet itself.
    pub fn new(problem: impl Into<Cow<'static, str>>) -> Self {
        ParseError {
            problem: problem.into(),
            source: None,
        }
    }

    /// A problem reported by a parser, kept as the source.
    pub fn caused_by(problem: impl Into<Cow<'static, str>>, source: impl Into<BoxError>) -> Self {
        ParseError {
            problem: problem.into(),
            source: Some(source.into()),
        }
    }

    /// The problem with its causes, on one line.
    pub fn describe(&self) -> String {
        chain(self).to_string()
    }
}

/// Everything that can go wrong in tlsnet, with the context a user needs to act on it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, written or created.
    #[error("cannot {action} {}", path.display())]
    File {
        /// The file in question.
        path: PathBuf,
        /// What we were doing: "read", "write", "create directory", ...
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A file was read but does not hold what was expected.
    #[error("{}", path.display())]
    BadFile {
        /// The file in question.
        path: PathBuf,
        /// What is wrong with it, and what was expected.
        #[source]
        source: ParseError,
    },

    /// rustls refused a configuration (for example a key that does not match its certificate).
    #[error("{context}")]
    TlsConfig {
        /// What was being configured.
        context: String,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },

    /// A value given by the user is not usable (an address, a name, a pin, ...).
    #[error("{0}")]
    InvalidInput(String),

    /// A value given by the user could not be parsed.
    #[error("{what}")]
    BadValue {
        /// Which value (a flag, a key of a file).
        what: String,
        /// Why.
        #[source]
        source: ParseError,
    },

    /// A network operation failed before or outside the TLS handshake.
    #[error("cannot {action} {peer}")]
    Network {
        /// "connect to", "listen on", "resolve", ...
        action: &'static str,
        /// The address involved.
        peer: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The TLS handshake failed; `cause` says why in words.
    #[error("TLS handshake with {peer} failed: {cause}")]
    Handshake {
        /// The peer's address.
        peer: String,
        /// The classified cause.
        cause: FailureCause,
    },

    /// Something given cannot be used (a CA certificate, a recorder, a setting); the source
    /// says why.
    #[error("{what}")]
    Unusable {
        /// What cannot be used.
        what: String,
        /// Why.
        #[source]
        source: BoxError,
    },

    /// A setting (a flag, a key of a configuration file) is wrong or does not go with the
    /// others; [`crate::config::SettingError::describe`] names it.
    #[error(transparent)]
    Setting(#[from] crate::config::SettingError),

    /// Making a key or a certificate failed.
    #[error("{context}")]
    Pki {
        /// What was being made.
        context: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn file(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        Error::File {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, problem: impl Into<ParseError>) -> Self {
        Error::BadFile {
            path: path.into(),
            source: problem.into(),
        }
    }

    pub(crate) fn unusable(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unusable {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn pki(context: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Pki {
            context,
            source: source.into(),
        }
    }

    /// The error with its causes, on one line.
    pub fn describe(&self) -> String {
        chain(self).to_string()
    }
}

impl From<&'static str> for ParseError {
    fn from(problem: &'static str) -> Self {
        ParseError::new(problem)
    }
}

impl From<String> for ParseError {
    fn from(problem: String) -> Self {
        ParseError::new(problem)
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::pki("certificate generation failed", e)
    }
}

/// Displays an error followed by its sources: `outer: middle: inner`.
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Chain<'a> {
    Chain(error)
}

/// See [`chain`].
pub struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_every_cause_once() {
        let e = Error::file(
            "/nowhere/ca.pem",
            "read",
            io::Error::new(io::ErrorKind::NotFound, "No such file or directory"),
        );
        assert_eq!(
            e.describe(),
            "cannot read /nowhere/ca.pem: No such file or directory"
        );
        let e = Error::bad_file("x.pem", ParseError::caused_by("invalid PEM", "bad base64"));
        assert_eq!(e.describe(), "x.pem: invalid PEM: bad base64");
    }
}
