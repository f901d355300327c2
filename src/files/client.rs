//! The client side of `tlsnet-files/1`: put, get, ls and rm.
//!
//! Transfers are pipelined: requests go out without waiting for their answers, which a
//! second future reads as they come (in order). Only a resumable upload (a file larger than
//! one chunk) waits once, for READY. Local files are read, hashed and written on blocking
//! threads, never on the async workers. Every name the server sends is checked with
//! [`super::paths`] before it is used, and every local path is resolved inside the output
//! directory, so a malicious server cannot make `get` write elsewhere.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};

use super::atomic::{self, meta_of, Committer, Flusher};
use super::codec::{
    Area, Chunk, Entry, EntryKind, Failure, FileStart, Frame, Get, Hash, Have, Meta, Open, Welcome,
    MAX_CHUNK, VERSION,
};
use super::paths::{resolve_inside, RemotePath, RESERVED};
use super::service::COMMIT_ALONE;
use super::space::read_prefix;
use super::tree::{resume_point, FileHash};
use super::wire::{read_frame, write_frame, WireError};
use super::FilesError;
use crate::error::chain;

/// Told how a transfer goes (a progress bar, a log). Every method has a default that does
/// nothing.
pub trait Progress: Send + Sync {
    /// The transfer starts: this many files and bytes.
    fn start(&self, _files: u64, _bytes: u64) {}
    /// `bytes` more were sent or received (or found already there, on a resume).
    fn advance(&self, _bytes: u64) {}
    /// Something the user should know (a skipped file, a transfer starting over).
    fn note(&self, _message: &str) {}
    /// The transfer is over.
    fn finish(&self) {}
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Options of [`FilesClient::put`].
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Send to this user's inbox instead of the own space.
    pub to: Option<String>,
    /// The remote directory the sources go into (the root by default).
    pub dir: RemotePath,
    /// Bytes per second at most (`None`: as fast as possible).
    pub limit_rate: Option<u64>,
}

/// Options of [`FilesClient::get`].
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// From the inbox (fetched files are then removed from it).
    pub inbox: bool,
    /// Where the files go.
    pub out: PathBuf,
    /// Bytes per second at most (`None`: as fast as possible).
    pub limit_rate: Option<u64>,
}

/// A file that failed, with why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failed {
    /// The file (remote name, or local path).
    pub path: String,
    /// A stable label (`quota`, `too_large`, `bad_name`, `integrity`, `local`, ...).
    pub code: String,
    /// Why, in words.
    pub error: String,
}

/// What a transfer did: for people and for `--json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Files transferred (or removed) whole.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Bytes sent or received.
    pub bytes: u64,
    /// Bytes that were already there and kept (resumed transfers).
    pub resumed_bytes: u64,
    /// Local entries left out (symbolic links, special files), with why.
    pub skipped: Vec<String>,
    /// What failed.
    pub failed: Vec<Failed>,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl Summary {
    fn fail(&mut self, path: &str, code: &str, error: String) {
        self.failed.push(Failed {
            path: path.to_owned(),
            code: code.to_owned(),
            error,
        });
    }

    fn failure(&mut self, f: &Failure) {
        let path = if f.path.is_empty() { "-" } else { &f.path };
        self.fail(path, f.code.label(), f.message.clone());
    }
}

/// A session with a files server.
pub struct FilesClient<S> {
    rd: BufReader<ReadHalf<S>>,
    wr: WriteHalf<S>,
    peer: String,
    welcome: Welcome,
    scratch: Vec<u8>,
}

/// Connects to a files server: TCP, TLS (the connector's configuration must offer
/// [`super::FILES_ALPN`]) and the HELLO.
pub async fn connect(
    connector: &crate::net::Connector,
    addr: &str,
    server_name: rustls::pki_types::ServerName<'static>,
) -> Result<
    (
        FilesClient<crate::net::ClientStream>,
        crate::tls::HandshakeReport,
    ),
    FilesError,
> {
    let (stream, report) = connector
        .connect(addr, server_name)
        .await
        .map_err(FilesError::Connect)?;
    let client = FilesClient::start(stream, addr).await?;
    Ok((client, report))
}

enum Expect {
    /// MKDIR: OK counts a directory when `count`.
    Dir { count: bool },
    /// OPEN with resume: READY (or ERROR) goes to the writer.
    Ready {
        tx: oneshot::Sender<Option<(u64, Hash)>>,
    },
    /// The END of an upload.
    Stored,
    /// REMOVE.
    Removed,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> FilesClient<S> {
    /// Says HELLO on an established stream and reads the WELCOME.
    pub async fn start(stream: S, peer: &str) -> Result<Self, FilesError> {
        let (rd, wr) = tokio::io::split(stream);
        let mut client = FilesClient {
            rd: BufReader::with_capacity(64 * 1024, rd),
            wr,
            peer: peer.to_owned(),
            welcome: Welcome {
                version: 0,
                user: String::new(),
                max_chunk: 0,
                max_file: 0,
                quota: 0,
                used: 0,
            },
            scratch: Vec::new(),
        };
        client.send(&Frame::Hello { version: VERSION }).await?;
        client.flush().await?;
        match client.next().await? {
            Frame::Welcome(w) => client.welcome = w,
            Frame::Error(f) => return Err(FilesError::Refused(f)),
            other => return Err(unexpected(&other, "WELCOME")),
        }
        Ok(client)
    }

    /// What the server said about this session (user id, limits, usage).
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), FilesError> {
        write_frame(&mut self.wr, frame, &mut self.scratch)
            .await
            .map_err(|e| wire_error(&self.peer, e))
    }

