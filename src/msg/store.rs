//! The message store: an embedded, crash-safe [redb] 4 database in one file, written by one
//! thread with group commit.
//!
//! Every change (a message, an acknowledgement, a room change) is a job sent to the writer
//! thread. The writer takes the jobs that are waiting (up to [`MAX_BATCH`]), applies them in
//! one write transaction, commits it once (with `--sync always`, one fsync) and only then
//! answers every job of the batch: an `ACCEPTED` frame is sent only for a message that is on
//! disk. A job that is refused (a full queue, an unknown room) changes nothing and is
//! answered with the reason; a storage error fails the whole batch, and nothing of it is
//! answered as done. What many jobs of a batch change (the message counter, a member's cursor)
//! is kept in memory during the batch and written once, before the commit: the same
//! transaction, so a crash keeps all of the batch or none of it. A conversation's latest
//! sequence and a queue's length are not stored apart from what they count (the last history
//! entry, the queue's entries): the writer remembers them ([`memo`]), and reads them from
//! those when it does not.
//!
//! What is kept: each message once (by id, as JSON), its place in its conversation
//! (conversation, sequence → id; for a direct message written in bulk later, see
//! [`unwritten`]), rooms and their members, who has talked to whom (for
//! presence), and when each user was last seen. What a recipient still has to receive is kept
//! two ways: a direct message has one queue entry (user, id) until the recipient acknowledges
//! it; a room message has none, each member has a [`cursor::Cursor`] per room instead (the
//! room sequence up to which they are done, and the few past it done out of order), and what
//! they have to receive is the room's messages past it. So a message to a room of 100 is one
//! message row and one history row, and its 99 `ACK`s move 99 cursors, each written once per
//! group commit, however many messages it acknowledged. Messages stay for history after every
//! recipient has acknowledged them.
//!
//! The format is number [`FORMAT`] (`meta` `format`). An older store is brought to it when it
//! is opened. Formats 1 to 3 are redb 2 files, which redb 4 does not read: [`legacy`] brings
//! one to format 3 in one transaction, then copies it into a redb 4 file and keeps the old
//! file beside it. Format 1 (tlsnet before the cursors: every room message queued per member)
//! to 2: each member gets a cursor at the room's latest message, and the room messages already
//! queued stay queued, delivered and acknowledged as they were. Format 2 to 3: the tables of
//! sequences and of queue lengths go (they were written once per conversation and per
//! recipient in every commit, and say nothing the history and the queue do not). Format 3 to
//! 4: the same tables in a redb 4 file (a third less of the writer's CPU per message, measured
//! in bench/store-compare). Format 4 to 5: the same tables, and `meta` `history_through`
//! (see [`unwritten`]). A store of a later format is refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use tracing::{debug, error, info};

use super::codec::Message;

mod cursor;
mod memo;
mod unwritten;
use cursor::Cursor;
use memo::{Bodies, Map, Memo, Origin};
use unwritten::Unwritten;

/// The most jobs committed together.
pub const MAX_BATCH: usize = 1024;

/// The tables, for the redb crate `$redb` (this one, and redb 2 for the stores of before
/// format 4: [`legacy`]).
macro_rules! tables {
    ($redb:ident) => {
        pub(crate) const META: $redb::TableDefinition<&str, u64> =
            $redb::TableDefinition::new("meta");
        pub(crate) const MESSAGES: $redb::TableDefinition<u64, &[u8]> =
            $redb::TableDefinition::new("messages");
        /// (conversation's number, sequence) → message id; see `key`.
        pub(crate) const HISTORY: $redb::TableDefinition<u128, u64> =
            $redb::TableDefinition::new("history_by_number");
        /// (user's number, message id) → (); see `key`.
        pub(crate) const QUEUE: $redb::TableDefinition<u128, ()> =
            $redb::TableDefinition::new("queue_by_number");
        /// User → their number, given the first time a message is queued for them.
        pub(crate) const USERS: $redb::TableDefinition<&str, u64> =
            $redb::TableDefinition::new("user_numbers");
        /// Conversation key (`conversation`) → its number, given at its first message.
        pub(crate) const CONVERSATIONS: $redb::TableDefinition<&[u8], u64> =
            $redb::TableDefinition::new("conversation_numbers");
        pub(crate) const ROOMS: $redb::TableDefinition<&str, u64> =
            $redb::TableDefinition::new("rooms");
        pub(crate) const MEMBERS: $redb::TableDefinition<(&str, &str), ()> =
            $redb::TableDefinition::new("members");
        pub(crate) const MEMBER_OF: $redb::TableDefinition<(&str, &str), ()> =
            $redb::TableDefinition::new("member_of");
        pub(crate) const CONTACTS: $redb::TableDefinition<(&str, &str), ()> =
            $redb::TableDefinition::new("contacts");
        pub(crate) const SEEN: $redb::TableDefinition<&str, u64> =
            $redb::TableDefinition::new("seen");
        /// (user, room) → the member's `Cursor`, encoded.
        pub(crate) const CURSORS: $redb::TableDefinition<(&str, &str), &[u8]> =
            $redb::TableDefinition::new("room_cursors");
    };
}
tables!(redb);

mod legacy;

/// The store's format: 5 since the history of direct conversations is written in bulk, with
/// `meta` `history_through` ([`unwritten`]; the tables are those of format 4). 4: the file is
/// a redb 4 one (the tables are those of format 3); 3: the queue and the history keyed by
/// numbers, sequences and queue lengths not stored apart; 2: room members have cursors; 1, or
/// no `format` in `meta`: every room message queued per member. Formats 1 to 3 are redb 2
/// files ([`legacy`]).
pub const FORMAT: u64 = 5;

/// `meta` keys: the next numbers to give a user and a conversation.
const NEXT_USER: &str = "next_user_number";
const NEXT_CONVERSATION: &str = "next_conversation_number";
/// `meta` key: every direct message up to this id has its history entry in the table (those
/// past it are made again from the messages on open; see [`unwritten`]).
const HISTORY_THROUGH: &str = "history_through";

/// The key of a [`QUEUE`] or [`HISTORY`] entry: a user's or a conversation's number in the
/// high 64 bits, a message id or a sequence in the low 64. Fixed-size keys: a B-tree leaf
/// changed in the middle moves no offsets, and a comparison is one of two integers.
fn key(number: u64, n: u64) -> u128 {
    (u128::from(number) << 64) | u128::from(n)
}

/// The id or sequence of a [`key`].
fn low(key: u128) -> u64 {
    key as u64
}

/// Every key of `number` from `n` on.
fn keys_from(number: u64, n: u64) -> std::ops::RangeInclusive<u128> {
    key(number, n)..=key(number, u64::MAX)
}

/// When a committed batch is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Every batch is fsynced before its acknowledgements: nothing acknowledged is lost on a
    /// crash, a kill -9 or a power loss.
    #[default]
    Always,
    /// Accepted for the configurations written for it, and the same as [`SyncMode::Always`]
    /// since store format 4: it meant a commit made durable with redb 2's eventual durability
    /// (which on Linux was an `fdatasync` as well) and fully synced once a second, and redb 4
    /// has no such level (its only commit without an fsync is not there after a kill -9).
    Batch,
}

/// The store's limits.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// When commits reach the disk.
    pub sync: SyncMode,
    /// Messages waiting for one recipient; more are refused (`queue_full`).
    pub max_queue: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncMode::Always,
            max_queue: 10_000,
        }
    }
}

/// A store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The request was refused; nothing changed.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// The database failed.
    #[error("message store: cannot {action}")]
    Storage {
        /// What was being done.
        action: &'static str,
        /// redb's error.
        #[source]
        source: Arc<redb::Error>,
    },
    /// The writer thread is gone (it failed before, or the store is closing).
    #[error("message store is closed")]
    Closed,
    /// The NATS cluster (`--store nats://...`) cannot be reached or did not answer in time:
    /// nothing was done (a message was not stored; send it again).
    #[error("the NATS cluster ({servers}) cannot be reached: {action} was not done (try again; the node reconnects by itself)")]
    Unreachable {
        /// The servers of `--store`.
        servers: String,
        /// What was being done.
        action: &'static str,
    },
    /// The NATS cluster answered with an error.
    #[error("NATS cluster: cannot {action}")]
    Cluster {
        /// What was being done.
        action: &'static str,
        /// async-nats's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The room does not exist.
    #[error("no room named '{0}'")]
    NoSuchRoom(String),
    /// The room exists already.
    #[error("room '{0}' exists already")]
    RoomExists(String),
    /// The user is not a member of the room.
    #[error("you are not a member of room '{0}' (join it first)")]
    NotAMember(String),
    /// A recipient's queue is full.
    #[error("{user}'s queue is full ({limit} messages wait for them): try again once they have read some")]
    QueueFull {
        /// The recipient.
        user: String,
        /// The limit.
        limit: u64,
    },
}

impl Refusal {
    /// A stable label, the `code` of the `ERROR` frame.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoSuchRoom(_) => "no_such_room",
            Refusal::RoomExists(_) => "room_exists",
            Refusal::NotAMember(_) => "not_a_member",
            Refusal::QueueFull { .. } => "queue_full",
        }
    }
}

fn storage(action: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
    move |e| StoreError::Storage {
        action,
        source: Arc::new(e),
    }
}

fn db_err<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| storage(action)(e.into())
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A direct message to a user.
    User(String),
    /// A room.
    Room(String),
}

/// The key of a conversation: `d\0A\0B` (A < B) for two users, `r\0ROOM` for a room. User
/// and room names hold no control characters, so no key is ambiguous.
pub fn conversation(from: &str, target: &Target) -> Vec<u8> {
    match target {
        Target::User(to) => {
            let (a, b) = if from <= to.as_str() {
                (from, to.as_str())
            } else {
                (to.as_str(), from)
            };
            [b"d\0", a.as_bytes(), b"\0", b.as_bytes()].concat()
        }
        Target::Room(room) => room_key(room),
    }
}

fn room_of(target: &Target) -> Option<&str> {
    match target {
        Target::Room(room) => Some(room),
        Target::User(_) => None,
    }
}

/// The conversation key of a room, `r\0ROOM`.
fn room_key(room: &str) -> Vec<u8> {
    [b"r\0", room.as_bytes()].concat()
}

/// A stored message and who it was queued for.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The message as committed.
    pub message: Message,
    /// The users it was queued for (not the sender).
    pub recipients: Recipients,
}

/// The users a message was queued for: one (or none, for a message to oneself), or a room's
/// members but the sender, sharing the room's list (not a copy of it per message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipients {
    users: Arc<[String]>,
    /// The sender's place in `users`, left out.
    skip: Option<usize>,
}

impl Recipients {
    /// `users` but the one at `skip`.
    pub fn all_but(users: Arc<[String]>, skip: Option<usize>) -> Recipients {
        Recipients { users, skip }
    }

    /// The users, in the room's order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let skip = self.skip;
        self.users
            .iter()
            .enumerate()
            .filter(move |(i, _)| Some(*i) != skip)
            .map(|(_, u)| u.as_str())
    }

    /// The users, copied.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl From<Vec<String>> for Recipients {
    fn from(users: Vec<String>) -> Recipients {
        Recipients::all_but(users.into(), None)
    }
}

/// A queued message as stored: its id and its `DELIVER` payload (the JSON of its
/// [`Message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The message id.
    pub id: u64,
    /// The payload of its `DELIVER` frame (shared: a room message's recipients share one).
    pub body: Arc<[u8]>,
}

/// A removed queue entry: message `id`, sent by `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The message id.
    pub id: u64,
    /// Its sender, who gets a receipt.
    pub from: Arc<str>,
}

