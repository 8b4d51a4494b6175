//! [`WalLogStore`]: the Raft store — log entries and hard state in the write-ahead log
//! ([`super::wal`]) with the entries since the snapshot held in memory; snapshot metadata,
//! images and the member identity in sled (`<data-dir>/db`). The MVCC store has a database of
//! its own ([`super::state_db`]).
//!
//! The per-Ready path touches only the WAL: append, then one fdatasync. sled is written (and
//! synced) when a snapshot is taken or installed, and the order there keeps every crash point
//! recoverable: the state machine's database is synced first (through the [`StateSync`]
//! hook), then the image, then the snapshot metadata (synced), then the WAL is rewritten
//! without the compacted entries. A store written by an older version, with the entries in
//! sled, is moved into the WAL when it is opened.
//!
//! The snapshot *image* lives in its own tree ([`SNAPSHOT_TREE_NAME`]),
//! keyed by the snapshot index. sled rewrites a whole leaf page whenever it consolidates the
//! small updates made to it, and a leaf holding a multi-megabyte image next to the hard state
//! was rewritten (as a fresh blob file) every few Readies: measured at ~18 rewrites of a
//! 3.3 MB image per second per node, half the write throughput. Atomicity is kept by order,
//! not by a batch: the new image is written and synced under its index first, then the one
//! batch switches the metadata, then older images are deleted. A crash
//! at any point leaves the metadata naming an image that is durable; leftovers are deleted on
//! open.
//!
//! A snapshot taken for log compaction usually carries a *partial* image: only the member list
//! ([`WalLogStore::compact`]). The MVCC store is durable in its own database, so copying it
//! into an image every few thousand entries bought nothing but a stall (serialising the whole
//! store cost 13% of the leader's CPU under load). When a follower does need the state, the
//! leader's [`ImageSource`] builds a full image of the live state machine at its applied index,
//! as etcd sends its backend at the applied index rather than at the snapshot's.
//!
//! Every read the core makes (entries, terms, bounds, hard state, snapshot metadata) is served
//! from memory: the log since the snapshot and a small cache, loaded at open.

use std::path::Path;

use flotilla_raft::{
    ConfState, Entry, HardState, LogStore, Snapshot, SnapshotMeta, Storage, StorageError,
};

use super::disk_format::{self, IDENTITY_KEY, SNAPSHOT_META_KEY, SNAPSHOT_PARTIAL_KEY};
use super::durable::DbSync;
use super::identity::{self, IdentityError, MemberIdentity};
use super::wal::Wal;

/// The name of the sled tree holding the Raft store.
pub const TREE_NAME: &str = "raft";
/// The write-ahead log's folder, inside the sled folder.
pub const WAL_DIR: &str = "wal";
/// The name of the sled tree holding snapshot images, keyed by big-endian snapshot index.
pub const SNAPSHOT_TREE_NAME: &str = "raft_snapshot";

/// The index a restored key-value state is as of (`flotilla backup restore`, `flotilla
/// snapshot restore`), and the term of the snapshot a founding member's log then starts
/// after (see [`WalLogStore::initialize_restored`]). Every member restored from the same file
/// agrees on both, as etcd's restored members do.
pub const RESTORED_INDEX: u64 = 1;
/// See [`RESTORED_INDEX`].
pub const RESTORED_TERM: u64 = 1;

/// The metadata the store keeps in memory.
#[derive(Debug, Clone)]
struct Cache {
    hard_state: HardState,
    /// Metadata of the stored snapshot (index 0 for a store never compacted; its configuration
    /// is then the bootstrap configuration).
    snapshot: SnapshotMeta,
    /// The stored image holds only member metadata (see [`WalLogStore::compact`]).
    image_partial: bool,
}

/// Builds a full snapshot image of the live state machine, for a store whose own image is
/// partial. Called on the Raft loop's thread, between Readies, when a follower is behind the
/// compacted log.
pub trait ImageSource: Send + Sync + std::fmt::Debug {
    /// The applied index, the configuration as of that index, and the image of the state
    /// machine at it.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the state machine cannot be read.
    fn image(&self) -> Result<(u64, ConfState, Vec<u8>), StorageError>;
}

