//! Durable commit latency (one message, one commit, one fsync) and group-commit throughput (a
//! batch of messages, one commit, one fsync) of fjall 3, redb 2 and redb 4, on the disk of the
//! directory given (default: a temporary directory under the current one).
//!
//!   cargo run --release -- [DIR] [MESSAGES]

use std::time::{Duration, Instant};

const VALUE: usize = 256;
const BATCH: usize = 64;

/// The same measurement for each redb version (each its own crate, with its own types).
macro_rules! redb_bench {
    ($redb:ident, $name:expr, $file:expr, $dir:expr, $n:expr, $value:expr) => {{
        let (dir, n, value) = ($dir, $n, $value);
        const M: $redb::TableDefinition<&[u8], &[u8]> = $redb::TableDefinition::new("m");
        const Q: $redb::TableDefinition<&[u8], &[u8]> = $redb::TableDefinition::new("q");
        let db = $redb::Database::create(dir.join($file)).unwrap();
        let (lat, single) = measure(n, |i| {
            let tx = db.begin_write().unwrap();
            {
                let mut m = tx.open_table(M).unwrap();
                m.insert(&key(i)[..], &value[..]).unwrap();
                let mut q = tx.open_table(Q).unwrap();
                q.insert(&key(i)[..], &b""[..]).unwrap();
            }
            tx.commit().unwrap();
        });
        let batch = measure_batches(n, |start, len| {
            let tx = db.begin_write().unwrap();
            {
                let mut m = tx.open_table(M).unwrap();
                let mut q = tx.open_table(Q).unwrap();
                for i in start..start + len {
                    m.insert(&key(n + i)[..], &value[..]).unwrap();
                    q.insert(&key(n + i)[..], &b""[..]).unwrap();
                }
            }
            tx.commit().unwrap();
        });
        row($name, &lat, single, batch);
    }};
}

