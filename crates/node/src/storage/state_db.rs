//! The state machine's own sled database under `<data-dir>/mvcc/`: where it lives, how it is
//! opened, how it moved out of the Raft store's database (a one-time migration), and how it is
//! replaced by a compacted copy of itself (defragmentation).
//!
//! # Why a database of its own
//!
//! sled 0.34 never shrinks its files: pages freed by compaction are reused, but the file keeps
//! its high-water mark. While the MVCC tree shared `<data-dir>/db` with the Raft store, nothing
//! could give that space back. In a database of its own it can be *rewritten*: copying the live
//! entries into a fresh database and switching to it drops every page the old one wasted, as
//! etcd's defragment rewrites its bbolt file. The Raft store (snapshot metadata and images, the
//! identity, the member list) and the WAL stay in `<data-dir>/db`.
//!
//! # Layout
//!
//! ```text
//! <data-dir>/mvcc/CURRENT        the live generation's name, e.g. "0000000000000002\n"
//! <data-dir>/mvcc/<gen:016x>/    one generation: a sled database (conf, db, blobs/, snap.*)
//! ```
//!
//! # Switching generations atomically
//!
//! A new generation is written into a directory of its own and made durable ([`DbSync`]);
//! only then does `CURRENT` name it: `CURRENT.tmp` is written and fsynced, renamed over
//! `CURRENT`, and `mvcc/` is fsynced. That rename is the one atomic step: before it the old
//! generation is live, after it the new one, and both hold the same state. When a store opens,
//! [`StateDir::recover`] completes or rolls back whatever a crash interrupted: it deletes
//! `CURRENT.tmp` and every generation `CURRENT` does not name (a copy that never became
//! current, or an old generation whose deletion was cut short).
//!
//! Why a pointer file rather than renaming the database directories themselves (`mvcc` →
//! `mvcc.old`, `mvcc.new` → `mvcc`): sled builds the paths of its blob and snapshot files from
//! the directory it was opened at, each time it writes one, so a directory must never be
//! renamed under an open database. Renaming would mean closing the live database first and
//! waiting for sled's background threads to let go of it, with no database to serve from in
//! between. With a pointer, the new generation is opened at its final path before the switch,
//! and the old one is closed and deleted afterwards, at leisure ([`StateDb::retire`]).
//!
//! # Migration from the shared database
//!
//! Data dirs written before this layout keep the MVCC tree (`mvcc`) inside `<data-dir>/db`.
//! [`open`] moves it, in steps that each leave a data dir that opens correctly:
//!
//! 1. copy the tree into a new generation and make it durable; a crash here leaves a
//!    generation `CURRENT` does not name, deleted at the next open, and the copy starts again
//!    from the untouched tree (the copy is idempotent);
//! 2. name it in `CURRENT` (the atomic rename above): from now on the new database is the
//!    state machine's, whatever else survives;
//! 3. record [`STATE_DB_MARKER`] in the Raft store and sync it: a data dir that has the marker
//!    but no `CURRENT` lost its state database, and [`open`] refuses it rather than start an
//!    empty state machine beside a compacted log;
//! 4. drop the old tree from the shared database and sync it. A tree left over by a crash is
//!    dropped at the next open, never read.
//!
//! A new data dir takes the same path with nothing to copy.
//!
//! # Durability across the two databases
//!
//! The state machine relies on three things, which hold across the two databases:
//!
//! - **The applied index is persisted with the state it describes.** Both live in this
//!   database, written by one sled batch per Ready (`mvcc::store`); a crash loses a suffix of
//!   batches and leaves the state exactly as of some applied index.
//! - **The WAL keeps every entry whose effect may not be durable.** This database is not synced
//!   per Ready; the WAL has the entries after its applied index and the node applies them
//!   again. The WAL drops entries only when the Raft store records a snapshot (compaction, or
//!   an installed snapshot), and `WalLogStore` first calls its [`StateSync`](super::StateSync) hook, which syncs
//!   *this* database (flush + fdatasync, and the fsync of `mvcc/` if a `CURRENT` switch is not
//!   yet known durable): state DB durable → snapshot image and metadata durable in the Raft
//!   store → WAL rewritten. With one shared database a single sync covered both; with two,
//!   the order does.
//! - **An installed snapshot replaces the state before the log forgets it.** The image is
//!   written into a new generation, made durable and named in `CURRENT` before the Raft store
//!   records the snapshot. A crash between the two leaves the state ahead of the Raft store's
//!   snapshot, which restarts with `applied = max(state, snapshot)`.
//!
//! Why a restore writes a new generation rather than one batch over the live tree: a large
//! image as one sled batch goes through sled's page cache page by page, replacing and removing
//! keys among the old ones, and took minutes for a 140 MB store on a loaded member, all of it
//! under the lock every client read waits on. Written in key order into an empty database it
//! takes seconds (2.7 s against 8.1 s for 133 MB here), needs no lock, and leaves no pages
//! of the old state behind.
//!
//! A defragment copies the state under the state machine's write lock, so no entry applies
//! during the copy: the new generation holds exactly the applied state, synced before it
//! becomes current, and nothing the old one held is lost by switching.

