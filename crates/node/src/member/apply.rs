//! [`Applier`]: what the Raft loop does with the contents of a Ready — apply committed entries
//! to the state machine and answer their waiters, restore snapshots, keep the member list and
//! the snapshot view current, take compaction snapshots, and publish the status. It is the
//! [`ReadyHooks`] of [`super::ready::ReadyCycle`], which owns the order of those steps.
//!
//! A payload is applied under the state machine's write lock into an open sled batch, which
//! stays open across Readies: it is written every tick (`Applier::write_deferred`) or once it
//! holds `MAX_DEFERRED_WRITES` keys. Every `sled::Batch` makes sled write and
//! `sync_file_range` its log buffer at once, so a batch per Ready was a second disk write per
//! put beside the WAL's fdatasync (on every member). Clients hear back once the entry is in
//! the batch: reads see it there, and the state database is never synced per Ready anyway —
//! after a crash the WAL replays from the applied index stored with the data (as etcd's
//! backend commits its batch every 100 ms).

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_proto::internal;
use flotilla_raft::{
    Entry, EntryKind, LogStore, NodeId, RawNode, ReadState, Role, Snapshot, SnapshotMeta,
};
use tokio::sync::watch;

use super::image::SharedView;
use super::publish::Publisher;
use super::ready::ReadyHooks;
use super::roster::Roster;
use super::state_lock::StateLock;
use super::state_machine::StateMachine;
use super::waiters::Waiters;
use crate::contract::members;
use crate::contract::{ProposalReply, ServerError};
use crate::metrics::Metrics;
use crate::storage::WalLogStore;

/// Keys the open batch may hold before an apply writes it (etcd's backend commits every
/// 10,000 writes or 100 ms; this bounds the memory of the batch and the work of a read that
/// merges it).
const MAX_DEFERRED_WRITES: usize = 4096;

/// The loop's state apart from the core and the Ready cycle.
pub struct Applier {
    pub(super) sm: Arc<StateLock>,
    pub(super) roster: Roster,
    pub(super) waiters: Waiters,
    pub(super) publisher: Publisher,
    pub(super) view: SharedView,
    pub(super) metrics: Metrics,
    pub(super) applied_tx: watch::Sender<u64>,
    /// The last applied index.
    pub(super) applied: u64,
    /// The index of the last compaction snapshot.
    pub(super) last_snapshot: u64,
    /// Applied entries between compaction snapshots.
    pub(super) snapshot_threshold: u64,
    pub(super) self_id: NodeId,
}

impl Applier {
    /// Republishes the peer set (and, soon, the status) after the member list changed.
    pub(super) fn refresh_peers<S: LogStore>(&mut self, node: &RawNode<S>) {
        self.publisher.mark();
        self.roster.refresh_peers(&node.status());
    }

    /// Publishes the applied index (and, when they changed, the configuration and members
    /// as of it) to the image source.
    pub(super) fn update_view(&mut self, conf_changed: bool) {
        let conf = conf_changed.then(|| (self.roster.applied_conf(), self.roster.members()));
        self.view.update(self.applied, conf);
    }

    /// Writes the open batch of applied entries to sled (every tick, so an idle member's
    /// tree catches up within one).
    pub(super) fn write_deferred(&mut self) -> Result<(), String> {
        let mut sm = self.sm.write().map_err(|_| "state machine lock poisoned")?;
        sm.finish_batch()
    }

    /// Publishes the status now.
    pub(super) fn publish<S: LogStore>(&mut self, node: &RawNode<S>) {
        self.publisher.publish(
            &node.status(),
            self.applied,
            self.roster.members(),
            &self.sm,
        );
    }

