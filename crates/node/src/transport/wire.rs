//! The transport's view of the wire format: a Raft message in its cluster envelope.
//!
//! The conversions themselves live in [`crate::codec`]; this adapter pins the two calls the
//! transport makes, so the transport never depends on the codec's other helpers.

use flotilla_proto::raft::RaftEnvelope;
use flotilla_raft::Message;

/// Wraps `msg` for the wire.
pub fn to_envelope(cluster_id: u64, msg: Message) -> RaftEnvelope {
    crate::codec::encode_message(cluster_id, msg)
}

/// Unwraps an envelope received by a member of `cluster_id`; a malformed one is an error,
/// never a panic.
pub fn from_envelope(cluster_id: u64, env: RaftEnvelope) -> Result<Message, String> {
    crate::codec::decode_message(cluster_id, env).map_err(|e| e.to_string())
}
