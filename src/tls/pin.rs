//! SPKI pins: `sha256/BASE64`, the SHA-256 of a certificate's SubjectPublicKeyInfo, as used by
//! HPKP and `curl --pinnedpubkey`. A pin survives certificate renewal when the key is kept.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::ParseError;

/// A SHA-256 pin of a public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpkiPin([u8; 32]);

impl SpkiPin {
    /// The pin of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        SpkiPin(out)
    }

    /// The pin of a DER-encoded certificate's public key.
    pub fn of_certificate(cert_der: &[u8]) -> Result<Self, ParseError> {
        let (_, cert) = X509Certificate::from_der(cert_der)
            .map_err(|e| ParseError::caused_by("not a valid X.509 certificate", e))?;
        Ok(Self::of_spki(cert.public_key().raw))
    }
}

impl FromStr for SpkiPin {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let expected = "expected sha256/ followed by the base64 SHA-256 of the public key \
                        (tlsnet connect prints it in its report)";
        let b64 = text
            .strip_prefix("sha256/")
            .ok_or_else(|| ParseError::new(format!("pin '{text}': {expected}")))?;
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| ParseError::new(format!("pin '{text}': bad base64 ({e}); {expected}")))?;
        let array: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            ParseError::new(format!(
                "pin '{text}': {} bytes, a SHA-256 is 32; {expected}",
                b.len()
            ))
        })?;
        Ok(SpkiPin(array))
    }
}

impl fmt::Display for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256/{}", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let pin = SpkiPin::of_spki(b"any key");
        let text = pin.to_string();
        assert!(text.starts_with("sha256/"));
        assert_eq!(text.parse::<SpkiPin>().unwrap(), pin);
    }

    #[test]
    fn rejects_bad_pins() {
        assert!("abc"
            .parse::<SpkiPin>()
            .unwrap_err()
            .to_string()
            .contains("expected sha256/"));
        assert!("sha256/!!!"
            .parse::<SpkiPin>()
            .unwrap_err()
            .to_string()
            .contains("base64"));
        assert!("sha256/AAAA"
            .parse::<SpkiPin>()
            .unwrap_err()
            .to_string()
            .contains("3 bytes"));
    }
}
