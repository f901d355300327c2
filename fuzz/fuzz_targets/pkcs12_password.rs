//! PKCS#12 with the password taken from the input too: the first byte is the password's
//! length (modulo 64), then the password (lossy UTF-8), then the file.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(len % 64).min(rest.len());
    let (password, file) = rest.split_at(len);
    let password = String::from_utf8_lossy(password);
    let _ = tlsnet::pkcs12::looks_like_pkcs12(file);
    let Ok(contents) = tlsnet::pkcs12::read(file, &password) else {
        return;
    };
    for cert in &contents.certificates {
        let _ = tlsnet::x509::CertSummary::from_der(cert);
    }
    if let (Some(first), Some(key)) = (contents.certificates.first(), &contents.key) {
        let _ = tlsnet::pkcs12::key_matches(first, key);
    }
});
