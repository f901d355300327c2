//! The files service's tests: a `tlsnet serve` with a files root, `tlsnet files` as a given
//! user of the test PKI, trees to send, hashes to compare.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tlsnet::pki::{LeafSpec, Purpose};

use super::{run, tlsnet_cmd, Run, ServeProcess, TestPki, RUN_LIMIT};

/// `tlsnet serve` with this PKI (client certificates from its CA required) and its files
/// under `root`.
pub fn start_files_server(pki: &TestPki, root: &Path, extra: &[&str]) -> ServeProcess {
    let ca = pki.path("ca.pem");
    let mut args = vec![
        "--client-ca",
        ca.to_str().unwrap(),
        "--files-root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ServeProcess::start_pki(pki, &args)
}

/// Issues a client certificate `NAME.pem` with the common name NAME, unless it exists.
pub fn files_user(pki: &TestPki, name: &str) {
    if !pki.path(&format!("{name}.pem")).exists() {
        pki.issue(name, &LeafSpec::new(Purpose::Client, name));
    }
}

/// `tlsnet files SUB ADDR --ca … --cert USER.pem --key USER-key.pem ARGS` (not started).
pub fn files_command(pki: &TestPki, addr: &str, user: &str, sub: &str, args: &[&str]) -> Command {
    files_user(pki, user);
    let mut command = tlsnet_cmd();
    command
        .args(["files", sub, addr, "--servername", "localhost"])
        .arg("--ca")
        .arg(pki.path("ca.pem"))
        .arg("--cert")
        .arg(pki.path(&format!("{user}.pem")))
        .arg("--key")
        .arg(pki.path(&format!("{user}-key.pem")))
        .args(args);
    command
}

/// Runs `tlsnet files SUB` as `user` to its end.
pub fn files_run(pki: &TestPki, addr: &str, user: &str, sub: &str, args: &[&str]) -> Run {
    run(files_command(pki, addr, user, sub, args), None, RUN_LIMIT)
}

/// BLAKE3 of a file, hex.
pub fn blake3_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    blake3::hash(&bytes).to_hex().to_string()
}

/// `len` bytes that differ from run to run but are the same for the same seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = 0u64;
    while out.len() < len {
        let h = blake3::hash(&[seed.to_le_bytes(), block.to_le_bytes()].concat());
        out.extend_from_slice(h.as_bytes());
        block += 1;
    }
    out.truncate(len);
    out
}

/// The first `*.part` file below `dir` (a partial upload or download), with its size.
pub fn find_part(dir: &Path) -> Option<(PathBuf, u64)> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "part") {
                return Some((path, meta.len()));
            }
        }
    }
    None
}

/// Polls `done` every 20 ms until it holds; panics after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Flips one bit of the byte at `offset` of a file.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// Sets a file's or directory's modification time (seconds since the epoch).
pub fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    std::fs::File::open(path).unwrap().set_modified(t).unwrap();
}

/// A file's or directory's modification time (seconds) and permission bits.
pub fn mtime_and_mode(path: &Path) -> (u64, u32) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap();
    let secs = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (secs, meta.permissions().mode() & 0o777)
}
