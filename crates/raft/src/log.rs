//! [`RaftLog`]: the log as the protocol sees it — durable entries in the [`Storage`] plus the
//! unstable tail (and possibly a snapshot) not yet handed to the caller.
//!
//! `ready()` *moves* the unstable tail out (no copy of the log); from then on the core reads
//! those entries from the store, which is why the caller must append a Ready's entries before
//! calling the node again. `persisted` trails behind: it only advances when the caller reports
//! the sync (`advance`), and it is what the leader counts for itself (pitfall 1).

use crate::storage::{Storage, StorageError};
use crate::types::{Entry, Snapshot};

pub(crate) struct RaftLog<S: Storage> {
    store: S,
    /// Entries not yet handed out; `unstable[0].index == offset`.
    unstable: Vec<Entry>,
    offset: u64,
    /// A snapshot received but not yet handed out.
    unstable_snapshot: Option<Snapshot>,
    committed: u64,
    applied: u64,
    /// Last index known durable.
    persisted: u64,
}

impl<S: Storage> RaftLog<S> {
    pub(crate) fn new(store: S) -> Result<Self, StorageError> {
        let first = store.first_index()?;
        let last = store.last_index()?;
        Ok(RaftLog {
            store,
            unstable: Vec::new(),
            offset: last + 1,
            unstable_snapshot: None,
            committed: first - 1,
            applied: first - 1,
            persisted: last,
        })
    }

    pub(crate) fn store(&self) -> &S {
        &self.store
    }

    /// The caller writes Ready entries and snapshots through this; the log reads them back.
    pub(crate) fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Where a restarting node resumes: the caller checked both are within the log, and
    /// `applied` counts as committed because the caller applied it.
    pub(crate) fn start_at(&mut self, committed: u64, applied: u64) {
        self.committed = committed.max(applied);
        self.applied = applied;
    }

    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// Last index known durable: what a leader counts for itself (pitfall 1).
    pub(crate) fn persisted(&self) -> u64 {
        self.persisted
    }

    /// The caller synced a snapshot at `index` that an earlier Ready handed out.
    pub(crate) fn stable_snap_to(&mut self, index: u64) {
        self.persisted = self.persisted.max(index);
    }

    /// The caller synced the entries an earlier Ready handed out, the last one at
    /// `(index, term)`. Ignored if the log was since rewritten there: then the entry that was
    /// synced is not the one the log holds now.
    pub(crate) fn stable_to(&mut self, index: u64, term: u64) {
        if self.match_term(index, term) {
            self.persisted = self.persisted.max(index);
        }
    }

    /// The caller applied the committed entries up to `index`.
    pub(crate) fn applied_to(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    pub(crate) fn first_index(&self) -> Result<u64, StorageError> {
        match &self.unstable_snapshot {
            Some(s) => Ok(s.meta.index + 1),
            None => self.store.first_index(),
        }
    }

    pub(crate) fn last_index(&self) -> Result<u64, StorageError> {
        if let Some(e) = self.unstable.last() {
            return Ok(e.index);
        }
        if self.unstable_snapshot.is_some() {
            return Ok(self.offset - 1);
        }
        self.store.last_index()
    }

    /// The last index, treating a storage failure as an empty log (callers that must be
    /// exact use `last_index`).
    pub(crate) fn last(&self) -> u64 {
        self.last_index().unwrap_or(0)
    }

    pub(crate) fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index >= self.offset {
            return match self.unstable.get((index - self.offset) as usize) {
                Some(e) => Ok(e.term),
                None => Err(StorageError::Unavailable(index)),
            };
        }
        if let Some(s) = &self.unstable_snapshot {
            return if index == s.meta.index {
                Ok(s.meta.term)
            } else if index < s.meta.index {
                Err(StorageError::Compacted(index))
            } else {
                Err(StorageError::Unavailable(index))
            };
        }
        self.store.term(index)
    }

    /// The term at `index`, 0 if unknown (compacted or beyond the log).
    pub(crate) fn term_or_zero(&self, index: u64) -> u64 {
        self.term(index).unwrap_or(0)
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.term_or_zero(self.last())
    }

