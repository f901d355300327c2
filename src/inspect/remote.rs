//! Certificates presented by a remote server, with the verdict a client would reach.
//!
//! The chain is recorded during the handshake whether or not it is trusted, so that an
//! untrusted, expired or misnamed certificate can still be looked at. That handshake accepts
//! any certificate (the server must still prove it holds the key), so it is never used for
//! application data: right after it, the connection is closed with `close_notify`. The
//! verdict is computed separately, with rustls' `WebPkiServerVerifier` (the same check
//! `tlsnet connect` makes) against the system roots or the given CA certificates.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, KeyLog, RootCertStore, SignatureScheme};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::prelude::{FromDer, X509Name};

use crate::error::{Error, Result};
use crate::inspect::starttls::StartTls;
use crate::net::client::{connect_tcp, split_host_port, ClientStream, Connector};
use crate::tls::HandshakeReport;
use crate::tls::{self, Identity};
use crate::tls::{FailureCause, Side};
use crate::x509::CertSummary;

/// How long to wait for the server's reaction to our client certificate after the handshake.
const REFUSAL_WAIT: Duration = Duration::from_secs(2);

/// What the server's chain is checked against.
#[derive(Clone, Debug, Default)]
pub enum TrustAnchors {
    /// The operating system's trust store.
    #[default]
    System,
    /// CA certificates, e.g. from `--ca FILE`; `source` names them in the verdict.
    Roots {
        /// Where the certificates come from (a file name).
        source: String,
        /// The CA certificates.
        certs: Vec<CertificateDer<'static>>,
    },
}

/// How to reach and judge the server.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Name sent as SNI and checked against the certificate [default: the host].
    pub server_name: Option<String>,
    /// What the verdict trusts.
    pub anchors: TrustAnchors,
    /// A client certificate, for servers that require one.
    pub identity: Option<Identity>,
    /// Plain-text exchange before TLS, for mail servers.
    pub starttls: Option<StartTls>,
    /// ALPN protocols to offer.
    pub alpn: Vec<Vec<u8>>,
    /// Deadline for each step: connecting, STARTTLS, the handshake.
    pub timeout: Duration,
    /// Where the handshake's secrets are written, for decrypting a capture (see
    /// [`crate::tls::keylog`]). `None`: nowhere.
    pub key_log: Option<Arc<dyn KeyLog>>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            server_name: None,
            anchors: TrustAnchors::System,
            identity: None,
            starttls: None,
            alpn: Vec::new(),
            timeout: Duration::from_secs(10),
            key_log: None,
        }
    }
}

/// Whether a client would trust the server.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Verdict {
    /// The chain leads to a trusted CA, every certificate is valid now and the leaf covers
    /// the server name and is meant for servers.
    pub trusted: bool,
    /// What the chain was checked against: `system trust store` or `CA file NAME`.
    pub checked_against: String,
    /// The name checked against the certificate.
    pub name: String,
    /// Why it is not trusted, in words.
    pub problem: Option<String>,
    /// A stable label for the problem (`unknown_issuer`, `certificate_expired`, ...).
    pub problem_label: Option<String>,
}

/// What the server asked of the client, and what came of it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ClientAuthInfo {
    /// Whether the server asked for a client certificate.
    pub requested: bool,
    /// The CA names the server said it accepts (may be empty even when requested).
    pub acceptable_cas: Vec<String>,
    /// The subject of the certificate we sent, if we sent one.
    pub sent: Option<String>,
    /// The server's refusal after the handshake, in words (TLS 1.3 servers check the client
    /// certificate after the client has finished its part).
    pub refused: Option<String>,
}

/// What a server presented and negotiated.
#[derive(Clone, Debug)]
pub struct RemoteInspection {
    /// The address inspected.
    pub target: String,
    /// The name sent as SNI (when it is a DNS name) and checked by the verdict.
    pub server_name: String,
    /// The STARTTLS protocol used, if any.
    pub starttls: Option<StartTls>,
    /// The certificates as the server presented them, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// A summary of each certificate of `chain`.
    pub certificates: Vec<CertSummary>,
    /// What the handshake negotiated; `None` when it failed after the certificates arrived.
    pub report: Option<HandshakeReport>,
    /// Why the handshake failed, when it did after the certificates arrived.
    pub handshake_error: Option<String>,
    /// Whether a client would trust the server.
    pub verdict: Verdict,
    /// Client certificate request and outcome.
    pub client_auth: ClientAuthInfo,
}

