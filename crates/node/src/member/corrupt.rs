//! Corruption checks: etcd's `corrupt.go` (`InitialCorruptCheck`, `monitorKVHash`,
//! `checkHashKV`), comparing this member's HashKV with its peers'.
//!
//! Both checks ask each peer's `Maintenance.HashKV` at a revision of this member's choosing.
//! A peer is reached through its client URL; bootstrap members may not know each other's client
//! URLs yet, so a missing one is asked from the peer's `Admin.Status` on its peer URL (served
//! there for exactly this kind of member-to-member call), as `node.rs`'s client-URL discovery
//! does.
//!
//! - Initial check (`--experimental-initial-corrupt-check`): before the member starts, its
//!   hash at its own revision is compared with every peer's hash at that revision. A peer that
//!   differs *with the same compact revision* is a mismatch, and the member refuses to start
//!   (`... found data inconsistency with peers`). A peer that has compacted past the revision or
//!   not reached it, or cannot be reached, is only logged, as in etcd.
//! - Periodic check (`--experimental-corrupt-check-time`): every interval the leader takes its
//!   hash, asks the peers at that revision, makes sure it is still leader with a ReadIndex
//!   barrier, and hashes again. A peer whose revision or compact revision is ahead of the
//!   leader's, or whose hash differs at the leader's old compact revision, gets
//!   `ACTIVATE CORRUPT` proposed for it; if the leader's own hash changed while its revision
//!   did not, the leader raises it for itself. Once applied, every member refuses writes with
//!   `etcdserver: corrupt cluster` (`mvcc/alarm.rs`).

use std::time::Duration;

use crate::contract::Forwarding;
use crate::contract::members::Member;
use crate::member::handle::NodeHandle;
use flotilla_proto::admin::StatusRequest;
use flotilla_proto::admin::admin_client::AdminClient;
use flotilla_proto::etcdserverpb::alarm_request::AlarmAction;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{AlarmRequest, AlarmType, HashKvRequest, HashKvResponse};
use flotilla_raft::NodeId;

/// Bound on one peer call.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the initial check refused to start the member.
#[derive(Debug, thiserror::Error)]
pub enum CorruptError {
    /// The local store could not be hashed.
    #[error("hashing the local store failed: {0}")]
    Local(String),
    /// Peers hold different data at the same revision (etcd's wording).
    #[error("{0:x} found data inconsistency with peers")]
    Inconsistent(NodeId),
}

/// One peer's answer.
#[derive(Debug)]
pub struct PeerHash {
    /// The peer.
    pub id: NodeId,
    /// Its HashKV response, or why there is none.
    pub resp: Result<HashKvResponse, tonic::Status>,
}

/// The client URL of `m`: known, or asked from its Admin.Status on its peer URL.
async fn client_url(
    peers: &dyn Forwarding,
    m: &Member,
    cluster_id: u64,
) -> Result<String, tonic::Status> {
    if let Some(u) = m.client_urls.first() {
        return Ok(u.clone());
    }
    let peer = m
        .peer_urls
        .first()
        .ok_or_else(|| tonic::Status::unavailable("no peer URL known"))?;
    let resp = AdminClient::new(peers.channel(peer)?)
        .status(StatusRequest {})
        .await?
        .into_inner();
    if resp.id != m.id || resp.cluster_id != cluster_id {
        return Err(tonic::Status::failed_precondition(
            "another member answers at this peer URL",
        ));
    }
    resp.members
        .into_iter()
        .find(|x| x.id == m.id)
        .and_then(|x| x.client_urls.into_iter().next())
        .ok_or_else(|| tonic::Status::unavailable("no client URL known"))
}

async fn peer_hash(
    peers: &dyn Forwarding,
    m: &Member,
    cluster_id: u64,
    rev: i64,
) -> Result<HashKvResponse, tonic::Status> {
    let url = client_url(peers, m, cluster_id).await?;
    let resp = MaintenanceClient::new(peers.client_channel(&url)?)
        .hash_kv(HashKvRequest { revision: rev })
        .await?
        .into_inner();
    let h = resp.header.unwrap_or_default();
    if h.member_id != m.id || h.cluster_id != cluster_id {
        return Err(tonic::Status::failed_precondition(
            "another member answers at this client URL",
        ));
    }
    Ok(resp)
}

/// Every peer's HashKV at `rev`, asked concurrently (etcd's `getPeerHashKVs`).
pub async fn peer_hashes(
    peers: &dyn Forwarding,
    members: &[Member],
    self_id: NodeId,
    cluster_id: u64,
    rev: i64,
) -> Vec<PeerHash> {
    let asks =
        members
            .iter()
            .filter(|m| m.id != self_id)
            .map(|m| async move {
                let resp =
                    match tokio::time::timeout(PEER_TIMEOUT, peer_hash(peers, m, cluster_id, rev))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(tonic::Status::deadline_exceeded("HashKV timed out")),
                    };
                PeerHash { id: m.id, resp }
            });
    futures::future::join_all(asks).await
}

