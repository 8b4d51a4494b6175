//! The catalogue of a backup location: object names, which backups are complete, listing
//! newest first, and retention ([`prune`]).
//!
//! A backup of cluster `C` taken at `T` (UTC, the moment the save started) from a snapshot at
//! revision `R` is the object `C-YYYYMMDDTHHMMSSZ-rR.db` ([`object_name`]), and it is
//! *complete* once the sidecar `C-…-rR.db.sha256` exists. The names carry everything a listing
//! needs, so `list` reads one sidecar per backup and nothing else; object metadata is not
//! used, because stores do not agree on it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;

use super::BackupError;
use super::location::Location;

/// The sidecar's suffix.
pub const SIDECAR_SUFFIX: &str = ".sha256";
/// The data object's suffix.
pub const DATA_SUFFIX: &str = ".db";
/// The timestamp in object names.
const TS_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// How old an object without its pair must be before `prune` takes it for the remains of an
/// interrupted save (a save in progress writes its sidecar right after the data object).
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Checks a cluster name: it starts object names, so it is kept to what Kubernetes allows in
/// a resource name (and `_`): letters, digits, `-`, `.`, `_`.
///
/// # Errors
/// [`BackupError::Usage`] otherwise.
pub fn check_cluster_name(cluster: &str) -> Result<(), BackupError> {
    let ok = !cluster.is_empty()
        && cluster.len() <= 200
        && cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(BackupError::Usage(format!(
            "--cluster `{cluster}`: use letters, digits, '-', '.' and '_'"
        )))
    }
}

/// The object name of a backup of `cluster` started at `at`, of a snapshot at `revision`.
pub fn object_name(cluster: &str, at: DateTime<Utc>, revision: i64) -> String {
    format!(
        "{cluster}-{}-r{revision}{DATA_SUFFIX}",
        at.format(TS_FORMAT)
    )
}

/// What a data object's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The cluster.
    pub cluster: String,
    /// When the save started.
    pub started_at: DateTime<Utc>,
    /// The snapshot's revision.
    pub revision: i64,
}

/// Parses a data object's name (see [`object_name`]); `None` for any other object.
pub fn parse_name(name: &str) -> Option<Parsed> {
    let stem = name.strip_suffix(DATA_SUFFIX)?;
    let (rest, rev) = stem.rsplit_once("-r")?;
    if rev.is_empty() || !rev.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let revision: i64 = rev.parse().ok()?;
    let (cluster, ts) = rest.rsplit_once('-')?;
    if cluster.is_empty() {
        return None;
    }
    let started_at = NaiveDateTime::parse_from_str(ts, TS_FORMAT).ok()?.and_utc();
    Some(Parsed {
        cluster: cluster.to_string(),
        started_at,
        revision,
    })
}

/// The sidecar's content: `sha256sum`'s line, so `sha256sum -c` checks a downloaded copy.
pub fn sidecar_text(sha256: &str, name: &str) -> String {
    format!("{sha256}  {name}\n")
}

/// The SHA-256 a sidecar holds (64 lowercase hex digits at its start).
pub fn parse_sidecar(text: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(text).ok()?;
    let hex = s.split_whitespace().next()?.to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// A complete backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Its object name.
    pub name: String,
    /// What the name says.
    pub parsed: Parsed,
    /// Size of the data object.
    pub size: u64,
    /// The SHA-256 its sidecar holds.
    pub sha256: String,
}

impl Backup {
    /// One line of `list`'s output.
    pub fn to_json(&self, loc: &Location) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "location": loc.url_of(&self.name),
            "cluster": self.parsed.cluster,
            "revision": self.parsed.revision,
            "size": self.size,
            "sha256": self.sha256,
            "startedAt": rfc3339(self.parsed.started_at),
        })
    }
}

/// A time as the outputs print it: RFC 3339, UTC, whole seconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Newest first: by start time, then revision, then name.
fn newest_first(a: &Backup, b: &Backup) -> std::cmp::Ordering {
    (b.parsed.started_at, b.parsed.revision, &b.name).cmp(&(
        a.parsed.started_at,
        a.parsed.revision,
        &a.name,
    ))
}

/// Every object directly under the location's prefix: name → (size, last modified).
async fn objects(loc: &Location) -> Result<BTreeMap<String, (u64, DateTime<Utc>)>, BackupError> {
    let prefix = loc.prefix_path();
    let metas: Vec<object_store::ObjectMeta> =
        loc.store.list(prefix.as_ref()).try_collect().await?;
    Ok(metas
        .iter()
        .filter_map(|m| {
            loc.name_of(&m.location)
                .map(|n| (n.to_string(), (m.size, m.last_modified)))
        })
        .collect())
}

