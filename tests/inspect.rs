//! `tlsnet inspect`, end to end with the built binary: files (PEM chain, DER, PKCS#12 with a
//! password file, expired and not-yet-valid certificates, `--check-expiry` exit codes) and
//! servers (`openssl s_server` presenting root → intermediate → leaf: trusted with `--ca`,
//! untrusted without, an expired leaf, a server that requires a client certificate; and a
//! Python STARTTLS server for SMTP, IMAP and POP3).
//!
//! Every certificate is made at test time; every server listens on 127.0.0.1 and is killed
//! when its test ends; every wait is bounded.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use time::OffsetDateTime;

/// How long one run of the binary or one server start may take.
const STEP: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Certificates

/// A test PKI in a temporary directory, made with rcgen:
///
/// - `root.pem`: root CA; `int.pem`: intermediate CA signed by it;
/// - `leaf.pem` + `leaf.key`: server certificate for localhost / 127.0.0.1, signed by the
///   intermediate, valid 10 days; `chain.pem` = leaf + intermediate; `full.pem` = + root;
/// - `expired.pem` / `expired-chain.pem` + `expired.key`: like leaf, expired yesterday;
/// - `future.pem`: valid from tomorrow;
/// - `other-root.pem`: an unrelated root;
/// - `client-ca.pem`, `client.pem` + `client.key`: client CA and a client certificate.
struct Pki {
    dir: tempfile::TempDir,
    leaf_der: CertificateDer<'static>,
    int_der: CertificateDer<'static>,
    root_der: CertificateDer<'static>,
    leaf_key_der: Vec<u8>,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "tlsnet inspect tests");
    dn
}

fn ca_params(cn: &str, path_len: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    params
}

