//! `flotilla snapshot status|restore`: what etcdctl's `snapshot status` and `snapshot restore`
//! do for etcd, for the files `etcdctl snapshot save` writes from a Flotilla member.
//!
//! Such a file is the Maintenance snapshot stream as etcdctl stores it: the member's snapshot
//! envelope (member list and MVCC image), zero padding to a multiple of 512, and the SHA-256
//! of all that as the last 32 bytes. It is not a bbolt file, so etcdctl itself cannot read it.
//!
//! Restore follows etcd's disaster-recovery model: every member of a *new* cluster is restored
//! from the same file into an empty data directory, then started with `flotilla node` and a new
//! `--initial-cluster`/`--cluster-token`. The file's member list is ignored; the keyspace,
//! revisions, compaction point and leases carry over, and the new cluster's first writes get
//! the revisions after the file's.

use std::path::{Path, PathBuf};

use flotilla_proto::etcdserverpb::RangeRequest;
use sha2::Digest as _;

use crate::contract::members;
use crate::mvcc::{MvccError, MvccStore, snapshot};

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// The file cannot be read or the data directory written.
    #[error("{0}")]
    Io(String),
    /// The file is not a complete Flotilla snapshot.
    #[error("{0} is not a complete Flotilla snapshot: {1}")]
    Invalid(PathBuf, String),
    /// The data directory already holds a member's data.
    #[error("{0} already holds data; restore into a new, empty data directory")]
    NotEmpty(PathBuf),
    /// The store refused the image.
    #[error("restoring the key-value store: {0}")]
    Store(#[from] MvccError),
}

/// What `snapshot status` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// CRC-32 of the keyspace, as `endpoint hashkv` reports it for the member it came from.
    pub hash: u32,
    /// The store revision.
    pub revision: i64,
    /// Live keys.
    pub total_keys: i64,
    /// Size of the file.
    pub total_size: u64,
}

/// Reads `file`, checks its SHA-256 trailer and returns the MVCC image inside.
fn read_image(file: &Path) -> Result<(Vec<u8>, u64), SnapshotFileError> {
    let invalid = |why: &str| SnapshotFileError::Invalid(file.to_path_buf(), why.to_string());
    let bytes = std::fs::read(file)
        .map_err(|e| SnapshotFileError::Io(format!("reading {}: {e}", file.display())))?;
    if bytes.len() < 32 {
        return Err(invalid("shorter than its SHA-256 trailer"));
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if sha2::Sha256::digest(body).as_slice() != digest {
        return Err(invalid("SHA-256 mismatch (truncated or damaged)"));
    }
    let (_, state) = members::decode_snapshot(body).map_err(|e| invalid(&e))?;
    let image = snapshot::trim_padding(state).map_err(|e| invalid(&e.to_string()))?;
    Ok((image.to_vec(), bytes.len() as u64))
}

fn status_of(store: &MvccStore, total_size: u64) -> Result<SnapshotStatus, SnapshotFileError> {
    let all = store.range(&RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..Default::default()
    })?;
    Ok(SnapshotStatus {
        hash: store.hash()?,
        revision: store.current_revision(),
        total_keys: all.count,
        total_size,
    })
}

/// `snapshot status`: loads the image into a scratch store and reports on it.
///
/// # Errors
/// [`SnapshotFileError`] if the file is unreadable or not a complete snapshot.
pub fn status(file: &Path) -> Result<SnapshotStatus, SnapshotFileError> {
    let (image, size) = read_image(file)?;
    let scratch = tempfile::tempdir().map_err(|e| SnapshotFileError::Io(e.to_string()))?;
    let db = sled::Config::new()
        .temporary(true)
        .path(scratch.path())
        .open()
        .map_err(|e| SnapshotFileError::Io(format!("scratch store: {e}")))?;
    let mut store = MvccStore::open(&db)?;
    store.restore(&image, 0)?;
    status_of(&store, size)
}

/// `snapshot restore`: writes the file's keyspace into `data_dir`, which must not hold data
/// yet, ready for `flotilla node --data-dir` to bootstrap a new cluster around it. The data
/// dir gets the current layout: the Raft store's database (`db/`, empty but for the marker
/// saying where the state lives) and the state database (`mvcc/`) holding the keyspace.
///
/// # Errors
/// [`SnapshotFileError`]; on any error nothing usable is left in `data_dir`.
pub fn restore(file: &Path, data_dir: &Path) -> Result<SnapshotStatus, SnapshotFileError> {
    let (image, size) = read_image(file)?;
    let db_dir = data_dir.join("db");
    let state_dir = data_dir.join(crate::storage::state_db::STATE_DIR);
    if db_dir.exists() || state_dir.exists() {
        return Err(SnapshotFileError::NotEmpty(data_dir.to_path_buf()));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| SnapshotFileError::Io(format!("creating {}: {e}", data_dir.display())))?;
    let result = (|| {
        let io = |e: &dyn std::fmt::Display| SnapshotFileError::Io(e.to_string());
        let db = crate::storage::open_db(&db_dir).map_err(|e| io(&e))?;
        let raft_sync = crate::storage::DbSync::open(db.clone(), &db_dir).map_err(|e| io(&e))?;
        let state =
            crate::storage::state_db::open(data_dir, &db, &raft_sync).map_err(|e| io(&e))?;
        let mut store = MvccStore::open_state(state)?;
        // As of the index the founding member's log will start after (see
        // `WalLogStore::initialize_restored`), so the node knows the state was restored.
        store.restore(&image, crate::storage::log_store::RESTORED_INDEX)?;
        let status = status_of(&store, size)?;
        store.sync()?;
        Ok(status)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&db_dir);
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_or_foreign_files_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("snap.db");
        std::fs::write(
            &file,
            b"definitely not a snapshot, but long enough for a trailer",
        )
        .expect("write");
        let err = status(&file).expect_err("refused");
        assert!(err.to_string().contains("SHA-256"), "{err}");
        let target = dir.path().join("restored");
        assert!(restore(&file, &target).is_err());
        assert!(!target.join("db").exists());
        assert!(!target.join("mvcc").exists());
        let missing = restore(&dir.path().join("absent"), &target).expect_err("refused");
        assert!(missing.to_string().contains("reading"), "{missing}");
    }
}
