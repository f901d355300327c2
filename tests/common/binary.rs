//! The built binary as a process: `tlsnet serve` with its log in a file, `tlsnet connect` with
//! input on stdin; every wait is bounded and every process is killed when the test ends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, tlsnet_bin};

/// A `tlsnet serve` process whose stderr goes to a file; killed when dropped.
pub struct ServeProcess {
    child: Child,
    log: PathBuf,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl ServeProcess {
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        let port = free_port();
        let log = dir.join(format!("serve-{port}.log"));
        let child = Command::new(tlsnet_bin())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tlsnet serve");
        let mut server = ServeProcess { child, log, port };
        server.wait_ready();
        server
    }

    /// The process id, for /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tlsnet serve exited with {status}: {}", self.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "server not listening: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // That probe connection is itself logged as a failed handshake; wait until it is, so
        // that tests reading the log start from a known state.
        self.wait_for_log("handshake failed");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 10 s) for a log line containing `needle`; returns the whole log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no log line with '{needle}' in:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tlsnet connect` with `input` on stdin; bounded to 30 s.
pub fn connect_cmd(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(tlsnet_bin())
        .arg("connect")
        .args(args)
        .env_remove("TLSNET_PKI_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tlsnet connect");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("tlsnet connect did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
