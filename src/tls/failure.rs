//! Handshake failures in words.
//!
//! rustls reports precise errors, but tokio-rustls wraps them in `io::Error`, and a raw
//! `InvalidCertificate(UnknownIssuer)` does not tell an operator whose certificate was at fault.
//! [`FailureCause::classify`] unwraps the error and names the cause from our point of view
//! ("client certificate expired on 2026-01-03T00:00:00Z").

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError, Error as TlsError, PeerIncompatible};

use super::pin::SpkiPin;

/// Which end of the connection we are; decides whose certificate a certificate error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// We are the server: the peer is a client.
    Server,
    /// We are the client: the peer is a server.
    Client,
}

impl Side {
    fn peer(self) -> &'static str {
        match self {
            Side::Server => "client",
            Side::Client => "server",
        }
    }
}

/// Why a handshake (or the first read after it) failed.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum FailureCause {
    /// The handshake did not finish within the deadline.
    Timeout(Duration),
    /// The peer closed the TCP connection before the handshake finished.
    ClosedDuringHandshake,
    /// The first bytes were a plaintext HTTP request.
    PlaintextHttp,
    /// The first byte was not a TLS handshake record.
    NotTls {
        /// The byte received.
        first_byte: u8,
    },
    /// The server requires a client certificate and the client sent none.
    NoClientCertificate {
        /// Which side we are.
        side: Side,
    },
    /// The peer's certificate chains to no CA we trust.
    UnknownIssuer {
        /// Which side we are.
        side: Side,
    },
    /// The peer's certificate has expired.
    Expired {
        /// Which side we are.
        side: Side,
        /// When it expired, RFC 3339, if known.
        not_after: Option<String>,
    },
    /// The peer's certificate is not valid yet.
    NotYetValid {
        /// Which side we are.
        side: Side,
        /// When it becomes valid, RFC 3339, if known.
        not_before: Option<String>,
    },
    /// The peer's certificate lacks the extended key usage for its role.
    WrongPurpose {
        /// Which side we are.
        side: Side,
    },
    /// The server's certificate does not cover the name we asked for.
    NameMismatch {
        /// The name we expected.
        expected: String,
        /// The names the certificate covers.
        presented: Vec<String>,
    },
    /// The server's public key does not match the pin.
    PinMismatch {
        /// The pin we were given.
        expected: SpkiPin,
        /// The pin of the key the server presented.
        presented: SpkiPin,
    },
    /// The peer's certificate has been revoked.
    Revoked {
        /// Which side we are.
        side: Side,
    },
    /// The peer offers only TLS versions we do not accept.
    ProtocolVersion {
        /// Which side we are.
        side: Side,
        /// The newest version the client offered, when its hello said so (`0x0302` for
        /// TLS 1.1): see [`crate::net::sniff`].
        client_max: Option<u16>,
    },
    /// The client's certificate is valid but matches no rule of the access policy (on the
    /// server: ours; on the client: the server's, told by the alert access_denied).
    AccessDenied {
        /// Which side we are.
        side: Side,
    },
    /// We are the client: the server's certificate is valid but matches none of our
    /// `--verify-*` rules.
    ServerNotAdmitted,
    /// No cipher suite, key-exchange group or signature scheme in common.
    NothingInCommon(PeerIncompatible),
    /// The client offered ALPN ids, and none is a service of this server.
    NoApplicationProtocol {
        /// Which side we are.
        side: Side,
    },
    /// The peer sent a fatal alert: it refused something of ours.
    AlertReceived {
        /// Which side we are.
        side: Side,
        /// The alert.
        alert: AlertDescription,
    },
    /// Any other TLS error.
    Tls(TlsError),
    /// A network error during the handshake.
    Io(Arc<io::Error>),
}

/// A pin mismatch, carried inside a rustls error so that it reaches [`FailureCause`].
#[derive(Debug)]
pub struct PinMismatchError {
    /// The pin we were given.
    pub expected: SpkiPin,
    /// What the server presented.
    pub presented: SpkiPin,
}

impl fmt::Display for PinMismatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server public key {} does not match pin {}",
            self.presented, self.expected
        )
    }
}

impl std::error::Error for PinMismatchError {}

