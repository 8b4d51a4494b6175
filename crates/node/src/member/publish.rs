//! [`Publisher`]: what the member says about itself — the [`NodeStatus`] on its watch channel
//! and the consensus gauges (term, commit, leader, role, follower lag, database size), all
//! set here and only here, from one `flotilla_raft::Status`.
//!
//! Under load a Ready completes every few hundred microseconds; building the status (member
//! list, per-peer progress, labelled gauges) each time cost a visible share of the leader's
//! CPU. Routine progress (commit, applied, revision) is published at most every
//! [`PUBLISH_EVERY`]; changes of leader, term, role or membership at once ([`Publisher::mark`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_raft::{NodeId, Role, Status};
use tokio::sync::watch;

use super::state_lock::StateLock;
use crate::contract::{Members, NodeStatus, PeerProgress};
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;

/// The most routine progress waits to be published.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(10);
/// At most one "campaigning" line per this interval (the others are counted).
const CAMPAIGN_LOG_EVERY: Duration = Duration::from_secs(30);

/// How often the database size (a directory walk) is measured.
const DB_SIZE_EVERY: Duration = Duration::from_secs(5);

/// Publishes the status and the consensus metrics.
pub struct Publisher {
    status_tx: watch::Sender<NodeStatus>,
    metrics: Metrics,
    cluster_id: u64,
    tick: Duration,
    last_publish: Instant,
    publish_now: bool,
    last_leader: NodeId,
    last_role: Role,
    /// The commit index seen when a leader was first known (readiness).
    ready_target: Option<u64>,
    last_db_size_check: Option<Instant>,
    db_size: i64,
    /// The store revision last published.
    revision: i64,
    /// (term, leader, role) as last logged.
    logged: (u64, NodeId, Role),
    /// Campaigns repeat every election timeout while a member is cut off.
    campaign_log: LogLimit<()>,
}

impl Publisher {
    /// A publisher onto `status_tx` for a member of `cluster_id` ticking every `tick`.
    pub fn new(
        status_tx: watch::Sender<NodeStatus>,
        metrics: Metrics,
        cluster_id: u64,
        tick: Duration,
    ) -> Self {
        Publisher {
            status_tx,
            metrics,
            cluster_id,
            tick,
            last_publish: Instant::now(),
            publish_now: true,
            last_leader: 0,
            last_role: Role::Follower,
            ready_target: None,
            last_db_size_check: None,
            db_size: 0,
            revision: 0,
            logged: (0, 0, Role::Follower),
            campaign_log: LogLimit::new(CAMPAIGN_LOG_EVERY),
        }
    }

    /// Something readers must see at once changed (leader, term, role, members).
    pub fn mark(&mut self) {
        self.publish_now = true;
    }

    /// Whether the next [`Publisher::publish`] is due.
    pub fn due(&self) -> bool {
        self.publish_now || self.last_publish.elapsed() >= PUBLISH_EVERY
    }

    /// The leader or role changed; returns whether this member just lost leadership.
    pub fn soft_state(&mut self, leader: NodeId, role: Role) -> bool {
        self.publish_now = true;
        if leader != self.last_leader {
            if leader != 0 {
                self.metrics.leader_changes_seen.inc();
            }
            self.last_leader = leader;
        }
        let lost = self.last_role == Role::Leader && role != Role::Leader;
        self.last_role = role;
        lost
    }

    /// Logs elections and leader changes, with member ids and terms, as an operator debugging
    /// an outage needs them: who leads since which term, who campaigns, when a leader is lost.
    fn log_transition(&mut self, st: &Status) {
        let now = (st.term, st.leader, st.role);
        let (term, leader, role) = std::mem::replace(&mut self.logged, now);
        if now == (term, leader, role) {
            return;
        }
        let me = format!("{:x}", st.id);
        match st.role {
            Role::PreCandidate | Role::Candidate if role != st.role || term != st.term => {
                if let Some(held) = self.campaign_log.allow((), Instant::now()) {
                    tracing::info!(
                        member = me,
                        term = st.term,
                        pre_vote = st.role == Role::PreCandidate,
                        previous_leader = format!("{leader:x}"),
                        campaigns_not_logged = held,
                        "no leader heard from: campaigning"
                    );
                }
            }
            Role::Leader if role != Role::Leader => {
                tracing::info!(member = me, term = st.term, "became the leader");
            }
            _ => {}
        }
        if role == Role::Leader && st.role != Role::Leader {
            tracing::warn!(
                member = me,
                term = st.term,
                new_leader = format!("{:x}", st.leader),
                "stepped down as leader"
            );
        }
        if st.leader != leader && st.role != Role::Leader {
            if st.leader == 0 {
                tracing::warn!(
                    member = me,
                    term = st.term,
                    lost_leader = format!("{leader:x}"),
                    "lost the leader"
                );
            } else {
                tracing::info!(
                    member = me,
                    term = st.term,
                    leader = format!("{:x}", st.leader),
                    "following a new leader"
                );
            }
        }
    }

    /// Publishes the status and sets the gauges.
    pub fn publish(&mut self, st: &Status, applied: u64, members: &Members, sm: &StateLock) {
        self.last_publish = Instant::now();
        self.publish_now = false;
        self.log_transition(st);
        if st.leader != 0 && self.ready_target.is_none() {
            self.ready_target = Some(st.commit);
        }
        // try_read: a defragment holds the write lock for its whole copy, and the loop must
        // keep ticking (heartbeats) meanwhile; the last values stand until the next publish.
        let sm = sm.try_read().ok();
        if let Some(sm) = &sm
            && self
                .last_db_size_check
                .is_none_or(|t| t.elapsed() > DB_SIZE_EVERY)
        {
            self.last_db_size_check = Some(Instant::now());
            self.db_size = sm.db_size();
            self.metrics.db_size_bytes.set(self.db_size);
            self.metrics.db_size_in_use_bytes.set(sm.db_size_in_use());
        }
        let revision = match &sm {
            Some(sm) => sm.revision(),
            None => self.revision,
        };
        self.revision = revision;
        drop(sm);
        let mut progress = BTreeMap::new();
        for (id, p) in &st.progress {
            progress.insert(
                *id,
                PeerProgress {
                    match_index: p.match_index,
                    recent_active: p.recent_active,
                    pending_snapshot: p.pending_snapshot,
                    is_learner: p.is_learner,
                    last_contact_ms: p.ticks_since_contact * self.tick.as_millis() as u64,
                    caught_up: p.caught_up,
                    replicating: p.state == flotilla_raft::ProgressState::Replicate,
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
            cluster_id: self.cluster_id,
            term: st.term,
            leader: st.leader,
            role: st.role,
            commit: st.commit,
            applied,
            first_index: st.first_index,
            last_index: st.last_index,
            last_term: st.last_term,
            pending_conf_index: st.pending_conf_index,
            members: members.list(&st.conf_state),
            progress,
            ready_commit_target: self.ready_target.unwrap_or(0),
            caught_up_once: self.ready_target.is_some(),
            revision,
            db_size: self.db_size,
            removed: members.removed.clone(),
        };
        self.status_tx.send_replace(status);
    }
}
