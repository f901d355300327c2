//! The hostile-world behaviour suite: one test per behaviour, named after it, each with fresh
//! certificates, each checking that a well-behaved client keeps being served meanwhile.
//! (Plaintext, garbage, silent clients and the connection limit are in `hostile.rs`.)

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use tlsnet::net::{Server, ServerOptions};
use tlsnet::pki::{LeafSpec, Purpose};
use tlsnet::service::Echo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_flood_leaves_good_clients_served() {
    let pki = TestPki::new();
    let options = ServerOptions {
        handshake_timeout: Duration::from_secs(3),
        ..test_options()
    };
    let server = TestServer::start_with(pki.server_tls(), Echo, options).await;
    // 300 clients that start a handshake and never finish it.
    let mut flood = Vec::new();
    for _ in 0..300 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let _ = tcp
            .write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00])
            .await;
        flood.push(tcp);
    }
    let started = Instant::now();
    for _ in 0..5 {
        good_client_is_served(&pki, &server.addr_string()).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "good clients waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn slowloris_client_hello_is_cut_at_the_deadline() {
    let pki = TestPki::new();
    let options = ServerOptions {
        handshake_timeout: Duration::from_millis(800),
        ..test_options()
    };
    let server = TestServer::start_with(pki.server_tls(), Echo, options).await;
    let addr = server.addr;
    let slow = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        // One byte every 100 ms of a plausible ClientHello header, for up to 5 s.
        for byte in [
            0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ]
        .iter()
        .cycle()
        .take(50)
        {
            if tcp.write_all(&[*byte]).await.is_err() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut probe = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut probe)).await
            {
                return started.elapsed();
            }
        }
        started.elapsed()
    });
    good_client_is_served(&pki, &server.addr_string()).await;
    let cut_after = slow.await.unwrap();
    assert!(
        cut_after < Duration::from_secs(3),
        "slowloris kept its connection for {cut_after:?}"
    );
    wait_for_failure(&server.stats, "timeout").await;
}

