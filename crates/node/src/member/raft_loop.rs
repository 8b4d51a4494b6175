//! The Raft loop: the one thread that owns the `RawNode` and applies to the state machine.
//!
//! It runs on a dedicated OS thread rather than a tokio task because every Ready ends in an
//! fdatasync, which blocks for a millisecond or more; on a runtime worker that would stall the
//! reactor (and with it every connection). Inputs arrive on one std channel, so whatever came
//! in while the previous Ready was syncing is drained into the next one: group commit without a
//! timer. The order of a Ready follows the contract in `flotilla_raft`'s docs: the leader's
//! `early_messages` (its Appends and heartbeats) leave first, so followers write and sync in
//! parallel with the leader's own sync instead of after it; then persist, ONE sync, send the
//! rest, apply, answer, advance.
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

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use flotilla_raft::{
    ConfChange, ConfChangeKind, Entry, EntryKind, LogStore, NodeId, RawNode, Ready, Role, Storage,
};
use prost::Message as _;
use tokio::sync::{oneshot, watch};

use super::state_machine::StateMachine;
use crate::contract::members::{self, Member, Members};
use crate::contract::{Command, NodeStatus, Outbox, PeerProgress, ProposalReply, ServerError};
use crate::metrics::Metrics;
use crate::storage::{ImageSource, SledLogStore};

/// Static settings of the loop.
pub struct LoopSettings {
    /// Tick length.
    pub tick: Duration,
    /// Applied entries between snapshots.
    pub snapshot_threshold: u64,
    /// The cluster id.
    pub cluster_id: u64,
}

/// What a full snapshot image must describe: the applied index and the configuration and
/// members as of it. The loop updates it after every apply; [`LiveImage`] reads it.
#[derive(Debug)]
struct AppliedView {
    index: u64,
    conf_state: flotilla_raft::ConfState,
    members: Members,
}

/// Builds full snapshot images from the live state machine (see `storage::log_store`).
struct LiveImage {
    sm: Arc<RwLock<StateMachine>>,
    view: Arc<std::sync::Mutex<AppliedView>>,
}

impl std::fmt::Debug for LiveImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveImage").finish_non_exhaustive()
    }
}

impl ImageSource for LiveImage {
    fn image(
        &self,
    ) -> Result<(u64, flotilla_raft::ConfState, Vec<u8>), flotilla_raft::StorageError> {
        let io = |e: String| flotilla_raft::StorageError::Io(e);
        let view = self
            .view
            .lock()
            .map_err(|_| io("applied view poisoned".into()))?;
        let started = Instant::now();
        let state = self
            .sm
            .read()
            .map_err(|_| io("state machine lock poisoned".into()))?
            .snapshot()
            .map_err(io)?;
        tracing::info!(
            index = view.index,
            bytes = state.len(),
            ms = started.elapsed().as_millis() as u64,
            "built a snapshot image for a follower behind the compacted log"
        );
        Ok((
            view.index,
            view.conf_state.clone(),
            members::encode_snapshot(&view.members, &state),
        ))
    }
}

struct Waiter<T> {
    term: u64,
    reply: oneshot::Sender<Result<T, ServerError>>,
}

/// The loop's state.
pub struct RaftLoop {
    node: RawNode<SledLogStore>,
    sm: Arc<RwLock<StateMachine>>,
    members: Members,
    outbox: Arc<dyn Outbox>,
    metrics: Metrics,
    settings: LoopSettings,
    status_tx: watch::Sender<NodeStatus>,
    applied_tx: watch::Sender<u64>,
    proposals: BTreeMap<u64, Waiter<Vec<u8>>>,
    conf_waiters: BTreeMap<u64, Waiter<()>>,
    reads: HashMap<Vec<u8>, oneshot::Sender<Result<u64, ServerError>>>,
    read_seq: u64,
    applied: u64,
    last_snapshot: u64,
    last_leader: NodeId,
    last_role: Role,
    ready_target: Option<u64>,
    last_peers: Vec<(NodeId, String)>,
    last_db_size_check: Instant,
    db_size: i64,
    /// Term and vote as last made durable: only a change of these (or new entries, or a
    /// snapshot) needs a sync.
    durable_term_vote: (u64, NodeId),
    /// Highest log index known durable in the local store (what earlier Readies synced).
    durable_last: u64,
    /// When the status was last published, and whether something a reader must see at once
    /// (leader, term, role, members) changed since.
    last_publish: Instant,
    publish_now: bool,
    /// The applied index, configuration and members, shared with the image source.
    view: Arc<std::sync::Mutex<AppliedView>>,
    /// The configuration as of `applied` (the core's runs ahead: it takes effect on append).
    applied_conf: flotilla_raft::ConfState,
}

