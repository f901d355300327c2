//! The PROXY protocol version 2 header a tunnel server sends its backend first
//! (`--proxy-protocol`), so that the backend learns who the client is: its address, and in
//! TLVs what TLS negotiated and the client's certificate. Sans-I/O: this module makes bytes.
//!
//! The header and its TLV framing are written by the `ppp` crate; the value of the
//! `PP2_TYPE_SSL` TLV (a 5-byte head and sub-TLVs) is made here. What is sent, byte by byte,
//! is in docs/PROTOCOL.md:
//!
//! | TLV | type | value |
//! |---|---|---|
//! | `PP2_TYPE_ALPN` | 0x01 | the negotiated ALPN id (absent when none) |
//! | `PP2_TYPE_AUTHORITY` | 0x02 | the SNI the client sent (absent when none) |
//! | `PP2_TYPE_SSL` | 0x20 | client flags (1 byte), verify (4 bytes, 0), then: |
//! | `PP2_SUBTYPE_SSL_VERSION` | 0x21 | `TLSv1.3` or `TLSv1.2` |
//! | `PP2_SUBTYPE_SSL_CN` | 0x22 | the client certificate's common name (absent when none) |
//! | `PP2_SUBTYPE_SSL_CIPHER` | 0x23 | the suite's OpenSSL name, `TLS_AES_256_GCM_SHA384` |
//! | `PP2_SUBTYPE_SSL_CLIENT_CERT` | 0x28 | the client certificate, DER |
//!
//! 0x28 is not in HAProxy's specification (which defines sub-types up to 0x25); it is the
//! sub-type that ghostunnel (through go-proxyproto) sends the client certificate in, so a
//! backend written for ghostunnel's `tls-full` mode reads ours.

use std::borrow::Cow;
use std::io;
use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Builder, Command, IPv4, IPv6, Protocol, Version};

/// The 12-byte signature that starts every version 2 header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// TLV: the application protocol (ALPN).
pub const PP2_TYPE_ALPN: u8 = 0x01;
/// TLV: the host name the client asked for (SNI).
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
/// TLV: TLS facts, a container of sub-TLVs.
pub const PP2_TYPE_SSL: u8 = 0x20;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the TLS version.
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the client certificate's common name.
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the cipher suite.
pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
/// Sub-TLV of [`PP2_TYPE_SSL`]: the client certificate, DER (ghostunnel's extension).
pub const PP2_SUBTYPE_SSL_CLIENT_CERT: u8 = 0x28;
/// Client flag: the client connected over TLS.
pub const PP2_CLIENT_SSL: u8 = 0x01;
/// Client flag: the client sent a certificate on this connection.
pub const PP2_CLIENT_CERT_CONN: u8 = 0x02;
/// Client flag: the client sent a certificate in this TLS session.
pub const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// Everything the header says about one connection.
#[derive(Clone, Debug)]
pub struct ProxyHeader<'a> {
    /// The client's address.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
    /// The negotiated ALPN id.
    pub alpn: Option<&'a [u8]>,
    /// The SNI the client sent.
    pub authority: Option<&'a str>,
    /// What TLS negotiated; `None` sends no `PP2_TYPE_SSL`.
    pub tls: Option<TlsFacts<'a>>,
}

/// The content of the `PP2_TYPE_SSL` TLV.
#[derive(Clone, Debug)]
pub struct TlsFacts<'a> {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: &'a str,
    /// The cipher suite's name as sent (see [`openssl_cipher_name`]).
    pub cipher: &'a str,
    /// The client's verified certificate, when it sent one.
    pub client_cert: Option<ClientCert<'a>>,
}

/// A verified client certificate.
#[derive(Clone, Debug)]
pub struct ClientCert<'a> {
    /// The subject's common name.
    pub common_name: Option<&'a str>,
    /// The certificate, DER.
    pub der: &'a [u8],
}

