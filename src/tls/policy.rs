//! The access policy: which verified client certificates are admitted.
//!
//! Rules follow ghostunnel's `--allow-*` flags: a client whose certificate matches any rule is
//! admitted. CN and OU compare exactly; DNS names and URIs compare segment by segment (labels
//! split at `.`, URIs at `/`), where `*` matches exactly one segment and `**` one or more, so
//! `*.acme.internal` admits `web.acme.internal` but not `a.b.acme.internal`, and
//! `spiffe://acme/**` admits `spiffe://acme/ns/web`. DNS names compare without regard to case.
//!
//! The same rules check a server's certificate on the client side ([`ServerPolicyVerifier`],
//! `tunnel client --verify-*`).
//!
//! The policy runs inside the client-certificate verifier, after the chain, dates and CRL have
//! been checked: a refused client gets the TLS alert `access_denied` and never reaches a
//! service. The refusal is logged with the client's identity and the rules.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::identity::PeerIdentity;
use super::pin::SpkiPin;
use crate::error::ParseError;

/// One rule of an [`AccessPolicy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The subject's common name equals this.
    CommonName(String),
    /// One of the subject's organizational units equals this.
    OrganizationalUnit(String),
    /// One of the DNS names matches this pattern.
    Dns(Pattern),
    /// One of the URIs matches this pattern.
    Uri(Pattern),
    /// The certificate's public key has this pin.
    SpkiPin(SpkiPin),
}

impl Rule {
    /// Whether `identity` satisfies this rule.
    pub fn admits(&self, identity: &PeerIdentity) -> bool {
        match self {
            Rule::CommonName(cn) => identity.common_name.as_deref() == Some(cn.as_str()),
            Rule::OrganizationalUnit(ou) => identity.organizational_units.iter().any(|o| o == ou),
            Rule::Dns(p) => identity.dns_names.iter().any(|d| p.matches(d)),
            Rule::Uri(p) => identity.uris.iter().any(|u| p.matches(u)),
            Rule::SpkiPin(pin) => identity.spki == *pin,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::CommonName(v) => write!(f, "cn={v}"),
            Rule::OrganizationalUnit(v) => write!(f, "ou={v}"),
            Rule::Dns(p) => write!(f, "dns={p}"),
            Rule::Uri(p) => write!(f, "uri={p}"),
            Rule::SpkiPin(p) => write!(f, "spki-pin={p}"),
        }
    }
}

/// A DNS-name or URI pattern with `*` (one segment) and `**` (one or more segments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    separator: char,
    ignore_case: bool,
}

impl Pattern {
    /// A DNS-name pattern: labels split at `.`, compared without regard to case.
    pub fn dns(text: &str) -> Result<Self, ParseError> {
        Self::new(text, '.', true)
    }

    /// A URI pattern: segments split at `/`, compared exactly.
    pub fn uri(text: &str) -> Result<Self, ParseError> {
        Self::new(text, '/', false)
    }

    fn new(text: &str, separator: char, ignore_case: bool) -> Result<Self, ParseError> {
        if text.is_empty() {
            return Err(ParseError::new("an empty pattern matches nothing"));
        }
        if text.chars().any(char::is_control) {
            return Err(ParseError::new(format!(
                "pattern {text:?} has a control character"
            )));
        }
        for segment in text.split(separator) {
            if segment.contains('*') && segment != "*" && segment != "**" {
                return Err(ParseError::new(format!(
                    "pattern '{text}': a wildcard must be a whole segment ('*' or '**'), not '{segment}'"
                )));
            }
        }
        Ok(Pattern {
            text: text.to_owned(),
            separator,
            ignore_case,
        })
    }

    /// Whether `candidate` matches.
    pub fn matches(&self, candidate: &str) -> bool {
        let pattern: Vec<&str> = self.text.split(self.separator).collect();
        let name: Vec<&str> = candidate.split(self.separator).collect();
        // reachable[j]: the pattern's first i segments can match the name's first j.
        let mut reachable = vec![false; name.len() + 1];
        reachable[0] = true;
        for p in &pattern {
            let mut next = vec![false; name.len() + 1];
            for j in 1..=name.len() {
                let segment = name[j - 1];
                next[j] = match *p {
                    // One segment, not empty: `*.acme` does not match `.acme`.
                    "*" => reachable[j - 1] && !segment.is_empty(),
                    // One or more segments: extend a `**` run, or start one.
                    "**" => !segment.is_empty() && (reachable[j - 1] || next[j - 1]),
                    literal => reachable[j - 1] && self.same(literal, segment),
                };
            }
            reachable = next;
        }
        reachable[name.len()]
    }

    fn same(&self, a: &str, b: &str) -> bool {
        if self.ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Rules a client certificate must satisfy, one of them at least. Empty: no restriction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    rules: Vec<Rule>,
}

impl AccessPolicy {
    /// A policy with these rules.
    pub fn new(rules: Vec<Rule>) -> Self {
        AccessPolicy { rules }
    }

