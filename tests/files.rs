//! The files service end to end: real `tlsnet serve` and `tlsnet files` processes on
//! loopback, certificates made at test time, every wait bounded.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tlsnet::files::codec::{
    Area, Chunk, EntryKind, ErrorCode, FileStart, Frame, Get, Meta, Mtime, Open, Welcome,
};
use tlsnet::files::wire::{read_frame, write_frame};
use tlsnet::files::FILES_ALPN;
use tlsnet::service::{BoxFuture, BoxStream, Context, End, Router, Service};
use tokio::io::AsyncWriteExt;

const MIB: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(30);

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn failed_codes(json: &Value) -> Vec<(String, String)> {
    json["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn put_get_ls_rm_keep_trees_modes_and_times() {
    use std::os::unix::fs::PermissionsExt;
    let pki = TestPki::new();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let server = start_files_server(&pki, &root, &[]);
    let addr = server.addr();

    let tree = work.path().join("project");
    std::fs::create_dir_all(tree.join("src/deep/er")).unwrap();
    std::fs::write(tree.join("README"), b"read me\n").unwrap();
    std::fs::write(tree.join("src/main.rs"), pseudo_random(3 * MIB + 17, 1)).unwrap();
    std::fs::write(tree.join("src/deep/er/empty"), b"").unwrap();
    std::fs::write(tree.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(tree.join("README"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
    for (i, p) in [
        "README",
        "run.sh",
        "src/main.rs",
        "src/deep/er/empty",
        "src/deep/er",
        "src/deep",
        "src",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&tree.join(p), 1_600_000_000 + i as u64 * 1000);
    }

    let put = files_run(&pki, &addr, "alice", "put", &[arg(&tree), "--json"]).ok();
    let summary = put.json();
    assert_eq!(summary["files"], 4, "{}", put.stdout);
    assert_eq!(summary["dirs"], 4, "{}", put.stdout);
    assert!(
        summary["skipped"][0]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{}",
        put.stdout
    );

    let ls = files_run(&pki, &addr, "alice", "ls", &["project", "-R", "--json"]).ok();
    let listing = ls.json();
    assert_eq!(listing["user"], "alice");
    let paths: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "project/README",
            "project/run.sh",
            "project/src",
            "project/src/deep",
            "project/src/deep/er",
            "project/src/deep/er/empty",
            "project/src/main.rs"
        ]
    );
    let human = files_run(&pki, &addr, "alice", "ls", &["project"]).ok();
    assert!(human.stdout.contains("-rwxr-x---"), "{}", human.stdout);

    let out = work.path().join("out");
    files_run(&pki, &addr, "alice", "get", &["project", "-o", arg(&out)]).ok();
    let got = out.join("project");
    for p in ["README", "run.sh", "src/main.rs", "src/deep/er/empty"] {
        assert_eq!(blake3_of(&got.join(p)), blake3_of(&tree.join(p)), "{p}");
    }
    for p in [
        "README",
        "run.sh",
        "src/main.rs",
        "src/deep/er/empty",
        "src/deep/er",
        "src/deep",
        "src",
    ] {
        assert_eq!(
            mtime_and_mode(&got.join(p)),
            mtime_and_mode(&tree.join(p)),
            "{p}"
        );
    }
    assert!(!got.join("link").exists());
    assert!(!out.join(".tlsnet-partial").exists());

    let rm = files_run(
        &pki,
        &addr,
        "alice",
        "rm",
        &["project/src", "project/README", "--json"],
    )
    .ok();
    assert_eq!(rm.json()["files"], 2);
    let ls = files_run(&pki, &addr, "alice", "ls", &["-R", "--json"]).ok();
    let left: Vec<String> = ls.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, ["project", "project/run.sh"]);
    assert_eq!(ls.json()["used"], 10, "only run.sh is left");
    let missing = files_run(&pki, &addr, "alice", "rm", &["project/nothing"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("not_found"), "{}", missing.stderr);
}

/// The README's tour: the development PKI, `--as`, a send to a user who has never
/// connected, a server restart in between, and the fetch that empties the inbox.
#[test]
fn sending_to_an_offline_user_waits_in_their_inbox() {
    let work = tempfile::tempdir().unwrap();
    let pki_dir = work.path().join("dev-pki");
    let root = work.path().join("root");
    let serve_args = ["--pki-dir", arg(&pki_dir), "--files-root", arg(&root)];
    let mut server = ServeProcess::start(work.path(), &serve_args);
    let as_user = |addr: &str, user: &str, sub: &str, args: &[&str]| {
        let mut command = tlsnet_cmd();
        command
            .args(["files", sub, addr, "--as", user, "--pki-dir"])
            .arg(&pki_dir)
            .args(args);
        run(command, None, RUN_LIMIT)
    };
    let report = work.path().join("report.pdf");
    std::fs::write(&report, pseudo_random(200_000, 7)).unwrap();
    let sent = as_user(
        &server.addr().replace("127.0.0.1", "localhost"),
        "alice",
        "put",
        &[arg(&report), "--to", "bob", "--json"],
    )
    .ok();
    assert_eq!(sent.json()["files"], 1, "{}", sent.stdout);
    // Not in alice's own space.
    let mine = as_user(&server.addr(), "alice", "ls", &["--json"]).ok();
    assert_eq!(mine.json()["entries"].as_array().unwrap().len(), 0);

    server.signal("TERM");
    server.wait_exit(WAIT);
    let server = ServeProcess::start(work.path(), &serve_args);
    let addr = server.addr();
    let inbox = as_user(&addr, "bob", "ls", &["--inbox", "-R", "--json"]).ok();
    let entries = inbox.json()["entries"].clone();
    assert_eq!(entries[1]["path"], "alice/report.pdf", "{}", inbox.stdout);
    let out = work.path().join("bob");
    as_user(
        &addr,
        "bob",
        "get",
        &["--inbox", "alice/report.pdf", "-o", arg(&out)],
    )
    .ok();
    assert_eq!(blake3_of(&out.join("report.pdf")), blake3_of(&report));
    let after = as_user(&addr, "bob", "ls", &["--inbox", "-R", "--json"]).ok();
    assert_eq!(after.json()["entries"].as_array().unwrap().len(), 0);
    assert_eq!(after.json()["used"], 0);
}

#[test]
fn two_users_cannot_see_each_other() {
    let pki = TestPki::new();
    let work = tempfile::tempdir().unwrap();
    let server = start_files_server(&pki, &work.path().join("root"), &[]);
    let addr = server.addr();
    let secret = work.path().join("secret.txt");
    std::fs::write(&secret, b"alice only").unwrap();
    files_run(&pki, &addr, "alice", "put", &[arg(&secret)]).ok();

    let ls = files_run(&pki, &addr, "bob", "ls", &["-R", "--json"]).ok();
    assert_eq!(ls.json()["user"], "bob");
    assert_eq!(ls.json()["entries"].as_array().unwrap().len(), 0);
    let out = work.path().join("bob");
    let get = files_run(
        &pki,
        &addr,
        "bob",
        "get",
        &["secret.txt", "-o", arg(&out), "--json"],
    );
    assert_eq!(get.code, 1);
    assert_eq!(
        failed_codes(&get.json()),
        [("secret.txt".into(), "not_found".into())]
    );
    assert!(!out.join("secret.txt").exists());
    let rm = files_run(&pki, &addr, "bob", "rm", &["secret.txt"]);
    assert_eq!(rm.code, 1);
    // Names that would leave the space are refused by the client before it connects...
    for name in ["../alice/files/secret.txt", "/users/alice/files/secret.txt"] {
        let get = files_run(&pki, &addr, "bob", "get", &[name, "-o", arg(&out)]);
        assert_eq!(get.code, 2, "{name}: {}", get.stderr);
        assert!(get.stderr.contains("refused name"), "{}", get.stderr);
    }
    // ...and alice's file is untouched.
    let mine = files_run(
        &pki,
        &addr,
        "alice",
        "get",
        &["secret.txt", "-o", arg(&out)],
    )
    .ok();
    assert_eq!(mine.code, 0);
    assert_eq!(
        std::fs::read(out.join("secret.txt")).unwrap(),
        b"alice only"
    );
}

#[test]
fn quota_and_size_limits_have_their_own_errors() {
    let pki = TestPki::new();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let server = start_files_server(&pki, &root, &["--quota", "1M", "--max-file-size", "512K"]);
    let addr = server.addr();
    let keep = work.path().join("keep.txt");
    std::fs::write(&keep, pseudo_random(100_000, 3)).unwrap();
    files_run(&pki, &addr, "alice", "put", &[arg(&keep)]).ok();

    let big = work.path().join("big.bin");
    std::fs::write(&big, pseudo_random(600 * 1024, 4)).unwrap();
    let put = files_run(&pki, &addr, "alice", "put", &[arg(&big), "--json"]);
    assert_eq!(put.code, 1);
    assert_eq!(
        failed_codes(&put.json()),
        [("big.bin".into(), "too_large".into())]
    );

    let many = work.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..3 {
        std::fs::write(many.join(format!("{i}.bin")), pseudo_random(400 * 1024, i)).unwrap();
    }
    let put = files_run(&pki, &addr, "alice", "put", &[arg(&many), "--json"]);
    assert_eq!(put.code, 1, "{}", put.stdout);
    let summary = put.json();
    assert_eq!(summary["files"], 2);
    assert_eq!(
        failed_codes(&summary),
        [("many/2.bin".into(), "quota".into())]
    );
    assert!(
        summary["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("quota"),
        "{summary}"
    );

    let out = work.path().join("out");
    files_run(
        &pki,
        &addr,
        "alice",
        "get",
        &["keep.txt", "many", "-o", arg(&out)],
    )
    .ok();
    assert_eq!(blake3_of(&out.join("keep.txt")), blake3_of(&keep));
    assert!(out.join("many/1.bin").exists());
    assert!(!out.join("many/2.bin").exists());
    assert!(!out.join("big.bin").exists());
}

/// Whether the server's last resumed upload had its kept bytes checked that way (`journal`
/// or `read`), as its log says.
fn went_on(server: &ServeProcess, checked: &str) -> bool {
    server
        .log_text()
        .lines()
        .rfind(|l| l.contains("an upload goes on from its partial file"))
        .is_some_and(|l| l.contains(&format!("checked=\"{checked}\"")))
}

/// Put: the client killed mid-file, then the server killed mid-file; each time the final
/// name never shows a partial file, and the next run goes on where it stopped (the server
/// checks what it kept from its chunk journal, without reading it again, when the journal
/// matches the file). A partial file corrupted on the server's disk (then read, not trusted
/// from the journal), and a changed source, start over.
#[test]
fn an_interrupted_put_resumes_after_sigkill_of_client_or_server() {
    let pki = TestPki::new();
    files_user(&pki, "alice");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let mut server = start_files_server(&pki, &root, &[]);
    let source = work.path().join("big.bin");
    std::fs::write(&source, pseudo_random(24 * MIB, 9)).unwrap();
    let stored = root.join("users/alice/files/big.bin");
    let partials = root.join("users/alice/.partial");

    // Starts a slow put, waits until a few MiB are in the partial file (the final name
    // never there meanwhile), and returns the client.
    let slow_put = |addr: &str| {
        let command = files_command(
            &pki,
            addr,
            "alice",
            "put",
            &[arg(&source), "--limit-rate", "4M"],
        );
        let client = ServeProcess::spawn("tlsnet files put", work.path(), 0, command);
        wait_for("a partial upload of 3 MiB", WAIT, || {
            assert!(!stored.exists(), "the final name appeared before the end");
            find_part(&partials).is_some_and(|(_, len)| len >= 3 * MIB as u64)
        });
        client
    };
    let resume = |addr: &str| {
        let run = files_run(&pki, addr, "alice", "put", &[arg(&source), "--json"]).ok();
        assert_eq!(blake3_of(&stored), blake3_of(&source));
        assert!(
            find_part(&partials).is_none(),
            "the partial file is gone once stored"
        );
        run
    };

    // 1. The client is killed.
    let mut client = slow_put(&server.addr());
    client.signal("KILL");
    client.wait_exit(WAIT);
    assert!(!stored.exists());
    let run = resume(&server.addr());
    let kept = run.json()["resumed_bytes"].as_u64().unwrap();
    assert!(kept >= 3 * MIB as u64, "{}", run.stdout);
    assert!(went_on(&server, "journal"), "{}", server.log_text());
    std::fs::remove_file(&stored).unwrap();

    // 2. The server is killed.
    let mut client = slow_put(&server.addr());
    server.signal("KILL");
    server.wait_exit(WAIT);
    let end = client.wait_exit(WAIT);
    assert!(!end.success(), "{}", client.describe());
    assert!(!stored.exists());
    let server = start_files_server(&pki, &root, &[]);
    let run = resume(&server.addr());
    assert!(run.json()["resumed_bytes"].as_u64().unwrap() >= 3 * MIB as u64);
    std::fs::remove_file(&stored).unwrap();

    // 3. The partial file is changed on the server's disk: detected, named, started over.
    let mut client = slow_put(&server.addr());
    client.signal("KILL");
    client.wait_exit(WAIT);
    let (part, _) = find_part(&partials).unwrap();
    // The old session may still write what it had queued; wait until it is done.
    std::thread::sleep(Duration::from_millis(500));
    flip_byte(&part, 1000);
    let run = resume(&server.addr());
    assert_eq!(run.json()["resumed_bytes"], 0, "{}", run.stdout);
    assert!(went_on(&server, "read"), "{}", server.log_text());
    assert!(
        run.stderr
            .contains("big.bin: the server's partial copy does not match"),
        "{}",
        run.stderr
    );
    std::fs::remove_file(&stored).unwrap();

    // 4. The source changes between the runs: it starts over.
    let mut client = slow_put(&server.addr());
    client.signal("KILL");
    client.wait_exit(WAIT);
    std::fs::write(&source, pseudo_random(24 * MIB, 10)).unwrap();
    let run = resume(&server.addr());
    assert_eq!(run.json()["resumed_bytes"], 0, "{}", run.stdout);
    server.signal("KILL");
}

/// Get: the same, the other way round.
#[test]
fn an_interrupted_get_resumes_after_sigkill_of_client_or_server() {
    let pki = TestPki::new();
    files_user(&pki, "alice");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let mut server = start_files_server(&pki, &root, &[]);
    let source = work.path().join("big.bin");
    std::fs::write(&source, pseudo_random(24 * MIB, 11)).unwrap();
    files_run(&pki, &server.addr(), "alice", "put", &[arg(&source)]).ok();
    let out = work.path().join("out");
    let fetched = out.join("big.bin");
    let partials = out.join(".tlsnet-partial");

    let slow_get = |addr: &str| {
        let command = files_command(
            &pki,
            addr,
            "alice",
            "get",
            &["big.bin", "-o", arg(&out), "--limit-rate", "4M"],
        );
        let client = ServeProcess::spawn("tlsnet files get", work.path(), 0, command);
        wait_for("a partial download of 3 MiB", WAIT, || {
            assert!(!fetched.exists(), "the final name appeared before the end");
            find_part(&partials).is_some_and(|(_, len)| len >= 3 * MIB as u64)
        });
        client
    };
    let resume = |addr: &str| {
        let run = files_run(
            &pki,
            addr,
            "alice",
            "get",
            &["big.bin", "-o", arg(&out), "--json"],
        )
        .ok();
        assert_eq!(blake3_of(&fetched), blake3_of(&source));
        assert!(!partials.exists(), "nothing left to resume");
        run
    };

    let mut client = slow_get(&server.addr());
    client.signal("KILL");
    client.wait_exit(WAIT);
    let run = resume(&server.addr());
    assert!(
        run.json()["resumed_bytes"].as_u64().unwrap() >= 3 * MIB as u64,
        "{}",
        run.stdout
    );
    std::fs::remove_file(&fetched).unwrap();

    let mut client = slow_get(&server.addr());
    server.signal("KILL");
    server.wait_exit(WAIT);
    assert!(!client.wait_exit(WAIT).success());
    assert!(!fetched.exists());
    let server = start_files_server(&pki, &root, &[]);
    let run = resume(&server.addr());
    assert!(run.json()["resumed_bytes"].as_u64().unwrap() >= 3 * MIB as u64);
    std::fs::remove_file(&fetched).unwrap();

    // Our partial copy is changed on disk: the server sees it does not match, we start over.
    let mut client = slow_get(&server.addr());
    client.signal("KILL");
    client.wait_exit(WAIT);
    let (part, _) = find_part(&partials).unwrap();
    flip_byte(&part, 1000);
    let run = resume(&server.addr());
    assert_eq!(run.json()["resumed_bytes"], 0);
    assert!(
        run.stderr.contains(
            "big.bin: the file changed on the server (or our partial copy does not match)"
        ),
        "{}",
        run.stderr
    );
}

/// The server's half of the path matrix, over the wire: every hostile name in OPEN, GET,
/// MKDIR, REMOVE and `to` is refused as a bad name, and a symbolic link an operator left in
/// a space does not lead out of it.
#[tokio::test]
async fn the_server_refuses_hostile_names() {
    let pki = TestPki::new();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let server = start_files_server(&pki, &root, &[]);
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"not yours").unwrap();
    let space = root.join("users/alice/files");
    std::fs::create_dir_all(&space).unwrap();
    std::os::unix::fs::symlink(&outside, space.join("out")).unwrap();

    let mut tls = pki.client_tls();
    tls.alpn = vec![FILES_ALPN.to_vec()];
    let (stream, _) = connect(&server.addr(), &tls).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut scratch = Vec::new();
    let mut ask = async |frame: Frame| {
        write_frame(&mut wr, &frame, &mut scratch).await.unwrap();
        wr.flush().await.unwrap();
        read_frame(&mut rd).await.unwrap().unwrap()
    };
    assert!(
        matches!(ask(Frame::Hello { version: 1 }).await, Frame::Welcome(w) if w.user == "alice")
    );
    let long = "n".repeat(300);
    let deep = vec!["d"; 70].join("/");
    let hostile = [
        "../escape",
        "../../users/bob/files/x",
        "/etc/evil",
        "a/../../up",
        "nul\0byte",
        "line\nbreak",
        "esc\u{1b}[2J",
        "back\\slash",
        long.as_str(),
        deep.as_str(),
        "",
        ".",
        "a//b",
        "out/secret",
        "out/new",
    ];
    let meta = Meta {
        size: 1,
        mode: 0o644,
        mtime: Mtime::default(),
    };
    for name in hostile {
        let requests = [
            Frame::Open(Open {
                resume: true,
                meta,
                to: String::new(),
                path: name.into(),
            }),
            Frame::Get(Get {
                area: Area::Files,
                have: None,
                path: name.into(),
            }),
            Frame::Mkdir {
                mode: 0o755,
                mtime: Mtime::default(),
                to: String::new(),
                path: name.into(),
            },
            Frame::Remove {
                area: Area::Files,
                path: name.into(),
            },
        ];
        for request in requests {
            let kind = request.kind();
            match ask(request).await {
                Frame::Error(f) => {
                    assert_eq!(f.code, ErrorCode::BadName, "{kind} {name:?}: {f:?}");
                    if name.starts_with("out/") {
                        assert!(f.message.contains("symbolic link"), "{}", f.message);
                    }
                }
                other => panic!("{kind} {name:?}: {other:?}"),
            }
        }
    }
    for to in ["../bob", "a/b", ".", "", "x\0"] {
        if to.is_empty() {
            continue;
        }
        let open = Frame::Open(Open {
            resume: true,
            meta,
            to: to.into(),
            path: "x".into(),
        });
        assert!(
            matches!(ask(open).await, Frame::Error(f) if f.code == ErrorCode::BadName),
            "to {to:?}"
        );
    }
    // Listings: a path through the link out is refused; a recursive listing of the space
    // shows what is inside (a file in a subdirectory) and never the link or what it leads to.
    for name in ["out", "out/secret"] {
        let list = Frame::List {
            area: Area::Files,
            recursive: true,
            path: name.into(),
        };
        assert!(
            matches!(ask(list).await, Frame::Error(f) if f.code == ErrorCode::BadName),
            "list {name:?}"
        );
    }
    std::fs::create_dir_all(space.join("in/deeper")).unwrap();
    std::fs::write(space.join("in/deeper/mine"), b"mine").unwrap();
    std::os::unix::fs::symlink(&outside, space.join("in/deeper/out2")).unwrap();
    let mut listed = Vec::new();
    let mut frame = ask(Frame::List {
        area: Area::Files,
        recursive: true,
        path: String::new(),
    })
    .await;
    loop {
        match frame {
            Frame::Entry(e) => listed.push(e.path),
            Frame::ListEnd { count } => {
                assert_eq!(count as usize, listed.len());
                break;
            }
            other => panic!("list: {other:?}"),
        }
        frame = read_frame(&mut rd).await.unwrap().unwrap();
    }
    assert_eq!(listed, ["in", "in/deeper", "in/deeper/mine"]);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"not yours");
    assert!(!root.join("users/escape").exists() && !root.join("escape").exists());
    assert!(!work.path().join("escape").exists());
}

