//! The values the core exchanges with its caller: log entries, hard state, membership,
//! snapshots and messages.
//!
//! They are plain Rust data with no wire format: the node maps them to `proto/raft.proto`, and
//! the simulator moves them as they are. Keeping the core free of prost means it builds with no
//! code generation and its tests need nothing but `cargo test`.

use std::collections::BTreeSet;

/// A member's identity inside one cluster: a random, never reused, non-zero 64-bit number.
pub type NodeId = u64;

/// The id that means "nobody" (no vote cast, no leader known).
pub const NO_NODE: NodeId = 0;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data (or the leader's empty no-op when `data` is empty).
    Normal,
    /// An encoded [`ConfChange`]; see [`ConfChange::encode`].
    ConfChange,
}

/// One entry of the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The leader's term when the entry was created.
    pub term: u64,
    /// Position in the log, starting at 1.
    pub index: u64,
    /// What `data` holds.
    pub kind: EntryKind,
    /// Opaque to the core for `Normal` entries.
    pub data: Vec<u8>,
}

impl Entry {
    /// The number of bytes this entry counts for in size limits.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// What must be durable before the node answers votes or appends (Raft Figure 2, "Persistent
/// state on all servers"; the log itself is persisted separately).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// Latest term this server has seen.
    pub term: u64,
    /// Candidate that received this server's vote in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    /// Highest log index known committed. Persisting it is an optimisation (it lets a restarted
    /// node re-apply without waiting for the leader), never needed for safety.
    pub commit: u64,
}

/// A cluster configuration: who votes and who only receives the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// Members counted for elections and commitment.
    pub voters: BTreeSet<NodeId>,
    /// Non-voting members that receive the log and snapshots.
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    /// A configuration of voters only.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        ConfState {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
}

/// A single-server membership change (Raft thesis §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// Add a new non-voting member.
    AddLearner,
    /// Turn a caught-up learner into a voter.
    PromoteLearner,
    /// Remove a voter or a learner.
    RemoveNode,
    /// Add a new voting member directly (etcd's `member add` without `--learner`). Still one
    /// server at a time, so any old and new majority overlap (thesis §4.1); the new voter
    /// counts towards the quorum at once, which is why the node refuses it unless enough
    /// members are up (etcd's strict reconfiguration check).
    AddNode,
}

/// A membership change as it travels in a [`EntryKind::ConfChange`] entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfChange {
    /// What to do.
    pub kind: ConfChangeKind,
    /// To whom.
    pub node_id: NodeId,
    /// Opaque to the core; the node stores the member's name and peer URLs here.
    pub context: Vec<u8>,
}

/// A point-in-time image of the state machine, with the log position and configuration it
/// reflects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot includes.
    pub index: u64,
    /// Term of that entry (kept so log matching works at the compaction boundary).
    pub term: u64,
    /// Configuration as of `index` (restoring the snapshot restores it).
    pub conf_state: ConfState,
}

/// A snapshot: its metadata and the state machine's serialised image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// Position and configuration.
    pub meta: SnapshotMeta,
    /// Opaque to the core.
    pub data: Vec<u8>,
}

impl Snapshot {
    /// Whether this is the empty snapshot of a log that was never compacted.
    pub fn is_empty(&self) -> bool {
        self.meta.index == 0
    }
}

/// A role in the Raft protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Collecting pre-votes; has not yet incremented its term (thesis §9.6).
    PreCandidate,
    /// Collecting votes for its term.
    Candidate,
    /// Replicates the log.
    Leader,
}

/// State that need not be persisted but that the caller wants to know about when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SoftState {
    /// The leader this node knows of, or [`NO_NODE`].
    pub leader: NodeId,
    /// This node's role.
    pub role: Role,
}

/// The answer to a [`read_index`](crate::RawNode::read_index) request: once the state machine
/// has applied up to `index`, a read for `ctx` is linearizable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadState {
    /// Commit index the leader confirmed while it was still leader.
    pub index: u64,
    /// The caller's request context, returned as given.
    pub ctx: Vec<u8>,
}

/// A message between two members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term (for pre-vote traffic, the term it would campaign in).
    pub term: u64,
    /// What it says.
    pub body: MessageBody,
}

