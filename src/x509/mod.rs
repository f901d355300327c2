//! Certificate summaries: the X.509 facts a person wants to see, parsed from DER with
//! `x509-parser`. Used by the handshake report and by certificate inspection.

use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::extensions::{DistributionPointName, NameConstraints, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::error::ParseError;
use crate::tls::SpkiPin;

pub(crate) mod names;

pub use names::{colon_hex, hex, rfc3339};
use names::{general_name, name_fields, name_text, oid_name, uri};

/// What one certificate says, in words.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
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
    /// X.509 version: 1, 2 or 3.
    pub version: u32,
    /// The subject's attributes in certificate order, with OpenSSL's short names (`CN`, `O`,
    /// `emailAddress`, ...; an unknown type is its dotted OID).
    pub subject_fields: Vec<NameField>,
    /// The issuer's attributes, like `subject_fields`.
    pub issuer_fields: Vec<NameField>,
    /// Whether subject and issuer are the same name (a root or another self-issued
    /// certificate).
    pub self_issued: bool,
    /// Whether the certificate is past its `notAfter`.
    pub expired: bool,
    /// Whether the certificate's `notBefore` is still in the future.
    pub not_yet_valid: bool,
    /// Public key algorithm alone: `RSA`, `EC`, `Ed25519`, `Ed448` or the algorithm's name.
    pub key_type: String,
    /// Public key size in bits (RSA modulus, EC field size), when known.
    pub key_bits: Option<u32>,
    /// Key usage bits, RFC 5280 names: `digitalSignature`, `keyCertSign`, ...
    pub key_usage: Vec<String>,
    /// Basic constraints, when the extension is present.
    pub basic_constraints: Option<BasicConstraintsSummary>,
    /// Name constraints (a CA restricted to some names), when the extension is present.
    pub name_constraints: Option<NameConstraintsSummary>,
    /// Subject key identifier, hex bytes separated by colons.
    pub subject_key_id: Option<String>,
    /// Authority key identifier (the issuer's subject key identifier), hex with colons.
    pub authority_key_id: Option<String>,
    /// CRL distribution point URLs.
    pub crl_urls: Vec<String>,
    /// OCSP responder URLs (authority information access).
    pub ocsp_urls: Vec<String>,
    /// URLs of the issuer's certificate (authority information access, "CA Issuers").
    pub ca_issuers_urls: Vec<String>,
    /// SHA-1 of the whole certificate, lowercase hex (what older tools show).
    pub sha1: String,
}

/// One attribute of a distinguished name.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct NameField {
    /// OpenSSL's short name of the attribute type (`CN`, `O`, `OU`, `C`, ...), or its OID.
    pub attribute: String,
    /// The value as text; a value that is not a string is `#` followed by its DER in hex.
    pub value: String,
}

/// The basic constraints extension.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BasicConstraintsSummary {
    /// Whether the subject is a CA.
    pub ca: bool,
    /// How many intermediate CAs may follow this one, if limited.
    pub path_len: Option<u32>,
    /// Whether the extension is marked critical.
    pub critical: bool,
}

/// The name constraints extension: the names a CA may issue for.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct NameConstraintsSummary {
    /// Permitted subtrees (`DNS:example.com`, `IP:10.0.0.0/8`, ...).
    pub permitted: Vec<String>,
    /// Excluded subtrees.
    pub excluded: Vec<String>,
    /// Whether the extension is marked critical.
    pub critical: bool,
}

