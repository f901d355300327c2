//! `tlsnet-loadgen`: the client side of tlsnet's benchmark rig (`bench/run`).
//!
//! Every mode talks to one TLS server on loopback with rustls (aws-lc-rs, TLS 1.3 only,
//! certificate verification on), and prints one JSON object on stdout. When given the server's
//! process id (`--pid`, repeatable; descendants are included, e.g. nginx workers), it reads the
//! server's CPU time (utime + stime from /proc/PID/stat) and memory (VmRSS) right around the
//! measured phase, so that its own start-up and warm-up are not counted.
//!
//! Every run is bounded in count and in time (`--max-secs`) and stops by itself.
//!
//! Modes:
//! - `pki`: makes the development PKI (CA, server and client certificates, ECDSA P-256).
//! - `handshake`: N handshakes (full or resumed) with C concurrent clients.
//! - `bulk`: one connection sends N bytes to the server, then waits for the server to close.
//! - `idle`: opens N connections, completes their handshakes, holds them idle and reports the
//!   server's RSS per connection.
//! - `sink`: a plain TCP server that reads and drops everything (upstream of tunnels), or with
//!   `--echo` sends every byte back (the backend of the tunnel's connection and latency rows).
//! - `latency`: one connection (TLS, or plain TCP with `--plain`) sends N small messages one at
//!   a time and waits for each to come back; percentiles of the round trip.
//! - `msg-tlsnet`, `msg-mqtt`, `msg-nats`: messaging load (direct messages, room fan-out,
//!   idle users) against tlsnet's msg service, an MQTT broker and NATS; see `msg.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rustls::client::Resumption;
use rustls::crypto::{aws_lc_rs, SupportedKxGroup};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

mod msg;

#[derive(Parser, Debug)]
#[command(name = "tlsnet-loadgen", version)]
struct Cli {
    /// Runtime worker threads (default: 1 for one client, else 2).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Make (or keep) the development PKI in DIR.
    Pki {
        /// Directory.
        #[arg(long)]
        dir: PathBuf,
        /// Also this many user certificates (CN u0, u1, ...) in DIR/users.
        #[arg(long, default_value_t = 0)]
        users: usize,
    },
    /// Full or resumed handshakes.
    Handshake(HandshakeArgs),
    /// One stream of bulk data, client to server.
    Bulk(BulkArgs),
    /// Many idle connections; RSS per connection.
    Idle(IdleArgs),
    /// Plain TCP discard (or echo) server.
    Sink(SinkArgs),
    /// Round trips of small messages through an echo server.
    Latency(LatencyArgs),
    /// Messaging load against tlsnet's msg service.
    MsgTlsnet(msg::MsgArgs),
    /// The same against an MQTT broker (QoS 1).
    MsgMqtt(msg::MsgArgs),
    /// The same against NATS (core, or JetStream with --jetstream).
    MsgNats(msg::MsgArgs),
}

#[derive(Args, Debug, Clone)]
struct Target {
    /// Server address (IP:PORT).
    #[arg(long)]
    connect: SocketAddr,
    /// Name the server certificate is checked against (and SNI).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// CA certificate (PEM) that signs the server certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate chain (PEM), for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// The only key-exchange group offered.
    #[arg(long, value_enum, default_value = "x25519")]
    group: Group,
    /// Server process id (repeatable); its descendants are counted too.
    #[arg(long)]
    pid: Vec<u32>,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 60.0)]
    max_secs: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Group {
    X25519,
    X25519mlkem768,
    P256,
}

impl Group {
    fn kx(self) -> &'static dyn SupportedKxGroup {
        match self {
            Group::X25519 => aws_lc_rs::kx_group::X25519,
            Group::X25519mlkem768 => aws_lc_rs::kx_group::X25519MLKEM768,
            Group::P256 => aws_lc_rs::kx_group::SECP256R1,
        }
    }
}

#[derive(Args, Debug)]
struct HandshakeArgs {
    #[command(flatten)]
    target: Target,
    /// Measured handshakes, in all.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Resume with session tickets (each client keeps its own ticket store).
    #[arg(long)]
    resume: bool,
    /// Unmeasured handshakes per client first (they also fetch the first tickets).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// After each handshake, send one byte and wait for it to come back (a tunnel to an echo
    /// backend: the handshake plus the backend's connection, as a client sees it).
    #[arg(long)]
    echo_byte: bool,
}

