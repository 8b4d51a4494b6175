//! Group-commit micro-benchmark of the Raft log store: append a batch of 256-byte entries and
//! make it durable with one `sync()` (WAL write + fdatasync), at 1, 16 and 128 entries per
//! batch. Criterion reports entries/s (`thrpt`).
//!
//! `raw_sled_256B` is the baseline measured in the same run: the same batches as a bare sled
//! `Batch` + `flush()` + fdatasync of the `db` file — the floor of the earlier design, which
//! kept the entries in sled. On a shared machine only the ratio is meaningful.
//!
//! Run: `cargo bench -p flotilla-node --bench log_store`. The log is compacted every ~50k
//! entries outside the timed region so disk use stays bounded.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flotilla_node::storage::{WalLogStore, open_db};
use flotilla_raft::{ConfState, Entry, EntryKind, LogStore, Storage};

const ENTRY_BYTES: usize = 256;
const COMPACT_EVERY: u64 = 50_000;

fn append_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_sync_256B");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for batch in [1u64, 16, 128] {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let db = open_db(dir.path()).expect("open_db");
        let mut store = WalLogStore::open(db, dir.path()).expect("open store");
        let payload = vec![0xa5u8; ENTRY_BYTES];
        let mut next = 1u64;
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let entries: Vec<Entry> = (next..next + batch)
                        .map(|index| Entry {
                            term: 1,
                            index,
                            kind: EntryKind::Normal,
                            data: payload.clone(),
                        })
                        .collect();
                    let start = Instant::now();
                    store.append(&entries).expect("append");
                    store.sync().expect("sync");
                    timed += start.elapsed();
                    next += batch;
                    let first = store.first_index().expect("first_index");
                    if next - first > COMPACT_EVERY {
                        store
                            .create_snapshot(next - 1, ConfState::with_voters([1]), Vec::new())
                            .expect("compact");
                    }
                }
                timed
            });
        });
    }
    group.finish();
}

fn raw_sled(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_sled_256B");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for batch in [1u64, 16, 128] {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let db = open_db(dir.path()).expect("open_db");
        let tree = db.open_tree("raw").expect("tree");
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(dir.path().join("db"))
            .expect("db file");
        let payload = vec![0xa5u8; ENTRY_BYTES];
        let mut next = 1u64;
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut b = sled::Batch::default();
                    for index in next..next + batch {
                        b.insert(&index.to_be_bytes(), payload.as_slice());
                    }
                    tree.apply_batch(b).expect("batch");
                    db.flush().expect("flush");
                    file.sync_data().expect("fdatasync");
                    timed += start.elapsed();
                    next += batch;
                    if next % COMPACT_EVERY < batch {
                        tree.clear().expect("clear");
                    }
                }
                timed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, raw_sled, append_sync);
criterion_main!(benches);
