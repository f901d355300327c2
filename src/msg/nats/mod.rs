//! The NATS JetStream backend: several tlsnet nodes share messages, queues, rooms and
//! presence through a NATS cluster (`tlsnet serve --store nats://HOST:PORT,...`).
//!
//! What lives in NATS (docs/SCALING.md has the limits and the capacity model):
//!
//! | what | where | key or subject |
//! |---|---|---|
//! | messages | stream `TLSNET_MSG` (file, R = `--nats-replicas`, limits retention, discard new) | `tlsnet.m.d.<to>.<from>` (direct), `tlsnet.m.r.<room>` |
//! | a user's queue | durable pull consumer `u-<hash of user>` on `TLSNET_MSG`, explicit acks | filters `tlsnet.m.d.<user>.*` and each room of the user |
//! | rooms | KV bucket `tlsnet-rooms` | `<room>`: created, members |
//! | users | KV bucket `tlsnet-users` | `<user>`: rooms, contacts, last seen |
//! | presence | KV bucket `tlsnet-presence`, entries expire after [`PRESENCE_TTL`] | `<user>.<node>`, refreshed every [`HEARTBEAT`] |
//! | wake-ups, receipts, presence changes | core NATS, best effort | `tlsnet.ev.<user>` |
//!
//! Names in subjects and keys are base64url (no padding), so any user or room name is one
//! token. A message's id and its `seq` are its sequence number in `TLSNET_MSG`: unique,
//! increasing, and in each conversation's order (not dense). The sender is acknowledged only
//! after JetStream's PubAck, which a replicated stream gives once a quorum has the message;
//! a publish that times out is sent again with the same `Nats-Msg-Id`, and JetStream's
//! de-duplication keeps one copy.

mod ops;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, kv, stream};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::backend::Remote;
use super::codec::Presence;
use super::service::MsgOptions;
use super::store::StoreError;

/// How often a session looks at its queue without a wake-up: wake-ups are core NATS (at most
/// once), and every session is woken when the node reconnects, so this is only the safety
/// net, as long as the ack wait (an idle session costs NATS one fetch per period).
pub const POLL_EVERY: Duration = ACK_WAIT;
/// How long a node's presence entry lives without a heartbeat: a node that dies takes its
/// users' presence with it within this time.
pub const PRESENCE_TTL: Duration = Duration::from_secs(15);
/// How often a node refreshes its users' presence entries.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a delivered message waits for its acknowledgement before JetStream delivers it
/// again (a node that died with messages in flight).
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long one request to NATS may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Publishes of one message (the same `Nats-Msg-Id`) before the sender gets an error.
pub const PUBLISH_TRIES: usize = 3;

const STREAM: &str = "TLSNET_MSG";
const ROOMS: &str = "tlsnet-rooms";
const USERS: &str = "tlsnet-users";
const PRESENCE: &str = "tlsnet-presence";

/// How to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// `nats://HOST:PORT` of each server given.
    pub servers: Vec<String>,
    /// CA certificates (PEM) that sign the servers' certificates; TLS is required when set.
    pub ca: Option<PathBuf>,
    /// This node's client certificate (PEM), for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// Replicas of every stream and bucket (1 to 5).
    pub replicas: usize,
    /// Most bytes the message stream keeps; more messages are refused (-1: no limit).
    pub max_bytes: i64,
}

impl NatsOptions {
    /// Parses `nats://HOST:PORT[,HOST:PORT...]`; replicas default to the number of servers,
    /// at most 3.
    pub fn parse(url: &str) -> Result<NatsOptions, String> {
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| format!("{url:?} is not nats://HOST:PORT[,HOST:PORT...]"))?;
        let mut servers = Vec::new();
        for part in rest.split(',') {
            let part = part.trim().trim_start_matches("nats://");
            let ok = part
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("{part:?} in {url:?} is not HOST:PORT"));
            }
            servers.push(format!("nats://{part}"));
        }
        Ok(NatsOptions {
            replicas: servers.len().min(3),
            servers,
            ca: None,
            cert: None,
            key: None,
            max_bytes: -1,
        })
    }
}

/// The part of a name in a subject or a key: base64url without padding, one token.
pub(crate) fn token(name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An event on `tlsnet.ev.<user>`, with the node it comes from (a node skips its own).
#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    event: Remote,
}

