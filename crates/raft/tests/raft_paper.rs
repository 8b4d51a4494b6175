//! The core against the Raft paper (§5), the thesis (pre-vote, check-quorum, stickiness,
//! membership, transfer) and the pitfalls listed in docs/ARCHITECTURE.md. Each test cites what it checks.
//!
//! Runs on the tiny deterministic network in `support/` (FIFO delivery until quiet, cut
//! links for partitions), not on the simulator.

mod support;

use flotilla_raft::*;
use support::Net;

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: vec![],
    }
}

/// A store bootstrapped with `voters` holding a log with the given terms (index 1..).
fn store_with(voters: &[NodeId], terms: &[u64], hs_term: u64, commit: u64) -> MemStorage {
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

fn no_prevote(c: &mut Config) {
    c.pre_vote = false;
}

fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn cc(kind: ConfChangeKind, node_id: NodeId) -> ConfChange {
    ConfChange {
        kind,
        node_id,
        context: vec![],
    }
}

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
    let vote = |from| {
        msg(
            from,
            2,
            1,
            MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        )
    };
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
    net.step(msg(
        1,
        2,
        1,
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
        },
    ));
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
    net.step(msg(
        1,
        2,
        3,
        MessageBody::Vote {
            last_index: 2,
            last_term: 1,
            transfer: false,
        },
    ));
    let out = net.outbox(2);
    assert!(
        out.iter()
            .any(|m| m.body == MessageBody::VoteResponse { reject: true })
    );
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
    let ack = |from, index| {
        msg(
            from,
            1,
            4,
            MessageBody::AppendResponse {
                reject: false,
                index,
                hint_index: 0,
                hint_term: 0,
            },
        )
    };
    // S2 and S3 store index 2 (term 2): a majority with S1, but not of this term.
    let before = net.status(1).commit;
    net.step(ack(2, 2));
    net.step(ack(3, 2));
    net.outbox(1);
    assert_eq!(
        net.status(1).commit,
        before,
        "term-2 entry committed by counting"
    );
    assert!(before < 2);
    // Once the term-4 no-op (index 3) is on a majority, both commit.
    net.step(ack(2, 3));
    net.step(ack(3, 3));
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

// ---------------------------------------------------------------- pre-vote, check-quorum

#[test]
fn pitfall_10_partitioned_prevote_node_does_not_inflate_its_term() {
    // Reference: thesis §9.6 — a pre-candidate does not increment its term, so a rejoining
    // node does not depose the leader.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let term = net.status(1).term;
    net.isolate(3);
    net.tick_all(100);
    assert_eq!(net.status(3).term, term);
    assert_eq!(net.status(3).role, Role::PreCandidate);
    net.heal();
    net.tick_all(5);
    assert_eq!(net.status(1).role, Role::Leader);
    assert_eq!(net.status(1).term, term);
}

#[test]
fn pitfall_10_answering_a_prevote_changes_no_state() {
    // Reference: thesis §9.6 — answering a pre-vote does not change term or vote.
    let mut net = Net::new(&[1, 2, 3]);
    let before = net.status(2);
    net.step(msg(
        3,
        2,
        5,
        MessageBody::PreVote {
            last_index: 0,
            last_term: 0,
        },
    ));
    let out = net.outbox(2);
    assert!(
        out.iter()
            .any(|m| m.body == MessageBody::PreVoteResponse { reject: false } && m.term == 5)
    );
    let after = net.status(2);
    assert_eq!((after.term, after.vote), (before.term, before.vote));
}

#[test]
fn pitfall_12_check_quorum_isolated_leader_steps_down() {
    // Reference: thesis §6.2 — a leader that cannot reach a majority steps down.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.tick(1, 25);
    assert_eq!(net.status(1).role, Role::Follower);
}

#[test]
fn pitfall_12_check_quorum_connected_leader_stays() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.tick_all(100);
    assert_eq!(net.status(1).role, Role::Leader);
    assert_eq!(net.status(1).term, 1);
}

#[test]
fn pitfall_09_leader_stickiness_ignores_disruptive_vote() {
    // Reference: thesis §4.2.3 — a vote request within the minimum election timeout of hearing
    // from the leader is ignored (no term change), unless it is a transfer election.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.step(msg(
        3,
        2,
        9,
        MessageBody::Vote {
            last_index: 99,
            last_term: 9,
            transfer: false,
        },
    ));
    assert!(net.outbox(2).is_empty());
    assert_eq!(net.status(2).term, 1);
    assert_eq!(net.status(2).leader, 1);
    net.step(msg(
        3,
        2,
        9,
        MessageBody::Vote {
            last_index: 99,
            last_term: 9,
            transfer: true,
        },
    ));
    let out = net.outbox(2);
    assert!(
        out.iter()
            .any(|m| m.body == MessageBody::VoteResponse { reject: false })
    );
    assert_eq!(net.status(2).term, 9);
}

