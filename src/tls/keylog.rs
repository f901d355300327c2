//! A key-log file: the TLS secrets of each connection in the NSS key log format (the
//! `SSLKEYLOGFILE` format), so that Wireshark or tshark can decrypt a capture.
//!
//! **Anyone who has the file can decrypt every recorded connection it covers**: it holds the
//! traffic secrets themselves. It is for debugging only, and every program that
//! opens one says so loudly (a `WARN` log line here, and the command line prints a warning).
//!
//! Nothing here reads `SSLKEYLOGFILE` on its own: rustls' `KeyLogFile` does, which would let
//! an environment variable alone turn logging on; tlsnet never uses it. The variable is read
//! only when asked for with [`KeyLogTarget::Env`] (the command line's `--keylog env`).
//!
//! The file is opened once, when the program starts, and:
//! - created with mode `0600` when it does not exist, appended to when it does;
//! - refused when it is a symbolic link (the last component is never followed), not a regular
//!   file, readable or writable by anyone but its owner (mode wider than `0600`), or owned by
//!   another user (Unix). tlsnet does not `chmod` a file it did not create: a file that was
//!   readable by others may already have leaked what it held.
//!
//! Each line is formatted in memory and written with one `write` call under a mutex, with
//! `O_APPEND`, so that several processes (a server and a client on one machine) can share one
//! file without mixing their lines. A failed write is logged, never a panic, and never stops a
//! connection.
//!
//! To add the key log to a rustls configuration, set `key_log` on
//! [`super::ServerTlsOptions`], [`super::ClientTlsOptions`], [`super::ServerTlsSource`] or
//! [`crate::inspect::remote::RemoteOptions`] to what [`KeyLogTarget::open`] returns.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::KeyLog;
use tracing::warn;

use crate::error::{Error, Result};

/// The environment variable Wireshark, browsers and curl read: honoured only through
/// [`KeyLogTarget::Env`].
pub const ENV_VAR: &str = "SSLKEYLOGFILE";

/// The value of `--keylog` that means "the file named by `SSLKEYLOGFILE`".
pub const ENV_VALUE: &str = "env";

/// Where key-log lines go: `--keylog FILE`, or `--keylog env` for the path in
/// `SSLKEYLOGFILE`. (A file named `env` is `./env`.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyLogTarget {
    /// This file.
    File(PathBuf),
    /// The file named by the `SSLKEYLOGFILE` environment variable, which must be set.
    Env,
}

impl KeyLogTarget {
    /// `env` is [`KeyLogTarget::Env`]; anything else is a path.
    pub fn parse(value: &OsStr) -> Self {
        if value == ENV_VALUE {
            KeyLogTarget::Env
        } else {
            KeyLogTarget::File(PathBuf::from(value))
        }
    }

    /// The file to write: the path given, or the value of `SSLKEYLOGFILE`.
    pub fn path(&self) -> Result<PathBuf> {
        self.path_with(|name| std::env::var_os(name))
    }

    /// [`KeyLogTarget::path`] with the environment read through `lookup` (for tests).
    pub fn path_with(&self, lookup: impl FnOnce(&str) -> Option<OsString>) -> Result<PathBuf> {
        let path = match self {
            KeyLogTarget::File(path) => path.clone(),
            KeyLogTarget::Env => match lookup(ENV_VAR) {
                Some(value) if !value.is_empty() => PathBuf::from(value),
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "--keylog {ENV_VALUE}: {ENV_VAR} is not set (or is empty); set it to the \
                         key-log file, or give the file: --keylog FILE"
                    )))
                }
            },
        };
        if path.as_os_str().is_empty() {
            return Err(Error::InvalidInput(
                "--keylog: the file name is empty".into(),
            ));
        }
        Ok(path)
    }

    /// Opens the file (see the [module](self) for what is refused) and logs the warning.
    pub fn open(&self) -> Result<Arc<KeyLogWriter>> {
        KeyLogWriter::open(self.path()?).map(Arc::new)
    }
}

impl From<OsString> for KeyLogTarget {
    fn from(value: OsString) -> Self {
        KeyLogTarget::parse(&value)
    }
}

