//! etcd's Maintenance service: Status, MoveLeader, Alarm, Defragment, Hash, HashKV, Snapshot.
//!
//! MoveLeader is the admin API's TransferLeadership under etcd's name, so it passes the same
//! gate (`auth::gate`).
//!
//! Alarm goes through Raft like any write (GET included, as etcd's `raftRequest`): alarms are
//! replicated state-machine data (`mvcc/alarm.rs`); NOSPACE is raised by the quota check
//! (`api/quota.rs`), CORRUPT by the corruption checks (`member/corrupt.rs`). Status lists the
//! active alarms in `errors` as etcd does.
//!
//! Status's `db_size` is the size of the state machine's own database (sled's file and blobs,
//! as etcd's is its bbolt file; the Raft store and the WAL are not counted, as etcd does not
//! count its WAL and snap files), and `db_size_in_use` the bytes of its live keys and values
//! (`MvccStore::live_bytes`), both read when asked. Defragment rewrites this member's state
//! database into a fresh one and switches to it (`MvccStore::defragment`,
//! `storage::state_db`), under the state machine's write lock: as with etcd, this member's
//! applies, reads and watches wait until it is done. It is local, like etcd's: `etcdctl
//! defrag` asks each endpoint.
//!
//! Hash and HashKV hash the local store (HashKV up to any revision not compacted), so
//! `endpoint hashkv` compares members.
//!
//! Snapshot streams this member's state in etcd's framing: 32 KiB chunks whose
//! `remaining_bytes` counts down to 0, then one last message whose blob is the SHA-256 of
//! everything sent before it (etcd's `v3rpc.Snapshot` contract; etcdctl's `snapshot save`
//! writes every blob, trailer included, to the file). The image is Flotilla's own snapshot
//! envelope — the one a Raft snapshot carries (member metadata and the MVCC tree) — taken under
//! the state machine's read lock, so it is one point in time — followed by zero bytes up to a
//! multiple of 512, because etcdctl's `snapshot save` only accepts a stream whose length modulo
//! 512 is the 32-byte digest (a bbolt file, made of 4 KiB pages, always is). The envelope
//! records its own lengths, so the padding is unambiguous. It is not a bbolt file: etcdctl's
//! `snapshot status` and `snapshot restore` cannot read it; `flotilla snapshot status|restore`
//! do (`crate::snapshot_file`).

use std::pin::Pin;

use flotilla_proto::etcdserverpb::maintenance_server::Maintenance;
use flotilla_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use sha2::Digest as _;
use tonic::{Request, Response, Status};

use super::{header, observe};
use crate::contract::ServerError;
use crate::contract::members::{self, Members};
use crate::member::handle::NodeHandle;
use crate::mvcc::alarm::alarm_text;

/// The etcd API level served: etcd 3.4's v3 API (its `rpc.proto`), plus etcd 3.5's
/// `/livez` and `/readyz`. Clients compare the major.minor of a server's version.
pub const ETCD_API_VERSION: &str = "3.4.0";

/// The version Status reports (and `/version`'s `etcdserver`): the etcd API level, with
/// Flotilla's own release as semver build metadata — `3.4.0+flotilla.0.1.0`. Clients that
/// check the API level read `3.4` as they would from etcd (build metadata never changes a
/// semver comparison), and a person reading `etcdctl endpoint status` sees it is not etcd.
pub const VERSION: &str = concat!("3.4.0+flotilla.", env!("CARGO_PKG_VERSION"));

/// The Maintenance service.
#[derive(Clone)]
pub struct MaintenanceService {
    node: NodeHandle,
}

impl MaintenanceService {
    /// Creates the service.
    pub fn new(node: NodeHandle) -> Self {
        MaintenanceService { node }
    }
}

impl MaintenanceService {
    fn local_hash(&self) -> Result<(u32, i64, i64), Status> {
        let sm = self
            .node
            .sm
            .read()
            .map_err(|_| Status::internal("state machine lock poisoned"))?;
        sm.hash().map_err(Status::internal)
    }