/// What is made once the cluster answers.
#[derive(Clone)]
struct Ready {
    stream: stream::Stream,
    rooms: kv::Store,
    users: kv::Store,
    presence: kv::Store,
    presence_stream: stream::Stream,
}

/// A user's messages delivered here and not yet acknowledged: id → (JetStream's message, its
/// sender).
type Held = HashMap<u64, (jetstream::Message, String)>;

/// One node's connection to the cluster.
pub struct Cluster {
    client: async_nats::Client,
    js: jetstream::Context,
    servers: String,
    node: String,
    options: NatsOptions,
    max_message_size: u32,
    ready: Arc<tokio::sync::OnceCell<Ready>>,
    counter: AtomicU64,
    /// Users whose consumer is known to exist.
    consumers: Mutex<HashMap<String, consumer::PullConsumer>>,
    /// Pairs whose contact is recorded.
    contacts: Mutex<std::collections::HashSet<(String, String)>>,
    /// Users whose last look at their queue failed (their queue starts again before the next).
    dirty: Mutex<std::collections::HashSet<String>>,
    /// Messages delivered to this node's sessions and not yet acknowledged, per user.
    inflight: Mutex<HashMap<String, Held>>,
    /// Users with a session here, and their event subscription.
    local: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>,
    events: mpsc::UnboundedSender<(String, Remote)>,
    events_rx: Mutex<Option<mpsc::UnboundedReceiver<(String, Remote)>>>,
    /// Users another node said went offline, and when (so that their entry's removal is not
    /// taken for a lost node).
    departed: Departed,
    heartbeat: tokio::task::AbortHandle,
}

/// Users another node announced offline, and when this node heard it.
type Departed = Arc<Mutex<HashMap<String, tokio::time::Instant>>>;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("servers", &self.servers)
            .field("node", &self.node)
            .finish()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.heartbeat.abort();
        for (_, task) in lock(&self.local).drain() {
            task.abort();
        }
    }
}

