//! The deterministic simulator, as a test suite: the CI slice of seeds, determinism, the
//! Raft paper's scenarios, and proof that the invariants catch deliberately broken callers.
//!
//! The simulator itself is the `flotilla-sim` crate (crates/sim). The many-seeds run is its
//! binary, `cargo run --release -p flotilla-sim -- --seeds 0..10000 --steps 5000 --jobs 2`;
//! `big_run` below is its ignored, single-threaded twin (`cargo test --release -p flotilla-raft
//! --test simulation big_run -- --ignored`).
//!
//! Bugs re-introduced into a scratch copy of the core (never committed) and the CI-slice seed
//! that caught each: committing old-term entries by counting replicas (Figure 8 scenario test,
//! and seed 1010 at tick 869: Leader Completeness); letting two membership changes overlap (seed
//! 64 at tick 256: Leader Completeness); leaving the vote out of the persisted hard state (seed
//! 19 at tick 377: one vote per term).

use flotilla_raft::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, HardState, LogStore, MemStorage,
    Message, MessageBody, NO_NODE, NodeId, Role,
};
use flotilla_sim as sim;
use sim::faults::{Mutation, Profile};
use sim::{Options, Sim, run, run_or_panic};

/// Seeds in the CI slice, and safety-phase ticks per seed. Sized to finish well within two
/// minutes in a debug build on two cores (the slice runs as two tests, one per core). 1100
/// seeds × 900 ticks is what it takes to catch a core that commits old-term entries by counting
/// replicas (seed 1010 does, at tick 869) besides the Figure 8 scenario below.
const CI_SEEDS: u64 = 1100;
const CI_STEPS: u64 = 900;

#[test]
fn same_seed_same_trace() {
    for seed in [1, 7, 42] {
        let a = run_or_panic(&Options::new(seed, 400));
        let b = run_or_panic(&Options::new(seed, 400));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} does not replay");
        assert_eq!(a.stats.messages, b.stats.messages);
    }
    let x = run_or_panic(&Options::new(1, 400));
    let y = run_or_panic(&Options::new(2, 400));
    assert_ne!(
        x.trace_hash, y.trace_hash,
        "different seeds gave the same trace"
    );
}

fn run_slice(seeds: std::ops::Range<u64>) {
    let mut acked = 0;
    let mut early_crashes = 0;
    let n = seeds.end - seeds.start;
    for seed in seeds {
        let outcome = run_or_panic(&Options::new(seed, CI_STEPS));
        acked += outcome.stats.acked_writes;
        early_crashes += outcome.stats.crashes_after_early_send;
    }
    assert!(
        acked > n * 10,
        "the workload barely committed anything: {acked}"
    );
    // The slice must exercise the window the leader's early sends open (Ready step 0): a
    // leader that crashes after replicating, before its own sync.
    assert!(
        early_crashes > 0,
        "no leader crashed between its early sends and its sync"
    );
}

#[test]
fn ci_slice_first_half() {
    run_slice(0..CI_SEEDS / 2);
}

#[test]
fn ci_slice_second_half() {
    run_slice(CI_SEEDS / 2..CI_SEEDS);
}

#[test]
#[ignore = "long: run with --release"]
fn big_run() {
    for seed in 0..10_000 {
        if let Err(failure) = run(&Options::new(seed, 5_000)) {
            panic!("{failure}");
        }
    }
}

// ----- deliberate caller bugs: the simulator must catch each within the CI slice -----

/// Runs the CI slice with `mutation` on and returns the first failure.
fn first_failure(mutation: Mutation) -> Option<sim::Failure> {
    (0..CI_SEEDS).find_map(|seed| {
        let options = Options {
            mutation,
            ..Options::new(seed, CI_STEPS)
        };
        run(&options).err()
    })
}

fn assert_caught(mutation: Mutation, property_contains: &str) {
    let failure = first_failure(mutation)
        .unwrap_or_else(|| panic!("mutation {mutation:?} survived {CI_SEEDS} seeds"));
    println!("{mutation:?} caught: {failure}");
    assert!(
        failure.violation.property.contains(property_contains),
        "{mutation:?} was caught, but by an unexpected property: {failure}"
    );
}

#[test]
fn forgetting_the_vote_on_crash_is_caught() {
    // Reference: §5.2, Figure 2 (votedFor is persistent state).
    assert_caught(Mutation::ForgetVoteOnCrash, "at most one");
}

#[test]
fn sending_before_persisting_is_caught() {
    // Reference: Figure 2 ("respond after updating stable storage"), pitfalls 1-2.
    let failure = first_failure(Mutation::SendBeforePersist)
        .expect("acknowledging before the sync survived the CI slice");
    println!("SendBeforePersist caught: {failure}");
}

