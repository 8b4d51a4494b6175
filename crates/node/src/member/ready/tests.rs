//! The Ready cycle against the real core on an in-memory store: three members whose messages
//! the test delivers by hand, with every store call, send and apply recorded in one log, so
//! each test reads as the order it checks.

use std::sync::{Arc, Mutex};

use flotilla_raft::{
    ConfState, Config, Entry, EntryKind, HardState, LogStore, MemStorage, Message, MessageBody,
    NodeId, RawNode, ReadState, Role, Snapshot, SnapshotMeta, Storage, StorageError,
};

use super::{ReadyCycle, ReadyHooks};
use crate::contract::Outbox;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    /// Entries appended, up to this index.
    Append(u64),
    HardState,
    Sync,
    Send(Vec<&'static str>),
    /// Committed entries applied, by index.
    Apply(Vec<u64>),
}

type Log = Arc<Mutex<Vec<Ev>>>;

fn record(log: &Log, ev: Ev) {
    log.lock().expect("log").push(ev);
}

/// A [`MemStorage`] that records the calls the cycle makes.
struct Logged {
    inner: MemStorage,
    log: Log,
}

impl Storage for Logged {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        self.inner.initial_state()
    }
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(lo, hi, max_bytes)
    }
    fn term(&self, index: u64) -> Result<u64, StorageError> {
        self.inner.term(index)
    }
    fn first_index(&self) -> Result<u64, StorageError> {
        self.inner.first_index()
    }
    fn last_index(&self) -> Result<u64, StorageError> {
        self.inner.last_index()
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.inner.snapshot()
    }
}

impl LogStore for Logged {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        record(&self.log, Ev::Append(entries.last().map_or(0, |e| e.index)));
        self.inner.append(entries)
    }
    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        record(&self.log, Ev::HardState);
        self.inner.set_hard_state(hs)
    }
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.inner.apply_snapshot(snapshot)
    }
    fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        self.inner.create_snapshot(index, conf_state, data)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        record(&self.log, Ev::Sync);
        self.inner.sync()
    }
}

/// An outbox that records what is sent and keeps it for delivery.
struct Net {
    log: Log,
    sent: Mutex<Vec<Message>>,
}

impl Outbox for Net {
    fn send(&self, msgs: Vec<Message>) {
        record(&self.log, Ev::Send(msgs.iter().map(kind).collect()));
        self.sent.lock().expect("sent").extend(msgs);
    }
    fn set_peers(&self, _: Vec<(NodeId, String)>) {}
}

fn kind(m: &Message) -> &'static str {
    match m.body {
        MessageBody::Vote { .. } => "Vote",
        MessageBody::VoteResponse { .. } => "VoteResponse",
        MessageBody::Append { .. } => "Append",
        MessageBody::AppendResponse { .. } => "AppendResponse",
        MessageBody::Heartbeat { .. } => "Heartbeat",
        MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
        _ => "other",
    }
}

struct Hooks {
    log: Log,
}

impl<S: LogStore> ReadyHooks<S> for Hooks {
    fn soft_state(&mut self, _: NodeId, _: Role) {}
    fn restore(&mut self, _: &Snapshot) -> Result<(), String> {
        Ok(())
    }
    fn restored(&mut self, _: &RawNode<S>, _: &SnapshotMeta, _: std::time::Instant) {}
    fn appending(&mut self, _: &RawNode<S>, _: &[Entry]) {}
    fn new_term(&mut self, _: u64) {}
    fn synced(&mut self, _: std::time::Duration) {}
    fn apply(&mut self, _: &RawNode<S>, committed: Vec<Entry>) -> Result<(), String> {
        record(
            &self.log,
            Ev::Apply(committed.iter().map(|e| e.index).collect()),
        );
        Ok(())
    }
    fn read_states(&mut self, _: Vec<ReadState>) {}
}

struct Member {
    node: RawNode<Logged>,
    cycle: ReadyCycle,
    net: Net,
    hooks: Hooks,
    log: Log,
}