impl Cluster {
    /// Connects (in the background: a node starts while NATS is down, and reconnects by
    /// itself whenever it goes away).
    pub async fn connect(options: NatsOptions, msg: MsgOptions) -> crate::Result<Cluster> {
        let servers = options
            .servers
            .iter()
            .map(|s| s.trim_start_matches("nats://"))
            .collect::<Vec<_>>()
            .join(",");
        let addrs = options
            .servers
            .iter()
            .map(|s| s.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| crate::Error::unusable(format!("NATS servers {servers}"), e))?;
        let mut random = [0u8; 8];
        aws_lc_rs::rand::fill(&mut random)
            .map_err(|_| crate::Error::InvalidInput("no random numbers for the node id".into()))?;
        let node = format!("{:016x}", u64::from_le_bytes(random));
        let shown = servers.clone();
        let local: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>> = Arc::default();
        let (events, events_rx) = mpsc::unbounded_channel();
        let (woken, wake) = (local.clone(), events.clone());
        let mut connect = async_nats::ConnectOptions::new()
            .name(format!("tlsnet node {node}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(TIMEOUT))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * attempts as u64).min(1000))
            })
            .event_callback(move |event| {
                let shown = shown.clone();
                // Wake-ups sent while the node was away are lost: every session looks again.
                if matches!(event, async_nats::Event::Connected) {
                    for user in lock(&woken).keys() {
                        let _ = wake.send((user.clone(), Remote::Wake));
                    }
                }
                async move {
                    match event {
                        async_nats::Event::Connected => info!(servers = %shown, "msg: NATS connected"),
                        async_nats::Event::Disconnected => warn!(servers = %shown, "msg: NATS disconnected; sends are refused until it is back"),
                        other => info!(servers = %shown, event = %other, "msg: NATS"),
                    }
                }
            });
        if let Some(ca) = &options.ca {
            connect = connect.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => {
                connect = connect.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => {
                return Err(crate::Error::InvalidInput(
                    "--nats-cert and --nats-key go together".into(),
                ))
            }
        }
        let client = connect
            .connect(addrs)
            .await
            .map_err(|e| crate::Error::unusable(format!("NATS servers {servers}"), e))?;
        // The first session should find the cluster if it is there; a node whose cluster is
        // down starts all the same, refuses sends, and reconnects by itself.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while client.connection_state() != State::Connected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut js = jetstream::new(client.clone());
        js.set_timeout(TIMEOUT);
        let ready = Arc::new(tokio::sync::OnceCell::new());
        let departed = Departed::default();
        let heartbeat = tokio::spawn(heartbeat(
            client.clone(),
            ready.clone(),
            local.clone(),
            node.clone(),
            events.clone(),
            departed.clone(),
        ))
        .abort_handle();
        info!(
            servers,
            node,
            replicas = options.replicas,
            "msg: node of a NATS JetStream cluster"
        );
        Ok(Cluster {
            client,
            js,
            servers,
            node,
            options,
            max_message_size: msg.max_message_size,
            ready,
            counter: AtomicU64::new(1),
            consumers: Mutex::default(),
            contacts: Mutex::default(),
            dirty: Mutex::default(),
            inflight: Mutex::default(),
            local,
            events,
            events_rx: Mutex::new(Some(events_rx)),
            departed,
            heartbeat,
        })
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn unreachable(&self, action: &'static str) -> StoreError {
        StoreError::Unreachable {
            servers: self.servers.clone(),
            action,
        }
    }

    /// An async-nats error as a store error: the cluster is unreachable when the connection
    /// is down or the request timed out (or found no one to answer it); else NATS refused.
    fn fail<E: Into<crate::error::BoxError>>(
        &self,
        action: &'static str,
    ) -> impl FnOnce(E) -> StoreError + '_ {
        move |e| {
            let e: crate::error::BoxError = e.into();
            let text = e.to_string().to_lowercase();
            if !self.connected()
                || text.contains("timed out")
                || text.contains("no responders")
                || text.contains("broken pipe")
            {
                StoreError::Unreachable {
                    servers: self.servers.clone(),
                    action,
                }
            } else {
                StoreError::Cluster {
                    action,
                    source: Arc::from(e),
                }
            }
        }
    }

    /// The streams and buckets, made on first use (and again after a failure).
    async fn ready(&self, action: &'static str) -> Result<&Ready, StoreError> {
        if !self.connected() {
            return Err(self.unreachable(action));
        }
        self.ready
            .get_or_try_init(|| async {
                match tokio::time::timeout(4 * TIMEOUT, self.setup()).await {
                    Ok(r) => r,
                    Err(_) => Err(self.unreachable(action)),
                }
            })
            .await
    }

    async fn setup(&self) -> Result<Ready, StoreError> {
        let replicas = self.options.replicas;
        let stream = self
            .js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                description: Some("tlsnet messages".into()),
                subjects: vec!["tlsnet.m.>".into()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::New,
                num_replicas: replicas,
                max_bytes: self.options.max_bytes,
                max_message_size: i32::try_from(self.max_message_size.saturating_mul(6))
                    .unwrap_or(i32::MAX)
                    .saturating_add(4096),
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                ..stream::Config::default()
            })
            .await
            .map_err(self.fail("make the message stream"))?;
        let bucket = |bucket: &str, max_age: Duration| kv::Config {
            bucket: bucket.into(),
            history: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..kv::Config::default()
        };
        let rooms = self.bucket(bucket(ROOMS, Duration::ZERO)).await?;
        let users = self.bucket(bucket(USERS, Duration::ZERO)).await?;
        let presence = self.bucket(bucket(PRESENCE, PRESENCE_TTL)).await?;
        let presence_stream = self
            .js
            .get_stream(format!("KV_{PRESENCE}"))
            .await
            .map_err(self.fail("open the presence bucket"))?;
        info!(servers = %self.servers, "msg: NATS streams and buckets ready");
        Ok(Ready {
            stream,
            rooms,
            users,
            presence,
            presence_stream,
        })
    }

    async fn bucket(&self, config: kv::Config) -> Result<kv::Store, StoreError> {
        if let Ok(kv) = self.js.get_key_value(config.bucket.clone()).await {
            return Ok(kv);
        }
        self.js
            .create_key_value(config)
            .await
            .map_err(self.fail("make a KV bucket"))
    }

    fn presence_key(&self, user: &str) -> String {
        format!("{}.{}", token(user), self.node)
    }

