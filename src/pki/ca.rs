//! A certificate authority: a root key and certificate that issue leaf certificates with the
//! right extensions for their purpose (serverAuth or clientAuth EKU, key usage, SKI/AKI,
//! random serial, SANs).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CidrSubnet,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, NameConstraints, RevocationReason, RevokedCertParams, SanType,
    SerialNumber,
};
use time::OffsetDateTime;

use crate::error::{Error, ParseError, Result};

/// Key algorithms the CA can generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default: fast and universally supported).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 with SHA-256.
    Rsa2048,
    /// RSA 3072 with SHA-256.
    Rsa3072,
    /// RSA 4096 with SHA-256.
    Rsa4096,
}

impl KeyType {
    /// Every key type, in the order `--help` lists them.
    pub const ALL: [KeyType; 6] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// Generates a fresh key of this type.
    pub fn generate(self) -> Result<KeyPair> {
        use rcgen::RsaKeySize;
        let key = match self {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
            KeyType::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            }
            KeyType::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)
            }
        };
        Ok(key?)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        })
    }
}

impl FromStr for KeyType {
    type Err = crate::error::ParseError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| {
                let names: Vec<String> = KeyType::ALL.iter().map(|k| k.to_string()).collect();
                crate::error::ParseError::new(format!(
                    "unknown key type '{s}' (one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// TLS server (serverAuth EKU).
    Server,
    /// TLS client (clientAuth EKU).
    Client,
}

/// What to put in a leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// Server or client.
    pub purpose: Purpose,
    /// Subject common name.
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// URI subject alternative names (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
    /// Organizational unit (OU) of the subject, after the common name.
    pub organizational_unit: Option<String>,
    /// How long it is valid from now.
    pub validity: Duration,
    /// Key algorithm.
    pub key_type: KeyType,
    /// Start of validity; `None` means an hour ago (to absorb clock skew).
    pub valid_from: Option<OffsetDateTime>,
}

impl LeafSpec {
    /// A spec with a common name, no SANs, 90 days, ECDSA P-256.
    pub fn new(purpose: Purpose, common_name: impl Into<String>) -> Self {
        LeafSpec {
            purpose,
            common_name: common_name.into(),
            dns: Vec::new(),
            ips: Vec::new(),
            uris: Vec::new(),
            organizational_unit: None,
            validity: Duration::from_secs(90 * 86400),
            key_type: KeyType::EcdsaP256,
            valid_from: None,
        }
    }
}

/// An issued certificate and its key, as PEM.
pub struct IssuedCert {
    /// The leaf certificate followed by the issuing chain (without the root).
    pub chain_pem: String,
    /// The leaf certificate alone.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A CA that can issue certificates: a self-signed root, or an intermediate signed by a root.
pub struct CertificateAuthority {
    cert_pem: String,
    /// True for an intermediate: its certificate is appended to the chains it issues.
    intermediate: bool,
    issuer: Issuer<'static, KeyPair>,
}

/// Names an intermediate CA may issue for (RFC 5280 name constraints).
#[derive(Clone, Debug, Default)]
pub struct Constraints {
    /// DNS subtrees, e.g. `example.internal` (covers its subdomains).
    pub permit_dns: Vec<String>,
    /// IP ranges, e.g. `10.0.0.0/8`.
    pub permit_ips: Vec<(IpAddr, u8)>,
}

/// A revoked certificate, for a CRL.
#[derive(Clone, Debug)]
pub struct Revoked {
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub at: OffsetDateTime,
    /// RFC 5280 reason code.
    pub reason: Option<RevocationReason>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Makes a new self-signed root CA.
    pub fn generate(name: &str, key_type: KeyType, validity: Duration) -> Result<Self> {
        let key = key_type.generate()?;
        // Path length 1: the root may sign one level of intermediates.
        let params = ca_params(name, 1, validity)?;
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            intermediate: false,
            issuer: Issuer::new(params, key),
        })
    }

    /// Makes an issuing intermediate CA signed by this (root) CA, limited to `constraints`
    /// when they are not empty. With it, the root key can be kept offline.
    pub fn generate_intermediate(
        &self,
        name: &str,
        key_type: KeyType,
        validity: Duration,
        constraints: &Constraints,
    ) -> Result<Self> {
        let key = key_type.generate()?;
        // Path length 0: the intermediate signs leaves only.
        let mut params = ca_params(name, 0, validity)?;
        if !constraints.permit_dns.is_empty() || !constraints.permit_ips.is_empty() {
            let mut permitted: Vec<GeneralSubtree> = constraints
                .permit_dns
                .iter()
                .map(|d| GeneralSubtree::DnsName(d.clone()))
                .collect();
            permitted.extend(constraints.permit_ips.iter().map(|(ip, prefix)| {
                GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(*ip, *prefix))
            }));
            params.name_constraints = Some(NameConstraints {
                permitted_subtrees: permitted,
                excluded_subtrees: Vec::new(),
            });
        }
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            intermediate: true,
            issuer: Issuer::new(params, key),
        })
    }

    /// Whether this CA is an intermediate (its certificate is not self-signed).
    pub fn is_intermediate(&self) -> bool {
        self.intermediate
    }

    /// Signs a CRL listing `revoked`, valid until `next_update` from now.
    pub fn crl(
        &self,
        revoked: &[Revoked],
        crl_number: u64,
        next_update: Duration,
    ) -> Result<String> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + next_update,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&r.serial),
                    revocation_time: r.at,
                    reason_code: r.reason,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// Loads a CA from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        // Not self-issued: an intermediate, whose certificate goes into the chains it issues.
        let intermediate = crate::tls::certs_from_pem(cert_pem.as_bytes())
            .ok()
            .and_then(|certs| certs.into_iter().next())
            .is_some_and(|der| {
                x509_parser::parse_x509_certificate(&der)
                    .is_ok_and(|(_, c)| c.subject().as_raw() != c.issuer().as_raw())
            });
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            intermediate,
            issuer,
        })
    }

    /// Loads a CA from files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        let cert_pem = std::fs::read_to_string(cert).map_err(|e| Error::file(cert, "read", e))?;
        let key_pem = std::fs::read_to_string(key).map_err(|e| Error::file(key, "read", e))?;
        Self::from_pem(&cert_pem, &key_pem).map_err(|e| {
            Error::bad_file(
                cert,
                ParseError::caused_by(
                    format!("cannot be used as a CA with key {}", key.display()),
                    e,
                ),
            )
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a leaf certificate.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert> {
        let key = spec.key_type.generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&spec.common_name);
        if let Some(ou) = &spec.organizational_unit {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, ou.as_str());
        }
        let mut sans = Vec::new();
        for dns in &spec.dns {
            let name = dns
                .clone()
                .try_into()
                .map_err(|_| Error::InvalidInput(format!("'{dns}' is not a valid DNS name")))?;
            sans.push(SanType::DnsName(name));
        }
        sans.extend(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        for uri in &spec.uris {
            let value = uri
                .clone()
                .try_into()
                .map_err(|_| Error::InvalidInput(format!("'{uri}' is not a valid URI")))?;
            sans.push(SanType::URI(value));
        }
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if matches!(
            spec.key_type,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096
        ) {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![match spec.purpose {
            Purpose::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Purpose::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, spec.validity);
        if let Some(start) = spec.valid_from {
            params.not_before = start;
            params.not_after = start + spec.validity;
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain_pem = cert.pem();
        if self.intermediate {
            chain_pem.push_str(&self.cert_pem);
        }
        Ok(IssuedCert {
            chain_pem,
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What a root and an intermediate CA share: name, CA basic constraint with `path_len`,
/// certificate and CRL signing, validity and a random serial.
fn ca_params(name: &str, path_len: u8, validity: Duration) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, validity);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Starts validity an hour ago, to absorb clock skew between machines; the whole lifespan is
/// `validity` (scanners check the lifespan, not the time left).
fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let start = OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_before = start;
    params.not_after = start + validity;
}

/// A positive 128-bit random serial (RFC 5280 allows up to 20 octets).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|e| Error::pki("no randomness for the serial", e))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // no leading zero octet: keeps the DER length fixed
    Ok(SerialNumber::from_slice(&bytes))
}
