//! PEM certificate chains, as `--cert`, `--client-ca` and `--ca` files are read: every
//! certificate found goes through the summary that `inspect` and the handshake report show.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsnet::tls::SpkiPin;
use tlsnet::x509::CertSummary;

fuzz_target!(|data: &[u8]| {
    let Ok(certs) = tlsnet::tls::certs_from_pem(data) else {
        return;
    };
    let mut out = String::new();
    for cert in &certs {
        let summary = CertSummary::from_der(cert);
        let pin = SpkiPin::of_certificate(cert);
        // Both parse the same DER: they agree on whether it is a certificate, and the summary's
        // pin is the pin.
        assert_eq!(
            summary.is_ok(),
            pin.is_ok(),
            "from_der and of_certificate disagree"
        );
        if let (Ok(summary), Ok(pin)) = (summary, pin) {
            assert_eq!(summary.spki_pin, pin.to_string());
            tlsnet::inspect::text::certificate(&mut out, "certificate", &summary);
        }
    }
    // What `inspect --json` prints and what the server's metrics read.
    let _ = tlsnet::inspect::to_pem(&certs);
    tlsnet::telemetry::record_expiry(&certs, &certs, &[]);
});
