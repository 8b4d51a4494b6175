//! Pitfalls of implementing Raft (docs/ARCHITECTURE.md, "Raft pitfalls the tests guard
//! against") that belong to no single section of the paper, and the core's handling of
//! malformed input. Each test's doc comment names the pitfall it guards.
//!
//! Runs on the tiny deterministic network in `support/`, not on the simulator.

mod support;

use flotilla_raft::*;
use support::Net;
use support::paper::*;

/// Pitfall 1 (a leader counts its own unsynced entries).
#[test]
fn leader_counts_itself_only_after_persisting() {
    let mut net = Net::new(&[1]);
    net.elect(1);
    net.drain();
    let (_, idx) = net.node(1).propose(b"p".to_vec()).unwrap();
    let rd = net.node(1).ready();
    assert_eq!(rd.entries.last().map(|e| e.index), Some(idx));
    assert!(
        net.status(1).commit < idx,
        "not committed before the entry is durable"
    );
    net.node(1).store_mut().append(&rd.entries).unwrap();
    net.node(1).advance();
    assert_eq!(net.status(1).commit, idx);
    let rd = net.node(1).ready();
    assert_eq!(rd.committed_entries.last().map(|e| e.index), Some(idx));
    net.node(1).advance();
}

/// Pitfall 2 (a vote or term not persisted before replying).
#[test]
fn vote_leaves_only_with_its_hard_state() {
    let mut net = Net::with(&[1, 2, 3], no_prevote);
    net.step(vote_request(1, 2, 1, 0, 0));
    let rd = net.node(2).ready();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((1, 1)));
    assert!(grants_vote(&rd.messages));
    net.node(2).advance();
}

/// Pitfall 4 (committing an old term's entry by counting replicas): the no-op lets them commit.
#[test]
fn new_leader_appends_a_noop_of_its_term() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let e = net.nodes[&2].store().entries(1, 2, u64::MAX).unwrap();
    assert_eq!(e[0].term, 1);
    assert!(e[0].data.is_empty());
    assert_eq!(net.status(2).commit, 1);
}

/// Pitfall 5 (a stale Append truncates good entries).
#[test]
fn stale_append_does_not_truncate() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..4u8 {
        net.propose(1, &[i]);
    }
    let last = net.status(2).last_index;
    let e = net.nodes[&2].store().entries(1, 3, u64::MAX).unwrap();
    net.step(append(1, 2, 1, (0, 0), e, 0));
    net.drain();
    assert_eq!(net.status(2).last_index, last);
}

/// Pitfall 6 (a follower commits entries it has not matched).
#[test]
fn follower_commit_is_bounded_by_what_the_append_covers() {
    let mut c = Config::new(2);
    c.pre_vote = false;
    // Entries 3..5 are from an old term and may not match the leader.
    let mut n = RawNode::new(&c, store_with(&[1, 2], &[1, 1, 1, 1, 1], 2, 0)).unwrap();
    n.step(append(1, 2, 2, (2, 1), vec![], 5)).unwrap();
    assert_eq!(n.status().commit, 2);
}

/// Pitfall 7 (stale responses lower `match`).
#[test]
fn stale_responses_never_lower_match() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..4u8 {
        net.propose(1, &[i]);
    }
    let before = net.status(1).progress[&2].clone();
    net.step(append_ack(2, 1, 1, 1));
    net.step(append_reject(2, 1, 1, 1));
    net.step(append_reject(2, 1, 0, 0));
    let after = &net.status(1).progress[&2];
    assert_eq!(after.match_index, before.match_index);
    assert_eq!(after.state, ProgressState::Replicate);
}

#[test]
fn fast_backtracking_uses_term_hints() {
    // Reference: §5.3 (the optimisation at the end) — a follower with a long conflicting tail
    // is repaired in a few round trips, not one per entry.
    let ids = [1, 2];
    let mut net = Net::with(&[], |_| {});
    let leader: Vec<u64> = std::iter::repeat_n(1, 5)
        .chain(std::iter::repeat_n(3, 50))
        .collect();
    let follower: Vec<u64> = std::iter::repeat_n(1, 5)
        .chain(std::iter::repeat_n(2, 100))
        .collect();
    let mut c = Config::new(1);
    c.pre_vote = false;
    net.add_node(c, store_with(&ids, &leader, 3, 5));
    let mut c = Config::new(2);
    c.pre_vote = false;
    net.add_node(c, store_with(&ids, &follower, 3, 5));
    net.elect(1);
    let rejects = net
        .delivered
        .iter()
        .filter(|m| matches!(m.body, MessageBody::AppendResponse { reject: true, .. }))
        .count();
    assert!(rejects <= 2, "{rejects} rejections");
    assert_eq!(net.log_terms(2), net.log_terms(1));
}

