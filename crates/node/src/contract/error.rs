//! Errors a client can get from the server, and their gRPC form.
//!
//! The messages are etcd's own (`etcdserver: …`), with etcd's status codes, because etcd
//! clients match on them: clientv3 retries on `Unavailable` and etcdctl prints the text.

use flotilla_raft::{NodeId, ProposeError};

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ServerError {
    /// No leader is known (election in progress, or this member is partitioned).
    #[error("etcdserver: no leader")]
    NoLeader,
    /// This member is not the leader; the caller should forward. The leader's id is for the
    /// forwarding code, not the text: etcd's message is exactly this.
    #[error("etcdserver: not leader")]
    NotLeader(NodeId),
    /// A request only the leader answers, and etcd refuses rather than forwards (MoveLeader),
    /// reached a follower: etcd's `ErrGRPCNotLeader`.
    #[error("etcdserver: not leader")]
    LeaderOnly,
    /// MoveLeader to a member that is not a voter of this cluster.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// A learner would be added while etcd's maximum (one) is already in the cluster.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// A voter would be added while too few members are up for the grown configuration to
    /// have a quorum (etcd's strict reconfiguration check).
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// A membership change that needs every voter connected, while one is not (etcd's
    /// `ErrGRPCUnhealthy`).
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// This member was removed from the cluster and no longer serves.
    #[error("etcdserver: the member has been permanently removed from the cluster")]
    MemberRemoved,
    /// The request did not complete in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The proposal was lost because leadership changed before it committed.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The request exceeds `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    TooLarge,
    /// The leader is busy with a leadership transfer or has not committed its first entry.
    #[error("etcdserver: too many requests")]
    Busy,
    /// A previous membership change is still pending.
    #[error("etcdserver: unhealthy cluster (a membership change is still in progress)")]
    ConfChangePending,
    /// The member does not exist.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A member with that peer URL or id already exists.
    #[error("etcdserver: Peer URLs already exists")]
    MemberExists,
    /// Promotion of a learner that has not caught up. The indexes go to the log, not the text:
    /// clients match etcd's `ErrGRPCLearnerNotReady` by its exact message.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady {
        /// The learner's match index.
        matched: u64,
        /// The leader's last index.
        last_index: u64,
    },
    /// The membership change is invalid.
    #[error("etcdserver: {0}")]
    InvalidConfChange(String),
    /// Invalid request.
    #[error("etcdserver: {0}")]
    InvalidArgument(String),
    /// The server is stopping.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// Storage failed.
    #[error("etcdserver: storage failure: {0}")]
    Storage(String),
    /// Forwarding to the leader failed.
    #[error("etcdserver: {0}")]
    Forward(String),
    /// The state machine refused the request: a verdict every member reaches alike, in etcd's
    /// code and words.
    #[error("{1}")]
    Refused(tonic::Code, String),
    /// The state machine answered with something this request cannot be answered with.
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl ServerError {
    /// Maps a core refusal to the error a client sees.
    pub fn from_propose(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { leader: 0 } => ServerError::NoLeader,
            ProposeError::NotLeader { leader } => ServerError::NotLeader(leader),
            ProposeError::TransferInProgress { .. } | ProposeError::LeaderNotReady => {
                ServerError::Busy
            }
            ProposeError::ConfChangePending { .. } => ServerError::ConfChangePending,
            ProposeError::LearnerNotCaughtUp {
                id,
                matched,
                last_index,
            } => {
                tracing::info!(
                    learner = format!("{id:x}"),
                    matched,
                    last_index,
                    "promotion refused: the learner has not caught up with the leader"
                );
                ServerError::LearnerNotReady {
                    matched,
                    last_index,
                }
            }
            ProposeError::InvalidConfChange(s) => ServerError::InvalidConfChange(s),
            ProposeError::Storage(s) => ServerError::Storage(s.to_string()),
        }
    }
}

impl From<ServerError> for tonic::Status {
    fn from(e: ServerError) -> Self {
        use tonic::Code;
        let code = match &e {
            ServerError::NoLeader
            | ServerError::NotLeader(_)
            | ServerError::Timeout
            | ServerError::LeaderChanged
            | ServerError::Busy
            | ServerError::Stopped
            | ServerError::Forward(_) => Code::Unavailable,
            ServerError::TooLarge | ServerError::InvalidArgument(_) => Code::InvalidArgument,
            ServerError::ConfChangePending => Code::Unavailable,
            ServerError::MemberNotFound => Code::NotFound,
            ServerError::MemberExists
            | ServerError::LeaderOnly
            | ServerError::BadLeaderTransferee
            | ServerError::TooManyLearners
            | ServerError::NotEnoughStartedMembers => Code::FailedPrecondition,
            ServerError::MemberRemoved => Code::FailedPrecondition,
            ServerError::Unhealthy => Code::Unavailable,
            ServerError::LearnerNotReady { .. } | ServerError::InvalidConfChange(_) => {
                Code::FailedPrecondition
            }
            ServerError::Storage(_) | ServerError::Internal(_) => Code::Internal,
            ServerError::Refused(code, _) => *code,
        };
        tonic::Status::new(code, e.to_string())
    }
}