/// etcd's `InitialCorruptCheck`: `local` is this member's (hash, revision, compact revision).
/// Errs when a peer holds other data at the same revision and compact revision.
pub async fn initial_check(
    peers: &dyn Forwarding,
    local: (u32, i64, i64),
    members: &[Member],
    self_id: NodeId,
    cluster_id: u64,
) -> Result<(), CorruptError> {
    let (hash, rev, compact) = local;
    tracing::info!(
        revision = rev,
        "initial corruption check: comparing HashKV with peers"
    );
    let mut mismatch = 0;
    for p in peer_hashes(peers, members, self_id, cluster_id, rev).await {
        match p.resp {
            Ok(r) if r.hash == hash => {}
            Ok(r) if r.compact_revision == compact => {
                tracing::error!(
                    local_hash = hash,
                    peer = format!("{:x}", p.id),
                    peer_hash = r.hash,
                    revision = rev,
                    compact_revision = compact,
                    "hash mismatch with a peer at the same revision"
                );
                mismatch += 1;
            }
            Ok(r) => tracing::warn!(
                peer = format!("{:x}", p.id),
                compact_revision = compact,
                peer_compact_revision = r.compact_revision,
                "cannot compare hashes: the compact revisions differ"
            ),
            Err(e) => tracing::warn!(
                peer = format!("{:x}", p.id),
                error = %e.message(),
                "cannot compare hashes with a peer"
            ),
        }
    }
    if mismatch > 0 {
        return Err(CorruptError::Inconsistent(self_id));
    }
    tracing::info!("initial corruption check passed");
    Ok(())
}

/// The members to raise CORRUPT for, from the leader's hash before (`h`, `rev`, `crev`) and
/// after (`h2`, `rev2`, `crev2`) asking the peers (etcd's `checkHashKV` rules).
pub fn mismatches(
    self_id: NodeId,
    before: (u32, i64, i64),
    after: (u32, i64, i64),
    peers: &[PeerHash],
) -> Vec<NodeId> {
    let (h, rev, crev) = before;
    let (h2, rev2, crev2) = after;
    let mut out = Vec::new();
    if h2 != h && rev2 == rev && crev == crev2 {
        out.push(self_id);
    }
    for p in peers {
        let Ok(r) = &p.resp else { continue };
        let peer_rev = r.header.as_ref().map_or(0, |h| h.revision);
        if peer_rev > rev2
            || r.compact_revision > crev2
            || (r.compact_revision == crev && r.hash != h)
        {
            out.push(p.id);
        }
    }
    out
}

fn local_hash(node: &NodeHandle) -> Result<(u32, i64, i64), String> {
    let sm = node
        .sm
        .read()
        .map_err(|_| "state machine lock poisoned".to_string())?;
    let store = sm.store();
    let h = store.hash_at(0).map_err(|e| e.to_string())?;
    Ok((h, store.current_revision(), store.compact_revision()))
}

/// One round of the leader's periodic check; does nothing on a follower.
pub async fn check_once(node: &NodeHandle) -> Result<(), String> {
    let st = node.status();
    if !st.is_leader() {
        return Ok(());
    }
    let before = local_hash(node)?;
    let peers = peer_hashes(
        node.peers.as_ref(),
        &st.members,
        node.id,
        node.cluster_id,
        before.1,
    )
    .await;
    node.linearizable_barrier()
        .await
        .map_err(|e| e.to_string())?;
    let after = local_hash(node)?;
    // etcd raises one alarm per round at most.
    if let Some(&id) = mismatches(node.id, before, after, &peers).first() {
        tracing::error!(member = format!("{id:x}"), "hash mismatch: raising CORRUPT");
        node.write(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: id,
            alarm: AlarmType::Corrupt as i32,
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// etcd's `monitorKVHash`: runs [`check_once`] every `every` for as long as the member runs.
pub async fn monitor(node: NodeHandle, every: Duration) {
    tracing::info!(interval = ?every, "periodic corruption check enabled");
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = check_once(&node).await {
            tracing::warn!(error = %e, "corruption check failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::etcdserverpb::ResponseHeader;

    fn peer(id: NodeId, hash: u32, rev: i64, compact: i64) -> PeerHash {
        PeerHash {
            id,
            resp: Ok(HashKvResponse {
                header: Some(ResponseHeader {
                    revision: rev,
                    ..Default::default()
                }),
                hash,
                compact_revision: compact,
            }),
        }
    }

    #[test]
    fn mismatch_rules_are_etcds() {
        let before = (7, 10, 3);
        // Same hash: fine; a peer that answered nothing: ignored.
        let unreachable = PeerHash {
            id: 4,
            resp: Err(tonic::Status::unavailable("x")),
        };
        assert!(mismatches(1, before, before, &[peer(2, 7, 10, 3), unreachable]).is_empty());
        // Other hash at the same compact revision.
        assert_eq!(mismatches(1, before, before, &[peer(2, 8, 10, 3)]), vec![2]);
        // Other hash, other compact revision (behind): not comparable.
        assert!(mismatches(1, before, before, &[peer(2, 8, 10, 2)]).is_empty());
        // A peer ahead of the leader's revision or compact revision.
        assert_eq!(mismatches(1, before, before, &[peer(2, 7, 11, 3)]), vec![2]);
        assert_eq!(mismatches(1, before, before, &[peer(2, 7, 10, 4)]), vec![2]);
        // The leader's own hash changed without a new revision.
        assert_eq!(mismatches(1, before, (9, 10, 3), &[]), vec![1]);
        assert!(mismatches(1, before, (9, 11, 3), &[]).is_empty());
    }
}
