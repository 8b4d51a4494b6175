//! Round trips and refusals of every wire rule in `codec`, including property tests over
//! random values.

use super::*;
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

const CLUSTER: u64 = 0xc1a5_7e12;

fn node_id() -> impl Strategy<Value = NodeId> {
    1..=u64::MAX
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

fn conf_state() -> impl Strategy<Value = ConfState> {
    (btree_set(node_id(), 0..5), btree_set(node_id(), 0..3)).prop_map(|(voters, learners)| {
        let learners = learners.difference(&voters).copied().collect();
        ConfState { voters, learners }
    })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (1..u64::MAX, any::<u64>(), conf_state(), bytes()).prop_map(
        |(index, term, conf_state, data)| Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        },
    )
}

/// An Append as a leader of `term` sends it: contiguous entries after `prev_index` whose
/// terms rise from `prev_term` to at most `term`.
fn append(term: u64) -> impl Strategy<Value = MessageBody> {
    (
        0..u64::MAX / 2,
        0..=term,
        vec((any::<bool>(), bytes(), 0..3u64), 0..6),
        any::<u64>(),
    )
        .prop_map(move |(prev_index, prev_term, raw, commit)| {
            let mut entry_term = prev_term;
            let entries = raw
                .into_iter()
                .enumerate()
                .map(|(i, (conf, data, bump))| {
                    entry_term = entry_term.saturating_add(bump).min(term);
                    Entry {
                        term: entry_term,
                        index: prev_index + 1 + i as u64,
                        kind: if conf {
                            EntryKind::ConfChange
                        } else {
                            EntryKind::Normal
                        },
                        data,
                    }
                })
                .collect();
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            }
        })
}

fn body(term: u64) -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(last_index, last_term)| {
            MessageBody::PreVote {
                last_index,
                last_term,
            }
        }),
        any::<bool>().prop_map(|reject| MessageBody::PreVoteResponse { reject }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(last_index, last_term, transfer)| MessageBody::Vote {
                last_index,
                last_term,
                transfer,
            }
        ),
        any::<bool>().prop_map(|reject| MessageBody::VoteResponse { reject }),
        append(term),
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(reject, index, hint_index, hint_term)| MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            }
        ),
        (any::<u64>(), proptest::option::of(bytes()))
            .prop_map(|(commit, ctx)| MessageBody::Heartbeat { commit, ctx }),
        proptest::option::of(bytes()).prop_map(|ctx| MessageBody::HeartbeatResponse { ctx }),
        snapshot().prop_map(|snapshot| MessageBody::InstallSnapshot { snapshot }),
        Just(MessageBody::TimeoutNow),
        bytes().prop_map(|ctx| MessageBody::ReadIndex { ctx }),
        (bytes(), any::<u64>())
            .prop_map(|(ctx, index)| MessageBody::ReadIndexResponse { ctx, index }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (node_id(), node_id(), 0..u64::MAX).prop_flat_map(|(from, to, term)| {
        body(term).prop_map(move |body| Message {
            from,
            to,
            term,
            body,
        })
    })
}

proptest! {
    #[test]
    fn every_message_round_trips_through_the_wire(msg in message()) {
        let bytes = encode_message(CLUSTER, msg.clone()).encode_to_vec();
        let envelope = pb::RaftEnvelope::decode(bytes.as_slice()).expect("own encoding");
        prop_assert_eq!(decode_message(CLUSTER, envelope), Ok(msg));
    }

    #[test]
    fn snapshot_messages_round_trip_through_chunks(
        snapshot in snapshot(),
        from in node_id(),
        to in node_id(),
        term in any::<u64>(),
        chunk_size in 0usize..20,
    ) {
        let msg = Message { from, to, term, body: MessageBody::InstallSnapshot { snapshot } };
        let chunks: Vec<_> = snapshot_chunks(CLUSTER, msg.clone(), chunk_size)
            .expect("an InstallSnapshot message")
            .collect();
        let mut assembler = SnapshotAssembler::new(CLUSTER, 1 << 20);
        for chunk in chunks {
            assembler.push(chunk)?;
        }
        prop_assert_eq!(assembler.finish(), Ok(msg));
    }

    /// Whatever arrives, decoding returns a value or an error and never panics.
    #[test]
    fn arbitrary_bytes_never_panic(raw in vec(any::<u8>(), 0..256)) {
        if let Ok(envelope) = pb::RaftEnvelope::decode(raw.as_slice()) {
            let cluster = envelope.cluster_id;
            let _ = decode_message(cluster, envelope);
        }
        if let Ok(chunk) = pb::SnapshotChunk::decode(raw.as_slice()) {
            let mut assembler = SnapshotAssembler::new(CLUSTER, 1024);
            if assembler.push(chunk).is_ok() {
                let _ = assembler.finish();
            }
        }
    }

    #[test]
    fn member_context_round_trips_through_a_conf_change(
        name in "[a-z0-9-]{0,12}",
        peer_urls in vec("http://[a-z]{1,8}:[0-9]{4}", 0..3),
        node in node_id(),
    ) {
        let member = MemberContext { name, peer_urls, client_urls: vec![] };
        let change = member_conf_change(ConfChangeKind::AddLearner, node, &member);
        prop_assert_eq!(change.node_id, node);
        prop_assert_eq!(member_context(&change), Ok(member));
    }
}

