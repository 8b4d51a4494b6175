//! `flotilla backup save`: one member's Maintenance Snapshot stream into a multipart upload,
//! hashed on the way, then the sidecar that marks the backup complete.
//!
//! Memory stays bounded by the part size: each 32 KiB message is hashed and appended to the
//! current part, a full part is uploaded in the background, and no more than
//! [`PARTS_IN_FLIGHT`] parts are outstanding before the stream is read further. The stream's
//! own trailer (the SHA-256 of everything before it, etcd's framing) is checked before the
//! upload is completed; on any failure the upload is aborted, so no data object appears and no
//! sidecar is written.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{SnapshotRequest, SnapshotResponse};
use object_store::{ObjectStoreExt as _, PutPayload, WriteMultipart};
use sha2::Digest as _;
use tonic::transport::Channel;

use super::catalog::{self, SIDECAR_SUFFIX};
use super::location::Location;
use super::source::{self, Dialer};
use super::{BackupError, SaveArgs};

/// Size of each uploaded part (S3 wants at least 5 MiB for all but the last).
pub const PART_SIZE: usize = 8 << 20;
/// Parts uploaded at once.
pub const PARTS_IN_FLIGHT: usize = 2;
/// The longest wait for the member's next message.
const IDLE: Duration = Duration::from_secs(60);

/// What `save` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The object name.
    pub name: String,
    /// Its URL.
    pub location: String,
    /// The snapshot's revision.
    pub revision: i64,
    /// Bytes stored.
    pub size: u64,
    /// Their SHA-256, hex.
    pub sha256: String,
    /// The member that served it (its name).
    pub member: String,
    /// When the save started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

impl Saved {
    /// The result line.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "location": self.location,
            "revision": self.revision,
            "size": self.size,
            "sha256": self.sha256,
            "member": self.member,
            "startedAt": catalog::rfc3339(self.started_at),
            "finishedAt": catalog::rfc3339(self.finished_at),
        })
    }
}

/// Hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Runs `backup save`.
///
/// # Errors
/// [`BackupError`]: bad flags, no member fit to serve, a broken or damaged stream, or a store
/// failure. Nothing that `list` or `restore` would take for a backup is left behind.
pub async fn save(a: &SaveArgs) -> Result<Saved, BackupError> {
    catalog::check_cluster_name(&a.cluster)?;
    let loc = Location::parse(&a.to, &a.s3, true)?;
    let dialer = Dialer::new(&a.cluster_flags)?;
    let started_at = Utc::now();
    let (member, channel) =
        source::pick(&dialer, &a.cluster_flags.endpoints, a.max_follower_lag).await?;
    let token = dialer.token(channel.clone(), &member.endpoint).await?;
    let (name, size, sha256) = stream_to_store(
        &loc,
        &a.cluster,
        &dialer,
        channel,
        token,
        &member.name,
        started_at,
    )
    .await?;
    // The data object is complete: the sidecar makes it a backup.
    let sidecar = format!("{name}{SIDECAR_SUFFIX}");
    loc.store
        .put(
            &loc.path(&sidecar)?,
            PutPayload::from(catalog::sidecar_text(&sha256, &name)),
        )
        .await?;
    let parsed = catalog::parse_name(&name)
        .ok_or_else(|| BackupError::Store(format!("{name}: not a backup name")))?;
    Ok(Saved {
        location: loc.url_of(&name),
        name,
        revision: parsed.revision,
        size,
        sha256,
        member: member.name,
        started_at,
        finished_at: Utc::now(),
    })
}

/// The stream's next message, bounded by [`IDLE`].
async fn next(
    stream: &mut tonic::Streaming<SnapshotResponse>,
    member: &str,
) -> Result<Option<SnapshotResponse>, BackupError> {
    match tokio::time::timeout(IDLE, stream.message()).await {
        Err(_) => Err(BackupError::Member(format!(
            "{member}: the snapshot stream stalled for {}s",
            IDLE.as_secs()
        ))),
        Ok(Err(s)) => Err(BackupError::Member(format!(
            "{member}: the snapshot stream broke: {}",
            source::status_text(&s)
        ))),
        Ok(Ok(m)) => Ok(m),
    }
}

/// Streams the snapshot into the data object; returns its name, size and SHA-256.
async fn stream_to_store(
    loc: &Location,
    cluster: &str,
    dialer: &Dialer,
    channel: Channel,
    token: Option<String>,
    member: &str,
    started_at: DateTime<Utc>,
) -> Result<(String, u64, String), BackupError> {
    let mut req = tonic::Request::new(SnapshotRequest {});
    if let Some(t) = &token {
        let v = t
            .parse()
            .map_err(|_| BackupError::Member("the auth token is not a valid header".into()))?;
        req.metadata_mut().insert("token", v);
    }
    let mut client = MaintenanceClient::new(channel);
    let mut stream = tokio::time::timeout(dialer.timeout().max(IDLE), client.snapshot(req))
        .await
        .map_err(|_| BackupError::Member(format!("{member}: Snapshot timed out")))?
        .map_err(|s| {
            BackupError::Member(format!("{member}: Snapshot: {}", source::status_text(&s)))
        })?
        .into_inner();
    let first = next(&mut stream, member)
        .await?
        .ok_or_else(|| BackupError::Member(format!("{member}: empty snapshot stream")))?;
    let revision = first.header.as_ref().map_or(0, |h| h.revision);
    let name = catalog::object_name(cluster, started_at, revision);
    let path = loc.path(&name)?;
    let mut upload =
        WriteMultipart::new_with_chunk_size(loc.store.put_multipart(&path).await?, PART_SIZE);
    let mut file_hash = sha2::Sha256::new();
    // Every blob but the last is the image; the last is the SHA-256 of the image (etcd's
    // framing), so each blob is hashed into `body` only once the next one has arrived.
    let mut body = sha2::Sha256::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut size: u64 = 0;
    let mut msg = Some(first);
    let result: Result<(), BackupError> = async {
        while let Some(m) = msg.take() {
            body.update(&pending);
            upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            upload.write(&m.blob);
            file_hash.update(&m.blob);
            size += m.blob.len() as u64;
            pending = m.blob;
            msg = next(&mut stream, member).await?;
        }
        let digest = body.clone().finalize();
        if pending.as_slice() != digest.as_slice() {
            return Err(BackupError::Damaged(format!(
                "{member}: the snapshot stream's SHA-256 trailer does not match its data \
                 ({size} bytes): not stored"
            )));
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            upload.finish().await?;
        }
        Err(e) => {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(error = %abort, object = name, "aborting the upload failed");
            }
            return Err(e);
        }
    }
    Ok((name, size, hex(&file_hash.finalize())))
}
