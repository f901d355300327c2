//! Peer processes for the async (tokio) tests: started with piped stdio, their output
//! collected while they run, every wait bounded, and killed when dropped so that none outlives
//! its test. The peer scripts they run are in `tests/peers/`.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use super::TestPki;

/// How long one step (a peer starting, a line arriving, a process ending) may take.
pub const STEP: Duration = Duration::from_secs(30);

/// A whole test may take this long; past it, it fails.
pub const TEST_LIMIT: Duration = Duration::from_secs(180);

/// Runs a test body with an overall deadline.
pub async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("test did not finish within {TEST_LIMIT:?}");
    }
}

/// A path under `tests/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("peers")
        .join(name)
}

#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// A running peer process.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<Output>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `command` with piped stdin, stdout and stderr. The process is killed when the
    /// `Proc` is dropped.
    pub fn spawn(name: &str, mut command: Command) -> Proc {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let output = Arc::new(Mutex::new(Output::default()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let readers = vec![
            tokio::spawn(collect(stdout, output.clone(), false)),
            tokio::spawn(collect(stderr, output.clone(), true)),
        ];
        Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            output,
            readers,
            status: None,
        }
    }

    /// The process id, for /proc (`None` once it has been waited for).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What the process wrote on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap().stdout).into_owned()
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap().stderr).into_owned()
    }

    /// Both outputs, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}\n--- end of {} ---",
            self.name,
            self.stdout(),
            self.name,
            self.stderr(),
            self.name
        )
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits until `done(stdout, stderr)` holds. Panics (with both outputs) when it does not
    /// within `limit`, or when the process has ended and its output is complete without it.
    pub async fn wait_until(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&str, &str) -> bool,
    ) {
        let start = Instant::now();
        loop {
            if done(&self.stdout(), &self.stderr()) {
                return;
            }
            if let Some(status) = self.exited() {
                if self.readers.iter().all(|r| r.is_finished())
                    && !done(&self.stdout(), &self.stderr())
                {
                    panic!(
                        "{} ended ({status}) before {what}\n{}",
                        self.name,
                        self.describe()
                    );
                }
            }
            if start.elapsed() > limit {
                panic!(
                    "{} did not show {what} within {limit:?}\n{}",
                    self.name,
                    self.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until stdout contains `needle`.
    pub async fn wait_for_stdout(&mut self, needle: &str) {
        let what = format!("{needle:?} on stdout");
        self.wait_until(&what, STEP, |out, _| out.contains(needle))
            .await;
    }

    /// Waits until stderr contains `needle`.
    pub async fn wait_for_stderr(&mut self, needle: &str) {
        let what = format!("{needle:?} on stderr");
        self.wait_until(&what, STEP, |_, err| err.contains(needle))
            .await;
    }

    /// Writes to the process's stdin.
    pub async fn write_stdin(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        tokio::time::timeout(STEP, async {
            stdin.write_all(data).await?;
            stdin.flush().await
        })
        .await
        .unwrap_or_else(|_| panic!("writing to {}'s stdin blocked", self.name))
        .unwrap_or_else(|e| panic!("cannot write to {}'s stdin: {e}", self.name));
    }

    /// Closes the process's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to end (stdin is left as it is) and for its output to be
    /// complete. Kills it and panics if it does not end within `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let status = match self.status {
            Some(status) => status,
            None => match tokio::time::timeout(limit, self.child.wait()).await {
                Ok(status) => status.expect("wait"),
                Err(_) => {
                    let _ = self.child.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
                    panic!(
                        "{} did not end within {limit:?}\n{}",
                        self.name,
                        self.describe()
                    );
                }
            },
        };
        self.status = Some(status);
        for reader in self.readers.drain(..) {
            // A grandchild holding the pipes open must not hang the test.
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status
    }

    /// Closes stdin, then waits for the process to end as [`Proc::wait_exit`] does.
    pub async fn finish(&mut self, limit: Duration) -> ExitStatus {
        self.close_stdin();
        self.wait_exit(limit).await
    }

    /// Sends the signal `name` (`HUP`, `TERM`) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.pid().expect("a running process");
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} {pid}");
    }

    /// How many times `needle` is on stderr so far.
    pub fn stderr_count(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    /// Waits until `needle` is on stderr more than `seen` times; returns the stderr.
    pub async fn wait_for_stderr_after(&mut self, needle: &str, seen: usize) -> String {
        let what = format!("{needle:?} on stderr a {}th time", seen + 1);
        self.wait_until(&what, STEP, |_, err| err.matches(needle).count() > seen)
            .await;
        self.stderr()
    }

    /// Kills the process and waits for it.
    pub async fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.start_kill();
        }
        let _ = self.wait_exit(Duration::from_secs(10)).await;
    }
}

