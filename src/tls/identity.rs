//! Who the peer is: the facts of its leaf certificate, typed, parsed once per handshake.
//!
//! Services and the access policy use [`PeerIdentity`], never display strings: a messaging
//! user id is `identity.common_name` or one of `identity.emails`, a policy rule compares
//! `identity.uris` segment by segment.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::pin::SpkiPin;
use crate::error::ParseError;
use crate::x509::names::{name_fields, name_text};
use crate::x509::{hex, rfc3339};

/// The identity in a peer's (verified) leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerIdentity {
    /// The subject's distinguished name, RFC 4514 style in certificate order
    /// (`O=Acme, CN=alice`), for logs.
    pub subject: String,
    /// The subject's first common name.
    pub common_name: Option<String>,
    /// The subject's organizational units (OU), in certificate order.
    pub organizational_units: Vec<String>,
    /// DNS names of the subject alternative names.
    pub dns_names: Vec<String>,
    /// URIs of the subject alternative names (`spiffe://acme/ns/web`).
    pub uris: Vec<String>,
    /// Email addresses (rfc822Name) of the subject alternative names.
    pub emails: Vec<String>,
    /// IP addresses of the subject alternative names.
    pub ips: Vec<IpAddr>,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The serial number, hex bytes separated by colons.
    pub serial: String,
    /// SHA-256 of the whole certificate (DER).
    #[serde(serialize_with = "as_hex")]
    pub sha256: [u8; 32],
    /// SHA-256 of the SubjectPublicKeyInfo: the pin `--allow-spki-pin` and `--pin` take.
    #[serde(serialize_with = "as_display")]
    pub spki: SpkiPin,
    /// Start of validity, seconds since the Unix epoch.
    #[serde(serialize_with = "as_rfc3339")]
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    #[serde(serialize_with = "as_rfc3339")]
    pub not_after: i64,
    /// The certificate itself (DER), for services that pass it on (a tunnel's PROXY header).
    #[serde(skip)]
    der: Arc<[u8]>,
}

impl PeerIdentity {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, ParseError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| ParseError::caused_by("not a valid X.509 certificate", e))?;
        let subject_fields = name_fields(cert.subject());
        let issuer_fields = name_fields(cert.issuer());
        let strings =
            |iter: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
                iter.filter_map(|a| a.as_str().ok().map(str::to_owned))
                    .collect::<Vec<_>>()
            };
        let mut identity = PeerIdentity {
            subject: name_text(cert.subject(), &subject_fields),
            common_name: strings(&mut cert.subject().iter_common_name())
                .into_iter()
                .next(),
            organizational_units: strings(&mut cert.subject().iter_organizational_unit()),
            dns_names: Vec::new(),
            uris: Vec::new(),
            emails: Vec::new(),
            ips: Vec::new(),
            issuer: name_text(cert.issuer(), &issuer_fields),
            serial: cert.raw_serial_as_string(),
            sha256: sha256(der),
            spki: SpkiPin::of_spki(cert.public_key().raw),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            der: Arc::from(der),
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => identity.dns_names.push((*d).to_owned()),
                    GeneralName::URI(u) => identity.uris.push((*u).to_owned()),
                    GeneralName::RFC822Name(e) => identity.emails.push((*e).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_of(bytes) {
                            identity.ips.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(identity)
    }

    /// The subject alternative names as `DNS:…`, `URI:…`, `email:…`, `IP:…`.
    pub fn alt_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.dns_names.iter().map(|d| format!("DNS:{d}")));
        out.extend(self.uris.iter().map(|u| format!("URI:{u}")));
        out.extend(self.emails.iter().map(|e| format!("email:{e}")));
        out.extend(self.ips.iter().map(|i| format!("IP:{i}")));
        out
    }

    /// The certificate, DER-encoded, as the peer sent it.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate's SHA-256 in lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// `CN=alice (URI:spiffe://acme/web, sha256/…)`: enough to find the certificate.
impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.subject)?;
        let names = self.alt_names();
        if !names.is_empty() {
            write!(f, " [{}]", names.join(", "))?;
        }
        write!(f, " key {}", self.spki)
    }
}

fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn as_hex<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(bytes))
}

fn as_display<S: serde::Serializer>(pin: &SpkiPin, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(pin)
}

fn as_rfc3339<S: serde::Serializer>(unix: &i64, s: S) -> Result<S::Ok, S::Error> {
    match time::OffsetDateTime::from_unix_timestamp(*unix) {
        Ok(t) => s.serialize_str(&rfc3339(t)),
        Err(_) => s.serialize_i64(*unix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["web.acme.internal".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, "ops");
        params.subject_alt_names.extend([
            rcgen::SanType::URI("spiffe://acme/ns/web".try_into().unwrap()),
            rcgen::SanType::Rfc822Name("alice@acme.test".try_into().unwrap()),
            rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()),
        ]);
        let cert = params.self_signed(&key).unwrap();
        let id = PeerIdentity::from_der(cert.der()).unwrap();
        assert_eq!(id.common_name.as_deref(), Some("alice"));
        assert_eq!(id.organizational_units, ["ops"]);
        assert_eq!(id.dns_names, ["web.acme.internal"]);
        assert_eq!(id.uris, ["spiffe://acme/ns/web"]);
        assert_eq!(id.emails, ["alice@acme.test"]);
        assert_eq!(id.ips, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(id.spki, SpkiPin::of_certificate(cert.der()).unwrap());
        assert!(id.not_after > id.not_before);
        assert_eq!(id.der(), cert.der().as_ref());
        assert!(PeerIdentity::from_der(b"junk").is_err());
    }
}
