//! Hostile and broken clients while a well-behaved client keeps being served.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tlsnet::net::ServerOptions;
use tlsnet::service::Echo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until EOF or error, with a deadline; returns what was read.
async fn read_until_closed(tcp: &mut TcpStream, deadline: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server must close the connection");
    got
}

#[tokio::test]
async fn plaintext_http_request_is_answered_and_named() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    good_client_is_served(&pki, &server.addr_string()).await;
    let answer = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("This port speaks TLS"), "{answer}");
    wait_for_failure(&server.stats, "plaintext_http").await;
}

#[tokio::test]
async fn random_bytes_are_rejected() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls()).await;
    // Garbage that does not look like TLS, and garbage that starts like a TLS record.
    let mut not_tls = TcpStream::connect(server.addr).await.unwrap();
    not_tls
        .write_all(&[0x00, 0xff, 0x13, 0x37, 0x42, 0x99, 0x01, 0x02])
        .await
        .unwrap();
    let mut fake_tls = TcpStream::connect(server.addr).await.unwrap();
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    junk.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    fake_tls.write_all(&junk).await.unwrap();
    good_client_is_served(&pki, &server.addr_string()).await;
    read_until_closed(&mut not_tls, Duration::from_secs(5)).await;
    read_until_closed(&mut fake_tls, Duration::from_secs(5)).await;
    wait_for_failure(&server.stats, "not_tls").await;
    assert_eq!(
        server
            .stats
            .handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn silent_connection_is_dropped_at_the_handshake_deadline() {
    let pki = TestPki::new();
    let options = ServerOptions {
        handshake_timeout: Duration::from_millis(400),
        ..test_options()
    };
    let server = TestServer::start_with(pki.server_tls(), Echo, options).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // A second one that starts a TLS record and then stalls (slowloris-style).
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    good_client_is_served(&pki, &server.addr_string()).await;
    read_until_closed(&mut silent, Duration::from_secs(5)).await;
    read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "dropped too early: {waited:?}"
    );
    wait_for_failure(&server.stats, "timeout").await;
    assert_eq!(server.stats.failures("timeout"), 2);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_slots_come_back() {
    let pki = TestPki::new();
    let options = ServerOptions {
        max_connections: 3,
        handshake_timeout: Duration::from_secs(30),
        ..test_options()
    };
    let server = TestServer::start_with(pki.server_tls(), Echo, options).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Let the server accept them so they hold the slots.
    for _ in 0..100 {
        if server
            .stats
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert_eq!(
        server
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The idle clients leave; their slots are freed and a good client is served.
    drop(idle);
    let mut served = false;
    for _ in 0..50 {
        if let Ok(Ok((mut stream, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            connect(&server.addr_string(), &pki.client_tls()),
        )
        .await
        {
            if echo_round_trip(&mut stream, b"back").await.is_ok() {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a good client must be served once slots are free");
}

#[tokio::test]
async fn many_half_open_handshakes_do_not_stop_good_clients() {
    let pki = TestPki::new();
    let options = ServerOptions {
        handshake_timeout: Duration::from_secs(2),
        ..test_options()
    };
    let server = TestServer::start_with(pki.server_tls(), Echo, options).await;
    let mut hostile = Vec::new();
    for i in 0..200 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 0 {
            let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await;
        }
        hostile.push(tcp);
    }
    let started = Instant::now();
    good_client_is_served(&pki, &server.addr_string()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "good client waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn idle_connection_is_closed_after_idle_timeout() {
    let pki = TestPki::new();
    let options = ServerOptions {
        idle_timeout: Some(Duration::from_millis(300)),
        ..test_options()
    };
    let server = TestServer::start_with(pki.server_tls(), Echo, options).await;
    let (mut stream, _) = connect(&server.addr_string(), &pki.client_tls())
        .await
        .unwrap();
    assert_eq!(echo_round_trip(&mut stream, b"x").await.unwrap(), b"x");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        read.expect("closed by the server").is_ok(),
        "closed cleanly with close_notify"
    );
}