async fn collect(mut pipe: impl AsyncRead + Unpin, output: Arc<Mutex<Output>>, is_stderr: bool) {
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut output = output.lock().unwrap();
                let sink = if is_stderr {
                    &mut output.stderr
                } else {
                    &mut output.stdout
                };
                sink.extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// A `tlsnet` command with a predictable environment: logs at `info`, no ANSI colours, and
/// no development PKI from the environment.
pub fn tlsnet_command() -> Command {
    let mut command = Command::from(super::tlsnet_cmd());
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    command
}

/// `tlsnet serve` with this PKI's server certificate and `extra` flags, as
/// [`start_tlsnet_serve`] starts it.
pub async fn serve_pki(pki: &TestPki, extra: &[&OsStr]) -> (Proc, String) {
    let mut args: Vec<OsString> = vec![
        "--cert".into(),
        pki.path("server.pem").into(),
        "--key".into(),
        pki.path("server-key.pem").into(),
    ];
    args.extend(extra.iter().map(|a| a.to_os_string()));
    start_tlsnet_serve(args).await
}

/// `tlsnet connect 127.0.0.1:PORT` trusting the test CA for the name `localhost`, optionally
/// with the test client certificate.
pub fn tlsnet_connect(pki: &TestPki, port: u16, with_cert: bool) -> Proc {
    let mut command = tlsnet_command();
    command
        .arg("connect")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--servername", "localhost", "--timeout", "10s"])
        .arg("--ca")
        .arg(pki.path("ca.pem"));
    if with_cert {
        command
            .arg("--cert")
            .arg(pki.path("client.pem"))
            .arg("--key")
            .arg(pki.path("client-key.pem"));
    }
    Proc::spawn("tlsnet connect", command)
}

/// Runs `tlsnet connect` without a client certificate (see [`tlsnet_connect`]) against a
/// server on `port` that requires one, sends a line, and checks that the client fails with
/// exit status 1, prints nothing, and names the missing certificate as the cause.
pub async fn connect_without_certificate_is_refused(pki: &TestPki, port: u16) {
    let mut client = tlsnet_connect(pki, port, false);
    client.write_stdin(b"anyone there?\n").await;
    let status = client.wait_exit(STEP).await;
    println!("{}", client.describe());
    assert_eq!(status.code(), Some(1), "{}", client.describe());
    assert!(client.stdout().is_empty(), "{}", client.describe());
    assert!(
        client.stderr().contains("client certificate"),
        "expected the cause to name the missing certificate\n{}",
        client.describe()
    );
}

/// Starts `tlsnet serve ARGS --listen 127.0.0.1:PORT` on a free port and waits until it
/// serves. Returns the process and `127.0.0.1:PORT`. A port taken between choosing and
/// binding it is retried with another.
pub async fn start_tlsnet_serve<I, S>(args: I) -> (Proc, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let (server, port) = start_listening_peer("tlsnet serve", "tlsnet serving", |port| {
        let mut command = tlsnet_command();
        command
            .arg("serve")
            .args(&args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        command
    })
    .await;
    let addr = format!("127.0.0.1:{port}");
    super::wait_for_port(&addr).await;
    (server, addr)
}

/// Starts a server-like peer that listens on a port it is given and prints `ready` once
/// listening: `make(PORT)` builds the command. Retries on another port when the port was
/// taken. Returns the process and the port.
pub async fn start_listening_peer(
    name: &str,
    ready: &str,
    make: impl Fn(u16) -> Command,
) -> (Proc, u16) {
    for _attempt in 0..5 {
        let port = super::free_port();
        let mut peer = Proc::spawn(name, make(port));
        let started = tokio::time::timeout(
            STEP,
            peer.wait_until_or_exit(|out, err| out.contains(ready) || err.contains(ready)),
        )
        .await;
        match started {
            Ok(true) => return (peer, port),
            Ok(false) => {
                peer.wait_exit(STEP).await;
                let text = format!("{}{}", peer.stdout(), peer.stderr());
                if text.contains("Address already in use") {
                    continue;
                }
                panic!("{name} did not start\n{}", peer.describe());
            }
            Err(_) => panic!(
                "{name} did not print {ready:?} within {STEP:?}\n{}",
                peer.describe()
            ),
        }
    }
    panic!("{name} found no free port in 5 attempts");
}

impl Proc {
    /// Waits until `done` holds (true) or the process has ended without it (false).
    async fn wait_until_or_exit(&mut self, done: impl Fn(&str, &str) -> bool) -> bool {
        loop {
            if done(&self.stdout(), &self.stderr()) {
                return true;
            }
            if self.exited().is_some() && self.readers.iter().all(|r| r.is_finished()) {
                return done(&self.stdout(), &self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The text with runs of whitespace made single spaces (`Protocol  : TLSv1.3` becomes
/// `Protocol : TLSv1.3`).
pub fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