/// A server written here, as a malicious server would be: each connection lists one name
/// of the matrix, and sends `corrupt.txt` with a changed chunk.
struct Hostile {
    names: Vec<String>,
    next: AtomicUsize,
}

impl Service for Hostile {
    fn name(&self) -> &'static str {
        "hostile-files"
    }

    fn serve<'a>(&'a self, stream: BoxStream, _ctx: &'a Context) -> BoxFuture<'a, End> {
        Box::pin(async move {
            let name =
                self.names[self.next.fetch_add(1, Ordering::SeqCst) % self.names.len()].clone();
            let (mut rd, mut wr) = tokio::io::split(stream);
            let mut scratch = Vec::new();
            let data = b"hello".as_slice();
            let meta = Meta {
                size: data.len() as u64,
                mode: 0o644,
                mtime: Mtime::default(),
            };
            while let Ok(Some(frame)) = read_frame(&mut rd).await {
                let answers = match frame {
                    Frame::Hello { .. } => vec![Frame::Welcome(Welcome {
                        version: 1,
                        user: "victim".into(),
                        max_chunk: 1 << 20,
                        max_file: 1 << 30,
                        quota: 0,
                        used: 0,
                    })],
                    Frame::List { .. } => vec![
                        Frame::Entry(tlsnet::files::codec::Entry {
                            kind: EntryKind::File,
                            path: name.clone(),
                            meta,
                        }),
                        Frame::ListEnd { count: 1 },
                    ],
                    Frame::Get(g) => {
                        let chunk = Chunk::new(data.len() as u64, 0, data);
                        let chunk = if g.path == "corrupt.txt" {
                            chunk.corrupt()
                        } else {
                            chunk
                        };
                        vec![
                            Frame::File(FileStart {
                                offset: 0,
                                meta,
                                path: g.path,
                            }),
                            Frame::Data(chunk),
                            Frame::End {
                                hash: *blake3::hash(data).as_bytes(),
                            },
                        ]
                    }
                    _ => vec![],
                };
                for a in answers {
                    if write_frame(&mut wr, &a, &mut scratch).await.is_err() {
                        return End::Closed;
                    }
                }
                let _ = wr.flush().await;
            }
            End::Closed
        })
    }
}

