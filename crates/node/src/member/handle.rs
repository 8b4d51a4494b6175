//! [`NodeHandle`]: what the client APIs and the transport hold to talk to the Raft loop.
//!
//! It hides where a request is served: a write proposed on a follower goes to the leader over
//! `Peer.Forward`; a linearizable read asks for a ReadIndex and waits until the local state
//! machine has applied up to it. Every wait is bounded by `--request-timeout-ms`, so a member
//! cut off from the majority answers with an error instead of hanging or serving stale data.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use flotilla_proto::etcdserverpb::ResponseHeader;
use flotilla_proto::internal;
use flotilla_raft::{ConfChange, NodeId};
use prost::Message as _;
use tokio::sync::{oneshot, watch};

use super::state_lock::StateLock;
use super::write::Write;
use crate::contract::{Command, Forwarding, NodeStatus, ServerError};
use crate::metrics::Metrics;

/// Shared by every API service.
#[derive(Clone)]
pub struct NodeHandle {
    tx: Sender<Command>,
    /// The latest published status.
    pub status: watch::Receiver<NodeStatus>,
    /// The applied index.
    pub applied: watch::Receiver<u64>,
    /// The state machine, for local reads.
    pub sm: Arc<StateLock>,
    /// Metrics.
    pub metrics: Metrics,
    /// How to reach other members (injected: the transport), for forwarding.
    pub peers: Arc<dyn Forwarding>,
    /// This member.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// The cluster id.
    pub cluster_id: u64,
    /// Bound on every wait.
    pub request_timeout: Duration,
    /// Largest accepted request.
    pub max_request_bytes: usize,
    /// The Raft election timeout (a peer not heard from for this long is not up).
    pub election_timeout: Duration,
    /// The backend quota checked before writes (`--quota-backend-bytes`, api/quota.rs).
    pub quota: Arc<crate::api::quota::BackendQuota>,
}

