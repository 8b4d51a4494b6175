//! `flotilla backup save|list|prune|restore`: backups of a running cluster in object storage
//! (S3-compatible, or a directory such as a mounted volume), the catalogue of what is there,
//! retention, and restoring a new member's data dir from it.
//!
//! This module owns the command-line contract the operator builds on (Kubernetes Jobs run
//! `save` and `prune`, a pod's start script runs `restore`), so its outputs are data: one JSON
//! object per line on stdout, a one-line error on stderr and a non-zero exit on failure, and
//! with `--result-file` the same JSON (or `{"error": …}`) in a file — the operator passes the
//! pod's termination-log path and reads it back from the pod status.
//!
//! - A backup is the Maintenance Snapshot stream of one member, exactly as `etcdctl snapshot
//!   save` would store it (`crate::snapshot_file` reads it), uploaded as it arrives through a
//!   multipart upload (parts of [`save::PART_SIZE`], at most two in flight), with its SHA-256
//!   computed on the way. [`source`] picks the member: a follower that keeps up with the leader
//!   rather than the leader, which serves the writes.
//! - Object names are `<prefix><cluster>-<UTC YYYYMMDDTHHMMSSZ>-r<revision>.db`
//!   ([`catalog`]), so a listing sorts by time and shows the revision. The data object
//!   appears only complete (a multipart upload is invisible until completed; the directory
//!   store stages and renames); after it, a sidecar `<name>.sha256` (`sha256sum` format) marks
//!   the backup complete. An object without a sidecar is an interrupted save: `list` and
//!   `restore` ignore it and `prune` deletes it after an hour.
//! - `restore` streams the object to a file on the target volume, checks the sidecar's
//!   SHA-256, then does what `flotilla snapshot restore` does into a staging directory and
//!   moves it into place, so a data dir holds either nothing or a whole member. A data dir
//!   that already holds a member is left alone (exit 0): the start script can run it on every
//!   start.
//!
//! Errors are [`BackupError`]; the binary turns them into the outputs above.

pub mod catalog;
pub mod location;
pub mod restore;
pub mod save;
pub mod source;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

/// Why a backup command failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A flag or URL is wrong.
    #[error("{0}")]
    Usage(String),
    /// No member could serve the snapshot.
    #[error("{0}")]
    NoMember(String),
    /// A member refused or broke a request.
    #[error("{0}")]
    Member(String),
    /// The object store failed.
    #[error("{0}")]
    Store(String),
    /// A backup's data does not match its checksum, or is not a complete snapshot.
    #[error("{0}")]
    Damaged(String),
    /// A local file or directory could not be used.
    #[error("{0}")]
    Io(String),
    /// The snapshot could not be restored.
    #[error(transparent)]
    Restore(#[from] crate::snapshot_file::SnapshotFileError),
}

impl From<object_store::Error> for BackupError {
    fn from(e: object_store::Error) -> Self {
        BackupError::Store(chain(&e))
    }
}

/// An error with its causes, `a: b: c` (a transport error alone says little).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// `flotilla backup …`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a consistent snapshot from a healthy member and upload it; prints one JSON line
    /// {"name","location","revision","size","sha256","member","startedAt","finishedAt"}.
    Save(SaveArgs),
    /// List complete backups, newest first, one JSON line each.
    List(ListArgs),
    /// Delete complete backups beyond the retention rules (never the newest) and interrupted
    /// ones older than an hour; prints one JSON line per deleted object.
    Prune(PruneArgs),
    /// Download a backup, verify its SHA-256 and restore it into a new member's data dir (as
    /// `flotilla snapshot restore`); a data dir that already holds a member is left alone.
    Restore(RestoreArgs),
}

/// Settings of an `s3://` location. Credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`, or any other
/// source the AWS SDKs read: web identity, container or instance credentials).
#[derive(Debug, Clone, Default, Args)]
pub struct S3Flags {
    /// S3-compatible endpoint URL, e.g. `http://minio.backup:9000` (default: AWS S3).
    #[arg(long, env = "FLOTILLA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region to sign requests for.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Address buckets as `ENDPOINT/BUCKET/KEY` rather than `BUCKET.ENDPOINT/KEY` (what most
    /// S3-compatible servers — MinIO, moto, Ceph RGW — need).
    #[arg(long, env = "FLOTILLA_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new())]
    pub s3_path_style: bool,
}

/// How to reach the cluster's members: the client endpoints and etcdctl's TLS and auth flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterFlags {
    /// Client endpoints of the cluster's members, `host:port,…` (or http:// / https:// URLs).
    #[arg(long)]
    pub endpoints: String,
    /// CA bundle (PEM) that signed the members' client certificates; turns TLS on.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; turns TLS on.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Key (PEM) of the client certificate.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// `name:password` of a user with the root role, when the cluster has auth enabled.
    #[arg(long, env = "FLOTILLA_BACKUP_USER", hide_env_values = true)]
    pub user: Option<String>,
    /// Timeout for connecting to a member and for each of its answers.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub dial_timeout: Duration,
}