impl fmt::Display for KeyLogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyLogTarget::File(path) => write!(f, "{}", path.display()),
            KeyLogTarget::Env => write!(f, "{ENV_VALUE} (${ENV_VAR})"),
        }
    }
}

/// The warning every program prints when it writes a key log.
pub fn warning(path: &Path) -> String {
    format!(
        "the TLS secrets of every connection are written to {} (--keylog): anyone who can \
         read that file can decrypt a capture of this traffic. Debugging only; delete the file \
         when done.",
        path.display()
    )
}

/// Writes key-log lines to one file, opened once. A [`rustls::KeyLog`].
pub struct KeyLogWriter {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    /// The line being written (reused, so that a line needs no allocation).
    line: Vec<u8>,
    /// The last write failed: the next failure is not logged again.
    failing: bool,
}

impl KeyLogWriter {
    /// Opens (or creates, mode 0600) `path` for appending, after the checks of the
    /// [module](self), and logs a `WARN` line saying that secrets are being written.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let file = open_private(&path)?;
        warn!(file = %path.display(), "{}", warning(&path));
        Ok(KeyLogWriter {
            path,
            inner: Mutex::new(Inner {
                file,
                line: Vec::with_capacity(256),
                failing: false,
            }),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One line of the NSS key log format: `LABEL CLIENT_RANDOM_HEX SECRET_HEX\n`.
fn format_line(line: &mut Vec<u8>, label: &str, client_random: &[u8], secret: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    line.clear();
    line.extend_from_slice(label.as_bytes());
    line.push(b' ');
    for bytes in [client_random, secret] {
        for b in bytes {
            line.push(HEX[usize::from(b >> 4)]);
            line.push(HEX[usize::from(b & 0x0f)]);
        }
        line.push(b' ');
    }
    line.pop();
    line.push(b'\n');
}

impl KeyLog for KeyLogWriter {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Inner {
            file,
            line,
            failing,
        } = &mut *inner;
        format_line(line, label, client_random, secret);
        let written = file.write(line).and_then(|n| {
            if n == line.len() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write: {n} of {} bytes", line.len()),
                ))
            }
        });
        // The secret must not stay in memory longer than needed.
        line.iter_mut().for_each(|b| *b = 0);
        match written {
            Ok(()) => *failing = false,
            Err(e) if !*failing => {
                *failing = true;
                warn!(file = %self.path.display(), error = %e, "cannot write to the key log; secrets of this and later connections may be missing from it");
            }
            Err(_) => {}
        }
    }
}

impl fmt::Debug for KeyLogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the line buffer: it may hold a secret.
        f.debug_struct("KeyLogWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn refuse(path: &Path, problem: String) -> Error {
    Error::file(
        path,
        "use as key log",
        io::Error::new(io::ErrorKind::InvalidInput, problem),
    )
}

