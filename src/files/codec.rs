//! The frames of `tlsnet-files/1`, without I/O: bytes in, [`Frame`]s out, and back.
//!
//! Every frame is a 5-byte header, the frame's kind (one byte) and the length of its payload
//! (u32, big-endian), then the payload. [`Header::parse`] checks the length against the
//! kind's limit ([`Kind::max_len`]) before anyone allocates for the payload;
//! [`Frame::decode`] then checks every field, and that nothing is left over. Integers are
//! big-endian; a string is a u16 length and that many bytes of UTF-8; a hash is 32 bytes of
//! BLAKE3. docs/PROTOCOL.md describes each frame byte by byte.
//!
//! ```
//! use tlsnet::files::codec::{Frame, Header, HEADER_LEN};
//! let mut bytes = Vec::new();
//! Frame::Hello { version: 1 }.encode(&mut bytes).unwrap();
//! let header = Header::parse(bytes[..HEADER_LEN].try_into().unwrap()).unwrap();
//! let frame = Frame::decode(header, bytes[HEADER_LEN..].to_vec()).unwrap();
//! assert_eq!(frame, Frame::Hello { version: 1 });
//! ```

use std::fmt;
use std::sync::Mutex;

use super::tree::{chunk_hash, fits};

/// The protocol version this codec speaks.
pub const VERSION: u16 = 1;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;
/// Most file bytes in one DATA frame (1 MiB).
pub const MAX_CHUNK: usize = 1 << 20;
/// Bytes of a DATA frame's payload before the file bytes: offset (8) and BLAKE3 (32).
pub const DATA_PREFIX: usize = 8 + 32;
/// Longest payload of every frame but DATA.
pub const MAX_CONTROL: usize = 16 * 1024;
/// Longest ERROR message, in bytes (longer ones are cut on a character boundary).
pub const MAX_MESSAGE: usize = 4096;

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// The kind of a frame: its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Client: the first frame, with the version it speaks.
    Hello = 0x01,
    /// Client: list a directory.
    List = 0x10,
    /// Client: make a directory (or set an existing one's mode and time).
    Mkdir = 0x11,
    /// Client: a file follows.
    Open = 0x12,
    /// Both: file bytes at an offset, with their hash.
    Data = 0x13,
    /// Both: the end of a file, with the whole file's hash.
    End = 0x14,
    /// Client: send me a file.
    Get = 0x15,
    /// Client: remove a file or a directory tree.
    Remove = 0x16,
    /// Server: the answer to HELLO.
    Welcome = 0x81,
    /// Server: a request succeeded.
    Ok = 0x82,
    /// Server: a request failed.
    Error = 0x83,
    /// Server: where a resumable upload goes on.
    Ready = 0x84,
    /// Server: one entry of a listing.
    Entry = 0x85,
    /// Server: the end of a listing.
    ListEnd = 0x86,
    /// Server: a file follows (the answer to GET).
    File = 0x87,
    /// Server: it is shutting down; no more requests.
    Goodbye = 0x88,
}

impl Kind {
    /// The kind for a byte, if there is one.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            0x01 => Kind::Hello,
            0x10 => Kind::List,
            0x11 => Kind::Mkdir,
            0x12 => Kind::Open,
            0x13 => Kind::Data,
            0x14 => Kind::End,
            0x15 => Kind::Get,
            0x16 => Kind::Remove,
            0x81 => Kind::Welcome,
            0x82 => Kind::Ok,
            0x83 => Kind::Error,
            0x84 => Kind::Ready,
            0x85 => Kind::Entry,
            0x86 => Kind::ListEnd,
            0x87 => Kind::File,
            0x88 => Kind::Goodbye,
            _ => return None,
        })
    }

    /// The longest payload a frame of this kind may have.
    pub fn max_len(self) -> usize {
        match self {
            Kind::Data => DATA_PREFIX + MAX_CHUNK,
            _ => MAX_CONTROL,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Kind::Hello => "HELLO",
            Kind::List => "LIST",
            Kind::Mkdir => "MKDIR",
            Kind::Open => "OPEN",
            Kind::Data => "DATA",
            Kind::End => "END",
            Kind::Get => "GET",
            Kind::Remove => "REMOVE",
            Kind::Welcome => "WELCOME",
            Kind::Ok => "OK",
            Kind::Error => "ERROR",
            Kind::Ready => "READY",
            Kind::Entry => "ENTRY",
            Kind::ListEnd => "LIST_END",
            Kind::File => "FILE",
            Kind::Goodbye => "GOODBYE",
        };
        f.write_str(name)
    }
}

