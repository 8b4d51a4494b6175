//! etcd's Election service (`v3electionpb.Election`): leader election whose leadership is a
//! key bound to the campaigner's lease, carrying the leader's proclaimed value.
//!
//! etcd serves it by running clientv3's `concurrency.Election` on the server; this is the
//! same algorithm on the member's own paths (see [`super::concurrency`]):
//! - Campaign puts `name/<lease in hex>` with the value unless it exists (a re-campaign with
//!   a new value proclaims it), then waits until every key created before it under `name/`
//!   is gone. The answer's `LeaderKey.rev` is the key's create revision, which Proclaim and
//!   Resign check, so a stale `LeaderKey` cannot touch a newer leadership.
//! - Leader is the oldest key under `name/`; Observe streams it, then each change of it (new
//!   value, or the next leader once it is deleted), from the state machine's watch hub.
//! - Errors are etcd's texts, all with code Unknown as etcd's in-process client makes them
//!   ([`super::concurrency::recipe_error`]).

use std::pin::Pin;

use flotilla_proto::etcdserverpb::{ResponseHeader, TxnRequest};
use flotilla_proto::mvccpb::{KeyValue, event::EventType};
use flotilla_proto::v3electionpb::election_server::Election;
use flotilla_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::concurrency::{
    Cleanup, HubWatch, created_at, delete_op, first_created, get_op, owner_key, prefix_end,
    prefix_of, put_op, range, range_kvs, recipe_error, session_lease, wait_deletes,
};
use super::observe;
use crate::auth;
use crate::member::handle::NodeHandle;

/// etcd's `concurrency.ErrElectionNotLeader`.
pub const NOT_LEADER: &str = "election: not leader";
/// etcd's `concurrency.ErrElectionNoLeader`.
pub const NO_LEADER: &str = "election: no leader";
/// etcd's `v3election.ErrMissingLeaderKey`.
pub const MISSING_LEADER_KEY: &str = r#""leader" field must be provided"#;

/// Responses an Observe stream buffers before its task waits for the client.
const OBSERVE_BUFFER: usize = 16;

/// The Election service.
#[derive(Clone)]
pub struct ElectionService {
    node: NodeHandle,
}

impl ElectionService {
    /// Creates the service.
    pub fn new(node: NodeHandle) -> Self {
        ElectionService { node }
    }

    async fn campaign_inner(
        &self,
        md: &MetadataMap,
        req: CampaignRequest,
    ) -> Result<CampaignResponse, Status> {
        let node = &self.node;
        let lease = session_lease(node, md, req.lease).await?;
        let prefix = prefix_of(&req.name);
        let key = owner_key(&prefix, lease);
        let txn = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(&key, &req.value, lease)],
            failure: vec![get_op(&key)],
        };
        let resp = auth::write(node, md, txn).await?;
        let mut rev = resp.header.as_ref().map_or(0, |h| h.revision);
        if !resp.succeeded {
            let Some(kv) = range_kvs(&resp.responses, 0).first() else {
                // Deleted between the compare and the read: impossible within one Txn.
                return Err(Status::internal("campaign: own key vanished inside a txn"));
            };
            rev = kv.create_revision;
            // Campaigning again with another value proclaims it.
            if kv.value != req.value
                && let Err(e) = proclaim(node, md, &key, rev, lease, &req.value).await
            {
                let _ = resign(node, md, &key, rev).await;
                return Err(e);
            }
        }
        // Only a caller that goes away resigns; a failed wait leaves the key (as etcd).
        let cleanup = Cleanup::new(node, md, resign_txn(&key, rev));
        let waited = wait_deletes(node, md, &prefix, rev - 1).await;
        cleanup.disarm();
        waited?;
        Ok(CampaignResponse {
            header: resp.header,
            leader: Some(LeaderKey {
                name: req.name,
                key,
                rev,
                lease,
            }),
        })
    }

    async fn leader_inner(
        &self,
        md: &MetadataMap,
        req: LeaderRequest,
    ) -> Result<LeaderResponse, Status> {
        let resp = range(&self.node, md, first_created(&prefix_of(&req.name))).await?;
        let Some(kv) = resp.kvs.into_iter().next() else {
            return Err(Status::unknown(NO_LEADER));
        };
        Ok(LeaderResponse {
            header: resp.header,
            kv: Some(kv),
        })
    }
}

/// Puts `value` on the leader key if it is still the one created at `rev`.
async fn proclaim(
    node: &NodeHandle,
    md: &MetadataMap,
    key: &[u8],
    rev: i64,
    lease: i64,
    value: &[u8],
) -> Result<Option<ResponseHeader>, Status> {
    let txn = TxnRequest {
        compare: vec![created_at(key, rev)],
        success: vec![put_op(key, value, lease)],
        failure: vec![],
    };
    let resp = auth::write(node, md, txn).await?;
    if !resp.succeeded {
        return Err(Status::unknown(NOT_LEADER));
    }
    Ok(resp.header)
}

fn resign_txn(key: &[u8], rev: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![created_at(key, rev)],
        success: vec![delete_op(key)],
        failure: vec![],
    }
}

/// Deletes the leader key if it is still the one created at `rev`; a newer or missing key is
/// not an error (etcd's `Resign`).
async fn resign(
    node: &NodeHandle,
    md: &MetadataMap,
    key: &[u8],
    rev: i64,
) -> Result<Option<ResponseHeader>, Status> {
    Ok(auth::write(node, md, resign_txn(key, rev)).await?.header)
}

