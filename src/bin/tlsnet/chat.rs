//! `tlsnet chat`: a client of the msg service, scriptable (`--send`, `--receive`) or
//! interactive; and the msg flags of `tlsnet serve`.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use rustls::pki_types::ServerName;
use tlsnet::msg::client::{ClientError, MsgClient, To};
use tlsnet::msg::codec::{Frame, Message};
use tlsnet::msg::nats::NatsOptions;
use tlsnet::msg::service::{MsgOptions, MsgService};
use tlsnet::msg::store::{StoreOptions, SyncMode};
use tlsnet::net::client::{split_host_port, ClientStream, Connector};
use tlsnet::pki::dev::is_local_host;
use tlsnet::service::user::UserIdSource;
use tlsnet::tls::server_name;
use tokio::io::AsyncBufReadExt;

use crate::tls_args::ClientTlsArgs;
use crate::{parse_duration, UsageError};

/// The msg service's flags on `tlsnet serve`.
#[derive(Args, Debug)]
pub struct MsgServeArgs {
    /// Do not run the msg service (ALPN tlsnet-msg/1).
    #[arg(long)]
    pub(crate) no_msg: bool,

    /// Directory of the message store [default: $XDG_STATE_HOME/tlsnet/msg or
    /// ~/.local/state/tlsnet/msg]. Opened by the first messaging client; one server at a time.
    /// Or nats://HOST:PORT[,HOST:PORT...]: this server is one node of many sharing a NATS
    /// JetStream cluster (docs/SCALING.md).
    #[arg(
        long,
        value_name = "DIR|nats://HOST:PORT,...",
        env = "TLSNET_MSG_STORE"
    )]
    pub(crate) store: Option<PathBuf>,

    /// CA certificates (PEM) of the NATS servers' certificates; TLS to NATS is required when
    /// given. With --store nats://...
    #[arg(long, value_name = "FILE")]
    pub(crate) nats_ca: Option<PathBuf>,

    /// This node's client certificate (PEM) for mutual TLS to NATS, with --nats-key.
    #[arg(long, value_name = "FILE", requires = "nats_key")]
    pub(crate) nats_cert: Option<PathBuf>,

    /// The private key (PEM) of --nats-cert.
    #[arg(long, value_name = "FILE", requires = "nats_cert")]
    pub(crate) nats_key: Option<PathBuf>,

    /// Replicas of the NATS streams and buckets [default: the number of servers in --store,
    /// at most 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) nats_replicas: Option<u8>,

    /// When a message is on disk before it is acknowledged: always (fsync every batch; no
    /// acknowledged message is lost, even on power loss). batch is accepted and is the same
    /// since store format 4 (docs/OPERATIONS.md).
    #[arg(long, value_enum, default_value = "always")]
    pub(crate) sync: SyncArg,

    /// Largest message text, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub(crate) max_message_size: u32,

    /// Messages a user may send per second (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 50.0)]
    pub(crate) rate_limit: f64,

    /// Messages a user may send at once before --rate-limit applies.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) rate_burst: u32,

    /// Messages that may wait for one recipient; more are refused with queue_full.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub(crate) max_queue: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum SyncArg {
    Always,
    Batch,
}

impl From<SyncMode> for SyncArg {
    fn from(mode: SyncMode) -> Self {
        match mode {
            SyncMode::Always => SyncArg::Always,
            SyncMode::Batch => SyncArg::Batch,
        }
    }
}