/// Bytes that are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The kind byte is not one of ours.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The payload is longer than the kind allows.
    #[error("{kind} frame of {len} bytes (at most {max})")]
    TooLong {
        /// The kind.
        kind: Kind,
        /// The length the header gave (or an encoder would have written).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload ends inside a field.
    #[error("{kind} frame ends inside its {field}")]
    Truncated {
        /// The kind.
        kind: Kind,
        /// The field being read.
        field: &'static str,
    },
    /// Bytes are left after the last field.
    #[error("{kind} frame has {extra} bytes after its last field")]
    Trailing {
        /// The kind.
        kind: Kind,
        /// How many.
        extra: usize,
    },
    /// A string is not UTF-8.
    #[error("{kind} frame: {field} is not UTF-8")]
    NotUtf8 {
        /// The kind.
        kind: Kind,
        /// The field.
        field: &'static str,
    },
    /// A field has a value outside its range.
    #[error("{kind} frame: {field} is out of range")]
    BadValue {
        /// The kind.
        kind: Kind,
        /// The field.
        field: &'static str,
    },
}

/// A frame header: kind and payload length, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The kind.
    pub kind: Kind,
    /// The payload's length (at most `kind.max_len()`).
    pub len: usize,
}

impl Header {
    /// Reads a header; refuses unknown kinds and payloads over the kind's limit.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header, CodecError> {
        let kind = Kind::from_byte(bytes[0]).ok_or(CodecError::UnknownKind(bytes[0]))?;
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if len > kind.max_len() {
            return Err(CodecError::TooLong {
                kind,
                len,
                max: kind.max_len(),
            });
        }
        Ok(Header { kind, len })
    }

    /// The five bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let len = (self.len as u32).to_be_bytes();
        [self.kind as u8, len[0], len[1], len[2], len[3]]
    }
}

/// Which part of a user's space a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Area {
    /// The user's own files.
    #[default]
    Files = 0,
    /// What others sent the user, as `SENDER/PATH`.
    Inbox = 1,
}

/// A modification time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Mtime {
    /// Seconds (negative before 1970).
    pub secs: i64,
    /// Nanoseconds, below 1,000,000,000.
    pub nanos: u32,
}

/// What a file or directory is besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Meta {
    /// Size in bytes (0 for a directory).
    pub size: u64,
    /// Permission bits (`0o644`); higher bits are ignored.
    pub mode: u32,
    /// Modification time.
    pub mtime: Mtime,
}

/// A file or a directory in a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File = 0,
    /// A directory.
    Dir = 1,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File or directory.
    pub kind: EntryKind,
    /// The full path in the area (not checked here: see [`crate::files::paths`]).
    pub path: String,
    /// Size, mode and time.
    pub meta: Meta,
}

/// The first frame a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The version the server speaks.
    pub version: u16,
    /// The user id the server gave this client.
    pub user: String,
    /// Most file bytes in a DATA frame the server accepts.
    pub max_chunk: u32,
    /// Largest file the server stores.
    pub max_file: u64,
    /// The user's quota in bytes (0: none).
    pub quota: u64,
    /// Bytes the user has stored.
    pub used: u64,
}

/// The start of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Whether the client waits for READY (where to go on) before sending DATA.
    pub resume: bool,
    /// The file's size, mode and time.
    pub meta: Meta,
    /// The user to send it to (empty: the client's own space).
    pub to: String,
    /// Where it goes.
    pub path: String,
}

/// What the client has of a file it asks for (a partial download), so that the server can
/// go on where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Have {
    /// Bytes the client has.
    pub offset: u64,
    /// BLAKE3 of those bytes.
    pub prefix: Hash,
    /// The size of the file they came from.
    pub size: u64,
    /// The time of the file they came from.
    pub mtime: Mtime,
}

/// A request for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    /// Files or inbox.
    pub area: Area,
    /// What the client has already, if anything.
    pub have: Option<Have>,
    /// The file.
    pub path: String,
}

