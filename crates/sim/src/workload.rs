//! What clients and operators do to the cluster during the safety phase: writes with unique
//! ids, ReadIndex reads, membership changes that grow and shrink the cluster between 3 and 7
//! voters (learners first, promotion when the core allows, removals including the leader's),
//! leadership transfers, log compaction, and the occasional impatient `campaign`.
//!
//! Requests go to the current leader most of the time and to a random node otherwise, so the
//! "not leader" refusals are exercised too. Every refusal is an expected outcome; only a
//! storage error is a violation.

use flotilla_raft::{
    ConfChange, ConfChangeKind, LogStore, NodeId, ProposeError, Storage, StorageError,
};

use super::invariants::Violation;
use super::{Liveness, ReadStart, Sim, violation, write_payload};

/// Voters are kept within these bounds by the workload.
pub const MIN_VOTERS: usize = 3;
/// See [`MIN_VOTERS`].
pub const MAX_VOTERS: usize = 7;
/// Learners at most at once.
pub const MAX_LEARNERS: usize = 2;

impl Sim {
    /// A node to send a request to: usually the leader.
    fn target(&mut self) -> Option<NodeId> {
        let leader = self.leader();
        if leader.is_some() && self.work_rng.chance(850_000) {
            return leader;
        }
        let up = self.up_nodes();
        self.work_rng.pick(&up)
    }

    pub(super) fn client_step(&mut self) -> Result<(), Violation> {
        let p = self.profile.clone();
        if self.work_rng.chance(p.propose_ppm) {
            let batch = self.work_rng.between(1, p.propose_batch);
            if let Some(target) = self.target() {
                for _ in 0..batch {
                    let id = self.next_client_id;
                    self.next_client_id += 1;
                    let padding = self.work_rng.below(48) as usize;
                    expected(self.propose(target, write_payload(id, padding)))?;
                }
            }
        }
        if self.work_rng.chance(p.read_ppm)
            && let Some(target) = self.target()
        {
            let read = self.next_read_id;
            self.next_read_id += 1;
            let acked_at_start = self.checker.max_acked_index();
            let result = match self.raw_mut(target) {
                Some(raw) => raw.read_index(read.to_le_bytes().to_vec()),
                None => Err(ProposeError::NotLeader { leader: 0 }),
            };
            if result.is_ok() {
                self.reads.insert(
                    read,
                    ReadStart {
                        node: target,
                        acked_at_start,
                    },
                );
            }
            expected(result)?;
            self.settle(target)?;
        }
        if self.work_rng.chance(p.conf_change_ppm) {
            self.change_membership()?;
        }
        if self.work_rng.chance(p.transfer_ppm)
            && let Some(leader) = self.leader()
            && let Some(st) = self.status(leader)
        {
            let voters: Vec<NodeId> = st.conf_state.voters.iter().copied().collect();
            if let Some(to) = self.work_rng.pick(&voters) {
                self.trace_line(|| format!("transfer leadership {leader} -> {to}"));
                if let Some(raw) = self.raw_mut(leader) {
                    expected(raw.transfer_leader(to))?;
                }
                self.settle(leader)?;
            }
        }
        if self.work_rng.chance(p.snapshot_ppm) {
            self.compact(p.snapshot_min_entries)?;
        }
        if self.work_rng.chance(p.campaign_ppm) {
            let up = self.up_nodes();
            if let Some(id) = self.work_rng.pick(&up) {
                self.trace_line(|| format!("node {id} told to campaign"));
                self.campaign(id)?;
            }
        }
        Ok(())
    }

    /// One membership change at the leader, chosen among those that keep 3..=7 voters.
    fn change_membership(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let Some(st) = self.status(leader) else {
            return Ok(());
        };
        let voters: Vec<NodeId> = st.conf_state.voters.iter().copied().collect();
        let learners: Vec<NodeId> = st.conf_state.learners.iter().copied().collect();
        let mut options: Vec<ConfChangeKind> = Vec::new();
        if learners.len() < MAX_LEARNERS && voters.len() + learners.len() < MAX_VOTERS + 1 {
            options.push(ConfChangeKind::AddLearner);
        }
        if !learners.is_empty() && voters.len() < MAX_VOTERS {
            options.push(ConfChangeKind::PromoteLearner);
        }
        // A voter added directly (etcd's `member add` without `--learner`) starts empty and
        // counts towards the quorum at once.
        if voters.len() < MAX_VOTERS && voters.len() + learners.len() < MAX_VOTERS + 1 {
            options.push(ConfChangeKind::AddNode);
        }
        if voters.len() > MIN_VOTERS || !learners.is_empty() {
            options.push(ConfChangeKind::RemoveNode);
        }
        let Some(kind) = self.work_rng.pick(&options) else {
            return Ok(());
        };
        let node_id = match kind {
            ConfChangeKind::AddLearner | ConfChangeKind::AddNode => self.next_node_id,
            ConfChangeKind::PromoteLearner => self.work_rng.pick(&learners).unwrap_or(0),
            ConfChangeKind::RemoveNode => {
                let pool = if voters.len() > MIN_VOTERS
                    && (learners.is_empty() || self.work_rng.chance(600_000))
                {
                    &voters
                } else {
                    &learners
                };
                self.work_rng.pick(pool).unwrap_or(0)
            }
        };
        let cc = ConfChange {
            kind,
            node_id,
            context: Vec::new(),
        };
        self.trace_line(|| format!("leader {leader} proposes {kind:?} {node_id}"));
        let result = self.propose_conf_change(leader, cc);
        if result.is_ok() {
            self.stats.conf_changes += 1;
            if matches!(kind, ConfChangeKind::AddLearner | ConfChangeKind::AddNode) {
                self.start_joiner(node_id)?;
            }
        }
        expected(result)
    }

    /// A random running node compacts its log at its applied index.
    fn compact(&mut self, min_entries: u64) -> Result<(), Violation> {
        let up = self.up_nodes();
        let Some(id) = self.work_rng.pick(&up) else {
            return Ok(());
        };
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if node.state != Liveness::Up {
            return Ok(());
        }
        let Some(raw) = node.raw.as_mut() else {
            return Ok(());
        };
        let first = raw.store().first_index().unwrap_or(1);
        let applied = node.sm.applied;
        if applied < first + min_entries {
            return Ok(());
        }
        let result =
            raw.store_mut()
                .create_snapshot(applied, node.sm.conf.clone(), node.sm.image());
        match result {
            Ok(()) => {
                self.stats.snapshots_taken += 1;
                self.trace_line(|| format!("node {id} compacts at {applied}"));
                Ok(())
            }
            Err(StorageError::SnapshotOutOfDate(_)) => Ok(()),
            Err(e) => Err(violation(
                "compaction at the applied index works",
                format!("node {id} at {applied}: {e}"),
            )),
        }
    }
}

/// Refusals are normal answers; a storage failure is not.
fn expected<T>(result: Result<T, ProposeError>) -> Result<(), Violation> {
    match result {
        Err(ProposeError::Storage(e)) => Err(violation(
            "requests fail only with typed refusals",
            format!("storage error: {e}"),
        )),
        _ => Ok(()),
    }
}
