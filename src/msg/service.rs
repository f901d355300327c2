//! The server side of `tlsnet-msg/1`: a [`Service`] on the server's port.
//!
//! A connection is one user's session. The user is the identity in the client certificate
//! (the field [`UserIdSource`] picks, see [`crate::service::user`]). The session reads frames and answers them in order;
//! messages for the user are sent from the store's queue, at most [`MsgOptions::window`] of
//! them unacknowledged at a time, so a client that never acknowledges holds a bounded number
//! of messages and nothing more is read for it; what it has not acknowledged stays queued
//! and is sent again on its next connection. A client that does not read stops its own
//! session (its writes block, then its reads stop) and no one else's.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::backend::{Backend, Remote};
use super::codec::{
    self, Accepted, CodecError, Decoded, Decoder, ErrorFrame, Frame, Goodbye, Message, Outcome,
    Presence, Receipt, Welcome,
};
use super::nats::NatsOptions;
use super::store::{
    Acked, Queued, Recipients, Refusal, Sent, Store, StoreError, StoreOptions, Target,
};
use crate::error::BoxError;
use crate::service::user::{UserId, UserIdError, UserIdSource};
use crate::service::{BoxFuture, BoxStream, Context, End, Service};

/// Longest user id or room name, in bytes.
pub const MAX_NAME: usize = 256;
/// Most messages in one history page.
pub const MAX_PAGE: u32 = 500;
/// Most receipts waiting for a client that does not read; older ones are dropped, logged.
pub const MAX_PENDING_RECEIPTS: usize = 1024;
/// Requests of one client read and not yet answered (SENDs waiting for their commit), at most;
/// past that the session reads no more until the oldest is answered.
pub const MAX_PIPELINE: usize = 256;
/// Messages the store's writer hands a session ahead of its next look at its queue, at most
/// (past that the session reads its queue from the store; see [`Events::pushed`]).
const MAX_PUSHED: usize = 64;
/// The session's read buffer while the client is quiet, and while it sends a lot.
const READ_SMALL: usize = 512;
const READ_LARGE: usize = 16 * 1024;
/// Small reads in a row after which the large read buffer is let go. Under load a small read
/// often falls between two full ones, and letting go at the first one made every such pair an
/// allocation, a zeroing and a free of the large buffer.
const SHRINK_AFTER: u32 = 8;

/// Whether a user or room name is usable: 1 to 256 bytes, no control characters.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME {
        return Err("it is longer than 256 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("it holds control characters");
    }
    Ok(())
}

/// The service's settings.
#[derive(Debug, Clone, Copy)]
pub struct MsgOptions {
    /// Which certificate field is the user id.
    pub user_id: UserIdSource,
    /// Largest text, in bytes.
    pub max_message_size: u32,
    /// Messages a user may send per second, on average (0: no limit).
    pub rate_per_sec: f64,
    /// Messages a user may send at once before the rate applies.
    pub burst: u32,
    /// Messages sent to a client and not yet acknowledged, at most.
    pub window: usize,
}

impl Default for MsgOptions {
    fn default() -> Self {
        MsgOptions {
            user_id: UserIdSource::Cn,
            max_message_size: 64 * 1024,
            rate_per_sec: 50.0,
            burst: 100,
            window: 256,
        }
    }
}

impl MsgOptions {
    /// The largest frame payload accepted: room for the text with every byte escaped in
    /// JSON (`\u00XX`, six bytes), and for the other fields.
    pub fn max_frame(&self) -> u32 {
        self.max_message_size.saturating_mul(6).saturating_add(4096)
    }
}

/// The messaging service.
pub struct MsgService {
    hub: tokio::sync::OnceCell<Arc<Hub>>,
    open: Option<Open>,
    options: MsgOptions,
}

/// What the first messaging client opens.
#[derive(Debug, Clone)]
enum Open {
    Dir(PathBuf, StoreOptions),
    Nats(NatsOptions),
}

impl std::fmt::Debug for MsgService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgService")
            .field("store", &self.open)
            .field("options", &self.options)
            .finish()
    }
}

impl MsgService {
    /// The service over an open store.
    pub fn new(store: Store, options: MsgOptions) -> Self {
        MsgService {
            hub: tokio::sync::OnceCell::new_with(Some(Hub::new(Backend::Embedded(store), options))),
            open: None,
            options,
        }
    }

    /// The service with the store in `dir`, opened by the first messaging client: a server
    /// that no one messages makes no files, and several servers can share a home until one
    /// of them is messaged (a store is one process's).
    pub fn lazy(dir: PathBuf, store: StoreOptions, options: MsgOptions) -> Self {
        MsgService {
            hub: tokio::sync::OnceCell::new(),
            open: Some(Open::Dir(dir, store)),
            options,
        }
    }

    /// The service as one node of many on a NATS JetStream cluster (`--store nats://...`),
    /// connected when the first messaging client comes (and reconnecting by itself).
    pub fn nats(nats: NatsOptions, options: MsgOptions) -> Self {
        MsgService {
            hub: tokio::sync::OnceCell::new(),
            open: Some(Open::Nats(nats)),
            options,
        }
    }

