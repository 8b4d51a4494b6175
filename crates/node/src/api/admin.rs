//! Flotilla's Admin service (`flotilla.admin.v1.Admin`): what the operator drives.
//!
//! Membership changes run on the leader. A member that is not the leader forwards the call to
//! the leader's Admin service on its *peer* URL (the Admin service is served on both ports),
//! because every member knows every peer URL from the configuration while client URLs of
//! bootstrap members may be unknown. The same functions back etcd's Cluster service.
//!
//! Status is open; the calls that change the cluster first pass [`gate`] (`auth::gate`: on
//! the client port they need a verified client certificate or the root user, unless the
//! member can verify neither). A call forwarded to the leader arrives on its peer port, where
//! the gate lets members through.

use flotilla_proto::admin::admin_client::AdminClient;
use flotilla_proto::admin::admin_server::Admin;
use flotilla_proto::admin::{
    AddLearnerRequest, AddLearnerResponse, Member as AdminMember, PromoteLearnerRequest,
    PromoteLearnerResponse, RemoveMemberRequest, RemoveMemberResponse, Role as AdminRole,
    StatusRequest, StatusResponse, TransferLeadershipRequest, TransferLeadershipResponse,
};
use flotilla_proto::internal::MemberContext;
use flotilla_raft::{ConfChange, ConfChangeKind, NodeId, Role};
use tonic::{Request, Response, Status};

use super::observe;
use crate::codec::member_conf_change;
use crate::contract::{NodeStatus, ServerError};
use crate::member::handle::NodeHandle;

/// The Admin service.
#[derive(Clone)]
pub struct AdminService {
    node: NodeHandle,
}

impl AdminService {
    /// Creates the service.
    pub fn new(node: NodeHandle) -> Self {
        AdminService { node }
    }
}

/// Refuses a cluster-changing call whose caller may not make it (`auth::gate`).
pub async fn gate<T>(node: &NodeHandle, request: &Request<T>) -> Result<(), Status> {
    crate::auth::gate::check(node, request.metadata(), request.extensions()).await
}

/// Members with the leader's view of their progress.
pub fn admin_members(st: &NodeStatus) -> Vec<AdminMember> {
    st.members
        .iter()
        .map(|m| {
            let p = st.progress.get(&m.id);
            AdminMember {
                id: m.id,
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                client_urls: m.client_urls.clone(),
                is_learner: m.is_learner,
                match_index: p.map(|p| p.match_index),
                lag: p.map(|p| st.last_index.saturating_sub(p.match_index)),
                last_contact_ms: p.map(|p| p.last_contact_ms),
                healthy: p.map(|p| p.recent_active || m.id == st.id),
                caught_up: p.map(|p| p.caught_up),
            }
        })
        .collect()
}

/// This member's status.
pub fn status(node: &NodeHandle) -> StatusResponse {
    let st = node.status();
    let role = match st.role {
        Role::Follower => AdminRole::Follower,
        Role::PreCandidate => AdminRole::PreCandidate,
        Role::Candidate => AdminRole::Candidate,
        Role::Leader => AdminRole::Leader,
    };
    let is_learner = st.member(st.id).is_some_and(|m| m.is_learner);
    StatusResponse {
        id: st.id,
        name: node.name.clone(),
        cluster_id: node.cluster_id,
        role: role as i32,
        term: st.term,
        leader_id: st.leader,
        commit_index: st.commit,
        applied_index: st.applied,
        first_index: st.first_index,
        last_index: st.last_index,
        last_term: st.last_term,
        pending_conf_index: st.pending_conf_index,
        members: admin_members(&st),
        is_learner,
    }
}

/// An Admin client to the current leader, or `None` if this member leads.
async fn leader_client(
    node: &NodeHandle,
) -> Result<Option<AdminClient<tonic::transport::Channel>>, ServerError> {
    let leader = node.wait_leader(node.request_timeout).await?;
    if leader == node.id {
        return Ok(None);
    }
    let url = node
        .status()
        .member(leader)
        .and_then(|m| m.peer_urls.first().cloned())
        .ok_or(ServerError::NoLeader)?;
    Ok(Some(AdminClient::new(node.peers.channel(&url)?)))
}

/// Adds a member (on the leader) — a learner, or with `req.voter` a voter; returns its new id.
pub async fn add_member(node: &NodeHandle, req: AddLearnerRequest) -> Result<NodeId, Status> {
    if req.peer_urls.is_empty() {
        return Err(Status::invalid_argument(
            "etcdserver: peer URLs are required",
        ));
    }
    if let Some(mut c) = leader_client(node).await? {
        return Ok(c.add_learner(req).await?.into_inner().member_id);
    }
    let st = node.status();
    if st
        .members
        .iter()
        .any(|m| m.peer_urls.iter().any(|u| req.peer_urls.contains(u)))
    {
        return Err(ServerError::MemberExists.into());
    }
    let kind = if req.voter {
        check_enough_started_for_voter(&st, node.election_timeout)?;
        ConfChangeKind::AddNode
    } else {
        ConfChangeKind::AddLearner
    };
    let mut id: NodeId = 0;
    while id == 0 || st.member(id).is_some() {
        id = rand::random();
    }
    let ctx = MemberContext {
        name: req.name,
        peer_urls: req.peer_urls,
        client_urls: req.client_urls,
    };
    node.conf_change(member_conf_change(kind, id, &ctx)).await?;
    Ok(id)
}

