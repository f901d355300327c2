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
    let _ = std::fs::remove_dir_all(&dir);
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