/// Makes the state machine's database durable. [`WalLogStore`] calls it before it records a
/// snapshot and drops the log entries the snapshot covers, so the state those entries produced
/// is durable first: with the state machine in a database of its own, syncing the Raft
/// store's database no longer covers it (see `storage::state_db`, "Durability across the two
/// databases").
pub trait StateSync: Send + Sync + std::fmt::Debug {
    /// Makes every state machine write made before the call durable.
    ///
    /// # Errors
    /// [`StorageError::Io`] if it cannot; the snapshot is then not recorded.
    fn sync_state(&self) -> Result<(), StorageError>;
}

/// The durable Raft log store on sled. See the [module docs](self) and [`super`].
#[derive(Debug)]
pub struct WalLogStore {
    tree: sled::Tree,
    /// Snapshot images, by index (see the module docs).
    images: sled::Tree,
    sync: DbSync,
    cache: Cache,
    source: Option<std::sync::Arc<dyn ImageSource>>,
    state_sync: Option<std::sync::Arc<dyn StateSync>>,
    wal: Wal,
    /// The entries after the snapshot, `snapshot.index + 1 ..= last_index`.
    log: Vec<Entry>,
}

fn sled_err(what: &str, e: sled::Error) -> StorageError {
    StorageError::Io(format!("sled {what}: {e}"))
}

impl WalLogStore {
    /// Opens (or creates) the Raft store in `db`, which was opened at `dir` (see
    /// [`super::open_db`]). The node shares `db` with the MVCC store.
    ///
    /// # Errors
    /// [`StorageError::Io`] if sled fails or the stored bytes are damaged.
    pub fn open(db: sled::Db, dir: &Path) -> Result<Self, StorageError> {
        let tree = db
            .open_tree(TREE_NAME)
            .map_err(|e| sled_err("open tree", e))?;
        let images = db
            .open_tree(SNAPSHOT_TREE_NAME)
            .map_err(|e| sled_err("open tree", e))?;
        let sync = DbSync::open(db, dir)?;
        let mut cache = load_cache(&tree)?;
        let (wal, replayed) = Wal::open(&dir.join(WAL_DIR))?;
        let snap = cache.snapshot.index;
        let log: Vec<Entry> = replayed
            .entries
            .into_iter()
            .filter(|e| e.index > snap)
            .collect();
        if let Some(hs) = replayed.hard_state {
            cache.hard_state = hs;
        }
        if let Some(first) = log.first()
            && first.index != snap + 1
        {
            return Err(StorageError::Io(format!(
                "corrupt Raft log: the first entry is {}, but the snapshot is at {snap}",
                first.index
            )));
        }
        let store = WalLogStore {
            tree,
            images,
            sync,
            cache,
            source: None,
            state_sync: None,
            wal,
            log,
        };
        // Images a crash left behind (written, or superseded, but never deleted).
        store.drop_images_except(store.cache.snapshot.index)?;
        Ok(store)
    }

    /// Deletes every stored image but the one of snapshot `keep`.
    fn drop_images_except(&self, keep: u64) -> Result<(), StorageError> {
        for key in self.images.iter().keys() {
            let key = key.map_err(|e| sled_err("iter", e))?;
            if key.as_ref() != keep.to_be_bytes() {
                self.images.remove(key).map_err(|e| sled_err("remove", e))?;
            }
        }
        Ok(())
    }

    /// Makes `data` durable as the image of snapshot `index`, before any metadata names it.
    fn store_image(&mut self, index: u64, data: Vec<u8>) -> Result<(), StorageError> {
        self.images
            .insert(index.to_be_bytes(), data)
            .map_err(|e| sled_err("insert", e))?;
        self.sync.sync()
    }

