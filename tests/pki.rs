//! The private CA, checked by independent verifiers: OpenSSL (`openssl verify`) and webpki (the
//! verifier inside rustls), for every key type, with and without an intermediate; revocation in
//! live handshakes, with the CRL changed under a running server.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use tlsnet::pki::{Constraints, InitOptions, KeyType, LeafSpec, PkiDir, Purpose};
use tlsnet::tls::{load_certs, ClientTlsOptions, Identity, ServerTlsOptions};

fn init(dir: &Path, key_type: KeyType, intermediate: Option<Constraints>) -> PkiDir {
    let pki = PkiDir::at(dir);
    pki.init(&InitOptions {
        name: format!("test {key_type} CA"),
        key_type,
        validity: Duration::from_secs(365 * 86400),
        intermediate,
    })
    .unwrap();
    pki
}

fn issue(pki: &PkiDir, purpose: Purpose, name: &str, key_type: KeyType) {
    let mut spec = LeafSpec::new(purpose, name);
    if purpose == Purpose::Server {
        spec.dns = vec!["localhost".into()];
        spec.ips = vec!["127.0.0.1".parse().unwrap()];
    }
    spec.key_type = key_type;
    pki.issue(name, &spec).unwrap();
}

/// `openssl verify -purpose P` with the root as the only trust anchor and the rest of the
/// file as untrusted intermediates.
fn openssl_verify(pki: &PkiDir, name: &str, purpose: &str) -> (bool, String) {
    let chain = load_certs(&pki.cert_path(name)).unwrap();
    let dir = pki.dir();
    let leaf = dir.join(format!("{name}.leaf.pem"));
    let rest = dir.join(format!("{name}.untrusted.pem"));
    let pem = |der: &[u8]| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    };
    std::fs::write(&leaf, pem(&chain[0])).unwrap();
    std::fs::write(&rest, chain[1..].iter().map(|c| pem(c)).collect::<String>()).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-purpose", purpose, "-CAfile"])
        .arg(pki.path("ca.pem"));
    if chain.len() > 1 {
        cmd.arg("-untrusted").arg(&rest);
    }
    let out = cmd.arg(&leaf).output().expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn webpki_server_ok(pki: &PkiDir, name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(load_certs(&pki.path("ca.pem")).unwrap().remove(0))
        .unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        tlsnet::tls::provider(),
    )
    .build()
    .unwrap();
    let chain = load_certs(&pki.cert_path(name)).unwrap();
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

fn webpki_client_ok(pki: &PkiDir, name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(load_certs(&pki.path("ca.pem")).unwrap().remove(0))
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        tlsnet::tls::provider(),
    )
    .build()
    .unwrap();
    let chain = load_certs(&pki.cert_path(name)).unwrap();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map(|_| ())
}

#[tokio::test]
async fn every_key_type_verifies_for_its_purpose_only_and_works_in_a_live_mtls_handshake() {
    require("openssl");
    for key_type in KeyType::ALL {
        for intermediate in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let pki = init(
                &tmp.path().join("pki"),
                key_type,
                intermediate.then(Constraints::default),
            );
            issue(&pki, Purpose::Server, "server", key_type);
            issue(&pki, Purpose::Client, "client", key_type);
            let label = format!("{key_type}, intermediate: {intermediate}");

            let (ok, out) = openssl_verify(&pki, "server", "sslserver");
            assert!(ok, "{label}: server cert as server: {out}");
            let (ok, out) = openssl_verify(&pki, "server", "sslclient");
            assert!(
                !ok,
                "{label}: server cert must not verify as a client: {out}"
            );
            let (ok, out) = openssl_verify(&pki, "client", "sslclient");
            assert!(ok, "{label}: client cert as client: {out}");
            let (ok, out) = openssl_verify(&pki, "client", "sslserver");
            assert!(
                !ok,
                "{label}: client cert must not verify as a server: {out}"
            );

            webpki_server_ok(&pki, "server")
                .unwrap_or_else(|e| panic!("{label}: webpki server: {e}"));
            webpki_client_ok(&pki, "client")
                .unwrap_or_else(|e| panic!("{label}: webpki client: {e}"));
            assert!(
                webpki_server_ok(&pki, "client").is_err(),
                "{label}: client cert as server"
            );
            assert!(
                webpki_client_ok(&pki, "server").is_err(),
                "{label}: server cert as client"
            );

            // A live mutual-TLS handshake with these keys.
            let identity =
                Identity::from_files(&pki.cert_path("server"), &pki.key_path("server")).unwrap();
            let roots = load_certs(&pki.path("ca.pem")).unwrap();
            let server = TestServer::start(
                ServerTlsOptions::new(identity).require_client_certs(roots.clone()),
            )
            .await;
            let client = ClientTlsOptions::with_roots(roots).with_identity(
                Identity::from_files(&pki.cert_path("client"), &pki.key_path("client")).unwrap(),
            );
            let (mut stream, report) = connect(&server.addr_string(), &client)
                .await
                .unwrap_or_else(|e| panic!("{label}: handshake: {e}"));
            assert_eq!(
                echo_round_trip(&mut stream, label.as_bytes())
                    .await
                    .unwrap(),
                label.as_bytes()
            );
            assert_eq!(
                report.peer_chain.len(),
                if intermediate { 2 } else { 1 },
                "{label}"
            );
        }
    }
}