#[test]
fn pitfall_09_step_down_on_higher_term_append() {
    // Reference: §5.1 — any higher term makes a server follower of that term.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.step(msg(
        2,
        1,
        5,
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
        },
    ));
    let st = net.status(1);
    assert_eq!((st.role, st.term, st.leader), (Role::Follower, 5, 2));
}

fn ticks_to_campaign(setup: impl FnOnce(&mut RawNode<MemStorage>)) -> Option<u32> {
    let mut c = Config::new(2);
    c.pre_vote = false;
    let mut s = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3]));
    s.set_hard_state(HardState {
        term: 1,
        vote: NO_NODE,
        commit: 0,
    })
    .unwrap();
    let mut n = RawNode::new(&c, s).unwrap();
    for _ in 0..5 {
        n.tick();
    }
    setup(&mut n);
    (6..=60).find(|_| {
        n.tick();
        n.status().role == Role::Candidate
    })
}

#[test]
fn pitfall_11_timer_reset_on_granted_vote_not_on_rejected() {
    // Reference: Figure 2 / pitfall 11 — granting a vote resets the election timer; rejecting
    // one does not.
    let baseline = ticks_to_campaign(|_| {}).unwrap();
    let rejected = ticks_to_campaign(|n| {
        // Same term, stale log: refused.
        n.step(msg(
            3,
            2,
            1,
            MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        ))
        .unwrap();
        n.step(msg(
            1,
            2,
            1,
            MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        ))
        .unwrap();
    });
    let granted_later = ticks_to_campaign(|n| {
        n.step(msg(
            3,
            2,
            1,
            MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        ))
        .unwrap();
    });
    // Grant at tick 5, three ticks, then a refusal (the vote is already cast) at tick 8:
    // the closure's own three ticks are not counted by `ticks_to_campaign`.
    let pure_reject = ticks_to_campaign(|n| {
        n.step(msg(
            3,
            2,
            1,
            MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        ))
        .unwrap();
        for _ in 0..3 {
            n.tick();
        }
        n.step(msg(
            1,
            2,
            1,
            MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        ))
        .unwrap();
    });
    assert_eq!(
        granted_later,
        Some(baseline + 5),
        "granted vote resets the timer"
    );
    assert_eq!(rejected, granted_later);
    assert_eq!(
        pure_reject.map(|t| t + 3),
        granted_later,
        "a rejected vote must not reset the timer"
    );
}

// ---------------------------------------------------------------- membership (thesis ch. 4)

fn grown_cluster() -> Net {
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

#[test]
fn pitfall_16_learner_receives_log_and_learns_configuration() {
    // Reference: thesis §4.2.1 — a new server joins as a non-voting learner and catches up.
    let net = grown_cluster();
    assert_eq!(net.applied_data(4), vec![b"x".to_vec()]);
    let cs = net.status(4).conf_state;
    assert_eq!(cs.voters, [1, 2, 3].into());
    assert_eq!(cs.learners, [4].into());
    assert!(net.status(1).progress[&4].is_learner);
}

#[test]
fn pitfall_16_learner_never_campaigns_or_counts() {
    let mut net = grown_cluster();
    net.isolate(4);
    net.tick(4, 100);
    assert_eq!(net.status(4).role, Role::Follower);
    // With two voters down, the learner's ack does not make a majority.
    net.heal();
    net.isolate(2);
    net.isolate(3);
    let (_, idx) = net.propose(1, b"y");
    assert!(net.status(1).commit < idx);
}

#[test]
fn promote_caught_up_learner_to_voter() {
    // Reference: thesis §4.2.1 — promotion is itself a configuration change.
    let mut net = grown_cluster();
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::PromoteLearner, 4))
        .unwrap();
    net.drain();
    for id in 1..=4 {
        assert_eq!(
            net.status(id).conf_state.voters,
            [1, 2, 3, 4].into(),
            "node {id}"
        );
    }
    // The new voter can lead.
    net.node(1).transfer_leader(4).unwrap();
    net.drain();
    assert_eq!(net.status(4).role, Role::Leader);
    net.propose(4, b"z");
    assert_eq!(net.applied_data(2).last().unwrap(), b"z");
}

