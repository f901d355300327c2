//! `tlsnet inspect --json` checked against an oracle nobody here wrote: for every certificate
//! of Debian's CA bundle (real certificates from many CAs, with RSA and EC keys, old and new
//! signature algorithms, non-ASCII and multi-valued names), what tlsnet reports must equal
//! what `openssl x509 -text` says about the same certificate.
//!
//! Compared: subject and issuer (every attribute, in order), serial, notBefore/notAfter, days
//! left and the expired flag, SHA-256 fingerprint, key type and size (and the curve), the
//! signature algorithm, basic constraints, key usage, subject and authority key identifiers.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The bundle has ~150 certificates; more than this and the test stops growing with it.
const MAX_CERTS: usize = 200;

/// The PEM blocks of the bundle, in order.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") {
            blocks.extend(current.take());
        }
    }
    blocks
}

/// What OpenSSL says about one certificate.
#[derive(Debug, Default)]
struct OpenSsl {
    subject: Vec<(String, String)>,
    issuer: Vec<(String, String)>,
    serial: String,
    not_before: String,
    not_after: String,
    not_after_unix: i64,
    sha256: String,
    key_algorithm: String,
    key_bits: Option<u32>,
    curve: Option<String>,
    signature_algorithm: String,
    basic_constraints: Option<(bool, Option<u32>, bool)>,
    key_usage: Vec<String>,
    subject_key_id: Option<String>,
    authority_key_id: Option<String>,
}

fn openssl(pem: &str) -> OpenSsl {
    let mut command = Command::new("openssl");
    command.args([
        "x509",
        "-noout",
        "-nameopt",
        "RFC2253,-esc_msb",
        "-subject",
        "-issuer",
        "-serial",
        "-startdate",
        "-enddate",
        "-fingerprint",
        "-sha256",
        "-text",
    ]);
    let out = run(command, Some(pem.as_bytes()), RUN_LIMIT);
    assert!(out.status.success(), "openssl x509 failed: {}", out.stderr);
    parse_openssl(&out.stdout)
}

fn parse_openssl(text: &str) -> OpenSsl {
    let mut o = OpenSsl::default();
    let lines: Vec<&str> = text.lines().collect();
    // The value on the line after a header line.
    let next = |i: usize| lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim();
        if let Some(v) = raw.strip_prefix("subject=") {
            o.subject = parse_rfc2253(v);
        } else if let Some(v) = raw.strip_prefix("issuer=") {
            o.issuer = parse_rfc2253(v);
        } else if let Some(v) = raw.strip_prefix("serial=") {
            o.serial = normalize_hex(v);
        } else if let Some(v) = raw.strip_prefix("notBefore=") {
            o.not_before = openssl_date(v).0;
        } else if let Some(v) = raw.strip_prefix("notAfter=") {
            (o.not_after, o.not_after_unix) = openssl_date(v);
        } else if let Some(v) = raw.strip_prefix("sha256 Fingerprint=") {
            o.sha256 = v.replace(':', "").to_lowercase();
        } else if let Some(v) = line.strip_prefix("Public Key Algorithm: ") {
            o.key_algorithm = v.to_owned();
        } else if let Some(v) = line.strip_prefix("Public-Key: (") {
            o.key_bits = v.split(' ').next().and_then(|n| n.parse().ok());
        } else if let Some(v) = line.strip_prefix("NIST CURVE: ") {
            o.curve = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("Signature Algorithm: ") {
            if o.signature_algorithm.is_empty() {
                o.signature_algorithm = v.to_owned();
            }
        } else if line.starts_with("X509v3 Basic Constraints:") {
            let critical = line.ends_with("critical");
            let value = next(i);
            let ca = value.contains("CA:TRUE");
            let path_len = value
                .split("pathlen:")
                .nth(1)
                .and_then(|n| n.trim().parse().ok());
            o.basic_constraints = Some((ca, path_len, critical));
        } else if line.starts_with("X509v3 Key Usage:") {
            o.key_usage = next(i).split(", ").map(key_usage_name).collect();
        } else if line.starts_with("X509v3 Subject Key Identifier:") {
            o.subject_key_id = Some(next(i).to_lowercase());
        } else if line.starts_with("X509v3 Authority Key Identifier:") {
            // OpenSSL 3.0 writes `keyid:AB:CD...`, later versions the bare hex.
            let v = next(i);
            let v = v.strip_prefix("keyid:").unwrap_or(v);
            if v.contains(':') && !v.contains("DirName") {
                o.authority_key_id = Some(v.to_lowercase());
            }
        }
    }
    o
}

