//! [`Raft`]: the protocol itself — roles, terms, elections, replication, commitment,
//! membership, transfer, snapshots and ReadIndex — as a pure state machine over messages.
//!
//! The structure follows etcd-io/raft's `raft.go` (one `step` entry point that first settles
//! the term, then dispatches on role) because that shape makes the term rules of Figure 2 hard
//! to bypass. Outgoing messages are queued in `msgs`; broadcasts of new entries are *deferred*
//! to the next `ready()` (`bcast_pending`) so that every proposal made between two Readies
//! travels in one Append per follower — that is the batching.
//!
//! The one `impl Raft` is spread over files by layer, and a file calls only into files below
//! it, so the layers read (and can be reviewed) bottom-up:
//!
//! 1. this file: the state, startup, role transitions and the primitives every role uses
//!    (queueing a message, committing, tracking the configuration);
//! 2. [`election`]: campaigns (pre-vote and vote), vote requests and the tally;
//!    [`leader`]: replication, the commit rule, ReadIndex rounds — what only a leader does;
//! 3. [`follower`]: taking Append and InstallSnapshot (it may start a transfer's election);
//! 4. [`step`]: the message and tick entry points; [`requests`]: the caller's requests.
//!
//! The pieces with state of their own are separate modules the protocol uses: the log
//! ([`crate::log`]), per-member progress ([`crate::progress`]), pending reads
//! ([`crate::read_only`]) and the configuration history ([`crate::confchange`]).

mod election;
mod follower;
mod leader;
mod requests;
mod step;

use std::collections::BTreeMap;

use crate::confchange::ConfHistory;
use crate::config::{Config, Error};
use crate::log::RaftLog;
use crate::progress::{Progress, ProgressState};
use crate::quorum;
use crate::read_only::ReadOnly;
use crate::rng::Rng;
use crate::storage::Storage;
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
        // A member that has acknowledged nothing is not keeping pace with anything, even
        // when the mark is 0 (a leader elected on an empty log).
        p.matched.saturating_add(self.promotable_lag) >= self.log.last()
            || (p.matched > 0 && p.matched >= self.catch_up_mark)
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

    pub(crate) fn commit_to(&mut self, index: u64) {
        if self.log.commit_to(index) {
            self.confs.prune(self.log.committed());
        }
    }

    fn committed_own_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed()) == self.term
    }
}
