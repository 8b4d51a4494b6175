//! Conversions between the consensus core's values ([`flotilla_raft::Message`] and everything it
//! carries) and the peer wire format of `proto/raft.proto` ([`flotilla_proto::raft`]).
//!
//! Encoding cannot fail and takes its input by value, so entry and snapshot payloads move into
//! the wire types without a copy. Decoding reads what came off the network, so it checks every
//! enum value, oneof and required field, and the structure Raft relies on (non-zero member ids,
//! disjoint voter and learner sets, contiguous entries whose terms never go backwards). Anything
//! malformed is a [`CodecError`] — never a panic and never a silently defaulted value: a message
//! misread as a plausible one (an empty body taken for a vote grant, say) is a safety bug, not
//! a nuisance. The cluster id of every envelope is checked here too, so traffic from another
//! cluster never reaches the core (docs/ARCHITECTURE.md, "Identity rules").
//!
//! Snapshots travel over their own RPC in chunks: [`snapshot_chunks`] splits an
//! `InstallSnapshot` message, [`SnapshotAssembler`] joins the chunks back with a size bound.
//!
//! The data of a `ConfChange` entry is the core's own encoding (`ConfChange::encode` in
//! flotilla-raft: the core must read it without prost, so it owns the format). The node only
//! fills the change's opaque `context` with a [`MemberContext`]: see [`member_conf_change`] and
//! [`member_context`].

use std::collections::BTreeSet;

use flotilla_proto::internal::MemberContext;
use flotilla_proto::raft as pb;
use flotilla_proto::raft::raft_envelope::Body;
use flotilla_raft::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, HardState, Message, MessageBody,
    NO_NODE, NodeId, Snapshot, SnapshotMeta,
};
use prost::Message as _;

/// Why bytes or a wire value could not be turned into a core value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The envelope names another cluster.
    #[error("message for cluster {got:#018x}, but this member belongs to cluster {expected:#018x}")]
    ClusterMismatch {
        /// This member's cluster id.
        expected: u64,
        /// The cluster id the sender put in the envelope.
        got: u64,
    },
    /// A required message field or oneof is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// An enum field holds a value this version does not know (or the unspecified zero).
    #[error("unknown value {value} for `{field}`")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A field is present but its value breaks a rule of the protocol.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The bytes are not a valid protobuf encoding of the expected message.
    #[error("malformed protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> CodecError {
    CodecError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Wraps `msg` for the wire, stamped with the sender's `cluster_id`.
pub fn encode_message(cluster_id: u64, msg: Message) -> pb::RaftEnvelope {
    let body = match msg.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => Body::PreVote(pb::PreVote {
            last_index,
            last_term,
        }),
        MessageBody::PreVoteResponse { reject } => {
            Body::PreVoteResponse(pb::PreVoteResponse { reject })
        }
        MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        } => Body::Vote(pb::Vote {
            last_index,
            last_term,
            transfer,
        }),
        MessageBody::VoteResponse { reject } => Body::VoteResponse(pb::VoteResponse { reject }),
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => Body::Append(pb::Append {
            prev_index,
            prev_term,
            entries: entries.into_iter().map(encode_entry).collect(),
            commit,
        }),
        MessageBody::AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } => Body::AppendResponse(pb::AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        }),
        MessageBody::Heartbeat { commit, ctx } => Body::Heartbeat(pb::Heartbeat { commit, ctx }),
        MessageBody::HeartbeatResponse { ctx } => {
            Body::HeartbeatResponse(pb::HeartbeatResponse { ctx })
        }
        MessageBody::InstallSnapshot { snapshot } => Body::InstallSnapshot(pb::InstallSnapshot {
            snapshot: Some(encode_snapshot(snapshot)),
        }),
        MessageBody::TimeoutNow => Body::TimeoutNow(pb::TimeoutNow {}),
        MessageBody::ReadIndex { ctx } => Body::ReadIndex(pb::ReadIndex { ctx }),
        MessageBody::ReadIndexResponse { ctx, index } => {
            Body::ReadIndexResponse(pb::ReadIndexResponse { ctx, index })
        }
    };
    pb::RaftEnvelope {
        cluster_id,
        from: msg.from,
        to: msg.to,
        term: msg.term,
        body: Some(body),
    }
}

