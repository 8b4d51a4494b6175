//! The MVCC key-value store with etcd semantics: Flotilla's replicated state machine.
//!
//! Modelled on etcd's `server/mvcc` package. Every write transaction creates a new store
//! revision; each change inside it gets a sub-revision. The history lives in sled, keyed by
//! revision, and an in-memory [`key_index`] maps each key to the revisions where it changed, so
//! a read at any revision since the last compaction costs one index walk plus one sled read per
//! returned value.
//!
//! Module map:
//! - [`revision`]: `(main, sub)` revisions and their order-preserving encoding.
//! - [`record`]: the stored form of one change.
//! - [`key_index`]: per-key generations, point-in-time lookups and compaction.
//! - [`lease`]: leases, their keys, and the node-driven expiry clock.
//! - [`txn`]: request validation and txn compares, as etcd's gRPC and apply layers do them.
//! - [`store`]: [`MvccStore`], the sled-backed state machine: `apply`, `range`, compaction,
//!   leases, snapshots.
//! - [`snapshot`]: the snapshot byte format.
//! - [`watch`]: [`watch::WatchHub`], watches with history replay and slow-watcher catch-up.
//! - [`alarm`]: the replicated alarms (NOSPACE, CORRUPT) and the writes they refuse.
//! - [`error`]: `MvccError`, with etcd's messages and gRPC codes.

pub mod alarm;
pub mod error;
pub mod key_index;
pub mod lease;
pub mod record;
pub mod revision;
pub mod snapshot;
pub mod store;
pub mod txn;
pub mod watch;

pub use error::MvccError;
pub use revision::Revision;
pub use store::{ApplyOutput, MvccStore, PreparedRestore, RestoreTarget};
