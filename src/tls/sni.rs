//! Several server certificates on one listener, chosen by the name the client asks for (SNI).
//!
//! Each certificate covers the DNS names of its subject alternative names (a `*.example.com`
//! name covers one label, as in RFC 6125). A client whose name no certificate covers, or that
//! sends no name (an IP address, the seeds' clients), gets the first certificate.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::files::Identity;
use crate::error::{Error, Result};

/// Picks a server certificate by SNI.
pub struct SniResolver {
    /// (DNS names, lowercase; the key) in the order given.
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
    /// The first certificate.
    default: Arc<CertifiedKey>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field(
                "names",
                &self.certs.iter().map(|c| &c.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SniResolver {
    /// Loads every identity's key with `provider` (checking that it matches its certificate).
    pub fn new(identities: &[Identity], provider: &CryptoProvider) -> Result<Self> {
        if identities.is_empty() {
            return Err(Error::InvalidInput(
                "a server needs at least one certificate".into(),
            ));
        }
        let mut certs: Vec<(Vec<String>, Arc<CertifiedKey>)> = Vec::with_capacity(identities.len());
        for (i, id) in identities.iter().enumerate() {
            let key = CertifiedKey::from_der(id.chain.clone(), id.key.clone_key(), provider)
                .map_err(|e| Error::TlsConfig {
                    context: format!("server certificate and key #{}", i + 1),
                    source: e,
                })?;
            let names = id.chain.first().map(|c| dns_names(c)).unwrap_or_default();
            certs.push((names, Arc::new(key)));
        }
        let default = certs[0].1.clone();
        Ok(SniResolver { certs, default })
    }

    /// The certificate for `name` (the first one when none covers it).
    pub fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let found = name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.certs
                .iter()
                .find(|(names, _)| names.iter().any(|n| covers(n, &name)))
        });
        found.map_or_else(|| self.default.clone(), |(_, key)| key.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Whether a certificate name (`example.com`, `*.example.com`) covers `name` (lowercase).
fn covers(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == name,
    }
}

fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("*.example.com", "www.example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(covers("example.com", "example.com"));
    }
}
