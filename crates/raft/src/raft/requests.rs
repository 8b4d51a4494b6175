//! The caller's requests (propose, membership change, ReadIndex, leadership transfer) and its
//! reports about delivery (unreachable member, snapshot sent or failed).

use super::Raft;
use crate::config::Error;
use crate::errors::ProposeError;
use crate::progress::ProgressState;
use crate::storage::Storage;
use crate::types::*;

impl<S: Storage> Raft<S> {
    fn check_leader(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee != NO_NODE {
            return Err(ProposeError::TransferInProgress {
                target: self.lead_transferee,
            });
        }
        Ok(())
    }

    fn append_own(&mut self, kind: EntryKind, data: Vec<u8>) -> (u64, u64) {
        let index = self.log.last() + 1;
        let e = Entry {
            term: self.term,
            index,
            kind,
            data,
        };
        if kind == EntryKind::ConfChange {
            self.track_conf_entries(std::slice::from_ref(&e));
        }
        self.log.append(vec![e]);
        self.bcast_pending = true;
        (self.term, index)
    }

    pub(crate) fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), ProposeError> {
        self.check_leader()?;
        Ok(self.append_own(EntryKind::Normal, data))
    }

    pub(crate) fn propose_conf_change(
        &mut self,
        cc: ConfChange,
    ) -> Result<(u64, u64), ProposeError> {
        self.check_leader()?;
        self.confs
            .check(&cc, self.log.committed(), self.committed_own_term(), |id| {
                if self.caught_up(id) {
                    Ok(())
                } else {
                    Err(ProposeError::LearnerNotCaughtUp {
                        id,
                        matched: self.prs.get(&id).map_or(0, |p| p.matched),
                        last_index: self.log.last(),
                    })
                }
            })?;
        let r = self.append_own(EntryKind::ConfChange, cc.encode());
        // Removing a voter can shrink the majority needed.
        self.maybe_commit();
        Ok(r)
    }

    pub(crate) fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => {
                self.leader_read(ctx, self.id);
                Ok(())
            }
            _ if self.leader != NO_NODE => {
                let leader = self.leader;
                self.send(leader, MessageBody::ReadIndex { ctx });
                Ok(())
            }
            _ => Err(ProposeError::NotLeader { leader: NO_NODE }),
        }
    }

    pub(crate) fn transfer_leader(&mut self, target: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.id {
            self.lead_transferee = NO_NODE;
            return Ok(());
        }
        if !self.confs.conf().voters.contains(&target) {
            return Err(ProposeError::InvalidConfChange(format!(
                "transfer target {target} is not a voter"
            )));
        }
        if self.lead_transferee == target {
            return Ok(());
        }
        self.lead_transferee = target;
        self.election_elapsed = 0;
        let last = self.log.last();
        if self.prs.get(&target).is_some_and(|p| p.matched == last) {
            self.send(target, MessageBody::TimeoutNow);
        } else {
            self.maybe_send_append(target, true).map_err(|e| match e {
                Error::Storage(s) => ProposeError::Storage(s),
                Error::Config(c) => ProposeError::InvalidConfChange(c),
            })?;
        }
        Ok(())
    }

    pub(crate) fn report_unreachable(&mut self, id: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.prs.get_mut(&id)
            && pr.state == ProgressState::Replicate
        {
            pr.become_probe();
        }
    }

    pub(crate) fn report_snapshot(&mut self, id: NodeId, ok: bool) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.prs.get_mut(&id)
            && pr.state == ProgressState::Snapshot
        {
            if !ok {
                pr.pending_snapshot = 0;
            }
            pr.become_probe();
            // Wait for a heartbeat response before probing again.
            pr.probe_sent = true;
        }
    }
}
