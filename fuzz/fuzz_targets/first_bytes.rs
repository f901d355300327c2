//! The first bytes a client sends, classified before any TLS parsing (plain HTTP, not TLS,
//! closed), and the words and label that the log and the metrics then show.

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
});
