//! Server certificate verification with an optional SPKI pin.
//!
//! With a CA, the chain and the name are checked by webpki and the pin, if any, is checked on
//! top. Without a CA (pin-only), the leaf's key must match the pin, its name must match and it
//! must be within its validity period: the pin replaces the chain, nothing else is relaxed.

use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, Error, OtherError};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::failure::PinMismatchError;
use super::pin::SpkiPin;

/// Implements the handshake-signature methods of a `ServerCertVerifier` with the signature
/// algorithms of `self.provider`: every verifier, even the dangerous ones, checks that the peer
/// holds the key of the certificate it sent.
macro_rules! handshake_signatures_via_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use handshake_signatures_via_provider;

/// Verifies the server with webpki and/or an SPKI pin.
#[derive(Debug)]
pub struct PinningVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    pin: Option<SpkiPin>,
    provider: Arc<CryptoProvider>,
}

impl PinningVerifier {
    /// Wraps a webpki verifier (or none, for pin-only) with a pin (or none).
    pub fn wrap(
        inner: Option<Arc<WebPkiServerVerifier>>,
        pin: Option<SpkiPin>,
        provider: Arc<CryptoProvider>,
    ) -> Arc<dyn ServerCertVerifier> {
        match (inner, pin) {
            (Some(inner), None) => inner,
            (inner, pin) => Arc::new(PinningVerifier {
                inner,
                pin,
                provider,
            }),
        }
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match &self.inner {
            Some(inner) => {
                inner.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                )?;
            }
            None => {
                let parsed = ParsedCertificate::try_from(end_entity)?;
                verify_server_name(&parsed, server_name)?;
                check_validity(end_entity, now)?;
            }
        }
        if let Some(expected) = self.pin {
            let presented = SpkiPin::of_certificate(end_entity)
                .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
            if presented != expected {
                return Err(Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(PinMismatchError {
                        expected,
                        presented,
                    })),
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures_via_provider!();
}

fn check_validity(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), Error> {
    let (_, parsed) = X509Certificate::from_der(cert)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now_secs = now.as_secs() as i64;
    let not_before = parsed.validity().not_before.timestamp();
    let not_after = parsed.validity().not_after.timestamp();
    let as_unix =
        |t: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.max(0) as u64));
    if now_secs < not_before {
        return Err(Error::InvalidCertificate(
            CertificateError::NotValidYetContext {
                time: now,
                not_before: as_unix(not_before),
            },
        ));
    }
    if now_secs > not_after {
        return Err(Error::InvalidCertificate(
            CertificateError::ExpiredContext {
                time: now,
                not_after: as_unix(not_after),
            },
        ));
    }
    Ok(())
}
