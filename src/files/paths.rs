//! Names in a user's space, checked before any file-system call. The server checks every
//! name a client sends; the client checks every name a server lists, so that a malicious
//! server cannot make `get` write outside its `-o` directory.
//!
//! A [`RemotePath`] is relative, `/`-separated UTF-8: at most [`MAX_PATH`] bytes and
//! [`MAX_DEPTH`] components of at most [`MAX_COMPONENT`] bytes each. Refused: a leading `/`
//! (absolute), empty components (`a//b`), `.` and `..`, `\`, NUL and every other control
//! character (C0, DEL, C1), and the name [`RESERVED`] as the first component (the client
//! keeps its partial downloads there). [`resolve_inside`] then joins it to a directory and
//! refuses a path that leads through a symbolic link to somewhere outside that directory.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Longest path, in bytes.
pub const MAX_PATH: usize = 1024;
/// Longest component, in bytes (the usual file-system limit).
pub const MAX_COMPONENT: usize = 255;
/// Most components in a path.
pub const MAX_DEPTH: usize = 64;
/// A first component no remote path may have.
pub const RESERVED: &str = ".tlsnet-partial";

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The name is empty.
    #[error("an empty name")]
    Empty,
    /// The name starts with `/`.
    #[error("an absolute path (names are relative to the user's space)")]
    Absolute,
    /// A `..` component.
    #[error("a '..' component")]
    Parent,
    /// A `.` or an empty component.
    #[error("a '.' or empty component")]
    Dot,
    /// A NUL or control character.
    #[error("a NUL or control character (U+{0:04X})")]
    Control(u32),
    /// A backslash.
    #[error("a backslash")]
    Backslash,
    /// A component longer than [`MAX_COMPONENT`].
    #[error("a component longer than {MAX_COMPONENT} bytes")]
    ComponentTooLong,
    /// A path longer than [`MAX_PATH`].
    #[error("longer than {MAX_PATH} bytes")]
    TooLong,
    /// More than [`MAX_DEPTH`] components.
    #[error("deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// [`RESERVED`] as the first component.
    #[error("the reserved name {RESERVED}")]
    Reserved,
    /// A local name that is not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// A component is a symbolic link whose target is outside the directory.
    #[error("a symbolic link ({}) that leads out of its directory", .0.display())]
    SymlinkOut(PathBuf),
}

/// A checked relative path in a user's space. The empty path is the space itself
/// ([`RemotePath::root`]); [`RemotePath::parse`] never returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemotePath(String);

impl RemotePath {
    /// The space itself.
    pub fn root() -> Self {
        RemotePath(String::new())
    }

