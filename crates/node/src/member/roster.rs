//! [`Roster`]: the member list as the Raft loop keeps it — who the members are (names, peer and
//! client URLs, from `contract::members`) and which of them the transport must reach.
//!
//! Addresses come from three places and this is the one that merges them: the context of each
//! configuration change (learned when the change is *appended*, since it takes effect then and
//! the leader must reach a new member before the change commits), snapshots, and the
//! `MemberUpdate` requests applied to the state machine. The loop also keeps the configuration
//! as of the applied index here, which lags the core's (that one changes on append) and is
//! what snapshots and images must describe.

use std::collections::BTreeSet;
use std::sync::Arc;

use flotilla_proto::internal;
use flotilla_raft::{ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, NodeId, Status};

use crate::codec;
use crate::contract::{Member, Members, Outbox};
use crate::storage::WalLogStore;

/// The member list, the applied configuration and the transport's peer set.
pub struct Roster {
    members: Members,
    applied_conf: ConfState,
    last_peers: Vec<(NodeId, String)>,
    outbox: Arc<dyn Outbox>,
}

impl Roster {
    /// The roster of a member that restarted with `members`, its configuration as of the
    /// applied index being `applied_conf`.
    pub fn new(members: Members, applied_conf: ConfState, outbox: Arc<dyn Outbox>) -> Self {
        Roster {
            members,
            applied_conf,
            last_peers: Vec::new(),
            outbox,
        }
    }

    /// Metadata of every known member.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// The configuration as of the applied index.
    pub fn applied_conf(&self) -> &ConfState {
        &self.applied_conf
    }

    /// Metadata a member reported about itself; never adds a member. Returns whether it was
    /// taken.
    pub fn learn(&mut self, m: Member) -> bool {
        if !self.members.by_id.contains_key(&m.id) {
            return false;
        }
        self.members.upsert(Member {
            peer_urls: Vec::new(),
            ..m
        });
        true
    }

    /// A configuration change is being appended: learn the address of a member it adds.
    pub fn appending(&mut self, e: &Entry) {
        if let Some(cc) = decode_conf_change(&e.data)
            && matches!(
                cc.kind,
                ConfChangeKind::AddLearner
                    | ConfChangeKind::AddNode
                    | ConfChangeKind::PromoteLearner
            )
            && let Some(m) = member_of(&cc)
        {
            self.members.upsert(m);
        }
    }

    /// A peer says this member was removed; returns whether that is news.
    pub fn removed_self(&mut self, self_id: NodeId, by: NodeId) -> bool {
        if self.members.removed.contains(&self_id) {
            return false;
        }
        tracing::error!(
            member = format!("{self_id:x}"),
            peer = format!("{by:x}"),
            "a peer says this member was removed from the cluster"
        );
        self.members.remove(self_id);
        true
    }

    /// A configuration change entry was applied.
    pub fn applied(&mut self, data: &[u8], self_id: NodeId) {
        let Some(cc) = decode_conf_change(data) else {
            return;
        };
        self.applied_conf = self.applied_conf.apply(&cc);
        let name = member_of(&cc)
            .map(|m| m.name)
            .or_else(|| self.members.by_id.get(&cc.node_id).map(|m| m.name.clone()))
            .unwrap_or_default();
        tracing::info!(
            change = ?cc.kind,
            member = format!("{:x}", cc.node_id),
            name,
            voters = self.applied_conf.voters.len(),
            learners = self.applied_conf.learners.len(),
            "membership change applied"
        );
        match cc.kind {
            ConfChangeKind::RemoveNode => {
                if cc.node_id == self_id {
                    tracing::warn!("this member was removed from the cluster");
                }
                self.members.remove(cc.node_id);
            }
            _ => {
                if let Some(m) = member_of(&cc) {
                    self.members.upsert(m);
                }
            }
        }
    }

    /// Peer URL updates applied to the state machine; returns whether any was taken. A
    /// member removed since it was checked is left alone.
    pub fn update_peer_urls(&mut self, updates: Vec<internal::MemberUpdate>) -> bool {
        let mut changed = false;
        for u in updates {
            if self.members.by_id.contains_key(&u.id) && !u.peer_urls.is_empty() {
                tracing::info!(member = format!("{:x}", u.id), urls = ?u.peer_urls, "member peer URLs updated");
                self.members.upsert(Member {
                    id: u.id,
                    peer_urls: u.peer_urls,
                    ..Member::default()
                });
                changed = true;
            }
        }
        changed
    }

    /// A snapshot's members were restored (`None`: a bootstrap snapshot that carries none);
    /// the configuration as of the applied index is now `conf`.
    pub fn restored(&mut self, members: Option<Members>, conf: ConfState) {
        for m in members.into_iter().flat_map(|ms| ms.by_id.into_values()) {
            self.members.upsert(m);
        }
        self.applied_conf = conf;
    }

    /// Hands the transport the peers to reach when they changed: everyone in the core's
    /// configuration, plus every member whose address we know (a member that joined with an
    /// empty configuration must be able to answer the leader before it has learned the
    /// configuration).
    pub fn refresh_peers(&mut self, st: &Status) {
        let mut ids: BTreeSet<NodeId> = st.conf_state.members().collect();
        ids.extend(self.members.by_id.keys().copied());
        ids.remove(&st.id);
        let peers: Vec<(NodeId, String)> = ids
            .into_iter()
            .filter_map(|id| self.members.peer_url(id).map(|u| (id, u.to_string())))
            .collect();
        if peers != self.last_peers {
            self.last_peers = peers.clone();
            self.outbox.set_peers(peers);
        }
    }
}

/// The configuration as of `applied`: the stored snapshot's, with every configuration change
/// the log holds up to `applied` applied to it (a restarted member resumes from the state
/// machine's applied index, past entries the core will not hand out again).
pub fn conf_as_of(store: &WalLogStore, applied: u64) -> ConfState {
    use flotilla_raft::Storage as _;
    let meta = store.snapshot_meta();
    let mut conf = meta.conf_state.clone();
    let mut lo = meta.index + 1;
    while lo <= applied {
        let Ok(batch) = store.entries(lo, applied + 1, 64 << 20) else {
            break;
        };
        let Some(last) = batch.last().map(|e| e.index) else {
            break;
        };
        for e in batch.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            if let Some(cc) = decode_conf_change(&e.data) {
                conf = conf.apply(&cc);
            }
        }
        lo = last + 1;
    }
    conf
}

/// Decodes the data of a `ConfChange` entry (the core's own encoding).
pub fn decode_conf_change(data: &[u8]) -> Option<ConfChange> {
    ConfChange::decode(data)
}

/// The member a configuration change describes (from its context, see
/// [`codec::member_context`]); `None` when the context is malformed.
pub fn member_of(cc: &ConfChange) -> Option<Member> {
    let mc = codec::member_context(cc).ok()?;
    Some(Member {
        id: cc.node_id,
        name: mc.name,
        peer_urls: mc.peer_urls,
        client_urls: mc.client_urls,
        is_learner: false,
    })
}