/// etcd's strict reconfiguration check for a new voter (its `AddMember` with
/// `--strict-reconfig-check`, on by default). The new voter counts towards the quorum before
/// it has started, so:
/// - the voters that have ever started (they have a name: members added by hand have none
///   until they start) must make a quorum of the grown configuration, else
///   `NotEnoughStartedMembers`;
/// - every other voter must be connected now — heard from within an election timeout, its
///   replication stream intact (a killed peer breaks its connection and is reported
///   unreachable at once) — else `Unhealthy`: with one of three down, a fourth voter that has
///   not started would leave two of four, and every write would stop until it catches up.
///
/// (Not the core's `recent_active`: it is cleared for everyone at each election timeout
/// until the next heartbeat answers.)
pub fn check_enough_started_for_voter(
    st: &NodeStatus,
    election_timeout: std::time::Duration,
) -> Result<(), ServerError> {
    let within = u64::try_from(election_timeout.as_millis()).unwrap_or(u64::MAX);
    let voters: Vec<&crate::contract::Member> =
        st.members.iter().filter(|m| !m.is_learner).collect();
    let started = voters
        .iter()
        .filter(|m| m.id == st.id || !m.name.is_empty())
        .count();
    let grown = voters.len() + 1;
    if started < grown / 2 + 1 {
        return Err(ServerError::NotEnoughStartedMembers);
    }
    let connected = voters.iter().all(|m| {
        m.id == st.id
            || st
                .progress
                .get(&m.id)
                .is_some_and(|p| p.replicating && p.last_contact_ms <= within)
    });
    if !connected {
        return Err(ServerError::Unhealthy);
    }
    Ok(())
}

/// Promotes a caught-up learner (on the leader).
pub async fn promote(node: &NodeHandle, id: NodeId) -> Result<(), Status> {
    if let Some(mut c) = leader_client(node).await? {
        c.promote_learner(PromoteLearnerRequest { member_id: id })
            .await?;
        return Ok(());
    }
    let st = node.status();
    let m = st.member(id).ok_or(ServerError::MemberNotFound)?;
    if !m.is_learner {
        return Err(Status::failed_precondition(
            "etcdserver: can only promote a learner member",
        ));
    }
    let ctx = MemberContext {
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
    };
    node.conf_change(member_conf_change(ConfChangeKind::PromoteLearner, id, &ctx))
        .await?;
    Ok(())
}

/// Removes a member (on the leader).
pub async fn remove(node: &NodeHandle, id: NodeId) -> Result<(), Status> {
    if let Some(mut c) = leader_client(node).await? {
        c.remove_member(RemoveMemberRequest { member_id: id })
            .await?;
        return Ok(());
    }
    let st = node.status();
    if st.member(id).is_none() {
        return Err(ServerError::MemberNotFound.into());
    }
    node.conf_change(ConfChange {
        kind: ConfChangeKind::RemoveNode,
        node_id: id,
        context: Vec::new(),
    })
    .await?;
    Ok(())
}

/// The voter other than `except` with the highest match index (leader's view), if any.
pub fn most_up_to_date_voter(st: &NodeStatus, except: NodeId) -> Option<NodeId> {
    st.members
        .iter()
        .filter(|m| !m.is_learner && m.id != except)
        .filter_map(|m| st.progress.get(&m.id).map(|p| (p.match_index, m.id)))
        .max()
        .map(|(_, id)| id)
}

/// Transfers leadership to `target` (0: the most up-to-date voter); returns the new leader.
pub async fn transfer(node: &NodeHandle, target: NodeId) -> Result<NodeId, Status> {
    if let Some(mut c) = leader_client(node).await? {
        return Ok(c
            .transfer_leadership(TransferLeadershipRequest { target_id: target })
            .await?
            .into_inner()
            .leader_id);
    }
    let st = node.status();
    let target = if target == 0 {
        most_up_to_date_voter(&st, st.id)
            .ok_or_else(|| Status::failed_precondition("etcdserver: no other voter"))?
    } else {
        target
    };
    if target == st.id {
        return Ok(target);
    }
    match st.member(target) {
        None => return Err(ServerError::MemberNotFound.into()),
        Some(m) if m.is_learner => {
            return Err(Status::failed_precondition(
                "etcdserver: cannot transfer leadership to a learner",
            ));
        }
        Some(_) => {}
    }
    Ok(node.transfer_leader(target).await?)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        observe(
            &self.node,
            "Admin/Status",
            Ok(Response::new(status(&self.node))),
        )
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<AddLearnerResponse>, Status> {
        let r = async {
            gate(&self.node, &request).await?;
            add_member(&self.node, request.into_inner()).await
        }
        .await
        .map(|id| {
            Response::new(AddLearnerResponse {
                member_id: id,
                members: admin_members(&self.node.status()),
            })
        });
        observe(&self.node, "Admin/AddLearner", r)
    }

    async fn promote_learner(
        &self,
        request: Request<PromoteLearnerRequest>,
    ) -> Result<Response<PromoteLearnerResponse>, Status> {
        let r = async {
            gate(&self.node, &request).await?;
            promote(&self.node, request.into_inner().member_id).await
        }
        .await
        .map(|()| {
            Response::new(PromoteLearnerResponse {
                members: admin_members(&self.node.status()),
            })
        });
        observe(&self.node, "Admin/PromoteLearner", r)
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        let r = async {
            gate(&self.node, &request).await?;
            remove(&self.node, request.into_inner().member_id).await
        }
        .await
        .map(|()| {
            Response::new(RemoveMemberResponse {
                members: admin_members(&self.node.status()),
            })
        });
        observe(&self.node, "Admin/RemoveMember", r)
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferLeadershipRequest>,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        let r = async {
            gate(&self.node, &request).await?;
            transfer(&self.node, request.into_inner().target_id).await
        }
        .await
        .map(|leader_id| Response::new(TransferLeadershipResponse { leader_id }));
        observe(&self.node, "Admin/TransferLeadership", r)
    }
}
