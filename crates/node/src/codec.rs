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
mod tests;
