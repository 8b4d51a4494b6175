//! The safety properties checked as the simulation runs, each named after the property of the
//! Raft paper (Figure 3, §5.2-§5.4) or pitfall it stands for.
//!
//! The checker sees every Ready every node hands out, so it checks incrementally: each event is
//! compared with a global history (who led which term, which entry holds each (index, term),
//! what was applied at each index) instead of re-comparing whole logs after each step. A state
//! can only become bad through an event, so checking every event is checking after every step,
//! at a cost that stays flat as logs grow.

use std::collections::{BTreeMap, HashMap};

use flotilla_raft::{ConfChange, Entry, EntryKind, HardState, NodeId, Storage};

use super::rng::{fold, hash_bytes};
use super::state_machine::{StateMachine, entry_hash};

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property, as the paper names it.
    pub property: &'static str,
    /// What happened.
    pub detail: String,
}

/// `check!(condition, "property", "format", args..)`: an assertion that is always on (release
/// builds included) and fails the run with a [`Violation`] instead of panicking, so the runner can
/// report the seed and carry on with the next one.
#[macro_export]
macro_rules! check {
    ($cond:expr, $property:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::invariants::Violation {
                property: $property,
                detail: format!($($fmt)+),
            });
        }
    };
}

/// What the cluster has committed at one index, as first observed being applied.
#[derive(Debug, Clone)]
struct Committed {
    term: u64,
    hash: u64,
    chain: u64,
    /// The highest term any node had persisted when the entry was first seen applied: the entry
    /// was committed in a term no later than this, so every leader of a later term must hold it.
    max_term_seen: u64,
    /// The client write it carries, if any.
    client: Option<u64>,
}

/// Per-node history that outlives crashes.
#[derive(Debug, Clone, Default)]
struct NodeRecord {
    /// Last persisted hard state.
    durable: HardState,
    /// Highest commit handed out since the node (re)started.
    commit_since_start: u64,
}

/// The global history every event is checked against.
#[derive(Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<u64, NodeId>,
    votes: HashMap<(NodeId, u64), NodeId>,
    log_entries: HashMap<(u64, u64), (u64, Option<u64>)>,
    committed: Vec<Committed>,
    max_term: u64,
    nodes: BTreeMap<NodeId, NodeRecord>,
    acked: HashMap<u64, u64>,
    max_acked_index: u64,
    /// Client writes acknowledged so far.
    pub acked_writes: u64,
    /// ReadIndex reads served and checked.
    pub reads_served: u64,
}

/// The tag of a client write's payload: `[b'w', id (8 bytes LE), padding..]`.
pub const WRITE_TAG: u8 = b'w';

/// The client id a payload carries, if it is a client write.
pub fn client_id(data: &[u8]) -> Option<u64> {
    if data.len() >= 9 && data[0] == WRITE_TAG {
        let mut word = [0u8; 8];
        word.copy_from_slice(&data[1..9]);
        Some(u64::from_le_bytes(word))
    } else {
        None
    }
}

impl Checker {
    /// Highest index committed (applied somewhere) so far.
    pub fn commit_index(&self) -> u64 {
        self.committed.len() as u64
    }

    /// Highest index of an acknowledged client write.
    pub fn max_acked_index(&self) -> u64 {
        self.max_acked_index
    }

    /// The leader recorded for `term`, if any.
    pub fn leader_of(&self, term: u64) -> Option<NodeId> {
        self.leaders.get(&term).copied()
    }

    /// Where client write `id` was applied, if it was.
    pub fn acked_index(&self, id: u64) -> Option<u64> {
        self.acked.get(&id).copied()
    }

    /// Hash chain of the committed prefix ending at `index` (0 for index 0).
    pub fn chain_at(&self, index: u64) -> Option<u64> {
        if index == 0 {
            Some(0)
        } else {
            self.committed.get(index as usize - 1).map(|c| c.chain)
        }
    }

    /// A node starts (first boot or restart) with this durable hard state.
    pub fn on_start(&mut self, node: NodeId, durable: HardState) {
        let rec = self.nodes.entry(node).or_default();
        rec.commit_since_start = durable.commit;
    }

