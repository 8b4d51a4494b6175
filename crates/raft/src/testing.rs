//! The public storage conformance suite: one set of checks that every [`LogStore`] must pass,
//! so the in-memory store the simulator trusts and the durable store a real node runs on cannot
//! drift apart (openraft's `testing::Suite`, `openraft/src/testing/log/suite.rs`).
//!
//! Use it from a test of the implementation:
//!
//! ```ignore
//! flotilla_raft::testing::Suite::test_all(|| MyStore::new_in(temp_dir()));
//! ```
//!
//! [`Suite::test_all`] runs every check on a fresh store from the builder. Each check is also a
//! public function taking one fresh store, so a failing one can be run alone; each panics with a
//! message that names the check and what the contract says should have happened. Stores that
//! can be bootstrapped with a configuration (see [`Storage::initial_state`](crate::Storage::initial_state)) also run
//! [`Suite::test_bootstrapped`].
//!
//! The contract checked is the one documented on [`crate::Storage`] and [`LogStore`]; where those docs leave a
//! choice open, the suite follows etcd-io/raft's `MemoryStorage` and says so on the check.
//! Only variants of [`StorageError`] are compared, never the index an error carries.
//!
//! This module is compiled into the library (not behind `cfg(test)`) so other crates can run it,
//! and therefore uses nothing but the crate's own dependencies.
//!
//! It is one file of about 900 lines on purpose: a flat list of independent checks of about 30
//! lines each, the list itself (`test_all`) and a dozen small helpers they share at the top. A
//! reader looks up one check by the name a failure prints; splitting the list by topic would
//! put the checks and the list in different files without making any check easier to read.

use crate::storage::{LogStore, StorageError};
use crate::types::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};

/// The storage conformance suite. See the [module docs](self).
pub struct Suite;

/// An entry whose data names its position, so a misplaced entry shows up in a failure message.
fn ent(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: format!("entry {index} of term {term}").into_bytes(),
    }
}

/// Entries `lo..=hi`, all of `term`.
fn ents(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..=hi).map(|i| ent(i, term)).collect()
}

/// Entries `1..=10` with terms 1,1,2,2,3,3,4,4,5,5: enough term changes that a check reading
/// the wrong index's term fails.
fn ten_entries() -> Vec<Entry> {
    (1..=10).map(|i| ent(i, i.div_ceil(2))).collect()
}

fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState {
        voters: voters.iter().copied().collect(),
        learners: learners.iter().copied().collect(),
    }
}

fn snapshot(index: u64, term: u64, conf_state: ConfState, data: &[u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state,
        },
        data: data.to_vec(),
    }
}

/// Unwraps a storage result that the contract says must succeed.
#[track_caller]
fn ok<T>(check: &str, what: &str, result: Result<T, StorageError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("[{check}] {what} must succeed, but failed: {e:?}"),
    }
}

/// Asserts that a result failed with the given error variant (its index is not compared).
#[track_caller]
fn expect_err<T: std::fmt::Debug>(
    check: &str,
    what: &str,
    result: Result<T, StorageError>,
    want: fn(&StorageError) -> bool,
    want_name: &str,
) {
    match result {
        Err(ref e) if want(e) => {}
        other => panic!("[{check}] {what} must fail with StorageError::{want_name}, got {other:?}"),
    }
}

fn is_compacted(e: &StorageError) -> bool {
    matches!(e, StorageError::Compacted(_))
}

fn is_unavailable(e: &StorageError) -> bool {
    matches!(e, StorageError::Unavailable(_))
}

fn is_out_of_date(e: &StorageError) -> bool {
    matches!(e, StorageError::SnapshotOutOfDate(_))
}

/// Asserts first and last index.
#[track_caller]
fn expect_bounds<S: LogStore>(check: &str, store: &S, first: u64, last: u64) {
    let got_first = ok(check, "first_index()", store.first_index());
    let got_last = ok(check, "last_index()", store.last_index());
    assert_eq!(
        (got_first, got_last),
        (first, last),
        "[{check}] (first_index, last_index) must be ({first}, {last})"
    );
}

