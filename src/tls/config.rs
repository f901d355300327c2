//! rustls configuration: the crypto provider, protocol versions and groups, client and server
//! settings. Pure configuration: the certificates and keys come in as values (see
//! [`super::files`]), except for the system trust store.
//!
//! Defaults follow Mozilla's "modern" profile: TLS 1.3 only; TLS 1.2 only when asked, and then
//! only ECDHE key exchange with AEAD ciphers. Key exchange prefers the hybrid post-quantum
//! group X25519MLKEM768, then X25519, P-256 and P-384.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, KeyLog, NamedGroup, RootCertStore, ServerConfig, SupportedCipherSuite,
    SupportedProtocolVersion,
};

use super::files::Identity;
use super::pin::SpkiPin;
use super::policy::{AccessPolicy, PolicyVerifier, ServerPolicyVerifier};
use super::sni::SniResolver;
use super::verify;
use crate::danger;
use crate::error::{Error, Result};

/// Key-exchange groups in order of preference.
pub fn kx_groups() -> Vec<&'static dyn SupportedKxGroup> {
    vec![
        aws_lc_rs::kx_group::X25519MLKEM768,
        aws_lc_rs::kx_group::X25519,
        aws_lc_rs::kx_group::SECP256R1,
        aws_lc_rs::kx_group::SECP384R1,
    ]
}

/// Cipher suites in order of preference: the three TLS 1.3 suites, then TLS 1.2's ECDHE with
/// AES-GCM or ChaCha20-Poly1305 (used only with `allow_tls12`). Named one by one, so that a
/// change of the library's defaults cannot widen what we accept.
pub fn cipher_suites() -> Vec<SupportedCipherSuite> {
    use aws_lc_rs::cipher_suite as cs;
    vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// The crypto provider tlsnet uses everywhere: aws-lc-rs with the suites of [`cipher_suites`]
/// and the groups of [`kx_groups`].
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites = cipher_suites();
    provider.kx_groups = kx_groups();
    Arc::new(provider)
}

/// Whether a key-exchange group is post-quantum (a hybrid with ML-KEM counts).
pub fn is_post_quantum(group: NamedGroup) -> bool {
    matches!(
        group,
        NamedGroup::X25519MLKEM768
            | NamedGroup::secp256r1MLKEM768
            | NamedGroup::MLKEM512
            | NamedGroup::MLKEM768
            | NamedGroup::MLKEM1024
    )
}

/// Whether the CPU has a hardware random generator (RDRAND on x86_64, RNDR on aarch64), which
/// aws-lc mixes into every seed next to the kernel's (see docs/SECURITY.md, "Randomness").
pub fn cpu_has_hardware_rng() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("rdrand")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("rand")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS13_AND_TLS12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(allow_tls12: bool) -> &'static [&'static SupportedProtocolVersion] {
    if allow_tls12 {
        TLS13_AND_TLS12
    } else {
        TLS13_ONLY
    }
}

/// Whether and how the server asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// A certificate signed by the client CA is required.
    #[default]
    Required,
    /// A certificate is asked for; if one is sent it must be valid, but none is accepted too.
    Optional,
    /// No certificate is asked for.
    None,
}

impl ClientAuth {
    /// The mode in force: `requested` if given, else required when there is a client CA and
    /// none otherwise. Asking for client certificates without a CA is an error.
    pub fn resolve(requested: Option<ClientAuth>, have_client_ca: bool) -> Result<ClientAuth> {
        match (requested, have_client_ca) {
            (Some(ClientAuth::None), _) => Ok(ClientAuth::None),
            (Some(mode), true) => Ok(mode),
            (None, true) => Ok(ClientAuth::Required),
            (None, false) => Ok(ClientAuth::None),
            (Some(mode), false) => Err(Error::InvalidInput(format!(
                "--client-auth {} needs --client-ca FILE (the CA that signs client certificates)",
                mode.name()
            ))),
        }
    }

    /// `required`, `optional` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
            ClientAuth::None => "none",
        }
    }
}

