//! `tlsnet tunnel server|client` with real backends (a TCP echo, Python's HTTP server, Redis,
//! a unix socket), with stunnel on either side, with HAProxy reading our PROXY v2 header, and
//! under the failures a tunnel meets: refused clients, a backend that is down, slow to accept
//! or closes first, half-closes, a thousand clients at once, a client that never reads.
//! Loopback only; every certificate is made at test time; every wait is bounded.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tlsnet::net::client::Connector;
use tlsnet::pki::{LeafSpec, Purpose};
use tlsnet::tls::{load_certs, server_name, ClientTlsOptions, SpkiPin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

fn path(pki: &TestPki, name: &str) -> String {
    pki.path(name).to_str().unwrap().to_owned()
}

/// Client TLS options with the certificate `NAME.pem` of the test PKI.
fn client_as(pki: &TestPki, name: &str) -> ClientTlsOptions {
    ClientTlsOptions::with_roots(pki.ca_certs()).with_identity(pki.identity(name))
}

/// Sends `data` over a plain TCP connection to `addr`, closes the write side, and returns
/// everything that comes back.
async fn plain_round_trip(addr: &str, data: &[u8]) -> Vec<u8> {
    tokio::time::timeout(STEP, async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(data).await.expect("write");
        tcp.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).await.expect("read");
        got
    })
    .await
    .expect("plain round trip in time")
}

#[tokio::test]
async fn tcp_echo_through_the_tunnel() {
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::echo().await;
        let (_server, addr) = start_tunnel_server(&pki, &backend.target(), &["--allow-all"]).await;
        let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        let got = echo_round_trip(&mut stream, b"hello tunnel").await.unwrap();
        assert_eq!(got, b"hello tunnel");
        assert_eq!(backend.accepts(), 1);
    })
    .await
}

#[tokio::test]
async fn python_http_server_through_the_tunnel() {
    require("python3");
    bounded(async {
        let pki = TestPki::new();
        let site = tempfile::tempdir().unwrap();
        write(&site.path().join("hello.txt"), "hello over http\n");
        let dir = site.path().to_owned();
        let (_http, port) =
            start_listening_peer("python3 -m http.server", "Serving HTTP", |port| {
                let mut command = Command::new("python3");
                command
                    .args(["-u", "-m", "http.server", "--bind", "127.0.0.1"])
                    .arg(port.to_string())
                    .current_dir(&dir);
                command
            })
            .await;
        let (_server, addr) =
            start_tunnel_server(&pki, &format!("127.0.0.1:{port}"), &["--allow-cn", "alice"]).await;
        let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        stream
            .write_all(b"GET /hello.txt HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut response))
            .await
            .expect("response in time")
            .expect("the tunnel closes with close_notify when the server closes");
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        assert!(response.ends_with("hello over http\n"), "{response}");
    })
    .await
}

#[tokio::test]
async fn redis_cli_through_tunnel_client_and_tunnel_server() {
    require("redis-server");
    require("redis-cli");
    bounded(async {
        let pki = TestPki::new();
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().to_owned();
        let (_redis, port) =
            start_listening_peer("redis-server", "Ready to accept connections", |port| {
                let mut command = Command::new("redis-server");
                command
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&dir);
                command
            })
            .await;
        let (mut server, server_addr) =
            start_tunnel_server(&pki, &format!("127.0.0.1:{port}"), &["--allow-cn", "alice"]).await;
        let (_client, client_addr) =
            start_tunnel_client(&pki, &server_addr, &["--verify-dns", "localhost"]).await;
        let (host, client_port) = client_addr.split_once(':').unwrap();
        let cli = |args: &[&str]| {
            let mut command = Command::new("redis-cli");
            command.args(["-h", host, "-p", client_port]).args(args);
            command
        };
        let set = tokio::time::timeout(
            STEP,
            cli(&["SET", "greeting", "through the tunnel"]).output(),
        )
        .await
        .expect("redis-cli SET in time")
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "OK", "{set:?}");
        let get = tokio::time::timeout(STEP, cli(&["GET", "greeting"]).output())
            .await
            .expect("redis-cli GET in time")
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&get.stdout).trim(),
            "through the tunnel",
            "{get:?}"
        );
        // Two connections went through, each with alice's certificate.
        server
            .wait_until("two tunnelled connections", STEP, |_, err| {
                err.matches("client_cn=\"alice\"").count() >= 2
            })
            .await;
    })
    .await
}

