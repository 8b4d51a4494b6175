//! The core against the Raft paper: leader election (§5.2), log replication (§5.3), safety
//! (§5.4), snapshots (§7) and linearizable reads (§8, thesis §6.4). Each test cites the rule
//! it checks; a test that guards one of the pitfalls listed in docs/ARCHITECTURE.md ("Raft
//! pitfalls the tests guard against") names it in its doc comment.
//!
//! Runs on the tiny deterministic network in `support/` (FIFO delivery until quiet, cut
//! links for partitions), not on the simulator. The thesis's extensions are in
//! `raft_thesis.rs`; pitfalls that belong to no section are in `raft_pitfalls.rs`.

mod support;

use flotilla_raft::*;
use support::Net;
use support::paper::*;

// ---------------------------------------------------------------- §5.2 leader election

#[test]
fn follower_times_out_and_starts_election() {
    // Reference: §5.2 — a follower that hears nothing becomes candidate, increments its term,
    // votes for itself and asks every other voter.
    let mut net = Net::with(&[1, 2, 3], no_prevote);
    net.isolate(1);
    for _ in 0..20 {
        net.node(1).tick();
    }
    let out = net.outbox(1);
    let st = net.status(1);
    assert_eq!(st.role, Role::Candidate);
    assert_eq!(st.term, 1);
    assert_eq!(st.vote, 1);
    let mut to: Vec<NodeId> = out
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Vote { .. }))
        .map(|m| m.to)
        .collect();
    to.sort();
    assert_eq!(to, vec![2, 3]);
}

#[test]
fn election_timeouts_are_randomized_and_seeded() {
    // Reference: §5.2 — randomized timeouts in [election_tick, 2*election_tick), drawn from
    // the seed so a run replays exactly.
    let ticks_until_campaign = |seed: u64| {
        let mut c = Config::new(1);
        c.seed = seed;
        c.pre_vote = false;
        let mut n = RawNode::new(
            &c,
            MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3])),
        )
        .unwrap();
        (1..=40).find(|_| {
            n.tick();
            n.status().role == Role::Candidate
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..30 {
        let t = ticks_until_campaign(seed).expect("campaigns");
        assert!((10..20).contains(&t), "timeout {t}");
        assert_eq!(
            ticks_until_campaign(seed),
            Some(t),
            "same seed, same timeout"
        );
        seen.insert(t);
    }
    assert!(seen.len() > 3, "timeouts should spread: {seen:?}");
}

#[test]
fn candidate_with_majority_becomes_leader() {
    // Reference: §5.2 — a candidate wins with votes from a majority (3 of 5 here).
    let mut net = Net::with(&[1, 2, 3, 4, 5], no_prevote);
    net.isolate(4);
    net.isolate(5);
    net.elect(1);
    assert_eq!(net.status(2).leader, 1);
    assert_eq!(net.status(1).term, 1);
}

#[test]
fn candidate_without_majority_does_not_win() {
    // Reference: §5.2 — without a majority the candidate stays candidate.
    let mut net = Net::with(&[1, 2, 3, 4, 5], no_prevote);
    for id in [3, 4, 5] {
        net.isolate(id);
    }
    net.node(1).campaign().unwrap();
    net.drain();
    assert_eq!(net.status(1).role, Role::Candidate);
}

#[test]
fn each_server_votes_once_per_term() {
    // Reference: §5.2 — at most one vote per term, first come first served.
    let mut net = Net::with(&[1, 2, 3], no_prevote);
    let vote = |from| vote_request(from, 2, 1, 0, 0);
    net.step(vote(1));
    net.step(vote(3));
    let out = net.outbox(2);
    let grants: Vec<(NodeId, bool)> = out
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { reject } => Some((m.to, !reject)),
            _ => None,
        })
        .collect();
    assert_eq!(grants, vec![(1, true), (3, false)]);
    assert_eq!(net.status(2).vote, 1);
}

#[test]
fn candidate_steps_down_on_append_from_leader_of_same_term() {
    // Reference: §5.2 — a candidate that hears from a legitimate leader of its term returns
    // to follower.
    let mut net = Net::with(&[1, 2, 3], no_prevote);
    net.isolate(2);
    net.node(2).campaign().unwrap(); // term 1, candidate
    net.drain();
    net.step(empty_append(1, 2, 1));
    let st = net.status(2);
    assert_eq!((st.role, st.leader, st.term), (Role::Follower, 1, 1));
}

