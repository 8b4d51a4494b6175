//! [`Waiters`]: the clients waiting on the Raft loop — proposals and membership changes until
//! their entry is applied, ReadIndex requests until the leader confirms a read point.
//!
//! A waiter remembers the term its entry was proposed in: an entry applied at its index under
//! another term is someone else's (leadership changed and the log was rewritten), so its
//! client hears "leader changed", never another request's answer. Waiters whose client gave up
//! are forgotten on the next tick, and every change of the proposal count is mirrored in the
//! `proposals_pending` gauge here, in one place.

use std::collections::{BTreeMap, HashMap};

use flotilla_proto::internal;
use flotilla_raft::ReadState;
use tokio::sync::oneshot;

use crate::contract::{ProposalReply, ServerError};
use crate::metrics::Metrics;

struct Waiter<T> {
    term: u64,
    reply: oneshot::Sender<Result<T, ServerError>>,
}

/// Everyone waiting on the loop.
pub struct Waiters {
    proposals: BTreeMap<u64, Waiter<internal::Response>>,
    conf_changes: BTreeMap<u64, Waiter<()>>,
    reads: HashMap<Vec<u8>, oneshot::Sender<Result<u64, ServerError>>>,
    read_seq: u64,
    /// When a proposal was last answered: a client that got its answer often sends the next
    /// request right away.
    last_answer: Option<std::time::Instant>,
    metrics: Metrics,
}

impl Waiters {
    /// No one waiting yet.
    pub fn new(metrics: Metrics) -> Self {
        Waiters {
            proposals: BTreeMap::new(),
            conf_changes: BTreeMap::new(),
            reads: HashMap::new(),
            read_seq: 0,
            last_answer: None,
            metrics,
        }
    }

    /// A proposal accepted at `(term, index)`.
    pub fn proposed(&mut self, term: u64, index: u64, reply: ProposalReply) {
        self.proposals.insert(index, Waiter { term, reply });
        self.set_pending();
    }

    /// A membership change accepted at `(term, index)`.
    pub fn conf_change_proposed(
        &mut self,
        term: u64,
        index: u64,
        reply: oneshot::Sender<Result<(), ServerError>>,
    ) {
        self.conf_changes.insert(index, Waiter { term, reply });
    }

    /// The context of the next ReadIndex request (unique for the life of the loop).
    pub fn next_read_ctx(&mut self) -> Vec<u8> {
        self.read_seq += 1;
        self.read_seq.to_be_bytes().to_vec()
    }

    /// A ReadIndex request sent with `ctx`.
    pub fn read_requested(
        &mut self,
        ctx: Vec<u8>,
        reply: oneshot::Sender<Result<u64, ServerError>>,
    ) {
        self.reads.insert(ctx, reply);
    }

    /// Answers the ReadIndex requests the core confirmed (index 0: it lost leadership).
    pub fn read_states(&mut self, states: Vec<ReadState>) {
        for rs in states {
            if let Some(reply) = self.reads.remove(&rs.ctx) {
                let r = if rs.index == 0 {
                    Err(ServerError::NoLeader)
                } else {
                    Ok(rs.index)
                };
                let _ = reply.send(r);
            }
        }
    }

    /// The waiter of the normal entry at `index`, applied under `term`: its reply when the
    /// entry is its own, `None` when no one waits. A waiter from another term hears "leader
    /// changed" at once.
    pub fn take_proposal(&mut self, index: u64, term: u64) -> Option<ProposalReply> {
        let w = self.proposals.remove(&index)?;
        if w.term == term {
            Some(w.reply)
        } else {
            self.metrics.proposals_failed.inc();
            let _ = w.reply.send(Err(ServerError::LeaderChanged));
            None
        }
    }

    /// The entry at `index` was applied but answers no one (the leader's no-op, or applied
    /// before a restart): its waiter, if any, hears "leader changed".
    pub fn not_applied(&mut self, index: u64) {
        if let Some(w) = self.proposals.remove(&index) {
            let _ = w.reply.send(Err(ServerError::LeaderChanged));
        }
    }

