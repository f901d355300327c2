//! One BLAKE3 pass per file: a chunk's hash is a node of the file's own BLAKE3 tree, and
//! the whole file's hash is merged from the chunks' hashes (no second pass over the bytes).
//!
//! A file of at most [`MAX_CHUNK`] bytes travels as one chunk whose hash is the BLAKE3 of
//! its bytes, which is also the file's hash. A larger file travels in chunks of exactly
//! [`MAX_CHUNK`] bytes at offsets that are multiples of it (the last one may be shorter);
//! each chunk's hash is the BLAKE3 *chaining value* of that subtree (its bytes at its
//! offset, not the root), and the file's hash (plain BLAKE3 of the whole file, as `b3sum`
//! prints it) is the root merged from them ([`blake3::hazmat`]). So the sender hashes each
//! byte once for both, and so does the receiver to check both.
//!
//! No I/O here; every input that could make the hazmat functions assert (an offset that is
//! not a chunk boundary, an empty or too long subtree) is refused before they are called.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};

use super::codec::{Hash, MAX_CHUNK};

const CHUNK: u64 = MAX_CHUNK as u64;

/// Whether a file of `size` bytes travels as more than one chunk.
fn chunked(size: u64) -> bool {
    size > CHUNK
}

/// Whether `len` bytes at `offset` are a chunk of a `size`-byte file: on a chunk boundary,
/// inside the file, whole unless it is the last, never empty unless the file is.
pub fn fits(size: u64, offset: u64, len: usize) -> bool {
    let len = len as u64;
    let Some(end) = offset.checked_add(len) else {
        return false;
    };
    if len > CHUNK || end > size || !offset.is_multiple_of(CHUNK) {
        return false;
    }
    if !chunked(size) {
        return offset == 0 && len == size;
    }
    len > 0 && (len == CHUNK || end == size)
}

/// The hash a chunk of a `size`-byte file at `offset` carries, or `None` when no such chunk
/// exists (see [`fits`]).
pub fn chunk_hash(size: u64, offset: u64, data: &[u8]) -> Option<Hash> {
    if !fits(size, offset, data.len()) {
        return None;
    }
    if !chunked(size) {
        return Some(*blake3::hash(data).as_bytes());
    }
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(data);
    Some(hasher.finalize_non_root())
}

/// The whole file's hash, merged from its chunks' hashes as they come, in order.
#[derive(Debug, Clone)]
pub struct FileHash {
    size: u64,
    /// Bytes covered so far.
    done: u64,
    /// Merged subtrees, left to right (BLAKE3's chaining-value stack).
    stack: Vec<Hash>,
    /// Chunks merged into `stack`.
    merged: u64,
    /// The newest chunk's hash: merged only once the next one comes, as the last one is
    /// finished differently.
    last: Option<Hash>,
}

impl FileHash {
    /// For a file of `size` bytes.
    pub fn new(size: u64) -> Self {
        FileHash {
            size,
            done: 0,
            stack: Vec::new(),
            merged: 0,
            last: None,
        }
    }

    /// Bytes covered so far: where the next chunk starts.
    pub fn offset(&self) -> u64 {
        self.done
    }

    /// Adds the next chunk (`len` bytes at [`FileHash::offset`], already checked against
    /// `hash` with [`chunk_hash`]). False, and nothing changes, when it does not fit.
    pub fn push(&mut self, len: usize, hash: Hash) -> bool {
        if !fits(self.size, self.done, len) {
            return false;
        }
        if let Some(previous) = self.last.take() {
            self.merged += 1;
            let mut cv = previous;
            let mut total = self.merged;
            while total & 1 == 0 {
                let Some(left) = self.stack.pop() else { break };
                cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
                total >>= 1;
            }
            self.stack.push(cv);
        }
        self.last = Some(hash);
        self.done += len as u64;
        true
    }

    /// The whole file's BLAKE3, once every byte is covered.
    pub fn finalize(&self) -> Option<Hash> {
        if self.done != self.size {
            return None;
        }
        if self.size == 0 {
            return Some(*blake3::hash(b"").as_bytes());
        }
        let mut cv = self.last?;
        if !chunked(self.size) {
            return Some(cv);
        }
        let mut stack = self.stack.clone();
        while let Some(left) = stack.pop() {
            if stack.is_empty() {
                return Some(*merge_subtrees_root(&left, &cv, Mode::Hash).as_bytes());
            }
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
        }
        None
    }
}

/// The first bytes of a `size`-byte file, hashed in one pass for a resume: the plain BLAKE3
/// of those bytes (what READY and GET carry) and the file's [`FileHash`] so far.
#[derive(Debug, Clone)]
pub struct Prefix {
    file: FileHash,
    /// The chunks' hashes, to merge the prefix's own root from.
    chunks: Vec<Hash>,
    /// The first chunk's bytes as a root, for a prefix of exactly one chunk.
    first_root: Option<Hash>,
}

