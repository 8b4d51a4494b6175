//! The running member: the Raft loop that owns consensus and the state machine, and the handle
//! through which the client APIs and the transport talk to it.
//!
//! Shape: exactly one thread ([`raft_loop`]) owns the `RawNode` and writes the MVCC store;
//! everything else sends it [`Command`](crate::contract::Command)s over one channel and waits on
//! oneshot replies. One owner means no lock around consensus state, and one channel means
//! everything that arrived while the previous Ready was being synced lands in the next Ready
//! (group commit). The types shared with the transport and the APIs live in
//! [`crate::contract`], so this module imports neither of them.

pub mod apply;
pub mod corrupt;
pub mod handle;
pub mod image;
pub mod lease_expiry;
pub mod publish;
pub mod raft_loop;
pub mod ready;
pub mod roster;
pub mod state_lock;
pub mod state_machine;
pub mod waiters;
pub mod write;