#[tokio::test]
async fn oversized_record_is_rejected() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    // A handshake record announcing 65,535 bytes: over the 2^14 + 256 limit.
    tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff])
        .await
        .unwrap();
    tcp.write_all(&[0u8; 4096]).await.unwrap();
    good_client_is_served(&pki, &server.addr_string()).await;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server must close the connection");
    assert_eq!(
        server
            .stats
            .handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn half_close_in_both_directions() {
    let pki = TestPki::new();
    let server = TestServer::start(pki.server_tls()).await;
    // Client → server half-close: after our close_notify the server still sends every byte
    // of the echo, then its own close_notify.
    let (stream, _) = connect(&server.addr_string(), &pki.client_tls())
        .await
        .unwrap();
    let data = vec![7u8; 300_000];
    // Write and read at once: the echo must be drained while we write.
    let (mut reader_half, mut writer_half) = tokio::io::split(stream);
    let write_task = tokio::spawn(async move {
        writer_half.write_all(&vec![7u8; 300_000]).await.unwrap();
        writer_half.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    reader_half
        .read_to_end(&mut got)
        .await
        .expect("clean close_notify from the server");
    write_task.await.unwrap();
    assert_eq!(got.len(), data.len());

    // Server → client: a server that closes first (idle timeout) sends close_notify, which
    // the client sees as a clean end, not an error.
    let options = ServerOptions {
        idle_timeout: Some(Duration::from_millis(200)),
        ..test_options()
    };
    let server = TestServer::start_with(pki.server_tls(), Echo, options).await;
    let (mut stream, _) = connect(&server.addr_string(), &pki.client_tls())
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(read.expect("server closes").is_ok());
}

#[tokio::test]
async fn truncation_is_reported_not_taken_for_a_clean_end() {
    // Server side: a client that sends FIN without close_notify is logged as truncation.
    let pki = TestPki::new();
    let p = |n: &str| pki.path(n).to_str().unwrap().to_owned();
    let server = ServeProcess::start_pki(&pki, &["--client-ca", &p("ca.pem")]);
    let addr = server.addr();
    let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
    assert_eq!(echo_round_trip(&mut stream, b"cut").await.unwrap(), b"cut");
    let (tcp, _) = stream.into_inner();
    drop(tcp); // FIN, no close_notify
    let text = server.wait_for_log("bytes_in=");
    drop(server);
    let closed_line = text.lines().find(|l| l.contains("bytes_in=")).unwrap();
    assert!(
        closed_line.contains("without close_notify (possible truncation)"),
        "{closed_line}"
    );

    // Client side: a server that drops TCP without close_notify is reported as truncation.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = pki.server_tls_no_client_auth().build().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .unwrap();
        tls.write_all(b"partial").await.unwrap();
        tls.flush().await.unwrap();
        let (tcp, _) = tls.into_inner();
        drop(tcp);
    });
    let mut tls = pki.client_tls();
    tls.identity = None;
    let (mut stream, _) = connect(&addr, &tls).await.unwrap();
    let mut got = Vec::new();
    let err = stream
        .read_to_end(&mut got)
        .await
        .expect_err("truncation is an error");
    assert_eq!(got, b"partial");
    assert_eq!(
        tlsnet::net::client::read_error_cause(&err),
        "server closed the connection without close_notify (data may be truncated)"
    );
}

#[tokio::test]
async fn client_that_never_reads_keeps_server_buffers_bounded() {
    let pki = TestPki::new();
    let p = |n: &str| pki.path(n).to_str().unwrap().to_owned();
    let server = ServeProcess::start_pki(&pki, &["--client-ca", &p("ca.pem")]);
    let addr = server.addr();
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    good_client_is_served(&pki, &addr).await;
    let before = rss(server.pid());
    // Push echo traffic without ever reading it back, for 3 s.
    let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0usize;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if stream.write_all(&chunk).await.is_err() {
                break;
            }
            written += chunk.len();
        }
    })
    .await;
    good_client_is_served(&pki, &addr).await;
    let after = rss(server.pid());
    drop(server);
    // Backpressure: the writes stall once socket buffers are full; the server does not
    // read ahead into memory.
    assert!(
        written < 64 * 1024 * 1024,
        "{written} bytes accepted without being read back"
    );
    assert!(
        after < before + 16 * 1024,
        "server RSS grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_connection() {
    let pki = TestPki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::with_options(pki.server_tls().build().unwrap(), Echo, test_options());
    let handle = server.tls_handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(vec![listener], async {
        let _ = stopped.await;
    }));
    // 20 clients, each doing 50 round trips on one connection while the server reloads.
    let tls = pki.client_tls().build().unwrap();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..20u32 {
        let addr = addr.clone();
        let tls = tls.clone();
        clients.spawn(async move {
            let connector = tlsnet::net::client::Connector::new(tls);
            let (mut stream, _) = connector
                .connect(&addr, tlsnet::tls::server_name("localhost").unwrap())
                .await
                .unwrap();
            for round in 0..50u32 {
                let msg = format!("client {i} round {round}");
                let got = echo_round_trip(&mut stream, msg.as_bytes())
                    .await
                    .expect("no connection lost");
                assert_eq!(got, msg.as_bytes());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    let mut serials = Vec::new();
    for n in 0..5 {
        let name = format!("server-{n}");
        pki.issue(&name, &server_spec());
        let mut options = pki.server_tls();
        options.identities = vec![pki.identity(&name)];
        handle.replace(options.build().unwrap());
        let chain = tlsnet::tls::load_certs(&pki.path(&format!("{name}.pem"))).unwrap();
        serials.push(
            tlsnet::x509::CertSummary::from_der(&chain[0])
                .unwrap()
                .serial,
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    while let Some(r) = clients.join_next().await {
        r.expect("client survived every reload");
    }
    // New connections get the newest certificate.
    let (_, report) = connect(&addr, &pki.client_tls()).await.unwrap();
    assert_eq!(&report.peer_leaf().unwrap().serial, serials.last().unwrap());
    let _ = stop.send(());
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_load_completes_in_flight_work() {
    let pki = TestPki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let options = ServerOptions {
        shutdown_timeout: Duration::from_secs(20),
        ..test_options()
    };
    let server = Server::with_options(pki.server_tls().build().unwrap(), Echo, options);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(vec![listener], async {
        let _ = stopped.await;
    }));
    let tls = pki.client_tls().build().unwrap();
    let mut clients = tokio::task::JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(10);
    for i in 0..10u8 {
        let addr = addr.clone();
        let tls = tls.clone();
        let ready = ready_tx.clone();
        clients.spawn(async move {
            let connector = tlsnet::net::client::Connector::new(tls);
            let (stream, _) = connector
                .connect(&addr, tlsnet::tls::server_name("localhost").unwrap())
                .await
                .unwrap();
            let (mut r, mut w) = tokio::io::split(stream);
            let payload = vec![i; 2 * 1024 * 1024];
            let expected = payload.clone();
            let writer = tokio::spawn(async move {
                for (n, chunk) in payload.chunks(64 * 1024).enumerate() {
                    w.write_all(chunk).await.unwrap();
                    if n == 0 {
                        let _ = ready.send(()).await;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                w.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got)
                .await
                .expect("in-flight work finishes cleanly");
            writer.await.unwrap();
            assert_eq!(got, expected, "client {i}");
        });
    }
    for _ in 0..10 {
        ready_rx.recv().await.unwrap();
    }
    // Every client is mid-transfer: start the drain.
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "no new connections during the drain"
    );
    while let Some(r) = clients.join_next().await {
        r.expect("client finished its transfer during the drain");
    }
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server exits after the drain")
        .unwrap()
        .unwrap();
}

/// A long-lived service (a chat session, say): hello at once, goodbye when the server drains.
struct Session;

impl tlsnet::service::Service for Session {
    fn name(&self) -> &'static str {
        "session"
    }

    fn serve<'a>(
        &'a self,
        mut stream: tlsnet::service::BoxStream,
        ctx: &'a tlsnet::service::Context,
    ) -> tlsnet::service::BoxFuture<'a, tlsnet::service::End> {
        Box::pin(async move {
            if let Err(e) = stream.write_all(b"hello\n").await {
                return tlsnet::service::End::from_io(e);
            }
            let _ = stream.flush().await;
            ctx.shutdown.draining().await;
            let _ = stream.write_all(b"goodbye\n").await;
            let _ = stream.shutdown().await;
            tlsnet::service::End::Drained
        })
    }
}

#[tokio::test]
async fn drain_tells_sessions_at_once_and_exits_when_the_last_says_goodbye() {
    let pki = TestPki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let options = ServerOptions {
        shutdown_timeout: Duration::from_secs(30),
        ..test_options()
    };
    let server = Server::with_options(pki.server_tls().build().unwrap(), Session, options);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(vec![listener], async {
        let _ = stopped.await;
    }));
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let (mut stream, _) = connect(&addr, &pki.client_tls()).await.unwrap();
        let mut hello = [0u8; 6];
        stream.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello, b"hello\n");
        sessions.push(stream);
    }
    let stopping = Instant::now();
    let _ = stop.send(());
    for stream in &mut sessions {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("goodbye arrives at once")
            .expect("closed with close_notify");
        assert_eq!(rest, b"goodbye\n");
    }
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("server exits once every session has ended")
        .unwrap()
        .unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the drain took {:?} of a 30 s grace period",
        stopping.elapsed()
    );
}