#[test]
fn promote_refused_while_learner_lags() {
    let mut net = Net::with(&[1, 2, 3], |c| c.promotable_lag = 5);
    net.elect(1);
    net.add_node(Config::new(4), MemStorage::new());
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 4))
        .unwrap();
    net.drain();
    net.isolate(4);
    for i in 0..10u8 {
        net.propose(1, &[i]);
    }
    let err = net
        .node(1)
        .propose_conf_change(cc(ConfChangeKind::PromoteLearner, 4))
        .unwrap_err();
    assert!(
        matches!(err, ProposeError::LearnerNotCaughtUp { id: 4, .. }),
        "{err:?}"
    );
}

/// Under sustained load a learner that keeps pace is never within a fixed number of entries
/// of the leader when asked, yet it is caught up: it has what the leader had an election
/// timeout ago. One that stopped receiving is not.
#[test]
fn promote_gate_follows_the_leaders_progress_under_load() {
    let mut net = Net::with(&[1, 2, 3], |c| c.promotable_lag = 5);
    net.elect(1);
    net.add_node(Config::new(4), MemStorage::new());
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 4))
        .unwrap();
    net.drain();
    let burst = |net: &mut Net, round: u8| {
        for i in 0..20u8 {
            net.node(1).propose(vec![round, i]).expect("propose");
        }
    };
    // Two election timeouts of steady load, every burst delivered before the next.
    for round in 0..20u8 {
        net.tick(1, 1);
        burst(&mut net, round);
    }
    let st = net.status(1);
    let lag = st.last_index - st.progress[&4].match_index;
    assert!(
        lag > 5,
        "the learner is behind by more than the fixed bound: {lag}"
    );
    assert!(st.progress[&4].caught_up, "{:?}", st.progress[&4]);
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::PromoteLearner, 4))
        .expect("a learner that keeps pace is promotable");
    net.drain();
    assert_eq!(net.status(1).conf_state.voters, [1, 2, 3, 4].into());

    // A learner cut off while the leader keeps appending falls behind the mark.
    net.add_node(Config::new(5), MemStorage::new());
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 5))
        .unwrap();
    net.drain();
    net.isolate(5);
    for round in 0..30u8 {
        net.tick(1, 1);
        burst(&mut net, round);
        net.drain();
    }
    assert!(!net.status(1).progress[&5].caught_up);
    let err = net
        .node(1)
        .propose_conf_change(cc(ConfChangeKind::PromoteLearner, 5))
        .unwrap_err();
    assert!(
        matches!(err, ProposeError::LearnerNotCaughtUp { id: 5, .. }),
        "{err:?}"
    );
}

#[test]
fn invalid_conf_changes_are_refused() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let n = net.node(1);
    for bad in [
        cc(ConfChangeKind::AddLearner, 2),
        cc(ConfChangeKind::PromoteLearner, 2),
        cc(ConfChangeKind::RemoveNode, 9),
        cc(ConfChangeKind::AddLearner, NO_NODE),
    ] {
        assert!(matches!(
            n.propose_conf_change(bad),
            Err(ProposeError::InvalidConfChange(_))
        ));
    }
    let mut single = Net::new(&[1]);
    single.elect(1);
    single.drain();
    assert!(matches!(
        single
            .node(1)
            .propose_conf_change(cc(ConfChangeKind::RemoveNode, 1)),
        Err(ProposeError::InvalidConfChange(_))
    ));
    assert!(matches!(
        net.node(2)
            .propose_conf_change(cc(ConfChangeKind::AddLearner, 7)),
        Err(ProposeError::NotLeader { leader: 1 })
    ));
}

#[test]
fn pitfall_14_one_change_at_a_time() {
    // Reference: thesis §4.1 — no new change while an earlier one is uncommitted.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let (_, idx) = net
        .node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 4))
        .unwrap();
    assert_eq!(
        net.node(1)
            .propose_conf_change(cc(ConfChangeKind::AddLearner, 5)),
        Err(ProposeError::ConfChangePending { index: idx })
    );
    net.drain();
    assert!(
        net.node(1)
            .propose_conf_change(cc(ConfChangeKind::AddLearner, 5))
            .is_ok()
    );
}

#[test]
fn pitfall_14_no_change_before_own_term_entry_commits() {
    // Reference: Ongaro, raft-dev 2015 — a leader must commit an entry of its term first.
    let mut net = Net::new(&[1, 2, 3]);
    net.node(1).campaign().unwrap();
    // Deliver the votes but not the no-op.
    net.drain_where(|m| !matches!(m.body, MessageBody::Append { .. }));
    assert_eq!(net.status(1).role, Role::Leader);
    assert_eq!(
        net.node(1)
            .propose_conf_change(cc(ConfChangeKind::AddLearner, 4)),
        Err(ProposeError::LeaderNotReady)
    );
    // Ordinary proposals are fine meanwhile.
    assert!(net.node(1).propose(b"ok".to_vec()).is_ok());
}

