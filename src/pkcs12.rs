//! PKCS#12 (`.p12`, `.pfx`) files: a certificate chain and its private key under a password.
//!
//! [`write`] produces what OpenSSL 3 writes by default: certificates and key encrypted with
//! PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and an HMAC-SHA256 integrity MAC, so that
//! `openssl pkcs12`, browsers and Java's keystore open it without legacy algorithms.
//! [`read`] also opens the older files made with 3DES or RC2 (`openssl pkcs12 -legacy`).
//!
//! The encoding is done by the `p12-keystore` crate.

use p12_keystore::error::Error as P12Error;
use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, Pkcs12Archive,
    PrivateKey, PrivateKeyChain,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Result};

/// Iterations of the key derivation for encryption and for the MAC (OpenSSL 3 uses 2048;
/// Java uses 10000).
const ITERATIONS: u32 = 10_000;

/// What a PKCS#12 file holds.
pub struct Pkcs12Contents {
    /// The certificates: the private key's certificate first (when there is a key), then the
    /// others in the order of the file.
    pub certificates: Vec<CertificateDer<'static>>,
    /// The private key (PKCS#8), if the file holds one.
    pub key: Option<PrivateKeyDer<'static>>,
    /// The friendly name ("alias") of the key, or else of the first certificate.
    pub friendly_name: Option<String>,
}

impl std::fmt::Debug for Pkcs12Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs12Contents")
            .field("certificates", &self.certificates.len())
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("friendly_name", &self.friendly_name)
            .finish()
    }
}

/// Whether bytes look like a PKCS#12 file (a DER `PFX` with version 3). Cheap: it does not
/// decrypt anything.
pub fn looks_like_pkcs12(data: &[u8]) -> bool {
    // SEQUENCE { INTEGER 3, SEQUENCE { OID pkcs7-data ... } ... }
    let Some(rest) = skip_header(data, 0x30) else {
        return false;
    };
    rest.starts_with(&[0x02, 0x01, 0x03, 0x30])
}

fn skip_header(data: &[u8], tag: u8) -> Option<&[u8]> {
    if data.first() != Some(&tag) {
        return None;
    }
    let first = *data.get(1)?;
    let header = if first < 0x80 {
        2
    } else {
        2 + usize::from(first & 0x7f)
    };
    data.get(header..)
}

/// Reads a PKCS#12 file's certificates and key with `password`.
///
/// A wrong password is reported as such (the integrity MAC does not match).
pub fn read(data: &[u8], password: &str) -> Result<Pkcs12Contents> {
    let archive = Pkcs12Archive::from_pkcs12(data, password).map_err(|e| match e {
        P12Error::MacError(_) => {
            Error::InvalidInput("PKCS#12: wrong password (the integrity check failed)".to_owned())
        }
        other => Error::InvalidInput(format!("PKCS#12: cannot be read: {other}")),
    })?;
    let key_bag = archive.keys.first();
    let key = key_bag
        .map(|bag| PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bag.key.as_der().to_vec())));
    // The key's certificate: the one with the same localKeyId, else the one whose public key
    // matches.
    let mut leaf = None;
    if let Some(bag) = key_bag {
        if let Some(id) = &bag.local_key_id {
            leaf = archive
                .certs
                .iter()
                .position(|c| c.local_key_id.as_deref().is_some_and(|k| k == id.as_ref()));
        }
        if leaf.is_none() {
            leaf = archive.certs.iter().position(|c| {
                key_matches(
                    c.cert.as_der(),
                    &PrivateKeyDer::Pkcs8(bag.key.as_der().to_vec().into()),
                )
            });
        }
    }
    let mut order: Vec<usize> = leaf.into_iter().collect();
    order.extend((0..archive.certs.len()).filter(|i| Some(*i) != leaf));
    let certificates: Vec<CertificateDer<'static>> = order
        .iter()
        .map(|&i| CertificateDer::from(archive.certs[i].cert.as_der().to_vec()))
        .collect();
    let friendly_name = key_bag
        .and_then(|bag| bag.friendly_name.clone())
        .or_else(|| {
            order
                .first()
                .and_then(|&i| archive.certs[i].friendly_name.clone())
        });
    Ok(Pkcs12Contents {
        certificates,
        key,
        friendly_name,
    })
}

/// Writes a chain (leaf first) and the leaf's private key (PKCS#8 DER, as
/// `rcgen::KeyPair::serialize_der` makes it) as a PKCS#12 file encrypted with `password`.
/// `friendly_name` is the name a keystore or browser shows for the key.
///
/// The key must belong to the first certificate.
pub fn write(
    chain: &[CertificateDer<'_>],
    key_der: &[u8],
    password: &str,
    friendly_name: &str,
) -> Result<Vec<u8>> {
    let leaf = chain
        .first()
        .ok_or_else(|| Error::InvalidInput("PKCS#12: no certificate to write".to_owned()))?;
    let key = PrivateKey::from_der(key_der).map_err(|e| {
        Error::InvalidInput(format!(
            "PKCS#12: the private key is not PKCS#8 DER ({e}); convert it with `openssl pkcs8 -topk8 -nocrypt`"
        ))
    })?;
    let key_rustls = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
    if !key_matches(leaf, &key_rustls) {
        return Err(Error::InvalidInput(
            "PKCS#12: the private key does not belong to the first certificate of the chain"
                .to_owned(),
        ));
    }
    let mut certs = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        certs.push(Certificate::from_der(der).map_err(|e| {
            Error::unusable(format!("PKCS#12: certificate {i} is not valid X.509"), e)
        })?);
    }
    // OpenSSL's convention: the localKeyId is the SHA-1 of the key's certificate.
    let local_key_id =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf.as_ref())
            .as_ref()
            .to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        friendly_name,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, certs)),
    );
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map_err(|e| Error::unusable("PKCS#12: cannot be written", e))
}

/// Whether a private key belongs to a certificate (same public key).
pub fn key_matches(cert_der: &[u8], key: &PrivateKeyDer<'_>) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return false;
    };
    let Ok(signing) = rustls::crypto::aws_lc_rs::sign::any_supported_type(key) else {
        return false;
    };
    signing
        .public_key()
        .is_some_and(|spki| spki.as_ref() == cert.public_key().raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> (Vec<CertificateDer<'static>>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["p12.test".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (vec![cert.der().clone()], key.serialize_der())
    }

    #[test]
    fn round_trips() {
        let (chain, key) = identity();
        let p12 = write(&chain, &key, "s3cret", "my key").unwrap();
        assert!(looks_like_pkcs12(&p12));
        let back = read(&p12, "s3cret").unwrap();
        assert_eq!(back.certificates, chain);
        assert_eq!(back.friendly_name.as_deref(), Some("my key"));
        match back.key {
            Some(PrivateKeyDer::Pkcs8(k)) => assert_eq!(k.secret_pkcs8_der(), key.as_slice()),
            other => panic!("expected a PKCS#8 key, got {other:?}"),
        }
        let wrong = read(&p12, "wrong").unwrap_err().to_string();
        assert!(wrong.contains("wrong password"), "{wrong}");
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let (chain, _) = identity();
        let (_, other_key) = identity();
        let err = write(&chain, &other_key, "pw", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not belong"), "{err}");
        assert!(write(&[], &other_key, "pw", "x").is_err());
        assert!(!looks_like_pkcs12(chain[0].as_ref()));
    }
}