/// The client's half of the path matrix: a malicious server cannot make `get` write
/// outside `-o`, and a chunk changed on the way is detected and named.
#[tokio::test]
async fn get_refuses_what_a_hostile_server_sends() {
    let pki = TestPki::new();
    files_user(&pki, "alice");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("link")).unwrap();
    let long = "n".repeat(300);
    let deep = vec!["d"; 70].join("/");
    let cases: Vec<(&str, &str)> = vec![
        ("../escape.txt", "'..'"),
        ("../../tmp/escape.txt", "'..'"),
        ("/tmp/abs.txt", "absolute"),
        ("a/../../up.txt", "'..'"),
        ("nul\0.txt", "control character"),
        ("esc\u{1b}[2J.txt", "control character"),
        ("back\\slash.txt", "backslash"),
        (long.as_str(), "longer than 255"),
        (deep.as_str(), "deeper than"),
        (".tlsnet-partial/x.json", "reserved"),
        ("link/inside.txt", "symbolic link"),
        ("corrupt.txt", "does not match its BLAKE3"),
        ("fine.txt", ""),
    ];
    let service = Hostile {
        names: cases.iter().map(|(n, _)| n.to_string()).collect(),
        next: AtomicUsize::new(0),
    };
    let router = Router::without_default().route(FILES_ALPN, Arc::new(service));
    let server = TestServer::start_with(pki.server_tls(), router, test_options()).await;
    for (name, why) in &cases {
        let command = files_command(
            &pki,
            &server.addr_string(),
            "alice",
            "get",
            &["/", "-o", arg(&out)],
        );
        let got = tokio::task::spawn_blocking(move || run(command, None, RUN_LIMIT))
            .await
            .unwrap();
        if why.is_empty() {
            assert_eq!(got.code, 0, "{name}: {}", got.stderr);
            assert_eq!(std::fs::read(out.join(name)).unwrap(), b"hello");
            continue;
        }
        assert_eq!(got.code, 1, "{name:?}: {}{}", got.stdout, got.stderr);
        assert!(got.stderr.contains(why), "{name:?}: {}", got.stderr);
        if *name == "corrupt.txt" {
            assert!(got.stderr.contains("corrupt.txt"), "{}", got.stderr);
            assert!(!out.join("corrupt.txt").exists());
        }
    }
    // Nothing outside -o: the temporary directory holds only out/ and outside/ (empty).
    let mut top: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".out") && !n.ends_with(".log"))
        .collect();
    top.sort();
    assert_eq!(top, ["out", "outside"]);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!Path::new("/tmp/abs.txt").exists());
    server.shutdown().await;
}

