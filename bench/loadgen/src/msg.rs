//! Messaging load: the same load against tlsnet's msg service (`tlsnet-msg/1`), an MQTT broker
//! (QoS 1, rumqttc) and NATS (core, or JetStream with publish acks, async-nats).
//!
//! Every client is its own user with its own certificate (`pki --users N` makes them, CN
//! `u0`, `u1`, ...) over mutual TLS. Cases:
//! - `direct`: N clients, client i sends to client i+1 (mod N); each keeps `--window` sends
//!   in flight; 100-byte texts that carry their send time. Measures the rate of durable acks
//!   (tlsnet ACCEPTED, MQTT PUBACK, JetStream publish ack; core NATS has none), send-to-ack
//!   and send-to-receive latency (p50, p99), and the server's CPU per message.
//! - `fanout`: `--clients` members of one room (MQTT topic, NATS subject); `--senders` of them
//!   send; every member receives. Measures deliveries per second.
//! - `idle`: N clients connect and log in (tlsnet WELCOME, MQTT CONNACK, NATS PONG) and stay
//!   idle; the server's RSS per connected user.
//!
//! With `--rate R`, `direct` and `fanout` are an open loop instead: R messages a second in all,
//! handed to the senders in turn, each sent when it is due, acked or not (latency at a load
//! below saturation; the closed loop's p50 is about clients x window / rate).
//!
//! Receivers acknowledge what they get as each protocol wants it (tlsnet ACK frames, MQTT
//! PUBACK by rumqttc). Latencies are measured in this process, from one clock.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use rustls::crypto::aws_lc_rs;
use rustls::{ClientConfig, RootCertStore};
use serde_json::{json, Value};
use tlsnet::msg::codec::{self, Decoded, Decoder, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsConnector;

use crate::{self_cpu_secs, Usage};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Case {
    Direct,
    Fanout,
    Idle,
}

#[derive(Args, Debug, Clone)]
pub struct MsgArgs {
    /// Server address (IP:PORT).
    #[arg(long)]
    connect: SocketAddr,
    /// More servers (repeatable): client i connects to the (i mod K)-th of `--connect` and
    /// these. With two, every `direct` message (client i to i+1) goes from one to the other.
    #[arg(long)]
    also_connect: Vec<SocketAddr>,
    /// Name the server certificate is checked against (and SNI).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// CA certificate (PEM) that signs the server certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Directory of the users' certificates (`pki --users N`: uI.pem, uI-key.pem).
    #[arg(long)]
    users: PathBuf,
    /// Server process id (repeatable); its descendants are counted too.
    #[arg(long)]
    pid: Vec<u32>,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 120.0)]
    max_secs: f64,
    /// What to measure.
    #[arg(long, value_enum, default_value = "direct")]
    case: Case,
    /// Clients (users) connected; for `fanout`, the room's members.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Messages sent in all (`direct`, `fanout`).
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Sends in flight per client, waiting for their acks (the closed loop).
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Offered rate, messages per second from all senders together (0: the closed loop of
    /// `--window`). An open loop: every millisecond the messages due by then are handed to
    /// the senders in turn, whatever the acks, so latency is measured at this load.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// `fanout`: members that send.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// `idle`: seconds to wait, once all are connected, before reading the server's RSS.
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
    /// NATS: publish through JetStream (a stream on `u.>` and `room.>` must exist; the
    /// publish ack is the ack) instead of core NATS (no ack).
    #[arg(long)]
    jetstream: bool,
}

impl MsgArgs {
    /// The server client `i` connects to.
    fn addr(&self, i: usize) -> SocketAddr {
        match i % (1 + self.also_connect.len()) {
            0 => self.connect,
            k => self.also_connect[k - 1],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Tlsnet,
    Mqtt,
    Nats,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Tlsnet => "tlsnet",
            System::Mqtt => "mqtt",
            System::Nats => "nats",
        }
    }
}