/// The complete backups (of `cluster`, or of every cluster), newest first.
///
/// # Errors
/// [`BackupError::Store`] if the store cannot be listed or a sidecar read.
pub async fn list(loc: &Location, cluster: Option<&str>) -> Result<Vec<Backup>, BackupError> {
    use futures::StreamExt as _;
    let objects = objects(loc).await?;
    let candidates: Vec<(String, u64, Parsed)> = objects
        .iter()
        .filter_map(|(name, (size, _))| {
            let parsed = parse_name(name)?;
            let wanted = cluster.is_none_or(|c| c == parsed.cluster)
                && objects.contains_key(&format!("{name}{SIDECAR_SUFFIX}"));
            wanted.then(|| (name.clone(), *size, parsed))
        })
        .collect();
    // One sidecar read per backup, a few at a time.
    let read = candidates
        .into_iter()
        .map(|(name, size, parsed)| async move {
            let sidecar = format!("{name}{SIDECAR_SUFFIX}");
            let text = match loc.store.get(&loc.path(&sidecar)?).await {
                Ok(r) => r.bytes().await?,
                // Pruned between the listing and now.
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(BackupError::from(e)),
            };
            let Some(sha256) = parse_sidecar(&text) else {
                tracing::warn!(sidecar, "a sidecar without a SHA-256: ignoring its backup");
                return Ok(None);
            };
            Ok(Some(Backup {
                name,
                parsed,
                size,
                sha256,
            }))
        });
    let found: Vec<Option<Backup>> = futures::stream::iter(read)
        .buffer_unordered(16)
        .collect::<Vec<Result<Option<Backup>, BackupError>>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let mut out: Vec<Backup> = found.into_iter().flatten().collect();
    out.sort_by(newest_first);
    Ok(out)
}

/// Retention rules of `prune`.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Keep at most this many complete backups.
    pub keep_count: Option<usize>,
    /// Delete complete backups started longer ago than this.
    pub keep_age: Option<Duration>,
}

/// Why `prune` deleted an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Beyond `--keep-count`.
    KeepCount,
    /// Older than `--keep-age`.
    KeepAge,
    /// The remains of an interrupted save (a data object without its sidecar, or the reverse),
    /// older than [`ORPHAN_AGE`].
    Incomplete,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::KeepCount => "keep-count",
            Reason::KeepAge => "keep-age",
            Reason::Incomplete => "incomplete",
        }
    }
}

/// One deletion made by `prune`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The object name (for a complete backup, the data object; its sidecar went first).
    pub name: String,
    /// The revision the name carries, if it is a data object.
    pub revision: Option<i64>,
    /// Why.
    pub reason: Reason,
}

impl Deleted {
    /// One line of `prune`'s output.
    pub fn to_json(&self, loc: &Location) -> serde_json::Value {
        serde_json::json!({
            "deleted": self.name,
            "location": loc.url_of(&self.name),
            "revision": self.revision,
            "reason": self.reason.as_str(),
        })
    }
}

/// Which complete backups (newest first) the rules delete, with the reason: one beyond
/// `keep_count` or older than `keep_age` goes, except the newest, which always stays.
pub fn select(backups: &[Backup], rules: &Retention, now: DateTime<Utc>) -> Vec<(usize, Reason)> {
    let mut out = Vec::new();
    for (i, b) in backups.iter().enumerate().skip(1) {
        if rules.keep_count.is_some_and(|n| i >= n) {
            out.push((i, Reason::KeepCount));
        } else if rules.keep_age.is_some_and(|age| {
            now.signed_duration_since(b.parsed.started_at)
                .to_std()
                .is_ok_and(|d| d > age)
        }) {
            out.push((i, Reason::KeepAge));
        }
    }
    out
}

/// Deletes `cluster`'s complete backups that the rules select and the remains of interrupted
/// saves older than [`ORPHAN_AGE`]; returns what it deleted. A complete backup loses its
/// sidecar first, so a deletion cut short leaves an incomplete backup (pruned later), never a
/// sidecar that vouches for missing data.
///
/// # Errors
/// [`BackupError::Usage`] without any rule, or with `--keep-count 0`; [`BackupError::Store`]
/// if a listing or deletion fails (what was deleted before stays deleted).
pub async fn prune(
    loc: &Location,
    cluster: &str,
    rules: &Retention,
) -> Result<Vec<Deleted>, BackupError> {
    check_cluster_name(cluster)?;
    if rules.keep_count.is_none() && rules.keep_age.is_none() {
        return Err(BackupError::Usage(
            "prune needs --keep-count N and/or --keep-age AGE".into(),
        ));
    }
    if rules.keep_count == Some(0) {
        return Err(BackupError::Usage(
            "--keep-count 0: the newest backup is always kept; use 1 or more".into(),
        ));
    }
    let now = Utc::now();
    let backups = list(loc, Some(cluster)).await?;
    let mut deleted = Vec::new();
    for (i, reason) in select(&backups, rules, now) {
        let b = &backups[i];
        delete(loc, &format!("{}{SIDECAR_SUFFIX}", b.name)).await?;
        delete(loc, &b.name).await?;
        deleted.push(Deleted {
            name: b.name.clone(),
            revision: Some(b.parsed.revision),
            reason,
        });
    }
    // Interrupted saves: a data object without its sidecar, or a sidecar without its data.
    let objects = objects(loc).await?;
    let complete: BTreeSet<&str> = backups.iter().map(|b| b.name.as_str()).collect();
    for (name, (_, modified)) in &objects {
        let data_name = name.strip_suffix(SIDECAR_SUFFIX).unwrap_or(name);
        let Some(parsed) = parse_name(data_name) else {
            continue;
        };
        if parsed.cluster != cluster || complete.contains(data_name) {
            continue;
        }
        let paired = if data_name == name {
            objects.contains_key(&format!("{name}{SIDECAR_SUFFIX}"))
        } else {
            objects.contains_key(data_name)
        };
        let old = now
            .signed_duration_since(*modified)
            .to_std()
            .is_ok_and(|d| d > ORPHAN_AGE);
        if paired || !old {
            continue;
        }
        delete(loc, name).await?;
        deleted.push(Deleted {
            name: name.clone(),
            revision: (data_name == name).then_some(parsed.revision),
            reason: Reason::Incomplete,
        });
    }
    Ok(deleted)
}