use std::fs::File;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::durable::{DbSync, open_db};

/// The state machine's directory under the data dir.
pub const STATE_DIR: &str = "mvcc";
/// The name of the MVCC tree, in this database and (before the migration) in the shared one.
pub const STATE_TREE: &str = "mvcc";
/// The file naming the live generation.
pub const CURRENT: &str = "CURRENT";
/// `CURRENT` being replaced.
const CURRENT_TMP: &str = "CURRENT.tmp";
/// Key in the Raft store's tree recording that the state machine lives in its own database.
pub const STATE_DB_MARKER: &[u8] = b"m:state_db";
/// The marker's value: the layout version.
const MARKER_V1: &[u8] = b"mvcc/CURRENT v1";
/// The Raft store's tree, which holds the marker.
const RAFT_TREE: &str = super::log_store::TREE_NAME;
/// Entries copied per sled batch: large enough to amortise a batch, small enough to bound the
/// memory a copy holds.
const COPY_BATCH: usize = 4096;
/// How long a retired generation's deletion waits for sled to release it.
const RETIRE_WAIT: Duration = Duration::from_secs(60);

/// What can go wrong with the state database.
#[derive(Debug, thiserror::Error)]
pub enum StateDbError {
    /// A file system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// sled failed.
    #[error("sled {what}: {source}")]
    Sled {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: sled::Error,
    },
    /// Opening or syncing a database failed.
    #[error("{0}")]
    Storage(#[from] flotilla_raft::StorageError),
    /// `CURRENT` does not name a generation.
    #[error("{path:?} is damaged: {why}")]
    BadCurrent {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The Raft store says the state database exists, but it does not.
    #[error(
        "the key-value state is missing: the Raft store in this data dir records that it lives \
         in {dir:?}, which names no database (was it deleted?); refusing to start an empty \
         state machine beside a log that may be compacted"
    )]
    Missing {
        /// The state directory.
        dir: PathBuf,
    },
}

fn io(what: impl std::fmt::Display, source: std::io::Error) -> StateDbError {
    StateDbError::Io {
        what: what.to_string(),
        source,
    }
}

fn sled_err(what: impl std::fmt::Display, source: sled::Error) -> StateDbError {
    StateDbError::Sled {
        what: what.to_string(),
        source,
    }
}

/// fsync of a directory, so renames and new names in it survive a power cut.
fn sync_dir(dir: &Path) -> Result<(), StateDbError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(format_args!("fsync of directory {dir:?}"), e))
}

