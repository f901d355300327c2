//! A NATS JetStream cluster for the tests: three `nats-server` processes on loopback (the
//! pinned binary of `scripts/nats-server`), routed to each other, JetStream on, clients on
//! mutual TLS with the test PKI's certificates; and tlsnet nodes on it.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, MsgServer, Proc, TestPki, STEP};
use tlsnet::pki::{LeafSpec, Purpose};

/// The nats-server binary: `$TLSNET_NATS_SERVER`, or what `scripts/nats-server` prints (it
/// installs it on first use; `scripts/test` runs it before the tests).
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TLSNET_NATS_SERVER") {
            return PathBuf::from(p);
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/nats-server");
        let out = std::process::Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "scripts/nats-server failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A GET of nats-server's monitoring endpoint, in HTTP/1.0 (no keep-alive, no chunks);
/// empty when it does not answer.
fn monitor(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(tcp, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = tcp.read_to_string(&mut text);
    text
}

/// The body of an HTTP response (after the blank line), or "no answer".
fn body(response: &str) -> &str {
    match response.split_once("\r\n\r\n") {
        Some((_, body)) => body.trim(),
        None if response.is_empty() => "no answer",
        None => response,
    }
}

/// One server of the cluster.
pub struct NatsNode {
    pub name: String,
    pub port: u16,
    pub http: u16,
    config: PathBuf,
    pub proc: Option<Proc>,
}

/// Three routed nats-servers with JetStream.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// Starts three servers and waits until JetStream has a metadata leader.
    pub async fn start(pki: &TestPki) -> NatsCluster {
        let n = 3;
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::new();
        for (i, &(port, route, http)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, r, _))| format!("\"nats-route://127.0.0.1:{r}\""))
                .collect();
            let dir = pki.path(&format!("nats-{name}"));
            std::fs::create_dir_all(&dir).unwrap();
            let config = dir.join("nats.conf");
            let text = format!(
                r#"server_name: {name}
listen: "127.0.0.1:{port}"
http: "127.0.0.1:{http}"
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 1GB
}}
cluster {{
  name: tlsnet-test
  listen: "127.0.0.1:{route}"
  routes: [{routes}]
}}
tls {{
  cert_file: "{cert}"
  key_file: "{key}"
  ca_file: "{ca}"
  verify: true
  timeout: 2
}}
"#,
                store = dir.join("js").display(),
                routes = routes.join(", "),
                cert = pki.path("server.pem").display(),
                key = pki.path("server-key.pem").display(),
                ca = pki.path("ca.pem").display(),
            );
            std::fs::write(&config, text).unwrap();
            nodes.push(NatsNode {
                name,
                port,
                http,
                config,
                proc: None,
            });
        }
        let mut cluster = NatsCluster { nodes };
        for i in 0..n {
            cluster.start_node(i).await;
        }
        cluster.wait_ready().await;
        cluster
    }

    /// Starts server `i` again (same ports, same JetStream directory).
    pub async fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut command = tokio::process::Command::new(nats_server_bin());
        command.arg("-c").arg(&node.config);
        let mut proc = Proc::spawn(&format!("nats-server {}", node.name), command);
        proc.wait_until("ready", STEP, |_, err| err.contains("Server is ready"))
            .await;
        node.proc = Some(proc);
    }

    /// Kills server `i` with SIGKILL.
    pub async fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.kill().await;
        }
    }

    /// Waits until every running server is healthy and JetStream has a metadata leader. A
    /// cluster forms in about a second on an idle machine; the bound is two steps because
    /// several clusters start at once when the tests run in parallel.
    pub async fn wait_ready(&self) {
        let limit = 2 * STEP;
        let start = Instant::now();
        loop {
            let unready: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.proc.is_some())
                .filter_map(|n| {
                    let addr = format!("127.0.0.1:{}", n.http);
                    let health = monitor(&addr, "/healthz");
                    let jsz = monitor(&addr, "/jsz");
                    let ready = health.contains("\"ok\"") && jsz.contains("\"leader\"");
                    (!ready).then(|| {
                        format!(
                            "{} /healthz: {}\n/jsz: {}",
                            n.name,
                            body(&health),
                            body(&jsz)
                        )
                    })
                })
                .collect();
            if unready.is_empty() {
                return;
            }
            if start.elapsed() > limit {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .filter_map(|n| n.proc.as_ref().map(Proc::describe))
                    .collect();
                panic!(
                    "the NATS cluster is not ready within {limit:?}:\n{}\n{}",
                    unready.join("\n"),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The replicas of stream `name` as the first running server's monitoring reports them
    /// (`/jsz`: the stream's config), 0 when it has no such stream.
    pub fn stream_replicas(&self, name: &str) -> u64 {
        fn find(v: &serde_json::Value, name: &str) -> Option<u64> {
            match v {
                serde_json::Value::Object(map) => {
                    if map.get("name").and_then(|n| n.as_str()) == Some(name) {
                        if let Some(r) = map.get("config").and_then(|c| c["num_replicas"].as_u64())
                        {
                            return Some(r);
                        }
                    }
                    map.values().find_map(|v| find(v, name))
                }
                serde_json::Value::Array(list) => list.iter().find_map(|v| find(v, name)),
                _ => None,
            }
        }
        let Some(n) = self.nodes.iter().find(|n| n.proc.is_some()) else {
            return 0;
        };
        let text = monitor(
            &format!("127.0.0.1:{}", n.http),
            "/jsz?accounts=true&streams=true&config=true",
        );
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body)
            .ok()
            .and_then(|v| find(&v, name))
            .unwrap_or(0)
    }

    /// `nats://` URL of every server, for `--store`.
    pub fn url(&self) -> String {
        let list: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("nats://{}", list.join(","))
    }

    /// A tlsnet node on this cluster, with mutual TLS to NATS (certificate `nats-node`) and
    /// `extra` flags.
    pub async fn tlsnet_node(&self, pki: &TestPki, extra: &[&str]) -> MsgServer {
        if !pki.path("nats-node.pem").is_file() {
            pki.issue("nats-node", &LeafSpec::new(Purpose::Client, "tlsnet node"));
        }
        let (ca, cert, key) = (
            pki.path("ca.pem"),
            pki.path("nats-node.pem"),
            pki.path("nats-node-key.pem"),
        );
        let mut args: Vec<String> = [
            "--nats-ca",
            ca.to_str().unwrap(),
            "--nats-cert",
            cert.to_str().unwrap(),
            "--nats-key",
            key.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        MsgServer::start_with_store(pki, PathBuf::from(self.url()), &args).await
    }
}
