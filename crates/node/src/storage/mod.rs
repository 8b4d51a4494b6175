//! Durable storage of one member: the Raft log and hard state in an append-only WAL
//! ([`wal`]) — not in sled — and two sled databases: the Raft store's ([`open_db`] at
//! `<data-dir>/db`: snapshot metadata and images, the member identity of the volume
//! ([`identity`])) and the state machine's ([`state_db`] at `<data-dir>/mvcc/`: the key-value
//! data, in a database of its own so that a defragment can rewrite it and give space back).
//! The Raft store's byte layout is [`disk_format`]'s.
//! [`WalLogStore`] (in [`log_store`]) puts the two together behind
//! flotilla-raft's [`Storage`](flotilla_raft::Storage) and
//! [`LogStore`](flotilla_raft::LogStore) traits; the entries since the last snapshot are also
//! kept in memory, so the core's reads never touch the disk. [`standalone`] rewrites a stored
//! log for `--force-new-cluster` before the core starts on it. docs/ARCHITECTURE.md ("Storage on
//! disk") draws the layout.
//!
//! # Why fdatasync, and why once per Ready
//!
//! Raft's safety rests on what a node has promised: a vote, or an acknowledged append, must
//! survive a crash, or a restarted node can vote twice in one term and elect two leaders, or
//! forget entries a leader counted as committed (docs/ARCHITECTURE.md, "Raft pitfalls"). So
//! [`LogStore::sync`](flotilla_raft::LogStore::sync) writes the Ready's WAL records and calls
//! fdatasync on the segment, once per Raft `Ready` — group commit: `append` and
//! `set_hard_state` only buffer, and the caller syncs once after persisting the whole Ready and
//! before sending any message of it. Under load a Ready carries many proposals, so the cost per
//! entry falls as load rises (see `benches/log_store.rs`).
//!
//! sled is not synced per Ready: the MVCC writes and their applied index go in one sled batch,
//! so a crash can only lose a suffix of applied entries, which the node applies again from the
//! WAL. Before the WAL drops entries (compaction, an installed snapshot) both databases are
//! made durable with [`durable`]'s `DbSync`, the state machine's first ([`StateSync`]; the
//! argument is in [`state_db`]'s docs): sled 0.34's `flush()` only calls `sync_file_range`,
//! which survives `kill -9` but not a power cut (it flushes neither the file size nor the
//! disk's write cache: measured 9,003 `sync_file_range`, 7 `fsync` in 3 s of flushes), so
//! `DbSync` adds an fdatasync of every file sled wrote.
//!
//! Durability is tested, not assumed: `storage::tests::syscalls` runs a workload under
//! `strace -f -c` and counts the fdatasync calls.

pub mod disk_format;
pub mod durable;
pub mod identity;
pub mod log_store;
pub mod standalone;
pub mod state_db;
pub mod wal;

#[cfg(test)]
mod tests;

pub use durable::{DbSync, open_db};
pub use identity::{IdentityError, MemberIdentity};
pub use log_store::{ImageSource, SNAPSHOT_TREE_NAME, StateSync, TREE_NAME, WAL_DIR, WalLogStore};
pub use state_db::{StateDb, StateDbError, StateDir};