impl FailureCause {
    /// Turns an error from a handshake (or from the first read after it) into a cause.
    pub fn classify(err: &io::Error, side: Side) -> Self {
        if let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
            return Self::from_tls(tls, side);
        }
        match err.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FailureCause::ClosedDuringHandshake,
            io::ErrorKind::TimedOut => FailureCause::Timeout(Duration::ZERO),
            _ => FailureCause::Io(Arc::new(io::Error::new(err.kind(), err.to_string()))),
        }
    }

    /// Turns a rustls error into a cause.
    pub fn from_tls(err: &TlsError, side: Side) -> Self {
        match err {
            TlsError::NoCertificatesPresented => FailureCause::NoClientCertificate { side },
            TlsError::NoApplicationProtocol
            | TlsError::AlertReceived(AlertDescription::NoApplicationProtocol) => {
                FailureCause::NoApplicationProtocol { side }
            }
            TlsError::InvalidCertificate(cert) => Self::from_certificate_error(cert, side),
            TlsError::PeerIncompatible(p) => match p {
                PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::ServerDoesNotSupportTls12Or13
                | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
                | PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled => FailureCause::ProtocolVersion {
                    side,
                    client_max: None,
                },
                other => FailureCause::NothingInCommon(other.clone()),
            },
            TlsError::AlertReceived(AlertDescription::CertificateRequired)
                if side == Side::Client =>
            {
                FailureCause::NoClientCertificate { side }
            }
            TlsError::AlertReceived(AlertDescription::ProtocolVersion) => {
                FailureCause::ProtocolVersion {
                    side,
                    client_max: None,
                }
            }
            TlsError::AlertReceived(AlertDescription::AccessDenied) if side == Side::Client => {
                FailureCause::AccessDenied { side }
            }
            TlsError::AlertReceived(alert) => FailureCause::AlertReceived {
                side,
                alert: *alert,
            },
            other => FailureCause::Tls(other.clone()),
        }
    }

    fn from_certificate_error(err: &CertificateError, side: Side) -> Self {
        match err {
            CertificateError::UnknownIssuer => FailureCause::UnknownIssuer { side },
            CertificateError::Expired => FailureCause::Expired {
                side,
                not_after: None,
            },
            CertificateError::ExpiredContext { not_after, .. } => FailureCause::Expired {
                side,
                not_after: Some(unix_time(*not_after)),
            },
            CertificateError::NotValidYet => FailureCause::NotYetValid {
                side,
                not_before: None,
            },
            CertificateError::NotValidYetContext { not_before, .. } => FailureCause::NotYetValid {
                side,
                not_before: Some(unix_time(*not_before)),
            },
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                FailureCause::WrongPurpose { side }
            }
            CertificateError::NotValidForName => FailureCause::NameMismatch {
                expected: String::new(),
                presented: Vec::new(),
            },
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => FailureCause::NameMismatch {
                expected: expected.to_str().into_owned(),
                presented: presented.clone(),
            },
            CertificateError::Revoked => FailureCause::Revoked { side },
            CertificateError::ApplicationVerificationFailure => match side {
                Side::Server => FailureCause::AccessDenied { side },
                Side::Client => FailureCause::ServerNotAdmitted,
            },
            CertificateError::Other(other) => {
                if let Some(pin) = other.0.downcast_ref::<PinMismatchError>() {
                    FailureCause::PinMismatch {
                        expected: pin.expected,
                        presented: pin.presented,
                    }
                } else {
                    FailureCause::Tls(TlsError::InvalidCertificate(err.clone()))
                }
            }
            _ => FailureCause::Tls(TlsError::InvalidCertificate(err.clone())),
        }
    }

    /// A short stable label, for metrics and JSON logs (`no_client_certificate`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            FailureCause::Timeout(_) => "timeout",
            FailureCause::ClosedDuringHandshake => "closed_during_handshake",
            FailureCause::PlaintextHttp => "plaintext_http",
            FailureCause::NotTls { .. } => "not_tls",
            FailureCause::NoClientCertificate { .. } => "no_client_certificate",
            FailureCause::UnknownIssuer { .. } => "unknown_issuer",
            FailureCause::Expired { .. } => "certificate_expired",
            FailureCause::NotYetValid { .. } => "certificate_not_yet_valid",
            FailureCause::WrongPurpose { .. } => "certificate_wrong_purpose",
            FailureCause::NameMismatch { .. } => "name_mismatch",
            FailureCause::PinMismatch { .. } => "pin_mismatch",
            FailureCause::Revoked { .. } => "certificate_revoked",
            FailureCause::ProtocolVersion { .. } => "protocol_version",
            FailureCause::AccessDenied { .. } => "access_denied",
            FailureCause::ServerNotAdmitted => "server_not_admitted",
            FailureCause::NothingInCommon(_) => "nothing_in_common",
            FailureCause::NoApplicationProtocol { .. } => "no_application_protocol",
            FailureCause::AlertReceived { .. } => "alert_received",
            FailureCause::Tls(_) => "tls_error",
            FailureCause::Io(..) => "io_error",
        }
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCause::Timeout(d) if d.is_zero() => write!(f, "handshake timed out"),
            FailureCause::Timeout(d) => write!(
                f,
                "handshake not completed within {}",
                crate::duration::format(*d)
            ),
            FailureCause::ClosedDuringHandshake => {
                write!(f, "connection closed by peer during the handshake")
            }
            FailureCause::PlaintextHttp => write!(
                f,
                "plaintext HTTP request on a TLS port (the client must use https:// or TLS)"
            ),
            FailureCause::NotTls { first_byte } => write!(
                f,
                "not a TLS handshake (first byte 0x{first_byte:02x}, a TLS handshake starts with 0x16)"
            ),
            FailureCause::NoClientCertificate { side: Side::Server } => {
                write!(f, "client sent no certificate (this server requires one)")
            }
            FailureCause::NoClientCertificate { side: Side::Client } => write!(
                f,
                "server requires a client certificate and we sent none (use --cert and --key)"
            ),
            FailureCause::UnknownIssuer { side: Side::Server } => write!(
                f,
                "client certificate issued by an unknown CA (not signed by the --client-ca)"
            ),
            FailureCause::UnknownIssuer { side: Side::Client } => write!(
                f,
                "server certificate issued by an unknown CA (for a private CA use --ca FILE)"
            ),
            FailureCause::Expired { side, not_after } => match not_after {
                Some(t) => write!(f, "{} certificate expired on {t}", side.peer()),
                None => write!(f, "{} certificate expired", side.peer()),
            },
            FailureCause::NotYetValid { side, not_before } => match not_before {
                Some(t) => write!(f, "{} certificate not valid before {t}", side.peer()),
                None => write!(f, "{} certificate not valid yet", side.peer()),
            },
            FailureCause::WrongPurpose { side } => {
                let eku = match side {
                    Side::Server => "clientAuth",
                    Side::Client => "serverAuth",
                };
                write!(
                    f,
                    "{} certificate is not valid for this purpose (missing the {eku} extended key usage)",
                    side.peer()
                )
            }
            FailureCause::NameMismatch { expected, presented } => {
                if expected.is_empty() {
                    write!(f, "server certificate is not valid for the requested name")
                } else {
                    write!(
                        f,
                        "server certificate is not valid for '{expected}' (it covers: {}; --servername NAME checks another name)",
                        if presented.is_empty() {
                            "no names".to_owned()
                        } else {
                            presented.iter().map(|n| san_label(n)).collect::<Vec<_>>().join(", ")
                        }
                    )
                }
            }
            FailureCause::PinMismatch { expected, presented } => write!(
                f,
                "server public key {presented} does not match the pin {expected}"
            ),
            FailureCause::Revoked { side } => write!(f, "{} certificate has been revoked", side.peer()),
            FailureCause::ProtocolVersion {
                side: Side::Server,
                client_max: Some(v),
            } if *v < 0x0303 => write!(
                f,
                "client offered only TLS 1.1 or older (its newest: {}); this server accepts TLS 1.3 (and 1.2 with --tls12)",
                version_name(*v)
            ),
            FailureCause::ProtocolVersion {
                side: Side::Server, ..
            } => write!(
                f,
                "client offered only TLS 1.2 or older; this server accepts TLS 1.3 (serve --tls12 also allows 1.2)"
            ),
            FailureCause::ProtocolVersion {
                side: Side::Client, ..
            } => {
                write!(f, "server does not support a TLS version we accept")
            }
            FailureCause::AccessDenied { side: Side::Server } => write!(
                f,
                "client certificate is valid but matches no --allow rule (access denied)"
            ),
            FailureCause::AccessDenied { side: Side::Client } => write!(
                f,
                "server refused our client certificate: its access policy does not admit it (alert access_denied)"
            ),
            FailureCause::ServerNotAdmitted => write!(
                f,
                "server certificate is valid but matches no --verify-* rule"
            ),
            FailureCause::NoApplicationProtocol { side: Side::Server } => write!(
                f,
                "client asked only for application protocols (ALPN) this server does not run"
            ),
            FailureCause::NoApplicationProtocol { side: Side::Client } => write!(
                f,
                "server runs none of the application protocols we asked for (alert no_application_protocol; --alpn)"
            ),
            FailureCause::NothingInCommon(what) => {
                write!(f, "no common parameters with the peer: {}", incompatibility(what))
            }
            FailureCause::AlertReceived { side, alert } => {
                let hint = match (side, alert) {
                    (Side::Server, AlertDescription::UnknownCA) => {
                        " (the client does not trust our CA)"
                    }
                    (Side::Server, AlertDescription::BadCertificate) => {
                        " (the client rejected our certificate: wrong name?)"
                    }
                    (Side::Server, AlertDescription::CertificateExpired) => {
                        " (the client says our certificate has expired)"
                    }
                    (Side::Client, AlertDescription::UnknownCA) => {
                        " (the server does not trust the CA of our client certificate)"
                    }
                    (Side::Client, AlertDescription::CertificateExpired) => {
                        " (the server says our client certificate has expired)"
                    }
                    (Side::Client, AlertDescription::UnsupportedCertificate) => {
                        " (the server says our client certificate is not valid for client authentication)"
                    }
                    (Side::Client, AlertDescription::BadCertificate) => {
                        " (the server rejected our client certificate)"
                    }
                    (Side::Client, AlertDescription::CertificateRevoked) => {
                        " (the server says our client certificate is revoked)"
                    }
                    _ => "",
                };
                write!(f, "{} sent alert {}{hint}", side.peer(), alert_name(*alert))
            }
            FailureCause::Tls(e) => write!(f, "{e}"),
            FailureCause::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A TLS version number in words (`0x0302` is TLS 1.1).