async fn delete(loc: &Location, name: &str) -> Result<(), BackupError> {
    match loc.store.delete(&loc.path(name)?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, h, 4, 5)
            .single()
            .expect("time")
    }

    #[test]
    fn names_round_trip_and_sort_by_time() {
        let n = object_name("my-db.prod", at(3), 1234);
        assert_eq!(n, "my-db.prod-20260102T030405Z-r1234.db");
        assert_eq!(
            parse_name(&n),
            Some(Parsed {
                cluster: "my-db.prod".into(),
                started_at: at(3),
                revision: 1234
            })
        );
        assert!(object_name("c", at(3), 9) < object_name("c", at(4), 1));
        for bad in [
            "c-20260102T030405Z-r12.db.sha256",
            "c-20260102T030405Z-r.db",
            "c-2026010T030405Z-r1.db",
            "-20260102T030405Z-r1.db",
            "c-20260102T030405Z-rx.db",
            "notes.txt",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        assert!(check_cluster_name("demo-1").is_ok());
        assert!(check_cluster_name("a/b").is_err());
        assert!(check_cluster_name("").is_err());
    }

    #[test]
    fn sidecars_are_sha256sum_lines() {
        let h = "ab".repeat(32);
        let t = sidecar_text(&h, "x.db");
        assert_eq!(t, format!("{h}  x.db\n"));
        assert_eq!(parse_sidecar(t.as_bytes()), Some(h));
        assert_eq!(parse_sidecar(b"nothex  x.db"), None);
        assert_eq!(parse_sidecar(b""), None);
    }

    fn backups(hours: &[u32]) -> Vec<Backup> {
        let mut v: Vec<Backup> = hours
            .iter()
            .map(|h| Backup {
                name: object_name("c", at(*h), i64::from(*h)),
                parsed: parse_name(&object_name("c", at(*h), i64::from(*h))).expect("parse"),
                size: 1,
                sha256: String::new(),
            })
            .collect();
        v.sort_by(newest_first);
        v
    }

    #[test]
    fn retention_deletes_beyond_count_or_age_but_never_the_newest() {
        let b = backups(&[1, 5, 3, 2, 4]);
        assert_eq!(b[0].parsed.revision, 5);
        let now = at(5);
        let count = Retention {
            keep_count: Some(2),
            keep_age: None,
        };
        let sel: Vec<i64> = select(&b, &count, now)
            .iter()
            .map(|(i, _)| b[*i].parsed.revision)
            .collect();
        assert_eq!(sel, vec![3, 2, 1]);
        let age = Retention {
            keep_count: None,
            keep_age: Some(Duration::from_secs(90 * 60)),
        };
        let sel: Vec<(i64, Reason)> = select(&b, &age, now)
            .iter()
            .map(|(i, r)| (b[*i].parsed.revision, *r))
            .collect();
        assert_eq!(
            sel,
            vec![
                (3, Reason::KeepAge),
                (2, Reason::KeepAge),
                (1, Reason::KeepAge)
            ]
        );
        // Both: beyond the count OR older than the age.
        let both = Retention {
            keep_count: Some(4),
            keep_age: Some(Duration::from_secs(150 * 60)),
        };
        let sel: Vec<(i64, Reason)> = select(&b, &both, now)
            .iter()
            .map(|(i, r)| (b[*i].parsed.revision, *r))
            .collect();
        assert_eq!(sel, vec![(2, Reason::KeepAge), (1, Reason::KeepCount)]);
        // Everything is old: the newest stays anyway.
        let all_old = Retention {
            keep_count: None,
            keep_age: Some(Duration::from_secs(1)),
        };
        assert_eq!(select(&b, &all_old, at(23)).len(), 4);
    }
}