/// Observe's loop (etcd's `Election.observe`): the current leader — or, with none, the first
/// key put under the prefix — then every put to that key until it is deleted, then again.
/// Ends quietly (the stream closes with OK, as etcd's) when a read or watch fails or the
/// client goes away.
async fn observe_loop(
    node: NodeHandle,
    md: MetadataMap,
    name: Vec<u8>,
    tx: mpsc::Sender<LeaderResponse>,
) {
    let prefix = prefix_of(&name);
    let send = |header: Option<ResponseHeader>, kv: KeyValue| {
        let tx = tx.clone();
        async move {
            tx.send(LeaderResponse {
                header,
                kv: Some(kv),
            })
            .await
            .is_ok()
        }
    };
    loop {
        let Ok(resp) = range(&node, &md, first_created(&prefix)).await else {
            return;
        };
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        let (header, kv) = match resp.kvs.into_iter().next() {
            Some(kv) => (resp.header, kv),
            None => {
                let Ok(mut w) = HubWatch::open(&node, &prefix, &prefix_end(&prefix), rev) else {
                    return;
                };
                let first_put = async {
                    loop {
                        let wr = w.next().await.ok()?;
                        let put = wr
                            .events
                            .into_iter()
                            .find(|e| e.r#type == EventType::Put as i32)
                            .and_then(|e| e.kv);
                        if let Some(kv) = put {
                            // etcd names the put's revision, not the batch's.
                            let mut header = wr.header;
                            if let Some(h) = header.as_mut() {
                                h.revision = kv.mod_revision;
                            }
                            return Some((header, kv));
                        }
                    }
                };
                let Some(Some(found)) = until_closed(&tx, first_put).await else {
                    return;
                };
                found
            }
        };
        let from = header.as_ref().map_or(0, |h| h.revision) + 1;
        let key = kv.key.clone();
        if !send(header, kv).await {
            return;
        }
        let Ok(mut w) = HubWatch::open(&node, &key, &[], from) else {
            return;
        };
        let changes = async {
            loop {
                let wr = w.next().await.ok()?;
                for ev in wr.events {
                    if ev.r#type == EventType::Delete as i32 {
                        return Some(());
                    }
                    if let Some(kv) = ev.kv
                        && !send(wr.header, kv).await
                    {
                        return None;
                    }
                }
            }
        };
        if !matches!(until_closed(&tx, changes).await, Some(Some(()))) {
            return;
        }
    }
}

/// Runs `f` unless the client's end of `tx` closes first.
async fn until_closed<T>(
    tx: &mpsc::Sender<LeaderResponse>,
    f: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        r = f => Some(r),
        () = tx.closed() => None,
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

fn missing_leader() -> Status {
    Status::unknown(MISSING_LEADER_KEY)
}

#[tonic::async_trait]
impl Election for ElectionService {
    type ObserveStream = ObserveStream;

    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let md = request.metadata().clone();
        let r = self.campaign_inner(&md, request.into_inner()).await;
        observe(&self.node, "Campaign", r.map_err(recipe_error)).map(Response::new)
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let md = request.metadata().clone();
        let req = request.into_inner();
        let r = async {
            let leader = req.leader.ok_or_else(missing_leader)?;
            // etcd resumes the election on a session for the given lease, granting one for
            // lease 0, and puts the value with the session's lease.
            let lease = session_lease(&self.node, &md, leader.lease).await?;
            let header =
                proclaim(&self.node, &md, &leader.key, leader.rev, lease, &req.value).await?;
            Ok(ProclaimResponse { header })
        }
        .await;
        observe(&self.node, "Proclaim", r.map_err(recipe_error)).map(Response::new)
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let md = request.metadata().clone();
        let r = self.leader_inner(&md, request.into_inner()).await;
        observe(&self.node, "Leader", r.map_err(recipe_error)).map(Response::new)
    }

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let md = request.metadata().clone();
        let req = request.into_inner();
        let r: Result<ObserveStream, Status> = async {
            // Refused up front, as etcd's in-process watch is: the stream would only end.
            let prefix = prefix_of(&req.name);
            auth::check_read(&self.node, &md, &prefix, &prefix_end(&prefix)).await?;
            let (tx, rx) = mpsc::channel(OBSERVE_BUFFER);
            tokio::spawn(observe_loop(self.node.clone(), md, req.name, tx));
            let stream: ObserveStream =
                Box::pin(futures::StreamExt::map(ReceiverStream::new(rx), Ok));
            Ok(stream)
        }
        .await;
        observe(&self.node, "Observe", r.map_err(recipe_error)).map(Response::new)
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let md = request.metadata().clone();
        let req = request.into_inner();
        let r = async {
            let leader = req.leader.ok_or_else(missing_leader)?;
            // As etcd: a session is made for the lease (granted for 0) though only the key and
            // its create revision decide.
            session_lease(&self.node, &md, leader.lease).await?;
            let header = resign(&self.node, &md, &leader.key, leader.rev).await?;
            Ok(ResignResponse { header })
        }
        .await;
        observe(&self.node, "Resign", r.map_err(recipe_error)).map(Response::new)
    }
}
