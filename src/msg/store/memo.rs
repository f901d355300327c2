//! What the store's writer remembers between batches, so that its hot path does not read back
//! what it wrote itself: where the latest messages come from (a member's `ACK` needs the sender
//! for the receipt, and for a room message the room and its sequence, to move the member's
//! cursor; without this it reads and parses the stored message, 99 times for one message to a
//! room of 100), the members of the rooms used (a room message is checked against each one's
//! cursor), the members' cursors, the direct queues' lengths, the conversations' latest
//! sequences, the users' and conversations' numbers (the keys of the queue and the history)
//! and the pairs of users known to be contacts. Lengths and sequences are not stored as such
//! (format 3): without this memory each would be counted or looked up in the queue and the
//! history, once per message.
//!
//! Only the writer changes the database, so what it remembers stays true as long as it
//! remembers only what is committed, or what its open transaction wrote: when a commit fails
//! the writer forgets everything ([`Memo::forget`]) and reads from the database again. Every
//! part is bounded; what was forgotten is read from the database as before.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The writer's maps: foldhash, not SipHash (a fifth of the cost per lookup; the keys are
/// user, room and conversation names, and the seed is random per process).
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// The writer's sets, hashed as [`Map`].
pub type Set<K> = HashSet<K, foldhash::fast::RandomState>;

use super::cursor::Cursor;

/// Messages whose sender is remembered (the latest ones): about 2 MiB at most.
pub const SENDERS_KEPT: usize = 65_536;
/// Rooms whose members are remembered.
pub const ROOMS_KEPT: usize = 1024;
/// Queues whose length is remembered (and as many conversations' sequences, and as many
/// pairs of contacts).
pub const LENS_KEPT: usize = 65_536;
/// Room members' cursors remembered (about 100 bytes each).
pub const CURSORS_KEPT: usize = 16_384;
/// The latest committed messages kept for delivery, at most (see [`Bodies`]).
pub const BODIES_KEPT: usize = 4096;
/// ... and at most this many bytes of them.
pub const BODY_BYTES_KEPT: usize = 4 << 20;

/// The writer's memory (see the module's documentation).
#[derive(Debug)]
pub struct Memo {
    /// The senders of the latest messages, by id.
    pub senders: Senders,
    members: Map<String, Arc<[String]>>,
    lens: Map<String, u64>,
    /// The latest sequence of each conversation, by its key.
    seqs: Map<Vec<u8>, u64>,
    /// Users' and conversations' numbers (they never change once given).
    user_numbers: Map<String, u64>,
    conv_numbers: Map<Vec<u8>, u64>,
    /// Direct conversations (by key) whose two users are recorded as contacts.
    contacts: Set<Vec<u8>>,
    /// Committed cursors, by room and member.
    cursors: Map<String, Map<String, Cursor>>,
    cursor_count: usize,
    rooms_kept: usize,
    lens_kept: usize,
}

impl Default for Memo {
    fn default() -> Self {
        Memo::new(SENDERS_KEPT, ROOMS_KEPT, LENS_KEPT)
    }
}

impl Memo {
    /// A memory of at most `senders` senders, `rooms` rooms' members, `lens` queue lengths.
    pub fn new(senders: usize, rooms: usize, lens: usize) -> Memo {
        Memo {
            senders: Senders::new(senders),
            members: Map::default(),
            lens: Map::default(),
            seqs: Map::default(),
            user_numbers: Map::default(),
            conv_numbers: Map::default(),
            contacts: Set::default(),
            cursors: Map::default(),
            cursor_count: 0,
            rooms_kept: rooms,
            lens_kept: lens,
        }
    }

    /// A member's committed cursor in a room, when remembered.
    pub fn cursor(&self, room: &str, user: &str) -> Option<&Cursor> {
        self.cursors.get(room)?.get(user)
    }

    /// Remembers the cursors a batch committed (`None`: the member left, the cursor is gone).
    pub fn set_cursors(&mut self, cursors: Map<String, Map<String, Option<Cursor>>>) {
        let changed: usize = cursors.values().map(HashMap::len).sum();
        if self.cursor_count + changed > CURSORS_KEPT {
            self.cursors.clear();
            self.cursor_count = 0;
        }
        for (room, users) in cursors {
            let kept = self.cursors.entry(room).or_default();
            for (user, cursor) in users {
                // Counted once per member: what the bound is about.
                match cursor {
                    Some(c) => {
                        if kept.insert(user, c).is_none() {
                            self.cursor_count += 1;
                        }
                    }
                    None => {
                        if kept.remove(&user).is_some() {
                            self.cursor_count -= 1;
                        }
                    }
                }
            }
        }
    }