#[test]
fn pitfall_13_config_takes_effect_when_appended_and_reverts_on_truncation() {
    // Reference: thesis §4.1 — servers use the latest configuration in their log, committed
    // or not; a truncated change is undone.
    let mut net = Net::with(&[1, 2, 3, 4, 5], no_prevote);
    net.elect(1);
    // Only node 2 will see the change, and the leader will not hear back.
    for to in [3, 4, 5] {
        net.cut.insert((1, to));
    }
    net.cut.insert((2, 1));
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 9))
        .unwrap();
    assert!(
        net.status(1).conf_state.learners.contains(&9),
        "leader: effective on append"
    );
    net.drain();
    assert!(
        net.status(2).conf_state.learners.contains(&9),
        "follower: effective on append"
    );
    assert!(net.status(2).commit < net.status(2).pending_conf_index);
    // A new leader without that entry overwrites it.
    net.heal();
    net.isolate(1);
    net.isolate(2);
    net.tick_all(40);
    let l = net
        .leader()
        .filter(|l| *l >= 3)
        .expect("a leader among 3, 4, 5");
    net.propose(l, b"new");
    net.heal();
    net.isolate(1);
    // Node 2 campaigned while cut off (no pre-vote here); give the cluster time to settle.
    net.tick_all(60);
    assert!(
        !net.status(2).conf_state.learners.contains(&9),
        "reverted after truncation"
    );
    assert_eq!(net.status(2).conf_state.voters, [1, 2, 3, 4, 5].into());
}

#[test]
fn pitfall_15_removed_leader_steps_down_after_commit() {
    // Reference: thesis §4.2.2 — the removed leader manages the cluster until the removal
    // commits (without counting itself), then steps down.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::RemoveNode, 1))
        .unwrap();
    net.drain();
    assert_ne!(net.status(1).role, Role::Leader);
    assert_eq!(net.status(2).conf_state.voters, [2, 3].into());
    net.tick_all(40);
    let l = net.leader().expect("a new leader");
    assert_ne!(l, 1);
    net.propose(l, b"after");
    assert_eq!(net.applied_data(2).last().unwrap(), b"after");
    // The removed node never campaigns again.
    net.tick(1, 100);
    assert_ne!(net.status(1).role, Role::Leader);
}

// ---------------------------------------------------------------- leadership transfer

#[test]
fn pitfall_20_transfer_to_caught_up_voter() {
    // Reference: thesis §3.10 — catch the target up, TimeoutNow, it wins at once.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, b"a");
    net.node(1).transfer_leader(2).unwrap();
    assert_eq!(
        net.node(1).propose(b"b".to_vec()),
        Err(ProposeError::TransferInProgress { target: 2 })
    );
    net.drain();
    assert_eq!(net.status(2).role, Role::Leader);
    assert_eq!(net.status(1).leader, 2);
    net.propose(2, b"c");
    assert_eq!(net.applied_data(1).last().unwrap(), b"c");
}

#[test]
fn pitfall_20_transfer_catches_up_lagging_target_first() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for i in 0..5u8 {
        net.propose(1, &[i]);
    }
    net.heal();
    net.node(1).transfer_leader(3).unwrap();
    net.drain();
    assert_eq!(net.status(3).role, Role::Leader);
    assert_eq!(net.applied_data(3).len(), 5);
}

#[test]
fn pitfall_20_transfer_aborts_after_election_timeout() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.node(1).transfer_leader(3).unwrap();
    net.drain();
    assert_eq!(net.status(1).transferee, 3);
    net.tick(1, 10);
    assert_eq!(net.status(1).transferee, NO_NODE);
    assert!(net.node(1).propose(b"again".to_vec()).is_ok());
}

