//! [`MemStorage`]: the in-memory [`LogStore`] for tests, the simulator and benchmarks.
//!
//! The log is one `Vec<Entry>` whose first element sits at `snapshot.meta.index + 1`, so every
//! lookup is an offset computation. `sync` is a no-op: a crash is modelled by the caller keeping
//! the store as it was after the last persisted Ready.

use crate::storage::{LogStore, Storage, StorageError};
use crate::types::{ConfState, Entry, HardState, Snapshot, SnapshotMeta};

/// An in-memory log store.
#[derive(Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// `entries[0].index == snapshot.meta.index + 1`.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// An empty log with an empty configuration (a node that will join a cluster).
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// An empty log whose configuration as of index 0 is `cs` (bootstrap).
    pub fn new_with_conf_state(cs: ConfState) -> Self {
        let mut s = MemStorage::default();
        s.snapshot.meta.conf_state = cs;
        s
    }

    fn snap_index(&self) -> u64 {
        self.snapshot.meta.index
    }

    fn last(&self) -> u64 {
        self.snap_index() + self.entries.len() as u64
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        Ok((self.hard_state, self.snapshot.meta.conf_state.clone()))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.snap_index() {
            return Err(StorageError::Compacted(lo));
        }
        if hi > self.last() + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        if lo >= hi {
            return Ok(Vec::new());
        }
        let off = self.snap_index() + 1;
        let slice = &self.entries[(lo - off) as usize..(hi - off) as usize];
        let mut total = 0u64;
        let mut n = 0;
        for e in slice {
            total += e.size();
            if n > 0 && total > max_bytes {
                break;
            }
            n += 1;
        }
        Ok(slice[..n].to_vec())
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index < self.snap_index() {
            return Err(StorageError::Compacted(index));
        }
        if index == self.snap_index() {
            return Ok(self.snapshot.meta.term);
        }
        if index > self.last() {
            return Err(StorageError::Unavailable(index));
        }
        Ok(self.entries[(index - self.snap_index() - 1) as usize].term)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.snap_index() + 1)
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.last())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

impl LogStore for MemStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.snap_index() {
            return Err(StorageError::Compacted(first.index));
        }
        if first.index > self.last() + 1 {
            return Err(StorageError::Unavailable(first.index));
        }
        self.entries
            .truncate((first.index - self.snap_index() - 1) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        self.hard_state = hs;
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let idx = snapshot.meta.index;
        if idx < self.snap_index() {
            return Err(StorageError::SnapshotOutOfDate(idx));
        }
        // Keep the suffix only if our entry at the snapshot index has the snapshot's term
        // (pitfall 21): then everything after it is consistent with the snapshot's log.
        let keep = matches!(self.term(idx), Ok(t) if t == snapshot.meta.term);
        if keep {
            let drop = (idx - self.snap_index()) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.snapshot = snapshot;
        Ok(())
    }

    fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        if index <= self.snap_index() {
            return Err(StorageError::SnapshotOutOfDate(index));
        }
        if index > self.last() {
            return Err(StorageError::Unavailable(index));
        }
        let term = self.term(index)?;
        let drop = (index - self.snap_index()) as usize;
        self.entries.drain(..drop);
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        };
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![0; 8],
        }
    }

    fn store(n: u64) -> MemStorage {
        let mut s = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3]));
        let es: Vec<_> = (1..=n).map(|i| ent(i, i.div_ceil(2))).collect();
        s.append(&es).unwrap();
        s
    }

    #[test]
    fn empty_store_bounds() {
        let s = MemStorage::new();
        assert_eq!(s.first_index().unwrap(), 1);
        assert_eq!(s.last_index().unwrap(), 0);
        assert_eq!(s.term(0).unwrap(), 0);
        assert_eq!(s.term(1), Err(StorageError::Unavailable(1)));
        assert!(s.entries(1, 1, u64::MAX).unwrap().is_empty());
        let (hs, cs) = s.initial_state().unwrap();
        assert_eq!(hs, HardState::default());
        assert_eq!(cs, ConfState::default());
    }

    #[test]
    fn bootstrap_conf_state_is_initial_state() {
        let s = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2]));
        assert_eq!(s.initial_state().unwrap().1, ConfState::with_voters([1, 2]));
    }

    #[test]
    fn entries_respects_range_and_size() {
        let s = store(10);
        assert_eq!(s.entries(3, 6, u64::MAX).unwrap().len(), 3);
        // each entry is 32 bytes: a limit of 70 gives two, a limit of 0 still gives one.
        assert_eq!(s.entries(1, 11, 70).unwrap().len(), 2);
        assert_eq!(s.entries(1, 11, 0).unwrap().len(), 1);
        assert_eq!(s.entries(1, 12, 0), Err(StorageError::Unavailable(11)));
    }

    #[test]
    fn append_replaces_conflicting_suffix() {
        let mut s = store(5);
        s.append(&[ent(3, 9)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 3);
        assert_eq!(s.term(3).unwrap(), 9);
        assert_eq!(s.append(&[ent(5, 9)]), Err(StorageError::Unavailable(5)));
    }

    #[test]
    fn create_snapshot_compacts_and_keeps_boundary_term() {
        let mut s = store(10);
        s.create_snapshot(6, ConfState::with_voters([1]), b"img".to_vec())
            .unwrap();
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.last_index().unwrap(), 10);
        assert_eq!(s.term(6).unwrap(), 3);
        assert_eq!(s.term(5), Err(StorageError::Compacted(5)));
        assert_eq!(s.entries(6, 8, u64::MAX), Err(StorageError::Compacted(6)));
        assert_eq!(
            s.create_snapshot(6, ConfState::default(), vec![]),
            Err(StorageError::SnapshotOutOfDate(6))
        );
        assert_eq!(
            s.create_snapshot(11, ConfState::default(), vec![]),
            Err(StorageError::Unavailable(11))
        );
        assert_eq!(s.initial_state().unwrap().1, ConfState::with_voters([1]));
        assert_eq!(s.append(&[ent(6, 3)]), Err(StorageError::Compacted(6)));
    }

    fn snap(index: u64, term: u64) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: ConfState::with_voters([1, 2]),
            },
            data: vec![1],
        }
    }

    #[test]
    fn apply_snapshot_keeps_matching_suffix() {
        let mut s = store(10);
        s.apply_snapshot(snap(6, 3)).unwrap();
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.last_index().unwrap(), 10);
    }

    #[test]
    fn apply_snapshot_drops_mismatching_log() {
        let mut s = store(10);
        s.apply_snapshot(snap(6, 4)).unwrap();
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.last_index().unwrap(), 6);
        assert_eq!(s.term(6).unwrap(), 4);
        let mut s = store(3);
        s.apply_snapshot(snap(8, 4)).unwrap();
        assert_eq!(s.last_index().unwrap(), 8);
        assert_eq!(
            s.apply_snapshot(snap(7, 4)),
            Err(StorageError::SnapshotOutOfDate(7))
        );
    }

    #[test]
    fn hard_state_round_trips() {
        let mut s = MemStorage::new();
        let hs = HardState {
            term: 3,
            vote: 2,
            commit: 1,
        };
        s.set_hard_state(hs).unwrap();
        s.sync().unwrap();
        assert_eq!(s.initial_state().unwrap().0, hs);
    }
}
