//! The first bytes of a connection, before any TLS parsing: name the common mistakes
//! (plaintext HTTP, another protocol) and read the newest TLS version a ClientHello offers.
//! Sans-I/O: these functions take bytes the server peeked at.

use crate::tls::FailureCause;

/// How many bytes [`classify_first_bytes`] and [`client_hello_version`] want to see.
pub const SNIFF_LEN: usize = 11;

/// What the first bytes of a connection say: `None` when they may start a TLS handshake,
/// else the cause to report.
pub fn classify_first_bytes(first: &[u8]) -> Option<FailureCause> {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    match first.first() {
        None => Some(FailureCause::ClosedDuringHandshake),
        Some(&TLS_HANDSHAKE_RECORD) => None,
        Some(_) if looks_like_http(first) => Some(FailureCause::PlaintextHttp),
        Some(&first_byte) => Some(FailureCause::NotTls { first_byte }),
    }
}

/// The `client_version` of a ClientHello (`0x0302` for a TLS 1.1 client, `0x0303` for TLS
/// 1.2 and 1.3, whose real versions are in the supported_versions extension), when the first
/// bytes are a handshake record holding a ClientHello.
pub fn client_hello_version(first: &[u8]) -> Option<u16> {
    // record: type 0x16, version (2), length (2); handshake: type 0x01, length (3); hello:
    // client_version (2).
    const CLIENT_HELLO: u8 = 0x01;
    match first {
        [0x16, _, _, _, _, CLIENT_HELLO, _, _, _, major, minor, ..] => {
            Some(u16::from_be_bytes([*major, *minor]))
        }
        _ => None,
    }
}

fn looks_like_http(start: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"PRI ",
    ];
    METHODS
        .iter()
        .any(|m| m.starts_with(start) || start.starts_with(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_http() {
        assert!(looks_like_http(b"GET / HT"));
        assert!(looks_like_http(b"POST /x"));
        assert!(looks_like_http(b"G"));
        assert!(!looks_like_http(b"\x16\x03\x01"));
        assert!(!looks_like_http(b"SSH-2.0-"));
    }

    #[test]
    fn reads_the_hello_version() {
        let tls11 = [
            0x16, 0x03, 0x01, 0x00, 0x50, 0x01, 0x00, 0x00, 0x4c, 0x03, 0x02,
        ];
        assert_eq!(client_hello_version(&tls11), Some(0x0302));
        assert_eq!(client_hello_version(&tls11[..10]), None);
        assert_eq!(client_hello_version(b"GET / HTTP/1.1"), None);
    }
}
