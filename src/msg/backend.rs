//! What the msg service needs from storage and from the other nodes, and the two places it
//! can get it from.
//!
//! [`Backend::Embedded`] is the [`Store`] of one machine: a redb file with group commit;
//! every session is in this process, so delivery between connections is the service's own.
//! [`Backend::Nats`] is a NATS JetStream cluster shared by several nodes (`--store
//! nats://...`, see [`super::nats`] and docs/SCALING.md): messages, queues, rooms and presence
//! live in the cluster, and what one node's sessions must tell another's (a message arrived,
//! a receipt, a presence change) travels as [`Remote`] events.
//!
//! An enum, not a trait object: the embedded hot path stays a direct call.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::codec::{Message, Presence, Receipt};
use super::nats::Cluster;
use super::store::{
    conversation, Acked, Queued, Recipients, Refusal, Sent, Store, StoreError, Target,
};

/// A commit that was queued: it resolves once the data is durable.
pub type Commit<T> = crate::service::BoxFuture<'static, Result<T, StoreError>>;

/// Where the service keeps its state.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded store: one machine.
    Embedded(Store),
    /// A NATS JetStream cluster shared by several nodes.
    Nats(Arc<Cluster>),
}

/// What a session on another node leaves for a user's sessions on this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Remote {
    /// A message was queued for the user.
    Wake,
    /// A recipient acknowledged the user's message.
    Receipt(Receipt),
    /// Someone the user shares a room or a conversation with came or went.
    Presence(Presence),
    /// The user was online on another node and that node went away without saying so (its
    /// presence entries expired): their peers on this node are told they are offline. Made
    /// by this node, never sent to another.
    Gone(Presence),
}

/// Runs an embedded store read off the runtime's workers.
async fn read<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|_| StoreError::Closed)?
}

impl Backend {
    /// Stores a message and queues it for its recipients; returns it once it is durable
    /// (committed to the embedded store, or PubAck'd by JetStream).
    pub async fn send(
        &self,
        from: &str,
        target: Target,
        text: String,
        time: u64,
    ) -> Result<Sent, StoreError> {
        match self {
            Backend::Embedded(s) => s.send(from, target, text, time).await,
            Backend::Nats(c) => Box::pin(c.send(from, target, text, time)).await,
        }
    }

    /// Queues a message for the next group commit and returns at once with a future of its
    /// commit: a session reads on while earlier sends are committed (pipelining). NATS sends
    /// are published here, one after the other, so that order per conversation holds; their
    /// future is ready.
    pub async fn send_later(
        &self,
        from: &str,
        target: Target,
        text: String,
        time: u64,
    ) -> Result<Commit<Sent>, StoreError> {
        match self {
            Backend::Embedded(s) => Ok(Box::pin(s.send_later(from, target, text, time).await?)),
            Backend::Nats(c) => {
                let sent = Box::pin(c.send(from, target, text, time)).await;
                Ok(Box::pin(std::future::ready(sent)))
            }
        }
    }

    /// [`Backend::ack`] as [`Backend::send_later`] does it: queued now, committed later.
    pub async fn ack_later(
        &self,
        user: &str,
        ids: Vec<u64>,
    ) -> Result<Commit<Vec<Acked>>, StoreError> {
        match self {
            Backend::Embedded(s) => Ok(Box::pin(s.ack_later(user, ids).await?)),
            Backend::Nats(c) => {
                let acked = Box::pin(c.ack(user, ids)).await;
                Ok(Box::pin(std::future::ready(acked)))
            }
        }
    }

    /// Removes delivered messages from `user`'s queue; returns those that were there.
    pub async fn ack(&self, user: &str, ids: Vec<u64>) -> Result<Vec<Acked>, StoreError> {
        match self {
            Backend::Embedded(s) => s.ack(user, ids).await,
            Backend::Nats(c) => Box::pin(c.ack(user, ids)).await,
        }
    }

    /// Creates a room with `user` as its first member.
    pub async fn create_room(&self, user: &str, room: &str, time: u64) -> Result<(), StoreError> {
        match self {
            Backend::Embedded(s) => s.create_room(user, room, time).await,
            Backend::Nats(c) => Box::pin(c.create_room(user, room, time)).await,
        }
    }

    /// Adds `user` to a room.
    pub async fn join(&self, user: &str, room: &str) -> Result<(), StoreError> {
        match self {
            Backend::Embedded(s) => s.join(user, room).await,
            Backend::Nats(c) => Box::pin(c.join(user, room)).await,
        }
    }

    /// Removes `user` from a room.
    pub async fn leave(&self, user: &str, room: &str) -> Result<(), StoreError> {
        match self {
            Backend::Embedded(s) => s.leave(user, room).await,
            Backend::Nats(c) => Box::pin(c.leave(user, room)).await,
        }
    }

    /// Records when `user` was last seen.
    pub async fn seen(&self, user: &str, time: u64) -> Result<(), StoreError> {
        match self {
            Backend::Embedded(s) => s.seen(user, time).await,
            Backend::Nats(c) => Box::pin(c.seen(user, time)).await,
        }
    }