    pub(crate) fn match_term(&self, index: u64, term: u64) -> bool {
        matches!(self.term(index), Ok(t) if t == term)
    }

    /// Whether a candidate's log (`last_index`, `last_term`) is at least as up to date as ours
    /// (§5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last())
    }

    /// Entries in `[lo, hi)` limited to about `max_bytes` (at least one).
    pub(crate) fn slice(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index()? {
            return Err(StorageError::Compacted(lo));
        }
        let mut out = Vec::new();
        let mut total = 0u64;
        if lo < self.offset {
            let stored = self.store.entries(lo, hi.min(self.offset), max_bytes)?;
            total = stored.iter().map(Entry::size).sum();
            let complete = stored
                .last()
                .is_some_and(|e| e.index + 1 == hi.min(self.offset));
            out = stored;
            if !complete {
                return Ok(out);
            }
        }
        if hi > self.offset {
            let from = (lo.max(self.offset) - self.offset) as usize;
            let to = (hi - self.offset) as usize;
            if to > self.unstable.len() {
                return Err(StorageError::Unavailable(hi - 1));
            }
            for e in &self.unstable[from..to] {
                total += e.size();
                if !out.is_empty() && total > max_bytes {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Appends entries (consecutive indexes, first ≤ last_index + 1), truncating any suffix
    /// they replace. Returns the last index.
    pub(crate) fn append(&mut self, mut entries: Vec<Entry>) -> u64 {
        let Some(first) = entries.first().map(|e| e.index) else {
            return self.last();
        };
        self.persisted = self.persisted.min(first - 1);
        if first == self.offset + self.unstable.len() as u64 {
            self.unstable.append(&mut entries);
        } else if first <= self.offset {
            self.offset = first;
            self.unstable = entries;
        } else {
            self.unstable.truncate((first - self.offset) as usize);
            self.unstable.append(&mut entries);
        }
        self.last()
    }

    /// The first entry of `entries` that is not already in the log (a conflict or a new
    /// entry), or `None` if all match (pitfall 5: then nothing is truncated).
    pub(crate) fn find_conflict(&self, entries: &[Entry]) -> Option<usize> {
        let last = self.last();
        // Fast path: the usual append extends the log.
        if entries.first().is_some_and(|e| e.index > last) {
            return Some(0);
        }
        entries
            .iter()
            .position(|e| !self.match_term(e.index, e.term))
    }

    /// The largest index ≤ `index` whose term is ≤ `term`, with its term (etcd-io/raft's
    /// `findConflictByTerm`), used for fast backtracking.
    pub(crate) fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last());
        loop {
            match self.term(i) {
                Ok(t) if t > term && i > 0 => i -= 1,
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    pub(crate) fn commit_to(&mut self, index: u64) -> bool {
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Replaces the whole log with `snapshot` (the caller checked it does not match).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let idx = snapshot.meta.index;
        self.unstable.clear();
        self.offset = idx + 1;
        self.committed = idx;
        self.applied = self.applied.max(idx);
        self.persisted = self.persisted.min(idx);
        self.unstable_snapshot = Some(snapshot);
    }

    pub(crate) fn has_unstable(&self) -> bool {
        !self.unstable.is_empty() || self.unstable_snapshot.is_some()
    }

    pub(crate) fn take_unstable(&mut self) -> (Option<Snapshot>, Vec<Entry>) {
        let entries = std::mem::take(&mut self.unstable);
        self.offset += entries.len() as u64;
        (self.unstable_snapshot.take(), entries)
    }

    /// Entries committed but not applied, if any.
    pub(crate) fn has_next_committed(&self) -> bool {
        self.committed > self.applied && self.applied < self.last()
    }

    pub(crate) fn next_committed(&self) -> Result<Vec<Entry>, StorageError> {
        let hi = self.committed.min(self.last()) + 1;
        let lo = self.applied.max(self.first_index()? - 1) + 1;
        self.slice(lo, hi, u64::MAX)
    }

    /// The snapshot to send to a follower that is behind the log's first index.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, StorageError> {
        match &self.unstable_snapshot {
            Some(s) => Ok(s.clone()),
            None => self.store.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_storage::MemStorage;
    use crate::storage::LogStore;
    use crate::types::{ConfState, EntryKind, SnapshotMeta};

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![],
        }
    }

    fn log_with(stored: &[(u64, u64)], unstable: &[(u64, u64)]) -> RaftLog<MemStorage> {
        let mut s = MemStorage::new();
        let es: Vec<_> = stored.iter().map(|&(i, t)| ent(i, t)).collect();
        s.append(&es).unwrap();
        let mut l = RaftLog::new(s).unwrap();
        l.append(unstable.iter().map(|&(i, t)| ent(i, t)).collect());
        l
    }

    #[test]
    fn reads_span_store_and_unstable() {
        let l = log_with(&[(1, 1), (2, 1)], &[(3, 2), (4, 2)]);
        assert_eq!(l.last(), 4);
        assert_eq!(l.term(2).unwrap(), 1);
        assert_eq!(l.term(4).unwrap(), 2);
        assert!(l.term(5).is_err());
        let s = l.slice(1, 5, u64::MAX).unwrap();
        assert_eq!(
            s.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(l.slice(2, 5, 0).unwrap().len(), 1);
    }

    #[test]
    fn append_truncates_only_what_it_replaces() {
        let mut l = log_with(&[(1, 1), (2, 1)], &[(3, 1), (4, 1)]);
        l.append(vec![ent(4, 2)]);
        assert_eq!(l.last(), 4);
        assert_eq!(l.term(4).unwrap(), 2);
        l.append(vec![ent(2, 3)]);
        assert_eq!(l.last(), 2);
        assert_eq!(l.term(2).unwrap(), 3);
        assert_eq!(l.persisted, 1);
    }

    #[test]
    fn find_conflict_cases() {
        let l = log_with(&[(1, 1), (2, 2), (3, 3)], &[]);
        assert_eq!(l.find_conflict(&[ent(1, 1), ent(2, 2)]), None);
        assert_eq!(l.find_conflict(&[ent(2, 2), ent(3, 3), ent(4, 4)]), Some(2));
        assert_eq!(l.find_conflict(&[ent(2, 2), ent(3, 4)]), Some(1));
        assert_eq!(l.find_conflict(&[ent(4, 4)]), Some(0));
    }

    #[test]
    fn find_conflict_by_term_walks_back() {
        let l = log_with(&[(1, 1), (2, 1), (3, 4), (4, 4), (5, 5)], &[]);
        assert_eq!(l.find_conflict_by_term(5, 4), (4, 4));
        assert_eq!(l.find_conflict_by_term(5, 3), (2, 1));
        assert_eq!(l.find_conflict_by_term(9, 9), (5, 5));
        assert_eq!(l.find_conflict_by_term(5, 0), (0, 0));
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let l = log_with(&[(1, 1), (2, 2)], &[]);
        assert!(l.is_up_to_date(1, 3));
        assert!(l.is_up_to_date(2, 2));
        assert!(!l.is_up_to_date(1, 2));
        assert!(!l.is_up_to_date(9, 1));
    }

    #[test]
    fn take_unstable_moves_entries_out() {
        let mut l = log_with(&[(1, 1)], &[(2, 1), (3, 1)]);
        let (snap, es) = l.take_unstable();
        assert!(snap.is_none());
        assert_eq!(es.len(), 2);
        assert!(!l.has_unstable());
        l.store.append(&es).unwrap();
        assert_eq!(l.last(), 3);
        assert_eq!(l.term(3).unwrap(), 1);
    }

    #[test]
    fn restore_replaces_log() {
        let mut l = log_with(&[(1, 1), (2, 1)], &[]);
        l.restore(Snapshot {
            meta: SnapshotMeta {
                index: 10,
                term: 3,
                conf_state: ConfState::with_voters([1]),
            },
            data: vec![],
        });
        assert_eq!(l.first_index().unwrap(), 11);
        assert_eq!(l.last(), 10);
        assert_eq!(l.term(10).unwrap(), 3);
        assert_eq!(l.committed, 10);
        assert!(l.term(5).is_err());
    }
}
