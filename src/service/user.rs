//! Who a user is, for the services that keep something per user (files, messaging): a user
//! id taken from the client's verified certificate, checked so that it can name a directory
//! or a mailbox.
//!
//! The server chooses which field of the certificate is the id (`serve --user-id
//! cn|email|dns|uri`, the common name by default). Whatever the field, the id must be
//! 1 to [`MAX_USER_ID`] bytes of UTF-8 without `/`, `\`, NUL or any control character, and
//! must not start with `.` (so neither `.` nor `..`). A certificate without that field, or
//! whose value breaks these rules, has no user id: the service refuses the client with a
//! clear error instead of guessing.
//!
//! ```
//! use tlsnet::service::user::{UserId, UserIdSource};
//! assert_eq!(UserId::parse("alice").unwrap().as_str(), "alice");
//! assert!(UserId::parse("../bob").is_err());
//! assert_eq!("email".parse::<UserIdSource>().unwrap(), UserIdSource::Email);
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;
use crate::tls::PeerIdentity;

/// Longest user id, in bytes.
pub const MAX_USER_ID: usize = 128;

/// Which field of the client certificate is the user id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UserIdSource {
    /// The subject's first common name (CN).
    #[default]
    Cn,
    /// The first email address (rfc822Name) of the subject alternative names.
    Email,
    /// The first DNS name of the subject alternative names.
    Dns,
    /// The first URI of the subject alternative names (one without `/`, e.g. `urn:user:alice`).
    Uri,
}

impl UserIdSource {
    /// Every source, for help texts.
    pub const ALL: [UserIdSource; 4] = [
        UserIdSource::Cn,
        UserIdSource::Email,
        UserIdSource::Dns,
        UserIdSource::Uri,
    ];

    /// The name used on the command line: `cn`, `email`, `dns`, `uri`.
    pub fn name(self) -> &'static str {
        match self {
            UserIdSource::Cn => "cn",
            UserIdSource::Email => "email",
            UserIdSource::Dns => "dns",
            UserIdSource::Uri => "uri",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            UserIdSource::Cn => "common name (CN)",
            UserIdSource::Email => "email address",
            UserIdSource::Dns => "DNS name",
            UserIdSource::Uri => "URI",
        }
    }
}

impl fmt::Display for UserIdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for UserIdSource {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserIdSource::ALL
            .into_iter()
            .find(|source| source.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                ParseError::new(format!(
                    "'{s}' is not a user id source (use cn, email, dns or uri)"
                ))
            })
    }
}

/// A checked user id: safe as one path component and one line of a log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

/// Why a client has no user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// The client sent no certificate.
    #[error("the client sent no certificate, so it has no user id")]
    NoCertificate,
    /// The certificate lacks the field the server takes the id from.
    #[error("the client certificate has no {}, which this server takes the user id from (--user-id {field})", field.describe())]
    Missing {
        /// The field that is missing.
        field: UserIdSource,
    },
    /// The value breaks the rules for a user id.
    #[error("'{}' cannot be a user id: {problem}", id.escape_debug())]
    Invalid {
        /// The value, as given (shown escaped).
        id: String,
        /// The rule it breaks.
        problem: &'static str,
    },
}

impl UserIdError {
    /// A stable label for protocol errors and logs: `no_certificate`, `no_user_id`,
    /// `invalid_user_id`.
    pub fn code(&self) -> &'static str {
        match self {
            UserIdError::NoCertificate => "no_certificate",
            UserIdError::Missing { .. } => "no_user_id",
            UserIdError::Invalid { .. } => "invalid_user_id",
        }
    }
}

impl UserId {
    /// Checks `id` against the rules in the module documentation.
    pub fn parse(id: &str) -> Result<UserId, UserIdError> {
        let invalid = |problem| UserIdError::Invalid {
            id: id.chars().take(MAX_USER_ID).collect(),
            problem,
        };
        if id.is_empty() {
            return Err(invalid("it is empty"));
        }
        if id.len() > MAX_USER_ID {
            return Err(invalid("it is longer than 128 bytes"));
        }
        if id.contains('/') || id.contains('\\') {
            return Err(invalid("it contains '/' or '\\'"));
        }
        if id.chars().any(char::is_control) {
            return Err(invalid("it contains a NUL or control character"));
        }
        if id.starts_with('.') {
            return Err(invalid("it starts with '.'"));
        }
        Ok(UserId(id.to_owned()))
    }

    /// The user id of a client: the field `source` of its certificate, checked.
    pub fn of_peer(
        identity: Option<&PeerIdentity>,
        source: UserIdSource,
    ) -> Result<UserId, UserIdError> {
        let identity = identity.ok_or(UserIdError::NoCertificate)?;
        let value = match source {
            UserIdSource::Cn => identity.common_name.as_deref(),
            UserIdSource::Email => identity.emails.first().map(String::as_str),
            UserIdSource::Dns => identity.dns_names.first().map(String::as_str),
            UserIdSource::Uri => identity.uris.first().map(String::as_str),
        };
        UserId::parse(value.ok_or(UserIdError::Missing { field: source })?)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(cn: Option<&str>, emails: &[&str], uris: &[&str]) -> PeerIdentity {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["host.test".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        for e in emails {
            params
                .subject_alt_names
                .push(rcgen::SanType::Rfc822Name((*e).try_into().unwrap()));
        }
        for u in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*u).try_into().unwrap()));
        }
        let cert = params.self_signed(&key).unwrap();
        PeerIdentity::from_der(cert.der()).unwrap()
    }

    #[test]
    fn rules() {
        for good in [
            "alice",
            "alice@example.com",
            "Bob Smith",
            "urn:user:carol",
            "é",
        ] {
            assert!(UserId::parse(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_USER_ID + 1);
        for bad in [
            "", ".", "..", ".hidden", "a/b", "a\\b", "a\0b", "a\nb", "a\u{7f}", "a\u{85}", &long,
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserId::parse(&"a".repeat(MAX_USER_ID)).is_ok());
    }

    #[test]
    fn from_each_field() {
        let id = identity(
            Some("alice"),
            &["alice@acme.test"],
            &["spiffe://acme/alice", "urn:user:alice"],
        );
        let of = |s| UserId::of_peer(Some(&id), s).map(|u| u.to_string());
        assert_eq!(of(UserIdSource::Cn).unwrap(), "alice");
        assert_eq!(of(UserIdSource::Email).unwrap(), "alice@acme.test");
        assert_eq!(of(UserIdSource::Dns).unwrap(), "host.test");
        // The first URI has a '/': refused, not cut.
        assert!(matches!(
            UserId::of_peer(Some(&id), UserIdSource::Uri),
            Err(UserIdError::Invalid { .. })
        ));
        let bare = identity(None, &[], &[]);
        let err = UserId::of_peer(Some(&bare), UserIdSource::Cn).unwrap_err();
        assert!(err.to_string().contains("--user-id cn"), "{err}");
        assert_eq!(
            UserId::of_peer(None, UserIdSource::Cn),
            Err(UserIdError::NoCertificate)
        );
        assert!("CN".parse::<UserIdSource>().is_ok());
        assert!("name".parse::<UserIdSource>().is_err());
    }
}
