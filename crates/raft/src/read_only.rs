//! [`ReadOnly`]: the leader's queue of ReadIndex requests (Raft thesis §6.4), as etcd-io/raft's
//! `read_only.go`.
//!
//! A request is answered with the commit index it arrived at, but only once a heartbeat round
//! sent after it has been acknowledged by a majority of voters: until then this leader might
//! have been deposed and the index might miss writes committed by its successor. Requests that
//! arrive before the leader has committed an entry of its own term are *deferred*, because its
//! commit index may still lag what earlier leaders committed (pitfall 18).
//!
//! This module only keeps the books; the protocol (`raft/leader.rs`) sends the heartbeats and
//! the answers.

use std::collections::{BTreeSet, VecDeque};

use crate::quorum;
use crate::types::NodeId;

/// A ReadIndex request waiting for its heartbeat round.
pub(crate) struct ReadRequest {
    /// The caller's request id, echoed in the heartbeat round that confirms it.
    pub(crate) ctx: Vec<u8>,
    /// The leader's commit index when the request arrived.
    pub(crate) index: u64,
    /// Who asked: the leader itself or a follower that forwarded its caller's request.
    pub(crate) from: NodeId,
    acks: BTreeSet<NodeId>,
}

/// Pending ReadIndex requests of the current leadership; cleared on every role or term change.
#[derive(Default)]
pub(crate) struct ReadOnly {
    queue: VecDeque<ReadRequest>,
    /// Requests that arrived before the leader committed an entry of its term (pitfall 18).
    deferred: Vec<(Vec<u8>, NodeId)>,
}

impl ReadOnly {
    /// Drops every request: they are never answered, the caller times out and retries.
    pub(crate) fn reset(&mut self) {
        self.queue.clear();
        self.deferred.clear();
    }

    /// Keeps a request until the leader has committed an entry of its own term.
    pub(crate) fn defer(&mut self, ctx: Vec<u8>, from: NodeId) {
        self.deferred.push((ctx, from));
    }

    /// The deferred requests, to be started now that the leader's commit index is current.
    pub(crate) fn take_deferred(&mut self) -> Vec<(Vec<u8>, NodeId)> {
        std::mem::take(&mut self.deferred)
    }

    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Queues a request at commit index `index`; the leader (`me`) has acknowledged it.
    pub(crate) fn add(&mut self, ctx: Vec<u8>, index: u64, from: NodeId, me: NodeId) {
        self.queue.push_back(ReadRequest {
            ctx,
            index,
            from,
            acks: BTreeSet::from([me]),
        });
    }

    /// Records `from`'s acknowledgement of the heartbeat round `ctx`. Returns the requests it
    /// confirms, oldest first: a majority confirming one round confirms every earlier request
    /// too, since the leader was still leader when it sent the later round.
    pub(crate) fn recv_ack(
        &mut self,
        from: NodeId,
        ctx: &[u8],
        voters: &BTreeSet<NodeId>,
    ) -> Vec<ReadRequest> {
        let Some(pos) = self.queue.iter().position(|r| r.ctx == ctx) else {
            return Vec::new();
        };
        self.queue[pos].acks.insert(from);
        let acked = self.queue[pos]
            .acks
            .iter()
            .filter(|id| voters.contains(id))
            .count();
        if acked >= quorum::majority(voters.len()) {
            self.queue.drain(..=pos).collect()
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_confirms_the_round_and_every_earlier_one() {
        let voters = BTreeSet::from([1, 2, 3]);
        let mut ro = ReadOnly::default();
        ro.add(b"a".to_vec(), 5, 1, 1);
        ro.add(b"b".to_vec(), 6, 2, 1);
        ro.add(b"c".to_vec(), 7, 1, 1);
        assert!(ro.recv_ack(9, b"b", &voters).is_empty(), "a non-voter");
        let done = ro.recv_ack(3, b"b", &voters);
        let got: Vec<_> = done.iter().map(|r| (r.ctx.clone(), r.index)).collect();
        assert_eq!(got, vec![(b"a".to_vec(), 5), (b"b".to_vec(), 6)]);
        assert!(ro.recv_ack(3, b"b", &voters).is_empty(), "answered once");
    }
}
