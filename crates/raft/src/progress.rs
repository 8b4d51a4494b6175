//! The leader's per-member replication state: [`Progress`] and its in-flight window, and the
//! public view of it ([`ProgressState`], [`ProgressStatus`]) that [`crate::RawNode::status`]
//! reports. The public types live here, not in the facade, so that the protocol and the
//! facade both depend on this module and it depends on neither.
//!
//! It follows etcd-io/raft's `tracker/progress.go`: Probe sends one Append at a time until the
//! logs are found to match; Replicate pipelines Appends optimistically (next_index advances on
//! send) bounded by [`Inflights`]; Snapshot waits for a snapshot to land. Match never goes
//! backwards (pitfall 7).

use std::collections::VecDeque;

/// A follower's replication state as the leader tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgressState {
    /// Finding the point where the logs match: one Append at a time.
    Probe,
    /// Streaming: Appends are pipelined up to the in-flight limit.
    Replicate,
    /// A snapshot is being sent; no Appends until it is acknowledged or reported.
    Snapshot,
}

/// The leader's view of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressStatus {
    /// Highest index known replicated on the member.
    pub match_index: u64,
    /// Next index to send.
    pub next_index: u64,
    /// Replication state.
    pub state: ProgressState,
    /// Heard from within the current check-quorum window.
    pub recent_active: bool,
    /// Index of the snapshot in flight (0 if none).
    pub pending_snapshot: u64,
    /// Whether the member is a learner.
    pub is_learner: bool,
    /// Ticks since the leader last heard from the member.
    pub ticks_since_contact: u64,
    /// It could be promoted now: no snapshot in flight and its match index within
    /// `promotable_lag` entries of the leader's last index or past where the leader's log
    /// ended one to two election timeouts ago (see [`Config::promotable_lag`](crate::Config::promotable_lag)).
    pub caught_up: bool,
}

/// The last indexes of un-acknowledged Append messages, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct Inflights {
    cap: usize,
    queue: VecDeque<u64>,
}

impl Inflights {
    pub(crate) fn new(cap: usize) -> Inflights {
        Inflights {
            cap,
            queue: VecDeque::new(),
        }
    }
    pub(crate) fn full(&self) -> bool {
        self.queue.len() >= self.cap
    }
    pub(crate) fn add(&mut self, last: u64) {
        self.queue.push_back(last);
    }
    /// Forgets every message whose entries are all acknowledged by `index`.
    pub(crate) fn free_to(&mut self, index: u64) {
        while self.queue.front().is_some_and(|&i| i <= index) {
            self.queue.pop_front();
        }
    }
    pub(crate) fn free_first(&mut self) {
        self.queue.pop_front();
    }
    pub(crate) fn reset(&mut self) {
        self.queue.clear();
    }
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// What the leader knows about one member.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub(crate) matched: u64,
    pub(crate) next: u64,
    pub(crate) state: ProgressState,
    /// In Probe: an Append was sent and not answered yet.
    pub(crate) probe_sent: bool,
    pub(crate) pending_snapshot: u64,
    pub(crate) recent_active: bool,
    pub(crate) is_learner: bool,
    pub(crate) ticks_since_contact: u64,
    pub(crate) inflights: Inflights,
    /// The member refused an Append at index 0: it joined with an empty configuration and
    /// needs the index-0 snapshot that carries the bootstrap configuration.
    pub(crate) needs_base_conf: bool,
}

impl Progress {
    pub(crate) fn new(next: u64, max_inflight: usize, is_learner: bool) -> Progress {
        Progress {
            matched: 0,
            next: next.max(1),
            state: ProgressState::Probe,
            probe_sent: false,
            pending_snapshot: 0,
            recent_active: false,
            is_learner,
            ticks_since_contact: 0,
            inflights: Inflights::new(max_inflight),
            needs_base_conf: false,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub(crate) fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub(crate) fn become_snapshot(&mut self, index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = index;
    }

    /// Records an acknowledgement of `n`. Returns whether match advanced; stale or duplicate
    /// acknowledgements change nothing.
    pub(crate) fn maybe_update(&mut self, n: u64) -> bool {
        let updated = self.matched < n;
        if updated {
            self.matched = n;
            self.probe_sent = false;
        }
        self.next = self.next.max(n + 1);
        updated
    }

    /// Handles a rejection of an Append whose `prev_index` was `rejected`; `hint` is the
    /// highest index that may match. Returns false if the rejection is stale.
    pub(crate) fn maybe_decr_to(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = rejected
            .min(hint.saturating_add(1))
            .max(self.matched + 1)
            .max(1);
        self.probe_sent = false;
        true
    }

    /// Whether sending more Appends must wait.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records that an Append ending at `last` (or an empty probe) was sent.
    pub(crate) fn sent_entries(&mut self, last: Option<u64>) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next = last + 1;
                    self.inflights.add(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }

    pub(crate) fn status(&self) -> ProgressStatus {
        ProgressStatus {
            match_index: self.matched,
            next_index: self.next,
            state: self.state,
            recent_active: self.recent_active,
            pending_snapshot: self.pending_snapshot,
            is_learner: self.is_learner,
            ticks_since_contact: self.ticks_since_contact,
            caught_up: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_bound_and_free() {
        let mut f = Inflights::new(3);
        f.add(5);
        f.add(10);
        assert!(!f.full());
        f.add(15);
        assert!(f.full());
        f.free_to(10);
        assert_eq!(f.len(), 1);
        f.free_first();
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn match_never_decreases() {
        let mut p = Progress::new(5, 4, false);
        assert!(p.maybe_update(7));
        assert!(!p.maybe_update(3));
        assert_eq!(p.matched, 7);
        assert_eq!(p.next, 8);
    }

    #[test]
    fn probe_pauses_after_one_send() {
        let mut p = Progress::new(5, 4, false);
        assert!(!p.is_paused());
        p.sent_entries(Some(9));
        assert!(p.is_paused());
        assert_eq!(p.next, 5, "probe does not advance next optimistically");
        p.maybe_update(9);
        assert!(!p.is_paused());
    }

    #[test]
    fn replicate_pipelines_until_inflight_full() {
        let mut p = Progress::new(1, 2, false);
        p.become_replicate();
        p.sent_entries(Some(3));
        assert_eq!(p.next, 4);
        p.sent_entries(Some(6));
        assert!(p.is_paused());
        p.maybe_update(3);
        p.inflights.free_to(3);
        assert!(!p.is_paused());
    }

    #[test]
    fn decr_ignores_stale_rejections() {
        let mut p = Progress::new(10, 4, false);
        p.sent_entries(None);
        // A rejection for an older probe is stale.
        assert!(!p.maybe_decr_to(5, 2));
        assert!(p.maybe_decr_to(9, 4));
        assert_eq!(p.next, 5);
        let mut r = Progress::new(1, 4, false);
        r.maybe_update(6);
        r.become_replicate();
        assert!(!r.maybe_decr_to(6, 0));
        assert!(r.maybe_decr_to(8, 0));
        assert_eq!(r.next, 7);
    }

    #[test]
    fn snapshot_state_pauses_and_probe_resumes_after_it() {
        let mut p = Progress::new(1, 4, false);
        p.become_snapshot(20);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next, 21);
        assert_eq!(p.pending_snapshot, 0);
    }
}