#[tokio::test]
async fn unix_socket_target() {
    bounded(async {
        let pki = TestPki::new();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("backend.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            while let Ok((mut unix, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let _ = unix.read_to_end(&mut request).await;
                    let _ = unix.write_all(&[b"unix: ", &request[..]].concat()).await;
                });
            }
        });
        let target = format!("unix:{}", socket.display());
        let (_server, addr) = start_tunnel_server(&pki, &target, &["--allow-all"]).await;
        let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        stream.write_all(b"over a socket file").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"unix: over a socket file");
    })
    .await
}

/// Starts stunnel with the configuration `make(PORT)` returns (it listens on PORT).
async fn start_stunnel(pki: &TestPki, make: impl Fn(u16) -> String) -> (Proc, String) {
    require("stunnel");
    let dir = pki.dir.path().to_owned();
    let (stunnel, port) = start_listening_peer("stunnel", "Configuration successful", |port| {
        let conf = dir.join(format!("stunnel-{port}.conf"));
        write(&conf, &format!("foreground = yes\npid =\n{}", make(port)));
        let mut command = Command::new("stunnel");
        command.arg(conf);
        command
    })
    .await;
    let addr = format!("127.0.0.1:{port}");
    wait_for_port(&addr).await;
    (stunnel, addr)
}

#[tokio::test]
async fn stunnel_client_to_tunnel_server() {
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::echo().await;
        let (_server, tunnel) =
            start_tunnel_server(&pki, &backend.target(), &["--allow-cn", "alice"]).await;
        let (_stunnel, local) = start_stunnel(&pki, |port| {
            format!(
                "[to-tlsnet]\nclient = yes\naccept = 127.0.0.1:{port}\nconnect = {tunnel}\n\
                 cert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\ncheckHost = localhost\n\
                 sni = localhost\n",
                path(&pki, "client.pem"),
                path(&pki, "client-key.pem"),
                path(&pki, "ca.pem"),
            )
        })
        .await;
        let got = plain_round_trip(&local, b"stunnel to tlsnet").await;
        assert_eq!(got, b"stunnel to tlsnet");
        // (stunnel's readiness probe went through too: no exact count here.)
        assert!(backend.accepts() >= 1);
    })
    .await
}

#[tokio::test]
async fn tunnel_client_to_stunnel_server() {
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::echo().await;
        let target = backend.target();
        let (_stunnel, upstream) = start_stunnel(&pki, |port| {
            format!(
                "[from-tlsnet]\naccept = 127.0.0.1:{port}\nconnect = {target}\n\
                 cert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\n",
                path(&pki, "server.pem"),
                path(&pki, "server-key.pem"),
                path(&pki, "ca.pem"),
            )
        })
        .await;
        let (mut client, local) =
            start_tunnel_client(&pki, &upstream, &["--verify-cn", "localhost"]).await;
        let got = plain_round_trip(&local, b"tlsnet to stunnel").await;
        assert_eq!(got, b"tlsnet to stunnel");
        assert_eq!(backend.accepts(), 1);
        client.wait_for_stderr("tunnel connection closed").await;
    })
    .await
}

