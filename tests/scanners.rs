//! TLS scanners against the real `tlsnet serve`: sslyze's check of Mozilla's "modern"
//! configuration (https://ssl-config.mozilla.org/) must pass on the default server; nmap's
//! `ssl-enum-ciphers` must grade it A; testssl.sh must find nothing of severity MEDIUM or above
//! but the findings listed in [`TESTSSL_ACCEPTED`], each with its reason.
//!
//! What sslyze's modern check requires (sslyze 6, Mozilla profile 5.7): TLS 1.3 only; only the
//! TLS 1.3 suites AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305; key exchange groups only
//! X25519, P-256 and P-384 (at least 256 bits); an ECDSA P-256 or P-384 certificate signed with
//! ECDSA; a leaf certificate whose whole lifespan is at most 90 days; a certificate that
//! validates against at least one trust store (ours is the development CA, given to sslyze with
//! `--certinfo_ca_file`); no compression, Heartbleed, CCS injection, ROBOT or insecure
//! renegotiation; TLS_FALLBACK_SCSV and Extended Master Secret support (sslyze counts a TLS
//! 1.3-only server as having both).
//!
//! The default server requires client certificates, so sslyze is given the development client
//! certificate with `--cert` and `--key`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::process::Command;

/// sslyze's whole scan of one server (it takes about a second on loopback).
const SCAN_LIMIT: Duration = Duration::from_secs(150);

/// Runs `sslyze --mozilla_config=modern` against `addr`, trusting the development CA in `pki`
/// and, if `client_cert`, presenting its client certificate; writes the JSON result to
/// `json`. Returns the ended process.
async fn sslyze_modern(
    addr: &str,
    pki: &Path,
    client_cert: bool,
    json: &Path,
) -> (Proc, std::process::ExitStatus) {
    let mut command = Command::new("sslyze");
    command.arg("--mozilla_config=modern");
    if client_cert {
        command
            .arg("--cert")
            .arg(pki.join("client.pem"))
            .arg("--key")
            .arg(pki.join("client-key.pem"));
    }
    command
        .arg("--certinfo_ca_file")
        .arg(pki.join("ca.pem"))
        .args(["--sni", "localhost"])
        .arg("--json_out")
        .arg(json)
        .arg(addr)
        // sslyze is Python: no bytecode files in the venv from test runs, plain output.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_COLOR", "1");
    let mut scan = Proc::spawn("sslyze", command);
    let status = scan.finish(SCAN_LIMIT).await;
    (scan, status)
}

/// The one server result in sslyze's JSON output.
fn server_result(json: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(json).expect("sslyze JSON output");
    let mut doc: serde_json::Value = serde_json::from_str(&text).expect("sslyze JSON");
    let results = doc["server_scan_results"]
        .as_array_mut()
        .expect("server_scan_results");
    assert_eq!(results.len(), 1, "{text}");
    results.remove(0)
}

