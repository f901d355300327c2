//! Certificate inspection: certificates from files (PEM, DER, PKCS#12) and from remote servers.
//!
//! - [`file`]: read a certificate file whatever its encoding;
//! - [`remote`]: record the chain a server presents (trusted or not), what the handshake
//!   negotiated, and the verdict a client would reach;
//! - [`starttls`]: the plain-text preamble of mail protocols;
//! - [`text`]: the human-readable form `tlsnet inspect` prints.
//!
//! The helpers here work on any list of certificates: [`expiring_within`] for
//! `--check-expiry` and [`to_pem`] for `--pem`.

pub mod file;
pub mod remote;
pub mod starttls;
pub mod text;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::x509::rfc3339;

/// A certificate that expires within the period asked about (or has already expired).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiring {
    /// Position in the list.
    pub index: usize,
    /// Subject of the certificate.
    pub subject: String,
    /// Its `notAfter`, RFC 3339.
    pub not_after: String,
    /// Whether it has already expired.
    pub expired: bool,
}

/// The certificates whose `notAfter` is less than `within` from now (or already past), like
/// `openssl x509 -checkend SECONDS`. A certificate that cannot be parsed counts as expiring:
/// its expiry cannot be shown to be later.
pub fn expiring_within(chain: &[CertificateDer<'_>], within: Duration) -> Vec<Expiring> {
    let now = OffsetDateTime::now_utc();
    let limit = now + within;
    chain
        .iter()
        .enumerate()
        .filter_map(|(index, der)| match X509Certificate::from_der(der) {
            Ok((_, cert)) => {
                let not_after = cert.validity().not_after.to_datetime();
                (not_after < limit).then(|| Expiring {
                    index,
                    subject: cert.subject().to_string(),
                    not_after: rfc3339(not_after),
                    expired: not_after < now,
                })
            }
            Err(e) => Some(Expiring {
                index,
                subject: format!("<unparsable certificate: {e}>"),
                not_after: String::new(),
                expired: true,
            }),
        })
        .collect()
}

/// Certificates as PEM, one `-----BEGIN CERTIFICATE-----` block each, in order.
pub fn to_pem(chain: &[CertificateDer<'_>]) -> String {
    let mut out = String::new();
    for cert in chain {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = STANDARD.encode(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    fn cert_valid_for(days: i64) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x.test".to_owned()]).unwrap();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(400);
        params.not_after = now + time::Duration::days(days);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn finds_what_expires() {
        let chain = [cert_valid_for(10), cert_valid_for(100), cert_valid_for(-1)];
        let found = expiring_within(&chain, Duration::from_secs(30 * 86400));
        let indexes: Vec<usize> = found.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [0, 2]);
        assert!(!found[0].expired && found[1].expired);
        assert!(expiring_within(&chain[1..2], Duration::from_secs(86400)).is_empty());
    }

    #[test]
    fn pem_round_trips() {
        let chain = vec![cert_valid_for(1), cert_valid_for(2)];
        let pem = to_pem(&chain);
        let back: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, chain);
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
    }
}
