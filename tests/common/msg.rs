//! The msg service's test helpers: `tlsnet serve` with a store of the test's own (restartable
//! on the same port, for crash tests), users with certificates made at test time, and a
//! library client connected as one of them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tlsnet::msg::client::MsgClient;
use tlsnet::msg::codec::{Frame, Message};
use tlsnet::net::client::ClientStream;
use tlsnet::pki::{LeafSpec, Purpose};

use super::{connect, Proc, TestPki, STEP};

/// A `tlsnet serve` with the msg service, its store in `store`, on a fixed port so that it can
/// be killed and started again where its clients expect it.
pub struct MsgServer {
    pub proc: Proc,
    pub port: u16,
    pub store: PathBuf,
    args: Vec<OsString>,
    cert: PathBuf,
    key: PathBuf,
}

impl MsgServer {
    /// Starts it with this PKI's server certificate, client certificates required, the store
    /// in `PKI_DIR/store`, and `extra` flags.
    pub async fn start(pki: &TestPki, extra: &[&str]) -> MsgServer {
        Self::start_with_store(pki, pki.path("store"), extra).await
    }

    /// Starts it with `--store store` (a directory, or `nats://...` for a node of a NATS
    /// cluster) and `extra` flags.
    pub async fn start_with_store(pki: &TestPki, store: PathBuf, extra: &[&str]) -> MsgServer {
        let args: Vec<OsString> = extra.iter().map(OsString::from).collect();
        let (proc, port) = Self::spawn(pki, &store, &args, None).await;
        MsgServer {
            proc,
            port,
            store,
            args,
            cert: pki.path("server.pem"),
            key: pki.path("server-key.pem"),
        }
    }

    async fn spawn(
        pki: &TestPki,
        store: &Path,
        args: &[OsString],
        port: Option<u16>,
    ) -> (Proc, u16) {
        let make = |port: u16| {
            let mut command = super::tlsnet_command();
            command
                .arg("serve")
                .arg("--cert")
                .arg(pki.path("server.pem"))
                .arg("--key")
                .arg(pki.path("server-key.pem"))
                .arg("--client-ca")
                .arg(pki.path("ca.pem"))
                .arg("--store")
                .arg(store)
                .args(["--shutdown-timeout", "3s"])
                .args(args)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"));
            command
        };
        match port {
            None => super::start_listening_peer("tlsnet serve", "tlsnet serving", make).await,
            Some(port) => {
                let mut proc = Proc::spawn("tlsnet serve", make(port));
                proc.wait_until("serving", STEP, |_, err| err.contains("tlsnet serving"))
                    .await;
                (proc, port)
            }
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills it with SIGKILL (no goodbye, no flush) and waits until it is gone.
    pub async fn kill9(&mut self) {
        self.proc.kill().await;
    }

    /// Stops it with SIGTERM (it says goodbye to its sessions) and waits until it is gone.
    pub async fn stop(&mut self) {
        let pid = self.proc.pid().expect("running");
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM {pid}");
        self.proc.wait_exit(STEP).await;
    }

    /// Starts it again on the same port with the same store.
    pub async fn restart(&mut self, pki: &TestPki) {
        assert_eq!(pki.path("server.pem"), self.cert);
        assert_eq!(pki.path("server-key.pem"), self.key);
        // The old listener's port may take a moment to be free again.
        for attempt in 0..20 {
            let (proc, _) = Self::spawn(pki, &self.store, &self.args, Some(self.port)).await;
            self.proc = proc;
            if self.proc.exited().is_none() {
                return;
            }
            assert!(attempt < 19, "cannot restart\n{}", self.proc.describe());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl TestPki {
    /// A client certificate for the messaging user `name` (its CN), issued once.
    pub fn user(&self, name: &str) -> String {
        let stem = format!("user-{name}");
        if !self.path(&format!("{stem}.pem")).is_file() {
            self.issue(&stem, &LeafSpec::new(Purpose::Client, name));
        }
        stem
    }
}

/// Connects as the certificate `stem` (from [`TestPki::user`] or [`TestPki::issue`]) with
/// ALPN tlsnet-msg/1, and reads the welcome.
pub async fn msg_connect_as(
    pki: &TestPki,
    addr: &str,
    stem: &str,
) -> Result<MsgClient<ClientStream>, tlsnet::msg::client::ClientError> {
    let mut tls =
        tlsnet::tls::ClientTlsOptions::with_roots(pki.ca_certs()).with_identity(pki.identity(stem));
    tls.alpn = vec![tlsnet::msg::ALPN.to_vec()];
    let (stream, _) =
        connect(addr, &tls)
            .await
            .map_err(|e| tlsnet::msg::client::ClientError::Io {
                doing: "connecting",
                source: std::io::Error::other(e),
            })?;
    MsgClient::start(stream, Duration::from_secs(10)).await
}

/// Connects as the user `name`; panics when it cannot.
pub async fn msg_user(pki: &TestPki, addr: &str, name: &str) -> MsgClient<ClientStream> {
    let stem = pki.user(name);
    msg_connect_as(pki, addr, &stem)
        .await
        .unwrap_or_else(|e| panic!("{name} cannot connect: {}", tlsnet::error::chain(&e)))
}

/// The next frame matching `pick`, within 10 s; other frames are skipped.
pub async fn expect<T>(
    client: &mut MsgClient<ClientStream>,
    what: &str,
    pick: impl Fn(Frame) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.next_event(left).await {
            Ok(Some(frame)) => {
                if let Some(t) = pick(frame) {
                    return t;
                }
            }
            Ok(None) => panic!("{} got no {what} within 10 s", client.user()),
            Err(e) => panic!(
                "{} waiting for {what}: {}",
                client.user(),
                tlsnet::error::chain(&e)
            ),
        }
    }
}

pub async fn deliver(client: &mut MsgClient<ClientStream>) -> Message {
    expect(client, "message", |f| match f {
        Frame::Deliver(m) => Some(m),
        _ => None,
    })
    .await
}

/// Receives `n` messages, acking each.
pub async fn receive(client: &mut MsgClient<ClientStream>, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = deliver(client).await;
        client.ack(&[m.id]).await.unwrap();
        out.push(m);
    }
    out
}

/// Nothing but receipts and presence arrives for `wait`.
pub async fn no_message(client: &mut MsgClient<ClientStream>, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        match client.next_event(left).await.unwrap() {
            Some(Frame::Deliver(m)) => panic!("unexpected message {m:?}"),
            Some(_) => {}
            None => return,
        }
    }
}