#[test]
fn at_most_one_leader_per_term_under_partitions() {
    // Reference: §5.2 Election Safety — checked across rounds of partitions.
    let mut net = Net::new(&[1, 2, 3, 4, 5]);
    let mut leaders: std::collections::BTreeMap<u64, NodeId> = Default::default();
    for round in 0..12u64 {
        net.heal();
        net.isolate(round % 5 + 1);
        if round % 3 == 0 {
            net.isolate((round + 2) % 5 + 1);
        }
        for _ in 0..40 {
            net.tick_all(1);
            for (id, n) in &net.nodes {
                let st = n.status();
                if st.role == Role::Leader {
                    let prev = leaders.insert(st.term, *id);
                    assert!(
                        prev.is_none() || prev == Some(*id),
                        "two leaders in term {}",
                        st.term
                    );
                }
            }
        }
    }
    assert!(
        leaders.len() >= 2,
        "leadership should have moved: {leaders:?}"
    );
}

// ---------------------------------------------------------------- §5.3 log replication

#[test]
fn leader_replicates_and_every_node_applies_in_order() {
    // Reference: §5.3 — the leader appends, replicates, commits once stored on a majority,
    // and every server applies the same entries in the same order.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..10u8 {
        net.propose(1, &[i]);
    }
    let want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    for id in 1..=3 {
        assert_eq!(net.applied_data(id), want, "node {id}");
    }
    assert_eq!(net.status(1).commit, 11);
}

#[test]
fn lagging_follower_catches_up_after_partition() {
    // Reference: §5.3 — the leader backs up next_index until the logs match, then repairs.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for i in 0..5u8 {
        net.propose(1, &[i]);
    }
    assert!(net.applied_data(3).is_empty());
    net.heal();
    net.tick_all(3);
    assert_eq!(net.applied_data(3).len(), 5);
    assert_eq!(net.log_terms(3), net.log_terms(1));
}

#[test]
fn many_proposals_travel_in_few_appends() {
    // Reference: §5.3 (batching) — proposals made between two Readies go out in one Append
    // per follower.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..100u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    let out = net.outbox(1);
    let appends: Vec<usize> = out
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Append { entries, .. } => Some(entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(appends, vec![100, 100]);
}

#[test]
fn flow_control_bounds_inflight_appends() {
    // Reference: §5.3 (pipelining with flow control) — at most max_inflight_msgs un-acked
    // Appends per follower, each at most max_size_per_msg.
    let mut net = Net::with(&[1, 2], |c| {
        c.max_inflight_msgs = 3;
        c.max_size_per_msg = 100;
    });
    net.elect(1);
    for _ in 0..50 {
        net.node(1).propose(vec![0; 40]).unwrap();
    }
    let out = net.outbox(1);
    let appends: Vec<usize> = out
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Append { entries, .. } => Some(entries.len()),
            _ => None,
        })
        .collect();
    // 64 bytes per entry: one entry per message (always at least one), three in flight.
    assert_eq!(appends, vec![1, 1, 1]);
    for m in out {
        net.step(m);
    }
    net.drain();
    assert_eq!(net.applied_data(2).len(), 50);
}

#[test]
fn figure7_followers_converge_to_the_leader() {
    // Reference: §5.3, Figure 7 — followers (a)–(f) missing, extra and conflicting entries all
    // end up with the leader's log.
    let leader = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [&[u64]; 6] = [
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],
        &[1, 1, 1, 4],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
        &[1, 1, 1, 4, 4, 4, 4],
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    ];
    let ids: Vec<NodeId> = (1..=7).collect();
    let mut net = Net::with(&[], |_| {});
    let mut c = Config::new(1);
    c.pre_vote = false;
    net.add_node(c, store_with(&ids, &leader, 7, 0));
    for (i, f) in followers.iter().enumerate() {
        let mut c = Config::new(i as u64 + 2);
        c.pre_vote = false;
        net.add_node(c, store_with(&ids, f, 7, 0));
    }
    net.elect(1);
    assert_eq!(net.status(1).term, 8);
    net.tick_all(4);
    let want = net.log_terms(1);
    assert_eq!(want.len(), 11);
    for id in 2..=7 {
        assert_eq!(net.log_terms(id), want, "follower {id}");
    }
}

// ---------------------------------------------------------------- §5.4 safety

#[test]
fn vote_refused_to_candidate_with_stale_log() {
    // Reference: §5.4.1 — a voter refuses a candidate whose log is less up to date.
    let mut net = Net::with(&[], |_| {});
    for (id, terms) in [(1u64, &[1u64, 1][..]), (2, &[1, 2][..])] {
        let mut c = Config::new(id);
        c.pre_vote = false;
        net.add_node(c, store_with(&[1, 2, 3], terms, 2, 0));
    }
    net.step(vote_request(1, 2, 3, 2, 1));
    let out = net.outbox(2);
    assert!(refuses_vote(&out));
    assert_eq!(net.status(2).vote, NO_NODE);
}