    async fn hub(&self) -> crate::Result<Arc<Hub>> {
        self.hub
            .get_or_try_init(|| async {
                let (dir, store_options) = match self.open.clone() {
                    Some(Open::Dir(dir, store)) => (dir, store),
                    Some(Open::Nats(nats)) => {
                        let cluster = super::nats::Cluster::connect(nats, self.options).await?;
                        return Ok(Hub::new(Backend::Nats(Arc::new(cluster)), self.options));
                    }
                    None => return Err(crate::Error::InvalidInput("message store missing".into())),
                };
                let store = tokio::task::spawn_blocking(move || Store::open(&dir, store_options))
                    .await
                    .map_err(|e| crate::Error::unusable("message store", e))??;
                info!(path = %store.path().display(), "msg: store opened");
                Ok(Hub::new(Backend::Embedded(store), self.options))
            })
            .await
            .cloned()
    }
}

impl Service for MsgService {
    fn name(&self) -> &'static str {
        "msg"
    }

    fn serve<'a>(&'a self, stream: BoxStream, ctx: &'a Context) -> BoxFuture<'a, End> {
        Box::pin(self.session(stream, ctx))
    }
}

impl MsgService {
    /// One client's session: the future every connected user holds (boxed, by `serve`).
    async fn session(&self, mut stream: BoxStream, ctx: &Context) -> End {
        // The hub is opened once, by the first client: its future (the store's or the NATS
        // cluster's opening, several kilobytes) is boxed, not inline in every session's.
        let hub = match self.hub.get() {
            Some(hub) => Ok(hub.clone()),
            None => Box::pin(self.hub()).await,
        };
        match hub {
            Ok(hub) => serve(hub, stream, ctx).await,
            Err(e) => {
                let text = e.describe();
                warn!(peer = %ctx.peer, error = %text, "msg: the store cannot be opened");
                let frame = error_frame(None, "store_unavailable", text, true);
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    let _ = write_frame(&mut stream, &frame).await;
                    let _ = stream.shutdown().await;
                })
                .await;
                End::Failed(Box::new(e))
            }
        }
    }
}

struct Hub {
    store: Backend,
    options: MsgOptions,
    /// Shared with the store's writer, which hands them their messages (see [`push`]).
    sessions: Arc<Sessions>,
    buckets: Mutex<Map<String, Bucket>>,
    /// Whether the store hands the sessions their messages (the embedded store does).
    pushes: bool,
}

/// foldhash, not SipHash: a room message looks up each of its members.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The sessions on this node, by user.
type Sessions = Mutex<Map<String, Vec<Arc<Session>>>>;

/// What other sessions leave for a session: wake-ups, presence changes, receipts.
#[derive(Default)]
struct Session {
    wake: Notify,
    /// The highest id queued for the user (raised before `wake` is notified; `u64::MAX` from
    /// another node): a wake-up looks at the queue only when this is past what the session
    /// has sent, or when its window was full. The other wake-ups (a receipt, a presence
    /// change, an ACK committed) and those for messages an earlier look already took (the
    /// senders of one group commit wake each member once each) need no read of the store:
    /// ids are committed in order, so a look that saw id N saw every committed id below it.
    queued: AtomicU64,
    events: Mutex<Events>,
}

#[derive(Default)]
struct Events {
    presence: BTreeMap<String, Presence>,
    receipts: VecDeque<Receipt>,
    /// The messages committed for the user since the session's last look at its queue, in
    /// id order, as the embedded store's writer hands them over (before it answers their
    /// senders). While `complete`, they are all the session has to send past what it sent,
    /// and a look takes them from here instead of reading the store.
    pushed: VecDeque<Queued>,
    /// Set at a look that reads the store (so that what is committed during the read is
    /// kept), unset when that read may not have taken everything (it filled the window, or
    /// failed) or when `pushed` outgrows [`MAX_PUSHED`]: the next look reads the store.
    complete: bool,
}

impl Session {
    /// Up to `room` of the pushed messages past `cursor`, and whether more are left; `None`
    /// when they may not be all that is queued: then the caller reads the queue, and calls
    /// [`Session::incomplete`] if that read may not have taken everything.
    fn take_pushed(&self, cursor: u64, room: usize) -> Option<(Vec<Queued>, bool)> {
        let mut ev = lock(&self.events);
        if !ev.complete {
            // Nothing is pushed while incomplete: from now on, what is committed is kept.
            ev.complete = true;
            return None;
        }
        // Those committed during the last read of the store came with it too.
        while ev.pushed.front().is_some_and(|q| q.id <= cursor) {
            ev.pushed.pop_front();
        }
        let n = room.min(ev.pushed.len());
        let taken: Vec<Queued> = ev.pushed.drain(..n).collect();
        let more = !ev.pushed.is_empty();
        if !more && ev.pushed.capacity() > 8 {
            ev.pushed = VecDeque::new();
        }
        Some((taken, more))
    }

    /// The pushed messages are not all: the next look reads the store.
    fn incomplete(&self) {
        let mut ev = lock(&self.events);
        ev.complete = false;
        ev.pushed = VecDeque::new();
    }
}

