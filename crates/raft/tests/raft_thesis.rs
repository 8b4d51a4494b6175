//! The core against the Raft thesis's extensions of the paper: pre-vote (§9.6), check-quorum
//! (§6.2), leader stickiness (§4.2.3), membership changes (chapter 4) and leadership transfer
//! (§3.10). Each test cites the rule it checks; a test that guards one of the pitfalls listed
//! in docs/ARCHITECTURE.md names it in its doc comment.
//!
//! Runs on the tiny deterministic network in `support/`, not on the simulator.

mod support;

use flotilla_raft::*;
use support::Net;
use support::paper::*;

// ---------------------------------------------------------------- pre-vote, check-quorum

/// Pitfall 10 (a partitioned server inflates its term and deposes the leader on return).
#[test]
fn partitioned_pre_candidate_does_not_inflate_its_term() {
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

/// Pitfall 10 (a pre-vote that changes state is a vote by another name).
#[test]
fn answering_a_pre_vote_changes_no_term_or_vote() {
    // Reference: thesis §9.6 — answering a pre-vote does not change term or vote.
    let mut net = Net::new(&[1, 2, 3]);
    let before = net.status(2);
    net.step(pre_vote_request(3, 2, 5, 0, 0));
    let out = net.outbox(2);
    assert!(
        out.iter()
            .any(|m| m.body == MessageBody::PreVoteResponse { reject: false } && m.term == 5)
    );
    let after = net.status(2);
    assert_eq!((after.term, after.vote), (before.term, before.vote));
}

/// Pitfall 12 (an isolated leader keeps leading).
#[test]
fn isolated_leader_steps_down_under_check_quorum() {
    // Reference: thesis §6.2 — a leader that cannot reach a majority steps down.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.tick(1, 25);
    assert_eq!(net.status(1).role, Role::Follower);
}

/// Pitfall 12, the other side: check-quorum must not depose a leader that hears from a majority.
#[test]
fn connected_leader_stays_under_check_quorum() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.tick_all(100);
    assert_eq!(net.status(1).role, Role::Leader);
    assert_eq!(net.status(1).term, 1);
}

/// Pitfall 9 (a removed or partitioned server disrupts a healthy leader).
#[test]
fn vote_within_the_leader_lease_is_ignored_unless_a_transfer() {
    // Reference: thesis §4.2.3 — a vote request within the minimum election timeout of hearing
    // from the leader is ignored (no term change), unless it is a transfer election.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.step(vote_request(3, 2, 9, 99, 9));
    assert!(net.outbox(2).is_empty());
    assert_eq!(net.status(2).term, 1);
    assert_eq!(net.status(2).leader, 1);
    net.step(transfer_vote_request(3, 2, 9, 99, 9));
    let out = net.outbox(2);
    assert!(grants_vote(&out));
    assert_eq!(net.status(2).term, 9);
}