    /// The hash of the keyspace up to `rev` (0: current), the compact and current revisions.
    fn local_hash_at(&self, rev: i64) -> Result<(u32, i64, i64), Status> {
        let sm = self
            .node
            .sm
            .read()
            .map_err(|_| Status::internal("state machine lock poisoned"))?;
        let store = sm.store();
        let hash = store
            .hash_at(rev)
            .map_err(|e| Status::new(e.grpc_code(), e.grpc_message()))?;
        Ok((hash, store.compact_revision(), store.current_revision()))
    }
}

/// Size of one Snapshot message's blob, as etcd sends.
pub const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// etcdctl requires the streamed image to be a whole number of these.
const SNAPSHOT_ALIGN: usize = 512;

/// This member's snapshot image: the member metadata and the state machine, read under the
/// state machine's read lock (applies take the write lock), so the keyspace is one point in
/// time — with the store revision of that point, which the stream's first header carries
/// (`flotilla backup save` names the backup after it).
fn snapshot_image(node: &NodeHandle) -> Result<(Vec<u8>, i64), Status> {
    let sm = node
        .sm
        .read()
        .map_err(|_| Status::internal("state machine lock poisoned"))?;
    let state = sm.snapshot().map_err(Status::internal)?;
    let revision = sm.revision();
    let mut ms = Members::default();
    for m in node.status().members {
        ms.upsert(m);
    }
    let mut image = members::encode_snapshot(&ms, &state);
    image.resize(image.len().next_multiple_of(SNAPSHOT_ALIGN), 0);
    Ok((image, revision))
}

/// Defragments this member's state database under the state machine's write lock (applies
/// and reads wait, as with etcd) and logs what it gave back.
fn defragment(node: &NodeHandle) -> Result<(), Status> {
    let mut sm = node
        .sm
        .write()
        .map_err(|_| Status::internal("state machine lock poisoned"))?;
    let done = sm.defragment().map_err(|e| {
        tracing::error!(error = %e, "defragment failed");
        Status::new(e.grpc_code(), e.grpc_message())
    })?;
    let in_use = sm.db_size_in_use();
    drop(sm);
    node.metrics.db_size_bytes.set(done.after as i64);
    node.metrics.db_size_in_use_bytes.set(in_use);
    tracing::info!(
        before = done.before,
        after = done.after,
        in_use,
        ms = done.took.as_millis() as u64,
        "defragmented the key-value store's database"
    );
    Ok(())
}

/// The messages of a Snapshot stream for `image`: chunks with the bytes still to come, then
/// the SHA-256 trailer with `remaining_bytes` 0.
pub fn snapshot_frames(
    image: Vec<u8>,
    first_header: Option<flotilla_proto::etcdserverpb::ResponseHeader>,
) -> impl Iterator<Item = SnapshotResponse> + Send + 'static {
    let digest = sha2::Sha256::digest(&image).to_vec();
    let image = bytes::Bytes::from(image);
    let total = image.len();
    let mut header = first_header;
    (0..total.div_ceil(SNAPSHOT_CHUNK))
        .map(move |i| {
            let start = i * SNAPSHOT_CHUNK;
            let end = (start + SNAPSHOT_CHUNK).min(total);
            SnapshotResponse {
                header: header.take(),
                remaining_bytes: (total - end) as u64,
                blob: image.slice(start..end).to_vec(),
            }
        })
        .chain(std::iter::once(SnapshotResponse {
            header: None,
            remaining_bytes: 0,
            blob: digest,
        }))
}

