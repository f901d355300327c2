//! CRLs, as `serve --crl` reads them: PEM or DER, then the expiry gauge's parser and the
//! client-certificate verifier built with them (webpki's CRL parser).

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(crls) = tlsnet::tls::crls_from_bytes(data) else {
        return;
    };
    assert!(!crls.is_empty(), "crls_from_bytes returned Ok with no CRL");
    tlsnet::telemetry::record_expiry(&[], &[], &crls);
    let mut options = common::server_options();
    options.crls = crls;
    let _ = options.build();
});