enum Op {
    Send {
        from: String,
        target: Target,
        text: String,
        time: u64,
    },
    Ack {
        user: String,
        ids: Vec<u64>,
    },
    Create {
        user: String,
        room: String,
        time: u64,
    },
    Join {
        user: String,
        room: String,
    },
    Leave {
        user: String,
        room: String,
    },
    Seen {
        user: String,
        time: u64,
    },
}

enum Done {
    Sent(Sent),
    Acked(Vec<Acked>),
    Ok,
}

struct Job {
    op: Op,
    reply: tokio::sync::oneshot::Sender<Result<Done, StoreError>>,
}

/// The store: reads from any thread, writes through the writer thread. Clones share it; the
/// last one to go stops the writer (after its last batch) and closes the database.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    inner: Arc<Inner>,
    /// The latest committed messages, for the sessions' reads of their queues.
    bodies: Arc<std::sync::Mutex<Bodies>>,
    /// Where the writer hands each committed message (see [`Store::on_commit`]).
    on_commit: Arc<OnceLock<Box<OnCommit>>>,
    /// The history entries of direct messages not yet in the table.
    unwritten: Arc<std::sync::Mutex<Unwritten>>,
    path: PathBuf,
}

/// What the writer calls for each committed message, with its recipients (see
/// [`Store::on_commit`]).
pub type OnCommit = dyn Fn(&Queued, &Recipients) + Send + Sync;

