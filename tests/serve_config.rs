//! `tlsnet serve --config FILE`: a file alone serves; a flag on the command line wins over a
//! key; a broken file exits 2 with the line and the key; the packaged
//! `packaging/serve.toml` parses as shipped and with every setting uncommented.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use tlsnet::config::serve::ServeFile;
use tokio::process::Command;

fn path(pki: &TestPki, name: &str) -> String {
    pki.path(name).display().to_string()
}

/// The keys of a mutual-TLS server with this PKI, on `listen`.
fn mutual_tls(pki: &TestPki, listen: &str) -> String {
    format!(
        "listen = [\"{listen}\"]\ncert = [\"{}\"]\nkey = [\"{}\"]\nclient_ca = \"{}\"\nallow_cn = [\"alice\"]\n",
        path(pki, "server.pem"),
        path(pki, "server-key.pem"),
        path(pki, "ca.pem"),
    )
}

/// `tlsnet serve --config FILE EXTRA...`, where `make(PORT)` writes the file for a free port.
async fn serve_config(pki: &TestPki, make: impl Fn(u16) -> String) -> (Proc, u16) {
    let file = pki.path("serve.toml");
    start_listening_peer("tlsnet serve --config", "tlsnet serving", |port| {
        write(&file, &make(port));
        let mut command: Command = tlsnet_command();
        command.arg("serve").arg("--config").arg(&file);
        command
    })
    .await
}

/// `tlsnet connect` as the test client: a line comes back.
async fn echo_ok(pki: &TestPki, port: u16) {
    let args: Vec<String> = [
        format!("127.0.0.1:{port}"),
        "--servername".into(),
        "localhost".into(),
        "--ca".into(),
        path(pki, "ca.pem"),
        "--cert".into(),
        path(pki, "client.pem"),
        "--key".into(),
        path(pki, "client-key.pem"),
        "-q".into(),
    ]
    .into();
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        connect_cmd(&args, b"from the file\n")
    })
    .await
    .unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "from the file\n");
}

#[tokio::test]
async fn a_config_file_alone_serves() {
    bounded(async {
        let pki = TestPki::new();
        let (server, port) = serve_config(&pki, |port| {
            format!(
                "{}idle_timeout = \"1m\"\nmax_connections = 50\n",
                mutual_tls(&pki, &format!("127.0.0.1:{port}"))
            )
        })
        .await;
        wait_for_port(&format!("127.0.0.1:{port}")).await;
        echo_ok(&pki, port).await;
        assert!(
            server.stderr().contains("allow=cn=alice"),
            "{}",
            server.describe()
        );
    })
    .await
}

#[tokio::test]
async fn flags_on_the_command_line_win_over_the_file() {
    bounded(async {
        let pki = TestPki::new();
        let file = pki.path("serve.toml");
        // The file says port 1 (not ours to bind), no connections at all and the discard
        // service; the flags fix all three.
        write(
            &file,
            &format!(
                "{}max_connections = 0\nservice = \"discard\"\n",
                mutual_tls(&pki, "127.0.0.1:1")
            ),
        );
        let (server, port) =
            start_listening_peer("tlsnet serve --config", "tlsnet serving", |port| {
                let mut command = tlsnet_command();
                command
                    .arg("serve")
                    .arg("--config")
                    .arg(&file)
                    .args(["--listen", &format!("127.0.0.1:{port}")])
                    .args(["--max-connections", "5", "--service", "echo"]);
                command
            })
            .await;
        wait_for_port(&format!("127.0.0.1:{port}")).await;
        echo_ok(&pki, port).await;
        let log = server.stderr();
        assert!(log.contains("service=\"echo\""), "{log}");
        assert!(log.contains(&format!("listen=127.0.0.1:{port}")), "{log}");
        // The keys that no flag overrides are the file's.
        assert!(log.contains("allow=cn=alice"), "{log}");
    })
    .await
}

fn serve_with(file: &Path) -> Run {
    tlsnet(&["serve", "--config", file.to_str().unwrap()])
}

#[test]
fn a_broken_file_exits_2_with_line_and_key() {
    let pki = TestPki::new();
    let file = pki.path("serve.toml");
    let good = mutual_tls(&pki, "127.0.0.1:0");
    // `good` has five lines.
    for (text, expected) in [
        (
            format!("{good}bogus = 1\n"),
            ":6:1: key `bogus`: unknown field `bogus`",
        ),
        (
            format!("{good}idle_timeout = \"forever\"\n"),
            ":6:16: key `idle_timeout`: 'forever' is not a duration",
        ),
        (format!("{good}tls12 = yes\n"), ":6:9: key `tls12`"),
        (
            format!("{good}service = \"chat\"\n"),
            ":6:11: key `service`: unknown variant `chat`",
        ),
        (
            format!("{good}client_auth = \"maybe\"\n"),
            ":6:15: key `client_auth`: 'maybe' is not a client_auth mode",
        ),
        (format!("listen = \"x\"\n{good}"), ":2:1: key `listen`"),
    ] {
        write(&file, &text);
        let run = serve_with(&file);
        assert_eq!(run.code, 2, "{text}\n{}", run.stderr);
        let wanted = format!("{}{expected}", file.display());
        assert!(
            run.stderr.contains(&wanted),
            "expected {wanted:?} in:\n{}",
            run.stderr
        );
    }
    // A value that parses but does not go with the others: still a usage error.
    write(&file, &good.replace("key = ", "#key = "));
    let run = serve_with(&file);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--cert and --key come in pairs"),
        "{}",
        run.stderr
    );
    // A missing file.
    let run = serve_with(&pki.path("absent.toml"));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("cannot read"), "{}", run.stderr);
}

fn packaged() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/serve.toml")
}

#[test]
fn the_packaged_serve_toml_parses_as_shipped_and_uncommented() {
    let shipped = std::fs::read_to_string(packaged()).unwrap();
    ServeFile::parse(&packaged(), &shipped).expect("serve.toml as shipped");
    // Every `#key = value` line uncommented: every documented key is a real one, and its
    // example value parses.
    let uncommented: String = shipped
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let keys = uncommented
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
        .count();
    assert!(keys >= 20, "only {keys} settings in serve.toml");
    let file = ServeFile::parse(&packaged(), &uncommented)
        .unwrap_or_else(|e| panic!("serve.toml uncommented: {}", e.describe()));
    assert_eq!(file.listen, Some(vec!["localhost:8443".to_owned()]));
    assert_eq!(file.metrics.as_deref(), Some("9090"));
}

/// The services' keys: messaging and files turned off, and their settings read.
#[tokio::test]
async fn service_keys_turn_msg_and_files_off() {
    bounded(async {
        let pki = TestPki::new();
        let store = pki.path("msg-store");
        let (server, port) = serve_config(&pki, |port| {
            format!(
                "{}user_id = \"email\"\nno_msg = true\nstore = {:?}\nsync = \"batch\"\nno_files = true\nquota = \"1G\"\nmax_file_size = 1048576\n",
                mutual_tls(&pki, &format!("127.0.0.1:{port}")),
                store.to_str().unwrap()
            )
        })
        .await;
        wait_for_port(&format!("127.0.0.1:{port}")).await;
        echo_ok(&pki, port).await;
        let log = server.stderr();
        assert!(log.contains("alpn=tlsnet-echo,tlsnet-discard "), "{log}");
        assert!(!log.contains("msg service on"), "{log}");
        assert!(!log.contains("files service on"), "{log}");
    })
    .await
}