#[test]
fn reading_before_applying_is_caught() {
    // Reference: §6.4 (ReadIndex: wait until the state machine has applied the read index).
    assert_caught(Mutation::ReadBeforeApply, "linearizable");
}

#[test]
fn a_lying_transport_is_caught() {
    // Reference: §5.4.3 (an entry counted as replicated that is not breaks State Machine Safety).
    let failure =
        first_failure(Mutation::LyingAcks).expect("a transport faking acks survived the CI slice");
    println!("LyingAcks caught: {failure}");
}

// ----- scenarios from the Raft paper -----

/// A storage holding `terms` as its log (entry i+1 has term terms[i]), at `term`.
fn log_with_terms(voters: &[NodeId], terms: &[u64], term: u64) -> MemStorage {
    let mut store = MemStorage::new_with_conf_state(ConfState::with_voters(voters.iter().copied()));
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let index = i as u64 + 1;
            Entry {
                term: t,
                index,
                kind: EntryKind::Normal,
                // The same (index, term) always carries the same command, as in any real log.
                data: sim::write_payload(index * 1000 + t, 0),
            }
        })
        .collect();
    store.append(&entries).expect("append");
    store
        .set_hard_state(HardState {
            term,
            vote: NO_NODE,
            commit: 0,
        })
        .expect("hard state");
    store
}

fn ok<T>(result: Result<T, sim::invariants::Violation>) -> T {
    result.unwrap_or_else(|v| panic!("{}: {}", v.property, v.detail))
}

#[test]
fn figure_7_follower_logs_are_reconciled() {
    // Reference: §5.3, Figure 7. The leader of term 8 meets followers that miss entries (a, b),
    // have extra uncommitted entries (c, d), or both (e, f); it must bring them all to its log.
    let leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [&[u64]; 6] = [
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],
        &[1, 1, 1, 4],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
        &[1, 1, 1, 4, 4, 4, 4],
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    ];
    let voters: Vec<NodeId> = (1..=7).collect();
    let mut storages = vec![(1, log_with_terms(&voters, &leader_log, 7))];
    for (i, log) in followers.iter().enumerate() {
        storages.push((i as NodeId + 2, log_with_terms(&voters, log, 7)));
    }
    let mut sim = ok(Sim::scenario(7, Profile::calm(7), storages));
    ok(sim.campaign(1));
    let converged = ok(sim.run_until(300, |s| {
        let want = s.log(1);
        want.len() == 11
            && (2..=7).all(|id| s.log(id) == want)
            && (1..=7).all(|id| s.node(id).is_some_and(|n| n.state_machine().applied == 11))
    }));
    assert!(converged, "logs did not converge: leader {:?}", sim.log(1));
    assert_eq!(sim.leader(), Some(1));
    let terms: Vec<u64> = sim.log(1).iter().map(|&(_, t)| t).collect();
    assert_eq!(
        terms,
        vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8],
        "the leader's log plus its no-op"
    );
    for id in 1..=7 {
        let node = sim.node(id).expect("node");
        assert_eq!(
            node.state_machine().applied,
            11,
            "node {id} applied everything"
        );
    }
}

#[test]
fn figure_8_old_term_entries_are_not_committed_by_counting_replicas() {
    // Reference: §5.4.2, Figure 8. S1 leads term 4 and replicates the term-2 entry at index 2 to
    // a majority (S1, S2, S3) while its own term-4 entry is held back. It must not commit index 2:
    // S5 (whose log ends with a term-3 entry at index 2) can still win and overwrite it.
    let voters: Vec<NodeId> = (1..=5).collect();
    let storages = vec![
        (1, log_with_terms(&voters, &[1, 2], 3)),
        (2, log_with_terms(&voters, &[1, 2], 3)),
        (3, log_with_terms(&voters, &[1], 3)),
        (4, log_with_terms(&voters, &[1], 3)),
        (5, log_with_terms(&voters, &[1, 3], 3)),
    ];
    let mut profile = Profile::calm(5);
    profile.max_size_per_msg = 1; // one entry per Append, so the term-4 entry travels alone
    let mut sim = ok(Sim::scenario(8, profile, storages));
    // Strip S1's term-4 entries from its Appends (which then still probe and carry the rest),
    // and keep its Appends from S5 altogether, as in the figure.
    sim.set_filter(Some(Box::new(|mut m: Message| {
        if let MessageBody::Append { entries, .. } = &mut m.body
            && m.from == 1
        {
            if m.to == 5 {
                return None;
            }
            entries.retain(|e| e.term < 4);
        }
        Some(m)
    })));
    ok(sim.campaign(1));
    let replicated = ok(sim.run_until(100, |s| s.log(3).len() == 2));
    assert!(replicated, "S3 never received the term-2 entry");
    assert_eq!(
        sim.status(1).map(|s| (s.role, s.term)),
        Some((Role::Leader, 4))
    );
    ok(sim.run_ticks(30));
    assert_eq!(
        sim.status(1).map(|s| s.commit),
        Some(0),
        "S1 committed an old-term entry by counting replicas"
    );
    assert_eq!(
        sim.checker().commit_index(),
        0,
        "nothing may be applied yet"
    );

    // S1 crashes; S2 is cut off, so only S5 can win (S3 and S4 hold older logs).
    // (The filter stays until S5 wins: S1's last messages may still be in flight.)
    sim.crash(1);
    sim.net_mut().partition(&[2], &[1, 3, 4, 5]);
    let elected = ok(sim.run_until(400, |s| {
        s.leader() == Some(5) && s.checker().commit_index() >= 3
    }));
    assert!(
        elected,
        "S5 was not elected, or did not commit its own entry"
    );
    sim.set_filter(None);
    sim.net_mut().heal();
    ok(sim.restart(1));
    let converged = ok(sim.run_until(400, |s| {
        (1..=5).all(|id| s.log(id).get(1) == Some(&(2, 3))) && s.checker().commit_index() >= 3
    }));
    let logs: Vec<_> = (1..=5)
        .map(|id| (id, sim.status(id).map(|s| (s.role, s.term)), sim.log(id)))
        .collect();
    assert!(
        converged,
        "S5 did not overwrite index 2 everywhere: commit {}, logs {logs:?}",
        sim.checker().commit_index()
    );
}

