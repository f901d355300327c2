//! Interoperability with the OpenSSL command line: `openssl s_client` against `tlsnet serve`,
//! and `tlsnet connect` against `openssl s_server`, with and without client certificates.
//! Certificates are made at test time; every process is killed when its test ends.

mod common;

use common::*;
use tokio::process::Command;

/// `openssl s_client` verifying the server against the test CA and the name `localhost`,
/// optionally with the test client certificate.
fn s_client(pki: &TestPki, addr: &str, with_cert: bool) -> Proc {
    let mut command = Command::new("openssl");
    command
        .args([
            "s_client",
            "-connect",
            addr,
            "-verify_return_error",
            "-servername",
            "localhost",
        ])
        .arg("-CAfile")
        .arg(pki.path("ca.pem"));
    if with_cert {
        command
            .arg("-cert")
            .arg(pki.path("client.pem"))
            .arg("-key")
            .arg(pki.path("client-key.pem"));
    }
    Proc::spawn("openssl s_client", command)
}

/// Sends a line through s_client, waits for the echo, then ends input: s_client closes the
/// connection and exits 0.
async fn echo_through_s_client(client: &mut Proc) {
    let line = "hello from openssl s_client\n";
    client.write_stdin(line.as_bytes()).await;
    // s_client does not echo its input: the line on its stdout came from the server.
    client.wait_for_stdout(line).await;
    let status = client.finish(STEP).await;
    println!("{}", client.describe());
    assert!(status.success(), "s_client failed\n{}", client.describe());
    let out = squeeze(&client.stdout());
    assert!(
        out.contains("New, TLSv1.3, Cipher is TLS_"),
        "{}",
        client.describe()
    );
    assert!(
        out.contains("Verify return code: 0 (ok)"),
        "{}",
        client.describe()
    );
    // Every `Protocol: ...` line (OpenSSL 3.0 prints one in each SSL-Session block, which comes
    // with a session ticket) must say TLS 1.3.
    assert!(
        protocol_lines(&client.stdout())
            .iter()
            .all(|v| v == "TLSv1.3"),
        "{}",
        client.describe()
    );
}

/// The values of s_client's `Protocol  : X` lines.
fn protocol_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("Protocol"))
        .filter_map(|rest| rest.trim_start().strip_prefix(':'))
        .map(|value| value.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn s_client_with_certificate_gets_its_line_echoed() {
    require("openssl");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, addr) = serve_pki(
            &pki,
            &["--client-ca".as_ref(), pki.path("ca.pem").as_os_str()],
        )
        .await;
        let mut client = s_client(&pki, &addr, true);
        echo_through_s_client(&mut client).await;

        server.wait_for_stderr("handshake ok").await;
        let log = server.stderr();
        assert!(log.contains("client_cn=\"alice\""), "{}", server.describe());
        assert!(log.contains("version=TLSv1.3"), "{}", server.describe());
        server.kill().await;
    })
    .await;
}

#[tokio::test]
async fn s_client_without_certificate_is_refused() {
    require("openssl");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, addr) = serve_pki(
            &pki,
            &["--client-ca".as_ref(), pki.path("ca.pem").as_os_str()],
        )
        .await;
        let mut client = s_client(&pki, &addr, false);
        // TLS 1.3: s_client's side of the handshake completes; the server's alert arrives when
        // it next reads. Input stays open, so the alert is what ends it.
        client.write_stdin(b"let me in\n").await;
        let status = client.wait_exit(STEP).await;
        println!("{}", client.describe());
        assert!(
            !status.success(),
            "s_client without a certificate got through\n{}",
            client.describe()
        );
        assert!(
            !client.stdout().contains("let me in"),
            "{}",
            client.describe()
        );
        assert!(
            client.stderr().contains("alert certificate required"),
            "expected the certificate_required alert\n{}",
            client.describe()
        );

        server.wait_for_stderr("client sent no certificate").await;
        server.kill().await;
    })
    .await;
}