pub fn version_name(version: u16) -> String {
    match version {
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        other => format!("version 0x{other:04x}"),
    }
}

fn incompatibility(what: &PeerIncompatible) -> String {
    match what {
        PeerIncompatible::NoCipherSuitesInCommon => "no cipher suite in common".into(),
        PeerIncompatible::NoKxGroupsInCommon => "no key-exchange group in common".into(),
        PeerIncompatible::NoSignatureSchemesInCommon => "no signature scheme in common".into(),
        PeerIncompatible::SignatureAlgorithmsExtensionRequired => {
            "the client sent no signature_algorithms extension (TLS 1.3 requires one)".into()
        }
        other => format!("{other:?}"),
    }
}

/// The RFC 8446 name of an alert (`unknown_ca`, `certificate_required`, ...).
pub fn alert_name(alert: AlertDescription) -> String {
    // rustls' Debug is CamelCase; RFC names are snake_case, which is what other tools print.
    let camel = format!("{alert:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    let mut prev_upper = true; // no underscore before the first letter
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            if !prev_upper {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
        prev_upper = c.is_ascii_uppercase();
    }
    out
}

/// rustls lists presented names as `DnsName("localhost")` and `IpAddress(127.0.0.1)` (older
/// versions: a bare `localhost`); show them the way certificates are usually printed
/// (`DNS:localhost`, `IP:127.0.0.1`).
fn san_label(name: &str) -> String {
    let inner = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(')'))
            .map(|n| n.trim_matches('"').to_owned())
    };
    if let Some(ip) = inner("IpAddress(") {
        // Shown in the usual short form (`::1`, where webpki writes `0::1`).
        let ip = ip.parse::<std::net::IpAddr>().map_or(ip, |a| a.to_string());
        format!("IP:{ip}")
    } else if let Some(dns) = inner("DnsName(") {
        format!("DNS:{dns}")
    } else if let Some(uri) = inner("UriName(") {
        format!("URI:{uri}")
    } else {
        format!("DNS:{name}")
    }
}