    async fn flush(&mut self) -> Result<(), FilesError> {
        self.wr.flush().await.map_err(|e| FilesError::Connection {
            peer: self.peer.clone(),
            source: e,
        })
    }

    async fn next(&mut self) -> Result<Frame, FilesError> {
        next_frame(&mut self.rd, &self.peer).await
    }

    /// Ends the session (TLS close_notify).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.wr.shutdown()).await;
    }

    /// Lists a directory (or names one file) of the own space or the inbox. Every name the
    /// server sends is checked; one that breaks the rules is an error.
    pub async fn list(
        &mut self,
        area: Area,
        path: &RemotePath,
        recursive: bool,
    ) -> Result<Vec<(RemotePath, Entry)>, FilesError> {
        self.send(&Frame::List {
            area,
            recursive,
            path: path.as_str().to_owned(),
        })
        .await?;
        self.flush().await?;
        let mut entries = Vec::new();
        loop {
            match self.next().await? {
                Frame::Entry(e) => {
                    let checked =
                        RemotePath::parse(&e.path).map_err(|source| FilesError::BadName {
                            path: e.path.chars().take(200).collect(),
                            source,
                        })?;
                    entries.push((checked, e));
                }
                Frame::ListEnd { .. } => return Ok(entries),
                Frame::Error(f) => return Err(FilesError::Refused(f)),
                other => return Err(unexpected(&other, "ENTRY or LIST_END")),
            }
        }
    }

    /// Removes files or directory trees.
    pub async fn remove(
        &mut self,
        area: Area,
        paths: &[RemotePath],
    ) -> Result<Summary, FilesError> {
        let started = Instant::now();
        let summary = Mutex::new(Summary::default());
        let (exp_tx, exp_rx) = mpsc::unbounded_channel();
        let peer = self.peer.clone();
        let writing = async {
            let mut w = Sender {
                wr: &mut self.wr,
                scratch: &mut self.scratch,
                peer: &peer,
            };
            for path in paths {
                let _ = exp_tx.send(Expect::Removed);
                w.send(&Frame::Remove {
                    area,
                    path: path.as_str().to_owned(),
                })
                .await?;
            }
            drop(exp_tx);
            w.flush().await
        };
        let reading = read_answers(&mut self.rd, &peer, exp_rx, &summary);
        tokio::try_join!(writing, reading)?;
        Ok(finished(summary, started))
    }

    /// Sends local files and directories (recursively, with modes and times) to the own
    /// space or, with `to`, to another user's inbox. An interrupted upload of the same file
    /// goes on where it stopped, after both sides checked the bytes already there.
    pub async fn put(
        &mut self,
        sources: &[PathBuf],
        options: &PutOptions,
        progress: &dyn Progress,
    ) -> Result<Summary, FilesError> {
        let started = Instant::now();
        let (items, mut summary) = {
            let (sources, dir) = (sources.to_vec(), options.dir.clone());
            tokio::task::spawn_blocking(move || walk_sources(&sources, &dir))
                .await
                .map_err(|e| FilesError::Protocol(format!("the local walk failed: {e}")))?
        };
        for s in &summary.skipped {
            progress.note(s);
        }
        let total: u64 = items.iter().map(|i| i.meta.size).sum();
        let count = items.iter().filter(|i| !i.dir).count() as u64;
        progress.start(count, total);
        if let Some(big) = items
            .iter()
            .find(|i| !i.dir && i.meta.size > self.welcome.max_file)
        {
            progress.note(&format!(
                "{}: {} bytes is more than the server's limit of {} bytes",
                big.remote, big.meta.size, self.welcome.max_file
            ));
        }
        summary.seconds = 0.0;
        let summary = Mutex::new(summary);
        let to = options.to.clone().unwrap_or_default();
        let (exp_tx, exp_rx) = mpsc::unbounded_channel();
        let peer = self.peer.clone();
        let rate = Rate::new(options.limit_rate);
        let writing = async {
            let mut w = Sender {
                wr: &mut self.wr,
                scratch: &mut self.scratch,
                peer: &peer,
            };
            let dirs: Vec<&Item> = items.iter().filter(|i| i.dir).collect();
            for dir in &dirs {
                let _ = exp_tx.send(Expect::Dir { count: true });
                w.send(&mkdir(&to, dir)).await?;
            }
            for item in items.iter().filter(|i| !i.dir) {
                if !put_file(&mut w, item, &to, &exp_tx, &summary, progress, &rate).await? {
                    break;
                }
            }
            // The directories' times, deepest first, now that their files are in.
            for dir in dirs.iter().rev() {
                let _ = exp_tx.send(Expect::Dir { count: false });
                w.send(&mkdir(&to, dir)).await?;
            }
            drop(exp_tx);
            w.flush().await
        };
        let reading = read_answers(&mut self.rd, &peer, exp_rx, &summary);
        let result = tokio::try_join!(writing, reading);
        progress.finish();
        result?;
        Ok(finished(summary, started))
    }

    /// Fetches files and directory trees into `options.out`. An interrupted download goes
    /// on where it stopped when the file on the server is still the same.
    pub async fn get(
        &mut self,
        remotes: &[RemotePath],
        options: &GetOptions,
        progress: &dyn Progress,
    ) -> Result<Summary, FilesError> {
        let started = Instant::now();
        let area = if options.inbox {
            Area::Inbox
        } else {
            Area::Files
        };
        let out = options.out.clone();
        std::fs::create_dir_all(&out).map_err(|e| FilesError::local(&out, "make", e))?;
        let mut summary = Summary::default();
        let mut wanted: Vec<Wanted> = Vec::new();
        for remote in remotes {
            let entries = match self.list(area, remote, true).await {
                Ok(entries) => entries,
                Err(FilesError::Refused(f)) => {
                    summary.failure(&f);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (path, entry) in entries {
                match destination(&out, remote, &path) {
                    Ok(local) => wanted.push(Wanted {
                        remote: path,
                        local,
                        kind: entry.kind,
                        meta: entry.meta,
                    }),
                    Err(e) => {
                        progress.note(&chain(&e).to_string());
                        summary.fail(path.as_str(), "bad_name", chain(&e).to_string());
                    }
                }
            }
        }
        for dir in wanted.iter().filter(|w| w.kind == EntryKind::Dir) {
            std::fs::create_dir_all(&dir.local)
                .map_err(|e| FilesError::local(&dir.local, "make the directory", e))?;
            summary.dirs += 1;
        }
        let files: Vec<&Wanted> = wanted
            .iter()
            .filter(|w| w.kind == EntryKind::File)
            .collect();
        progress.start(files.len() as u64, files.iter().map(|w| w.meta.size).sum());
        let partial_dir = out.join(RESERVED);
        if std::fs::symlink_metadata(&partial_dir).is_ok_and(|m| !m.is_dir()) {
            return Err(FilesError::local(
                &partial_dir,
                "use",
                io::Error::other("it is not a directory"),
            ));
        }
        std::fs::create_dir_all(&partial_dir)
            .map_err(|e| FilesError::local(&partial_dir, "make", e))?;

        let summary = Arc::new(Mutex::new(summary));
        let (disk_tx, disk_rx) = mpsc::channel::<DiskCmd>(8);
        let disk = {
            let summary = summary.clone();
            tokio::task::spawn_blocking(move || disk_writer(disk_rx, &summary))
        };
        let (exp_tx, mut exp_rx) = mpsc::unbounded_channel::<Fetch>();
        let peer = self.peer.clone();
        let rate = Rate::new(options.limit_rate);
        let writing = async {
            let mut w = Sender {
                wr: &mut self.wr,
                scratch: &mut self.scratch,
                peer: &peer,
            };
            for file in &files {
                let (part, sidecar) = partial_names(&partial_dir, area, &file.remote);
                let (have, hash) = {
                    let (part, sidecar, remote, meta) = (
                        part.clone(),
                        sidecar.clone(),
                        file.remote.clone(),
                        file.meta,
                    );
                    tokio::task::spawn_blocking(move || local_have(&part, &sidecar, &remote, &meta))
                        .await
                        .unwrap_or((None, None))
                };
                let _ = exp_tx.send(Fetch {
                    remote: file.remote.clone(),
                    local: file.local.clone(),
                    part,
                    sidecar,
                    have,
                    hash,
                });
                w.send(&Frame::Get(Get {
                    area,
                    have,
                    path: file.remote.as_str().to_owned(),
                }))
                .await?;
            }
            drop(exp_tx);
            w.flush().await
        };
        let reading = async {
            while let Some(fetch) = exp_rx.recv().await {
                receive_file(
                    &mut self.rd,
                    &peer,
                    fetch,
                    &disk_tx,
                    &summary,
                    progress,
                    &rate,
                )
                .await?;
            }
            drop(disk_tx);
            Ok::<(), FilesError>(())
        };
        let result = tokio::try_join!(writing, reading);
        let _ = disk.await;
        progress.finish();
        result?;
        // Gone when nothing is left to resume.
        let _ = std::fs::remove_dir(&partial_dir);
        // The directories' times, deepest first.
        for dir in wanted.iter().filter(|w| w.kind == EntryKind::Dir).rev() {
            let _ = atomic::apply_dir_meta(&dir.local, dir.meta.mode, dir.meta.mtime);
        }
        let summary = Arc::try_unwrap(summary).unwrap_or_else(|arc| Mutex::new(lock(&arc).clone()));
        let mut summary = finished(summary, started);
        if options.inbox {
            let failed: Vec<&str> = summary.failed.iter().map(|f| f.path.as_str()).collect();
            let done: Vec<RemotePath> = files
                .iter()
                .filter(|f| !failed.contains(&f.remote.as_str()))
                .map(|f| f.remote.clone())
                .collect();
            let removed = self.remove(Area::Inbox, &done).await?;
            summary.failed.extend(removed.failed);
        }
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }
}

/// Frames out, for the writer half of a transfer.
struct Sender<'a, W> {
    wr: &'a mut W,
    scratch: &'a mut Vec<u8>,
    peer: &'a str,
}

