//! The state database's migration and generation switches, crash point by crash point: each
//! test builds the data dir a crash would leave (by running the steps partially) and checks
//! that the next [`open`] completes or rolls back to a correct state.

use std::path::Path;

use tempfile::TempDir;

use super::*;
use crate::storage::log_store::TREE_NAME;

/// The Raft store's database of `data_dir` and its durability handle.
fn raft_db(data_dir: &Path) -> (sled::Db, DbSync) {
    let dir = data_dir.join("db");
    let db = open_db(&dir).expect("open the Raft store's db");
    let sync = DbSync::open(db.clone(), &dir).expect("DbSync");
    (db, sync)
}

/// Entries as a store written before the split left them in the shared database.
fn legacy_entries() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = (0..5000u32)
        .map(|i| {
            let mut k = b"r".to_vec();
            k.extend_from_slice(&i.to_be_bytes());
            (k, vec![(i % 251) as u8; 100 + (i % 7) as usize])
        })
        .collect();
    // One value large enough to be a sled blob file.
    out.push((b"lbig".to_vec(), vec![7; 200 * 1024]));
    out.push((b"mstate".to_vec(), vec![1; 24]));
    out
}

/// Writes the legacy layout: the `mvcc` tree inside `<data-dir>/db`.
fn write_legacy(data_dir: &Path) {
    let (db, sync) = raft_db(data_dir);
    let tree = db.open_tree(STATE_TREE).expect("mvcc tree");
    for (k, v) in legacy_entries() {
        tree.insert(k, v).expect("insert");
    }
    sync.sync().expect("sync");
}

fn entries_of(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree.iter()
        .map(|r| {
            let (k, v) = r.expect("read");
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

fn assert_migrated(state: &StateDb) {
    let tree = state.db().open_tree(STATE_TREE).expect("tree");
    let mut want = legacy_entries();
    want.sort();
    assert_eq!(
        entries_of(&tree),
        want,
        "the state database holds the old tree"
    );
}

/// What the Raft store's database says after an open: (marker set, old tree present).
fn raft_side(db: &sled::Db) -> (bool, bool) {
    let marked = db
        .open_tree(TREE_NAME)
        .expect("raft tree")
        .contains_key(STATE_DB_MARKER)
        .expect("get");
    let legacy = db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == STATE_TREE.as_bytes());
    (marked, legacy)
}

/// The entries of `<root>` other than `CURRENT` and the current generation.
fn strays(dir: &StateDir) -> Vec<String> {
    let keep = dir.current().expect("CURRENT").map(|g| format!("{g:016x}"));
    std::fs::read_dir(dir.root())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != CURRENT && Some(n) != keep.as_ref())
        .collect()
}

#[test]
fn a_new_data_dir_gets_an_empty_generation_and_the_marker() {
    let tmp = TempDir::new().expect("tmp");
    let (db, sync) = raft_db(tmp.path());
    let state = open(tmp.path(), &db, &sync).expect("open");
    assert_eq!(state.generation(), 1);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("mvcc/CURRENT")).expect("CURRENT"),
        "0000000000000001\n"
    );
    assert!(tmp.path().join("mvcc/0000000000000001/db").is_file());
    assert_eq!(raft_side(&db), (true, false));
    drop(state);
    // Reopening changes nothing.
    let state = open(tmp.path(), &db, &sync).expect("reopen");
    assert_eq!(state.generation(), 1);
}

#[test]
fn the_shared_layout_is_moved_and_the_old_tree_dropped() {
    let tmp = TempDir::new().expect("tmp");
    write_legacy(tmp.path());
    let (db, sync) = raft_db(tmp.path());
    let state = open(tmp.path(), &db, &sync).expect("migrate");
    assert_eq!(state.generation(), 1);
    assert_migrated(&state);
    assert_eq!(raft_side(&db), (true, false));
    drop(state);
    drop((db, sync));
    // After a restart the moved state is read from its own database, not copied again.
    let (db, sync) = raft_db(tmp.path());
    let state = open(tmp.path(), &db, &sync).expect("reopen");
    assert_eq!(state.generation(), 1);
    assert_migrated(&state);
}