    /// A node hands out a hard state to persist (Ready step 2).
    pub fn on_hard_state(&mut self, node: NodeId, hs: HardState) -> Result<(), Violation> {
        let rec = self.nodes.entry(node).or_default();
        check!(
            hs.term >= rec.durable.term,
            "currentTerm never decreases (Figure 2, persistent state)",
            "node {node} persists term {} after term {}",
            hs.term,
            rec.durable.term
        );
        check!(
            hs.commit >= rec.commit_since_start,
            "commit index never decreases",
            "node {node} hands out commit {} after {} (durable {})",
            hs.commit,
            rec.commit_since_start,
            rec.durable.commit
        );
        check!(
            hs.commit >= rec.durable.commit,
            "commit index never decreases (across restarts: durable commit)",
            "node {node} hands out commit {} below its durable commit {}",
            hs.commit,
            rec.durable.commit
        );
        rec.commit_since_start = hs.commit;
        Ok(())
    }

    /// The hard state is durable.
    pub fn on_hard_state_persisted(&mut self, node: NodeId, hs: HardState) {
        self.nodes.entry(node).or_default().durable = hs;
        self.max_term = self.max_term.max(hs.term);
    }

    /// A node sends a granted vote (not a pre-vote) for `candidate` in `term`.
    pub fn on_vote_granted(
        &mut self,
        voter: NodeId,
        term: u64,
        candidate: NodeId,
    ) -> Result<(), Violation> {
        let previous = *self.votes.entry((voter, term)).or_insert(candidate);
        check!(
            previous == candidate,
            "a server votes for at most one candidate per term (Figure 2, votedFor; §5.2)",
            "node {voter} granted its term-{term} vote to {previous} and then to {candidate}"
        );
        Ok(())
    }

