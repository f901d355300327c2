//! The human-readable form of an inspection, as `tlsnet inspect` prints it.

use std::fmt::Write;

use crate::inspect::file::FileInspection;
use crate::inspect::remote::RemoteInspection;
use crate::x509::CertSummary;

/// Column where values start.
const WIDTH: usize = 18;

fn line(out: &mut String, indent: &str, label: &str, value: impl std::fmt::Display) {
    let label = format!("{label}:");
    let _ = writeln!(out, "{indent}{label:<width$}{value}", width = WIDTH);
}

/// A file's certificates, one block each.
pub fn file(inspection: &FileInspection) -> String {
    let mut out = String::new();
    let n = inspection.certificates.len();
    line(
        &mut out,
        "",
        "file",
        format!(
            "{} ({}, {n} certificate{})",
            inspection.path.display(),
            inspection.format,
            if n == 1 { "" } else { "s" }
        ),
    );
    if let Some(name) = &inspection.friendly_name {
        line(&mut out, "", "friendly name", name);
    }
    if let Some(key) = &inspection.private_key {
        let belongs = if key.matches_first_certificate {
            "belongs to certificate 0"
        } else {
            "does NOT belong to certificate 0"
        };
        line(
            &mut out,
            "",
            "private key",
            format!("{}, {belongs}", key.encoding),
        );
    }
    for (i, cert) in inspection.certificates.iter().enumerate() {
        out.push('\n');
        let role = if cert.self_issued {
            "self-signed"
        } else if cert.is_ca {
            "CA"
        } else {
            "end entity"
        };
        certificate(&mut out, &format!("certificate {i} of {n} ({role})"), cert);
    }
    out
}

/// A server's handshake, verdict and chain.
pub fn remote(inspection: &RemoteInspection) -> String {
    let mut out = String::new();
    let sni = match &inspection.report {
        Some(r) => r.sni.clone(),
        None => None,
    };
    let server = match sni {
        Some(sni) => format!("{} (SNI: {sni})", inspection.target),
        None => format!("{} (no SNI)", inspection.target),
    };
    line(&mut out, "", "server", server);
    if let Some(proto) = inspection.starttls {
        line(&mut out, "", "STARTTLS", proto);
    }
    match &inspection.report {
        Some(report) => {
            let mut protocol = report.protocol.clone();
            if protocol == "TLSv1.2" {
                protocol.push_str(" (tlsnet connect needs --tls12)");
            }
            line(&mut out, "", "protocol", protocol);
            line(&mut out, "", "cipher suite", &report.cipher_suite);
            line(&mut out, "", "key exchange", report.key_exchange_label());
            line(
                &mut out,
                "",
                "ALPN",
                report.alpn.as_deref().unwrap_or("none"),
            );
            line(
                &mut out,
                "",
                "handshake",
                format!("{:.1} ms", report.handshake_ms),
            );
        }
        None => {
            let why = inspection.handshake_error.as_deref().unwrap_or("unknown");
            line(
                &mut out,
                "",
                "handshake",
                format!("FAILED after the certificates: {why}"),
            );
        }
    }
    let v = &inspection.verdict;
    let verdict = if v.trusted {
        format!("trusted for '{}' ({})", v.name, v.checked_against)
    } else {
        format!(
            "NOT TRUSTED for '{}': {} ({})",
            v.name,
            v.problem.as_deref().unwrap_or("unknown problem"),
            v.checked_against
        )
    };
    line(&mut out, "", "verdict", verdict);
    let ca = &inspection.client_auth;
    let client = if !ca.requested {
        "not requested".to_owned()
    } else {
        let mut text = "requested".to_owned();
        if !ca.acceptable_cas.is_empty() {
            let _ = write!(text, "; acceptable CAs: {}", ca.acceptable_cas.join(" | "));
        }
        match &ca.sent {
            Some(subject) => {
                let _ = write!(text, "; sent {subject}");
            }
            None => text.push_str("; sent none (--cert/--key send one)"),
        }
        if let Some(refused) = &ca.refused {
            let _ = write!(text, "; REFUSED: {refused}");
        }
        text
    };
    line(&mut out, "", "client cert", client);
    let n = inspection.certificates.len();
    for (i, cert) in inspection.certificates.iter().enumerate() {
        out.push('\n');
        let role = if i == 0 {
            "leaf"
        } else if cert.self_issued {
            "root, self-signed"
        } else {
            "intermediate"
        };
        certificate(&mut out, &format!("certificate {i} of {n} ({role})"), cert);
    }
    out
}