/// Asserts that the whole log `first_index()..=last_index()` is exactly `want`.
#[track_caller]
fn expect_log<S: LogStore>(check: &str, store: &S, want: &[Entry]) {
    let first = ok(check, "first_index()", store.first_index());
    let last = ok(check, "last_index()", store.last_index());
    let got = ok(
        check,
        "entries(first_index, last_index + 1)",
        store.entries(first, last + 1, u64::MAX),
    );
    assert_eq!(
        got, want,
        "[{check}] the log must hold exactly these entries"
    );
    for e in want {
        let term = ok(check, "term(i) of a stored entry", store.term(e.index));
        assert_eq!(
            term, e.term,
            "[{check}] term({}) must be {}",
            e.index, e.term
        );
    }
}

impl Suite {
    /// Runs every check, each on a fresh store from `builder`. Panics on the first failure.
    pub fn test_all<S, B>(builder: B)
    where
        S: LogStore,
        B: Fn() -> S,
    {
        let checks: &[fn(S)] = &[
            Self::initial_state_empty,
            Self::hard_state_round_trip,
            Self::append_extends,
            Self::append_empty_is_noop,
            Self::append_keeps_kind_and_data,
            Self::append_overwrites_conflict_and_truncates,
            Self::append_truncates_after_batch,
            Self::append_replaces_from_first_entry,
            Self::append_gap_rejected,
            Self::append_compacted_rejected,
            Self::entries_half_open_ranges,
            Self::entries_out_of_range,
            Self::entries_max_bytes,
            Self::term_bounds,
            Self::create_snapshot_compacts_and_keeps_term,
            Self::create_snapshot_of_whole_log,
            Self::create_snapshot_errors,
            Self::apply_snapshot_keeps_matching_suffix,
            Self::apply_snapshot_drops_conflicting_log,
            Self::apply_snapshot_beyond_log_drops_log,
            Self::apply_snapshot_on_empty_store,
            Self::apply_snapshot_older_refused,
            Self::snapshot_then_append_and_conflict,
            Self::sync_keeps_state,
        ];
        for check in checks {
            check(builder());
        }
    }

    /// Runs the checks for stores bootstrapped with a configuration as of index 0 (what
    /// `MemStorage::new_with_conf_state` builds), each on a fresh store from `builder`.
    pub fn test_bootstrapped<S, B>(builder: B)
    where
        S: LogStore,
        B: Fn(ConfState) -> S,
    {
        let cs = conf(&[1, 2, 3], &[4]);
        Self::initial_state_bootstrapped(builder(cs.clone()), cs.clone());
        Self::bootstrapped_conf_survives_append(builder(cs.clone()), cs);
    }

    /// A new store: default hard state and configuration, no entries, first index 1, last
    /// index 0, `term(0) == 0`, an empty snapshot.
    pub fn initial_state_empty<S: LogStore>(store: S) {
        let c = "initial_state_empty";
        let (hs, cs) = ok(c, "initial_state()", store.initial_state());
        assert_eq!(hs, HardState::default(), "[{c}] hard state of a new store");
        assert_eq!(cs, ConfState::default(), "[{c}] conf state of a new store");
        expect_bounds(c, &store, 1, 0);
        assert_eq!(
            ok(c, "term(0)", store.term(0)),
            0,
            "[{c}] term(0) must be 0"
        );
        let snap = ok(c, "snapshot()", store.snapshot());
        assert!(
            snap.is_empty(),
            "[{c}] snapshot of a new store must be empty: {snap:?}"
        );
        assert_eq!(
            ok(c, "entries(1, 1)", store.entries(1, 1, u64::MAX)),
            vec![],
            "[{c}] entries(1, 1) of a new store"
        );
        expect_err(
            c,
            "term(1) on a new store",
            store.term(1),
            is_unavailable,
            "Unavailable",
        );
        expect_err(
            c,
            "entries(1, 2) on a new store",
            store.entries(1, 2, u64::MAX),
            is_unavailable,
            "Unavailable",
        );
    }

