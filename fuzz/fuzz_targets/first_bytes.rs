//! The first bytes a client sends, classified before any TLS parsing (plain HTTP, not TLS,
//! closed), the ClientHello version read from them, and the words and label that the log and
//! the metrics then show.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsnet::tls::FailureCause;

fuzz_target!(|data: &[u8]| {
    let cause = tlsnet::net::sniff::classify_first_bytes(data);
    match data.first() {
        None => assert!(matches!(cause, Some(FailureCause::ClosedDuringHandshake))),
        Some(0x16) => assert!(cause.is_none(), "a TLS handshake record refused: {cause:?}"),
        Some(_) => assert!(cause.is_some(), "not a handshake record, yet accepted"),
    }
    if let Some(cause) = cause {
        let _ = cause.to_string();
        let _ = cause.label();
    }
    let version = tlsnet::net::sniff::client_hello_version(data);
    if let Some(v) = version {
        assert!(data.len() >= 11 && data[0] == 0x16 && data[5] == 0x01);
        assert_eq!(v, u16::from_be_bytes([data[9], data[10]]));
        let _ = tlsnet::tls::failure::version_name(v);
    }
});
