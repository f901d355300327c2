//! PKCS#12 files (`inspect`, `--cert x.p12`) opened with the password of the seeds, and the
//! cheap sniffing that decides whether a file is PKCS#12 at all.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tlsnet::pkcs12::looks_like_pkcs12(data);
    check(data, common::PASSWORD);
});

/// Opens `data` with `password` and uses what it holds the way `inspect` does.
pub fn check(data: &[u8], password: &str) {
    let Ok(contents) = tlsnet::pkcs12::read(data, password) else {
        return;
    };
    let _ = format!("{contents:?}");
    for cert in &contents.certificates {
        let _ = tlsnet::x509::CertSummary::from_der(cert);
    }
    if let (Some(first), Some(key)) = (contents.certificates.first(), &contents.key) {
        let _ = tlsnet::pkcs12::key_matches(first, key);
    }
}