impl Prefix {
    /// For the first bytes of a `size`-byte file. A resume starts on a chunk boundary:
    /// [`resume_point`] says where.
    pub fn new(size: u64) -> Self {
        Prefix {
            file: FileHash::new(size),
            chunks: Vec::new(),
            first_root: None,
        }
    }

    /// The prefix made of the chunks whose hashes (see [`chunk_hash`]) are `hashes`, in
    /// order from the file's start, without their bytes: for hashes computed earlier (in
    /// parallel, or recorded when the chunks were written). `None` when they do not fit, and
    /// for a single chunk (whose prefix hash is its bytes' root, not derivable from its hash).
    pub fn from_hashes(size: u64, hashes: &[Hash]) -> Option<Prefix> {
        if hashes.len() < 2 || !chunked(size) {
            return None;
        }
        let mut prefix = Prefix::new(size);
        for hash in hashes {
            if !prefix.file.push(MAX_CHUNK, *hash) {
                return None;
            }
            prefix.chunks.push(*hash);
        }
        Some(prefix)
    }

    /// Adds the next whole chunk of the prefix; false when it does not fit.
    pub fn push(&mut self, data: &[u8]) -> bool {
        let offset = self.file.offset();
        if data.len() != MAX_CHUNK || !chunked(self.file.size) {
            return false;
        }
        let Some(hash) = chunk_hash(self.file.size, offset, data) else {
            return false;
        };
        if !self.file.push(data.len(), hash) {
            return false;
        }
        if offset == 0 {
            self.first_root = Some(*blake3::hash(data).as_bytes());
        }
        self.chunks.push(hash);
        true
    }

    /// Bytes covered.
    pub fn len(&self) -> u64 {
        self.file.offset()
    }

    /// The hashes of the chunks covered, in order.
    pub fn chunk_hashes(&self) -> &[Hash] {
        &self.chunks
    }

    /// Keeps only the first `len` bytes (a chunk boundary, at most [`Prefix::len`]); false,
    /// and nothing changes, otherwise.
    pub fn truncate(&mut self, len: u64) -> bool {
        if len > self.len() || !len.is_multiple_of(CHUNK) {
            return false;
        }
        let keep = (len / CHUNK) as usize;
        self.chunks.truncate(keep);
        let mut file = FileHash::new(self.file.size);
        for h in &self.chunks {
            file.push(MAX_CHUNK, *h);
        }
        self.file = file;
        if keep == 0 {
            self.first_root = None;
        }
        true
    }

    /// Whether nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The plain BLAKE3 of the bytes covered.
    pub fn hash(&self) -> Hash {
        match self.len() {
            0 => *blake3::hash(b"").as_bytes(),
            CHUNK => self.first_root.unwrap_or_default(),
            len => {
                let mut p = FileHash::new(len);
                for h in &self.chunks {
                    p.push(MAX_CHUNK, *h);
                }
                p.finalize().unwrap_or_default()
            }
        }
    }

    /// The file's hash so far, to go on with the chunks after the prefix.
    pub fn into_file(self) -> FileHash {
        self.file
    }
}