#[test]
fn figure8_entries_of_older_terms_are_not_committed_by_counting() {
    // Reference: §5.4.2, Figure 8 — S1 (term 4) replicates its term-2 entry to a majority; it
    // must not count that as committed until an entry of term 4 is on a majority.
    let ids = [1, 2, 3, 4, 5];
    let mut net = Net::with(&[], |_| {});
    let logs: [(NodeId, &[u64]); 5] = [
        (1, &[1, 2]),
        (2, &[1, 2]),
        (3, &[1]),
        (4, &[1]),
        (5, &[1, 3]),
    ];
    for (id, terms) in logs {
        let mut c = Config::new(id);
        c.pre_vote = false;
        net.add_node(c, store_with(&ids, terms, 3, 1));
    }
    net.isolate(4);
    net.isolate(5);
    net.node(1).campaign().unwrap(); // term 4; votes from S2, S3
    net.drain_where(|m| !matches!(m.body, MessageBody::Append { .. }));
    assert_eq!(net.status(1).role, Role::Leader);
    assert_eq!(net.status(1).term, 4);
    net.isolate(1);
    net.outbox(1);
    // S2 and S3 store index 2 (term 2): a majority with S1, but not of this term.
    let before = net.status(1).commit;
    net.step(append_ack(2, 1, 4, 2));
    net.step(append_ack(3, 1, 4, 2));
    net.outbox(1);
    assert_eq!(
        net.status(1).commit,
        before,
        "term-2 entry committed by counting"
    );
    assert!(before < 2);
    // Once the term-4 no-op (index 3) is on a majority, both commit.
    net.step(append_ack(2, 1, 4, 3));
    net.step(append_ack(3, 1, 4, 3));
    net.outbox(1);
    assert_eq!(net.status(1).commit, 3);
}

#[test]
fn leader_completeness_new_leader_has_committed_entries() {
    // Reference: §5.4 Leader Completeness — after the leader fails, whoever wins has every
    // committed entry.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..5u8 {
        net.propose(1, &[i]);
    }
    net.isolate(1);
    net.tick_all(40);
    let l = net.leader().filter(|l| *l != 1).expect("new leader");
    let data = net.applied_data(l);
    assert_eq!(data.len(), 5);
    net.propose(l, b"after");
    assert_eq!(net.applied_data(l).last().unwrap(), b"after");
}

// ---------------------------------------------------------------- snapshots (§7)

fn compact(net: &mut Net, id: NodeId) -> u64 {
    let applied = net.status(id).applied;
    let cs = net.status(id).conf_state;
    net.node(id)
        .store_mut()
        .create_snapshot(applied, cs, b"image".to_vec())
        .unwrap();
    applied
}

#[test]
fn lagging_follower_receives_snapshot() {
    // Reference: §7 — a follower behind the leader's first index gets InstallSnapshot.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for i in 0..10u8 {
        net.propose(1, &[i]);
    }
    let snap_index = compact(&mut net, 1);
    net.heal();
    net.propose(1, b"tail");
    net.tick_all(3);
    let s3 = net.status(3);
    assert_eq!(s3.first_index, snap_index + 1);
    assert_eq!(s3.commit, net.status(1).commit);
    assert_eq!(net.nodes[&3].store().snapshot().unwrap().data, b"image");
    assert_eq!(net.applied_data(3), vec![b"tail".to_vec()]);
    assert_eq!(net.status(1).progress[&3].state, ProgressState::Replicate);
}

/// Pitfall 17 (joining without the configuration).
#[test]
fn learner_joins_from_a_snapshot_that_carries_the_configuration() {
    // Reference: §7 / pitfall 17 — the snapshot carries the configuration at its index.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..5u8 {
        net.propose(1, &[i]);
    }
    compact(&mut net, 1);
    net.add_node(Config::new(4), MemStorage::new());
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 4))
        .unwrap();
    net.drain();
    net.tick_all(3);
    let st = net.status(4);
    assert_eq!(st.conf_state.voters, [1, 2, 3].into());
    assert_eq!(st.conf_state.learners, [4].into());
    assert_eq!(st.commit, net.status(1).commit);
}

#[test]
fn restart_restores_snapshot_log_and_configuration() {
    // Reference: §7 — on restart a node starts from its snapshot plus the log after it.
    let mut net = grown_cluster();
    for i in 0..5u8 {
        net.propose(1, &[i]);
    }
    let idx = compact(&mut net, 2);
    net.propose(1, b"late");
    net.restart(2);
    let st = net.status(2);
    assert_eq!(st.first_index, idx + 1);
    assert_eq!(st.conf_state.learners, [4].into());
    assert!(st.commit >= idx);
    assert_eq!(st.term, net.status(1).term);
    net.tick_all(3);
    assert_eq!(net.status(2).commit, net.status(1).commit);
}

