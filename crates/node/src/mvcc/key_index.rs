//! The in-memory key index: for every key, the revisions at which it changed.
//!
//! Modelled on etcd's `key_index.go`: a key's history is a list of *generations*; a generation
//! starts with the put that (re)creates the key and ends with the tombstone that deletes it, and
//! the last generation is the live one (empty when the key is currently deleted). The index
//! answers "which revision of this key was visible at store revision R" without touching disk,
//! so ranges only read the values they return. It is rebuilt from the revision tree on open, so
//! it is never persisted itself.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::revision::Revision;

/// One life of a key, from its creation to its deletion.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Generation {
    /// Main revision of the put that created the key in this generation.
    created: i64,
    /// Version of the key at the last revision in `revs`.
    ver: i64,
    /// Revisions of the changes, ascending; in a finished generation the last one is the
    /// tombstone. Compaction trims the front.
    revs: Vec<Revision>,
}

/// What the index knows about one key at a given store revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAt {
    /// Revision of the change that produced the visible value.
    pub modified: Revision,
    /// Main revision at which the key was created (in this generation).
    pub created: i64,
    /// Number of puts since creation, counting the visible one.
    pub version: i64,
}

/// The history of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    generations: Vec<Generation>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            generations: vec![Generation::default()],
        }
    }
}

impl KeyIndex {
    fn last_mut(&mut self) -> &mut Generation {
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let last = self.generations.len() - 1;
        &mut self.generations[last]
    }

    /// Records a put at `rev`; the key is created if it is currently deleted.
    pub fn put(&mut self, rev: Revision) {
        let g = self.last_mut();
        if g.revs.is_empty() {
            g.created = rev.main;
        }
        g.revs.push(rev);
        g.ver += 1;
    }

    /// Records a put found while rebuilding the index from disk, where compaction may have
    /// removed the earlier revisions of the generation, so the creation revision and version
    /// come from the stored record.
    pub fn restore(&mut self, rev: Revision, created: i64, version: i64) {
        let g = self.last_mut();
        if g.revs.is_empty() {
            g.created = created;
        }
        g.revs.push(rev);
        g.ver = version;
    }

    /// Records a deletion at `rev`. Returns false (and changes nothing) if the key is not live.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if !self.is_live() {
            return false;
        }
        let g = self.last_mut();
        g.revs.push(rev);
        g.ver += 1;
        self.generations.push(Generation::default());
        true
    }

    /// Whether the key currently exists.
    pub fn is_live(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.revs.is_empty())
    }

    /// The change visible at store revision `at`, or `None` if the key did not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let Some(first) = g.revs.first() else {
                continue;
            };
            if i != last {
                let tomb = g.revs[g.revs.len() - 1];
                if tomb.main <= at {
                    return None;
                }
            }
            if first.main <= at {
                let n = g.revs.partition_point(|r| r.main <= at);
                let idx = n - 1;
                let version = g.ver - (g.revs.len() - 1 - idx) as i64;
                return Some(KeyAt {
                    modified: g.revs[idx],
                    created: g.created,
                    version,
                });
            }
        }
        None
    }

    /// All revisions of this key, oldest first (used by compaction accounting and tests).
    pub fn all_revisions(&self) -> impl Iterator<Item = Revision> + '_ {
        self.generations.iter().flat_map(|g| g.revs.iter().copied())
    }

    /// Drops history older than `at`, keeping the change visible at `at` if the key was live
    /// then. Removed revisions are appended to `removed` so their records can be deleted.
    /// Returns true if nothing is left of the key (it is deleted and has no history).
    pub fn compact(&mut self, at: i64, removed: &mut Vec<Revision>) -> bool {
        let mut gi = 0;
        while gi + 1 < self.generations.len() {
            let g = &self.generations[gi];
            match g.revs.last() {
                Some(tomb) if tomb.main <= at => {
                    removed.extend(g.revs.iter().copied());
                    gi += 1;
                }
                Some(_) => break,
                None => gi += 1,
            }
        }
        self.generations.drain(..gi);
        let g = self.last_mut_or_first();
        let n = g.revs.partition_point(|r| r.main <= at);
        if n > 1 {
            removed.extend(g.revs.drain(..n - 1));
        }
        self.generations.len() == 1 && self.generations[0].revs.is_empty()
    }

    fn last_mut_or_first(&mut self) -> &mut Generation {
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        &mut self.generations[0]
    }
}

