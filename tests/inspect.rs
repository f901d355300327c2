//! `tlsnet inspect`, end to end with the built binary: files (PEM chain, DER, PKCS#12 with a
//! password file, expired and not-yet-valid certificates, `--check-expiry` exit codes) and
//! servers (`openssl s_server` presenting root → intermediate → leaf: trusted with `--ca`,
//! untrusted without, an expired leaf, a server that requires a client certificate; and a
//! Python STARTTLS server for SMTP, IMAP and POP3).
//!
//! Every certificate is made at test time; every server listens on 127.0.0.1 and is killed
//! when its test ends; every wait is bounded.

mod common;

use std::process::{Command, Stdio};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Peers

/// `openssl s_server` on 127.0.0.1, presenting `cert` + `chain` (an intermediate); killed
/// when dropped. Its stdin stays open (s_server relays stdin to the client).
fn openssl_server(pki: &ChainPki, cert: &str, key: &str, extra: &[&str]) -> ServeProcess {
    require("openssl");
    let port = free_port();
    let mut command = Command::new("openssl");
    command
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-cert", &pki.path(cert), "-key", &pki.path(key)])
        .args(["-cert_chain", &pki.path("int.pem")])
        .args(["-alpn", "h2,http/1.1"])
        .args(extra)
        .stdin(Stdio::piped());
    let mut server = ServeProcess::spawn("openssl s_server", pki.dir.path(), port, command);
    server.wait_until("ACCEPT", RUN_LIMIT, |out, err| {
        out.contains("ACCEPT") || err.contains("ACCEPT")
    });
    server
}

/// The port the STARTTLS peer prints on its first line.
fn first_line_port(out: &str) -> Option<u16> {
    out.lines().next().and_then(|l| l.trim().parse().ok())
}

/// The Python STARTTLS peer, once it listens; killed when dropped.
fn starttls_server(pki: &ChainPki, protocol: &str, extra: &[&str]) -> ServeProcess {
    require("python3");
    let mut command = Command::new("python3");
    command
        .arg(peer_script("inspect_smtp_starttls.py"))
        .args([
            "--cert",
            &pki.path("chain.pem"),
            "--key",
            &pki.path("leaf.key"),
        ])
        .args([
            "--protocol",
            protocol,
            "--lifetime",
            "60",
            "--io-timeout",
            "10",
        ])
        .args(extra)
        .stdin(Stdio::null());
    let name = format!("STARTTLS {protocol} peer");
    let mut peer = ServeProcess::spawn(&name, pki.dir.path(), 0, command);
    peer.wait_until("its port", RUN_LIMIT, |out, _| {
        first_line_port(out).is_some()
    });
    peer.port = first_line_port(&peer.stdout_text()).unwrap();
    peer
}

