//! The development PKI: what `tlsnet serve` makes on first run when it is given no certificate,
//! so that a newcomer can run a mutual-TLS server and client with nothing prepared.
//!
//! The directory holds `ca.pem`, `ca-key.pem`, `server.pem` + `server-key.pem` (for
//! `localhost`, `127.0.0.1` and `::1`) and `client.pem` + `client-key.pem`. Keys are mode 0600,
//! the directory 0700. Leaf certificates live 90 days and are re-issued by the same CA when
//! fewer than 7 days are left, so clients that trust `ca.pem` keep working.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::pki::ca::{KeyType, LeafSpec, Purpose};
use crate::pki::store::{InitOptions, PkiDir};
use crate::x509::CertSummary;

const DAY: u64 = 86400;
const CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * DAY);
const LEAF_VALIDITY: Duration = Duration::from_secs(90 * DAY);
const RENEW_WHEN_DAYS_LEFT: i64 = 7;

/// The common name of the development client certificate.
pub const DEV_CLIENT_NAME: &str = "tlsnet-dev-client";

/// What [`DevPki::ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevPkiState {
    /// Everything was there and valid.
    Existing,
    /// A new CA and certificates were made.
    Created,
    /// The leaf certificates were close to expiry and were re-issued.
    Renewed,
}

/// A development PKI directory.
#[derive(Debug, Clone)]
pub struct DevPki {
    dir: PathBuf,
}

impl DevPki {
    /// The PKI in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        DevPki { dir: dir.into() }
    }

    /// The default location: `$XDG_STATE_HOME/tlsnet/dev-pki`, else
    /// `~/.local/state/tlsnet/dev-pki`.
    pub fn default_dir() -> Option<PathBuf> {
        Some(state_dir()?.join("dev-pki"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// `ca-key.pem`.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }
    /// `server.pem`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    /// `server-key.pem`.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
    /// `client.pem`.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    /// `client-key.pem`.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client-key.pem")
    }

    /// Whether the CA and the client certificate exist (what `connect` needs).
    pub fn exists(&self) -> bool {
        self.ca_cert().is_file() && self.client_cert().is_file() && self.client_key().is_file()
    }

    /// Creates the PKI if it is missing, re-issues leaf certificates that are missing or
    /// expire within 7 days, and leaves everything else alone.
    pub fn ensure(&self) -> Result<DevPkiState> {
        let store = PkiDir::at(&self.dir);
        let created = !store.has_ca();
        if created {
            store.init(&InitOptions {
                name: "tlsnet development CA".into(),
                key_type: KeyType::EcdsaP256,
                validity: CA_VALIDITY,
                intermediate: None,
            })?;
        }
        let mut renewed = false;
        for (name, purpose) in [("server", Purpose::Server), ("client", Purpose::Client)] {
            let cert = store.cert_path(name);
            if store.key_path(name).is_file() && !needs_renewal(&cert)? {
                continue;
            }
            let known = store
                .list()?
                .iter()
                .any(|l| l.entry.name == name && l.state != "revoked");
            if known {
                // Also covers deleted files: renew re-creates them with a new key.
                let _ = std::fs::remove_file(&cert);
                store.renew(name, Some(LEAF_VALIDITY.as_secs() / DAY))?;
            } else {
                let _ = std::fs::remove_file(&cert);
                store.issue(name, &leaf_spec(purpose))?;
            }
            renewed = true;
        }
        Ok(match (created, renewed) {
            (true, _) => DevPkiState::Created,
            (false, true) => DevPkiState::Renewed,
            (false, false) => DevPkiState::Existing,
        })
    }
}

impl DevPki {
    /// The certificate and key of a client named `name` (its common name; the files and
    /// messaging services take it as the user id), issued by the development CA on first use
    /// as `user-NAME.pem` + `user-NAME-key.pem` and re-issued when fewer than 7 days are left.
    /// This is what `--as NAME` uses; it needs the CA's key, so it works where the
    /// development PKI was made (a local server). `name` must be a certificate name (letters,
    /// digits, `.`, `_`, `-`, up to 59).
    pub fn client_identity_for(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        let stem = format!("user-{name}");
        let leading = name.starts_with(['-', '.']);
        crate::pki::store::check_name(&stem)
            .and_then(|()| match name.is_empty() || leading {
                true => Err(Error::InvalidInput(String::new())),
                false => Ok(()),
            })
            .map_err(|_| {
            Error::InvalidInput(format!(
                "'{name}' cannot be a development user name: use letters, digits, '.', '_' and '-' (up to 59)"
            ))
        })?;
        let store = PkiDir::at(&self.dir);
        if !store.has_ca() {
            return Err(Error::InvalidInput(format!(
                "no development CA in {} (run `tlsnet serve` once to make it)",
                self.dir.display()
            )));
        }
        let (cert, key) = (store.cert_path(&stem), store.key_path(&stem));
        if key.is_file() && !needs_renewal(&cert)? {
            return Ok((cert, key));
        }
        let known = store
            .list()?
            .iter()
            .any(|l| l.entry.name == stem && l.state != "revoked");
        let _ = std::fs::remove_file(&cert);
        let issued = if known {
            store.renew(&stem, Some(LEAF_VALIDITY.as_secs() / DAY))
        } else {
            let mut spec = LeafSpec::new(Purpose::Client, name);
            spec.validity = LEAF_VALIDITY;
            store.issue(&stem, &spec)
        };
        match issued {
            Ok(_) => Ok((cert, key)),
            // Another process issued it at the same moment.
            Err(_) if key.is_file() && cert.is_file() => Ok((cert, key)),
            Err(e) => Err(e),
        }
    }
}

/// The state directory of tlsnet: `$XDG_STATE_HOME/tlsnet`, else `~/.local/state/tlsnet`.
/// The development PKI and the files service's default root live there.
pub fn state_dir() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(state.join("tlsnet"))
}