impl RemoteInspection {
    /// The inspection as JSON: `certificates` holds the chain; `handshake` is the handshake
    /// report without its copy of the chain.
    pub fn to_json(&self) -> serde_json::Value {
        let mut handshake = serde_json::to_value(&self.report).unwrap_or_default();
        if let Some(map) = handshake.as_object_mut() {
            map.remove("peer_chain");
        }
        serde_json::json!({
            "target": self.target,
            "server_name": self.server_name,
            "starttls": self.starttls,
            "handshake": handshake,
            "handshake_error": self.handshake_error,
            "verdict": self.verdict,
            "client_auth": self.client_auth,
            "certificates": self.certificates,
        })
    }
}

/// Connects to `addr` (`HOST:PORT`), records the chain the server presents, closes the
/// connection without sending data, and judges the chain.
///
/// Fails when the server could not be reached or sent no certificate; a handshake that
/// fails after the certificates arrived still gives an inspection, with `handshake_error`.
pub async fn fetch(addr: &str, options: &RemoteOptions) -> Result<RemoteInspection> {
    let (host, _port) = split_host_port(addr)?;
    let name_text = options.server_name.clone().unwrap_or(host);
    let server_name = tls::server_name(&name_text)?;
    let provider = tls::provider();

    let recorder = Arc::new(crate::danger::NoVerification::new(provider.clone()));
    let client_cert = Arc::new(ClientCertRecorder::new(
        options.identity.as_ref(),
        &provider,
    )?);
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::TlsConfig {
            context: "protocol versions".to_owned(),
            source: e,
        })?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_client_cert_resolver(client_cert.clone());
    config.alpn_protocols = options.alpn.clone();
    if let Some(key_log) = &options.key_log {
        config.key_log = key_log.clone();
    }
    // Always a full handshake, so that the server presents its certificates.
    config.resumption = Resumption::disabled();
    let mut connector = Connector::new(Arc::new(config));
    connector.connect_timeout = options.timeout;
    connector.handshake_timeout = options.timeout;

    let mut tcp = connect_tcp(addr, options.timeout).await?;
    let _ = tcp.set_nodelay(true);
    if let Some(protocol) = options.starttls {
        protocol.negotiate(&mut tcp, addr, options.timeout).await?;
    }
    let started = Instant::now();
    let outcome = connector.handshake(tcp, addr, server_name.clone()).await;
    let chain = recorder.take_chain();
    let (report, handshake_error, stream) = match outcome {
        Ok((stream, report)) => (Some(report), None, Some(stream)),
        Err(e) if !chain.is_empty() => (None, Some(handshake_cause(e)), None),
        Err(e) => return Err(e),
    };
    if chain.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{addr} sent no certificate (after {} ms)",
            started.elapsed().as_millis()
        )));
    }
    let mut client_auth = client_cert.info();
    if let Some(stream) = stream {
        client_auth.refused = close(stream, client_auth.requested).await;
    }
    let verdict = judge(
        &chain,
        &server_name,
        &name_text,
        &options.anchors,
        &provider,
    );
    let certificates = chain
        .iter()
        .map(|der| {
            CertSummary::from_der(der).unwrap_or_else(|e| CertSummary::unparsable(&e.describe()))
        })
        .collect();
    Ok(RemoteInspection {
        target: addr.to_owned(),
        server_name: name_text,
        starttls: options.starttls,
        chain,
        certificates,
        report,
        handshake_error,
        verdict,
        client_auth,
    })
}

fn handshake_cause(e: Error) -> String {
    match e {
        Error::Handshake { cause, .. } => cause.to_string(),
        other => other.to_string(),
    }
}

/// Sends `close_notify` (no application data is ever sent). When the server asked for a
/// client certificate, waits briefly for its verdict on it: a TLS 1.3 server that refuses
/// the certificate says so with an alert after the handshake.
async fn close(mut stream: ClientStream, wait_for_refusal: bool) -> Option<String> {
    let _ = tokio::time::timeout(REFUSAL_WAIT, stream.shutdown()).await;
    if !wait_for_refusal {
        return None;
    }
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return None,
                // Application data from the server is discarded unread.
                Ok(_) => continue,
                Err(e) => {
                    let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                    return tls.map(|t| FailureCause::from_tls(t, Side::Client).to_string());
                }
            }
        }
    };
    tokio::time::timeout(REFUSAL_WAIT, read_all)
        .await
        .unwrap_or(None)
}