#[tokio::test]
async fn s_client_without_certificate_works_when_the_server_does_not_ask_for_one() {
    require("openssl");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, addr) =
            serve_pki(&pki, &["--client-auth".as_ref(), "none".as_ref()]).await;
        let mut client = s_client(&pki, &addr, false);
        echo_through_s_client(&mut client).await;
        // Without client certificates the server issues TLS 1.3 session tickets, and s_client
        // prints each new session: `Protocol  : TLSv1.3`.
        assert!(
            !protocol_lines(&client.stdout()).is_empty(),
            "{}",
            client.describe()
        );

        server.wait_for_stderr("handshake ok").await;
        assert!(
            server.stderr().contains("client_cn=\"-\""),
            "{}",
            server.describe()
        );
        server.kill().await;
    })
    .await;
}

/// `openssl s_server` on 127.0.0.1, TLS 1.3 only, requiring a client certificate from the test
/// CA, serving one connection. Its stdin stays open: s_server closes on end of input.
async fn start_s_server(pki: &TestPki) -> (Proc, u16) {
    start_listening_peer("openssl s_server", "ACCEPT", |port| {
        let mut command = Command::new("openssl");
        command
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(pki.path("server.pem"))
            .arg("-key")
            .arg(pki.path("server-key.pem"))
            .arg("-CAfile")
            .arg(pki.path("ca.pem"))
            .args(["-Verify", "1", "-tls1_3", "-naccept", "1"]);
        command
    })
    .await
}

#[tokio::test]
async fn tlsnet_connect_with_certificate_talks_to_s_server_both_ways() {
    require("openssl");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, port) = start_s_server(&pki).await;
        let mut client = tlsnet_connect(&pki, port, true);

        // Our data reaches s_server (which prints what it receives)...
        client.write_stdin(b"hello from tlsnet\n").await;
        server.wait_for_stdout("hello from tlsnet\n").await;
        // ...and what s_server sends (its stdin) reaches our stdout.
        server.write_stdin(b"hello from openssl s_server\n").await;
        client
            .wait_for_stdout("hello from openssl s_server\n")
            .await;

        // End of our input: close_notify; s_server answers with its own and exits.
        let status = client.finish(STEP).await;
        println!("{}", client.describe());
        assert!(
            status.success(),
            "tlsnet connect failed\n{}",
            client.describe()
        );
        assert_eq!(client.stdout(), "hello from openssl s_server\n");
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

        let status = server.finish(STEP).await;
        println!("{}", server.describe());
        assert!(status.success(), "{}", server.describe());
        let seen = squeeze(&server.stdout());
        // s_server verified and printed our client certificate.
        assert!(seen.contains("subject=CN = alice"), "{}", server.describe());
        assert!(seen.contains("CIPHER is TLS_"), "{}", server.describe());
        assert!(
            server.stdout().contains("hello from tlsnet\nDONE\n"),
            "{}",
            server.describe()
        );
        assert!(
            server.stderr().contains("verify return:1"),
            "{}",
            server.describe()
        );
    })
    .await;
}

#[tokio::test]
async fn tlsnet_connect_without_certificate_is_refused_by_s_server() {
    require("openssl");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, port) = start_s_server(&pki).await;
        connect_without_certificate_is_refused(&pki, port).await;
        server.finish(STEP).await;
        println!("{}", server.describe());
        assert!(
            !server.stdout().contains("anyone there?"),
            "{}",
            server.describe()
        );
        assert!(
            server
                .stderr()
                .contains("peer did not return a certificate"),
            "{}",
            server.describe()
        );
    })
    .await;
}

/// A TLS 1.1 client: the server's log says so, not "no common parameters" (rustls checks the
/// signature_algorithms extension, which TLS 1.1 clients don't send, before the version).
#[tokio::test]
async fn tls11_client_is_named_in_the_server_log() {
    require("openssl");
    bounded(async {
        let pki = TestPki::new();
        let (mut server, addr) = serve_pki(&pki, &[]).await;
        let mut command = Command::new("openssl");
        command.args([
            "s_client",
            "-connect",
            &addr,
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ]);
        let mut client = Proc::spawn("openssl s_client -tls1_1", command);
        client.close_stdin();
        let status = client.wait_exit(STEP).await;
        assert!(!status.success(), "{}", client.describe());
        server
            .wait_for_stderr("client offered only TLS 1.1 or older (its newest: TLS 1.1)")
            .await;
        assert!(
            squeeze(&server.stderr()).contains("reason=\"protocol_version\""),
            "{}",
            server.describe()
        );
    })
    .await;
}