    /// A room's members (sorted), when remembered: then the room exists.
    pub fn members(&self, room: &str) -> Option<Arc<[String]>> {
        self.members.get(room).cloned()
    }

    /// Remembers a room's members, as the writer's transaction reads them.
    pub fn set_members(&mut self, room: &str, members: Arc<[String]>) {
        if self.members.len() >= self.rooms_kept && !self.members.contains_key(room) {
            // Rooms come and go; the busy ones are remembered again at their next message.
            self.members.clear();
        }
        if self.rooms_kept > 0 {
            self.members.insert(room.to_owned(), members);
        }
    }

    /// A room's members changed: read them again next time.
    pub fn forget_room(&mut self, room: &str) {
        self.members.remove(room);
    }

    /// A queue's committed length, when remembered.
    pub fn len(&self, user: &str) -> Option<u64> {
        self.lens.get(user).copied()
    }

    /// Remembers the queue lengths a batch committed.
    pub fn set_lens(&mut self, lens: Map<String, u64>) {
        keep(&mut self.lens, lens, self.lens_kept);
    }

    /// A conversation's committed latest sequence, when remembered.
    pub fn seq(&self, conv: &[u8]) -> Option<u64> {
        self.seqs.get(conv).copied()
    }

    /// Remembers the sequences a batch committed.
    pub fn set_seqs(&mut self, seqs: Map<Vec<u8>, u64>) {
        keep(&mut self.seqs, seqs, self.lens_kept);
    }

    /// A user's number, when remembered.
    pub fn user_number(&self, user: &str) -> Option<u64> {
        self.user_numbers.get(user).copied()
    }

    /// Remembers a user's number (read, or given in the open transaction: a commit that
    /// fails forgets it with the rest).
    pub fn set_user_number(&mut self, user: &str, number: u64) {
        if self.user_numbers.len() >= self.lens_kept {
            self.user_numbers.clear();
        }
        if self.lens_kept > 0 {
            self.user_numbers.insert(user.to_owned(), number);
        }
    }

    /// A conversation's number, when remembered.
    pub fn conversation_number(&self, conv: &[u8]) -> Option<u64> {
        self.conv_numbers.get(conv).copied()
    }

    /// Remembers a conversation's number, as [`Memo::set_user_number`].
    pub fn set_conversation_number(&mut self, conv: &[u8], number: u64) {
        if self.conv_numbers.len() >= self.lens_kept {
            self.conv_numbers.clear();
        }
        if self.lens_kept > 0 {
            self.conv_numbers.insert(conv.to_vec(), number);
        }
    }

    /// Whether the two users of direct conversation `conv` are known to be contacts.
    pub fn knows_contacts(&self, conv: &[u8]) -> bool {
        self.contacts.contains(conv)
    }

    /// The two users of `conv` are contacts (recorded in the open transaction: a commit that
    /// fails forgets it with the rest).
    pub fn add_contacts(&mut self, conv: &[u8]) {
        if self.contacts.len() >= self.lens_kept {
            self.contacts.clear();
        }
        if self.lens_kept > 0 {
            self.contacts.insert(conv.to_vec());
        }
    }

    /// A commit failed: what was remembered may not be on disk.
    pub fn forget(&mut self) {
        *self = Memo::new(self.senders.kept, self.rooms_kept, self.lens_kept);
    }
}

/// Adds a committed batch's values to `kept`, which holds at most `bound` (all of it is
/// forgotten first when the batch would not fit).
fn keep<K: std::hash::Hash + Eq>(kept: &mut Map<K, u64>, batch: Map<K, u64>, bound: usize) {
    if kept.len() + batch.len() > bound {
        kept.clear();
    }
    for (k, v) in batch {
        if kept.len() >= bound {
            break;
        }
        kept.insert(k, v);
    }
}

/// Where a message comes from: its sender, and for a room message the room and its sequence
/// there (what an `ACK` moves the member's cursor to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The sender.
    pub from: Arc<str>,
    /// The room and the message's sequence in it; `None` for a direct message.
    pub room: Option<(Arc<str>, u64)>,
}

/// Where the latest messages come from: ids are given one after the other, so a ring indexed
/// by `id - first` finds one with no hashing.
#[derive(Debug)]
pub struct Senders {
    first: u64,
    names: VecDeque<Origin>,
    kept: usize,
}

impl Senders {
    fn new(kept: usize) -> Senders {
        Senders {
            first: 0,
            names: VecDeque::new(),
            kept,
        }
    }