    /// A bootstrapped store reports its configuration from `initial_state` and has no entries.
    pub fn initial_state_bootstrapped<S: LogStore>(store: S, cs: ConfState) {
        let c = "initial_state_bootstrapped";
        let (hs, got) = ok(c, "initial_state()", store.initial_state());
        assert_eq!(
            hs,
            HardState::default(),
            "[{c}] hard state of a bootstrapped store"
        );
        assert_eq!(
            got, cs,
            "[{c}] conf state must be the bootstrap configuration"
        );
        expect_bounds(c, &store, 1, 0);
        assert_eq!(
            ok(c, "term(0)", store.term(0)),
            0,
            "[{c}] term(0) must be 0"
        );
    }

    /// Appending entries does not change the configuration `initial_state` reports (the core
    /// replays `ConfChange` entries itself).
    pub fn bootstrapped_conf_survives_append<S: LogStore>(mut store: S, cs: ConfState) {
        let c = "bootstrapped_conf_survives_append";
        ok(c, "append(1..=3)", store.append(&ents(1, 3, 1)));
        let (_, got) = ok(c, "initial_state()", store.initial_state());
        assert_eq!(
            got, cs,
            "[{c}] conf state must stay the bootstrap configuration"
        );
        expect_log(c, &store, &ents(1, 3, 1));
    }

    /// `set_hard_state` is read back by `initial_state`, and a later one replaces it.
    pub fn hard_state_round_trip<S: LogStore>(mut store: S) {
        let c = "hard_state_round_trip";
        let hs = HardState {
            term: 7,
            vote: 3,
            commit: 0,
        };
        ok(c, "set_hard_state", store.set_hard_state(hs));
        let (got, _) = ok(c, "initial_state()", store.initial_state());
        assert_eq!(
            got, hs,
            "[{c}] initial_state must return the hard state set"
        );
        ok(c, "append(1..=4)", store.append(&ents(1, 4, 7)));
        let hs2 = HardState {
            term: 9,
            vote: 0,
            commit: 4,
        };
        ok(c, "set_hard_state", store.set_hard_state(hs2));
        let (got, _) = ok(c, "initial_state()", store.initial_state());
        assert_eq!(
            got, hs2,
            "[{c}] a later set_hard_state must replace the earlier one"
        );
    }

    /// Consecutive appends extend the log.
    pub fn append_extends<S: LogStore>(mut store: S) {
        let c = "append_extends";
        ok(c, "append(1..=3)", store.append(&ents(1, 3, 1)));
        expect_bounds(c, &store, 1, 3);
        ok(c, "append(4..=5)", store.append(&ents(4, 5, 2)));
        expect_bounds(c, &store, 1, 5);
        let mut want = ents(1, 3, 1);
        want.extend(ents(4, 5, 2));
        expect_log(c, &store, &want);
    }

    /// Appending nothing changes nothing.
    pub fn append_empty_is_noop<S: LogStore>(mut store: S) {
        let c = "append_empty_is_noop";
        ok(c, "append([]) on a new store", store.append(&[]));
        expect_bounds(c, &store, 1, 0);
        ok(c, "append(1..=3)", store.append(&ents(1, 3, 1)));
        ok(c, "append([])", store.append(&[]));
        expect_log(c, &store, &ents(1, 3, 1));
    }

