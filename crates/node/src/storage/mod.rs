//! The durable Raft log store on sled: [`SledLogStore`] implements flotilla-raft's
//! [`Storage`](flotilla_raft::Storage) and [`LogStore`](flotilla_raft::LogStore) traits, and
//! keeps the member identity of the volume.
//!
//! # Layout
//!
//! The node opens one `sled::Db` at `<data-dir>/db` ([`open_db`]) and hands clones to this
//! store and to the MVCC store. The Raft state lives in the tree [`TREE_NAME`]; the byte layout
//! is in [`codec`] (big-endian index keys, so sled's order is log order). Snapshot images live
//! apart, in [`SNAPSHOT_TREE_NAME`], so that sled does not rewrite a multi-megabyte page each
//! time it consolidates updates to the hard state (see [`log_store`]).
//!
//! # Why fdatasync, and why once per Ready
//!
//! Raft's safety rests on what a node has promised: a vote, or an acknowledged append, must
//! survive a crash, or a restarted node can vote twice in one term and elect two leaders, or
//! forget entries a leader counted as committed (RAFT-PITFALLS 1–2). sled 0.34's `flush()` only
//! calls `sync_file_range`, which survives `kill -9` but not a power cut: it flushes neither the
//! file size nor the disk's write cache (measured: 9,003 `sync_file_range`, 7 `fsync` in 3 s of
//! flushes). So [`LogStore::sync`](flotilla_raft::LogStore::sync) is `flush()` plus fdatasync of
//! every file sled wrote ([`durable`]).
//!
//! An fdatasync costs a disk round trip (~0.2 ms here, milliseconds on network volumes), so it
//! is paid once per Raft `Ready`, not once per entry: `append`, `set_hard_state` and the
//! snapshot calls only write into sled's buffers, and the caller calls `sync` once after
//! persisting the whole Ready and before sending any message of it (group commit). Under load
//! a Ready carries many proposals, so the cost per entry falls as load rises (see
//! `benches/log_store.rs`).
//!
//! Durability is tested, not assumed: `storage::tests::syscalls` runs a workload under
//! `strace -f -c` and counts the fdatasync calls.

pub mod codec;
pub mod durable;
pub mod identity;
pub mod log_store;
pub mod wal;

#[cfg(test)]
mod tests;

pub use durable::{DbSync, open_db};
pub use identity::{IdentityError, MemberIdentity};
pub use log_store::{ImageSource, SNAPSHOT_TREE_NAME, SledLogStore, TREE_NAME, WAL_DIR};
