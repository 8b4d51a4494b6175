//! What the running member publishes about itself after a Ready: [`NodeStatus`], read by the
//! status APIs, health probes and request routing (who leads, where to forward).
//!
//! A plain value on a `watch` channel rather than calls into the Raft loop: readers never wait
//! on the loop, and the loop publishes at its own pace (see `member::publish`).

use std::collections::{BTreeMap, BTreeSet};

use flotilla_raft::{NodeId, Role};

use super::members::Member;

/// What the Raft loop publishes after every Ready, for status APIs, health and routing.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// This member.
    pub id: NodeId,
    /// The cluster it belongs to.
    pub cluster_id: u64,
    /// Current term.
    pub term: u64,
    /// Known leader or 0.
    pub leader: NodeId,
    /// This member's role.
    pub role: Role,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// First index still in the log.
    pub first_index: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Term of the last entry in the log.
    pub last_term: u64,
    /// Index of the latest appended configuration change (it is in flight while it is above
    /// `commit`); the operator starts no membership change while one is.
    pub pending_conf_index: u64,
    /// Members with their metadata and roles (as of the latest appended configuration).
    pub members: Vec<Member>,
    /// Leader only: per member, (match index, recent_active, pending snapshot index).
    pub progress: BTreeMap<NodeId, PeerProgress>,
    /// The commit index seen when a leader was first known; ready once applied reaches it.
    pub ready_commit_target: u64,
    /// Whether [`NodeStatus::ready_commit_target`] was ever set.
    pub caught_up_once: bool,
    /// Latest MVCC revision.
    pub revision: i64,
    /// Size of the database on disk.
    pub db_size: i64,
    /// Members whose removal was applied (this one included, once it learns of its own).
    pub removed: BTreeSet<NodeId>,
}

/// A follower's replication progress as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProgress {
    /// Highest index known replicated on the member.
    pub match_index: u64,
    /// Whether the member answered within the last election timeout.
    pub recent_active: bool,
    /// Index of the snapshot in flight to it, 0 if none.
    pub pending_snapshot: u64,
    /// Whether the member is a learner.
    pub is_learner: bool,
    /// Milliseconds since the leader last heard from it.
    pub last_contact_ms: u64,
    /// The core would accept its promotion now (see `flotilla_raft::ProgressStatus`).
    pub caught_up: bool,
    /// Appends stream to it (the core's Replicate state). A peer whose connection broke is
    /// reported unreachable and drops to probing at once, long before `recent_active` lapses.
    pub replicating: bool,
}

impl NodeStatus {
    /// A member with a known leader that has applied up to the commit index it saw then.
    pub fn ready(&self) -> bool {
        self.leader != 0 && self.caught_up_once && self.applied >= self.ready_commit_target
    }

    /// Whether this member was removed from the cluster: it must stop serving.
    pub fn self_removed(&self) -> bool {
        self.removed.contains(&self.id)
    }

    /// Whether this member is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The member with this id, if known.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}
