//! `--keylog FILE|env`, shared by every command that makes TLS connections. A command takes it
//! with `#[command(flatten)] keylog: KeyLogArgs` and puts `args.keylog.open()?` into the
//! `key_log` of its TLS options; the library does the rest (see `tlsnet::tls::keylog`).

use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use rustls::KeyLog;
use tlsnet::tls::keylog::{self, KeyLogTarget};

use crate::UsageError;

#[derive(Args, Debug, Clone, Default)]
pub struct KeyLogArgs {
    /// DEBUGGING ONLY: append the TLS secrets of every connection to FILE, for Wireshark.
    /// Anyone who has FILE can decrypt the traffic. `env`: the file named by $SSLKEYLOGFILE.
    ///
    /// The NSS key log format (what Wireshark's tls.keylog_file and SSLKEYLOGFILE mean), so
    /// that a capture can be decrypted. A warning is printed on every start. FILE is created
    /// with mode 0600, or appended to; it is refused if it is a symbolic link, not a regular
    /// file, open to others (mode wider than 0600) or owned by another user. $SSLKEYLOGFILE
    /// is read only with `--keylog env`, never on its own. (A file named env: ./env.)
    #[arg(long, value_name = "FILE|env")]
    keylog: Option<KeyLogTarget>,
}

impl KeyLogArgs {
    /// Opens the key log when asked for, with the warning on stderr (and a WARN log line).
    pub fn open(&self) -> Result<Option<Arc<dyn KeyLog>>> {
        let Some(target) = &self.keylog else {
            return Ok(None);
        };
        let writer = target.open().map_err(|e| match e {
            tlsnet::Error::InvalidInput(why) => anyhow::Error::new(UsageError(why)),
            other => anyhow::Error::new(other),
        })?;
        eprintln!("tlsnet: WARNING: {}", keylog::warning(writer.path()));
        Ok(Some(writer))
    }

    /// Uses `target` (a key of a configuration file).
    pub fn set(&mut self, target: KeyLogTarget) {
        self.keylog = Some(target);
    }

    /// Whether `--keylog` was given.
    pub fn is_set(&self) -> bool {
        self.keylog.is_some()
    }
}