/// The kinds of message in the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// Pre-vote request (thesis §9.6); `term` is the term the sender would campaign in.
    PreVote {
        /// Sender's last log index.
        last_index: u64,
        /// Term of that entry.
        last_term: u64,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// Whether the pre-vote was refused.
        reject: bool,
    },
    /// RequestVote (Figure 2).
    Vote {
        /// Sender's last log index.
        last_index: u64,
        /// Term of that entry.
        last_term: u64,
        /// The election follows a leadership transfer (TimeoutNow), so leader stickiness does
        /// not apply (thesis §4.2.3, §3.10).
        transfer: bool,
    },
    /// Answer to [`MessageBody::Vote`].
    VoteResponse {
        /// Whether the vote was refused.
        reject: bool,
    },
    /// AppendEntries (Figure 2).
    Append {
        /// Index of the entry immediately before `entries`.
        prev_index: u64,
        /// Its term.
        prev_term: u64,
        /// Entries to store (may be empty to probe).
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: u64,
    },
    /// Answer to [`MessageBody::Append`].
    AppendResponse {
        /// Whether the append failed the consistency check.
        reject: bool,
        /// On success: the highest index now known to match the leader. On rejection: the
        /// `prev_index` that was rejected.
        index: u64,
        /// On rejection: a hint for fast backtracking: the largest index ≤ the rejected one
        /// whose term is ≤ `hint_term` in the follower's log (etcd-io/raft's
        /// `findConflictByTerm`).
        hint_index: u64,
        /// The term of the follower's entry at `hint_index`.
        hint_term: u64,
    },
    /// Leader's heartbeat; also confirms leadership for ReadIndex when `ctx` is set.
    Heartbeat {
        /// `min(leader commit, follower match)`, so a follower never commits what it may
        /// not have.
        commit: u64,
        /// ReadIndex round this heartbeat belongs to, if any.
        ctx: Option<Vec<u8>>,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// The heartbeat's `ctx`, echoed.
        ctx: Option<Vec<u8>>,
    },
    /// InstallSnapshot (Figure 13).
    InstallSnapshot {
        /// The snapshot to install.
        snapshot: Snapshot,
    },
    /// Tells the target of a leadership transfer to campaign at once (thesis §3.10).
    TimeoutNow,
    /// A follower forwards a ReadIndex request to the leader.
    ReadIndex {
        /// The caller's context.
        ctx: Vec<u8>,
    },
    /// The leader's answer to a forwarded [`MessageBody::ReadIndex`].
    ReadIndexResponse {
        /// The caller's context.
        ctx: Vec<u8>,
        /// Commit index to wait for; 0 when the leader could not serve the read.
        index: u64,
    },
}

impl ConfChange {
    /// Encodes the change for an [`EntryKind::ConfChange`] entry: one kind byte, the node id
    /// (8 bytes little-endian), then the context.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.context.len());
        out.push(match self.kind {
            ConfChangeKind::AddLearner => 1,
            ConfChangeKind::PromoteLearner => 2,
            ConfChangeKind::RemoveNode => 3,
            ConfChangeKind::AddNode => 4,
        });
        out.extend_from_slice(&self.node_id.to_le_bytes());
        out.extend_from_slice(&self.context);
        out
    }

    /// Decodes what [`ConfChange::encode`] produced; `None` for malformed data.
    pub fn decode(data: &[u8]) -> Option<ConfChange> {
        let kind = match *data.first()? {
            1 => ConfChangeKind::AddLearner,
            2 => ConfChangeKind::PromoteLearner,
            3 => ConfChangeKind::RemoveNode,
            4 => ConfChangeKind::AddNode,
            _ => return None,
        };
        let id: [u8; 8] = data.get(1..9)?.try_into().ok()?;
        Some(ConfChange {
            kind,
            node_id: u64::from_le_bytes(id),
            context: data[9..].to_vec(),
        })
    }
}

impl ConfState {
    /// The configuration after `cc`; a change that does not fit (promoting a non-learner,
    /// adding an existing member, removing a stranger) leaves it unchanged. The leader
    /// validates proposals, so this only guards against malformed logs.
    pub fn apply(&self, cc: &ConfChange) -> ConfState {
        let mut next = self.clone();
        let id = cc.node_id;
        match cc.kind {
            ConfChangeKind::AddLearner => {
                if id != NO_NODE && !self.contains(id) {
                    next.learners.insert(id);
                }
            }
            ConfChangeKind::PromoteLearner => {
                if next.learners.remove(&id) {
                    next.voters.insert(id);
                }
            }
            ConfChangeKind::RemoveNode => {
                next.voters.remove(&id);
                next.learners.remove(&id);
            }
            ConfChangeKind::AddNode => {
                if id != NO_NODE && !self.contains(id) {
                    next.voters.insert(id);
                }
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_change_round_trips() {
        for kind in [
            ConfChangeKind::AddLearner,
            ConfChangeKind::PromoteLearner,
            ConfChangeKind::RemoveNode,
            ConfChangeKind::AddNode,
        ] {
            let cc = ConfChange {
                kind,
                node_id: 0xDEAD_BEEF_0000_0001,
                context: b"peer-urls".to_vec(),
            };
            assert_eq!(ConfChange::decode(&cc.encode()), Some(cc));
        }
        assert_eq!(ConfChange::decode(&[]), None);
        assert_eq!(ConfChange::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(ConfChange::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn conf_state_apply_rules() {
        let cs = ConfState::with_voters([1, 2]);
        let cc = |kind, node_id| ConfChange {
            kind,
            node_id,
            context: vec![],
        };
        let added = cs.apply(&cc(ConfChangeKind::AddLearner, 3));
        assert!(added.learners.contains(&3));
        assert_eq!(added.apply(&cc(ConfChangeKind::AddLearner, 1)), added);
        let promoted = added.apply(&cc(ConfChangeKind::PromoteLearner, 3));
        assert!(promoted.voters.contains(&3) && promoted.learners.is_empty());
        assert_eq!(cs.apply(&cc(ConfChangeKind::PromoteLearner, 2)), cs);
        let removed = promoted.apply(&cc(ConfChangeKind::RemoveNode, 1));
        assert_eq!(removed, ConfState::with_voters([2, 3]));
    }
}
