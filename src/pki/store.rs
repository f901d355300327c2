//! A PKI directory: the CA (and optional intermediate), every issued certificate, an index of
//! them, and the CRL. The layout is plain files that other tools read:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca-key.pem` | root CA (the key can be moved offline once an intermediate exists) |
//! | `intermediate.pem`, `intermediate-key.pem` | issuing intermediate, when made with `--intermediate` |
//! | `NAME.pem`, `NAME-key.pem` | an issued leaf (leaf + chain) and its key (0600) |
//! | `index.json` | what was issued: names, serials, purposes, revocations |
//! | `crl.pem` | the CRL of the issuing CA |
//!
//! The development PKI of `tlsnet serve` is such a directory with leaves named `server` and
//! `client`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::RevocationReason;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, ParseError, Result};
use crate::pki::ca::{CertificateAuthority, Constraints, KeyType, LeafSpec, Purpose, Revoked};
use crate::pki::files::{create_private_dir, write_file, Access};
use crate::x509::{rfc3339, CertSummary};

/// Options for [`PkiDir::init`].
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Root CA common name.
    pub name: String,
    /// Key type of the CA (and the intermediate).
    pub key_type: KeyType,
    /// Root CA lifetime.
    pub validity: Duration,
    /// Also make an issuing intermediate with these constraints.
    pub intermediate: Option<Constraints>,
}

/// One issued certificate in the index.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexEntry {
    /// File stem: `NAME.pem`, `NAME-key.pem`.
    pub name: String,
    /// `server` or `client`.
    pub purpose: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// Subject common name.
    pub common_name: String,
    /// DNS SANs.
    #[serde(default)]
    pub dns: Vec<String>,
    /// IP SANs.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// URI SANs.
    #[serde(default)]
    pub uris: Vec<String>,
    /// Key type (`ecdsa-p256`, ...).
    pub key: String,
    /// Lifetime in days.
    pub days: u64,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Set when revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// When and why a certificate was revoked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revocation {
    /// RFC 3339 time.
    pub at: String,
    /// Reason name (`keyCompromise`, ...).
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    #[serde(default)]
    next_crl_number: u64,
    #[serde(default)]
    certs: Vec<IndexEntry>,
}

/// The state of an issued certificate, as `pki list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    /// The index entry.
    #[serde(flatten)]
    pub entry: IndexEntry,
    /// `valid`, `expired`, `revoked` or `missing` (files deleted).
    pub state: String,
    /// Days until expiry (negative when expired).
    pub days_left: i64,
}

/// A PKI directory.
#[derive(Debug, Clone)]
pub struct PkiDir {
    dir: PathBuf,
}

/// Reason names accepted by `pki revoke --reason`, as in RFC 5280.
pub const REASONS: [&str; 8] = [
    "unspecified",
    "keyCompromise",
    "caCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
];

fn reason_code(name: &str) -> Option<RevocationReason> {
    Some(match name {
        "unspecified" => RevocationReason::Unspecified,
        "keyCompromise" => RevocationReason::KeyCompromise,
        "caCompromise" => RevocationReason::CaCompromise,
        "affiliationChanged" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessationOfOperation" => RevocationReason::CessationOfOperation,
        "certificateHold" => RevocationReason::CertificateHold,
        "privilegeWithdrawn" => RevocationReason::PrivilegeWithdrawn,
        _ => return None,
    })
}

const RESERVED: [&str; 6] = [
    "ca",
    "ca-key",
    "intermediate",
    "intermediate-key",
    "crl",
    "index",
];