#[tokio::test]
async fn tunnel_client_refuses_a_server_that_fails_verify_rules() {
    bounded(async {
        let pki = TestPki::new();
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let backend = TestBackend::start(move |mut tcp| {
            let counter = counter.clone();
            async move {
                let mut got = Vec::new();
                let _ = tcp.read_to_end(&mut got).await;
                counter.fetch_add(got.len() as u64, Ordering::SeqCst);
            }
        })
        .await;
        let (_server, upstream) =
            start_tunnel_server(&pki, &backend.target(), &["--allow-all"]).await;
        let (mut client, local) =
            start_tunnel_client(&pki, &upstream, &["--verify-cn", "someone-else"]).await;
        // The local connection is closed unanswered (a reset, as our bytes were never read).
        let outcome = tokio::time::timeout(STEP, async {
            let mut tcp = TcpStream::connect(&local).await.expect("connect");
            tcp.write_all(b"must not pass").await.expect("write");
            let mut got = Vec::new();
            tcp.read_to_end(&mut got).await.map(|_| got)
        })
        .await
        .expect("closed in time");
        assert!(
            outcome.is_err() || outcome.as_ref().is_ok_and(|g| g.is_empty()),
            "{outcome:?}"
        );
        client.wait_for_stderr("matches no --verify-* rule").await;
        // The server tunnelled the handshake; not one byte of the local client followed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(received.load(Ordering::SeqCst), 0);
    })
    .await
}

#[tokio::test]
async fn access_policy_per_rule_kind_refused_clients_never_reach_the_backend() {
    bounded(async {
        let pki = TestPki::new();
        pki.issue("cn", &LeafSpec::new(Purpose::Client, "carol"));
        pki.issue_with_ou("ou", "dave", "ops");
        let mut dns = LeafSpec::new(Purpose::Client, "web");
        dns.dns = vec!["web.acme.internal".into()];
        pki.issue("dns", &dns);
        let mut uri = LeafSpec::new(Purpose::Client, "svc");
        uri.uris = vec!["spiffe://acme/ns/web".into()];
        pki.issue("uri", &uri);
        pki.issue("pin", &LeafSpec::new(Purpose::Client, "pinned"));
        pki.issue("mallory", &LeafSpec::new(Purpose::Client, "mallory"));
        let pin_der = load_certs(&pki.path("pin.pem")).unwrap().remove(0);
        let pin = SpkiPin::of_certificate(&pin_der).unwrap().to_string();
        let cases: [(&str, &str, &str); 5] = [
            ("--allow-cn", "carol", "cn"),
            ("--allow-ou", "ops", "ou"),
            ("--allow-dns", "*.acme.internal", "dns"),
            ("--allow-uri", "spiffe://acme/**", "uri"),
            ("--allow-spki-pin", &pin, "pin"),
        ];
        for (flag, rule, admitted) in cases {
            let backend = TestBackend::echo().await;
            let (mut server, addr) =
                start_tunnel_server(&pki, &backend.target(), &[flag, rule]).await;
            let (mut ok, _) = connect(&addr, &client_as(&pki, admitted)).await.unwrap();
            let got = echo_round_trip(&mut ok, b"admitted").await.unwrap();
            assert_eq!(got, b"admitted", "{flag} {rule}");
            for refused in ["mallory", "client"] {
                let outcome = match connect(&addr, &client_as(&pki, refused)).await {
                    Err(e) => Err(e.to_string()),
                    Ok((mut stream, _)) => {
                        send_and_read(&mut stream).await.map_err(|e| e.to_string())
                    }
                };
                assert!(
                    matches!(&outcome, Err(_) | Ok(0)),
                    "{refused} got through {flag} {rule}: {outcome:?}"
                );
            }
            server.wait_for_stderr("access denied").await;
            drop(ok);
            assert_eq!(
                backend.accepts(),
                1,
                "{flag} {rule}: only the admitted client reached the backend"
            );
        }
    })
    .await
}

