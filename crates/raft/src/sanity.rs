//! The bounds every incoming message must respect before the protocol looks at it.
//!
//! No real log or term gets anywhere near 2^62; bigger numbers are malformed input, and
//! refusing them up front keeps every `+ 1` in the protocol free of overflow.
//!
//! Terms obey two more rules no correct sender breaks: an entry (or the last entry a snapshot
//! covers) has a term of at least 1, and no entry a message carries or names is from a term
//! later than the message's own. A message that breaks them was forged or corrupted; taking it
//! would give this member a log no leader can reconcile (a committed index whose term the
//! leader does not have), and leader and follower would trade Appends and rejections forever.

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
            } => ok(*last_index) && ok(*last_term) && *last_term <= m.term,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                ok(*prev_index)
                    && ok(*prev_term)
                    && *prev_term <= m.term
                    && ok(*commit)
                    && entries
                        .iter()
                        .all(|e| ok(e.index) && ok(e.term) && e.term >= 1 && e.term <= m.term)
            }
            MessageBody::AppendResponse {
                index,
                hint_index,
                hint_term,
                ..
            } => ok(*index) && ok(*hint_index) && ok(*hint_term),
            MessageBody::Heartbeat { commit, .. } => ok(*commit),
            MessageBody::InstallSnapshot { snapshot } => {
                let (index, term) = (snapshot.meta.index, snapshot.meta.term);
                ok(index) && ok(term) && (index == 0) == (term == 0) && term <= m.term
            }
            MessageBody::ReadIndexResponse { index, .. } => ok(*index),
            MessageBody::PreVoteResponse { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::TimeoutNow
            | MessageBody::ReadIndex { .. } => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ConfState, Entry, EntryKind, Snapshot, SnapshotMeta};

    fn msg(term: u64, body: MessageBody) -> Message {
        Message {
            from: 1,
            to: 2,
            term,
            body,
        }
    }

    fn snapshot(index: u64, term: u64) -> MessageBody {
        MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    conf_state: ConfState::with_voters([1, 2, 3]),
                },
                data: Vec::new(),
            },
        }
    }

    fn append(prev_term: u64, entry_term: u64) -> MessageBody {
        MessageBody::Append {
            prev_index: 4,
            prev_term,
            entries: vec![Entry {
                term: entry_term,
                index: 5,
                kind: EntryKind::Normal,
                data: Vec::new(),
            }],
            commit: 4,
        }
    }

    #[test]
    fn terms_no_correct_sender_uses_are_refused() {
        assert!(is_sane(&msg(3, snapshot(5, 2))));
        assert!(is_sane(&msg(3, snapshot(0, 0))));
        assert!(!is_sane(&msg(3, snapshot(5, 0))), "an entry of term 0");
        assert!(!is_sane(&msg(3, snapshot(0, 1))), "a term for no entry");
        assert!(
            !is_sane(&msg(3, snapshot(5, 4))),
            "from a later term than the message"
        );
        assert!(is_sane(&msg(3, append(2, 3))));
        assert!(!is_sane(&msg(3, append(4, 3))), "prev from a later term");
        assert!(!is_sane(&msg(3, append(2, 4))), "entry from a later term");
        assert!(!is_sane(&msg(3, append(2, 0))), "entry of term 0");
        let vote = |last_term| MessageBody::Vote {
            last_index: 9,
            last_term,
            transfer: false,
        };
        assert!(is_sane(&msg(3, vote(3))));
        assert!(
            !is_sane(&msg(3, vote(4))),
            "a candidate's log from its future"
        );
    }
}
