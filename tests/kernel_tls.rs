//! Kernel TLS (`--ktls`). On a kernel without the `tls` module, as on the machines CI runs on,
//! every connection must stay on rustls, lose nothing and say why; on one with it, the same
//! tests check the kernel's path: `scripts/ktls-vm` boots such a kernel and runs them there
//! with `TLSNET_REQUIRE_KTLS=1`, which turns "no module" into a failure.

mod common;

use std::time::Duration;

use common::*;
use tlsnet::net::kernel_tls::kernel_has_tls;
use tlsnet::net::ServerStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether the kernel path is expected here; with `TLSNET_REQUIRE_KTLS` set it must be.
fn kernel_expected() -> bool {
    let have = kernel_has_tls();
    assert!(
        have || std::env::var_os("TLSNET_REQUIRE_KTLS").is_none(),
        "TLSNET_REQUIRE_KTLS is set, but this kernel has no TLS module"
    );
    have
}

async fn ktls_server(pki: &TestPki) -> TestServer {
    let mut tls = pki.server_tls();
    tls.kernel_tls = true;
    TestServer::start(tls).await
}

/// Checks that all `n` connections took the path this kernel allows (none the other).
fn assert_paths(stats: &ServerStats, n: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let paths = (
        stats.kernel_tls.load(Relaxed),
        stats.kernel_tls_fallbacks.load(Relaxed),
    );
    let expected = if kernel_expected() { (n, 0) } else { (0, n) };
    assert_eq!(paths, expected, "(kernel, rustls) connections");
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

#[tokio::test]
async fn every_byte_comes_back_on_the_path_the_kernel_allows_and_both_sides_close_cleanly() {
    bounded(async {
        let pki = TestPki::new();
        let server = ktls_server(&pki).await;
        let (mut stream, report) = connect(&server.addr_string(), &pki.client_tls())
            .await
            .unwrap();
        assert_eq!(report.protocol, "TLSv1.3");
        // Written at once after the handshake, so some of it may come with the client's
        // Finished: those bytes must not be lost on the way to the kernel.
        let data = pattern(3 * 1024 * 1024 + 7, 1);
        let got = echo_round_trip(&mut stream, &data).await.unwrap();
        assert!(got == data, "the echo differs");
        // Our close_notify ends the server's reading; its close_notify ends ours, cleanly.
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_paths(&server.stats, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_each_get_their_own_bytes() {
    bounded(async {
        let pki = TestPki::new();
        let server = ktls_server(&pki).await;
        let addr = server.addr_string();
        let tls = pki.client_tls();
        let mut tasks = tokio::task::JoinSet::new();
        for client in 0..50u32 {
            let (addr, tls) = (addr.clone(), tls.clone());
            tasks.spawn(async move {
                let (mut stream, _) = connect(&addr, &tls).await.expect("connect");
                let data = pattern(40_000 + client as usize * 997, client);
                let got = echo_round_trip(&mut stream, &data).await.expect("echo");
                assert!(got == data, "client {client}: the echo differs");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert_paths(&server.stats, 50);
    })
    .await;
}

/// rustls follows a key update; the kernel path does not, and must end the connection
/// rather than misread what follows.
#[tokio::test]
async fn a_key_update_is_followed_on_rustls_and_ends_a_kernel_connection() {
    bounded(async {
        let pki = TestPki::new();
        let server = ktls_server(&pki).await;
        let (mut stream, _) = connect(&server.addr_string(), &pki.client_tls())
            .await
            .unwrap();
        let got = echo_round_trip(&mut stream, b"before").await.unwrap();
        assert_eq!(got, b"before");
        stream.get_mut().1.refresh_traffic_keys().unwrap();
        stream.write_all(b"after").await.unwrap();
        stream.flush().await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 5];
            match stream.read_exact(&mut buf).await {
                Ok(_) => got.extend_from_slice(&buf),
                Err(e) => println!("read after the key update: {e}"),
            }
        })
        .await;
        assert!(read.is_ok(), "no answer within 10 s after the key update");
        if kernel_expected() {
            assert!(
                got.is_empty(),
                "the kernel path echoed {got:?} after a key update"
            );
        } else {
            assert_eq!(got, b"after");
        }
    })
    .await;
}

/// The binary: `serve --ktls` says once which path connections take, and why.
#[tokio::test]
async fn serve_says_which_path_its_connections_take() {
    bounded(async {
        let pki = TestPki::new();
        let ca = pki.path("ca.pem");
        let server =
            ServeProcess::start_pki(&pki, &["--client-ca", ca.to_str().unwrap(), "--ktls"]);
        for _ in 0..2 {
            let (mut stream, _) = connect(&server.addr(), &pki.client_tls()).await.unwrap();
            let got = echo_round_trip(&mut stream, b"through --ktls")
                .await
                .unwrap();
            assert_eq!(got, b"through --ktls");
        }
        let needle = if kernel_expected() {
            "kernel TLS: the kernel carries the records of this connection"
        } else {
            "kernel TLS: this connection stays on rustls: the kernel has no TLS module"
        };
        let log = server.wait_for_log(needle);
        assert_eq!(log.matches("kernel TLS:").count(), 1, "said once:\n{log}");
    })
    .await;
}

/// OpenSSL's client over TLS 1.2 and 1.3 (the kernel has a record format for each), with a
/// client certificate: its line comes back and it exits cleanly.
#[tokio::test]
async fn openssl_s_client_over_tls_1_2_and_1_3_gets_its_line_echoed() {
    require("openssl");
    bounded(async {
        let pki = TestPki::new();
        let mut tls = pki.server_tls();
        tls.kernel_tls = true;
        tls.allow_tls12 = true;
        let server = TestServer::start(tls).await;
        for version in ["-tls1_2", "-tls1_3"] {
            let mut command = tokio::process::Command::new("openssl");
            command
                .args(["s_client", version, "-connect", &server.addr_string()])
                .args(["-verify_return_error", "-servername", "localhost"])
                .arg("-CAfile")
                .arg(pki.path("ca.pem"))
                .arg("-cert")
                .arg(pki.path("client.pem"))
                .arg("-key")
                .arg(pki.path("client-key.pem"));
            let mut client = Proc::spawn("openssl s_client", command);
            let line = format!("hello over {version}\n");
            client.write_stdin(line.as_bytes()).await;
            client.wait_for_stdout(&line).await;
            let status = client.finish(STEP).await;
            assert!(status.success(), "{}", client.describe());
            let want = if version == "-tls1_2" {
                "TLSv1.2"
            } else {
                "TLSv1.3"
            };
            assert!(
                squeeze(&client.stdout()).contains(&format!("New, {want}, Cipher is")),
                "{}",
                client.describe()
            );
        }
        assert_paths(&server.stats, 2);
    })
    .await;
}

/// `tunnel server --ktls`: the client's half-close reaches the backend (as close_notify, then
/// EOF), the backend's answer and its close come back (close_notify from the kernel path).
#[tokio::test]
async fn a_tunnel_relays_both_ways_with_half_close() {
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::start(|mut tcp| async move {
            let mut request = Vec::new();
            if tcp.read_to_end(&mut request).await.is_ok() {
                let answer = format!("got {} bytes", request.len());
                let _ = tcp.write_all(answer.as_bytes()).await;
            }
        })
        .await;
        let (mut server, addr) =
            start_tunnel_server(&pki, &backend.target(), &["--allow-all", "--ktls"]).await;
        let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        let data = pattern(1024 * 1024 + 3, 9);
        stream.write_all(&data).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut got))
            .await
            .expect("answer in time")
            .expect("a clean close after the answer");
        assert_eq!(got, format!("got {} bytes", data.len()).as_bytes());
        let needle = if kernel_expected() {
            "the kernel carries the records"
        } else {
            "stays on rustls"
        };
        server.wait_for_stderr(needle).await;
    })
    .await;
}
