//! One port, many services and names: services chosen by ALPN (echo for clients that send
//! none), server certificates chosen by SNI, and a reload that replaces every certificate.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tlsnet::pki::{LeafSpec, Purpose};
use tlsnet::service::echo::{DISCARD_ALPN, ECHO_ALPN};
use tlsnet::service::{Discard, Echo, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn services() -> Router {
    Router::new(Arc::new(Echo))
        .route(ECHO_ALPN, Arc::new(Echo))
        .route(DISCARD_ALPN, Arc::new(Discard))
}

#[tokio::test]
async fn alpn_picks_the_service_and_no_alpn_gets_the_default() {
    let pki = TestPki::new();
    let server = TestServer::start_with(pki.server_tls(), services(), test_options()).await;
    let addr = server.addr_string();

    // No ALPN (the seeds' clients, openssl s_client): the default service, echo.
    let (mut stream, report) = connect(&addr, &pki.client_tls()).await.unwrap();
    assert_eq!(report.alpn, None);
    assert_eq!(
        echo_round_trip(&mut stream, b"no alpn").await.unwrap(),
        b"no alpn"
    );

    // Echo by its id.
    let mut tls = pki.client_tls();
    tls.alpn = vec![ECHO_ALPN.to_vec()];
    let (mut stream, report) = connect(&addr, &tls).await.unwrap();
    assert_eq!(report.alpn.as_deref(), Some("tlsnet-echo"));
    assert_eq!(
        echo_round_trip(&mut stream, b"echo").await.unwrap(),
        b"echo"
    );

    // Discard by its id: what we send is read and nothing comes back.
    let mut tls = pki.client_tls();
    tls.alpn = vec![b"h2".to_vec(), DISCARD_ALPN.to_vec()];
    let (mut stream, report) = connect(&addr, &tls).await.unwrap();
    assert_eq!(report.alpn.as_deref(), Some("tlsnet-discard"));
    stream.write_all(&[7u8; 100_000]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut back))
        .await
        .expect("discard closes after our close_notify")
        .unwrap();
    assert!(back.is_empty(), "discard sent {} bytes", back.len());
    assert!(
        server
            .stats
            .bytes_in
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 100_000
    );

    // Only ids we do not run: refused in the handshake with no_application_protocol.
    let mut tls = pki.client_tls();
    tls.alpn = vec![b"h2".to_vec()];
    let err = connect(&addr, &tls).await.expect_err("refused");
    let cause = client_cause(&err);
    assert!(cause.contains("no_application_protocol"), "{cause}");
    wait_for_failure(&server.stats, "no_application_protocol").await;
    good_client_is_served(&pki, &addr).await;
}

/// A certificate for `name` (and 127.0.0.1, so that a client without SNI can verify it).
fn issue_server(pki: &TestPki, file: &str, name: &str) {
    let mut spec = LeafSpec::new(Purpose::Server, name);
    spec.dns = vec![name.to_owned()];
    spec.ips = vec!["127.0.0.1".parse().unwrap()];
    pki.issue(file, &spec);
}

/// The certificate the server presents for `servername` (`None`: no SNI), as (CN, serial).
fn presented(pki: &TestPki, server: &ServeProcess, servername: Option<&str>) -> (String, String) {
    let ca = pki.path("ca.pem");
    let cert = pki.path("client.pem");
    let key = pki.path("client-key.pem");
    let mut args = vec![
        server.addr(),
        "--ca".into(),
        ca.to_str().unwrap().to_owned(),
        "--cert".into(),
        cert.to_str().unwrap().to_owned(),
        "--key".into(),
        key.to_str().unwrap().to_owned(),
        "--json".into(),
    ];
    if let Some(name) = servername {
        args.extend(["--servername".into(), name.to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = connect_cmd(&args, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json_start = out.stderr.find('{').expect("JSON report");
    let report: serde_json::Value =
        serde_json::from_str(&out.stderr[json_start..]).expect("JSON report");
    (
        report["peer"]["common_name"].as_str().unwrap().to_owned(),
        report["peer"]["serial"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn sni_picks_the_certificate_and_a_reload_replaces_every_one() {
    let pki = TestPki::new();
    issue_server(&pki, "alpha", "alpha.test");
    issue_server(&pki, "beta", "beta.test");
    let path = |name: &str| pki.path(name).to_str().unwrap().to_owned();
    let server = ServeProcess::start(
        pki.dir.path(),
        &[
            "--cert",
            &path("alpha.pem"),
            "--key",
            &path("alpha-key.pem"),
            "--cert",
            &path("beta.pem"),
            "--key",
            &path("beta-key.pem"),
            "--client-ca",
            &path("ca.pem"),
            "--reload-interval",
            "0",
        ],
    );
    let (alpha_cn, alpha_serial) = presented(&pki, &server, Some("alpha.test"));
    let (beta_cn, beta_serial) = presented(&pki, &server, Some("beta.test"));
    assert_eq!(
        (alpha_cn.as_str(), beta_cn.as_str()),
        ("alpha.test", "beta.test")
    );
    // No SNI (an IP address): the first certificate.
    assert_eq!(presented(&pki, &server, None).0, "alpha.test");

    // A name neither covers gets the first one too, and the client says whose names it has.
    let ca = path("ca.pem");
    let out = connect_cmd(
        &[
            &server.addr(),
            "--ca",
            &ca,
            "--cert",
            &path("client.pem"),
            "--key",
            &path("client-key.pem"),
            "--servername",
            "gamma.test",
        ],
        b"",
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("DNS:alpha.test"), "{}", out.stderr);

    // New certificates in the same files; SIGHUP reloads both.
    issue_server(&pki, "alpha", "alpha.test");
    issue_server(&pki, "beta", "beta.test");
    server.signal("HUP");
    server.wait_for_log("reloaded TLS material");
    let (_, alpha_after) = presented(&pki, &server, Some("alpha.test"));
    let (_, beta_after) = presented(&pki, &server, Some("beta.test"));
    assert_ne!(alpha_after, alpha_serial, "alpha was not replaced");
    assert_ne!(beta_after, beta_serial, "beta was not replaced");
}

#[test]
fn cert_and_key_come_in_pairs() {
    let pki = TestPki::new();
    let path = |name: &str| pki.path(name).to_str().unwrap().to_owned();
    let out = tlsnet(&[
        "serve",
        "--cert",
        &path("server.pem"),
        "--key",
        &path("server-key.pem"),
        "--cert",
        &path("server.pem"),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("pairs"), "{}", out.stderr);
}