/// The store's writer committed `q` for `recipients`: it goes to their sessions here (those
/// whose pushed messages are complete; see [`Events::pushed`]).
fn push(sessions: &Sessions, q: &Queued, recipients: &Recipients) {
    let sessions = lock(sessions);
    for user in recipients.iter() {
        for s in sessions.get(user).into_iter().flatten() {
            let mut ev = lock(&s.events);
            if !ev.complete {
                continue;
            }
            if ev.pushed.len() >= MAX_PUSHED {
                ev.complete = false;
                ev.pushed = VecDeque::new();
            } else {
                ev.pushed.push_back(q.clone());
            }
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    fn new(store: Backend, options: MsgOptions) -> Arc<Hub> {
        let events = store.take_events();
        let sessions = Arc::new(Sessions::default());
        // The writer holds the sessions, not the hub (which holds the store).
        let pushed = sessions.clone();
        let pushes = store.on_commit(move |q, recipients| push(&pushed, q, recipients));
        let hub = Arc::new(Hub {
            store,
            options,
            sessions,
            buckets: Mutex::new(Map::default()),
            pushes,
        });
        if let Some(mut events) = events {
            // What other nodes leave for this node's users, delivered as if said here.
            let weak = Arc::downgrade(&hub);
            tokio::spawn(async move {
                while let Some((user, event)) = events.recv().await {
                    let Some(hub) = weak.upgrade() else { return };
                    match event {
                        Remote::Gone(presence) => {
                            tokio::spawn(async move { hub.gone(presence).await });
                        }
                        event => hub.local(&user, event),
                    }
                }
            });
        }
        hub
    }

    /// An event for `user`'s sessions on this node.
    fn local(&self, user: &str, event: Remote) {
        let sessions = lock(&self.sessions);
        for s in sessions.get(user).into_iter().flatten() {
            match &event {
                Remote::Wake => s.queued.store(u64::MAX, Ordering::Release),
                Remote::Receipt(r) => {
                    let mut events = lock(&s.events);
                    if events.receipts.len() >= MAX_PENDING_RECEIPTS {
                        if let Some(old) = events.receipts.pop_front() {
                            warn!(user, id = old.id, by = %old.by, "msg: the client does not read; an old delivery receipt was dropped");
                        }
                    }
                    events.receipts.push_back(r.clone());
                }
                Remote::Presence(p) => {
                    lock(&s.events).presence.insert(p.user.clone(), p.clone());
                }
                // Handled by `gone`: it is about the user's peers, not the user.
                Remote::Gone(_) => {}
            }
            s.wake.notify_one();
        }
    }

    /// Message `id` was queued for `users`: their sessions look at their queues (one lock
    /// for all of a room's members).
    fn wake(&self, users: &Recipients, id: u64) {
        {
            let sessions = lock(&self.sessions);
            for user in users.iter() {
                for s in sessions.get(user).into_iter().flatten() {
                    s.queued.fetch_max(id, Ordering::AcqRel);
                    s.wake.notify_one();
                }
            }
        }
        for user in users.iter() {
            self.store.notify(user, || Remote::Wake);
        }
    }

    fn is_online(&self, user: &str) -> bool {
        lock(&self.sessions)
            .get(user)
            .is_some_and(|l| !l.is_empty())
    }

    /// Registers a session; true when it is the user's first.
    fn join(&self, user: &str, session: Arc<Session>) -> bool {
        let mut sessions = lock(&self.sessions);
        let list = sessions.entry(user.to_owned()).or_default();
        list.push(session);
        list.len() == 1
    }

    /// Unregisters a session; true when it was the user's last.
    fn part(&self, user: &str, session: &Arc<Session>) -> bool {
        let mut sessions = lock(&self.sessions);
        let Some(list) = sessions.get_mut(user) else {
            return false;
        };
        list.retain(|s| !Arc::ptr_eq(s, session));
        if list.is_empty() {
            sessions.remove(user);
            true
        } else {
            false
        }
    }

    async fn announce(&self, user: &str, online: bool, time: u64) {
        if let Err(e) = self.store.seen(user, time).await {
            warn!(user, error = %crate::error::chain(&e), "msg: cannot record last seen");
        }
        let peers = match self.store.peers(user).await {
            Ok(p) => p,
            Err(e) => {
                warn!(user, error = %crate::error::chain(&e), "msg: cannot find whom to tell of a presence change");
                return;
            }
        };
        let presence = Presence {
            user: user.to_owned(),
            online,
            last_seen: time,
        };
        self.tell_peers_here(&peers, &presence);
        for peer in peers {
            self.store
                .notify(&peer, || Remote::Presence(presence.clone()));
        }
    }

    /// A user whose node went away without a word (see `Remote::Gone`): their peers on this
    /// node learn that they are offline, unless they are connected here.
    async fn gone(&self, presence: Presence) {
        if self.is_online(&presence.user) {
            return;
        }
        match self.store.peers(&presence.user).await {
            Ok(peers) => self.tell_peers_here(&peers, &presence),
            Err(e) => {
                warn!(user = %presence.user, error = %crate::error::chain(&e), "msg: cannot find whom to tell of a presence change");
            }
        }
    }

    /// Puts a presence change in the events of every session of `peers` on this node.
    fn tell_peers_here(&self, peers: &std::collections::BTreeSet<String>, presence: &Presence) {
        let sessions = lock(&self.sessions);
        for peer in peers {
            for s in sessions.get(peer).into_iter().flatten() {
                lock(&s.events)
                    .presence
                    .insert(presence.user.clone(), presence.clone());
                s.wake.notify_one();
            }
        }
    }

    /// `by` acknowledged these messages: a receipt to each sender (one lock for all).
    fn receipts(&self, by: &Arc<str>, acked: &[Acked], time: u64) {
        let receipt = |a: &Acked| Receipt {
            id: a.id,
            by: by.clone(),
            time,
        };
        {
            let sessions = lock(&self.sessions);
            for a in acked {
                for s in sessions.get(&*a.from).into_iter().flatten() {
                    let mut events = lock(&s.events);
                    if events.receipts.len() >= MAX_PENDING_RECEIPTS {
                        if let Some(old) = events.receipts.pop_front() {
                            warn!(user = %a.from, id = old.id, by = %old.by, "msg: the client does not read; an old delivery receipt was dropped");
                        }
                    }
                    events.receipts.push_back(receipt(a));
                    s.wake.notify_one();
                }
            }
        }
        for a in acked {
            self.store.notify(&a.from, || Remote::Receipt(receipt(a)));
        }
    }

    /// Takes a token from the user's bucket; the wait until the next one when it is empty.
    fn rate(&self, user: &str) -> Result<(), Duration> {
        let rate = self.options.rate_per_sec;
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(self.options.burst.max(1));
        let mut buckets = lock(&self.buckets);
        let b = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: Instant::now(),
        });
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("msg: refused client {peer}")]
    UserId {
        peer: String,
        #[source]
        source: UserIdError,
    },
    #[error("msg: {user} broke the protocol")]
    Codec {
        user: String,
        #[source]
        source: CodecError,
    },
}

