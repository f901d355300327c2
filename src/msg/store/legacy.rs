//! Stores written by tlsnet before format 4: redb 2 files, which redb 4 does not open.
//!
//! [`upgrade`] brings one to the current format in three steps, each of which a crash may
//! interrupt without harm:
//! 1. in the redb 2 file, in one transaction, the older formats' migrations (1 to 2: room
//!    members get cursors; 2 to 3: the queue and the history keyed by numbers);
//! 2. every table copied, entry by entry, into a new redb 4 file beside it
//!    (`msg.redb.upgrading`, made afresh if a crash left one);
//! 3. the old file kept as `msg.redb.format-3` (a hard link), and the new one renamed over
//!    `msg.redb`.
//!
//! The copy is needed, not only redb 2.6's own `Database::upgrade`: redb 3 changed how tuple
//! keys are encoded, and redb 4 no longer reads the old encoding (the rooms' tables are keyed
//! by tuples).

use std::path::{Path, PathBuf};

use redb::ReadableDatabase;
use redb2::ReadableTable as _;
use tracing::info;

use super::cursor::Cursor;
use super::{key, room_key, OpenError, FORMAT};

/// The tables in redb 2, as formats 1 to 3 had them.
#[allow(dead_code)] // the tests use some that the upgrade does not
pub(super) mod v2 {
    tables!(redb2);
    /// Formats 1 and 2 only: conversation → its latest sequence.
    pub(crate) const SEQS: redb2::TableDefinition<&[u8], u64> = redb2::TableDefinition::new("seqs");
    /// Formats 1 and 2 only: the history and the queue keyed by the names themselves.
    pub(crate) const HISTORY_V2: redb2::TableDefinition<(&[u8], u64), u64> =
        redb2::TableDefinition::new("history");
    pub(crate) const QUEUE_V2: redb2::TableDefinition<(&str, u64), ()> =
        redb2::TableDefinition::new("queue");
    /// Formats 1 and 2 only: user → the length of their queue.
    pub(crate) const QUEUE_LEN: redb2::TableDefinition<&str, u64> =
        redb2::TableDefinition::new("queue_len");
}

/// The last format written in redb 2 files.
const LAST_V2_FORMAT: u64 = 3;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn failed(from: u64) -> impl Fn(BoxError) -> OpenError {
    move |source| OpenError::Upgrade { from, source }
}

fn err(e: impl Into<redb2::Error>) -> BoxError {
    Box::new(e.into())
}

fn err4(e: impl Into<redb::Error>) -> BoxError {
    Box::new(e.into())
}

/// Where the old file is kept once upgraded.
pub(super) fn kept(path: &Path) -> PathBuf {
    path.with_extension("redb.format-3")
}

/// Brings the redb 2 store at `path` to [`FORMAT`] (see the module docs). The format it was in
/// is logged.
pub(super) fn upgrade(path: &Path) -> Result<(), OpenError> {
    let from = {
        let db = redb2::Database::create(path).map_err(|e| failed(0)(err(e)))?;
        let from = migrate(&db)?;
        let new = path.with_extension("redb.upgrading");
        match std::fs::remove_file(&new) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(from)(Box::new(e))),
        }
        let to = redb::Database::create(&new).map_err(|e| failed(from)(err4(e)))?;
        copy(&db, &to).map_err(failed(from))?;
        from
    };
    let new = path.with_extension("redb.upgrading");
    let keep = kept(path);
    let io = |e: std::io::Error| failed(from)(Box::new(e));
    match std::fs::remove_file(&keep) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::hard_link(path, &keep).map_err(io)?;
    std::fs::rename(&new, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    info!(
        from,
        to = FORMAT,
        kept = %keep.display(),
        "message store: brought to the current format (the store from before is kept beside it; delete it once you will not go back)"
    );
    Ok(())
}

/// Brings the redb 2 file to [`LAST_V2_FORMAT`] in one transaction; the format it was in.
fn migrate(db: &redb2::Database) -> Result<u64, OpenError> {
    let tx = db.begin_write().map_err(|e| failed(0)(err(e)))?;
    let found = {
        let meta = tx.open_table(v2::META).map_err(|e| failed(0)(err(e)))?;
        let found = meta.get("format").map_err(|e| failed(0)(err(e)))?;
        found.map(|v| v.value())
    };
    let from = found.unwrap_or(1);
    if from > LAST_V2_FORMAT {
        return Err(OpenError::Newer { found: from });
    }
    let step = || -> Result<(), BoxError> {
        for t in [v2::ROOMS, v2::SEEN] {
            tx.open_table(t).map_err(err)?;
        }
        for t in [v2::MEMBERS, v2::MEMBER_OF, v2::CONTACTS] {
            tx.open_table(t).map_err(err)?;
        }
        tx.open_table(v2::MESSAGES).map_err(err)?;
        tx.open_table(v2::CURSORS).map_err(err)?;
        if from < 2 {
            let cursors = migrate_to_2(&tx)?;
            info!(cursors, "message store: room members got their cursors");
        }
        if from < 3 {
            migrate_to_3(&tx)?;
        }
        tx.open_table(v2::META)
            .map_err(err)?
            .insert("format", LAST_V2_FORMAT)
            .map_err(err)?;
        Ok(())
    };
    step().map_err(failed(from))?;
    tx.commit().map_err(|e| failed(from)(err(e)))?;
    Ok(from)
}

