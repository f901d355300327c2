//! One DER certificate, as a peer sends it in a handshake: the summary of the handshake report
//! and `inspect`, its text form, the SPKI pin that `connect --pin` compares, the expiry check
//! and the key/certificate match of PKCS#12 and `inspect`.

#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;
use tlsnet::tls::SpkiPin;
use tlsnet::x509::CertSummary;

fuzz_target!(|data: &[u8]| {
    let summary = CertSummary::from_der(data);
    let pin = SpkiPin::of_certificate(data);
    // Both parse the same DER: they agree on whether it is a certificate.
    assert_eq!(
        summary.is_ok(),
        pin.is_ok(),
        "from_der and of_certificate disagree"
    );
    let chain = [CertificateDer::from(data)];
    let expiring = tlsnet::inspect::expiring_within(&chain, Duration::from_secs(86_400));
    let (Ok(summary), Ok(pin)) = (summary, pin) else {
        // An unparsable certificate counts as expiring.
        assert_eq!(expiring.len(), 1);
        return;
    };
    assert_eq!(summary.spki_pin, pin.to_string());
    assert_eq!(summary.spki_pin.parse::<SpkiPin>().ok(), Some(pin));
    let mut out = String::new();
    tlsnet::inspect::text::certificate(&mut out, "certificate", &summary);
    let _ = tlsnet::inspect::text::validity(&summary);
    let _ = tlsnet::pkcs12::key_matches(data, &common::FIXTURE.identity.key);
    tlsnet::telemetry::record_expiry(&chain, &chain, &[]);
});