#[derive(Args, Debug)]
struct BulkArgs {
    #[command(flatten)]
    target: Target,
    /// Bytes to send.
    #[arg(long, default_value_t = 2 << 30)]
    bytes: u64,
    /// Bytes per write call.
    #[arg(long, default_value_t = 256 * 1024)]
    chunk: usize,
}

#[derive(Args, Debug)]
struct IdleArgs {
    #[command(flatten)]
    target: Target,
    /// Connections to hold.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Handshakes in flight while opening them.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to wait, once all are open, before reading the server's RSS.
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
}

#[derive(Args, Debug)]
struct SinkArgs {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 3600.0)]
    max_secs: f64,
    /// Send every byte back instead of dropping it.
    #[arg(long)]
    echo: bool,
}

#[derive(Args, Debug)]
struct LatencyArgs {
    #[command(flatten)]
    target: Target,
    /// Plain TCP, no TLS (the direct connection the tunnel is compared with).
    #[arg(long)]
    plain: bool,
    /// Measured round trips.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Unmeasured round trips first.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let one_client = match &cli.mode {
        Mode::Handshake(a) => a.concurrency == 1,
        Mode::Bulk(_) | Mode::Latency(_) => true,
        _ => false,
    };
    let threads = cli.threads.unwrap_or(if one_client { 1 } else { 2 });
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let out = runtime.block_on(async move {
        match cli.mode {
            Mode::Pki { dir, users } => pki(dir, users),
            Mode::Handshake(a) => handshakes(a).await,
            Mode::Bulk(a) => bulk(a).await,
            Mode::Idle(a) => idle(a).await,
            Mode::Sink(a) => sink(a).await,
            Mode::Latency(a) => latency(a).await,
            Mode::MsgTlsnet(a) => msg::run(msg::System::Tlsnet, a).await,
            Mode::MsgMqtt(a) => msg::run(msg::System::Mqtt, a).await,
            Mode::MsgNats(a) => msg::run(msg::System::Nats, a).await,
        }
    })?;
    println!("{out}");
    runtime.shutdown_background();
    Ok(())
}

fn pki(dir: PathBuf, users: usize) -> Result<Value> {
    let pki = tlsnet::pki::dev::DevPki::at(&dir);
    let state = pki
        .ensure()
        .with_context(|| format!("PKI in {}", dir.display()))?;
    let users = if users > 0 {
        Some(msg::make_users(&dir, users)?)
    } else {
        None
    };
    Ok(json!({ "dir": dir, "state": format!("{state:?}"), "users": users }))
}

fn client_config(t: &Target, resume: bool) -> Result<Arc<ClientConfig>> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![t.group.kx()];
    let mut roots = RootCertStore::empty();
    for cert in tlsnet::tls::load_certs(&t.ca)? {
        roots.add(cert)?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(tlsnet::tls::load_certs(cert)?, tlsnet::tls::load_key(key)?)?,
        _ => builder.with_no_client_auth(),
    };
    config.resumption = if resume {
        Resumption::in_memory_sessions(16)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// What one handshake saw.
struct Shake {
    resumed: bool,
    suite: String,
    group: String,
}

/// Connect, handshake, send close_notify, read until the server closes (this also takes in
/// session tickets). An alert from the server (a refused client certificate arrives so in TLS
/// 1.3) is a failure; a reset after our close_notify is not.
async fn one_handshake(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    name: &ServerName<'static>,
    echo_byte: bool,
) -> Result<Shake> {
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    let mut tls = TlsConnector::from(config.clone())
        .connect(name.clone(), tcp)
        .await
        .context("handshake")?;
    let (_, conn) = tls.get_ref();
    let shake = Shake {
        resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
        suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        group: conn
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name()))
            .unwrap_or_default(),
    };
    if echo_byte {
        tls.write_all(b"x").await.context("send a byte")?;
        tls.flush().await.context("send a byte")?;
        let mut back = [0u8; 1];
        tls.read_exact(&mut back)
            .await
            .context("wait for the byte to come back")?;
    }
    let _ = tls.shutdown().await;
    let mut buf = [0u8; 2048];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => {
                return Err(anyhow::Error::new(e).context("after handshake"));
            }
            Err(_) => break,
        }
    }
    Ok(shake)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    resumed: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    first: Mutex<Option<(String, String)>>,
}