impl Member {
    fn new(id: NodeId) -> Self {
        let log = Log::default();
        let store = Logged {
            inner: MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3])),
            log: log.clone(),
        };
        let mut config = Config::new(id);
        config.pre_vote = false;
        let node = RawNode::new(&config, store).expect("node");
        Member {
            cycle: ReadyCycle::new(&node),
            node,
            net: Net {
                log: log.clone(),
                sent: Mutex::default(),
            },
            hooks: Hooks { log: log.clone() },
            log,
        }
    }

    /// Runs one Ready (if any) and returns what it did, in order.
    fn ready(&mut self) -> Vec<Ev> {
        self.log.lock().expect("log").clear();
        if self.node.has_ready() {
            self.cycle
                .process(&mut self.node, &self.net, &mut self.hooks)
                .expect("ready");
        }
        std::mem::take(&mut *self.log.lock().expect("log"))
    }

    fn outbound(&self) -> Vec<Message> {
        std::mem::take(&mut *self.net.sent.lock().expect("sent"))
    }

    fn deliver(&mut self, msgs: impl IntoIterator<Item = Message>) {
        let id = self.node.status().id;
        for m in msgs.into_iter().filter(|m| m.to == id) {
            self.node.step(m).expect("step");
        }
    }
}

fn pos(evs: &[Ev], want: impl Fn(&Ev) -> bool) -> usize {
    evs.iter()
        .position(want)
        .unwrap_or_else(|| panic!("not in {evs:?}"))
}

/// Members 1, 2, 3 with 1 elected and its no-op (index 1) durable on 1 and 2; 3 has stepped
/// its Append and not yet run the Ready.
fn elected() -> [Member; 3] {
    let mut ms = [Member::new(1), Member::new(2), Member::new(3)];
    ms[0].node.campaign().expect("campaign");
    ms[0].ready();
    let votes = ms[0].outbound();
    for m in &mut ms[1..] {
        m.deliver(votes.clone());
        m.ready();
    }
    let answers: Vec<Message> = ms[1..].iter().flat_map(|m| m.outbound()).collect();
    ms[0].deliver(answers);
    ms[0].ready();
    let appends = ms[0].outbound();
    ms[1].deliver(appends.clone());
    ms[2].deliver(appends);
    ms[1].ready();
    ms
}

#[test]
fn a_vote_leaves_only_after_it_is_durable() {
    let mut m = Member::new(1);
    m.node.campaign().expect("campaign");
    assert_eq!(
        m.ready(),
        vec![Ev::HardState, Ev::Sync, Ev::Send(vec!["Vote", "Vote"])]
    );
}

#[test]
fn the_leaders_appends_leave_before_its_own_sync() {
    let mut ms = [Member::new(1), Member::new(2), Member::new(3)];
    ms[0].node.campaign().expect("campaign");
    ms[0].ready();
    let votes = ms[0].outbound();
    ms[1].deliver(votes);
    ms[1].ready();
    let answers = ms[1].outbound();
    ms[0].deliver(answers);
    let evs = ms[0].ready();
    let sent = pos(&evs, |e| matches!(e, Ev::Send(k) if k.contains(&"Append")));
    assert!(sent < pos(&evs, |e| *e == Ev::Append(1)), "{evs:?}");
    assert!(sent < pos(&evs, |e| *e == Ev::Sync), "{evs:?}");
}

#[test]
fn a_followers_answer_leaves_only_after_its_append_is_durable() {
    let mut ms = elected();
    let evs = ms[2].ready();
    let synced = pos(&evs, |e| *e == Ev::Sync);
    assert!(pos(&evs, |e| *e == Ev::Append(1)) < synced, "{evs:?}");
    assert!(
        synced < pos(&evs, |e| *e == Ev::Send(vec!["AppendResponse"])),
        "{evs:?}"
    );
}

#[test]
fn a_commit_of_durable_entries_applies_without_a_sync() {
    let mut ms = elected();
    let answers = ms[1].outbound();
    ms[0].deliver(answers);
    let evs = ms[0].ready();
    assert!(evs.contains(&Ev::Apply(vec![1])), "{evs:?}");
    assert!(!evs.contains(&Ev::Sync), "{evs:?}");
}

#[test]
fn entries_committed_in_the_ready_that_writes_them_apply_after_the_sync() {
    let mut ms = elected();
    let term = ms[0].node.status().term;
    ms[1].deliver([Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: term,
            entries: vec![Entry {
                term,
                index: 2,
                kind: EntryKind::Normal,
                data: b"x".to_vec(),
            }],
            commit: 2,
        },
    }]);
    let evs = ms[1].ready();
    let applied = pos(&evs, |e| matches!(e, Ev::Apply(_)));
    assert_eq!(evs[applied], Ev::Apply(vec![1, 2]));
    assert!(pos(&evs, |e| *e == Ev::Sync) < applied, "{evs:?}");
    assert!(pos(&evs, |e| *e == Ev::Append(2)) < applied, "{evs:?}");
}