/// `tlsnet serve` with a 30 s grace period and an idle interactive client: SIGTERM ends both
/// within seconds, the client with a clean close.
#[test]
fn sigterm_with_an_idle_client_exits_well_before_the_grace_period() {
    let pki = TestPki::new();
    let ca = pki.path("ca.pem").to_str().unwrap().to_owned();
    let mut server =
        ServeProcess::start_pki(&pki, &["--client-ca", &ca, "--shutdown-timeout", "30s"]);
    let mut client = tlsnet_cmd()
        .args([
            "connect",
            &server.addr(),
            "--ca",
            &ca,
            "--servername",
            "localhost",
            "-q",
        ])
        .arg("--cert")
        .arg(pki.path("client.pem"))
        .arg("--key")
        .arg(pki.path("client-key.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"are you there\n").unwrap();
    stdin.flush().unwrap();
    server.wait_for_log("handshake ok");
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        stopping.elapsed()
    );
    server.wait_for_log("end=drained");
    // The client saw the echo, then a clean end; its stdin is still open.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "client did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut client.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "client: {status:?}");
    assert_eq!(out, "are you there\n");
    drop(stdin);
}

#[tokio::test]
async fn resumption_is_off_for_mutual_tls_and_on_without_it() {
    let pki = TestPki::new();
    // Mutual TLS: no tickets, so a second connection runs the full certificate check.
    let server = TestServer::start(pki.server_tls()).await;
    let connector = tlsnet::net::client::Connector::new(pki.client_tls().build().unwrap());
    for _ in 0..2 {
        let (mut stream, report) = connector
            .connect(
                &server.addr_string(),
                tlsnet::tls::server_name("localhost").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(echo_round_trip(&mut stream, b"x").await.unwrap(), b"x");
        assert!(!report.resumed, "mutual TLS must not resume");
        assert_eq!(
            report.peer_leaf().unwrap().common_name.as_deref(),
            Some("localhost")
        );
    }
    // A client certificate revoked after the first handshake is refused on the next one,
    // even by a client that kept its session state.
    pki.issue("carol", &LeafSpec::new(Purpose::Client, "carol"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let crl_for = |revoked: Vec<tlsnet::pki::Revoked>| {
        let pem = pki.ca.crl(&revoked, 1, Duration::from_secs(86400)).unwrap();
        let path = pki.path("crl.pem");
        std::fs::write(&path, pem).unwrap();
        tlsnet::tls::load_crls(&path).unwrap()
    };
    let mut options = pki.server_tls();
    options.crls = crl_for(Vec::new());
    let server = Server::with_options(options.build().unwrap(), Echo, test_options());
    let handle = server.tls_handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(vec![listener], async {
        let _ = stopped.await;
    }));
    let carol = pki.client_tls().with_identity(pki.identity("carol"));
    let connector = tlsnet::net::client::Connector::new(carol.build().unwrap());
    let name = || tlsnet::tls::server_name("localhost").unwrap();
    let (mut first, _) = connector.connect(&addr, name()).await.unwrap();
    assert_eq!(echo_round_trip(&mut first, b"x").await.unwrap(), b"x");
    let chain = tlsnet::tls::load_certs(&pki.path("carol.pem")).unwrap();
    let serial = tlsnet::x509::CertSummary::from_der(&chain[0])
        .unwrap()
        .serial;
    let serial: Vec<u8> = serial
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    options.crls = crl_for(vec![tlsnet::pki::Revoked {
        serial,
        at: time::OffsetDateTime::now_utc(),
        reason: None,
    }]);
    handle.replace(options.build().unwrap());
    let refused = match connector.connect(&addr, name()).await {
        Err(e) => e.to_string(),
        Ok((mut s, report)) => {
            assert!(!report.resumed);
            tlsnet::net::client::read_error_cause(
                &send_and_read(&mut s).await.expect_err("revoked"),
            )
        }
    };
    assert!(refused.contains("certificate_revoked"), "{refused}");
    let _ = stop.send(());
    drop(first);
    let _ = task.await;

    // Server auth only: the second connection resumes with a ticket.
    let server = TestServer::start(pki.server_tls_no_client_auth()).await;
    let mut tls = pki.client_tls();
    tls.identity = None;
    let connector = tlsnet::net::client::Connector::new(tls.build().unwrap());
    let mut resumed = Vec::new();
    for _ in 0..2 {
        let (mut stream, report) = connector
            .connect(
                &server.addr_string(),
                tlsnet::tls::server_name("localhost").unwrap(),
            )
            .await
            .unwrap();
        // Tickets arrive after the handshake: read the echo so the client has them.
        assert_eq!(echo_round_trip(&mut stream, b"x").await.unwrap(), b"x");
        resumed.push(report.resumed);
    }
    assert_eq!(resumed, [false, true]);
}

#[tokio::test]
async fn zero_rtt_is_off() {
    let pki = TestPki::new();
    for options in [pki.server_tls(), pki.server_tls_no_client_auth()] {
        let config = options.build().unwrap();
        assert_eq!(config.max_early_data_size, 0);
        assert!(!config.send_half_rtt_data);
    }
    // And the server accepts no early data on a resumed session: it never offers it in its
    // tickets (max_early_data_size 0 above), so a client cannot send any.
}

#[test]
fn file_descriptor_exhaustion_is_survived() {
    let pki = TestPki::new();
    let p = |n: &str| pki.path(n).to_str().unwrap().to_owned();
    // 64 descriptors: a few for the runtime, the listener and the files, the rest for clients.
    let mut server = ServeProcess::start_with_fd_limit(
        pki.dir.path(),
        64,
        &[
            "--cert",
            &p("server.pem"),
            "--key",
            &p("server-key.pem"),
            "--client-ca",
            &p("ca.pem"),
            "--handshake-timeout",
            "30s",
        ],
    );
    let addr = server.addr();
    // Hold far more connections than the server has descriptors for.
    let mut hogs = Vec::new();
    for _ in 0..120 {
        if let Ok(s) = std::net::TcpStream::connect(&addr) {
            hogs.push(s);
        }
    }
    let started = Instant::now();
    loop {
        let text = server.log_text();
        if text.contains("out of resources") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no accept error logged: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Release them: the server recovers and serves a good client.
    drop(hogs);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let served = rt.block_on(async {
        for _ in 0..100 {
            if let Ok(Ok((mut s, _))) =
                tokio::time::timeout(Duration::from_secs(2), connect(&addr, &pki.client_tls()))
                    .await
            {
                if echo_round_trip(&mut s, b"back").await.is_ok() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    assert!(
        server.exited().is_none(),
        "the server must still be running"
    );
    drop(server);
    assert!(
        served,
        "the server must serve again once descriptors are free"
    );
    let _ = std::io::stderr().flush();
}