impl Tally {
    fn record(&self, r: Result<Shake>) {
        match r {
            Ok(s) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                if s.resumed {
                    self.resumed.fetch_add(1, Ordering::Relaxed);
                }
                let mut first = self.first.lock().unwrap();
                if first.is_none() {
                    *first = Some((s.suite, s.group));
                }
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut m = self.errors.lock().unwrap();
                let key = format!("{e:#}");
                if m.len() < 20 || m.contains_key(&key) {
                    *m.entry(key).or_insert(0) += 1;
                }
            }
        }
    }
}

async fn handshakes(a: HandshakeArgs) -> Result<Value> {
    let t = &a.target;
    let name = tlsnet::tls::server_name(&t.server_name)?;
    let hard_stop = Instant::now() + Duration::from_secs_f64(t.max_secs);
    let configs: Vec<Arc<ClientConfig>> = (0..a.concurrency.max(1))
        .map(|_| client_config(t, a.resume))
        .collect::<Result<_>>()?;

    // Warm-up: every client does a few handshakes (and so holds tickets when resuming).
    let warm = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for config in &configs {
        let (config, name, warm) = (config.clone(), name.clone(), warm.clone());
        let (n, echo_byte) = (a.warmup, a.echo_byte);
        let addr = t.connect;
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                warm.record(
                    bounded(hard_stop, one_handshake(&config, addr, &name, echo_byte)).await,
                );
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    if a.warmup > 0 && warm.ok.load(Ordering::Relaxed) == 0 {
        bail!(
            "no warm-up handshake succeeded: {:?}",
            warm.errors.lock().unwrap()
        );
    }

    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let before = Usage::read(&t.pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for config in &configs {
        let (config, name, tally, next) =
            (config.clone(), name.clone(), tally.clone(), next.clone());
        let (count, addr, echo_byte) = (a.count, t.connect, a.echo_byte);
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < hard_stop {
                tally.record(
                    bounded(hard_stop, one_handshake(&config, addr, &name, echo_byte)).await,
                );
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let after = Usage::read(&t.pid);
    let ok = tally.ok.load(Ordering::Relaxed);
    let (suite, group) = tally.first.lock().unwrap().clone().unwrap_or_default();
    let server_cpu = after.cpu_secs - before.cpu_secs;
    Ok(json!({
        "mode": "handshake",
        "resume": a.resume,
        "echo_byte": a.echo_byte,
        "mutual": t.cert.is_some(),
        "concurrency": a.concurrency,
        "ok": ok,
        "failed": tally.failed.load(Ordering::Relaxed),
        "resumed": tally.resumed.load(Ordering::Relaxed),
        "errors": *tally.errors.lock().unwrap(),
        "warmup_failed": warm.failed.load(Ordering::Relaxed),
        "suite": suite,
        "group": group,
        "wall_secs": wall,
        "rate_per_sec": ok as f64 / wall,
        "server_cpu_secs": server_cpu,
        "server_cpu_us_per_handshake": if ok > 0 { server_cpu * 1e6 / ok as f64 } else { 0.0 },
        "client_cpu_secs": self_cpu_secs(),
        "timed_out": Instant::now() >= hard_stop,
    }))
}

async fn bounded<T>(stop: Instant, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let left = stop
        .saturating_duration_since(Instant::now())
        .min(Duration::from_secs(15));
    match tokio::time::timeout(left, f).await {
        Ok(r) => r,
        Err(_) => bail!("timed out"),
    }
}

async fn bulk(a: BulkArgs) -> Result<Value> {
    let t = &a.target;
    let name = tlsnet::tls::server_name(&t.server_name)?;
    let config = client_config(t, false)?;
    let limit = Duration::from_secs_f64(t.max_secs);
    let run = async {
        let tcp = TcpStream::connect(t.connect).await.context("connect")?;
        tcp.set_nodelay(true)?;
        let mut tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .context("handshake")?;
        let suite = tls
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        // Not all zeros, in case anything on the way compresses or special-cases them.
        let chunk: Vec<u8> = (0..a.chunk).map(|i| (i * 7 + i / 251) as u8).collect();
        let before = Usage::read(&t.pid);
        let client_before = self_cpu_secs();
        let started = Instant::now();
        let mut left = a.bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            tls.write_all(&chunk[..n]).await.context("write")?;
            left -= n as u64;
        }
        tls.shutdown().await.context("close_notify")?;
        let mut buf = [0u8; 2048];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let wall = started.elapsed().as_secs_f64();
        let after = Usage::read(&t.pid);
        let server_cpu = after.cpu_secs - before.cpu_secs;
        let mb = a.bytes as f64 / 1e6;
        anyhow::Ok(json!({
            "mode": "bulk",
            "bytes": a.bytes,
            "suite": suite,
            "wall_secs": wall,
            "wall_mb_per_sec": mb / wall,
            "server_cpu_secs": server_cpu,
            "mb_per_server_cpu_sec": if server_cpu > 0.0 { mb / server_cpu } else { 0.0 },
            "client_cpu_secs": self_cpu_secs() - client_before,
        }))
    };
    tokio::time::timeout(limit, run)
        .await
        .map_err(|_| anyhow::anyhow!("bulk run timed out"))?
}

async fn idle(a: IdleArgs) -> Result<Value> {
    let t = &a.target;
    let name = tlsnet::tls::server_name(&t.server_name)?;
    let config = client_config(t, false)?;
    let hard_stop = Instant::now() + Duration::from_secs_f64(t.max_secs);

    // Warm the server up (thread-local allocator arenas, lazy statics), then take the baseline.
    let warm = Tally::default();
    for _ in 0..32 {
        warm.record(bounded(hard_stop, one_handshake(&config, t.connect, &name, false)).await);
    }
    if warm.ok.load(Ordering::Relaxed) == 0 {
        bail!(
            "no warm-up handshake succeeded: {:?}",
            warm.errors.lock().unwrap()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = Usage::read(&t.pid);

    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::with_capacity(a.count)));
    let failed = Arc::new(Tally::default());
    let mut tasks = Vec::with_capacity(a.count);
    for _ in 0..a.count {
        let permit = slots.clone().acquire_owned().await?;
        if Instant::now() >= hard_stop {
            break;
        }
        let (config, name, held, failed) =
            (config.clone(), name.clone(), held.clone(), failed.clone());
        let addr = t.connect;
        tasks.push(tokio::spawn(async move {
            let open = async {
                let tcp = TcpStream::connect(addr).await.context("connect")?;
                tcp.set_nodelay(true)?;
                let tls = TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .context("handshake")?;
                // Keep the socket, drop our TLS state: only the server's memory is measured.
                anyhow::Ok(tls.into_inner().0)
            };
            match bounded(hard_stop, open).await {
                Ok(tcp) => held.lock().unwrap().push(tcp),
                Err(e) => failed.record(Err(e)),
            }
            drop(permit);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(a.settle_secs)).await;

    // Connections the server has closed since (a refused certificate, a limit) do not count.
    let mut conns = std::mem::take(&mut *held.lock().unwrap());
    let mut buf = vec![0u8; 4096];
    conns.retain(|tcp| loop {
        match tcp.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    });
    let after = Usage::read(&t.pid);
    let n = conns.len();
    let delta = after.rss_kib - before.rss_kib;
    drop(conns);
    Ok(json!({
        "mode": "idle",
        "mutual": t.cert.is_some(),
        "asked": a.count,
        "held": n,
        "failed": failed.failed.load(Ordering::Relaxed),
        "errors": *failed.errors.lock().unwrap(),
        "open_secs": open_secs,
        "server_rss_before_kib": before.rss_kib,
        "server_rss_after_kib": after.rss_kib,
        "rss_kib_per_conn": if n > 0 { delta / n as f64 } else { 0.0 },
        "server_cpu_secs": after.cpu_secs - before.cpu_secs,
        "client_cpu_secs": self_cpu_secs(),
    }))
}

async fn sink(a: SinkArgs) -> Result<Value> {
    let listener = TcpListener::bind(a.listen).await?;
    let echo_mode = a.echo;
    let bytes = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let serve = {
        let (bytes, conns) = (bytes.clone(), conns.clone());
        async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                conns.fetch_add(1, Ordering::Relaxed);
                let bytes = bytes.clone();
                let echo = echo_mode;
                tokio::spawn(async move {
                    // No buffer until there is something to read: idle tunnels cost nothing here.
                    if tcp.readable().await.is_err() {
                        return;
                    }
                    let mut tcp = tcp;
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = tcp.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if echo && tcp.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                });
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs_f64(a.max_secs), serve).await;
    Ok(json!({
        "mode": "sink",
        "echo": a.echo,
        "connections": conns.load(Ordering::Relaxed),
        "bytes": bytes.load(Ordering::Relaxed),
    }))
}

/// A stream for the latency mode: TLS or plain TCP.
trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Duplex for T {}

async fn latency(a: LatencyArgs) -> Result<Value> {
    let t = &a.target;
    let limit = Duration::from_secs_f64(t.max_secs);
    let run = async {
        let tcp = TcpStream::connect(t.connect).await.context("connect")?;
        tcp.set_nodelay(true)?;
        let mut stream: Box<dyn Duplex> = if a.plain {
            Box::new(tcp)
        } else {
            let name = tlsnet::tls::server_name(&t.server_name)?;
            let tls = TlsConnector::from(client_config(t, false)?)
                .connect(name, tcp)
                .await
                .context("handshake")?;
            Box::new(tls)
        };
        let message: Vec<u8> = (0..a.size).map(|i| (i * 13 + 1) as u8).collect();
        let mut back = vec![0u8; a.size];
        let mut micros = Vec::with_capacity(a.count as usize);
        let before = Usage::read(&t.pid);
        for i in 0..a.warmup + a.count {
            let sent = Instant::now();
            stream.write_all(&message).await.context("write")?;
            stream.flush().await.context("write")?;
            stream
                .read_exact(&mut back)
                .await
                .context("read the echo")?;
            if back != message {
                bail!("the echo of round trip {i} differs from what was sent");
            }
            if i >= a.warmup {
                micros.push(sent.elapsed().as_secs_f64() * 1e6);
            }
        }
        let after = Usage::read(&t.pid);
        let _ = stream.shutdown().await;
        micros.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            let i = ((micros.len() as f64 - 1.0) * p).round() as usize;
            micros.get(i).copied().unwrap_or(0.0)
        };
        let n = micros.len();
        anyhow::Ok(json!({
            "mode": "latency",
            "plain": a.plain,
            "size": a.size,
            "round_trips": n,
            "p50_us": pct(0.50),
            "p90_us": pct(0.90),
            "p99_us": pct(0.99),
            "max_us": pct(1.0),
            "mean_us": if n > 0 { micros.iter().sum::<f64>() / n as f64 } else { 0.0 },
            "server_cpu_us_per_round_trip":
                if n > 0 { (after.cpu_secs - before.cpu_secs) * 1e6 / n as f64 } else { 0.0 },
            "client_cpu_secs": self_cpu_secs(),
        }))
    };
    tokio::time::timeout(limit, run)
        .await
        .map_err(|_| anyhow::anyhow!("latency run timed out"))?
}

/// CPU time and resident memory of a set of processes and their descendants.
pub(crate) struct Usage {
    pub(crate) cpu_secs: f64,
    pub(crate) rss_kib: f64,
}

impl Usage {
    pub(crate) fn read(pids: &[u32]) -> Usage {
        let mut usage = Usage {
            cpu_secs: 0.0,
            rss_kib: 0.0,
        };
        for pid in process_tree(pids) {
            if let Some(cpu) = cpu_secs(pid) {
                usage.cpu_secs += cpu;
            }
            if let Some(rss) = rss_kib(pid) {
                usage.rss_kib += rss;
            }
        }
        usage
    }
}

/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// utime + stime of a process (all its threads, live and exited), in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ", field 3 (state) is index 0: utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn process_tree(roots: &[u32]) -> Vec<u32> {
    if roots.is_empty() {
        return Vec::new();
    }
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| Some((pid, ppid(pid)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut tree: Vec<u32> = roots.to_vec();
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for (pid, pp) in &all {
            if *pp == parent && !tree.contains(pid) {
                tree.push(*pid);
            }
        }
        i += 1;
    }
    tree
}

pub(crate) fn self_cpu_secs() -> f64 {
    cpu_secs(std::process::id()).unwrap_or(0.0)
}