    /// Compacts the log every `snapshot_threshold` applied entries. The snapshot stores only
    /// the member list: the state machine is durable in the same database, and a follower that
    /// needs it gets an image built at that moment (see [`super::image`]).
    ///
    /// A leader keeps the entries its followers still need (see [`compaction_index`]).
    pub(super) fn maybe_snapshot(&mut self, node: &mut RawNode<WalLogStore>) -> Result<(), String> {
        let threshold = self.snapshot_threshold.max(1);
        if self.applied < self.last_snapshot + threshold {
            return Ok(());
        }
        let index = compaction_index(self.applied, threshold, &node.status());
        if index <= self.last_snapshot {
            return Ok(());
        }
        let store = node.store_mut();
        let started = Instant::now();
        let partial = members::encode_snapshot(self.roster.members(), &[]);
        match store.compact(index, self.roster.applied_conf().clone(), partial) {
            Ok(()) => {
                self.last_snapshot = index;
                self.metrics.snapshots.inc();
                self.metrics
                    .snapshot_duration
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(index, "snapshot taken, log compacted");
                Ok(())
            }
            Err(flotilla_raft::StorageError::SnapshotOutOfDate(_)) => {
                self.last_snapshot = index;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn apply_entries(
        &mut self,
        sm: &mut StateMachine,
        sm_applied: u64,
        committed: Vec<Entry>,
        replies: &mut Vec<(ProposalReply, Result<internal::Response, ServerError>)>,
    ) -> Result<(), String> {
        for e in committed {
            self.metrics.proposals_committed.inc();
            match e.kind {
                EntryKind::Normal => {
                    if e.data.is_empty() || e.index <= sm_applied {
                        // The leader's no-op, or an entry applied before a restart.
                        self.waiters.not_applied(e.index);
                    } else {
                        let out = sm.apply(e.index, &e.data)?;
                        if let Some(reply) = self.waiters.take_proposal(e.index, e.term) {
                            replies.push((reply, Ok(out)));
                        }
                    }
                }
                EntryKind::ConfChange => {
                    self.roster.applied(&e.data, self.self_id);
                    self.waiters.conf_change_applied(e.index, e.term);
                }
            }
            self.applied = e.index;
            self.metrics.proposals_applied.inc();
        }
        Ok(())
    }
}

impl<S: LogStore> ReadyHooks<S> for Applier {
    fn soft_state(&mut self, leader: NodeId, role: Role) {
        if self.publisher.soft_state(leader, role) {
            self.waiters.leadership_lost();
        }
    }

    fn restore(&mut self, snap: &Snapshot) -> Result<(), String> {
        // An index-0 snapshot only carries the bootstrap configuration (for a member that
        // joined with an empty one): there is no state machine image to restore.
        if snap.meta.index == 0 {
            return Ok(());
        }
        let (members, state) =
            members::decode_snapshot(&snap.data).map_err(|e| format!("snapshot: {e}"))?;
        // The image is written aside without the lock (a large one takes seconds), so client
        // reads keep being served from the old state until the switch.
        let target = self
            .sm
            .read()
            .map_err(|_| "state machine lock poisoned")?
            .restore_target();
        let prepared = StateMachine::prepare_restore(target, state, snap.meta.index)?;
        self.sm
            .write()
            .map_err(|_| "state machine lock poisoned")?
            .install_restore(prepared)?;
        self.roster
            .restored(Some(members), snap.meta.conf_state.clone());
        Ok(())
    }

    fn restored(&mut self, node: &RawNode<S>, meta: &SnapshotMeta, started: Instant) {
        if meta.index > 0 {
            self.applied = self.applied.max(meta.index);
            self.update_view(true);
            self.last_snapshot = meta.index;
            self.metrics.snapshots.inc();
            let took = started.elapsed();
            self.metrics.snapshot_duration.observe(took.as_secs_f64());
            tracing::info!(
                index = meta.index,
                ms = took.as_millis() as u64,
                "installed a snapshot image from the leader"
            );
            let _ = self.applied_tx.send(self.applied);
        }
        self.refresh_peers(node);
    }

    fn appending(&mut self, node: &RawNode<S>, entries: &[Entry]) {
        // Learn addresses of members being added as soon as the change is appended (it takes
        // effect then), so the leader can replicate to them before it commits.
        for e in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            self.roster.appending(e);
            self.refresh_peers(node);
        }
    }

    fn new_term(&mut self, _term: u64) {
        self.publisher.mark();
    }

    fn synced(&mut self, took: Duration) {
        self.metrics.fsync_duration.observe(took.as_secs_f64());
    }

    fn apply(&mut self, node: &RawNode<S>, committed: Vec<Entry>) -> Result<(), String> {
        let sm_arc = self.sm.clone();
        let mut sm = sm_arc.write().map_err(|_| "state machine lock poisoned")?;
        let sm_applied = sm.applied_index();
        // Entries go into the open batch (module docs); it is written once it is large.
        sm.begin_batch();
        let mut replies = Vec::new();
        let mut conf_applied = committed.iter().any(|e| e.kind == EntryKind::ConfChange);
        let applied = self.apply_entries(&mut sm, sm_applied, committed, &mut replies);
        let finished = if sm.pending_writes() >= MAX_DEFERRED_WRITES {
            sm.finish_batch()
        } else {
            Ok(())
        };
        let member_updates = sm.take_member_updates();
        drop(sm);
        conf_applied |= self.roster.update_peer_urls(member_updates);
        if conf_applied {
            self.refresh_peers(node);
        }
        applied?;
        finished?;
        if !replies.is_empty() {
            self.waiters.answered_now();
        }
        for (reply, r) in replies {
            let _ = reply.send(r);
        }
        self.update_view(conf_applied);
        self.metrics.applied_index.set(self.applied as i64);
        self.waiters.set_pending();
        let _ = self.applied_tx.send(self.applied);
        Ok(())
    }

    fn read_states(&mut self, states: Vec<ReadState>) {
        self.waiters.read_states(states);
    }
}

/// How many snapshot thresholds of entries a leader keeps at most for followers catching up:
/// the log lives in memory, so a follower that stays behind must not hold it forever.
const HOLD_THRESHOLDS: u64 = 4;
/// A follower heard from within this many ticks (a minute at the default 100 ms) is catching
/// up or restarting, not gone: a rolling restart under load then catches up from the log
/// rather than from a full image.
const HOLD_CONTACT_TICKS: u64 = 600;

/// Where the log may be compacted to: the applied index, held back on a leader for the
/// followers that still need entries: one with an image in flight needs the entries after
/// the image, one in contact those after what it has. A gone follower holds nothing, and no
/// follower holds more than [`HOLD_THRESHOLDS`] thresholds of entries.
///
/// Without the hold, a follower that installed a large image under load found the entries
/// after it compacted away by the time it was done, and needed another image, and another:
/// it never caught up (etcd keeps `SnapshotCatchUpEntries` for the same reason).
pub(super) fn compaction_index(applied: u64, threshold: u64, st: &flotilla_raft::Status) -> u64 {
    if st.role != Role::Leader {
        return applied;
    }
    let floor = applied.saturating_sub(HOLD_THRESHOLDS.saturating_mul(threshold));
    let needed = st
        .progress
        .iter()
        .filter(|(id, _)| **id != st.id)
        .filter_map(|(_, p)| {
            if p.state == flotilla_raft::ProgressState::Snapshot && p.pending_snapshot > 0 {
                Some(p.pending_snapshot)
            } else if p.ticks_since_contact <= HOLD_CONTACT_TICKS {
                Some(p.match_index)
            } else {
                None
            }
        })
        .min()
        .unwrap_or(applied);
    needed.clamp(floor, applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_raft::{ConfState, ProgressState, ProgressStatus, Status};
    use std::collections::BTreeMap;

    fn progress(
        match_index: u64,
        state: ProgressState,
        pending: u64,
        ticks: u64,
    ) -> ProgressStatus {
        ProgressStatus {
            match_index,
            next_index: match_index + 1,
            state,
            recent_active: ticks == 0,
            pending_snapshot: pending,
            is_learner: false,
            ticks_since_contact: ticks,
            caught_up: false,
        }
    }

    fn leader_with(followers: Vec<ProgressStatus>) -> Status {
        let mut progress = BTreeMap::new();
        progress.insert(1, progress_of_self());
        for (i, p) in followers.into_iter().enumerate() {
            progress.insert(i as u64 + 2, p);
        }
        Status {
            id: 1,
            term: 3,
            vote: 1,
            commit: 50_000,
            applied: 50_000,
            first_index: 1,
            last_index: 50_000,
            last_term: 3,
            role: Role::Leader,
            leader: 1,
            conf_state: ConfState::with_voters(1..=3),
            pending_conf_index: 0,
            transferee: 0,
            progress,
        }
    }

    fn progress_of_self() -> ProgressStatus {
        progress(50_000, ProgressState::Replicate, 0, 0)
    }

    #[test]
    fn a_leader_keeps_what_catching_up_followers_need_and_no_more() {
        let threshold = 10_000;
        let up = progress(49_990, ProgressState::Replicate, 0, 0);
        // Everyone replicating: nearly everything goes.
        let st = leader_with(vec![up.clone(), up.clone()]);
        assert_eq!(compaction_index(50_000, threshold, &st), 49_990);
        // An image in flight holds the entries after it, however long the install takes.
        let installing = progress(0, ProgressState::Snapshot, 30_000, 500);
        let st = leader_with(vec![up.clone(), installing]);
        assert_eq!(compaction_index(50_000, threshold, &st), 30_000);
        // A follower in contact that is behind holds its entries...
        let behind = progress(25_000, ProgressState::Probe, 0, 3);
        let st = leader_with(vec![up.clone(), behind]);
        assert_eq!(compaction_index(50_000, threshold, &st), 25_000);
        // ...but never more than HOLD_THRESHOLDS thresholds of them.
        let far = progress(2_000, ProgressState::Probe, 0, 3);
        let st = leader_with(vec![up.clone(), far]);
        assert_eq!(compaction_index(50_000, threshold, &st), 10_000);
        // A follower that is gone holds nothing.
        let gone = progress(2_000, ProgressState::Probe, 0, HOLD_CONTACT_TICKS + 1);
        let st = leader_with(vec![up.clone(), gone]);
        assert_eq!(compaction_index(50_000, threshold, &st), 49_990);
        // A follower compacts to what it applied.
        let mut st = leader_with(vec![up.clone(), up]);
        st.role = Role::Follower;
        assert_eq!(compaction_index(50_000, threshold, &st), 50_000);
    }
}
