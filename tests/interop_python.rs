//! Interoperability with Python's `ssl` module (OpenSSL underneath), in both directions, with
//! peers written the way Python tutorials write them (tests/peers/tls_client.py and
//! tests/peers/tls_server.py) and the real `tlsnet` binary. Certificates are made at test time.

mod common;

use std::process::ExitStatus;

use common::*;
use tokio::process::Command;

fn python(script: &str) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(peer_script(script))
        .env("PYTHONUNBUFFERED", "1");
    command
}

/// `tlsnet serve` with this PKI's server certificate, requiring client certificates.
async fn serve_requiring_client_certs(pki: &TestPki) -> (Proc, String) {
    serve_pki(
        pki,
        &["--client-ca".as_ref(), pki.path("ca.pem").as_os_str()],
    )
    .await
}

/// Runs tls_client.py against `addr` with `extra` arguments until it ends.
async fn run_python_client(addr: &str, extra: &[&std::ffi::OsStr]) -> (Proc, ExitStatus) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut command = python("tls_client.py");
    command.args([host, port]).args(extra);
    let mut client = Proc::spawn("tls_client.py", command);
    let status = client.finish(STEP).await;
    (client, status)
}

#[tokio::test]
async fn python_client_with_certificate_gets_its_bytes_echoed_by_tlsnet_serve() {
    require("python3");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, addr) = serve_requiring_client_certs(&pki).await;

        let message = "hello from a python tutorial client";
        let (client, status) = run_python_client(
            &addr,
            &[
                "--ca".as_ref(),
                pki.path("ca.pem").as_os_str(),
                "--cert".as_ref(),
                pki.path("client.pem").as_os_str(),
                "--key".as_ref(),
                pki.path("client-key.pem").as_os_str(),
                "--message".as_ref(),
                message.as_ref(),
            ],
        )
        .await;
        let out = client.stdout();
        println!("{out}");
        assert!(
            status.success(),
            "python client failed\n{}",
            client.describe()
        );
        assert!(out.contains("version: TLSv1.3\n"), "{}", client.describe());
        assert!(out.contains("cipher: ('TLS_"), "{}", client.describe());
        assert!(
            out.contains("peer: CN=localhost\n"),
            "{}",
            client.describe()
        );
        assert!(
            out.contains(&format!("echo: {message}\n")),
            "{}",
            client.describe()
        );

        // The server saw the client's certificate.
        server.wait_for_stderr("handshake ok").await;
        let log = server.stderr();
        assert!(log.contains("client_cn=\"alice\""), "{}", server.describe());
        assert!(log.contains("version=TLSv1.3"), "{}", server.describe());
        server.kill().await;
    })
    .await;
}

#[tokio::test]
async fn python_client_without_certificate_is_refused_and_the_server_says_why() {
    require("python3");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, addr) = serve_requiring_client_certs(&pki).await;

        let (client, status) =
            run_python_client(&addr, &["--ca".as_ref(), pki.path("ca.pem").as_os_str()]).await;
        let out = client.stdout();
        println!("{out}");
        assert!(
            !status.success(),
            "a client without a certificate got through\n{}",
            client.describe()
        );
        // TLS 1.3: the client's side of the handshake completes; the refusal comes on recv.
        assert!(out.contains("version: TLSv1.3\n"), "{}", client.describe());
        assert!(!out.contains("echo:"), "{}", client.describe());
        assert!(
            out.to_ascii_lowercase().contains("certificate required"),
            "expected the certificate_required alert\n{}",
            client.describe()
        );

        server.wait_for_stderr("client sent no certificate").await;
        server.kill().await;
    })
    .await;
}

#[tokio::test]
async fn python_client_that_does_not_trust_the_server_ca_refuses_it() {
    require("python3");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, addr) = serve_requiring_client_certs(&pki).await;

        let (client, status) = run_python_client(
            &addr,
            &[
                "--ca".as_ref(),
                pki.path("other-ca.pem").as_os_str(),
                "--cert".as_ref(),
                pki.path("client.pem").as_os_str(),
                "--key".as_ref(),
                pki.path("client-key.pem").as_os_str(),
            ],
        )
        .await;
        assert!(!status.success(), "{}", client.describe());
        assert!(
            client.stdout().contains("CERTIFICATE_VERIFY_FAILED"),
            "{}",
            client.describe()
        );
        server.kill().await;
    })
    .await;
}

/// Starts tls_server.py with this PKI's server certificate, requiring client certificates.
async fn start_python_server(pki: &TestPki) -> (Proc, u16) {
    start_listening_peer("tls_server.py", "listening 127.0.0.1:", |port| {
        let mut command = python("tls_server.py");
        command
            .arg("--port")
            .arg(port.to_string())
            .arg("--cert")
            .arg(pki.path("server.pem"))
            .arg("--key")
            .arg(pki.path("server-key.pem"))
            .arg("--ca")
            .arg(pki.path("ca.pem"));
        command
    })
    .await
}

#[tokio::test]
async fn tlsnet_connect_with_certificate_talks_to_a_python_server() {
    require("python3");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, port) = start_python_server(&pki).await;

        let mut client = tlsnet_connect(&pki, port, true);
        let data = "line one from tlsnet\nline two from tlsnet\n";
        client.write_stdin(data.as_bytes()).await;
        client.wait_for_stdout(data).await;
        // End of input: tlsnet sends close_notify; the server answers with its own.
        let status = client.finish(STEP).await;
        println!("{}", client.describe());
        assert!(
            status.success(),
            "tlsnet connect failed\n{}",
            client.describe()
        );
        assert_eq!(client.stdout(), data, "{}", client.describe());
        let report = squeeze(&client.stderr());
        assert!(
            report.contains("protocol: TLSv1.3"),
            "{}",
            client.describe()
        );
        assert!(
            report.contains("peer: CN=localhost"),
            "{}",
            client.describe()
        );

        let status = server.wait_exit(STEP).await;
        println!("{}", server.describe());
        assert!(
            status.success(),
            "python server failed\n{}",
            server.describe()
        );
        let seen = server.stdout();
        assert!(seen.contains("version: TLSv1.3\n"), "{}", server.describe());
        assert!(
            seen.contains("peer-subject: CN=alice\n"),
            "{}",
            server.describe()
        );
        assert!(
            seen.contains(&format!("received: {data}")),
            "{}",
            server.describe()
        );
        assert!(seen.contains("closed: clean\n"), "{}", server.describe());
    })
    .await;
}

#[tokio::test]
async fn tlsnet_connect_without_certificate_is_refused_by_a_python_server() {
    require("python3");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, port) = start_python_server(&pki).await;

        connect_without_certificate_is_refused(&pki, port).await;

        let status = server.wait_exit(STEP).await;
        assert!(!status.success(), "{}", server.describe());
        assert!(server.stdout().contains("error:"), "{}", server.describe());
    })
    .await;
}