/// Under load a Ready completes every few hundred microseconds; building the status (member
/// list, per-peer progress, labelled gauges) each time cost a visible share of the leader's
/// CPU. Routine progress (commit, applied, revision) is published at most this often; changes
/// of leader, term, role or membership at once.
const PUBLISH_EVERY: Duration = Duration::from_millis(10);

impl RaftLoop {
    /// Creates the loop around a started node.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: RawNode<SledLogStore>,
        sm: Arc<RwLock<StateMachine>>,
        members: Members,
        outbox: Arc<dyn Outbox>,
        metrics: Metrics,
        settings: LoopSettings,
        status_tx: watch::Sender<NodeStatus>,
        applied_tx: watch::Sender<u64>,
    ) -> Self {
        let mut node = node;
        let st = node.status();
        let last_snapshot = node.store().snapshot_meta().index;
        let applied_conf = conf_as_of(node.store(), st.applied);
        let view = Arc::new(std::sync::Mutex::new(AppliedView {
            index: st.applied,
            conf_state: applied_conf.clone(),
            members: members.clone(),
        }));
        node.store_mut().set_image_source(Arc::new(LiveImage {
            sm: sm.clone(),
            view: view.clone(),
        }));
        // Whatever the store holds at start is durable (it was read back from disk).
        let durable_term_vote = (st.term, st.vote);
        let durable_last = st.last_index;
        let mut l = RaftLoop {
            applied: st.applied,
            node,
            sm,
            members,
            outbox,
            metrics,
            settings,
            status_tx,
            applied_tx,
            proposals: BTreeMap::new(),
            conf_waiters: BTreeMap::new(),
            reads: HashMap::new(),
            read_seq: 0,
            last_snapshot,
            last_leader: 0,
            last_role: Role::Follower,
            ready_target: None,
            last_peers: Vec::new(),
            last_db_size_check: Instant::now() - Duration::from_secs(60),
            db_size: 0,
            durable_term_vote,
            durable_last,
            last_publish: Instant::now(),
            publish_now: true,
            view,
            applied_conf,
        };
        l.refresh_peers();
        l.publish();
        l
    }

    /// Starts an election at once (a single-voter cluster need not wait for a timeout).
    pub fn campaign(&mut self) {
        if let Err(e) = self.node.campaign() {
            tracing::warn!(error = %e, "campaign failed");
        }
    }

    /// Runs until a shutdown command arrives or every sender is gone.
    pub fn run(mut self, rx: Receiver<Command>) {
        let tick = self.settings.tick;
        let mut next_tick = Instant::now() + tick;
        loop {
            let now = Instant::now();
            let wait = next_tick.saturating_duration_since(now);
            match rx.recv_timeout(wait) {
                Ok(cmd) => {
                    if let Some(done) = self.handle(cmd) {
                        self.stop(done);
                        return;
                    }
                    // Drain what queued up meanwhile into the same Ready (bounded, so ticks
                    // keep their pace under a flood).
                    for _ in 0..4096 {
                        match rx.try_recv() {
                            Ok(cmd) => {
                                if let Some(done) = self.handle(cmd) {
                                    self.stop(done);
                                    return;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let (tx, _rx) = oneshot::channel();
                    self.stop(tx);
                    return;
                }
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick += tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
                self.on_tick();
            }
            if self.node.has_ready()
                && let Err(e) = self.process_ready()
            {
                // A storage failure leaves the node unable to keep its promises: stop rather
                // than answer from state that may not be durable.
                tracing::error!(error = %e, "storage failure, stopping the raft loop");
                self.fail_all(ServerError::Storage(e));
                return;
            }
        }
    }

    fn stop(&mut self, done: oneshot::Sender<()>) {
        if let Err(e) = self.node.store_mut().sync() {
            tracing::error!(error = %e, "final sync failed");
        }
        self.fail_all(ServerError::Stopped);
        let _ = done.send(());
    }

    fn fail_all(&mut self, e: ServerError) {
        for (_, w) in std::mem::take(&mut self.proposals) {
            let _ = w.reply.send(Err(e.clone()));
        }
        for (_, w) in std::mem::take(&mut self.conf_waiters) {
            let _ = w.reply.send(Err(e.clone()));
        }
        for (_, r) in std::mem::take(&mut self.reads) {
            let _ = r.send(Err(e.clone()));
        }
        self.metrics.proposals_pending.set(0);
    }

    /// Handles one input; returns the shutdown responder when asked to stop.
    fn handle(&mut self, cmd: Command) -> Option<oneshot::Sender<()>> {
        match cmd {
            Command::Propose { data, reply } => self.propose(data, reply),
            Command::ReadIndex { reply } => {
                self.read_seq += 1;
                let ctx = self.read_seq.to_be_bytes().to_vec();
                match self.node.read_index(ctx.clone()) {
                    Ok(()) => {
                        self.reads.insert(ctx, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ServerError::from_propose(e)));
                    }
                }
            }
            Command::ConfChange { change, reply } => match self.node.propose_conf_change(change) {
                Ok((term, index)) => {
                    self.conf_waiters.insert(index, Waiter { term, reply });
                }
                Err(e) => {
                    let _ = reply.send(Err(ServerError::from_propose(e)));
                }
            },
            Command::TransferLeader { target, reply } => {
                let r = self
                    .node
                    .transfer_leader(target)
                    .map_err(ServerError::from_propose);
                let _ = reply.send(r);
            }
            Command::Step(msg) => {
                if let Err(e) = self.node.step(msg) {
                    tracing::warn!(error = %e, "step failed");
                }
            }
            Command::Unreachable(id) => self.node.report_unreachable(id),
            Command::SnapshotSent { to, ok } => self.node.report_snapshot(to, ok),
            Command::LearnMember(m) => {
                if self.members.by_id.contains_key(&m.id) {
                    self.members.upsert(Member {
                        peer_urls: Vec::new(),
                        ..m
                    });
                    self.publish_now = true;
                    // A full image carries the members' client URLs too.
                    self.update_view(true);
                }
            }
            Command::Shutdown { reply } => return Some(reply),
        }
        None
    }

    fn propose(&mut self, data: Vec<u8>, reply: ProposalReply) {
        match self.node.propose(data) {
            Ok((term, index)) => {
                self.proposals.insert(index, Waiter { term, reply });
                self.metrics
                    .proposals_pending
                    .set(self.proposals.len() as i64);
            }
            Err(e) => {
                self.metrics.proposals_failed.inc();
                let _ = reply.send(Err(ServerError::from_propose(e)));
            }
        }
    }

    fn on_tick(&mut self) {
        // Forget waiters whose client gave up (the API side timed out).
        let before = self.proposals.len();
        self.proposals.retain(|_, w| !w.reply.is_closed());
        let dropped = before - self.proposals.len();
        if dropped > 0 {
            self.metrics.proposals_failed.inc_by(dropped as u64);
            self.metrics
                .proposals_pending
                .set(self.proposals.len() as i64);
        }
        self.conf_waiters.retain(|_, w| !w.reply.is_closed());
        self.reads.retain(|_, r| !r.is_closed());
        self.publish();
    }

    fn process_ready(&mut self) -> Result<(), String> {
        let Ready {
            soft_state,
            hard_state,
            snapshot,
            entries,
            committed_entries,
            early_messages,
            messages,
            read_states,
        } = self.node.ready();

        // 0. The leader's replication leaves at once: followers write while we write.
        if !early_messages.is_empty() {
            self.outbox.send(early_messages);
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
            // Leadership lost in this Ready fails the pending proposals first, as below.
            if let Some(ss) = soft_state {
                self.on_soft_state(ss.leader, ss.role);
            }
            self.apply(committed_entries.take().unwrap_or_default())?;
        }
        // 1. Snapshot: restore the state machine and the member list, then the log store.
        if let Some(snap) = snapshot {
            let started = Instant::now();
            let index = snap.meta.index;
            let conf_state = snap.meta.conf_state.clone();
            // An index-0 snapshot only carries the bootstrap configuration (for a member
            // that joined with an empty one): there is no state machine image to restore.
            if index > 0 {
                let (members, state) =
                    members::decode_snapshot(&snap.data).map_err(|e| format!("snapshot: {e}"))?;
                {
                    let mut sm = self.sm.write().map_err(|_| "state machine lock poisoned")?;
                    sm.restore(state, index)?;
                }
                for m in members.by_id.into_values() {
                    self.members.upsert(m);
                }
            }
            match self.node.store_mut().apply_snapshot(snap) {
                Ok(()) => {}
                Err(flotilla_raft::StorageError::SnapshotOutOfDate(i)) => {
                    tracing::debug!(index = i, "ignoring an out-of-date snapshot");
                }
                Err(e) => return Err(e.to_string()),
            }
            if index > 0 {
                self.applied = self.applied.max(index);
                self.applied_conf = conf_state.clone();
                self.update_view(true);
                self.last_snapshot = index;
                self.metrics.snapshots.inc();
                self.metrics
                    .snapshot_duration
                    .observe(started.elapsed().as_secs_f64());
                let _ = self.applied_tx.send(self.applied);
            }
            self.refresh_peers();
        }
        // 2. Entries and hard state.
        if !entries.is_empty() {
            // Learn addresses of members being added as soon as the change is appended (it
            // takes effect then), so the leader can replicate to them before it commits.
            for e in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
                self.learn_member(e);
            }
            self.node
                .store_mut()
                .append(&entries)
                .map_err(|e| e.to_string())?;
        }
        if let Some(hs) = hard_state {
            self.node
                .store_mut()
                .set_hard_state(hs)
                .map_err(|e| e.to_string())?;
            if hs.term != self.durable_term_vote.0 {
                self.publish_now = true;
            }
            self.metrics.term.set(hs.term as i64);
            self.metrics.commit_index.set(hs.commit as i64);
        }
        // 3. ONE durable sync for everything above (a Ready that persisted nothing but the
        // commit index — only heartbeats or committed entries to apply — needs none).
        if must_sync {
            let started = Instant::now();
            self.node.store_mut().sync().map_err(|e| e.to_string())?;
            self.metrics
                .fsync_duration
                .observe(started.elapsed().as_secs_f64());
            if let Some(hs) = hard_state {
                self.durable_term_vote = (hs.term, hs.vote);
            }
            // Everything in the store is durable now.
            self.durable_last = self.node.store().last_index().map_err(|e| e.to_string())?;
        }
        // 4. Only now send.
        if !messages.is_empty() {
            self.outbox.send(messages);
        }
        if !apply_early && let Some(ss) = soft_state {
            self.on_soft_state(ss.leader, ss.role);
        }
        // 5. Apply.
        if let Some(committed) = committed_entries.take() {
            self.apply(committed)?;
        }
        // 6. Read states: the caller waits for applied ≥ index itself.
        for rs in read_states {
            if let Some(reply) = self.reads.remove(&rs.ctx) {
                let r = if rs.index == 0 {
                    Err(ServerError::NoLeader)
                } else {
                    Ok(rs.index)
                };
                let _ = reply.send(r);
            }
        }
        // 7. Advance.
        self.node.advance();
        self.maybe_snapshot()?;
        if self.publish_now || self.last_publish.elapsed() >= PUBLISH_EVERY {
            self.publish();
        }
        Ok(())
    }

    fn on_soft_state(&mut self, leader: NodeId, role: Role) {
        self.publish_now = true;
        if leader != self.last_leader {
            if leader != 0 {
                self.metrics.leader_changes_seen.inc();
            }
            self.last_leader = leader;
        }
        if self.last_role == Role::Leader && role != Role::Leader {
            // Lost leadership: pending proposals may or may not commit; etcd answers
            // "leader changed" and lets the client retry, and so do we.
            for (_, w) in std::mem::take(&mut self.proposals) {
                self.metrics.proposals_failed.inc();
                let _ = w.reply.send(Err(ServerError::LeaderChanged));
            }
            for (_, w) in std::mem::take(&mut self.conf_waiters) {
                let _ = w.reply.send(Err(ServerError::LeaderChanged));
            }
            self.metrics.proposals_pending.set(0);
        }
        self.last_role = role;
        self.metrics.has_leader.set(i64::from(leader != 0));
        self.metrics.is_leader.set(i64::from(role == Role::Leader));
    }

    fn learn_member(&mut self, e: &Entry) {
        let Some(cc) = decode_conf_change(&e.data) else {
            return;
        };
        if matches!(
            cc.kind,
            ConfChangeKind::AddLearner | ConfChangeKind::PromoteLearner
        ) && let Some(m) = decode_member_context(cc.node_id, &cc.context)
        {
            self.members.upsert(m);
        }
        self.refresh_peers();
    }

    fn apply(&mut self, committed: Vec<Entry>) -> Result<(), String> {
        if committed.is_empty() {
            return Ok(());
        }
        let sm_arc = self.sm.clone();
        let mut sm = sm_arc.write().map_err(|_| "state machine lock poisoned")?;
        let sm_applied = sm.applied_index();
        // All entries of this Ready go to sled in one batch; clients hear back only once it
        // is written.
        sm.begin_batch();
        let mut replies = Vec::new();
        let mut conf_applied = committed.iter().any(|e| e.kind == EntryKind::ConfChange);
        let applied = self.apply_entries(&mut sm, sm_applied, committed, &mut replies);
        let finished = sm.finish_batch();
        let member_updates = sm.take_member_updates();
        drop(sm);
        for u in member_updates {
            // Checked by the API before proposing; a member removed since is left alone.
            if self.members.by_id.contains_key(&u.id) && !u.peer_urls.is_empty() {
                tracing::info!(member = format!("{:x}", u.id), urls = ?u.peer_urls, "member peer URLs updated");
                self.members.upsert(Member {
                    id: u.id,
                    peer_urls: u.peer_urls,
                    ..Member::default()
                });
                conf_applied = true;
            }
        }
        if conf_applied {
            self.refresh_peers();
        }
        applied?;
        finished?;
        for (reply, r) in replies {
            let _ = reply.send(r);
        }
        self.update_view(conf_applied);
        self.metrics.applied_index.set(self.applied as i64);
        self.metrics
            .proposals_pending
            .set(self.proposals.len() as i64);
        let _ = self.applied_tx.send(self.applied);
        Ok(())
    }

    fn apply_entries(
        &mut self,
        sm: &mut StateMachine,
        sm_applied: u64,
        committed: Vec<Entry>,
        replies: &mut Vec<(ProposalReply, Result<Vec<u8>, ServerError>)>,
    ) -> Result<(), String> {
        for e in committed {
            self.metrics.proposals_committed.inc();
            match e.kind {
                EntryKind::Normal => {
                    let waiter = self.proposals.remove(&e.index);
                    if e.data.is_empty() || e.index <= sm_applied {
                        // The leader's no-op, or an entry applied before a restart.
                        if let Some(w) = waiter {
                            let _ = w.reply.send(Err(ServerError::LeaderChanged));
                        }
                    } else {
                        let out = sm.apply(e.index, &e.data)?;
                        match waiter {
                            Some(w) if w.term == e.term => replies.push((w.reply, Ok(out))),
                            Some(w) => {
                                self.metrics.proposals_failed.inc();
                                replies.push((w.reply, Err(ServerError::LeaderChanged)));
                            }
                            None => {}
                        }
                    }
                }
                EntryKind::ConfChange => {
                    if let Some(cc) = decode_conf_change(&e.data) {
                        self.applied_conf = self.applied_conf.apply(&cc);
                        match cc.kind {
                            ConfChangeKind::RemoveNode => {
                                if cc.node_id == self.node.status().id {
                                    tracing::warn!("this member was removed from the cluster");
                                }
                                self.members.remove(cc.node_id);
                            }
                            _ => {
                                if let Some(m) = decode_member_context(cc.node_id, &cc.context) {
                                    self.members.upsert(m);
                                }
                            }
                        }
                    }
                    if let Some(w) = self.conf_waiters.remove(&e.index) {
                        let r = if w.term == e.term {
                            Ok(())
                        } else {
                            Err(ServerError::LeaderChanged)
                        };
                        let _ = w.reply.send(r);
                    }
                    self.refresh_peers();
                }
            }
            self.applied = e.index;
            self.metrics.proposals_applied.inc();
        }
        Ok(())
    }

    /// Publishes the applied index (and, when they changed, the configuration and members
    /// as of it) to the image source.
    fn update_view(&mut self, conf_changed: bool) {
        if let Ok(mut v) = self.view.lock() {
            v.index = self.applied;
            if conf_changed {
                v.conf_state = self.applied_conf.clone();
                v.members = self.members.clone();
            }
        }
    }

    /// Compacts the log every `snapshot_threshold` applied entries. The snapshot stores only
    /// the member list: the state machine is durable in the same database, and a follower that
    /// needs it gets an image built at that moment (storage::log_store's module docs).
    fn maybe_snapshot(&mut self) -> Result<(), String> {
        if self.applied < self.last_snapshot + self.settings.snapshot_threshold.max(1) {
            return Ok(());
        }
        let started = Instant::now();
        let index = self.applied;
        let partial = members::encode_snapshot(&self.members, &[]);
        match self
            .node
            .store_mut()
            .compact(index, self.applied_conf.clone(), partial)
        {
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

    fn refresh_peers(&mut self) {
        self.publish_now = true;
        let st = self.node.status();
        // Everyone in the configuration, plus every member whose address we know: a member
        // that joined with an empty configuration must be able to answer the leader before
        // it has learned the configuration.
        let mut ids: std::collections::BTreeSet<NodeId> = st.conf_state.members().collect();
        ids.extend(self.members.by_id.keys().copied());
        ids.remove(&st.id);
        let peers: Vec<(NodeId, String)> = ids
            .into_iter()
            .filter_map(|id| self.members.peer_url(id).map(|u| (id, u.to_string())))
            .collect();
        if peers != self.last_peers {
            self.last_peers = peers.clone();
            self.outbox.set_peers(peers);
        }
    }

    fn publish(&mut self) {
        self.last_publish = Instant::now();
        self.publish_now = false;
        let st = self.node.status();
        if st.leader != 0 && self.ready_target.is_none() {
            self.ready_target = Some(st.commit);
        }
        if self.last_db_size_check.elapsed() > Duration::from_secs(5) {
            self.last_db_size_check = Instant::now();
            self.db_size = self.sm.read().map(|s| s.db_size()).unwrap_or(0);
            self.metrics.db_size_bytes.set(self.db_size);
        }
        let revision = self.sm.read().map(|s| s.revision()).unwrap_or(0);
        let mut progress = BTreeMap::new();
        for (id, p) in &st.progress {
            progress.insert(
                *id,
                PeerProgress {
                    match_index: p.match_index,
                    recent_active: p.recent_active,
                    pending_snapshot: p.pending_snapshot,
                    is_learner: p.is_learner,
                    last_contact_ms: p.ticks_since_contact * self.settings.tick.as_millis() as u64,
                    caught_up: p.caught_up,
                },
            );
            if *id != st.id {
                self.metrics
                    .follower_lag
                    .with_label_values(&[&format!("{id:x}")])
                    .set(st.last_index.saturating_sub(p.match_index) as i64);
            }
        }
        self.metrics.term.set(st.term as i64);
        self.metrics.commit_index.set(st.commit as i64);
        self.metrics.has_leader.set(i64::from(st.leader != 0));
        self.metrics
            .is_leader
            .set(i64::from(st.role == Role::Leader));
        let status = NodeStatus {
            id: st.id,
            cluster_id: self.settings.cluster_id,
            term: st.term,
            leader: st.leader,
            role: st.role,
            commit: st.commit,
            applied: self.applied,
            first_index: st.first_index,
            last_index: st.last_index,
            pending_conf_index: st.pending_conf_index,
            members: self.members.list(&st.conf_state),
            progress,
            ready_commit_target: self.ready_target.unwrap_or(0),
            caught_up_once: self.ready_target.is_some(),
            revision,
            db_size: self.db_size,
        };
        self.status_tx.send_replace(status);
    }
}

/// The configuration as of `applied`: the stored snapshot's, with every configuration change
/// the log holds up to `applied` applied to it (a restarted member resumes from the state
/// machine's applied index, past entries the core will not hand out again).
fn conf_as_of(store: &SledLogStore, applied: u64) -> flotilla_raft::ConfState {
    let meta = store.snapshot_meta();
    let mut conf = meta.conf_state.clone();
    let mut lo = meta.index + 1;
    while lo <= applied {
        let Ok(batch) = store.entries(lo, applied + 1, 64 << 20) else {
            break;
        };
        let Some(last) = batch.last().map(|e| e.index) else {
            break;
        };
        for e in batch.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            if let Some(cc) = decode_conf_change(&e.data) {
                conf = conf.apply(&cc);
            }
        }
        lo = last + 1;
    }
    conf
}

/// Decodes the data of a `ConfChange` entry (the core's own encoding).
pub fn decode_conf_change(data: &[u8]) -> Option<ConfChange> {
    ConfChange::decode(data)
}

/// Decodes the member metadata carried in a ConfChange context.
pub fn decode_member_context(id: NodeId, ctx: &[u8]) -> Option<Member> {
    let mc = flotilla_proto::internal::MemberContext::decode(ctx).ok()?;
    Some(Member {
        id,
        name: mc.name,
        peer_urls: mc.peer_urls,
        client_urls: mc.client_urls,
        is_learner: false,
    })
}

/// Encodes member metadata for a ConfChange context.
pub fn encode_member_context(m: &Member) -> Vec<u8> {
    flotilla_proto::internal::MemberContext {
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
    }
    .encode_to_vec()
}
