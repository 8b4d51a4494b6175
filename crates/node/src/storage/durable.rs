//! Making a sled 0.34 database durable: `flush()` followed by fdatasync of every file sled
//! wrote.
//!
//! sled 0.34's `flush()` writes its log buffers with `pwrite` + `sync_file_range`. That pushes
//! the data to the device but neither the file's metadata (its size, when the file grew) nor the
//! device's volatile write cache: it survives `kill -9`, not a power cut. sled also writes
//! values too large for a log segment (> segment size / 4 = 128 KiB by default; snapshot images
//! are the usual case) as separate files under `blobs/`, which it never syncs at all, and it
//! never syncs the directory entries of the files it creates.
//!
//! So [`DbSync::sync`], in this order:
//! 1. fdatasyncs every blob file that appeared or grew since the last sync, then fsyncs the
//!    `blobs/` directory so their names are durable: a log record must never become durable
//!    before the blob it points to;
//! 2. calls `flush()` so every write made before the call is in the `db` file;
//! 3. fdatasyncs the `db` file through a handle opened once when the store opened.
//!
//! sled's own `snap.*` files are fsynced by sled itself; its `conf` file and the directories are
//! fsynced once when [`DbSync::open`] runs.
//!
//! A [`DbSync`] is cheap to clone and shares its handles, so the MVCC store, which writes to the
//! same `sled::Db`, can make its writes durable through the same path.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use flotilla_raft::StorageError;

/// Opens a sled database at `dir` the way the node uses it: one `Db` for the Raft log and the
/// MVCC store.
///
/// sled releases its file lock only when the last internal handle goes away, and its background
/// flusher thread can still hold one for a moment after the caller dropped the previous `Db`
/// (an in-process restart, a test that reopens). So a lock conflict is retried with a short
/// backoff for up to [`LOCK_WAIT`] before it is reported: another live process that really owns
/// the directory still gets a clear error.
pub fn open_db(dir: &Path) -> Result<sled::Db, StorageError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut backoff = std::time::Duration::from_millis(5);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY)
            .open()
        {
            Ok(db) => return Ok(db),
            // sled 0.34 reports the lock conflict as ErrorKind::Other with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                return Err(StorageError::Io(format!(
                    "cannot open sled database at {dir:?}: {e}"
                )));
            }
        }
    }
}

/// sled's page cache per database. sled's default is 1 GiB, which a member fills with every
/// page it ever wrote: after 100k keys of 256 B and the benchmark's rounds a member held
/// ~300 MB, more than etcd (whose bbolt leaves caching to the kernel's page cache). Reads
/// that miss it come from the kernel's page cache, and the MVCC store's key index, which
/// every range consults first, is in memory anyway; writes go to the newest pages only.
/// Measured (3 members, 100k puts from 1,000 clients, 100k from 256, 100k serializable
/// ranges): 64 MiB left 159-164 MB per member, 32 MiB 125-133 MB, throughput unchanged.
pub const CACHE_CAPACITY: u64 = 32 * 1024 * 1024;

/// How long [`open_db`] waits for sled's file lock to be released by a previous handle.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Durability for one sled database directory. See the [module docs](self).
#[derive(Clone)]
pub struct DbSync {
    db: sled::Db,
    files: Arc<Mutex<Files>>,
}

impl std::fmt::Debug for DbSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSync").finish_non_exhaustive()
    }
}

struct Files {
    /// sled's data file, opened once.
    db_file: File,
    blobs_dir: PathBuf,
    /// Blob files already fdatasynced, with the length they had then. sled writes a blob once
    /// and never changes it, but a blob being written while we scan may be caught half-way;
    /// its length tells us to sync it again.
    synced_blobs: HashMap<OsString, u64>,
}

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(format!("{what}: {e}"))
}

/// fsync of a directory, so the names of files created in it survive a power cut.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(format_args!("fsync of directory {dir:?}"), e))
}

impl DbSync {
    /// Prepares durability for `db`, which must have been opened at `dir` (see [`open_db`]).
    ///
    /// # Errors
    /// [`StorageError::Io`] if `dir` holds no sled database or a file cannot be opened or synced.
    pub fn open(db: sled::Db, dir: &Path) -> Result<Self, StorageError> {
        let db_path = dir.join("db");
        // Read-write so fdatasync works on every platform; never create: the file must be
        // sled's, or this store would sync a file nobody writes.
        let db_file = File::options()
            .read(true)
            .write(true)
            .open(&db_path)
            .map_err(|e| {
                io(
                    format_args!(
                        "cannot open sled's data file {db_path:?} (was the Db opened at {dir:?}?)"
                    ),
                    e,
                )
            })?;
        db_file
            .sync_all()
            .map_err(|e| io(format_args!("fsync of {db_path:?}"), e))?;
        let conf_path = dir.join("conf");
        match File::open(&conf_path) {
            Ok(f) => f
                .sync_all()
                .map_err(|e| io(format_args!("fsync of {conf_path:?}"), e))?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(format_args!("cannot open {conf_path:?}"), e)),
        }
        let blobs_dir = dir.join("blobs");
        if blobs_dir.is_dir() {
            sync_dir(&blobs_dir)?;
        }
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(DbSync {
            db,
            files: Arc::new(Mutex::new(Files {
                db_file,
                blobs_dir,
                synced_blobs: HashMap::new(),
            })),
        })
    }

    /// Makes every write to the database made before this call durable (fdatasync). One call
    /// covers any number of writes: call it once per Raft Ready (group commit).
    ///
    /// # Errors
    /// [`StorageError::Io`] if flushing or syncing fails; the caller must stop, since it can no
    /// longer know what is on disk.
    pub fn sync(&self) -> Result<(), StorageError> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| StorageError::Io("a previous sync panicked".into()))?;
        files.sync_blobs()?;
        self.db.flush().map_err(|e| io("sled flush", e))?;
        files
            .db_file
            .sync_data()
            .map_err(|e| io("fdatasync of sled's data file", e))
    }
}

impl Files {
    fn sync_blobs(&mut self) -> Result<(), StorageError> {
        let dir = match std::fs::read_dir(&self.blobs_dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(format_args!("cannot list {:?}", self.blobs_dir), e)),
        };
        let mut present = HashMap::with_capacity(self.synced_blobs.len());
        let mut synced_any = false;
        for item in dir {
            let item = item.map_err(|e| io(format_args!("cannot list {:?}", self.blobs_dir), e))?;
            let name = item.file_name();
            let path = item.path();
            // sled removes blobs it no longer needs at any time: a vanished file needs no sync.
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io(format_args!("cannot open blob {path:?}"), e)),
            };
            let len = file
                .metadata()
                .map_err(|e| io(format_args!("cannot stat blob {path:?}"), e))?
                .len();
            if self.synced_blobs.get(&name) != Some(&len) {
                file.sync_data()
                    .map_err(|e| io(format_args!("fdatasync of blob {path:?}"), e))?;
                synced_any = true;
            }
            present.insert(name, len);
        }
        if synced_any {
            sync_dir(&self.blobs_dir)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}
