//! What only a leader does: send each member the entries (or the snapshot) it needs, count
//! acknowledgements into the commit index (§5.3, §5.4.2), and run the heartbeat rounds that
//! confirm ReadIndex requests (§6.4).

use super::Raft;
use crate::config::Error;
use crate::progress::ProgressState;
use crate::quorum;
use crate::storage::{Storage, StorageError};
use crate::types::*;

impl<S: Storage> Raft<S> {
    pub(super) fn bcast_heartbeat(&mut self, ctx: Option<Vec<u8>>) {
        let targets: Vec<(NodeId, u64)> = self
            .prs
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, p)| (*id, p.matched.min(self.log.committed())))
            .collect();
        for (id, commit) in targets {
            self.send(
                id,
                MessageBody::Heartbeat {
                    commit,
                    ctx: ctx.clone(),
                },
            );
        }
    }

    /// Sends the deferred broadcast, if any.
    pub(crate) fn flush_bcast(&mut self) -> Result<(), Error> {
        if self.role == Role::Leader && self.bcast_pending {
            let send_empty = self.commit_bcast;
            self.bcast_pending = false;
            self.commit_bcast = false;
            let ids: Vec<NodeId> = self
                .prs
                .keys()
                .copied()
                .filter(|id| *id != self.id)
                .collect();
            for id in ids {
                // Fill the pipeline up to the in-flight limit.
                let mut send_empty = send_empty;
                while self.maybe_send_append(id, send_empty)? {
                    send_empty = false;
                }
            }
        }
        Ok(())
    }

    /// Sends `to` the entries it needs (or a snapshot). Returns whether a message went out.
    pub(super) fn maybe_send_append(
        &mut self,
        to: NodeId,
        send_if_empty: bool,
    ) -> Result<bool, Error> {
        let Some(pr) = self.prs.get(&to) else {
            return Ok(false);
        };
        if pr.is_paused() {
            return Ok(false);
        }
        let next = pr.next;
        let prev_index = next - 1;
        // A node that joined with an empty configuration learns the bootstrap configuration
        // from the index-0 snapshot, since it is not in the log.
        if prev_index == 0 && pr.needs_base_conf {
            return self.send_snapshot(to);
        }
        let last = self.log.last_index()?;
        let prev_term = self.log.term(prev_index);
        let entries = if next <= last {
            self.log.slice(next, last + 1, self.max_size)
        } else {
            Ok(Vec::new())
        };
        match (prev_term, entries) {
            (Ok(prev_term), Ok(entries)) => {
                if entries.is_empty() && !send_if_empty {
                    return Ok(false);
                }
                let last_sent = entries.last().map(|e| e.index);
                if let Some(pr) = self.prs.get_mut(&to) {
                    pr.sent_entries(last_sent);
                }
                let commit = self.log.committed();
                self.send(
                    to,
                    MessageBody::Append {
                        prev_index,
                        prev_term,
                        entries,
                        commit,
                    },
                );
                Ok(true)
            }
            (Err(StorageError::Compacted(_)), _) | (_, Err(StorageError::Compacted(_))) => {
                self.send_snapshot(to)
            }
            (Err(StorageError::Unavailable(_)), _) | (_, Err(StorageError::Unavailable(_))) => {
                Ok(false)
            }
            (Err(e), _) | (_, Err(e)) => Err(e.into()),
        }
    }

    fn send_snapshot(&mut self, to: NodeId) -> Result<bool, Error> {
        let snapshot = self.log.snapshot()?;
        let Some(pr) = self.prs.get_mut(&to) else {
            return Ok(false);
        };
        pr.needs_base_conf = false;
        if snapshot.is_empty() && snapshot.meta.conf_state == ConfState::default() {
            // Nothing to teach (this leader has no bootstrap configuration either).
            return Ok(false);
        }
        pr.become_snapshot(snapshot.meta.index);
        pr.ticks_since_contact = 0;
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        Ok(true)
    }

    pub(super) fn step_leader(&mut self, from: NodeId, body: MessageBody) -> Result<(), Error> {
        match body {
            MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            } => self.handle_append_response(from, reject, index, hint_index, hint_term)?,
            MessageBody::HeartbeatResponse { ctx } => self.handle_heartbeat_response(from, ctx)?,
            MessageBody::ReadIndex { ctx } if self.prs.contains_key(&from) => {
                self.leader_read(ctx, from);
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
    ) -> Result<(), Error> {
        let last = self.log.last_index()?;
        let first = self.log.first_index()?;
        let Some(pr) = self.prs.get_mut(&from) else {
            return Ok(());
        };
        pr.recent_active = true;
        pr.ticks_since_contact = 0;
        if index > last {
            return Ok(());
        }
        if reject && index == 0 {
            // Only a member without a configuration refuses index 0 (see `handle_append`).
            pr.become_probe();
            pr.needs_base_conf = true;
            self.maybe_send_append(from, true)?;
            return Ok(());
        }
        if reject {
            let next_probe = if hint_term > 0 {
                self.log.find_conflict_by_term(hint_index, hint_term).0
            } else {
                hint_index
            };
            let Some(pr) = self.prs.get_mut(&from) else {
                return Ok(());
            };
            if pr.maybe_decr_to(index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.maybe_send_append(from, true)?;
            }
            return Ok(());
        }
        let old_paused = pr.is_paused();
        if pr.state == ProgressState::Snapshot && index >= pr.pending_snapshot {
            // The snapshot landed (or was not needed).
            pr.maybe_update(index);
            pr.become_probe();
            pr.become_replicate();
        } else if pr.maybe_update(index) {
            match pr.state {
                ProgressState::Probe => pr.become_replicate(),
                ProgressState::Replicate => pr.inflights.free_to(index),
                ProgressState::Snapshot => {
                    if pr.matched + 1 >= first {
                        pr.become_probe();
                        pr.become_replicate();
                    }
                }
            }
        } else {
            // Stale or duplicated (pitfall 7).
            return Ok(());
        }
        if self.maybe_commit() {
            // The deferred broadcast carries the new commit index.
        } else if old_paused {
            self.maybe_send_append(from, true)?;
        }
        while self.maybe_send_append(from, false)? {}
        if from == self.lead_transferee && self.prs.get(&from).is_some_and(|p| p.matched == last) {
            self.send(from, MessageBody::TimeoutNow);
        }
        Ok(())
    }

    fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        ctx: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        let last = self.log.last_index()?;
        let Some(pr) = self.prs.get_mut(&from) else {
            return Ok(());
        };
        pr.recent_active = true;
        pr.ticks_since_contact = 0;
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first();
        }
        if pr.matched < last {
            self.maybe_send_append(from, true)?;
        }
        if let Some(ctx) = ctx {
            self.read_ack(from, &ctx);
        }
        Ok(())
    }

    /// Advances the commit index to what a majority of voters has persisted, counting only
    /// entries of this term (§5.4.2, pitfall 4). Returns whether it advanced.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        if self.confs.conf().voters.is_empty() {
            return false;
        }
        let me = self.id;
        let persisted = self.log.persisted();
        let prs = &self.prs;
        let mci = quorum::committed_index(&self.confs.conf().voters, |id| {
            if id == me {
                persisted
            } else {
                prs.get(&id).map_or(0, |p| p.matched)
            }
        });
        if mci <= self.log.committed() || self.log.term_or_zero(mci) != self.term {
            return false;
        }
        self.commit_to(mci);
        self.bcast_pending = true;
        self.commit_bcast = true;
        self.on_leader_commit();
        true
    }

    fn on_leader_commit(&mut self) {
        if self.read_only.has_deferred() && self.committed_own_term() {
            for (ctx, from) in self.read_only.take_deferred() {
                self.leader_read(ctx, from);
            }
        }
        // Pitfall 15: a removed leader steps down once its removal is committed.
        if !self.confs.conf().voters.contains(&self.id)
            && self.confs.pending_index() <= self.log.committed()
        {
            let _ = self.flush_bcast();
            self.become_follower(self.term, NO_NODE);
        }
    }

    /// The caller made everything up to `index` durable.
    pub(crate) fn on_persisted(&mut self) {
        if self.role == Role::Leader {
            let persisted = self.log.persisted();
            if let Some(me) = self.prs.get_mut(&self.id) {
                me.maybe_update(persisted);
            }
            self.maybe_commit();
        }
    }

    pub(super) fn leader_read(&mut self, ctx: Vec<u8>, from: NodeId) {
        if !self.committed_own_term() {
            self.read_only.defer(ctx, from);
            return;
        }
        let index = self.log.committed();
        if self.confs.conf().voters.len() == 1 && self.confs.conf().voters.contains(&self.id) {
            self.answer_read(from, ctx, index);
            return;
        }
        self.read_only.add(ctx.clone(), index, from, self.id);
        self.bcast_heartbeat(Some(ctx));
    }

    fn answer_read(&mut self, from: NodeId, ctx: Vec<u8>, index: u64) {
        if from == self.id {
            self.read_states.push(ReadState { index, ctx });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { ctx, index });
        }
    }

    fn read_ack(&mut self, from: NodeId, ctx: &[u8]) {
        for req in self
            .read_only
            .recv_ack(from, ctx, &self.confs.conf().voters)
        {
            self.answer_read(req.from, req.ctx, req.index);
        }
    }
}