/// Format 1 to 2: every room member gets a cursor at the room's latest message (what they
/// have not acknowledged of the older ones stays in their queue, as format 1 kept it).
/// Returns the cursors made.
fn migrate_to_2(tx: &redb2::WriteTransaction) -> Result<u64, BoxError> {
    let mut made = 0;
    let members = tx.open_table(v2::MEMBERS).map_err(err)?;
    let seqs = tx.open_table(v2::SEQS).map_err(err)?;
    let mut cursors = tx.open_table(v2::CURSORS).map_err(err)?;
    for entry in members.iter().map_err(err)? {
        let (key, _) = entry.map_err(err)?;
        let (room, user) = key.value();
        let conv = room_key(room);
        if cursors.get((user, room)).map_err(err)?.is_some() {
            continue;
        }
        let latest = seqs
            .get(conv.as_slice())
            .map_err(err)?
            .map_or(0, |v| v.value());
        cursors
            .insert((user, room), Cursor::at(latest).encode().as_slice())
            .map_err(err)?;
        made += 1;
    }
    Ok(made)
}

/// Format 2 to 3: users and conversations get numbers, the history and the queue are
/// rewritten keyed by them ([`key`]), and the sequences and the queue lengths are no longer
/// stored apart (the last history entry of a conversation is its latest sequence; a queue's
/// entries are its length).
fn migrate_to_3(tx: &redb2::WriteTransaction) -> Result<(), BoxError> {
    tx.delete_table(v2::SEQS).map_err(err)?;
    tx.delete_table(v2::QUEUE_LEN).map_err(err)?;
    // The old keys are sorted by name first: a name's entries come together, and get one
    // number.
    let mut next_conv = 1;
    {
        let old = tx.open_table(v2::HISTORY_V2).map_err(err)?;
        let mut history = tx.open_table(v2::HISTORY).map_err(err)?;
        let mut convs = tx.open_table(v2::CONVERSATIONS).map_err(err)?;
        let mut last: Option<(Vec<u8>, u64)> = None;
        for entry in old.iter().map_err(err)? {
            let (k, id) = entry.map_err(err)?;
            let (conv, seq) = k.value();
            let number = match &last {
                Some((name, n)) if name.as_slice() == conv => *n,
                _ => {
                    let n = next_conv;
                    next_conv += 1;
                    convs.insert(conv, n).map_err(err)?;
                    last = Some((conv.to_vec(), n));
                    n
                }
            };
            history.insert(key(number, seq), id.value()).map_err(err)?;
        }
    }
    let mut next_user = 1;
    {
        let old = tx.open_table(v2::QUEUE_V2).map_err(err)?;
        let mut queue = tx.open_table(v2::QUEUE).map_err(err)?;
        let mut users = tx.open_table(v2::USERS).map_err(err)?;
        let mut last: Option<(String, u64)> = None;
        for entry in old.iter().map_err(err)? {
            let (k, _) = entry.map_err(err)?;
            let (user, id) = k.value();
            let number = match &last {
                Some((name, n)) if name == user => *n,
                _ => {
                    let n = next_user;
                    next_user += 1;
                    users.insert(user, n).map_err(err)?;
                    last = Some((user.to_owned(), n));
                    n
                }
            };
            queue.insert(key(number, id), ()).map_err(err)?;
        }
    }
    tx.delete_table(v2::HISTORY_V2).map_err(err)?;
    tx.delete_table(v2::QUEUE_V2).map_err(err)?;
    let mut meta = tx.open_table(v2::META).map_err(err)?;
    meta.insert(super::NEXT_USER, next_user).map_err(err)?;
    meta.insert(super::NEXT_CONVERSATION, next_conv)
        .map_err(err)?;
    Ok(())
}

/// Copies table `$t` of the redb 2 read transaction `$from` into the redb 4 write
/// transaction `$to`, entry by entry.
macro_rules! copy_table {
    ($from:expr, $to:expr, $t:ident) => {{
        let src = $from.open_table(v2::$t).map_err(err)?;
        let mut dst = $to.open_table(super::$t).map_err(err4)?;
        for entry in src.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            dst.insert(k.value(), v.value()).map_err(err4)?;
        }
    }};
}

/// Every table of format 3 from `from` (redb 2) into `to` (a new redb 4 file), committed
/// durably, with `meta` `format` set to [`FORMAT`].
fn copy(from: &redb2::Database, to: &redb::Database) -> Result<(), BoxError> {
    let rx = from.begin_read().map_err(err)?;
    let tx = to.begin_write().map_err(err4)?;
    copy_table!(rx, tx, META);
    copy_table!(rx, tx, MESSAGES);
    copy_table!(rx, tx, HISTORY);
    copy_table!(rx, tx, QUEUE);
    copy_table!(rx, tx, USERS);
    copy_table!(rx, tx, CONVERSATIONS);
    copy_table!(rx, tx, ROOMS);
    copy_table!(rx, tx, MEMBERS);
    copy_table!(rx, tx, MEMBER_OF);
    copy_table!(rx, tx, CONTACTS);
    copy_table!(rx, tx, SEEN);
    copy_table!(rx, tx, CURSORS);
    tx.open_table(super::META)
        .map_err(err4)?
        .insert("format", FORMAT)
        .map_err(err4)?;
    tx.commit().map_err(err4)?;
    // A check that costs little against the copy: a short copy is found before the old file
    // is set aside.
    let check = to.begin_read().map_err(err4)?;
    let copied = check.open_table(super::MESSAGES).map_err(err4)?;
    let original = rx.open_table(v2::MESSAGES).map_err(err)?;
    use redb::ReadableTableMetadata as _;
    use redb2::ReadableTableMetadata as _;
    if copied.len().map_err(err4)? != original.len().map_err(err)? {
        return Err("the copy does not have every message".into());
    }
    Ok(())
}