/// Why a header could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A TLV or the whole header is longer than its 16-bit length field allows (a huge
    /// client certificate).
    #[error("the PROXY header does not fit: {what} is {len} bytes, at most 65535 fit")]
    TooLong {
        /// What is too long.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// The `ppp` crate refused to write it.
    #[error("cannot write the PROXY header")]
    Encode(#[source] io::Error),
}

impl ProxyHeader<'_> {
    /// The header's bytes: signature, `\x21` (version 2, PROXY), the family (`\x11` TCP over
    /// IPv4 or `\x21` TCP over IPv6), the length, the addresses, then the TLVs.
    pub fn encode(&self) -> Result<Vec<u8>, ProxyError> {
        let (source, destination) = same_family(self.source, self.destination);
        let version_command = Version::Two | Command::Proxy;
        let mut builder = match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Builder::with_addresses(
                version_command,
                Protocol::Stream,
                IPv4::new(s, d, source.port(), destination.port()),
            ),
            (s, d) => Builder::with_addresses(
                version_command,
                Protocol::Stream,
                IPv6::new(v6(s), v6(d), source.port(), destination.port()),
            ),
        };
        let mut total = 0usize;
        let mut tlv = |builder: Builder, kind: u8, value: &[u8], what: &'static str| {
            fits(what, value.len())?;
            total += 3 + value.len();
            builder.write_tlv(kind, value).map_err(ProxyError::Encode)
        };
        if let Some(alpn) = self.alpn {
            builder = tlv(builder, PP2_TYPE_ALPN, alpn, "the ALPN id")?;
        }
        if let Some(authority) = self.authority {
            builder = tlv(builder, PP2_TYPE_AUTHORITY, authority.as_bytes(), "the SNI")?;
        }
        if let Some(tls) = &self.tls {
            let ssl = tls.encode()?;
            builder = tlv(builder, PP2_TYPE_SSL, &ssl, "the PP2_TYPE_SSL TLV")?;
        }
        // The addresses count too: 12 bytes for IPv4, 36 for IPv6.
        let addresses = if source.is_ipv4() { 12 } else { 36 };
        fits("the header after its first 16 bytes", total + addresses)?;
        builder.build().map_err(ProxyError::Encode)
    }
}

impl TlsFacts<'_> {
    /// The value of the `PP2_TYPE_SSL` TLV: the client flags, a 4-byte verify result of 0
    /// (the certificate was verified, or none was sent), then the sub-TLVs.
    fn encode(&self) -> Result<Vec<u8>, ProxyError> {
        let mut flags = PP2_CLIENT_SSL;
        if self.client_cert.is_some() {
            // Every mutual-TLS handshake verifies (no resumption with client certificates),
            // so a certificate of the session is one of this connection.
            flags |= PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS;
        }
        let mut value = vec![flags, 0, 0, 0, 0];
        sub_tlv(
            &mut value,
            PP2_SUBTYPE_SSL_VERSION,
            self.version.as_bytes(),
            "the TLS version",
        )?;
        if let Some(cn) = self.client_cert.as_ref().and_then(|c| c.common_name) {
            sub_tlv(&mut value, PP2_SUBTYPE_SSL_CN, cn.as_bytes(), "the CN")?;
        }
        sub_tlv(
            &mut value,
            PP2_SUBTYPE_SSL_CIPHER,
            self.cipher.as_bytes(),
            "the cipher name",
        )?;
        if let Some(cert) = &self.client_cert {
            sub_tlv(
                &mut value,
                PP2_SUBTYPE_SSL_CLIENT_CERT,
                cert.der,
                "the client certificate",
            )?;
        }
        Ok(value)
    }
}

