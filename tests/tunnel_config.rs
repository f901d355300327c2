//! `tlsnet tunnel --config FILE`: many tunnels in one process, changed while they run. A
//! reload (a change of the file, or SIGHUP) restarts the changed tunnel only: a long transfer
//! on another one goes on, byte for byte. Tunnels are added and removed; a broken file is
//! refused with its line and key and the running tunnels are kept; the metrics and the log
//! lines carry each tunnel's name. Loopback only; every certificate is made at test time.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Four MiB, in 64 KiB pieces 25 ms apart: about 1.6 s of transfer.
const TOTAL: usize = 4 << 20;
const CHUNK: usize = 64 << 10;
const PAUSE: Duration = Duration::from_millis(25);

fn loopback() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn config_path(pki: &TestPki) -> PathBuf {
    pki.path("tunnels.toml")
}

/// Sends a line through the server tunnel at `addr` as the test client and expects it back.
async fn echoes(pki: &TestPki, addr: &str) {
    let (mut stream, _) = connect(addr, &pki.client_tls()).await.expect("tunnel");
    let got = echo_round_trip(&mut stream, b"through").await.unwrap();
    assert_eq!(got, b"through");
}

/// A plain round trip through a client tunnel's local port.
async fn plain_echoes(addr: &str) {
    let got = tokio::time::timeout(STEP, async {
        let mut tcp = TcpStream::connect(addr).await.expect("client tunnel");
        tcp.write_all(b"plain").await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).await.unwrap();
        got
    })
    .await
    .expect("in time");
    assert_eq!(got, b"plain");
}

/// A long paced transfer on the tunnel at `steady` while `reload` changes another one; the
/// bytes come back exactly.
async fn transfer_survives(
    pki: &TestPki,
    steady: &str,
    reload: impl std::future::Future<Output = ()>,
) {
    let (stream, _) = connect(steady, &pki.client_tls())
        .await
        .expect("steady tunnel");
    let data = pattern(TOTAL);
    let transfer = paced_round_trip(stream, &data, CHUNK, PAUSE);
    let ((), got) = tokio::join!(
        async {
            // Well into the transfer.
            tokio::time::sleep(Duration::from_millis(300)).await;
            reload.await;
        },
        transfer
    );
    assert_eq!(got.len(), data.len(), "the transfer was cut");
    assert!(got == data, "the transfer came back changed");
}

/// Two server tunnels, `steady` to one echo backend and `moving` to `target`.
fn two_tunnels(
    pki: &TestPki,
    head: &str,
    steady: &str,
    moving: &str,
    target: &str,
    backend: &str,
) -> String {
    format!(
        "{head}\n{}\n{}",
        server_tunnel_table(pki, "steady", steady, backend, "allow_cn = [\"alice\"]"),
        server_tunnel_table(pki, "moving", moving, target, "allow_all = true"),
    )
}

/// How the changed file is noticed.
#[derive(Clone, Copy, PartialEq)]
enum Reload {
    /// Its content, checked every 100 ms.
    FileChange,
    /// SIGHUP (the file is not checked on its own).
    Sighup,
}

/// Two tunnels; a long transfer on `steady` while `moving` gets a new target by `how`. The
/// transfer comes back byte for byte on its one connection; `moving` serves on the same port
/// with the new target.
async fn restart_during_a_transfer(how: Reload) {
    let pki = TestPki::new();
    let (one, two, three) = (
        TestBackend::echo().await,
        TestBackend::echo().await,
        TestBackend::echo().await,
    );
    let (steady, moving) = (loopback(), loopback());
    let file = config_path(&pki);
    let head = match how {
        Reload::FileChange => "reload_interval = \"100ms\"",
        Reload::Sighup => "reload_interval = \"0s\"",
    };
    let config = |target: &str| two_tunnels(&pki, head, &steady, &moving, target, &one.target());
    write(&file, &config(&two.target()));
    let mut tunnels = start_tunnel_config(&file).await;
    echoes(&pki, &moving).await;
    assert_eq!(two.accepts(), 1);

    let applied = tunnels.stderr_count("tunnels file applied");
    transfer_survives(&pki, &steady, async {
        replace_file(&file, &config(&three.target()));
        if how == Reload::Sighup {
            // Not read until asked.
            tokio::time::sleep(Duration::from_millis(300)).await;
            echoes(&pki, &moving).await;
            assert_eq!((two.accepts(), three.accepts()), (2, 0));
            tunnels.signal("HUP");
        }
        let log = tunnels
            .wait_for_stderr_after("tunnels file applied", applied)
            .await;
        assert!(log.contains("changed=moving unchanged=steady"), "{log}");
    })
    .await;
    // The same port, the new target: the listener was handed over.
    echoes(&pki, &moving).await;
    assert_eq!(three.accepts(), 1);
    // The transfer was one connection, never reopened.
    assert_eq!(one.accepts(), 1);
    // The old `moving` drained (its connections had ended) and stopped.
    tunnels
        .wait_for_stderr("tunnel{tunnel=moving}: tunnel stopped")
        .await;
}