impl<W: AsyncWrite + Unpin> Sender<'_, W> {
    async fn send(&mut self, frame: &Frame) -> Result<(), FilesError> {
        write_frame(self.wr, frame, self.scratch)
            .await
            .map_err(|e| wire_error(self.peer, e))
    }

    async fn flush(&mut self) -> Result<(), FilesError> {
        self.wr.flush().await.map_err(|e| FilesError::Connection {
            peer: self.peer.to_owned(),
            source: e,
        })
    }
}

/// A local file or directory to send.
#[derive(Debug, Clone)]
struct Item {
    local: PathBuf,
    remote: RemotePath,
    meta: Meta,
    dir: bool,
}

fn mkdir(to: &str, dir: &Item) -> Frame {
    Frame::Mkdir {
        mode: dir.meta.mode,
        mtime: dir.meta.mtime,
        to: to.to_owned(),
        path: dir.remote.as_str().to_owned(),
    }
}

/// The local sources as items, directories before what they hold; what cannot be sent is
/// in the summary (skipped, or failed for names that break the rules).
fn walk_sources(sources: &[PathBuf], dir: &RemotePath) -> (Vec<Item>, Summary) {
    let mut items = Vec::new();
    let mut summary = Summary::default();
    for source in sources {
        let name = source.file_name().map(PathBuf::from);
        let remote = match &name {
            Some(n) => RemotePath::from_local(n).and_then(|n| dir.join(&n)),
            None => Ok(dir.clone()),
        };
        let remote = match remote {
            Ok(r) => r,
            Err(e) => {
                summary.fail(&source.display().to_string(), "bad_name", e.to_string());
                continue;
            }
        };
        walk(source, remote, &mut items, &mut summary);
    }
    (items, summary)
}

