//! The history of direct conversations, written to its table in bulk instead of with every
//! batch (store format 5).
//!
//! A history entry (conversation, sequence → id) is an index of the messages table: each
//! stored message names its sender, its recipient and its sequence. Written with its message,
//! each one lands in its own conversation's leaf of the history tree, so a batch of 500
//! messages in 500 conversations copies and writes 500 pages of it (in the rig's direct case,
//! leaving the entries out altogether took a fifth off the server's CPU per message). A direct message's entry waits here instead, and
//! the writer adds those of many batches in one (every [`FLUSH_AT`] entries, and at most
//! [`FLUSH_AFTER`] after the oldest, or when it has nothing else to do): each leaf is then
//! written once for hundreds of messages.
//!
//! What survives a crash: the message itself is committed with its batch, as before, and
//! `meta` `history_through` says up to which id the history table is complete; on open, the
//! entries of the messages past it are made again from the messages (see
//! `Store::open`). Readers of the history see these entries as well as the table's (see
//! [`Unwritten::entries`]). Room messages are not kept here: a room's history is read for
//! every member's delivery, and is written with each batch as before.

use std::time::{Duration, Instant};

use super::memo::Map;

/// Entries waiting before the writer adds them to the history table (about 24 bytes each).
pub const FLUSH_AT: usize = 32_768;
/// How long the oldest entry waits at most.
pub const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// The committed entries not yet in the history table, by conversation number: (sequence,
/// id) in sequence order.
#[derive(Debug, Default)]
pub struct Unwritten {
    by_conv: Map<u64, Vec<(u64, u64)>>,
    len: usize,
    since: Option<Instant>,
}

impl Unwritten {
    /// Adds the entries of a committed batch, in the order they were written.
    pub fn extend(&mut self, entries: &[(u64, u64, u64)]) {
        if entries.is_empty() {
            return;
        }
        self.since.get_or_insert_with(Instant::now);
        for &(conv, seq, id) in entries {
            self.by_conv.entry(conv).or_default().push((seq, id));
        }
        self.len += entries.len();
    }

    /// The latest sequence waiting here for a conversation.
    pub fn last_seq(&self, conv: u64) -> Option<u64> {
        self.by_conv.get(&conv)?.last().map(|&(seq, _)| seq)
    }

    /// A conversation's entries below sequence `before`, in sequence order.
    pub fn entries(&self, conv: u64, before: u64) -> Vec<(u64, u64)> {
        match self.by_conv.get(&conv) {
            Some(v) => v.iter().copied().filter(|&(s, _)| s < before).collect(),
            None => Vec::new(),
        }
    }

    /// Every entry: (conversation, sequence, id).
    pub fn all(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.by_conv
            .iter()
            .flat_map(|(&conv, v)| v.iter().map(move |&(seq, id)| (conv, seq, id)))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the writer adds them to the table with the next batch, which brings `more`.
    pub fn due(&self, more: usize) -> bool {
        self.len + more >= FLUSH_AT || self.since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER)
    }

    /// How long the writer may wait for a job before it writes these.
    pub fn wait(&self) -> Option<Duration> {
        self.since.map(|t| FLUSH_AFTER.saturating_sub(t.elapsed()))
    }

    /// They are in the table now.
    pub fn clear(&mut self) {
        self.by_conv.clear();
        self.len = 0;
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_kept_by_conversation_in_order_and_cleared() {
        let mut u = Unwritten::default();
        assert!(u.wait().is_none() && !u.due(0));
        u.extend(&[(1, 1, 10), (2, 1, 11), (1, 2, 12)]);
        assert_eq!(u.all().count(), 3);
        assert_eq!(u.last_seq(1), Some(2));
        assert_eq!(u.last_seq(3), None);
        assert_eq!(u.entries(1, u64::MAX), vec![(1, 10), (2, 12)]);
        assert_eq!(u.entries(1, 2), vec![(1, 10)]);
        assert!(u.due(FLUSH_AT - 3) && !u.due(0));
        assert!(u.wait().is_some_and(|w| w <= FLUSH_AFTER));
        let mut all: Vec<_> = u.all().collect();
        all.sort();
        assert_eq!(all, vec![(1, 1, 10), (1, 2, 12), (2, 1, 11)]);
        u.clear();
        assert!(u.is_empty() && u.wait().is_none() && u.entries(1, 9).is_empty());
    }
}