/// etcd's MoveLeader: only the leader moves leadership — a follower refuses instead of
/// forwarding (etcdctl looks for the leader's endpoint itself) — and only to a voter of the
/// cluster. The operator's forwarding transfer is Admin's `TransferLeadership`.
async fn move_leader(node: &NodeHandle, target: u64) -> Result<(), ServerError> {
    let st = node.status();
    if !st.is_leader() {
        return Err(ServerError::LeaderOnly);
    }
    match st.member(target) {
        Some(m) if !m.is_learner => {}
        _ => return Err(ServerError::BadLeaderTransferee),
    }
    if target == st.id {
        return Ok(());
    }
    match node.transfer_leader(target).await {
        // Leadership moved elsewhere between the check and the transfer.
        Err(ServerError::NotLeader(_) | ServerError::NoLeader) => Err(ServerError::LeaderOnly),
        r => r.map(|_| ()),
    }
}

type SnapshotStream =
    Pin<Box<dyn futures::Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let r = self
            .node
            .write(request.into_inner())
            .await
            .map_err(Status::from);
        observe(&self.node, "Alarm", r).map(Response::new)
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let st = self.node.status();
        let is_learner = st.member(st.id).is_some_and(|m| m.is_learner);
        // etcd lists every active alarm of the cluster, in its text form.
        let (errors, db_size, db_size_in_use) = match self.node.sm.read() {
            Ok(sm) => (
                sm.store().alarms().list().iter().map(alarm_text).collect(),
                sm.db_size(),
                sm.db_size_in_use(),
            ),
            Err(_) => return Err(Status::internal("state machine lock poisoned")),
        };
        let r = Ok(StatusResponse {
            header: Some(header(&self.node, 0)),
            version: VERSION.to_string(),
            db_size,
            leader: st.leader,
            raft_index: st.commit,
            raft_term: st.term,
            raft_applied_index: st.applied,
            errors,
            db_size_in_use,
            is_learner,
        });
        observe(&self.node, "Status", r).map(Response::new)
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        // Admin only while auth is enabled, as etcd's authMaintenanceServer.
        crate::auth::check_admin(&self.node, request.metadata()).await?;
        let node = self.node.clone();
        let r = match tokio::task::spawn_blocking(move || defragment(&node)).await {
            Ok(r) => r,
            Err(e) => Err(Status::internal(format!("defragment task failed: {e}"))),
        }
        .map(|()| DefragmentResponse {
            header: Some(header(&self.node, 0)),
        });
        observe(&self.node, "Defragment", r).map(Response::new)
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        crate::auth::check_admin(&self.node, request.metadata()).await?;
        let r = self.local_hash().map(|(hash, _, _)| HashResponse {
            header: Some(header(&self.node, 0)),
            hash,
        });
        observe(&self.node, "Hash", r).map(Response::new)
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        crate::auth::check_admin(&self.node, request.metadata()).await?;
        let rev = request.into_inner().revision;
        let r = self
            .local_hash_at(rev)
            .map(|(hash, compact_revision, current)| HashKvResponse {
                header: Some(header(&self.node, current)),
                hash,
                compact_revision,
            });
        observe(&self.node, "HashKV", r).map(Response::new)
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        crate::auth::check_admin(&self.node, request.metadata()).await?;
        let node = self.node.clone();
        let r = match tokio::task::spawn_blocking(move || snapshot_image(&node)).await {
            Ok(r) => r,
            Err(e) => Err(Status::internal(format!("snapshot task failed: {e}"))),
        }
        .map(|(image, revision)| {
            let frames = snapshot_frames(image, Some(header(&self.node, revision)));
            Response::new(Box::pin(futures::stream::iter(frames.map(Ok))) as SnapshotStream)
        });
        observe(&self.node, "Snapshot", r)
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let allowed = super::admin::gate(&self.node, &request).await;
        let target = request.into_inner().target_id;
        let r = async {
            allowed?;
            move_leader(&self.node, target).await?;
            Ok(MoveLeaderResponse {
                header: Some(header(&self.node, 0)),
            })
        }
        .await;
        observe(&self.node, "MoveLeader", r).map(Response::new)
    }
}
