//! Per-user spaces on the server's disk, with the quota and the partial uploads.
//!
//! ```text
//! ROOT/users/USER/files/PATH           the user's own files
//! ROOT/users/USER/inbox/SENDER/PATH    what SENDER sent the user
//! ROOT/users/USER/.partial/KEY.part    an upload in progress (KEY from where it goes)
//! ROOT/users/USER/.partial/KEY.json    what it is (path, size, mode, time), to resume it
//! ROOT/users/USER/.partial/KEY.cvs     its chunks' hashes, to resume it without a re-read
//! ```
//!
//! Everything here is synchronous (std::fs): the service runs it on a blocking thread.
//! Every name has been checked ([`super::paths`]) before it gets here, and every path is
//! resolved with [`resolve_inside`], so no symbolic link leads out of a space.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::atomic::{self, meta_of, Flusher};
use super::codec::{Area, Entry, EntryKind, ErrorCode, Failure, Hash, Meta, Mtime, MAX_CHUNK};
use super::journal::{self, Journal};
use super::paths::{open_beneath, resolve_inside, OpenError, PathError, RemotePath};
use super::tree::{resume_point, FileHash, Prefix};
use crate::error::chain;
use crate::service::UserId;

/// The server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes each user may store (own files, inbox and partial uploads); `None`: no limit.
    pub quota: Option<u64>,
    /// Largest file.
    pub max_file: u64,
    /// A partial upload untouched for this long is removed (at the server's start, and when
    /// its user's next session starts).
    pub partial_ttl: Duration,
}

/// The default of [`Limits::partial_ttl`]: a week.
pub const PARTIAL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            quota: Some(10 << 30),
            max_file: 4 << 30,
            partial_ttl: PARTIAL_TTL,
        }
    }
}

/// Why a request on a space failed. Each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A name breaks the rules.
    #[error("'{}': refused name", .path.escape_debug())]
    BadName {
        /// The name as given.
        path: String,
        /// The rule it breaks.
        #[source]
        source: PathError,
    },
    /// A user id (`--to`) breaks the rules.
    #[error("cannot send to '{}'", .user.escape_debug())]
    BadUser {
        /// The id as given.
        user: String,
        /// Why.
        #[source]
        source: crate::service::UserIdError,
    },
    /// No such file or directory.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The file.
        path: String,
    },
    /// The quota would be exceeded.
    #[error("{path}: {size} bytes would exceed {user}'s quota ({used} of {quota} bytes used)")]
    Quota {
        /// The file.
        path: String,
        /// Whose quota.
        user: String,
        /// The file's size.
        size: u64,
        /// Bytes in use.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// The file is over the size limit.
    #[error("{path}: {size} bytes is more than the largest file this server stores ({max} bytes)")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A hash did not match: the data was changed on the way or on disk.
    #[error("{path}: {what}")]
    Integrity {
        /// The file.
        path: String,
        /// What did not match.
        what: String,
    },
    /// The file system refused.
    #[error("{path}: cannot {action}")]
    Io {
        /// The file.
        path: String,
        /// What we were doing.
        action: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Something else is in the way.
    #[error("{path}: {what}")]
    Conflict {
        /// The file.
        path: String,
        /// What.
        what: &'static str,
    },
    /// The request breaks the protocol.
    #[error("{path}: {what}")]
    Protocol {
        /// The file.
        path: String,
        /// What.
        what: String,
    },
}

impl StoreError {
    /// The code sent to the client.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::BadName { .. } | StoreError::BadUser { .. } => ErrorCode::BadName,
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::Quota { .. } => ErrorCode::Quota,
            StoreError::TooLarge { .. } => ErrorCode::TooLarge,
            StoreError::Integrity { .. } => ErrorCode::Integrity,
            StoreError::Io { .. } => ErrorCode::Io,
            StoreError::Conflict { .. } => ErrorCode::Conflict,
            StoreError::Protocol { .. } => ErrorCode::Protocol,
        }
    }

    /// The ERROR frame for the client: the whole chain of causes, and the name.
    pub fn to_failure(&self, path: &str) -> Failure {
        Failure::new(self.code(), path, chain(self).to_string())
    }

    fn io(path: &RemotePath, action: &'static str, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            return StoreError::NotFound {
                path: path.to_string(),
            };
        }
        StoreError::Io {
            path: path.to_string(),
            action,
            source,
        }
    }
}

