//! The `files` service: the server side of `tlsnet-files/1`.
//!
//! A connection runs as three parts, so that nothing waits for a round trip and no disk
//! call runs on the async workers:
//!
//! - the **reader** (async) decodes frames and queues them;
//! - the **session** (one blocking thread per connection) does every file-system call in
//!   order: checks names, verifies chunk hashes, writes, commits, reads files to send, and
//!   queues the answers;
//! - the **writer** (async) sends the answers, flushing when the queue runs dry.
//!
//! Both queues are bounded, so a fast client or a slow disk is slowed down, never buffered
//! without limit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::atomic::Committer;
use super::codec::{
    Area, Chunk, CodecError, ErrorCode, Failure, FileStart, Frame, Hash, Kind, Welcome, MAX_CHUNK,
    VERSION,
};
use super::paths::RemotePath;
use super::space::{check_name, Finished, Spaces, StoreError, Target, Upload};
use super::wire::{frame_buffered, read_frame, write_frame, write_frames, WireError};
use super::FilesError;
use crate::error::chain;
use crate::service::echo::DRAIN_QUIET;
use crate::service::{BoxFuture, BoxStream, Context, End, Service, UserId, UserIdSource};

/// The ALPN id of the files service.
pub const FILES_ALPN: &[u8] = b"tlsnet-files/1";

/// A file at least this large is committed alone (fsync) as soon as it is complete; smaller
/// ones are committed in groups.
pub const COMMIT_ALONE: u64 = MAX_CHUNK as u64;

/// The files service: per-user spaces under one root.
#[derive(Debug, Clone)]
pub struct FilesService {
    spaces: Arc<Spaces>,
    user_id: UserIdSource,
}

impl FilesService {
    /// A service storing under `spaces`, taking user ids from the certificate field
    /// `user_id`.
    pub fn new(spaces: Spaces, user_id: UserIdSource) -> Self {
        FilesService {
            spaces: Arc::new(spaces),
            user_id,
        }
    }

    /// The spaces.
    pub fn spaces(&self) -> &Spaces {
        &self.spaces
    }
}

impl Service for FilesService {
    fn name(&self) -> &'static str {
        "files"
    }

    fn serve<'a>(&'a self, stream: BoxStream, ctx: &'a Context) -> BoxFuture<'a, End> {
        Box::pin(serve(self, stream, ctx))
    }
}

type Reader = BufReader<tokio::io::ReadHalf<BoxStream>>;
type Writer = tokio::io::WriteHalf<BoxStream>;

/// The first frame must come within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