fn key_usage_name(openssl: &str) -> String {
    match openssl {
        "Digital Signature" => "digitalSignature",
        "Non Repudiation" => "nonRepudiation",
        "Key Encipherment" => "keyEncipherment",
        "Data Encipherment" => "dataEncipherment",
        "Key Agreement" => "keyAgreement",
        "Certificate Sign" => "keyCertSign",
        "CRL Sign" => "cRLSign",
        "Encipher Only" => "encipherOnly",
        "Decipher Only" => "decipherOnly",
        other => other,
    }
    .to_owned()
}

/// Hex digits only, uppercase, without leading zeros (`00:ab:01` and `AB01` are equal).
fn normalize_hex(v: &str) -> String {
    let hex: String = v
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_uppercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `Dec 20 09:37:33 2018 GMT` as RFC 3339 and as Unix time.
fn openssl_date(v: &str) -> (String, i64) {
    let parts: Vec<&str> = v.split_whitespace().collect();
    assert_eq!(parts.len(), 5, "unexpected OpenSSL date '{v}'");
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months
        .iter()
        .position(|m| *m == parts[0])
        .unwrap_or_else(|| panic!("unexpected month in '{v}'")) as u8
        + 1;
    let day: u8 = parts[1].parse().unwrap();
    let year: i32 = parts[3].parse().unwrap();
    let hms: Vec<u8> = parts[2].split(':').map(|n| n.parse().unwrap()).collect();
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).unwrap(), day).unwrap();
    let t =
        time::PrimitiveDateTime::new(date, time::Time::from_hms(hms[0], hms[1], hms[2]).unwrap())
            .assume_utc();
    let rfc3339 = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        hms[0], hms[1], hms[2]
    );
    (rfc3339, t.unix_timestamp())
}

/// Splits an RFC 2253 name as OpenSSL prints it (most significant RDN last, `\,` and `\XX`
/// escapes, `+` between the attributes of one RDN) into (type, value) pairs in certificate
/// order.
fn parse_rfc2253(text: &str) -> Vec<(String, String)> {
    let bytes = text.as_bytes();
    let mut fields = Vec::new();
    let mut attr = Vec::new();
    let mut value = Vec::new();
    let mut in_value = false;
    let mut i = 0;
    let flush = |attr: &mut Vec<u8>, value: &mut Vec<u8>, fields: &mut Vec<(String, String)>| {
        fields.push((
            String::from_utf8_lossy(attr).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        attr.clear();
        value.clear();
    };
    while i < bytes.len() {
        let b = bytes[i];
        if !in_value {
            if b == b'=' {
                in_value = true;
            } else {
                attr.push(b);
            }
        } else if b == b'\\' && i + 1 < bytes.len() {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                std::str::from_utf8(h)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            });
            match hex {
                Some(byte) => {
                    value.push(byte);
                    i += 2;
                }
                None => {
                    value.push(bytes[i + 1]);
                    i += 1;
                }
            }
        } else if b == b',' || b == b'+' {
            flush(&mut attr, &mut value, &mut fields);
            in_value = false;
        } else {
            value.push(b);
        }
        i += 1;
    }
    if in_value {
        flush(&mut attr, &mut value, &mut fields);
    }
    fields.reverse();
    fields
}

