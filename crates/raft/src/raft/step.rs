//! The entry points for the outside world's two inputs: [`Raft::step`] (a message: settle
//! the term first, then dispatch on role, as Figure 2 orders it) and [`Raft::tick`] (time).

use super::Raft;
use crate::config::Error;
use crate::progress::ProgressState;
use crate::sanity::is_sane;
use crate::storage::Storage;
use crate::types::*;

fn is_log_msg(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
    )
}

impl<S: Storage> Raft<S> {
    pub(crate) fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed = self.election_elapsed.saturating_add(1);
            if self.promotable() && self.election_elapsed >= self.randomized_timeout {
                self.election_elapsed = 0;
                self.hup(false);
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        let me = self.id;
        for (id, pr) in self.prs.iter_mut() {
            if *id != me {
                pr.ticks_since_contact += 1;
                // A snapshot that was never acknowledged nor reported is retried.
                if pr.state == ProgressState::Snapshot
                    && pr.ticks_since_contact >= 2 * u64::from(self.election_tick)
                {
                    pr.become_probe();
                }
            }
        }
        if self.election_elapsed >= self.election_tick {
            self.election_elapsed = 0;
            self.catch_up_mark = std::mem::replace(&mut self.catch_up_next, self.log.last());
            if self.check_quorum {
                if !self.quorum_active() {
                    // Pitfall 12: a leader cut off from a majority steps down.
                    self.become_follower(self.term, NO_NODE);
                    return;
                }
                for (id, pr) in self.prs.iter_mut() {
                    if *id != me {
                        pr.recent_active = false;
                    }
                }
            }
            // Pitfall 20: a transfer that has not finished within an election timeout aborts.
            self.lead_transferee = NO_NODE;
        }
        if self.heartbeat_elapsed >= self.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat(None);
        }
    }

    pub(crate) fn step(&mut self, m: Message) -> Result<(), Error> {
        if m.from == NO_NODE || m.from == self.id || !is_sane(&m) {
            return Ok(());
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::PreVote { .. } | MessageBody::Vote { .. } => {
                    let force = matches!(m.body, MessageBody::Vote { transfer: true, .. });
                    // Pitfall 9: leader stickiness. Like etcd-io/raft it needs check-quorum:
                    // without it a leader never learns it lost its followers, and a node whose
                    // term ran ahead could never depose it (it would ignore every vote).
                    let in_lease = self.check_quorum
                        && self.leader != NO_NODE
                        && self.election_elapsed < self.election_tick;
                    if !force && in_lease {
                        return Ok(());
                    }
                }
                _ => {}
            }
            match &m.body {
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { reject: false } => {}
                b if is_log_msg(b) => self.become_follower(m.term, m.from),
                _ => self.become_follower(m.term, NO_NODE),
            }
        } else if m.term < self.term {
            match &m.body {
                b if is_log_msg(b) && (self.check_quorum || self.pre_vote) => {
                    // Tell a stale leader about the newer term so it steps down.
                    self.send(
                        m.from,
                        MessageBody::AppendResponse {
                            reject: false,
                            index: 0,
                            hint_index: 0,
                            hint_term: 0,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { reject: true });
                }
                _ => {}
            }
            return Ok(());
        }

        match m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(m.from, m.term, true, last_index, last_term),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(m.from, m.term, false, last_index, last_term),
            MessageBody::ReadIndexResponse { ctx, index } => {
                if self.role != Role::Leader && index > 0 {
                    self.read_states.push(ReadState { index, ctx });
                }
            }
            body => match self.role {
                Role::Leader => self.step_leader(m.from, body)?,
                Role::Candidate | Role::PreCandidate => self.step_candidate(m.from, m.term, body),
                Role::Follower => self.step_follower(m.from, body),
            },
        }
        Ok(())
    }

    fn step_candidate(&mut self, from: NodeId, term: u64, body: MessageBody) {
        match body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(term, from);
                self.step_follower(from, body);
            }
            MessageBody::PreVoteResponse { reject } if self.role == Role::PreCandidate => {
                self.tally(from, !reject);
            }
            MessageBody::VoteResponse { reject } if self.role == Role::Candidate => {
                self.tally(from, !reject);
            }
            _ => {}
        }
    }
}
