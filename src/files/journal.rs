//! The chunk journal of a partial upload (`ROOT/users/USER/.partial/KEY.cvs`): the hash of
//! every chunk written to the partial file, so that a resume need not read and hash the
//! bytes again before it answers.
//!
//! The hashes were checked against the client's when the chunks arrived, so they are the
//! partial file's own as long as nothing else changed the file since. Each record therefore
//! also holds the partial file's identity right after its chunk was written: inode, length
//! and change time (`ctime`, which every write updates and no user can set back). A resume
//! trusts the journal only when its last record matches the file as it is now; anything
//! else (a write the journal missed because the process died between the two, a journal cut
//! short, the file changed or replaced on disk) falls back to reading and hashing the bytes,
//! which also finds a corrupted partial file. Nothing here is synced: a journal lost or torn
//! in a crash only costs that read.
//!
//! A record is 60 bytes, big-endian: the chunk's hash (32), the partial file's length after
//! the write (8), its inode (8), its change time in seconds (8) and nanoseconds (4).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::codec::{Hash, MAX_CHUNK};

/// Bytes per record.
pub const RECORD: usize = 60;

/// The identity of a partial file at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ino: u64,
    ctime_secs: i64,
    ctime_nanos: u32,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            ino: meta.ino(),
            ctime_secs: meta.ctime(),
            ctime_nanos: u32::try_from(meta.ctime_nsec()).unwrap_or(u32::MAX),
        }
    }
}

fn encode(hash: &Hash, stamp: Stamp) -> [u8; RECORD] {
    let mut out = [0u8; RECORD];
    out[..32].copy_from_slice(hash);
    out[32..40].copy_from_slice(&stamp.len.to_be_bytes());
    out[40..48].copy_from_slice(&stamp.ino.to_be_bytes());
    out[48..56].copy_from_slice(&stamp.ctime_secs.to_be_bytes());
    out[56..60].copy_from_slice(&stamp.ctime_nanos.to_be_bytes());
    out
}

fn decode(record: &[u8]) -> Option<(Hash, Stamp)> {
    let field = |from: usize, to: usize| record.get(from..to);
    let hash: Hash = field(0, 32)?.try_into().ok()?;
    let stamp = Stamp {
        len: u64::from_be_bytes(field(32, 40)?.try_into().ok()?),
        ino: u64::from_be_bytes(field(40, 48)?.try_into().ok()?),
        ctime_secs: i64::from_be_bytes(field(48, 56)?.try_into().ok()?),
        ctime_nanos: u32::from_be_bytes(field(56, 60)?.try_into().ok()?),
    };
    Some((hash, stamp))
}

/// A journal being written, one record per chunk written to the partial file.
#[derive(Debug)]
pub struct Journal {
    file: File,
}

impl Journal {
    /// Starts the journal at `path` anew with the hashes of the chunks the partial file
    /// `part` keeps (from its start), stamped with the file as it is now, so that a resume
    /// right after this one trusts them too.
    pub fn start(path: &Path, kept: &[Hash], part: &File) -> io::Result<Journal> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let now = Stamp::of(&part.metadata()?);
        let mut bytes = Vec::with_capacity(kept.len() * RECORD);
        for (i, hash) in kept.iter().enumerate() {
            let len = (i as u64 + 1) * MAX_CHUNK as u64;
            bytes.extend_from_slice(&encode(hash, Stamp { len, ..now }));
        }
        file.write_all(&bytes)?;
        Ok(Journal { file })
    }

    /// Records the chunk just written to `part` (at its current end) and the file's identity.
    pub fn record(&mut self, hash: &Hash, part: &File) -> io::Result<()> {
        let stamp = Stamp::of(&part.metadata()?);
        self.file.write_all(&encode(hash, stamp))
    }

    /// Forgets every record: the upload starts over.
    pub fn clear(&mut self) -> io::Result<()> {
        use std::io::Seek;
        self.file.set_len(0)?;
        self.file.seek(io::SeekFrom::Start(0))?;
        Ok(())
    }
}