struct Inner {
    jobs: Option<mpsc::SyncSender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` (`msg.redb`; the directory is made with mode
    /// 0700) and starts its writer thread.
    pub fn open(dir: &Path, options: StoreOptions) -> crate::Result<Store> {
        Store::open_with(dir, options, Memo::default())
    }

    fn open_with(dir: &Path, options: StoreOptions, memo: Memo) -> crate::Result<Store> {
        create_private_dir(dir)?;
        let path = dir.join("msg.redb");
        let unusable =
            |e: OpenError| crate::Error::unusable(format!("message store {}", path.display()), e);
        let db = match Database::create(&path) {
            Err(redb::DatabaseError::UpgradeRequired(_)) => {
                legacy::upgrade(&path).map_err(unusable)?;
                Database::create(&path)
            }
            opened => opened,
        }
        .map_err(|e| unusable(OpenError::Tables(Box::new(e.into()))))?;
        let db = Arc::new(db);
        // Make every table, so that readers never meet a missing one; an older store is
        // brought to this format.
        let remade = init_tables(&db).map_err(unusable)?;
        if remade > 0 {
            info!(
                messages = remade,
                store = %path.display(),
                "message store: the history entries of the last direct messages before the stop were made again from the messages"
            );
        }
        let (jobs, queue) = mpsc::sync_channel::<Job>(4 * MAX_BATCH);
        let bodies = Arc::new(std::sync::Mutex::new(Bodies::default()));
        let on_commit = Arc::new(OnceLock::new());
        let unwritten = Arc::new(std::sync::Mutex::new(Unwritten::default()));
        let writer = Writer {
            db: db.clone(),
            options,
            memo,
            bodies: bodies.clone(),
            on_commit: on_commit.clone(),
            unwritten: unwritten.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("msg-store".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| crate::Error::file(dir, "start the writer thread for", e))?;
        let inner = Arc::new(Inner {
            jobs: Some(jobs),
            writer: Some(writer),
        });
        Ok(Store {
            db,
            inner,
            bodies,
            on_commit,
            unwritten,
            path,
        })
    }

    /// Has the writer call `f` for every message it commits from now on, with the users it
    /// was queued for, in id order, once it is durable and before any job of its batch is
    /// answered. A server hands them to its recipients' sessions with it, which then need no
    /// read of the database to deliver them. Only the first call counts (false for the
    /// others). `f` runs on the writer thread: it must be quick and must not wait for the
    /// store.
    pub fn on_commit(&self, f: impl Fn(&Queued, &Recipients) + Send + Sync + 'static) -> bool {
        self.on_commit.set(Box::new(f)).is_ok()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn done(&self, op: Op) -> Result<(), StoreError> {
        self.submit(op).await.map(|_| ())
    }

    async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        self.enqueue(op)
            .await?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Puts `op` in the writer's queue (in the order of the calls) and returns the receiver of
    /// its result. Only a full queue waits, and then off the runtime's workers.
    async fn enqueue(
        &self,
        op: Op,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Done, StoreError>>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let jobs = self.inner.jobs.as_ref().ok_or(StoreError::Closed)?;
        match jobs.try_send(Job { op, reply }) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => {
                let jobs = jobs.clone();
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .map_err(|_| StoreError::Closed)?
                    .map_err(|_| StoreError::Closed)?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        Ok(answer)
    }

    /// Queues a message for the next commit and returns, once it is queued (so that a
    /// session's messages keep their order), the future of its commit: [`Store::send`] in two
    /// steps, for a session that has several messages in flight.
    pub async fn send_later(
        &self,
        from: &str,
        target: Target,
        text: String,
        time: u64,
    ) -> Result<
        impl std::future::Future<Output = Result<Sent, StoreError>> + Send + 'static,
        StoreError,
    > {
        let answer = self
            .enqueue(Op::Send {
                from: from.to_owned(),
                target,
                text,
                time,
            })
            .await?;
        Ok(async move {
            match answer.await.map_err(|_| StoreError::Closed)?? {
                Done::Sent(sent) => Ok(sent),
                _ => Err(StoreError::Closed),
            }
        })
    }

    /// [`Store::ack`] in two steps, like [`Store::send_later`].
    pub async fn ack_later(
        &self,
        user: &str,
        ids: Vec<u64>,
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<Acked>, StoreError>> + Send + 'static,
        StoreError,
    > {
        let answer = self
            .enqueue(Op::Ack {
                user: user.to_owned(),
                ids,
            })
            .await?;
        Ok(async move {
            match answer.await.map_err(|_| StoreError::Closed)?? {
                Done::Acked(acked) => Ok(acked),
                _ => Err(StoreError::Closed),
            }
        })
    }

    /// Stores a message and queues it for its recipients; returns it once it is committed.
    pub async fn send(
        &self,
        from: &str,
        target: Target,
        text: String,
        time: u64,
    ) -> Result<Sent, StoreError> {
        match self
            .submit(Op::Send {
                from: from.to_owned(),
                target,
                text,
                time,
            })
            .await?
        {
            Done::Sent(sent) => Ok(sent),
            _ => Err(StoreError::Closed),
        }
    }

    /// Removes messages from `user`'s queue; returns those that were there.
    pub async fn ack(&self, user: &str, ids: Vec<u64>) -> Result<Vec<Acked>, StoreError> {
        match self
            .submit(Op::Ack {
                user: user.to_owned(),
                ids,
            })
            .await?
        {
            Done::Acked(acked) => Ok(acked),
            _ => Err(StoreError::Closed),
        }
    }

    /// Creates a room with `user` as its first member.
    pub async fn create_room(&self, user: &str, room: &str, time: u64) -> Result<(), StoreError> {
        self.done(Op::Create {
            user: user.to_owned(),
            room: room.to_owned(),
            time,
        })
        .await
    }

    /// Adds `user` to a room (nothing changes when they are in it).
    pub async fn join(&self, user: &str, room: &str) -> Result<(), StoreError> {
        self.done(Op::Join {
            user: user.to_owned(),
            room: room.to_owned(),
        })
        .await
    }

    /// Removes `user` from a room.
    pub async fn leave(&self, user: &str, room: &str) -> Result<(), StoreError> {
        self.done(Op::Leave {
            user: user.to_owned(),
            room: room.to_owned(),
        })
        .await
    }

    /// Records when `user` was last seen.
    pub async fn seen(&self, user: &str, time: u64) -> Result<(), StoreError> {
        self.done(Op::Seen {
            user: user.to_owned(),
            time,
        })
        .await
    }

    /// Up to `limit` queued messages for `user` with ids over `after`, in id order (which is
    /// each conversation's order).
    pub fn pending(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let mut out = Vec::new();
        for q in self.pending_raw(user, after, limit)? {
            if let Some(m) = parse(q.id, &q.body) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// [`Store::pending`] as stored: each message's `DELIVER` payload, not decoded (a session
    /// writes it as it is).
    pub fn pending_raw(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("read"))?;
        let mut out = Vec::new();
        let Some(start) = after.checked_add(1) else {
            return Ok(out);
        };
        let mut ids = Vec::new();
        let users = tx.open_table(USERS).map_err(db_err("read the queue"))?;
        if let Some(number) = user_number(&users, user)? {
            let queue = tx.open_table(QUEUE).map_err(db_err("read the queue"))?;
            for entry in queue
                .range(keys_from(number, start))
                .map_err(db_err("read the queue"))?
            {
                let (k, _) = entry.map_err(db_err("read the queue"))?;
                ids.push(low(k.value()));
                if ids.len() >= limit {
                    break;
                }
            }
        }
        // The rooms' messages past the user's cursors, up to `limit` from each, then the
        // first `limit` of all in id order.
        let mut rooms = false;
        {
            let cursors = tx.open_table(CURSORS).map_err(db_err("read the cursors"))?;
            let mut mine = cursors
                .range((user, "")..)
                .map_err(db_err("read the cursors"))?
                .peekable();
            // Only a user in a room needs the other tables (an error is raised in the loop).
            if mine
                .peek()
                .is_some_and(|e| e.as_ref().map_or(true, |(k, _)| k.value().0 == user))
            {
                let history = tx.open_table(HISTORY).map_err(db_err("read history"))?;
                let convs = tx
                    .open_table(CONVERSATIONS)
                    .map_err(db_err("read history"))?;
                for entry in mine {
                    let (key, value) = entry.map_err(db_err("read the cursors"))?;
                    let (member, room) = key.value();
                    if member != user {
                        break;
                    }
                    let Some(cursor) = Cursor::decode(value.value()) else {
                        error!(user, room, "message store: a member's cursor does not parse; the room's messages are not delivered to them");
                        continue;
                    };
                    rooms = true;
                    let Some(conv) = conversation_number(&convs, &room_key(room))? else {
                        continue;
                    };
                    room_pending(&history, conv, &cursor, start, limit, &mut ids)?;
                }
            }
        }
        if rooms {
            ids.sort_unstable();
            ids.dedup();
            ids.truncate(limit);
        }
        // The latest messages from memory, the others (and those a message table without
        // them would skip) from the database.
        let mut missing = Vec::new();
        {
            let bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
            for id in ids {
                match bodies.get(id) {
                    Some(body) => out.push(Queued { id, body }),
                    None => missing.push(id),
                }
            }
        }
        if !missing.is_empty() {
            let messages = tx.open_table(MESSAGES).map_err(db_err("read messages"))?;
            for id in missing {
                if let Some(body) = messages.get(id).map_err(db_err("read a message"))? {
                    out.push(Queued {
                        id,
                        body: body.value().into(),
                    });
                }
            }
            out.sort_unstable_by_key(|q| q.id);
        }
        Ok(out)
    }

    /// Messages waiting for `user`: in their queue (direct messages) and past their cursors
    /// in their rooms.
    pub fn queue_len(&self, user: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("read"))?;
        let queue = tx.open_table(QUEUE).map_err(db_err("read the queue"))?;
        let users = tx.open_table(USERS).map_err(db_err("read the queue"))?;
        let mut len = match user_number(&users, user)? {
            Some(number) => count_queue(&queue, number)?,
            None => 0,
        };
        let cursors = tx.open_table(CURSORS).map_err(db_err("read the cursors"))?;
        let history = tx.open_table(HISTORY).map_err(db_err("read history"))?;
        let convs = tx
            .open_table(CONVERSATIONS)
            .map_err(db_err("read history"))?;
        for entry in cursors
            .range((user, "")..)
            .map_err(db_err("read the cursors"))?
        {
            let (key, value) = entry.map_err(db_err("read the cursors"))?;
            let (member, room) = key.value();
            if member != user {
                break;
            }
            let latest = match conversation_number(&convs, &room_key(room))? {
                Some(conv) => last_seq(&history, conv)?,
                None => 0,
            };
            if let Some(c) = Cursor::decode(value.value()) {
                len += c.waiting(latest);
            }
        }
        Ok(len)
    }

    /// A page of a conversation: up to `limit` messages with a sequence number below
    /// `before` (all when `None`), oldest first, and whether older ones exist.
    pub fn history(
        &self,
        conversation: &[u8],
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        // The entries not yet in the table are taken with the snapshot, under their lock: the
        // writer empties them only after the commit that wrote them, so each entry is in one
        // or the other (or both, for a moment: then the table's is skipped).
        let (tx, conv, newest) = {
            let unwritten = lock(&self.unwritten);
            let tx = self.db.begin_read().map_err(db_err("read"))?;
            let convs = tx
                .open_table(CONVERSATIONS)
                .map_err(db_err("read history"))?;
            let Some(conv) = conversation_number(&convs, conversation)? else {
                return Ok((Vec::new(), false));
            };
            let newest = unwritten.entries(conv, before.unwrap_or(u64::MAX));
            (tx, conv, newest)
        };
        let history = tx.open_table(HISTORY).map_err(db_err("read history"))?;
        let messages = tx.open_table(MESSAGES).map_err(db_err("read messages"))?;
        // Newest first: those waiting, then the table's below them.
        let end = newest
            .first()
            .map_or(before.unwrap_or(u64::MAX), |&(seq, _)| seq);
        let mut ids: Vec<u64> = newest.iter().rev().map(|&(_, id)| id).collect();
        let mut more = ids.len() > limit;
        ids.truncate(limit);
        if !more {
            for entry in history
                .range(key(conv, 0)..key(conv, end))
                .map_err(db_err("read history"))?
                .rev()
            {
                let (_, id) = entry.map_err(db_err("read history"))?;
                if ids.len() >= limit {
                    more = true;
                    break;
                }
                ids.push(id.value());
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids.into_iter().rev() {
            if let Some(m) = load(&messages, id)? {
                out.push(m);
            }
        }
        Ok((out, more))
    }

    /// Whether a room exists.
    pub fn room_exists(&self, room: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("read"))?;
        let rooms = tx.open_table(ROOMS).map_err(db_err("read rooms"))?;
        Ok(rooms.get(room).map_err(db_err("read rooms"))?.is_some())
    }

    /// The members of a room, sorted.
    pub fn members(&self, room: &str) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("read"))?;
        let members = tx.open_table(MEMBERS).map_err(db_err("read members"))?;
        pairs(&members, room)
    }

    /// Everyone who shares a room or a direct conversation with `user`.
    pub fn peers(&self, user: &str) -> Result<BTreeSet<String>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("read"))?;
        let member_of = tx.open_table(MEMBER_OF).map_err(db_err("read members"))?;
        let members = tx.open_table(MEMBERS).map_err(db_err("read members"))?;
        let contacts = tx.open_table(CONTACTS).map_err(db_err("read contacts"))?;
        let mut out = BTreeSet::new();
        for room in pairs(&member_of, user)? {
            out.extend(pairs(&members, &room)?);
        }
        out.extend(pairs(&contacts, user)?);
        out.remove(user);
        Ok(out)
    }

    /// When `user` was last seen (0: never).
    pub fn last_seen(&self, user: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err("read"))?;
        let seen = tx.open_table(SEEN).map_err(db_err("read presence"))?;
        Ok(seen
            .get(user)
            .map_err(db_err("read presence"))?
            .map_or(0, |v| v.value()))
    }
}

/// The default store directory: `msg` next to the development PKI,
/// `$XDG_STATE_HOME/tlsnet/msg` or `~/.local/state/tlsnet/msg`.
pub fn default_dir() -> Option<PathBuf> {
    Some(
        crate::pki::dev::DevPki::default_dir()?
            .parent()?
            .join("msg"),
    )
}

fn create_private_dir(dir: &Path) -> crate::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| crate::Error::file(dir, "create directory", e))
}

/// Why a store cannot be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("cannot prepare its tables")]
    Tables(#[source] Box<redb::Error>),
    #[error("cannot bring it from format {from} to {FORMAT}; it is unchanged")]
    Upgrade {
        from: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "it says format {found}, which only a redb 2 file can be in (made by another program?)"
    )]
    Inconsistent { found: u64 },
    #[error("it is in format {found}, written by a newer tlsnet; this one reads formats 1 to {FORMAT} (run the newer tlsnet on it, or a copy of the store from before it)")]
    Newer { found: u64 },
}

fn tables_err(e: impl Into<redb::Error>) -> OpenError {
    OpenError::Tables(Box::new(e.into()))
}

/// Makes every table (so that readers never meet a missing one), marks a new store with
/// [`FORMAT`] and makes again the history entries a stop lost ([`remake_history`]), in one
/// transaction; how many entries it made. Older formats are redb 2 files, brought here by
/// [`legacy::upgrade`] before this opens them.
fn init_tables(db: &Database) -> Result<usize, OpenError> {
    let tx = db.begin_write().map_err(tables_err)?;
    for t in [ROOMS, SEEN] {
        tx.open_table(t).map_err(tables_err)?;
    }
    tx.open_table(MESSAGES).map_err(tables_err)?;
    tx.open_table(HISTORY).map_err(tables_err)?;
    tx.open_table(QUEUE).map_err(tables_err)?;
    tx.open_table(USERS).map_err(tables_err)?;
    tx.open_table(CONVERSATIONS).map_err(tables_err)?;
    for t in [MEMBERS, MEMBER_OF, CONTACTS] {
        tx.open_table(t).map_err(tables_err)?;
    }
    tx.open_table(CURSORS).map_err(tables_err)?;
    let mut meta = tx.open_table(META).map_err(tables_err)?;
    let format = meta.get("format").map_err(tables_err)?.map(|v| v.value());
    match format {
        Some(FORMAT) => {}
        // Format 4 to 5: the same tables, and the history complete (below).
        Some(4) | None => {
            meta.insert("format", FORMAT).map_err(tables_err)?;
        }
        Some(found) if found > FORMAT => return Err(OpenError::Newer { found }),
        Some(found) => return Err(OpenError::Inconsistent { found }),
    }
    // A store without the mark (new, of format 4, or copied from redb 2) has every history
    // entry in the table.
    if meta.get(HISTORY_THROUGH).map_err(tables_err)?.is_none() {
        let messages = tx.open_table(MESSAGES).map_err(tables_err)?;
        let last = messages
            .last()
            .map_err(tables_err)?
            .map_or(0, |(k, _)| k.value());
        meta.insert(HISTORY_THROUGH, last).map_err(tables_err)?;
    }
    drop(meta);
    let made = remake_history(&tx)?;
    tx.commit().map_err(tables_err)?;
    Ok(made)
}

/// Makes again the history entries of the direct messages past `meta` `history_through`
/// (those the writer had not yet added to the table when the server stopped: see
/// [`unwritten`]); how many it made.
fn remake_history(tx: &redb::WriteTransaction) -> Result<usize, OpenError> {
    let mut made = 0;
    {
        let mut meta = tx.open_table(META).map_err(tables_err)?;
        let through = meta
            .get(HISTORY_THROUGH)
            .map_err(tables_err)?
            .map_or(0, |v| v.value());
        let messages = tx.open_table(MESSAGES).map_err(tables_err)?;
        let convs = tx.open_table(CONVERSATIONS).map_err(tables_err)?;
        let mut history = tx.open_table(HISTORY).map_err(tables_err)?;
        let mut last = through;
        for entry in messages
            .range(through.saturating_add(1)..)
            .map_err(tables_err)?
        {
            let (id, body) = entry.map_err(tables_err)?;
            let id = id.value();
            last = id;
            let Some(m) = parse(id, body.value()) else {
                continue;
            };
            let Some(to) = m.to else { continue };
            let conv = conversation(&m.from, &Target::User(to));
            match convs.get(conv.as_slice()).map_err(tables_err)? {
                Some(number) => {
                    history
                        .insert(key(number.value(), m.seq), id)
                        .map_err(tables_err)?;
                    made += 1;
                }
                None => error!(
                    id,
                    "message store: a stored message's conversation has no number; it is left out of the history"
                ),
            }
        }
        if last != through {
            meta.insert(HISTORY_THROUGH, last).map_err(tables_err)?;
        }
    }
    Ok(made)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The latest sequence of the conversation numbered `conv`: its last history entry's (0:
/// none yet).
fn last_seq(history: &impl ReadableTable<u128, u64>, conv: u64) -> Result<u64, StoreError> {
    let last = history
        .range(keys_from(conv, 0))
        .map_err(db_err("read history"))?
        .next_back();
    match last {
        Some(entry) => Ok(low(entry.map_err(db_err("read history"))?.0.value())),
        None => Ok(0),
    }
}

/// The entries of the queue of the user numbered `user` (their direct messages and those of
/// rooms they left that they have not acknowledged).
fn count_queue(queue: &impl ReadableTable<u128, ()>, user: u64) -> Result<u64, StoreError> {
    let mut n = 0;
    for entry in queue
        .range(keys_from(user, 0))
        .map_err(db_err("read the queue"))?
    {
        entry.map_err(db_err("read the queue"))?;
        n += 1;
    }
    Ok(n)
}

fn load(
    messages: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<Message>, StoreError> {
    let Some(bytes) = messages.get(id).map_err(db_err("read a message"))? else {
        return Ok(None);
    };
    Ok(parse(id, bytes.value()))
}

fn parse(id: u64, bytes: &[u8]) -> Option<Message> {
    match serde_json::from_slice(bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            error!(id, error = %e, "message store: a stored message does not parse; skipped");
            None
        }
    }
}

/// Where a stored message comes from (its sender, its room and sequence there), read without
/// decoding the rest into owned fields (an `ACK` needs only that, for the receipt and the
/// cursor), when the writer's memory no longer has it.
fn origin_of(
    messages: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<Origin>, StoreError> {
    #[derive(serde::Deserialize)]
    struct Fields<'a> {
        #[serde(borrow)]
        from: std::borrow::Cow<'a, str>,
        #[serde(borrow, default)]
        room: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        seq: u64,
    }
    let Some(bytes) = messages.get(id).map_err(db_err("read a message"))? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Fields<'_>>(bytes.value()) {
        Ok(f) => Ok(Some(Origin {
            from: Arc::from(&*f.from),
            room: f.room.map(|r| (Arc::from(&*r), f.seq)),
        })),
        Err(e) => {
            error!(id, error = %e, "message store: a stored message does not parse; no receipt");
            Ok(None)
        }
    }
}

/// A user's number; `None` when nothing was ever queued for them.
fn user_number(
    users: &impl ReadableTable<&'static str, u64>,
    user: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(users
        .get(user)
        .map_err(db_err("read a user's number"))?
        .map(|v| v.value()))
}

/// A conversation's number; `None` when it has no message yet.
fn conversation_number(
    convs: &impl ReadableTable<&'static [u8], u64>,
    conv: &[u8],
) -> Result<Option<u64>, StoreError> {
    Ok(convs
        .get(conv)
        .map_err(db_err("read a conversation's number"))?
        .map(|v| v.value()))
}

/// Adds to `ids` the ids of up to `limit` messages of the room numbered `conv` that are past `cursor`
/// and have an id of at least `start` (those below were sent already on this connection),
/// in order.
fn room_pending(
    history: &impl ReadableTable<u128, u64>,
    conv: u64,
    cursor: &Cursor,
    start: u64,
    limit: usize,
    ids: &mut Vec<u64>,
) -> Result<(), StoreError> {
    let latest = last_seq(history, conv)?;
    if latest <= cursor.acked() {
        return Ok(());
    }
    let id_at = |seq: u64| -> Result<Option<u64>, StoreError> {
        Ok(history
            .get(key(conv, seq))
            .map_err(db_err("read history"))?
            .map(|v| v.value()))
    };
    // The first sequence with an id of at least `start`: ids grow with sequences in a
    // conversation, so a binary search skips what this connection has in flight (up to the
    // window) in a few reads. A gap in the history (which a store never has) falls back to
    // reading from the cursor on.
    let (mut lo, mut hi) = (cursor.acked() + 1, latest + 1);
    if start > 1 {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match id_at(mid)? {
                Some(id) if id < start => lo = mid + 1,
                Some(_) => hi = mid,
                None => {
                    lo = cursor.acked() + 1;
                    break;
                }
            }
        }
    }
    let mut taken = 0;
    for entry in history
        .range(key(conv, lo)..=key(conv, latest))
        .map_err(db_err("read history"))?
    {
        let (k, id) = entry.map_err(db_err("read history"))?;
        let (seq, id) = (low(k.value()), id.value());
        if id < start || !cursor.is_pending(seq) {
            continue;
        }
        ids.push(id);
        taken += 1;
        if taken >= limit {
            break;
        }
    }
    Ok(())
}

/// The second halves of the `(first, _)` keys of a pair table, sorted.
fn pairs(
    table: &impl ReadableTable<(&'static str, &'static str), ()>,
    first: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for entry in table.range((first, "")..).map_err(db_err("read members"))? {
        let (key, _) = entry.map_err(db_err("read members"))?;
        let (a, b) = key.value();
        if a != first {
            break;
        }
        out.push(b.to_owned());
    }
    Ok(out)
}

struct Writer {
    db: Arc<Database>,
    options: StoreOptions,
    /// What the writer remembers between batches (see [`memo`]).
    memo: Memo,
    /// Where it puts each committed batch's messages for the sessions.
    bodies: Arc<std::sync::Mutex<Bodies>>,
    /// Whom it tells of each committed message (see [`Store::on_commit`]).
    on_commit: Arc<OnceLock<Box<OnCommit>>>,
    /// The history entries of the direct messages it committed, until it writes them.
    unwritten: Arc<std::sync::Mutex<Unwritten>>,
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        loop {
            // Waiting history entries are written when there is nothing else to do, or once
            // the oldest has waited long enough.
            let wait = lock(&self.unwritten).wait();
            let first = match wait {
                None => queue
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(wait) => queue.recv_timeout(wait),
            };
            let first = match first {
                Ok(job) => job,
                Err(gone) => {
                    let waiting = !lock(&self.unwritten).is_empty();
                    if let Err(e) = waiting.then(|| self.commit(Vec::new(), true)).transpose() {
                        self.memo.forget();
                        error!(error = %crate::error::chain(&e), "message store: cannot write the history of the last messages (it is made again from them on the next open)");
                    }
                    match gone {
                        mpsc::RecvTimeoutError::Timeout => continue,
                        mpsc::RecvTimeoutError::Disconnected => return,
                    }
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let size = batch.len();
            let (ops, replies): (Vec<Op>, Vec<_>) =
                batch.into_iter().map(|j| (j.op, j.reply)).unzip();
            let started = Instant::now();
            match self.commit(ops, false) {
                Ok(results) => {
                    debug!(
                        jobs = size,
                        ms = started.elapsed().as_millis() as u64,
                        "message store: committed"
                    );
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    self.memo.forget();
                    error!(error = %crate::error::chain(&e), jobs = size, "message store: commit failed; the batch is refused");
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// One transaction for `ops`: each one's result, or the error that failed them all. The
    /// waiting history entries are written with it when they are due, or `history` is set.
    fn commit(
        &mut self,
        ops: Vec<Op>,
        history: bool,
    ) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
        let mut tx = self
            .db
            .begin_write()
            .map_err(db_err("begin a transaction"))?;
        // Every commit is durable, in both sync modes (see SyncMode::Batch).
        tx.set_durability(Durability::Immediate)
            .map_err(db_err("begin a transaction"))?;
        let mut results = Vec::with_capacity(ops.len());
        let (flushed, written, direct, history_written) = {
            let mut t = Tables::open(&tx, &mut self.memo, &self.unwritten)?;
            for op in ops {
                results.push(t.apply(op, &self.options));
            }
            let history_written = t.write_history(history)?;
            let flushed = t.flush()?;
            // A storage error in any op fails the batch: nothing of it is committed.
            if let Some(Err(e @ StoreError::Storage { .. })) = results
                .iter()
                .find(|r| matches!(r, Err(StoreError::Storage { .. })))
            {
                return Err(e.clone());
            }
            (
                flushed,
                std::mem::take(&mut t.written),
                std::mem::take(&mut t.direct),
                history_written,
            )
        };
        tx.commit().map_err(db_err("commit"))?;
        {
            let mut unwritten = lock(&self.unwritten);
            if history_written {
                unwritten.clear();
            } else {
                unwritten.extend(&direct);
            }
        }
        self.memo.set_lens(flushed.lens);
        self.memo.set_seqs(flushed.seqs);
        self.memo.set_cursors(flushed.cursors);
        if !written.is_empty() {
            let mut bodies = lock(&self.bodies);
            for (q, _) in &written {
                bodies.push(q.id, q.body.clone());
            }
        }
        if let Some(f) = self.on_commit.get() {
            for (q, recipients) in &written {
                f(q, recipients);
            }
        }
        Ok(results)
    }
}

/// Cursors by room, then member (`None`: the member left the room).
type Cursors = Map<String, Map<String, Option<Cursor>>>;

/// The next number of counter `name` (`meta`), counted in `next` during the batch and
/// written by [`Tables::flush`].
fn next_number(
    meta: &redb::Table<'_, &'static str, u64>,
    next: &mut Option<u64>,
    name: &'static str,
) -> Result<u64, StoreError> {
    let n = match *next {
        Some(n) => n,
        None => meta
            .get(name)
            .map_err(db_err("read a counter"))?
            .map_or(1, |v| v.value()),
    };
    *next = Some(n + 1);
    Ok(n)
}

/// What a batch changed that the writer remembers once it is committed.
struct Flushed {
    lens: Map<String, u64>,
    seqs: Map<Vec<u8>, u64>,
    cursors: Cursors,
}

struct Tables<'t, 'm> {
    meta: redb::Table<'t, &'static str, u64>,
    messages: redb::Table<'t, u64, &'static [u8]>,
    history: redb::Table<'t, u128, u64>,
    queue: redb::Table<'t, u128, ()>,
    users: redb::Table<'t, &'static str, u64>,
    convs: redb::Table<'t, &'static [u8], u64>,
    rooms: redb::Table<'t, &'static str, u64>,
    members: redb::Table<'t, (&'static str, &'static str), ()>,
    member_of: redb::Table<'t, (&'static str, &'static str), ()>,
    contacts: redb::Table<'t, (&'static str, &'static str), ()>,
    seen: redb::Table<'t, &'static str, u64>,
    cursors: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    /// The batch's message counter and cursors (by room, then member; `None`: the member
    /// left), written by [`Tables::flush`] before the commit, and the sequences and queue
    /// lengths it changed, remembered once it is committed.
    next_id: Option<u64>,
    /// The batch's counters of user and conversation numbers, written like `next_id`.
    next_user: Option<u64>,
    next_conv: Option<u64>,
    seq_of: Map<Vec<u8>, u64>,
    lens: Map<String, u64>,
    cur_of: Cursors,
    /// The writer's memory: read here before the tables, kept up to date by every op.
    memo: &'m mut Memo,
    /// The messages the batch wrote and their recipients, for [`Bodies`] and
    /// [`Store::on_commit`] once committed.
    written: Vec<(Queued, Recipients)>,
    /// The history entries of the batch's direct messages (conversation, sequence, id): not
    /// written with it (see [`unwritten`]).
    direct: Vec<(u64, u64, u64)>,
    /// Those of the batches before, committed and not written yet.
    unwritten: &'m std::sync::Mutex<Unwritten>,
}

impl<'t, 'm> Tables<'t, 'm> {
    fn open(
        tx: &'t redb::WriteTransaction,
        memo: &'m mut Memo,
        unwritten: &'m std::sync::Mutex<Unwritten>,
    ) -> Result<Self, StoreError> {
        let e = db_err("open a table");
        Ok(Tables {
            meta: tx.open_table(META).map_err(db_err("open a table"))?,
            messages: tx.open_table(MESSAGES).map_err(db_err("open a table"))?,
            history: tx.open_table(HISTORY).map_err(db_err("open a table"))?,
            queue: tx.open_table(QUEUE).map_err(db_err("open a table"))?,
            users: tx.open_table(USERS).map_err(db_err("open a table"))?,
            convs: tx
                .open_table(CONVERSATIONS)
                .map_err(db_err("open a table"))?,
            rooms: tx.open_table(ROOMS).map_err(db_err("open a table"))?,
            members: tx.open_table(MEMBERS).map_err(db_err("open a table"))?,
            member_of: tx.open_table(MEMBER_OF).map_err(db_err("open a table"))?,
            contacts: tx.open_table(CONTACTS).map_err(db_err("open a table"))?,
            seen: tx.open_table(SEEN).map_err(e)?,
            cursors: tx.open_table(CURSORS).map_err(db_err("open a table"))?,
            next_id: None,
            next_user: None,
            next_conv: None,
            seq_of: Map::default(),
            lens: Map::default(),
            cur_of: Map::default(),
            memo,
            written: Vec::new(),
            direct: Vec::new(),
            unwritten,
        })
    }

    fn apply(&mut self, op: Op, options: &StoreOptions) -> Result<Done, StoreError> {
        match op {
            Op::Send {
                from,
                target,
                text,
                time,
            } => self.send(from, target, text, time, options),
            Op::Ack { user, ids } => self.ack(&user, &ids),
            Op::Create { user, room, time } => {
                if self.room_known(&room)? {
                    return Err(Refusal::RoomExists(room).into());
                }
                self.rooms
                    .insert(room.as_str(), time)
                    .map_err(db_err("create a room"))?;
                self.memo.forget_room(&room);
                self.add_member(&user, &room)?;
                Ok(Done::Ok)
            }
            Op::Join { user, room } => {
                self.room_must_exist(&room)?;
                self.add_member(&user, &room)?;
                Ok(Done::Ok)
            }
            Op::Leave { user, room } => {
                self.room_must_exist(&room)?;
                let was = self
                    .members
                    .remove((room.as_str(), user.as_str()))
                    .map_err(db_err("leave a room"))?
                    .is_some();
                if !was {
                    return Err(Refusal::NotAMember(room).into());
                }
                self.memo.forget_room(&room);
                self.member_of
                    .remove((user.as_str(), room.as_str()))
                    .map_err(db_err("leave a room"))?;
                self.unwind_cursor(&user, &room)?;
                Ok(Done::Ok)
            }
            Op::Seen { user, time } => {
                self.seen
                    .insert(user.as_str(), time)
                    .map_err(db_err("record presence"))?;
                Ok(Done::Ok)
            }
        }
    }

    fn room_known(&self, room: &str) -> Result<bool, StoreError> {
        Ok(self
            .rooms
            .get(room)
            .map_err(db_err("read rooms"))?
            .is_some())
    }

    fn room_must_exist(&self, room: &str) -> Result<(), StoreError> {
        if self.room_known(room)? {
            Ok(())
        } else {
            Err(Refusal::NoSuchRoom(room.to_owned()).into())
        }
    }

    /// Makes `user` a member (nothing changes when they are one): their cursor starts at the
    /// room's latest message, so they receive what comes after.
    fn add_member(&mut self, user: &str, room: &str) -> Result<(), StoreError> {
        self.memo.forget_room(room);
        let was = self
            .members
            .insert((room, user), ())
            .map_err(db_err("join a room"))?
            .is_some();
        self.member_of
            .insert((user, room), ())
            .map_err(db_err("join a room"))?;
        if !was || self.cursor_of(room, user)?.is_none() {
            let latest = self.seq_now(&room_key(room))?;
            self.set_cursor(room, user, Some(Cursor::at(latest)));
        }
        Ok(())
    }

    /// `user` left `room`: what they have not received of it is queued for them one entry per
    /// message (as a direct message is), so that they still receive it, and the cursor goes.
    fn unwind_cursor(&mut self, user: &str, room: &str) -> Result<(), StoreError> {
        let Some(cursor) = self.cursor_of(room, user)? else {
            return Ok(());
        };
        let conv = room_key(room);
        let latest = self.seq_now(&conv)?;
        let mut ids = Vec::new();
        if let (true, Some(conv_n)) = (latest > cursor.acked(), self.find_conv(&conv)?) {
            for entry in self
                .history
                .range(key(conv_n, cursor.acked() + 1)..=key(conv_n, latest))
                .map_err(db_err("read history"))?
            {
                let (k, id) = entry.map_err(db_err("read history"))?;
                if cursor.is_pending(low(k.value())) {
                    ids.push(id.value());
                }
            }
        }
        if !ids.is_empty() {
            // The length before the entries are added (it may be counted from the queue).
            let len = self.len_of(user)?;
            let user_n = self.user_num(user)?;
            for &id in &ids {
                self.queue
                    .insert(key(user_n, id), ())
                    .map_err(db_err("queue a message"))?;
            }
            self.set_len(user, len + ids.len() as u64);
        }
        self.set_cursor(room, user, None);
        Ok(())
    }

    /// A user's number, when they have one.
    fn find_user(&mut self, user: &str) -> Result<Option<u64>, StoreError> {
        if let Some(n) = self.memo.user_number(user) {
            return Ok(Some(n));
        }
        let found = user_number(&self.users, user)?;
        if let Some(n) = found {
            self.memo.set_user_number(user, n);
        }
        Ok(found)
    }

    /// A user's number, given now when they have none.
    fn user_num(&mut self, user: &str) -> Result<u64, StoreError> {
        if let Some(n) = self.find_user(user)? {
            return Ok(n);
        }
        let n = next_number(&self.meta, &mut self.next_user, NEXT_USER)?;
        self.users
            .insert(user, n)
            .map_err(db_err("number a user"))?;
        self.memo.set_user_number(user, n);
        Ok(n)
    }

    /// A conversation's number, when it has one.
    fn find_conv(&mut self, conv: &[u8]) -> Result<Option<u64>, StoreError> {
        if let Some(n) = self.memo.conversation_number(conv) {
            return Ok(Some(n));
        }
        let found = conversation_number(&self.convs, conv)?;
        if let Some(n) = found {
            self.memo.set_conversation_number(conv, n);
        }
        Ok(found)
    }

    /// A conversation's number, given now when it has none.
    fn conv_num(&mut self, conv: &[u8]) -> Result<u64, StoreError> {
        if let Some(n) = self.find_conv(conv)? {
            return Ok(n);
        }
        let n = next_number(&self.meta, &mut self.next_conv, NEXT_CONVERSATION)?;
        self.convs
            .insert(conv, n)
            .map_err(db_err("number a conversation"))?;
        self.memo.set_conversation_number(conv, n);
        Ok(n)
    }

    /// The latest sequence of a conversation, as of this batch.
    fn seq_now(&mut self, conv: &[u8]) -> Result<u64, StoreError> {
        if let Some(&seq) = self.seq_of.get(conv) {
            return Ok(seq);
        }
        if let Some(seq) = self.memo.seq(conv) {
            return Ok(seq);
        }
        match self.find_conv(conv)? {
            Some(number) => match lock(self.unwritten).last_seq(number) {
                Some(seq) => Ok(seq),
                None => last_seq(&self.history, number),
            },
            None => Ok(0),
        }
    }

    /// A member's cursor in a room as of this batch; `None` when they have none (not a
    /// member).
    fn cursor_of(&self, room: &str, user: &str) -> Result<Option<Cursor>, StoreError> {
        self.with_cursor(room, user, |c| c.cloned())
    }

    /// `f` of a member's cursor as of this batch, without a copy when it is in memory.
    fn with_cursor<R>(
        &self,
        room: &str,
        user: &str,
        f: impl FnOnce(Option<&Cursor>) -> R,
    ) -> Result<R, StoreError> {
        if let Some(c) = self.cur_of.get(room).and_then(|m| m.get(user)) {
            return Ok(f(c.as_ref()));
        }
        if let Some(c) = self.memo.cursor(room, user) {
            return Ok(f(Some(c)));
        }
        let Some(value) = self
            .cursors
            .get((user, room))
            .map_err(db_err("read a member's cursor"))?
        else {
            return Ok(f(None));
        };
        match Cursor::decode(value.value()) {
            Some(c) => Ok(f(Some(&c))),
            None => Err(storage("read a member's cursor")(redb::Error::Corrupted(
                format!(
                    "the cursor of {user:?} in room {room:?} is not one ({} bytes)",
                    value.value().len()
                ),
            ))),
        }
    }

    /// A member's new cursor, written once per batch by [`Tables::flush`].
    fn set_cursor(&mut self, room: &str, user: &str, cursor: Option<Cursor>) {
        let users = match self.cur_of.get_mut(room) {
            Some(users) => users,
            None => self.cur_of.entry(room.to_owned()).or_default(),
        };
        match users.get_mut(user) {
            Some(c) => *c = cursor,
            None => {
                users.insert(user.to_owned(), cursor);
            }
        }
    }

    fn send(
        &mut self,
        from: String,
        target: Target,
        text: String,
        time: u64,
        options: &StoreOptions,
    ) -> Result<Done, StoreError> {
        let conv = conversation(&from, &target);
        // Every check before any write: a refused message changes nothing.
        // A direct message's recipient's queue length (none for a room message, or to oneself).
        let (recipients, len) = match &target {
            Target::User(to) => {
                if *to == from {
                    (Recipients::from(Vec::new()), None)
                } else {
                    let len = self.len_of(to)?;
                    if len >= options.max_queue {
                        return Err(Refusal::QueueFull {
                            user: to.clone(),
                            limit: options.max_queue,
                        }
                        .into());
                    }
                    (
                        Recipients::all_but(Arc::from([to.clone()]), None),
                        Some(len),
                    )
                }
            }
            Target::Room(room) => {
                let members = self.members_of(room)?;
                let Ok(sender) = members.binary_search(&from) else {
                    return Err(Refusal::NotAMember(room.clone()).into());
                };
                let recipients = Recipients::all_but(members, Some(sender));
                // A member's queue in a room: the room's messages past their cursor.
                let latest = self.seq_now(&conv)?;
                for user in recipients.iter() {
                    let waiting = self.with_cursor(room, user, |c| c.map(|c| c.waiting(latest)))?;
                    if waiting.unwrap_or(0) >= options.max_queue {
                        return Err(Refusal::QueueFull {
                            user: user.to_owned(),
                            limit: options.max_queue,
                        }
                        .into());
                    }
                }
                (recipients, None)
            }
        };
        let id = self.next_id()?;
        self.next_id = Some(id + 1);
        let seq = self.seq_now(&conv)? + 1;
        self.memo
            .senders
            .push(id, &from, room_of(&target).map(|r| (r, seq)));
        let (to, room) = match target {
            Target::User(u) => (Some(u), None),
            Target::Room(r) => (None, Some(r)),
        };
        let message = Message {
            id,
            seq,
            from,
            to,
            room,
            time,
            text,
        };
        // The JSON's size, near enough that it is written without growing.
        let to = message.to.as_deref().or(message.room.as_deref());
        let names = message.from.len() + to.map_or(0, str::len);
        let mut json = Vec::with_capacity(96 + message.text.len() + names);
        if serde_json::to_writer(&mut json, &message).is_err() {
            json.clear();
        }
        let json: Arc<[u8]> = json.into();
        self.messages
            .insert(id, &*json)
            .map_err(db_err("write a message"))?;
        self.written.push((
            Queued {
                id,
                body: json.clone(),
            },
            recipients.clone(),
        ));
        let conv_n = self.conv_num(&conv)?;
        if message.room.is_some() {
            self.history
                .insert(key(conv_n, seq), id)
                .map_err(db_err("write history"))?;
        } else {
            self.direct.push((conv_n, seq, id));
        }
        if let Some(to) = &message.to {
            // Contacts are only ever added: a pair written once is not written again.
            if *to != message.from && !self.memo.knows_contacts(&conv) {
                let known = self
                    .contacts
                    .get((message.from.as_str(), to.as_str()))
                    .map_err(db_err("read a contact"))?
                    .is_some();
                if !known {
                    self.contacts
                        .insert((message.from.as_str(), to.as_str()), ())
                        .map_err(db_err("record a contact"))?;
                    self.contacts
                        .insert((to.as_str(), message.from.as_str()), ())
                        .map_err(db_err("record a contact"))?;
                }
                self.memo.add_contacts(&conv);
            }
        }
        self.seq_of.insert(conv, seq);
        // A direct message is queued for its recipient; a room message is past its members'
        // cursors already, but for its sender's: it is done for them.
        if let (Some(user), Some(len)) = (recipients.iter().next(), len) {
            let user_n = self.user_num(user)?;
            self.queue
                .insert(key(user_n, id), ())
                .map_err(db_err("queue a message"))?;
            self.set_len(user, len + 1);
        }
        if let Some(room) = &message.room {
            if let Some(mut mine) = self.cursor_of(room, &message.from)? {
                if mine.ack(seq) {
                    self.set_cursor(room, &message.from, Some(mine));
                }
            }
        }
        Ok(Done::Sent(Sent {
            message,
            recipients,
        }))
    }

    /// A room's members, sorted; `no_such_room` when it does not exist.
    fn members_of(&mut self, room: &str) -> Result<Arc<[String]>, StoreError> {
        if let Some(members) = self.memo.members(room) {
            return Ok(members);
        }
        self.room_must_exist(room)?;
        let members: Arc<[String]> = pairs(&self.members, room)?.into();
        self.memo.set_members(room, members.clone());
        Ok(members)
    }

    fn len_of(&mut self, user: &str) -> Result<u64, StoreError> {
        if let Some(&len) = self.lens.get(user) {
            return Ok(len);
        }
        if let Some(len) = self.memo.len(user) {
            return Ok(len);
        }
        match self.find_user(user)? {
            Some(number) => count_queue(&self.queue, number),
            None => Ok(0),
        }
    }

    /// A queue's new length, remembered once the batch is committed.
    fn set_len(&mut self, user: &str, len: u64) {
        match self.lens.get_mut(user) {
            Some(l) => *l = len,
            None => {
                self.lens.insert(user.to_owned(), len);
            }
        }
    }

    /// The id the next message gets.
    fn next_id(&self) -> Result<u64, StoreError> {
        match self.next_id {
            Some(id) => Ok(id),
            None => Ok(self
                .meta
                .get("next_id")
                .map_err(db_err("read the message counter"))?
                .map_or(1, |v| v.value())),
        }
    }

    /// Writes the waiting history entries and the batch's own, when they are due or `now`;
    /// whether it did.
    fn write_history(&mut self, now: bool) -> Result<bool, StoreError> {
        let unwritten = lock(self.unwritten);
        let due = now || unwritten.due(self.direct.len());
        if !due || (unwritten.is_empty() && self.direct.is_empty()) {
            return Ok(false);
        }
        for (conv, seq, id) in unwritten.all().chain(self.direct.iter().copied()) {
            self.history
                .insert(key(conv, seq), id)
                .map_err(db_err("write history"))?;
        }
        drop(unwritten);
        // Every direct message committed so far, this batch's included, has its entry.
        let next = self.next_id()?;
        self.meta
            .insert(HISTORY_THROUGH, next - 1)
            .map_err(db_err("write history"))?;
        Ok(true)
    }

    /// Writes what the batch's ops kept in memory (the message counter and the cursors they
    /// changed): once per batch instead of once per message or `ACK`. Returns what the
    /// writer remembers once the batch is committed: the queue lengths, the sequences and the
    /// cursors.
    fn flush(&mut self) -> Result<Flushed, StoreError> {
        for (name, next) in [
            ("next_id", self.next_id.take()),
            (NEXT_USER, self.next_user.take()),
            (NEXT_CONVERSATION, self.next_conv.take()),
        ] {
            if let Some(next) = next {
                self.meta
                    .insert(name, next)
                    .map_err(db_err("write a counter"))?;
            }
        }
        let lens = std::mem::take(&mut self.lens);
        let seqs = std::mem::take(&mut self.seq_of);
        let cursors = std::mem::take(&mut self.cur_of);
        for (room, users) in &cursors {
            for (user, cursor) in users {
                match cursor {
                    Some(c) => {
                        self.cursors
                            .insert((user.as_str(), room.as_str()), c.encode().as_slice())
                            .map_err(db_err("move a member's cursor"))?;
                    }
                    None => {
                        self.cursors
                            .remove((user.as_str(), room.as_str()))
                            .map_err(db_err("leave a room"))?;
                    }
                }
            }
        }
        Ok(Flushed {
            lens,
            seqs,
            cursors,
        })
    }

    fn ack(&mut self, user: &str, ids: &[u64]) -> Result<Done, StoreError> {
        let mut acked = Vec::new();
        let mut removed = 0;
        // The user's number and queue length before the first removal (the length may be
        // counted from the queue); `None` until a direct message is acknowledged.
        let mut queue: Option<Option<(u64, u64)>> = None;
        for &id in ids {
            let origin = match self.memo.senders.get(id) {
                Some(origin) => Some(origin),
                None => origin_of(&self.messages, id)?,
            };
            // A room message past the member's cursor: the cursor moves.
            if let Some(Origin {
                from,
                room: Some((room, seq)),
            }) = &origin
            {
                if let Some(mut cursor) = self.cursor_of(room, user)? {
                    if cursor.ack(*seq) {
                        self.set_cursor(room, user, Some(cursor));
                        acked.push(Acked {
                            id,
                            from: from.clone(),
                        });
                        continue;
                    }
                }
            }
            // A direct message, or a room message queued one entry per member (by a store
            // of format 1, or when the member left the room).
            let mine = match queue {
                Some(q) => q,
                None => {
                    let q = match self.find_user(user)? {
                        Some(n) => Some((n, self.len_of(user)?)),
                        None => None,
                    };
                    queue = Some(q);
                    q
                }
            };
            let Some((user_n, _)) = mine else {
                continue;
            };
            let was = self
                .queue
                .remove(key(user_n, id))
                .map_err(db_err("remove from the queue"))?
                .is_some();
            if !was {
                continue;
            }
            removed += 1;
            if let Some(origin) = origin {
                acked.push(Acked {
                    id,
                    from: origin.from,
                });
            }
        }
        if let (true, Some(Some((_, len)))) = (removed > 0, queue) {
            self.set_len(user, len.saturating_sub(removed));
        }
        Ok(Done::Acked(acked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn messages_queue_ack_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let a = store
                .send("alice", Target::User("bob".into()), "one".into(), 1)
                .await
                .unwrap();
            let b = store
                .send("bob", Target::User("alice".into()), "two".into(), 2)
                .await
                .unwrap();
            assert_eq!((a.message.id, a.message.seq), (1, 1));
            assert_eq!((b.message.id, b.message.seq), (2, 2), "one conversation");
            assert_eq!(a.recipients.to_vec(), ["bob"]);
            let pending = store.pending("bob", 0, 10).unwrap();
            assert_eq!(pending.len(), 1);
            let acked = store.ack("bob", vec![1, 1, 99]).await.unwrap();
            assert_eq!(
                acked,
                [Acked {
                    id: 1,
                    from: "alice".into()
                }]
            );
            assert!(store.pending("bob", 0, 10).unwrap().is_empty());
            assert_eq!(
                store
                    .peers("alice")
                    .unwrap()
                    .into_iter()
                    .collect::<Vec<_>>(),
                ["bob"]
            );
        });
        rt().block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(store.pending("alice", 0, 10).unwrap()[0].text, "two");
            let conv = conversation("alice", &Target::User("bob".into()));
            let (page, more) = store.history(&conv, None, 1).unwrap();
            assert_eq!((page[0].seq, more), (2, true));
            let (page, more) = store.history(&conv, Some(2), 5).unwrap();
            assert_eq!((page[0].seq, more), (1, false));
            let c = store
                .send("alice", Target::User("bob".into()), "three".into(), 3)
                .await
                .unwrap();
            assert_eq!((c.message.id, c.message.seq), (3, 3));
        });
    }

    /// Sends queued together (most of them in one group commit): consecutive ids and
    /// sequences, the queue limit counted across the batch, and the counters on disk after.
    #[test]
    fn a_batch_counts_ids_sequences_and_queue_lengths_once() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            max_queue: 3,
            ..StoreOptions::default()
        };
        rt().block_on(async {
            let store = Store::open(dir.path(), options).unwrap();
            let mut commits = Vec::new();
            for i in 0..5 {
                let to = Target::User("bob".into());
                commits.push(
                    store
                        .send_later("alice", to, format!("m{i}"), i)
                        .await
                        .unwrap(),
                );
            }
            let mut accepted = Vec::new();
            let mut full = 0;
            for c in commits {
                match c.await {
                    Ok(sent) => accepted.push((sent.message.id, sent.message.seq)),
                    Err(StoreError::Refused(Refusal::QueueFull { limit: 3, .. })) => full += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(accepted, [(1, 1), (2, 2), (3, 3)]);
            assert_eq!(full, 2);
            assert_eq!(store.queue_len("bob").unwrap(), 3);
            let acked = store.ack("bob", vec![1, 2]).await.unwrap();
            assert_eq!(acked.len(), 2);
            assert_eq!(&*acked[0].from, "alice");
        });
        rt().block_on(async {
            let store = Store::open(dir.path(), options).unwrap();
            assert_eq!(store.queue_len("bob").unwrap(), 1);
            let raw = store.pending_raw("bob", 0, 10).unwrap();
            assert_eq!(raw.len(), 1);
            let m: Message = serde_json::from_slice(&raw[0].body).unwrap();
            assert_eq!((raw[0].id, m.id, m.text.as_str()), (3, 3, "m2"));
            let next = store
                .send("bob", Target::User("alice".into()), "back".into(), 9)
                .await
                .unwrap();
            assert_eq!((next.message.id, next.message.seq), (4, 4));
        });
    }

    #[test]
    fn rooms_and_refusals_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let store = Store::open(
                dir.path(),
                StoreOptions {
                    max_queue: 1,
                    ..StoreOptions::default()
                },
            )
            .unwrap();
            let room = Target::Room("ops".into());
            let refused = store.send("alice", room.clone(), "x".into(), 1).await;
            assert!(matches!(refused, Err(StoreError::Refused(Refusal::NoSuchRoom(_)))));
            store.create_room("alice", "ops", 1).await.unwrap();
            assert!(matches!(
                store.create_room("bob", "ops", 1).await,
                Err(StoreError::Refused(Refusal::RoomExists(_)))
            ));
            assert!(matches!(
                store.send("bob", room.clone(), "x".into(), 1).await,
                Err(StoreError::Refused(Refusal::NotAMember(_)))
            ));
            store.join("bob", "ops").await.unwrap();
            store.join("carol", "ops").await.unwrap();
            let sent = store.send("alice", room.clone(), "hi".into(), 2).await.unwrap();
            assert_eq!(sent.recipients.to_vec(), ["bob", "carol"]);
            let full = store.send("alice", room.clone(), "again".into(), 3).await;
            assert!(matches!(full, Err(StoreError::Refused(Refusal::QueueFull { ref user, limit: 1 })) if user == "bob"));
            // The refused message took no id and no sequence number.
            store.ack("bob", vec![sent.message.id]).await.unwrap();
            store.ack("carol", vec![sent.message.id]).await.unwrap();
            let next = store.send("alice", room.clone(), "now".into(), 4).await.unwrap();
            assert_eq!((next.message.id, next.message.seq), (2, 2));
            store.leave("carol", "ops").await.unwrap();
            assert_eq!(store.members("ops").unwrap(), ["alice", "bob"]);
        });
    }

    fn ids(q: &[Queued]) -> Vec<u64> {
        q.iter().map(|q| q.id).collect()
    }

    /// A direct conversation's history, in pages, across the entries written to the table
    /// (at a close), those still waiting for the writer, and a crash that lost the waiting
    /// ones (made again from the messages on the next open); a format 4 store is format 5
    /// with a complete history.
    #[test]
    fn direct_history_is_whole_across_waiting_entries_and_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let conv = conversation("alice", &Target::User("bob".into()));
        let to_bob = || Target::User("bob".into());
        let seqs = |page: &[Message]| page.iter().map(|m| m.seq).collect::<Vec<_>>();
        rt().block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            for t in 1..=3 {
                store.send("alice", to_bob(), "x".into(), t).await.unwrap();
            }
        });
        let third_id = rt().block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(rows(&store, HISTORY), 3, "written at the close");
            let third_id = store.history(&conv, None, 1).unwrap().0[0].id;
            for t in 4..=5 {
                store.send("alice", to_bob(), "x".into(), t).await.unwrap();
            }
            let (page, more) = store.history(&conv, None, 10).unwrap();
            assert_eq!((seqs(&page), more), (vec![1, 2, 3, 4, 5], false));
            let (page, more) = store.history(&conv, None, 1).unwrap();
            assert_eq!((seqs(&page), more), (vec![5], true));
            let (page, more) = store.history(&conv, Some(5), 2).unwrap();
            assert_eq!((seqs(&page), more), (vec![3, 4], true));
            let (page, more) = store.history(&conv, Some(3), 5).unwrap();
            assert_eq!((seqs(&page), more), (vec![1, 2], false));
            third_id
        });
        // A crash before the writer wrote entries 4 and 5: the mark is still at the third.
        {
            let db = Database::create(dir.path().join("msg.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut history = tx.open_table(HISTORY).unwrap();
                let keys: Vec<u128> = history
                    .iter()
                    .unwrap()
                    .map(|e| e.unwrap().0.value())
                    .filter(|&k| low(k) > 3)
                    .collect();
                assert_eq!(keys.len(), 2);
                for k in keys {
                    history.remove(k).unwrap();
                }
                tx.open_table(META)
                    .unwrap()
                    .insert(HISTORY_THROUGH, third_id)
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        rt().block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(rows(&store, HISTORY), 5, "made again on open");
            let (page, _) = store.history(&conv, None, 10).unwrap();
            assert_eq!(seqs(&page), [1, 2, 3, 4, 5]);
            let sent = store.send("bob", Target::User("alice".into()), "y".into(), 6);
            assert_eq!(sent.await.unwrap().message.seq, 6);
        });
        // Format 4: no mark, every entry in the table.
        {
            let db = Database::create(dir.path().join("msg.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut meta = tx.open_table(META).unwrap();
                meta.insert("format", 4).unwrap();
                meta.remove(HISTORY_THROUGH).unwrap();
            }
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let tx = store.db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
        let last = tx
            .open_table(MESSAGES)
            .unwrap()
            .last()
            .unwrap()
            .unwrap()
            .0
            .value();
        assert_eq!(meta.get(HISTORY_THROUGH).unwrap().unwrap().value(), last);
    }

    fn rows<K: redb::Key + 'static, V: redb::Value + 'static>(
        store: &Store,
        t: redb::TableDefinition<K, V>,
    ) -> u64 {
        use redb::ReadableTableMetadata;
        let tx = store.db.begin_read().unwrap();
        let table = tx.open_table(t).unwrap();
        table.len().unwrap()
    }

    /// A room message is one row, with no queue entry per member; each member's `ACK`s
    /// (in order or not) move their cursor, across a reopen too; the sender does not get
    /// their own; a member who joins gets only what comes after.
    #[test]
    fn room_members_have_cursors_not_queue_entries() {
        let dir = tempfile::tempdir().unwrap();
        let room = || Target::Room("ops".into());
        let (m1, m2, m3, b1);
        {
            let r = rt();
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            (m1, m2, m3, b1) = r.block_on(async {
                store.create_room("alice", "ops", 1).await.unwrap();
                store.join("bob", "ops").await.unwrap();
                store.join("carol", "ops").await.unwrap();
                let mut sent = Vec::new();
                for (from, text) in [
                    ("alice", "m1"),
                    ("alice", "m2"),
                    ("alice", "m3"),
                    ("bob", "b1"),
                ] {
                    sent.push(
                        store
                            .send(from, room(), text.into(), 1)
                            .await
                            .unwrap()
                            .message
                            .id,
                    );
                }
                (sent[0], sent[1], sent[2], sent[3])
            });
            assert_eq!(rows(&store, QUEUE), 0, "no queue entry for a room message");
            assert_eq!(rows(&store, MESSAGES), 4);
            assert_eq!(ids(&store.pending_raw("bob", 0, 10).unwrap()), [m1, m2, m3]);
            assert_eq!(ids(&store.pending_raw("alice", 0, 10).unwrap()), [b1]);
            assert_eq!(
                ids(&store.pending_raw("carol", 0, 10).unwrap()),
                [m1, m2, m3, b1]
            );
            // Past what a connection has sent already, and up to a limit.
            assert_eq!(ids(&store.pending_raw("carol", m2, 10).unwrap()), [m3, b1]);
            assert_eq!(ids(&store.pending_raw("carol", m1, 2).unwrap()), [m2, m3]);
            assert_eq!(store.queue_len("carol").unwrap(), 4);
            // A direct message to carol: her queue and her cursor merge in id order, the
            // first `limit` of both.
            let d = r.block_on(async {
                let to = Target::User("carol".into());
                store
                    .send("bob", to, "d".into(), 1)
                    .await
                    .unwrap()
                    .message
                    .id
            });
            assert_eq!(
                ids(&store.pending_raw("carol", 0, 3).unwrap()),
                [m1, m2, m3]
            );
            assert_eq!(ids(&store.pending_raw("carol", m3, 3).unwrap()), [b1, d]);
            assert_eq!(store.queue_len("carol").unwrap(), 5);
            r.block_on(async {
                assert_eq!(ids_of(&store.ack("carol", vec![d]).await.unwrap()), [d]);
                let acked = store.ack("bob", vec![m3, m1, m3]).await.unwrap();
                let got: Vec<(u64, &str)> = acked.iter().map(|a| (a.id, &*a.from)).collect();
                assert_eq!(got, [(m3, "alice"), (m1, "alice")]);
                assert!(
                    store.ack("bob", vec![b1]).await.unwrap().is_empty(),
                    "his own"
                );
                assert!(
                    store.ack("dave", vec![m1]).await.unwrap().is_empty(),
                    "no member"
                );
            });
            assert_eq!(ids(&store.pending_raw("bob", 0, 10).unwrap()), [m2]);
            assert_eq!(store.queue_len("bob").unwrap(), 1);
        }
        let r = rt();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(ids(&store.pending_raw("bob", 0, 10).unwrap()), [m2]);
        assert_eq!(store.queue_len("carol").unwrap(), 4);
        r.block_on(async {
            let acked = store.ack("carol", vec![m1, m2, m3, b1]).await.unwrap();
            assert_eq!(acked.len(), 4, "read from the messages after a reopen");
            assert_eq!(&*acked[3].from, "bob");
            store.join("dave", "ops").await.unwrap();
            store.join("carol", "ops").await.unwrap();
            let m4 = store.send("alice", room(), "m4".into(), 2).await.unwrap();
            assert_eq!(m4.recipients.to_vec(), ["bob", "carol", "dave"]);
            assert_eq!(
                ids(&store.pending_raw("dave", 0, 10).unwrap()),
                [m4.message.id]
            );
            assert_eq!(
                ids(&store.pending_raw("carol", 0, 10).unwrap()),
                [m4.message.id]
            );
            // Leaving: what was not received is queued, and still comes.
            store.leave("bob", "ops").await.unwrap();
            assert_eq!(
                ids(&store.pending_raw("bob", 0, 10).unwrap()),
                [m2, m4.message.id]
            );
            assert_eq!(store.queue_len("bob").unwrap(), 2);
            let acked = store.ack("bob", vec![m2]).await.unwrap();
            assert_eq!(ids_of(&acked), [m2]);
            assert_eq!(store.queue_len("bob").unwrap(), 1);
            let m5 = store.send("alice", room(), "m5".into(), 3).await.unwrap();
            assert_eq!(m5.recipients.to_vec(), ["carol", "dave"]);
            assert_eq!(
                ids(&store.pending_raw("bob", 0, 10).unwrap()),
                [m4.message.id]
            );
        });
    }

    fn ids_of(acked: &[Acked]) -> Vec<u64> {
        acked.iter().map(|a| a.id).collect()
    }

    /// `--max-queue` in a room: the room's messages a member has not acknowledged; the sender
    /// is told who, and their own messages do not count for them.
    #[test]
    fn a_room_member_behind_by_the_limit_refuses_the_room() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            max_queue: 3,
            ..StoreOptions::default()
        };
        rt().block_on(async {
            let store = Store::open(dir.path(), options).unwrap();
            let room = || Target::Room("ops".into());
            store.create_room("alice", "ops", 1).await.unwrap();
            store.join("bob", "ops").await.unwrap();
            let mut commits = Vec::new();
            for i in 0..5 {
                commits.push(
                    store
                        .send_later("alice", room(), format!("{i}"), 1)
                        .await
                        .unwrap(),
                );
            }
            let mut accepted = Vec::new();
            for c in commits {
                match c.await {
                    Ok(sent) => accepted.push(sent.message.id),
                    Err(StoreError::Refused(Refusal::QueueFull { user, limit: 3 })) => {
                        assert_eq!(user, "bob")
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(accepted, [1, 2, 3], "counted across the batch");
            store.ack("bob", vec![2]).await.unwrap();
            let next = store.send("alice", room(), "x".into(), 2).await.unwrap();
            assert_eq!((next.message.id, next.message.seq), (4, 4));
            // Bob's own messages are not waiting for him.
            store.ack("bob", vec![1, 3, 4]).await.unwrap();
            for i in 0..3 {
                store.send("bob", room(), format!("b{i}"), 3).await.unwrap();
            }
            assert_eq!(store.queue_len("bob").unwrap(), 0);
            assert_eq!(store.queue_len("alice").unwrap(), 3);
            assert!(matches!(
                store.send("bob", room(), "one more".into(), 4).await,
                Err(StoreError::Refused(Refusal::QueueFull { ref user, .. })) if user == "alice"
            ));
        });
    }

    /// A store of format 1, as tlsnet before the cursors wrote it (room messages queued per
    /// member, no `format`), is brought to format 2 when opened: what was queued is still
    /// delivered and acknowledged, what comes next goes by cursors; a later format is refused.
    #[test]
    fn a_format_1_store_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A redb 2 file, as every tlsnet before format 4 wrote.
            use legacy::v2::*;
            let db = redb2::Database::create(dir.path().join("msg.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let conv = room_key("ops");
                let mut messages = tx.open_table(MESSAGES).unwrap();
                let mut history = tx.open_table(HISTORY_V2).unwrap();
                for (id, seq) in [(1u64, 1u64), (2, 2)] {
                    let m = Message {
                        id,
                        seq,
                        from: "alice".into(),
                        to: None,
                        room: Some("ops".into()),
                        time: 1,
                        text: format!("old {id}"),
                    };
                    messages
                        .insert(id, serde_json::to_vec(&m).unwrap().as_slice())
                        .unwrap();
                    history.insert((conv.as_slice(), seq), id).unwrap();
                }
                tx.open_table(SEQS)
                    .unwrap()
                    .insert(conv.as_slice(), 2)
                    .unwrap();
                tx.open_table(META).unwrap().insert("next_id", 3).unwrap();
                let mut queue = tx.open_table(QUEUE_V2).unwrap();
                let mut lens = tx.open_table(QUEUE_LEN).unwrap();
                // Bob has both, carol acknowledged the first.
                queue.insert(("bob", 1), ()).unwrap();
                queue.insert(("bob", 2), ()).unwrap();
                queue.insert(("carol", 2), ()).unwrap();
                lens.insert("bob", 2).unwrap();
                lens.insert("carol", 1).unwrap();
                tx.open_table(ROOMS).unwrap().insert("ops", 1).unwrap();
                let mut members = tx.open_table(MEMBERS).unwrap();
                let mut member_of = tx.open_table(MEMBER_OF).unwrap();
                for user in ["alice", "bob", "carol"] {
                    members.insert(("ops", user), ()).unwrap();
                    member_of.insert((user, "ops"), ()).unwrap();
                }
                tx.open_table(CONTACTS).unwrap();
                tx.open_table(SEEN).unwrap();
            }
            tx.commit().unwrap();
        }
        {
            let r = rt();
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(rows(&store, CURSORS), 3);
            assert_eq!(ids(&store.pending_raw("bob", 0, 10).unwrap()), [1, 2]);
            assert_eq!(ids(&store.pending_raw("carol", 0, 10).unwrap()), [2]);
            assert!(store.pending_raw("alice", 0, 10).unwrap().is_empty());
            r.block_on(async {
                let m3 = store
                    .send("alice", Target::Room("ops".into()), "new".into(), 2)
                    .await
                    .unwrap();
                assert_eq!((m3.message.id, m3.message.seq), (3, 3));
                assert_eq!(rows(&store, QUEUE), 3, "the new one is not queued");
                assert_eq!(ids(&store.pending_raw("bob", 0, 10).unwrap()), [1, 2, 3]);
                assert_eq!(store.queue_len("bob").unwrap(), 3);
                let acked = store.ack("bob", vec![2, 3, 1]).await.unwrap();
                assert_eq!(ids_of(&acked), [2, 3, 1]);
                assert!(acked.iter().all(|a| &*a.from == "alice"));
                assert_eq!(store.queue_len("bob").unwrap(), 0);
            });
            assert_eq!(ids(&store.pending_raw("carol", 0, 10).unwrap()), [2, 3]);
        }
        // Opened again: nothing more to migrate, the same state.
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(ids(&store.pending_raw("carol", 0, 10).unwrap()), [2, 3]);
        assert!(store.pending_raw("bob", 0, 10).unwrap().is_empty());
        {
            let tx = store.db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("format", FORMAT + 1)
                .unwrap();
            tx.commit().unwrap();
        }
        drop(store);
        let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
        let text = crate::error::chain(&err).to_string();
        let newer = format!("format {}, written by a newer tlsnet", FORMAT + 1);
        assert!(text.contains(&newer), "{text}");
    }

    /// A store of format 2 (the queue and the history keyed by names, sequences and queue
    /// lengths in tables of their own) is brought to format 3 when opened: the queue and the
    /// history are keyed by numbers, the counter tables go, and what they said is read from
    /// the history and the queue (the next sequence, the queue limit).
    #[test]
    fn a_format_2_store_loses_its_counters_and_keeps_counting() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            max_queue: 3,
            ..StoreOptions::default()
        };
        {
            // As tlsnet with format 2 left it: two messages from alice to bob, queued, with
            // the counter tables and the queue and history keyed by names (in redb 2).
            use legacy::v2::*;
            let db = redb2::Database::create(dir.path().join("msg.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let conv = conversation("alice", &Target::User("bob".into()));
                let mut messages = tx.open_table(MESSAGES).unwrap();
                let mut history = tx.open_table(HISTORY_V2).unwrap();
                let mut queue = tx.open_table(QUEUE_V2).unwrap();
                for id in [1u64, 2] {
                    let m = Message {
                        id,
                        seq: id,
                        from: "alice".into(),
                        to: Some("bob".into()),
                        room: None,
                        time: 1,
                        text: format!("old {id}"),
                    };
                    messages
                        .insert(id, serde_json::to_vec(&m).unwrap().as_slice())
                        .unwrap();
                    history.insert((conv.as_slice(), id), id).unwrap();
                    queue.insert(("bob", id), ()).unwrap();
                }
                let mut seqs = tx.open_table(SEQS).unwrap();
                seqs.insert(conv.as_slice(), 2).unwrap();
                tx.open_table(QUEUE_LEN).unwrap().insert("bob", 2).unwrap();
                let mut meta = tx.open_table(META).unwrap();
                meta.insert("format", 2).unwrap();
                meta.insert("next_id", 3).unwrap();
            }
            tx.commit().unwrap();
        }
        let r = rt();
        let store = Store::open(dir.path(), options).unwrap();
        {
            let tx = store.db.begin_read().unwrap();
            let names: Vec<String> = tx
                .list_tables()
                .unwrap()
                .map(|t| redb::TableHandle::name(&t).to_string())
                .collect();
            assert!(
                !names
                    .iter()
                    .any(|n| ["seqs", "queue_len", "queue", "history"].contains(&n.as_str())),
                "{names:?}"
            );
            let meta = tx.open_table(META).unwrap();
            assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
        }
        assert_eq!(store.queue_len("bob").unwrap(), 2);
        assert_eq!(ids(&store.pending_raw("bob", 0, 10).unwrap()), [1, 2]);
        let conv = conversation("alice", &Target::User("bob".into()));
        let (page, more) = store.history(&conv, None, 10).unwrap();
        assert_eq!(
            (page.len(), page[1].text.as_str(), more),
            (2, "old 2", false)
        );
        r.block_on(async {
            let to = || Target::User("bob".into());
            let c = store.send("alice", to(), "c".into(), 2).await.unwrap();
            assert_eq!((c.message.id, c.message.seq), (3, 3));
            let full = store.send("alice", to(), "d".into(), 2).await;
            assert!(matches!(
                full,
                Err(StoreError::Refused(Refusal::QueueFull { limit: 3, .. }))
            ));
            store.ack("bob", vec![1]).await.unwrap();
            let d = store.send("bob", Target::User("alice".into()), "e".into(), 3);
            assert_eq!(d.await.unwrap().message.seq, 4, "one conversation");
        });
        assert_eq!(store.queue_len("bob").unwrap(), 2);
    }

    /// A store of format 3, the last in a redb 2 file (every store of tlsnet before format
    /// 4), is copied into a redb 4 file when opened: its queue, history, rooms (tuple keys,
    /// which redb 4 encodes otherwise), cursors, contacts and counters carry over; the old
    /// file is kept beside it; a copy that a crash left half-made is made afresh; and the
    /// next open finds format 4 and copies nothing.
    #[test]
    fn a_format_3_redb_2_store_is_copied_into_redb_4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("msg.redb");
        {
            use legacy::v2::*;
            let db = redb2::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let m = |id, to: Option<&str>, room: Option<&str>| Message {
                    id,
                    seq: 1,
                    from: "alice".into(),
                    to: to.map(Into::into),
                    room: room.map(Into::into),
                    time: 1,
                    text: format!("old {id}"),
                };
                let mut messages = tx.open_table(MESSAGES).unwrap();
                for msg in [m(1, Some("bob"), None), m(2, None, Some("ops"))] {
                    let json = serde_json::to_vec(&msg).unwrap();
                    messages.insert(msg.id, json.as_slice()).unwrap();
                }
                let direct = conversation("alice", &Target::User("bob".into()));
                let mut convs = tx.open_table(CONVERSATIONS).unwrap();
                convs.insert(direct.as_slice(), 1).unwrap();
                convs.insert(room_key("ops").as_slice(), 2).unwrap();
                let mut history = tx.open_table(HISTORY).unwrap();
                history.insert(key(1, 1), 1).unwrap();
                history.insert(key(2, 1), 2).unwrap();
                tx.open_table(USERS).unwrap().insert("bob", 1).unwrap();
                tx.open_table(QUEUE).unwrap().insert(key(1, 1), ()).unwrap();
                tx.open_table(ROOMS).unwrap().insert("ops", 1).unwrap();
                let mut members = tx.open_table(MEMBERS).unwrap();
                let mut member_of = tx.open_table(MEMBER_OF).unwrap();
                let mut cursors = tx.open_table(CURSORS).unwrap();
                for user in ["alice", "carol"] {
                    members.insert(("ops", user), ()).unwrap();
                    member_of.insert((user, "ops"), ()).unwrap();
                    let at = Cursor::at(0).encode();
                    cursors.insert((user, "ops"), at.as_slice()).unwrap();
                }
                let mut contacts = tx.open_table(CONTACTS).unwrap();
                contacts.insert(("alice", "bob"), ()).unwrap();
                contacts.insert(("bob", "alice"), ()).unwrap();
                tx.open_table(SEEN).unwrap().insert("carol", 7).unwrap();
                let mut meta = tx.open_table(META).unwrap();
                meta.insert("format", 3).unwrap();
                meta.insert("next_id", 3).unwrap();
                meta.insert(NEXT_USER, 2).unwrap();
                meta.insert(NEXT_CONVERSATION, 3).unwrap();
            }
            tx.commit().unwrap();
        }
        let upgrading = path.with_extension("redb.upgrading");
        std::fs::write(&upgrading, b"half a copy").unwrap();
        let kept = legacy::kept(&path);
        {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert!(kept.exists() && !upgrading.exists());
            assert_eq!(ids(&store.pending_raw("bob", 0, 10).unwrap()), [1]);
            assert_eq!(ids(&store.pending_raw("carol", 0, 10).unwrap()), [2]);
            assert_eq!(store.members("ops").unwrap(), ["alice", "carol"]);
            assert!(store.peers("alice").unwrap().contains("bob"));
            assert_eq!(store.last_seen("carol").unwrap(), 7);
            rt().block_on(async {
                let to_bob = Target::User("bob".into());
                let next = store.send("alice", to_bob, "new".into(), 2).await.unwrap();
                assert_eq!((next.message.id, next.message.seq), (3, 2));
                let to_ops = Target::Room("ops".into());
                let next = store.send("carol", to_ops, "hi".into(), 2).await.unwrap();
                assert_eq!((next.message.id, next.message.seq), (4, 2));
            });
        }
        let before = std::fs::read(&kept).unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(ids(&store.pending_raw("bob", 0, 10).unwrap()), [1, 3]);
        // Alice's cursor was made at 0 above, past her own message: both are hers to take.
        assert_eq!(ids(&store.pending_raw("alice", 0, 10).unwrap()), [2, 4]);
        assert_eq!(std::fs::read(&kept).unwrap(), before, "copied once");
        let tx = store.db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
    }

    /// The writer remembers the senders of the latest messages only (here 2): the ACKs of
    /// older ones, and those after a reopen, find their sender in the stored message.
    #[test]
    fn acks_find_their_sender_remembered_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let senders = ["alice", "carol", "alice", "dave", "erin"];
        rt().block_on(async {
            let store =
                Store::open_with(dir.path(), StoreOptions::default(), Memo::new(2, 1, 1)).unwrap();
            for (i, from) in senders.iter().enumerate() {
                store
                    .send(from, Target::User("bob".into()), format!("m{i}"), 1)
                    .await
                    .unwrap();
            }
            let acked = store.ack("bob", vec![5, 1, 4, 2]).await.unwrap();
            let got: Vec<(u64, &str)> = acked.iter().map(|a| (a.id, &*a.from)).collect();
            assert_eq!(got, [(5, "erin"), (1, "alice"), (4, "dave"), (2, "carol")]);
            assert_eq!(store.queue_len("bob").unwrap(), 1);
        });
        rt().block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let acked = store.ack("bob", vec![3, 3]).await.unwrap();
            assert_eq!(
                acked,
                [Acked {
                    id: 3,
                    from: "alice".into()
                }]
            );
            assert_eq!(store.queue_len("bob").unwrap(), 0);
        });
    }

    /// The members the writer remembers follow every join and leave (in the same batch too),
    /// and a room's queue lengths stay counted across batches.
    #[test]
    fn remembered_members_follow_joins_and_leaves() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let room = Target::Room("ops".into());
            store.create_room("alice", "ops", 1).await.unwrap();
            store.join("bob", "ops").await.unwrap();
            let sent = store
                .send("alice", room.clone(), "1".into(), 1)
                .await
                .unwrap();
            assert_eq!(sent.recipients.to_vec(), ["bob"]);
            store.join("carol", "ops").await.unwrap();
            let sent = store
                .send("alice", room.clone(), "2".into(), 2)
                .await
                .unwrap();
            assert_eq!(sent.recipients.to_vec(), ["bob", "carol"]);
            // A leave and a send queued together: the send sees the leave.
            let leave = store.leave("bob", "ops");
            let send = store.send_later("alice", room.clone(), "3".into(), 3);
            let (left, send) = tokio::join!(leave, send);
            left.unwrap();
            assert_eq!(send.unwrap().await.unwrap().recipients.to_vec(), ["carol"]);
            assert!(matches!(
                store.send("bob", room.clone(), "x".into(), 4).await,
                Err(StoreError::Refused(Refusal::NotAMember(_)))
            ));
            assert_eq!(store.queue_len("bob").unwrap(), 2);
            assert_eq!(store.queue_len("carol").unwrap(), 2);
            store.ack("carol", vec![2]).await.unwrap();
            assert_eq!(store.queue_len("carol").unwrap(), 1);
        });
        rt().block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(store.queue_len("carol").unwrap(), 1);
            assert_eq!(store.members("ops").unwrap(), ["alice", "carol"]);
        });
    }
}