/// The compliance verdict lines sslyze prints for the server.
fn verdict_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .skip_while(|l| !l.contains("COMPLIANCE AGAINST"))
        .filter(|l| l.contains("127.0.0.1:") || l.trim_start().starts_with("* "))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn sslyze_mozilla_modern_passes_on_the_default_server() {
    require("sslyze");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        // No --cert: the server makes its development PKI and requires client certificates.
        let (mut server, addr) = start_tlsnet_serve(["--pki-dir".as_ref(), pki.as_os_str()]).await;
        assert!(
            server.stderr().contains("client_auth=\"required\""),
            "{}",
            server.describe()
        );

        let json = dir.path().join("sslyze.json");
        let (scan, status) = sslyze_modern(&addr, &pki, true, &json).await;
        let out = scan.stdout();
        let verdict = verdict_lines(&out);
        println!("sslyze verdict: {verdict:#?}");
        assert!(
            status.success() && out.contains(&format!("{addr}: OK - Compliant.")),
            "sslyze --mozilla_config=modern failed (exit {status}): {verdict:#?}\n{}\n{}",
            scan.describe(),
            server.describe()
        );

        // The scan really ran, with our client certificate, and trusted our CA.
        let result = server_result(&json);
        assert_eq!(result["scan_status"], "COMPLETED", "{result:#}");
        let connectivity = &result["connectivity_result"];
        assert_eq!(
            connectivity["highest_tls_version_supported"], "TLS_1_3",
            "{connectivity:#}"
        );
        let scans = &result["scan_result"];
        for version in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1", "tls_1_2"] {
            let suites = &scans[format!("{version}_cipher_suites")];
            assert_eq!(suites["status"], "COMPLETED", "{version}: {suites:#}");
            assert_eq!(
                suites["result"]["is_tls_version_supported"], false,
                "{version}: {suites:#}"
            );
        }
        let tls13 = &scans["tls_1_3_cipher_suites"]["result"];
        assert_eq!(tls13["is_tls_version_supported"], true, "{tls13:#}");
        let accepted = tls13["accepted_cipher_suites"]
            .as_array()
            .expect("accepted suites");
        assert!(!accepted.is_empty(), "{tls13:#}");
        let deployment = &scans["certificate_info"]["result"]["certificate_deployments"][0];
        let trusted_by_our_ca = deployment["path_validation_results"]
            .as_array()
            .expect("path validation results")
            .iter()
            .any(|r| {
                r["trust_store"]["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("Supplied CA file"))
                    && r["was_validation_successful"] == true
            });
        assert!(
            trusted_by_our_ca,
            "the development CA did not validate the server certificate"
        );

        // The server saw sslyze's handshakes with the development client certificate.
        let log = server.stderr();
        assert!(
            log.contains("client_cn=\"tlsnet-dev-client\""),
            "{}",
            server.describe()
        );

        // Without a client certificate, sslyze finds that the server requires one.
        let json = dir.path().join("sslyze-no-cert.json");
        let (scan, _status) = sslyze_modern(&addr, &pki, false, &json).await;
        let connectivity = server_result(&json)["connectivity_result"].clone();
        assert_eq!(
            connectivity["client_auth_requirement"],
            "REQUIRED",
            "{connectivity:#}\n{}",
            scan.describe()
        );
        server.kill().await;
    })
    .await;
}

/// The same check must fail a server that also accepts TLS 1.2: it is not a check that
/// passes whatever the server does.
#[tokio::test]
async fn sslyze_mozilla_modern_fails_a_server_that_allows_tls12() {
    require("sslyze");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let (mut server, addr) =
            start_tlsnet_serve(["--pki-dir".as_ref(), pki.as_os_str(), "--tls12".as_ref()]).await;

        let json = dir.path().join("sslyze.json");
        let (scan, status) = sslyze_modern(&addr, &pki, true, &json).await;
        let out = scan.stdout();
        let verdict = verdict_lines(&out);
        println!("sslyze verdict: {verdict:#?}");
        assert!(!status.success(), "{}", scan.describe());
        assert!(
            out.contains(&format!("{addr}: FAILED - Not compliant.")),
            "{}",
            scan.describe()
        );
        assert!(
            verdict
                .iter()
                .any(|l| l.starts_with("* tls_versions:") && l.contains("TLSv1.2")),
            "{verdict:#?}\n{}",
            scan.describe()
        );
        let result = server_result(&json);
        let tls12 = &result["scan_result"]["tls_1_2_cipher_suites"]["result"];
        assert_eq!(tls12["is_tls_version_supported"], true, "{tls12:#}");
        server.kill().await;
    })
    .await;
}

/// testssl.sh findings of severity MEDIUM or above that we accept, with the reason.
const TESTSSL_ACCEPTED: &[(&str, &str)] = &[(
    "cert_revocation",
    "a private CA has no public CRL or OCSP URL to put in its certificates: tlsnet's CA \
     distributes its CRL as a file, checked with `serve --crl` / `connect --crl`",
)];