/// The hashes of the first `keep / MAX_CHUNK` chunks of the `size`-byte partial file `part`,
/// from the journal at `path`, when the journal covers them and its last record matches the
/// file as it is now (see the module's documentation); `None` otherwise: the caller reads the
/// bytes.
pub fn recorded(path: &Path, part: &File, keep: u64, size: u64) -> Option<Vec<Hash>> {
    let chunk = MAX_CHUNK as u64;
    let want = usize::try_from(keep / chunk).ok()?;
    // Limits before allocation: never more records than the file has chunks.
    let most = size.div_ceil(chunk).checked_mul(RECORD as u64)?;
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    if len > most || len % RECORD as u64 != 0 || len < (want * RECORD) as u64 {
        return None;
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).ok()?);
    file.read_to_end(&mut bytes).ok()?;
    let records: Vec<(Hash, Stamp)> = bytes.chunks(RECORD).map(decode).collect::<Option<_>>()?;
    let (_, last) = records.last()?;
    if *last != Stamp::of(&part.metadata().ok()?) {
        return None;
    }
    // Every record's chunk ends where the next one starts: the records are the file's chunks.
    let contiguous = records
        .iter()
        .enumerate()
        .all(|(i, (_, s))| s.len == ((i as u64 + 1) * chunk).min(size));
    contiguous.then(|| records[..want].iter().map(|(h, _)| *h).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: usize = MAX_CHUNK;

    /// A partial file of `chunks` whole chunks with their journal, as an upload writes them.
    fn written(dir: &Path, chunks: usize) -> (File, std::path::PathBuf, Vec<Hash>) {
        let part_path = dir.join("x.part");
        let mut part = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&part_path)
            .unwrap();
        let journal_path = dir.join("x.cvs");
        let mut journal = Journal::start(&journal_path, &[], &part).unwrap();
        let mut hashes = Vec::new();
        for i in 0..chunks {
            let data = vec![i as u8; C];
            part.write_all(&data).unwrap();
            let hash = *blake3::hash(&data).as_bytes();
            journal.record(&hash, &part).unwrap();
            hashes.push(hash);
        }
        (part, journal_path, hashes)
    }

    #[test]
    fn a_journal_that_matches_the_file_gives_its_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let size = 10 * C as u64 + 7;
        let (part, journal, hashes) = written(dir.path(), 4);
        let got = recorded(&journal, &part, 4 * C as u64, size).unwrap();
        assert_eq!(got, hashes);
        let got = recorded(&journal, &part, 2 * C as u64, size).unwrap();
        assert_eq!(got, hashes[..2]);
        // More than the journal covers: the bytes must be read.
        assert!(recorded(&journal, &part, 5 * C as u64, size).is_none());
    }

    #[test]
    fn a_changed_file_or_a_torn_journal_is_not_trusted() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let size = 10 * C as u64;
        // Changed in place (a flipped byte) after the last record: its ctime moved.
        let (part, journal, _) = written(dir.path(), 3);
        std::thread::sleep(std::time::Duration::from_millis(20));
        part.write_all_at(b"!", 1000).unwrap();
        assert!(recorded(&journal, &part, 3 * C as u64, size).is_none());

        // A chunk written after the last record (the process died in between).
        let (mut part, journal, _) = written(dir.path(), 3);
        part.write_all(&vec![9; C]).unwrap();
        assert!(recorded(&journal, &part, 3 * C as u64, size).is_none());

        // A torn record at the end, and a journal longer than the file could need.
        let (part, journal, _) = written(dir.path(), 3);
        let mut j = File::options().append(true).open(&journal).unwrap();
        j.write_all(&[1, 2, 3]).unwrap();
        assert!(recorded(&journal, &part, 3 * C as u64, size).is_none());
        assert!(recorded(&journal, &part, 2 * C as u64, 2 * C as u64).is_none());
    }

    #[test]
    fn a_restarted_journal_keeps_what_the_partial_keeps_and_clear_forgets() {
        use std::io::Seek;
        let dir = tempfile::tempdir().unwrap();
        let size = 10 * C as u64;
        let (mut part, path, hashes) = written(dir.path(), 4);
        // A resume cuts the partial to 2 chunks and starts the journal again with them:
        // trusted at once (a resume right now), and after one more chunk.
        part.set_len(2 * C as u64).unwrap();
        let mut journal = Journal::start(&path, &hashes[..2], &part).unwrap();
        let records = |path: &Path| std::fs::metadata(path).unwrap().len() / RECORD as u64;
        assert_eq!(records(&path), 2);
        assert_eq!(
            recorded(&path, &part, 2 * C as u64, size).unwrap(),
            hashes[..2]
        );
        part.seek(io::SeekFrom::Start(2 * C as u64)).unwrap();
        part.write_all(&[5; C]).unwrap();
        let third = [5u8; 32];
        journal.record(&third, &part).unwrap();
        let got = recorded(&path, &part, 3 * C as u64, size).unwrap();
        assert_eq!(got, [hashes[0], hashes[1], third]);
        journal.clear().unwrap();
        assert_eq!(records(&path), 0);
        assert!(recorded(&path, &part, 2 * C as u64, size).is_none());
    }
}