/// `<data-dir>/mvcc`: the generations and `CURRENT`.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory of `data_dir` (not created).
    pub fn new(data_dir: &Path) -> Self {
        StateDir {
            root: data_dir.join(STATE_DIR),
        }
    }

    /// `<data-dir>/mvcc`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of generation `generation`.
    pub fn generation_path(&self, generation: u64) -> PathBuf {
        self.root.join(format!("{generation:016x}"))
    }

    /// The generation `CURRENT` names, if there is a `CURRENT`.
    ///
    /// # Errors
    /// [`StateDbError::BadCurrent`] if it names nothing readable.
    pub fn current(&self) -> Result<Option<u64>, StateDbError> {
        let path = self.root.join(CURRENT);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format_args!("reading {path:?}"), e)),
        };
        let bad = |why: &str| StateDbError::BadCurrent {
            path: path.clone(),
            why: why.to_string(),
        };
        let name = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("no final newline"))?;
        if name.len() != 16 {
            return Err(bad("not a 16-digit generation"));
        }
        let generation = u64::from_str_radix(name, 16).map_err(|_| bad("not hexadecimal"))?;
        if !self.generation_path(generation).join("db").is_file() {
            return Err(bad(&format!("generation {name} holds no sled database")));
        }
        Ok(Some(generation))
    }

    /// The live generation's directory, if any (for tools and tests that read a stopped
    /// member's state).
    ///
    /// # Errors
    /// As [`StateDir::current`].
    pub fn current_path(&self) -> Result<Option<PathBuf>, StateDbError> {
        Ok(self.current()?.map(|g| self.generation_path(g)))
    }

    /// Completes or rolls back what a crash interrupted (see the [module docs](self)): deletes
    /// `CURRENT.tmp` and every generation `CURRENT` does not name. Returns the live
    /// generation. Call it before opening anything in the directory.
    ///
    /// # Errors
    /// [`StateDbError`] if the directory cannot be read or cleaned.
    pub fn recover(&self) -> Result<Option<u64>, StateDbError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format_args!("listing {:?}", self.root), e)),
        };
        let current = self.current()?;
        let keep = current.map(|g| format!("{g:016x}"));
        let mut removed = false;
        for entry in entries {
            let entry = entry.map_err(|e| io(format_args!("listing {:?}", self.root), e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if name == CURRENT || Some(name.as_ref()) == keep.as_deref() {
                continue;
            }
            if name == CURRENT_TMP {
                std::fs::remove_file(&path)
                    .map_err(|e| io(format_args!("removing {path:?}"), e))?;
                removed = true;
            } else if name.len() == 16 && u64::from_str_radix(&name, 16).is_ok() {
                tracing::info!(dir = %path.display(), "removing a state database generation that is not current");
                std::fs::remove_dir_all(&path)
                    .map_err(|e| io(format_args!("removing {path:?}"), e))?;
                removed = true;
            }
            // Anything else is not ours: left alone.
        }
        if removed {
            sync_dir(&self.root)?;
        }
        Ok(current)
    }

    /// Opens generation `generation`.
    fn open_generation(&self, generation: u64) -> Result<StateDb, StateDbError> {
        let path = self.generation_path(generation);
        let db = open_db(&path)?;
        let sync = DbSync::open(db.clone(), &path)?;
        Ok(StateDb {
            db,
            sync,
            dir: self.clone(),
            generation,
            current_synced: AtomicBool::new(true),
        })
    }

    /// Writes a new generation after `after` (0: none yet) holding every entry of `trees`
    /// (each copied under its name) and makes it durable. It is not current yet: the caller
    /// opens what it needs in it, then calls [`StateDb::make_current`] (or
    /// [`StateDb::discard`]).
    ///
    /// # Errors
    /// [`StateDbError`] if writing or syncing fails; the partial generation is removed (or
    /// left for the next [`StateDir::recover`], which removes it).
    pub fn write_generation(
        &self,
        after: u64,
        trees: &[(&str, &sled::Tree)],
    ) -> Result<StateDb, StateDbError> {
        self.fill_generation(after, |db| copy_trees(db, trees))
    }

    /// Writes a new generation after `after` holding `entries` (in key order) in the tree
    /// `tree`, and makes it durable; not current yet, as [`StateDir::write_generation`]. This
    /// is how a snapshot image replaces the state: written into a fresh database, without any
    /// lock the state machine's readers wait on, rather than as one huge batch over the live
    /// tree (which sled applies page by page through its cache, for minutes on a large image).
    ///
    /// # Errors
    /// As [`StateDir::write_generation`].
    pub fn write_generation_from<K, V>(
        &self,
        after: u64,
        tree: &str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<StateDb, StateDbError>
    where
        K: Into<sled::IVec>,
        V: Into<sled::IVec>,
    {
        self.fill_generation(after, |db| {
            let target = db.open_tree(tree).map_err(|e| sled_err("open tree", e))?;
            write_batches(&target, entries.into_iter().map(Ok))
        })
    }

    /// Claims the first free generation number after `after`, lets `fill` write it, and makes
    /// it durable.
    fn fill_generation(
        &self,
        after: u64,
        fill: impl FnOnce(&sled::Db) -> Result<(), StateDbError>,
    ) -> Result<StateDb, StateDbError> {
        let generation = self.claim_generation(after)?;
        let state = self.open_generation(generation)?;
        if let Err(e) = fill(&state.db).and_then(|()| Ok(state.sync.sync()?)) {
            state.discard();
            return Err(e);
        }
        Ok(state)
    }

    /// Creates the directory of the first generation after `after` that does not exist yet.
    /// Creating it is the claim: a restore and a defragment that start from the same
    /// generation never write into one directory. A directory left by a failed attempt is
    /// skipped here and removed by the next [`StateDir::recover`].
    fn claim_generation(&self, after: u64) -> Result<u64, StateDbError> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| io(format_args!("creating {:?}", self.root), e))?;
        let mut generation = after + 1;
        loop {
            let path = self.generation_path(generation);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(generation),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => generation += 1,
                Err(e) => return Err(io(format_args!("creating {path:?}"), e)),
            }
        }
    }
}

