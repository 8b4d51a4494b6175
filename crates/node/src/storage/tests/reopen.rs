//! Everything synced survives closing the store, and a crash (a separate process killed with
//! SIGKILL: nothing dropped or flushed).

use flotilla_raft::{ConfState, HardState, LogStore, Snapshot, SnapshotMeta, Storage};
use tempfile::TempDir;

use super::child;
use super::{entry, open_store};
use crate::storage::{IdentityError, MemberIdentity};

#[test]
fn reopen_keeps_log_hard_state_and_bounds() {
    let dir = TempDir::new().expect("temp dir");
    let entries: Vec<_> = (1..=20).map(|i| entry(i, 1 + i / 8)).collect();
    let hs = HardState {
        term: 3,
        vote: 2,
        commit: 15,
    };
    {
        let mut store = open_store(dir.path());
        store.append(&entries).expect("append");
        store.set_hard_state(hs).expect("set_hard_state");
        store.sync().expect("sync");
    }
    let mut store = open_store(dir.path());
    assert_eq!(store.first_index(), Ok(1));
    assert_eq!(store.last_index(), Ok(20));
    assert_eq!(store.term(20), Ok(entries[19].term), "last term reloaded");
    assert_eq!(store.entries(1, 21, u64::MAX), Ok(entries.clone()));
    assert_eq!(store.initial_state(), Ok((hs, ConfState::default())));
    // A conflicting append after reopening truncates what was reloaded.
    store.append(&[entry(10, 9)]).expect("append");
    store.sync().expect("sync");
    drop(store);
    let store = open_store(dir.path());
    assert_eq!(store.last_index(), Ok(10));
    assert_eq!(store.term(10), Ok(9));
}

#[test]
fn reopen_keeps_snapshot_and_compaction() {
    let dir = TempDir::new().expect("temp dir");
    let cs = ConfState::with_voters([1, 2, 3]);
    let data = child::snapshot_data();
    {
        let mut store = open_store(dir.path());
        let entries: Vec<_> = (1..=30).map(|i| entry(i, 2)).collect();
        store.append(&entries).expect("append");
        store
            .create_snapshot(25, cs.clone(), data.clone())
            .expect("create_snapshot");
        store.sync().expect("sync");
    }
    let mut store = open_store(dir.path());
    assert_eq!(store.first_index(), Ok(26));
    assert_eq!(store.last_index(), Ok(30));
    assert_eq!(
        store.term(25),
        Ok(2),
        "term at the snapshot index survives (pitfall 8)"
    );
    let snap = store.snapshot().expect("snapshot");
    assert_eq!(snap.meta.index, 25);
    assert_eq!(snap.meta.conf_state, cs);
    assert!(snap.data == data, "snapshot data survives");
    // A snapshot beyond the log (a follower catching up) replaces it, across a reopen too.
    store
        .apply_snapshot(Snapshot {
            meta: SnapshotMeta {
                index: 40,
                term: 4,
                conf_state: ConfState::with_voters([1, 2]),
            },
            data: b"forty".to_vec(),
        })
        .expect("apply_snapshot");
    store.sync().expect("sync");
    drop(store);
    let store = open_store(dir.path());
    assert_eq!((store.first_index(), store.last_index()), (Ok(41), Ok(40)));
    assert_eq!(store.term(40), Ok(4));
    assert_eq!(store.snapshot().expect("snapshot").data, b"forty");
    assert_eq!(
        store.initial_state().expect("state").1,
        ConfState::with_voters([1, 2])
    );
}

#[test]
fn reopen_keeps_bootstrap_configuration() {
    let dir = TempDir::new().expect("temp dir");
    let cs = ConfState::with_voters([4, 5, 6]);
    open_store(dir.path())
        .initialize(cs.clone())
        .expect("initialize");
    let mut store = open_store(dir.path());
    assert_eq!(
        store.initial_state(),
        Ok((HardState::default(), cs.clone()))
    );
    assert_eq!(
        store.initialize(cs.clone()),
        Ok(()),
        "the same bootstrap again is a no-op"
    );
    let other = store.initialize(ConfState::with_voters([9]));
    assert!(
        other.is_err(),
        "another configuration must be refused: {other:?}"
    );
    assert_eq!(store.initial_state(), Ok((HardState::default(), cs)));
}

#[test]
fn identity_is_stored_once_and_checked() {
    let dir = TempDir::new().expect("temp dir");
    let id = MemberIdentity {
        cluster_id: 0xabc,
        member_id: 17,
        name: "flotilla-1".into(),
    };
    {
        let mut store = open_store(dir.path());
        assert_eq!(store.identity(), Ok(None));
        store.set_identity(&id).expect("first join");
    }
    let mut store = open_store(dir.path());
    assert_eq!(store.identity(), Ok(Some(id.clone())));
    assert_eq!(
        store.set_identity(&id),
        Ok(()),
        "the same identity is accepted"
    );
    let other_cluster = MemberIdentity {
        cluster_id: 0xdef,
        ..id.clone()
    };
    let err = store.set_identity(&other_cluster).unwrap_err();
    assert_eq!(
        err,
        IdentityError::ClusterMismatch {
            on_volume: 0xabc,
            given: 0xdef
        }
    );
    assert!(err.to_string().contains("refusing to start"), "{err}");
    let other_member = MemberIdentity {
        member_id: 18,
        ..id.clone()
    };
    assert!(matches!(
        store.set_identity(&other_member),
        Err(IdentityError::MemberMismatch { .. })
    ));
    assert_eq!(
        store.identity(),
        Ok(Some(id)),
        "a refused identity changes nothing"
    );
}

