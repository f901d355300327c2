//! Certificates from files: PEM (one certificate or a whole bundle), DER, and PKCS#12.
//!
//! The format is recognised from the content, not from the file name.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, ParseError, Result};
use crate::pkcs12;
use crate::x509::CertSummary;

/// Files larger than this are not certificate files.
const MAX_FILE: u64 = 64 * 1024 * 1024;

/// How a certificate file is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Base64 between `-----BEGIN CERTIFICATE-----` lines; may hold several certificates.
    Pem,
    /// Binary X.509 (one certificate, or several back to back).
    Der,
    /// PKCS#12 (`.p12`, `.pfx`): certificates and a key under a password.
    Pkcs12,
}

impl std::fmt::Display for FileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileFormat::Pem => "PEM",
            FileFormat::Der => "DER",
            FileFormat::Pkcs12 => "PKCS#12",
        })
    }
}

/// What a certificate file holds.
#[derive(Clone, Debug)]
pub struct FileInspection {
    /// The file.
    pub path: PathBuf,
    /// Its encoding.
    pub format: FileFormat,
    /// The certificates in file order (for PKCS#12: the key's certificate first).
    pub chain: Vec<CertificateDer<'static>>,
    /// A summary of each certificate of `chain`.
    pub certificates: Vec<CertSummary>,
    /// The private key found beside the certificates, if any.
    pub private_key: Option<KeyInfo>,
    /// The PKCS#12 friendly name, if any.
    pub friendly_name: Option<String>,
}

/// A private key found in a certificate file. The key itself is never shown.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KeyInfo {
    /// `PKCS#8`, `PKCS#1 (RSA)` or `SEC1 (EC)`.
    pub encoding: String,
    /// Whether the key belongs to the first certificate.
    pub matches_first_certificate: bool,
}

/// Reads the certificates of a file (PEM, DER or PKCS#12). `password` opens PKCS#12 files;
/// without one, a PKCS#12 file is tried with the empty password.
pub fn load(path: &Path, password: Option<&str>) -> Result<Vec<CertificateDer<'static>>> {
    Ok(inspect(path, password)?.chain)
}

/// Reads a certificate file and summarizes each certificate.
pub fn inspect(path: &Path, password: Option<&str>) -> Result<FileInspection> {
    let bytes = read_limited(path)?;
    let (format, chain, key, friendly_name) = if looks_like_pem(&bytes) {
        let (chain, key) = from_pem(path, &bytes)?;
        (FileFormat::Pem, chain, key, None)
    } else if let Some(chain) = from_der(&bytes) {
        (FileFormat::Der, chain, None, None)
    } else if pkcs12::looks_like_pkcs12(&bytes) {
        let contents = match password {
            Some(pw) => pkcs12::read(&bytes, pw),
            None => pkcs12::read(&bytes, "").map_err(|_| {
                Error::InvalidInput(
                    "PKCS#12 file: it needs a password (--password-file FILE)".to_owned(),
                )
            }),
        }
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
        (
            FileFormat::Pkcs12,
            contents.certificates,
            contents.key,
            contents.friendly_name,
        )
    } else {
        return Err(Error::bad_file(
            path,
            "neither PEM, DER nor PKCS#12: no certificate found",
        ));
    };
    if chain.is_empty() {
        return Err(Error::bad_file(path, "the file holds no certificate"));
    }
    let certificates = chain
        .iter()
        .map(|der| {
            CertSummary::from_der(der).unwrap_or_else(|e| CertSummary::unparsable(&e.describe()))
        })
        .collect();
    let private_key = key.map(|key| KeyInfo {
        encoding: match &key {
            PrivateKeyDer::Pkcs1(_) => "PKCS#1 (RSA)",
            PrivateKeyDer::Sec1(_) => "SEC1 (EC)",
            _ => "PKCS#8",
        }
        .to_owned(),
        matches_first_certificate: pkcs12::key_matches(&chain[0], &key),
    });
    Ok(FileInspection {
        path: path.to_owned(),
        format,
        chain,
        certificates,
        private_key,
        friendly_name,
    })
}

/// Reads a password from the first line of a file (the line end is not part of it), like
/// OpenSSL's `-passin file:F`.
pub fn read_password_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, "read", e))?;
    let line = text.split('\n').next().unwrap_or_default();
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::file(path, "read", e))?;
    if meta.is_dir() {
        return Err(Error::bad_file(
            path,
            "is a directory, not a certificate file",
        ));
    }
    if meta.len() > MAX_FILE {
        return Err(Error::bad_file(
            path,
            format!("{} bytes: too large for a certificate file", meta.len()),
        ));
    }
    std::fs::read(path).map_err(|e| Error::file(path, "read", e))
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

type PemContents = (Vec<CertificateDer<'static>>, Option<PrivateKeyDer<'static>>);

fn from_pem(path: &Path, bytes: &[u8]) -> Result<PemContents> {
    let mut certs = Vec::new();
    let mut key = None;
    let mut others = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) =
            section.map_err(|e| Error::bad_file(path, ParseError::caused_by("invalid PEM", e)))?;
        match kind {
            SectionKind::Certificate => certs.push(CertificateDer::from(der)),
            SectionKind::PrivateKey if key.is_none() => {
                key = Some(PrivateKeyDer::Pkcs8(der.into()))
            }
            SectionKind::RsaPrivateKey if key.is_none() => {
                key = Some(PrivateKeyDer::Pkcs1(der.into()))
            }
            SectionKind::EcPrivateKey if key.is_none() => {
                key = Some(PrivateKeyDer::Sec1(der.into()))
            }
            other => others.push(format!("{other:?}")),
        }
    }
    if certs.is_empty() {
        let found = if others.is_empty() && key.is_some() {
            "only a private key".to_owned()
        } else if others.is_empty() {
            "no PEM block this tool knows".to_owned()
        } else {
            others.join(", ")
        };
        return Err(Error::bad_file(
            path,
            format!("no -----BEGIN CERTIFICATE----- block (found: {found})"),
        ));
    }
    Ok((certs, key))
}

/// One or more DER certificates back to back; `None` unless all of the bytes are
/// certificates.
fn from_der(bytes: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let mut rest = bytes;
    let mut certs = Vec::new();
    while !rest.is_empty() {
        let (next, _) = X509Certificate::from_der(rest).ok()?;
        let used = rest.len() - next.len();
        certs.push(CertificateDer::from(rest[..used].to_vec()));
        rest = next;
    }
    (!certs.is_empty()).then_some(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\r\nignored\n").unwrap();
        assert_eq!(read_password_file(&file).unwrap(), "s3cret");
        std::fs::write(&file, "no newline").unwrap();
        assert_eq!(read_password_file(&file).unwrap(), "no newline");
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("junk");
        std::fs::write(&file, b"hello").unwrap();
        let err = inspect(&file, None).unwrap_err().describe();
        assert!(err.contains("neither PEM, DER nor PKCS#12"), "{err}");
        std::fs::write(
            &file,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let err = inspect(&file, None).unwrap_err().describe();
        assert!(err.contains("no -----BEGIN CERTIFICATE-----"), "{err}");
    }
}