proptest! {
    #[test]
    fn hard_state_round_trips(term in 1..u64::MAX, vote in any::<u64>(), commit in any::<u64>()) {
        let hs = HardState { term, vote, commit };
        let bytes = encode_hard_state(&hs).encode_to_vec();
        let wire = pb::HardState::decode(bytes.as_slice()).expect("own encoding");
        prop_assert_eq!(decode_hard_state(wire), Ok(hs));
    }
}

#[test]
fn a_vote_without_a_term_is_refused() {
    let wire = pb::HardState {
        term: 0,
        vote: 3,
        commit: 0,
    };
    assert!(matches!(
        decode_hard_state(wire),
        Err(CodecError::Invalid {
            field: "hard_state.vote",
            ..
        })
    ));
    assert_eq!(
        decode_hard_state(pb::HardState::default()),
        Ok(HardState::default())
    );
}

fn envelope(body: Body) -> pb::RaftEnvelope {
    pb::RaftEnvelope {
        cluster_id: CLUSTER,
        from: 1,
        to: 2,
        term: 5,
        body: Some(body),
    }
}

fn wire_entry(index: u64, term: u64, kind: i32) -> pb::Entry {
    pb::Entry {
        term,
        index,
        kind,
        data: vec![],
    }
}

fn wire_append(entries: Vec<pb::Entry>) -> pb::RaftEnvelope {
    envelope(Body::Append(pb::Append {
        prev_index: 10,
        prev_term: 3,
        entries,
        commit: 9,
    }))
}

fn wire_snapshot(meta: Option<pb::SnapshotMeta>) -> pb::RaftEnvelope {
    envelope(Body::InstallSnapshot(pb::InstallSnapshot {
        snapshot: Some(pb::Snapshot {
            meta,
            data: vec![1, 2, 3],
        }),
    }))
}

#[test]
fn another_clusters_message_is_refused() {
    let msg = envelope(Body::TimeoutNow(pb::TimeoutNow {}));
    assert_eq!(
        decode_message(CLUSTER + 1, msg),
        Err(CodecError::ClusterMismatch {
            expected: CLUSTER + 1,
            got: CLUSTER
        })
    );
}

#[test]
fn missing_body_is_refused() {
    let mut msg = envelope(Body::TimeoutNow(pb::TimeoutNow {}));
    msg.body = None;
    assert_eq!(
        decode_message(CLUSTER, msg),
        Err(CodecError::MissingField("body"))
    );
}

#[test]
fn zero_member_ids_are_refused() {
    let mut from_zero = envelope(Body::TimeoutNow(pb::TimeoutNow {}));
    from_zero.from = 0;
    assert!(matches!(
        decode_message(CLUSTER, from_zero),
        Err(CodecError::Invalid { field: "from", .. })
    ));
    let mut to_zero = envelope(Body::TimeoutNow(pb::TimeoutNow {}));
    to_zero.to = 0;
    assert!(matches!(
        decode_message(CLUSTER, to_zero),
        Err(CodecError::Invalid { field: "to", .. })
    ));
}

#[test]
fn unknown_and_unspecified_entry_kinds_are_refused() {
    for kind in [0, 3, 99, -1] {
        let msg = wire_append(vec![wire_entry(11, 4, kind)]);
        assert_eq!(
            decode_message(CLUSTER, msg),
            Err(CodecError::UnknownEnum {
                field: "entry.kind",
                value: kind
            }),
            "kind {kind}"
        );
    }
}

