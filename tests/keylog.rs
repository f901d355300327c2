//! `--keylog`: the key-log files of `tlsnet serve`, `tlsnet connect` and `tlsnet inspect` let
//! tshark (Wireshark) decrypt a capture of their traffic, and nothing else does: without the
//! file tshark sees only encrypted records, and `SSLKEYLOGFILE` in the environment without the
//! flag writes nothing.
//!
//! The captures are taken with tshark on loopback, which needs root: these tests fail (not
//! skip) where capturing is impossible. scripts/test installs tshark.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// What the client sends (and the echo service sends back).
const LINE: &str = "keylog proof: the quick brown fox 4711\n";

fn arg(path: &Path) -> String {
    path.to_str().expect("UTF-8 path").to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `tlsnet connect` to `port` trusting the test CA, with the test client certificate and
/// `extra` flags, sending `LINE`.
fn connect_with(pki: &TestPki, port: u16, extra: &[&str]) -> Run {
    let (ca, cert, key) = (
        arg(&pki.path("ca.pem")),
        arg(&pki.path("client.pem")),
        arg(&pki.path("client-key.pem")),
    );
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec![
        addr.as_str(),
        "--servername",
        "localhost",
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    connect_cmd(&args, LINE.as_bytes())
}

fn assert_warned(stderr: &str, keys: &Path) {
    assert!(
        stderr.contains(&format!(
            "tlsnet: WARNING: the TLS secrets of every connection are written to {}",
            keys.display()
        )),
        "no key-log warning on stderr:\n{stderr}"
    );
}

#[test]
fn tshark_decrypts_serve_and_connect_traffic_with_their_key_logs_only() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    let (server_keys, client_keys) = (dir.join("server-keys.log"), dir.join("client-keys.log"));
    let ca = arg(&pki.path("ca.pem"));
    let server =
        ServeProcess::start_pki(&pki, &["--client-ca", &ca, "--keylog", &arg(&server_keys)]);
    let log = server.log_text();
    assert_warned(&log, &server_keys);
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("anyone who can read that file")),
        "no WARN log line about the key log:\n{log}"
    );
    assert_eq!(mode(&server_keys), 0o600);

    let capture = Capture::start(dir, "serve-connect", server.port);
    let run = connect_with(&pki, server.port, &["--keylog", &arg(&client_keys)]).ok();
    assert_eq!(run.stdout, LINE, "echo");
    assert_warned(&run.stderr, &client_keys);
    let file = capture.stop();
    assert_eq!(mode(&client_keys), 0o600);

    // Decrypted with either side's key log, the client's bytes are there.
    for keys in [&server_keys, &client_keys] {
        let plain = decrypted_to_port(&file, Some(keys), server.port);
        let plain = String::from_utf8_lossy(&plain);
        assert!(
            plain.contains(LINE),
            "tshark with {} did not decrypt the line; it decrypted {plain:?}",
            keys.display()
        );
    }
    // The field that proves it, as a person would look (shown with --nocapture).
    let filter = format!("tls && tcp.dstport == {}", server.port);
    let fields = ["frame.number", "tls.app_data", "data.data"];
    let shown = tshark_fields(&file, Some(&server_keys), &filter, &fields);
    eprintln!(
        "tshark -r {} -o tls.keylog_file:{} -Y '{filter}' -T fields -e {}\n{}",
        file.display(),
        server_keys.display(),
        fields.join(" -e "),
        shown.stdout
    );

    // Without a key log: encrypted records, nothing decrypted, no plain text on the wire.
    let encrypted = tshark_fields(&file, None, "tls", &["tls.app_data"]);
    assert!(
        !field_values(&encrypted).is_empty(),
        "the capture holds no TLS application data records at all:\n{}",
        encrypted.stdout
    );
    let plain = decrypted_to_port(&file, None, server.port);
    assert!(
        plain.is_empty(),
        "tshark decrypted without a key log: {:?}",
        String::from_utf8_lossy(&plain)
    );
    let wire = std::fs::read(&file).unwrap();
    assert!(
        !wire.windows(LINE.len()).any(|w| w == LINE.as_bytes()),
        "the line is in the capture in plain text"
    );
}

#[test]
fn tshark_sees_the_certificates_of_an_inspect_handshake_with_its_key_log() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    let keys = dir.join("inspect-keys.log");
    let server = ServeProcess::start_pki(&pki, &[]);
    let capture = Capture::start(dir, "inspect", server.port);
    let run = tlsnet(&[
        "inspect",
        &server.addr(),
        "--servername",
        "localhost",
        "--ca",
        &arg(&pki.path("ca.pem")),
        "--keylog",
        &arg(&keys),
    ])
    .ok();
    assert!(run.stdout.contains("CN=localhost"), "{}", run.stdout);
    assert_warned(&run.stderr, &keys);
    let file = capture.stop();

    // TLS 1.3 encrypts the server's Certificate message (handshake type 11).
    let types = |keylog: Option<&Path>| {
        let run = tshark_fields(&file, keylog, "tls", &["tls.handshake.type"]);
        field_values(&run)
    };
    let with_keys = types(Some(&keys));
    assert!(
        with_keys.iter().any(|t| t == "11"),
        "no Certificate message decrypted: handshake types {with_keys:?}"
    );
    let without = types(None);
    assert!(
        without.iter().any(|t| t == "2") && !without.iter().any(|t| t == "11"),
        "without the key log tshark should see the ServerHello (2) and no Certificate (11): {without:?}"
    );
}