    /// Bootstraps a new store with the configuration as of index 0 (what a founding member of
    /// a cluster starts with), and syncs it.
    ///
    /// Bootstrapping again with the same configuration before anything else was written is a
    /// no-op, so a founding member that restarts early can run the same start-up path.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the store is not new (it has a hard state, entries, a snapshot
    /// or another bootstrap configuration): a volume is never re-initialised.
    pub fn initialize(&mut self, conf_state: ConfState) -> Result<(), StorageError> {
        let c = &self.cache;
        if c.hard_state == HardState::default()
            && self.log.is_empty()
            && c.snapshot.index == 0
            && c.snapshot.conf_state == conf_state
        {
            // Already bootstrapped with this configuration (a restart before any election).
            return Ok(());
        }
        if c.hard_state != HardState::default()
            || !self.log.is_empty()
            || c.snapshot.index != 0
            || c.snapshot.conf_state != ConfState::default()
        {
            return Err(StorageError::Io(
                "refusing to bootstrap a store that already holds Raft state".into(),
            ));
        }
        let meta = SnapshotMeta {
            index: 0,
            term: 0,
            conf_state,
        };
        self.tree
            .insert(SNAPSHOT_META_KEY, disk_format::encode_snapshot_meta(&meta))
            .map_err(|e| sled_err("insert", e))?;
        self.cache.snapshot = meta;
        self.sync.sync()
    }

    /// Bootstraps a new store for a founding member whose key-value state was restored from a
    /// backup or snapshot file (`flotilla backup restore`, `flotilla snapshot restore`) as of
    /// `index`: the log starts after a snapshot at (`index`, [`RESTORED_TERM`]) with
    /// `conf_state`, and `members_image` (the member list, as a compaction stores it) stands for
    /// the snapshot's image until the state machine supplies a full one.
    ///
    /// Why not [`Self::initialize`]: a log that starts at 1 holds no trace of the restored keys,
    /// so a member that joins later would replay it from the start and come up empty. Behind a
    /// snapshot, the leader sends every such member an image of its state instead.
    ///
    /// Running it again with the same arguments, after a crash part-way, finishes it.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the store already holds other Raft state.
    pub fn initialize_restored(
        &mut self,
        conf_state: ConfState,
        index: u64,
        members_image: Vec<u8>,
    ) -> Result<(), StorageError> {
        let meta = SnapshotMeta {
            index,
            term: RESTORED_TERM,
            conf_state,
        };
        let hs = HardState {
            term: RESTORED_TERM,
            vote: flotilla_raft::NO_NODE,
            commit: index,
        };
        let c = &self.cache;
        let fresh = c.hard_state == HardState::default()
            && self.log.is_empty()
            && c.snapshot.index == 0
            && c.snapshot.conf_state == ConfState::default();
        let part_way = self.log.is_empty()
            && c.snapshot == meta
            && (c.hard_state == HardState::default() || c.hard_state == hs);
        if index == 0 || !(fresh || part_way) {
            return Err(StorageError::Io(
                "refusing to bootstrap a store that already holds Raft state".into(),
            ));
        }
        if fresh {
            self.store_image(index, members_image)?;
            self.switch_meta(&meta, true)?;
            self.cache.snapshot = meta;
        }
        if self.cache.hard_state != hs {
            self.wal.set_hard_state(&hs);
            self.wal.sync()?;
            self.cache.hard_state = hs;
        }
        Ok(())
    }

    /// The member identity stored on this volume, if the member ever joined a cluster.
    ///
    /// # Errors
    /// [`StorageError::Io`] if sled fails or the stored bytes are damaged.
    pub fn identity(&self) -> Result<Option<MemberIdentity>, StorageError> {
        match self.tree.get(IDENTITY_KEY) {
            Ok(Some(bytes)) => disk_format::decode_identity(&bytes).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(sled_err("get", e)),
        }
    }

    /// Records the member identity on first join (and syncs it), or checks that `id` is the
    /// one already recorded. Call it before starting Raft.
    ///
    /// # Errors
    /// [`IdentityError::ClusterMismatch`] / [`IdentityError::MemberMismatch`] when the volume
    /// belongs to another cluster or member: the node must refuse to start.
    pub fn set_identity(&mut self, id: &MemberIdentity) -> Result<(), IdentityError> {
        if let Some(on_volume) = self.identity()? {
            return identity::check(&on_volume, id);
        }
        self.tree
            .insert(IDENTITY_KEY, disk_format::encode_identity(id))
            .map_err(|e| sled_err("insert", e))?;
        self.sync.sync()?;
        Ok(())
    }

