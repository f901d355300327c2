//! Certificate summaries: the X.509 facts a person wants to see, parsed from DER with
//! `x509-parser`. Used by the handshake report and by certificate inspection.

use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid2sn, oid_registry};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::pin::SpkiPin;

/// What one certificate says, in words.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject distinguished name, RFC 4514 style (`CN=example,O=Org`).
    pub subject: String,
    /// The subject's first common name, if any.
    pub common_name: Option<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex bytes separated by colons.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whole days from now until `not_after` (negative when expired).
    pub days_left: i64,
    /// Subject alternative names as `DNS:...`, `IP:...`, `URI:...`, `email:...`.
    pub subject_alt_names: Vec<String>,
    /// Public key type and size, e.g. `ECDSA P-256`, `RSA 2048`, `Ed25519`.
    pub key: String,
    /// Signature algorithm, e.g. `ecdsa-with-SHA256`.
    pub signature_algorithm: String,
    /// Whether basic constraints mark this as a CA.
    pub is_ca: bool,
    /// Extended key usages, e.g. `serverAuth`, `clientAuth`.
    pub extended_key_usage: Vec<String>,
    /// SHA-256 of the whole certificate, lowercase hex.
    pub sha256: String,
    /// SHA-256 pin of the public key, the form `connect --pin` takes.
    pub spki_pin: String,
}

impl CertSummary {
    /// Parses a DER certificate. The error names what could not be parsed.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
        Ok(Self::from_parsed(&cert, der))
    }

    fn from_parsed(cert: &X509Certificate<'_>, der: &[u8]) -> Self {
        let not_after = cert.validity().not_after.to_datetime();
        let now = OffsetDateTime::now_utc();
        CertSummary {
            subject: cert.subject().to_string(),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before: rfc3339(cert.validity().not_before.to_datetime()),
            not_after: rfc3339(not_after),
            days_left: (not_after - now).whole_days(),
            subject_alt_names: subject_alt_names(cert),
            key: key_description(cert),
            signature_algorithm: oid_name(&cert.signature_algorithm.algorithm),
            is_ca: cert.is_ca(),
            extended_key_usage: extended_key_usage(cert),
            sha256: hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref()),
            spki_pin: SpkiPin::of_spki(cert.public_key().raw).to_string(),
        }
    }

    /// True when the certificate is past its `notAfter`.
    pub fn is_expired(&self) -> bool {
        self.days_left < 0
    }
}

/// Formats a time as RFC 3339 (`2026-01-03T00:00:00Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn oid_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    oid2sn(oid, oid_registry())
        .map(str::to_owned)
        .unwrap_or_else(|_| oid.to_id_string())
}

fn subject_alt_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::URI(u) => format!("URI:{u}"),
            GeneralName::RFC822Name(e) => format!("email:{e}"),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => {
                    let a: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
                    format!("IP:{}", std::net::Ipv4Addr::from(a))
                }
                16 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(bytes);
                    format!("IP:{}", std::net::Ipv6Addr::from(a))
                }
                _ => format!("IP:{}", hex(bytes)),
            },
            other => format!("{other}"),
        })
        .collect()
}

fn extended_key_usage(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(eku)) = cert.extended_key_usage() else {
        return Vec::new();
    };
    let eku = eku.value;
    let mut out = Vec::new();
    for (set, name) in [
        (eku.any, "any"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ] {
        if set {
            out.push(name.to_owned());
        }
    }
    out.extend(eku.other.iter().map(oid_name));
    out
}

fn key_description(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ECDSA P-256".into(),
                Some("1.3.132.0.34") => "ECDSA P-384".into(),
                Some("1.3.132.0.35") => "ECDSA P-521".into(),
                Some(other) => format!("EC {other}"),
                None => "EC".into(),
            }
        }
        _ if algorithm == "1.3.101.112" => "Ed25519".into(),
        _ if algorithm == "1.3.101.113" => "Ed448".into(),
        _ => oid_name(&spki.algorithm.algorithm),
    }
}

impl CertSummary {
    /// A placeholder for a certificate that could not be parsed, carrying the reason.
    pub fn unparsable(reason: &str) -> Self {
        CertSummary {
            subject: format!("<unparsable certificate: {reason}>"),
            common_name: None,
            issuer: String::new(),
            serial: String::new(),
            not_before: String::new(),
            not_after: String::new(),
            days_left: 0,
            subject_alt_names: Vec::new(),
            key: String::new(),
            signature_algorithm: String::new(),
            is_ca: false,
            extended_key_usage: Vec::new(),
            sha256: String::new(),
            spki_pin: String::new(),
        }
    }
}
