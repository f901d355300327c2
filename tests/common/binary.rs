//! Processes run synchronously: one bounded runner for commands that run to their end (the
//! `tlsnet` binary, `openssl x509`, ...) and one kill-on-drop wrapper for long-running servers
//! (`tlsnet serve`, `openssl s_server`, the STARTTLS peer). Every wait is bounded and every
//! process is killed when its test ends.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, tlsnet_bin, TestPki};

/// How long one run of a command that runs to its end may take.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// How long `tlsnet connect` may take.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// How long a server process may take to start, to print a line or to end.
pub const SERVE_STEP: Duration = Duration::from_secs(20);

/// A finished run of a command.
pub struct Run {
    pub status: ExitStatus,
    /// The exit code; -1 when a signal ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout as JSON; panics with both outputs when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr: {}", self.stdout, self.stderr))
    }

    /// Panics with both outputs unless the command exited 0.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `command` to its end with stdout and stderr captured and `input` on stdin (`None`:
/// stdin is /dev/null). Kills it and panics if it takes longer than `limit`.
pub fn run(mut command: Command, input: Option<&[u8]>, limit: Duration) -> Run {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{command:?}");
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        // From a thread, so that a process that does not read cannot block the test; dropping
        // stdin at the end is the end of input.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = |reader: JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&reader.join().expect("output reader")).into_owned()
    };
    Run {
        status,
        code: status.code().unwrap_or(-1),
        stdout: text(stdout),
        stderr: text(stderr),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// The `tlsnet` binary with a predictable environment: default logging (no `RUST_LOG`), no
/// development PKI from the environment (no `TLSNET_PKI_DIR`), and a state directory of the
/// test run's own (`XDG_STATE_HOME`), so that defaults such as the files root and the message
/// store never land in the home directory of whoever runs the tests.
pub fn tlsnet_cmd() -> Command {
    let mut command = Command::new(tlsnet_bin());
    command
        .env_remove("RUST_LOG")
        .env_remove("TLSNET_PKI_DIR")
        .env("XDG_STATE_HOME", state_home());
    command
}

/// The state directory the tests' `tlsnet` processes get: under target/tmp, kept between
/// runs (it holds only what tests leave at default locations).
pub fn state_home() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-state")
}

/// Runs `tlsnet ARGS` with stdin from /dev/null; bounded to [`RUN_LIMIT`].
pub fn tlsnet(args: &[&str]) -> Run {
    let mut command = tlsnet_cmd();
    command.args(args);
    run(command, None, RUN_LIMIT)
}

/// Runs `tlsnet connect ARGS` with `input` on stdin; bounded to [`CONNECT_LIMIT`].
pub fn connect_cmd(args: &[&str], input: &[u8]) -> Run {
    let mut command = tlsnet_cmd();
    command.arg("connect").args(args);
    run(command, Some(input), CONNECT_LIMIT)
}

/// Numbers the output files of the processes a test starts.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A server process (`tlsnet serve` or a peer) whose stdout and stderr go to files; killed
/// when dropped.
pub struct ServeProcess {
    name: String,
    child: Child,
    /// Kept open when piped (`openssl s_server` ends on end of input).
    _stdin: Option<ChildStdin>,
    out: PathBuf,
    log: PathBuf,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl ServeProcess {
    /// `tlsnet serve --listen 127.0.0.1:PORT ARGS` on a free port, once it serves.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_serve(dir, tlsnet_cmd(), args)
    }

    /// `tlsnet serve` with this PKI's server certificate and `extra` flags, in its directory.
    pub fn start_pki(pki: &TestPki, extra: &[&str]) -> Self {
        let path = |name: &str| pki.path(name).to_str().unwrap().to_owned();
        let (cert, key) = (path("server.pem"), path("server-key.pem"));
        let mut args = vec!["--cert", &cert, "--key", &key];
        args.extend_from_slice(extra);
        Self::start(pki.dir.path(), &args)
    }

    /// Like [`ServeProcess::start`], with at most `fds` open file descriptors (`ulimit -n`).
    pub fn start_with_fd_limit(dir: &Path, fds: u32, args: &[&str]) -> Self {
        let mut command = Command::new("sh");
        command
            .args(["-c", &format!("ulimit -n {fds} && exec \"$0\" \"$@\"")])
            .arg(tlsnet_bin())
            .env_remove("RUST_LOG")
            .env_remove("TLSNET_PKI_DIR")
            .env("XDG_STATE_HOME", state_home());
        Self::start_serve(dir, command, args)
    }

    /// Like [`ServeProcess::start`] with `command` (e.g. [`tlsnet_cmd`] with more environment)
    /// as the `tlsnet` to run.
    pub fn start_serve(dir: &Path, mut command: Command, args: &[&str]) -> Self {
        let port = free_port();
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(Stdio::null());
        let mut server = Self::spawn("tlsnet serve", dir, port, command);
        server.wait_ready();
        server
    }

    /// Starts `command` (stdin as it sets it; kept open when piped) with its stdout and stderr
    /// in files in `dir`. `port` is where it listens, or 0 until the caller learns it.
    pub fn spawn(name: &str, dir: &Path, port: u16, mut command: Command) -> Self {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{}-{n}", name.replace(' ', "-"));
        let out = dir.join(format!("{stem}.out"));
        let log = dir.join(format!("{stem}.log"));
        let mut child = command
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        ServeProcess {
            name: name.to_owned(),
            _stdin: child.stdin.take(),
            child,
            out,
            log,
            port,
        }
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
            if let Some(status) = self.exited() {
                panic!("{} exited with {status}: {}", self.name, self.log_text());
            }
            assert!(
                started.elapsed() < SERVE_STEP,
                "server not listening: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // That probe connection is itself logged as a failed handshake; wait until it is, so
        // that tests reading the log start from a known state.
        self.wait_for_log("handshake failed");
    }

    /// What it wrote on stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What it wrote on stderr (`tlsnet serve`'s log) so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Both outputs, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}\n--- end of {} ---",
            self.name,
            self.stdout_text(),
            self.name,
            self.log_text(),
            self.name
        )
    }

    /// The exit status, if it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits until `done(stdout, stderr)` holds. Panics (with both outputs) when it does not
    /// within `limit`, or when the process has ended without it.
    pub fn wait_until(&mut self, what: &str, limit: Duration, done: impl Fn(&str, &str) -> bool) {
        let started = Instant::now();
        loop {
            let ended = self.exited();
            if done(&self.stdout_text(), &self.log_text()) {
                return;
            }
            if let Some(status) = ended {
                panic!(
                    "{} ended ({status}) before {what}\n{}",
                    self.name,
                    self.describe()
                );
            }
            assert!(
                started.elapsed() < limit,
                "{} did not show {what} within {limit:?}\n{}",
                self.name,
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "{} did not exit within {limit:?}\n{}",
                self.name,
                self.describe()
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