    /// Whether there are no rules (every verified client is admitted).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule that admits `identity`, or `None` when none does. An empty policy
    /// admits everyone and returns `None` too: check [`AccessPolicy::is_empty`] first.
    pub fn admitting_rule(&self, identity: &PeerIdentity) -> Option<&Rule> {
        self.rules.iter().find(|r| r.admits(identity))
    }

    /// Whether `identity` is admitted.
    pub fn admits(&self, identity: &PeerIdentity) -> bool {
        self.is_empty() || self.admitting_rule(identity).is_some()
    }

    /// The rules on one line, for logs: `cn=alice, uri=spiffe://acme/**`.
    pub fn describe(&self) -> String {
        self.rules
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The handshake-signature methods of a verifier that wraps another (`self.inner`): the
/// policy adds a check of the identity and changes nothing about signatures.
macro_rules! signatures_via_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

/// A client-certificate verifier that applies an [`AccessPolicy`] after another verifier
/// (webpki: chain, dates, CRL) has accepted the certificate.
#[derive(Debug)]
pub struct PolicyVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    policy: AccessPolicy,
}

impl PolicyVerifier {
    /// `inner` itself when the policy is empty, else `inner` followed by the policy.
    pub fn wrap(
        inner: Arc<dyn ClientCertVerifier>,
        policy: AccessPolicy,
    ) -> Arc<dyn ClientCertVerifier> {
        if policy.is_empty() {
            inner
        } else {
            Arc::new(PolicyVerifier { inner, policy })
        }
    }
}

impl ClientCertVerifier for PolicyVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity = PeerIdentity::from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        match self.policy.admitting_rule(&identity) {
            Some(rule) => {
                tracing::debug!(client = %identity, %rule, "admitted by the access policy");
                Ok(verified)
            }
            None => {
                tracing::warn!(
                    client = %identity,
                    rules = %self.policy.describe(),
                    "access denied: the client certificate matches no --allow rule"
                );
                // rustls answers this with the alert access_denied.
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    signatures_via_inner!();
}

/// A server-certificate verifier that applies an [`AccessPolicy`] to the server's identity
/// after another verifier (webpki or a pin) has accepted it: `tunnel client --verify-*`.
#[derive(Debug)]
pub struct ServerPolicyVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    policy: AccessPolicy,
}

impl ServerPolicyVerifier {
    /// `inner` itself when the policy is empty, else `inner` followed by the policy.
    pub fn wrap(
        inner: Arc<dyn ServerCertVerifier>,
        policy: AccessPolicy,
    ) -> Arc<dyn ServerCertVerifier> {
        if policy.is_empty() {
            inner
        } else {
            Arc::new(ServerPolicyVerifier { inner, policy })
        }
    }
}

impl ServerCertVerifier for ServerPolicyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let identity = PeerIdentity::from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.policy.admitting_rule(&identity).is_some() {
            return Ok(verified);
        }
        tracing::warn!(
            server = %identity,
            rules = %self.policy.describe(),
            "the server's certificate matches no --verify-* rule"
        );
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    signatures_via_inner!();

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(p: &str, name: &str) -> bool {
        Pattern::dns(p).unwrap().matches(name)
    }

    fn uri(p: &str, name: &str) -> bool {
        Pattern::uri(p).unwrap().matches(name)
    }

    #[test]
    fn one_star_is_one_label() {
        assert!(dns("*.acme.internal", "web.acme.internal"));
        assert!(dns("*.acme.internal", "WEB.Acme.Internal"));
        assert!(!dns("*.acme.internal", "a.b.acme.internal"));
        assert!(!dns("*.acme.internal", "acme.internal"));
        assert!(!dns("*.acme.internal", ".acme.internal"));
        assert!(dns("web.acme.internal", "web.acme.internal"));
        assert!(!dns("web.acme.internal", "web.acme.internal.evil"));
    }

    #[test]
    fn two_stars_are_one_or_more_segments() {
        assert!(uri("spiffe://acme/**", "spiffe://acme/ns/web"));
        assert!(uri("spiffe://acme/**", "spiffe://acme/web"));
        assert!(!uri("spiffe://acme/**", "spiffe://acme"));
        assert!(!uri("spiffe://acme/**", "spiffe://acme/"));
        assert!(!uri("spiffe://acme/**", "spiffe://other/ns/web"));
        assert!(uri("spiffe://acme/*/web", "spiffe://acme/prod/web"));
        assert!(!uri("spiffe://acme/*/web", "spiffe://acme/a/b/web"));
        assert!(uri("spiffe://acme/**/web", "spiffe://acme/a/b/web"));
        assert!(!uri("spiffe://Acme/web", "spiffe://acme/web"));
        assert!(dns("**.acme.internal", "a.b.acme.internal"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Pattern::dns("w*b.acme").is_err());
        assert!(Pattern::dns("").is_err());
        assert!(Pattern::uri("spiffe://acme/***").is_err());
    }
}
