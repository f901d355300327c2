//! End-to-end tests of the built `tlsnet` binary in a temporary directory: one per behaviour,
//! each checking what the user sees (output, log lines, exit codes).

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;
use tlsnet::pki::Purpose;

fn pki_files(dir: &Path) -> Vec<&'static str> {
    [
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "client.pem",
        "client-key.pem",
    ]
    .into_iter()
    .filter(|f| dir.join(f).is_file())
    .collect()
}

#[test]
fn first_run_creates_a_dev_pki_and_connect_uses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pki_dir = tmp.path().join("pki");
    let pki = pki_dir.to_str().unwrap();
    let server = ServeProcess::start(tmp.path(), &["--pki-dir", pki]);
    assert_eq!(
        pki_files(&pki_dir).len(),
        6,
        "dev PKI files: {:?}",
        pki_files(&pki_dir)
    );
    #[cfg(unix)]
    for key in ["ca-key.pem", "server-key.pem", "client-key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki_dir.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let log = server.log_text();
    assert!(
        log.contains("tlsnet connect localhost:") || log.contains("connect localhost:"),
        "{log}"
    );
    assert!(log.contains("openssl s_client"), "{log}");

    let out = connect_cmd(
        &[&format!("localhost:{}", server.port), "--pki-dir", pki],
        b"hello tlsnet\n",
    );
    let err = &out.stderr;
    assert!(out.status.success(), "connect failed: {err}");
    assert_eq!(out.stdout, "hello tlsnet\n");
    assert!(err.contains("protocol:      TLSv1.3"), "{err}");
    assert!(
        err.contains("X25519MLKEM768 (post-quantum hybrid)"),
        "{err}"
    );
    assert!(err.contains("CN=localhost"), "{err}");
    assert!(err.contains("days left"), "{err}");

    let log = server.wait_for_log("client_cn=\"tlsnet-dev-client\"");
    assert!(log.contains("handshake ok"), "{log}");
    assert!(log.contains("version=TLSv1.3"), "{log}");

    // A second start reuses the PKI instead of making a new CA.
    let ca_before = std::fs::read(pki_dir.join("ca.pem")).unwrap();
    drop(server);
    let _again = ServeProcess::start(tmp.path(), &["--pki-dir", pki]);
    assert_eq!(std::fs::read(pki_dir.join("ca.pem")).unwrap(), ca_before);
}

#[test]
fn own_certificates_and_json_report() {
    let pki = TestPki::new();
    let p = |n: &str| pki.path(n).to_str().unwrap().to_owned();
    let server =
        ServeProcess::start_pki(&pki, &["--client-ca", &p("ca.pem"), "--log-format", "json"]);
    let out = connect_cmd(
        &[
            &server.addr(),
            "--ca",
            &p("ca.pem"),
            "--cert",
            &p("client.pem"),
            "--key",
            &p("client-key.pem"),
            "--json",
        ],
        b"json please",
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "json please");
    let report: serde_json::Value =
        serde_json::from_str(&out.stderr).expect("stderr is the JSON report");
    assert_eq!(report["protocol"], "TLSv1.3");
    assert_eq!(report["post_quantum"], true);
    assert_eq!(report["peer_chain"][0]["common_name"], "localhost");

    server.wait_for_log("\"client_cn\":\"alice\"");
    for line in server.log_text().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["message"].is_string(), "{line}");
    }
}