#[test]
fn certificate_outside_the_intermediates_name_constraints_fails_openssl_verify() {
    require("openssl");
    let tmp = tempfile::tempdir().unwrap();
    let constraints = Constraints {
        permit_dns: vec!["example.internal".into()],
        permit_ips: vec![("10.0.0.0".parse().unwrap(), 8)],
    };
    let pki = init(
        &tmp.path().join("pki"),
        KeyType::EcdsaP256,
        Some(constraints),
    );
    let mut inside = LeafSpec::new(Purpose::Server, "web.example.internal");
    inside.dns = vec!["web.example.internal".into()];
    inside.ips = vec!["10.1.2.3".parse().unwrap()];
    pki.issue("inside", &inside).unwrap();
    let mut outside = LeafSpec::new(Purpose::Server, "www.example.com");
    outside.dns = vec!["www.example.com".into()];
    pki.issue("outside", &outside).unwrap();
    let mut outside_ip = LeafSpec::new(Purpose::Server, "web.example.internal");
    outside_ip.dns = vec!["web.example.internal".into()];
    outside_ip.ips = vec!["192.168.1.1".parse().unwrap()];
    pki.issue("outside-ip", &outside_ip).unwrap();

    let (ok, out) = openssl_verify(&pki, "inside", "sslserver");
    assert!(ok, "inside the constraints: {out}");
    for name in ["outside", "outside-ip"] {
        let (ok, out) = openssl_verify(&pki, name, "sslserver");
        assert!(!ok, "{name} must fail: {out}");
        assert!(
            out.contains("name constraint") || out.contains("permitted subtree"),
            "{name}: {out}"
        );
    }
}