impl MsgServeArgs {
    /// The service, unless --no-msg.
    pub fn service(&self, user_id: UserIdSource) -> Result<Option<MsgService>> {
        if self.no_msg {
            return Ok(None);
        }
        if self.max_message_size == 0 || self.max_message_size > 16 * 1024 * 1024 {
            return Err(UsageError("--max-message-size must be 1 to 16777216 bytes".into()).into());
        }
        if self.max_queue == 0 {
            return Err(UsageError("--max-queue must be at least 1".into()).into());
        }
        if !(self.rate_limit >= 0.0 && self.rate_limit.is_finite()) {
            return Err(UsageError("--rate-limit must be 0 or more".into()).into());
        }
        let options = MsgOptions {
            user_id,
            max_message_size: self.max_message_size,
            rate_per_sec: self.rate_limit,
            burst: self.rate_burst,
            ..MsgOptions::default()
        };
        if let Some(url) = self
            .store
            .as_ref()
            .and_then(|s| s.to_str())
            .filter(|s| s.starts_with("nats://"))
        {
            let mut nats =
                NatsOptions::parse(url).map_err(|e| UsageError(format!("--store: {e}")))?;
            nats.ca = self.nats_ca.clone();
            nats.cert = self.nats_cert.clone();
            nats.key = self.nats_key.clone();
            if let Some(n) = self.nats_replicas {
                nats.replicas = usize::from(n);
            }
            tracing::info!(store = url, replicas = nats.replicas, user_id = %user_id, "msg service on tlsnet-msg/1 over NATS JetStream");
            return Ok(Some(MsgService::nats(nats, options)));
        }
        if self.nats_ca.is_some() || self.nats_cert.is_some() || self.nats_replicas.is_some() {
            return Err(UsageError(
                "--nats-ca, --nats-cert, --nats-key and --nats-replicas go with --store nats://..."
                    .into(),
            )
            .into());
        }
        let dir = match &self.store {
            Some(d) => d.clone(),
            None => tlsnet::msg::store::default_dir().ok_or_else(|| {
                UsageError(
                    "cannot find a home for the message store: set --store DIR (or HOME)".into(),
                )
            })?,
        };
        let store = StoreOptions {
            sync: match self.sync {
                SyncArg::Always => SyncMode::Always,
                SyncArg::Batch => SyncMode::Batch,
            },
            max_queue: self.max_queue,
        };
        tracing::info!(store = %dir.display(), sync = ?self.sync, user_id = %user_id, "msg service on tlsnet-msg/1");
        Ok(Some(MsgService::lazy(dir, store, options)))
    }
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Server address: HOST:PORT, or [IPv6]:PORT; several, comma-separated, for nodes of one
    /// cluster: the first that answers is used, and when it goes away the next one, where the
    /// session was (what was not acknowledged comes again; it is shown once).
    #[arg(value_name = "HOST:PORT[,HOST:PORT...]")]
    addr: String,

    /// Name to send as SNI and to check the certificate against [default: the HOST].
    #[arg(long, value_name = "NAME")]
    servername: Option<String>,

    #[command(flatten)]
    tls: ClientTlsArgs,

    /// Be the user NAME of a local server's development PKI: its certificate is issued there
    /// on first use (user-NAME.pem).
    #[arg(long = "as", value_name = "NAME", conflicts_with_all = ["cert", "key"])]
    as_user: Option<String>,

    /// The user to send to (--send), or whose conversation --history reads.
    #[arg(long, value_name = "USER", conflicts_with = "room")]
    to: Option<String>,

    /// The room to send to (--send), or whose history --history reads.
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,

    /// Create ROOM (and join it) first; repeatable.
    #[arg(long, value_name = "ROOM")]
    create: Vec<String>,

    /// Join ROOM first; repeatable.
    #[arg(long, value_name = "ROOM")]
    join: Vec<String>,

    /// Send TEXT to --to or --room; exits 0 once the server has stored it, printing its id.
    #[arg(long, value_name = "TEXT")]
    send: Option<String>,

    /// Print pending and new messages, acknowledging each once printed.
    #[arg(long)]
    receive: bool,

    /// Print the last N messages of --to's or --room's conversation.
    #[arg(long, value_name = "N")]
    history: Option<u32>,

    /// With --receive and --history: one JSON object per message.
    #[arg(long)]
    json: bool,

    /// With --receive: exit after N messages.
    #[arg(long, value_name = "N")]
    count: Option<usize>,

    /// With --receive: exit when nothing arrives for this long.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    wait: Duration,

