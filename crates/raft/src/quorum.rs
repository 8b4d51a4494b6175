//! Majority arithmetic over the voter set: the commit index a majority has reached, and the
//! outcome of a vote tally.
//!
//! Kept apart from the protocol (as etcd-io/raft's `quorum/` is) because it is pure and easy
//! to get subtly wrong; the fast version is property-tested against a naive one.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::NodeId;

/// The outcome of an election so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// A majority granted.
    Won,
    /// Enough refused that a majority can no longer grant.
    Lost,
    /// Still undecided.
    Pending,
}

/// The size of a majority of `n` voters.
pub(crate) fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The largest index that a majority of `voters` has matched, where `matched(id)` gives each
/// voter's match index (absent voters count as 0). `u64::MAX` for an empty voter set, so that
/// an empty configuration never holds back (callers never commit with one).
pub(crate) fn committed_index(
    voters: &BTreeSet<NodeId>,
    mut matched: impl FnMut(NodeId) -> u64,
) -> u64 {
    let n = voters.len();
    if n == 0 {
        return u64::MAX;
    }
    // Clusters are small: sort a stack buffer instead of allocating.
    let mut buf = [0u64; 16];
    let mut heap;
    let slice: &mut [u64] = if n <= buf.len() {
        &mut buf[..n]
    } else {
        heap = vec![0u64; n];
        &mut heap[..]
    };
    for (slot, id) in slice.iter_mut().zip(voters.iter()) {
        *slot = matched(*id);
    }
    slice.sort_unstable();
    // Sorted ascending: the value at n - majority is matched by at least `majority` voters.
    slice[n - majority(n)]
}

/// Tallies `votes` (voter → granted) over `voters`; votes from non-voters are ignored.
pub(crate) fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let (mut granted, mut rejected) = (0, 0);
    for id in voters {
        match votes.get(id) {
            Some(true) => granted += 1,
            Some(false) => rejected += 1,
            None => {}
        }
    }
    let q = majority(voters.len());
    if granted >= q {
        VoteResult::Won
    } else if rejected + q > voters.len() {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_committed(matches: &[u64]) -> u64 {
        if matches.is_empty() {
            return u64::MAX;
        }
        let q = majority(matches.len());
        let mut best = 0;
        for &cand in matches {
            let count = matches.iter().filter(|&&m| m >= cand).count();
            if count >= q && cand > best {
                best = cand;
            }
        }
        best
    }

    #[test]
    fn committed_index_examples() {
        let v: BTreeSet<NodeId> = [1, 2, 3].into();
        let m = BTreeMap::from([(1, 5u64), (2, 3), (3, 9)]);
        assert_eq!(committed_index(&v, |id| m[&id]), 5);
        let v: BTreeSet<NodeId> = [1, 2, 3, 4].into();
        let m = BTreeMap::from([(1, 5u64), (2, 3), (3, 9), (4, 1)]);
        assert_eq!(committed_index(&v, |id| m[&id]), 3);
        let v: BTreeSet<NodeId> = [1].into();
        assert_eq!(committed_index(&v, |_| 7), 7);
        assert_eq!(committed_index(&BTreeSet::new(), |_| 7), u64::MAX);
    }

    #[test]
    fn vote_result_examples() {
        let v: BTreeSet<NodeId> = [1, 2, 3].into();
        let mut votes = BTreeMap::from([(1, true)]);
        assert_eq!(vote_result(&v, &votes), VoteResult::Pending);
        votes.insert(2, false);
        assert_eq!(vote_result(&v, &votes), VoteResult::Pending);
        votes.insert(3, true);
        assert_eq!(vote_result(&v, &votes), VoteResult::Won);
        let votes = BTreeMap::from([(1, true), (2, false), (3, false)]);
        assert_eq!(vote_result(&v, &votes), VoteResult::Lost);
        // A learner's grant (id 9) never counts.
        let votes = BTreeMap::from([(1, true), (9, true)]);
        assert_eq!(vote_result(&v, &votes), VoteResult::Pending);
    }

    proptest! {
        #[test]
        fn committed_index_matches_naive(matches in proptest::collection::vec(0u64..50, 0..20)) {
            let voters: BTreeSet<NodeId> = (1..=matches.len() as u64).collect();
            let fast = committed_index(&voters, |id| matches[(id - 1) as usize]);
            prop_assert_eq!(fast, naive_committed(&matches));
        }

        #[test]
        fn vote_result_matches_naive(votes in proptest::collection::vec(proptest::option::of(any::<bool>()), 1..10)) {
            let voters: BTreeSet<NodeId> = (1..=votes.len() as u64).collect();
            let map: BTreeMap<NodeId, bool> = votes.iter().enumerate()
                .filter_map(|(i, v)| v.map(|b| (i as u64 + 1, b))).collect();
            let n = votes.len();
            let g = votes.iter().filter(|v| **v == Some(true)).count();
            let missing = votes.iter().filter(|v| v.is_none()).count();
            let expected = if 2 * g > n { VoteResult::Won }
                else if 2 * (g + missing) <= n { VoteResult::Lost }
                else { VoteResult::Pending };
            prop_assert_eq!(vote_result(&voters, &map), expected);
        }
    }
}