#[test]
fn pitfall_20_transfer_only_to_a_voter() {
    let mut net = grown_cluster();
    assert!(matches!(
        net.node(1).transfer_leader(4),
        Err(ProposeError::InvalidConfChange(_))
    ));
    assert!(matches!(
        net.node(2).transfer_leader(3),
        Err(ProposeError::NotLeader { leader: 1 })
    ));
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

#[test]
fn pitfall_17_learner_joins_from_snapshot_with_configuration() {
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

#[test]
fn pitfall_21_snapshot_older_than_commit_is_ignored() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..5u8 {
        net.propose(1, &[i]);
    }
    let commit = net.status(2).commit;
    let snap = Snapshot {
        meta: SnapshotMeta {
            index: 3,
            term: 1,
            conf_state: ConfState::with_voters([1, 2, 3]),
        },
        data: vec![],
    };
    net.step(msg(
        1,
        2,
        1,
        MessageBody::InstallSnapshot { snapshot: snap },
    ));
    let rd = net.node(2).ready();
    assert!(rd.snapshot.is_none());
    assert!(rd.messages.iter().any(|m| matches!(m.body, MessageBody::AppendResponse { reject: false, index, .. } if index == commit)));
    net.node(2).advance();
}

#[test]
fn pitfall_21_snapshot_matching_the_log_keeps_the_suffix() {
    let mut c = Config::new(2);
    c.pre_vote = false;
    let mut n = RawNode::new(&c, store_with(&[1, 2], &[1, 1, 1, 1, 1, 1], 1, 2)).unwrap();
    let snap = Snapshot {
        meta: SnapshotMeta {
            index: 4,
            term: 1,
            conf_state: ConfState::with_voters([1, 2]),
        },
        data: vec![],
    };
    n.step(msg(
        1,
        2,
        1,
        MessageBody::InstallSnapshot { snapshot: snap },
    ))
    .unwrap();
    let rd = n.ready();
    assert!(rd.snapshot.is_none(), "matching history: no restore");
    assert_eq!(n.status().commit, 4);
    assert_eq!(n.status().last_index, 6);
}

// ---------------------------------------------------------------- ReadIndex (§8)

#[test]
fn pitfall_18_read_index_confirmed_by_heartbeat_round() {
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

#[test]
fn pitfall_18_read_index_forwarded_from_follower() {
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

#[test]
fn pitfall_18_read_waits_for_an_entry_of_the_leaders_term() {
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

#[test]
fn pitfall_18_single_voter_answers_at_once() {
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

#[test]
fn pitfall_18_isolated_leader_never_answers_reads() {
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

// ---------------------------------------------------------------- other pitfalls

#[test]
fn pitfall_01_leader_counts_itself_only_after_persisting() {
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

#[test]
fn pitfall_02_vote_leaves_only_with_its_hard_state() {
    let mut net = Net::with(&[1, 2, 3], no_prevote);
    net.step(msg(
        1,
        2,
        1,
        MessageBody::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    ));
    let rd = net.node(2).ready();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((1, 1)));
    assert!(
        rd.messages
            .iter()
            .any(|m| m.body == MessageBody::VoteResponse { reject: false })
    );
    net.node(2).advance();
}

#[test]
fn pitfall_04_new_leader_appends_a_noop_of_its_term() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let e = net.nodes[&2].store().entries(1, 2, u64::MAX).unwrap();
    assert_eq!(e[0].term, 1);
    assert!(e[0].data.is_empty());
    assert_eq!(net.status(2).commit, 1);
}

#[test]
fn pitfall_05_stale_append_does_not_truncate() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..4u8 {
        net.propose(1, &[i]);
    }
    let last = net.status(2).last_index;
    let e = net.nodes[&2].store().entries(1, 3, u64::MAX).unwrap();
    net.step(msg(
        1,
        2,
        1,
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: e,
            commit: 0,
        },
    ));
    net.drain();
    assert_eq!(net.status(2).last_index, last);
}

#[test]
fn pitfall_06_follower_commit_bounded_by_what_the_message_covers() {
    let mut c = Config::new(2);
    c.pre_vote = false;
    // Entries 3..5 are from an old term and may not match the leader.
    let mut n = RawNode::new(&c, store_with(&[1, 2], &[1, 1, 1, 1, 1], 2, 0)).unwrap();
    n.step(msg(
        1,
        2,
        2,
        MessageBody::Append {
            prev_index: 2,
            prev_term: 1,
            entries: vec![],
            commit: 5,
        },
    ))
    .unwrap();
    assert_eq!(n.status().commit, 2);
}

#[test]
fn pitfall_07_stale_responses_never_lower_match() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..4u8 {
        net.propose(1, &[i]);
    }
    let before = net.status(1).progress[&2].clone();
    net.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    net.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse {
            reject: true,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    ));
    net.step(msg(
        2,
        1,
        0,
        MessageBody::AppendResponse {
            reject: true,
            index: 0,
            hint_index: 0,
            hint_term: 0,
        },
    ));
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
    lone.step(msg(
        2,
        1,
        u64::MAX,
        MessageBody::Heartbeat {
            commit: 0,
            ctx: None,
        },
    ));
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