    /// Where message `id` comes from, when remembered.
    pub fn get(&self, id: u64) -> Option<Origin> {
        let i = usize::try_from(id.checked_sub(self.first)?).ok()?;
        self.names.get(i).cloned()
    }

    /// Remembers that `from` sent message `id`, to `room` as its `seq`-th message when it is a
    /// room message (the oldest is forgotten past the bound; an id that does not follow the
    /// last one starts the memory again).
    pub fn push(&mut self, id: u64, from: &str, room: Option<(&str, u64)>) {
        if self.kept == 0 {
            return;
        }
        let next = self.first.checked_add(self.names.len() as u64);
        if self.names.is_empty() || next != Some(id) {
            self.names.clear();
            self.first = id;
        }
        // Consecutive messages of one sender, or to one room, share the name.
        let last = self.names.back();
        let from = match last {
            Some(o) if *o.from == *from => o.from.clone(),
            _ => Arc::from(from),
        };
        let room = room.map(|(room, seq)| {
            let name = match last.and_then(|o| o.room.as_ref()) {
                Some((r, _)) if **r == *room => r.clone(),
                _ => Arc::from(room),
            };
            (name, seq)
        });
        self.names.push_back(Origin { from, room });
        if self.names.len() > self.kept {
            self.names.pop_front();
            self.first += 1;
        }
    }

    /// Senders remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// The latest committed messages as stored (their `DELIVER` payloads), by id, shared by the
/// writer (which adds each batch's once it is committed) and the sessions' reads of their
/// queues: a message to a room of 100 is read from here by its 99 recipients instead of from
/// the database. A stored message never changes, so what is here is always right; what is
/// not here (older, or past the bounds) is read from the database.
#[derive(Debug)]
pub struct Bodies {
    first: u64,
    items: VecDeque<Arc<[u8]>>,
    bytes: usize,
    kept: usize,
    bytes_kept: usize,
}

impl Default for Bodies {
    fn default() -> Self {
        Bodies::new(BODIES_KEPT, BODY_BYTES_KEPT)
    }
}

impl Bodies {
    /// At most `kept` messages and `bytes_kept` bytes.
    pub fn new(kept: usize, bytes_kept: usize) -> Bodies {
        Bodies {
            first: 0,
            items: VecDeque::new(),
            bytes: 0,
            kept,
            bytes_kept,
        }
    }

    /// Message `id`'s payload, when kept.
    pub fn get(&self, id: u64) -> Option<Arc<[u8]>> {
        let i = usize::try_from(id.checked_sub(self.first)?).ok()?;
        self.items.get(i).cloned()
    }

    /// Keeps committed message `id` (the oldest go past the bounds; an id that does not
    /// follow the last one starts again).
    pub fn push(&mut self, id: u64, body: Arc<[u8]>) {
        let next = self.first.checked_add(self.items.len() as u64);
        if self.items.is_empty() || next != Some(id) {
            self.items.clear();
            self.bytes = 0;
            self.first = id;
        }
        self.bytes += body.len();
        self.items.push_back(body);
        while self.items.len() > self.kept
            || (self.bytes > self.bytes_kept && !self.items.is_empty())
        {
            if let Some(old) = self.items.pop_front() {
                self.bytes -= old.len();
                self.first += 1;
            }
        }
    }

    /// Messages kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_bounded_and_keep_the_latest() {
        let mut s = Senders::new(3);
        for id in 1..=5 {
            s.push(id, if id % 2 == 0 { "bob" } else { "alice" }, None);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(1), None);
        assert_eq!(s.get(2), None);
        assert_eq!(s.get(3).map(|o| o.from).as_deref(), Some("alice"));
        assert_eq!(s.get(4).map(|o| o.from).as_deref(), Some("bob"));
        assert_eq!(s.get(5).map(|o| o.from).as_deref(), Some("alice"));
        assert_eq!(s.get(6), None);
        assert_eq!(s.get(u64::MAX), None);
    }

    #[test]
    fn an_id_out_of_turn_starts_the_senders_again() {
        let mut s = Senders::new(10);
        s.push(7, "alice", Some(("ops", 1)));
        s.push(8, "alice", Some(("ops", 2)));
        s.push(20, "bob", None);
        assert_eq!((s.get(7), s.get(8)), (None, None));
        assert_eq!(s.get(20).map(|o| o.from).as_deref(), Some("bob"));
        assert_eq!(s.len(), 1);
        let mut none = Senders::new(0);
        none.push(1, "alice", None);
        assert_eq!((none.get(1), none.len()), (None, 0));
    }