/// Pitfall 9, the other side: stickiness applies to votes only; a higher-term leader is obeyed.
#[test]
fn leader_steps_down_on_an_append_of_a_higher_term() {
    // Reference: §5.1 — any higher term makes a server follower of that term.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.step(empty_append(2, 1, 5));
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

/// Pitfall 11 (the election timer reset on the wrong events).
#[test]
fn granting_a_vote_resets_the_election_timer_refusing_does_not() {
    // Reference: Figure 2 / pitfall 11 — granting a vote resets the election timer; rejecting
    // one does not.
    let baseline = ticks_to_campaign(|_| {}).unwrap();
    let rejected = ticks_to_campaign(|n| {
        // Same term, stale log: refused.
        n.step(vote_request(3, 2, 1, 0, 0)).unwrap();
        n.step(vote_request(1, 2, 1, 0, 0)).unwrap();
    });
    let granted_later = ticks_to_campaign(|n| {
        n.step(vote_request(3, 2, 1, 0, 0)).unwrap();
    });
    // Grant at tick 5, three ticks, then a refusal (the vote is already cast) at tick 8:
    // the closure's own three ticks are not counted by `ticks_to_campaign`.
    let pure_reject = ticks_to_campaign(|n| {
        n.step(vote_request(3, 2, 1, 0, 0)).unwrap();
        for _ in 0..3 {
            n.tick();
        }
        n.step(vote_request(1, 2, 1, 0, 0)).unwrap();
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

/// Pitfall 16 (learners and the quorum).
#[test]
fn learner_receives_the_log_and_the_configuration() {
    // Reference: thesis §4.2.1 — a new server joins as a non-voting learner and catches up.
    let net = grown_cluster();
    assert_eq!(net.applied_data(4), vec![b"x".to_vec()]);
    let cs = net.status(4).conf_state;
    assert_eq!(cs.voters, [1, 2, 3].into());
    assert_eq!(cs.learners, [4].into());
    assert!(net.status(1).progress[&4].is_learner);
}

/// Pitfall 16 (a learner that votes or campaigns changes the quorum).
#[test]
fn learner_never_campaigns_or_counts_toward_commit() {
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

/// Three voters led by 1, promoting only learners within 5 entries (or past the catch-up mark).
fn lag_gated_cluster() -> Net {
    let mut net = Net::with(&[1, 2, 3], |c| c.promotable_lag = 5);
    net.elect(1);
    net
}

/// Adds member `id` as a learner through leader 1 and lets the change settle.
fn add_learner(net: &mut Net, id: NodeId) {
    net.add_node(Config::new(id), MemStorage::new());
    net.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, id))
        .unwrap();
    net.drain();
}

#[test]
fn promote_refused_while_learner_lags() {
    let mut net = lag_gated_cluster();
    add_learner(&mut net, 4);
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

/// A leader elected on an empty log has a catch-up mark of 0 after its first election
/// timeout; a learner that never answered (match 0) must still not count as caught up.
#[test]
fn learner_that_never_answered_is_not_caught_up_behind_a_zero_mark() {
    let mut net = lag_gated_cluster();
    net.isolate(4);
    add_learner(&mut net, 4);
    // One election timeout: the mark becomes where the log ended at the election.
    net.tick(1, 10);
    for i in 0..30u8 {
        net.propose(1, &[i]);
    }
    let st = net.status(1);
    assert_eq!(st.progress[&4].match_index, 0);
    assert!(!st.progress[&4].caught_up, "{:?}", st.progress[&4]);
    assert!(matches!(
        net.node(1)
            .propose_conf_change(cc(ConfChangeKind::PromoteLearner, 4)),
        Err(ProposeError::LearnerNotCaughtUp { id: 4, .. })
    ));
}

/// Under sustained load a learner that keeps pace is never within a fixed number of entries
/// of the leader when asked, yet it is caught up: it has what the leader had an election
/// timeout ago. One that stopped receiving is not.
#[test]
fn promote_gate_follows_the_leaders_progress_under_load() {
    let mut net = lag_gated_cluster();
    add_learner(&mut net, 4);
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
    add_learner(&mut net, 5);
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

/// Pitfall 14 (two changes in flight allow two disjoint majorities).
#[test]
fn one_membership_change_at_a_time() {
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

/// Pitfall 14 (a change before the new leader's no-op commits).
#[test]
fn no_membership_change_before_the_leader_commits_in_its_term() {
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

/// Pitfall 13 (a configuration used only once committed, or not undone on truncation).
#[test]
fn configuration_takes_effect_when_appended_and_reverts_on_truncation() {
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

/// Pitfall 15 (a removed leader keeps leading, or counts itself).
#[test]
fn removed_leader_steps_down_once_its_removal_commits() {
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

/// Pitfall 20 (leadership transfer).
#[test]
fn transfer_to_a_caught_up_voter_wins_at_once() {
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

/// Pitfall 20 (leadership transfer): the target needs the whole log to win.
#[test]
fn transfer_catches_up_a_lagging_target_first() {
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

/// Pitfall 20 (a transfer that never ends blocks proposals for good).
#[test]
fn transfer_aborts_after_an_election_timeout() {
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

/// Pitfall 20 (a transfer that targets a learner).
#[test]
fn transfer_only_to_a_voter() {
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