#[tokio::test]
async fn backend_down_closes_with_close_notify_and_logs_why() {
    bounded(async {
        let pki = TestPki::new();
        let port = free_port();
        let (mut server, addr) =
            start_tunnel_server(&pki, &format!("127.0.0.1:{port}"), &["--allow-all"]).await;
        let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(STEP, stream.read_to_end(&mut got))
            .await
            .expect("closed in time");
        assert!(read.is_ok(), "expected close_notify, got {read:?}");
        assert!(got.is_empty());
        server
            .wait_for_stderr(&format!("cannot connect to the backend 127.0.0.1:{port}"))
            .await;
        server.wait_for_stderr("Connection refused").await;
    })
    .await
}

#[tokio::test]
async fn backend_slow_to_accept_hits_the_connect_timeout() {
    bounded(async {
        let pki = TestPki::new();
        // A listener with a backlog of 0 that never accepts: once its queue holds what it can,
        // Linux drops further SYNs, and a connect hangs until the caller gives up.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        socket.listen(0).unwrap();
        let listener: std::net::TcpListener = socket.into();
        let target = listener.local_addr().unwrap().to_string();
        let mut queued = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(&target))
                .await
            {
                Ok(Ok(tcp)) => queued.push(tcp),
                _ => break,
            }
        }
        assert!(queued.len() < 16, "the backlog never filled");
        let (mut server, addr) =
            start_tunnel_server(&pki, &target, &["--allow-all", "--connect-timeout", "1s"]).await;
        let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(STEP, stream.read_to_end(&mut got))
            .await
            .expect("closed in time");
        let waited = started.elapsed();
        assert!(read.is_ok(), "expected close_notify, got {read:?}");
        assert!(
            waited >= Duration::from_millis(800) && waited < Duration::from_secs(8),
            "closed after {waited:?}"
        );
        server.wait_for_stderr("no connection within 1s").await;
        drop(listener);
    })
    .await
}

#[tokio::test]
async fn backend_closes_first() {
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::start(|mut tcp| async move {
            let _ = tcp.write_all(b"bye\n").await;
            // Dropped: closed.
        })
        .await;
        let (_server, addr) = start_tunnel_server(&pki, &backend.target(), &["--allow-all"]).await;
        let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut got))
            .await
            .expect("closed in time")
            .expect("close_notify after the backend's bytes");
        assert_eq!(got, b"bye\n");
    })
    .await
}

#[tokio::test]
async fn client_half_close_still_gets_the_response() {
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::start(|mut tcp| async move {
            let mut request = Vec::new();
            if tcp.read_to_end(&mut request).await.is_ok() {
                let answer = format!(
                    "got {} bytes: {}",
                    request.len(),
                    String::from_utf8_lossy(&request)
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            }
        })
        .await;
        let (_server, addr) = start_tunnel_server(&pki, &backend.target(), &["--allow-all"]).await;
        let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        stream.write_all(b"request").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut got))
            .await
            .expect("response in time")
            .unwrap();
        assert_eq!(got, b"got 7 bytes: request");
    })
    .await
}

