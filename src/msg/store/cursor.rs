//! A room member's cursor: which of the room's messages the member is done with.
//!
//! A room message is stored once; what each member still has to receive is the room's
//! messages past their cursor. `acked` is the room sequence up to which everything is done
//! (acknowledged, sent by the member, or from before the member joined); `ahead` holds the
//! sequences past it that are done too (an `ACK` out of order, the member's own messages while
//! they still have others' to acknowledge), as sorted, disjoint, non-adjacent inclusive ranges.
//! A client that acknowledges in order keeps `ahead` empty or short: the first range is folded
//! into `acked` as soon as it touches it.
//!
//! Stored as little-endian `u64`s: `acked`, then each range's first and last sequence (8
//! bytes for a member with nothing out of order, the usual case).

/// A member's cursor in one room (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    acked: u64,
    ahead: Vec<(u64, u64)>,
    /// The sequences in `ahead`, counted.
    ahead_count: u64,
}

impl Cursor {
    /// A cursor with everything up to `seq` done: a member who joins when the room's latest
    /// message is `seq` receives only what comes after.
    pub fn at(seq: u64) -> Cursor {
        Cursor {
            acked: seq,
            ahead: Vec::new(),
            ahead_count: 0,
        }
    }

    /// Everything up to this sequence is done.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Whether message `seq` of the room is still to be received (and acknowledged).
    pub fn is_pending(&self, seq: u64) -> bool {
        if seq <= self.acked {
            return false;
        }
        // The range that would hold `seq`: the last one starting at or before it.
        let i = self.ahead.partition_point(|&(first, _)| first <= seq);
        i == 0 || self.ahead[i - 1].1 < seq
    }

    /// Marks message `seq` done; true when it was pending (false: done already).
    pub fn ack(&mut self, seq: u64) -> bool {
        // The usual case, the next one in order: no range to make (and no allocation).
        if self.acked.checked_add(1) == Some(seq) {
            self.acked = seq;
            if let Some(&(first, last)) = self.ahead.first() {
                if seq.checked_add(1) == Some(first) {
                    self.acked = last;
                    self.ahead_count -= last - first + 1;
                    self.ahead.remove(0);
                }
            }
            return true;
        }
        if !self.is_pending(seq) {
            return false;
        }
        let i = self.ahead.partition_point(|&(first, _)| first <= seq);
        let joins_prev = i > 0 && self.ahead[i - 1].1 + 1 == seq;
        let joins_next =
            i < self.ahead.len() && seq.checked_add(1).is_some_and(|n| self.ahead[i].0 == n);
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ahead[i - 1].1 = self.ahead[i].1;
                self.ahead.remove(i);
            }
            (true, false) => self.ahead[i - 1].1 = seq,
            (false, true) => self.ahead[i].0 = seq,
            (false, false) => self.ahead.insert(i, (seq, seq)),
        }
        self.ahead_count += 1;
        // Fold the first range into `acked` once it follows it.
        if let Some(&(first, last)) = self.ahead.first() {
            if first == self.acked + 1 {
                self.acked = last;
                self.ahead_count -= last - first + 1;
                self.ahead.remove(0);
            }
        }
        true
    }

    /// The messages still to be received when the room's latest is `room_seq`: the member's
    /// queue length in this room (what `--max-queue` bounds).
    pub fn waiting(&self, room_seq: u64) -> u64 {
        room_seq
            .saturating_sub(self.acked)
            .saturating_sub(self.ahead_count)
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 16 * self.ahead.len());
        out.extend_from_slice(&self.acked.to_le_bytes());
        for &(first, last) in &self.ahead {
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&last.to_le_bytes());
        }
        out
    }

    /// Reads the stored form; `None` when it is not one (a damaged value).
    pub fn decode(bytes: &[u8]) -> Option<Cursor> {
        if bytes.len() < 8 || !(bytes.len() - 8).is_multiple_of(16) {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        let acked = word(0)?;
        let mut ahead = Vec::with_capacity((bytes.len() - 8) / 16);
        let mut ahead_count = 0u64;
        let mut last_end = acked;
        for i in (8..bytes.len()).step_by(16) {
            let (first, last) = (word(i)?, word(i + 8)?);
            // Sorted, disjoint, not adjacent, past `acked`: anything else is not ours.
            if first <= last_end.checked_add(1)? || last < first {
                return None;
            }
            ahead.push((first, last));
            ahead_count = ahead_count.checked_add(last - first + 1)?;
            last_end = last;
        }
        Some(Cursor {
            acked,
            ahead,
            ahead_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_acks_keep_it_one_number() {
        let mut c = Cursor::at(3);
        assert!(!c.is_pending(3) && c.is_pending(4));
        assert_eq!(c.waiting(10), 7);
        for seq in 4..=10 {
            assert!(c.ack(seq));
        }
        assert!(!c.ack(7), "twice");
        assert_eq!((c.acked(), c.waiting(10), c.encode().len()), (10, 0, 8));
    }

    #[test]
    fn out_of_order_acks_are_ranges_that_fold_in() {
        let mut c = Cursor::at(0);
        for seq in [5, 3, 7, 4] {
            assert!(c.ack(seq));
        }
        // 3..=5 and 7 done, 1, 2 and 6 pending.
        assert_eq!(c.ahead, [(3, 5), (7, 7)]);
        assert_eq!(c.waiting(8), 4, "1, 2, 6 and 8");
        assert!(c.is_pending(1) && c.is_pending(6) && !c.is_pending(4) && !c.is_pending(7));
        assert!(!c.ack(4));
        let back = Cursor::decode(&c.encode()).unwrap();
        assert_eq!(back, c);
        assert!(c.ack(6));
        assert_eq!(c.ahead, [(3, 7)]);
        assert!(c.ack(1));
        assert_eq!((c.acked(), c.ahead.len()), (1, 1));
        assert!(c.ack(2));
        assert_eq!((c.acked(), c.ahead.len(), c.ahead_count), (7, 0, 0));
        assert_eq!(c.waiting(8), 1);
    }

    #[test]
    fn damaged_values_are_refused() {
        assert_eq!(Cursor::decode(&[]), None);
        assert_eq!(Cursor::decode(&[0; 12]), None);
        let mut bad = Cursor::at(5).encode();
        // A range at or below `acked`.
        bad.extend_from_slice(&5u64.to_le_bytes());
        bad.extend_from_slice(&6u64.to_le_bytes());
        assert_eq!(Cursor::decode(&bad), None);
        let mut rev = Cursor::at(1).encode();
        rev.extend_from_slice(&9u64.to_le_bytes());
        rev.extend_from_slice(&8u64.to_le_bytes());
        assert_eq!(Cursor::decode(&rev), None);
        assert_eq!(
            Cursor::decode(&u64::MAX.to_le_bytes()),
            Some(Cursor::at(u64::MAX))
        );
    }
}