async fn serve(service: &FilesService, stream: BoxStream, ctx: &Context) -> End {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd: Reader = BufReader::with_capacity(64 * 1024, rd);
    let mut scratch = Vec::new();
    let first = tokio::select! {
        _ = ctx.shutdown.forced() => return End::Shutdown,
        r = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut rd)) => r,
    };
    let version = match first {
        Ok(Ok(Some(Frame::Hello { version }))) => version,
        Ok(Ok(None)) => return End::Closed,
        Ok(Ok(Some(other))) => {
            let e = FilesError::Protocol(format!("the first frame is {}, not HELLO", other.kind()));
            return refuse(&mut wr, &mut scratch, ctx, ErrorCode::Protocol, e).await;
        }
        Ok(Err(e)) => return wire_end(e, ctx),
        Err(_) => {
            return End::Failed(Box::new(FilesError::Protocol(
                "no HELLO within 30 s".into(),
            )))
        }
    };
    if version != VERSION {
        let e = FilesError::Protocol(format!(
            "the client speaks version {version}; this server speaks {VERSION}"
        ));
        return refuse(&mut wr, &mut scratch, ctx, ErrorCode::Version, e).await;
    }
    let user = match UserId::of_peer(ctx.identity(), service.user_id) {
        Ok(user) => user,
        Err(e) => {
            let e = FilesError::NoUser(e);
            return refuse(&mut wr, &mut scratch, ctx, ErrorCode::Identity, e).await;
        }
    };
    let spaces = service.spaces.clone();
    let used = {
        let (spaces, user) = (spaces.clone(), user.clone());
        tokio::task::spawn_blocking(move || {
            spaces.sweep(&user);
            spaces.used(&user)
        })
        .await
        .unwrap_or(0)
    };
    let limits = spaces.limits();
    let welcome = Frame::Welcome(Welcome {
        version: VERSION,
        user: user.to_string(),
        max_chunk: MAX_CHUNK as u32,
        max_file: limits.max_file,
        quota: limits.quota.unwrap_or(0),
        used,
    });
    if let Err(e) = send_now(&mut wr, &welcome, &mut scratch).await {
        return wire_end(e, ctx);
    }
    info!(peer = %ctx.peer, user = %user, used, "files: session started");

    let (cmd_tx, cmd_rx) = mpsc::channel::<Vec<Frame>>(32);
    let (out_tx, out_rx) = mpsc::channel::<Vec<Frame>>(16);
    let pending = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicBool::new(false));
    let session = Session {
        spaces,
        user: user.clone(),
        peer: ctx.peer,
        upload: None,
        skipping: None,
        committer: Committer::default(),
        out: Outbox::new(out_tx.clone()),
        busy: busy.clone(),
        stored: 0,
        bytes_in: 0,
        bytes_out: 0,
        failed: 0,
    };
    let worker = {
        let pending = pending.clone();
        tokio::task::spawn_blocking(move || session.run(cmd_rx, &pending))
    };
    let reading = read_loop(&mut rd, cmd_tx, out_tx, ctx, &pending, &busy);
    let writing = write_loop(&mut wr, out_rx);
    let (end, written) = tokio::join!(reading, writing);
    let _ = worker.await;
    let end = match (end, written) {
        (End::Closed | End::Drained, Err(e)) => wire_end(e, ctx),
        (end, _) => end,
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    end
}