    /// A node is about to append `entries`; `store` is its log before the append.
    pub fn before_append(
        &mut self,
        node: NodeId,
        entries: &[Entry],
        store: &impl Storage,
    ) -> Result<(), Violation> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let commit = self.nodes.get(&node).map_or(0, |r| r.commit_since_start);
        let last = store.last_index().unwrap_or(0);
        let snap = store.first_index().unwrap_or(1).saturating_sub(1);
        check!(
            first.index > snap,
            "entries below the snapshot are never rewritten",
            "node {node} appends from {} but its snapshot is at {snap}",
            first.index
        );
        for e in entries {
            if e.index > last.min(commit) {
                break;
            }
            let existing = store.term(e.index).unwrap_or(0);
            check!(
                existing == e.term,
                "committed entries are never truncated (Log Matching + Leader Completeness)",
                "node {node} (commit {commit}) overwrites entry {} of term {existing} with term {}",
                e.index,
                e.term
            );
        }
        Ok(())
    }

    /// A node appended `entries`; `store` is its log after the append.
    pub fn after_append(
        &mut self,
        node: NodeId,
        entries: &[Entry],
        store: &impl Storage,
    ) -> Result<(), Violation> {
        let mut prev: Option<u64> = entries.first().and_then(|e| {
            if e.index == 1 {
                Some(0)
            } else {
                store.term(e.index - 1).ok()
            }
        });
        for e in entries {
            let hash = entry_hash_payload(e);
            match self.log_entries.get_mut(&(e.index, e.term)) {
                Some((h, p)) => {
                    check!(
                        *h == hash,
                        "Log Matching (§5.3, Figure 3): same index and term, same command",
                        "node {node} holds a different command at index {} term {}",
                        e.index,
                        e.term
                    );
                    if let (Some(known), Some(mine)) = (*p, prev) {
                        check!(
                            known == mine,
                            "Log Matching (§5.3, Figure 3): identical up to a matching entry",
                            "node {node}: entry {}/{} follows term {mine}, elsewhere term {known}",
                            e.index,
                            e.term
                        );
                    } else if p.is_none() {
                        *p = prev;
                    }
                }
                None => {
                    self.log_entries.insert((e.index, e.term), (hash, prev));
                }
            }
            prev = Some(e.term);
        }
        Ok(())
    }

    /// `node` became leader of `term`; `store` holds its whole log.
    pub fn on_leader(
        &mut self,
        node: NodeId,
        term: u64,
        store: &impl Storage,
    ) -> Result<(), Violation> {
        let previous = *self.leaders.entry(term).or_insert(node);
        check!(
            previous == node,
            "Election Safety (§5.2, Figure 3): at most one leader per term",
            "nodes {previous} and {node} were both leader in term {term}"
        );
        let first = store.first_index().unwrap_or(1);
        let last = store.last_index().unwrap_or(0);
        for index in first..=self.commit_index() {
            let c = &self.committed[index as usize - 1];
            if c.max_term_seen >= term {
                continue;
            }
            let mine = if index <= last {
                store.term(index).ok()
            } else {
                None
            };
            check!(
                mine == Some(c.term),
                "Leader Completeness (§5.4, Figure 3)",
                "leader {node} of term {term} lacks committed entry {index} (term {}); has {:?}",
                c.term,
                mine
            );
        }
        Ok(())
    }

    /// `node` applies `e` to `sm` (Ready step 5).
    pub fn apply(
        &mut self,
        node: NodeId,
        sm: &mut StateMachine,
        e: &Entry,
        cc: Option<&ConfChange>,
    ) -> Result<(), Violation> {
        check!(
            e.index == sm.applied + 1,
            "entries are applied once, in log order (Figure 2, lastApplied)",
            "node {node} applied {} and is handed entry {}",
            sm.applied,
            e.index
        );
        if let Err(err) = sm.apply(e, cc) {
            check!(
                false,
                "committed entries are well formed",
                "node {node}: {err}"
            );
        }
        let hash = entry_hash(e);
        let at = e.index as usize - 1;
        if let Some(c) = self.committed.get(at) {
            check!(
                c.term == e.term && c.hash == hash,
                "State Machine Safety (§5.4.3, Figure 3): one command per index",
                "node {node} applies entry {} of term {} but term {} was applied there before{}",
                e.index,
                e.term,
                c.term,
                match c.client {
                    Some(id) => format!(" (acknowledged client write {id} is lost)"),
                    None => String::new(),
                }
            );
            check!(
                c.chain == sm.chain,
                "State Machine Safety (§5.4.3): identical applied prefixes",
                "node {node} reaches index {} with a different history",
                e.index
            );
        } else {
            check!(
                at == self.committed.len(),
                "entries are applied once, in log order",
                "node {node} applies {} beyond the cluster's known commit {}",
                e.index,
                self.committed.len()
            );
            let client = client_id(&e.data);
            self.committed.push(Committed {
                term: e.term,
                hash,
                chain: sm.chain,
                max_term_seen: self.max_term.max(e.term),
                client,
            });
            if let Some(id) = client {
                let first = *self.acked.entry(id).or_insert(e.index);
                check!(
                    first == e.index,
                    "a proposal is committed at most once",
                    "client write {id} committed at {first} and again at {}",
                    e.index
                );
                self.acked_writes += 1;
                self.max_acked_index = self.max_acked_index.max(e.index);
            }
        }
        Ok(())
    }

    /// `node` restored `sm` from a snapshot (Ready step 1, or a restart).
    pub fn on_restore(&mut self, node: NodeId, sm: &StateMachine) -> Result<(), Violation> {
        check!(
            sm.applied <= self.commit_index(),
            "snapshots hold committed state only",
            "node {node} restored a snapshot at {} beyond the commit {}",
            sm.applied,
            self.commit_index()
        );
        check!(
            self.chain_at(sm.applied) == Some(sm.chain),
            "State Machine Safety (§5.4.3): a snapshot is a committed prefix",
            "node {node} restored a snapshot at {} whose history differs",
            sm.applied
        );
        Ok(())
    }

    /// A read served by `node` from its state machine at `applied`, started when
    /// `acked_at_start` was the index of the highest acknowledged write.
    pub fn on_read_served(
        &mut self,
        node: NodeId,
        applied: u64,
        acked_at_start: u64,
    ) -> Result<(), Violation> {
        check!(
            applied >= acked_at_start,
            "linearizable reads (§6.4): a read sees every write acknowledged before it began",
            "node {node} served a read at applied {applied} but the write at {acked_at_start} \
             was acknowledged before the read began"
        );
        self.reads_served += 1;
        Ok(())
    }
}

fn entry_hash_payload(e: &Entry) -> u64 {
    let kind = match e.kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    };
    fold(hash_bytes(&e.data), kind)
}
