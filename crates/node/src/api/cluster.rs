//! etcd's Cluster service: MemberList, MemberAdd, MemberRemove, MemberPromote, MemberUpdate.
//!
//! MemberAdd adds a learner with `--learner` and a voter without, as etcd does. A voter that
//! has not started (and so has no log) counts towards the quorum at once — a 3-member cluster
//! with one unstarted voter has 4 voters and loses quorum with the next failure — so, like
//! etcd's strict reconfiguration check, it is refused unless the members already up make a
//! quorum of the grown configuration. The new member then starts with `--initial-cluster`
//! naming every member and `--initial-cluster-state existing`, as with etcd. The operator and
//! `--join` keep adding learners and promoting them once caught up.
//!
//! MemberUpdate checks its request as etcd does (an unknown id is etcd's "member not found",
//! NOT_FOUND; peer URLs are required and may not belong to another member), then writes a
//! member-update entry through the Raft log: the core's configuration (who votes) does not
//! change, so it is a Normal entry, and the Raft loop applies it to its member list — every
//! member switches to the new URLs at the same index, and a restart replays it.
//!
//! Add, Remove, Update and Promote pass the admin gate first (`auth::gate`), as etcd 3.4
//! requires root for them under auth; MemberList stays open.

use flotilla_proto::admin::AddLearnerRequest;
use flotilla_proto::etcdserverpb::cluster_server::Cluster;
use flotilla_proto::etcdserverpb::{
    Member as EtcdMember, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::{admin, header, observe};
use crate::contract::NodeStatus;
use crate::contract::ServerError;
use crate::member::handle::NodeHandle;

/// Refuses a MemberUpdate that etcd refuses: unknown member, no peer URLs, or a peer URL that
/// another member already uses.
fn check_member_update(st: &NodeStatus, req: &MemberUpdateRequest) -> Result<(), Status> {
    if st.member(req.id).is_none() {
        return Err(ServerError::MemberNotFound.into());
    }
    if req.peer_ur_ls.is_empty() {
        return Err(Status::invalid_argument(
            "etcdserver: peer URLs are required",
        ));
    }
    if st
        .members
        .iter()
        .filter(|m| m.id != req.id)
        .any(|m| m.peer_urls.iter().any(|u| req.peer_ur_ls.contains(u)))
    {
        return Err(ServerError::MemberExists.into());
    }
    Ok(())
}

/// The Cluster service.
#[derive(Clone)]
pub struct ClusterService {
    node: NodeHandle,
}

impl ClusterService {
    /// Creates the service.
    pub fn new(node: NodeHandle) -> Self {
        ClusterService { node }
    }

    fn members(&self) -> Vec<EtcdMember> {
        self.node
            .status()
            .members
            .into_iter()
            .map(|m| EtcdMember {
                id: m.id,
                name: m.name,
                peer_ur_ls: m.peer_urls,
                client_ur_ls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let allowed = admin::gate(&self.node, &request).await;
        let req = request.into_inner();
        let r = async {
            allowed?;
            // etcd 3.4 admits one learner at a time (its `maxLearners`); the operator's and
            // `--join`'s Admin path is not bound by it. etcd checks for a taken peer URL
            // first, and `add_member` reports that one.
            let st = self.node.status();
            let url_taken = st
                .members
                .iter()
                .any(|m| m.peer_urls.iter().any(|u| req.peer_ur_ls.contains(u)));
            if req.is_learner && !url_taken && st.members.iter().any(|m| m.is_learner) {
                return Err(ServerError::TooManyLearners.into());
            }
            let id = admin::add_member(
                &self.node,
                AddLearnerRequest {
                    name: String::new(),
                    peer_urls: req.peer_ur_ls.clone(),
                    client_urls: Vec::new(),
                    voter: !req.is_learner,
                },
            )
            .await?;
            Ok(MemberAddResponse {
                header: Some(header(&self.node, 0)),
                member: Some(EtcdMember {
                    id,
                    name: String::new(),
                    peer_ur_ls: req.peer_ur_ls,
                    client_ur_ls: Vec::new(),
                    is_learner: req.is_learner,
                }),
                members: self.members(),
            })
        }
        .await;
        observe(&self.node, "MemberAdd", r).map(Response::new)
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let allowed = admin::gate(&self.node, &request).await;
        let id = request.into_inner().id;
        let r = async {
            allowed?;
            admin::remove(&self.node, id).await?;
            Ok(MemberRemoveResponse {
                header: Some(header(&self.node, 0)),
                members: self.members(),
            })
        }
        .await;
        observe(&self.node, "MemberRemove", r).map(Response::new)
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let allowed = admin::gate(&self.node, &request).await;
        let req = request.into_inner();
        let r = async {
            allowed?;
            check_member_update(&self.node.status(), &req)?;
            self.node
                .write(flotilla_proto::internal::MemberUpdate {
                    id: req.id,
                    peer_urls: req.peer_ur_ls.clone(),
                })
                .await?;
            Ok(MemberUpdateResponse {
                header: Some(header(&self.node, 0)),
                members: self.members(),
            })
        }
        .await;
        observe(&self.node, "MemberUpdate", r).map(Response::new)
    }

    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let r = Ok(MemberListResponse {
            header: Some(header(&self.node, 0)),
            members: self.members(),
        });
        observe(&self.node, "MemberList", r).map(Response::new)
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let allowed = admin::gate(&self.node, &request).await;
        let id = request.into_inner().id;
        let r = async {
            allowed?;
            admin::promote(&self.node, id).await?;
            Ok(MemberPromoteResponse {
                header: Some(header(&self.node, 0)),
                members: self.members(),
            })
        }
        .await;
        observe(&self.node, "MemberPromote", r).map(Response::new)
    }
}