fn unix_time(t: UnixTime) -> String {
    let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => crate::x509::rfc3339(dt),
        Err(_) => format!("unix time {secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_are_labelled() {
        assert_eq!(san_label("DnsName(\"alpha.test\")"), "DNS:alpha.test");
        assert_eq!(san_label("IpAddress(127.0.0.1)"), "IP:127.0.0.1");
        assert_eq!(san_label("localhost"), "DNS:localhost");
    }

    #[test]
    fn alert_names_are_rfc_style() {
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(
            alert_name(AlertDescription::BadCertificate),
            "bad_certificate"
        );
    }

    #[test]
    fn classifies_wrapped_rustls_errors() {
        let err = io::Error::new(
            io::ErrorKind::InvalidData,
            TlsError::NoCertificatesPresented,
        );
        let cause = FailureCause::classify(&err, Side::Server);
        assert_eq!(
            cause.to_string(),
            "client sent no certificate (this server requires one)"
        );
        let err = io::Error::new(
            io::ErrorKind::InvalidData,
            TlsError::InvalidCertificate(CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
                not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_767_398_400)),
            }),
        );
        let cause = FailureCause::classify(&err, Side::Server);
        assert_eq!(
            cause.to_string(),
            "client certificate expired on 2026-01-03T00:00:00Z"
        );
        assert_eq!(cause.label(), "certificate_expired");
    }
}