/// A key range with etcd's `range_end` conventions already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly one key (empty `range_end`).
    Single(Vec<u8>),
    /// Every key `>= key` (`range_end == "\0"`).
    From(Vec<u8>),
    /// Keys in `[key, end)`; empty if `end <= key`.
    Between(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    /// Interprets an etcd `(key, range_end)` pair.
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        if range_end.is_empty() {
            KeyRange::Single(key.to_vec())
        } else if range_end == [0] {
            KeyRange::From(key.to_vec())
        } else {
            KeyRange::Between(key.to_vec(), range_end.to_vec())
        }
    }

    /// Whether `k` falls in the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(key) => k == key.as_slice(),
            KeyRange::From(key) => k >= key.as_slice(),
            KeyRange::Between(key, end) => k >= key.as_slice() && k < end.as_slice(),
        }
    }

    /// Whether the two ranges share a key.
    pub fn intersects(&self, other: &KeyRange) -> bool {
        let (a_lo, a_hi) = self.bounds();
        let (b_lo, b_hi) = other.bounds();
        let lo = a_lo.max(b_lo);
        let below = |hi: &Bound<&[u8]>| match hi {
            Bound::Included(h) => lo <= *h,
            Bound::Excluded(h) => lo < *h,
            Bound::Unbounded => true,
        };
        below(&a_hi) && below(&b_hi)
    }

    /// Lower and upper bounds of the range.
    pub fn bounds(&self) -> (&[u8], Bound<&[u8]>) {
        match self {
            KeyRange::Single(key) => (key, Bound::Included(key.as_slice())),
            KeyRange::From(key) => (key, Bound::Unbounded),
            KeyRange::Between(key, end) => (key, Bound::Excluded(end.as_slice())),
        }
    }
}

/// The index of every key in the store.
#[derive(Debug, Clone, Default)]
pub struct TreeIndex {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

impl TreeIndex {
    /// The history of one key, if it has any.
    pub fn key(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.keys.get(key)
    }

    /// The history of one key, created empty if absent.
    pub fn key_mut(&mut self, key: &[u8]) -> &mut KeyIndex {
        self.keys.entry(key.to_vec()).or_default()
    }

