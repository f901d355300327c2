//! `tlsnet inspect FILE`: the file is written to a temporary directory and inspected whole,
//! so that the format detection (PEM sections, back-to-back DER, PKCS#12 with the seeds'
//! password), the summaries and the text output run as the command runs them.

#![no_main]

#[path = "common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "tlsnet-fuzz-inspect-";

/// The file each input is written to: in memory when /dev/shm is there, one per process.
/// Those of processes that are gone are removed first.
static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(PREFIX));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = base.join(format!("{PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the fuzz temporary directory");
    dir.join("input")
});

fuzz_target!(|data: &[u8]| {
    let path = &*FILE;
    std::fs::write(path, data).expect("write the fuzz input");
    if let Ok(inspection) = tlsnet::inspect::file::inspect(path, Some(common::PASSWORD)) {
        assert!(!inspection.chain.is_empty());
        assert_eq!(inspection.chain.len(), inspection.certificates.len());
        let _ = tlsnet::inspect::text::file(&inspection);
        let _ = tlsnet::inspect::expiring_within(&inspection.chain, std::time::Duration::ZERO);
    }
    if let Ok(password) = tlsnet::inspect::file::read_password_file(path) {
        assert!(!password.contains('\n'), "{password:?}");
    }
});