/// Unwraps an envelope received by the member of cluster `local_cluster_id`.
///
/// Refuses envelopes of another cluster, zero sender or receiver ids, and malformed bodies.
/// Whether `to` is this member, and whether `from` is a member at all, is left to the caller
/// and the core (membership changes over time; the codec does not know it).
pub fn decode_message(
    local_cluster_id: u64,
    envelope: pb::RaftEnvelope,
) -> Result<Message, CodecError> {
    if envelope.cluster_id != local_cluster_id {
        return Err(CodecError::ClusterMismatch {
            expected: local_cluster_id,
            got: envelope.cluster_id,
        });
    }
    if envelope.from == NO_NODE {
        return Err(invalid("from", "member id 0 is reserved"));
    }
    if envelope.to == NO_NODE {
        return Err(invalid("to", "member id 0 is reserved"));
    }
    let term = envelope.term;
    let body = match envelope.body.ok_or(CodecError::MissingField("body"))? {
        Body::PreVote(b) => MessageBody::PreVote {
            last_index: b.last_index,
            last_term: b.last_term,
        },
        Body::PreVoteResponse(b) => MessageBody::PreVoteResponse { reject: b.reject },
        Body::Vote(b) => MessageBody::Vote {
            last_index: b.last_index,
            last_term: b.last_term,
            transfer: b.transfer,
        },
        Body::VoteResponse(b) => MessageBody::VoteResponse { reject: b.reject },
        Body::Append(b) => decode_append(term, b)?,
        Body::AppendResponse(b) => MessageBody::AppendResponse {
            reject: b.reject,
            index: b.index,
            hint_index: b.hint_index,
            hint_term: b.hint_term,
        },
        Body::Heartbeat(b) => MessageBody::Heartbeat {
            commit: b.commit,
            ctx: b.ctx,
        },
        Body::HeartbeatResponse(b) => MessageBody::HeartbeatResponse { ctx: b.ctx },
        Body::InstallSnapshot(b) => {
            let snapshot =
                decode_snapshot(b.snapshot.ok_or(CodecError::MissingField("snapshot"))?)?;
            // Index 0 is the core's "bootstrap configuration" snapshot, which teaches a member
            // that joined with an empty configuration the initial voters (they are not in the
            // log). It carries a configuration and nothing else.
            if snapshot.meta.index == 0 && (snapshot.meta.term != 0 || !snapshot.data.is_empty()) {
                return Err(invalid(
                    "snapshot.meta.index",
                    "a snapshot at index 0 carries only the bootstrap configuration (term 0, no data)",
                ));
            }
            MessageBody::InstallSnapshot { snapshot }
        }
        Body::TimeoutNow(pb::TimeoutNow {}) => MessageBody::TimeoutNow,
        Body::ReadIndex(b) => MessageBody::ReadIndex { ctx: b.ctx },
        Body::ReadIndexResponse(b) => MessageBody::ReadIndexResponse {
            ctx: b.ctx,
            index: b.index,
        },
    };
    Ok(Message {
        from: envelope.from,
        to: envelope.to,
        term,
        body,
    })
}

/// An Append's entries must continue the log right after `prev_index`, with terms that never
/// go backwards, never precede `prev_term` and never exceed the sender's term: that is the
/// shape of every log suffix a leader can send, and the core may rely on it.
fn decode_append(term: u64, append: pb::Append) -> Result<MessageBody, CodecError> {
    let mut expected_index = append.prev_index;
    let mut last_term = append.prev_term;
    let mut entries = Vec::with_capacity(append.entries.len());
    for wire in append.entries {
        let entry = decode_entry(wire)?;
        expected_index = expected_index
            .checked_add(1)
            .ok_or_else(|| invalid("entries.index", "log index overflow"))?;
        if entry.index != expected_index {
            return Err(invalid(
                "entries.index",
                format!("expected {expected_index}, got {}", entry.index),
            ));
        }
        if entry.term < last_term || entry.term > term {
            return Err(invalid(
                "entries.term",
                format!(
                    "entry {} has term {}, outside [{last_term}, {term}]",
                    entry.index, entry.term
                ),
            ));
        }
        last_term = entry.term;
        entries.push(entry);
    }
    Ok(MessageBody::Append {
        prev_index: append.prev_index,
        prev_term: append.prev_term,
        entries,
        commit: append.commit,
    })
}

/// A log entry for the wire.
pub fn encode_entry(entry: Entry) -> pb::Entry {
    let kind = match entry.kind {
        EntryKind::Normal => pb::EntryKind::Normal,
        EntryKind::ConfChange => pb::EntryKind::ConfChange,
    };
    pb::Entry {
        term: entry.term,
        index: entry.index,
        kind: kind as i32,
        data: entry.data,
    }
}

/// A log entry from the wire; refuses index 0 and unknown kinds.
pub fn decode_entry(entry: pb::Entry) -> Result<Entry, CodecError> {
    let kind = match pb::EntryKind::try_from(entry.kind) {
        Ok(pb::EntryKind::Normal) => EntryKind::Normal,
        Ok(pb::EntryKind::ConfChange) => EntryKind::ConfChange,
        Ok(pb::EntryKind::Unspecified) | Err(_) => {
            return Err(CodecError::UnknownEnum {
                field: "entry.kind",
                value: entry.kind,
            });
        }
    };
    if entry.index == 0 {
        return Err(invalid("entry.index", "log indexes start at 1"));
    }
    Ok(Entry {
        term: entry.term,
        index: entry.index,
        kind,
        data: entry.data,
    })
}