    /// Checks a name (see the module documentation). One trailing `/` is allowed and
    /// dropped (`docs/` is `docs`).
    pub fn parse(text: &str) -> Result<Self, PathError> {
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(PathError::Control(c as u32));
        }
        if text.len() > MAX_PATH {
            return Err(PathError::TooLong);
        }
        if text.starts_with('/') {
            return Err(PathError::Absolute);
        }
        let text = text.strip_suffix('/').unwrap_or(text);
        if text.is_empty() {
            return Err(PathError::Empty);
        }
        if text.contains('\\') {
            return Err(PathError::Backslash);
        }
        let mut depth = 0;
        for component in text.split('/') {
            depth += 1;
            match component {
                "" | "." => return Err(PathError::Dot),
                ".." => return Err(PathError::Parent),
                c if c.len() > MAX_COMPONENT => return Err(PathError::ComponentTooLong),
                _ => {}
            }
        }
        if depth > MAX_DEPTH {
            return Err(PathError::TooDeep);
        }
        if text.split('/').next() == Some(RESERVED) {
            return Err(PathError::Reserved);
        }
        Ok(RemotePath(text.to_owned()))
    }

    /// Like [`RemotePath::parse`], but the empty string (or `/`, or `.`) is the root.
    pub fn parse_or_root(text: &str) -> Result<Self, PathError> {
        match text {
            "" | "/" | "." | "./" => Ok(RemotePath::root()),
            _ => RemotePath::parse(text),
        }
    }

    /// A local relative path (from walking a directory) as a remote path.
    pub fn from_local(path: &Path) -> Result<Self, PathError> {
        let mut parts = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(name) => parts.push(name.to_str().ok_or(PathError::NotUtf8)?),
                Component::CurDir => {}
                Component::ParentDir => return Err(PathError::Parent),
                Component::RootDir | Component::Prefix(_) => return Err(PathError::Absolute),
            }
        }
        RemotePath::parse(&parts.join("/"))
    }

    /// Whether this is the space itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The last component (empty for the root).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The parent (the root for a single component; `None` for the root).
    pub fn parent(&self) -> Option<RemotePath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rsplit_once('/') {
            Some((parent, _)) => RemotePath(parent.to_owned()),
            None => RemotePath::root(),
        })
    }

    /// This path followed by `other`, checked again (length, depth).
    pub fn join(&self, other: &RemotePath) -> Result<RemotePath, PathError> {
        match (self.is_root(), other.is_root()) {
            (true, _) => Ok(other.clone()),
            (_, true) => Ok(self.clone()),
            _ => RemotePath::parse(&format!("{}/{}", self.0, other.0)),
        }
    }

    /// What is left of this path below `base`, component by component (`None` when it is
    /// not below it; the root when they are equal).
    pub fn strip_prefix(&self, base: &RemotePath) -> Option<RemotePath> {
        if base.is_root() {
            return Some(self.clone());
        }
        if self.0 == base.0 {
            return Some(RemotePath::root());
        }
        self.0
            .strip_prefix(&base.0)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(|rest| RemotePath(rest.to_owned()))
    }

    /// The path as a relative local path.
    pub fn to_path(&self) -> PathBuf {
        self.components().collect()
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str("/")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// `dir` joined with `path`, refusing a path that leads through a symbolic link to somewhere
/// outside `dir` (a link that stays inside is followed). Components that do not exist yet
/// are fine: they will be made as directories and files inside `dir`.
pub fn resolve_inside(dir: &Path, path: &RemotePath) -> Result<PathBuf, PathError> {
    let mut here = dir.to_path_buf();
    let mut canonical_dir: Option<PathBuf> = None;
    let mut checking = true;
    for component in path.components() {
        here.push(component);
        if !checking {
            continue;
        }
        match std::fs::symlink_metadata(&here) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let inside = match (&canonical_dir, std::fs::canonicalize(dir)) {
                    (Some(c), _) => Some(c.clone()),
                    (None, Ok(c)) => Some(c),
                    (None, Err(_)) => None,
                };
                canonical_dir = inside.clone();
                let target = std::fs::canonicalize(&here);
                match (inside, target) {
                    (Some(inside), Ok(target)) if target.starts_with(&inside) => {}
                    _ => {
                        let shown = here.strip_prefix(dir).unwrap_or(&here).to_path_buf();
                        return Err(PathError::SymlinkOut(shown));
                    }
                }
            }
            Ok(_) => {}
            // Not there yet (made inside `dir` later), not a directory, no permission: the
            // call that uses the path reports it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => checking = false,
            Err(_) => checking = false,
        }
    }
    Ok(here)
}

/// Opens the file `path` below `dir` for reading. On Linux the kernel resolves it in one call
/// (`openat2` with `RESOLVE_BENEATH`): a path that leads out of `dir` (through a symbolic link,
/// also one made or swapped in while we look) is refused, with no gap between a check and the
/// use. Elsewhere, or where `openat2` is missing (kernels before 5.6, some sandboxes), the
/// path checked by [`resolve_inside`] is opened.
pub fn open_beneath(dir: &Path, path: &RemotePath) -> Result<std::fs::File, OpenError> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        let base = std::fs::File::open(dir).map_err(OpenError::Io)?;
        match openat2(
            &base,
            path.to_path(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok(std::fs::File::from(fd)),
            Err(rustix::io::Errno::XDEV) => {
                return Err(OpenError::Name(PathError::SymlinkOut(path.to_path())))
            }
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {}
            Err(e) => return Err(OpenError::Io(e.into())),
        }
    }
    let full = resolve_inside(dir, path).map_err(OpenError::Name)?;
    std::fs::File::open(full).map_err(OpenError::Io)
}