/// The start of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStart {
    /// Where the DATA frames start (0: from the beginning).
    pub offset: u64,
    /// The file's size, mode and time.
    pub meta: Meta,
    /// The file asked for.
    pub path: String,
}

/// Why a request failed, as the server sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request breaks the protocol.
    Protocol = 1,
    /// A name breaks the rules of [`crate::files::paths`].
    BadName = 2,
    /// No such file or directory.
    NotFound = 3,
    /// The user's quota would be exceeded.
    Quota = 4,
    /// The file is larger than the server's limit.
    TooLarge = 5,
    /// A hash did not match.
    Integrity = 6,
    /// The server could not read or write.
    Io = 7,
    /// Something else is in the way (a directory where a file goes, ...).
    Conflict = 8,
    /// The client has no usable user id.
    Identity = 9,
    /// The client speaks another version.
    Version = 10,
    /// Any code this version does not know.
    Other = 0xffff,
}

impl ErrorCode {
    fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::BadName,
            3 => ErrorCode::NotFound,
            4 => ErrorCode::Quota,
            5 => ErrorCode::TooLarge,
            6 => ErrorCode::Integrity,
            7 => ErrorCode::Io,
            8 => ErrorCode::Conflict,
            9 => ErrorCode::Identity,
            10 => ErrorCode::Version,
            _ => ErrorCode::Other,
        }
    }

    /// A stable label: `quota`, `too_large`, `bad_name`, ...
    pub fn label(self) -> &'static str {
        match self {
            ErrorCode::Protocol => "protocol",
            ErrorCode::BadName => "bad_name",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Quota => "quota",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Integrity => "integrity",
            ErrorCode::Io => "io",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Identity => "identity",
            ErrorCode::Version => "version",
            ErrorCode::Other => "other",
        }
    }
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub code: ErrorCode,
    /// The file or directory it is about (may be empty).
    pub path: String,
    /// In words.
    pub message: String,
}

impl Failure {
    /// A failure, its message cut to [`MAX_MESSAGE`] bytes.
    pub fn new(code: ErrorCode, path: impl Into<String>, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Failure {
            code,
            path: path.into(),
            message,
        }
    }
}

/// File bytes with their offset and hash. The payload is kept as it travels (offset, hash,
/// bytes), so that a chunk is sent and received without copying its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    payload: Vec<u8>,
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("offset", &self.offset())
            .field("len", &self.data().len())
            .finish()
    }
}

/// Full-size chunk buffers kept for reuse (at most [`SPARE_BUFFERS`], process-wide). A new
/// 1 MiB buffer is fresh memory that the kernel must fault in and zero page by page, and on
/// a VM whose host backs guest memory lazily that is the largest cost of a transfer: the
/// server's profile of a 2 GiB upload spent more time in page faults on new buffers than in
/// decryption. A reused buffer is memory already mapped (and in cache).
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// See [`SPARE`]: at most this many buffers of [`MAX_CHUNK`] (and a DATA prefix) are kept.
pub const SPARE_BUFFERS: usize = 8;

/// Payloads from this length on come from (and go back to) the spare buffers.
const REUSE_FROM: usize = 64 << 10;

/// A zeroed buffer of `len` bytes for a payload: a spare one when `len` is large.
pub fn payload_buffer(len: usize) -> Vec<u8> {
    if len >= REUSE_FROM {
        let spare = SPARE.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut buf) = spare {
            buf.clear();
            buf.resize(len, 0);
            return buf;
        }
        let mut buf = Vec::with_capacity(DATA_PREFIX + MAX_CHUNK);
        buf.resize(len, 0);
        return buf;
    }
    vec![0; len]
}

fn recycle(buf: Vec<u8>) {
    if buf.capacity() < DATA_PREFIX + MAX_CHUNK || buf.capacity() > 2 * (DATA_PREFIX + MAX_CHUNK) {
        return;
    }
    let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
    if spare.len() < SPARE_BUFFERS {
        spare.push(buf);
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.payload));
    }
}

impl Chunk {
    /// A buffer for up to `len` file bytes: fill [`Chunk::data_mut`], then [`Chunk::seal`].
    pub fn buffer(len: usize) -> Chunk {
        Chunk {
            payload: payload_buffer(DATA_PREFIX + len.min(MAX_CHUNK)),
        }
    }

