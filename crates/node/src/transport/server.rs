//! The receiving side of the peer transport: the `flotilla.raft.v1.Peer` service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flotilla_proto::raft::peer_server::Peer;
use flotilla_proto::raft::{
    ForwardBatchRequest, ForwardBatchResponse, ForwardRequest, ForwardResponse, ForwardResult,
    RaftEnvelope, SnapshotAck, SnapshotChunk, StreamAck,
};
use flotilla_raft::{MessageBody, NodeId};
use futures::StreamExt;
use prost::Message as _;
use tonic::{Request, Response, Status, Streaming};

use super::wire;
use crate::codec::{CodecError, SnapshotAssembler};
use crate::contract::Command;
use crate::member::handle::NodeHandle;

/// Largest snapshot accepted (bounds memory against a malicious or broken sender).
const MAX_SNAPSHOT_BYTES: u64 = 8 << 30;
/// How long an install answer waits for the image to be applied; below the sender's minute
/// (`transport::send_snapshot`), so it hears a success rather than a timeout.
const INSTALL_WAIT: std::time::Duration = std::time::Duration::from_secs(45);

/// A malformed or foreign snapshot stream, as the peer sees it: another cluster's traffic is
/// FAILED_PRECONDITION (as for every envelope), anything else INVALID_ARGUMENT.
fn refusal(e: CodecError) -> Status {
    match e {
        CodecError::ClusterMismatch { .. } => Status::failed_precondition(e.to_string()),
        e => Status::invalid_argument(e.to_string()),
    }
}

/// The Peer service.
#[derive(Clone)]
pub struct PeerService {
    node: NodeHandle,
    heartbeat_sent: Arc<Mutex<HashMap<NodeId, Instant>>>,
    /// Held while a received image is being installed: a second one is refused meanwhile.
    installing: Arc<tokio::sync::Semaphore>,
}

impl PeerService {
    /// Creates the service.
    pub fn new(node: NodeHandle, heartbeat_sent: Arc<Mutex<HashMap<NodeId, Instant>>>) -> Self {
        PeerService {
            node,
            heartbeat_sent,
            installing: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Proposes one forwarded write here. Only the leader proposes forwarded writes; it never
    /// forwards them again, so a stale view of the leader cannot make a request loop between
    /// members.
    async fn propose_forwarded(
        &self,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, crate::contract::ServerError> {
        if request.len() > self.node.max_request_bytes {
            return Err(crate::contract::ServerError::TooLarge);
        }
        let response = self.node.propose_local(request).await?;
        Ok(response.encode_to_vec())
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), Status> {
        if cluster_id != self.node.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster id mismatch: this member belongs to cluster {:x}, the message to {:x}",
                self.node.cluster_id, cluster_id
            )));
        }
        Ok(())
    }

    fn deliver(&self, env: RaftEnvelope) -> Result<(), Status> {
        self.check_cluster(env.cluster_id)?;
        let msg =
            wire::from_envelope(self.node.cluster_id, env).map_err(Status::invalid_argument)?;
        if msg.to != self.node.id {
            return Err(Status::failed_precondition(format!(
                "message for member {:x} reached member {:x}",
                msg.to, self.node.id
            )));
        }
        if self.node.status.borrow().removed.contains(&msg.from) {
            return Err(super::removed_refusal(msg.from));
        }
        if matches!(msg.body, MessageBody::HeartbeatResponse { .. })
            && let Ok(mut hb) = self.heartbeat_sent.lock()
            && let Some(sent) = hb.remove(&msg.from)
        {
            self.node
                .metrics
                .peer_round_trip
                .with_label_values(&[&format!("{:x}", msg.from)])
                .observe(sent.elapsed().as_secs_f64());
        }
        self.node
            .send(Command::Step(msg))
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(
        &self,
        request: Request<Streaming<RaftEnvelope>>,
    ) -> Result<Response<StreamAck>, Status> {
        let mut stream = request.into_inner();
        let mut received = 0u64;
        while let Some(env) = stream.next().await {
            let env = env?;
            self.deliver(env)?;
            received += 1;
        }
        Ok(Response::new(StreamAck { received }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        // One image at a time: each is large, and one that is still being installed makes
        // the next one pointless.
        let Ok(_installing) = self.installing.clone().try_acquire_owned() else {
            return Err(Status::unavailable("a snapshot is already being installed"));
        };
        let mut stream = request.into_inner();
        let mut assembler = SnapshotAssembler::new(self.node.cluster_id, MAX_SNAPSHOT_BYTES);
        while let Some(chunk) = stream.next().await {
            assembler.push(chunk?).map_err(refusal)?;
        }
        let received = assembler.received_bytes();
        // A half-received snapshot is never applied: `finish` refuses a short stream.
        let msg = assembler.finish().map_err(refusal)?;
        if msg.to != self.node.id {
            return Err(Status::failed_precondition("snapshot for another member"));
        }
        let index = match &msg.body {
            MessageBody::InstallSnapshot { snapshot } => snapshot.meta.index,
            _ => 0,
        };
        let mut applied = self.node.applied.clone();
        self.node
            .send(Command::Step(msg))
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // Answer once the image is installed (or, bounded, later): the leader reports the
        // snapshot done when this returns and probes from the image's index on. Answering
        // at once had it probe a member still busy restoring, find the entries after the
        // image compacted away meanwhile, and send another image, and another.
        let _ = tokio::time::timeout(INSTALL_WAIT, applied.wait_for(|a| *a >= index)).await;
        Ok(Response::new(SnapshotAck {
            received_bytes: received,
        }))
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let req = request.into_inner();
        self.check_cluster(req.cluster_id)?;
        let response = self.propose_forwarded(req.request).await?;
        Ok(Response::new(ForwardResponse { response }))
    }

    async fn forward_batch(
        &self,
        request: Request<ForwardBatchRequest>,
    ) -> Result<Response<ForwardBatchResponse>, Status> {
        let req = request.into_inner();
        self.check_cluster(req.cluster_id)?;
        if req.requests.len() > super::forward::MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "a forwarded batch holds at most {} requests",
                super::forward::MAX_BATCH
            )));
        }
        // Each request is judged alone: one too large or refused fails only itself. They are
        // proposed together, so they share the leader's next Ready (and its sync).
        let results = futures::future::join_all(req.requests.into_iter().map(|r| async move {
            match self.propose_forwarded(r).await {
                Ok(response) => ForwardResult {
                    response,
                    code: 0,
                    message: String::new(),
                },
                Err(e) => {
                    let status = Status::from(e);
                    ForwardResult {
                        response: Vec::new(),
                        code: status.code() as i32,
                        message: status.message().to_string(),
                    }
                }
            }
        }))
        .await;
        Ok(Response::new(ForwardBatchResponse { results }))
    }
}
