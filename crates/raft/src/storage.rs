//! The log store: what the core reads from ([`Storage`]) and what the caller writes to when it
//! persists a [`Ready`](crate::Ready) ([`LogStore`]).
//!
//! The split follows tikv/raft-rs: the core only *reads* durable state; the caller owns every
//! write, so it decides how and when to make a batch durable (group commit). The in-memory
//! [`MemStorage`](crate::MemStorage) ships with the core for tests and the simulator; the node
//! implements the same traits on its own durable store (crates/node, `storage/`), and both run the public conformance suite in
//! [`crate::testing`].
//!
//! Indexes follow one convention everywhere: the log holds entries `first_index()..=last_index()`;
//! entries at or below the snapshot index are compacted away, but the term at the snapshot index
//! stays readable (Raft pitfall 8).

use crate::types::{ConfState, Entry, HardState, Snapshot};

/// Why a storage read or write failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StorageError {
    /// The requested index is at or below the last snapshot: those entries are gone, and the
    /// leader must send a snapshot instead.
    #[error("log entries at index {0} were compacted")]
    Compacted(u64),
    /// The requested index is beyond the last entry.
    #[error("log index {0} is not available")]
    Unavailable(u64),
    /// A snapshot older than the one stored was offered.
    #[error("snapshot at index {0} is out of date")]
    SnapshotOutOfDate(u64),
    /// The store failed (disk, corruption). The caller must stop: continuing could break safety.
    #[error("storage failure: {0}")]
    Io(String),
}

/// Read access to durable Raft state. The core calls these; it never writes.
pub trait Storage {
    /// The persisted hard state and the configuration as of the last snapshot (for a log that
    /// was never compacted: the bootstrap configuration), read once when a node starts. The
    /// core replays the `ConfChange` entries after the snapshot on top of it, because a
    /// configuration takes effect when it is appended, not when it commits (thesis §4.1).
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError>;

    /// Entries in the half-open range `[lo, hi)`, stopping early (but always returning at least
    /// one entry when the range is not empty) once their total [`Entry::size`] exceeds
    /// `max_bytes`.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] if `lo < first_index()`; [`StorageError::Unavailable`] if
    /// `hi > last_index() + 1`.
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;

    /// The term of the entry at `index`, for `index` in `snapshot index ..= last_index()`.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] below the snapshot index; [`StorageError::Unavailable`]
    /// beyond the last entry.
    fn term(&self, index: u64) -> Result<u64, StorageError>;

    /// The index of the first entry still in the log (snapshot index + 1).
    fn first_index(&self) -> Result<u64, StorageError>;

    /// The index of the last entry in the log (the snapshot index if the log is empty).
    fn last_index(&self) -> Result<u64, StorageError>;

    /// The most recent snapshot (empty if none was ever taken).
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// Write access: what the caller does with a [`Ready`](crate::Ready) before it calls
/// [`advance`](crate::RawNode::advance).
///
/// Implementations must make every write durable by the time [`LogStore::sync`] returns: on
/// disk that means fsync/fdatasync, not just a write into the page cache.
pub trait LogStore: Storage {
    /// Appends `entries` (consecutive indexes). An existing entry at the same index is replaced
    /// and every entry after it removed: the caller only hands over entries the core decided
    /// conflict or extend the log.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] if the first entry is at or below the snapshot index;
    /// [`StorageError::Unavailable`] if it would leave a gap after `last_index()`.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Records the hard state.
    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError>;

    /// Replaces the log with `snapshot`: every entry up to its index is dropped; the entries
    /// after it are kept only if the log holds an entry at the snapshot index with the
    /// snapshot's term (Raft pitfall 21), otherwise the whole log is dropped.
    ///
    /// The hard state's term and vote are left as they are; its commit index may be raised to
    /// the snapshot index (everything in a snapshot is committed), never lowered.
    ///
    /// # Errors
    /// [`StorageError::SnapshotOutOfDate`] if the stored snapshot is newer.
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;

    /// Records a snapshot the state machine took at `index` (≤ the applied index) with the
    /// configuration at that index, and discards log entries up to `index`.
    ///
    /// # Errors
    /// [`StorageError::SnapshotOutOfDate`] if a snapshot at or beyond `index` exists;
    /// [`StorageError::Unavailable`] if `index > last_index()`.
    fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageError>;

    /// Makes every write so far durable. One call per Ready (group commit).
    fn sync(&mut self) -> Result<(), StorageError>;
}
