//! Files appear under their final name only whole and on disk: written under a temporary
//! name, synced, then renamed, and the directory synced. Small files are committed in
//! groups: one `syncfs` for many files instead of one `fsync` each (what makes 10,000 small
//! files fast), then the renames.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::codec::{Meta, Mtime};

/// A group is committed when it holds this many files...
pub const GROUP_FILES: usize = 512;
/// ...or this many bytes.
pub const GROUP_BYTES: u64 = 64 << 20;

/// Files written and closed, waiting for their rename.
#[derive(Debug)]
pub struct Committer<T> {
    staged: Vec<(PathBuf, PathBuf, T)>,
    bytes: u64,
}

impl<T> Default for Committer<T> {
    fn default() -> Self {
        Committer {
            staged: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T> Committer<T> {
    /// Adds a written file (`part`, to be renamed to `dest`) to the group.
    pub fn stage(&mut self, part: PathBuf, dest: PathBuf, size: u64, tag: T) {
        self.staged.push((part, dest, tag));
        self.bytes += size;
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Whether the group should be committed now.
    pub fn is_full(&self) -> bool {
        self.staged.len() >= GROUP_FILES || self.bytes >= GROUP_BYTES
    }

    /// Syncs every staged file to disk, renames each to its final name and syncs the
    /// directories: the result for each, in the order they were staged.
    pub fn flush(&mut self) -> Vec<(T, io::Result<()>)> {
        let staged = std::mem::take(&mut self.staged);
        self.bytes = 0;
        let synced = sync_all_of(staged.iter().map(|(part, _, _)| part.as_path()));
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut out = Vec::with_capacity(staged.len());
        for (part, dest, tag) in staged {
            let result = match &synced {
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                Ok(()) => rename_into(&part, &dest),
            };
            if result.is_ok() {
                if let Some(dir) = dest.parent() {
                    if !dirs.iter().any(|d| d == dir) {
                        dirs.push(dir.to_path_buf());
                    }
                }
            }
            out.push((tag, result));
        }
        for dir in dirs {
            let _ = sync_dir(&dir);
        }
        out
    }
}

/// Syncs these files: one `syncfs` of their file system on Linux, `fsync` of each elsewhere.
fn sync_all_of<'a>(mut parts: impl Iterator<Item = &'a Path>) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        if let Some(first) = parts.next() {
            let file = File::open(first)?;
            return rustix::fs::syncfs(&file).map_err(io::Error::from);
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        for part in parts {
            File::open(part)?.sync_all()?;
        }
        Ok(())
    }
}

/// Writes a large file's bytes out while more arrive: every [`FLUSH_EVERY`] bytes, a
/// `fdatasync` on a thread of its own (unless the last one still runs), so that the disk works
/// during the transfer and the sync before the rename has little left to do. Without it, a
/// durable upload takes the transfer's time *plus* the disk's.
#[derive(Debug, Default)]
pub struct Flusher {
    unflushed: u64,
    running: Option<std::thread::JoinHandle<()>>,
}

/// See [`Flusher`].
pub const FLUSH_EVERY: u64 = 32 << 20;

impl Flusher {
    /// `n` more bytes were written to `file`.
    pub fn wrote(&mut self, file: &File, n: u64) {
        self.unflushed += n;
        if self.unflushed < FLUSH_EVERY {
            return;
        }
        if self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        // A failed clone or sync only loses the head start: the sync before the rename
        // reports errors.
        if let Ok(clone) = file.try_clone() {
            self.unflushed = 0;
            self.running = std::thread::Builder::new()
                .name("files-flush".into())
                .spawn(move || {
                    let _ = clone.sync_data();
                })
                .ok();
        }
    }

    /// Waits for a sync in progress.
    pub fn wait(&mut self) {
        if let Some(t) = self.running.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.wait();
    }
}

/// Syncs `file`, renames `part` to `dest` and syncs the directory: for a large file, alone.
pub fn commit_now(file: &File, part: &Path, dest: &Path) -> io::Result<()> {
    file.sync_all()?;
    rename_into(part, dest)?;
    if let Some(dir) = dest.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Renames `part` to `dest`, making `dest`'s directory first if it is missing.
fn rename_into(part: &Path, dest: &Path) -> io::Result<()> {
    match std::fs::rename(part, dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && part.exists() => {
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::rename(part, dest)
        }
        other => other,
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Gives a file its permission bits (with the owner's read and write always on, so that the
/// service can read it back) and its time.
pub fn apply_file_meta(file: &File, meta: &Meta) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode((meta.mode & 0o777) | 0o600))?;
    }
    file.set_modified(to_system_time(meta.mtime))
}

/// Gives a directory its permission bits (owner's rwx always on) and its time.
pub fn apply_dir_meta(dir: &Path, mode: u32, mtime: Mtime) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode((mode & 0o777) | 0o700))?;
    }
    File::open(dir)?.set_modified(to_system_time(mtime))
}

/// The size, permission bits and time of a file or directory.
pub fn meta_of(metadata: &std::fs::Metadata) -> Meta {
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        metadata.permissions().mode() & 0o777
    };
    #[cfg(not(unix))]
    let mode = if metadata.permissions().readonly() {
        0o444
    } else {
        0o644
    };
    Meta {
        size: if metadata.is_dir() { 0 } else { metadata.len() },
        mode,
        mtime: metadata
            .modified()
            .map(from_system_time)
            .unwrap_or_default(),
    }
}

/// A time as the protocol sends it.
pub fn from_system_time(t: SystemTime) -> Mtime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Mtime {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let (secs, nanos) = if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            };
            Mtime { secs, nanos }
        }
    }
}

/// A protocol time as a system time (clamped to what the system can hold).
pub fn to_system_time(t: Mtime) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    if t.secs >= 0 {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(t.secs as u64) + nanos)
            .unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
            .and_then(|s| s.checked_add(nanos))
            .unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for t in [
            Mtime { secs: 0, nanos: 0 },
            Mtime {
                secs: 1_700_000_000,
                nanos: 123_456_789,
            },
            Mtime {
                secs: -5,
                nanos: 250_000_000,
            },
        ] {
            assert_eq!(from_system_time(to_system_time(t)), t);
        }
    }

    #[test]
    fn a_group_commits_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Committer::default();
        for i in 0..3 {
            let part = dir.path().join(format!(".{i}.part"));
            std::fs::write(&part, format!("{i}")).unwrap();
            c.stage(part, dir.path().join(format!("{i}")), 1, i);
        }
        c.stage(dir.path().join("missing"), dir.path().join("x"), 1, 9);
        let results = c.flush();
        assert_eq!(
            results
                .iter()
                .map(|(t, r)| (*t, r.is_ok()))
                .collect::<Vec<_>>(),
            [(0, true), (1, true), (2, true), (9, false)]
        );
        assert_eq!(std::fs::read_to_string(dir.path().join("2")).unwrap(), "2");
        assert!(c.is_empty());
    }
}