/// Partial uploads untouched for longer than `--partial-ttl` are removed: at the server's
/// start, and when their user's next session starts. Fresh ones (and the user's files) stay,
/// and the removed bytes leave the quota.
#[test]
fn stale_partial_uploads_are_removed_after_their_ttl() {
    let pki = TestPki::new();
    files_user(&pki, "alice");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let partials = root.join("users/alice/.partial");
    std::fs::create_dir_all(&partials).unwrap();
    std::fs::create_dir_all(root.join("users/alice/files")).unwrap();
    std::fs::write(root.join("users/alice/files/keep.txt"), b"mine").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let partial = |key: &str, len: usize, age: u64| {
        let part = partials.join(format!("{key}.part"));
        let sidecar = partials.join(format!("{key}.json"));
        std::fs::write(&part, vec![7u8; len]).unwrap();
        std::fs::write(&sidecar, b"{}").unwrap();
        set_mtime(&part, now - age);
        set_mtime(&sidecar, now - age);
        (part, sidecar)
    };
    let (old_part, old_json) = partial("old", 3000, 3 * 3600);
    let (new_part, new_json) = partial("new", 2000, 60);

    // 1. At the start: the old one goes, the fresh one stays.
    let server = start_files_server(&pki, &root, &["--partial-ttl", "1h"]);
    assert!(!old_part.exists() && !old_json.exists());
    assert!(new_part.exists() && new_json.exists());
    let listing = files_run(&pki, &server.addr(), "alice", "ls", &["--json"]).ok();
    // Its file, the fresh partial and its description ("{}").
    assert_eq!(listing.json()["used"], 4 + 2000 + 2, "{}", listing.stdout);

    // 2. At the user's next session: the one that got old meanwhile goes too.
    set_mtime(&new_part, now - 2 * 3600);
    let listing = files_run(&pki, &server.addr(), "alice", "ls", &["--json"]).ok();
    assert!(!new_part.exists() && !new_json.exists());
    assert_eq!(listing.json()["used"], 4, "{}", listing.stdout);
    assert!(root.join("users/alice/files/keep.txt").exists());
}

/// `--as NAME` (one implementation for `chat` and `files`) is for a local server's
/// development PKI only.
#[test]
fn as_name_is_refused_for_a_server_elsewhere() {
    let work = tempfile::tempdir().unwrap();
    let mut command = tlsnet_cmd();
    command
        .args([
            "files",
            "ls",
            "192.0.2.1:8443",
            "--as",
            "alice",
            "--pki-dir",
        ])
        .arg(work.path());
    let refused = run(command, None, RUN_LIMIT);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("--as works with a local server's development PKI only"),
        "{}",
        refused.stderr
    );
}