/// Waits for the STARTTLS peer to finish (it serves one connection) and returns its report
/// lines.
fn starttls_report(mut peer: ServeProcess) -> Vec<String> {
    peer.wait_exit(RUN_LIMIT);
    peer.stdout_text()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

fn subject_cn(cert: &Value) -> String {
    cert["subject_fields"]
        .as_array()
        .and_then(|f| f.iter().find(|a| a["attribute"] == "CN"))
        .and_then(|a| a["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn cns(json: &Value) -> Vec<String> {
    json["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(subject_cn)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Files

#[test]
fn pem_chain_file() {
    let pki = ChainPki::new();
    let run = tlsnet(&["inspect", &pki.path("full.pem"), "--json"]).ok();
    let json = run.json();
    assert_eq!(json["format"], "pem");
    assert_eq!(
        cns(&json),
        [
            "localhost",
            "inspect test intermediate",
            "inspect test root"
        ]
    );
    let certs = json["certificates"].as_array().unwrap();
    for (cert, der) in certs
        .iter()
        .zip([&pki.leaf_der, &pki.int_der, &pki.root_der])
    {
        assert_eq!(cert["sha256"], sha256_hex(der));
    }
    let leaf = &certs[0];
    assert_eq!(
        leaf["subject_alt_names"],
        serde_json::json!(["DNS:localhost", "IP:127.0.0.1"])
    );
    assert_eq!(
        leaf["extended_key_usage"],
        serde_json::json!(["serverAuth"])
    );
    assert_eq!(leaf["key"], "ECDSA P-256");
    assert_eq!(leaf["expired"], false);
    assert_eq!(leaf["authority_key_id"], certs[1]["subject_key_id"]);
    assert_eq!(certs[1]["basic_constraints"]["path_len"], 0);
    assert_eq!(certs[2]["self_issued"], true);
    assert!(leaf["spki_pin"].as_str().unwrap().starts_with("sha256/"));

    let text = tlsnet(&["inspect", &pki.path("full.pem")]).ok().stdout;
    assert!(text.contains("(PEM, 3 certificates)"), "{text}");
    assert!(text.contains("certificate 0 of 3 (end entity)"), "{text}");
    assert!(text.contains("certificate 2 of 3 (self-signed)"), "{text}");
    assert!(text.contains("days left"), "{text}");
    assert!(!text.contains("EXPIRED"), "{text}");
}

#[test]
fn der_file() {
    let pki = ChainPki::new();
    let json = tlsnet(&["inspect", &pki.path("leaf.der"), "--json"])
        .ok()
        .json();
    assert_eq!(json["format"], "der");
    assert_eq!(cns(&json), ["localhost"]);
    assert_eq!(json["certificates"][0]["sha256"], sha256_hex(&pki.leaf_der));

    // --pem turns it back into the PEM that rcgen wrote.
    let pem = tlsnet(&["inspect", &pki.path("leaf.der"), "--pem"])
        .ok()
        .stdout;
    let back: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back, std::slice::from_ref(&pki.leaf_der));
}

#[test]
fn pkcs12_written_by_tlsnet_opens_with_a_password_file() {
    let pki = ChainPki::new();
    let chain = [pki.leaf_der.clone(), pki.int_der.clone()];
    let p12 =
        tlsnet::pkcs12::write(&chain, &pki.leaf_key_der, "correct horse", "web server").unwrap();
    std::fs::write(pki.path("id.p12"), &p12).unwrap();
    std::fs::write(pki.path("pw"), "correct horse\n").unwrap();
    std::fs::write(pki.path("wrong-pw"), "battery staple\n").unwrap();

    let json = tlsnet(&[
        "inspect",
        &pki.path("id.p12"),
        "--password-file",
        &pki.path("pw"),
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(json["format"], "pkcs12");
    assert_eq!(json["friendly_name"], "web server");
    assert_eq!(json["private_key"]["matches_first_certificate"], true);
    assert_eq!(cns(&json), ["localhost", "inspect test intermediate"]);

    let text = tlsnet(&[
        "inspect",
        &pki.path("id.p12"),
        "--password-file",
        &pki.path("pw"),
    ])
    .ok()
    .stdout;
    assert!(text.contains("(PKCS#12, 2 certificates)"), "{text}");
    assert!(text.contains("belongs to certificate 0"), "{text}");

    let wrong = tlsnet(&[
        "inspect",
        &pki.path("id.p12"),
        "--password-file",
        &pki.path("wrong-pw"),
    ]);
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("wrong password"), "{}", wrong.stderr);

    let none = tlsnet(&["inspect", &pki.path("id.p12")]);
    assert_eq!(none.code, 1, "{}", none.stderr);
    assert!(none.stderr.contains("--password-file"), "{}", none.stderr);
}

#[test]
fn pkcs12_written_by_tlsnet_opens_with_openssl() {
    require("openssl");
    let pki = ChainPki::new();
    let chain = [pki.leaf_der.clone(), pki.int_der.clone()];
    let p12 = tlsnet::pkcs12::write(&chain, &pki.leaf_key_der, "s3cret", "my key").unwrap();
    let file = pki.path("id.p12");
    std::fs::write(&file, &p12).unwrap();

    // OpenSSL 3 with its default settings (no -legacy): modern algorithms only.
    let info = Command::new("openssl")
        .args([
            "pkcs12",
            "-info",
            "-in",
            &file,
            "-passin",
            "pass:s3cret",
            "-noout",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&info.stdout),
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(
        info.status.success(),
        "openssl pkcs12 -info failed:\n{text}"
    );
    assert!(text.contains("MAC: sha256"), "{text}");
    assert!(text.contains("AES-256-CBC"), "{text}");
    assert!(!text.contains("RC2") && !text.contains("3DES"), "{text}");

    // OpenSSL finds the same leaf certificate and the key.
    let certs = Command::new("openssl")
        .args([
            "pkcs12",
            "-in",
            &file,
            "-passin",
            "pass:s3cret",
            "-nokeys",
            "-clcerts",
        ])
        .output()
        .unwrap();
    assert!(certs.status.success());
    let leaf: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&certs.stdout)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(leaf, std::slice::from_ref(&pki.leaf_der));
    let key = Command::new("openssl")
        .args([
            "pkcs12",
            "-in",
            &file,
            "-passin",
            "pass:s3cret",
            "-nocerts",
            "-nodes",
        ])
        .output()
        .unwrap();
    assert!(key.status.success());
    assert!(String::from_utf8_lossy(&key.stdout).contains("BEGIN PRIVATE KEY"));

    let wrong = Command::new("openssl")
        .args([
            "pkcs12",
            "-info",
            "-in",
            &file,
            "-passin",
            "pass:wrong",
            "-noout",
        ])
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "openssl accepted a wrong password");
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("Mac verify error"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[test]
fn pkcs12_written_by_openssl_is_read() {
    require("openssl");
    let pki = ChainPki::new();
    std::fs::write(pki.path("pw"), "pass phrase\n").unwrap();
    // OpenSSL 3's defaults (PBES2/AES-256) and the older 3DES + SHA-1 MAC form.
    for (name, extra) in [
        ("modern.p12", vec![]),
        (
            "3des.p12",
            vec![
                "-certpbe",
                "PBE-SHA1-3DES",
                "-keypbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
            ],
        ),
    ] {
        let out = Command::new("openssl")
            .args(["pkcs12", "-export", "-in", &pki.path("leaf.pem"), "-inkey"])
            .args([&pki.path("leaf.key"), "-certfile", &pki.path("int.pem")])
            .args([
                "-name",
                "from openssl",
                "-passout",
                "pass:pass phrase",
                "-out",
            ])
            .arg(pki.path(name))
            .args(&extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl pkcs12 -export {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = tlsnet(&[
            "inspect",
            &pki.path(name),
            "--password-file",
            &pki.path("pw"),
            "--json",
        ])
        .ok()
        .json();
        assert_eq!(
            cns(&json),
            ["localhost", "inspect test intermediate"],
            "{name}"
        );
        assert_eq!(json["friendly_name"], "from openssl", "{name}");
        assert_eq!(
            json["private_key"]["matches_first_certificate"], true,
            "{name}"
        );
    }
}

#[test]
fn expired_and_not_yet_valid_are_marked() {
    let pki = ChainPki::new();
    let text = tlsnet(&["inspect", &pki.path("expired.pem")]).ok().stdout;
    assert!(text.contains("EXPIRED"), "{text}");
    let json = tlsnet(&["inspect", &pki.path("expired.pem"), "--json"])
        .ok()
        .json();
    assert_eq!(json["certificates"][0]["expired"], true);
    assert!(json["certificates"][0]["days_left"].as_i64().unwrap() < 0);

    let text = tlsnet(&["inspect", &pki.path("future.pem")]).ok().stdout;
    assert!(text.contains("NOT YET VALID"), "{text}");
    assert!(!text.contains("EXPIRED"), "{text}");
}

#[test]
fn check_expiry_exit_codes() {
    let pki = ChainPki::new();
    let leaf = pki.path("leaf.pem"); // valid for 10 more days
                                     // Expires within 30 days: exit 1, with the certificate named.
    let run = tlsnet(&["inspect", &leaf, "--check-expiry", "30d"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("within 30d"), "{}", run.stderr);
    assert!(run.stderr.contains("CN=localhost"), "{}", run.stderr);
    assert!(
        run.stdout.contains("certificate 0 of 1"),
        "details are still printed"
    );
    // Not within 5 days: exit 0.
    let run = tlsnet(&["inspect", &leaf, "--check-expiry", "5d"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // A chain is as short-lived as its shortest certificate.
    let run = tlsnet(&["inspect", &pki.path("full.pem"), "--check-expiry", "240h"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let run = tlsnet(&["inspect", &pki.path("full.pem"), "--check-expiry", "9d"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Already expired: exit 1 even for a zero period.
    let run = tlsnet(&[
        "inspect",
        &pki.path("expired.pem"),
        "--check-expiry",
        "0s",
        "--json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("EXPIRED"), "{}", run.stderr);
    // A bad period is a usage error.
    let run = tlsnet(&["inspect", &leaf, "--check-expiry", "soon"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn usage_errors() {
    let pki = ChainPki::new();
    let run = tlsnet(&["inspect", &pki.path("no-such-file.pem")]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no such file"), "{}", run.stderr);
    let run = tlsnet(&[
        "inspect",
        &pki.path("leaf.pem"),
        "--ca",
        &pki.path("root.pem"),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let junk = pki.path("junk.bin");
    std::fs::write(&junk, b"\x00\x01 not a certificate").unwrap();
    let run = tlsnet(&["inspect", &junk]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("neither PEM, DER nor PKCS#12"),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Servers

#[test]
fn remote_trusted_with_ca() {
    let pki = ChainPki::new();
    let server = openssl_server(&pki, "leaf.pem", "leaf.key", &[]);
    let addr = server.addr();
    let ca = pki.path("root.pem");
    let args = [
        "inspect",
        &addr,
        "--ca",
        &ca,
        "--servername",
        "localhost",
        "--alpn",
        "h2",
    ];
    let json = tlsnet(&[&args[..], &["--json"]].concat()).ok().json();
    assert_eq!(json["verdict"]["trusted"], true, "{json:#}");
    assert_eq!(json["verdict"]["name"], "localhost");
    assert_eq!(json["server_name"], "localhost");
    assert_eq!(cns(&json), ["localhost", "inspect test intermediate"]);
    assert_eq!(json["certificates"][0]["sha256"], sha256_hex(&pki.leaf_der));
    assert_eq!(json["certificates"][1]["sha256"], sha256_hex(&pki.int_der));
    let hs = &json["handshake"];
    assert_eq!(hs["protocol"], "TLSv1.3");
    assert!(
        hs["cipher_suite"].as_str().unwrap().starts_with("TLS13_"),
        "{hs}"
    );
    assert!(!hs["key_exchange"].as_str().unwrap().is_empty(), "{hs}");
    assert!(hs["post_quantum"].is_boolean(), "{hs}");
    assert_eq!(hs["alpn"], "h2");
    assert_eq!(hs["sni"], "localhost");
    assert!(
        hs.get("peer_chain").is_none(),
        "the chain is under certificates only"
    );
    assert_eq!(json["client_auth"]["requested"], false);
    assert!(json["handshake_error"].is_null());

    let text = tlsnet(&args).ok().stdout;
    assert!(text.contains("trusted for 'localhost'"), "{text}");
    assert!(text.contains("protocol:         TLSv1.3"), "{text}");
    assert!(text.contains("ALPN:             h2"), "{text}");
    assert!(text.contains("certificate 1 of 2 (intermediate)"), "{text}");

    // --pem: the presented chain, as Python's ssl.get_server_certificate gives the leaf.
    let pem = tlsnet(&["inspect", &addr, "--pem"]).ok().stdout;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chain, [pki.leaf_der.clone(), pki.int_der.clone()]);
}

#[test]
fn remote_untrusted_still_shows_the_chain() {
    let pki = ChainPki::new();
    let server = openssl_server(&pki, "leaf.pem", "leaf.key", &[]);
    let addr = server.addr();
    // The system trust store does not know the test root.
    let run = tlsnet(&["inspect", &addr, "--json"]).ok();
    let json = run.json();
    assert_eq!(json["verdict"]["trusted"], false);
    assert_eq!(
        json["verdict"]["problem_label"], "unknown_issuer",
        "{json:#}"
    );
    assert_eq!(json["verdict"]["checked_against"], "system trust store");
    assert_eq!(cns(&json), ["localhost", "inspect test intermediate"]);
    assert_eq!(json["handshake"]["protocol"], "TLSv1.3");
    // Neither does an unrelated CA.
    let other = pki.path("other-root.pem");
    let run = tlsnet(&["inspect", &addr, "--ca", &other]).ok();
    assert!(run.stdout.contains("NOT TRUSTED"), "{}", run.stdout);
    assert!(run.stdout.contains("unknown CA"), "{}", run.stdout);
    assert!(
        run.stdout.contains("certificate 0 of 2 (leaf)"),
        "{}",
        run.stdout
    );
    // A name the certificate does not cover.
    let json = tlsnet(&[
        "inspect",
        &addr,
        "--ca",
        &pki.path("root.pem"),
        "--servername",
        "example.com",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(json["verdict"]["trusted"], false);
    assert_eq!(
        json["verdict"]["problem_label"], "name_mismatch",
        "{json:#}"
    );
}

#[test]
fn remote_expired_leaf() {
    let pki = ChainPki::new();
    let server = openssl_server(&pki, "expired.pem", "expired.key", &[]);
    let addr = server.addr();
    let ca = pki.path("root.pem");
    let json = tlsnet(&["inspect", &addr, "--ca", &ca, "--json"])
        .ok()
        .json();
    assert_eq!(json["verdict"]["trusted"], false);
    assert_eq!(
        json["verdict"]["problem_label"], "certificate_expired",
        "{json:#}"
    );
    assert_eq!(json["certificates"][0]["expired"], true);
    let run = tlsnet(&["inspect", &addr, "--ca", &ca, "--check-expiry", "1d"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.contains("EXPIRED"), "{}", run.stdout);
    assert!(run.stdout.contains("NOT TRUSTED"), "{}", run.stdout);
    assert!(run.stderr.contains("within 1d"), "{}", run.stderr);
}

#[test]
fn remote_requiring_a_client_certificate() {
    let pki = ChainPki::new();
    let client_ca = pki.path("client-ca.pem");
    let server = openssl_server(
        &pki,
        "leaf.pem",
        "leaf.key",
        &[
            "-Verify",
            "1",
            "-verify_return_error",
            "-CAfile",
            &client_ca,
        ],
    );
    let addr = server.addr();
    let ca = pki.path("root.pem");

    // Without a certificate: the chain is still shown, and the refusal is reported.
    let json = tlsnet(&["inspect", &addr, "--ca", &ca, "--json"])
        .ok()
        .json();
    assert_eq!(cns(&json), ["localhost", "inspect test intermediate"]);
    let auth = &json["client_auth"];
    assert_eq!(auth["requested"], true, "{json:#}");
    assert!(auth["sent"].is_null());
    let acceptable = auth["acceptable_cas"].to_string();
    assert!(acceptable.contains("CN=inspect client CA"), "{acceptable}");
    let refused = auth["refused"].as_str().unwrap_or_default();
    assert!(
        refused.contains("requires a client certificate"),
        "{json:#}"
    );

    // With --cert/--key: sent and accepted.
    let json = tlsnet(&[
        "inspect",
        &addr,
        "--ca",
        &ca,
        "--cert",
        &pki.path("client.pem"),
        "--key",
        &pki.path("client.key"),
        "--json",
    ])
    .ok()
    .json();
    let auth = &json["client_auth"];
    assert_eq!(auth["requested"], true);
    assert!(
        auth["sent"]
            .as_str()
            .unwrap_or_default()
            .contains("CN=inspect client"),
        "{auth}"
    );
    assert!(
        auth["refused"].is_null(),
        "{auth}; server log:\n{}",
        server.describe()
    );
    assert_eq!(json["verdict"]["trusted"], true, "{json:#}");
    let text = tlsnet(&[
        "inspect",
        &addr,
        "--ca",
        &ca,
        "--cert",
        &pki.path("client.pem"),
        "--key",
        &pki.path("client.key"),
    ])
    .ok()
    .stdout;
    assert!(text.contains("client cert:      requested"), "{text}");
    assert!(!text.contains("REFUSED"), "{text}");

    // A certificate from a CA the server does not trust: sent, and refused.
    let json = tlsnet(&[
        "inspect",
        &addr,
        "--ca",
        &ca,
        "--cert",
        &pki.path("leaf.pem"),
        "--key",
        &pki.path("leaf.key"),
        "--json",
    ])
    .ok()
    .json();
    let auth = &json["client_auth"];
    assert!(
        auth["sent"]
            .as_str()
            .unwrap_or_default()
            .contains("CN=localhost"),
        "{auth}"
    );
    let refused = auth["refused"].as_str().unwrap_or_default();
    assert!(refused.contains("does not trust"), "{auth}");
    assert_eq!(cns(&json), ["localhost", "inspect test intermediate"]);
}

fn starttls_case(protocol: &str) {
    let pki = ChainPki::new();
    let peer = starttls_server(&pki, protocol, &[]);
    let addr = format!("127.0.0.1:{}", peer.port);
    let ca = pki.path("root.pem");
    let json = tlsnet(&[
        "inspect",
        &addr,
        "--starttls",
        protocol,
        "--ca",
        &ca,
        "--servername",
        "localhost",
        "--timeout",
        "10s",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(json["starttls"], protocol);
    assert_eq!(json["verdict"]["trusted"], true, "{json:#}");
    assert_eq!(cns(&json), ["localhost", "inspect test intermediate"]);
    assert!(json["handshake"]["protocol"]
        .as_str()
        .unwrap()
        .starts_with("TLSv1."));
    // The peer saw a handshake and a close, and no application data.
    let report = starttls_report(peer);
    assert_eq!(report, ["tls ok, closed without data"], "{protocol}");
}

#[test]
fn remote_starttls_smtp() {
    starttls_case("smtp");
}

#[test]
fn remote_starttls_imap_and_pop3() {
    starttls_case("imap");
    starttls_case("pop3");
}

#[test]
fn remote_starttls_not_offered() {
    let pki = ChainPki::new();
    let peer = starttls_server(&pki, "smtp", &["--no-starttls"]);
    let addr = format!("127.0.0.1:{}", peer.port);
    let run = tlsnet(&["inspect", &addr, "--starttls", "smtp"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("does not offer STARTTLS"),
        "{}",
        run.stderr
    );
}
