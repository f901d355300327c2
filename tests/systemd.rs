//! systemd integration with systemd's own tools: socket activation through
//! `systemd-socket-activate` (the sockets a `.socket` unit would pass), and `Type=notify`
//! readiness on a NOTIFY_SOCKET of the test's.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn serve_uses_the_socket_systemd_passes() {
    require("systemd-socket-activate");
    let pki = TestPki::new();
    let path = |name: &str| pki.path(name).to_str().unwrap().to_owned();
    let port = free_port();
    let mut command = Command::new("systemd-socket-activate");
    let state = format!("XDG_STATE_HOME={}", state_home().display());
    command
        .args(["-l", &format!("127.0.0.1:{port}"), "-E", &state])
        .arg(tlsnet_bin())
        .args([
            "serve",
            "--cert",
            &path("server.pem"),
            "--key",
            &path("server-key.pem"),
            "--client-ca",
            &path("ca.pem"),
            // Not used: the passed socket is.
            "--listen",
            "127.0.0.1:1",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    let server = ServeProcess::spawn("systemd-socket-activate", pki.dir.path(), port, command);
    // systemd-socket-activate listens at once and starts tlsnet on the first connection.
    let mut waited = Duration::ZERO;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(waited < Duration::from_secs(10), "{}", server.describe());
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    }
    server.wait_for_log("using the sockets systemd passed");
    let out = connect_cmd(
        &[
            &server.addr(),
            "--ca",
            &path("ca.pem"),
            "--cert",
            &path("client.pem"),
            "--key",
            &path("client-key.pem"),
            "--servername",
            "localhost",
            "-q",
        ],
        b"activated\n",
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, server.describe());
    assert_eq!(out.stdout, "activated\n");
}

#[test]
fn serve_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let pki = TestPki::new();
    let socket_path = pki.path("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut command = tlsnet_cmd();
    command.env("NOTIFY_SOCKET", &socket_path);
    let ca = pki.path("ca.pem").to_str().unwrap().to_owned();
    let cert = pki.path("server.pem").to_str().unwrap().to_owned();
    let key = pki.path("server-key.pem").to_str().unwrap().to_owned();
    let mut server = ServeProcess::start_serve(
        pki.dir.path(),
        command,
        &["--cert", &cert, "--key", &key, "--client-ca", &ca],
    );
    let mut buf = [0u8; 128];
    let n = socket.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(&buf[..n], b"READY=1\n");
    server.signal("TERM");
    let n = socket.recv(&mut buf).expect("STOPPING=1 after SIGTERM");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}
