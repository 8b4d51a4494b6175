//! [`Raft`]: the protocol itself — roles, terms, elections, replication, commitment,
//! membership, transfer, snapshots and ReadIndex — as a pure state machine over messages.
//!
//! The structure follows etcd-io/raft's `raft.go` (one `step` entry point that first settles
//! the term, then dispatches on role) because that shape makes the term rules of Figure 2 hard
//! to bypass. Outgoing messages are queued in `msgs`; broadcasts of new entries are *deferred*
//! to the next `ready()` (`bcast_pending`) so that every proposal made between two Readies
//! travels in one Append per follower — that is the batching.

use std::collections::BTreeMap;

use crate::confchange::ConfHistory;
use crate::config::{Config, Error};
use crate::errors::ProposeError;
use crate::log::RaftLog;
use crate::progress::{Progress, ProgressState};
use crate::quorum::{self, VoteResult};
use crate::read_only::ReadOnly;
use crate::rng::Rng;
use crate::sanity::is_sane;
use crate::storage::{Storage, StorageError};
use crate::types::*;

pub(crate) struct Raft<S: Storage> {
    pub(crate) id: NodeId,
    pub(crate) term: u64,
    pub(crate) vote: NodeId,
    pub(crate) log: RaftLog<S>,
    pub(crate) role: Role,
    pub(crate) leader: NodeId,
    /// The configuration in effect and those a truncation could bring back (pitfall 13).
    pub(crate) confs: ConfHistory,
    pub(crate) prs: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    pub(crate) msgs: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_timeout: u32,
    election_tick: u32,
    heartbeat_tick: u32,
    max_size: u64,
    max_inflight: usize,
    pre_vote: bool,
    check_quorum: bool,
    promotable_lag: u64,
    /// Leader only: its last index as of one to two election timeouts ago. A learner whose
    /// match index has reached it is caught up *relative to the leader's progress*: it is at
    /// most about two election timeouts behind, however fast the leader appends — a fixed
    /// entry bound alone never passes under sustained load.
    catch_up_mark: u64,
    /// The mark to be: the leader's last index at the latest election-timeout boundary.
    catch_up_next: u64,
    rng: Rng,
    pub(crate) lead_transferee: NodeId,
    read_only: ReadOnly,
    /// New entries (or a new commit index) wait to be broadcast at the next `ready()`.
    pub(crate) bcast_pending: bool,
    commit_bcast: bool,
}

fn is_log_msg(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
    )
}

impl<S: Storage> Raft<S> {
    pub(crate) fn new(config: &Config, store: S) -> Result<Self, Error> {
        config.validate()?;
        let (hs, base_conf) = store.initial_state()?;
        let snap_index = store.first_index()? - 1;
        let mut log = RaftLog::new(store)?;
        let last = log.last_index()?;
        if hs.commit > last {
            return Err(Error::Config(format!(
                "stored commit index {} is beyond the last log index {last}",
                hs.commit
            )));
        }
        let committed = hs.commit.max(snap_index);
        let applied = config.applied.max(snap_index);
        if applied > last {
            return Err(Error::Config(format!(
                "applied index {applied} is beyond the last log index {last}"
            )));
        }
        log.start_at(committed, applied);
        let mut r = Raft {
            id: config.id,
            term: hs.term,
            vote: hs.vote,
            log,
            role: Role::Follower,
            leader: NO_NODE,
            confs: ConfHistory::new(snap_index, base_conf),
            prs: BTreeMap::new(),
            votes: BTreeMap::new(),
            msgs: Vec::new(),
            read_states: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: config.election_tick,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            max_size: config.max_size_per_msg,
            max_inflight: config.max_inflight_msgs,
            pre_vote: config.pre_vote,
            check_quorum: config.check_quorum,
            promotable_lag: config.promotable_lag,
            catch_up_mark: u64::MAX,
            catch_up_next: 0,
            rng: Rng::new(config.seed),
            lead_transferee: NO_NODE,
            read_only: ReadOnly::default(),
            bcast_pending: false,
            commit_bcast: false,
        };
        // A configuration takes effect when appended: replay the changes after the snapshot.
        let mut lo = snap_index + 1;
        while lo <= last {
            let chunk = r.log.slice(lo, last + 1, 4 << 20)?;
            let Some(end) = chunk.last().map(|e| e.index) else {
                break;
            };
            r.track_conf_entries(&chunk);
            lo = end + 1;
        }
        r.confs.prune(r.log.committed());
        r.become_follower(hs.term, NO_NODE);
        Ok(r)
    }

    // ---- helpers -------------------------------------------------------------------------

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: u64, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    fn promotable(&self) -> bool {
        self.confs.conf().voters.contains(&self.id)
    }