#[test]
fn sslkeylogfile_without_the_flag_writes_nothing() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    let keys = dir.join("from-env.log");
    let mut command = tlsnet_cmd();
    command.env("SSLKEYLOGFILE", &keys);
    let (cert, key) = (
        arg(&pki.path("server.pem")),
        arg(&pki.path("server-key.pem")),
    );
    let server = ServeProcess::start_serve(dir, command, &["--cert", &cert, "--key", &key]);

    let mut command = tlsnet_cmd();
    command
        .env("SSLKEYLOGFILE", &keys)
        .arg("connect")
        .arg(server.addr())
        .args(["--servername", "localhost", "--quiet", "--ca"])
        .arg(pki.path("ca.pem"));
    let connected = run(command, Some(LINE.as_bytes()), CONNECT_LIMIT).ok();
    assert_eq!(connected.stdout, LINE);

    let mut command = tlsnet_cmd();
    command
        .env("SSLKEYLOGFILE", &keys)
        .arg("inspect")
        .arg(server.addr())
        .args(["--servername", "localhost", "--ca"])
        .arg(pki.path("ca.pem"));
    let inspected = run(command, None, RUN_LIMIT).ok();

    assert!(
        !keys.exists(),
        "SSLKEYLOGFILE alone made tlsnet write {}",
        keys.display()
    );
    for (what, stderr) in [
        ("serve", server.log_text()),
        ("connect", connected.stderr),
        ("inspect", inspected.stderr),
    ] {
        assert!(
            !stderr.contains("TLS secrets"),
            "{what} warned of a key log it does not write:\n{stderr}"
        );
    }
}

#[test]
fn keylog_env_takes_the_file_from_sslkeylogfile() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    let keys = dir.join("named-by-env.log");
    let mut command = tlsnet_cmd();
    command.env("SSLKEYLOGFILE", &keys);
    let (cert, key) = (
        arg(&pki.path("server.pem")),
        arg(&pki.path("server-key.pem")),
    );
    let server = ServeProcess::start_serve(
        dir,
        command,
        &["--cert", &cert, "--key", &key, "--keylog", "env"],
    );
    assert_warned(&server.log_text(), &keys);
    let mut command = tlsnet_cmd();
    command
        .env_remove("SSLKEYLOGFILE")
        .arg("connect")
        .arg(server.addr())
        .args(["--servername", "localhost", "--quiet", "--ca"])
        .arg(pki.path("ca.pem"));
    run(command, Some(LINE.as_bytes()), CONNECT_LIMIT).ok();
    let text = std::fs::read_to_string(&keys).unwrap();
    for label in ["SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0"] {
        assert!(text.contains(label), "{label} missing from:\n{text}");
    }
    assert_eq!(mode(&keys), 0o600);

    // `--keylog env` with no SSLKEYLOGFILE is a usage error.
    let mut command = tlsnet_cmd();
    command.env_remove("SSLKEYLOGFILE").args([
        "connect",
        "127.0.0.1:1",
        "--keylog",
        "env",
        "--insecure",
    ]);
    let refused = run(command, None, CONNECT_LIMIT);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("SSLKEYLOGFILE is not set"),
        "{}",
        refused.stderr
    );
}

#[test]
fn unsafe_key_log_files_are_refused() {
    let pki = TestPki::new();
    let dir = pki.dir.path();

    // Readable by others: refused, not chmod-ed, nothing written.
    let open = dir.join("open.log");
    std::fs::write(&open, b"").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = connect_with(&pki, free_port(), &["--keylog", &arg(&open)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("cannot use as key log {}", open.display()))
            && run.stderr.contains("mode is 0644"),
        "{}",
        run.stderr
    );
    assert_eq!(mode(&open), 0o644);
    assert_eq!(std::fs::metadata(&open).unwrap().len(), 0);

    // A symbolic link, even to a private file: refused by serve before it listens.
    let real = dir.join("real.log");
    std::fs::write(&real, b"").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.join("link.log");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (cert, key) = (
        arg(&pki.path("server.pem")),
        arg(&pki.path("server-key.pem")),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let run = tlsnet(&[
        "serve",
        "--listen",
        &listen,
        "--cert",
        &cert,
        "--key",
        &key,
        "--keylog",
        &arg(&link),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("symbolic link"), "{}", run.stderr);

    // Not a regular file.
    let run = connect_with(&pki, free_port(), &["--keylog", "/dev/null"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);

    // A file target of inspect has no TLS connection to log.
    let run = tlsnet(&[
        "inspect",
        &arg(&pki.path("ca.pem")),
        "--keylog",
        &arg(&real),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--keylog applies to a server"),
        "{}",
        run.stderr
    );
}