    /// The change visible at `at` for a single key.
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key).and_then(|ki| ki.get(at))
    }

    /// Keys in `range` that existed at `at`, in key order, with their visible change.
    pub fn range<'a>(
        &'a self,
        range: &'a KeyRange,
        at: i64,
    ) -> Box<dyn Iterator<Item = (&'a [u8], KeyAt)> + 'a> {
        let (lo, hi) = range.bounds();
        if let Bound::Excluded(h) = hi
            && h <= lo
        {
            return Box::new(std::iter::empty());
        }
        let it = self
            .keys
            .range::<[u8], _>((Bound::Included(lo), hi))
            .filter_map(move |(k, ki)| ki.get(at).map(|a| (k.as_slice(), a)));
        Box::new(it)
    }

    /// Compacts every key at `at`; returns the revisions whose records must be deleted.
    pub fn compact(&mut self, at: i64) -> Vec<Revision> {
        let mut removed = Vec::new();
        self.keys.retain(|_, ki| !ki.compact(at, &mut removed));
        removed.sort();
        removed
    }

    /// Number of keys with any history (live or not).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// The history etcd's key_index_test uses: puts at 2, 4, tombstone 6; puts 8, 10,
    /// tombstone 12; puts 14, 14.1, 16.
    fn sample() -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(r(2));
        ki.put(r(4));
        assert!(ki.tombstone(r(6)));
        ki.put(r(8));
        ki.put(r(10));
        assert!(ki.tombstone(r(12)));
        ki.put(r(14));
        ki.put(Revision::new(14, 1));
        ki.put(r(16));
        ki
    }

    #[test]
    fn get_follows_generations() {
        let ki = sample();
        assert_eq!(ki.get(1), None);
        let at = |a: i64| ki.get(a).map(|k| (k.modified, k.created, k.version));
        assert_eq!(at(2), Some((r(2), 2, 1)));
        assert_eq!(at(5), Some((r(4), 2, 2)));
        assert_eq!(at(6), None);
        assert_eq!(at(7), None);
        assert_eq!(at(9), Some((r(8), 8, 1)));
        assert_eq!(at(11), Some((r(10), 8, 2)));
        assert_eq!(at(12), None);
        assert_eq!(at(14), Some((Revision::new(14, 1), 14, 2)));
        assert_eq!(at(100), Some((r(16), 14, 3)));
        assert!(ki.is_live());
    }

    #[test]
    fn tombstone_of_deleted_key_is_refused() {
        let mut ki = KeyIndex::default();
        assert!(!ki.tombstone(r(1)));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        assert!(!ki.tombstone(r(4)));
        assert!(!ki.is_live());
    }

    #[test]
    fn compaction_keeps_what_is_visible_and_removes_the_rest() {
        for at in 1..=17 {
            let full = sample();
            let mut ki = full.clone();
            let mut removed = Vec::new();
            let empty = ki.compact(at, &mut removed);
            assert!(!empty);
            for read in at..=17 {
                assert_eq!(ki.get(read), full.get(read), "compact {at} read {read}");
            }
            let kept: Vec<_> = ki.all_revisions().collect();
            for rev in full.all_revisions() {
                assert_ne!(kept.contains(&rev), removed.contains(&rev), "{rev:?}");
            }
            // Everything older than the visible revision at `at` is gone.
            let visible = full.get(at).map(|k| k.modified);
            for rev in &kept {
                assert!(
                    rev.main > at || Some(*rev) == visible,
                    "at {at} kept {rev:?}"
                );
            }
        }
    }

    #[test]
    fn compaction_of_deleted_key_empties_it() {
        let mut ki = KeyIndex::default();
        ki.put(r(1));
        ki.put(r(2));
        ki.tombstone(r(3));
        let mut removed = Vec::new();
        assert!(!ki.compact(2, &mut removed));
        assert_eq!(removed, vec![r(1)]);
        assert!(ki.compact(3, &mut removed));
        assert_eq!(removed, vec![r(1), r(2), r(3)]);
    }

    #[test]
    fn ranges_resolve_etcd_conventions() {
        assert_eq!(KeyRange::new(b"a", b""), KeyRange::Single(b"a".to_vec()));
        assert_eq!(KeyRange::new(b"a", b"\0"), KeyRange::From(b"a".to_vec()));
        let ac = KeyRange::new(b"a", b"c");
        assert!(ac.contains(b"a") && ac.contains(b"b\xff") && !ac.contains(b"c"));
        assert!(ac.intersects(&KeyRange::Single(b"b".to_vec())));
        assert!(!ac.intersects(&KeyRange::Single(b"c".to_vec())));
        assert!(ac.intersects(&KeyRange::From(b"b".to_vec())));
        assert!(!KeyRange::new(b"c", b"a").contains(b"b"));

        let mut idx = TreeIndex::default();
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            idx.key_mut(*k).put(r(i as i64 + 1));
        }
        let keys = |range: KeyRange, at| -> Vec<Vec<u8>> {
            idx.range(&range, at).map(|(k, _)| k.to_vec()).collect()
        };
        assert_eq!(keys(KeyRange::new(b"a", b"c"), 3).len(), 2);
        assert_eq!(keys(KeyRange::new(b"a", b"c"), 1).len(), 1);
        assert_eq!(keys(KeyRange::new(b"\0", b"\0"), 3).len(), 3);
        assert_eq!(keys(KeyRange::new(b"c", b"a"), 3).len(), 0);
    }
}