#[test]
fn a_crash_during_the_copy_starts_the_copy_again() {
    let tmp = TempDir::new().expect("tmp");
    write_legacy(tmp.path());
    let dir = StateDir::new(tmp.path());
    {
        // Step 1 cut short: a generation with part of the data, never named by CURRENT.
        let (db, _sync) = raft_db(tmp.path());
        let partial = db.open_tree("partial").expect("tree");
        for (k, v) in legacy_entries().into_iter().take(100) {
            partial.insert(k, v).expect("insert");
        }
        let state = dir
            .write_generation(0, &[(STATE_TREE, &partial)])
            .expect("write");
        drop(state);
        db.drop_tree("partial").expect("drop");
        // ...and a CURRENT.tmp the rename never consumed.
        std::fs::write(dir.root().join(CURRENT_TMP), "0000000000000001\n").expect("tmp");
    }
    let (db, sync) = raft_db(tmp.path());
    assert_eq!(raft_side(&db), (false, true));
    let state = open(tmp.path(), &db, &sync).expect("migrate again");
    assert_migrated(&state);
    assert_eq!(raft_side(&db), (true, false));
    assert!(strays(&dir).is_empty(), "{:?}", strays(&dir));
}

#[test]
fn a_crash_after_the_switch_sets_the_marker_and_drops_the_old_tree() {
    let tmp = TempDir::new().expect("tmp");
    write_legacy(tmp.path());
    let dir = StateDir::new(tmp.path());
    {
        // Steps 1 and 2 done, 3 and 4 not.
        let (db, _sync) = raft_db(tmp.path());
        let old = db.open_tree(STATE_TREE).expect("tree");
        let state = dir
            .write_generation(0, &[(STATE_TREE, &old)])
            .expect("write");
        state.make_current().expect("switch");
    }
    let (db, sync) = raft_db(tmp.path());
    assert_eq!(raft_side(&db), (false, true));
    let state = open(tmp.path(), &db, &sync).expect("finish");
    assert_eq!(state.generation(), 1, "not copied a second time");
    assert_migrated(&state);
    assert_eq!(raft_side(&db), (true, false));
}

#[test]
fn a_crash_after_the_marker_drops_the_old_tree_without_reading_it() {
    let tmp = TempDir::new().expect("tmp");
    write_legacy(tmp.path());
    {
        let (db, sync) = raft_db(tmp.path());
        let state = open(tmp.path(), &db, &sync).expect("migrate");
        drop(state);
        // Step 4 undone: the old tree back in the shared database, with other data, as if
        // the drop had never happened. It must be dropped, never read.
        let old = db.open_tree(STATE_TREE).expect("tree");
        old.insert(b"r-stale", b"stale".to_vec()).expect("insert");
        sync.sync().expect("sync");
    }
    let (db, sync) = raft_db(tmp.path());
    assert_eq!(raft_side(&db), (true, true));
    let state = open(tmp.path(), &db, &sync).expect("reopen");
    assert_migrated(&state);
    assert_eq!(raft_side(&db), (true, false));
}