#[tokio::test]
async fn a_file_change_restarts_only_the_changed_tunnel_during_a_transfer_on_the_other() {
    bounded(restart_during_a_transfer(Reload::FileChange)).await
}

#[tokio::test]
async fn sighup_restarts_only_the_changed_tunnel_during_a_transfer_on_the_other() {
    bounded(restart_during_a_transfer(Reload::Sighup)).await
}

#[tokio::test]
async fn tunnels_are_added_and_removed_by_a_reload() {
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::echo().await;
        let (a, b, c) = (loopback(), loopback(), loopback());
        let file = config_path(&pki);
        let head = "reload_interval = \"100ms\"\n";
        let table_a =
            server_tunnel_table(&pki, "a", &a, &backend.target(), "allow_cn = [\"alice\"]");
        write(&file, &format!("{head}{table_a}"));
        let mut tunnels = start_tunnel_config(&file).await;
        echoes(&pki, &a).await;

        // Add a server tunnel and a client tunnel to `a`.
        let table_b = server_tunnel_table(&pki, "b", &b, &backend.target(), "allow_all = true");
        let table_c = client_tunnel_table(&pki, "c", &c, &a, "verify_dns = [\"localhost\"]");
        let seen = tunnels.stderr_count("tunnels file applied");
        replace_file(&file, &format!("{head}{table_a}{table_b}{table_c}"));
        let log = tunnels
            .wait_for_stderr_after("tunnels file applied", seen)
            .await;
        assert!(
            log.contains("added=b,c removed=- changed=- unchanged=a"),
            "{log}"
        );
        echoes(&pki, &b).await;
        plain_echoes(&c).await;

        // Remove both: their ports close, `a` serves on.
        let seen = tunnels.stderr_count("tunnels file applied");
        replace_file(&file, &format!("{head}{table_a}"));
        let log = tunnels
            .wait_for_stderr_after("tunnels file applied", seen)
            .await;
        assert!(
            log.contains("added=- removed=b,c changed=- unchanged=a"),
            "{log}"
        );
        for gone in [&b, &c] {
            let refused = TcpStream::connect(gone.as_str()).await;
            assert!(
                refused.is_err(),
                "{gone} still accepts after its tunnel was removed"
            );
        }
        echoes(&pki, &a).await;
    })
    .await
}

#[tokio::test]
async fn a_broken_file_is_refused_with_line_and_key_and_the_tunnels_kept() {
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::echo().await;
        let a = loopback();
        let file = config_path(&pki);
        let good = format!(
            "reload_interval = \"100ms\"\n{}",
            server_tunnel_table(&pki, "a", &a, &backend.target(), "allow_cn = [\"alice\"]")
        );
        write(&file, &good);
        let mut tunnels = start_tunnel_config(&file).await;
        let name = file.display().to_string();
        // The table starts on line 2; its keys: name 3, mode 4, listen 5, target 6, cert 7,
        // key 8, client_ca 9, allow_cn 10.
        let broken = [
            (
                good.replace("mode = \"server\"", "mode = server"),
                format!("{name}:4:8: key `mode`"),
            ),
            (
                good.replace("allow_cn", "allow_cm"),
                format!("{name}:10:1: tunnel \"a\": key `allow_cm`: unknown field"),
            ),
            (
                format!("{good}connect_timeout = \"soon\"\n"),
                format!(
                    "{name}:11:19: tunnel \"a\": key `connect_timeout`: 'soon' is not a duration"
                ),
            ),
            (
                good.replace(&format!("target = \"{}\"\n", backend.target()), ""),
                format!("{name}:2: tunnel \"a\": key `target`: is missing"),
            ),
            (
                good.replace(&backend.target(), "192.0.2.1:6379"),
                format!(
                    "{name}:6: tunnel \"a\": key `target`: 192.0.2.1:6379 is not on this machine"
                ),
            ),
        ];
        for (text, expected) in broken {
            let seen = tunnels.stderr_count("tunnels file refused");
            replace_file(&file, &text);
            let log = tunnels
                .wait_for_stderr_after("tunnels file refused", seen)
                .await;
            let line = log
                .lines()
                .rev()
                .find(|l| l.contains("tunnels file refused"))
                .unwrap();
            assert!(
                line.contains(&expected),
                "expected {expected:?} in:\n{line}"
            );
            echoes(&pki, &a).await;
        }
        assert_eq!(
            tunnels.stderr_count("tunnel stopped"),
            0,
            "{}",
            tunnels.describe()
        );

        // A tunnel that cannot start (its certificate file is missing) is refused as well.
        let seen = tunnels.stderr_count("tunnels file refused");
        replace_file(&file, &good.replace("server-key.pem", "missing-key.pem"));
        let log = tunnels
            .wait_for_stderr_after("tunnels file refused", seen)
            .await;
        assert!(log.contains("tunnel \"a\" cannot start"), "{log}");
        echoes(&pki, &a).await;
    })
    .await
}