/// The msg store's direct-message pattern on one redb version: per message a message row, a
/// history entry and a queue entry; per ACK (of the previous batch's messages) the queue entry
/// removed; one durable commit per batch.
macro_rules! redb_direct {
    ($redb:ident, $name:expr, $file:expr, $dir:expr, $n:expr, $value:expr) => {{
        let (dir, n, value) = ($dir, $n, $value);
        const MESSAGES: $redb::TableDefinition<u64, &[u8]> = $redb::TableDefinition::new("m");
        const HISTORY: $redb::TableDefinition<u128, u64> = $redb::TableDefinition::new("h");
        const QUEUE: $redb::TableDefinition<u128, ()> = $redb::TableDefinition::new("q");
        let db = $redb::Database::create(dir.join($file)).unwrap();
        let (wall, cpu) = direct(n, |batch, acks| {
            let tx = db.begin_write().unwrap();
            {
                let mut m = tx.open_table(MESSAGES).unwrap();
                let mut h = tx.open_table(HISTORY).unwrap();
                let mut q = tx.open_table(QUEUE).unwrap();
                for msg in batch {
                    m.insert(msg.id, &value[..]).unwrap();
                    h.insert(msg.history(), msg.id).unwrap();
                    q.insert(msg.queue(), ()).unwrap();
                }
                for msg in acks {
                    q.remove(msg.queue()).unwrap();
                }
            }
            tx.commit().unwrap();
        });
        direct_row($name, n, wall, cpu);
    }};
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "store-compare.tmp".into()));
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let value = vec![b'x'; VALUE];

    println!("{n} messages of {VALUE} bytes, batches of {BATCH}; every commit fsynced");
    println!("| store | single commit p50 | p99 | single msgs/s | batch msgs/s |");
    println!("|---|---|---|---|---|");

    // fjall 3: journal + memtable; a batch is one journal write; persist(SyncAll) is the fsync.
    {
        let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
        let ks = db
            .keyspace("m", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let q = db
            .keyspace("q", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let (lat, single) = measure(n, |i| {
            let mut b = db.batch();
            b.insert(&ks, key(i), &value[..]);
            b.insert(&q, key(i), b"");
            b.commit().unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        });
        let batch = measure_batches(n, |start, len| {
            let mut b = db.batch();
            for i in start..start + len {
                b.insert(&ks, key(n + i), &value[..]);
                b.insert(&q, key(n + i), b"");
            }
            b.commit().unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        });
        row("fjall 3", &lat, single, batch);
    }

    // redb: copy-on-write B-trees; Durability::Immediate fsyncs on commit.
    redb_bench!(redb, "redb 2", "redb", &dir, n, &value);
    redb_bench!(redb4, "redb 4", "redb4", &dir, n, &value);

    // The direct-message pattern, CPU per message (the process's, fjall's threads included).
    let direct_n = n * 100;
    println!();
    println!(
        "direct pattern: {direct_n} messages among {USERS} users, {PER_BATCH} messages and the \
         previous batch's {PER_BATCH} ACKs per durable commit"
    );
    println!("| store | msgs/s | CPU per message (incl. ACK) |");
    println!("|---|---|---|");
    {
        let db = fjall::Database::builder(dir.join("fjall-direct"))
            .open()
            .unwrap();
        let opts = fjall::KeyspaceCreateOptions::default;
        let (m, h, q) = (
            db.keyspace("m", opts).unwrap(),
            db.keyspace("h", opts).unwrap(),
            db.keyspace("q", opts).unwrap(),
        );
        let (wall, cpu) = direct(direct_n, |batch, acks| {
            let mut b = db.batch();
            for msg in batch {
                b.insert(&m, msg.id.to_be_bytes(), &value[..]);
                b.insert(&h, msg.history().to_be_bytes(), msg.id.to_be_bytes());
                b.insert(&q, msg.queue().to_be_bytes(), b"");
            }
            for msg in acks {
                b.remove(&q, msg.queue().to_be_bytes());
            }
            b.commit().unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        });
        direct_row("fjall 3", direct_n, wall, cpu);
    }
    redb_direct!(redb, "redb 2", "redb-direct", &dir, direct_n, &value);
    redb_direct!(redb4, "redb 4", "redb4-direct", &dir, direct_n, &value);
    let _ = std::fs::remove_dir_all(&dir);
}

const USERS: u64 = 1000;
const PER_BATCH: usize = 512;

/// A direct message of the pattern: user `from` to `from + 1`.
#[derive(Clone, Copy)]
struct Msg {
    id: u64,
    to: u64,
    conv: u64,
    seq: u64,
}

impl Msg {
    fn history(&self) -> u128 {
        (u128::from(self.conv) << 64) | u128::from(self.seq)
    }
    fn queue(&self) -> u128 {
        (u128::from(self.to) << 64) | u128::from(self.id)
    }
}

/// Runs `commit(batch, acks)` over `n` messages; wall seconds and process CPU seconds.
fn direct(n: usize, mut commit: impl FnMut(&[Msg], &[Msg])) -> (f64, f64) {
    let mut seqs = vec![0u64; USERS as usize];
    let mut acks: Vec<Msg> = Vec::new();
    let (started, cpu0) = (Instant::now(), cpu_secs());
    let mut id = 0u64;
    while (id as usize) < n {
        let batch: Vec<Msg> = (0..PER_BATCH.min(n - id as usize))
            .map(|_| {
                id += 1;
                let from = id % USERS;
                seqs[from as usize] += 1;
                Msg {
                    id,
                    to: (from + 1) % USERS,
                    conv: from,
                    seq: seqs[from as usize],
                }
            })
            .collect();
        commit(&batch, &acks);
        acks = batch;
    }
    commit(&[], &acks);
    (started.elapsed().as_secs_f64(), cpu_secs() - cpu0)
}

/// utime + stime of this process (all its threads), from /proc.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn direct_row(name: &str, n: usize, wall: f64, cpu: f64) {
    println!(
        "| {name} | {:.0} | {:.2} µs |",
        n as f64 / wall,
        cpu / n as f64 * 1e6
    );
}

fn key(i: usize) -> [u8; 8] {
    (i as u64).to_be_bytes()
}

fn measure(n: usize, mut one: impl FnMut(usize)) -> (Vec<Duration>, f64) {
    let mut lat = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        one(i);
        lat.push(t.elapsed());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    lat.sort();
    (lat, rate)
}

fn measure_batches(n: usize, mut batch: impl FnMut(usize, usize)) -> f64 {
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let len = BATCH.min(n - i);
        batch(i, len);
        i += len;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn row(name: &str, lat: &[Duration], single: f64, batch: f64) {
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "| {name} | {:.2} ms | {:.2} ms | {single:.0} | {batch:.0} |",
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3
    );
}