/// Copies every entry of `trees` into `db`, tree by tree, in key order.
fn copy_trees(db: &sled::Db, trees: &[(&str, &sled::Tree)]) -> Result<(), StateDbError> {
    for (name, source) in trees {
        let target = db.open_tree(name).map_err(|e| sled_err("open tree", e))?;
        let entries = source
            .iter()
            .map(|item| item.map_err(|e| sled_err(format_args!("reading tree {name}"), e)));
        write_batches(&target, entries)?;
    }
    Ok(())
}

/// Inserts `entries` into `target`, [`COPY_BATCH`] per sled batch.
fn write_batches<K, V>(
    target: &sled::Tree,
    entries: impl Iterator<Item = Result<(K, V), StateDbError>>,
) -> Result<(), StateDbError>
where
    K: Into<sled::IVec>,
    V: Into<sled::IVec>,
{
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for item in entries {
        let (k, v) = item?;
        batch.insert(k, v);
        n += 1;
        if n == COPY_BATCH {
            target
                .apply_batch(std::mem::take(&mut batch))
                .map_err(|e| sled_err("apply batch", e))?;
            n = 0;
        }
    }
    target
        .apply_batch(batch)
        .map_err(|e| sled_err("apply batch", e))
}

/// The open state database: one generation, with its durability handle.
pub struct StateDb {
    db: sled::Db,
    sync: DbSync,
    dir: StateDir,
    generation: u64,
    /// False while the fsync of `mvcc/` after switching `CURRENT` to this generation is owed.
    current_synced: AtomicBool,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb")
            .field("dir", &self.dir.root)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl StateDb {
    /// The sled database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The state directory.
    pub fn dir(&self) -> &StateDir {
        &self.dir
    }

    /// This generation's number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// This generation's directory.
    pub fn path(&self) -> PathBuf {
        self.dir.generation_path(self.generation)
    }

    /// Makes every write made before the call durable (see [`DbSync::sync`]), and the switch
    /// to this generation if its directory fsync is still owed.
    ///
    /// # Errors
    /// [`StateDbError`]; the caller must not drop log entries the state depends on.
    pub fn sync(&self) -> Result<(), StateDbError> {
        if !self.current_synced.load(Ordering::Acquire) {
            sync_dir(&self.dir.root)?;
            self.current_synced.store(true, Ordering::Release);
        }
        Ok(self.sync.sync()?)
    }

    /// Whether `CURRENT` names this generation durably. While it is not, the previous
    /// generation must be kept: a crash may bring it back as the current one.
    pub fn is_current_durable(&self) -> bool {
        self.current_synced.load(Ordering::Acquire)
    }

    /// Makes this generation (written by [`StateDir::write_generation`]) the current one:
    /// `CURRENT.tmp`, fsync, rename over `CURRENT`, fsync of the directory.
    ///
    /// If the rename succeeded but the directory's fsync failed, it still returns `Ok`: this
    /// generation *is* current as far as the file system answers, so the caller must use it
    /// from now on, and [`StateDb::sync`] retries the fsync before anything relies on the
    /// switch being durable (see [`StateDb::is_current_durable`]).
    ///
    /// # Errors
    /// [`StateDbError`] if the switch did not happen; the caller then discards this generation.
    pub fn make_current(&self) -> Result<(), StateDbError> {
        let root = &self.dir.root;
        let tmp = root.join(CURRENT_TMP);
        let current = root.join(CURRENT);
        let written = File::create(&tmp)
            .and_then(|mut f| {
                writeln!(f, "{:016x}", self.generation)?;
                f.sync_all()
            })
            .map_err(|e| io(format_args!("writing {tmp:?}"), e));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&tmp, &current) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(format_args!("renaming {tmp:?} to {current:?}"), e));
        }
        if let Err(e) = sync_dir(root) {
            tracing::warn!(error = %e, "the switch of the state database is not durable yet; retried at the next sync");
            self.current_synced.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Writes a copy of `trees` (this database's, normally) as the next generation, durable
    /// but not current (see [`StateDir::write_generation`]). `self` is untouched and stays
    /// open: the caller opens its trees in the new one, calls [`StateDb::make_current`],
    /// switches its handles over and then [`StateDb::retire`]s this one.
    ///
    /// # Errors
    /// As [`StateDir::write_generation`].
    pub fn write_next(&self, trees: &[(&str, &sled::Tree)]) -> Result<StateDb, StateDbError> {
        self.dir.write_generation(self.generation, trees)
    }

    /// Closes and removes a generation that never became current.
    pub fn discard(self) {
        let path = self.path();
        drop(self);
        // Best effort: whatever stays is not current and goes at the next recover().
        let _ = std::fs::remove_dir_all(&path);
    }

    /// Closes this generation and deletes its directory, on a thread of its own: dropping a
    /// sled database flushes it and joins its flusher, and its background threads let go of
    /// it a moment later; the directory is removed once its lock is free (bounded by
    /// a minute). Call it only after another generation became current. Whatever is
    /// not removed now (the process stopped first) goes at the next [`StateDir::recover`].
    ///
    /// Returns the thread's handle (tests wait on it; the node lets it run).
    pub fn retire(self) -> std::thread::JoinHandle<()> {
        let path = self.path();
        let run = move || {
            let StateDb { db, sync, .. } = self;
            drop(sync);
            drop(db);
            let lock = path.join("db");
            let deadline = Instant::now() + RETIRE_WAIT;
            loop {
                // sled holds an exclusive flock on its `db` file while any handle is open.
                let free = match File::open(&lock) {
                    Ok(f) => f.try_lock().is_ok(),
                    Err(e) if e.kind() == ErrorKind::NotFound => true,
                    Err(_) => false,
                };
                if free {
                    break;
                }
                if Instant::now() > deadline {
                    tracing::warn!(dir = %path.display(), "an old state database generation is still open; it will be removed at the next start");
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    if let Some(root) = path.parent() {
                        let _ = sync_dir(root);
                    }
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "removing an old state database generation failed; it will be removed at the next start")
                }
            }
        };
        std::thread::Builder::new()
            .name("state-db-retire".into())
            .spawn(run)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot start the thread removing an old state database generation");
                std::thread::spawn(|| {})
            })
    }
}