fn walk(local: &Path, remote: RemotePath, items: &mut Vec<Item>, summary: &mut Summary) {
    let shown = local.display().to_string();
    let meta = match std::fs::symlink_metadata(local) {
        Ok(m) => m,
        Err(e) => {
            summary.fail(&shown, "local", format!("cannot read {shown}: {e}"));
            return;
        }
    };
    if meta.file_type().is_symlink() {
        summary
            .skipped
            .push(format!("{shown}: a symbolic link (not sent)"));
        return;
    }
    if meta.is_file() {
        if remote.is_root() {
            summary.fail(&shown, "bad_name", format!("{shown}: a file needs a name"));
            return;
        }
        items.push(Item {
            local: local.to_path_buf(),
            remote,
            meta: meta_of(&meta),
            dir: false,
        });
        return;
    }
    if !meta.is_dir() {
        summary.skipped.push(format!(
            "{shown}: not a regular file or directory (not sent)"
        ));
        return;
    }
    if !remote.is_root() {
        items.push(Item {
            local: local.to_path_buf(),
            remote: remote.clone(),
            meta: meta_of(&meta),
            dir: true,
        });
    }
    let mut children: Vec<_> = match std::fs::read_dir(local) {
        Ok(read) => read.flatten().map(|e| e.path()).collect(),
        Err(e) => {
            summary.fail(&shown, "local", format!("cannot list {shown}: {e}"));
            return;
        }
    };
    children.sort();
    for child in children {
        let name = child.file_name().map(PathBuf::from).unwrap_or_default();
        match RemotePath::from_local(&name).and_then(|n| remote.join(&n)) {
            Ok(r) => walk(&child, r, items, summary),
            Err(e) => summary.fail(
                &child.display().to_string(),
                "bad_name",
                format!("{}: refused name: {e}", child.display()),
            ),
        }
    }
}

