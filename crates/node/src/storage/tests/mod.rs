//! Tests of the sled store: the public conformance suite, reopen and crash recovery, identity,
//! damaged bytes, and (in [`syscalls`]) proof under strace that syncs reach the disk.

mod child;
mod reopen;
mod syscalls;

use std::cell::Cell;
use std::path::Path;

use flotilla_raft::testing::Suite;
use flotilla_raft::{ConfState, Entry, EntryKind, LogStore, Storage, StorageError};
use tempfile::TempDir;

use super::{TREE_NAME, WalLogStore, open_db};

/// Opens a store in `dir` (created if missing).
pub(super) fn open_store(dir: &Path) -> WalLogStore {
    let db = open_db(dir).unwrap_or_else(|e| panic!("open_db({dir:?}): {e}"));
    WalLogStore::open(db, dir).unwrap_or_else(|e| panic!("WalLogStore::open({dir:?}): {e}"))
}

/// An entry with 256 bytes of data derived from its index and term.
pub(super) fn entry(index: u64, term: u64) -> Entry {
    let seed = index.wrapping_mul(31).wrapping_add(term) as u8;
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: (0..256u32).map(|i| seed.wrapping_add(i as u8)).collect(),
    }
}

/// A builder for the suite: each call opens a store in a new subdirectory of `root`.
fn builder(root: &TempDir) -> impl Fn() -> WalLogStore + '_ {
    let n = Cell::new(0u32);
    move || {
        n.set(n.get() + 1);
        open_store(&root.path().join(n.get().to_string()))
    }
}

#[test]
fn conformance_suite() {
    let root = TempDir::new().expect("temp dir");
    Suite::test_all(builder(&root));
}

#[test]
fn conformance_suite_bootstrapped() {
    let root = TempDir::new().expect("temp dir");
    let build = builder(&root);
    Suite::test_bootstrapped(|cs: ConfState| {
        let mut store = build();
        store.initialize(cs).expect("initialize");
        store
    });
}

#[test]
fn initialize_refuses_a_used_store() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open_store(dir.path());
    store.append(&[entry(1, 1)]).expect("append");
    let err = store.initialize(ConfState::with_voters([1])).unwrap_err();
    assert!(
        matches!(err, StorageError::Io(ref m) if m.contains("bootstrap")),
        "{err:?}"
    );
    assert_eq!(
        store.initial_state().expect("initial_state").1,
        ConfState::default()
    );
}

#[test]
fn a_damaged_wal_record_ends_the_log_there_without_a_panic() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut store = open_store(dir.path());
        store
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .expect("append");
        store.sync().expect("sync");
    }
    let wal = dir.path().join(crate::storage::WAL_DIR);
    let seg = std::fs::read_dir(&wal)
        .expect("wal dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    // A byte inside the second record's data: the record fails its checksum. (The segment is
    // preallocated: the records are its non-zero prefix.)
    let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    let record = used / 3;
    bytes[record + record / 2] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    let store = open_store(dir.path());
    assert_eq!(
        store.last_index(),
        Ok(1),
        "the log ends before the damaged record"
    );
    assert_eq!(store.entries(1, 2, u64::MAX), Ok(vec![entry(1, 1)]));
}

#[test]
fn corrupt_metadata_fails_open_with_an_io_error() {
    let dir = TempDir::new().expect("temp dir");
    {
        let db = open_db(dir.path()).expect("open_db");
        let tree = db.open_tree(TREE_NAME).expect("tree");
        tree.insert(super::disk_format::SNAPSHOT_META_KEY, &[1u8, 2, 3][..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let db = open_db(dir.path()).expect("open_db");
    let err = WalLogStore::open(db, dir.path()).unwrap_err();
    assert!(
        matches!(err, StorageError::Io(ref m) if m.contains("snapshot metadata")),
        "{err:?}"
    );
}

#[test]
fn open_with_the_wrong_directory_is_an_error() {
    let dir = TempDir::new().expect("temp dir");
    let other = TempDir::new().expect("temp dir");
    let db = open_db(dir.path()).expect("open_db");
    let err = WalLogStore::open(db, other.path()).unwrap_err();
    assert!(
        matches!(err, StorageError::Io(ref m) if m.contains("data file")),
        "{err:?}"
    );
}

/// The node drives the store from a tokio task and shares the sync handle with the MVCC store.
#[test]
fn store_and_sync_handle_can_move_between_threads() {
    fn send<T: Send + 'static>(_: &T) {}
    fn send_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
    let dir = TempDir::new().expect("temp dir");
    let mut store = open_store(dir.path());
    store.append(&[entry(1, 1)]).expect("append");
    let handle = store.db_sync();
    send(&store);
    send_sync(&handle);
    let synced = std::thread::spawn(move || handle.sync())
        .join()
        .expect("thread");
    assert_eq!(synced, Ok(()));
    assert_eq!(store.last_index(), Ok(1));
}

#[test]
fn snapshot_images_live_in_their_own_tree_and_leftovers_go_on_open() {
    use super::SNAPSHOT_TREE_NAME;
    let dir = TempDir::new().expect("temp dir");
    let db = open_db(dir.path()).expect("open_db");
    let mut store = WalLogStore::open(db.clone(), dir.path()).expect("open");
    let es: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
    store.append(&es).expect("append");
    store
        .create_snapshot(5, ConfState::with_voters([1]), vec![7u8; 300_000])
        .expect("snapshot at 5");
    store
        .create_snapshot(8, ConfState::with_voters([1]), vec![9u8; 300_000])
        .expect("snapshot at 8");
    let images = db.open_tree(SNAPSHOT_TREE_NAME).expect("tree");
    // The big image is not next to the hard state, and only the current one is kept.
    let keys: Vec<Vec<u8>> = images
        .iter()
        .keys()
        .map(|k| k.expect("key").to_vec())
        .collect();
    assert_eq!(keys, vec![8u64.to_be_bytes().to_vec()]);
    assert_eq!(store.snapshot().expect("snapshot").data, vec![9u8; 300_000]);

    // A crash after an image was written but before the metadata named it leaves it behind;
    // reopening drops it and still serves the image the metadata names.
    images
        .insert(9u64.to_be_bytes(), &b"orphan"[..])
        .expect("insert");
    db.flush().expect("flush");
    drop(store);
    let store = WalLogStore::open(db.clone(), dir.path()).expect("reopen");
    assert_eq!(store.snapshot().expect("snapshot").meta.index, 8);
    assert_eq!(store.snapshot().expect("snapshot").data, vec![9u8; 300_000]);
    assert_eq!(images.len(), 1);
}
