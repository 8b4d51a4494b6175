//! The bounds every incoming message must respect before the protocol looks at it.
//!
//! No real log or term gets anywhere near 2^62; bigger numbers are malformed input, and
//! refusing them up front keeps every `+ 1` in the protocol free of overflow.

use crate::types::{Message, MessageBody};

const SANE_LIMIT: u64 = 1 << 62;

/// Whether every index and term `m` carries is below the limit.
pub(crate) fn is_sane(m: &Message) -> bool {
    let ok = |v: u64| v < SANE_LIMIT;
    ok(m.term)
        && match &m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            }
            | MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => ok(*last_index) && ok(*last_term),
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                ok(*prev_index)
                    && ok(*prev_term)
                    && ok(*commit)
                    && entries.iter().all(|e| ok(e.index) && ok(e.term))
            }
            MessageBody::AppendResponse {
                index,
                hint_index,
                hint_term,
                ..
            } => ok(*index) && ok(*hint_index) && ok(*hint_term),
            MessageBody::Heartbeat { commit, .. } => ok(*commit),
            MessageBody::InstallSnapshot { snapshot } => {
                ok(snapshot.meta.index) && ok(snapshot.meta.term)
            }
            MessageBody::ReadIndexResponse { index, .. } => ok(*index),
            MessageBody::PreVoteResponse { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::TimeoutNow
            | MessageBody::ReadIndex { .. } => true,
        }
}
