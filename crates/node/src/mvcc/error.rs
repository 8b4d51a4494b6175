//! Errors of the MVCC store, worded as etcd words them.
//!
//! `Display` gives etcd's internal message (what its `mvcc`/`lease` packages return);
//! [`MvccError::grpc_code`] and [`MvccError::grpc_message`] give what etcd's gRPC layer
//! (`rpctypes`) sends to clients, so etcdctl prints the same text against Flotilla.

/// An MVCC store error.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// The requested revision is older than the compacted revision.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    /// A request without a key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A txn writes the same key twice (or puts a key it also deletes).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A put or revoke names a lease that does not exist.
    #[error("lease not found")]
    LeaseNotFound,
    /// A grant names a lease id that is already in use.
    #[error("lease already exists")]
    LeaseExists,
    /// A grant asks for a TTL above etcd's maximum.
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    /// A put with `ignore_value` that also carries a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` that also carries a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A range with an unknown sort order or target.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A txn with more operations than `MAX_TXN_OPS`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A watch id already used on the same stream.
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateWatchId,
    /// A request that is malformed in another way (e.g. an empty txn operation).
    #[error("etcdserver: invalid request: {0}")]
    InvalidRequest(String),
    /// Snapshot bytes that cannot be restored.
    #[error("mvcc: invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// Stored data that cannot be decoded.
    #[error("mvcc: corrupt store: {0}")]
    Corrupt(String),
    /// A write while the NOSPACE alarm is active (etcd's `ErrNoSpace`).
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A request while the CORRUPT alarm is active (etcd's `ErrCorrupt`).
    #[error("etcdserver: corrupt cluster")]
    CorruptCluster,
    /// The underlying sled database failed.
    #[error("mvcc: storage error: {0}")]
    Storage(#[from] sled::Error),
    /// The state database's files failed (syncing, switching generations).
    #[error("mvcc: storage error: {0}")]
    StateDb(#[from] crate::storage::StateDbError),
    /// An auth refusal (`crate::auth`), already in etcd's words.
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
}

impl MvccError {
    /// The gRPC status code etcd answers with.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            MvccError::Compacted | MvccError::FutureRev | MvccError::LeaseTtlTooLarge => {
                Code::OutOfRange
            }
            MvccError::EmptyKey
            | MvccError::KeyNotFound
            | MvccError::DuplicateKey
            | MvccError::ValueProvided
            | MvccError::LeaseProvided
            | MvccError::InvalidSortOption
            | MvccError::TooManyOps
            | MvccError::DuplicateWatchId
            | MvccError::InvalidRequest(_) => Code::InvalidArgument,
            MvccError::LeaseNotFound => Code::NotFound,
            MvccError::LeaseExists => Code::FailedPrecondition,
            MvccError::InvalidSnapshot(_) | MvccError::Corrupt(_) | MvccError::CorruptCluster => {
                Code::DataLoss
            }
            MvccError::NoSpace => Code::ResourceExhausted,
            MvccError::Storage(_) | MvccError::StateDb(_) => Code::Unavailable,
            MvccError::Auth(e) => e.grpc_code(),
        }
    }

    /// The message etcd's gRPC layer sends for this error.
    pub fn grpc_message(&self) -> String {
        match self {
            MvccError::Compacted | MvccError::FutureRev | MvccError::NoSpace => {
                format!("etcdserver: {self}")
            }
            MvccError::LeaseNotFound => "etcdserver: requested lease not found".into(),
            MvccError::LeaseExists => "etcdserver: lease already exists".into(),
            MvccError::LeaseTtlTooLarge => "etcdserver: too large lease TTL".into(),
            other => other.to_string(),
        }
    }

    /// Whether the error is a deterministic result of the request (the same on every replica),
    /// as opposed to a local storage failure.
    pub fn is_deterministic(&self) -> bool {
        !matches!(
            self,
            MvccError::Storage(_)
                | MvccError::StateDb(_)
                | MvccError::Corrupt(_)
                | MvccError::InvalidSnapshot(_)
        )
    }
}

impl MvccError {
    /// The refusal as the Raft entry's result, for the member that waits on it.
    pub fn to_response(&self) -> flotilla_proto::internal::Response {
        use flotilla_proto::internal;
        internal::Response {
            op: Some(internal::response::Op::Error(internal::Error {
                code: self.grpc_code() as i32,
                message: self.grpc_message(),
            })),
        }
    }
}

impl From<MvccError> for tonic::Status {
    fn from(e: MvccError) -> Self {
        tonic::Status::new(e.grpc_code(), e.grpc_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_etcd() {
        assert_eq!(
            MvccError::Compacted.to_string(),
            "mvcc: required revision has been compacted"
        );
        assert_eq!(
            MvccError::FutureRev.grpc_message(),
            "etcdserver: mvcc: required revision is a future revision"
        );
        assert_eq!(
            MvccError::DuplicateKey.grpc_message(),
            "etcdserver: duplicate key given in txn request"
        );
        assert_eq!(
            MvccError::NoSpace.grpc_message(),
            "etcdserver: mvcc: database space exceeded"
        );
        assert_eq!(
            MvccError::NoSpace.grpc_code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            MvccError::CorruptCluster.grpc_message(),
            "etcdserver: corrupt cluster"
        );
        assert_eq!(MvccError::CorruptCluster.grpc_code(), tonic::Code::DataLoss);
        assert!(
            MvccError::NoSpace.is_deterministic() && MvccError::CorruptCluster.is_deterministic()
        );
        let st: tonic::Status = MvccError::LeaseNotFound.into();
        assert_eq!(st.code(), tonic::Code::NotFound);
        assert_eq!(st.message(), "etcdserver: requested lease not found");
    }
}