#[test]
fn revoked_client_is_refused_by_a_running_server_after_the_crl_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = dir.to_str().unwrap();
    assert!(tlsnet(&["pki", "init", "--dir", d]).status.success());
    assert!(tlsnet(&[
        "pki",
        "issue",
        "server",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--dir",
        d
    ])
    .status
    .success());
    assert!(tlsnet(&["pki", "issue", "client", "alice", "--dir", d])
        .status
        .success());
    assert!(tlsnet(&["pki", "issue", "client", "bob", "--dir", d])
        .status
        .success());
    let p = |f: &str| format!("{d}/{f}");

    let server = ServeProcess::start(
        tmp.path(),
        &[
            "--cert",
            &p("localhost.pem"),
            "--key",
            &p("localhost-key.pem"),
            "--client-ca",
            &p("ca.pem"),
            "--crl",
            &p("crl.pem"),
            "--reload-interval",
            "200ms",
        ],
    );
    let addr = server.addr();
    let as_alice = [
        "--ca",
        &p("ca.pem"),
        "--cert",
        &p("alice.pem"),
        "--key",
        &p("alice-key.pem"),
        "-q",
    ];
    let alice = |input: &[u8]| {
        let mut args = vec![addr.as_str()];
        args.extend(as_alice.iter().map(|s| &s[..]));
        connect_cmd(&args, input)
    };
    let out = alice(b"before");
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "before");

    assert!(tlsnet(&[
        "pki",
        "revoke",
        "alice",
        "--reason",
        "keyCompromise",
        "--dir",
        d
    ])
    .status
    .success());
    // The server picks up the new CRL by itself.
    let started = Instant::now();
    loop {
        let out = alice(b"after");
        if !out.status.success() {
            let err = &out.stderr;
            assert!(
                err.contains("certificate_revoked") || err.contains("revoked"),
                "{err}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "revocation not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log_text = server.log_text();
    assert!(log_text.contains("reloaded TLS material"), "{log_text}");
    assert!(
        log_text.contains("client certificate has been revoked"),
        "{log_text}"
    );

    // Bob, not revoked, is still served.
    let out = connect_cmd(
        &[
            &addr,
            "--ca",
            &p("ca.pem"),
            "--cert",
            &p("bob.pem"),
            "--key",
            &p("bob-key.pem"),
            "-q",
        ],
        b"bob",
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "bob");

    // A broken CRL is refused; the old one stays in force.
    std::fs::write(p("crl.pem"), "not a CRL").unwrap();
    server.wait_for_log("reload refused");
    assert!(!alice(b"x").status.success(), "alice must stay revoked");
}

#[test]
fn revoked_server_is_refused_by_connect() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = dir.to_str().unwrap();
    assert!(tlsnet(&["pki", "init", "--dir", d]).status.success());
    assert!(tlsnet(&[
        "pki",
        "issue",
        "server",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--dir",
        d
    ])
    .status
    .success());
    let p = |f: &str| format!("{d}/{f}");
    let server = ServeProcess::start(
        tmp.path(),
        &[
            "--cert",
            &p("localhost.pem"),
            "--key",
            &p("localhost-key.pem"),
        ],
    );
    let addr = server.addr();
    let out = connect_cmd(
        &[&addr, "--ca", &p("ca.pem"), "--crl", &p("crl.pem"), "-q"],
        b"ok",
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(tlsnet(&["pki", "revoke", "localhost", "--dir", d])
        .status
        .success());
    let out = connect_cmd(
        &[&addr, "--ca", &p("ca.pem"), "--crl", &p("crl.pem"), "-q"],
        b"no",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = &out.stderr;
    assert!(err.contains("server certificate has been revoked"), "{err}");
}

#[test]
fn pki_list_and_renew_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("pki");
    let d = d.to_str().unwrap();
    assert!(tlsnet(&["pki", "init", "--dir", d, "--key", "ed25519"])
        .status
        .success());
    let out = tlsnet(&["pki", "init", "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("already holds a CA"));
    assert!(
        tlsnet(&["pki", "issue", "client", "carol", "--days", "30", "--dir", d])
            .status
            .success()
    );
    assert!(tlsnet(&["pki", "renew", "carol", "--dir", d])
        .status
        .success());
    let out = tlsnet(&["pki", "list", "--json", "--dir", d]);
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let states: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["revoked", "valid"]);
    assert_eq!(listed[1]["days"], 30);
    assert!(listed[1]["days_left"].as_i64().unwrap() >= 28);
    let out = tlsnet(&["pki", "issue", "client", "x", "--days", "0", "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn pkcs12_export_opens_with_openssl_and_the_password_only() {
    require("openssl");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("pki");
    let d = d.to_str().unwrap();
    assert!(tlsnet(&["pki", "init", "--dir", d]).status.success());
    let password_file = tmp.path().join("password");
    std::fs::write(&password_file, "correct horse\n").unwrap();
    let p12 = tmp.path().join("erin.p12");
    let out = tlsnet(&[
        "pki",
        "issue",
        "client",
        "erin",
        "--dir",
        d,
        "--p12",
        p12.to_str().unwrap(),
        "--p12-password-file",
        password_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p12).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let open = |pass: &str| {
        Command::new("openssl")
            .args([
                "pkcs12",
                "-in",
                p12.to_str().unwrap(),
                "-passin",
                &format!("pass:{pass}"),
                "-nodes",
            ])
            .output()
            .unwrap()
    };
    let good = open("correct horse");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(text.contains("BEGIN PRIVATE KEY"), "the key is inside");
    assert!(
        text.contains("subject=CN=erin") || text.contains("subject=CN = erin"),
        "{text}"
    );
    for wrong in ["", "wrong", "correct horse\n"] {
        let bad = open(wrong);
        assert!(!bad.status.success(), "password {wrong:?} must not open it");
    }
    // An empty password file is refused up front.
    std::fs::write(&password_file, "").unwrap();
    let out = tlsnet(&[
        "pki",
        "issue",
        "client",
        "frank",
        "--dir",
        d,
        "--p12",
        tmp.path().join("frank.p12").to_str().unwrap(),
        "--p12-password-file",
        password_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        !Path::new(d).join("frank.pem").exists(),
        "nothing issued when the password is bad"
    );
}