    /// The membership change at `index` was applied under `term`.
    pub fn conf_change_applied(&mut self, index: u64, term: u64) {
        if let Some(w) = self.conf_changes.remove(&index) {
            let r = if w.term == term {
                Ok(())
            } else {
                Err(ServerError::LeaderChanged)
            };
            let _ = w.reply.send(r);
        }
    }

    /// Leadership was lost: pending proposals may or may not commit; etcd answers "leader
    /// changed" and lets the client retry, and so do we.
    pub fn leadership_lost(&mut self) {
        for (_, w) in std::mem::take(&mut self.proposals) {
            self.metrics.proposals_failed.inc();
            let _ = w.reply.send(Err(ServerError::LeaderChanged));
        }
        for (_, w) in std::mem::take(&mut self.conf_changes) {
            let _ = w.reply.send(Err(ServerError::LeaderChanged));
        }
        self.set_pending();
    }

    /// Forgets waiters whose client gave up (the API side timed out).
    pub fn drop_abandoned(&mut self) {
        let before = self.proposals.len();
        self.proposals.retain(|_, w| !w.reply.is_closed());
        let dropped = before - self.proposals.len();
        if dropped > 0 {
            self.metrics.proposals_failed.inc_by(dropped as u64);
            self.set_pending();
        }
        self.conf_changes.retain(|_, w| !w.reply.is_closed());
        self.reads.retain(|_, r| !r.is_closed());
    }

    /// Answers everyone with `e` (the loop is stopping).
    pub fn fail_all(&mut self, e: ServerError) {
        for (_, w) in std::mem::take(&mut self.proposals) {
            let _ = w.reply.send(Err(e.clone()));
        }
        for (_, w) in std::mem::take(&mut self.conf_changes) {
            let _ = w.reply.send(Err(e.clone()));
        }
        for (_, r) in std::mem::take(&mut self.reads) {
            let _ = r.send(Err(e.clone()));
        }
        self.set_pending();
    }

    /// Clients were just answered (stamped once per applied batch, not per proposal).
    pub fn answered_now(&mut self) {
        self.last_answer = Some(std::time::Instant::now());
    }

    /// Whether input is likely within `window`: a proposal or read waits for peers' answers,
    /// or a client was answered less than `window` ago.
    pub fn expect_input(&self, window: std::time::Duration) -> bool {
        !self.proposals.is_empty()
            || !self.reads.is_empty()
            || self.last_answer.is_some_and(|t| t.elapsed() < window)
    }

    /// Mirrors the number of pending proposals in the gauge.
    pub fn set_pending(&self) {
        self.metrics
            .proposals_pending
            .set(self.proposals.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_from_another_term_hears_leader_changed() {
        let mut w = Waiters::new(Metrics::new());
        let (tx, mut rx) = oneshot::channel();
        w.proposed(2, 5, tx);
        assert!(w.take_proposal(5, 3).is_none());
        assert_eq!(rx.try_recv().unwrap(), Err(ServerError::LeaderChanged));
        let (tx, _rx) = oneshot::channel();
        w.proposed(3, 6, tx);
        assert!(w.take_proposal(6, 3).is_some());
    }

    #[test]
    fn read_states_answer_by_context_and_index_zero_means_no_leader() {
        let mut w = Waiters::new(Metrics::new());
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        let ca = w.next_read_ctx();
        let cb = w.next_read_ctx();
        assert_ne!(ca, cb);
        w.read_requested(ca.clone(), a);
        w.read_requested(cb.clone(), b);
        w.read_states(vec![
            ReadState { index: 9, ctx: ca },
            ReadState { index: 0, ctx: cb },
        ]);
        assert_eq!(ra.try_recv().unwrap(), Ok(9));
        assert_eq!(rb.try_recv().unwrap(), Err(ServerError::NoLeader));
    }
}
