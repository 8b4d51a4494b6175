//! [`Outbox`]: where the Raft loop hands the messages of a Ready.
//!
//! A trait rather than the transport itself so that the loop (and the Ready cycle's tests)
//! depend on "something that queues messages without blocking", never on gRPC.

use flotilla_raft::{Message, NodeId};

/// Where the loop hands messages to send (the transport).
pub trait Outbox: Send + Sync {
    /// Queues messages for delivery; never blocks. Snapshot messages are sent in chunks.
    fn send(&self, msgs: Vec<Message>);
    /// Replaces the set of peers and their addresses.
    fn set_peers(&self, peers: Vec<(NodeId, String)>);
}