fn error_frame(req: Option<u64>, code: &str, message: impl Into<String>, fatal: bool) -> Frame {
    Frame::Error(ErrorFrame {
        req,
        code: code.to_owned(),
        message: message.into(),
        fatal,
    })
}

async fn write_frame(w: &mut (impl AsyncWriteExt + Unpin), frame: &Frame) -> std::io::Result<()> {
    w.write_all(&frame.encode()).await
}

async fn serve(hub: Arc<Hub>, mut stream: BoxStream, ctx: &Context) -> End {
    let user = match UserId::of_peer(ctx.identity(), hub.options.user_id).map(|u| u.to_string()) {
        Ok(u) => u,
        Err(e) => {
            let frame = error_frame(None, e.code(), e.to_string(), true);
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = write_frame(&mut stream, &frame).await;
                let _ = stream.shutdown().await;
            })
            .await;
            let err = SessionError::UserId {
                peer: ctx.peer.to_string(),
                source: e,
            };
            return End::Failed(Box::new(err));
        }
    };
    let session = Arc::new(Session::default());
    if hub.join(&user, session.clone()) {
        hub.store.opened(&user).await;
        hub.announce(&user, true, now_ms()).await;
    }
    info!(peer = %ctx.peer, user, "msg: session started");
    let end = run_session(&hub, &user, &session, stream, ctx).await;
    if hub.part(&user, &session) {
        hub.store.closed(&user).await;
        if !hub.store.online_elsewhere(&user).await {
            hub.announce(&user, false, now_ms()).await;
        }
    }
    info!(peer = %ctx.peer, user, end = %end, "msg: session ended");
    end
}