/// `flotilla backup save`.
#[derive(Debug, Clone, Args)]
pub struct SaveArgs {
    /// The cluster to back up.
    #[command(flatten)]
    pub cluster_flags: ClusterFlags,
    /// Where to upload: `s3://bucket/prefix/` or `file:///dir/`.
    #[arg(long)]
    pub to: String,
    /// The cluster's name, the first part of the object name.
    #[arg(long)]
    pub cluster: String,
    /// A follower is used only if its applied index is within this many entries of the
    /// leader's commit index; otherwise the leader serves the snapshot.
    #[arg(long, default_value_t = source::MAX_FOLLOWER_LAG)]
    pub max_follower_lag: u64,
    /// S3 settings.
    #[command(flatten)]
    pub s3: S3Flags,
    /// Also write the result JSON (or `{"error": …}`) to this file, e.g. /dev/termination-log.
    #[arg(long)]
    pub result_file: Option<PathBuf>,
}

/// `flotilla backup list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Where the backups are: `s3://bucket/prefix/` or `file:///dir/`.
    #[arg(long)]
    pub from: String,
    /// Only this cluster's backups.
    #[arg(long)]
    pub cluster: Option<String>,
    /// S3 settings.
    #[command(flatten)]
    pub s3: S3Flags,
}

/// `flotilla backup prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Where the backups are: `s3://bucket/prefix/` or `file:///dir/`.
    #[arg(long)]
    pub from: String,
    /// The cluster whose backups to prune.
    #[arg(long)]
    pub cluster: String,
    /// Keep the newest N complete backups; older ones are deleted.
    #[arg(long)]
    pub keep_count: Option<usize>,
    /// Delete complete backups older than this (`7d`, `12h`, `30m`, `90s`).
    #[arg(long, value_parser = parse_age)]
    pub keep_age: Option<Duration>,
    /// S3 settings.
    #[command(flatten)]
    pub s3: S3Flags,
}

/// `flotilla backup restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// Where the backups are: `s3://bucket/prefix/` or `file:///dir/`.
    #[arg(long)]
    pub from: String,
    /// The backup's object name, or `latest` for the newest complete backup of `--cluster`.
    #[arg(long)]
    pub name: String,
    /// The cluster (needed with `--name latest`).
    #[arg(long)]
    pub cluster: Option<String>,
    /// The new member's data dir.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// S3 settings.
    #[command(flatten)]
    pub s3: S3Flags,
    /// Also write the result JSON (or `{"error": …}`) to this file.
    #[arg(long)]
    pub result_file: Option<PathBuf>,
}

/// Parses a retention age: a number and `d`, `h`, `m` or `s`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}`: missing unit (d, h, m, s)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{s}` is not an age"))?;
    let secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("`{s}`: unknown unit (d, h, m, s)")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// The rustls crypto provider the S3 client's TLS uses (ring, as the rest of the workspace);
/// installed for the process before an S3 store is built (`location`).
pub fn install_crypto_provider() {
    // Err means one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs one command; returns the JSON lines to print on stdout.
///
/// # Errors
/// [`BackupError`] for anything that went wrong; nothing was left half-done that a later run
/// would mistake for a complete backup or restore.
pub async fn run(cmd: &BackupCommand) -> Result<Vec<serde_json::Value>, BackupError> {
    match cmd {
        BackupCommand::Save(a) => Ok(vec![save::save(a).await?.to_json()]),
        BackupCommand::List(a) => {
            let loc = location::Location::parse(&a.from, &a.s3, false)?;
            let list = catalog::list(&loc, a.cluster.as_deref()).await?;
            Ok(list.iter().map(|b| b.to_json(&loc)).collect())
        }
        BackupCommand::Prune(a) => {
            let loc = location::Location::parse(&a.from, &a.s3, false)?;
            let rules = catalog::Retention {
                keep_count: a.keep_count,
                keep_age: a.keep_age,
            };
            let deleted = catalog::prune(&loc, &a.cluster, &rules).await?;
            Ok(deleted.iter().map(|d| d.to_json(&loc)).collect())
        }
        BackupCommand::Restore(a) => Ok(vec![restore::restore(a).await?]),
    }
}

/// The `--result-file` of a command, if it has one.
pub fn result_file(cmd: &BackupCommand) -> Option<&std::path::Path> {
    match cmd {
        BackupCommand::Save(a) => a.result_file.as_deref(),
        BackupCommand::Restore(a) => a.result_file.as_deref(),
        BackupCommand::List(_) | BackupCommand::Prune(_) => None,
    }
}

/// The largest result written to `--result-file`: Kubernetes keeps at most 4 KiB of a
/// termination message.
pub const RESULT_LIMIT: usize = 4000;

/// The JSON written to `--result-file` for an error: `{"error": "…"}`, cut to fit
/// [`RESULT_LIMIT`].
pub fn error_json(message: &str) -> String {
    let mut m = message.replace('\n', " ");
    loop {
        let j = serde_json::json!({ "error": m }).to_string();
        if j.len() <= RESULT_LIMIT {
            return j;
        }
        // Escapes make the JSON longer than the text: cut by the excess and try again.
        let excess = j.len() - RESULT_LIMIT + 8;
        let cut = m.floor_char_boundary(m.len().saturating_sub(excess));
        m.truncate(cut);
        m.push_str("...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_days() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_age("7").is_err());
        assert!(parse_age("7w").is_err());
        assert!(parse_age("d").is_err());
    }

    #[test]
    fn error_results_fit_a_termination_message() {
        let long = "x".repeat(10_000);
        let j = error_json(&long);
        assert!(j.len() <= RESULT_LIMIT, "{}", j.len());
        let v: serde_json::Value = serde_json::from_str(&j).expect("json");
        assert!(v["error"].as_str().expect("error").starts_with("xxx"));
        assert_eq!(error_json("a\nb"), r#"{"error":"a b"}"#);
    }
}