/// Opens `path` for appending, creating it with mode 0600; refuses what the module says.
fn open_private(path: &Path) -> Result<File> {
    // A first look for clear messages; the checks on the opened file below are the ones that
    // count (the path may change in between).
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(refuse(
            path,
            "it is a symbolic link; give the real file (a key log is never written through a link)"
                .into(),
        )),
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(refuse(path, "it is not a regular file".into()))
        }
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use rustix::fs::OFlags;
        use std::os::unix::fs::OpenOptionsExt;
        // No following a link in the last component; no blocking on a FIFO put there since.
        let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK;
        options
            .mode(0o600)
            .custom_flags(flags.bits() as std::ffi::c_int);
    }
    let file = options.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            return refuse(path, "it is a symbolic link".into());
        }
        Error::file(path, "open key log", e)
    })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::file(path, "inspect key log", e))?;
    if !meta.file_type().is_file() {
        return Err(refuse(path, "it is not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(refuse(
                path,
                format!(
                    "its mode is {mode:04o}: others may read it. A key log must be private \
                     (0600): remove it or `chmod 600` it first (what it holds may already have \
                     been read)"
                ),
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(refuse(
                path,
                format!(
                    "it belongs to user {}, not to this user ({me}), who could read it",
                    meta.uid()
                ),
            ));
        }
    }
    Ok(file)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn target_from_the_flag() {
        assert_eq!(KeyLogTarget::parse(OsStr::new("env")), KeyLogTarget::Env);
        assert_eq!(
            KeyLogTarget::parse(OsStr::new("./env")),
            KeyLogTarget::File("./env".into())
        );
        assert_eq!(
            KeyLogTarget::parse(OsStr::new("/tmp/keys")),
            KeyLogTarget::File("/tmp/keys".into())
        );
    }

    #[test]
    fn env_target_needs_the_variable() {
        let set = |name: &str| (name == ENV_VAR).then(|| OsString::from("/tmp/k"));
        assert_eq!(
            KeyLogTarget::Env.path_with(set).unwrap(),
            PathBuf::from("/tmp/k")
        );
        let err = KeyLogTarget::Env.path_with(|_| None).unwrap_err();
        assert!(
            err.to_string().contains("SSLKEYLOGFILE is not set"),
            "{err}"
        );
        let empty = KeyLogTarget::Env.path_with(|_| Some(OsString::new()));
        assert!(empty.is_err());
        // A file target never looks at the environment.
        let file = KeyLogTarget::File("/x".into()).path_with(|_| panic!("read the environment"));
        assert_eq!(file.unwrap(), PathBuf::from("/x"));
        assert!(KeyLogTarget::File(PathBuf::new()).path().is_err());
    }

    #[test]
    fn lines_are_nss_key_log_format() {
        let mut line = Vec::new();
        format_line(
            &mut line,
            "CLIENT_TRAFFIC_SECRET_0",
            &[0x00, 0xab, 0xff],
            &[0x01, 0x10],
        );
        assert_eq!(line, b"CLIENT_TRAFFIC_SECRET_0 00abff 0110\n");
    }

    #[test]
    fn creates_the_file_with_mode_0600_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let writer = KeyLogWriter::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        writer.log("SERVER_TRAFFIC_SECRET_0", &[1; 32], &[2; 48]);
        drop(writer);
        let writer = KeyLogWriter::open(&path).unwrap();
        writer.log("CLIENT_TRAFFIC_SECRET_0", &[3; 32], &[4; 48]);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with(&format!("SERVER_TRAFFIC_SECRET_0 {} ", "01".repeat(32))));
        assert!(lines[1].ends_with(&"04".repeat(48)));
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn refuses_a_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyLogWriter::open(&path).unwrap_err().describe();
        assert!(err.contains("mode is 0644"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        // Stricter than 0600 is fine.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o200)).unwrap();
        KeyLogWriter::open(&path).unwrap();
    }

    #[test]
    fn refuses_a_symlink_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, b"").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = KeyLogWriter::open(&link).unwrap_err().describe();
        assert!(err.contains("symbolic link"), "{err}");
        // A dangling link too: nothing is created where it points.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(KeyLogWriter::open(&dangling).is_err());
        assert!(!dir.path().join("nowhere").exists());

        let err = KeyLogWriter::open(dir.path()).unwrap_err().describe();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_failed_write_is_logged_not_a_panic() {
        // /dev/full: every write fails with ENOSPC. Opened by hand: open() refuses devices.
        let Ok(file) = OpenOptions::new().append(true).open("/dev/full") else {
            return;
        };
        let writer = KeyLogWriter {
            path: "/dev/full".into(),
            inner: Mutex::new(Inner {
                file,
                line: Vec::new(),
                failing: false,
            }),
        };
        writer.log("CLIENT_RANDOM", &[0; 32], &[0; 48]);
        writer.log("CLIENT_RANDOM", &[0; 32], &[0; 48]);
        assert!(writer.inner.lock().unwrap().failing);
    }

    /// Client and server options for `localhost` from a fresh CA, without a key log.
    fn options() -> (
        super::super::ServerTlsOptions,
        super::super::ClientTlsOptions,
    ) {
        use crate::pki::{CertificateAuthority, KeyType, LeafSpec, Purpose};
        use crate::tls::{certs_from_pem, key_from_pem, ClientTlsOptions, ServerTlsOptions};
        let day = std::time::Duration::from_secs(86_400);
        let ca = CertificateAuthority::generate("keylog test CA", KeyType::EcdsaP256, day).unwrap();
        let mut spec = LeafSpec::new(Purpose::Server, "localhost");
        spec.dns = vec!["localhost".into()];
        let issued = ca.issue(&spec).unwrap();
        let identity = super::super::Identity {
            chain: certs_from_pem(issued.chain_pem.as_bytes()).unwrap(),
            key: key_from_pem(issued.key_pem.as_bytes()).unwrap(),
        };
        let roots = certs_from_pem(ca.cert_pem().as_bytes()).unwrap();
        (
            ServerTlsOptions::new(identity),
            ClientTlsOptions::with_roots(roots),
        )
    }

    /// A TLS 1.3 handshake in memory, then a few bytes each way.
    fn handshake(server: &super::super::ServerTlsOptions, client: &super::super::ClientTlsOptions) {
        use rustls::{ClientConnection, ServerConnection};
        let name = crate::tls::server_name("localhost").unwrap();
        let mut c = ClientConnection::new(client.build().unwrap(), name).unwrap();
        let mut s = ServerConnection::new(server.build().unwrap()).unwrap();
        c.writer().write_all(b"ping").unwrap();
        s.writer().write_all(b"pong").unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            let mut input = &wire[..];
            while !input.is_empty() {
                s.read_tls(&mut input).unwrap();
                s.process_new_packets().unwrap();
            }
            let mut wire = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            let mut input = &wire[..];
            while !input.is_empty() {
                c.read_tls(&mut input).unwrap();
                c.process_new_packets().unwrap();
            }
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        let mut got = [0u8; 4];
        std::io::Read::read_exact(&mut s.reader(), &mut got).unwrap();
        assert_eq!(&got, b"ping");
    }

    #[test]
    fn options_with_a_key_log_write_both_sides_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, mut client) = options();
        let server_keys = dir.path().join("server-keys");
        let client_keys = dir.path().join("client-keys");
        server.key_log = Some(Arc::new(KeyLogWriter::open(&server_keys).unwrap()));
        client.key_log = Some(Arc::new(KeyLogWriter::open(&client_keys).unwrap()));
        handshake(&server, &client);
        for path in [&server_keys, &client_keys] {
            let text = std::fs::read_to_string(path).unwrap();
            for label in [
                "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
                "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0",
                "SERVER_TRAFFIC_SECRET_0",
            ] {
                assert!(text.contains(&format!("{label} ")), "{label} in {text}");
            }
        }
        // Both sides saw the same secrets.
        let lines = |p: &Path| {
            let mut l: Vec<String> = std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            l.sort();
            l
        };
        assert_eq!(lines(&server_keys), lines(&client_keys));
    }

    /// Set in the copy of this test binary that the test below runs.
    const CHILD: &str = "TLSNET_KEYLOG_TEST_CHILD";

    /// `SSLKEYLOGFILE` alone turns nothing on: a handshake with options that have no key log,
    /// in a process whose environment names a key-log file, writes nothing there. The
    /// handshake runs in a copy of this test binary, so that the variable is set for the
    /// whole process from its start without touching this process's environment.
    #[test]
    fn sslkeylogfile_alone_writes_nothing() {
        let name = "tls::keylog::tests::sslkeylogfile_alone_writes_nothing";
        if std::env::var_os(CHILD).is_some() {
            assert!(std::env::var_os(ENV_VAR).is_some());
            let (server, client) = options();
            handshake(&server, &client);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .env(ENV_VAR, &keys)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child test failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !keys.exists(),
            "SSLKEYLOGFILE without a key log in the options wrote {}",
            keys.display()
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let writer = KeyLogWriter::open(dir.path().join("keys")).unwrap();
        writer.log("CLIENT_RANDOM", &[0xaa; 32], &[0xbb; 48]);
        let text = format!("{writer:?}");
        assert!(!text.contains("bbbbbbbb"), "{text}");
    }
}