/// Why [`open_beneath`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path leads out of the directory.
    #[error("refused name")]
    Name(#[source] PathError),
    /// The file system refused (not found, permissions, ...).
    #[error("cannot open")]
    Io(#[source] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix() {
        let long_component = "a".repeat(MAX_COMPONENT + 1);
        let long_path = vec!["a"; MAX_PATH / 2 + 1].join("/");
        let deep = vec!["a"; MAX_DEPTH + 1].join("/");
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("/", PathError::Absolute),
            ("/etc/passwd", PathError::Absolute),
            ("..", PathError::Parent),
            ("../x", PathError::Parent),
            ("a/../../x", PathError::Parent),
            ("a/..", PathError::Parent),
            (".", PathError::Dot),
            ("a/./b", PathError::Dot),
            ("a//b", PathError::Dot),
            ("a\0b", PathError::Control(0)),
            ("a\nb", PathError::Control(10)),
            ("a\u{1b}[31m", PathError::Control(0x1b)),
            ("a\u{7f}", PathError::Control(0x7f)),
            ("a\u{9b}", PathError::Control(0x9b)),
            ("a\\..\\b", PathError::Backslash),
            (&long_component, PathError::ComponentTooLong),
            (&long_path, PathError::TooLong),
            (&deep, PathError::TooDeep),
            (".tlsnet-partial/x", PathError::Reserved),
        ];
        for (text, want) in cases {
            assert_eq!(RemotePath::parse(text).as_ref(), Err(want), "{text:?}");
        }
        for good in [
            "a",
            "a/b/c",
            "docs/",
            ".hidden",
            "a..b",
            "…/ü",
            "x/.tlsnet-partial",
        ] {
            assert!(RemotePath::parse(good).is_ok(), "{good:?}");
        }
        assert_eq!(RemotePath::parse("docs/").unwrap().as_str(), "docs");
        assert!(RemotePath::parse_or_root("").unwrap().is_root());
    }

    #[test]
    fn relations() {
        let p = RemotePath::parse("a/b/c").unwrap();
        let a = RemotePath::parse("a").unwrap();
        assert_eq!(p.strip_prefix(&a).unwrap().as_str(), "b/c");
        assert!(p
            .strip_prefix(&RemotePath::parse("a/b/c").unwrap())
            .unwrap()
            .is_root());
        assert!(p
            .strip_prefix(&RemotePath::parse("a/bb").unwrap())
            .is_none());
        assert!(RemotePath::parse("ab/c")
            .unwrap()
            .strip_prefix(&a)
            .is_none());
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert!(a.parent().unwrap().is_root());
        assert_eq!(p.file_name(), "c");
        assert_eq!(
            RemotePath::from_local(Path::new("./x/y")).unwrap().as_str(),
            "x/y"
        );
        assert!(RemotePath::from_local(Path::new("../y")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let space = dir.path().join("space");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(space.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, space.join("out")).unwrap();
        std::os::unix::fs::symlink("real", space.join("in")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", space.join("passwd")).unwrap();
        let p = |t| RemotePath::parse(t).unwrap();
        assert_eq!(
            resolve_inside(&space, &p("out/x")),
            Err(PathError::SymlinkOut("out".into()))
        );
        assert!(resolve_inside(&space, &p("passwd")).is_err());
        assert_eq!(
            resolve_inside(&space, &p("in/x")).unwrap(),
            space.join("in/x")
        );
        assert_eq!(
            resolve_inside(&space, &p("new/deeper")).unwrap(),
            space.join("new/deeper")
        );
    }

    #[cfg(unix)]
    #[test]
    fn open_beneath_refuses_links_out_and_follows_links_in() {
        let dir = tempfile::tempdir().unwrap();
        let space = dir.path().join("space");
        std::fs::create_dir_all(space.join("real")).unwrap();
        std::fs::write(space.join("real/f"), b"in").unwrap();
        std::fs::write(dir.path().join("secret"), b"out").unwrap();
        std::os::unix::fs::symlink(dir.path(), space.join("out")).unwrap();
        std::os::unix::fs::symlink("real", space.join("in")).unwrap();
        std::os::unix::fs::symlink("../secret", space.join("up")).unwrap();
        let p = |t| RemotePath::parse(t).unwrap();
        for bad in ["out/secret", "up"] {
            assert!(
                matches!(
                    open_beneath(&space, &p(bad)),
                    Err(OpenError::Name(PathError::SymlinkOut(_)))
                ),
                "{bad}"
            );
        }
        let mut text = String::new();
        use std::io::Read;
        open_beneath(&space, &p("in/f"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "in");
        assert!(matches!(
            open_beneath(&space, &p("missing")),
            Err(OpenError::Io(e)) if e.kind() == io::ErrorKind::NotFound
        ));
    }
}