fn leaf_spec(purpose: Purpose) -> LeafSpec {
    let mut spec = match purpose {
        Purpose::Server => {
            let mut s = LeafSpec::new(Purpose::Server, "localhost");
            s.dns = vec!["localhost".into()];
            s.ips = vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
            s
        }
        Purpose::Client => LeafSpec::new(Purpose::Client, DEV_CLIENT_NAME),
    };
    spec.validity = LEAF_VALIDITY;
    spec
}

fn needs_renewal(cert: &Path) -> Result<bool> {
    if !cert.is_file() {
        return Ok(true);
    }
    let certs = crate::tls::load_certs(cert)?;
    let summary = CertSummary::from_der(&certs[0]).map_err(|e| Error::bad_file(cert, e))?;
    Ok(summary.days_left < RENEW_WHEN_DAYS_LEFT)
}

/// Whether a host name or address is this machine (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_local_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts() {
        assert!(is_local_host("localhost"));
        assert!(is_local_host("127.0.0.2"));
        assert!(is_local_host("::1"));
        assert!(is_local_host("[::1]"));
        assert!(!is_local_host("example.com"));
        assert!(!is_local_host("10.0.0.1"));
    }

    #[test]
    fn creates_then_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::at(dir.path().join("pki"));
        assert_eq!(pki.ensure().unwrap(), DevPkiState::Created);
        let first = std::fs::read(pki.server_cert()).unwrap();
        assert_eq!(pki.ensure().unwrap(), DevPkiState::Existing);
        assert_eq!(std::fs::read(pki.server_cert()).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [pki.ca_key(), pki.server_key(), pki.client_key()] {
                let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
        }
        // A missing leaf is re-issued by the same CA.
        std::fs::remove_file(pki.client_key()).unwrap();
        assert_eq!(pki.ensure().unwrap(), DevPkiState::Renewed);
    }

    #[test]
    fn client_identity_for_issues_once() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::at(dir.path().join("pki"));
        assert!(pki.client_identity_for("alice").is_err(), "no CA yet");
        pki.ensure().unwrap();
        let (cert, key) = pki.client_identity_for("alice").unwrap();
        let first = std::fs::read(&cert).unwrap();
        assert_eq!(
            pki.client_identity_for("alice").unwrap(),
            (cert.clone(), key)
        );
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        let der = crate::tls::load_certs(&cert).unwrap();
        let id = crate::tls::PeerIdentity::from_der(&der[0]).unwrap();
        assert_eq!(id.common_name.as_deref(), Some("alice"));
        for bad in ["", "../x", "a/b", "-x"] {
            assert!(pki.client_identity_for(bad).is_err(), "{bad:?}");
        }
    }
}