async fn run_session(
    hub: &Hub,
    user: &str,
    session: &Session,
    stream: BoxStream,
    ctx: &Context,
) -> End {
    let (mut rd, mut wr) = tokio::io::split(stream);
    // The answers for the writer (frames boxed: the queue holds them while the writer is
    // busy).
    let replies = Queue::<Box<Frame>>::new(64);
    let in_flight: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());
    let stop = CancellationToken::new();
    let reader_done = CancellationToken::new();
    // The welcome, encoded now: a frame kept for the writer would take its room (twice) in
    // the session future for the session's life.
    let mut welcome = Out { buf: Vec::new() };
    welcome.push(&Frame::Welcome(Welcome {
        version: codec::VERSION,
        user: user.to_owned(),
        max_message_size: hub.options.max_message_size,
        max_frame: hub.options.max_frame(),
    }));

    // Requests are answered in order. A SEND (or an ACK) is queued for the store's next
    // commit as it is read, and its answer waits in `pending` for that commit while the reader
    // goes on: a client may have up to MAX_PIPELINE of them in flight.
    let pending = Queue::<Box<Pending>>::new(MAX_PIPELINE);
    let reader = async {
        // However the reader ends, the answers task ends once its last answer is out.
        let _closing = Closing(&pending);
        let mut decoder = Decoder::new(hub.options.max_frame());
        // A small buffer while the client is quiet, a large one while it sends a lot (kept
        // until SHRINK_AFTER small reads in a row).
        let mut buf = vec![0u8; READ_SMALL];
        let (mut last, mut small) = (0, 0u32);
        // Made once, not at every read: each one registers with the token, and drops out.
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            if last == buf.len() && buf.len() < READ_LARGE {
                buf = vec![0u8; READ_LARGE];
            } else if buf.len() > READ_SMALL {
                small = if last < READ_SMALL / 2 { small + 1 } else { 0 };
                if small >= SHRINK_AFTER {
                    (buf, small) = (vec![0u8; READ_SMALL], 0);
                }
            }
            let n = tokio::select! {
                _ = &mut stopped => return None,
                r = rd.read(&mut buf) => match r {
                    Ok(0) if decoder.is_mid_frame() => return Some(End::Truncated),
                    Ok(0) => return Some(End::Closed),
                    Ok(n) => n,
                    Err(e) => return Some(End::from_io(e)),
                },
            };
            last = n;
            let mut data = &buf[..n];
            while !data.is_empty() {
                let (used, decoded) = match decoder.feed(data) {
                    Ok(step) => step,
                    Err(e) => {
                        warn!(peer = %ctx.peer, user, error = %e, "msg: closing a connection that broke the framing");
                        let _ = pending
                            .send(Box::new(Pending::Reply(Box::new(error_frame(
                                None,
                                e.code(),
                                e.to_string(),
                                true,
                            )))))
                            .await;
                        return Some(End::Failed(Box::new(SessionError::Codec {
                            user: user.to_owned(),
                            source: e,
                        }) as BoxError));
                    }
                };
                data = &data[used..];
                let next = match decoded {
                    None => continue,
                    Some(Decoded::Invalid(e)) => {
                        warn!(peer = %ctx.peer, user, error = %crate::error::chain(&e), "msg: skipped a frame");
                        Pending::Reply(Box::new(error_frame(
                            None,
                            e.code(),
                            crate::error::chain(&e).to_string(),
                            false,
                        )))
                    }
                    // Boxed: a request's future (a kilobyte) is not kept in every idle
                    // session's reader; the allocation is small against the request.
                    Some(Decoded::Frame(frame)) => match Box::pin(handle(hub, user, frame)).await {
                        Some(p) => p,
                        None => continue,
                    },
                };
                if pending.send(Box::new(next)).await.is_err() {
                    return None;
                }
            }
        }
    };

    // Answers in the order of the requests, each once its commit is done.
    let window = hub.options.window.max(1);
    let polls = hub.store.poll_every().is_some();
    // The user's name in receipts, shared by all of them.
    let by: Arc<str> = user.into();
    let answers = async {
        // When the writer is gone, the reader stops at its next request.
        let _closing = Closing(&pending);
        while let Some(p) = pending.recv().await {
            let reply = match *p {
                Pending::Reply(frame) => Some(*frame),
                Pending::Send(req, commit) => Some(match commit.await {
                    Ok(sent) => {
                        debug!(user, id = sent.message.id, "msg: accepted");
                        hub.wake(&sent.recipients, sent.message.id);
                        Frame::Accepted(Accepted {
                            req,
                            id: sent.message.id,
                            seq: sent.message.seq,
                            time: sent.message.time,
                        })
                    }
                    Err(e) => refused(req, e, user, "storing a message"),
                }),
                Pending::Ack(ids, commit) => match commit.await {
                    Ok(acked) => {
                        hub.receipts(&by, &acked, now_ms());
                        let was_full = {
                            let mut f = lock(&in_flight);
                            let was_full = f.len() >= window;
                            for id in &ids {
                                f.remove(id);
                            }
                            was_full
                        };
                        // Room in a full window: the writer looks at the queue again. Below
                        // it, every queued message was sent, and there is nothing to do (on
                        // the embedded store; a backend that polls, NATS, looks after every
                        // ACK: its consumer hands out the next ones once these are acked).
                        if was_full || polls {
                            session.wake.notify_one();
                        }
                        None
                    }
                    Err(e) => Some(refused(0, e, user, "an acknowledgement")),
                },
            };
            if let Some(reply) = reply {
                if replies.send(Box::new(reply)).await.is_err() {
                    break;
                }
            }
        }
        // The answers end after the reader (or after the writer): the writer writes what is
        // left and ends.
        reader_done.cancel();
    };

    let writer = async {
        let end = deliver(
            hub,
            user,
            session,
            &in_flight,
            &mut wr,
            (&replies, &reader_done),
            welcome,
            ctx,
        )
        .await;
        stop.cancel();
        replies.close();
        end
    };

    // One join of the three (an async block around a join of two would hold the two futures
    // twice: once captured, once joined).
    let (read_end, (), write_end) = tokio::join!(reader, answers, writer);
    let mut stream = rd.unsplit(wr);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    match (read_end, write_end) {
        (Some(End::Failed(e)), _) => End::Failed(e),
        (_, Some(end)) => end,
        (Some(end), None) => end,
        (None, None) => End::Closed,
    }
}

/// A bounded queue between two parts of one session (the reader, the answers, the writer).
/// Not a tokio `mpsc` channel: that allocates its cache-padded state and a first block of 32
/// slots up front, about 800 bytes per channel in every idle session; this one holds nothing
/// while it is empty (its storage is let go once drained).
struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    room: Semaphore,
    ready: Notify,
    closed: AtomicBool,
}

impl<T> Queue<T> {
    fn new(capacity: usize) -> Self {
        Queue {
            items: Mutex::new(VecDeque::new()),
            room: Semaphore::new(capacity),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Waits for room; the item back once the queue is closed.
    async fn send(&self, item: T) -> Result<(), T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(item);
        }
        match self.room.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(item),
        }
        lock(&self.items).push_back(item);
        self.ready.notify_one();
        Ok(())
    }

    fn try_recv(&self) -> Option<T> {
        let mut items = lock(&self.items);
        let item = items.pop_front()?;
        if items.is_empty() && items.capacity() > 4 {
            *items = VecDeque::new();
        }
        drop(items);
        self.room.add_permits(1);
        Some(item)
    }

    /// The next item; `None` once the queue is closed and empty. Cancel-safe.
    async fn recv(&self) -> Option<T> {
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            if self.closed.load(Ordering::Acquire) {
                return self.try_recv();
            }
            self.ready.notified().await;
        }
    }

    /// No more sends; what is queued can still be received.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.close();
        self.ready.notify_one();
    }
}

