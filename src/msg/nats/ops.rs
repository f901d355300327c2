//! The store operations on NATS: messages, queues, rooms, history.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, kv};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{lock, token, Cluster, Ready, ACK_WAIT, PUBLISH_TRIES};

/// Longest a look at a queue may take.
const FETCH_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);
use crate::msg::codec::Message;
use crate::msg::store::{Acked, Refusal, Sent, StoreError, Target};

/// A message as kept in the stream; its id and seq are its stream sequence.
#[derive(Serialize, Deserialize)]
struct Stored {
    from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    time: u64,
    text: String,
}

impl Stored {
    fn message(self, seq: u64) -> Message {
        Message {
            id: seq,
            seq,
            from: self.from,
            to: self.to,
            room: self.room,
            time: self.time,
            text: self.text,
        }
    }
}

/// A room in `tlsnet-rooms`.
#[derive(Serialize, Deserialize, Default)]
struct RoomRecord {
    created: u64,
    members: BTreeSet<String>,
}

/// A user in `tlsnet-users`.
#[derive(Serialize, Deserialize, Default)]
struct UserRecord {
    #[serde(default)]
    rooms: BTreeSet<String>,
    #[serde(default)]
    contacts: BTreeSet<String>,
    #[serde(default)]
    last_seen: u64,
}

/// Subject of a direct message.
fn dm(to: &str, from: &str) -> String {
    format!("tlsnet.m.d.{}.{}", token(to), token(from))
}

fn room_subject(room: &str) -> String {
    format!("tlsnet.m.r.{}", token(room))
}

/// The durable consumer that is `user`'s queue.
fn consumer_name(user: &str) -> String {
    let hash = blake3::hash(user.as_bytes());
    format!("u-{}", &hash.to_hex()[..32])
}

fn filters(user: &str, rooms: &BTreeSet<String>) -> Vec<String> {
    let mut out = vec![format!("tlsnet.m.d.{}.*", token(user))];
    out.extend(rooms.iter().map(|r| room_subject(r)));
    out
}

fn queue_config(user: &str, rooms: &BTreeSet<String>) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(consumer_name(user)),
        description: Some(format!("tlsnet queue of {user:?}")),
        filter_subjects: filters(user, rooms),
        // Every direct message to a user is published after this consumer exists (a sender
        // makes it first), and a room's after the user joined: nothing older is theirs.
        deliver_policy: consumer::DeliverPolicy::New,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: 4096,
        ..Default::default()
    }
}

impl Cluster {
    async fn record<T: DeserializeOwned + Default>(
        &self,
        kv: &kv::Store,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let bytes = kv
            .get(token(key))
            .await
            .map_err(self.fail("read a KV bucket"))?;
        Ok(bytes.map(|b| serde_json::from_slice(&b).unwrap_or_default()))
    }