#[test]
fn server_logs_the_cause_of_each_rejected_client() {
    let pki = TestPki::new();
    pki.issue("old", &TestPki::expired_spec(Purpose::Client, "old"));
    let p = |n: &str| pki.path(n).to_str().unwrap().to_owned();
    let server = ServeProcess::start_pki(&pki, &["--client-ca", &p("ca.pem")]);
    // No client certificate.
    let out = connect_cmd(&[&server.addr(), "--ca", &p("ca.pem"), "-q"], b"x");
    assert_eq!(out.status.code(), Some(1));
    let err = &out.stderr;
    assert!(
        err.contains("server requires a client certificate and we sent none"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one-line cause: {err}");
    server.wait_for_log("client sent no certificate");

    // Expired client certificate: the server names the date.
    let out = connect_cmd(
        &[
            &server.addr(),
            "--ca",
            &p("ca.pem"),
            "--cert",
            &p("old.pem"),
            "--key",
            &p("old-key.pem"),
            "-q",
        ],
        b"x",
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    server.wait_for_log("client certificate expired on 20");

    // Plaintext HTTP on the TLS port.
    let mut tcp = std::net::TcpStream::connect(server.addr()).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    server.wait_for_log("plaintext HTTP request on a TLS port");
}

#[test]
fn verification_failures_exit_1_with_a_one_line_cause() {
    let pki = TestPki::new();
    let p = |n: &str| pki.path(n).to_str().unwrap().to_owned();
    let server = ServeProcess::start_pki(&pki, &[]);
    let out = connect_cmd(&[&server.addr(), "--ca", &p("other-ca.pem")], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        out.stderr.trim(),
        format!(
            "tlsnet: TLS handshake with {} failed: server certificate issued by an unknown CA (for a private CA use --ca FILE)",
            server.addr()
        )
    );
    let out = connect_cmd(
        &[
            &server.addr(),
            "--ca",
            &p("ca.pem"),
            "--servername",
            "db.internal",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("not valid for 'db.internal'"),
        "{}",
        out.stderr
    );

    // Nothing listens: a connection failure, exit 1.
    let out = connect_cmd(
        &[&format!("127.0.0.1:{}", free_port()), "--ca", &p("ca.pem")],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("connect to 127.0.0.1:"),
        "{}",
        out.stderr
    );
}

#[test]
fn pin_and_insecure_modes() {
    let pki = TestPki::new();
    let p = |n: &str| pki.path(n).to_str().unwrap().to_owned();
    let server = ServeProcess::start_pki(&pki, &[]);
    // Learn the pin from a verified connection's JSON report, then connect with only the pin.
    let out = connect_cmd(&[&server.addr(), "--ca", &p("ca.pem"), "--json"], b"");
    assert!(out.status.success(), "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stderr).unwrap();
    let pin = report["peer_chain"][0]["spki_pin"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = connect_cmd(&[&server.addr(), "--pin", &pin, "-q"], b"pinned");
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "pinned");

    let other = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let out = connect_cmd(&[&server.addr(), "--pin", other, "-q"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("does not match the pin"),
        "{}",
        out.stderr
    );

    let out = connect_cmd(&[&server.addr(), "--insecure", "-q"], b"unverified");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("WARNING: --insecure"), "{}", out.stderr);
    assert_eq!(out.stdout, "unverified");
}

#[test]
fn usage_errors_exit_2() {
    let cases: [&[&str]; 5] = [
        &[],
        &["localhost:8443", "--pin", "not-a-pin"],
        &["no-port-here"],
        &["localhost:8443", "--cert", "only-cert.pem"],
        &["localhost:8443", "--insecure", "--ca", "ca.pem"],
    ];
    for args in cases {
        let out = connect_cmd(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.is_empty());
    }
    let out = tlsnet(&[
        "serve",
        "--client-auth",
        "required",
        "--cert",
        "a.pem",
        "--key",
        "b.pem",
    ]);
    assert_ne!(out.status.code(), Some(0));
    let out = tlsnet(&["serve", "--handshake-timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("not a duration"), "{}", out.stderr);
}

#[test]
fn missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut command = tlsnet_cmd();
    command
        .args([
            "serve",
            "--cert",
            "/nonexistent/server.pem",
            "--key",
            "/nonexistent/key.pem",
        ])
        .current_dir(tmp.path());
    let out = run(command, None, RUN_LIMIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("cannot read /nonexistent/server.pem"),
        "{}",
        out.stderr
    );
    let not_pem = tmp.path().join("junk.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let out = tlsnet(&[
        "serve",
        "--cert",
        not_pem.to_str().unwrap(),
        "--key",
        not_pem.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("no CERTIFICATE found"),
        "{}",
        out.stderr
    );
}

#[test]
fn sigterm_and_sigint_stop_the_server_with_exit_0() {
    for signal in ["TERM", "INT"] {
        let pki = TestPki::new();
        let mut server = ServeProcess::start_pki(&pki, &["--shutdown-timeout", "2s"]);
        // An open, idle client connection must not hold the exit beyond the grace period.
        let _idle = std::net::TcpStream::connect(server.addr()).unwrap();
        server.signal(signal);
        let status = server.wait_exit(Duration::from_secs(15));
        assert!(status.success(), "SIG{signal}: {status}");
        assert!(
            server.log_text().contains("server stopped"),
            "{}",
            server.log_text()
        );
    }
}
