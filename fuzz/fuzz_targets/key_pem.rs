//! Private keys, as `--key` files are read: the PEM parser, then the key loaded into a server
//! configuration next to a certificate (the key/certificate consistency check) and the
//! key/certificate match that `inspect` and PKCS#12 use.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use tlsnet::tls::{Identity, ServerTlsOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(key) = tlsnet::tls::key_from_pem(data) else {
        return;
    };
    let fixture = &*common::FIXTURE;
    let _ = tlsnet::pkcs12::key_matches(&fixture.identity.chain[0], &key);
    let options = ServerTlsOptions::new(Identity {
        chain: fixture.identity.chain.clone(),
        key,
    });
    // Only the fixture's own key matches the fixture's certificate.
    let built = options.build();
    if built.is_ok() {
        assert!(tlsnet::pkcs12::key_matches(
            &fixture.identity.chain[0],
            &options.identities[0].key
        ));
    }
});