/// Makes `n` client certificates, CN u0..u{n-1}, signed by the development CA in `pki`,
/// into `pki/users` (kept when they are there already).
pub fn make_users(pki: &Path, n: usize) -> Result<PathBuf> {
    let dir = pki.join("users");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let ca = tlsnet::pki::store::PkiDir::at(pki)
        .issuing_ca()
        .with_context(|| format!("the CA in {}", pki.display()))?;
    for i in 0..n {
        let (cert, key) = user_files(&dir, i);
        if cert.is_file() && key.is_file() {
            continue;
        }
        let spec = tlsnet::pki::LeafSpec::new(tlsnet::pki::Purpose::Client, user(i));
        let issued = ca
            .issue(&spec)
            .with_context(|| format!("issue {}", user(i)))?;
        std::fs::write(&key, issued.key_pem).with_context(|| format!("write {}", key.display()))?;
        std::fs::write(&cert, issued.chain_pem)
            .with_context(|| format!("write {}", cert.display()))?;
    }
    Ok(dir)
}

fn user(i: usize) -> String {
    format!("u{i}")
}

fn user_files(dir: &Path, i: usize) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("u{i}.pem")),
        dir.join(format!("u{i}-key.pem")),
    )
}

fn roots(ca: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in tlsnet::tls::load_certs(ca)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The TLS 1.3 client configuration of user `i` (its own certificate), with `alpn`.
fn user_config(a: &MsgArgs, roots: &RootCertStore, i: usize, alpn: &[u8]) -> Result<ClientConfig> {
    let (cert, key) = user_files(&a.users, i);
    let mut config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(
            tlsnet::tls::load_certs(&cert)?,
            tlsnet::tls::load_key(&key)?,
        )
        .with_context(|| format!("certificate {}", cert.display()))?;
    if !alpn.is_empty() {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Ok(config)
}

// ---- payloads and tallies ---------------------------------------------------------------------

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// A text of `size` bytes (at least 17) that starts with its send time: "NNNNNNNNNNNNNNNN|xxx".
fn payload(size: usize) -> String {
    let mut s = format!("{:016x}|", now_ns());
    while s.len() < size {
        s.push('x');
    }
    s
}

fn sent_at(text: &[u8]) -> Option<u64> {
    let hex = std::str::from_utf8(text.get(..16)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

/// What the clients saw, shared by all of them.
#[derive(Default)]
struct Tally {
    issued: AtomicU64,
    acked: AtomicU64,
    received: AtomicU64,
    refused: AtomicU64,
    ack_us: Mutex<Vec<u32>>,
    recv_us: Mutex<Vec<u32>>,
    errors: Mutex<HashMap<String, u64>>,
    stop: AtomicBool,
}

impl Tally {
    /// Takes one message of the budget; false when it is spent.
    fn take(&self, budget: u64) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if self.issued.fetch_add(1, Ordering::Relaxed) < budget {
            true
        } else {
            self.issued.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    fn error(&self, e: impl std::fmt::Display) {
        let mut m = self.errors.lock().unwrap();
        let key = e.to_string();
        if m.len() < 20 || m.contains_key(&key) {
            *m.entry(key).or_insert(0) += 1;
        }
    }
}

/// Per-client latency samples, merged into the tally when dropped (no lock per message).
struct Samples {
    tally: Arc<Tally>,
    ack_us: Vec<u32>,
    recv_us: Vec<u32>,
}

impl Drop for Samples {
    fn drop(&mut self) {
        self.tally.ack_us.lock().unwrap().append(&mut self.ack_us);
        self.tally.recv_us.lock().unwrap().append(&mut self.recv_us);
    }
}

impl Samples {
    fn new(tally: &Arc<Tally>) -> Samples {
        Samples {
            tally: tally.clone(),
            ack_us: Vec::new(),
            recv_us: Vec::new(),
        }
    }
    fn ack(&mut self, sent_ns: u64) {
        self.ack_us.push(us_since(sent_ns));
    }
    fn recv(&mut self, text: &[u8]) {
        if let Some(t) = sent_at(text) {
            self.recv_us.push(us_since(t));
        }
    }
}

/// The sends a client may make when it is told to go: its window in the closed loop, none in
/// the open loop (the pacer hands them out).
fn first_window(a: &MsgArgs) -> usize {
    if a.rate > 0.0 {
        0
    } else {
        a.window.max(1)
    }
}

/// The open loop: every millisecond, the messages due by then at `rate` per second, one send
/// permit each, to the senders in turn; stops at `budget` or when the run stops.
fn pace(windows: Vec<Arc<Semaphore>>, rate: f64, budget: u64, tally: Arc<Tally>) {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut handed, mut next) = (0u64, 0usize);
        while handed < budget && !tally.stop.load(Ordering::Relaxed) && !windows.is_empty() {
            tick.tick().await;
            let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(budget);
            while handed < due {
                windows[next].add_permits(1);
                next = (next + 1) % windows.len();
                handed += 1;
            }
        }
    });
}

fn us_since(ns: u64) -> u32 {
    (now_ns().saturating_sub(ns) / 1000).min(u32::MAX as u64) as u32
}

fn percentiles(v: &mut [u32]) -> Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    json!({ "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0), "n": v.len() })
}

// ---- the run ----------------------------------------------------------------------------------

pub async fn run(system: System, a: MsgArgs) -> Result<Value> {
    let _ = epoch();
    let hard_stop = Instant::now() + Duration::from_secs_f64(a.max_secs);
    let roots = roots(&a.ca)?;
    let n = a.clients.max(2);
    let a = Arc::new(a);
    let tally = Arc::new(Tally::default());
    // The room of `fanout`: member 0 makes it, the others join, all before the measurement.
    let room = "bench".to_string();

    // Baseline for `idle`: after a few connections have warmed the server up.
    let mut baseline = None;
    if a.case == Case::Idle {
        let warm = connect_all(system, &a, &roots, 0..16.min(n), &tally, hard_stop).await?;
        drop(warm);
        tokio::time::sleep(Duration::from_millis(500)).await;
        baseline = Some(Usage::read(&a.pid));
    }
    let opened = Instant::now();
    let clients = connect_all(system, &a, &roots, 0..n, &tally, hard_stop).await?;
    let open_secs = opened.elapsed().as_secs_f64();
    let connected = clients.len();
    if connected < n {
        bail!(
            "only {connected} of {n} clients connected: {:?}",
            tally.errors.lock().unwrap()
        );
    }

    if a.case == Case::Idle {
        tokio::time::sleep(Duration::from_secs_f64(a.settle_secs)).await;
        let after = Usage::read(&a.pid);
        let before = baseline.unwrap_or(Usage {
            cpu_secs: 0.0,
            rss_kib: 0.0,
        });
        let alive = clients.iter().filter(|c| !c.is_finished()).count();
        let delta = after.rss_kib - before.rss_kib;
        let out = json!({
            "mode": format!("msg-{}", system.name()),
            "case": "idle",
            "clients": n,
            "held": alive,
            "open_secs": open_secs,
            "server_rss_before_kib": before.rss_kib,
            "server_rss_after_kib": after.rss_kib,
            "rss_kib_per_user": if alive > 0 { delta / alive as f64 } else { 0.0 },
            "errors": *tally.errors.lock().unwrap(),
        });
        tally.stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.abort();
        }
        return Ok(out);
    }

    // Set-up for the measured phase (rooms, subscriptions), then go.
    for c in &clients {
        c.ready.acquire().await?.forget();
    }
    if a.case == Case::Fanout && system == System::Tlsnet {
        clients[0].control(Control::Create(room.clone())).await?;
        for c in &clients[1..] {
            c.control(Control::Join(room.clone())).await?;
        }
    }
    let senders: Vec<usize> = match a.case {
        Case::Direct => (0..n).collect(),
        _ => (0..a.senders.clamp(1, n)).collect(),
    };
    // Deliveries expected per message: MQTT and NATS deliver a room message to its sender
    // too (it is subscribed); tlsnet does not.
    let per_message = match (a.case, system) {
        (Case::Direct, _) => 1,
        (_, System::Tlsnet) => n as u64 - 1,
        _ => n as u64,
    };
    let before = Usage::read(&a.pid);
    let client_before = self_cpu_secs();
    let started = Instant::now();
    for &i in &senders {
        let to = match a.case {
            Case::Direct => Dest::User(user((i + 1) % n)),
            _ => Dest::Room(room.clone()),
        };
        clients[i].control(Control::Go(to)).await?;
    }
    if a.rate > 0.0 {
        let windows = senders.iter().map(|&i| clients[i].window.clone()).collect();
        pace(windows, a.rate, a.messages, tally.clone());
    }
    // Done when every message is acked (or refused) and every delivery is in.
    let mut last_progress = (0u64, Instant::now());
    let mut acked_at = None;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let issued = tally.issued.load(Ordering::Relaxed);
        let acked = tally.acked.load(Ordering::Relaxed);
        let refused = tally.refused.load(Ordering::Relaxed);
        let received = tally.received.load(Ordering::Relaxed);
        let sends_done = issued >= a.messages && acked + refused >= issued;
        if sends_done && acked_at.is_none() {
            acked_at = Some(started.elapsed().as_secs_f64());
        }
        if sends_done && received >= acked * per_message {
            break;
        }
        let progress = acked + received + refused;
        if progress != last_progress.0 {
            last_progress = (progress, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(10) {
            tally.error(format!(
                "no progress for 10 s: {issued} sent, {acked} acked, {refused} refused, {received} received"
            ));
            break;
        }
        if Instant::now() >= hard_stop {
            tally.error("timed out");
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let after = Usage::read(&a.pid);
    let client_cpu = self_cpu_secs() - client_before;
    tally.stop.store(true, Ordering::Relaxed);
    for c in &clients {
        let _ = c.tx.try_send(Control::Stop);
    }
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.join).await;
    }
    let acked = tally.acked.load(Ordering::Relaxed);
    let received = tally.received.load(Ordering::Relaxed);
    let server_cpu = after.cpu_secs - before.cpu_secs;
    let acked_secs = acked_at.unwrap_or(wall);
    let mut ack_us = std::mem::take(&mut *tally.ack_us.lock().unwrap());
    let mut recv_us = std::mem::take(&mut *tally.recv_us.lock().unwrap());
    let messages = if system == System::Nats && !a.jetstream {
        received / per_message.max(1)
    } else {
        acked
    };
    Ok(json!({
        "mode": format!("msg-{}", system.name()),
        "case": format!("{:?}", a.case).to_lowercase(),
        "jetstream": a.jetstream,
        "clients": n,
        "senders": senders.len(),
        "window": a.window,
        "rate": a.rate,
        "size": a.size,
        "asked": a.messages,
        "acked": acked,
        "refused": tally.refused.load(Ordering::Relaxed),
        "received": received,
        "deliveries_per_message": per_message,
        "wall_secs": wall,
        "open_secs": open_secs,
        "acked_per_sec": if system == System::Nats && !a.jetstream { 0.0 } else { acked as f64 / acked_secs },
        "messages_per_sec": messages as f64 / wall,
        "deliveries_per_sec": received as f64 / wall,
        "ack": percentiles(&mut ack_us),
        "receive": percentiles(&mut recv_us),
        "server_cpu_secs": server_cpu,
        "server_cpu_us_per_message": if messages > 0 { server_cpu * 1e6 / messages as f64 } else { 0.0 },
        "server_cpu_us_per_delivery": if received > 0 { server_cpu * 1e6 / received as f64 } else { 0.0 },
        "client_cpu_secs": client_cpu,
        "errors": *tally.errors.lock().unwrap(),
    }))
}

#[derive(Debug, Clone)]
enum Dest {
    User(String),
    Room(String),
}

#[derive(Debug)]
enum Control {
    /// tlsnet: create the room (and be its first member); answered on `done`.
    Create(String),
    /// tlsnet: join the room.
    Join(String),
    /// Start sending to this destination.
    Go(Dest),
    Stop,
}

/// A connected client: its task, a control channel, and a semaphore that gets a permit once
/// it is ready (logged in, subscribed) and one after each control request is done.
struct Client {
    tx: mpsc::Sender<Control>,
    ready: Arc<Semaphore>,
    /// Sends the client may make now: its window (closed loop), or what the pacer hands it.
    window: Arc<Semaphore>,
    join: tokio::task::JoinHandle<()>,
}

impl Client {
    fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
    fn abort(&self) {
        self.join.abort();
    }
    async fn control(&self, c: Control) -> Result<()> {
        let wait = !matches!(c, Control::Go(_) | Control::Stop);
        self.tx
            .send(c)
            .await
            .map_err(|_| anyhow!("a client has stopped"))?;
        if wait {
            tokio::time::timeout(Duration::from_secs(20), self.ready.acquire())
                .await
                .context("a room request got no answer")??
                .forget();
        }
        Ok(())
    }
}

async fn connect_all(
    system: System,
    a: &Arc<MsgArgs>,
    roots: &RootCertStore,
    range: std::ops::Range<usize>,
    tally: &Arc<Tally>,
    hard_stop: Instant,
) -> Result<Vec<Client>> {
    let slots = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut clients = Vec::with_capacity(range.len());
    for i in range {
        let config = match system {
            System::Tlsnet => user_config(a, roots, i, codec::ALPN)?,
            _ => user_config(a, roots, i, b"")?,
        };
        let (tx, rx) = mpsc::channel(4);
        let ready = Arc::new(Semaphore::new(0));
        let window = Arc::new(Semaphore::new(0));
        let (a2, tally2, ready2, slots2) = (a.clone(), tally.clone(), ready.clone(), slots.clone());
        let window2 = window.clone();
        let join = tokio::spawn(async move {
            let permit = slots2.acquire_owned().await;
            let r = match system {
                System::Tlsnet => {
                    tlsnet_client(
                        a2,
                        i,
                        config,
                        rx,
                        ready2,
                        window2,
                        tally2.clone(),
                        permit.ok(),
                    )
                    .await
                }
                System::Mqtt => {
                    mqtt_client(
                        a2,
                        i,
                        config,
                        rx,
                        ready2,
                        window2,
                        tally2.clone(),
                        permit.ok(),
                    )
                    .await
                }
                System::Nats => {
                    nats_client(
                        a2,
                        i,
                        config,
                        rx,
                        ready2,
                        window2,
                        tally2.clone(),
                        permit.ok(),
                    )
                    .await
                }
            };
            if let Err(e) = r {
                if !tally2.stop.load(Ordering::Relaxed) {
                    tally2.error(format!("{e:#}"));
                }
            }
        });
        clients.push(Client {
            tx,
            ready,
            window,
            join,
        });
    }
    // Wait until each is connected (its first permit), or has failed.
    for c in &clients {
        loop {
            if c.ready.available_permits() > 0 || c.join.is_finished() {
                break;
            }
            if Instant::now() >= hard_stop {
                bail!("timed out while connecting");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let failed: Vec<usize> = clients
        .iter()
        .enumerate()
        .filter(|(_, c)| c.join.is_finished())
        .map(|(i, _)| i)
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} clients could not connect: {:?}",
            failed.len(),
            tally.errors.lock().unwrap()
        );
    }
    Ok(clients)
}

// ---- tlsnet -----------------------------------------------------------------------------------

async fn tlsnet_client(
    a: Arc<MsgArgs>,
    i: usize,
    config: ClientConfig,
    mut control: mpsc::Receiver<Control>,
    ready: Arc<Semaphore>,
    window: Arc<Semaphore>,
    tally: Arc<Tally>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<()> {
    let name = tlsnet::tls::server_name(&a.server_name)?;
    let tcp = TcpStream::connect(a.addr(i)).await.context("connect")?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("handshake")?;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut decoder = Decoder::new(tlsnet::msg::client::MAX_SERVER_FRAME);
    let mut buf = vec![0u8; 64 * 1024];
    // The welcome first.
    let mut pending: VecDeque<Frame> = VecDeque::new();
    while pending.is_empty() {
        let n = rd.read(&mut buf).await.context("read the welcome")?;
        if n == 0 {
            bail!("closed before the welcome");
        }
        decode(&mut decoder, &buf[..n], &mut pending)?;
    }
    match pending.pop_front() {
        Some(Frame::Welcome(w)) if w.user == user(i) => {}
        other => bail!("expected WELCOME for {}, got {other:?}", user(i)),
    }
    drop(permit);
    ready.add_permits(1);

    // The writer: room requests, then sends in a window, and acks of what the reader got.
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u64>();
    // Closed loop: an ack makes room for the next send; open loop: the pacer does.
    let closed = a.rate <= 0.0;
    let times: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let (result_tx, mut result_rx) = mpsc::unbounded_channel::<()>();
    let reader = {
        let (tally, window, times) = (tally.clone(), window.clone(), times.clone());
        async move {
            let mut samples = Samples::new(&tally);
            let r: Result<()> = async {
                loop {
                    for f in pending.drain(..) {
                        match f {
                            Frame::Accepted(acc) => {
                                if let Some(t) = times.lock().unwrap().remove(&acc.req) {
                                    samples.ack(t);
                                }
                                tally.acked.fetch_add(1, Ordering::Relaxed);
                                if closed {
                                    window.add_permits(1);
                                }
                            }
                            Frame::Deliver(m) => {
                                samples.recv(m.text.as_bytes());
                                tally.received.fetch_add(1, Ordering::Relaxed);
                                let _ = ack_tx.send(m.id);
                            }
                            Frame::Result(_) => {
                                let _ = result_tx.send(());
                            }
                            Frame::Error(e) => {
                                tally.error(format!("{}: {}", e.code, e.message));
                                if let Some(req) = e.req {
                                    if times.lock().unwrap().remove(&req).is_some() {
                                        tally.refused.fetch_add(1, Ordering::Relaxed);
                                        if closed {
                                            window.add_permits(1);
                                        }
                                    } else {
                                        let _ = result_tx.send(());
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    let n = rd.read(&mut buf).await.context("read")?;
                    if n == 0 {
                        bail!("the server closed the connection");
                    }
                    decode(&mut decoder, &buf[..n], &mut pending)?;
                }
            }
            .await;
            r
        }
    };
    let writer = async {
        let mut next_ref = 1u64;
        let mut dest: Option<Dest> = None;
        let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            let sending = dest.is_some();
            tokio::select! {
                c = control.recv() => match c {
                    Some(Control::Create(room)) => {
                        out.extend(Frame::Create(codec::RoomRequest { req: next_ref, room }).encode());
                        next_ref += 1;
                        wr.write_all(&out).await?; wr.flush().await?; out.clear();
                        result_rx.recv().await;
                        ready.add_permits(1);
                        continue;
                    }
                    Some(Control::Join(room)) => {
                        out.extend(Frame::Join(codec::RoomRequest { req: next_ref, room }).encode());
                        next_ref += 1;
                        wr.write_all(&out).await?; wr.flush().await?; out.clear();
                        result_rx.recv().await;
                        ready.add_permits(1);
                        continue;
                    }
                    Some(Control::Go(d)) => { dest = Some(d); window.add_permits(first_window(&a)); continue; }
                    Some(Control::Stop) | None => return anyhow::Ok(()),
                },
                id = ack_rx.recv() => {
                    let Some(id) = id else { return Ok(()) };
                    let mut ids = vec![id];
                    while let Ok(id) = ack_rx.try_recv() { ids.push(id); }
                    out.extend(Frame::Ack(codec::Ack { ids }).encode());
                }
                p = window.acquire(), if sending => {
                    let Ok(p) = p else { return Ok(()) };
                    p.forget();
                    if tally.take(a.messages) {
                        push_send(&mut out, &mut next_ref, dest.as_ref(), a.size, &times);
                    } else {
                        dest = None;
                    }
                }
            }
            // Everything else that is ready goes in the same write.
            while let Ok(id) = ack_rx.try_recv() {
                let mut ids = vec![id];
                while let Ok(id) = ack_rx.try_recv() {
                    ids.push(id);
                }
                out.extend(Frame::Ack(codec::Ack { ids }).encode());
            }
            while dest.is_some() {
                let Ok(p) = window.try_acquire() else { break };
                p.forget();
                if tally.take(a.messages) {
                    push_send(&mut out, &mut next_ref, dest.as_ref(), a.size, &times);
                } else {
                    dest = None;
                }
            }
            if !out.is_empty() {
                wr.write_all(&out).await.context("write")?;
                wr.flush().await.context("flush")?;
                out.clear();
            }
        }
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
    }
}

fn push_send(
    out: &mut Vec<u8>,
    next_ref: &mut u64,
    dest: Option<&Dest>,
    size: usize,
    times: &Mutex<HashMap<u64, u64>>,
) {
    let (to, room) = match dest {
        Some(Dest::User(u)) => (Some(u.clone()), None),
        Some(Dest::Room(r)) => (None, Some(r.clone())),
        None => return,
    };
    let req = *next_ref;
    *next_ref += 1;
    let text = payload(size);
    times.lock().unwrap().insert(req, now_ns());
    out.extend(
        Frame::Send(codec::Send {
            req,
            to,
            room,
            text,
        })
        .encode(),
    );
}

fn decode(decoder: &mut Decoder, mut data: &[u8], out: &mut VecDeque<Frame>) -> Result<()> {
    while !data.is_empty() {
        let (used, d) = decoder.feed(data)?;
        data = &data[used..];
        match d {
            Some(Decoded::Frame(f)) => out.push_back(f),
            Some(Decoded::Invalid(e)) => bail!("server frame: {e}"),
            None => {}
        }
    }
    Ok(())
}

// ---- MQTT -------------------------------------------------------------------------------------

async fn mqtt_client(
    a: Arc<MsgArgs>,
    i: usize,
    config: ClientConfig,
    mut control: mpsc::Receiver<Control>,
    ready: Arc<Semaphore>,
    window: Arc<Semaphore>,
    tally: Arc<Tally>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<()> {
    use rumqttc::{
        AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
    };
    let mut opts = MqttOptions::new(user(i), a.server_name.clone(), a.addr(i).port());
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_clean_session(true);
    // Open loop: room for what the acks have not caught up with.
    let inflight = if a.rate > 0.0 {
        1024
    } else {
        a.window.clamp(1, 65535)
    };
    opts.set_inflight(inflight as u16);
    opts.set_request_channel_capacity(inflight * 2 + 8);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(config),
    )));
    let (client, mut events) = AsyncClient::new(opts, inflight * 2 + 8);
    let mine = match a.case {
        Case::Fanout => "room/bench".to_string(),
        _ => format!("u/{}", user(i)),
    };
    // Connect and subscribe before counting as ready.
    client.subscribe(mine, QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.context("MQTT connect")? {
            break;
        }
    }
    drop(permit);
    ready.add_permits(1);

    let closed = a.rate <= 0.0;
    let sent: Arc<Mutex<VecDeque<u64>>> = Arc::default();
    let ids: Arc<Mutex<HashMap<u16, u64>>> = Arc::default();
    let poller = {
        let (tally, window, sent, ids) = (tally.clone(), window.clone(), sent.clone(), ids.clone());
        async move {
            let mut samples = Samples::new(&tally);
            let r: Result<()> = async {
                loop {
                    match events.poll().await.context("MQTT")? {
                        Event::Outgoing(Outgoing::Publish(pkid)) => {
                            if let Some(t) = sent.lock().unwrap().pop_front() {
                                ids.lock().unwrap().insert(pkid, t);
                            }
                        }
                        Event::Incoming(Packet::PubAck(ack)) => {
                            if let Some(t) = ids.lock().unwrap().remove(&ack.pkid) {
                                samples.ack(t);
                            }
                            tally.acked.fetch_add(1, Ordering::Relaxed);
                            if closed {
                                window.add_permits(1);
                            }
                        }
                        Event::Incoming(Packet::Publish(p)) => {
                            samples.recv(&p.payload);
                            tally.received.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
            .await;
            r
        }
    };
    let sender = async {
        let mut dest = None;
        loop {
            tokio::select! {
                c = control.recv() => match c {
                    Some(Control::Go(d)) => { dest = Some(d); window.add_permits(first_window(&a)); }
                    Some(Control::Stop) | None => return anyhow::Ok(()),
                    Some(_) => ready.add_permits(1),
                },
                p = window.acquire(), if dest.is_some() => {
                    let Ok(p) = p else { return Ok(()) };
                    p.forget();
                    if !tally.take(a.messages) { dest = None; continue; }
                    let topic = match &dest {
                        Some(Dest::User(u)) => format!("u/{u}"),
                        Some(Dest::Room(r)) => format!("room/{r}"),
                        None => continue,
                    };
                    let body = payload(a.size);
                    sent.lock().unwrap().push_back(now_ns());
                    client.publish(topic, QoS::AtLeastOnce, false, body.into_bytes()).await?;
                }
            }
        }
    };
    tokio::select! {
        r = poller => r,
        r = sender => r,
    }
}

// ---- NATS -------------------------------------------------------------------------------------

async fn nats_client(
    a: Arc<MsgArgs>,
    i: usize,
    config: ClientConfig,
    mut control: mpsc::Receiver<Control>,
    ready: Arc<Semaphore>,
    window: Arc<Semaphore>,
    tally: Arc<Tally>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<()> {
    use futures_util::StreamExt;
    let url = format!("tls://{}:{}", a.server_name, a.addr(i).port());
    let client = async_nats::ConnectOptions::new()
        .tls_client_config(config)
        .require_tls(true)
        .name(user(i))
        .connect(url)
        .await
        .context("NATS connect")?;
    let mine = match a.case {
        Case::Fanout => "room.bench".to_string(),
        _ => format!("u.{}", user(i)),
    };
    let mut sub = Some(client.subscribe(mine).await?);
    client.flush().await.context("NATS flush")?;
    let js = async_nats::jetstream::new(client.clone());
    if a.jetstream && i == 0 {
        // One stream holds every message (file storage; the server's sync_interval decides
        // when it is on disk).
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "BENCH".into(),
            subjects: vec!["u.>".into(), "room.>".into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("create the JetStream stream: {e}"))?;
    }
    drop(permit);
    ready.add_permits(1);

    let receiver = {
        let tally = tally.clone();
        async move {
            let mut samples = Samples::new(&tally);
            if let Some(sub) = sub.as_mut() {
                while let Some(m) = sub.next().await {
                    samples.recv(&m.payload);
                    tally.received.fetch_add(1, Ordering::Relaxed);
                    if tally.stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            } else {
                std::future::pending::<()>().await;
            }
            anyhow::Ok(())
        }
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u64, Result<()>)>();
    let closed = a.rate <= 0.0;
    let sender = async {
        let mut dest = None;
        let mut samples = Samples::new(&tally);
        let r: Result<()> = async {
            loop {
                tokio::select! {
                    c = control.recv() => match c {
                        Some(Control::Go(d)) => { dest = Some(d); window.add_permits(first_window(&a)); }
                        Some(Control::Stop) | None => return Ok(()),
                        Some(_) => ready.add_permits(1),
                    },
                    done = done_rx.recv() => {
                        if let Some((t, r)) = done {
                            match r {
                                Ok(()) => { samples.ack(t); tally.acked.fetch_add(1, Ordering::Relaxed); }
                                Err(e) => { tally.error(format!("{e:#}")); tally.refused.fetch_add(1, Ordering::Relaxed); }
                            }
                            if closed {
                                window.add_permits(1);
                            }
                        }
                    }
                    p = window.acquire(), if dest.is_some() => {
                        let Ok(p) = p else { return Ok(()) };
                        p.forget();
                        if !tally.take(a.messages) {
                            dest = None;
                            // Core NATS: what is still in the client's buffer goes out now.
                            client.flush().await.context("NATS flush")?;
                            continue;
                        }
                        let subject = match &dest {
                            Some(Dest::User(u)) => format!("u.{u}"),
                            Some(Dest::Room(r)) => format!("room.{r}"),
                            None => continue,
                        };
                        let body = payload(a.size);
                        let t = now_ns();
                        if a.jetstream {
                            let ack = js.publish(subject, body.into()).await?;
                            let done_tx = done_tx.clone();
                            tokio::spawn(async move {
                                let r = ack.await.map(|_| ()).map_err(anyhow::Error::from);
                                let _ = done_tx.send((t, r));
                            });
                        } else {
                            // Core NATS: no ack; the window only bounds the buffered sends.
                            client.publish(subject, body.into()).await?;
                            tally.acked.fetch_add(1, Ordering::Relaxed);
                            if closed {
                                window.add_permits(1);
                            }
                        }
                    }
                }
            }
        }
        .await;
        r
    };
    tokio::select! {
        r = receiver => r,
        r = sender => r,
    }
}
