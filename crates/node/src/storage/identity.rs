//! A member's identity as written on its volume, and the error that stops a node from starting
//! on a volume that belongs to another cluster or member.
//!
//! The identity rule (docs/ARCHITECTURE.md): (cluster id, member id) is written once, when the member first
//! joins, and never silently re-initialised. A node started with a volume from another cluster
//! would otherwise merge two logs that share nothing but index numbers.

use flotilla_raft::StorageError;

/// Who this volume belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberIdentity {
    /// The cluster this member joined.
    pub cluster_id: u64,
    /// This member's Raft id (random, never reused).
    pub member_id: u64,
    /// Human-readable member name (the pod name on Kubernetes).
    pub name: String,
}

/// Why the identity on the volume cannot be used with the one the node was given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The volume belongs to another cluster.
    #[error(
        "this data directory belongs to cluster {on_volume:#018x}, but the node was started for \
         cluster {given:#018x}; refusing to start (a volume is never re-initialised silently: \
         use an empty data directory to join as a new member)"
    )]
    ClusterMismatch {
        /// The cluster id stored on the volume.
        on_volume: u64,
        /// The cluster id the node was started with.
        given: u64,
    },
    /// The volume belongs to another member (or the same member under another name).
    #[error(
        "this data directory belongs to member {on_volume:?}, but the node was started as \
         {given:?}; refusing to start"
    )]
    MemberMismatch {
        /// The identity stored on the volume.
        on_volume: MemberIdentity,
        /// The identity the node was started with.
        given: MemberIdentity,
    },
    /// The store could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Compares the identity stored on a volume with the one a node was started with.
pub fn check(on_volume: &MemberIdentity, given: &MemberIdentity) -> Result<(), IdentityError> {
    if on_volume.cluster_id != given.cluster_id {
        return Err(IdentityError::ClusterMismatch {
            on_volume: on_volume.cluster_id,
            given: given.cluster_id,
        });
    }
    if on_volume != given {
        return Err(IdentityError::MemberMismatch {
            on_volume: on_volume.clone(),
            given: given.clone(),
        });
    }
    Ok(())
}
