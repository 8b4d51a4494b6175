//! The receiving side of the peer transport: the `flotilla.raft.v1.Peer` service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flotilla_proto::raft::peer_server::Peer;
use flotilla_proto::raft::{
    ForwardBatchRequest, ForwardBatchResponse, ForwardRequest, ForwardResponse, ForwardResult,
    RaftEnvelope, SnapshotAck, SnapshotChunk, StreamAck, snapshot_chunk,
};
use flotilla_raft::{MessageBody, NodeId};
use futures::StreamExt;
use prost::Message as _;
use tonic::{Request, Response, Status, Streaming};

use super::wire;
use crate::contract::Command;
use crate::member::handle::NodeHandle;

/// Largest snapshot accepted (bounds memory against a malicious or broken sender).
const MAX_SNAPSHOT_BYTES: u64 = 8 << 30;

/// The Peer service.
#[derive(Clone)]
pub struct PeerService {
    node: NodeHandle,
    heartbeat_sent: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl PeerService {
    /// Creates the service.
    pub fn new(node: NodeHandle, heartbeat_sent: Arc<Mutex<HashMap<NodeId, Instant>>>) -> Self {
        PeerService {
            node,
            heartbeat_sent,
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
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let Some(snapshot_chunk::Chunk::Header(header)) = first.chunk else {
            return Err(Status::invalid_argument(
                "snapshot stream must start with a header",
            ));
        };
        let env = header
            .message
            .ok_or_else(|| Status::invalid_argument("snapshot header without a message"))?;
        self.check_cluster(env.cluster_id)?;
        if header.total_size > MAX_SNAPSHOT_BYTES {
            return Err(Status::invalid_argument("snapshot too large"));
        }
        let mut msg =
            wire::from_envelope(self.node.cluster_id, env).map_err(Status::invalid_argument)?;
        let mut data = Vec::with_capacity(header.total_size.min(64 << 20) as usize);
        while let Some(chunk) = stream.next().await {
            match chunk?.chunk {
                Some(snapshot_chunk::Chunk::Data(d)) => {
                    if data.len() as u64 + d.len() as u64 > header.total_size {
                        return Err(Status::invalid_argument("snapshot longer than announced"));
                    }
                    data.extend_from_slice(&d);
                }
                _ => {
                    return Err(Status::invalid_argument(
                        "unexpected chunk in snapshot stream",
                    ));
                }
            }
        }
        // A half-received snapshot is never applied (pitfall 22).
        if data.len() as u64 != header.total_size {
            return Err(Status::invalid_argument("snapshot shorter than announced"));
        }
        let received = data.len() as u64;
        match &mut msg.body {
            MessageBody::InstallSnapshot { snapshot } => snapshot.data = data,
            _ => {
                return Err(Status::invalid_argument(
                    "snapshot header is not a snapshot",
                ));
            }
        }
        if msg.to != self.node.id {
            return Err(Status::failed_precondition("snapshot for another member"));
        }
        self.node
            .send(Command::Step(msg))
            .map_err(|e| Status::unavailable(e.to_string()))?;
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