#[test]
fn a_lost_state_database_is_refused() {
    let tmp = TempDir::new().expect("tmp");
    let (db, sync) = raft_db(tmp.path());
    drop(open(tmp.path(), &db, &sync).expect("open"));
    std::fs::remove_dir_all(tmp.path().join("mvcc")).expect("lose it");
    let err = open(tmp.path(), &db, &sync).expect_err("refused");
    assert!(matches!(err, StateDbError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn a_damaged_current_is_refused() {
    let tmp = TempDir::new().expect("tmp");
    let (db, sync) = raft_db(tmp.path());
    drop(open(tmp.path(), &db, &sync).expect("open"));
    for bad in ["", "1\n", "zzzzzzzzzzzzzzzz\n", "0000000000000009\n"] {
        std::fs::write(tmp.path().join("mvcc/CURRENT"), bad).expect("write");
        let err = open(tmp.path(), &db, &sync).expect_err("refused");
        assert!(
            matches!(err, StateDbError::BadCurrent { .. }),
            "{bad:?}: {err}"
        );
    }
}

/// A state database with data in generation 1, as a member runs it.
fn running(tmp: &TempDir) -> (sled::Db, DbSync, StateDb) {
    let (db, sync) = raft_db(tmp.path());
    let state = open(tmp.path(), &db, &sync).expect("open");
    let tree = state.db().open_tree(STATE_TREE).expect("tree");
    for (k, v) in legacy_entries() {
        tree.insert(k, v).expect("insert");
    }
    state.sync().expect("sync");
    (db, sync, state)
}

#[test]
fn a_swap_cut_before_the_switch_is_rolled_back() {
    let tmp = TempDir::new().expect("tmp");
    let (db, sync, state) = running(&tmp);
    let tree = state.db().open_tree(STATE_TREE).expect("tree");
    let next = state.write_next(&[(STATE_TREE, &tree)]).expect("copy");
    assert_eq!(next.generation(), 2);
    // Crash: CURRENT still names generation 1; a CURRENT.tmp naming 2 was written.
    std::fs::write(
        tmp.path().join("mvcc").join(CURRENT_TMP),
        "0000000000000002\n",
    )
    .expect("tmp");
    drop((next, tree, state));
    let state = open(tmp.path(), &db, &sync).expect("reopen");
    assert_eq!(state.generation(), 1, "rolled back");
    assert_migrated(&state);
    assert!(strays(&StateDir::new(tmp.path())).is_empty());
}

#[test]
fn a_swap_cut_after_the_switch_is_completed() {
    let tmp = TempDir::new().expect("tmp");
    let (db, sync, state) = running(&tmp);
    let tree = state.db().open_tree(STATE_TREE).expect("tree");
    let next = state.write_next(&[(STATE_TREE, &tree)]).expect("copy");
    next.make_current().expect("switch");
    // Crash before the old generation was retired.
    drop((next, tree, state));
    assert!(tmp.path().join("mvcc/0000000000000001").is_dir());
    let state = open(tmp.path(), &db, &sync).expect("reopen");
    assert_eq!(state.generation(), 2, "completed");
    assert_migrated(&state);
    assert!(!tmp.path().join("mvcc/0000000000000001").exists());
}

#[test]
fn a_retired_generation_is_removed_once_sled_lets_go_of_it() {
    let tmp = TempDir::new().expect("tmp");
    let (_db, _sync, state) = running(&tmp);
    let tree = state.db().open_tree(STATE_TREE).expect("tree");
    let next = state.write_next(&[(STATE_TREE, &tree)]).expect("copy");
    next.make_current().expect("switch");
    let old_path = state.path();
    drop(tree);
    state.retire().join().expect("retire thread");
    assert!(!old_path.exists(), "{old_path:?} still there");
    // The new generation is complete on its own.
    let tree = next.db().open_tree(STATE_TREE).expect("tree");
    let mut want = legacy_entries();
    want.sort();
    assert_eq!(entries_of(&tree), want);
}

#[test]
fn a_rewrite_of_a_churned_database_is_smaller() {
    let tmp = TempDir::new().expect("tmp");
    let (_db, _sync, state) = running(&tmp);
    let tree = state.db().open_tree(STATE_TREE).expect("tree");
    // Churn: 20 MB written over 100 keys, then all but the last values removed.
    for round in 0..200u32 {
        for i in 0..100u32 {
            tree.insert(format!("churn/{i}"), vec![(round % 251) as u8; 1000])
                .expect("insert");
        }
    }
    for i in 0..5000u32 {
        let mut k = b"r".to_vec();
        k.extend_from_slice(&i.to_be_bytes());
        tree.remove(k).expect("remove");
    }
    state.sync().expect("sync");
    let before = state.db().size_on_disk().expect("size");
    let next = state.write_next(&[(STATE_TREE, &tree)]).expect("copy");
    let after = next.db().size_on_disk().expect("size");
    assert!(
        after * 2 < before,
        "a rewrite of {before} bytes of churn took {after} bytes"
    );
}