    /// Reads, changes and writes one record with compare-and-set, again on a conflict (see
    /// [`lost_race`] for the conflicts the client library does not name). `f`
    /// may refuse (nothing is written).
    async fn update<T: Serialize + DeserializeOwned + Default, R>(
        &self,
        kv: &kv::Store,
        key: &str,
        f: impl Fn(&mut Option<T>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let key = token(key);
        for _ in 0..32 {
            let entry = kv
                .entry(key.clone())
                .await
                .map_err(self.fail("read a KV bucket"))?;
            let (mut value, revision) = match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    (serde_json::from_slice(&e.value).ok(), Some(e.revision))
                }
                Some(e) => (None, Some(e.revision)),
                None => (None, None),
            };
            let out = f(&mut value)?;
            let bytes = serde_json::to_vec(&value.unwrap_or_default()).unwrap_or_default();
            let written = match revision {
                Some(rev) => kv.update(&key, bytes.into(), rev).await.map_err(|e| {
                    (
                        e.kind() == kv::UpdateErrorKind::WrongLastRevision || lost_race(&e),
                        self.fail("write a KV bucket")(e),
                    )
                }),
                None => kv.create(&key, bytes.into()).await.map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e),
                        self.fail("write a KV bucket")(e),
                    )
                }),
            };
            match written {
                Ok(_) => return Ok(out),
                Err((true, _)) => continue,
                Err((false, e)) => return Err(e),
            }
        }
        Err(StoreError::Cluster {
            action: "write a KV bucket",
            source: Arc::new(std::io::Error::other("too many concurrent changes")),
        })
    }

    /// `user`'s queue, made when it does not exist.
    async fn queue(&self, ready: &Ready, user: &str) -> Result<consumer::PullConsumer, StoreError> {
        if let Some(c) = lock(&self.consumers).get(user) {
            return Ok(c.clone());
        }
        let rooms = self
            .record::<UserRecord>(&ready.users, user)
            .await?
            .unwrap_or_default()
            .rooms;
        let c = ready
            .stream
            .get_or_create_consumer(&consumer_name(user), queue_config(user, &rooms))
            .await
            .map_err(self.fail("make a user's queue"))?;
        lock(&self.consumers).insert(user.to_owned(), c.clone());
        Ok(c)
    }

    /// Makes the queue's filters the user's rooms (after a join or a leave).
    async fn refilter(&self, ready: &Ready, user: &str) -> Result<(), StoreError> {
        let mut c = self.queue(ready, user).await?;
        let rooms = self
            .record::<UserRecord>(&ready.users, user)
            .await?
            .unwrap_or_default()
            .rooms;
        let info = c.info().await.map_err(self.fail("read a user's queue"))?;
        let mut config = info.config.clone();
        config.filter_subject = String::new();
        config.filter_subjects = filters(user, &rooms);
        ready
            .stream
            .update_consumer(config)
            .await
            .map_err(self.fail("change a user's queue"))?;
        Ok(())
    }

    /// At a user's first session here: when messages wait for an acknowledgement from a
    /// session that is gone, the queue starts again after the last acknowledged one, so they
    /// come again now and in order (a client drops what it has by id).
    pub(super) async fn take_over(&self, ready: &Ready, user: &str) -> Result<(), StoreError> {
        let mut c = self.queue(ready, user).await?;
        let info = c.info().await.map_err(self.fail("read a user's queue"))?;
        if info.num_ack_pending == 0 {
            return Ok(());
        }
        let mut config = queue_config(user, &BTreeSet::new());
        config.filter_subjects = match info.config.filter_subjects.is_empty() {
            true => vec![info.config.filter_subject.clone()],
            false => info.config.filter_subjects.clone(),
        };
        config.deliver_policy = consumer::DeliverPolicy::ByStartSequence {
            start_sequence: info.ack_floor.stream_sequence + 1,
        };
        let name = consumer_name(user);
        ready
            .stream
            .delete_consumer(&name)
            .await
            .map_err(self.fail("restart a user's queue"))?;
        let c = ready
            .stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(self.fail("restart a user's queue"))?;
        lock(&self.consumers).insert(user.to_owned(), c);
        Ok(())
    }

    async fn publish(&self, subject: String, payload: Vec<u8>) -> Result<u64, StoreError> {
        let id = format!(
            "{}-{}",
            self.node,
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let mut last = None;
        for attempt in 0..PUBLISH_TRIES {
            if !self.connected() {
                if attempt == 0 {
                    return Err(self.unreachable("storing the message"));
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let sent = self
                .js
                .publish_with_headers(subject.clone(), headers, payload.clone().into())
                .await;
            let result = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => {
                    let again = matches!(
                        e.kind(),
                        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                    );
                    warn!(subject, attempt, error = %e, "msg: publish to NATS failed");
                    last = Some(e);
                    if !again {
                        break;
                    }
                }
            }
        }
        Err(match last {
            Some(e) => self.fail("storing the message")(e),
            None => self.unreachable("storing the message"),
        })
    }

    /// Stores a message in the stream; returns it once JetStream has acknowledged it.
    pub async fn send(
        &self,
        from: &str,
        target: Target,
        text: String,
        time: u64,
    ) -> Result<Sent, StoreError> {
        let ready = self.ready("storing the message").await?;
        let (subject, recipients, to, room): (_, Vec<String>, _, _) = match target {
            Target::User(to) => {
                self.queue(ready, &to).await?;
                self.contact(ready, from, &to).await?;
                let recipients = if to == from {
                    Vec::new()
                } else {
                    vec![to.clone()]
                };
                (dm(&to, from), recipients, Some(to), None)
            }
            Target::Room(room) => {
                let record = self
                    .record::<RoomRecord>(&ready.rooms, &room)
                    .await?
                    .ok_or_else(|| Refusal::NoSuchRoom(room.clone()))?;
                if !record.members.contains(from) {
                    return Err(Refusal::NotAMember(room).into());
                }
                let recipients = record.members.into_iter().filter(|m| m != from).collect();
                (room_subject(&room), recipients, None, Some(room))
            }
        };
        let stored = Stored {
            from: from.to_owned(),
            to,
            room,
            time,
            text,
        };
        let payload = serde_json::to_vec(&stored).unwrap_or_default();
        let seq = self.publish(subject, payload).await?;
        Ok(Sent {
            message: stored.message(seq),
            recipients: recipients.into(),
        })
    }

    /// Records that two users talk (for presence), once per pair and node.
    async fn contact(&self, ready: &Ready, a: &str, b: &str) -> Result<(), StoreError> {
        let pair = (a.to_owned(), b.to_owned());
        if a == b || lock(&self.contacts).contains(&pair) {
            return Ok(());
        }
        for (me, other) in [(a, b), (b, a)] {
            self.update::<UserRecord, _>(&ready.users, me, |r| {
                r.get_or_insert_with(Default::default)
                    .contacts
                    .insert(other.to_owned());
                Ok(())
            })
            .await?;
        }
        lock(&self.contacts).insert(pair);
        Ok(())
    }

    /// The next messages of `user`'s queue (none when it is empty), held until acknowledged.
    /// Bounded in time: the session's writer waits on it, and its answers wait on the writer.
    pub async fn pending(&self, user: &str, limit: usize) -> Result<Vec<Message>, StoreError> {
        let result = match tokio::time::timeout(FETCH_WITHIN, self.fetch(user, limit)).await {
            Ok(r) => r,
            Err(_) => Err(self.unreachable("reading the queue")),
        };
        if result.is_err() {
            // Messages of a broken fetch wait for the ack wait: start the queue again after
            // the last acknowledged one before the next look, so nothing comes out of order.
            lock(&self.dirty).insert(user.to_owned());
        }
        result
    }

    async fn fetch(&self, user: &str, limit: usize) -> Result<Vec<Message>, StoreError> {
        let ready = self.ready("reading the queue").await?;
        if lock(&self.dirty).contains(user) {
            self.take_over(ready, user).await?;
            lock(&self.dirty).remove(user);
        }
        let c = self.queue(ready, user).await?;
        let mut batch = c
            .fetch()
            .max_messages(limit.max(1))
            .messages()
            .await
            .map_err(self.fail("read the queue"))?;
        let mut out = Vec::new();
        while let Some(m) = batch.next().await {
            let m = m.map_err(self.fail("read the queue"))?;
            let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
                continue;
            };
            let stored = match serde_json::from_slice::<Stored>(&m.payload) {
                Ok(s) if s.from != user => s,
                Ok(_) => {
                    // The user's own room message (or a note to self): not for their queue.
                    let _ = m.ack().await;
                    continue;
                }
                Err(e) => {
                    warn!(user, seq, error = %e, "msg: skipped a message that is not tlsnet's in the stream");
                    let _ = m.ack().await;
                    continue;
                }
            };
            let message = stored.message(seq);
            lock(&self.inflight)
                .entry(user.to_owned())
                .or_default()
                .insert(seq, (m, message.from.clone()));
            out.push(message);
        }
        Ok(out)
    }

    /// Acknowledges delivered messages to JetStream; returns those this node held.
    pub async fn ack(&self, user: &str, ids: Vec<u64>) -> Result<Vec<Acked>, StoreError> {
        let held: Vec<(u64, jetstream::Message, String)> = {
            let mut inflight = lock(&self.inflight);
            let Some(mine) = inflight.get_mut(user) else {
                return Ok(Vec::new());
            };
            ids.iter()
                .filter_map(|id| mine.remove(id).map(|(m, from)| (*id, m, from)))
                .collect()
        };
        let mut acked = Vec::with_capacity(held.len());
        for (id, m, from) in held {
            // One that fails comes again (at least once; the client drops it by id).
            match m.double_ack().await {
                Ok(()) => acked.push(Acked {
                    id,
                    from: from.into(),
                }),
                Err(e) => warn!(user, id, error = %e, "msg: an acknowledgement did not reach NATS"),
            }
        }
        Ok(acked)
    }

    /// Creates a room with `user` as its first member.
    pub async fn create_room(&self, user: &str, room: &str, time: u64) -> Result<(), StoreError> {
        let ready = self.ready("creating the room").await?;
        self.update::<RoomRecord, _>(&ready.rooms, room, |r| {
            if r.is_some() {
                return Err(Refusal::RoomExists(room.to_owned()).into());
            }
            *r = Some(RoomRecord {
                created: time,
                members: BTreeSet::from([user.to_owned()]),
            });
            Ok(())
        })
        .await?;
        self.member_of(ready, user, room, true).await
    }

    /// Adds `user` to a room.
    pub async fn join(&self, user: &str, room: &str) -> Result<(), StoreError> {
        let ready = self.ready("joining the room").await?;
        self.update::<RoomRecord, _>(&ready.rooms, room, |r| match r {
            Some(r) => {
                r.members.insert(user.to_owned());
                Ok(())
            }
            None => Err(Refusal::NoSuchRoom(room.to_owned()).into()),
        })
        .await?;
        self.member_of(ready, user, room, true).await
    }

    /// Removes `user` from a room.
    pub async fn leave(&self, user: &str, room: &str) -> Result<(), StoreError> {
        let ready = self.ready("leaving the room").await?;
        self.update::<RoomRecord, _>(&ready.rooms, room, |r| match r {
            Some(r) => match r.members.remove(user) {
                true => Ok(()),
                false => Err(Refusal::NotAMember(room.to_owned()).into()),
            },
            None => Err(Refusal::NoSuchRoom(room.to_owned()).into()),
        })
        .await?;
        self.member_of(ready, user, room, false).await
    }

    async fn member_of(
        &self,
        ready: &Ready,
        user: &str,
        room: &str,
        member: bool,
    ) -> Result<(), StoreError> {
        self.update::<UserRecord, _>(&ready.users, user, |r| {
            let r = r.get_or_insert_with(Default::default);
            if member {
                r.rooms.insert(room.to_owned());
            } else {
                r.rooms.remove(room);
            }
            Ok(())
        })
        .await?;
        self.refilter(ready, user).await
    }

    /// Records when `user` was last seen.
    pub async fn seen(&self, user: &str, time: u64) -> Result<(), StoreError> {
        let ready = self.ready("recording presence").await?;
        self.update::<UserRecord, _>(&ready.users, user, |r| {
            r.get_or_insert_with(Default::default).last_seen = time;
            Ok(())
        })
        .await
    }

    /// Everyone who shares a room or a direct conversation with `user`.
    pub async fn peers(&self, user: &str) -> Result<BTreeSet<String>, StoreError> {
        let ready = self.ready("reading contacts").await?;
        let me = self
            .record::<UserRecord>(&ready.users, user)
            .await?
            .unwrap_or_default();
        let mut out = me.contacts;
        for room in &me.rooms {
            if let Some(r) = self.record::<RoomRecord>(&ready.rooms, room).await? {
                out.extend(r.members);
            }
        }
        out.remove(user);
        Ok(out)
    }

    /// A room's members and when each was last seen.
    pub async fn members(&self, room: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let ready = self.ready("reading the room").await?;
        let record = self
            .record::<RoomRecord>(&ready.rooms, room)
            .await?
            .ok_or_else(|| Refusal::NoSuchRoom(room.to_owned()))?;
        let mut out = Vec::with_capacity(record.members.len());
        for m in record.members {
            let seen = self
                .record::<UserRecord>(&ready.users, &m)
                .await?
                .unwrap_or_default()
                .last_seen;
            out.push((m, seen));
        }
        Ok(out)
    }

    /// A page of a conversation, read forward through an ephemeral consumer: up to `limit`
    /// messages with a sequence number below `before`, and whether older ones exist.
    pub async fn history(
        &self,
        user: &str,
        target: Target,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let page = self.page(user, target, before, limit);
        match tokio::time::timeout(4 * super::TIMEOUT, page).await {
            Ok(r) => r,
            Err(_) => Err(self.unreachable("reading history")),
        }
    }

    async fn page(
        &self,
        user: &str,
        target: Target,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let ready = self.ready("reading history").await?;
        let subjects = match &target {
            Target::Room(room) => {
                let record = self
                    .record::<RoomRecord>(&ready.rooms, room)
                    .await?
                    .ok_or_else(|| Refusal::NoSuchRoom(room.clone()))?;
                if !record.members.contains(user) {
                    return Err(Refusal::NotAMember(room.clone()).into());
                }
                vec![room_subject(room)]
            }
            Target::User(with) if with == user => vec![dm(user, user)],
            Target::User(with) => vec![dm(user, with), dm(with, user)],
        };
        let c: consumer::PullConsumer = ready
            .stream
            .create_consumer(consumer::pull::Config {
                filter_subjects: subjects,
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: std::time::Duration::from_secs(30),
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(self.fail("read history"))?;
        let end = before.unwrap_or(u64::MAX);
        let mut page: VecDeque<Message> = VecDeque::with_capacity(limit + 1);
        let mut more = false;
        'read: loop {
            let mut batch = c
                .fetch()
                .max_messages(512)
                .messages()
                .await
                .map_err(self.fail("read history"))?;
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(self.fail("read history"))?;
                got += 1;
                let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
                    continue;
                };
                if seq >= end {
                    break 'read;
                }
                if let Ok(s) = serde_json::from_slice::<Stored>(&m.payload) {
                    page.push_back(s.message(seq));
                    if page.len() > limit {
                        page.pop_front();
                        more = true;
                    }
                }
            }
            if got == 0 {
                break;
            }
        }
        let name = c.cached_info().name.clone();
        let _ = ready.stream.delete_consumer(&name).await;
        Ok((page.into(), more))
    }
}

/// Whether a KV write failed because another writer got there first, as JetStream says it
/// with code 10164 ("wrong last sequence" without a number: a create that lost against
/// another node's create of the same key). async-nats 0.46 names only code 10071 as a
/// revision conflict and reports this one as `Other`, so its text is read here. Seen in the
/// rig's scale rows: two nodes made one user's record at the same moment, and the send
/// that lost was refused instead of tried again.
fn lost_race(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if text.contains("10164") || text.contains("wrong last sequence") {
            return true;
        }
        next = e.source();
    }
    false
}