#[test]
fn a_removed_leader_steps_down_and_the_rest_carry_on() {
    // Reference: thesis §4.2.2 (the leader is removed: it steps down once the change commits).
    let voters: Vec<NodeId> = (1..=5).collect();
    let storages = voters
        .iter()
        .map(|&id| (id, log_with_terms(&voters, &[], 0)))
        .collect();
    let mut sim = ok(Sim::scenario(9, Profile::calm(5), storages));
    ok(sim.campaign(1));
    assert!(ok(sim.run_until(100, |s| s.checker().commit_index() >= 1)));
    let removal = ConfChange {
        kind: ConfChangeKind::RemoveNode,
        node_id: 1,
        context: Vec::new(),
    };
    let (_, index) = sim
        .propose_conf_change(1, removal)
        .expect("the leader accepts its removal");
    let stepped_down = ok(sim.run_until(300, |s| {
        s.checker().commit_index() >= index
            && s.node(1)
                .is_none_or(|n| n.raw().is_none_or(|r| r.status().role != Role::Leader))
            && s.leader().is_some_and(|l| l != 1)
    }));
    assert!(stepped_down, "the removed leader did not hand over");
    let leader = sim.leader().expect("a new leader");
    let voters_now = sim.status(leader).expect("status").conf_state.voters;
    assert!(
        !voters_now.contains(&1),
        "node 1 is still a voter: {voters_now:?}"
    );
    let (_, w) = sim
        .propose(leader, sim::write_payload(77, 0))
        .expect("the new leader accepts writes");
    assert!(ok(
        sim.run_until(100, |s| s.checker().acked_index(77) == Some(w))
    ));
}

#[test]
fn a_partitioned_leader_steps_down() {
    // Reference: thesis §6.2 (check-quorum): a leader that cannot reach a majority for an
    // election timeout steps down, so it stops serving stale reads; the majority elects another.
    let voters: Vec<NodeId> = (1..=5).collect();
    let storages = voters
        .iter()
        .map(|&id| (id, log_with_terms(&voters, &[], 0)))
        .collect();
    let mut sim = ok(Sim::scenario(10, Profile::calm(5), storages));
    ok(sim.campaign(1));
    assert!(ok(sim.run_until(100, |s| s.checker().commit_index() >= 1)));
    let old_term = sim.status(1).expect("status").term;
    sim.net_mut().partition(&[1], &[2, 3, 4, 5]);
    let stepped_down = ok(sim.run_until(100, |s| {
        s.status(1).is_some_and(|st| st.role != Role::Leader)
    }));
    assert!(stepped_down, "the isolated leader kept leading");
    let elected = ok(sim.run_until(200, |s| s.leader().is_some_and(|l| l != 1)));
    assert!(elected, "the majority elected nobody");
    let new_leader = sim.leader().expect("leader");
    let new_term = sim.status(new_leader).expect("status").term;
    assert!(new_term > old_term);
    sim.net_mut().heal();
    let rejoined = ok(sim.run_until(200, |s| {
        s.status(1)
            .is_some_and(|st| st.leader == new_leader && st.term == new_term)
    }));
    assert!(
        rejoined,
        "the old leader did not follow the new one after the heal"
    );
}