/// Closes a queue when dropped (when the part of the session that feeds it, or the one that
/// reads it, ends, whichever way).
struct Closing<'a, T>(&'a Queue<T>);

impl<T> Drop for Closing<'_, T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Frames waiting to be written, encoded into one buffer: a turn of the writer is one write
/// (one TLS record or a few, one system call) whatever the number of frames.
struct Out {
    buf: Vec<u8>,
}

impl Out {
    /// Past this, the buffer is written before more is added.
    const HIGH: usize = 64 * 1024;
    /// A buffer that grew past this is let go once written (idle sessions hold none).
    const KEEP: usize = 2 * 1024;

    fn push(&mut self, frame: &Frame) {
        frame.encode_into(&mut self.buf);
    }

    async fn write(&mut self, wr: &mut (impl AsyncWriteExt + Unpin)) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            wr.write_all(&self.buf).await?;
            if self.buf.capacity() > Self::KEEP {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        }
        wr.flush().await
    }

    /// A frame whose payload is ready (a stored message).
    fn push_raw(&mut self, kind: u8, payload: &[u8]) {
        codec::encode_raw_into(kind, payload, &mut self.buf);
    }

    async fn push_and_write_if_full(
        &mut self,
        frame: &Frame,
        wr: &mut (impl AsyncWriteExt + Unpin),
    ) -> std::io::Result<()> {
        self.push(frame);
        self.write_if_full(wr).await
    }

    async fn write_if_full(
        &mut self,
        wr: &mut (impl AsyncWriteExt + Unpin),
    ) -> std::io::Result<()> {
        if self.buf.len() >= Self::HIGH {
            wr.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    hub: &Hub,
    user: &str,
    session: &Session,
    in_flight: &Mutex<BTreeSet<u64>>,
    wr: &mut (impl AsyncWriteExt + Unpin),
    (rx, reader_done): (&Queue<Box<Frame>>, &CancellationToken),
    mut out: Out,
    ctx: &Context,
) -> Option<End> {
    let io = |e: std::io::Error| Some(End::from_io(e));
    let mut cursor = 0u64;
    let window = hub.options.window.max(1);
    // Whether the queue may hold something new: at the start, and at each wake-up (a message
    // for the user was committed, or an acknowledgement made room in the window).
    let mut look = true;
    // A wake-up whose look found nothing, on a backend that polls (NATS): the message may not
    // be visible to the user's consumer yet, so look once more shortly instead of waiting for
    // the next poll.
    let (mut woken, mut soon) = (false, false);
    // The last look filled the window (or failed): there may be more than it took, and an
    // ACK that makes room is a reason to look again.
    let mut full = false;
    // A backend that polls (NATS) looks at every wake-up.
    let polls = hub.store.poll_every().is_some();
    // Made once, not at every turn: polled, each registers with its signal (the server's
    // shutdown is shared by every connection) and drops out when dropped.
    let stopping = ctx.shutdown.draining();
    tokio::pin!(stopping);
    let reader_gone = reader_done.cancelled();
    tokio::pin!(reader_gone);
    let mut first = true;
    loop {
        // After a wake-up, the session's other parts run once before this one writes: a
        // commit answers the session's sends as it hands over the messages for it, and the
        // answers come in the same write as the deliveries (a quarter fewer writes in the
        // rig's direct case, each a system call through the peer's TCP receive).
        if !std::mem::take(&mut first) {
            tokio::task::yield_now().await;
        }
        // Queued messages, up to the window.
        let room = window.saturating_sub(lock(in_flight).len());
        if room > 0 && std::mem::take(&mut look) {
            let looked = match hub
                .pushes
                .then(|| session.take_pushed(cursor, room))
                .flatten()
            {
                Some(pushed) => Ok(pushed),
                None => hub.store.pending(user, cursor, room).await.map(|messages| {
                    let full = messages.len() >= room;
                    if full {
                        session.incomplete();
                    }
                    (messages, full)
                }),
            };
            match looked {
                Ok((messages, more)) => {
                    soon = woken && messages.is_empty() && polls;
                    full = more;
                    // Room for all of them at once, not by doubling as they come.
                    out.buf.reserve(
                        messages
                            .iter()
                            .map(|m| codec::HEADER_LEN + m.body.len())
                            .sum::<usize>()
                            .min(Out::HIGH),
                    );
                    for m in messages {
                        cursor = cursor.max(m.id);
                        lock(in_flight).insert(m.id);
                        out.push_raw(codec::kind::DELIVER, &m.body);
                        if let Err(e) = out.write_if_full(wr).await {
                            return io(e);
                        }
                    }
                }
                Err(e) => {
                    full = true;
                    session.incomplete();
                    warn!(user, error = %crate::error::chain(&e), "msg: cannot read the queue");
                }
            }
        }
        let (presence, receipts) = {
            let mut ev = lock(&session.events);
            (
                std::mem::take(&mut ev.presence),
                std::mem::take(&mut ev.receipts),
            )
        };
        for p in presence.into_values() {
            if let Err(e) = out.push_and_write_if_full(&Frame::Presence(p), wr).await {
                return io(e);
            }
        }
        for r in receipts {
            if let Err(e) = out.push_and_write_if_full(&Frame::Receipt(r), wr).await {
                return io(e);
            }
        }
        // Everything the reader had to say, in the same write.
        let mut fatal = false;
        while let Some(more) = rx.try_recv() {
            fatal |= matches!(&*more, Frame::Error(e) if e.fatal);
            if let Err(e) = out.push_and_write_if_full(&more, wr).await {
                return io(e);
            }
        }
        if let Err(e) = out.write(wr).await {
            return io(e);
        }
        if fatal {
            return None;
        }
        tokio::select! {
            // Draining, or forced (which completes a draining wait too).
            () = &mut stopping => {
                if ctx.shutdown.is_forced() {
                    return Some(End::Shutdown);
                }
                let bye = Frame::Goodbye(Goodbye { reason: "server shutting down".into() });
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    out.push(&bye);
                    let _ = out.write(wr).await;
                }).await;
                return Some(End::Drained);
            }
            frame = rx.recv() => match frame {
                Some(frame) => {
                    let fatal = matches!(&*frame, Frame::Error(e) if e.fatal);
                    out.push(&frame);
                    if fatal {
                        let _ = out.write(wr).await;
                        return None;
                    }
                }
                None => {
                    let _ = out.write(wr).await;
                    return None;
                }
            },
            () = &mut reader_gone => {
                while let Some(more) = rx.try_recv() {
                    out.push(&more);
                }
                let _ = out.write(wr).await;
                return None;
            }
            _ = session.wake.notified() => {
                look |= session.queued.load(Ordering::Acquire) > cursor || full || polls;
                woken = true;
            }
            _ = poll(if soon { Some(RECHECK) } else { hub.store.poll_every() }) => {
                (look, woken, soon) = (true, false, false);
            }
        }
    }
}