/// Checks a name from the wire.
pub fn check_name(path: &str) -> Result<RemotePath, StoreError> {
    RemotePath::parse(path).map_err(|source| StoreError::BadName {
        path: path.chars().take(200).collect(),
        source,
    })
}

/// Every user's space under one root.
#[derive(Debug)]
pub struct Spaces {
    root: PathBuf,
    limits: Limits,
    /// Bytes stored per user, counted once from the disk and kept up to date.
    usage: Mutex<HashMap<String, u64>>,
    /// Partial files being written: one upload per file at a time.
    active: Arc<Mutex<HashSet<PathBuf>>>,
}

/// How long an upload waits for another session's upload of the same file to end (a client
/// that reconnects at once while its old session still writes what it had queued).
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// Marks a partial file as being written; unmarks it when dropped.
#[derive(Debug)]
struct Active {
    set: Arc<Mutex<HashSet<PathBuf>>>,
    part: PathBuf,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.part);
    }
}

/// The sidecar of a partial upload.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PartialMeta {
    target: String,
    size: u64,
    mode: u32,
    mtime_secs: i64,
    mtime_nanos: u32,
}

/// Where an upload goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Whose space (the sender's own, or the recipient's).
    pub owner: UserId,
    /// `files/PATH` or `inbox/SENDER/PATH`, below the owner's directory.
    pub under_owner: RemotePath,
    /// The name as the client gave it.
    pub path: RemotePath,
}

/// An upload in progress.
#[derive(Debug)]
pub struct Upload {
    /// Where it goes.
    pub target: Target,
    /// What the client declared.
    pub meta: Meta,
    /// Bytes written so far.
    pub written: u64,
    /// How the bytes kept from an earlier attempt were checked.
    pub kept: Kept,
    file: File,
    hash: FileHash,
    flusher: Flusher,
    part: PathBuf,
    sidecar: PathBuf,
    /// The chunk journal (resumable uploads only; `None` also once writing it failed).
    journal: Option<Journal>,
    journal_path: PathBuf,
    /// Whether `sidecar` and the journal may exist (resumable uploads only).
    described: bool,
    dest: PathBuf,
    old_size: u64,
    _active: Active,
}

/// How a resumed upload's kept bytes were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Nothing kept: the upload starts at 0.
    Nothing,
    /// From the chunk journal, which matched the partial file (no bytes read).
    Journal,
    /// Read and hashed from the partial file.
    Read,
}

impl Kept {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kept::Nothing => "nothing",
            Kept::Journal => "journal",
            Kept::Read => "read",
        }
    }
}

/// What [`Spaces::finish`] did.
#[derive(Debug)]
pub enum Finished {
    /// Stored under its final name (a large file, committed alone).
    Stored,
    /// Written and closed; commit it with the group (`part`, `dest`).
    Staged(PathBuf, PathBuf),
}

impl Spaces {
    /// The spaces under `root` (made, mode 0700, when missing).
    pub fn open(root: impl Into<PathBuf>, limits: Limits) -> io::Result<Spaces> {
        let root = root.into();
        crate::pki::files::create_private_dir(&root.join("users"))
            .map_err(|e| io::Error::other(chain(&e).to_string()))?;
        let spaces = Spaces {
            root,
            limits,
            usage: Mutex::new(HashMap::new()),
            active: Arc::default(),
        };
        spaces.sweep_all();
        Ok(spaces)
    }