/// Checks that a certificate name is a safe file stem.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.ends_with("-key");
    if !ok {
        return Err(Error::InvalidInput(format!(
            "'{name}' cannot be a certificate name: use letters, digits, '.', '_' and '-' (up to 64, not ending in -key)"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(Error::InvalidInput(format!(
            "'{name}' is reserved for the CA's own files"
        )));
    }
    Ok(())
}

impl PkiDir {
    /// The PKI in `dir` (nothing is read until used).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        PkiDir { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a file in the directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// `NAME.pem`.
    pub fn cert_path(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.pem"))
    }

    /// `NAME-key.pem`.
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}-key.pem"))
    }

    /// Whether a root CA exists here.
    pub fn has_ca(&self) -> bool {
        self.path("ca.pem").is_file()
    }

    /// Makes a new root CA (and intermediate). Refuses to overwrite an existing CA.
    pub fn init(&self, options: &InitOptions) -> Result<()> {
        if self.has_ca() {
            return Err(Error::InvalidInput(format!(
                "{} already holds a CA (ca.pem); choose another --dir",
                self.dir.display()
            )));
        }
        create_private_dir(&self.dir)?;
        let root =
            CertificateAuthority::generate(&options.name, options.key_type, options.validity)?;
        write_file(
            &self.path("ca-key.pem"),
            root.key_pem().as_bytes(),
            Access::Private,
        )?;
        write_file(
            &self.path("ca.pem"),
            root.cert_pem().as_bytes(),
            Access::Public,
        )?;
        if let Some(constraints) = &options.intermediate {
            let name = format!("{} intermediate", options.name);
            let validity = options.validity.min(Duration::from_secs(5 * 365 * 86400));
            let inter =
                root.generate_intermediate(&name, options.key_type, validity, constraints)?;
            write_file(
                &self.path("intermediate-key.pem"),
                inter.key_pem().as_bytes(),
                Access::Private,
            )?;
            write_file(
                &self.path("intermediate.pem"),
                inter.cert_pem().as_bytes(),
                Access::Public,
            )?;
        }
        self.save_index(&Index::default())?;
        self.write_crl(Duration::from_secs(30 * 86400))?;
        Ok(())
    }

    /// The issuing CA: the intermediate if there is one, else the root.
    pub fn issuing_ca(&self) -> Result<CertificateAuthority> {
        if self.path("intermediate.pem").is_file() {
            CertificateAuthority::load(
                &self.path("intermediate.pem"),
                &self.path("intermediate-key.pem"),
            )
        } else if self.has_ca() {
            CertificateAuthority::load(&self.path("ca.pem"), &self.path("ca-key.pem"))
        } else {
            Err(Error::InvalidInput(format!(
                "no CA in {} (tlsnet pki init --dir {} makes one)",
                self.dir.display(),
                self.dir.display()
            )))
        }
    }

    /// Issues `NAME.pem` + `NAME-key.pem`. Refuses a name that is already in use.
    pub fn issue(&self, name: &str, spec: &LeafSpec) -> Result<IndexEntry> {
        check_name(name)?;
        let index = self.load_index()?;
        if index
            .certs
            .iter()
            .any(|c| c.name == name && c.revoked.is_none())
            || self.cert_path(name).exists()
        {
            return Err(Error::InvalidInput(format!(
                "'{name}' already exists in {} (tlsnet pki renew {name} re-issues it)",
                self.dir.display()
            )));
        }
        self.issue_unchecked(name, spec, index)
    }

    fn issue_unchecked(&self, name: &str, spec: &LeafSpec, mut index: Index) -> Result<IndexEntry> {
        let ca = self.issuing_ca()?;
        let issued = ca.issue(spec)?;
        let summary = CertSummary::from_der(&issued.cert_der)
            .map_err(|e| Error::pki("the issued certificate does not parse", e))?;
        write_file(
            &self.key_path(name),
            issued.key_pem.as_bytes(),
            Access::Private,
        )?;
        write_file(
            &self.cert_path(name),
            issued.chain_pem.as_bytes(),
            Access::Public,
        )?;
        let entry = IndexEntry {
            name: name.to_owned(),
            purpose: match spec.purpose {
                Purpose::Server => "server".into(),
                Purpose::Client => "client".into(),
            },
            serial: summary.serial.replace(':', ""),
            common_name: spec.common_name.clone(),
            dns: spec.dns.clone(),
            ips: spec.ips.clone(),
            uris: spec.uris.clone(),
            key: spec.key_type.to_string(),
            days: spec.validity.as_secs() / 86400,
            not_after: summary.not_after,
            revoked: None,
        };
        index
            .certs
            .retain(|c| !(c.name == name && c.revoked.is_none()));
        index.certs.push(entry.clone());
        self.save_index(&index)?;
        Ok(entry)
    }

    /// Re-issues `name` with the same names, purpose and key type (a new key and serial).
    /// The old certificate is marked superseded in the CRL.
    pub fn renew(&self, name: &str, days: Option<u64>) -> Result<IndexEntry> {
        let mut index = self.load_index()?;
        let old = index
            .certs
            .iter()
            .rev()
            .find(|c| c.name == name && c.revoked.is_none())
            .cloned()
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "no certificate named '{name}' in {} (see tlsnet pki list)",
                    self.dir.display()
                ))
            })?;
        let purpose = if old.purpose == "client" {
            Purpose::Client
        } else {
            Purpose::Server
        };
        let mut spec = LeafSpec::new(purpose, old.common_name.clone());
        spec.dns = old.dns.clone();
        spec.ips = old.ips.clone();
        spec.uris = old.uris.clone();
        spec.key_type = old.key.parse().map_err(|source| Error::BadValue {
            what: format!("key type of {name} in the index"),
            source,
        })?;
        spec.validity = Duration::from_secs(days.unwrap_or(old.days).max(1) * 86400);
        for c in index.certs.iter_mut().filter(|c| c.serial == old.serial) {
            c.revoked = Some(Revocation {
                at: rfc3339(OffsetDateTime::now_utc()),
                reason: "superseded".into(),
            });
        }
        let entry = self.issue_unchecked(name, &spec, index)?;
        self.write_crl(Duration::from_secs(30 * 86400))?;
        Ok(entry)
    }

    /// Revokes by name (the current certificate of that name) or by serial (hex, colons
    /// allowed), and writes a new CRL.
    pub fn revoke(&self, name_or_serial: &str, reason: &str) -> Result<IndexEntry> {
        if reason_code(reason).is_none() {
            return Err(Error::InvalidInput(format!(
                "unknown revocation reason '{reason}' (one of: {})",
                REASONS.join(", ")
            )));
        }
        let mut index = self.load_index()?;
        let wanted = name_or_serial.replace(':', "").to_ascii_lowercase();
        let entry = index
            .certs
            .iter_mut()
            .rev()
            .find(|c| c.revoked.is_none() && (c.name == name_or_serial || c.serial == wanted))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "no unrevoked certificate named or numbered '{name_or_serial}' in {} (see tlsnet pki list)",
                    self.dir.display()
                ))
            })?;
        entry.revoked = Some(Revocation {
            at: rfc3339(OffsetDateTime::now_utc()),
            reason: reason.to_owned(),
        });
        let entry = entry.clone();
        self.save_index(&index)?;
        self.write_crl(Duration::from_secs(30 * 86400))?;
        Ok(entry)
    }

    /// Signs a fresh `crl.pem` with every revoked certificate; valid for `next_update`.
    pub fn write_crl(&self, next_update: Duration) -> Result<PathBuf> {
        let mut index = self.load_index()?;
        let ca = self.issuing_ca()?;
        let mut revoked = Vec::new();
        for c in index.certs.iter().filter(|c| c.revoked.is_some()) {
            let Some(r) = &c.revoked else { continue };
            revoked.push(Revoked {
                serial: hex_bytes(&c.serial).ok_or_else(|| {
                    Error::bad_file(
                        self.path("index.json"),
                        format!("bad serial '{}'", c.serial),
                    )
                })?,
                at: OffsetDateTime::parse(&r.at, &time::format_description::well_known::Rfc3339)
                    .unwrap_or_else(|_| OffsetDateTime::now_utc()),
                reason: reason_code(&r.reason),
            });
        }
        index.next_crl_number += 1;
        let pem = ca.crl(&revoked, index.next_crl_number, next_update)?;
        let path = self.path("crl.pem");
        write_file(&path, pem.as_bytes(), Access::Public)?;
        self.save_index(&index)?;
        Ok(path)
    }

    /// Every issued certificate with its state.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let index = self.load_index()?;
        let now = OffsetDateTime::now_utc();
        Ok(index
            .certs
            .into_iter()
            .map(|entry| {
                let days_left = OffsetDateTime::parse(
                    &entry.not_after,
                    &time::format_description::well_known::Rfc3339,
                )
                .map(|t| (t - now).whole_days())
                .unwrap_or(0);
                let state = if entry.revoked.is_some() {
                    "revoked"
                } else if !self.cert_path(&entry.name).is_file() {
                    "missing"
                } else if days_left < 0 {
                    "expired"
                } else {
                    "valid"
                };
                Listed {
                    entry,
                    state: state.into(),
                    days_left,
                }
            })
            .collect())
    }

    fn load_index(&self) -> Result<Index> {
        let path = self.path("index.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::bad_file(&path, ParseError::caused_by("not a tlsnet PKI index", e))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(Error::file(&path, "read", e)),
        }
    }

    fn save_index(&self, index: &Index) -> Result<()> {
        let json = serde_json::to_vec_pretty(index)
            .map_err(|e| Error::pki("cannot encode the index", e))?;
        write_file(&self.path("index.json"), &json, Access::Public)
    }
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(dir: &Path, intermediate: bool) -> PkiDir {
        let pki = PkiDir::at(dir.join("pki"));
        pki.init(&InitOptions {
            name: "test CA".into(),
            key_type: KeyType::EcdsaP256,
            validity: Duration::from_secs(365 * 86400),
            intermediate: intermediate.then(Constraints::default),
        })
        .unwrap();
        pki
    }

    #[test]
    fn issue_list_renew_revoke() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = init(tmp.path(), false);
        let mut spec = LeafSpec::new(Purpose::Server, "web");
        spec.dns = vec!["web.internal".into()];
        let first = pki.issue("web", &spec).unwrap();
        assert!(pki
            .issue("web", &spec)
            .unwrap_err()
            .to_string()
            .contains("pki renew web"));
        let renewed = pki.renew("web", None).unwrap();
        assert_ne!(first.serial, renewed.serial);
        assert_eq!(renewed.dns, vec!["web.internal".to_string()]);
        let listed = pki.list().unwrap();
        let states: Vec<&str> = listed.iter().map(|l| l.state.as_str()).collect();
        assert_eq!(states, ["revoked", "valid"]);
        pki.revoke("web", "keyCompromise").unwrap();
        assert!(pki.revoke("web", "keyCompromise").is_err());
        assert!(pki.revoke("nothing", "unspecified").is_err());
        assert!(pki
            .revoke("x", "because")
            .unwrap_err()
            .to_string()
            .contains("keyCompromise"));
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "", "../x", ".hidden", "ca", "index", "a b", "x-key", "-flag",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["server", "alice", "web.internal", "db_1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn intermediate_issues_chains() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = init(tmp.path(), true);
        assert!(pki.issuing_ca().unwrap().is_intermediate());
        pki.issue("bob", &LeafSpec::new(Purpose::Client, "bob"))
            .unwrap();
        let chain = crate::tls::load_certs(&pki.cert_path("bob")).unwrap();
        assert_eq!(chain.len(), 2, "leaf + intermediate");
    }
}