fn sub_tlv(
    out: &mut Vec<u8>,
    kind: u8,
    value: &[u8],
    what: &'static str,
) -> Result<(), ProxyError> {
    let len = fits(what, value.len())?;
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

fn fits(what: &'static str, len: usize) -> Result<u16, ProxyError> {
    u16::try_from(len).map_err(|_| ProxyError::TooLong { what, len })
}

/// Both addresses in one family: IPv4-mapped IPv6 addresses (a dual-stack listener's view
/// of an IPv4 client) become IPv4; if the two still differ, the IPv4 one is mapped to IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (s, d) = (canonical(source), canonical(destination));
    if s.is_ipv4() == d.is_ipv4() {
        (s, d)
    } else {
        let mapped = |a: SocketAddr| SocketAddr::new(IpAddr::V6(v6(a.ip())), a.port());
        (mapped(s), mapped(d))
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The OpenSSL name of a cipher suite given by its rustls name, as HAProxy sends it in
/// `PP2_SUBTYPE_SSL_CIPHER`: `TLS13_AES_256_GCM_SHA384` is `TLS_AES_256_GCM_SHA384`,
/// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` is `ECDHE-RSA-AES128-GCM-SHA256`. Names it does
/// not know are returned as they are.
pub fn openssl_cipher_name(rustls_name: &str) -> Cow<'_, str> {
    if let Some(rest) = rustls_name.strip_prefix("TLS13_") {
        return Cow::Owned(format!("TLS_{rest}"));
    }
    let known = match rustls_name {
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-RSA-CHACHA20-POLY1305",
        other => return Cow::Borrowed(other),
    };
    Cow::Borrowed(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_only_byte_by_byte() {
        let header = ProxyHeader {
            source: addr("127.0.0.1:50000"),
            destination: addr("127.0.0.2:443"),
            alpn: None,
            authority: None,
            tls: None,
        };
        let mut expected = SIGNATURE.to_vec();
        expected.extend([
            0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 2, 0xc3, 0x50, 1, 0xbb,
        ]);
        assert_eq!(header.encode().unwrap(), expected);
    }

    #[test]
    fn every_tlv_byte_by_byte() {
        let header = ProxyHeader {
            source: addr("[::1]:1"),
            destination: addr("[::1]:2"),
            alpn: Some(b"h2"),
            authority: Some("db"),
            tls: Some(TlsFacts {
                version: "TLSv1.3",
                cipher: "C",
                client_cert: Some(ClientCert {
                    common_name: Some("al"),
                    der: &[0x30, 0x00],
                }),
            }),
        };
        let mut expected = SIGNATURE.to_vec();
        let ssl: Vec<u8> = [
            &[0x07, 0, 0, 0, 0][..],
            &[0x21, 0, 7],
            b"TLSv1.3",
            &[0x22, 0, 2],
            b"al",
            &[0x23, 0, 1],
            b"C",
            &[0x28, 0, 2, 0x30, 0x00],
        ]
        .concat();
        let tlvs: Vec<u8> = [
            &[0x01, 0, 2][..],
            b"h2",
            &[0x02, 0, 2],
            b"db",
            &[0x20, 0, ssl.len() as u8],
            &ssl,
        ]
        .concat();
        let len = (36 + tlvs.len()) as u16;
        expected.extend([0x21, 0x21]);
        expected.extend(len.to_be_bytes());
        let mut one = [0u8; 16];
        one[15] = 1;
        expected.extend(one);
        expected.extend(one);
        expected.extend([0, 1, 0, 2]);
        expected.extend(tlvs);
        assert_eq!(header.encode().unwrap(), expected);
    }

    #[test]
    fn no_client_certificate_means_no_cn_nor_cert() {
        let tls = TlsFacts {
            version: "TLSv1.2",
            cipher: "ECDHE-RSA-AES128-GCM-SHA256",
            client_cert: None,
        };
        let value = tls.encode().unwrap();
        assert_eq!(value[0], PP2_CLIENT_SSL);
        assert_eq!(&value[5..8], &[0x21, 0, 7]);
        assert_eq!(value.len(), 5 + 3 + 7 + 3 + 27);
    }

    #[test]
    fn mixed_families_are_made_one() {
        let (s, d) = same_family(addr("[::ffff:10.1.2.3]:5"), addr("127.0.0.1:6"));
        assert_eq!((s, d), (addr("10.1.2.3:5"), addr("127.0.0.1:6")));
        let (s, d) = same_family(addr("10.1.2.3:5"), addr("[::1]:6"));
        assert_eq!((s, d), (addr("[::ffff:10.1.2.3]:5"), addr("[::1]:6")));
    }

    #[test]
    fn a_huge_certificate_is_an_error_not_a_panic() {
        // Too long for its sub-TLV; then short enough for that, too long for the header.
        for size in [70_000, 65_500] {
            let der = vec![0u8; size];
            let header = ProxyHeader {
                source: addr("127.0.0.1:1"),
                destination: addr("127.0.0.1:2"),
                alpn: None,
                authority: None,
                tls: Some(TlsFacts {
                    version: "TLSv1.3",
                    cipher: "x",
                    client_cert: Some(ClientCert {
                        common_name: None,
                        der: &der,
                    }),
                }),
            };
            let err = header.encode().unwrap_err();
            assert!(matches!(err, ProxyError::TooLong { .. }), "{size}: {err}");
        }
    }

    #[test]
    fn cipher_names_as_openssl_says_them() {
        assert_eq!(
            openssl_cipher_name("TLS13_AES_256_GCM_SHA384"),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            openssl_cipher_name("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
            "ECDHE-ECDSA-CHACHA20-POLY1305"
        );
        assert_eq!(openssl_cipher_name("SOMETHING"), "SOMETHING");
    }
}