#[test]
fn appends_with_gaps_or_backward_terms_are_refused() {
    let normal = pb::EntryKind::Normal as i32;
    let gap = wire_append(vec![wire_entry(11, 4, normal), wire_entry(13, 4, normal)]);
    assert!(matches!(
        decode_message(CLUSTER, gap),
        Err(CodecError::Invalid {
            field: "entries.index",
            ..
        })
    ));
    let not_after_prev = wire_append(vec![wire_entry(10, 4, normal)]);
    assert!(matches!(
        decode_message(CLUSTER, not_after_prev),
        Err(CodecError::Invalid {
            field: "entries.index",
            ..
        })
    ));
    let backwards = wire_append(vec![wire_entry(11, 4, normal), wire_entry(12, 3, normal)]);
    assert!(matches!(
        decode_message(CLUSTER, backwards),
        Err(CodecError::Invalid {
            field: "entries.term",
            ..
        })
    ));
    let before_prev = wire_append(vec![wire_entry(11, 2, normal)]);
    assert!(matches!(
        decode_message(CLUSTER, before_prev),
        Err(CodecError::Invalid {
            field: "entries.term",
            ..
        })
    ));
    let beyond_sender = wire_append(vec![wire_entry(11, 6, normal)]);
    assert!(matches!(
        decode_message(CLUSTER, beyond_sender),
        Err(CodecError::Invalid {
            field: "entries.term",
            ..
        })
    ));
}

#[test]
fn malformed_snapshots_are_refused() {
    assert_eq!(
        decode_message(CLUSTER, wire_snapshot(None)),
        Err(CodecError::MissingField("snapshot.meta"))
    );
    let no_conf = pb::SnapshotMeta {
        index: 4,
        term: 2,
        conf_state: None,
    };
    assert_eq!(
        decode_message(CLUSTER, wire_snapshot(Some(no_conf))),
        Err(CodecError::MissingField("snapshot.meta.conf_state"))
    );
    let conf = |voters: Vec<u64>, learners: Vec<u64>| pb::SnapshotMeta {
        index: 4,
        term: 2,
        conf_state: Some(pb::ConfState { voters, learners }),
    };
    for (meta, field) in [
        (conf(vec![1, 2], vec![2]), "conf_state"),
        (conf(vec![1, 1], vec![]), "conf_state.voters"),
        (conf(vec![0, 1], vec![]), "conf_state.voters"),
        (conf(vec![1], vec![0]), "conf_state.learners"),
    ] {
        let got = decode_message(CLUSTER, wire_snapshot(Some(meta)));
        assert!(
            matches!(&got, Err(CodecError::Invalid { field: f, .. }) if *f == field),
            "{got:?}"
        );
    }
    // Index 0 with a term claims log content that cannot exist.
    let mut zero_index = conf(vec![1], vec![]);
    zero_index.index = 0;
    assert!(matches!(
        decode_message(CLUSTER, wire_snapshot(Some(zero_index.clone()))),
        Err(CodecError::Invalid {
            field: "snapshot.meta.index",
            ..
        })
    ));
    // The bootstrap configuration snapshot (index 0, term 0, no data) is accepted.
    zero_index.term = 0;
    let got = decode_message(
        CLUSTER,
        envelope(Body::InstallSnapshot(pb::InstallSnapshot {
            snapshot: Some(pb::Snapshot {
                meta: Some(zero_index),
                data: Vec::new(),
            }),
        })),
    );
    assert!(
        matches!(&got, Ok(Message { body: MessageBody::InstallSnapshot { snapshot }, .. })
            if snapshot.meta.index == 0 && snapshot.meta.conf_state.voters.contains(&1)),
        "{got:?}"
    );
}

#[test]
fn truncated_bytes_are_a_decode_error() {
    let msg = Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::ReadIndex { ctx: vec![7; 10] },
    };
    let bytes = encode_message(CLUSTER, msg).encode_to_vec();
    let truncated = &bytes[..bytes.len() - 3];
    assert!(pb::RaftEnvelope::decode(truncated).is_err());
    let change = ConfChange {
        kind: ConfChangeKind::RemoveNode,
        node_id: 4,
        context: vec![0x0a, 0x05, b'a'],
    };
    assert!(matches!(
        member_context(&change),
        Err(CodecError::Decode(_))
    ));
}

