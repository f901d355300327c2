//! The rejection matrix: every way a handshake should fail, each asserting the cause that the
//! user is shown, on the side that shows it. In TLS 1.3 a client whose certificate is refused
//! finishes its own handshake first and sees the server's alert on its first read, so these
//! tests always send and read.

mod common;

use std::sync::Arc;

use common::*;
use rustls::pki_types::ServerName;
use tlsnet::net::client::read_error_cause;
use tlsnet::pki::{LeafSpec, Purpose};
use tlsnet::tls::{ClientTlsOptions, ServerTrust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connects with the client options and returns the cause the client shows, from the
/// handshake or from the first exchange after it.
async fn rejected_client_cause(addr: &str, tls: &ClientTlsOptions, name: &str) -> String {
    let connector = tlsnet::net::client::Connector::new(tls.build().unwrap());
    let name = tlsnet::tls::server_name(name).unwrap();
    match connector.connect(addr, name).await {
        Err(e) => client_cause(&e),
        Ok((mut stream, _)) => match send_and_read(&mut stream).await {
            Err(e) => read_error_cause(&e),
            Ok(n) => panic!("connection was accepted and {n} bytes came back"),
        },
    }
}

#[tokio::test]
async fn server_requires_client_certificate_and_gets_none() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls()).await;
    let mut tls = pki.client_tls();
    tls.identity = None;
    let cause = rejected_client_cause(&server.addr_string(), &tls, "localhost").await;
    assert!(
        cause.contains("server requires a client certificate"),
        "{cause}"
    );
    wait_for_failure(&server.stats, "no_client_certificate").await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_rejected() {
    let pki = TestPki::new();
    pki.issue_by(
        &pki.other_ca,
        "stranger",
        &LeafSpec::new(Purpose::Client, "mallory"),
    );
    let server = TestServer::start(pki.server_tls()).await;
    let tls = ClientTlsOptions::with_roots(pki.ca_certs()).with_identity(pki.identity("stranger"));
    let cause = rejected_client_cause(&server.addr_string(), &tls, "localhost").await;
    assert!(cause.contains("unknown_ca"), "{cause}");
    assert!(
        cause.contains("does not trust the CA of our client certificate"),
        "{cause}"
    );
    wait_for_failure(&server.stats, "unknown_issuer").await;
}

#[tokio::test]
async fn expired_client_certificate_is_rejected() {
    let pki = TestPki::new();
    pki.issue("old-client", &TestPki::expired_spec(Purpose::Client, "old"));
    let server = TestServer::start(pki.server_tls()).await;
    let tls =
        ClientTlsOptions::with_roots(pki.ca_certs()).with_identity(pki.identity("old-client"));
    let cause = rejected_client_cause(&server.addr_string(), &tls, "localhost").await;
    assert!(cause.contains("certificate_expired"), "{cause}");
    wait_for_failure(&server.stats, "certificate_expired").await;
}

#[tokio::test]
async fn client_certificate_without_client_auth_eku_is_rejected() {
    let pki = TestPki::new();
    // A certificate made for a server (serverAuth only) used as a client certificate.
    pki.issue("server-as-client", &server_spec());
    let server = TestServer::start(pki.server_tls()).await;
    let tls = ClientTlsOptions::with_roots(pki.ca_certs())
        .with_identity(pki.identity("server-as-client"));
    let cause = rejected_client_cause(&server.addr_string(), &tls, "localhost").await;
    assert!(
        cause.contains("not valid for client authentication"),
        "{cause}"
    );
    wait_for_failure(&server.stats, "certificate_wrong_purpose").await;
}

#[tokio::test]
async fn client_rejects_server_from_unknown_ca() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls_no_client_auth()).await;
    let tls =
        ClientTlsOptions::with_roots(tlsnet::tls::load_certs(&pki.path("other-ca.pem")).unwrap());
    let cause = rejected_client_cause(&server.addr_string(), &tls, "localhost").await;
    assert_eq!(
        cause,
        "server certificate issued by an unknown CA (for a private CA use --ca FILE)"
    );
    // The server is told why: the client's alert.
    wait_for_failure(&server.stats, "alert_received").await;
}