/// Everything the server side needs to build a rustls `ServerConfig`.
#[derive(Debug, Clone)]
pub struct ServerTlsOptions {
    /// The server's certificate chains and keys. With several, each client gets the one whose
    /// names cover the name it asked for (SNI); the first is the default.
    pub identities: Vec<Identity>,
    /// CA certificates that sign acceptable client certificates.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// Whether client certificates are asked for (needs `client_ca` unless `None`).
    pub client_auth: ClientAuth,
    /// Also accept TLS 1.2.
    pub allow_tls12: bool,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<Vec<u8>>,
    /// CRLs: client certificates listed there are refused.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Which verified client certificates are admitted (empty: every one the client CA signed).
    pub policy: AccessPolicy,
    /// Where the secrets of each connection are written, for decrypting a capture (see
    /// [`super::keylog`]). `None`: nowhere (and `SSLKEYLOGFILE` is ignored).
    pub key_log: Option<Arc<dyn KeyLog>>,
    /// Try to move each connection's records to the kernel after the handshake (`--ktls`;
    /// see [`crate::net::kernel_tls`]). It sets rustls's `enable_secret_extraction`, which
    /// is how the server knows.
    pub kernel_tls: bool,
}

impl ServerTlsOptions {
    /// Options with a server identity and no client authentication.
    pub fn new(identity: Identity) -> Self {
        ServerTlsOptions {
            identities: vec![identity],
            client_ca: Vec::new(),
            client_auth: ClientAuth::None,
            allow_tls12: false,
            alpn: Vec::new(),
            crls: Vec::new(),
            policy: AccessPolicy::default(),
            key_log: None,
            kernel_tls: false,
        }
    }

    /// Requires client certificates signed by one of `ca`.
    pub fn require_client_certs(mut self, ca: Vec<CertificateDer<'static>>) -> Self {
        self.client_ca = ca;
        self.client_auth = ClientAuth::Required;
        self
    }

    /// Builds the rustls configuration.
    pub fn build(&self) -> Result<Arc<ServerConfig>> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(self.allow_tls12))
            .map_err(|e| tls_config("protocol versions", e))?;
        if !self.policy.is_empty() && self.client_auth != ClientAuth::Required {
            return Err(Error::InvalidInput(
                "an access policy (--allow-*) needs client certificates to be required".into(),
            ));
        }
        let builder = match self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            mode => {
                if self.client_ca.is_empty() {
                    return Err(Error::InvalidInput(
                        "client authentication needs a client CA (--client-ca FILE)".into(),
                    ));
                }
                let roots = root_store(&self.client_ca, "client CA")?;
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                if mode == ClientAuth::Optional {
                    verifier = verifier.allow_unauthenticated();
                }
                if !self.crls.is_empty() {
                    // Leaf revocation only: intermediates are checked by their CA's CRL,
                    // which a private PKI may not publish.
                    verifier = verifier
                        .with_crls(self.crls.clone())
                        .only_check_end_entity_revocation();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| Error::unusable("client CA cannot be used", e))?;
                builder
                    .with_client_cert_verifier(PolicyVerifier::wrap(verifier, self.policy.clone()))
            }
        };
        let resolver = SniResolver::new(&self.identities, &provider)?;
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = self.alpn.clone();
        if let Some(key_log) = &self.key_log {
            config.key_log = key_log.clone();
        }
        config.enable_secret_extraction = self.kernel_tls;
        if self.client_auth == ClientAuth::None {
            // Stateless TLS 1.3 tickets: resumption without a server-side cache.
            config.ticketer =
                aws_lc_rs::Ticketer::new().map_err(|e| tls_config("session ticket key", e))?;
        } else {
            // No resumption with client certificates: a resumed session skips the certificate
            // check, so a certificate revoked (or a CA removed) after the first handshake would
            // keep working until the ticket expires. Every mutual-TLS handshake verifies.
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(Arc::new(config))
    }
}

/// Where the client's trust in the server comes from.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// The operating system's trust store.
    System,
    /// The CA certificates of a file.
    Roots(Vec<CertificateDer<'static>>),
    /// No CA: the server's key must match the pin (the host name is still checked).
    PinOnly,
    /// No verification at all. See [`danger`].
    Insecure,
}