/// Sends one file; false when the connection is gone (the reader has the cause).
async fn put_file<W: AsyncWrite + Unpin>(
    w: &mut Sender<'_, W>,
    item: &Item,
    to: &str,
    exp_tx: &mpsc::UnboundedSender<Expect>,
    summary: &Mutex<Summary>,
    progress: &dyn Progress,
    rate: &Rate,
) -> Result<bool, FilesError> {
    let resume = item.meta.size > MAX_CHUNK as u64;
    let open = Frame::Open(Open {
        resume,
        meta: item.meta,
        to: to.to_owned(),
        path: item.remote.as_str().to_owned(),
    });
    let mut start = 0;
    let mut hash = FileHash::new(item.meta.size);
    if resume {
        let (tx, rx) = oneshot::channel();
        let _ = exp_tx.send(Expect::Ready { tx });
        w.send(&open).await?;
        w.flush().await?;
        let (offset, prefix) = match rx.await {
            Ok(Some(ready)) => ready,
            // Refused (the reader noted why).
            Ok(None) => return Ok(true),
            Err(_) => return Ok(false),
        };
        // The server's bytes are ours only if our first `offset` bytes hash the same: hashed
        // here on several threads (the server answers at once when its chunk journal
        // matches, so this is what a resume waits for).
        if offset > 0 {
            let (local, size) = (item.local.clone(), item.meta.size);
            let ours = tokio::task::spawn_blocking(move || {
                File::open(&local).and_then(|mut file| read_prefix(&mut file, offset, size))
            })
            .await;
            // A local file that cannot be read that far is not the one the server has.
            let matched = match ours {
                Ok(Ok(p)) if p.hash() == prefix => Some(p),
                _ => None,
            };
            match matched {
                Some(p) => {
                    start = offset;
                    hash = p.into_file();
                    progress.advance(offset);
                    lock(summary).resumed_bytes += offset;
                }
                None => progress.note(&format!(
                    "{}: the server's partial copy does not match the local file (changed or corrupted); starting over",
                    item.remote
                )),
            }
        }
    } else {
        w.send(&open).await?;
    }
    let _ = exp_tx.send(Expect::Stored);
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Chunk>(4);
    let reading = {
        let (local, size) = (item.local.clone(), item.meta.size);
        tokio::task::spawn_blocking(move || read_chunks(&local, start, size, hash, &chunk_tx))
    };
    let mut sent = 0u64;
    while let Some(chunk) = chunk_rx.recv().await {
        let n = chunk.data().len() as u64;
        w.send(&Frame::Data(chunk)).await?;
        sent += n;
        progress.advance(n);
        rate.pace(n).await;
    }
    let hash = match reading.await {
        Ok(Ok(hash)) => hash,
        Ok(Err(e)) => {
            let error = format!("cannot read {}: {e}", item.local.display());
            progress.note(&error);
            lock(summary).fail(item.remote.as_str(), "local", error);
            // The server refuses the file (short, or the hash does not match).
            [0; 32]
        }
        Err(e) => {
            lock(summary).fail(item.remote.as_str(), "local", e.to_string());
            [0; 32]
        }
    };
    w.send(&Frame::End { hash }).await?;
    lock(summary).bytes += sent;
    Ok(true)
}

/// Reads a file from `start` in chunks (hashed here, on a blocking thread, once: the
/// chunks' hashes make the file's); returns the whole file's hash (`hash` has the chunks
/// before `start`).
fn read_chunks(
    local: &Path,
    start: u64,
    size: u64,
    mut hash: FileHash,
    tx: &mpsc::Sender<Chunk>,
) -> io::Result<Hash> {
    let mut file = File::open(local)?;
    file.seek(SeekFrom::Start(start))?;
    let mut offset = start;
    while offset < size {
        let want = usize::try_from(size - offset)
            .unwrap_or(MAX_CHUNK)
            .min(MAX_CHUNK);
        let mut chunk = Chunk::buffer(want);
        file.read_exact(chunk.data_mut())
            .map_err(|e| io::Error::new(e.kind(), format!("{e} (did the file shrink?)")))?;
        chunk.seal(size, offset);
        hash.push(want, chunk.hash());
        offset += want as u64;
        if tx.blocking_send(chunk).is_err() {
            return Err(io::Error::other("the connection ended"));
        }
    }
    hash.finalize()
        .ok_or_else(|| io::Error::other("the file's hash is incomplete"))
}

/// Reads one answer per expectation, in order, until the writer is done.
async fn read_answers<R: AsyncRead + Unpin>(
    rd: &mut R,
    peer: &str,
    mut exp_rx: mpsc::UnboundedReceiver<Expect>,
    summary: &Mutex<Summary>,
) -> Result<(), FilesError> {
    while let Some(expect) = exp_rx.recv().await {
        let frame = next_frame(rd, peer).await?;
        match (expect, frame) {
            (Expect::Dir { count }, Frame::Ok { .. }) => {
                if count {
                    lock(summary).dirs += 1;
                }
            }
            (Expect::Stored | Expect::Removed, Frame::Ok { .. }) => lock(summary).files += 1,
            (Expect::Ready { tx }, Frame::Ready { offset, prefix }) => {
                let _ = tx.send(Some((offset, prefix)));
            }
            (expect, Frame::Error(f)) => {
                if let Expect::Ready { tx } = expect {
                    let _ = tx.send(None);
                }
                lock(summary).failure(&f);
            }
            (_, other) => return Err(unexpected(&other, "OK, READY or ERROR")),
        }
    }
    Ok(())
}

/// A file to fetch, as listed.
struct Wanted {
    remote: RemotePath,
    local: PathBuf,
    kind: EntryKind,
    meta: Meta,
}