/// The verdict `tlsnet connect` would reach on this chain and name.
pub fn judge(
    chain: &[CertificateDer<'static>],
    server_name: &ServerName<'static>,
    name: &str,
    anchors: &TrustAnchors,
    provider: &Arc<CryptoProvider>,
) -> Verdict {
    let checked_against = match anchors {
        TrustAnchors::System => "system trust store".to_owned(),
        TrustAnchors::Roots { source, .. } => format!("CA file {source}"),
    };
    let untrusted = |problem: String, label: &str| Verdict {
        trusted: false,
        checked_against: checked_against.clone(),
        name: name.to_owned(),
        problem: Some(problem),
        problem_label: Some(label.to_owned()),
    };
    let Some((leaf, intermediates)) = chain.split_first() else {
        return untrusted("the server sent no certificate".into(), "no_certificate");
    };
    let roots = match anchors {
        TrustAnchors::System => tls::system_roots().map_err(|e| e.describe()),
        TrustAnchors::Roots { certs, .. } => {
            let mut roots = RootCertStore::empty();
            let (_added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
            if roots.is_empty() {
                Err("the CA file holds no usable CA certificate".to_owned())
            } else {
                Ok(roots)
            }
        }
    };
    let roots = match roots {
        Ok(roots) => roots,
        Err(why) => return untrusted(why, "no_trust_anchors"),
    };
    let verifier = match WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => return untrusted(format!("trust anchors unusable: {e}"), "no_trust_anchors"),
    };
    match verifier.verify_server_cert(leaf, intermediates, server_name, &[], UnixTime::now()) {
        Ok(_) => Verdict {
            trusted: true,
            checked_against,
            name: name.to_owned(),
            problem: None,
            problem_label: None,
        },
        Err(e) => {
            let cause = FailureCause::from_tls(&e, Side::Client);
            untrusted(cause.to_string(), cause.label())
        }
    }
}

/// Sends the configured client certificate (if any) and records whether the server asked
/// for one, and which CAs it named.
#[derive(Debug)]
struct ClientCertRecorder {
    key: Option<Arc<CertifiedKey>>,
    sent: Option<String>,
    asked: Mutex<Option<Vec<String>>>,
}

impl ClientCertRecorder {
    fn new(identity: Option<&Identity>, provider: &Arc<CryptoProvider>) -> Result<Self> {
        let Some(identity) = identity else {
            return Ok(ClientCertRecorder {
                key: None,
                sent: None,
                asked: Mutex::new(None),
            });
        };
        let config_error = |source| Error::TlsConfig {
            context: "client certificate and key".to_owned(),
            source,
        };
        let signing = provider
            .key_provider
            .load_private_key(identity.key.clone_key())
            .map_err(config_error)?;
        let key = CertifiedKey::new(identity.chain.clone(), signing);
        key.keys_match().map_err(config_error)?;
        let sent = identity
            .chain
            .first()
            .and_then(|c| CertSummary::from_der(c).ok())
            .map(|s| s.subject);
        Ok(ClientCertRecorder {
            key: Some(Arc::new(key)),
            sent,
            asked: Mutex::new(None),
        })
    }

    fn info(&self) -> ClientAuthInfo {
        let asked = self
            .asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let requested = asked.is_some();
        ClientAuthInfo {
            requested,
            acceptable_cas: asked.unwrap_or_default(),
            // Only a certificate that was asked for is sent.
            sent: self.sent.clone().filter(|_| requested),
            refused: None,
        }
    }
}

impl ResolvesClientCert for ClientCertRecorder {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let names = root_hint_subjects.iter().map(|dn| dn_text(dn)).collect();
        *self.asked.lock().unwrap_or_else(PoisonError::into_inner) = Some(names);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// A distinguished name from a CertificateRequest as text. rustls hands them over without
/// the outer SEQUENCE; accept both forms.
fn dn_text(der: &[u8]) -> String {
    if let Ok((_, name)) = X509Name::from_der(der) {
        return name.to_string();
    }
    let mut wrapped = vec![0x30];
    let len = der.len();
    if len < 0x80 {
        wrapped.push(len as u8);
    } else if len <= 0xff {
        wrapped.extend([0x81, len as u8]);
    } else if len <= 0xffff {
        wrapped.extend([0x82, (len >> 8) as u8, len as u8]);
    } else {
        return format!("<{len}-byte name>");
    }
    wrapped.extend_from_slice(der);
    match X509Name::from_der(&wrapped) {
        Ok((_, name)) => name.to_string(),
        Err(_) => format!("<unparsable name: {}>", crate::x509::hex(der)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_both_forms() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "hint CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        let full = parsed.subject().as_raw();
        assert_eq!(dn_text(full), "CN=hint CA");
        // Without the outer SEQUENCE header (two bytes for a short name).
        assert_eq!(dn_text(&full[2..]), "CN=hint CA");
    }

    #[test]
    fn judges_an_empty_chain() {
        let name = tls::server_name("localhost").unwrap();
        let v = judge(
            &[],
            &name,
            "localhost",
            &TrustAnchors::System,
            &tls::provider(),
        );
        assert!(!v.trusted);
        assert_eq!(v.problem_label.as_deref(), Some("no_certificate"));
    }
}
