//! Proposals committed per second through a 3-node in-memory cluster (no I/O): the cost of
//! the consensus core itself, with batching.
//!
//! Each iteration proposes a batch of 64-byte entries at the leader, then drives every node's
//! Ready/step/advance loop, delivering messages directly (no network model) until the leader
//! has applied the whole batch. Logs are compacted every few rounds so memory stays flat however
//! long criterion runs. `cargo bench -p flotilla-raft --bench throughput` reports elements/s.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flotilla_raft::{
    ConfState, Config, LogStore, MemStorage, Message, NodeId, RawNode, Role, Storage,
};

const PAYLOAD: usize = 64;

/// Three nodes wired back to back.
struct Cluster {
    nodes: Vec<RawNode<MemStorage>>,
    applied: Vec<u64>,
    queue: VecDeque<Message>,
    rounds: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let conf = ConfState::with_voters([1, 2, 3]);
        let nodes = (1..=3)
            .map(|id| {
                let config = Config::new(id);
                RawNode::new(&config, MemStorage::new_with_conf_state(conf.clone()))
                    .expect("a bootstrapped node starts")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            applied: vec![0; 3],
            queue: VecDeque::new(),
            rounds: 0,
        };
        cluster.nodes[0].campaign().expect("campaign");
        cluster.settle();
        assert_eq!(cluster.nodes[0].status().role, Role::Leader, "node 1 leads");
        cluster
    }

    fn index(id: NodeId) -> usize {
        id as usize - 1
    }

    /// Handles every Ready and delivers every message until the cluster is quiet.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while self.nodes[i].has_ready() {
                    busy = true;
                    let rd = self.nodes[i].ready();
                    // The leader's replication goes out before its own sync.
                    self.queue.extend(rd.early_messages);
                    let store = self.nodes[i].store_mut();
                    if let Some(snap) = rd.snapshot {
                        store.apply_snapshot(snap).expect("snapshot");
                    }
                    store.append(&rd.entries).expect("append");
                    if let Some(hs) = rd.hard_state {
                        store.set_hard_state(hs).expect("hard state");
                    }
                    store.sync().expect("sync");
                    self.queue.extend(rd.messages);
                    if let Some(last) = rd.committed_entries.last() {
                        self.applied[i] = last.index;
                    }
                    self.nodes[i].advance();
                }
            }
            while let Some(msg) = self.queue.pop_front() {
                busy = true;
                let to = Self::index(msg.to);
                self.nodes[to].step(msg).expect("step");
            }
            if !busy {
                return;
            }
        }
    }

    /// Proposes `n` entries at the leader and drives the cluster until it applied them.
    fn round(&mut self, n: usize, payload: &[u8]) -> u64 {
        let mut last = 0;
        for _ in 0..n {
            let (_, index) = self.nodes[0].propose(payload.to_vec()).expect("propose");
            last = index;
        }
        while self.applied[0] < last {
            self.settle();
            if self.applied[0] < last {
                // Heartbeats carry the commit index to followers when no append is due.
                for node in &mut self.nodes {
                    node.tick();
                }
            }
        }
        self.rounds += 1;
        if self.rounds.is_multiple_of(16) {
            self.compact();
        }
        last
    }

    fn compact(&mut self) {
        for i in 0..self.nodes.len() {
            let applied = self.applied[i];
            let store = self.nodes[i].store_mut();
            if applied > store.first_index().unwrap_or(1) {
                let conf = ConfState::with_voters([1, 2, 3]);
                store
                    .create_snapshot(applied, conf, applied.to_le_bytes().to_vec())
                    .expect("compaction");
            }
        }
    }
}

fn throughput(c: &mut Criterion) {
    let payload = vec![0x5a; PAYLOAD];
    let mut group = c.benchmark_group("commit_3_nodes_64b");
    for batch in [256usize, 1024, 4096] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            let mut cluster = Cluster::new();
            b.iter_batched(
                || (),
                |()| black_box(cluster.round(batch, &payload)),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