    #[test]
    fn origins_of_room_messages_share_names_and_cursors_follow_commits() {
        let mut s = Senders::new(10);
        s.push(1, "alice", Some(("ops", 7)));
        s.push(2, "alice", Some(("ops", 8)));
        s.push(3, "bob", None);
        let (a, b) = (s.get(1).unwrap(), s.get(2).unwrap());
        assert_eq!(
            a.room.as_ref().map(|(r, seq)| (&**r, *seq)),
            Some(("ops", 7))
        );
        let (ra, rb) = (a.room.unwrap().0, b.room.unwrap().0);
        assert!(Arc::ptr_eq(&ra, &rb) && Arc::ptr_eq(&a.from, &b.from));
        assert_eq!(s.get(3).unwrap().room, None);

        let mut m = Memo::default();
        let batch = |user: &str, c: Option<Cursor>| {
            Map::from_iter([("ops".to_string(), Map::from_iter([(user.to_string(), c)]))])
        };
        m.set_cursors(batch("bob", Some(Cursor::at(4))));
        m.set_cursors(batch("carol", Some(Cursor::at(5))));
        assert_eq!(m.cursor("ops", "bob"), Some(&Cursor::at(4)));
        assert_eq!(m.cursor_count, 2);
        m.set_cursors(batch("bob", None));
        assert_eq!((m.cursor("ops", "bob"), m.cursor_count), (None, 1));
        m.forget();
        assert_eq!(m.cursor("ops", "carol"), None);
    }

    #[test]
    fn bodies_are_bounded_in_count_and_bytes() {
        let body = |n: usize| -> Arc<[u8]> { vec![b'x'; n].into() };
        let mut b = Bodies::new(3, 100);
        for id in 1..=4 {
            b.push(id, body(10));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.get(1), None);
        assert_eq!(b.get(2).map(|x| x.len()), Some(10));
        b.push(5, body(95));
        assert_eq!(b.len(), 1, "over the bytes: only the newest");
        assert_eq!((b.get(4), b.get(5).map(|x| x.len())), (None, Some(95)));
        b.push(6, body(200));
        assert_eq!(
            (b.len(), b.get(6), b.bytes),
            (0, None, 0),
            "one too large is not kept"
        );
        b.push(9, body(1));
        b.push(11, body(2));
        assert_eq!((b.get(9), b.get(11).map(|x| x.len())), (None, Some(2)));
    }

    #[test]
    fn rooms_and_lengths_are_bounded_and_forgotten() {
        let mut m = Memo::new(4, 2, 2);
        let list: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
        m.set_members("r1", list.clone());
        m.set_members("r2", list.clone());
        m.set_members("r3", list.clone());
        assert!(m.members.len() <= 2);
        assert!(m.members("r3").is_some());
        m.forget_room("r3");
        assert!(m.members("r3").is_none());
        m.set_lens(Map::from_iter([("a".to_string(), 1), ("b".to_string(), 2)]));
        assert_eq!((m.len("a"), m.len("b")), (Some(1), Some(2)));
        m.set_lens(Map::from_iter([("c".to_string(), 3)]));
        assert!(m.lens.len() <= 2);
        assert_eq!(m.len("c"), Some(3));
        m.set_seqs(Map::from_iter([(b"x".to_vec(), 7), (b"y".to_vec(), 8)]));
        m.set_seqs(Map::from_iter([(b"z".to_vec(), 9)]));
        assert!(m.seqs.len() <= 2);
        assert_eq!((m.seq(b"z"), m.seq(b"w")), (Some(9), None));
        m.set_user_number("a", 1);
        m.set_user_number("b", 2);
        m.set_user_number("c", 3);
        m.set_conversation_number(b"d\0a\0b", 4);
        assert!(m.user_numbers.len() <= 2);
        assert_eq!(m.user_number("c"), Some(3));
        assert_eq!(m.conversation_number(b"d\0a\0b"), Some(4));
        m.add_contacts(b"p");
        m.add_contacts(b"q");
        m.add_contacts(b"r");
        assert!(m.contacts.len() <= 2 && m.knows_contacts(b"r"));
        m.senders.push(1, "a", None);
        m.forget();
        assert_eq!(
            (m.len("c"), m.senders.get(1), m.members.len()),
            (None, None, 0)
        );
        assert_eq!((m.seq(b"z"), m.knows_contacts(b"r")), (None, false));
        assert_eq!(
            (m.user_number("c"), m.conversation_number(b"d\0a\0b")),
            (None, None)
        );
        assert_eq!(m.senders.kept, 4);
    }
}
