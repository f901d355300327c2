//! Echo over TLS 1.3 on loopback, with and without client certificates, and under concurrency.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn echo_round_trip_with_client_certificate() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls()).await;
    let (mut stream, report) = connect(&server.addr_string(), &pki.client_tls())
        .await
        .unwrap();
    assert_eq!(report.protocol, "TLSv1.3");
    assert_eq!(report.key_exchange, "X25519MLKEM768");
    assert!(report.post_quantum);
    assert_eq!(
        report.peer_leaf().unwrap().common_name.as_deref(),
        Some("localhost")
    );
    let got = echo_round_trip(&mut stream, b"hello over mutual TLS")
        .await
        .unwrap();
    assert_eq!(got, b"hello over mutual TLS");
    // A clean close: our close_notify, then the server's.
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn echo_round_trip_without_client_auth() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls_no_client_auth()).await;
    let mut tls = pki.client_tls();
    tls.identity = None;
    let (mut stream, report) = connect(&server.addr_string(), &tls).await.unwrap();
    assert_eq!(report.protocol, "TLSv1.3");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let got = echo_round_trip(&mut stream, &data).await.unwrap();
    assert_eq!(got, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_each_get_their_own_bytes() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls()).await;
    let addr = server.addr_string();
    let tls = pki.client_tls().build().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..200u32 {
        let addr = addr.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            let connector = tlsnet::net::client::Connector::new(tls);
            let name = tlsnet::tls::server_name("localhost").unwrap();
            let (mut stream, _) = connector.connect(&addr, name).await.expect("connect");
            // Each client sends a distinct payload in several writes.
            let payload: Vec<u8> = format!("client {client} says ")
                .repeat(50 + client as usize)
                .into_bytes();
            for chunk in payload.chunks(700) {
                stream.write_all(chunk).await.unwrap();
            }
            stream.flush().await.unwrap();
            let mut got = vec![0u8; payload.len()];
            stream.read_exact(&mut got).await.unwrap();
            stream.shutdown().await.unwrap();
            assert_eq!(got, payload, "client {client} got someone else's bytes");
            client
        });
    }
    let mut done = 0;
    while let Some(result) = tasks.join_next().await {
        result.expect("client task");
        done += 1;
    }
    assert_eq!(done, 200);
    assert_eq!(
        server
            .stats
            .handshakes
            .load(std::sync::atomic::Ordering::Relaxed),
        200
    );
}

#[tokio::test]
async fn ipv6_loopback_works() {
    let pki = TestPki::new();
    let listeners = match tlsnet::net::bind("[::1]:0").await {
        Ok(l) => l,
        Err(e) => {
            // Some sandboxes have no IPv6 at all; say so rather than pass silently.
            eprintln!("IPv6 loopback unavailable here: {e}");
            return;
        }
    };
    let addr = listeners[0].local_addr().unwrap().to_string();
    let server = tlsnet::net::Server::new(pki.server_tls().build().unwrap(), tlsnet::service::Echo);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listeners, async {
        let _ = stopped.await;
    }));
    let connector = tlsnet::net::client::Connector::new(pki.client_tls().build().unwrap());
    let (mut stream, _) = connector
        .connect(&addr, tlsnet::tls::server_name("::1").unwrap())
        .await
        .unwrap();
    assert_eq!(echo_round_trip(&mut stream, b"v6").await.unwrap(), b"v6");
    drop(stream);
    let _ = stop.send(());
    let _ = task.await;
}