#[test]
fn crash_after_sync_keeps_everything_synced() {
    let dir = TempDir::new().expect("temp dir");
    let out = child::run(&[], "crash", dir.path());
    assert!(
        !out.status.success(),
        "the crash workload must die by SIGKILL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = open_store(dir.path());
    assert_eq!(
        store.first_index(),
        Ok(51),
        "the snapshot's compaction survives"
    );
    let last = store.last_index().expect("last_index");
    // Synced: 51..=100. The unsynced appends may have reached the disk, in order.
    assert!(
        [100, 102, 98].contains(&last),
        "last index {last}: only a prefix of the unsynced writes may appear"
    );
    let upto = last.min(97);
    let want: Vec<_> = (51..=upto).map(|i| entry(i, 1 + i / 40)).collect();
    assert_eq!(store.entries(51, upto + 1, u64::MAX), Ok(want));
    assert_eq!(store.term(50), Ok(2), "term at the snapshot index");
    assert_eq!(
        store.initial_state(),
        Ok((
            HardState {
                term: 3,
                vote: 7,
                commit: 90
            },
            ConfState::with_voters([7, 8, 9])
        ))
    );
    let snap = store.snapshot().expect("snapshot");
    assert_eq!((snap.meta.index, snap.meta.term), (50, 2));
    assert!(
        snap.data == child::snapshot_data(),
        "snapshot image survives the crash"
    );
    assert_eq!(store.identity(), Ok(Some(child::crash_identity())));
}

/// What the node's state machine would hand over: a full image at its applied index.
#[derive(Debug)]
struct FixedImage(u64, ConfState, Vec<u8>);

impl crate::storage::ImageSource for FixedImage {
    fn image(&self) -> Result<(u64, ConfState, Vec<u8>), flotilla_raft::StorageError> {
        Ok((self.0, self.1.clone(), self.2.clone()))
    }
}

#[test]
fn compaction_keeps_a_partial_image_and_builds_full_images_on_demand() {
    let dir = TempDir::new().expect("temp dir");
    let cs = ConfState::with_voters([1, 2, 3]);
    let entries: Vec<_> = (1..=40).map(|i| entry(i, 2 + i / 30)).collect();
    {
        let mut store = open_store(dir.path());
        store.append(&entries).expect("append");
        store
            .compact(25, cs.clone(), b"members".to_vec())
            .expect("compact");
        // The bounds move at once, whatever is still stored below them.
        assert_eq!(store.first_index(), Ok(26));
        assert_eq!(store.term(25), Ok(2));
        assert!(store.entries(20, 30, u64::MAX).is_err(), "compacted");
        // Without a source the partial image is what there is (member metadata on restart).
        assert_eq!(store.snapshot().expect("snapshot").data, b"members");
        store.sync().expect("sync");
    }
    let mut store = open_store(dir.path());
    assert_eq!(
        store.first_index(),
        Ok(26),
        "leftovers below the snapshot are not the log"
    );
    assert_eq!(store.last_index(), Ok(40));
    assert_eq!(store.entries(26, 41, u64::MAX), Ok(entries[25..].to_vec()));
    assert_eq!(store.snapshot_meta().index, 25);
    // A follower behind the log gets a full image at the state machine's applied index.
    let later = ConfState::with_voters([1, 2, 3, 4]);
    store.set_image_source(std::sync::Arc::new(FixedImage(
        33,
        later.clone(),
        b"full".to_vec(),
    )));
    let snap = store.snapshot().expect("snapshot");
    assert_eq!(snap.meta.index, 33);
    assert_eq!(snap.meta.term, entries[32].term);
    assert_eq!(snap.meta.conf_state, later);
    assert_eq!(snap.data, b"full");
    // A full snapshot (what a follower installs) replaces the partial one for good.
    store
        .create_snapshot(35, cs.clone(), b"image".to_vec())
        .expect("create_snapshot");
    assert_eq!(store.snapshot().expect("snapshot").data, b"image");
    store.sync().expect("sync");
    drop(store);
    let store = open_store(dir.path());
    assert_eq!(store.snapshot().expect("snapshot").data, b"image");
    assert_eq!(store.first_index(), Ok(36));
}

#[test]
fn an_image_source_outside_the_log_is_an_error_not_a_bad_snapshot() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open_store(dir.path());
    let entries: Vec<_> = (1..=10).map(|i| entry(i, 1)).collect();
    store.append(&entries).expect("append");
    store
        .compact(5, ConfState::with_voters([1]), Vec::new())
        .expect("compact");
    store.set_image_source(std::sync::Arc::new(FixedImage(
        11,
        ConfState::with_voters([1]),
        Vec::new(),
    )));
    assert!(store.snapshot().is_err());
}
