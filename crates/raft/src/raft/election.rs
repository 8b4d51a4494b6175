//! Elections: starting a campaign (with a pre-vote round first when enabled, Raft thesis
//! §9.6), answering vote requests (§5.2, §5.4.1) and counting the answers.

use super::Raft;
use crate::quorum::{self, VoteResult};
use crate::storage::Storage;
use crate::types::*;

impl<S: Storage> Raft<S> {
    /// Starts an election (or a pre-vote round) if this node may.
    pub(crate) fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.pre_vote && !transfer {
            self.campaign_pre_vote();
        } else {
            self.campaign_vote(transfer);
        }
    }

    fn campaign_pre_vote(&mut self) {
        self.become_pre_candidate();
        self.votes.insert(self.id, true);
        if quorum::vote_result(&self.confs.conf().voters, &self.votes) == VoteResult::Won {
            self.campaign_vote(false);
            return;
        }
        let (li, lt) = (self.log.last(), self.log.last_term());
        let next_term = self.term.saturating_add(1);
        for id in self.confs.conf().voters.clone() {
            if id != self.id {
                self.send_with_term(
                    id,
                    next_term,
                    MessageBody::PreVote {
                        last_index: li,
                        last_term: lt,
                    },
                );
            }
        }
    }

    fn campaign_vote(&mut self, transfer: bool) {
        self.become_candidate();
        self.votes.insert(self.id, true);
        if quorum::vote_result(&self.confs.conf().voters, &self.votes) == VoteResult::Won {
            self.become_leader();
            return;
        }
        let (li, lt) = (self.log.last(), self.log.last_term());
        for id in self.confs.conf().voters.clone() {
            if id != self.id {
                self.send(
                    id,
                    MessageBody::Vote {
                        last_index: li,
                        last_term: lt,
                        transfer,
                    },
                );
            }
        }
    }

    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: u64,
        pre: bool,
        li: u64,
        lt: u64,
    ) {
        let can_vote = self.vote == from
            || (self.vote == NO_NODE && self.leader == NO_NODE)
            || (pre && term > self.term);
        if can_vote && self.log.is_up_to_date(li, lt) {
            if pre {
                self.send_with_term(from, term, MessageBody::PreVoteResponse { reject: false });
            } else {
                // Pitfall 11: granting a vote resets the election timer.
                self.election_elapsed = 0;
                self.vote = from;
                self.send(from, MessageBody::VoteResponse { reject: false });
            }
        } else if pre {
            self.send(from, MessageBody::PreVoteResponse { reject: true });
        } else {
            self.send(from, MessageBody::VoteResponse { reject: true });
        }
    }

    pub(super) fn tally(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
        match quorum::vote_result(&self.confs.conf().voters, &self.votes) {
            VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.campaign_vote(false);
                } else {
                    self.become_leader();
                }
            }
            VoteResult::Lost => self.become_follower(self.term, NO_NODE),
            VoteResult::Pending => {}
        }
    }
}