    /// Whether `user` has a live presence entry from another node.
    pub async fn online_elsewhere(&self, user: &str) -> bool {
        let Ok(ready) = self.ready("read presence").await else {
            return false;
        };
        let filter = format!("$KV.{PRESENCE}.{}.*", token(user));
        let mine = format!("$KV.{PRESENCE}.{}", self.presence_key(user));
        let mut from = None;
        for _ in 0..64 {
            match ready
                .presence_stream
                .direct_get_next_for_subject(filter.clone(), from)
                .await
            {
                Ok(m) if m.subject.as_str() == mine => from = Some(m.sequence + 1),
                Ok(_) => return true,
                Err(_) => return false,
            }
        }
        false
    }

    /// The user's first session here: their events, their presence entry, and their queue
    /// taken over from where it was acknowledged (messages another node delivered and never
    /// saw acknowledged come again now and in order, not after the ack wait).
    pub async fn opened(&self, user: &str) {
        lock(&self.inflight).remove(user);
        let subject = format!("tlsnet.ev.{}", token(user));
        match self.client.subscribe(subject).await {
            Ok(mut sub) => {
                let (node, events, who) = (self.node.clone(), self.events.clone(), user.to_owned());
                let departed = self.departed.clone();
                let task = tokio::spawn(async move {
                    use futures_util::StreamExt;
                    while let Some(m) = sub.next().await {
                        let Ok(e) = serde_json::from_slice::<Envelope>(&m.payload) else {
                            continue;
                        };
                        if e.node == node {
                            continue;
                        }
                        if let Remote::Presence(p) = &e.event {
                            if !p.online {
                                lock(&departed).insert(p.user.clone(), tokio::time::Instant::now());
                            }
                        }
                        if events.send((who.clone(), e.event)).is_err() {
                            return;
                        }
                    }
                });
                if let Some(old) = lock(&self.local).insert(user.to_owned(), task.abort_handle()) {
                    old.abort();
                }
            }
            Err(e) => warn!(user, error = %e, "msg: cannot subscribe to a user's events"),
        }
        let Ok(ready) = self.ready("open a session").await else {
            warn!(user, servers = %self.servers, "msg: NATS unreachable at session start");
            return;
        };
        if let Err(e) = ready
            .presence
            .put(
                self.presence_key(user),
                now_ms().to_string().into_bytes().into(),
            )
            .await
        {
            warn!(user, error = %e, "msg: cannot record presence");
        }
        if let Err(e) = self.take_over(ready, user).await {
            warn!(user, error = %crate::error::chain(&e), "msg: cannot take over a user's queue");
        }
    }

    /// The user's last session here ended: their events stop, their presence entry goes, and
    /// what they did not acknowledge is given back at once.
    pub async fn closed(&self, user: &str) {
        if let Some(task) = lock(&self.local).remove(user) {
            task.abort();
        }
        let held = lock(&self.inflight).remove(user).unwrap_or_default();
        for (m, _) in held.into_values() {
            let _ = m.ack_with(jetstream::AckKind::Nak(None)).await;
        }
        if let Some(ready) = self.ready.get() {
            let subject = format!("$KV.{PRESENCE}.{}", self.presence_key(user));
            if let Err(e) = ready.presence_stream.purge().filter(subject).await {
                warn!(user, error = %e, "msg: cannot remove a presence entry (it expires by itself)");
            }
        }
    }

    /// Tells `user`'s sessions on the other nodes (best effort: a lost wake-up is made good by
    /// [`POLL_EVERY`]).
    pub fn notify(&self, user: &str, event: &Remote) {
        if !self.connected() {
            return;
        }
        let envelope = Envelope {
            node: self.node.clone(),
            event: event.clone(),
        };
        let Ok(payload) = serde_json::to_vec(&envelope) else {
            return;
        };
        let client = self.client.clone();
        let subject = format!("tlsnet.ev.{}", token(user));
        tokio::spawn(async move {
            let _ = client.publish(subject, payload.into()).await;
        });
    }

    /// The events other nodes leave for this node's users (once).
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<(String, Remote)>> {
        lock(&self.events_rx).take()
    }
}