    /// Deadline for connecting, the handshake, and each answer.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

/// The servers a chat may use, and the one it is on.
struct Servers {
    addrs: Vec<(String, ServerName<'static>)>,
    connector: Connector,
    timeout: Duration,
    at: usize,
}

impl Servers {
    /// A session on the current server, or on the next ones that answer.
    async fn connect(&mut self) -> Result<MsgClient<ClientStream>> {
        let n = self.addrs.len();
        let mut last = None;
        for i in 0..n {
            let k = (self.at + i) % n;
            let (addr, name) = &self.addrs[k];
            let session = async {
                let (stream, _) = self.connector.connect(addr, name.clone()).await?;
                MsgClient::start(stream, self.timeout)
                    .await
                    .with_context(|| format!("{addr}: no messaging session"))
            };
            match session.await {
                Ok(client) => {
                    self.at = k;
                    return Ok(client);
                }
                Err(e) => last = Some(e.context(addr.clone())),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no server")))
    }

    /// After the current server went away: the next one (or this one, when it is the only
    /// one and back).
    async fn next(&mut self, why: &ClientError) -> Result<MsgClient<ClientStream>> {
        eprintln!(
            "tlsnet chat: {} went away ({})",
            self.addrs[self.at].0,
            tlsnet::error::chain(why)
        );
        self.at = (self.at + 1) % self.addrs.len();
        let client = self.connect().await?;
        eprintln!("tlsnet chat: now on {}", self.addrs[self.at].0);
        Ok(client)
    }

    fn several(&self) -> bool {
        self.addrs.len() > 1
    }
}

/// Whether an error means the server went away (not a refusal of one request).
fn gone(e: &ClientError) -> bool {
    match e {
        ClientError::Refused(f) => f.fatal,
        _ => true,
    }
}

pub async fn run(args: ChatArgs) -> Result<ExitCode> {
    let list: Vec<&str> = args.addr.split(',').map(str::trim).collect();
    let mut hosts = Vec::new();
    for addr in &list {
        let (host, _) = split_host_port(addr).map_err(|e| UsageError(e.to_string()))?;
        hosts.push(host);
    }
    let host = hosts[0].clone();
    if args.send.is_some() && args.to.is_none() && args.room.is_none() {
        return Err(UsageError("--send needs --to USER or --room ROOM".into()).into());
    }
    if args.history.is_some() && args.to.is_none() && args.room.is_none() {
        return Err(UsageError("--history needs --to USER or --room ROOM".into()).into());
    }
    let mut addrs = Vec::new();
    for (addr, host) in list.iter().zip(&hosts) {
        let name = args.servername.clone().unwrap_or_else(|| host.clone());
        let name = server_name(&name).map_err(|e| UsageError(format!("--servername: {e}")))?;
        addrs.push((addr.to_string(), name));
    }
    let alpn = vec![String::from_utf8_lossy(tlsnet::msg::ALPN).into_owned()];
    let mut options = args.tls.options(&host, false, true, &alpn)?;
    if let Some(user) = &args.as_user {
        // Every server of the list must be local: the certificate is for this machine's PKI.
        if let Some(far) = hosts.iter().find(|h| !is_local_host(h)) {
            return Err(UsageError(format!(
                "--as works with a local server's development PKI only ({far} is not local)"
            ))
            .into());
        }
        options.identity = Some(args.tls.identity_as(&host, user)?);
    }
    let config = tokio::task::spawn_blocking(move || options.build()).await??;
    let mut connector = Connector::new(config);
    connector.connect_timeout = args.timeout;
    connector.handshake_timeout = args.timeout;
    let mut servers = Servers {
        addrs,
        connector,
        timeout: args.timeout,
        at: 0,
    };
    let mut client = servers.connect().await?;

    for room in &args.create {
        client
            .create(room)
            .await
            .with_context(|| format!("--create {room}"))?;
    }
    for room in &args.join {
        client
            .join(room)
            .await
            .with_context(|| format!("--join {room}"))?;
    }
    let target = match (&args.to, &args.room) {
        (Some(u), _) => Some(To::User(u.clone())),
        (_, Some(r)) => Some(To::Room(r.clone())),
        _ => None,
    };
    let scripted = args.send.is_some() || args.receive || args.history.is_some();
    if let (Some(text), Some(to)) = (&args.send, &target) {
        let mut tries = servers.addrs.len();
        let accepted = loop {
            match client.send(to.clone(), text).await {
                Ok(a) => break a,
                // Not acknowledged: maybe stored, maybe not; sent again on the next server.
                Err(e) if gone(&e) && servers.several() && tries > 1 => {
                    tries -= 1;
                    client = servers.next(&e).await?;
                }
                Err(e) => return Err(anyhow::Error::new(e).context("--send")),
            }
        };
        println!("{}", accepted.id);
    }
    if let (Some(n), Some(to)) = (args.history, &target) {
        let (messages, _) = client
            .history(to.clone(), None, n)
            .await
            .context("--history")?;
        for m in &messages {
            print_message(m, args.json)?;
        }
    }
    if args.receive {
        receive(&mut servers, &mut client, args.json, args.count, args.wait).await?;
    }
    if !scripted && args.create.is_empty() && args.join.is_empty() {
        interactive(&mut servers, &mut client, target).await?;
    }
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn print_message(m: &Message, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::json!({
            "id": m.id, "seq": m.seq, "from": m.from, "time": rfc3339(m.time), "text": m.text,
        });
        if let Some(to) = &m.to {
            v["to"] = to.clone().into();
        }
        if let Some(room) = &m.room {
            v["room"] = room.clone().into();
        }
        writeln!(out, "{v}")?;
    } else {
        let place = match (&m.room, &m.to) {
            (Some(r), _) => format!("[{r}] "),
            _ => String::new(),
        };
        writeln!(out, "{} {place}{}: {}", rfc3339(m.time), m.from, m.text)?;
    }
    out.flush().context("cannot write to stdout")?;
    Ok(())
}

async fn receive(
    servers: &mut Servers,
    client: &mut MsgClient<ClientStream>,
    json: bool,
    count: Option<usize>,
    wait: Duration,
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        let frame = match client.next_event(wait).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) if gone(&e) && servers.several() => {
                *client = servers.next(&e).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Frame::Deliver(m) = frame {
            // A message delivered again (we died before our ack reached the server, or
            // moved to another node) is printed once.
            if seen.insert(m.id) {
                print_message(&m, json)?;
                printed += 1;
            }
            match client.ack(&[m.id]).await {
                Ok(()) => {}
                Err(e) if gone(&e) && servers.several() => *client = servers.next(&e).await?,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

async fn interactive(
    servers: &mut Servers,
    client: &mut MsgClient<ClientStream>,
    mut target: Option<To>,
) -> Result<()> {
    eprintln!(
        "tlsnet chat: you are {}. A line goes to the current conversation; /msg USER TEXT, /join ROOM, /leave, /who, /history [N], /quit",
        client.user()
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut seen = HashSet::new();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line.context("cannot read stdin")? else { break };
                if !command(client, &mut target, line.trim()).await? {
                    break;
                }
            }
            event = client.next_event(Duration::from_secs(3600)) => match event {
                Err(e) if gone(&e) && servers.several() => *client = servers.next(&e).await?,
                Err(e) => return Err(e.into()),
                Ok(Some(Frame::Deliver(m))) => {
                    if seen.insert(m.id) {
                        print_message(&m, false)?;
                    }
                    client.ack(&[m.id]).await?;
                }
                Ok(Some(Frame::Presence(p))) => eprintln!("* {} is {}", p.user, if p.online { "online" } else { "offline" }),
                Ok(Some(Frame::Error(e))) => eprintln!("! {} ({})", e.message, e.code),
                _ => {}
            },
        }
    }
    Ok(())
}

/// One line of interactive mode; false to quit.
async fn command(
    client: &mut MsgClient<ClientStream>,
    target: &mut Option<To>,
    line: &str,
) -> Result<bool> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let outcome: Result<(), tlsnet::msg::client::ClientError> = match word {
        "" => Ok(()),
        "/quit" => return Ok(false),
        "/msg" => match rest.split_once(' ') {
            Some((user, text)) => {
                *target = Some(To::User(user.to_owned()));
                client
                    .send(To::User(user.to_owned()), text)
                    .await
                    .map(|_| ())
            }
            None => {
                eprintln!("! /msg USER TEXT");
                Ok(())
            }
        },
        "/join" => {
            let r = match client.join(rest).await {
                Err(e) if e.code() == Some("no_such_room") => client.create(rest).await,
                other => other,
            };
            if r.is_ok() {
                *target = Some(To::Room(rest.to_owned()));
            }
            r
        }
        "/leave" => match target.clone() {
            Some(To::Room(r)) => {
                *target = None;
                client.leave(&r).await
            }
            _ => {
                eprintln!("! not in a room");
                Ok(())
            }
        },
        "/who" => match target.clone() {
            Some(To::Room(r)) => client.members(&r).await.map(|members| {
                for m in members {
                    eprintln!(
                        "* {} {}",
                        m.user,
                        if m.online { "online" } else { "offline" }
                    );
                }
            }),
            _ => {
                eprintln!("! /who lists a room's members: /join one first");
                Ok(())
            }
        },
        "/history" => match target.clone() {
            Some(to) => {
                let n = rest.parse().unwrap_or(20);
                match client.history(to, None, n).await {
                    Ok((messages, _)) => {
                        for m in &messages {
                            print_message(m, false)?;
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            None => {
                eprintln!("! no conversation yet: /msg USER TEXT or /join ROOM");
                Ok(())
            }
        },
        w if w.starts_with('/') => {
            eprintln!("! unknown command {w}");
            Ok(())
        }
        _ => match target.clone() {
            Some(to) => client.send(to, line).await.map(|_| ()),
            None => {
                eprintln!("! no conversation yet: /msg USER TEXT or /join ROOM");
                Ok(())
            }
        },
    };
    match outcome {
        Ok(()) => Ok(true),
        Err(e @ tlsnet::msg::client::ClientError::Refused(_)) => {
            eprintln!("! {e}");
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}
