//! etcd's Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
//! LeaseLeases.
//!
//! Grant and revoke change replicated state, so they are proposals through Raft
//! (`internal::Request` `lease_grant` / `lease_revoke`), forwarded to the leader like any
//! write. A lease id left at 0 by the client is derived from the request id inside the state
//! machine, so every member picks the same one.
//!
//! Time is the leader's alone (see [`crate::member::lease_expiry`]): keep-alives and
//! time-to-live answers need the leader's deadlines. A follower therefore **forwards** them to
//! the leader, over the leader's peer address where this same service is also registered (the
//! peer address is known for every member, client addresses are not always). A forwarded
//! request carries the `flotilla-forwarded` metadata; a member that receives one without
//! leading refuses it instead of forwarding again, so a request never loops during an election.
//! LeaseLeases lists the replicated lease set after a ReadIndex barrier, on any member.

use std::pin::Pin;

use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::lease_server::Lease;
use flotilla_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::{header, observe};
use crate::contract::ServerError;
use crate::member::handle::NodeHandle;
use crate::member::lease_expiry::now_ms;
use crate::mvcc::MvccError;
use crate::mvcc::lease::MAX_LEASE_TTL;

/// Metadata key marking a request a follower forwarded to the leader.
const FORWARDED: &str = "flotilla-forwarded";

/// The Lease service.
#[derive(Clone)]
pub struct LeaseService {
    node: NodeHandle,
}

/// Where a leader-only request is served.
enum Route {
    Here,
    Leader(LeaseClient<Channel>),
}

fn lock_err() -> Status {
    Status::internal("state machine lock poisoned")
}

fn forwarded<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    r
}

impl LeaseService {
    /// Creates the service.
    pub fn new(node: NodeHandle) -> Self {
        LeaseService { node }
    }

    /// Decides where a leader-only request goes; `was_forwarded` requests are never sent on.
    async fn route(&self, was_forwarded: bool) -> Result<Route, Status> {
        let leader = self.node.wait_leader(self.node.request_timeout).await?;
        if leader == self.node.id {
            return Ok(Route::Here);
        }
        if was_forwarded {
            return Err(ServerError::NotLeader(leader).into());
        }
        let url = self
            .node
            .status
            .borrow()
            .member(leader)
            .and_then(|m| m.peer_urls.first().cloned())
            .ok_or(ServerError::NoLeader)?;
        Ok(Route::Leader(LeaseClient::new(
            self.node.peers.channel(&url)?,
        )))
    }

    /// Renews a lease on this member (the leader); TTL 0 when the lease does not exist, as
    /// etcd answers.
    fn renew_here(&self, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
        let ttl = {
            let mut sm = self.node.sm.write().map_err(|_| lock_err())?;
            match sm.lease_keep_alive(id, now_ms()) {
                Ok(ttl) => ttl,
                Err(MvccError::LeaseNotFound) => 0,
                Err(e) => return Err(Status::new(e.grpc_code(), e.grpc_message())),
            }
        };
        Ok(LeaseKeepAliveResponse {
            header: Some(header(&self.node, 0)),
            id,
            ttl,
        })
    }

    async fn renew(&self, id: i64, was_forwarded: bool) -> Result<LeaseKeepAliveResponse, Status> {
        match self.route(was_forwarded).await? {
            Route::Here => self.renew_here(id),
            Route::Leader(mut c) => {
                let one = tokio_stream::iter([LeaseKeepAliveRequest { id }]);
                let mut answers = c.lease_keep_alive(forwarded(one)).await?.into_inner();
                match answers.next().await {
                    Some(r) => r,
                    None => Err(ServerError::Forward("leader closed the keep-alive".into()).into()),
                }
            }
        }
    }

    async fn time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        was_forwarded: bool,
    ) -> Result<LeaseTimeToLiveResponse, Status> {
        match self.route(was_forwarded).await? {
            Route::Leader(mut c) => Ok(c.lease_time_to_live(forwarded(req)).await?.into_inner()),
            Route::Here => {
                // The leader's applied state may trail its commit index by a few entries.
                self.node.linearizable_barrier().await?;
                let mut sm = self.node.sm.write().map_err(|_| lock_err())?;
                let Some((ttl, granted_ttl, keys)) =
                    sm.lease_time_to_live(req.id, now_ms(), req.keys)
                else {
                    // etcd answers an unknown lease with TTL -1 (etcdctl: "already expired").
                    return Ok(LeaseTimeToLiveResponse {
                        header: Some(header(&self.node, 0)),
                        id: req.id,
                        ttl: -1,
                        ..Default::default()
                    });
                };
                Ok(LeaseTimeToLiveResponse {
                    header: Some(header(&self.node, 0)),
                    id: req.id,
                    ttl,
                    granted_ttl,
                    keys,
                })
            }
        }
    }
}

fn is_forwarded<T>(r: &Request<T>) -> bool {
    r.metadata().get(FORWARDED).is_some()
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        let r = async {
            // etcd's quota server wraps the Lease server: the quota is checked first.
            super::quota::check(&self.node, super::quota::Costed::LeaseGrant).await?;
            if req.ttl > MAX_LEASE_TTL {
                return Err(Status::out_of_range("etcdserver: too large lease TTL"));
            }
            if req.id < 0 {
                return Err(Status::invalid_argument(
                    "etcdserver: lease id must be positive",
                ));
            }
            Ok(self.node.write(req).await?)
        }
        .await;
        observe(&self.node, "LeaseGrant", r).map(Response::new)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let (md, _, req) = request.into_parts();
        let r = crate::auth::write(&self.node, &md, req).await;
        observe(&self.node, "LeaseRevoke", r).map(Response::new)
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let was_forwarded = is_forwarded(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let svc = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                let r = svc.renew(req.id, was_forwarded).await;
                let r = observe(&svc.node, "LeaseKeepAlive", r);
                let stop = r.is_err();
                if tx.send(r).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let was_forwarded = is_forwarded(&request);
        let (md, _, req) = request.into_parts();
        let r = async {
            // As etcd 3.5: reading a lease's time to live needs read permission on its keys.
            // Checked where the client connected (a forwarded request carries no token).
            if !was_forwarded {
                let keys = {
                    let sm = self.node.sm.read().map_err(|_| lock_err())?;
                    sm.store()
                        .lease(req.id)
                        .map(|l| l.keys.iter().cloned().collect::<Vec<_>>())
                        .unwrap_or_default()
                };
                for k in keys {
                    crate::auth::check_read(&self.node, &md, &k, &[]).await?;
                }
            }
            self.time_to_live(req, was_forwarded).await
        }
        .await;
        observe(&self.node, "LeaseTimeToLive", r).map(Response::new)
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let r = async {
            self.node.linearizable_barrier().await?;
            let sm = self.node.sm.read().map_err(|_| lock_err())?;
            let leases = sm
                .store()
                .lease_ids()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect();
            Ok(LeaseLeasesResponse {
                header: Some(header(&self.node, 0)),
                leases,
            })
        }
        .await;
        observe(&self.node, "LeaseLeases", r).map(Response::new)
    }
}
