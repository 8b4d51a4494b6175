//! What the MVCC store's layout costs in sled: 100 revisions of 300 bytes applied as one
//! `sled::Batch`, written either as one sled key per revision (the store's layout today,
//! `per_revision`) or as one key holding the whole batch (`one_key_per_batch`). Criterion
//! reports revisions/s (`thrpt`); on a shared machine only the ratio is meaningful.
//!
//! Why it exists: the profiles of issue 12 found sled's `apply_batch` at ~9.5 µs per revision
//! on every member, a third of a follower's CPU per put. This bench is the measurement a
//! change of layout would start from (README, Performance).
//!
//! Run: `cargo bench -p flotilla-node --bench state_layout`. Each database is cleared every
//! ~50k revisions outside the timed region so memory and disk stay bounded.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flotilla_node::storage::open_db;

const REVISION_BYTES: usize = 300;
const BATCH: u64 = 100;
const CLEAR_EVERY: u64 = 50_000;

/// The key of revision `rev`: a prefix and the revision big-endian, as the store's are.
fn revision_key(rev: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'r';
    k[1..9].copy_from_slice(&rev.to_be_bytes());
    k
}

/// Times `write(tree, first_revision)` for batches of BATCH revisions.
fn bench_layout(c: &mut Criterion, name: &str, write: fn(&sled::Tree, u64, &[u8])) {
    let mut group = c.benchmark_group("state_layout_100x300B");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(BATCH));
    let dir = tempfile::TempDir::new().expect("temp dir");
    let db = open_db(dir.path()).expect("open_db");
    let tree = db.open_tree("kv").expect("tree");
    let value = vec![0xa5u8; REVISION_BYTES];
    let mut next = 1u64;
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                write(&tree, next, &value);
                timed += start.elapsed();
                next += BATCH;
                if next % CLEAR_EVERY < BATCH {
                    tree.clear().expect("clear");
                }
            }
            timed
        });
    });
    group.finish();
}

fn per_revision(tree: &sled::Tree, first: u64, value: &[u8]) {
    let mut b = sled::Batch::default();
    for rev in first..first + BATCH {
        b.insert(&revision_key(rev), value);
    }
    b.insert(b"meta", &(first + BATCH - 1).to_be_bytes());
    tree.apply_batch(b).expect("batch");
}

fn one_key_per_batch(tree: &sled::Tree, first: u64, value: &[u8]) {
    let mut chunk = Vec::with_capacity(BATCH as usize * (8 + value.len()));
    for rev in first..first + BATCH {
        chunk.extend_from_slice(&rev.to_be_bytes());
        chunk.extend_from_slice(value);
    }
    let mut b = sled::Batch::default();
    b.insert(&revision_key(first), chunk);
    b.insert(b"meta", &(first + BATCH - 1).to_be_bytes());
    tree.apply_batch(b).expect("batch");
}

fn layouts(c: &mut Criterion) {
    bench_layout(c, "per_revision", per_revision);
    bench_layout(c, "one_key_per_batch", one_key_per_batch);
}

criterion_group!(benches, layouts);
criterion_main!(benches);