/// Pitfall 21 (an old snapshot rolls back commits).
#[test]
fn snapshot_older_than_the_commit_index_is_ignored() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..5u8 {
        net.propose(1, &[i]);
    }
    let commit = net.status(2).commit;
    let snap = snapshot_at(3, 1, &[1, 2, 3]);
    net.step(install_snapshot(1, 2, 1, snap));
    let rd = net.node(2).ready();
    assert!(rd.snapshot.is_none());
    assert!(rd.messages.iter().any(|m| matches!(m.body, MessageBody::AppendResponse { reject: false, index, .. } if index == commit)));
    net.node(2).advance();
}

/// Pitfall 21 (a matching snapshot wipes a good suffix).
#[test]
fn snapshot_matching_the_log_keeps_the_suffix() {
    let mut c = Config::new(2);
    c.pre_vote = false;
    let mut n = RawNode::new(&c, store_with(&[1, 2], &[1, 1, 1, 1, 1, 1], 1, 2)).unwrap();
    let snap = snapshot_at(4, 1, &[1, 2]);
    n.step(install_snapshot(1, 2, 1, snap)).unwrap();
    let rd = n.ready();
    assert!(rd.snapshot.is_none(), "matching history: no restore");
    assert_eq!(n.status().commit, 4);
    assert_eq!(n.status().last_index, 6);
}

// ---------------------------------------------------------------- ReadIndex (§8)

/// Pitfall 18 (a stale leader serving reads).
#[test]
fn read_index_answered_once_a_heartbeat_round_confirms_leadership() {
    // Reference: §8 / thesis §6.4 — record the commit index, confirm leadership with a
    // heartbeat round to a majority, then answer.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, b"a");
    net.node(1).read_index(b"r1".to_vec()).unwrap();
    let out = net.outbox(1);
    assert!(
        out.iter()
            .any(|m| matches!(&m.body, MessageBody::Heartbeat { ctx: Some(c), .. } if c == b"r1"))
    );
    assert!(net.reads[&1].is_empty(), "not before the heartbeat round");
    for m in out {
        net.step(m);
    }
    net.drain();
    assert_eq!(
        net.reads[&1],
        vec![ReadState {
            index: net.status(1).commit,
            ctx: b"r1".to_vec()
        }]
    );
}

/// Pitfall 18 (a stale leader serving reads): a follower asks the leader, never answers itself.
#[test]
fn read_index_forwarded_from_a_follower() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, b"a");
    net.node(3).read_index(b"f".to_vec()).unwrap();
    net.drain();
    assert_eq!(
        net.reads[&3],
        vec![ReadState {
            index: 2,
            ctx: b"f".to_vec()
        }]
    );
}

/// Pitfall 18 (a new leader's commit index may lag what earlier leaders committed).
#[test]
fn read_waits_for_an_entry_of_the_leaders_term() {
    let mut net = Net::new(&[1, 2, 3]);
    net.node(1).campaign().unwrap();
    // Become leader without letting the no-op commit.
    net.drain_where(|m| !matches!(m.body, MessageBody::Append { .. }));
    assert_eq!(net.status(1).role, Role::Leader);
    net.node(1).read_index(b"early".to_vec()).unwrap();
    net.queue.clear();
    net.outbox(1);
    assert!(net.reads[&1].is_empty());
    net.tick_all(3);
    assert_eq!(
        net.reads[&1],
        vec![ReadState {
            index: 1,
            ctx: b"early".to_vec()
        }]
    );
}

/// Pitfall 18, the degenerate case: a single voter is its own majority.
#[test]
fn single_voter_answers_reads_at_once() {
    let mut net = Net::new(&[1]);
    net.elect(1);
    net.drain();
    net.node(1).read_index(b"s".to_vec()).unwrap();
    let rd = net.node(1).ready();
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.read_states,
        vec![ReadState {
            index: 1,
            ctx: b"s".to_vec()
        }]
    );
    net.node(1).advance();
}

/// Pitfall 18 (a stale leader serving reads).
#[test]
fn isolated_leader_never_answers_reads() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.node(1).read_index(b"x".to_vec()).unwrap();
    net.tick(1, 5);
    assert!(net.reads[&1].is_empty());
    assert_eq!(
        net.node(2).read_index(b"y".to_vec()).map(|_| ()),
        Ok(()),
        "a follower with a known leader forwards"
    );
}
