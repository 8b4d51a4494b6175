//! Helpers for the tests that check the core against the Raft paper and thesis
//! (`raft_paper.rs`, `raft_thesis.rs`, `raft_pitfalls.rs`): stores with a given log, and one
//! constructor per message the tests forge, named after the RPC it is in the paper, so that a
//! test reads as the rule it checks. Message arguments always start with `from, to, term`.

use flotilla_raft::*;

use super::Net;

pub fn ent(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: vec![],
    }
}

/// A store bootstrapped with `voters` holding a log with the given terms (index 1..).
pub fn store_with(voters: &[NodeId], terms: &[u64], hs_term: u64, commit: u64) -> MemStorage {
    let mut s = MemStorage::new_with_conf_state(ConfState::with_voters(voters.iter().copied()));
    let es: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, t)| ent(i as u64 + 1, *t))
        .collect();
    s.append(&es).unwrap();
    s.set_hard_state(HardState {
        term: hs_term,
        vote: NO_NODE,
        commit,
    })
    .unwrap();
    s
}

pub fn no_prevote(c: &mut Config) {
    c.pre_vote = false;
}

pub fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// RequestVote from a candidate whose log ends at (`last_index`, `last_term`) (§5.2, §5.4.1).
pub fn vote_request(
    from: NodeId,
    to: NodeId,
    term: u64,
    last_index: u64,
    last_term: u64,
) -> Message {
    let body = MessageBody::Vote {
        last_index,
        last_term,
        transfer: false,
    };
    msg(from, to, term, body)
}

/// RequestVote of a leadership transfer's election, which leader stickiness lets through
/// (thesis §3.10, §4.2.3).
pub fn transfer_vote_request(
    from: NodeId,
    to: NodeId,
    term: u64,
    last_index: u64,
    last_term: u64,
) -> Message {
    let body = MessageBody::Vote {
        last_index,
        last_term,
        transfer: true,
    };
    msg(from, to, term, body)
}

/// A pre-vote request for `term`, which the sender has not entered (thesis §9.6).
pub fn pre_vote_request(
    from: NodeId,
    to: NodeId,
    term: u64,
    last_index: u64,
    last_term: u64,
) -> Message {
    let body = MessageBody::PreVote {
        last_index,
        last_term,
    };
    msg(from, to, term, body)
}

/// AppendEntries whose entries follow `prev` = (`prev_index`, `prev_term`) (§5.3).
pub fn append(
    from: NodeId,
    to: NodeId,
    term: u64,
    (prev_index, prev_term): (u64, u64),
    entries: Vec<Entry>,
    commit: u64,
) -> Message {
    let body = MessageBody::Append {
        prev_index,
        prev_term,
        entries,
        commit,
    };
    msg(from, to, term, body)
}

/// AppendEntries with nothing in it, from the start of the log: a leader of `term` announcing
/// itself.
pub fn empty_append(from: NodeId, to: NodeId, term: u64) -> Message {
    append(from, to, term, (0, 0), vec![], 0)
}

/// A follower's success answer to AppendEntries: its log matches the leader's up to `index`.
pub fn append_ack(from: NodeId, to: NodeId, term: u64, index: u64) -> Message {
    let body = MessageBody::AppendResponse {
        reject: false,
        index,
        hint_index: 0,
        hint_term: 0,
    };
    msg(from, to, term, body)
}

/// A follower's refusal of the AppendEntries whose `prev_index` was `index`, without a
/// backtracking hint.
pub fn append_reject(from: NodeId, to: NodeId, term: u64, index: u64) -> Message {
    let body = MessageBody::AppendResponse {
        reject: true,
        index,
        hint_index: 0,
        hint_term: 0,
    };
    msg(from, to, term, body)
}

pub fn heartbeat(from: NodeId, to: NodeId, term: u64, commit: u64) -> Message {
    msg(from, to, term, MessageBody::Heartbeat { commit, ctx: None })
}

/// An empty snapshot of the log up to (`index`, `term`), taken with `voters` (§7).
pub fn snapshot_at(index: u64, term: u64, voters: &[NodeId]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state: ConfState::with_voters(voters.iter().copied()),
        },
        data: vec![],
    }
}

/// InstallSnapshot (§7).
pub fn install_snapshot(from: NodeId, to: NodeId, term: u64, snapshot: Snapshot) -> Message {
    msg(from, to, term, MessageBody::InstallSnapshot { snapshot })
}

/// Whether `out` grants a vote.
pub fn grants_vote(out: &[Message]) -> bool {
    out.iter()
        .any(|m| m.body == MessageBody::VoteResponse { reject: false })
}

/// Whether `out` refuses a vote.
pub fn refuses_vote(out: &[Message]) -> bool {
    out.iter()
        .any(|m| m.body == MessageBody::VoteResponse { reject: true })
}

pub fn cc(kind: ConfChangeKind, node_id: NodeId) -> ConfChange {
    ConfChange {
        kind,
        node_id,
        context: vec![],
    }
}

/// A 3-voter cluster led by 1 with one entry, that has added 4 (an empty node) as a learner.
pub fn grown_cluster() -> Net {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, b"x");
    net.add_node(Config::new(4), MemStorage::new());
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 4))
        .unwrap();
    net.drain();
    net
}