fn leaf_params(cn: &str, from_days: i64, to_days: i64, server: bool) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    if server {
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    params
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();

        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("inspect test root", 1);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);

        let int_key = KeyPair::generate().unwrap();
        let mut int_params = ca_params("inspect test intermediate", 0);
        int_params.use_authority_key_identifier_extension = true;
        let int = int_params.signed_by(&int_key, &root_issuer).unwrap();
        let int_issuer = Issuer::new(int_params, int_key);

        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params("localhost", -1, 10, true)
            .signed_by(&leaf_key, &int_issuer)
            .unwrap();
        let expired_key = KeyPair::generate().unwrap();
        let expired = leaf_params("localhost", -30, -1, true)
            .signed_by(&expired_key, &int_issuer)
            .unwrap();
        let future_key = KeyPair::generate().unwrap();
        let future = leaf_params("not yet", 1, 30, true)
            .signed_by(&future_key, &int_issuer)
            .unwrap();

        let other_key = KeyPair::generate().unwrap();
        let other = ca_params("some other root", 1)
            .self_signed(&other_key)
            .unwrap();

        let client_ca_key = KeyPair::generate().unwrap();
        let client_ca_params = ca_params("inspect client CA", 0);
        let client_ca = client_ca_params.self_signed(&client_ca_key).unwrap();
        let client_ca_issuer = Issuer::new(client_ca_params, client_ca_key);
        let client_key = KeyPair::generate().unwrap();
        let client = leaf_params("inspect client", -1, 10, false)
            .signed_by(&client_key, &client_ca_issuer)
            .unwrap();

        write("root.pem", &root.pem());
        write("int.pem", &int.pem());
        write("leaf.pem", &leaf.pem());
        write("leaf.key", &leaf_key.serialize_pem());
        write("chain.pem", &format!("{}{}", leaf.pem(), int.pem()));
        write(
            "full.pem",
            &format!("{}{}{}", leaf.pem(), int.pem(), root.pem()),
        );
        write("expired.pem", &expired.pem());
        write(
            "expired-chain.pem",
            &format!("{}{}", expired.pem(), int.pem()),
        );
        write("expired.key", &expired_key.serialize_pem());
        write("future.pem", &future.pem());
        write("other-root.pem", &other.pem());
        write("client-ca.pem", &client_ca.pem());
        write("client.pem", &client.pem());
        write("client.key", &client_key.serialize_pem());
        std::fs::write(dir.path().join("leaf.der"), leaf.der()).unwrap();

        Pki {
            leaf_der: leaf.der().clone(),
            int_der: int.der().clone(),
            root_der: root.der().clone(),
            leaf_key_der: leaf_key.serialize_der(),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Processes

/// A finished run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr: {}", self.stdout, self.stderr))
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `tlsnet ARGS` with output to files, killed if it takes longer than [`STEP`].
fn tlsnet(dir: &Path, args: &[&str]) -> Run {
    let out_path = dir.join("tlsnet.out");
    let err_path = dir.join("tlsnet.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tlsnet"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("start tlsnet");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > STEP {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tlsnet {args:?} did not finish within {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

fn require(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not installed: run the tests with scripts/test, which installs the peers"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `openssl s_server` on 127.0.0.1, presenting `cert` + `chain` (an intermediate); killed
/// when dropped. Its stdin stays open (s_server relays stdin to the client).
struct OpenSslServer {
    child: Child,
    _stdin: Option<ChildStdin>,
    port: u16,
    log: PathBuf,
}

impl OpenSslServer {
    fn start(pki: &Pki, cert: &str, key: &str, extra: &[&str]) -> Self {
        require("openssl");
        let port = free_port();
        let log = pki.dir.path().join(format!("s_server-{port}.log"));
        let file = File::create(&log).unwrap();
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
            .args(["-cert", &pki.path(cert), "-key", &pki.path(key)])
            .args(["-cert_chain", &pki.path("int.pem")])
            .args(["-alpn", "h2,http/1.1"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start openssl s_server");
        let stdin = child.stdin.take();
        let mut server = OpenSslServer {
            child,
            _stdin: stdin,
            port,
            log,
        };
        server.wait_ready();
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        while !self.log_text().contains("ACCEPT") {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "openssl s_server exited with {status}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                started.elapsed() < STEP,
                "openssl s_server not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OpenSslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python STARTTLS peer; killed when dropped.
struct StartTlsServer {
    child: Child,
    port: u16,
}

impl StartTlsServer {
    fn start(pki: &Pki, protocol: &str, extra: &[&str]) -> Self {
        require("python3");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/inspect_smtp_starttls.py");
        let out = pki.dir.path().join(format!("starttls-{protocol}.out"));
        let mut child = Command::new("python3")
            .arg(&script)
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
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the STARTTLS peer");
        let started = Instant::now();
        let port = loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("STARTTLS peer exited with {status}: {text}");
            }
            assert!(started.elapsed() < STEP, "STARTTLS peer did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        StartTlsServer { child, port }
    }

    /// Waits for the peer to finish (it serves one connection) and returns its report lines.
    fn finish(mut self, pki: &Pki, protocol: &str) -> Vec<String> {
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < STEP, "STARTTLS peer did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = pki.dir.path().join(format!("starttls-{protocol}.out"));
        std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for StartTlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let pki = Pki::new();
    let run = tlsnet(
        pki.dir.path(),
        &["inspect", &pki.path("full.pem"), "--json"],
    )
    .ok();
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

    let text = tlsnet(pki.dir.path(), &["inspect", &pki.path("full.pem")])
        .ok()
        .stdout;
    assert!(text.contains("(PEM, 3 certificates)"), "{text}");
    assert!(text.contains("certificate 0 of 3 (end entity)"), "{text}");
    assert!(text.contains("certificate 2 of 3 (self-signed)"), "{text}");
    assert!(text.contains("days left"), "{text}");
    assert!(!text.contains("EXPIRED"), "{text}");
}

#[test]
fn der_file() {
    let pki = Pki::new();
    let json = tlsnet(
        pki.dir.path(),
        &["inspect", &pki.path("leaf.der"), "--json"],
    )
    .ok()
    .json();
    assert_eq!(json["format"], "der");
    assert_eq!(cns(&json), ["localhost"]);
    assert_eq!(json["certificates"][0]["sha256"], sha256_hex(&pki.leaf_der));

    // --pem turns it back into the PEM that rcgen wrote.
    let pem = tlsnet(pki.dir.path(), &["inspect", &pki.path("leaf.der"), "--pem"])
        .ok()
        .stdout;
    let back: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back, std::slice::from_ref(&pki.leaf_der));
}

#[test]
fn pkcs12_written_by_tlsnet_opens_with_a_password_file() {
    let pki = Pki::new();
    let chain = [pki.leaf_der.clone(), pki.int_der.clone()];
    let p12 =
        tlsnet::pkcs12::write(&chain, &pki.leaf_key_der, "correct horse", "web server").unwrap();
    std::fs::write(pki.path("id.p12"), &p12).unwrap();
    std::fs::write(pki.path("pw"), "correct horse\n").unwrap();
    std::fs::write(pki.path("wrong-pw"), "battery staple\n").unwrap();

    let json = tlsnet(
        pki.dir.path(),
        &[
            "inspect",
            &pki.path("id.p12"),
            "--password-file",
            &pki.path("pw"),
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(json["format"], "pkcs12");
    assert_eq!(json["friendly_name"], "web server");
    assert_eq!(json["private_key"]["matches_first_certificate"], true);
    assert_eq!(cns(&json), ["localhost", "inspect test intermediate"]);

    let text = tlsnet(
        pki.dir.path(),
        &[
            "inspect",
            &pki.path("id.p12"),
            "--password-file",
            &pki.path("pw"),
        ],
    )
    .ok()
    .stdout;
    assert!(text.contains("(PKCS#12, 2 certificates)"), "{text}");
    assert!(text.contains("belongs to certificate 0"), "{text}");

    let wrong = tlsnet(
        pki.dir.path(),
        &[
            "inspect",
            &pki.path("id.p12"),
            "--password-file",
            &pki.path("wrong-pw"),
        ],
    );
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("wrong password"), "{}", wrong.stderr);

    let none = tlsnet(pki.dir.path(), &["inspect", &pki.path("id.p12")]);
    assert_eq!(none.code, 1, "{}", none.stderr);
    assert!(none.stderr.contains("--password-file"), "{}", none.stderr);
}

#[test]
fn pkcs12_written_by_tlsnet_opens_with_openssl() {
    require("openssl");
    let pki = Pki::new();
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
    let pki = Pki::new();
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
        let json = tlsnet(
            pki.dir.path(),
            &[
                "inspect",
                &pki.path(name),
                "--password-file",
                &pki.path("pw"),
                "--json",
            ],
        )
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
    let pki = Pki::new();
    let text = tlsnet(pki.dir.path(), &["inspect", &pki.path("expired.pem")])
        .ok()
        .stdout;
    assert!(text.contains("EXPIRED"), "{text}");
    let json = tlsnet(
        pki.dir.path(),
        &["inspect", &pki.path("expired.pem"), "--json"],
    )
    .ok()
    .json();
    assert_eq!(json["certificates"][0]["expired"], true);
    assert!(json["certificates"][0]["days_left"].as_i64().unwrap() < 0);

    let text = tlsnet(pki.dir.path(), &["inspect", &pki.path("future.pem")])
        .ok()
        .stdout;
    assert!(text.contains("NOT YET VALID"), "{text}");
    assert!(!text.contains("EXPIRED"), "{text}");
}

#[test]
fn check_expiry_exit_codes() {
    let pki = Pki::new();
    let leaf = pki.path("leaf.pem"); // valid for 10 more days
                                     // Expires within 30 days: exit 1, with the certificate named.
    let run = tlsnet(pki.dir.path(), &["inspect", &leaf, "--check-expiry", "30d"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("within 30d"), "{}", run.stderr);
    assert!(run.stderr.contains("CN=localhost"), "{}", run.stderr);
    assert!(
        run.stdout.contains("certificate 0 of 1"),
        "details are still printed"
    );
    // Not within 5 days: exit 0.
    let run = tlsnet(pki.dir.path(), &["inspect", &leaf, "--check-expiry", "5d"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // A chain is as short-lived as its shortest certificate.
    let run = tlsnet(
        pki.dir.path(),
        &["inspect", &pki.path("full.pem"), "--check-expiry", "240h"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let run = tlsnet(
        pki.dir.path(),
        &["inspect", &pki.path("full.pem"), "--check-expiry", "9d"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Already expired: exit 1 even for a zero period.
    let run = tlsnet(
        pki.dir.path(),
        &[
            "inspect",
            &pki.path("expired.pem"),
            "--check-expiry",
            "0s",
            "--json",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("EXPIRED"), "{}", run.stderr);
    // A bad period is a usage error.
    let run = tlsnet(
        pki.dir.path(),
        &["inspect", &leaf, "--check-expiry", "soon"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn usage_errors() {
    let pki = Pki::new();
    let run = tlsnet(pki.dir.path(), &["inspect", &pki.path("no-such-file.pem")]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no such file"), "{}", run.stderr);
    let run = tlsnet(
        pki.dir.path(),
        &[
            "inspect",
            &pki.path("leaf.pem"),
            "--ca",
            &pki.path("root.pem"),
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let junk = pki.path("junk.bin");
    std::fs::write(&junk, b"\x00\x01 not a certificate").unwrap();
    let run = tlsnet(pki.dir.path(), &["inspect", &junk]);
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
    let pki = Pki::new();
    let server = OpenSslServer::start(&pki, "leaf.pem", "leaf.key", &[]);
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
    let json = tlsnet(pki.dir.path(), &[&args[..], &["--json"]].concat())
        .ok()
        .json();
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

    let text = tlsnet(pki.dir.path(), &args).ok().stdout;
    assert!(text.contains("trusted for 'localhost'"), "{text}");
    assert!(text.contains("protocol:         TLSv1.3"), "{text}");
    assert!(text.contains("ALPN:             h2"), "{text}");
    assert!(text.contains("certificate 1 of 2 (intermediate)"), "{text}");

    // --pem: the presented chain, as Python's ssl.get_server_certificate gives the leaf.
    let pem = tlsnet(pki.dir.path(), &["inspect", &addr, "--pem"])
        .ok()
        .stdout;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chain, [pki.leaf_der.clone(), pki.int_der.clone()]);
}

#[test]
fn remote_untrusted_still_shows_the_chain() {
    let pki = Pki::new();
    let server = OpenSslServer::start(&pki, "leaf.pem", "leaf.key", &[]);
    let addr = server.addr();
    // The system trust store does not know the test root.
    let run = tlsnet(pki.dir.path(), &["inspect", &addr, "--json"]).ok();
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
    let run = tlsnet(pki.dir.path(), &["inspect", &addr, "--ca", &other]).ok();
    assert!(run.stdout.contains("NOT TRUSTED"), "{}", run.stdout);
    assert!(run.stdout.contains("unknown CA"), "{}", run.stdout);
    assert!(
        run.stdout.contains("certificate 0 of 2 (leaf)"),
        "{}",
        run.stdout
    );
    // A name the certificate does not cover.
    let json = tlsnet(
        pki.dir.path(),
        &[
            "inspect",
            &addr,
            "--ca",
            &pki.path("root.pem"),
            "--servername",
            "example.com",
            "--json",
        ],
    )
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
    let pki = Pki::new();
    let server = OpenSslServer::start(&pki, "expired.pem", "expired.key", &[]);
    let addr = server.addr();
    let ca = pki.path("root.pem");
    let json = tlsnet(pki.dir.path(), &["inspect", &addr, "--ca", &ca, "--json"])
        .ok()
        .json();
    assert_eq!(json["verdict"]["trusted"], false);
    assert_eq!(
        json["verdict"]["problem_label"], "certificate_expired",
        "{json:#}"
    );
    assert_eq!(json["certificates"][0]["expired"], true);
    let run = tlsnet(
        pki.dir.path(),
        &["inspect", &addr, "--ca", &ca, "--check-expiry", "1d"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.contains("EXPIRED"), "{}", run.stdout);
    assert!(run.stdout.contains("NOT TRUSTED"), "{}", run.stdout);
    assert!(run.stderr.contains("within 1d"), "{}", run.stderr);
}

#[test]
fn remote_requiring_a_client_certificate() {
    let pki = Pki::new();
    let client_ca = pki.path("client-ca.pem");
    let server = OpenSslServer::start(
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
    let json = tlsnet(pki.dir.path(), &["inspect", &addr, "--ca", &ca, "--json"])
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
    let json = tlsnet(
        pki.dir.path(),
        &[
            "inspect",
            &addr,
            "--ca",
            &ca,
            "--cert",
            &pki.path("client.pem"),
            "--key",
            &pki.path("client.key"),
            "--json",
        ],
    )
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
        server.log_text()
    );
    assert_eq!(json["verdict"]["trusted"], true, "{json:#}");
    let text = tlsnet(
        pki.dir.path(),
        &[
            "inspect",
            &addr,
            "--ca",
            &ca,
            "--cert",
            &pki.path("client.pem"),
            "--key",
            &pki.path("client.key"),
        ],
    )
    .ok()
    .stdout;
    assert!(text.contains("client cert:      requested"), "{text}");
    assert!(!text.contains("REFUSED"), "{text}");

    // A certificate from a CA the server does not trust: sent, and refused.
    let json = tlsnet(
        pki.dir.path(),
        &[
            "inspect",
            &addr,
            "--ca",
            &ca,
            "--cert",
            &pki.path("leaf.pem"),
            "--key",
            &pki.path("leaf.key"),
            "--json",
        ],
    )
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
    let pki = Pki::new();
    let peer = StartTlsServer::start(&pki, protocol, &[]);
    let addr = format!("127.0.0.1:{}", peer.port);
    let ca = pki.path("root.pem");
    let json = tlsnet(
        pki.dir.path(),
        &[
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
        ],
    )
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
    let report = peer.finish(&pki, protocol);
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
    let pki = Pki::new();
    let peer = StartTlsServer::start(&pki, "smtp", &["--no-starttls"]);
    let addr = format!("127.0.0.1:{}", peer.port);
    let run = tlsnet(pki.dir.path(), &["inspect", &addr, "--starttls", "smtp"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("does not offer STARTTLS"),
        "{}",
        run.stderr
    );
}