/// Hard state as a member stores it.
pub fn encode_hard_state(hard_state: &HardState) -> pb::HardState {
    pb::HardState {
        term: hard_state.term,
        vote: hard_state.vote,
        commit: hard_state.commit,
    }
}

/// Hard state read back from storage; a member never votes for itself before a term exists,
/// so a vote without a term means the record is corrupt.
pub fn decode_hard_state(hard_state: pb::HardState) -> Result<HardState, CodecError> {
    if hard_state.term == 0 && hard_state.vote != NO_NODE {
        return Err(invalid("hard_state.vote", "a vote cast in term 0"));
    }
    Ok(HardState {
        term: hard_state.term,
        vote: hard_state.vote,
        commit: hard_state.commit,
    })
}

/// A configuration for the wire (ids in ascending order).
pub fn encode_conf_state(conf_state: &ConfState) -> pb::ConfState {
    pb::ConfState {
        voters: conf_state.voters.iter().copied().collect(),
        learners: conf_state.learners.iter().copied().collect(),
    }
}

/// A configuration from the wire; refuses id 0, repeated ids and members that are both voter
/// and learner.
pub fn decode_conf_state(conf_state: pb::ConfState) -> Result<ConfState, CodecError> {
    let voters = id_set("conf_state.voters", conf_state.voters)?;
    let learners = id_set("conf_state.learners", conf_state.learners)?;
    if let Some(id) = voters.intersection(&learners).next() {
        return Err(invalid(
            "conf_state",
            format!("member {id:#x} is both voter and learner"),
        ));
    }
    Ok(ConfState { voters, learners })
}

fn id_set(field: &'static str, ids: Vec<NodeId>) -> Result<BTreeSet<NodeId>, CodecError> {
    let mut set = BTreeSet::new();
    for id in ids {
        if id == NO_NODE {
            return Err(invalid(field, "member id 0 is reserved"));
        }
        if !set.insert(id) {
            return Err(invalid(field, format!("member {id:#x} listed twice")));
        }
    }
    Ok(set)
}

/// Snapshot metadata for the wire.
pub fn encode_snapshot_meta(meta: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        index: meta.index,
        term: meta.term,
        conf_state: Some(encode_conf_state(&meta.conf_state)),
    }
}

/// Snapshot metadata from the wire; the configuration is required (restoring a snapshot
/// restores it, so a missing one would silently empty the cluster).
pub fn decode_snapshot_meta(meta: pb::SnapshotMeta) -> Result<SnapshotMeta, CodecError> {
    let conf_state = meta
        .conf_state
        .ok_or(CodecError::MissingField("snapshot.meta.conf_state"))?;
    Ok(SnapshotMeta {
        index: meta.index,
        term: meta.term,
        conf_state: decode_conf_state(conf_state)?,
    })
}

/// A snapshot for the wire.
pub fn encode_snapshot(snapshot: Snapshot) -> pb::Snapshot {
    pb::Snapshot {
        meta: Some(encode_snapshot_meta(&snapshot.meta)),
        data: snapshot.data,
    }
}

/// A snapshot from the wire.
pub fn decode_snapshot(snapshot: pb::Snapshot) -> Result<Snapshot, CodecError> {
    let meta = snapshot
        .meta
        .ok_or(CodecError::MissingField("snapshot.meta"))?;
    Ok(Snapshot {
        meta: decode_snapshot_meta(meta)?,
        data: snapshot.data,
    })
}

/// A membership change whose context describes the member, as the node proposes it.
pub fn member_conf_change(
    kind: ConfChangeKind,
    node_id: NodeId,
    member: &MemberContext,
) -> ConfChange {
    ConfChange {
        kind,
        node_id,
        context: member.encode_to_vec(),
    }
}

/// The member description carried by a committed change (empty fields when the change carried
/// no context, as a removal may).
pub fn member_context(change: &ConfChange) -> Result<MemberContext, CodecError> {
    Ok(MemberContext::decode(change.context.as_slice())?)
}

