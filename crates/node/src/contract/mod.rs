//! The contract between the running member ([`crate::member`]) and its neighbours, the peer
//! transport ([`crate::transport`]) and the client APIs ([`crate::api`]): the commands the Raft
//! loop takes, the errors it answers with, where it sends messages, how it reaches the leader,
//! what it publishes about itself, and the member metadata all of these carry.
//!
//! A leaf: it imports no other module of this crate. The member and the transport used to import
//! each other (the loop needed the transport's forwarding, the transport the loop's commands);
//! with the shared types here and forwarding injected as a trait, the imports form a DAG.

pub mod command;
pub mod error;
pub mod forwarding;
pub mod members;
pub mod outbox;
pub mod status;

pub use command::{Command, ProposalReply};
pub use error::ServerError;
pub use forwarding::{ForwardFuture, Forwarding};
pub use members::{Member, Members};
pub use outbox::Outbox;
pub use status::{NodeStatus, PeerProgress};