#[tokio::test]
async fn client_rejects_wrong_host_name() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls_no_client_auth()).await;
    let mut tls = pki.client_tls();
    tls.identity = None;
    let cause = rejected_client_cause(&server.addr_string(), &tls, "www.example.com").await;
    assert!(cause.contains("not valid for 'www.example.com'"), "{cause}");
    assert!(
        cause.contains("it covers: DNS:localhost, IP:127.0.0.1, IP:::1;"),
        "the presented names are listed as certificates show them: {cause}"
    );
}

#[tokio::test]
async fn client_rejects_expired_server_certificate() {
    let pki = TestPki::new();
    pki.issue(
        "old-server",
        &TestPki::expired_spec(Purpose::Server, "localhost"),
    );
    let tls_server = tlsnet::tls::ServerTlsOptions::new(pki.identity("old-server"));
    let server = TestServer::start(tls_server).await;
    let mut tls = pki.client_tls();
    tls.identity = None;
    let cause = rejected_client_cause(&server.addr_string(), &tls, "localhost").await;
    assert!(
        cause.starts_with("server certificate expired on 20"),
        "{cause}"
    );
}

#[tokio::test]
async fn client_rejects_pin_mismatch_and_accepts_the_right_pin() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls_no_client_auth()).await;
    let wrong = tlsnet::tls::SpkiPin::of_spki(b"not the server's key");
    let tls = ClientTlsOptions {
        trust: ServerTrust::PinOnly,
        pin: Some(wrong),
        ..ClientTlsOptions::with_roots(Vec::new())
    };
    let cause = rejected_client_cause(&server.addr_string(), &tls, "localhost").await;
    assert!(
        cause.contains(&format!("does not match the pin {wrong}")),
        "{cause}"
    );

    // The right pin, with no CA at all, is accepted.
    let server_cert = tlsnet::tls::load_certs(&pki.path("server.pem")).unwrap();
    let right = tlsnet::tls::SpkiPin::of_certificate(&server_cert[0]).unwrap();
    let tls = ClientTlsOptions {
        pin: Some(right),
        ..tls
    };
    let (mut stream, report) = connect(&server.addr_string(), &tls).await.unwrap();
    assert_eq!(report.peer_leaf().unwrap().spki_pin, right.to_string());
    assert_eq!(
        echo_round_trip(&mut stream, b"pinned").await.unwrap(),
        b"pinned"
    );
}

#[tokio::test]
async fn tls12_only_client_is_refused_by_the_default_server() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls_no_client_auth()).await;
    // A client that speaks TLS 1.2 only, built directly with rustls.
    let mut roots = rustls::RootCertStore::empty();
    for ca in pki.ca_certs() {
        roots.add(ca).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(tlsnet::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let result = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    let Err(err) = result else {
        panic!("a TLS 1.2-only client must be refused");
    };
    let cause = tlsnet::tls::FailureCause::classify(&err, tlsnet::tls::Side::Client);
    assert!(cause.to_string().contains("TLS version"), "{cause}");
    wait_for_failure(&server.stats, "protocol_version").await;
}

#[tokio::test]
async fn tls12_is_served_when_asked_for() {
    let pki = TestPki::new();
    let mut tls_server = pki.server_tls();
    tls_server.allow_tls12 = true;
    let server = TestServer::start(tls_server).await;
    let id = pki.identity("client");
    let mut roots = rustls::RootCertStore::empty();
    for ca in pki.ca_certs() {
        roots.add(ca).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(tlsnet::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(id.chain, id.key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    stream.write_all(b"twelve").await.unwrap();
    let mut buf = [0u8; 6];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"twelve");
}