#[tokio::test]
async fn a_thousand_concurrent_tunnelled_connections_each_get_their_own_bytes() {
    const N: usize = 1000;
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::echo().await;
        let (_server, addr) = start_tunnel_server(&pki, &backend.target(), &["--allow-all"]).await;
        let mut connector = Connector::new(pki.client_tls().build().unwrap());
        connector.connect_timeout = Duration::from_secs(60);
        connector.handshake_timeout = Duration::from_secs(60);
        let all_open = Arc::new(tokio::sync::Barrier::new(N));
        let mut tasks = Vec::new();
        for i in 0..N {
            let (connector, addr, all_open) = (connector.clone(), addr.clone(), all_open.clone());
            tasks.push(tokio::spawn(async move {
                let (mut stream, _) = connector
                    .connect(&addr, server_name("localhost").unwrap())
                    .await
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                let first = format!("connection {i} says hello;");
                let got = echo_round_trip(&mut stream, first.as_bytes())
                    .await
                    .unwrap();
                assert_eq!(got, first.as_bytes());
                // Every connection is open at once before any sends its second part.
                all_open.wait().await;
                let second = format!("and {i} says goodbye");
                stream.write_all(second.as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, second.as_bytes(), "connection {i}");
            }));
        }
        let all = async {
            for task in tasks {
                task.await.expect("connection task");
            }
        };
        tokio::time::timeout(Duration::from_secs(150), all)
            .await
            .expect("1,000 connections within 150 s");
        assert_eq!(backend.accepts(), N);
    })
    .await
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_grow_the_servers_memory() {
    bounded(async {
        let pki = TestPki::new();
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        // A backend that writes as fast as it is let.
        let backend = TestBackend::start(move |mut tcp| {
            let counter = counter.clone();
            async move {
                let chunk = vec![0x5au8; 64 * 1024];
                while tcp.write_all(&chunk).await.is_ok() {
                    counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
        })
        .await;
        let (server, addr) = start_tunnel_server(&pki, &backend.target(), &["--allow-all"]).await;
        let pid = server.pid().expect("tunnel server pid");
        // A first connection that reads a few megabytes, so that the allocator and the
        // buffers are warm before the baseline.
        {
            let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
            let mut buf = vec![0u8; 4 * 1024 * 1024];
            stream.read_exact(&mut buf).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(pid);
        let (_stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stalled_at = written.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let later = written.load(Ordering::Relaxed);
        let after = rss_kib(pid);
        assert!(
            later - stalled_at < 1024 * 1024,
            "the backend kept writing ({stalled_at} then {later} bytes): no backpressure"
        );
        assert!(
            after < before + 16 * 1024,
            "tunnel server RSS grew from {before} KiB to {after} KiB"
        );
    })
    .await
}

/// The OpenSSL name of a rustls suite name, as the header carries it.
fn openssl_name(rustls: &str) -> String {
    rustls.replace("TLS13_", "TLS_")
}

#[tokio::test]
async fn proxy_protocol_v2_carries_address_alpn_sni_and_identity() {
    bounded(async {
        let pki = TestPki::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let backend = TestBackend::start(move |mut tcp| {
            let tx = tx.clone();
            async move {
                let header = read_proxy_v2(&mut tcp).await;
                let _ = tx.send(header);
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        })
        .await;
        let (_server, addr) = start_tunnel_server(
            &pki,
            &backend.target(),
            &[
                "--allow-cn",
                "alice",
                "--proxy-protocol",
                "--alpn",
                "tlsnet-test",
            ],
        )
        .await;
        let mut tls = pki.client_tls();
        tls.alpn = vec![b"tlsnet-test".to_vec()];
        let (mut stream, report) = connect(&addr, &tls).await.unwrap();
        let local = stream.get_ref().0.get_ref().local_addr().unwrap();
        let got = echo_round_trip(&mut stream, b"after the header")
            .await
            .unwrap();
        assert_eq!(
            got, b"after the header",
            "the header is not relayed to the client"
        );
        let bytes = tokio::time::timeout(STEP, rx.recv())
            .await
            .unwrap()
            .unwrap();
        let header = parse_proxy_v2(&bytes).unwrap();
        assert_eq!(header.command, 0x1, "PROXY");
        assert_eq!(header.family, 0x11, "TCP over IPv4");
        assert_eq!(header.source, local);
        assert_eq!(header.destination.to_string(), addr);
        assert_eq!(header.tlv(0x01), Some(&b"tlsnet-test"[..]), "PP2_TYPE_ALPN");
        assert_eq!(
            header.tlv(0x02),
            Some(&b"localhost"[..]),
            "PP2_TYPE_AUTHORITY"
        );
        let ssl = header.ssl().expect("PP2_TYPE_SSL");
        assert_eq!(ssl.client, 0x01 | 0x02 | 0x04, "SSL, CERT_CONN, CERT_SESS");
        assert_eq!(ssl.verify, 0);
        assert_eq!(ssl.sub(0x21), Some(&b"TLSv1.3"[..]), "SSL_VERSION");
        assert_eq!(ssl.sub(0x22), Some(&b"alice"[..]), "SSL_CN");
        assert_eq!(
            ssl.sub(0x23),
            Some(openssl_name(&report.cipher_suite).as_bytes()),
            "SSL_CIPHER"
        );
        let der = load_certs(&pki.path("client.pem")).unwrap().remove(0);
        assert_eq!(ssl.sub(0x28), Some(der.as_ref()), "SSL_CLIENT_CERT (DER)");
        let kinds: Vec<u8> = header.tlvs.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [0x01, 0x02, 0x20]);
        let subs: Vec<u8> = ssl.subs.iter().map(|(k, _)| *k).collect();
        assert_eq!(subs, [0x21, 0x22, 0x23, 0x28]);
    })
    .await
}

#[tokio::test]
async fn haproxy_sees_the_client_address_we_send() {
    require("haproxy");
    bounded(async {
        let pki = TestPki::new();
        let echo = TestBackend::echo().await;
        let port = free_port();
        let conf = pki.path("haproxy.cfg");
        write(
            &conf,
            &format!(
                "global\n    log stdout format raw local0\n\
                 defaults\n    mode tcp\n    log global\n    timeout connect 5s\n    timeout client 20s\n    timeout server 20s\n\
                 frontend from_tlsnet\n    bind 127.0.0.1:{port} accept-proxy\n\
                 \x20   log-format \"client=%ci:%cp frontend=%fi:%fp\"\n    default_backend echo\n\
                 backend echo\n    server echo {}\n",
                echo.target()
            ),
        );
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&conf);
        let mut haproxy = Proc::spawn("haproxy", command);
        wait_for_port(&format!("127.0.0.1:{port}")).await;
        let (_server, addr) = start_tunnel_server(
            &pki,
            &format!("127.0.0.1:{port}"),
            &["--allow-all", "--proxy-protocol"],
        )
        .await;
        let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        let local = stream.get_ref().0.get_ref().local_addr().unwrap();
        let got = echo_round_trip(&mut stream, b"through haproxy").await.unwrap();
        assert_eq!(got, b"through haproxy");
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut rest)).await;
        haproxy
            .wait_for_stdout(&format!("client={local} frontend={addr}"))
            .await;
    })
    .await
}

#[test]
fn usage_errors_exit_2() {
    let pki = TestPki::new();
    let p = |n: &str| path(&pki, n);
    let (cert, key, ca) = (p("server.pem"), p("server-key.pem"), p("ca.pem"));
    let server = |extra: &[&str]| {
        let mut args = vec![
            "tunnel",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            &cert,
            "--key",
            &key,
            "--client-ca",
            &ca,
        ];
        args.extend_from_slice(extra);
        tlsnet(&args)
    };
    let no_rule = server(&["--target", "127.0.0.1:6379"]);
    assert_eq!(no_rule.code, 2, "{}", no_rule.stderr);
    assert!(no_rule.stderr.contains("--allow-all"), "{}", no_rule.stderr);
    let remote = server(&["--target", "192.0.2.1:6379", "--allow-all"]);
    assert_eq!(remote.code, 2, "{}", remote.stderr);
    assert!(
        remote.stderr.contains("--unsafe-target"),
        "{}",
        remote.stderr
    );
    let named = server(&["--target", "db.example:5432", "--allow-all"]);
    assert_eq!(named.code, 2, "{}", named.stderr);
    let both = server(&[
        "--target",
        "127.0.0.1:1",
        "--allow-all",
        "--allow-cn",
        "alice",
    ]);
    assert_eq!(both.code, 2, "{}", both.stderr);
    let open = tlsnet(&[
        "tunnel",
        "client",
        "--listen",
        "0.0.0.0:0",
        "--target",
        "127.0.0.1:8443",
        "--ca",
        &ca,
    ]);
    assert_eq!(open.code, 2, "{}", open.stderr);
    assert!(open.stderr.contains("--unsafe-listen"), "{}", open.stderr);
}