    /// Metadata of the stored snapshot, without reading (or building) its image.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.cache.snapshot
    }

    /// Where [`Storage::snapshot`] gets a full image when the stored one is partial.
    pub fn set_image_source(&mut self, source: std::sync::Arc<dyn ImageSource>) {
        self.source = Some(source);
    }

    /// What makes the state machine's database durable before the log drops entries (see
    /// [`StateSync`]). Without one (a store used on its own), only this database is synced.
    pub fn set_state_sync(&mut self, sync: std::sync::Arc<dyn StateSync>) {
        self.state_sync = Some(sync);
    }

    /// Syncs the state machine's database, if there is a [`StateSync`].
    fn sync_state(&self) -> Result<(), StorageError> {
        match &self.state_sync {
            Some(s) => s.sync_state(),
            None => Ok(()),
        }
    }

    /// Compacts the log through `index` (which must be applied) and stores `partial_image` —
    /// member metadata only — as the snapshot's image. Syncs the state machine's database
    /// first, then this one, so the state the compacted entries produced is durable before
    /// the entries are gone.
    ///
    /// # Errors
    /// As [`LogStore::create_snapshot`].
    pub fn compact(
        &mut self,
        index: u64,
        conf_state: ConfState,
        partial_image: Vec<u8>,
    ) -> Result<(), StorageError> {
        self.install_snapshot(index, conf_state, partial_image, true)
    }

    fn install_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
        partial: bool,
    ) -> Result<(), StorageError> {
        if index <= self.cache.snapshot.index {
            return Err(StorageError::SnapshotOutOfDate(index));
        }
        if index > self.last_index_cached() {
            return Err(StorageError::Unavailable(index));
        }
        let meta = SnapshotMeta {
            index,
            term: self.term(index)?,
            conf_state,
        };
        // The state machine's writes up to `index` are durable before the entries that
        // produced them leave the log (and before a partial image stands in for them).
        self.sync_state()?;
        self.store_image(index, data)?;
        self.switch_meta(&meta, partial)?;
        let keep = usize::try_from(index - self.cache.snapshot.index).unwrap_or(usize::MAX);
        self.log.drain(..keep.min(self.log.len()));
        self.cache.snapshot = meta;
        self.wal.rewrite(&self.cache.hard_state, &self.log)?;
        self.drop_images_except(index)
    }

    /// Makes `meta` the snapshot metadata, durably.
    fn switch_meta(&mut self, meta: &SnapshotMeta, partial: bool) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META_KEY, disk_format::encode_snapshot_meta(meta));
        if partial {
            batch.insert(SNAPSHOT_PARTIAL_KEY, &[1u8][..]);
        } else {
            batch.remove(SNAPSHOT_PARTIAL_KEY);
        }
        self.apply(batch)?;
        self.sync.sync()?;
        self.cache.image_partial = partial;
        Ok(())
    }

    /// The durability handle of the underlying database, shared with this store (the state
    /// database's migration syncs its marker with it).
    pub fn db_sync(&self) -> DbSync {
        self.sync.clone()
    }

    fn first_index_cached(&self) -> u64 {
        self.cache.snapshot.index + 1
    }

    /// The last index: the snapshot's when the log is empty.
    fn last_index_cached(&self) -> u64 {
        self.cache.snapshot.index + self.log.len() as u64
    }

    fn apply(&self, batch: sled::Batch) -> Result<(), StorageError> {
        self.tree
            .apply_batch(batch)
            .map_err(|e| sled_err("apply batch", e))
    }
}

/// Reads the snapshot metadata and whether its image is partial; the hard state comes from
/// the WAL.
fn load_cache(tree: &sled::Tree) -> Result<Cache, StorageError> {
    let hard_state = HardState::default();
    let snapshot = match tree.get(SNAPSHOT_META_KEY) {
        Ok(Some(b)) => disk_format::decode_snapshot_meta(&b)?,
        Ok(None) => SnapshotMeta::default(),
        Err(e) => return Err(sled_err("get", e)),
    };
    let image_partial = tree
        .contains_key(SNAPSHOT_PARTIAL_KEY)
        .map_err(|e| sled_err("get", e))?;
    Ok(Cache {
        hard_state,
        image_partial,
        snapshot,
    })
}