/// Where a listed entry goes: `out` / the last component of what was asked for / the rest.
/// Refuses an entry that is not below what was asked for, and any path that leads through
/// a symbolic link out of `out`.
fn destination(out: &Path, asked: &RemotePath, entry: &RemotePath) -> Result<PathBuf, FilesError> {
    let bad = |source| FilesError::BadName {
        path: entry.as_str().to_owned(),
        source,
    };
    let rest = entry.strip_prefix(asked).ok_or_else(|| {
        FilesError::Protocol(format!(
            "the server listed '{}', which is not below '{}'",
            entry.as_str().escape_debug(),
            asked
        ))
    })?;
    let relative = if asked.is_root() {
        rest
    } else {
        let last = RemotePath::parse(asked.file_name()).map_err(bad)?;
        last.join(&rest).map_err(bad)?
    };
    if relative.is_root() {
        return Err(bad(super::paths::PathError::Empty));
    }
    resolve_inside(out, &relative).map_err(bad)
}

/// What the sidecar of a partial download says.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PartialMeta {
    remote: String,
    size: u64,
    mtime_secs: i64,
    mtime_nanos: u32,
}

fn partial_names(dir: &Path, area: Area, remote: &RemotePath) -> (PathBuf, PathBuf) {
    let key = blake3::hash(format!("{}:{}", area as u8, remote.as_str()).as_bytes()).to_hex();
    (
        dir.join(format!("{}.part", &key[..32])),
        dir.join(format!("{}.json", &key[..32])),
    )
}

/// What we have of a file from an earlier, interrupted download of the same version.
fn local_have(
    part: &Path,
    sidecar: &Path,
    remote: &RemotePath,
    meta: &Meta,
) -> (Option<Have>, Option<FileHash>) {
    let described = std::fs::read(sidecar)
        .ok()
        .and_then(|b| serde_json::from_slice::<PartialMeta>(&b).ok());
    let Some(d) = described else {
        return (None, None);
    };
    if d.remote != remote.as_str() || d.size != meta.size {
        return (None, None);
    }
    let Ok(mut file) = File::open(part) else {
        return (None, None);
    };
    let on_disk = file.metadata().map(|m| m.len()).unwrap_or(0);
    let len = resume_point(d.size, on_disk);
    if len == 0 {
        return (None, None);
    }
    let Ok(prefix) = read_prefix(&mut file, len, d.size) else {
        return (None, None);
    };
    let have = Have {
        offset: len,
        prefix: prefix.hash(),
        size: d.size,
        mtime: super::codec::Mtime {
            secs: d.mtime_secs,
            nanos: d.mtime_nanos,
        },
    };
    (Some(have), Some(prefix.into_file()))
}

/// A GET on its way.
struct Fetch {
    remote: RemotePath,
    local: PathBuf,
    part: PathBuf,
    sidecar: PathBuf,
    have: Option<Have>,
    hash: Option<FileHash>,
}

enum DiskCmd {
    Begin(Box<(Fetch, FileStart)>),
    Chunk(Chunk),
    End(Hash),
    Abort,
}

/// Reads the answer to one GET and hands it to the disk thread.
async fn receive_file<R: AsyncRead + Unpin>(
    rd: &mut R,
    peer: &str,
    mut fetch: Fetch,
    disk: &mpsc::Sender<DiskCmd>,
    summary: &Mutex<Summary>,
    progress: &dyn Progress,
    rate: &Rate,
) -> Result<(), FilesError> {
    let start = match next_frame(rd, peer).await? {
        Frame::Error(f) => {
            progress.note(&format!("{}: {}", f.path, f.message));
            lock(summary).failure(&f);
            return Ok(());
        }
        Frame::File(start) => start,
        other => return Err(unexpected(&other, "FILE or ERROR")),
    };
    if start.path != fetch.remote.as_str() {
        return Err(FilesError::Protocol(format!(
            "asked for '{}', the server sent '{}'",
            fetch.remote,
            start.path.escape_debug()
        )));
    }
    let resumed = fetch.have.map(|h| h.offset);
    if start.offset != 0 && Some(start.offset) != resumed {
        return Err(FilesError::Protocol(format!(
            "{}: the server goes on at byte {}, which we do not have",
            fetch.remote, start.offset
        )));
    }
    if start.offset > 0 {
        progress.advance(start.offset);
        lock(summary).resumed_bytes += start.offset;
    } else if resumed.is_some() {
        progress.note(&format!(
            "{}: the file changed on the server (or our partial copy does not match); starting over",
            fetch.remote
        ));
        fetch.hash = None;
    }
    let gone = || FilesError::Protocol("the local disk writer stopped".into());
    disk.send(DiskCmd::Begin(Box::new((fetch, start))))
        .await
        .map_err(|_| gone())?;
    loop {
        match next_frame(rd, peer).await? {
            Frame::Data(chunk) => {
                let n = chunk.data().len() as u64;
                disk.send(DiskCmd::Chunk(chunk)).await.map_err(|_| gone())?;
                progress.advance(n);
                lock(summary).bytes += n;
                rate.pace(n).await;
            }
            Frame::End { hash } => {
                disk.send(DiskCmd::End(hash)).await.map_err(|_| gone())?;
                return Ok(());
            }
            Frame::Error(f) => {
                disk.send(DiskCmd::Abort).await.map_err(|_| gone())?;
                lock(summary).failure(&f);
                return Ok(());
            }
            other => return Err(unexpected(&other, "DATA, END or ERROR")),
        }
    }
}