/// Validity in words: `89 days left`, `EXPIRED 3 days ago`, `NOT YET VALID`.
pub fn validity(cert: &CertSummary) -> String {
    if cert.not_yet_valid {
        "NOT YET VALID".to_owned()
    } else if cert.expired {
        // `days_left` is floored: -1 means less than a whole day ago.
        match -cert.days_left - 1 {
            days if days <= 0 => "EXPIRED less than a day ago".to_owned(),
            1 => "EXPIRED 1 day ago".to_owned(),
            days => format!("EXPIRED {days} days ago"),
        }
    } else {
        let days = cert.days_left;
        format!("{days} day{} left", if days == 1 { "" } else { "s" })
    }
}

/// One certificate, every field that is present.
pub fn certificate(out: &mut String, title: &str, c: &CertSummary) {
    let _ = writeln!(out, "{title}");
    let i = "  ";
    line(out, i, "subject", &c.subject);
    line(out, i, "issuer", &c.issuer);
    line(out, i, "serial", &c.serial);
    line(out, i, "not before", &c.not_before);
    line(
        out,
        i,
        "not after",
        format!("{} ({})", c.not_after, validity(c)),
    );
    if !c.subject_alt_names.is_empty() {
        line(out, i, "names", c.subject_alt_names.join(", "));
    }
    line(out, i, "key", &c.key);
    line(out, i, "signature", &c.signature_algorithm);
    if !c.key_usage.is_empty() {
        line(out, i, "key usage", c.key_usage.join(", "));
    }
    if !c.extended_key_usage.is_empty() {
        line(out, i, "extended usage", c.extended_key_usage.join(", "));
    }
    if let Some(bc) = &c.basic_constraints {
        let mut text = if bc.ca { "CA" } else { "not a CA" }.to_owned();
        if let Some(n) = bc.path_len {
            let _ = write!(text, ", path length {n}");
        }
        if bc.critical {
            text.push_str(" (critical)");
        }
        line(out, i, "basic constr.", text);
    }
    if let Some(nc) = &c.name_constraints {
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        line(
            out,
            i,
            "name constr.",
            format!(
                "permitted {}; excluded {}",
                list(&nc.permitted),
                list(&nc.excluded)
            ),
        );
    }
    if let Some(ski) = &c.subject_key_id {
        line(out, i, "subject key id", ski);
    }
    if let Some(aki) = &c.authority_key_id {
        line(out, i, "authority key id", aki);
    }
    for url in &c.crl_urls {
        line(out, i, "CRL", url);
    }
    for url in &c.ocsp_urls {
        line(out, i, "OCSP", url);
    }
    for url in &c.ca_issuers_urls {
        line(out, i, "CA issuers", url);
    }
    line(out, i, "SHA-256", fingerprint(&c.sha256));
    line(out, i, "SHA-1", fingerprint(&c.sha1));
    line(out, i, "pin", &c.spki_pin);
}

/// `AB:CD:...`, the way browsers and OpenSSL show fingerprints.
fn fingerprint(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_validity() {
        let mut c = CertSummary {
            days_left: 5,
            ..CertSummary::default()
        };
        assert_eq!(validity(&c), "5 days left");
        c.days_left = -1;
        c.expired = true;
        assert_eq!(validity(&c), "EXPIRED less than a day ago");
        c.days_left = -4;
        assert_eq!(validity(&c), "EXPIRED 3 days ago");
        c.not_yet_valid = true;
        c.expired = false;
        assert_eq!(validity(&c), "NOT YET VALID");
        assert_eq!(fingerprint("0aff"), "0A:FF");
    }
}
