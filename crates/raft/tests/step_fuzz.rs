//! `step()` never panics on any message content: random messages (any kind, any numbers) are
//! fed to nodes of a live cluster in every role, and the cluster must still work afterwards.

mod support;

use flotilla_raft::*;
use proptest::prelude::*;
use support::Net;

fn small() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..8, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::vec((small(), small(), any::<bool>()), 0..4).prop_map(|v| {
        v.into_iter()
            .map(|(term, index, cc)| Entry {
                term,
                index,
                kind: if cc {
                    EntryKind::ConfChange
                } else {
                    EntryKind::Normal
                },
                data: if cc {
                    vec![2, 9, 0, 0, 0, 0, 0, 0, 0]
                } else {
                    vec![]
                },
            })
            .collect()
    })
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (small(), small()).prop_map(|(last_index, last_term)| MessageBody::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|reject| MessageBody::PreVoteResponse { reject }),
        (small(), small(), any::<bool>()).prop_map(|(last_index, last_term, transfer)| {
            MessageBody::Vote {
                last_index,
                last_term,
                transfer,
            }
        }),
        any::<bool>().prop_map(|reject| MessageBody::VoteResponse { reject }),
        (small(), small(), entries(), small()).prop_map(
            |(prev_index, prev_term, entries, commit)| {
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }
        ),
        (any::<bool>(), small(), small(), small()).prop_map(
            |(reject, index, hint_index, hint_term)| {
                MessageBody::AppendResponse {
                    reject,
                    index,
                    hint_index,
                    hint_term,
                }
            }
        ),
        (small(), proptest::option::of(Just(vec![1u8])))
            .prop_map(|(commit, ctx)| MessageBody::Heartbeat { commit, ctx }),
        proptest::option::of(Just(vec![1u8]))
            .prop_map(|ctx| MessageBody::HeartbeatResponse { ctx }),
        (small(), small()).prop_map(|(index, term)| MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    conf_state: ConfState::with_voters([1, 2, 3])
                },
                data: vec![],
            }
        }),
        Just(MessageBody::TimeoutNow),
        Just(MessageBody::ReadIndex { ctx: vec![7] }),
        small().prop_map(|index| MessageBody::ReadIndexResponse {
            ctx: vec![7],
            index
        }),
    ]
}

/// 64 cases from a fixed seed, so the suite is deterministic; `PROPTEST_RNG_SEED=<n>` and
/// `PROPTEST_CASES=<n>` explore further (a failure found that way goes to the regressions
/// file next to this one, which every run replays first).
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::with_cases(64);
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = proptest::test_runner::RngSeed::Fixed(0x5eed_f10a);
    }
    c
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn step_never_panics(msgs in proptest::collection::vec((0u64..5, 1u64..4, 0u64..4, body()), 1..40)) {
        let mut net = Net::new(&[1, 2, 3]);
        net.elect(1);
        net.propose(1, b"before");
        for (from, to, term, body) in msgs {
            let _ = net.node(to).step(Message { from, to, term, body });
            net.handle_ready(to);
        }
        // Garbage may have been acknowledged as anything; the nodes themselves must not panic
        // while they keep running.
        net.queue.clear();
        net.tick_all(40);
    }
}
