//! Writing certificates and keys: keys are created with mode 0600 from the start (never
//! world-readable, not even for a moment), and files are replaced atomically so that a crash
//! never leaves half a key behind.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Who may read a file we write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Owner only (0600): private keys.
    Private,
    /// Everyone may read (0644): certificates.
    Public,
}

/// Writes `contents` to `path` atomically (temporary file, fsync, rename).
pub fn write_file(path: &Path, contents: &[u8], access: Access) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidInput(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(match access {
            Access::Private => 0o600,
            Access::Public => 0o644,
        });
    }
    let mut file = options
        .open(&tmp)
        .map_err(|e| Error::file(&tmp, "create", e))?;
    file.write_all(contents)
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::file(&tmp, "write", e))?;
    fs::rename(&tmp, path).map_err(|e| Error::file(path, "write", e))?;
    Ok(())
}

/// Creates a directory (and its parents) that only the owner can enter, for key material.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| Error::file(dir, "create directory", e))
}