fn chunks_of(data: Vec<u8>, chunk_size: usize) -> Vec<pb::SnapshotChunk> {
    let msg = Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 7,
                    term: 3,
                    conf_state: ConfState::with_voters([1, 2, 3]),
                },
                data,
            },
        },
    };
    snapshot_chunks(CLUSTER, msg, chunk_size)
        .expect("an InstallSnapshot message")
        .collect()
}

#[test]
fn chunking_splits_data_after_a_header() {
    let chunks = chunks_of(vec![9; 10], 4);
    assert_eq!(chunks.len(), 4);
    let Some(pb::snapshot_chunk::Chunk::Header(header)) = &chunks[0].chunk else {
        panic!("first chunk is not a header: {:?}", chunks[0]);
    };
    assert_eq!(header.total_size, 10);
    let sizes: Vec<usize> = chunks[1..]
        .iter()
        .map(|c| match &c.chunk {
            Some(pb::snapshot_chunk::Chunk::Data(d)) => d.len(),
            other => panic!("not a data chunk: {other:?}"),
        })
        .collect();
    assert_eq!(sizes, [4, 4, 2]);
    let not_a_snapshot = Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::TimeoutNow,
    };
    assert!(snapshot_chunks(CLUSTER, not_a_snapshot, 4).is_none());
}

#[test]
fn snapshot_streams_of_the_wrong_shape_are_refused() {
    let chunks = chunks_of(vec![9; 10], 4);

    let mut data_first = SnapshotAssembler::new(CLUSTER, 1024);
    assert!(data_first.push(chunks[1].clone()).is_err());

    let mut two_headers = SnapshotAssembler::new(CLUSTER, 1024);
    two_headers.push(chunks[0].clone()).expect("header");
    assert!(two_headers.push(chunks[0].clone()).is_err());

    let mut truncated = SnapshotAssembler::new(CLUSTER, 1024);
    for chunk in &chunks[..3] {
        truncated.push(chunk.clone()).expect("chunk");
    }
    assert_eq!(truncated.received_bytes(), 8);
    assert!(truncated.finish().is_err());

    let mut too_much = SnapshotAssembler::new(CLUSTER, 1024);
    for chunk in &chunks {
        too_much.push(chunk.clone()).expect("chunk");
    }
    assert!(too_much.push(chunks[1].clone()).is_err());

    let mut over_limit = SnapshotAssembler::new(CLUSTER, 9);
    assert!(matches!(
        over_limit.push(chunks[0].clone()),
        Err(CodecError::Invalid {
            field: "header.total_size",
            ..
        })
    ));

    let mut other_cluster = SnapshotAssembler::new(CLUSTER + 1, 1024);
    assert!(matches!(
        other_cluster.push(chunks[0].clone()),
        Err(CodecError::ClusterMismatch { .. })
    ));

    let mut empty = SnapshotAssembler::new(CLUSTER, 1024);
    assert_eq!(
        empty.push(pb::SnapshotChunk { chunk: None }),
        Err(CodecError::MissingField("chunk"))
    );
    assert_eq!(
        SnapshotAssembler::new(CLUSTER, 1024).finish(),
        Err(CodecError::MissingField("chunk.header"))
    );
}

#[test]
fn a_header_must_carry_an_install_snapshot_without_data() {
    let mut with_data = SnapshotAssembler::new(CLUSTER, 1024);
    let header = pb::SnapshotHeader {
        message: Some(wire_snapshot(Some(pb::SnapshotMeta {
            index: 4,
            term: 2,
            conf_state: Some(pb::ConfState::default()),
        }))),
        total_size: 3,
    };
    assert!(matches!(
        with_data.push(pb::SnapshotChunk {
            chunk: Some(pb::snapshot_chunk::Chunk::Header(header)),
        }),
        Err(CodecError::Invalid {
            field: "header.message",
            ..
        })
    ));

    let mut wrong_kind = SnapshotAssembler::new(CLUSTER, 1024);
    let header = pb::SnapshotHeader {
        message: Some(envelope(Body::TimeoutNow(pb::TimeoutNow {}))),
        total_size: 0,
    };
    assert!(matches!(
        wrong_kind.push(pb::SnapshotChunk {
            chunk: Some(pb::snapshot_chunk::Chunk::Header(header)),
        }),
        Err(CodecError::Invalid {
            field: "header.message",
            ..
        })
    ));
}
