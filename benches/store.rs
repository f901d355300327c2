//! The message store's writer, alone (no sockets, no TLS): what one direct message costs it
//! from `SEND` to its recipient's `ACK`, with group commit and `--sync always`, as the rig's
//! direct case loads it (1,000 users, user i writes to user i+1).
//!
//! `cargo bench --bench store`. Each iteration queues a round of messages (one from every
//! user), waits for their commits, then queues every recipient's `ACK` and waits for those:
//! the time per message is the writer's (and the disk's) for one message and one
//! acknowledgement. The store is on the same disk as the target directory.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tlsnet::msg::store::{Store, StoreOptions, SyncMode, Target};

const USERS: usize = 1000;

fn round(rt: &tokio::runtime::Runtime, store: &Store, names: &[String], time: u64) {
    rt.block_on(async {
        let mut commits = Vec::with_capacity(names.len());
        for (i, from) in names.iter().enumerate() {
            let to = Target::User(names[(i + 1) % names.len()].clone());
            let text = format!("{time:>20} {:>79}", i);
            commits.push(
                store
                    .send_later(from, to, text, time)
                    .await
                    .expect("queued"),
            );
        }
        let mut ids = vec![0; names.len()];
        for (i, c) in commits.into_iter().enumerate() {
            ids[(i + 1) % names.len()] = c.await.expect("committed").message.id;
        }
        let mut acks = Vec::with_capacity(names.len());
        for (user, id) in names.iter().zip(ids) {
            acks.push(store.ack_later(user, vec![id]).await.expect("queued"));
        }
        for a in acks {
            assert_eq!(a.await.expect("committed").len(), 1);
        }
    });
}

fn direct(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let names: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(USERS as u64));
    group.measurement_time(Duration::from_secs(10));
    for (name, sync) in [("always", SyncMode::Always), ("batch", SyncMode::Batch)] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let options = StoreOptions {
            sync,
            max_queue: 1_000_000,
        };
        let store = Store::open(dir.path(), options).expect("store");
        let mut time = 0;
        group.bench_function(
            format!("direct message and its ack, 1000 users, sync {name}"),
            |b| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    for _ in 0..iters {
                        time += 1;
                        round(&rt, &store, &names, time);
                    }
                    started.elapsed()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, direct);
criterion_main!(benches);