    /// A chunk of `data` at `offset` of a `size`-byte file, hashed.
    pub fn new(size: u64, offset: u64, data: &[u8]) -> Chunk {
        let mut chunk = Chunk::buffer(data.len());
        chunk
            .data_mut()
            .copy_from_slice(&data[..data.len().min(MAX_CHUNK)]);
        chunk.seal(size, offset);
        chunk
    }

    /// Where the file bytes go.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.payload[DATA_PREFIX..]
    }

    /// Keeps only the first `len` file bytes.
    pub fn truncate(&mut self, len: usize) {
        self.payload.truncate(DATA_PREFIX + len);
    }

    /// Writes the offset and the hash of the bytes as a chunk of a `size`-byte file (see
    /// [`tree`](super::tree); a chunk that has no place in such a file gets a hash of
    /// zeros, which no receiver accepts).
    pub fn seal(&mut self, size: u64, offset: u64) {
        let hash = chunk_hash(size, offset, &self.payload[DATA_PREFIX..]).unwrap_or_default();
        self.payload[..8].copy_from_slice(&offset.to_be_bytes());
        self.payload[8..DATA_PREFIX].copy_from_slice(&hash);
    }

    /// The offset in the file.
    pub fn offset(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.payload[..8]);
        u64::from_be_bytes(b)
    }

    /// The hash the sender gave.
    pub fn hash(&self) -> Hash {
        let mut h = [0u8; 32];
        h.copy_from_slice(&self.payload[8..DATA_PREFIX]);
        h
    }

    /// The file bytes.
    pub fn data(&self) -> &[u8] {
        &self.payload[DATA_PREFIX..]
    }

    /// Whether the chunk has a place in a `size`-byte file (on a chunk boundary, whole
    /// unless it is the last): checked without hashing.
    pub fn fits(&self, size: u64) -> bool {
        fits(size, self.offset(), self.data().len())
    }

    /// Whether the bytes match the hash, as a chunk of a `size`-byte file.
    pub fn verify(&self, size: u64) -> bool {
        chunk_hash(size, self.offset(), self.data()) == Some(self.hash())
    }

    /// A chunk whose hash (or data) was changed after sealing: for tests of the receivers.
    pub fn corrupt(mut self) -> Chunk {
        if let Some(last) = self.payload.last_mut() {
            *last ^= 0x01;
        }
        self
    }

    /// The frame header for this chunk.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        Header {
            kind: Kind::Data,
            len: self.payload.len(),
        }
        .to_bytes()
    }

    /// The payload, as sent after [`Chunk::header`].
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Kind::Hello`].
    Hello {
        /// The version the client speaks.
        version: u16,
    },
    /// See [`Kind::Welcome`].
    Welcome(Welcome),
    /// See [`Kind::List`].
    List {
        /// Files or inbox.
        area: Area,
        /// Also everything below.
        recursive: bool,
        /// The directory or file (empty: the area itself).
        path: String,
    },
    /// See [`Kind::Mkdir`].
    Mkdir {
        /// Permission bits.
        mode: u32,
        /// Time.
        mtime: Mtime,
        /// The user to send it to (empty: the client's own space).
        to: String,
        /// The directory.
        path: String,
    },
    /// See [`Kind::Open`].
    Open(Open),
    /// See [`Kind::Data`].
    Data(Chunk),
    /// See [`Kind::End`].
    End {
        /// BLAKE3 of the whole file.
        hash: Hash,
    },
    /// See [`Kind::Get`].
    Get(Get),
    /// See [`Kind::Remove`].
    Remove {
        /// Files or inbox.
        area: Area,
        /// The file or directory.
        path: String,
    },
    /// See [`Kind::Ok`].
    Ok {
        /// What the request was about.
        path: String,
    },
    /// See [`Kind::Error`].
    Error(Failure),
    /// See [`Kind::Ready`].
    Ready {
        /// Bytes the server has; DATA starts here (or at 0 to start over).
        offset: u64,
        /// BLAKE3 of those bytes.
        prefix: Hash,
    },
    /// See [`Kind::Entry`].
    Entry(Entry),
    /// See [`Kind::ListEnd`].
    ListEnd {
        /// Entries sent.
        count: u64,
    },
    /// See [`Kind::File`].
    File(FileStart),
    /// See [`Kind::Goodbye`].
    Goodbye,
}

impl Frame {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello { .. } => Kind::Hello,
            Frame::Welcome(_) => Kind::Welcome,
            Frame::List { .. } => Kind::List,
            Frame::Mkdir { .. } => Kind::Mkdir,
            Frame::Open(_) => Kind::Open,
            Frame::Data(_) => Kind::Data,
            Frame::End { .. } => Kind::End,
            Frame::Get(_) => Kind::Get,
            Frame::Remove { .. } => Kind::Remove,
            Frame::Ok { .. } => Kind::Ok,
            Frame::Error(_) => Kind::Error,
            Frame::Ready { .. } => Kind::Ready,
            Frame::Entry(_) => Kind::Entry,
            Frame::ListEnd { .. } => Kind::ListEnd,
            Frame::File(_) => Kind::File,
            Frame::Goodbye => Kind::Goodbye,
        }
    }

    /// Appends the frame (header and payload) to `out`. Fails, leaving `out` as it was, when
    /// a string is over 65,535 bytes or the payload over the kind's limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = out.len();
        let kind = self.kind();
        out.extend_from_slice(&[kind as u8, 0, 0, 0, 0]);
        let mut w = Writer { out, ok: true };
        match self {
            Frame::Hello { version } => {
                w.u16(*version);
                w.u16(0);
            }
            Frame::Welcome(h) => {
                w.u16(h.version);
                w.u32(h.max_chunk);
                w.u64(h.max_file);
                w.u64(h.quota);
                w.u64(h.used);
                w.str(&h.user);
            }
            Frame::List {
                area,
                recursive,
                path,
            } => {
                w.u8(*area as u8);
                w.u8(u8::from(*recursive));
                w.str(path);
            }
            Frame::Mkdir {
                mode,
                mtime,
                to,
                path,
            } => {
                w.u32(*mode);
                w.mtime(*mtime);
                w.str(to);
                w.str(path);
            }
            Frame::Open(o) => {
                w.u8(u8::from(o.resume));
                w.meta(&o.meta);
                w.str(&o.to);
                w.str(&o.path);
            }
            Frame::Data(chunk) => w.out.extend_from_slice(chunk.payload()),
            Frame::End { hash } => w.out.extend_from_slice(hash),
            Frame::Get(g) => {
                w.u8(g.area as u8);
                w.u8(u8::from(g.have.is_some()));
                let have = g.have.unwrap_or_default();
                w.u64(have.offset);
                w.out.extend_from_slice(&have.prefix);
                w.u64(have.size);
                w.mtime(have.mtime);
                w.str(&g.path);
            }
            Frame::Remove { area, path } => {
                w.u8(*area as u8);
                w.str(path);
            }
            Frame::Ok { path } => w.str(path),
            Frame::Error(f) => {
                w.u16(f.code as u16);
                w.str(&f.path);
                w.str(&f.message);
            }
            Frame::Ready { offset, prefix } => {
                w.u64(*offset);
                w.out.extend_from_slice(prefix);
            }
            Frame::Entry(e) => {
                w.u8(e.kind as u8);
                w.meta(&e.meta);
                w.str(&e.path);
            }
            Frame::ListEnd { count } => w.u64(*count),
            Frame::File(f) => {
                w.u64(f.offset);
                w.meta(&f.meta);
                w.str(&f.path);
            }
            Frame::Goodbye => {}
        }
        let ok = w.ok;
        let len = out.len() - start - HEADER_LEN;
        if !ok || len > kind.max_len() {
            out.truncate(start);
            return Err(CodecError::TooLong {
                kind,
                len,
                max: kind.max_len(),
            });
        }
        out[start + 1..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Decodes a payload of `header.len` bytes (as read after the header).
    pub fn decode(header: Header, payload: Vec<u8>) -> Result<Frame, CodecError> {
        let kind = header.kind;
        if payload.len() != header.len {
            return Err(CodecError::Truncated {
                kind,
                field: "payload",
            });
        }
        if kind == Kind::Data {
            if payload.len() < DATA_PREFIX {
                return Err(CodecError::Truncated {
                    kind,
                    field: "offset and hash",
                });
            }
            return Ok(Frame::Data(Chunk { payload }));
        }
        let mut r = Reader {
            bytes: &payload,
            kind,
        };
        let frame = match kind {
            Kind::Hello => {
                let version = r.u16("version")?;
                // Reserved: zero in version 1; anything else is refused, not ignored.
                if r.u16("flags")? != 0 {
                    return Err(CodecError::BadValue {
                        kind: Kind::Hello,
                        field: "flags",
                    });
                }
                Frame::Hello { version }
            }
            Kind::Welcome => Frame::Welcome(Welcome {
                version: r.u16("version")?,
                max_chunk: r.u32("max_chunk")?,
                max_file: r.u64("max_file")?,
                quota: r.u64("quota")?,
                used: r.u64("used")?,
                user: r.str("user")?,
            }),
            Kind::List => Frame::List {
                area: r.area()?,
                recursive: r.flag("recursive")?,
                path: r.str("path")?,
            },
            Kind::Mkdir => Frame::Mkdir {
                mode: r.u32("mode")?,
                mtime: r.mtime()?,
                to: r.str("to")?,
                path: r.str("path")?,
            },
            Kind::Open => Frame::Open(Open {
                resume: r.flag("resume")?,
                meta: r.meta()?,
                to: r.str("to")?,
                path: r.str("path")?,
            }),
            Kind::End => Frame::End {
                hash: r.hash("hash")?,
            },
            Kind::Get => {
                let area = r.area()?;
                let has = r.flag("have")?;
                let have = Have {
                    offset: r.u64("offset")?,
                    prefix: r.hash("prefix")?,
                    size: r.u64("size")?,
                    mtime: r.mtime()?,
                };
                Frame::Get(Get {
                    area,
                    have: has.then_some(have),
                    path: r.str("path")?,
                })
            }
            Kind::Remove => Frame::Remove {
                area: r.area()?,
                path: r.str("path")?,
            },
            Kind::Ok => Frame::Ok {
                path: r.str("path")?,
            },
            Kind::Error => Frame::Error(Failure {
                code: ErrorCode::from_u16(r.u16("code")?),
                path: r.str("path")?,
                message: r.str("message")?,
            }),
            Kind::Ready => Frame::Ready {
                offset: r.u64("offset")?,
                prefix: r.hash("prefix")?,
            },
            Kind::Entry => Frame::Entry(Entry {
                kind: match r.u8("kind")? {
                    0 => EntryKind::File,
                    1 => EntryKind::Dir,
                    _ => {
                        return Err(CodecError::BadValue {
                            kind,
                            field: "kind",
                        })
                    }
                },
                meta: r.meta()?,
                path: r.str("path")?,
            }),
            Kind::ListEnd => Frame::ListEnd {
                count: r.u64("count")?,
            },
            Kind::File => Frame::File(FileStart {
                offset: r.u64("offset")?,
                meta: r.meta()?,
                path: r.str("path")?,
            }),
            Kind::Goodbye => Frame::Goodbye,
            // Decoded above.
            Kind::Data => {
                return Err(CodecError::BadValue {
                    kind,
                    field: "payload",
                })
            }
        };
        if !r.bytes.is_empty() {
            return Err(CodecError::Trailing {
                kind,
                extra: r.bytes.len(),
            });
        }
        Ok(frame)
    }
}

/// Decodes the first frame of `bytes`: `Ok(None)` when more bytes are needed, else the
/// frame and how many bytes it took. For fuzzing and tests; the services read frames
/// header first (`crate::files::wire`).
pub fn decode_prefix(bytes: &[u8]) -> Result<Option<(Frame, usize)>, CodecError> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(head);
    let header = Header::parse(&h)?;
    let Some(payload) = bytes.get(HEADER_LEN..HEADER_LEN + header.len) else {
        return Ok(None);
    };
    let frame = Frame::decode(header, payload.to_vec())?;
    Ok(Some((frame, HEADER_LEN + header.len)))
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    ok: bool,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn mtime(&mut self, t: Mtime) {
        self.out.extend_from_slice(&t.secs.to_be_bytes());
        self.u32(t.nanos);
    }
    fn meta(&mut self, m: &Meta) {
        self.u64(m.size);
        self.u32(m.mode);
        self.mtime(m.mtime);
    }
    fn str(&mut self, s: &str) {
        match u16::try_from(s.len()) {
            Ok(len) => {
                self.u16(len);
                self.out.extend_from_slice(s.as_bytes());
            }
            Err(_) => self.ok = false,
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    kind: Kind,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Truncated {
                kind: self.kind,
                field,
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    fn hash(&mut self, field: &'static str) -> Result<Hash, CodecError> {
        self.array(field)
    }
    fn flag(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError::BadValue {
                kind: self.kind,
                field,
            }),
        }
    }
    fn area(&mut self) -> Result<Area, CodecError> {
        match self.u8("area")? {
            0 => Ok(Area::Files),
            1 => Ok(Area::Inbox),
            _ => Err(CodecError::BadValue {
                kind: self.kind,
                field: "area",
            }),
        }
    }
    fn mtime(&mut self) -> Result<Mtime, CodecError> {
        let secs = i64::from_be_bytes(self.array("mtime")?);
        let nanos = self.u32("mtime")?;
        if nanos >= 1_000_000_000 {
            return Err(CodecError::BadValue {
                kind: self.kind,
                field: "mtime",
            });
        }
        Ok(Mtime { secs, nanos })
    }
    fn meta(&mut self) -> Result<Meta, CodecError> {
        Ok(Meta {
            size: self.u64("size")?,
            mode: self.u32("mode")?,
            mtime: self.mtime()?,
        })
    }
    fn str(&mut self, field: &'static str) -> Result<String, CodecError> {
        let len = self.u16(field)? as usize;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| CodecError::NotUtf8 {
                kind: self.kind,
                field,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_buffers_come_back_zeroed_and_sized() {
        let mut chunk = Chunk::buffer(MAX_CHUNK);
        chunk.data_mut().fill(0xAB);
        chunk.seal(MAX_CHUNK as u64 * 2, 0);
        drop(chunk);
        for len in [
            REUSE_FROM,
            DATA_PREFIX + MAX_CHUNK,
            DATA_PREFIX + 12345 + REUSE_FROM,
        ] {
            let buf = payload_buffer(len);
            assert_eq!(buf.len(), len);
            assert!(buf.iter().all(|&b| b == 0), "a reused buffer has old bytes");
        }
        let chunk = Chunk::new(100, 0, &[7; 100]);
        assert!(chunk.verify(100));
        assert_eq!(chunk.data(), &[7; 100][..]);
    }

    /// Found by the fuzzer: reserved HELLO flags must be zero (decode then encode must give
    /// the same bytes).
    #[test]
    fn hello_with_flags_is_refused() {
        let bytes = [1, 0, 0, 0, 4, 0, 93, 2, 0];
        assert!(matches!(
            decode_prefix(&bytes),
            Err(CodecError::BadValue { field: "flags", .. })
        ));
    }

    fn every_frame() -> Vec<Frame> {
        let meta = Meta {
            size: 5,
            mode: 0o640,
            mtime: Mtime {
                secs: -3,
                nanos: 999_999_999,
            },
        };
        vec![
            Frame::Hello { version: VERSION },
            Frame::Welcome(Welcome {
                version: 1,
                user: "alice".into(),
                max_chunk: MAX_CHUNK as u32,
                max_file: 1 << 40,
                quota: 0,
                used: 7,
            }),
            Frame::List {
                area: Area::Inbox,
                recursive: true,
                path: "a/b".into(),
            },
            Frame::Mkdir {
                mode: 0o755,
                mtime: meta.mtime,
                to: "bob".into(),
                path: "d".into(),
            },
            Frame::Open(Open {
                resume: true,
                meta,
                to: String::new(),
                path: "x.bin".into(),
            }),
            Frame::Data(Chunk::new((1 << 33) + 5, 1 << 33, b"hello")),
            Frame::Data(Chunk::new(0, 0, b"")),
            Frame::End {
                hash: *blake3::hash(b"hello").as_bytes(),
            },
            Frame::Get(Get {
                area: Area::Files,
                have: None,
                path: "x".into(),
            }),
            Frame::Get(Get {
                area: Area::Inbox,
                have: Some(Have {
                    offset: 3,
                    prefix: [7; 32],
                    size: 9,
                    mtime: meta.mtime,
                }),
                path: "alice/x".into(),
            }),
            Frame::Remove {
                area: Area::Files,
                path: "x".into(),
            },
            Frame::Ok { path: "x".into() },
            Frame::Error(Failure::new(ErrorCode::Quota, "x", "over quota")),
            Frame::Ready {
                offset: 9,
                prefix: [1; 32],
            },
            Frame::Entry(Entry {
                kind: EntryKind::Dir,
                path: "d".into(),
                meta,
            }),
            Frame::ListEnd { count: 3 },
            Frame::File(FileStart {
                offset: 0,
                meta,
                path: "x".into(),
            }),
            Frame::Goodbye,
        ]
    }

    #[test]
    fn every_frame_round_trips_and_every_cut_is_refused() {
        for frame in every_frame() {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes).unwrap();
            let (back, used) = decode_prefix(&bytes).unwrap().unwrap();
            assert_eq!(back, frame);
            assert_eq!(used, bytes.len());
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_prefix(&bytes[..cut]),
                    Ok(None),
                    "{frame:?} cut at {cut}"
                );
            }
            // A payload one byte short (header says so) is a truncation, never a panic.
            if bytes.len() > HEADER_LEN && frame.kind() != Kind::Goodbye {
                let mut short = bytes[..bytes.len() - 1].to_vec();
                let len = (short.len() - HEADER_LEN) as u32;
                short[1..5].copy_from_slice(&len.to_be_bytes());
                let r = decode_prefix(&short);
                assert!(r.is_err() || frame.kind() == Kind::Data, "{frame:?}: {r:?}");
            }
            // And one byte more is trailing garbage.
            if frame.kind() != Kind::Data {
                let mut long = bytes.clone();
                long.push(0);
                let len = (long.len() - HEADER_LEN) as u32;
                long[1..5].copy_from_slice(&len.to_be_bytes());
                assert!(decode_prefix(&long).is_err(), "{frame:?}");
            }
        }
    }

    #[test]
    fn limits_are_checked_from_the_header() {
        let mut huge = [Kind::Open as u8, 0, 0, 0, 0];
        huge[1..].copy_from_slice(&((MAX_CONTROL + 1) as u32).to_be_bytes());
        assert!(matches!(
            Header::parse(&huge),
            Err(CodecError::TooLong { .. })
        ));
        let mut data = [Kind::Data as u8, 0xff, 0xff, 0xff, 0xff];
        assert!(Header::parse(&data).is_err());
        data[1..].copy_from_slice(&((DATA_PREFIX + MAX_CHUNK) as u32).to_be_bytes());
        assert!(Header::parse(&data).is_ok());
        assert_eq!(
            Header::parse(&[0x42, 0, 0, 0, 0]),
            Err(CodecError::UnknownKind(0x42))
        );
        let long = "x".repeat(MAX_CONTROL);
        let mut out = vec![1, 2, 3];
        assert!(Frame::Ok { path: long }.encode(&mut out).is_err());
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn bad_fields() {
        let mut bytes = Vec::new();
        Frame::Ok { path: "ab".into() }.encode(&mut bytes).unwrap();
        bytes[HEADER_LEN + 2] = 0xff;
        assert!(matches!(
            decode_prefix(&bytes),
            Err(CodecError::NotUtf8 { .. })
        ));
        let mut bytes = Vec::new();
        Frame::Remove {
            area: Area::Files,
            path: "x".into(),
        }
        .encode(&mut bytes)
        .unwrap();
        bytes[HEADER_LEN] = 9;
        assert!(matches!(
            decode_prefix(&bytes),
            Err(CodecError::BadValue { field: "area", .. })
        ));
    }

    #[test]
    fn chunks_verify() {
        let chunk = Chunk::new(4, 0, b"data");
        assert!(chunk.verify(4));
        assert!(!chunk.verify(5), "as a chunk of another file");
        assert!(!chunk.clone().corrupt().verify(4));
        let size = (MAX_CHUNK as u64) * 2 + 4;
        let last = Chunk::new(size, 2 * MAX_CHUNK as u64, b"data");
        assert!(last.fits(size) && last.verify(size));
        assert_eq!(last.offset(), 2 * MAX_CHUNK as u64);
        assert!(!last.corrupt().verify(size));
        let misplaced = Chunk::new(size, 4, b"data");
        assert!(!misplaced.fits(size) && !misplaced.verify(size));
    }
}
