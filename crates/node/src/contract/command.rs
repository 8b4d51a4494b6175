//! [`Command`]: everything the Raft loop can be asked to do, by the client APIs (proposals,
//! reads, membership) and by the transport (peer messages, delivery reports).
//!
//! One enum on one channel is what makes the loop the single owner of consensus state, and what
//! lets whatever arrived during a sync land in the next Ready (group commit).

use flotilla_proto::internal;
use flotilla_raft::{ConfChange, Message, NodeId};
use tokio::sync::oneshot;

use super::error::ServerError;
use super::members::Member;

/// The reply to a proposal: the `internal::Response` produced when it was applied (encoded
/// only if it must cross the network to a member that forwarded the request).
pub type ProposalReply = oneshot::Sender<Result<internal::Response, ServerError>>;

/// What the Raft loop is asked to do.
pub enum Command {
    /// Propose an encoded `internal::Request`; answered once applied.
    Propose {
        /// The encoded request.
        data: Vec<u8>,
        /// Answered with the response.
        reply: ProposalReply,
    },
    /// Ask for a linearizable read point; answered with the index to wait for.
    ReadIndex {
        /// Answered with the read index.
        reply: oneshot::Sender<Result<u64, ServerError>>,
    },
    /// Propose a membership change; answered once applied.
    ConfChange {
        /// The change.
        change: ConfChange,
        /// Answered once the change is applied.
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
    /// Hand leadership to `target`; answered once it leads, or with an error.
    TransferLeader {
        /// The new leader.
        target: NodeId,
        /// Answered when the transfer started (the caller polls the status for completion).
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
    /// A message from a peer.
    Step(Message),
    /// The transport could not deliver to this peer.
    Unreachable(NodeId),
    /// A snapshot send to this peer finished.
    SnapshotSent {
        /// The peer.
        to: NodeId,
        /// Whether it was installed.
        ok: bool,
    },
    /// Metadata another member reported about itself (its client URLs), merged into the
    /// member list; never changes who is a member.
    LearnMember(Member),
    /// A peer answered that this member was removed from the cluster (it was away when its
    /// removal was applied, so it never applied the entry itself).
    Removed {
        /// The peer that said so.
        by: NodeId,
    },
    /// Sync and stop.
    Shutdown {
        /// Answered once the store is synced.
        reply: oneshot::Sender<()>,
    },
}