fn json_fields(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .expect("name fields are an array")
        .iter()
        .map(|f| {
            (
                f["attribute"].as_str().unwrap_or_default().to_owned(),
                f["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn same_values(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ta, va), (tb, vb))| {
            ta == tb
                && if va.starts_with('#') {
                    va.eq_ignore_ascii_case(vb)
                } else {
                    va == vb
                }
        })
}

fn compare(index: usize, cert: &Value, o: &OpenSsl, now: i64, mismatches: &mut Vec<String>) {
    let who = format!(
        "certificate {index} ({})",
        cert["subject"].as_str().unwrap_or("?")
    );
    let mut check = |field: &str, tlsnet: String, openssl: String| {
        if tlsnet != openssl {
            mismatches.push(format!(
                "{who}: {field}:\n    tlsnet:  {tlsnet}\n    openssl: {openssl}"
            ));
        }
    };
    let subject = json_fields(&cert["subject_fields"]);
    if !same_values(&subject, &o.subject) {
        check(
            "subject",
            format!("{subject:?}"),
            format!("{:?}", o.subject),
        );
    }
    let issuer = json_fields(&cert["issuer_fields"]);
    if !same_values(&issuer, &o.issuer) {
        check("issuer", format!("{issuer:?}"), format!("{:?}", o.issuer));
    }
    // The one-line subject must hold every attribute value too.
    let line = cert["subject"].as_str().unwrap_or_default();
    for (attr, value) in &o.subject {
        if !line.contains(&format!("{attr}={value}")) && !value.starts_with('#') {
            check(
                "subject line",
                line.to_owned(),
                format!("contains {attr}={value}"),
            );
        }
    }
    let s = |key: &str| cert[key].as_str().unwrap_or_default().to_owned();
    check("serial", normalize_hex(&s("serial")), o.serial.clone());
    check("not_before", s("not_before"), o.not_before.clone());
    check("not_after", s("not_after"), o.not_after.clone());
    check("sha256", s("sha256"), o.sha256.clone());
    let expected_days = (o.not_after_unix - now).div_euclid(86_400);
    let days = cert["days_left"].as_i64().unwrap_or(i64::MIN);
    if (days - expected_days).abs() > 1 {
        check("days_left", days.to_string(), expected_days.to_string());
    }
    check(
        "expired",
        cert["expired"].to_string(),
        (o.not_after_unix < now).to_string(),
    );
    let key_type = match o.key_algorithm.as_str() {
        "rsaEncryption" | "rsassaPss" => "RSA",
        "id-ecPublicKey" => "EC",
        "ED25519" => "Ed25519",
        "ED448" => "Ed448",
        other => other,
    };
    check("key_type", s("key_type"), key_type.to_owned());
    if let Some(bits) = o.key_bits {
        check("key_bits", cert["key_bits"].to_string(), bits.to_string());
    }
    if let Some(curve) = &o.curve {
        check("key", s("key"), format!("ECDSA {curve}"));
    } else if key_type == "RSA" {
        check(
            "key",
            s("key"),
            format!("RSA {}", o.key_bits.unwrap_or_default()),
        );
    }
    check(
        "signature_algorithm",
        s("signature_algorithm"),
        o.signature_algorithm.clone(),
    );
    let bc = &cert["basic_constraints"];
    let tlsnet_bc = (!bc.is_null()).then(|| {
        (
            bc["ca"].as_bool().unwrap_or_default(),
            bc["path_len"].as_u64().map(|n| n as u32),
            bc["critical"].as_bool().unwrap_or_default(),
        )
    });
    check(
        "basic_constraints",
        format!("{tlsnet_bc:?}"),
        format!("{:?}", o.basic_constraints),
    );
    let ku: Vec<String> = cert["key_usage"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    check("key_usage", format!("{ku:?}"), format!("{:?}", o.key_usage));
    check(
        "subject_key_id",
        format!("{:?}", cert["subject_key_id"].as_str()),
        format!("{:?}", o.subject_key_id.as_deref()),
    );
    if o.authority_key_id.is_some() {
        check(
            "authority_key_id",
            format!("{:?}", cert["authority_key_id"].as_str()),
            format!("{:?}", o.authority_key_id.as_deref()),
        );
    }
}

#[test]
fn inspect_agrees_with_openssl_on_the_system_ca_bundle() {
    assert!(
        Path::new(BUNDLE).exists(),
        "{BUNDLE} is missing: install Debian's ca-certificates package (scripts/test does). \
         This test needs a real-world certificate bundle and installs nothing itself."
    );
    assert!(
        have("openssl"),
        "`openssl` is not installed: install the openssl package (scripts/test does)"
    );
    let text = std::fs::read_to_string(BUNDLE).expect("read the bundle");
    let blocks = pem_blocks(&text);
    assert!(
        blocks.len() >= 50,
        "{BUNDLE} holds only {} certificates",
        blocks.len()
    );
    let json = tlsnet(&["inspect", BUNDLE, "--json"]).ok().json();
    let certs = json["certificates"].as_array().expect("certificates array");
    assert_eq!(
        certs.len(),
        blocks.len(),
        "tlsnet found a different number of certificates than the PEM blocks in {BUNDLE}"
    );
    assert_eq!(json["format"], "pem");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut mismatches = Vec::new();
    let mut key_types = std::collections::BTreeSet::new();
    for (index, (block, cert)) in blocks.iter().zip(certs).enumerate().take(MAX_CERTS) {
        let o = openssl(block);
        key_types.insert(o.key_algorithm.clone());
        compare(index, cert, &o, now, &mut mismatches);
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches between tlsnet inspect and openssl x509 (first 40):\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The bundle exercises both key families.
    assert!(
        key_types.contains("rsaEncryption") && key_types.contains("id-ecPublicKey"),
        "expected RSA and EC keys in the bundle, saw {key_types:?}"
    );
}

#[test]
fn rfc2253_names_are_split_in_certificate_order() {
    assert_eq!(
        parse_rfc2253(r"CN=a\, b+UID=x,O=Org\2C Inc.,C=US"),
        vec![
            ("C".to_owned(), "US".to_owned()),
            ("O".to_owned(), "Org, Inc.".to_owned()),
            ("UID".to_owned(), "x".to_owned()),
            ("CN".to_owned(), "a, b".to_owned()),
        ]
    );
    assert_eq!(normalize_hex("00:ab:01"), "AB01");
}