impl NodeHandle {
    /// Creates a handle.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tx: Sender<Command>,
        status: watch::Receiver<NodeStatus>,
        applied: watch::Receiver<u64>,
        sm: Arc<StateLock>,
        metrics: Metrics,
        peers: Arc<dyn Forwarding>,
        id: NodeId,
        name: String,
        cluster_id: u64,
        request_timeout: Duration,
        max_request_bytes: usize,
    ) -> Self {
        NodeHandle {
            tx,
            status,
            applied,
            sm,
            metrics,
            peers,
            id,
            name,
            cluster_id,
            request_timeout,
            max_request_bytes,
            election_timeout: Duration::from_secs(1),
            quota: Arc::new(crate::api::quota::BackendQuota::new(0)),
        }
    }

    /// Sets the backend quota from `--quota-backend-bytes` (0: etcd's 2 GiB default).
    pub fn with_quota(mut self, flag: i64) -> Self {
        self.quota = Arc::new(crate::api::quota::BackendQuota::new(flag));
        self
    }

    /// Sends a command to the loop.
    pub fn send(&self, cmd: Command) -> Result<(), ServerError> {
        self.tx.send(cmd).map_err(|_| ServerError::Stopped)
    }

    /// The current status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ServerError>>) -> Command,
        timeout: Duration,
    ) -> Result<T, ServerError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Waits (bounded) until a leader is known and returns it.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<NodeId, ServerError> {
        let mut rx = self.status.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|s| s.leader != 0)).await {
            Ok(Ok(s)) => Ok(s.leader),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::NoLeader),
        }
    }

    /// Proposes an encoded `internal::Request` on this member (which must lead) and returns
    /// the response once applied.
    ///
    /// A refusal that proposed nothing (`Busy`: a leadership transfer, or a new leader that has
    /// not committed its first entry yet) is retried until the request timeout, as etcd makes
    /// such requests wait rather than fail.
    pub async fn propose_local(&self, data: Vec<u8>) -> Result<internal::Response, ServerError> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let data = data.clone();
            match self
                .ask(|reply| Command::Propose { data, reply }, left)
                .await
            {
                Err(ServerError::Busy) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                r => return r,
            }
        }
    }

    /// The one write path: replicates `req` wherever the leader is (proposed here if this
    /// member leads, else forwarded) under a fresh request id, and answers with its typed
    /// response, header stamped — or with the state machine's refusal as an error.
    pub async fn write<W: Write>(&self, req: W) -> Result<W::Response, ServerError> {
        self.write_with_header(req, None).await
    }

    /// [`NodeHandle::write`] on behalf of a client: `header` carries the caller's identity,
    /// which the state machine checks when it applies the entry (`crate::auth::check`).
    /// `None` is a member's own write (lease expiry, member update), made with root's
    /// authority.
    pub async fn write_with_header<W: Write>(
        &self,
        req: W,
        header: Option<internal::RequestHeader>,
    ) -> Result<W::Response, ServerError> {
        let req = internal::Request {
            id: rand::random(),
            header,
            op: Some(req.into_op()),
        };
        let op = match self.replicate(req.encode_to_vec()).await?.op {
            Some(internal::response::Op::Error(e)) => {
                return Err(ServerError::Refused(
                    tonic::Code::from_i32(e.code),
                    e.message,
                ));
            }
            Some(op) => op,
            None => {
                return Err(ServerError::Internal(
                    "empty response from the state machine".into(),
                ));
            }
        };
        let mut resp = W::response(op).ok_or_else(|| {
            ServerError::Internal(
                "the state machine answered with the wrong kind of response".into(),
            )
        })?;
        if let Some(h) = W::header(&mut resp) {
            let rev = h.as_ref().map_or(0, |h| h.revision);
            *h = Some(self.header(rev));
        }
        Ok(resp)
    }

    /// The header every etcd response carries; `revision` 0 means "the current one".
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let st = self.status.borrow();
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision: if revision > 0 { revision } else { st.revision },
            raft_term: st.term,
        }
    }

    async fn replicate(&self, data: Vec<u8>) -> Result<internal::Response, ServerError> {
        if data.len() > self.max_request_bytes {
            return Err(ServerError::TooLarge);
        }
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let leader = self.wait_leader(self.request_timeout).await?;
        if leader == self.id {
            match self.propose_local(data.clone()).await {
                Err(ServerError::NotLeader(l)) if l != 0 => self.forward(l, data, deadline).await,
                r => r,
            }
        } else {
            self.forward(leader, data, deadline).await
        }
    }

    /// Hands the write to the leader; only here does a response travel as bytes.
    async fn forward(
        &self,
        leader: NodeId,
        data: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<internal::Response, ServerError> {
        let url = self
            .status
            .borrow()
            .member(leader)
            .and_then(|m| m.peer_urls.first().cloned())
            .ok_or(ServerError::NoLeader)?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let bytes = match tokio::time::timeout(
            left,
            self.peers.forward(&url, self.cluster_id, self.id, data),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => return Err(ServerError::Timeout),
        };
        internal::Response::decode(bytes.as_slice())
            .map_err(|e| ServerError::Forward(format!("malformed response: {e}")))
    }

    /// Waits until a linearizable read may be served locally (ReadIndex, then applied ≥ it).
    pub async fn linearizable_barrier(&self) -> Result<(), ServerError> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        self.wait_leader(self.request_timeout).await?;
        let index = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.ask(|reply| Command::ReadIndex { reply }, left).await {
                Err(ServerError::Busy) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                r => break r?,
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut applied = self.applied.clone();
        match tokio::time::timeout(left, applied.wait_for(|a| *a >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Proposes a membership change on this member (which must lead); answered once applied.
    pub async fn conf_change(&self, change: ConfChange) -> Result<(), ServerError> {
        self.ask(
            |reply| Command::ConfChange { change, reply },
            self.request_timeout,
        )
        .await
    }

    /// Starts a leadership transfer and waits (bounded) until `target` leads.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<NodeId, ServerError> {
        self.ask(
            |reply| Command::TransferLeader { target, reply },
            self.request_timeout,
        )
        .await?;
        let mut rx = self.status.clone();
        match tokio::time::timeout(self.request_timeout, rx.wait_for(|s| s.leader == target)).await
        {
            Ok(Ok(_)) => Ok(target),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Syncs and stops the loop.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Shutdown { reply: tx }).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}