/// A download being written.
struct Writing {
    fetch: Fetch,
    meta: Meta,
    file: File,
    written: u64,
    hash: FileHash,
    flusher: Flusher,
    failed: bool,
}

/// Writes downloads on a blocking thread: verifies each chunk, then the whole file, and
/// renames it into place (small files in groups).
fn disk_writer(mut rx: mpsc::Receiver<DiskCmd>, summary: &Mutex<Summary>) {
    let mut current: Option<Writing> = None;
    let mut committer: Committer<String> = Committer::default();
    let flush = |committer: &mut Committer<String>| {
        for (name, result) in committer.flush() {
            match result {
                Ok(()) => lock(summary).files += 1,
                Err(e) => lock(summary).fail(&name, "local", format!("cannot store {name}: {e}")),
            }
        }
    };
    loop {
        let cmd = match rx.try_recv() {
            Ok(cmd) => cmd,
            Err(mpsc::error::TryRecvError::Empty) => {
                flush(&mut committer);
                match rx.blocking_recv() {
                    Some(cmd) => cmd,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        match cmd {
            DiskCmd::Begin(boxed) => {
                let (fetch, start) = *boxed;
                match begin_download(fetch, &start) {
                    Ok(w) => current = Some(w),
                    Err((name, e)) => {
                        lock(summary).fail(&name, "local", chain(&e).to_string());
                        current = None;
                    }
                }
            }
            DiskCmd::Chunk(chunk) => {
                if let Some(w) = current.as_mut().filter(|w| !w.failed) {
                    if let Err(e) = write_chunk(w, &chunk) {
                        w.failed = true;
                        let name = w.fetch.remote.to_string();
                        lock(summary).fail(&name, code_of(&e), chain(&e).to_string());
                    }
                }
            }
            DiskCmd::End(hash) => {
                if let Some(w) = current.take().filter(|w| !w.failed) {
                    let name = w.fetch.remote.to_string();
                    match end_download(w, &hash) {
                        Ok(Some((part, dest, size))) => {
                            committer.stage(part, dest, size, name);
                            if committer.is_full() {
                                flush(&mut committer);
                            }
                        }
                        Ok(None) => lock(summary).files += 1,
                        Err(e) => lock(summary).fail(&name, code_of(&e), chain(&e).to_string()),
                    }
                }
            }
            DiskCmd::Abort => current = None,
        }
    }
    flush(&mut committer);
}

fn code_of(e: &FilesError) -> &'static str {
    match e {
        FilesError::Integrity { .. } => "integrity",
        FilesError::Protocol(_) => "protocol",
        _ => "local",
    }
}

fn begin_download(mut fetch: Fetch, start: &FileStart) -> Result<Writing, (String, FilesError)> {
    let name = fetch.remote.to_string();
    let fail = |action, e| (name.clone(), FilesError::local(&fetch.part, action, e));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&fetch.part)
        .map_err(|e| fail("open", e))?;
    file.set_len(start.offset)
        .map_err(|e| fail("truncate", e))?;
    file.seek(SeekFrom::Start(start.offset))
        .map_err(|e| fail("seek in", e))?;
    let sidecar = PartialMeta {
        remote: fetch.remote.as_str().to_owned(),
        size: start.meta.size,
        mtime_secs: start.meta.mtime.secs,
        mtime_nanos: start.meta.mtime.nanos,
    };
    std::fs::write(
        &fetch.sidecar,
        serde_json::to_vec(&sidecar).unwrap_or_default(),
    )
    .map_err(|e| fail("write the description of", e))?;
    let hash = match fetch.hash.take() {
        Some(h) if start.offset > 0 && h.offset() == start.offset => h,
        _ => FileHash::new(start.meta.size),
    };
    Ok(Writing {
        meta: start.meta,
        file,
        written: start.offset,
        hash,
        flusher: Flusher::default(),
        failed: false,
        fetch,
    })
}

fn write_chunk(w: &mut Writing, chunk: &Chunk) -> Result<(), FilesError> {
    let name = w.fetch.remote.to_string();
    if chunk.offset() != w.written {
        return Err(FilesError::Protocol(format!(
            "{name}: the server sent bytes at offset {}, expected {}",
            chunk.offset(),
            w.written
        )));
    }
    if !chunk.fits(w.meta.size) {
        return Err(FilesError::Protocol(format!(
            "{name}: the server sent {} bytes at offset {}, which have no place in a file of {} bytes",
            chunk.data().len(),
            chunk.offset(),
            w.meta.size
        )));
    }
    if !chunk.verify(w.meta.size) {
        return Err(FilesError::Integrity {
            path: name,
            what: format!(
                "the chunk at offset {} does not match its BLAKE3 (changed on the way); the partial file keeps the bytes before it",
                chunk.offset()
            ),
        });
    }
    if w.written + chunk.data().len() as u64 > w.meta.size {
        return Err(FilesError::Protocol(format!(
            "{name}: the server sent more than the {} bytes it announced",
            w.meta.size
        )));
    }
    if !w.hash.push(chunk.data().len(), chunk.hash()) {
        return Err(FilesError::Protocol(format!(
            "{name}: a chunk out of order at offset {}",
            chunk.offset()
        )));
    }
    w.file
        .write_all(chunk.data())
        .map_err(|e| FilesError::local(&w.fetch.part, "write", e))?;
    w.written += chunk.data().len() as u64;
    w.flusher.wrote(&w.file, chunk.data().len() as u64);
    Ok(())
}

type Staged = Option<(PathBuf, PathBuf, u64)>;

fn end_download(mut w: Writing, hash: &Hash) -> Result<Staged, FilesError> {
    let name = w.fetch.remote.to_string();
    if w.written != w.meta.size {
        return Err(FilesError::Protocol(format!(
            "{name}: the server ended the file after {} of {} bytes",
            w.written, w.meta.size
        )));
    }
    if w.hash.finalize().as_ref() != Some(hash) {
        let _ = std::fs::remove_file(&w.fetch.part);
        let _ = std::fs::remove_file(&w.fetch.sidecar);
        return Err(FilesError::Integrity {
            path: name,
            what: "the whole file's BLAKE3 does not match what the server sent; discarded".into(),
        });
    }
    w.flusher.wait();
    atomic::apply_file_meta(&w.file, &w.meta)
        .map_err(|e| FilesError::local(&w.fetch.part, "set the mode and time of", e))?;
    let _ = std::fs::remove_file(&w.fetch.sidecar);
    if let Some(parent) = w.fetch.local.parent() {
        std::fs::create_dir_all(parent).map_err(|e| FilesError::local(parent, "make", e))?;
    }
    if w.meta.size >= COMMIT_ALONE {
        atomic::commit_now(&w.file, &w.fetch.part, &w.fetch.local)
            .map_err(|e| FilesError::local(&w.fetch.local, "store", e))?;
        return Ok(None);
    }
    Ok(Some((w.fetch.part, w.fetch.local, w.meta.size)))
}

/// Paces a transfer to a number of bytes per second.
struct Rate {
    limit: Option<u64>,
    started: Instant,
    bytes: Mutex<u64>,
}

impl Rate {
    fn new(limit: Option<u64>) -> Self {
        Rate {
            limit: limit.filter(|l| *l > 0),
            started: Instant::now(),
            bytes: Mutex::new(0),
        }
    }

    async fn pace(&self, n: u64) {
        let Some(limit) = self.limit else { return };
        let total = {
            let mut b = lock(&self.bytes);
            *b += n;
            *b
        };
        let due = Duration::from_secs_f64(total as f64 / limit as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// The summary of a transfer that ended, with its wall time.
fn finished(summary: Mutex<Summary>, started: Instant) -> Summary {
    let mut summary = summary.into_inner().unwrap_or_else(|p| p.into_inner());
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn next_frame<R: AsyncRead + Unpin>(rd: &mut R, peer: &str) -> Result<Frame, FilesError> {
    match read_frame(rd).await {
        Ok(Some(Frame::Goodbye)) => Err(FilesError::Protocol(
            "the server is shutting down (GOODBYE); run the command again to go on".into(),
        )),
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(FilesError::Connection {
            peer: peer.to_owned(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ),
        }),
        Err(e) => Err(wire_error(peer, e)),
    }
}

fn wire_error(peer: &str, e: WireError) -> FilesError {
    match e {
        WireError::Io(source) => FilesError::Connection {
            peer: peer.to_owned(),
            source,
        },
        WireError::Codec(c) => FilesError::Codec(c),
    }
}

fn unexpected(frame: &Frame, wanted: &str) -> FilesError {
    FilesError::Protocol(format!(
        "the server sent {} where {wanted} was due",
        frame.kind()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let p = |s| RemotePath::parse(s).unwrap();
        let out = dir.path();
        assert_eq!(
            destination(out, &p("docs"), &p("docs/a/b")).unwrap(),
            out.join("docs/a/b")
        );
        assert_eq!(
            destination(out, &p("x/y.txt"), &p("x/y.txt")).unwrap(),
            out.join("y.txt")
        );
        assert_eq!(
            destination(out, &RemotePath::root(), &p("z")).unwrap(),
            out.join("z")
        );
        assert!(destination(out, &p("docs"), &p("other/secret")).is_err());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/tmp", out.join("docs")).unwrap();
            assert!(matches!(
                destination(out, &p("docs"), &p("docs/x")),
                Err(FilesError::BadName { .. })
            ));
        }
    }
}