#[tokio::test]
async fn metrics_and_log_lines_carry_the_tunnel_names() {
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::echo().await;
        let (a, b, metrics) = (loopback(), loopback(), loopback());
        let file = config_path(&pki);
        write(
            &file,
            &format!(
                "metrics = \"{metrics}\"\n{}{}",
                server_tunnel_table(&pki, "alpha", &a, &backend.target(), "allow_all = true"),
                server_tunnel_table(&pki, "beta", &b, &backend.target(), "allow_all = true"),
            ),
        );
        let mut tunnels = start_tunnel_config(&file).await;
        echoes(&pki, &a).await;
        echoes(&pki, &a).await;
        echoes(&pki, &b).await;
        let text = http_get(&metrics, "/metrics");
        assert!(
            text.contains("tlsnet_handshakes_total{server=\"alpha\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tlsnet_handshakes_total{server=\"beta\"} 1"),
            "{text}"
        );
        tunnels.wait_for_stderr("tunnel{tunnel=alpha}:conn{").await;
        let log = tunnels.stderr();
        assert!(
            log.lines()
                .any(|l| l.contains("tunnel{tunnel=beta}") && l.contains("handshake ok")),
            "{log}"
        );
    })
    .await
}

#[tokio::test]
async fn json_log_lines_carry_the_tunnel_name() {
    bounded(async {
        let pki = TestPki::new();
        let backend = TestBackend::echo().await;
        let a = loopback();
        let file = config_path(&pki);
        let table = server_tunnel_table(&pki, "alpha", &a, &backend.target(), "allow_all = true");
        write(&file, &format!("log_format = \"json\"\n{table}"));
        let mut tunnels = start_tunnel_config(&file).await;
        echoes(&pki, &a).await;
        tunnels.wait_for_stderr("\"handshake ok\"").await;
        let stderr = tunnels.stderr();
        let line = stderr
            .lines()
            .find(|l| l.contains("\"handshake ok\""))
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        let spans = event["spans"].as_array().expect("the span list");
        assert!(
            spans.iter().any(|s| s["tunnel"] == "alpha"),
            "no tunnel name in {line}"
        );
    })
    .await
}

fn tlsnet_tunnel_config(file: &Path) -> Run {
    tlsnet(&["tunnel", "--config", file.to_str().unwrap()])
}

#[test]
fn a_broken_file_at_start_exits_2_with_line_and_key() {
    let pki = TestPki::new();
    let file = config_path(&pki);
    let table = server_tunnel_table(&pki, "a", "127.0.0.1:0", "127.0.0.1:1", "allow_all = true");
    for (text, expected) in [
        (
            format!("{table}bogus = 1\n"),
            ":10:1: tunnel \"a\": key `bogus`: unknown field `bogus`",
        ),
        (
            format!("{table}[[tunnel]]\nname = \"b\"\nmode = \"client\"\n"),
            ":10: tunnel \"b\": key `listen`: is missing",
        ),
        (format!("nonsense\n{table}"), ":1:"),
        (
            format!("{table}proxy_protocol = \"yes\"\n"),
            ":10:18: tunnel \"a\": key `proxy_protocol`",
        ),
    ] {
        write(&file, &text);
        let run = tlsnet_tunnel_config(&file);
        assert_eq!(run.code, 2, "{}", run.stderr);
        let wanted = format!("{}{expected}", file.display());
        assert!(
            run.stderr.contains(&wanted),
            "expected {wanted:?} in:\n{}",
            run.stderr
        );
    }
}
