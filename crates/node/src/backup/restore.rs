//! `flotilla backup restore`: a backup into a new member's data dir, idempotently.
//!
//! A data dir that already holds a member (its `db` directory exists) is never touched: the
//! command says so and succeeds, so a pod's start script can run it on every start. Otherwise
//! the object is streamed to a file inside the data dir (the volume has room for what is about
//! to be restored there; a container's /tmp may not), its SHA-256 is checked against the
//! sidecar, and `crate::snapshot_file::restore` — what `flotilla snapshot restore` does —
//! writes the keyspace into a staging directory beside it. Only then is the result moved into
//! place, `db` last, by renames on the same volume; a restore cut short at any point leaves
//! no `db`, so the next run starts it again from scratch.

use std::path::{Path, PathBuf};

use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

use super::catalog::{self, SIDECAR_SUFFIX};
use super::location::Location;
use super::save::hex;
use super::{BackupError, RestoreArgs};

/// Scratch space inside the data dir: the download and the staging directory.
pub const WORK_DIR: &str = ".flotilla-restore";

/// Whether `data_dir` holds a member's data (what `flotilla node` would start from).
pub fn holds_member(data_dir: &Path) -> bool {
    data_dir.join("db").exists()
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> BackupError {
    move |e| BackupError::Io(format!("{what}: {e}"))
}

/// Runs `backup restore`; returns the result line.
///
/// # Errors
/// [`BackupError`]: no such (complete) backup, a checksum mismatch (nothing is restored), a
/// damaged snapshot, or a store or disk failure.
pub async fn restore(a: &RestoreArgs) -> Result<serde_json::Value, BackupError> {
    let data_dir = a.data_dir.clone();
    if holds_member(&data_dir) {
        tracing::info!(data_dir = %data_dir.display(), "the data dir already holds a member: not restoring");
        return Ok(serde_json::json!({
            "restored": false,
            "dataDir": data_dir.display().to_string(),
            "reason": "the data dir already holds a member; left untouched",
        }));
    }
    let loc = Location::parse(&a.from, &a.s3, false)?;
    let (name, expected) = resolve(&loc, a).await?;
    let parsed = catalog::parse_name(&name)
        .ok_or_else(|| BackupError::Usage(format!("{name}: not a backup's object name")))?;
    let work = data_dir.join(WORK_DIR);
    if work.exists() {
        // The remains of an interrupted restore.
        std::fs::remove_dir_all(&work).map_err(io(format!("removing {}", work.display())))?;
    }
    std::fs::create_dir_all(&work).map_err(io(format!("creating {}", work.display())))?;
    let result = async {
        let file = work.join("backup.db");
        let (size, sha256) = download(&loc, &name, &file).await?;
        if sha256 != expected {
            return Err(BackupError::Damaged(format!(
                "{}: SHA-256 mismatch (object {sha256}, sidecar {expected}): the backup is \
                 damaged or was altered; nothing restored",
                loc.url_of(&name)
            )));
        }
        let staging = work.join("data");
        let st = tokio::task::spawn_blocking({
            let file = file.clone();
            let staging = staging.clone();
            move || crate::snapshot_file::restore(&file, &staging)
        })
        .await
        .map_err(|e| BackupError::Io(format!("restore task: {e}")))??;
        std::fs::remove_file(&file).map_err(io(format!("removing {}", file.display())))?;
        move_into_place(&staging, &data_dir)?;
        Ok(serde_json::json!({
            "restored": true,
            "name": name,
            "location": loc.url_of(&name),
            "revision": st.revision,
            "size": size,
            "sha256": sha256,
            "totalKeys": st.total_keys,
            "dataDir": data_dir.display().to_string(),
        }))
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    if let Ok(v) = &result {
        let revision = v["revision"].as_i64().unwrap_or(0);
        if revision != parsed.revision {
            tracing::warn!(
                name,
                restored = revision,
                named = parsed.revision,
                "the restored revision differs from the one in the backup's name"
            );
        }
    }
    result
}

/// The backup to restore and the SHA-256 its sidecar holds.
async fn resolve(loc: &Location, a: &RestoreArgs) -> Result<(String, String), BackupError> {
    if a.name == "latest" {
        let Some(cluster) = a.cluster.as_deref() else {
            return Err(BackupError::Usage("--name latest needs --cluster".into()));
        };
        let list = catalog::list(loc, Some(cluster)).await?;
        let b = list.into_iter().next().ok_or_else(|| {
            BackupError::Usage(format!(
                "no complete backup of cluster {cluster} in {}",
                loc.base_url
            ))
        })?;
        tracing::info!(name = b.name, "restoring the newest backup");
        return Ok((b.name, b.sha256));
    }
    let sidecar = format!("{}{SIDECAR_SUFFIX}", a.name);
    let text = match loc.store.get(&loc.path(&sidecar)?).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(BackupError::Usage(format!(
                "{}: no such complete backup (no {sidecar}: missing, or its save was interrupted)",
                loc.url_of(&a.name)
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let sha = catalog::parse_sidecar(&text).ok_or_else(|| {
        BackupError::Damaged(format!("{}: not a SHA-256 sidecar", loc.url_of(&sidecar)))
    })?;
    Ok((a.name.clone(), sha))
}

/// Streams object `name` into `file`; returns its size and SHA-256.
async fn download(loc: &Location, name: &str, file: &Path) -> Result<(u64, String), BackupError> {
    let got = match loc.store.get(&loc.path(name)?).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(BackupError::Damaged(format!(
                "{}: the sidecar exists but the data object does not",
                loc.url_of(name)
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = tokio::fs::File::create(file)
        .await
        .map_err(io(format!("creating {}", file.display())))?;
    let mut hash = sha2::Sha256::new();
    let mut size = 0u64;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hash.update(&chunk);
        size += chunk.len() as u64;
        out.write_all(&chunk)
            .await
            .map_err(io(format!("writing {}", file.display())))?;
    }
    out.flush()
        .await
        .map_err(io(format!("writing {}", file.display())))?;
    Ok((size, hex(&hash.finalize())))
}

/// Moves everything `staging` holds into `data_dir`, `db` last, then syncs the directory.
fn move_into_place(staging: &Path, data_dir: &Path) -> Result<(), BackupError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(staging)
        .map_err(io(format!("reading {}", staging.display())))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(format!("reading {}", staging.display())))?;
    // `db` is what makes the data dir a member's: it goes last.
    entries.sort_by_key(|p| p.file_name().is_some_and(|n| n == "db"));
    for from in entries {
        let Some(file_name) = from.file_name() else {
            continue;
        };
        let to = data_dir.join(file_name);
        // Without `db`, anything here is the remains of an interrupted restore.
        if to.is_dir() {
            std::fs::remove_dir_all(&to).map_err(io(format!("removing {}", to.display())))?;
        } else if to.exists() {
            std::fs::remove_file(&to).map_err(io(format!("removing {}", to.display())))?;
        }
        std::fs::rename(&from, &to).map_err(io(format!(
            "moving {} to {}",
            from.display(),
            to.display()
        )))?;
    }
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", data_dir.display())))
}
