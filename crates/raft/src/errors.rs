//! [`ProposeError`]: why a request to the core was refused.
//!
//! Each variant names what the caller needs to act on it (the leader to forward to, the index
//! to wait for), so the node can answer clients precisely instead of guessing.

use crate::storage::StorageError;
use crate::types::NodeId;

/// Why a proposal, configuration change, read or transfer was refused. A refused request
/// changes nothing.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the known leader or
    /// [`NO_NODE`](crate::NO_NODE) when unknown.
    #[error("not the leader (leader: {leader})")]
    NotLeader {
        /// The known leader, or `NO_NODE`.
        leader: NodeId,
    },
    /// A leadership transfer to `target` is in progress; proposals wait until it ends.
    #[error("leadership transfer to {target} in progress")]
    TransferInProgress {
        /// The transfer's target.
        target: NodeId,
    },
    /// The previous configuration change (at `index`) is not committed yet.
    #[error("configuration change at index {index} is not committed yet")]
    ConfChangePending {
        /// Index of the uncommitted change.
        index: u64,
    },
    /// The leader has not yet committed an entry of its own term (pitfall 14).
    #[error("leader has not committed an entry of its term yet")]
    LeaderNotReady,
    /// The learner is too far behind (or a snapshot is in flight to it) to be promoted.
    #[error("learner {id} is not caught up (match {matched}, leader last index {last_index})")]
    LearnerNotCaughtUp {
        /// The learner.
        id: NodeId,
        /// Its match index.
        matched: u64,
        /// The leader's last index.
        last_index: u64,
    },
    /// The change (or transfer target) does not fit the current configuration.
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(String),
    /// The storage failed while serving the request.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