/// Everything the client side needs to build a rustls `ClientConfig`.
#[derive(Debug, Clone)]
pub struct ClientTlsOptions {
    /// Trust anchors.
    pub trust: ServerTrust,
    /// A pin the server's key must match, in addition to `trust`.
    pub pin: Option<SpkiPin>,
    /// A client certificate and key, for servers that ask for one.
    pub identity: Option<Identity>,
    /// Also offer TLS 1.2.
    pub allow_tls12: bool,
    /// ALPN protocols offered.
    pub alpn: Vec<Vec<u8>>,
    /// CRLs: a server certificate listed there is refused (needs a CA, not pin-only).
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Where the secrets of each connection are written, for decrypting a capture (see
    /// [`super::keylog`]). `None`: nowhere (and `SSLKEYLOGFILE` is ignored).
    pub key_log: Option<Arc<dyn KeyLog>>,
    /// Rules the server's (verified) certificate must also satisfy, one at least (empty: no
    /// rule beyond the trust settings). A server that matches none is refused in the
    /// handshake, before a byte is sent.
    pub server_policy: AccessPolicy,
}

impl ClientTlsOptions {
    /// Options trusting the given CA certificates.
    pub fn with_roots(roots: Vec<CertificateDer<'static>>) -> Self {
        ClientTlsOptions {
            trust: ServerTrust::Roots(roots),
            pin: None,
            identity: None,
            allow_tls12: false,
            alpn: Vec::new(),
            crls: Vec::new(),
            key_log: None,
            server_policy: AccessPolicy::default(),
        }
    }

    /// Adds a client certificate.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Builds the rustls configuration.
    pub fn build(&self) -> Result<Arc<ClientConfig>> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(self.allow_tls12))
            .map_err(|e| tls_config("protocol versions", e))?;
        let webpki = |roots: RootCertStore| {
            let mut builder =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if !self.crls.is_empty() {
                builder = builder
                    .with_crls(self.crls.clone())
                    .only_check_end_entity_revocation();
            }
            builder
                .build()
                .map_err(|e| Error::unusable("trust anchors cannot be used", e))
        };
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match &self.trust {
            ServerTrust::System => {
                let inner = webpki(system_roots()?)?;
                verify::PinningVerifier::wrap(Some(inner), self.pin, provider.clone())
            }
            ServerTrust::Roots(certs) => {
                let inner = webpki(root_store(certs, "CA file")?)?;
                verify::PinningVerifier::wrap(Some(inner), self.pin, provider.clone())
            }
            ServerTrust::PinOnly => {
                let pin = self.pin.ok_or_else(|| {
                    Error::InvalidInput("pin-only verification needs a pin (--pin)".into())
                })?;
                verify::PinningVerifier::wrap(None, Some(pin), provider.clone())
            }
            ServerTrust::Insecure => Arc::new(danger::NoVerification::new(provider.clone())),
        };
        let verifier = ServerPolicyVerifier::wrap(verifier, self.server_policy.clone());
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| tls_config("client certificate and key", e))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        if let Some(key_log) = &self.key_log {
            config.key_log = key_log.clone();
        }
        Ok(Arc::new(config))
    }
}

/// Parses a server name for SNI and the name check: a DNS name or an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>> {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_owned())
        .map_err(|_| Error::InvalidInput(format!("'{name}' is not a valid DNS name or IP address")))
}

fn root_store(certs: &[CertificateDer<'static>], what: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(|e| Error::unusable(format!("{what}: unusable CA certificate"), e))?;
    }
    Ok(roots)
}

/// The operating system's trust store; an error says how to get one.
pub fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "the trust store is empty".into());
        return Err(Error::InvalidInput(format!(
            "no system CA certificates could be loaded ({why}); install ca-certificates or pass --ca FILE"
        )));
    }
    Ok(roots)
}

fn tls_config(context: &str, source: rustls::Error) -> Error {
    Error::TlsConfig {
        context: context.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_is_modern() {
        let p = provider();
        for suite in &p.cipher_suites {
            let name = suite.suite().as_str().unwrap_or("unnamed");
            assert!(name.contains("GCM") || name.contains("CHACHA20"), "{name}");
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
        }
        let groups: Vec<NamedGroup> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [
                NamedGroup::X25519MLKEM768,
                NamedGroup::X25519,
                NamedGroup::secp256r1,
                NamedGroup::secp384r1
            ]
        );
        assert!(is_post_quantum(NamedGroup::X25519MLKEM768));
        assert!(!is_post_quantum(NamedGroup::X25519));
    }

    #[test]
    fn server_names() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("::1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("bad name!").is_err());
    }
}
