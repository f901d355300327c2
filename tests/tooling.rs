//! `tlsnet completions` and `tlsnet man`: what the Debian package installs, made by the built
//! binary from the same clap definitions as `--help`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{have, tlsnet_bin};

fn tlsnet(args: &[&str]) -> Output {
    Command::new(tlsnet_bin())
        .args(args)
        .output()
        .expect("run tlsnet")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn completions(shell: &str) -> String {
    let out = tlsnet(&["completions", shell]);
    assert!(
        out.status.success(),
        "completions {shell}: {}",
        stderr(&out)
    );
    let script = stdout(&out);
    assert!(!script.is_empty(), "completions {shell}: empty");
    script
}

const SUBCOMMANDS: [&str; 5] = ["serve", "connect", "inspect", "pki", "completions"];

#[test]
fn bash_completions_name_every_subcommand() {
    let script = completions("bash");
    assert!(script.contains("complete "), "no `complete` in:\n{script}");
    assert!(script.contains("tlsnet"), "{script}");
    for sub in SUBCOMMANDS {
        assert!(script.contains(sub), "bash completions lack `{sub}`");
    }
    // Flags of subcommands, and nested pki subcommands, are completed too.
    assert!(script.contains("--listen"));
    assert!(script.contains("issue"));
}

#[test]
fn zsh_completions_are_a_compdef_file() {
    let script = completions("zsh");
    assert!(
        script.starts_with("#compdef tlsnet"),
        "zsh completions start with: {:?}",
        script.lines().next()
    );
    for sub in SUBCOMMANDS {
        assert!(script.contains(sub), "zsh completions lack `{sub}`");
    }
}

#[test]
fn fish_elvish_and_powershell_completions() {
    assert!(completions("fish").contains("complete -c tlsnet"));
    assert!(completions("elvish").contains("tlsnet"));
    assert!(completions("powershell").contains("tlsnet"));
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let out = tlsnet(&["completions", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains("invalid value 'nope'"), "{err}");
    assert!(
        err.contains("possible values: bash, elvish, fish, powershell, zsh"),
        "{err}"
    );
}

#[test]
fn man_writes_a_page_per_subcommand() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("man1"); // made if missing
    let out = Command::new(tlsnet_bin())
        .args(["man", "--out-dir", dir.to_str().unwrap()])
        .env("SOURCE_DATE_EPOCH", "31536000") // 1971-01-01
        .output()
        .expect("run tlsnet man");
    assert!(out.status.success(), "{}", stderr(&out));
    let version = env!("CARGO_PKG_VERSION");

    let expected = [
        "tlsnet",
        "tlsnet-serve",
        "tlsnet-connect",
        "tlsnet-inspect",
        "tlsnet-pki",
        "tlsnet-pki-init",
        "tlsnet-pki-issue",
        "tlsnet-completions",
    ];
    let listed = stdout(&out);
    for name in expected {
        let path = dir.join(format!("{name}.1"));
        let page = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; written: {listed}", path.display()));
        // roff's preamble (`.ie`/`.el`, how to print an apostrophe) may come first.
        let first = page
            .lines()
            .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "));
        assert!(
            first
                == Some(&format!(
                    ".TH {name} 1 1971-01-01 \"tlsnet {version}\" \"tlsnet manual\""
                )),
            "{name}.1: the first macro is {first:?}, not .TH"
        );
        assert!(
            page.contains(&name.to_uppercase()) || page.contains(name),
            "{name}.1 does not name itself"
        );
        assert!(
            listed.contains(&path.display().to_string()),
            "{name}.1 not listed"
        );
    }
    // Neither the hidden `man` subcommand nor clap's `help` gets a page.
    for name in ["tlsnet-man.1", "tlsnet-help.1", "tlsnet-pki-help.1"] {
        assert!(!dir.join(name).exists(), "{name} written");
    }

    let serve = std::fs::read_to_string(dir.join("tlsnet-serve.1")).unwrap();
    assert!(
        serve.contains("\\-\\-listen") || serve.contains("--listen"),
        "no --listen in tlsnet-serve.1:\n{serve}"
    );
    assert!(serve.contains("TLSNET_PKI_DIR"), "env of --pki-dir missing");
    let top = std::fs::read_to_string(dir.join("tlsnet.1")).unwrap();
    assert!(top.contains("Exit codes"), "after_help missing in tlsnet.1");

    if have("man") {
        render_with_man(&dir.join("tlsnet-serve.1"));
    }
}

/// Formats a page with man(1), as a reader would see it.
fn render_with_man(page: &Path) {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("LC_ALL", "C")
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("run man -l");
    assert!(out.status.success(), "man -l: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("--listen"), "man -l output:\n{text}");
}

#[test]
fn man_into_an_unwritable_place_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = tlsnet(&["man", "--out-dir", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cannot create the directory"), "{err}");
}

#[test]
fn man_with_a_bad_source_date_epoch_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(tlsnet_bin())
        .args(["man", "--out-dir", tmp.path().to_str().unwrap()])
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .output()
        .expect("run tlsnet man");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SOURCE_DATE_EPOCH"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn man_needs_out_dir() {
    let out = tlsnet(&["man"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--out-dir"));
}