#[test]
fn step_ignores_garbage_without_panicking() {
    // Malformed or out-of-range input is ignored or rejected, never a panic.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let bodies = vec![
        MessageBody::Append {
            prev_index: u64::MAX,
            prev_term: 7,
            entries: vec![ent(5, 1)],
            commit: u64::MAX,
        },
        MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![ent(9, 1)],
            commit: 3,
        },
        MessageBody::AppendResponse {
            reject: false,
            index: u64::MAX,
            hint_index: u64::MAX,
            hint_term: u64::MAX,
        },
        MessageBody::AppendResponse {
            reject: true,
            index: u64::MAX,
            hint_index: u64::MAX,
            hint_term: 0,
        },
        MessageBody::Heartbeat {
            commit: u64::MAX,
            ctx: None,
        },
        MessageBody::HeartbeatResponse { ctx: Some(vec![1]) },
        MessageBody::ReadIndexResponse {
            ctx: vec![],
            index: u64::MAX,
        },
        MessageBody::InstallSnapshot {
            snapshot: Snapshot::default(),
        },
        MessageBody::TimeoutNow,
        MessageBody::ReadIndex { ctx: vec![] },
        MessageBody::PreVoteResponse { reject: false },
        MessageBody::VoteResponse { reject: false },
        MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: u64::MAX,
                    term: 1,
                    conf_state: ConfState::default(),
                },
                data: vec![],
            },
        },
    ];
    for to in 1..=3 {
        for from in [0, 1, 2, 3, 77] {
            for term in [0, 1, 2] {
                for b in &bodies {
                    let _ = net.node(to).step(msg(from, to, term, b.clone()));
                    net.handle_ready(to);
                }
            }
        }
    }
    net.queue.clear();
    net.tick_all(30);
    // A runaway term from the network saturates instead of overflowing.
    let mut lone = Net::with(&[1, 2], |c| c.pre_vote = false);
    lone.step(heartbeat(2, 1, u64::MAX, 0));
    lone.node(1).campaign().unwrap();
    lone.step(msg(
        2,
        1,
        u64::MAX,
        MessageBody::AppendResponse {
            reject: true,
            index: 0,
            hint_index: u64::MAX,
            hint_term: 0,
        },
    ));
    assert!(lone.status(1).term < u64::MAX, "absurd terms are refused");
    let l = net.leader().expect("cluster still has a leader");
    net.propose(l, b"still works");
    assert_eq!(net.applied_data(l).last().unwrap(), b"still works");
}

#[test]
fn joining_node_learns_bootstrap_configuration_before_any_entry() {
    // A node that joins with an empty configuration refuses entries until the index-0
    // snapshot has taught it the bootstrap voters; bootstrapped members never need it.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    assert!(
        !net.delivered
            .iter()
            .any(|m| matches!(m.body, MessageBody::InstallSnapshot { .. })),
        "no snapshot traffic at bootstrap"
    );
    net.delivered.clear();
    net.add_node(Config::new(4), MemStorage::new());
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 4))
        .unwrap();
    net.drain();
    let first_snapshot = net
        .delivered
        .iter()
        .position(|m| m.to == 4 && matches!(m.body, MessageBody::InstallSnapshot { .. }))
        .expect("index-0 snapshot sent");
    // Until then node 4 refused every Append.
    assert!(
        net.delivered[..first_snapshot]
            .iter()
            .all(|m| m.from != 4
                || matches!(m.body, MessageBody::AppendResponse { reject: true, .. }))
    );
    assert_eq!(
        net.nodes[&4].store().initial_state().unwrap().1.voters,
        [1, 2, 3].into()
    );
    // After a restart the joined node still knows the voters.
    net.restart(4);
    assert_eq!(net.status(4).conf_state.voters, [1, 2, 3].into());
}

#[test]
fn without_check_quorum_a_node_whose_term_ran_ahead_rejoins() {
    // Regression (simulator seed 18): stickiness needs check-quorum. With both pre-vote and
    // check-quorum off, a node that campaigned alone must still be able to rejoin.
    let mut net = Net::with(&[1, 2, 3], |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    net.elect(1);
    net.isolate(3);
    net.tick(3, 100);
    assert!(net.status(3).term > net.status(1).term);
    net.heal();
    net.tick_all(60);
    let l = net.leader().expect("a leader");
    net.propose(l, b"after");
    assert_eq!(net.applied_data(3).last().unwrap(), b"after");
}