    /// Removes every user's stale partial uploads (see [`Spaces::sweep`]); returns how many.
    pub fn sweep_all(&self) -> usize {
        let Ok(users) = std::fs::read_dir(self.root.join("users")) else {
            return 0;
        };
        users
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| UserId::parse(&name).ok())
            .map(|user| self.sweep(&user))
            .sum()
    }

    /// Removes `user`'s partial uploads (and their descriptions) untouched for longer than
    /// [`Limits::partial_ttl`], except those being written now; returns how many. Their bytes
    /// leave the user's quota.
    pub fn sweep(&self, user: &UserId) -> usize {
        let dir = self.user_dir(user).join(".partial");
        let Ok(read) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let now = std::time::SystemTime::now();
        let stale = |meta: &std::fs::Metadata| {
            meta.modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > self.limits.partial_ttl)
        };
        let mut removed = 0;
        let mut freed = 0u64;
        let _ = self.used(user);
        for entry in read.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            // A description goes with its partial file: judged by the partial's age.
            let part = path.with_extension("part");
            let judged = if part == path {
                meta.clone()
            } else {
                std::fs::metadata(&part).unwrap_or_else(|_| meta.clone())
            };
            if !meta.is_file() || !stale(&judged) {
                continue;
            }
            let busy = self
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&part);
            if busy || std::fs::remove_file(&path).is_err() {
                continue;
            }
            freed += meta.len();
            if path.extension().is_some_and(|e| e == "part") {
                removed += 1;
                tracing::info!(
                    user = %user, file = %path.display(), bytes = meta.len(),
                    "files: stale partial upload removed"
                );
            }
        }
        self.charge(user, -(freed as i128));
        removed
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn user_dir(&self, user: &UserId) -> PathBuf {
        self.root.join("users").join(user.as_str())
    }

    /// The directory of an area of `user`'s space (made when missing).
    pub fn area_dir(&self, user: &UserId, area: Area) -> io::Result<PathBuf> {
        let dir = self.user_dir(user).join(match area {
            Area::Files => "files",
            Area::Inbox => "inbox",
        });
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Bytes `user` stores (counted from the disk the first time).
    pub fn used(&self, user: &UserId) -> u64 {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        *usage
            .entry(user.as_str().to_owned())
            .or_insert_with(|| tree_size(&self.user_dir(user)))
    }

    fn charge(&self, user: &UserId, delta: i128) {
        let _ = self.used(user);
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(used) = usage.get_mut(user.as_str()) {
            *used = (*used as i128 + delta).clamp(0, u64::MAX as i128) as u64;
        }
    }

    /// Lists a directory (or names one file) of an area: entries with full paths, sorted.
    /// Symbolic links and names that break the rules are left out.
    pub fn list(
        &self,
        user: &UserId,
        area: Area,
        path: &RemotePath,
        recursive: bool,
        out: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<u64, StoreError> {
        let base = self
            .area_dir(user, area)
            .map_err(|e| StoreError::io(path, "open the space", e))?;
        #[cfg(unix)]
        {
            // The path is resolved by the kernel, below the area (openat2 RESOLVE_BENEATH
            // on Linux), and every directory below it is opened from its parent's
            // descriptor without following links: no name is looked up twice, so a link
            // made or swapped in during the listing leads nowhere else.
            let file = if path.is_root() {
                File::open(&base).map_err(|e| StoreError::io(path, "open", e))?
            } else {
                open_beneath(&base, path).map_err(|e| match e {
                    OpenError::Name(source) => StoreError::BadName {
                        path: path.to_string(),
                        source,
                    },
                    OpenError::Io(e) => StoreError::io(path, "open", e),
                })?
            };
            let meta = file
                .metadata()
                .map_err(|e| StoreError::io(path, "read", e))?;
            if !meta.is_dir() {
                out(Entry {
                    kind: EntryKind::File,
                    path: path.as_str().to_owned(),
                    meta: meta_of(&meta),
                });
                return Ok(1);
            }
            let mut count = 0;
            list_fd(&file, path, recursive, &mut count, out)?;
            Ok(count)
        }
        #[cfg(not(unix))]
        {
            let full = resolve(&base, path)?;
            let meta = std::fs::metadata(&full).map_err(|e| StoreError::io(path, "read", e))?;
            if !meta.is_dir() {
                out(Entry {
                    kind: EntryKind::File,
                    path: path.as_str().to_owned(),
                    meta: meta_of(&meta),
                });
                return Ok(1);
            }
            let mut count = 0;
            list_dir(&full, path, recursive, &mut count, out)?;
            Ok(count)
        }
    }

    /// Makes a directory (and its parents) in `owner`'s space, or sets an existing one's
    /// mode and time.
    pub fn mkdir(&self, target: &Target, mode: u32, mtime: Mtime) -> Result<(), StoreError> {
        let owner_dir = self.user_dir(&target.owner);
        let dir = resolve(&owner_dir, &target.under_owner)?;
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io {
            path: target.path.to_string(),
            action: "make the directory",
            source: e,
        })?;
        atomic::apply_dir_meta(&dir, mode, mtime).map_err(|e| StoreError::Io {
            path: target.path.to_string(),
            action: "set the directory's mode and time",
            source: e,
        })
    }

    /// Starts (or resumes) an upload. With `resume`, a partial upload of the same file
    /// (same size and time) is kept and its length and hash are returned (the client checks
    /// them against its own bytes); otherwise it starts from nothing.
    pub fn open_upload(
        &self,
        target: Target,
        meta: Meta,
        resume: bool,
    ) -> Result<(Upload, u64, Hash), StoreError> {
        let shown = target.path.to_string();
        if meta.size > self.limits.max_file {
            return Err(StoreError::TooLarge {
                path: shown,
                size: meta.size,
                max: self.limits.max_file,
            });
        }
        let owner_dir = self.user_dir(&target.owner);
        let dest = resolve(&owner_dir, &target.under_owner)?;
        let shown_path = target.path.clone();
        let io = |action: &'static str| {
            let p = shown_path.clone();
            move |e| StoreError::io(&p, action, e)
        };
        let old_size = match std::fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => {
                return Err(StoreError::Conflict {
                    path: shown,
                    what: "a directory of that name is in the way",
                })
            }
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        // The partial directory is made when the first open finds it missing; the file's
        // own directory at its rename (atomic::rename_into): no calls per file for them.
        let partial_dir = owner_dir.join(".partial");
        let key = blake3::hash(target.under_owner.as_str().as_bytes()).to_hex();
        let part = partial_dir.join(format!("{}.part", &key[..32]));
        let sidecar = partial_dir.join(format!("{}.json", &key[..32]));
        let journal_path = partial_dir.join(format!("{}.cvs", &key[..32]));
        let active = self.claim(&part).ok_or_else(|| StoreError::Conflict {
            path: shown.clone(),
            what: "another session is still uploading this file",
        })?;
        let wanted = PartialMeta {
            target: target.under_owner.as_str().to_owned(),
            size: meta.size,
            mode: meta.mode,
            mtime_secs: meta.mtime.secs,
            mtime_nanos: meta.mtime.nanos,
        };
        let on_disk = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        // A file sent without resume (one chunk at most) is never resumed: no description.
        let same = resume
            && std::fs::read(&sidecar)
                .ok()
                .and_then(|b| serde_json::from_slice::<PartialMeta>(&b).ok())
                .is_some_and(|m| m == wanted);
        // A resume starts on a chunk boundary (the bytes after it are sent again).
        let keep = if resume && same && on_disk <= meta.size {
            resume_point(meta.size, on_disk)
        } else {
            0
        };
        // The quota counts the whole file from now on (the partial bytes were counted).
        if let Some(quota) = self.limits.quota {
            let used = self.used(&target.owner);
            let after =
                (used as i128) - (on_disk as i128) + (meta.size as i128) - (old_size as i128);
            if after > quota as i128 {
                return Err(StoreError::Quota {
                    path: shown,
                    user: target.owner.to_string(),
                    size: meta.size,
                    used,
                    quota,
                });
            }
        }
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&part)
        };
        let mut file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&partial_dir).map_err(io("make the partial directory"))?;
                open()
            }
            other => other,
        }
        .map_err(io("open the partial file"))?;
        // The chunk journal saves reading the kept bytes again when it matches the file as
        // it is (see journal.rs); otherwise they are read and hashed, which also finds a
        // partial file changed or corrupted on disk.
        // (One chunk or none: nothing to look up; a small file is never resumed.)
        let recorded = (keep >= 2 * MAX_CHUNK as u64)
            .then(|| journal::recorded(&journal_path, &file, keep, meta.size))
            .flatten()
            .and_then(|hashes| Prefix::from_hashes(meta.size, &hashes));
        let (prefix, kept) = match recorded {
            Some(prefix) => (prefix, Kept::Journal),
            None => (
                read_prefix(&mut file, keep, meta.size).map_err(io("read the partial file"))?,
                if keep > 0 { Kept::Read } else { Kept::Nothing },
            ),
        };
        if on_disk > keep {
            file.set_len(keep)
                .map_err(io("truncate the partial file"))?;
        }
        if keep > 0 {
            file.seek(SeekFrom::Start(keep))
                .map_err(io("seek in the partial file"))?;
        }
        if resume && !same {
            let json = serde_json::to_vec(&wanted).unwrap_or_default();
            std::fs::write(&sidecar, json).map_err(io("write the partial's description"))?;
        }
        // Best effort: without a journal, the next resume reads the bytes instead.
        let journal = resume
            .then(|| Journal::start(&journal_path, prefix.chunk_hashes(), &file).ok())
            .flatten();
        self.charge(&target.owner, meta.size as i128 - on_disk as i128);
        let prefix_hash = prefix.hash();
        Ok((
            Upload {
                target,
                meta,
                written: keep,
                kept,
                file,
                hash: prefix.into_file(),
                flusher: Flusher::default(),
                part,
                sidecar,
                journal,
                journal_path,
                described: resume || on_disk > 0,
                dest,
                old_size,
                _active: active,
            },
            keep,
            prefix_hash,
        ))
    }

    fn claim(&self, part: &Path) -> Option<Active> {
        let started = Instant::now();
        loop {
            {
                let mut set = self.active.lock().unwrap_or_else(|p| p.into_inner());
                if set.insert(part.to_path_buf()) {
                    return Some(Active {
                        set: self.active.clone(),
                        part: part.to_path_buf(),
                    });
                }
            }
            if started.elapsed() > BUSY_WAIT {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes a verified chunk's bytes (`hash` is its hash, checked by the caller) at
    /// `offset`: the next byte, or 0 to start over.
    pub fn write(
        &self,
        up: &mut Upload,
        offset: u64,
        data: &[u8],
        hash: Hash,
    ) -> Result<(), StoreError> {
        let path = up.target.path.clone();
        let io = |action: &'static str| {
            let p = path.clone();
            move |e| StoreError::io(&p, action, e)
        };
        if offset == 0 && up.written > 0 {
            up.file
                .set_len(0)
                .map_err(io("truncate the partial file"))?;
            up.file
                .seek(SeekFrom::Start(0))
                .map_err(io("seek in the partial file"))?;
            up.written = 0;
            up.hash = FileHash::new(up.meta.size);
            if let Some(j) = &mut up.journal {
                if j.clear().is_err() {
                    up.journal = None;
                }
            }
        }
        if offset != up.written {
            return Err(StoreError::Protocol {
                path: up.target.path.to_string(),
                what: format!("chunk at offset {offset}, expected {}", up.written),
            });
        }
        if !up.hash.push(data.len(), hash) {
            return Err(StoreError::Protocol {
                path: up.target.path.to_string(),
                what: format!(
                    "a chunk of {} bytes at offset {offset} has no place in a file of {} bytes",
                    data.len(),
                    up.meta.size
                ),
            });
        }
        up.file.write_all(data).map_err(io("write"))?;
        up.written += data.len() as u64;
        if let Some(j) = &mut up.journal {
            if j.record(&hash, &up.file).is_err() {
                up.journal = None;
            }
        }
        up.flusher.wrote(&up.file, data.len() as u64);
        Ok(())
    }

    /// Checks the whole file's hash and size, and stores it: a large one at once, a small
    /// one staged for the group commit. A mismatch discards the partial file.
    pub fn finish(
        &self,
        up: Upload,
        hash: &Hash,
        commit_alone: bool,
    ) -> Result<Finished, StoreError> {
        let shown = up.target.path.to_string();
        let path = up.target.path.clone();
        let io = |action: &'static str| {
            let p = path.clone();
            move |e| StoreError::io(&p, action, e)
        };
        if up.written != up.meta.size {
            self.abandon(up, false);
            return Err(StoreError::Protocol {
                path: shown.clone(),
                what: "the file ended early".into(),
            });
        }
        if up.hash.finalize().as_ref() != Some(hash) {
            let owner = up.target.owner.clone();
            let size = up.meta.size;
            let _ = std::fs::remove_file(&up.part);
            let _ = std::fs::remove_file(&up.sidecar);
            let _ = std::fs::remove_file(&up.journal_path);
            self.charge(&owner, -(size as i128));
            return Err(StoreError::Integrity {
                path: shown,
                what: "the whole file's BLAKE3 does not match what the client sent; discarded"
                    .into(),
            });
        }
        let mut up = up;
        up.flusher.wait();
        atomic::apply_file_meta(&up.file, &up.meta).map_err(io("set the mode and time"))?;
        if up.described {
            let _ = std::fs::remove_file(&up.sidecar);
            let _ = std::fs::remove_file(&up.journal_path);
        }
        self.charge(&up.target.owner, -(up.old_size as i128));
        if commit_alone {
            atomic::commit_now(&up.file, &up.part, &up.dest).map_err(io("store"))?;
            Ok(Finished::Stored)
        } else {
            Ok(Finished::Staged(up.part, up.dest))
        }
    }

    /// Leaves an upload where it is (the connection ended): the partial file stays for a
    /// resume; the quota keeps only what was written. `discard` removes it.
    pub fn abandon(&self, up: Upload, discard: bool) {
        let _ = up.file.sync_data();
        let mut freed = up.meta.size.saturating_sub(up.written) as i128;
        if discard {
            let _ = std::fs::remove_file(&up.part);
            let _ = std::fs::remove_file(&up.sidecar);
            let _ = std::fs::remove_file(&up.journal_path);
            freed = up.meta.size as i128;
        }
        self.charge(&up.target.owner, -freed);
    }

    /// Opens a file to send; returns it, its metadata and where to start: the client's
    /// `have` when it is a prefix of this very file (same size, time and bytes), else 0.
    pub fn open_download(
        &self,
        user: &UserId,
        area: Area,
        path: &RemotePath,
        have: Option<super::codec::Have>,
    ) -> Result<(File, Meta, u64, FileHash), StoreError> {
        let base = self
            .area_dir(user, area)
            .map_err(|e| StoreError::io(path, "open the space", e))?;
        let mut file = open_beneath(&base, path).map_err(|e| match e {
            OpenError::Name(source) => StoreError::BadName {
                path: path.to_string(),
                source,
            },
            OpenError::Io(e) => StoreError::io(path, "open", e),
        })?;
        let metadata = file
            .metadata()
            .map_err(|e| StoreError::io(path, "read", e))?;
        if !metadata.is_file() {
            return Err(StoreError::Conflict {
                path: path.to_string(),
                what: "not a regular file",
            });
        }
        let meta = meta_of(&metadata);
        let mut hash = FileHash::new(meta.size);
        let mut start = 0;
        if let Some(have) = have {
            let same = have.size == meta.size && have.mtime == meta.mtime;
            if same && have.offset > 0 && resume_point(meta.size, have.offset) == have.offset {
                let prefix = read_prefix(&mut file, have.offset, meta.size)
                    .map_err(|e| StoreError::io(path, "read", e))?;
                if prefix.hash() == have.prefix {
                    start = have.offset;
                    hash = prefix.into_file();
                }
            }
        }
        file.seek(SeekFrom::Start(start))
            .map_err(|e| StoreError::io(path, "seek", e))?;
        Ok((file, meta, start, hash))
    }

    /// Removes a file or a directory tree; in the inbox, also the directories it leaves
    /// empty.
    pub fn remove(&self, user: &UserId, area: Area, path: &RemotePath) -> Result<(), StoreError> {
        if path.is_root() {
            return Err(StoreError::Conflict {
                path: "/".into(),
                what: "the space itself cannot be removed",
            });
        }
        let base = self
            .area_dir(user, area)
            .map_err(|e| StoreError::io(path, "open the space", e))?;
        let full = resolve(&base, path)?;
        let meta = std::fs::symlink_metadata(&full).map_err(|e| StoreError::io(path, "read", e))?;
        if meta.is_dir() {
            let size = tree_size(&full);
            std::fs::remove_dir_all(&full).map_err(|e| StoreError::io(path, "remove", e))?;
            self.charge(user, -(size as i128));
        } else {
            std::fs::remove_file(&full).map_err(|e| StoreError::io(path, "remove", e))?;
            if !meta.file_type().is_symlink() {
                self.charge(user, -(meta.len() as i128));
            }
        }
        if area == Area::Inbox {
            let mut dir = full.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if d == base || std::fs::remove_dir(&d).is_err() {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
        }
        Ok(())
    }
}

fn resolve(dir: &Path, path: &RemotePath) -> Result<PathBuf, StoreError> {
    resolve_inside(dir, path).map_err(|source| StoreError::BadName {
        path: path.to_string(),
        source,
    })
}

/// What a listing shows of `name` in `at`: its path and kind, or nothing for a name that
/// breaks the rules (logged) and for what is neither a file nor a directory.
fn listed(
    at: &RemotePath,
    name: &str,
    meta: &std::fs::Metadata,
) -> Option<(RemotePath, EntryKind)> {
    let Ok(path) = RemotePath::parse(name).and_then(|n| at.join(&n)) else {
        tracing::warn!(dir = %at, name = %name.escape_debug(), "files: a name that breaks the rules is not listed");
        return None;
    };
    let kind = if meta.is_dir() {
        EntryKind::Dir
    } else if meta.is_file() {
        EntryKind::File
    } else {
        return None;
    };
    Some((path, kind))
}

/// Lists the directory open as `dir` (see [`Spaces::list`]): each entry is looked at from
/// `dir`'s descriptor (`O_PATH | O_NOFOLLOW`, so a symbolic link is seen as one and left out),
/// and a subdirectory is opened from it with `O_NOFOLLOW | O_DIRECTORY`.
#[cfg(unix)]
fn list_fd(
    dir: &File,
    at: &RemotePath,
    recursive: bool,
    count: &mut u64,
    out: &mut dyn FnMut(Entry) -> bool,
) -> Result<(), StoreError> {
    use rustix::fs::{openat, Dir, Mode, OFlags};
    let read = Dir::read_from(dir).map_err(|e| StoreError::io(at, "list", e.into()))?;
    let mut names: Vec<(String, std::fs::Metadata)> = Vec::new();
    for entry in read.flatten() {
        let raw = entry.file_name();
        let bytes = raw.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let Ok(name) = raw.to_str() else {
            tracing::warn!(dir = %at, "files: a name that is not UTF-8 is not listed");
            continue;
        };
        let Ok(fd) = openat(
            dir,
            raw,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let Ok(meta) = File::from(fd).metadata() else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        names.push((name.to_owned(), meta));
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, meta) in names {
        let Some((path, kind)) = listed(at, &name, &meta) else {
            continue;
        };
        *count += 1;
        if !out(Entry {
            kind,
            path: path.as_str().to_owned(),
            meta: meta_of(&meta),
        }) {
            return Ok(());
        }
        if recursive && kind == EntryKind::Dir {
            let sub = openat(
                dir,
                name.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| StoreError::io(&path, "open", e.into()))?;
            list_fd(&File::from(sub), &path, true, count, out)?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn list_dir(
    dir: &Path,
    at: &RemotePath,
    recursive: bool,
    count: &mut u64,
    out: &mut dyn FnMut(Entry) -> bool,
) -> Result<(), StoreError> {
    let read = std::fs::read_dir(dir).map_err(|e| StoreError::io(at, "list", e))?;
    let mut names: Vec<(String, std::fs::Metadata)> = Vec::new();
    for entry in read.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            tracing::warn!(dir = %dir.display(), "files: a name that is not UTF-8 is not listed");
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.file_type().is_symlink() {
            continue;
        }
        names.push((name, meta));
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, meta) in names {
        let Some((path, kind)) = listed(at, &name, &meta) else {
            continue;
        };
        *count += 1;
        if !out(Entry {
            kind,
            path: path.as_str().to_owned(),
            meta: meta_of(&meta),
        }) {
            return Ok(());
        }
        if recursive && kind == EntryKind::Dir {
            list_dir(&dir.join(&name), &path, true, count, out)?;
        }
    }
    Ok(())
}

/// Bytes of the regular files below `dir` (symbolic links not followed).
pub fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in read.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// Reads and hashes the first `len` bytes of a `size`-byte file (a chunk boundary, see
/// [`resume_point`]), and leaves the file there. The chunks' hashes are independent, so a
/// long prefix is hashed on several threads (one per core, at most [`PREFIX_THREADS`]): a
/// resume waits for this before it sends anything.
pub fn read_prefix(file: &mut File, len: u64, size: u64) -> io::Result<Prefix> {
    if len == 0 {
        return Ok(Prefix::new(size));
    }
    let refused = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{len} bytes are not a whole number of chunks of a {size}-byte file"),
        )
    };
    if resume_point(size, len) != len {
        return Err(refused());
    }
    let chunks = (len / MAX_CHUNK as u64) as usize;
    let prefix = if chunks < 2 {
        let mut buf = vec![0u8; MAX_CHUNK];
        file.seek(SeekFrom::Start(0))?;
        file.read_exact(&mut buf)?;
        let mut prefix = Prefix::new(size);
        if !prefix.push(&buf) {
            return Err(refused());
        }
        prefix
    } else {
        let hashes = chunk_hashes(file, size, chunks)?;
        Prefix::from_hashes(size, &hashes).ok_or_else(refused)?
    };
    file.seek(SeekFrom::Start(len))?;
    Ok(prefix)
}

/// Threads [`read_prefix`] hashes with, at most.
pub const PREFIX_THREADS: usize = 4;

/// The hashes of the first `chunks` whole chunks of `file` (a `size`-byte file), read with
/// positioned reads, on up to [`PREFIX_THREADS`] threads, each a contiguous run of chunks.
fn chunk_hashes(file: &File, size: u64, chunks: usize) -> io::Result<Vec<Hash>> {
    use std::os::unix::fs::FileExt;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, PREFIX_THREADS)
        .min(chunks.div_ceil(8));
    let per = chunks.div_ceil(threads);
    let hash_run = |first: usize, end: usize| -> io::Result<Vec<Hash>> {
        let mut buf = vec![0u8; MAX_CHUNK];
        let mut out = Vec::with_capacity(end - first);
        for i in first..end {
            let offset = (i * MAX_CHUNK) as u64;
            file.read_exact_at(&mut buf, offset)?;
            let hash = super::tree::chunk_hash(size, offset, &buf).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "a chunk outside the file")
            })?;
            out.push(hash);
        }
        Ok(out)
    };
    if threads <= 1 {
        return hash_run(0, chunks);
    }
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..chunks)
            .step_by(per)
            .map(|first| {
                let end = (first + per).min(chunks);
                scope.spawn(move || hash_run(first, end))
            })
            .collect();
        let mut hashes = Vec::with_capacity(chunks);
        for run in runs {
            let part = run
                .join()
                .map_err(|_| io::Error::other("a hashing thread panicked"))??;
            hashes.extend(part);
        }
        Ok(hashes)
    })
}