/// Opens the state database of `data_dir`, moving the MVCC tree out of the Raft store's
/// database `raft_db` first if this data dir still has the shared layout (see the
/// [module docs](self) for the steps and why each crash point is safe). `raft_sync` is the
/// Raft store's durability handle.
///
/// # Errors
/// [`StateDbError::Missing`] if the Raft store records a state database that is gone; any
/// other [`StateDbError`] if reading, copying or syncing fails.
pub fn open(
    data_dir: &Path,
    raft_db: &sled::Db,
    raft_sync: &DbSync,
) -> Result<StateDb, StateDbError> {
    let dir = StateDir::new(data_dir);
    let current = dir.recover()?;
    let raft = raft_db
        .open_tree(RAFT_TREE)
        .map_err(|e| sled_err("open tree", e))?;
    let marked = raft
        .contains_key(STATE_DB_MARKER)
        .map_err(|e| sled_err("get", e))?;
    let legacy = raft_db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == STATE_TREE.as_bytes());
    let state = match current {
        Some(generation) => dir.open_generation(generation)?,
        None if marked => return Err(StateDbError::Missing { dir: dir.root }),
        None => {
            let started = Instant::now();
            let state = if legacy {
                let old = raft_db
                    .open_tree(STATE_TREE)
                    .map_err(|e| sled_err("open tree", e))?;
                dir.write_generation(0, &[(STATE_TREE, &old)])?
            } else {
                dir.write_generation(0, &[])?
            };
            if let Err(e) = state.make_current() {
                state.discard();
                return Err(e);
            }
            // The marker below is written only once CURRENT durably names a durable copy.
            state.sync()?;
            if legacy {
                tracing::info!(
                    ms = started.elapsed().as_millis() as u64,
                    dir = %dir.root.display(),
                    "moved the key-value state out of the Raft store's database"
                );
            }
            state
        }
    };
    if !marked {
        raft.insert(STATE_DB_MARKER, MARKER_V1)
            .map_err(|e| sled_err("insert", e))?;
        raft_sync.sync()?;
    }
    if legacy {
        raft_db
            .drop_tree(STATE_TREE)
            .map_err(|e| sled_err("drop tree", e))?;
        raft_sync.sync()?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests;