    /// Up to `limit` queued messages for `user` (ids over `after` in the embedded store; the
    /// next ones of the user's consumer in NATS), in each conversation's order, each as its
    /// `DELIVER` payload.
    pub async fn pending(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        match self {
            // One read transaction over a few cached pages: done on the worker, not on a
            // blocking thread (whose hand-offs cost more than the read). The messages come as
            // stored, `DELIVER` payloads that are written as they are.
            Backend::Embedded(s) => s.pending_raw(user, after, limit),
            Backend::Nats(c) => Ok(Box::pin(c.pending(user, limit))
                .await?
                .into_iter()
                .map(|m| Queued {
                    id: m.id,
                    body: serde_json::to_vec(&m).unwrap_or_default().into(),
                })
                .collect()),
        }
    }

    /// Everyone who shares a room or a direct conversation with `user`.
    pub async fn peers(&self, user: &str) -> Result<BTreeSet<String>, StoreError> {
        match self {
            // A few cached pages, at login and logout: on the worker, as `pending` does (a
            // blocking thread per login would also stay alive, and hold memory, for 10 s).
            Backend::Embedded(s) => s.peers(user),
            Backend::Nats(c) => Box::pin(c.peers(user)).await,
        }
    }

    /// The members of a room with when each was last seen; `no_such_room` when it does not
    /// exist.
    pub async fn members(&self, room: &str) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            Backend::Embedded(s) => {
                let r = room.to_owned();
                read(s, move |s| {
                    if !s.room_exists(&r)? {
                        return Err(Refusal::NoSuchRoom(r).into());
                    }
                    let members = s.members(&r)?;
                    let seen = members
                        .iter()
                        .map(|m| s.last_seen(m))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(members.into_iter().zip(seen).collect())
                })
                .await
            }
            Backend::Nats(c) => Box::pin(c.members(room)).await,
        }
    }

    /// A page of `user`'s conversation with `target`: up to `limit` messages with a sequence
    /// number below `before`, oldest first, and whether older ones exist. A room must exist
    /// and have `user` as a member.
    pub async fn history(
        &self,
        user: &str,
        target: Target,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        match self {
            Backend::Embedded(s) => {
                let me = user.to_owned();
                read(s, move |s| {
                    if let Target::Room(room) = &target {
                        if !s.room_exists(room)? {
                            return Err(Refusal::NoSuchRoom(room.clone()).into());
                        }
                        if !s.members(room)?.contains(&me) {
                            return Err(Refusal::NotAMember(room.clone()).into());
                        }
                    }
                    s.history(&conversation(&me, &target), before, limit)
                })
                .await
            }
            Backend::Nats(c) => Box::pin(c.history(user, target, before, limit)).await,
        }
    }

    /// Whether `user` has a session on another node (the embedded store has no other node).
    pub async fn online_elsewhere(&self, user: &str) -> bool {
        match self {
            Backend::Embedded(_) => false,
            Backend::Nats(c) => Box::pin(c.online_elsewhere(user)).await,
        }
    }

    /// The user's first session on this node started: subscribe to what other nodes leave
    /// for them, announce their presence, take over their queue.
    pub async fn opened(&self, user: &str) {
        if let Backend::Nats(c) = self {
            Box::pin(c.opened(user)).await;
        }
    }

    /// The user's last session on this node ended.
    pub async fn closed(&self, user: &str) {
        if let Backend::Nats(c) = self {
            Box::pin(c.closed(user)).await;
        }
    }

    /// Tells `user`'s sessions on the other nodes (the event is made only when there are
    /// other nodes: the embedded store's hot path makes no copy for no one).
    pub fn notify(&self, user: &str, event: impl FnOnce() -> Remote) {
        if let Backend::Nats(c) = self {
            c.notify(user, &event());
        }
    }

    /// Has the embedded store's writer call `f` for each message it commits (see
    /// [`Store::on_commit`]); false on a backend that does not (NATS).
    pub fn on_commit(&self, f: impl Fn(&Queued, &Recipients) + Send + Sync + 'static) -> bool {
        match self {
            Backend::Embedded(s) => s.on_commit(f),
            Backend::Nats(_) => false,
        }
    }

    /// How often a session looks at its queue with no wake-up: the embedded store wakes
    /// every session itself; NATS wake-ups are best effort (core NATS), and a message that
    /// another node delivered and never saw acknowledged comes back after the ack wait.
    pub fn poll_every(&self) -> Option<Duration> {
        match self {
            Backend::Embedded(_) => None,
            Backend::Nats(_) => Some(super::nats::POLL_EVERY),
        }
    }

    /// The events other nodes leave for this node's users, once (`None` after the first
    /// call, and for the embedded store).
    pub fn take_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<(String, Remote)>> {
        match self {
            Backend::Embedded(_) => None,
            Backend::Nats(c) => c.take_events(),
        }
    }
}
