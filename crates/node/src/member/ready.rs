//! [`ReadyCycle`]: the order in which one Raft `Ready` is persisted, sent and applied — the part
//! of the loop that Raft's safety rests on, kept apart from everything the loop does with the
//! Ready's contents (which sits behind [`ReadyHooks`]).
//!
//! The order follows the contract in `flotilla_raft`'s docs: the leader's `early_messages` (its
//! Appends and heartbeats) leave first, so followers write and sync in parallel with the
//! leader's own sync instead of after it; then persist, ONE sync, send the rest, apply, answer
//! read states; the caller then advances.
//!
//! Two more things keep syncs off the write path, both as etcd's raft node does them:
//! - A Ready whose only durable change is the commit index needs no sync (etcd's `MustSync`):
//!   the commit index may be lost in a crash (the core recomputes it, and the state machine's
//!   applied index is stored with its state), while term, vote and entries may not.
//! - Committed entries that were already durable in the local log before this Ready are
//!   applied (and their clients answered) *before* this Ready's sync: otherwise every commit
//!   would wait for the next batch's fsync too. Entries this Ready itself writes (a follower
//!   may learn of their commit in the same Append) still wait for the sync, so the state
//!   machine never gets ahead of the durable log.
//!
//! Generic over the log store and the outbox so the ordering is tested here, directly, against
//! the real core on an in-memory store (the tests below), not only through clusters of
//! processes.

use std::time::{Duration, Instant};

use flotilla_raft::{
    Entry, HardState, LogStore, NodeId, RawNode, ReadState, Ready, Role, Snapshot, SnapshotMeta,
    StorageError,
};

use crate::contract::Outbox;

/// What the loop does with the contents of a Ready, called by [`ReadyCycle::process`] at the
/// point of the cycle each method names. An error stops the loop (a storage failure).
pub trait ReadyHooks<S: LogStore> {
    /// The leader or this member's role changed; called before any committed entry of the
    /// same Ready is applied (leadership lost fails the pending proposals first).
    fn soft_state(&mut self, leader: NodeId, role: Role);
    /// A snapshot is about to replace the log: restore the state machine from it.
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String>;
    /// The store holds the snapshot (or refused it as out of date).
    fn restored(&mut self, node: &RawNode<S>, meta: &SnapshotMeta, started: Instant);
    /// Entries about to be appended (a configuration change takes effect on append).
    fn appending(&mut self, node: &RawNode<S>, entries: &[Entry]);
    /// A hard state with a term other than the durable one is about to be persisted.
    fn new_term(&mut self, term: u64);
    /// The Ready's sync took this long.
    fn synced(&mut self, took: Duration);
    /// Committed entries to apply, in log order.
    fn apply(&mut self, node: &RawNode<S>, committed: Vec<Entry>) -> Result<(), String>;
    /// Answers to ReadIndex requests (the caller waits for applied ≥ index itself).
    fn read_states(&mut self, states: Vec<ReadState>);
}

/// What is known durable across Readies: only a change of these (or new entries, or a
/// snapshot) needs a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyCycle {
    /// Term and vote as last made durable.
    durable_term_vote: (u64, NodeId),
    /// Highest log index known durable in the local store (what earlier Readies synced).
    durable_last: u64,
}

impl ReadyCycle {
    /// A cycle for a node whose store was just opened: whatever it holds is durable (it was
    /// read back from disk).
    pub fn new<S: LogStore>(node: &RawNode<S>) -> Self {
        let st = node.status();
        ReadyCycle {
            durable_term_vote: (st.term, st.vote),
            durable_last: st.last_index,
        }
    }

    /// Takes the node's Ready and persists, sends and applies it in the order of the module
    /// docs, then advances the node.
    pub fn process<S, O, H>(
        &mut self,
        node: &mut RawNode<S>,
        outbox: &O,
        hooks: &mut H,
    ) -> Result<(), String>
    where
        S: LogStore,
        O: Outbox + ?Sized,
        H: ReadyHooks<S>,
    {
        let Ready {
            soft_state,
            hard_state,
            snapshot,
            entries,
            committed_entries,
            early_messages,
            messages,
            read_states,
        } = node.ready();

        // 0. The leader's replication leaves at once: followers write while we write.
        if !early_messages.is_empty() {
            outbox.send(early_messages);
        }
        let must_sync = snapshot.is_some()
            || !entries.is_empty()
            || hard_state.is_some_and(|hs| (hs.term, hs.vote) != self.durable_term_vote);
        // Committed entries already durable here before this Ready (and not about to be
        // replaced by it) are applied now, in parallel with nothing but our own sync.
        let durable_prefix = entries
            .first()
            .map_or(self.durable_last, |e| self.durable_last.min(e.index - 1));
        let apply_early = snapshot.is_none()
            && committed_entries
                .last()
                .is_some_and(|e| e.index <= durable_prefix);
        let mut committed_entries = Some(committed_entries);
        if apply_early {
            if let Some(ss) = soft_state {
                hooks.soft_state(ss.leader, ss.role);
            }
            hooks.apply(node, committed_entries.take().unwrap_or_default())?;
        }
        // 1. Snapshot: the state machine first, then the log store.
        if let Some(snap) = snapshot {
            let started = Instant::now();
            hooks.restore(&snap)?;
            let meta = snap.meta.clone();
            match node.store_mut().apply_snapshot(snap) {
                Ok(()) => {}
                Err(StorageError::SnapshotOutOfDate(i)) => {
                    tracing::debug!(index = i, "ignoring an out-of-date snapshot");
                }
                Err(e) => return Err(e.to_string()),
            }
            hooks.restored(node, &meta, started);
        }
        // 2. Entries and hard state.
        if !entries.is_empty() {
            hooks.appending(node, &entries);
            node.store_mut()
                .append(&entries)
                .map_err(|e| e.to_string())?;
        }
        if let Some(hs) = hard_state {
            if hs.term != self.durable_term_vote.0 {
                hooks.new_term(hs.term);
            }
            node.store_mut()
                .set_hard_state(hs)
                .map_err(|e| e.to_string())?;
        }
        // 3. ONE durable sync for everything above (a Ready that persisted nothing but the
        // commit index — only heartbeats or committed entries to apply — needs none).
        if must_sync {
            let started = Instant::now();
            node.store_mut().sync().map_err(|e| e.to_string())?;
            hooks.synced(started.elapsed());
            if let Some(HardState { term, vote, .. }) = hard_state {
                self.durable_term_vote = (term, vote);
            }
            // Everything in the store is durable now.
            self.durable_last = node.store().last_index().map_err(|e| e.to_string())?;
        }
        // 4. Only now send.
        if !messages.is_empty() {
            outbox.send(messages);
        }
        if !apply_early && let Some(ss) = soft_state {
            hooks.soft_state(ss.leader, ss.role);
        }
        // 5. Apply.
        if let Some(committed) = committed_entries.take()
            && !committed.is_empty()
        {
            hooks.apply(node, committed)?;
        }
        // 6. Read states.
        if !read_states.is_empty() {
            hooks.read_states(read_states);
        }
        // 7. Advance.
        node.advance();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