/// Where a resume of a `size`-byte file can start when `have` bytes are already there: the
/// last chunk boundary at or before `have`, and never for a file of one chunk.
pub fn resume_point(size: u64, have: u64) -> u64 {
    if !chunked(size) {
        return 0;
    }
    let have = have.min(size);
    have - have % CHUNK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 997) as u8).collect()
    }

    fn by_chunks(data: &[u8]) -> Option<Hash> {
        let size = data.len() as u64;
        let mut file = FileHash::new(size);
        if data.is_empty() {
            assert!(file.push(0, chunk_hash(0, 0, data)?));
        }
        for (i, piece) in data.chunks(MAX_CHUNK).enumerate() {
            let offset = (i * MAX_CHUNK) as u64;
            let hash = chunk_hash(size, offset, piece)?;
            assert!(file.push(piece.len(), hash));
        }
        file.finalize()
    }

    #[test]
    fn the_merged_hash_is_plain_blake3() {
        let c = MAX_CHUNK;
        for len in [
            0,
            1,
            c - 1,
            c,
            c + 1,
            2 * c,
            2 * c + 3,
            3 * c,
            4 * c,
            4 * c + 1,
            5 * c - 1,
            7 * c,
            8 * c,
            9 * c + 100,
        ] {
            let data = bytes(len);
            assert_eq!(
                by_chunks(&data),
                Some(*blake3::hash(&data).as_bytes()),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn prefixes_from_recorded_hashes_equal_hashed_ones() {
        let c = MAX_CHUNK;
        let data = bytes(6 * c + 5);
        let size = data.len() as u64;
        let hashes: Vec<Hash> = data
            .chunks(c)
            .enumerate()
            .map(|(i, piece)| chunk_hash(size, (i * c) as u64, piece).unwrap())
            .collect();
        for chunks in 2..=6 {
            let recorded = Prefix::from_hashes(size, &hashes[..chunks]).unwrap();
            let mut hashed = Prefix::new(size);
            for piece in data[..chunks * c].chunks(c) {
                assert!(hashed.push(piece));
            }
            assert_eq!(recorded.len(), hashed.len());
            assert_eq!(recorded.hash(), hashed.hash(), "{chunks} chunks");
            assert_eq!(
                recorded.hash(),
                *blake3::hash(&data[..chunks * c]).as_bytes()
            );
            let mut file = recorded.into_file();
            for (i, piece) in data[chunks * c..].chunks(c).enumerate() {
                let offset = ((chunks + i) * c) as u64;
                assert!(file.push(piece.len(), chunk_hash(size, offset, piece).unwrap()));
            }
            assert_eq!(file.finalize(), Some(*blake3::hash(&data).as_bytes()));
        }
        // One chunk: its prefix hash needs the bytes; more chunks than the file has: refused.
        assert!(Prefix::from_hashes(size, &hashes[..1]).is_none());
        assert!(Prefix::from_hashes(size, &[hashes[0]; 8]).is_none());
        assert!(Prefix::from_hashes(c as u64, &[hashes[0]; 2]).is_none());
    }

    #[test]
    fn prefixes_hash_like_their_bytes_and_go_on() {
        let c = MAX_CHUNK;
        let data = bytes(5 * c + 17);
        let size = data.len() as u64;
        for chunks in 0..=5 {
            let mut prefix = Prefix::new(size);
            for piece in data[..chunks * c].chunks(c) {
                assert!(prefix.push(piece));
            }
            assert_eq!(
                prefix.hash(),
                *blake3::hash(&data[..chunks * c]).as_bytes(),
                "{chunks}"
            );
            let mut file = prefix.into_file();
            for (i, piece) in data[chunks * c..].chunks(c).enumerate() {
                let offset = ((chunks + i) * c) as u64;
                assert!(file.push(piece.len(), chunk_hash(size, offset, piece).unwrap()));
            }
            assert_eq!(file.finalize(), Some(*blake3::hash(&data).as_bytes()));
        }
        // Hashed too far, then cut back to what the other side has.
        let mut prefix = Prefix::new(size);
        for piece in data[..5 * c].chunks(c) {
            assert!(prefix.push(piece));
        }
        assert!(!prefix.truncate(c as u64 + 1) && !prefix.truncate(6 * c as u64));
        assert!(prefix.truncate(2 * c as u64));
        assert_eq!(prefix.hash(), *blake3::hash(&data[..2 * c]).as_bytes());
        let mut file = prefix.into_file();
        for (i, piece) in data[2 * c..].chunks(c).enumerate() {
            let offset = ((2 + i) * c) as u64;
            assert!(file.push(piece.len(), chunk_hash(size, offset, piece).unwrap()));
        }
        assert_eq!(file.finalize(), Some(*blake3::hash(&data).as_bytes()));
    }

    #[test]
    fn chunks_that_do_not_fit_are_refused_without_panic() {
        let c = MAX_CHUNK as u64;
        let data = bytes(MAX_CHUNK);
        assert!(
            chunk_hash(3 * c, 1024, &data).is_none(),
            "not on a boundary"
        );
        assert!(chunk_hash(3 * c, 3 * c, &[]).is_none(), "empty, at the end");
        assert!(
            chunk_hash(3 * c, c, &data[..10]).is_none(),
            "short, not last"
        );
        assert!(
            chunk_hash(c, 0, &data[..10]).is_none(),
            "short single chunk"
        );
        assert!(
            chunk_hash(u64::MAX, u64::MAX - 5, &data).is_none(),
            "overflow"
        );
        assert!(chunk_hash(2 * c, 2 * c, &data).is_none(), "past the end");
        assert!(chunk_hash(0, 0, &[]).is_some(), "the empty file");
        let mut file = FileHash::new(3 * c);
        assert!(!file.push(10, [0; 32]), "short first chunk");
        assert!(file.push(MAX_CHUNK, [0; 32]));
        assert!(!file.push(0, [0; 32]));
        assert!(file.finalize().is_none());
        assert_eq!(resume_point(10 * c, 3 * c + 5), 3 * c);
        assert_eq!(resume_point(c, c), 0);
        assert_eq!(resume_point(2 * c, 9 * c), 2 * c);
    }
}
