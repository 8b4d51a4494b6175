//! A tiny in-test network: RawNodes over MemStorage, messages delivered in FIFO order until
//! the cluster is quiet, with cut links for partitions. Deterministic by construction.

#![allow(dead_code)]

pub mod paper;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use flotilla_raft::*;

pub struct Net {
    pub nodes: BTreeMap<NodeId, RawNode<MemStorage>>,
    pub configs: BTreeMap<NodeId, Config>,
    /// Directed links that drop messages.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub queue: VecDeque<Message>,
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// Every message delivered, for assertions on traffic (when `record` is set).
    pub delivered: Vec<Message>,
    pub record: bool,
}

pub fn cfg(id: NodeId) -> Config {
    Config::new(id)
}

impl Net {
    pub fn new(ids: &[NodeId]) -> Net {
        Net::with(ids, |_| {})
    }

    pub fn with(ids: &[NodeId], f: impl Fn(&mut Config)) -> Net {
        let mut net = Net {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            cut: BTreeSet::new(),
            queue: VecDeque::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            delivered: Vec::new(),
            record: true,
        };
        let cs = ConfState::with_voters(ids.iter().copied());
        for &id in ids {
            let mut c = cfg(id);
            f(&mut c);
            net.add_node(c, MemStorage::new_with_conf_state(cs.clone()));
        }
        net
    }

    pub fn add_node(&mut self, c: Config, store: MemStorage) {
        let id = c.id;
        let node = RawNode::new(&c, store).expect("node starts");
        self.nodes.insert(id, node);
        self.configs.insert(id, c);
        self.applied.entry(id).or_default();
    }

    pub fn node(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).expect("node exists")
    }

    pub fn status(&self, id: NodeId) -> Status {
        self.nodes[&id].status()
    }

    /// Persists, "sends" and applies one Ready of `id`.
    pub fn handle_ready(&mut self, id: NodeId) -> bool {
        match self.ready_capture(id) {
            Some(msgs) => {
                for m in msgs {
                    if !self.cut.contains(&(m.from, m.to)) {
                        self.queue.push_back(m);
                    }
                }
                true
            }
            None => false,
        }
    }

    /// Handles one Ready of `id` like `handle_ready` but returns its messages instead of
    /// sending them (None if there was no Ready).
    pub fn ready_capture(&mut self, id: NodeId) -> Option<Vec<Message>> {
        let node = self.nodes.get_mut(&id).expect("node");
        if !node.has_ready() {
            return None;
        }
        let mut rd = node.ready();
        // Early messages go first (they may precede the persist step); delivery is FIFO.
        let mut out = std::mem::take(&mut rd.early_messages);
        let store = node.store_mut();
        if let Some(s) = rd.snapshot.clone() {
            store.apply_snapshot(s).expect("apply snapshot");
        }
        store.append(&rd.entries).expect("append");
        if let Some(hs) = rd.hard_state {
            store.set_hard_state(hs).expect("hard state");
        }
        store.sync().expect("sync");
        out.append(&mut rd.messages);
        for m in &out {
            assert_eq!(m.from, id);
        }
        if let Some(s) = &rd.snapshot {
            // The state machine restarts from the snapshot: forget what it applied before.
            let applied = self.applied.entry(id).or_default();
            applied.retain(|e| e.index <= s.meta.index);
        }
        self.applied
            .entry(id)
            .or_default()
            .extend(rd.committed_entries);
        self.reads.entry(id).or_default().extend(rd.read_states);
        node.advance();
        Some(out)
    }

    /// All messages `id` has to send now (running its Ready cycles), not delivered.
    pub fn outbox(&mut self, id: NodeId) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(ms) = self.ready_capture(id) {
            out.extend(ms);
        }
        out
    }

    pub fn step(&mut self, m: Message) {
        self.node(m.to).step(m).expect("step");
    }

    /// Like `drain`, but drops every message `keep` refuses.
    pub fn drain_where(&mut self, keep: impl Fn(&Message) -> bool) {
        loop {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut moved = false;
            for id in ids {
                moved |= self.handle_ready(id);
            }
            if let Some(m) = self.queue.pop_front() {
                moved = true;
                if keep(&m) && self.nodes.contains_key(&m.to) {
                    self.step(m);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs Ready cycles and delivers messages until nothing moves.
    pub fn drain(&mut self) {
        for _ in 0..100_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut moved = false;
            for id in ids {
                moved |= self.handle_ready(id);
            }
            if let Some(m) = self.queue.pop_front() {
                moved = true;
                if let Some(n) = self.nodes.get_mut(&m.to) {
                    if self.record {
                        self.delivered.push(m.clone());
                    }
                    n.step(m).expect("step");
                }
            }
            if !moved {
                return;
            }
        }
        panic!("network did not quiesce");
    }

    pub fn tick(&mut self, id: NodeId, n: usize) {
        for _ in 0..n {
            self.node(id).tick();
        }
        self.drain();
    }

    pub fn tick_all(&mut self, n: usize) {
        for _ in 0..n {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.node(id).tick();
            }
            self.drain();
        }
    }

    pub fn elect(&mut self, id: NodeId) {
        self.node(id).campaign().expect("campaign");
        self.drain();
        assert_eq!(self.status(id).role, Role::Leader, "{id} should lead");
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.status().role == Role::Leader)
            .map(|(id, _)| *id)
    }

    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> (u64, u64) {
        let r = self.node(id).propose(data.to_vec()).expect("propose");
        self.drain();
        r
    }

    /// Data of the applied normal, non-empty entries.
    pub fn applied_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.applied[&id]
            .iter()
            .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
            .map(|e| e.data.clone())
            .collect()
    }

    /// Crash and restart: keep only the store, rebuild the node.
    pub fn restart(&mut self, id: NodeId) {
        let mut node = self.nodes.remove(&id).expect("node");
        let store = std::mem::take(node.store_mut());
        let applied = self.applied[&id].last().map_or(0, |e| e.index);
        let mut c = self.configs[&id].clone();
        c.applied = applied.max(store.first_index().unwrap() - 1);
        let node = RawNode::new(&c, store).expect("restart");
        self.nodes.insert(id, node);
    }

    pub fn log_terms(&self, id: NodeId) -> Vec<(u64, u64)> {
        let s = self.nodes[&id].store();
        let (lo, hi) = (s.first_index().unwrap(), s.last_index().unwrap());
        s.entries(lo, hi + 1, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }
}