#[tokio::test]
async fn nmap_ssl_enum_ciphers_grades_the_default_server_a() {
    require("nmap");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let (mut server, addr) = start_tlsnet_serve(["--pki-dir".as_ref(), pki.as_os_str()]).await;
        let port = addr.rsplit_once(':').unwrap().1.to_owned();
        let mut command = Command::new("nmap");
        command.args([
            "-Pn",
            "-n",
            "-p",
            &port,
            "--script",
            "ssl-enum-ciphers",
            "127.0.0.1",
        ]);
        let mut scan = Proc::spawn("nmap", command);
        let status = scan.finish(Duration::from_secs(120)).await;
        let out = scan.stdout();
        println!("{out}");
        assert!(status.success(), "{}", scan.describe());
        assert!(
            out.contains("ssl-enum-ciphers"),
            "the script ran: {}",
            scan.describe()
        );
        assert!(
            out.contains("least strength: A"),
            "grade A: {}",
            scan.describe()
        );
        assert!(out.contains("TLSv1.3:"), "{out}");
        for old in ["SSLv3:", "TLSv1.0:", "TLSv1.1:", "TLSv1.2:"] {
            assert!(!out.contains(old), "{old} must not be offered: {out}");
        }
        for line in out.lines().filter(|l| l.contains("TLS_AKE_WITH_")) {
            assert!(
                line.trim_end().ends_with("- A"),
                "every suite graded A: {line}"
            );
        }
        server.kill().await;
    })
    .await;
}

#[tokio::test]
async fn testssl_finds_nothing_medium_or_above_on_the_default_server() {
    require("testssl");
    // testssl.sh runs a few hundred handshakes: give it longer than the other peers.
    tokio::time::timeout(Duration::from_secs(600), async {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let (mut server, addr) = start_tlsnet_serve(["--pki-dir".as_ref(), pki.as_os_str()]).await;
        let json = dir.path().join("testssl.json");
        let mut command = Command::new("testssl");
        command
            .args([
                "--quiet",
                "--color",
                "0",
                "--warnings",
                "off",
                "--severity",
                "MEDIUM",
            ])
            .arg("--add-ca")
            .arg(pki.join("ca.pem"))
            .arg("--jsonfile")
            .arg(&json)
            .arg(&addr)
            .current_dir(dir.path());
        let mut scan = Proc::spawn("testssl", command);
        // testssl's exit code counts findings; the JSON file is the verdict.
        let _ = scan.finish(Duration::from_secs(540)).await;
        let text = std::fs::read_to_string(&json)
            .unwrap_or_else(|e| panic!("no testssl JSON ({e}): {}", scan.describe()));
        let findings: Vec<serde_json::Value> = serde_json::from_str(&text).expect("testssl JSON");
        assert!(
            findings.iter().all(|f| f["id"] != "scanProblem"),
            "testssl could not scan: {text}"
        );
        let serious: Vec<String> = findings
            .iter()
            .filter(|f| matches!(f["severity"].as_str(), Some("MEDIUM" | "HIGH" | "CRITICAL")))
            .map(|f| {
                let field = |k: &str| f[k].as_str().unwrap_or("?").to_owned();
                format!(
                    "{} {}: {}",
                    field("severity"),
                    field("id"),
                    field("finding")
                )
            })
            .collect();
        println!("testssl findings of severity MEDIUM or above: {serious:#?}");
        let unexpected: Vec<&String> = serious
            .iter()
            .filter(|f| {
                !TESTSSL_ACCEPTED
                    .iter()
                    .any(|(id, _)| f.contains(&format!(" {id}:")))
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "testssl findings: {unexpected:#?}\n{}",
            scan.describe()
        );
        server.kill().await;
    })
    .await
    .expect("testssl finished within 10 minutes");
}
