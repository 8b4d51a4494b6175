//! Member metadata: who a member id is (name, peer and client URLs).
//!
//! The core only knows ids and roles ([`ConfState`]); the node needs addresses. They travel
//! with the configuration itself — in each `ConfChange`'s context, and for bootstrap members in
//! `--initial-cluster` — and are carried inside every snapshot, so a member restored from a
//! snapshot knows how to reach everyone. The roles always come from the core's `ConfState`,
//! never from this map, so the two cannot disagree about who votes.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_raft::{ConfState, NodeId};
use serde::{Deserialize, Serialize};

/// One member's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Member {
    /// Member id.
    pub id: NodeId,
    /// Name (may be empty for a member that has not started yet).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs.
    pub client_urls: Vec<String>,
    /// Whether it is a learner (filled from the configuration when listed).
    #[serde(default)]
    pub is_learner: bool,
}

/// Metadata of every member ever learned about, keyed by id, and the ids whose removal was
/// applied. Ids are random and never reused, so a removed id is removed for good: a message
/// from one is answered with "removed", which is how a member that was away when it was
/// removed learns it (etcd's peers answer such a member the same way).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// By id.
    pub by_id: BTreeMap<NodeId, Member>,
    /// Members whose removal was committed and applied.
    #[serde(default)]
    pub removed: BTreeSet<NodeId>,
}

impl Members {
    /// Records or refreshes a member's metadata (empty fields do not erase known ones).
    pub fn upsert(&mut self, m: Member) {
        let e = self.by_id.entry(m.id).or_insert_with(|| Member {
            id: m.id,
            ..Member::default()
        });
        if !m.name.is_empty() {
            e.name = m.name;
        }
        if !m.peer_urls.is_empty() {
            e.peer_urls = m.peer_urls;
        }
        if !m.client_urls.is_empty() {
            e.client_urls = m.client_urls;
        }
    }

    /// Forgets a removed member and remembers that it was removed.
    pub fn remove(&mut self, id: NodeId) {
        self.by_id.remove(&id);
        self.removed.insert(id);
    }

    /// The members of `cs`, voters first, with their roles set from `cs`.
    pub fn list(&self, cs: &ConfState) -> Vec<Member> {
        cs.voters
            .iter()
            .map(|id| (id, false))
            .chain(cs.learners.iter().map(|id| (id, true)))
            .map(|(id, learner)| {
                let mut m = self.by_id.get(id).cloned().unwrap_or(Member {
                    id: *id,
                    ..Member::default()
                });
                m.is_learner = learner;
                m
            })
            .collect()
    }

    /// The first peer URL of a member.
    pub fn peer_url(&self, id: NodeId) -> Option<&str> {
        self.by_id
            .get(&id)
            .and_then(|m| m.peer_urls.first())
            .map(String::as_str)
    }
}

/// Magic prefix of the node's snapshot envelope (version 1).
const SNAPSHOT_MAGIC: &[u8; 8] = b"FLOSNAP1";

/// Wraps the state machine's snapshot bytes with the member metadata.
pub fn encode_snapshot(members: &Members, state: &[u8]) -> Vec<u8> {
    let meta = serde_json::to_vec(members).unwrap_or_default();
    let mut out = Vec::with_capacity(16 + meta.len() + state.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&(meta.len() as u64).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(state);
    out
}

/// Splits a snapshot envelope into member metadata and state machine bytes.
pub fn decode_snapshot(data: &[u8]) -> Result<(Members, &[u8]), String> {
    if data.len() < 16 || &data[..8] != SNAPSHOT_MAGIC {
        return Err("snapshot is not a flotilla snapshot".into());
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&data[8..16]);
    let len = usize::try_from(u64::from_be_bytes(len)).map_err(|e| e.to_string())?;
    let end = 16usize
        .checked_add(len)
        .filter(|e| *e <= data.len())
        .ok_or("snapshot envelope is truncated")?;
    let members: Members = serde_json::from_slice(&data[16..end]).map_err(|e| e.to_string())?;
    Ok((members, &data[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_envelope_round_trips_and_rejects_garbage() {
        let mut ms = Members::default();
        ms.upsert(Member {
            id: 7,
            name: "a".into(),
            peer_urls: vec!["http://x".into()],
            ..Member::default()
        });
        let enc = encode_snapshot(&ms, b"state");
        let (m2, st) = decode_snapshot(&enc).unwrap();
        assert_eq!(m2, ms);
        assert_eq!(st, b"state");
        assert!(decode_snapshot(b"garbage").is_err());
        let mut bad = enc.clone();
        bad[15] = 200;
        assert!(decode_snapshot(&bad).is_err());
    }

    #[test]
    fn list_takes_roles_from_conf_state() {
        let mut ms = Members::default();
        ms.upsert(Member {
            id: 1,
            name: "a".into(),
            ..Member::default()
        });
        let mut cs = ConfState::with_voters([1]);
        cs.learners.insert(2);
        let l = ms.list(&cs);
        assert_eq!(l.len(), 2);
        assert!(!l[0].is_learner);
        assert!(l[1].is_learner && l[1].name.is_empty());
    }
}