/// Splits an `InstallSnapshot` message into the chunks of the `InstallSnapshot` RPC: a header
/// carrying the message with empty snapshot data and the data's total size, then the data in
/// pieces of at most `chunk_size` bytes (at least 1).
///
/// Returns `None` when `msg` is not an `InstallSnapshot` message.
pub fn snapshot_chunks(
    cluster_id: u64,
    msg: Message,
    chunk_size: usize,
) -> Option<impl Iterator<Item = pb::SnapshotChunk>> {
    let Message {
        from,
        to,
        term,
        body: MessageBody::InstallSnapshot { mut snapshot },
    } = msg
    else {
        return None;
    };
    let data = std::mem::take(&mut snapshot.data);
    let header = pb::SnapshotHeader {
        message: Some(encode_message(
            cluster_id,
            Message {
                from,
                to,
                term,
                body: MessageBody::InstallSnapshot { snapshot },
            },
        )),
        total_size: data.len() as u64,
    };
    let header = std::iter::once(pb::SnapshotChunk {
        chunk: Some(pb::snapshot_chunk::Chunk::Header(header)),
    });
    let chunk_size = chunk_size.max(1);
    let mut offset = 0;
    let pieces = std::iter::from_fn(move || {
        if offset >= data.len() {
            return None;
        }
        let end = data.len().min(offset + chunk_size);
        let piece = data[offset..end].to_vec();
        offset = end;
        Some(pb::SnapshotChunk {
            chunk: Some(pb::snapshot_chunk::Chunk::Data(piece)),
        })
    });
    Some(header.chain(pieces))
}

/// Joins the chunks of one `InstallSnapshot` stream back into a message, refusing anything
/// that does not follow the header-then-data shape or exceeds the announced or allowed size.
#[derive(Debug)]
pub struct SnapshotAssembler {
    local_cluster_id: u64,
    max_size: u64,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    message: Message,
    total_size: u64,
    data: Vec<u8>,
}

/// The most the assembler reserves up front, whatever a header announces, so a hostile
/// header cannot make the member allocate memory it was never sent.
const MAX_PREALLOCATION: u64 = 16 << 20;

impl SnapshotAssembler {
    /// An assembler for a member of `local_cluster_id` that accepts snapshots of at most
    /// `max_size` bytes of data.
    pub fn new(local_cluster_id: u64, max_size: u64) -> Self {
        SnapshotAssembler {
            local_cluster_id,
            max_size,
            pending: None,
        }
    }

    /// Takes the next chunk of the stream.
    pub fn push(&mut self, chunk: pb::SnapshotChunk) -> Result<(), CodecError> {
        match chunk.chunk.ok_or(CodecError::MissingField("chunk"))? {
            pb::snapshot_chunk::Chunk::Header(header) => self.start(header),
            pb::snapshot_chunk::Chunk::Data(piece) => {
                let pending = self
                    .pending
                    .as_mut()
                    .ok_or_else(|| invalid("chunk", "data before the header"))?;
                let received = pending.data.len() as u64 + piece.len() as u64;
                if received > pending.total_size {
                    return Err(invalid(
                        "chunk.data",
                        format!(
                            "{received} bytes received, header announced {}",
                            pending.total_size
                        ),
                    ));
                }
                pending.data.extend_from_slice(&piece);
                Ok(())
            }
        }
    }

    fn start(&mut self, header: pb::SnapshotHeader) -> Result<(), CodecError> {
        if self.pending.is_some() {
            return Err(invalid("chunk.header", "a second header in one stream"));
        }
        let envelope = header
            .message
            .ok_or(CodecError::MissingField("header.message"))?;
        let message = decode_message(self.local_cluster_id, envelope)?;
        match &message.body {
            MessageBody::InstallSnapshot { snapshot } if snapshot.data.is_empty() => {}
            MessageBody::InstallSnapshot { .. } => {
                return Err(invalid(
                    "header.message",
                    "snapshot data belongs in the data chunks",
                ));
            }
            _ => {
                return Err(invalid("header.message", "not an InstallSnapshot message"));
            }
        }
        if header.total_size > self.max_size {
            return Err(invalid(
                "header.total_size",
                format!(
                    "{} bytes exceeds the limit of {}",
                    header.total_size, self.max_size
                ),
            ));
        }
        let reserve = header.total_size.min(MAX_PREALLOCATION);
        self.pending = Some(Pending {
            message,
            total_size: header.total_size,
            data: Vec::with_capacity(usize::try_from(reserve).unwrap_or(0)),
        });
        Ok(())
    }

    /// Bytes of snapshot data received so far.
    pub fn received_bytes(&self) -> u64 {
        self.pending.as_ref().map_or(0, |p| p.data.len() as u64)
    }

    /// The complete message, once the stream has ended.
    pub fn finish(self) -> Result<Message, CodecError> {
        let pending = self
            .pending
            .ok_or(CodecError::MissingField("chunk.header"))?;
        if pending.data.len() as u64 != pending.total_size {
            return Err(invalid(
                "chunk.data",
                format!(
                    "stream ended after {} of {} bytes",
                    pending.data.len(),
                    pending.total_size
                ),
            ));
        }
        let mut message = pending.message;
        if let MessageBody::InstallSnapshot { snapshot } = &mut message.body {
            snapshot.data = pending.data;
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
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
}
