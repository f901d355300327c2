//! Everything that weakens verification lives here, so that a review can find it.
//!
//! [`NoVerification`] accepts any server certificate. It still checks that the server holds the
//! key of the certificate it sent (the handshake signature), but anyone on the path can send
//! their own certificate. It exists for `tlsnet connect --insecure`, which warns on every use,
//! and for `tlsnet inspect`, which records the chain, sends no data and judges the chain
//! separately.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::Error;

use crate::tls::verify::handshake_signatures_via_provider;

/// Accepts every server certificate and remembers the last chain it saw. Offers no
/// protection against an active attacker.
#[derive(Debug)]
pub struct NoVerification {
    provider: Arc<CryptoProvider>,
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl NoVerification {
    /// A verifier that checks handshake signatures with `provider` and nothing else.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        NoVerification {
            provider,
            chain: Mutex::new(Vec::new()),
        }
    }

    /// The last chain presented (leaf first), taken out of the verifier.
    pub fn take_chain(&self) -> Vec<CertificateDer<'static>> {
        std::mem::take(&mut *self.chain.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let mut chain = self.chain.lock().unwrap_or_else(PoisonError::into_inner);
        chain.clear();
        chain.push(end_entity.clone().into_owned());
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures_via_provider!();
}