impl CertSummary {
    /// Parses a DER certificate. The error names what could not be parsed.
    pub fn from_der(der: &[u8]) -> Result<Self, ParseError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| ParseError::caused_by("not a valid X.509 certificate", e))?;
        Ok(Self::from_parsed(&cert, der))
    }

    fn from_parsed(cert: &X509Certificate<'_>, der: &[u8]) -> Self {
        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        let now = OffsetDateTime::now_utc();
        let (key_type, key_bits) = key_type_and_bits(cert);
        let subject_fields = name_fields(cert.subject());
        let issuer_fields = name_fields(cert.issuer());
        let mut summary = CertSummary {
            subject: name_text(cert.subject(), &subject_fields),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            issuer: name_text(cert.issuer(), &issuer_fields),
            serial: cert.raw_serial_as_string(),
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
            // Floor, not truncation: twelve hours past `notAfter` is -1, not 0.
            days_left: (not_after - now).whole_seconds().div_euclid(86_400),
            subject_alt_names: subject_alt_names(cert),
            key: key_description(cert),
            signature_algorithm: oid_name(&cert.signature_algorithm.algorithm),
            is_ca: cert.is_ca(),
            extended_key_usage: extended_key_usage(cert),
            sha256: hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref()),
            spki_pin: SpkiPin::of_spki(cert.public_key().raw).to_string(),
            version: cert.version().0 + 1,
            subject_fields,
            issuer_fields,
            self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
            expired: now > not_after,
            not_yet_valid: now < not_before,
            key_type,
            key_bits,
            sha1: hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
                    .as_ref(),
            ),
            ..CertSummary::default()
        };
        summary.add_extensions(cert);
        summary
    }

    fn add_extensions(&mut self, cert: &X509Certificate<'_>) {
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::KeyUsage(ku) => {
                    self.key_usage = [
                        (ku.digital_signature(), "digitalSignature"),
                        (ku.non_repudiation(), "nonRepudiation"),
                        (ku.key_encipherment(), "keyEncipherment"),
                        (ku.data_encipherment(), "dataEncipherment"),
                        (ku.key_agreement(), "keyAgreement"),
                        (ku.key_cert_sign(), "keyCertSign"),
                        (ku.crl_sign(), "cRLSign"),
                        (ku.encipher_only(), "encipherOnly"),
                        (ku.decipher_only(), "decipherOnly"),
                    ]
                    .into_iter()
                    .filter(|(set, _)| *set)
                    .map(|(_, name)| name.to_owned())
                    .collect();
                }
                ParsedExtension::BasicConstraints(bc) => {
                    self.basic_constraints = Some(BasicConstraintsSummary {
                        ca: bc.ca,
                        path_len: bc.path_len_constraint,
                        critical: ext.critical,
                    });
                }
                ParsedExtension::NameConstraints(nc) => {
                    self.name_constraints = Some(name_constraints(nc, ext.critical));
                }
                ParsedExtension::SubjectKeyIdentifier(id) => {
                    self.subject_key_id = Some(colon_hex(id.0));
                }
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    self.authority_key_id = aki.key_identifier.as_ref().map(|id| colon_hex(id.0));
                }
                ParsedExtension::CRLDistributionPoints(points) => {
                    for point in points.iter() {
                        if let Some(DistributionPointName::FullName(names)) =
                            &point.distribution_point
                        {
                            self.crl_urls.extend(names.iter().filter_map(uri));
                        }
                    }
                }
                ParsedExtension::AuthorityInfoAccess(aia) => {
                    for access in aia.iter() {
                        let Some(url) = uri(&access.access_location) else {
                            continue;
                        };
                        match access.access_method.to_id_string().as_str() {
                            "1.3.6.1.5.5.7.48.1" => self.ocsp_urls.push(url),
                            "1.3.6.1.5.5.7.48.2" => self.ca_issuers_urls.push(url),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// True when the certificate is past its `notAfter`.
    pub fn is_expired(&self) -> bool {
        self.days_left < 0
    }

    /// A placeholder for a certificate that could not be parsed, carrying the reason.
    pub fn unparsable(reason: &str) -> Self {
        CertSummary {
            subject: format!("<unparsable certificate: {reason}>"),
            ..CertSummary::default()
        }
    }
}

fn name_constraints(nc: &NameConstraints<'_>, critical: bool) -> NameConstraintsSummary {
    let subtrees = |trees: &Option<Vec<x509_parser::extensions::GeneralSubtree<'_>>>| {
        trees
            .iter()
            .flatten()
            .map(|t| general_name(&t.base))
            .collect()
    };
    NameConstraintsSummary {
        permitted: subtrees(&nc.permitted_subtrees),
        excluded: subtrees(&nc.excluded_subtrees),
        critical,
    }
}

fn subject_alt_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value.general_names.iter().map(general_name).collect()
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

/// The exact bit length of a big-endian unsigned integer (leading zero bytes and bits do
/// not count).
fn bit_length(bytes: &[u8]) -> u32 {
    let bytes = match bytes.iter().position(|b| *b != 0) {
        Some(first) => &bytes[first..],
        None => return 0,
    };
    (bytes.len() as u32) * 8 - bytes[0].leading_zeros()
}

fn key_type_and_bits(cert: &X509Certificate<'_>) -> (String, Option<u32>) {
    let spki = cert.public_key();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => {
            let bits = match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => Some(bit_length(rsa.modulus)),
                _ => None,
            };
            ("RSA".into(), bits)
        }
        "1.2.840.10045.2.1" => {
            let bits = match ec_curve(cert).as_deref() {
                Some("1.2.840.10045.3.1.7") => Some(256),
                Some("1.3.132.0.34") => Some(384),
                Some("1.3.132.0.35") => Some(521),
                Some("1.3.132.0.10") => Some(256),
                _ => None,
            };
            ("EC".into(), bits)
        }
        "1.3.101.112" => ("Ed25519".into(), Some(256)),
        "1.3.101.113" => ("Ed448".into(), Some(456)),
        _ => (oid_name(&spki.algorithm.algorithm), None),
    }
}

fn ec_curve(cert: &X509Certificate<'_>) -> Option<String> {
    cert.public_key()
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string())
}

fn key_description(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", bit_length(rsa.modulus)),
        Ok(PublicKey::EC(_)) => match ec_curve(cert).as_deref() {
            Some("1.2.840.10045.3.1.7") => "ECDSA P-256".into(),
            Some("1.3.132.0.34") => "ECDSA P-384".into(),
            Some("1.3.132.0.35") => "ECDSA P-521".into(),
            Some(other) => format!("EC {other}"),
            None => "EC".into(),
        },
        _ if algorithm == "1.3.101.112" => "Ed25519".into(),
        _ if algorithm == "1.3.101.113" => "Ed448".into(),
        _ => oid_name(&spki.algorithm.algorithm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x7f, 0xff]), 15);
        assert_eq!(bit_length(&[0x00]), 0);
        assert_eq!(bit_length(&[]), 0);
    }

    #[test]
    fn summarizes_extensions() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("test".into())],
            excluded_subtrees: vec![],
        });
        params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: vec!["http://crl.test/ca.crl".into()],
        }];
        let cert = params.self_signed(&key).unwrap();
        let s = CertSummary::from_der(cert.der()).unwrap();
        assert_eq!(s.version, 3);
        assert_eq!(s.key_type, "EC");
        assert_eq!(s.key_bits, Some(256));
        assert_eq!(s.key_usage, ["keyCertSign"]);
        let bc = s.basic_constraints.unwrap();
        assert!(bc.ca && bc.critical);
        assert_eq!(bc.path_len, Some(0));
        assert_eq!(s.name_constraints.unwrap().permitted, ["DNS:test"]);
        assert_eq!(s.crl_urls, ["http://crl.test/ca.crl"]);
        assert!(s.self_issued && !s.expired && !s.not_yet_valid);
        assert_eq!(s.sha1.len(), 40);
    }
}
