//! Shared by the fuzz targets: a real CA, server certificate and key, made once per process,
//! so that fuzzed keys and CRLs go through the same configuration code as `tlsnet serve`.

#![allow(dead_code)]

use std::sync::LazyLock;
use std::time::Duration;

use tlsnet::pki::{CertificateAuthority, KeyType, LeafSpec, Purpose};
use tlsnet::tls::{ClientAuth, Identity, ServerTlsOptions};

/// The password of every PKCS#12 seed that scripts/fuzz makes.
pub const PASSWORD: &str = "fuzz-password";

pub struct Fixture {
    /// The CA certificate (DER), used as the client CA.
    pub ca: Vec<u8>,
    /// A server certificate issued by the CA, and its key.
    pub identity: Identity,
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let ca =
        CertificateAuthority::generate("fuzz CA", KeyType::EcdsaP256, Duration::from_secs(86_400))
            .expect("generate the fuzz CA");
    let leaf = ca
        .issue(&LeafSpec::new(Purpose::Server, "fuzz.test"))
        .expect("issue the fuzz server certificate");
    let chain = tlsnet::tls::certs_from_pem(leaf.chain_pem.as_bytes()).expect("chain PEM");
    let key = tlsnet::tls::key_from_pem(leaf.key_pem.as_bytes()).expect("key PEM");
    let ca_der = tlsnet::tls::certs_from_pem(ca.cert_pem().as_bytes()).expect("CA PEM")[0].to_vec();
    Fixture {
        ca: ca_der,
        identity: Identity { chain, key },
    }
});

/// Server options with the fixture's identity and mutual TLS against the fixture's CA.
pub fn server_options() -> ServerTlsOptions {
    let mut options = ServerTlsOptions::new(FIXTURE.identity.clone());
    options.client_ca = vec![FIXTURE.ca.clone().into()];
    options.client_auth = ClientAuth::Required;
    options
}