/// Reads frames into the session's queue until the client closes, the session stops, or the
/// server shuts down.
async fn read_loop(
    rd: &mut Reader,
    cmd_tx: mpsc::Sender<Vec<Frame>>,
    out_tx: mpsc::Sender<Vec<Frame>>,
    ctx: &Context,
    pending: &AtomicUsize,
    busy: &AtomicBool,
) -> End {
    loop {
        let idle = || pending.load(Ordering::Acquire) == 0 && !busy.load(Ordering::Acquire);
        let frame = tokio::select! {
            _ = ctx.shutdown.forced() => return End::Shutdown,
            _ = cmd_tx.closed() => return End::Closed,
            // Draining: once nothing is in flight and the client has been quiet for a moment,
            // say goodbye.
            _ = async {
                ctx.shutdown.draining().await;
                loop {
                    tokio::time::sleep(DRAIN_QUIET).await;
                    if idle() { break }
                }
            } => {
                let _ = out_tx.send(vec![Frame::Goodbye]).await;
                return End::Drained;
            }
            r = read_frame(rd) => r,
        };
        match frame {
            Ok(Some(frame)) => {
                // The frames already read come along in one batch (one wake-up of the
                // session for a whole read of small files, not one per frame).
                let mut batch = vec![frame];
                let mut failed = None;
                while batch.len() < IN_BATCH && frame_buffered(rd.buffer()) {
                    match read_frame(rd).await {
                        Ok(Some(frame)) => batch.push(frame),
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                pending.fetch_add(batch.len(), Ordering::AcqRel);
                if cmd_tx.send(batch).await.is_err() {
                    return End::Closed;
                }
                match failed {
                    None => {}
                    Some(WireError::Codec(e)) => return invalid(e, ctx, cmd_tx, &out_tx).await,
                    Some(e) => return wire_end(e, ctx),
                }
            }
            Ok(None) => return End::Closed,
            Err(WireError::Codec(e)) => return invalid(e, ctx, cmd_tx, &out_tx).await,
            Err(e) => return wire_end(e, ctx),
        }
    }
}

/// Frames per batch from the reader to the session, at most.
const IN_BATCH: usize = 64;

/// The client sent an invalid frame: what came before it is served, then it is told why and
/// the connection ends.
async fn invalid(
    e: CodecError,
    ctx: &Context,
    cmd_tx: mpsc::Sender<Vec<Frame>>,
    out_tx: &mpsc::Sender<Vec<Frame>>,
) -> End {
    warn!(peer = %ctx.peer, error = %e, "files: the client sent an invalid frame");
    let failure = Failure::new(ErrorCode::Protocol, "", e.to_string());
    drop(cmd_tx);
    let _ = out_tx.send(vec![Frame::Error(failure)]).await;
    End::Failed(Box::new(FilesError::Codec(e)))
}

/// Sends the session's answers, flushing whenever the queue is empty.
async fn write_loop(
    wr: &mut Writer,
    mut out_rx: mpsc::Receiver<Vec<Frame>>,
) -> Result<(), WireError> {
    let mut scratch = Vec::new();
    while let Some(batch) = out_rx.recv().await {
        write_frames(wr, &batch, &mut scratch).await?;
        if out_rx.is_empty() {
            wr.flush().await.map_err(WireError::Io)?;
        }
    }
    wr.flush().await.map_err(WireError::Io)
}

async fn send_now(wr: &mut Writer, frame: &Frame, scratch: &mut Vec<u8>) -> Result<(), WireError> {
    write_frame(wr, frame, scratch).await?;
    wr.flush().await.map_err(WireError::Io)
}

/// Tells the client why it is refused, logs it, and ends the connection.
async fn refuse(
    wr: &mut Writer,
    scratch: &mut Vec<u8>,
    ctx: &Context,
    code: ErrorCode,
    e: FilesError,
) -> End {
    warn!(peer = %ctx.peer, error = %chain(&e), "files: client refused");
    let frame = Frame::Error(Failure::new(code, "", chain(&e).to_string()));
    let _ = tokio::time::timeout(Duration::from_secs(5), send_now(wr, &frame, scratch)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    End::Failed(Box::new(e))
}

fn wire_end(e: WireError, ctx: &Context) -> End {
    match e {
        WireError::Io(e) => End::from_io(e),
        WireError::Codec(c) => {
            warn!(peer = %ctx.peer, error = %c, "files: the client sent an invalid frame");
            End::Failed(Box::new(FilesError::Codec(c)))
        }
    }
}

/// Answers per batch at most (a batch is one message to the writer, which flushes once the
/// queue is empty: a group commit's OKs or a listing's entries go out in a few TLS records
/// instead of one each).
const OUT_BATCH: usize = 64;

/// The session's answers on their way to the writer, in batches: sent when a batch is full,
/// holds a DATA frame (a download streams), and before the session waits for a request (so
/// every answer a client waits for is out before the session sleeps).
struct Outbox {
    tx: mpsc::Sender<Vec<Frame>>,
    batch: Vec<Frame>,
}

impl Outbox {
    fn new(tx: mpsc::Sender<Vec<Frame>>) -> Self {
        Outbox {
            tx,
            batch: Vec::new(),
        }
    }

    /// Queues an answer; false once the writer is gone.
    fn push(&mut self, frame: Frame) -> bool {
        let streams = matches!(frame, Frame::Data(_));
        self.batch.push(frame);
        if streams || self.batch.len() >= OUT_BATCH {
            return self.flush();
        }
        true
    }

    /// Hands what is queued to the writer; false once the writer is gone.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(OUT_BATCH));
        self.tx.blocking_send(batch).is_ok()
    }
}

/// One connection's file-system work, on a blocking thread.
struct Session {
    spaces: Arc<Spaces>,
    user: UserId,
    peer: SocketAddr,
    upload: Option<Upload>,
    /// The file whose remaining DATA and END are dropped (its upload failed).
    skipping: Option<String>,
    committer: Committer<String>,
    out: Outbox,
    busy: Arc<AtomicBool>,
    stored: u64,
    bytes_in: u64,
    bytes_out: u64,
    failed: u64,
}

impl Session {
    fn run(mut self, mut rx: mpsc::Receiver<Vec<Frame>>, pending: &AtomicUsize) {
        'session: loop {
            let batch = match rx.try_recv() {
                Ok(batch) => batch,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Nothing else queued: commit what waits, and send every answer,
                    // before sleeping.
                    self.flush_commits();
                    if !self.out.flush() {
                        break;
                    }
                    match rx.blocking_recv() {
                        Some(batch) => batch,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            for frame in batch {
                let go_on = self.handle(frame);
                pending.fetch_sub(1, Ordering::AcqRel);
                self.busy.store(
                    self.upload.is_some() || !self.committer.is_empty(),
                    Ordering::Release,
                );
                if !go_on {
                    break 'session;
                }
            }
        }
        self.flush_commits();
        self.out.flush();
        if let Some(up) = self.upload.take() {
            info!(
                peer = %self.peer, user = %self.user, path = %up.target.path,
                written = up.written, size = up.meta.size,
                "files: upload interrupted; the partial file is kept for a resume"
            );
            self.spaces.abandon(up, false);
        }
        self.busy.store(false, Ordering::Release);
        info!(
            peer = %self.peer, user = %self.user, stored = self.stored,
            bytes_in = self.bytes_in, bytes_out = self.bytes_out, failed = self.failed,
            "files: session ended"
        );
    }

    /// Queues a frame for the writer; false when the connection is gone.
    fn send(&mut self, frame: Frame) -> bool {
        self.out.push(frame)
    }

    fn fail(&mut self, path: &str, e: &StoreError) -> bool {
        self.failed += 1;
        warn!(
            peer = %self.peer, user = %self.user, path = %path.escape_debug(),
            code = e.code().label(), error = %chain(e),
            "files: request failed"
        );
        self.send(Frame::Error(e.to_failure(path)))
    }

    /// A broken protocol: the client is told, and the session ends.
    fn fatal(&mut self, what: String) -> bool {
        self.failed += 1;
        warn!(peer = %self.peer, user = %self.user, error = %what, "files: protocol error; closing");
        self.send(Frame::Error(Failure::new(ErrorCode::Protocol, "", what)));
        false
    }

    fn flush_commits(&mut self) {
        if self.committer.is_empty() {
            return;
        }
        for (path, result) in self.committer.flush() {
            match result {
                Ok(()) => {
                    self.stored += 1;
                    debug!(user = %self.user, path = %path, "files: stored");
                    let _ = self.out.push(Frame::Ok { path });
                }
                Err(source) => {
                    let e = StoreError::Io {
                        path: path.clone(),
                        action: "store",
                        source,
                    };
                    self.fail(&path, &e);
                }
            }
        }
    }

    fn target(&self, to: &str, path: &RemotePath) -> Result<Target, StoreError> {
        let (owner, under) = if to.is_empty() {
            (self.user.clone(), format!("files/{}", path.as_str()))
        } else {
            let owner = UserId::parse(to).map_err(|source| StoreError::BadUser {
                user: to.chars().take(200).collect(),
                source,
            })?;
            (owner, format!("inbox/{}/{}", self.user, path.as_str()))
        };
        let under_owner = check_name(&under)?;
        Ok(Target {
            owner,
            under_owner,
            path: path.clone(),
        })
    }

    fn handle(&mut self, frame: Frame) -> bool {
        let in_file = self.upload.is_some() || self.skipping.is_some();
        match frame {
            Frame::Data(chunk) => return self.data(chunk),
            Frame::End { hash } => return self.end(&hash),
            other if in_file => {
                return self.fatal(format!("a {} frame inside a file", other.kind()));
            }
            Frame::Open(ref open) if !open.resume => {}
            _ => self.flush_commits(),
        }
        match frame {
            Frame::Open(open) => {
                let path = match check_name(&open.path) {
                    Ok(p) => p,
                    Err(e) => return self.refuse_open(&open.path, &e, open.resume),
                };
                let target = match self.target(&open.to, &path) {
                    Ok(t) => t,
                    Err(e) => return self.refuse_open(&open.path, &e, open.resume),
                };
                match self.spaces.open_upload(target, open.meta, open.resume) {
                    Ok((up, offset, prefix)) => {
                        if offset > 0 {
                            info!(
                                user = %self.user, path = %path, offset,
                                checked = up.kept.as_str(),
                                "files: an upload goes on from its partial file"
                            );
                        }
                        self.upload = Some(up);
                        !open.resume || self.send(Frame::Ready { offset, prefix })
                    }
                    Err(e) => self.refuse_open(&open.path, &e, open.resume),
                }
            }
            Frame::Mkdir {
                mode,
                mtime,
                to,
                path,
            } => {
                let result = check_name(&path)
                    .and_then(|p| self.target(&to, &p))
                    .and_then(|t| self.spaces.mkdir(&t, mode, mtime));
                match result {
                    Ok(()) => self.send(Frame::Ok { path }),
                    Err(e) => self.fail(&path, &e),
                }
            }
            Frame::List {
                area,
                recursive,
                path,
            } => {
                let checked =
                    RemotePath::parse_or_root(&path).map_err(|source| StoreError::BadName {
                        path: path.clone(),
                        source,
                    });
                let (spaces, user, out) = (&self.spaces, &self.user, &mut self.out);
                let mut send = |e| out.push(Frame::Entry(e));
                let listed =
                    checked.and_then(|p| spaces.list(user, area, &p, recursive, &mut send));
                match listed {
                    Ok(count) => self.send(Frame::ListEnd { count }),
                    Err(e) => self.fail(&path, &e),
                }
            }
            Frame::Get(get) => match check_name(&get.path) {
                Ok(p) => self.get(get.area, &p, get.have),
                Err(e) => self.fail(&get.path, &e),
            },
            Frame::Remove { area, path } => {
                let result =
                    check_name(&path).and_then(|p| self.spaces.remove(&self.user, area, &p));
                match result {
                    Ok(()) => {
                        info!(user = %self.user, path = %path, area = ?area, "files: removed");
                        self.send(Frame::Ok { path })
                    }
                    Err(e) => self.fail(&path, &e),
                }
            }
            other => self.fatal(format!("{} is not a request", other.kind())),
        }
    }

    /// An OPEN that cannot be served: without `resume`, its DATA and END are on the way and
    /// are dropped.
    fn refuse_open(&mut self, path: &str, e: &StoreError, resume: bool) -> bool {
        if !resume {
            self.skipping = Some(path.to_owned());
        }
        self.fail(path, e)
    }

    fn data(&mut self, chunk: Chunk) -> bool {
        if self.skipping.is_some() {
            return true;
        }
        let Some(mut up) = self.upload.take() else {
            return self.fatal(format!("{} outside a file", Kind::Data));
        };
        let shown = up.target.path.to_string();
        if !chunk.fits(up.meta.size) {
            let e = StoreError::Protocol {
                path: shown.clone(),
                what: format!(
                    "a chunk of {} bytes at offset {} has no place in a file of {} bytes",
                    chunk.data().len(),
                    chunk.offset(),
                    up.meta.size
                ),
            };
            self.spaces.abandon(up, false);
            self.skipping = Some(shown.clone());
            return self.fail(&shown, &e);
        }
        if !chunk.verify(up.meta.size) {
            let e = StoreError::Integrity {
                path: shown.clone(),
                what: format!(
                    "the chunk at offset {} does not match its BLAKE3 (changed on the way); the upload stops there",
                    chunk.offset()
                ),
            };
            self.spaces.abandon(up, false);
            self.skipping = Some(shown.clone());
            return self.fail(&shown, &e);
        }
        match self
            .spaces
            .write(&mut up, chunk.offset(), chunk.data(), chunk.hash())
        {
            Ok(()) => {
                self.bytes_in += chunk.data().len() as u64;
                self.upload = Some(up);
                true
            }
            Err(e) => {
                self.spaces.abandon(up, false);
                self.skipping = Some(shown.clone());
                self.fail(&shown, &e)
            }
        }
    }

    fn end(&mut self, hash: &Hash) -> bool {
        if self.skipping.take().is_some() {
            return true;
        }
        let Some(up) = self.upload.take() else {
            return self.fatal(format!("{} outside a file", Kind::End));
        };
        let shown = up.target.path.to_string();
        let size = up.meta.size;
        let alone = size >= COMMIT_ALONE;
        match self.spaces.finish(up, hash, alone) {
            Ok(Finished::Stored) => {
                self.stored += 1;
                info!(user = %self.user, path = %shown, size, "files: stored");
                self.send(Frame::Ok { path: shown })
            }
            Ok(Finished::Staged(part, dest)) => {
                self.committer.stage(part, dest, size, shown);
                if self.committer.is_full() {
                    self.flush_commits();
                }
                true
            }
            Err(e) => self.fail(&shown, &e),
        }
    }

    fn get(&mut self, area: Area, path: &RemotePath, have: Option<super::codec::Have>) -> bool {
        let shown = path.to_string();
        let (mut file, meta, start, mut hash) =
            match self.spaces.open_download(&self.user, area, path, have) {
                Ok(x) => x,
                Err(e) => return self.fail(&shown, &e),
            };
        if !self.send(Frame::File(FileStart {
            offset: start,
            meta,
            path: shown.clone(),
        })) {
            return false;
        }
        let mut offset = start;
        while offset < meta.size {
            let want = usize::try_from(meta.size - offset)
                .unwrap_or(MAX_CHUNK)
                .min(MAX_CHUNK);
            let mut chunk = Chunk::buffer(want);
            if let Err(source) = read_full(&mut file, chunk.data_mut()) {
                let e = StoreError::Io {
                    path: shown.clone(),
                    action: "read (did it shrink?)",
                    source,
                };
                return self.fail(&shown, &e);
            }
            chunk.seal(meta.size, offset);
            hash.push(want, chunk.hash());
            offset += want as u64;
            self.bytes_out += want as u64;
            if !self.send(Frame::Data(chunk)) {
                return false;
            }
        }
        debug!(user = %self.user, path = %shown, start, size = meta.size, "files: sent");
        self.send(Frame::End {
            hash: hash.finalize().unwrap_or_default(),
        })
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    file.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::codec::{Meta, Mtime, Open};
    use crate::files::space::Limits;

    fn session(dir: &std::path::Path, quota: Option<u64>) -> (Session, mpsc::Receiver<Vec<Frame>>) {
        let spaces = Spaces::open(
            dir,
            Limits {
                quota,
                max_file: 1 << 20,
                ..Limits::default()
            },
        )
        .unwrap();
        let (out, rx) = mpsc::channel(1024);
        let s = Session {
            spaces: Arc::new(spaces),
            user: UserId::parse("alice").unwrap(),
            peer: "127.0.0.1:1".parse().unwrap(),
            upload: None,
            skipping: None,
            committer: Committer::default(),
            out: Outbox::new(out),
            busy: Arc::new(AtomicBool::new(false)),
            stored: 0,
            bytes_in: 0,
            bytes_out: 0,
            failed: 0,
        };
        (s, rx)
    }

    fn open(path: &str, size: u64) -> Frame {
        Frame::Open(Open {
            resume: false,
            meta: Meta {
                size,
                mode: 0o644,
                mtime: Mtime {
                    secs: 1_600_000_000,
                    nanos: 0,
                },
            },
            to: String::new(),
            path: path.into(),
        })
    }

    /// The answers so far (the outbox handed to the writer first, as before a wait).
    fn drain(s: &mut Session, rx: &mut mpsc::Receiver<Vec<Frame>>) -> Vec<Frame> {
        assert!(s.out.flush());
        let mut v = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            v.extend(batch);
        }
        v
    }

    /// The receiver names the file when a chunk was changed on the way, keeps going with the
    /// next file, and never shows the bad one under its name.
    #[test]
    fn a_corrupted_chunk_is_detected_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, mut rx) = session(dir.path(), None);
        let data = b"0123456789";
        assert!(s.handle(open("bad.txt", 10)));
        assert!(s.handle(Frame::Data(Chunk::new(10, 0, data).corrupt())));
        assert!(s.handle(Frame::End {
            hash: *blake3::hash(data).as_bytes()
        }));
        assert!(s.handle(open("good.txt", 10)));
        assert!(s.handle(Frame::Data(Chunk::new(10, 0, data))));
        assert!(s.handle(Frame::End {
            hash: *blake3::hash(data).as_bytes()
        }));
        s.flush_commits();
        let frames = drain(&mut s, &mut rx);
        match &frames[..] {
            [Frame::Error(f), Frame::Ok { path }] => {
                assert_eq!(f.code, ErrorCode::Integrity);
                assert_eq!(f.path, "bad.txt");
                assert!(f.message.contains("bad.txt"), "{}", f.message);
                assert_eq!(path, "good.txt");
            }
            other => panic!("{other:?}"),
        }
        let files = dir.path().join("users/alice/files");
        assert!(!files.join("bad.txt").exists());
        assert_eq!(std::fs::read(files.join("good.txt")).unwrap(), data);
    }

    #[test]
    fn a_wrong_whole_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, mut rx) = session(dir.path(), None);
        s.handle(open("x", 3));
        s.handle(Frame::Data(Chunk::new(3, 0, b"abc")));
        s.handle(Frame::End { hash: [0; 32] });
        let frames = drain(&mut s, &mut rx);
        assert!(
            matches!(&frames[..], [Frame::Error(f)] if f.code == ErrorCode::Integrity && f.path == "x"),
            "{frames:?}"
        );
        assert!(!dir.path().join("users/alice/files/x").exists());
    }

    #[test]
    fn names_quota_and_size_are_refused_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, mut rx) = session(dir.path(), Some(100));
        for (name, size, code) in [
            ("../escape", 1, ErrorCode::BadName),
            ("/abs", 1, ErrorCode::BadName),
            ("a\0b", 1, ErrorCode::BadName),
            ("big", 2 << 20, ErrorCode::TooLarge),
            ("over", 101, ErrorCode::Quota),
        ] {
            assert!(s.handle(open(name, size)));
            assert!(s.handle(Frame::Data(Chunk::new(1, 0, b"z"))));
            assert!(s.handle(Frame::End { hash: [0; 32] }));
            let frames = drain(&mut s, &mut rx);
            assert!(
                matches!(&frames[..], [Frame::Error(f)] if f.code == code),
                "{name}: {frames:?}"
            );
        }
        assert_eq!(crate::files::space::tree_size(dir.path()), 0);
    }

    #[test]
    fn a_request_inside_a_file_ends_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, mut rx) = session(dir.path(), None);
        s.handle(open("x", 3));
        assert!(!s.handle(Frame::List {
            area: Area::Files,
            recursive: false,
            path: String::new()
        }));
        assert!(
            matches!(&drain(&mut s, &mut rx)[..], [Frame::Error(f)] if f.code == ErrorCode::Protocol)
        );
    }
}