    fn reset_randomized_timeout(&mut self) {
        let e = u64::from(self.election_tick);
        self.randomized_timeout = self.rng.range(e, 2 * e) as u32;
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    // ---- membership ----------------------------------------------------------------------

    /// Records the configuration changes among freshly appended `entries`.
    fn track_conf_entries(&mut self, entries: &[Entry]) {
        if self.confs.track(entries) {
            self.on_conf_changed();
        }
    }

    /// The entries from `first` on are being replaced: configurations they carried revert.
    fn revert_conf_from(&mut self, first: u64) {
        if self.confs.revert_from(first) {
            self.on_conf_changed();
        }
    }

    fn on_conf_changed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last();
        let conf = self.confs.conf();
        let members: Vec<(NodeId, bool)> = conf
            .voters
            .iter()
            .map(|id| (*id, false))
            .chain(conf.learners.iter().map(|id| (*id, true)))
            .collect();
        let me = self.id;
        self.prs.retain(|id, _| *id == me || conf.contains(*id));
        for (id, learner) in members {
            let max_inflight = self.max_inflight;
            let pr = self.prs.entry(id).or_insert_with(|| {
                let mut p = Progress::new(last, max_inflight, learner);
                p.recent_active = true;
                p
            });
            pr.is_learner = learner;
        }
        if self.lead_transferee != NO_NODE
            && !self.confs.conf().voters.contains(&self.lead_transferee)
        {
            self.lead_transferee = NO_NODE;
        }
    }

    // ---- role transitions ----------------------------------------------------------------

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader = NO_NODE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_timeout();
        self.votes.clear();
        self.lead_transferee = NO_NODE;
        self.read_only.reset();
        self.bcast_pending = false;
        self.commit_bcast = false;
    }

    pub(crate) fn become_follower(&mut self, term: u64, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        self.prs.clear();
    }

    fn become_pre_candidate(&mut self) {
        // Pitfall 10: no term change, no vote change.
        self.votes.clear();
        self.leader = NO_NODE;
        self.election_elapsed = 0;
        self.reset_randomized_timeout();
        self.role = Role::PreCandidate;
        self.prs.clear();
    }

    fn become_candidate(&mut self) {
        self.reset(self.term.saturating_add(1));
        self.vote = self.id;
        self.role = Role::Candidate;
        self.prs.clear();
    }

    fn become_leader(&mut self) {
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        let last = self.log.last();
        // No mark until a full election timeout has passed: until then only the fixed bound
        // says whether a learner is caught up.
        self.catch_up_mark = u64::MAX;
        self.catch_up_next = last;
        self.prs.clear();
        for id in self.confs.conf().members().collect::<Vec<_>>() {
            let mut p = Progress::new(
                last + 1,
                self.max_inflight,
                self.confs.conf().learners.contains(&id),
            );
            p.recent_active = true;
            self.prs.insert(id, p);
        }
        let persisted = self.log.persisted();
        let me = self
            .prs
            .entry(self.id)
            .or_insert_with(|| Progress::new(last + 1, 1, false));
        me.matched = persisted;
        me.become_replicate();
        // The no-op of the new term (pitfall 4): it lets earlier entries commit.
        let noop = Entry {
            term: self.term,
            index: last + 1,
            kind: EntryKind::Normal,
            data: Vec::new(),
        };
        self.log.append(vec![noop]);
        self.bcast_pending = true;
    }

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

    // ---- time ----------------------------------------------------------------------------

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

    /// Leader only: whether member `id` may become a voter without slowing commits — no
    /// snapshot in flight to it, and its match index within `promotable_lag` entries of the
    /// leader's last index or past the leader's catch-up mark (where the leader's log ended
    /// one to two election timeouts ago).
    pub(crate) fn caught_up(&self, id: NodeId) -> bool {
        let Some(p) = self.prs.get(&id) else {
            return false;
        };
        if p.state == ProgressState::Snapshot {
            return false;
        }
        p.matched.saturating_add(self.promotable_lag) >= self.log.last()
            || p.matched >= self.catch_up_mark
    }

    fn quorum_active(&self) -> bool {
        let active = self
            .confs
            .conf()
            .voters
            .iter()
            .filter(|id| **id == self.id || self.prs.get(id).is_some_and(|p| p.recent_active))
            .count();
        active >= quorum::majority(self.confs.conf().voters.len())
    }

    // ---- sending -------------------------------------------------------------------------

    fn bcast_heartbeat(&mut self, ctx: Option<Vec<u8>>) {
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
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> Result<bool, Error> {
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

    // ---- the message entry point -----------------------------------------------------------

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

    fn handle_vote_request(&mut self, from: NodeId, term: u64, pre: bool, li: u64, lt: u64) {
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

    fn step_leader(&mut self, from: NodeId, body: MessageBody) -> Result<(), Error> {
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

    fn tally(&mut self, from: NodeId, granted: bool) {
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

    fn step_follower(&mut self, from: NodeId, body: MessageBody) {
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

    pub(crate) fn commit_to(&mut self, index: u64) {
        if self.log.commit_to(index) {
            self.confs.prune(self.log.committed());
        }
    }

    // ---- leader: responses ---------------------------------------------------------------

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

    fn committed_own_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed()) == self.term
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

    // ---- reads ---------------------------------------------------------------------------

    fn leader_read(&mut self, ctx: Vec<u8>, from: NodeId) {
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

    // ---- requests from the caller ----------------------------------------------------------

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
