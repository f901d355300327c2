//! Certificates, keys and CRLs from PEM (and DER) bytes and files.
//!
//! The `*_from_*` functions parse bytes and are what the fuzz targets drive; the `load_*`
//! functions read a file and name it in their error. Reading is blocking: async callers run
//! them on a blocking thread (`tokio::task::spawn_blocking`).

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::{Error, ParseError, Result};

/// Parses every certificate of PEM text.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ParseError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ParseError::caused_by("invalid PEM", e))
}

/// Reads every certificate of a PEM file (a full chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, "read", e))?;
    let certs = certs_from_pem(&bytes).map_err(|e| Error::bad_file(path, e))?;
    if certs.is_empty() {
        return Err(Error::bad_file(
            path,
            "no CERTIFICATE found (expected a PEM file with -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// Parses a private key from PEM bytes: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn key_from_pem(bytes: &[u8]) -> Result<PrivateKeyDer<'static>, ParseError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| {
        ParseError::caused_by(
            "no usable private key (expected PEM 'PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY')",
            e,
        )
    })
}

/// Reads a private key from a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, "read", e))?;
    key_from_pem(&bytes).map_err(|e| Error::bad_file(path, e))
}

/// Parses CRLs from PEM (`X509 CRL`) or DER bytes.
pub fn crls_from_bytes(
    bytes: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, ParseError> {
    let crls = if bytes.starts_with(b"-----") || bytes.iter().take(64).all(|b| b.is_ascii()) {
        CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| ParseError::caused_by("invalid PEM", e))?
    } else {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    };
    if crls.is_empty() {
        return Err(ParseError::new(
            "no X509 CRL found (expected PEM -----BEGIN X509 CRL----- or DER; tlsnet pki crl writes one)",
        ));
    }
    Ok(crls)
}

/// Reads the CRLs of a file: PEM (`X509 CRL`) or DER.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, "read", e))?;
    crls_from_bytes(&bytes).map_err(|e| Error::bad_file(path, e))
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads a chain and a key from PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self> {
        Ok(Identity {
            chain: load_certs(cert)?,
            key: load_key(key)?,
        })
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}
