//! A follower taking the leader's log: the Append consistency check and truncation (§5.3),
//! and snapshots (§7). Both answer with an `AppendResponse`, whose hint lets the leader skip
//! back a whole term at a time on a mismatch.

use super::Raft;
use crate::storage::Storage;
use crate::types::*;

impl<S: Storage> Raft<S> {
    pub(super) fn step_follower(&mut self, from: NodeId, body: MessageBody) {
        match body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.election_elapsed = 0;
                self.leader = from;
                self.handle_append(from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat { commit, ctx } => {
                self.election_elapsed = 0;
                self.leader = from;
                let c = commit.min(self.log.last());
                self.commit_to(c);
                self.send(from, MessageBody::HeartbeatResponse { ctx });
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.election_elapsed = 0;
                self.leader = from;
                self.handle_snapshot(from, snapshot);
            }
            MessageBody::TimeoutNow => {
                // The transfer's election: no pre-vote, and flagged so stickiness yields.
                self.hup(true);
            }
            _ => {}
        }
    }

    fn append_response(&mut self, to: NodeId, index: u64) {
        self.send(
            to,
            MessageBody::AppendResponse {
                reject: false,
                index,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        mut entries: Vec<Entry>,
        commit: u64,
    ) {
        // Malformed input is dropped: indexes must follow prev_index one by one.
        let consecutive = entries
            .iter()
            .enumerate()
            .all(|(i, e)| prev_index.checked_add(i as u64 + 1) == Some(e.index));
        if !consecutive {
            return;
        }
        if prev_index < self.log.committed() {
            let c = self.log.committed();
            self.append_response(from, c);
            return;
        }
        if prev_index == 0 && self.lacks_base_conf() {
            // A joining node must learn the bootstrap configuration (not in the log) before
            // taking entries, or it would compute majorities over the wrong voter set.
            self.send(
                from,
                MessageBody::AppendResponse {
                    reject: true,
                    index: 0,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
            return;
        }
        if self.log.match_term(prev_index, prev_term) {
            let last_new = prev_index + entries.len() as u64;
            if let Some(ci) = self.log.find_conflict(&entries) {
                let first = entries[ci].index;
                if first <= self.log.committed() {
                    // Would rewrite committed entries: impossible from a real leader.
                    return;
                }
                let tail = entries.split_off(ci);
                if first <= self.log.last() {
                    self.revert_conf_from(first);
                }
                self.track_conf_entries(&tail);
                self.log.append(tail);
            }
            // Pitfall 6: never commit beyond what this message proved matches.
            self.commit_to(commit.min(last_new));
            self.append_response(from, last_new);
        } else {
            let hint = prev_index.min(self.log.last());
            let (hint_index, hint_term) = self.log.find_conflict_by_term(hint, prev_term);
            self.send(
                from,
                MessageBody::AppendResponse {
                    reject: true,
                    index: prev_index,
                    hint_index,
                    hint_term,
                },
            );
        }
    }

    /// Whether this node joined with an empty configuration and has not learned the
    /// bootstrap one yet.
    fn lacks_base_conf(&self) -> bool {
        self.log.last() == 0 && self.log.committed() == 0 && self.confs.base_is_empty()
    }

    fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let idx = snapshot.meta.index;
        if idx == u64::MAX {
            return; // malformed: no log position follows it
        }
        if idx == 0 {
            // The bootstrap configuration for a node that joined with nothing.
            if self.lacks_base_conf() && snapshot.meta.conf_state != ConfState::default() {
                let cs = snapshot.meta.conf_state.clone();
                self.log.restore(snapshot);
                self.confs.restore(0, cs);
            }
            self.append_response(from, 0);
            return;
        }
        if idx <= self.log.committed() {
            // Pitfall 21: never go back behind the commit index.
            let c = self.log.committed();
            self.append_response(from, c);
            return;
        }
        if self.log.match_term(idx, snapshot.meta.term) {
            // Our log already holds the snapshot's history: keep the suffix, just commit.
            self.commit_to(idx);
            self.append_response(from, idx);
            return;
        }
        let cs = snapshot.meta.conf_state.clone();
        self.log.restore(snapshot);
        self.confs.restore(idx, cs);
        self.append_response(from, idx);
    }
}