    /// Entry kind and data (empty, binary, large) come back exactly as appended.
    pub fn append_keeps_kind_and_data<S: LogStore>(mut store: S) {
        let c = "append_keeps_kind_and_data";
        let entries = vec![
            Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Normal,
                data: vec![],
            },
            Entry {
                term: 1,
                index: 2,
                kind: EntryKind::ConfChange,
                data: vec![0, 1, 2, 255, 0],
            },
            Entry {
                term: u64::MAX,
                index: 3,
                kind: EntryKind::Normal,
                data: (0..64 * 1024).map(|i| (i % 251) as u8).collect(),
            },
        ];
        ok(c, "append", store.append(&entries));
        expect_log(c, &store, &entries);
    }

    /// A conflicting append replaces the entries from its first index and removes the rest
    /// (the log never keeps a tail that the new entries did not vouch for).
    pub fn append_overwrites_conflict_and_truncates<S: LogStore>(mut store: S) {
        let c = "append_overwrites_conflict_and_truncates";
        ok(c, "append(1..=5)", store.append(&ents(1, 5, 1)));
        ok(c, "append([3, 4] of term 2)", store.append(&ents(3, 4, 2)));
        expect_bounds(c, &store, 1, 4);
        let mut want = ents(1, 2, 1);
        want.extend(ents(3, 4, 2));
        expect_log(c, &store, &want);
        expect_err(
            c,
            "term(5) after truncation",
            store.term(5),
            is_unavailable,
            "Unavailable",
        );
    }

    /// Even an append whose entries match removes every entry after the batch: the core only
    /// hands over entries that conflict or extend, so the store does not second-guess it.
    pub fn append_truncates_after_batch<S: LogStore>(mut store: S) {
        let c = "append_truncates_after_batch";
        ok(c, "append(1..=5)", store.append(&ents(1, 5, 1)));
        ok(c, "append([2] of term 1)", store.append(&ents(2, 2, 1)));
        expect_log(c, &store, &ents(1, 2, 1));
        ok(c, "append(3..=6 of term 1)", store.append(&ents(3, 6, 1)));
        expect_log(c, &store, &ents(1, 6, 1));
    }

    /// An append at the first index replaces the whole log.
    pub fn append_replaces_from_first_entry<S: LogStore>(mut store: S) {
        let c = "append_replaces_from_first_entry";
        ok(c, "append(1..=5)", store.append(&ents(1, 5, 1)));
        ok(c, "append(1..=2 of term 3)", store.append(&ents(1, 2, 3)));
        expect_log(c, &store, &ents(1, 2, 3));
    }

    /// An append that would leave a hole after the last index fails and changes nothing.
    pub fn append_gap_rejected<S: LogStore>(mut store: S) {
        let c = "append_gap_rejected";
        expect_err(
            c,
            "append([2]) on a new store",
            store.append(&ents(2, 3, 1)),
            is_unavailable,
            "Unavailable",
        );
        expect_bounds(c, &store, 1, 0);
        ok(c, "append(1..=3)", store.append(&ents(1, 3, 1)));
        expect_err(
            c,
            "append([5]) after last index 3",
            store.append(&ents(5, 6, 2)),
            is_unavailable,
            "Unavailable",
        );
        expect_log(c, &store, &ents(1, 3, 1));
    }

    /// An append at or below the snapshot index fails and changes nothing.
    pub fn append_compacted_rejected<S: LogStore>(mut store: S) {
        let c = "append_compacted_rejected";
        ok(c, "append(1..=10)", store.append(&ten_entries()));
        ok(
            c,
            "create_snapshot(5)",
            store.create_snapshot(5, conf(&[1], &[]), b"s".to_vec()),
        );
        expect_err(
            c,
            "append([5]) at the snapshot index",
            store.append(&ents(5, 6, 9)),
            is_compacted,
            "Compacted",
        );
        expect_err(
            c,
            "append([3]) below the snapshot index",
            store.append(&ents(3, 8, 9)),
            is_compacted,
            "Compacted",
        );
        expect_log(c, &store, &ten_entries()[5..]);
        ok(
            c,
            "append([6]) right after the snapshot",
            store.append(&ents(6, 6, 9)),
        );
        expect_bounds(c, &store, 6, 6);
    }

    /// `entries(lo, hi)` is the half-open range `[lo, hi)`.
    pub fn entries_half_open_ranges<S: LogStore>(mut store: S) {
        let c = "entries_half_open_ranges";
        let all = ten_entries();
        ok(c, "append(1..=10)", store.append(&all));
        let cases: &[(u64, u64)] = &[(1, 11), (2, 4), (1, 2), (10, 11), (5, 5), (11, 11), (3, 10)];
        for &(lo, hi) in cases {
            let got = ok(
                c,
                "entries(lo, hi) in range",
                store.entries(lo, hi, u64::MAX),
            );
            let want = &all[(lo - 1) as usize..(hi - 1) as usize];
            assert_eq!(got, want, "[{c}] entries({lo}, {hi}) must be [{lo}, {hi})");
        }
    }

    /// Ranges that start before the first index are compacted; ranges that end after
    /// `last_index() + 1` are unavailable.
    pub fn entries_out_of_range<S: LogStore>(mut store: S) {
        let c = "entries_out_of_range";
        ok(c, "append(1..=10)", store.append(&ten_entries()));
        expect_err(
            c,
            "entries(1, 12)",
            store.entries(1, 12, u64::MAX),
            is_unavailable,
            "Unavailable",
        );
        expect_err(
            c,
            "entries(11, 12)",
            store.entries(11, 12, u64::MAX),
            is_unavailable,
            "Unavailable",
        );
        expect_err(
            c,
            "entries(0, 1)",
            store.entries(0, 1, u64::MAX),
            is_compacted,
            "Compacted",
        );
        ok(
            c,
            "create_snapshot(4)",
            store.create_snapshot(4, conf(&[1], &[]), vec![]),
        );
        for lo in [1, 3, 4] {
            expect_err(
                c,
                "entries(lo, 8) with lo at or below the snapshot index 4",
                store.entries(lo, 8, u64::MAX),
                is_compacted,
                "Compacted",
            );
        }
        let got = ok(c, "entries(5, 11)", store.entries(5, 11, u64::MAX));
        assert_eq!(
            got,
            &ten_entries()[4..],
            "[{c}] entries(5, 11) after compaction"
        );
    }

    /// `max_bytes` limits the total [`Entry::size`] as etcd's `limitSize` does: the longest
    /// prefix whose total is `<= max_bytes`, but never less than one entry.
    pub fn entries_max_bytes<S: LogStore>(mut store: S) {
        let c = "entries_max_bytes";
        let entries: Vec<Entry> = (1..=6)
            .map(|i| Entry {
                term: 1,
                index: i,
                kind: EntryKind::Normal,
                data: vec![i as u8; 10 * i as usize],
            })
            .collect();
        ok(c, "append(1..=6)", store.append(&entries));
        let size = |n: usize| entries[..n].iter().map(Entry::size).sum::<u64>();
        let cases: &[(u64, usize)] = &[
            (0, 1),
            (1, 1),
            (size(1), 1),
            (size(2) - 1, 1),
            (size(2), 2),
            (size(3) - 1, 2),
            (size(3), 3),
            (size(6) - 1, 5),
            (size(6), 6),
            (u64::MAX, 6),
        ];
        for &(max_bytes, n) in cases {
            let got = ok(c, "entries(1, 7, max)", store.entries(1, 7, max_bytes));
            assert_eq!(
                got,
                &entries[..n],
                "[{c}] entries(1, 7, {max_bytes}) must return the first {n} entries"
            );
        }
        let got = ok(c, "entries(3, 4, 0)", store.entries(3, 4, 0));
        assert_eq!(
            got,
            &entries[2..3],
            "[{c}] one entry even when it exceeds max_bytes"
        );
        let got = ok(c, "entries(2, 4, MAX)", store.entries(2, 4, u64::MAX));
        assert_eq!(
            got,
            &entries[1..3],
            "[{c}] hi bounds the range whatever max_bytes is"
        );
        let got = ok(c, "entries(2, 2, 0)", store.entries(2, 2, 0));
        assert!(
            got.is_empty(),
            "[{c}] an empty range returns no entry, got {got:?}"
        );
    }

    /// `term(i)` for `0..=last_index()`, and unavailable beyond.
    pub fn term_bounds<S: LogStore>(mut store: S) {
        let c = "term_bounds";
        ok(c, "append(1..=10)", store.append(&ten_entries()));
        assert_eq!(
            ok(c, "term(0)", store.term(0)),
            0,
            "[{c}] term(0) must be 0"
        );
        for e in ten_entries() {
            assert_eq!(
                ok(c, "term(i)", store.term(e.index)),
                e.term,
                "[{c}] term({})",
                e.index
            );
        }
        expect_err(c, "term(11)", store.term(11), is_unavailable, "Unavailable");
        expect_err(
            c,
            "term(u64::MAX)",
            store.term(u64::MAX),
            is_unavailable,
            "Unavailable",
        );
    }

    /// `create_snapshot(i)` records the snapshot, drops entries up to `i`, and keeps the term
    /// at `i` readable (Raft pitfall 8: log matching at the compaction boundary).
    pub fn create_snapshot_compacts_and_keeps_term<S: LogStore>(mut store: S) {
        let c = "create_snapshot_compacts_and_keeps_term";
        let all = ten_entries();
        ok(c, "append(1..=10)", store.append(&all));
        let hs = HardState {
            term: 5,
            vote: 1,
            commit: 8,
        };
        ok(c, "set_hard_state", store.set_hard_state(hs));
        let cs = conf(&[1, 2, 3], &[7]);
        ok(
            c,
            "create_snapshot(5)",
            store.create_snapshot(5, cs.clone(), b"state at 5".to_vec()),
        );
        expect_bounds(c, &store, 6, 10);
        assert_eq!(
            ok(c, "term(5) at the snapshot index", store.term(5)),
            all[4].term,
            "[{c}] term at the snapshot index must stay known (pitfall 8)"
        );
        expect_err(
            c,
            "term(4) below the snapshot",
            store.term(4),
            is_compacted,
            "Compacted",
        );
        expect_log(c, &store, &all[5..]);
        let snap = ok(c, "snapshot()", store.snapshot());
        assert_eq!(
            snap,
            snapshot(5, all[4].term, cs.clone(), b"state at 5"),
            "[{c}] snapshot() must return the snapshot created"
        );
        let (got_hs, got_cs) = ok(c, "initial_state()", store.initial_state());
        assert_eq!(
            got_hs, hs,
            "[{c}] create_snapshot must not change the hard state"
        );
        assert_eq!(got_cs, cs, "[{c}] conf state must be the snapshot's");
        ok(
            c,
            "create_snapshot(8) after create_snapshot(5)",
            store.create_snapshot(8, conf(&[1, 2], &[]), b"state at 8".to_vec()),
        );
        expect_bounds(c, &store, 9, 10);
        assert_eq!(
            ok(c, "term(8)", store.term(8)),
            all[7].term,
            "[{c}] term(8)"
        );
        let (_, got_cs) = ok(c, "initial_state()", store.initial_state());
        assert_eq!(
            got_cs,
            conf(&[1, 2], &[]),
            "[{c}] conf state of the newer snapshot"
        );
    }

    /// A snapshot of the whole log leaves it empty at `last_index() == snapshot index`, and
    /// appending continues right after it.
    pub fn create_snapshot_of_whole_log<S: LogStore>(mut store: S) {
        let c = "create_snapshot_of_whole_log";
        let all = ten_entries();
        ok(c, "append(1..=10)", store.append(&all));
        ok(
            c,
            "create_snapshot(10)",
            store.create_snapshot(10, conf(&[1], &[]), vec![1]),
        );
        expect_bounds(c, &store, 11, 10);
        assert_eq!(
            ok(c, "term(10)", store.term(10)),
            all[9].term,
            "[{c}] term(10)"
        );
        let got = ok(c, "entries(11, 11)", store.entries(11, 11, u64::MAX));
        assert!(
            got.is_empty(),
            "[{c}] entries(11, 11) must be empty, got {got:?}"
        );
        expect_err(
            c,
            "append([12]) after snapshot at 10",
            store.append(&ents(12, 12, 6)),
            is_unavailable,
            "Unavailable",
        );
        ok(c, "append([11])", store.append(&ents(11, 12, 6)));
        expect_bounds(c, &store, 11, 12);
        expect_log(c, &store, &ents(11, 12, 6));
    }

    /// `create_snapshot` beyond the log is unavailable; at or below the stored snapshot it is
    /// out of date; neither changes anything.
    pub fn create_snapshot_errors<S: LogStore>(mut store: S) {
        let c = "create_snapshot_errors";
        let all = ten_entries();
        ok(c, "append(1..=10)", store.append(&all));
        expect_err(
            c,
            "create_snapshot(11) beyond last index 10",
            store.create_snapshot(11, ConfState::default(), vec![]),
            is_unavailable,
            "Unavailable",
        );
        ok(
            c,
            "create_snapshot(6)",
            store.create_snapshot(6, conf(&[1], &[]), b"six".to_vec()),
        );
        for index in [6, 3] {
            expect_err(
                c,
                "create_snapshot at or below the stored snapshot index 6",
                store.create_snapshot(index, conf(&[2], &[]), vec![]),
                is_out_of_date,
                "SnapshotOutOfDate",
            );
        }
        let snap = ok(c, "snapshot()", store.snapshot());
        assert_eq!(
            snap,
            snapshot(6, all[5].term, conf(&[1], &[]), b"six"),
            "[{c}] a refused create_snapshot must not change the stored snapshot"
        );
        expect_log(c, &store, &all[6..]);
    }

    /// A snapshot whose index and term match an entry of the log keeps the entries after it
    /// (Raft pitfall 21).
    pub fn apply_snapshot_keeps_matching_suffix<S: LogStore>(mut store: S) {
        let c = "apply_snapshot_keeps_matching_suffix";
        let all = ten_entries();
        ok(c, "append(1..=10)", store.append(&all));
        let snap = snapshot(5, all[4].term, conf(&[1, 2, 3], &[]), b"image");
        ok(
            c,
            "apply_snapshot(5, matching term)",
            store.apply_snapshot(snap.clone()),
        );
        expect_bounds(c, &store, 6, 10);
        expect_log(c, &store, &all[5..]);
        assert_eq!(
            ok(c, "term(5)", store.term(5)),
            all[4].term,
            "[{c}] term(5)"
        );
        assert_eq!(
            ok(c, "snapshot()", store.snapshot()),
            snap,
            "[{c}] snapshot()"
        );
        let (_, cs) = ok(c, "initial_state()", store.initial_state());
        assert_eq!(
            cs, snap.meta.conf_state,
            "[{c}] conf state must be the snapshot's"
        );
    }

    /// A snapshot whose term differs from the log's entry at its index drops the whole log.
    pub fn apply_snapshot_drops_conflicting_log<S: LogStore>(mut store: S) {
        let c = "apply_snapshot_drops_conflicting_log";
        ok(c, "append(1..=10 of term 1)", store.append(&ents(1, 10, 1)));
        let snap = snapshot(5, 3, conf(&[1, 2], &[3]), b"image");
        ok(
            c,
            "apply_snapshot(5, other term)",
            store.apply_snapshot(snap.clone()),
        );
        expect_bounds(c, &store, 6, 5);
        assert_eq!(
            ok(c, "term(5)", store.term(5)),
            3,
            "[{c}] term(5) is the snapshot's"
        );
        expect_err(c, "term(6)", store.term(6), is_unavailable, "Unavailable");
        assert_eq!(
            ok(c, "snapshot()", store.snapshot()),
            snap,
            "[{c}] snapshot()"
        );
        ok(c, "append([6] of term 3)", store.append(&ents(6, 6, 3)));
        expect_log(c, &store, &ents(6, 6, 3));
    }

    /// A snapshot beyond the end of the log drops the whole log.
    pub fn apply_snapshot_beyond_log_drops_log<S: LogStore>(mut store: S) {
        let c = "apply_snapshot_beyond_log_drops_log";
        ok(c, "append(1..=3)", store.append(&ents(1, 3, 1)));
        let snap = snapshot(8, 2, conf(&[1], &[]), b"image");
        ok(c, "apply_snapshot(8)", store.apply_snapshot(snap.clone()));
        expect_bounds(c, &store, 9, 8);
        assert_eq!(ok(c, "term(8)", store.term(8)), 2, "[{c}] term(8)");
        expect_err(c, "term(7)", store.term(7), is_compacted, "Compacted");
        assert_eq!(
            ok(c, "snapshot()", store.snapshot()),
            snap,
            "[{c}] snapshot()"
        );
    }

    /// A joining node's empty store takes its configuration and position from a snapshot.
    pub fn apply_snapshot_on_empty_store<S: LogStore>(mut store: S) {
        let c = "apply_snapshot_on_empty_store";
        let cs = conf(&[1, 2, 3], &[9]);
        let data: Vec<u8> = (0..300 * 1024).map(|i| (i % 253) as u8).collect();
        let snap = snapshot(4, 2, cs.clone(), &data);
        ok(c, "apply_snapshot(4)", store.apply_snapshot(snap.clone()));
        expect_bounds(c, &store, 5, 4);
        assert_eq!(ok(c, "term(4)", store.term(4)), 2, "[{c}] term(4)");
        let (hs, got_cs) = ok(c, "initial_state()", store.initial_state());
        assert_eq!(got_cs, cs, "[{c}] conf state must be the snapshot's");
        assert_eq!(
            (hs.term, hs.vote),
            (0, 0),
            "[{c}] apply_snapshot leaves term and vote"
        );
        assert!(
            hs.commit == 0 || hs.commit == 4,
            "[{c}] apply_snapshot leaves commit or raises it to the snapshot index, got {}",
            hs.commit
        );
        assert_eq!(
            ok(c, "snapshot()", store.snapshot()),
            snap,
            "[{c}] snapshot() with data"
        );
        ok(c, "append([5])", store.append(&ents(5, 7, 2)));
        expect_log(c, &store, &ents(5, 7, 2));
    }

    /// A snapshot older than the stored one is refused and changes nothing.
    pub fn apply_snapshot_older_refused<S: LogStore>(mut store: S) {
        let c = "apply_snapshot_older_refused";
        let all = ten_entries();
        ok(c, "append(1..=10)", store.append(&all));
        ok(
            c,
            "create_snapshot(8)",
            store.create_snapshot(8, conf(&[1], &[]), b"eight".to_vec()),
        );
        expect_err(
            c,
            "apply_snapshot(5) when the snapshot at 8 is stored",
            store.apply_snapshot(snapshot(5, all[4].term, conf(&[2], &[]), b"five")),
            is_out_of_date,
            "SnapshotOutOfDate",
        );
        expect_bounds(c, &store, 9, 10);
        expect_log(c, &store, &all[8..]);
        let snap = ok(c, "snapshot()", store.snapshot());
        assert_eq!(
            snap,
            snapshot(8, all[7].term, conf(&[1], &[]), b"eight"),
            "[{c}] a refused apply_snapshot must not change the stored snapshot"
        );
    }

    /// After a snapshot, the log behaves as before: appends, conflicts and truncation work
    /// relative to the new first index.
    pub fn snapshot_then_append_and_conflict<S: LogStore>(mut store: S) {
        let c = "snapshot_then_append_and_conflict";
        let all = ten_entries();
        ok(c, "append(1..=10)", store.append(&all));
        ok(
            c,
            "create_snapshot(5)",
            store.create_snapshot(5, conf(&[1], &[]), vec![]),
        );
        ok(c, "append([7] of term 9)", store.append(&ents(7, 7, 9)));
        let mut want = all[5..6].to_vec();
        want.extend(ents(7, 7, 9));
        expect_log(c, &store, &want);
        ok(
            c,
            "append([6..=8] of term 10)",
            store.append(&ents(6, 8, 10)),
        );
        expect_log(c, &store, &ents(6, 8, 10));
        ok(
            c,
            "create_snapshot(8)",
            store.create_snapshot(8, conf(&[1], &[]), vec![]),
        );
        expect_bounds(c, &store, 9, 8);
        assert_eq!(ok(c, "term(8)", store.term(8)), 10, "[{c}] term(8)");
    }

    /// `sync` succeeds on a new store and after writes, and changes nothing visible.
    pub fn sync_keeps_state<S: LogStore>(mut store: S) {
        let c = "sync_keeps_state";
        ok(c, "sync() on a new store", store.sync());
        expect_bounds(c, &store, 1, 0);
        ok(c, "append(1..=10)", store.append(&ten_entries()));
        let hs = HardState {
            term: 5,
            vote: 2,
            commit: 3,
        };
        ok(c, "set_hard_state", store.set_hard_state(hs));
        ok(c, "sync()", store.sync());
        expect_log(c, &store, &ten_entries());
        let (got, _) = ok(c, "initial_state()", store.initial_state());
        assert_eq!(got, hs, "[{c}] hard state after sync");
    }
}