impl Storage for WalLogStore {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        Ok((
            self.cache.hard_state,
            self.cache.snapshot.conf_state.clone(),
        ))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first_index_cached() {
            return Err(StorageError::Compacted(lo));
        }
        if hi > self.last_index_cached() + 1 {
            return Err(StorageError::Unavailable(hi));
        }
        if lo >= hi {
            return Ok(Vec::new());
        }
        let base = self.first_index_cached();
        let from = usize::try_from(lo - base).unwrap_or(usize::MAX);
        let to = usize::try_from(hi - base).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity((to - from).min(1024));
        let mut total = 0u64;
        for entry in &self.log[from..to] {
            total = total.saturating_add(entry.size());
            // etcd's limitSize: the longest prefix within max_bytes, but at least one entry.
            if !out.is_empty() && total > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let snap = &self.cache.snapshot;
        if index < snap.index {
            return Err(StorageError::Compacted(index));
        }
        if index > self.last_index_cached() {
            return Err(StorageError::Unavailable(index));
        }
        if index == snap.index {
            return Ok(snap.term);
        }
        let at = usize::try_from(index - snap.index - 1).unwrap_or(usize::MAX);
        self.log
            .get(at)
            .map(|e| e.term)
            .ok_or_else(|| StorageError::Io(format!("corrupt Raft log: entry {index} is missing")))
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.first_index_cached())
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.last_index_cached())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        if self.cache.image_partial
            && let Some(source) = &self.source
        {
            let (index, conf_state, data) = source.image()?;
            if index < self.cache.snapshot.index || index > self.last_index_cached() {
                return Err(StorageError::Io(format!(
                    "the state machine's image is at {index}, outside the log's {}..={}",
                    self.cache.snapshot.index,
                    self.last_index_cached()
                )));
            }
            return Ok(Snapshot {
                meta: SnapshotMeta {
                    index,
                    term: self.term(index)?,
                    conf_state,
                },
                data,
            });
        }
        let index = self.cache.snapshot.index;
        let data = match self.images.get(index.to_be_bytes()) {
            Ok(Some(b)) => b.to_vec(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(sled_err("get", e)),
        };
        Ok(Snapshot {
            meta: self.cache.snapshot.clone(),
            data,
        })
    }
}

impl LogStore for WalLogStore {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let first = first.index;
        if first < self.first_index_cached() {
            return Err(StorageError::Compacted(first));
        }
        if first > self.last_index_cached() + 1 {
            return Err(StorageError::Unavailable(first));
        }
        for (offset, entry) in entries.iter().enumerate() {
            if entry.index != first + offset as u64 {
                return Err(StorageError::Unavailable(first + offset as u64));
            }
        }
        // Replay replaces the tail the same way when it meets `first` again.
        self.wal.append(entries);
        let keep = usize::try_from(first - self.first_index_cached()).unwrap_or(usize::MAX);
        self.log.truncate(keep);
        self.log.extend_from_slice(entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        if hs == self.cache.hard_state {
            return Ok(());
        }
        self.wal.set_hard_state(&hs);
        self.cache.hard_state = hs;
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let meta = snapshot.meta;
        if self.cache.snapshot.index > meta.index {
            return Err(StorageError::SnapshotOutOfDate(meta.index));
        }
        // Pitfall 21: keep the suffix only if the log holds the snapshot's last entry.
        let keep_suffix =
            meta.index <= self.last_index_cached() && self.term(meta.index)? == meta.term;
        // The state machine restored the image before this call: durable before the log
        // forgets what preceded it.
        self.sync_state()?;
        self.store_image(meta.index, snapshot.data)?;
        self.switch_meta(&meta, false)?;
        if keep_suffix {
            let drop = usize::try_from(meta.index - self.cache.snapshot.index).unwrap_or(0);
            self.log.drain(..drop.min(self.log.len()));
        } else {
            self.log.clear();
        }
        let index = meta.index;
        self.cache.snapshot = meta;
        self.wal.rewrite(&self.cache.hard_state, &self.log)?;
        self.drop_images_except(index)
    }

    fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        self.install_snapshot(index, conf_state, data, false)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.wal.sync()
    }
}