/// Refreshes the presence entries of this node's users until the node goes, and finds the
/// users whose node went away without a word (see [`Absences`]).
async fn heartbeat(
    client: async_nats::Client,
    ready: Arc<tokio::sync::OnceCell<Ready>>,
    local: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>,
    node: String,
    events: mpsc::UnboundedSender<(String, Remote)>,
    departed: Departed,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut absences = Absences::default();
    loop {
        tick.tick().await;
        if client.connection_state() != State::Connected {
            continue;
        }
        let Some(ready) = ready.get() else { continue };
        let users: Vec<String> = lock(&local).keys().cloned().collect();
        let now = now_ms().to_string();
        for user in users {
            let key = format!("{}.{node}", token(&user));
            if let Err(e) = ready
                .presence
                .put(key, now.clone().into_bytes().into())
                .await
            {
                warn!(user, error = %e, "msg: cannot refresh presence");
                break;
            }
        }
        let Some(online) = online_users(&ready.presence).await else {
            continue;
        };
        lock(&departed).retain(|_, at| at.elapsed() < 3 * HEARTBEAT);
        for gone in absences.update(online, now_ms()) {
            let here = lock(&local).contains_key(&gone.user);
            if here || lock(&departed).contains_key(&gone.user) {
                continue;
            }
            info!(user = %gone.user, "msg: user's node went away; telling their peers here");
            if events
                .send((gone.user.clone(), Remote::Gone(gone)))
                .is_err()
            {
                return;
            }
        }
    }
}

/// Every user with a presence entry on any node, or `None` when the bucket cannot be read
/// (then nobody is taken for gone).
async fn online_users(presence: &kv::Store) -> Option<std::collections::HashSet<String>> {
    use futures_util::StreamExt;
    let mut keys = presence.keys().await.ok()?;
    let mut users = std::collections::HashSet::new();
    while let Some(key) = keys.next().await {
        let key = key.ok()?;
        let Some((tok, _node)) = key.split_once('.') else {
            continue;
        };
        if let Some(user) = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tok)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            users.insert(user);
        }
    }
    Some(users)
}

/// The users seen online at the last look, and when: a user who had a presence entry and
/// has none now is offline. A node that shuts down says so itself; one that is killed says
/// nothing, and its entries expire after [`PRESENCE_TTL`]: the other nodes see them go at
/// their next [`HEARTBEAT`] and tell the user's peers, with the last time the user was seen.
#[derive(Debug, Default)]
struct Absences {
    seen: HashMap<String, u64>,
}

impl Absences {
    /// Takes the users online now (at `now`, in ms); returns those who are not any more.
    fn update(&mut self, online: std::collections::HashSet<String>, now: u64) -> Vec<Presence> {
        let gone = self
            .seen
            .iter()
            .filter(|(user, _)| !online.contains(*user))
            .map(|(user, last)| Presence {
                user: user.clone(),
                online: false,
                last_seen: *last,
            })
            .collect();
        self.seen = online.into_iter().map(|user| (user, now)).collect();
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_whose_entries_went_is_gone_once_with_the_last_time_seen() {
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        let mut a = Absences::default();
        assert!(a.update(set(&["alice", "bob"]), 1_000).is_empty());
        assert!(a.update(set(&["alice", "bob"]), 2_000).is_empty());
        let gone = a.update(set(&["alice"]), 3_000);
        assert_eq!(
            gone,
            vec![Presence {
                user: "bob".into(),
                online: false,
                last_seen: 2_000
            }]
        );
        assert!(a.update(set(&["alice"]), 4_000).is_empty());
        assert!(a.update(set(&["alice", "bob"]), 5_000).is_empty());
    }

    #[test]
    fn store_urls_and_tokens() {
        let o = NatsOptions::parse("nats://a:4222,b:4223, nats://[::1]:4224").unwrap();
        assert_eq!(
            o.servers,
            ["nats://a:4222", "nats://b:4223", "nats://[::1]:4224"]
        );
        assert_eq!(o.replicas, 3);
        assert_eq!(NatsOptions::parse("nats://a:1").unwrap().replicas, 1);
        let five = NatsOptions::parse("nats://a:1,b:1,c:1,d:1,e:1").unwrap();
        assert_eq!(five.replicas, 3);
        for bad in [
            "a:4222",
            "nats://a",
            "nats://:1",
            "nats://a:x",
            "nats://a:1,",
        ] {
            assert!(NatsOptions::parse(bad).is_err(), "{bad}");
        }
        // Any name is one subject token and a valid KV key.
        for name in ["alice", "a.b", "*", ">", "x y", "élodie", "a/b=c"] {
            let t = token(name);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{name} → {t}"
            );
        }
        assert_ne!(token("a.b"), token("a_b"));
    }
}