/// How soon a session looks at its queue again after a wake-up that found it empty.
const RECHECK: Duration = Duration::from_millis(300);

/// Waits `every`, or forever. The timer is boxed: only a backend that polls (NATS) has one,
/// and inline it would take its room in every session's future.
async fn poll(every: Option<Duration>) {
    match every {
        Some(every) => Box::pin(tokio::time::sleep(every)).await,
        None => std::future::pending().await,
    }
}

fn refused(req: u64, e: StoreError, user: &str, what: &str) -> Frame {
    match e {
        StoreError::Refused(r) => error_frame(Some(req), r.code(), r.to_string(), false),
        e @ StoreError::Unreachable { .. } => {
            let text = e.to_string();
            warn!(user, error = %text, "msg: {what} refused");
            error_frame(Some(req), "nats_unavailable", text, false)
        }
        other => {
            let text = crate::error::chain(&other).to_string();
            warn!(user, error = %text, "msg: {what} failed");
            error_frame(Some(req), "store_failed", text, false)
        }
    }
}

/// What the answers task does for a request, in its turn.
enum Pending {
    /// Send this frame.
    Reply(Box<Frame>),
    /// A message queued for commit: `ACCEPTED` (or the refusal) once it is committed.
    Send(u64, BoxFuture<'static, Result<Sent, StoreError>>),
    /// An acknowledgement queued for commit: receipts to the senders, and room in the window.
    Ack(Vec<u64>, BoxFuture<'static, Result<Vec<Acked>, StoreError>>),
}

async fn handle(hub: &Hub, user: &str, frame: Frame) -> Option<Pending> {
    let reply = |f: Frame| Some(Pending::Reply(Box::new(f)));
    match frame {
        Frame::Send(send) => Some(send_message(hub, user, send).await),
        Frame::Ack(ack) => match hub.store.ack_later(user, ack.ids.clone()).await {
            Ok(commit) => Some(Pending::Ack(ack.ids, Box::pin(commit))),
            Err(e) => reply(refused(0, e, user, "an acknowledgement")),
        },
        Frame::Create(r) | Frame::Join(r) | Frame::Leave(r) | Frame::Members(r)
            if check_name(&r.room).is_err() =>
        {
            let why = check_name(&r.room).err().unwrap_or("");
            reply(error_frame(
                Some(r.req),
                "invalid_room",
                format!("invalid room name {:?}: {why}", r.room),
                false,
            ))
        }
        Frame::Create(r) => reply(
            match Box::pin(hub.store.create_room(user, &r.room, now_ms())).await {
                Ok(()) => ok(r.req),
                Err(e) => refused(r.req, e, user, "creating a room"),
            },
        ),
        Frame::Join(r) => reply(match Box::pin(hub.store.join(user, &r.room)).await {
            Ok(()) => ok(r.req),
            Err(e) => refused(r.req, e, user, "joining a room"),
        }),
        Frame::Leave(r) => reply(match Box::pin(hub.store.leave(user, &r.room)).await {
            Ok(()) => ok(r.req),
            Err(e) => refused(r.req, e, user, "leaving a room"),
        }),
        // Boxed: the rare requests' futures are not kept in every session's reader.
        Frame::Members(r) => reply(Box::pin(members(hub, user, r.req, r.room)).await),
        Frame::History(h) => reply(Box::pin(history(hub, user, h)).await),
        other => reply(error_frame(
            None,
            "unexpected_frame",
            format!(
                "{} is a server frame; a client does not send it",
                other.name()
            ),
            false,
        )),
    }
}

fn ok(req: u64) -> Frame {
    Frame::Result(Outcome {
        req,
        ..Outcome::default()
    })
}

async fn send_message(hub: &Hub, user: &str, send: codec::Send) -> Pending {
    Pending::Reply(Box::new(match check_send(hub, user, send).await {
        Ok(pending) => return pending,
        Err(frame) => frame,
    }))
}

/// A SEND checked and queued for commit, or the frame that refuses it.
async fn check_send(hub: &Hub, user: &str, send: codec::Send) -> Result<Pending, Frame> {
    let req = send.req;
    let max = hub.options.max_message_size as usize;
    if send.text.len() > max {
        return Err(error_frame(
            Some(req),
            "message_too_large",
            format!(
                "the text is {} bytes; this server takes at most {max} (--max-message-size)",
                send.text.len()
            ),
            false,
        ));
    }
    let target = match (send.to, send.room) {
        (Some(to), None) => match check_name(&to) {
            Ok(()) => Target::User(to),
            Err(why) => {
                return Err(error_frame(
                    Some(req),
                    "invalid_user_id",
                    format!("invalid user id {to:?}: {why}"),
                    false,
                ))
            }
        },
        (None, Some(room)) => match check_name(&room) {
            Ok(()) => Target::Room(room),
            Err(why) => {
                return Err(error_frame(
                    Some(req),
                    "invalid_room",
                    format!("invalid room name {room:?}: {why}"),
                    false,
                ))
            }
        },
        _ => {
            return Err(error_frame(
                Some(req),
                "bad_request",
                "SEND needs exactly one of `to` and `room`",
                false,
            ))
        }
    };
    if let Err(wait) = hub.rate(user) {
        return Err(error_frame(
            Some(req),
            "rate_limited",
            format!(
                "you send faster than {} messages a second (burst {}): wait {} ms",
                hub.options.rate_per_sec,
                hub.options.burst,
                wait.as_millis().max(1)
            ),
            false,
        ));
    }
    match hub
        .store
        .send_later(user, target, send.text, now_ms())
        .await
    {
        Ok(commit) => Ok(Pending::Send(req, Box::pin(commit))),
        Err(e) => Err(refused(req, e, user, "storing a message")),
    }
}

async fn members(hub: &Hub, user: &str, req: u64, room: String) -> Frame {
    let list = match hub.store.members(&room).await {
        Ok(list) => list,
        Err(e) => return refused(req, e, user, "listing members"),
    };
    if !list.iter().any(|(m, _)| m == user) {
        return refused(
            req,
            Refusal::NotAMember(room).into(),
            user,
            "listing members",
        );
    }
    let now = now_ms();
    let mut members = Vec::with_capacity(list.len());
    for (m, seen) in list {
        let online = hub.is_online(&m) || hub.store.online_elsewhere(&m).await;
        members.push(Presence {
            last_seen: if online { now } else { seen },
            online,
            user: m,
        });
    }
    Frame::Result(Outcome {
        req,
        members: Some(members),
        ..Outcome::default()
    })
}

async fn history(hub: &Hub, user: &str, h: codec::History) -> Frame {
    let req = h.req;
    let target = match (h.with, h.room) {
        (Some(with), None) => Target::User(with),
        (None, Some(room)) => Target::Room(room),
        _ => {
            return error_frame(
                Some(req),
                "bad_request",
                "HISTORY needs exactly one of `with` and `room`",
                false,
            )
        }
    };
    let limit = h.limit.clamp(1, MAX_PAGE) as usize;
    let result = hub.store.history(user, target, h.before, limit).await;
    match result {
        Ok((messages, more)) => Frame::Result(Outcome {
            req,
            messages: Some(messages),
            more: Some(more),
            ..Outcome::default()
        }),
        Err(e) => refused(req, e, user, "reading history"),
    }
}

/// Messages of a page, for callers that print them.
pub type Page = Vec<Message>;

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle user is mostly its session future and what it holds: keep it small (the
    /// NATS backend's futures and the polling timer are boxed, the welcome is encoded before
    /// the writer starts).
    #[test]
    fn session_future_is_small() {
        fn size<F>(_: &impl Fn(Arc<Hub>, BoxStream, &'static Context) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let session = size(&|h, s, c| serve(h, s, c));
        assert!(session < 3072, "session future: {session} bytes");
    }

    /// The service's future is the session's and little more: opening the hub (the store,
    /// or the NATS cluster) is boxed, not kept in every session's allocation.
    #[test]
    fn service_future_is_small() {
        fn size<F>(_: &impl Fn(Arc<Hub>, BoxStream, &'static Context) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        fn size_of_service<F>(
            _: &impl Fn(&'static MsgService, BoxStream, &'static Context) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        let session = size(&|h, s, c| serve(h, s, c));
        let service = size_of_service(&|m, s, c| m.session(s, c));
        assert!(
            service < session + 256,
            "service future: {service} bytes, session future: {session}"
        );
    }

    #[test]
    fn names() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\u{0}b").is_err());
        assert!(check_name(&"x".repeat(257)).is_err());
        assert_eq!(
            UserId::of_peer(None, UserIdSource::Email)
                .unwrap_err()
                .code(),
            "no_certificate"
        );
    }
}
