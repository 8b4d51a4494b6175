//! Membership changes: which change a leader may propose now ([`ConfHistory::check`]), and
//! [`ConfHistory`], the configurations the log has carried since the last committed one — what
//! etcd-io/raft keeps in `confchange/` and its tracker's config.
//!
//! Changes are single-server and one at a time (Raft thesis §4.1): any two successive
//! configurations then share a majority, so no joint consensus is needed. A configuration
//! takes effect when its entry is *appended*, not when it commits, so a truncated entry must
//! take its configuration with it (pitfall 13); the history keeps every configuration back to
//! the last committed one for that.

use std::collections::VecDeque;

use crate::errors::ProposeError;
use crate::types::{ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, NO_NODE, NodeId};

/// The configuration in effect and the ones before it that a truncation could bring back.
pub(crate) struct ConfHistory {
    /// `(index, configuration that took effect there)`, oldest first; the front is the base
    /// (bootstrap, snapshot, or the latest committed change) and is never popped.
    history: VecDeque<(u64, ConfState)>,
    /// The configuration in effect: the latest appended one.
    current: ConfState,
}

impl ConfHistory {
    /// Starts from `base`, the configuration as of `index` (the snapshot, or 0 at bootstrap).
    pub(crate) fn new(index: u64, base: ConfState) -> ConfHistory {
        ConfHistory {
            current: base.clone(),
            history: VecDeque::from([(index, base)]),
        }
    }

    /// The configuration in effect.
    pub(crate) fn conf(&self) -> &ConfState {
        &self.current
    }

    /// Index of the latest appended configuration change (0 if none).
    pub(crate) fn pending_index(&self) -> u64 {
        self.history.back().map_or(0, |(i, _)| *i)
    }

    /// Whether the base is the empty configuration at index 0: a node that joined with
    /// nothing and has not yet been taught the bootstrap configuration.
    pub(crate) fn base_is_empty(&self) -> bool {
        self.history
            .front()
            .is_some_and(|(i, cs)| *i == 0 && *cs == ConfState::default())
    }

    /// Records the configuration changes among freshly appended `entries`. Returns whether
    /// the configuration changed.
    pub(crate) fn track(&mut self, entries: &[Entry]) -> bool {
        let mut changed = false;
        for e in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            let Some(cc) = ConfChange::decode(&e.data) else {
                continue;
            };
            let next = self.current.apply(&cc);
            self.history.push_back((e.index, next.clone()));
            self.current = next;
            changed = true;
        }
        changed
    }

    /// The entries from `first` on are being replaced: configurations they carried revert.
    /// Returns whether the configuration changed.
    pub(crate) fn revert_from(&mut self, first: u64) -> bool {
        let mut changed = false;
        while self.history.len() > 1 && self.history.back().is_some_and(|(i, _)| *i >= first) {
            self.history.pop_back();
            changed = true;
        }
        if changed && let Some((_, cs)) = self.history.back() {
            self.current = cs.clone();
        }
        changed
    }

    /// Forgets configurations older than the latest committed one: no truncation reaches
    /// behind the commit index.
    pub(crate) fn prune(&mut self, committed: u64) {
        while self.history.len() >= 2 && self.history[1].0 <= committed {
            self.history.pop_front();
        }
    }

    /// A snapshot replaced the log: its configuration is the new base.
    pub(crate) fn restore(&mut self, index: u64, cs: ConfState) {
        *self = ConfHistory::new(index, cs);
    }

    /// Whether the leader may propose `cc` now. `committed` is its commit index,
    /// `own_term_committed` whether it has committed an entry of its term, and `caught_up`
    /// answers for a learner to be promoted.
    ///
    /// # Errors
    /// [`ProposeError::LeaderNotReady`] before the leader's first commit of its term (it may
    /// not know the latest configuration yet); [`ProposeError::ConfChangePending`] while the
    /// previous change is uncommitted (one at a time); [`ProposeError::LearnerNotCaughtUp`]
    /// from `caught_up`; [`ProposeError::InvalidConfChange`] for a change that does not fit
    /// the configuration.
    pub(crate) fn check(
        &self,
        cc: &ConfChange,
        committed: u64,
        own_term_committed: bool,
        caught_up: impl FnOnce(NodeId) -> Result<(), ProposeError>,
    ) -> Result<(), ProposeError> {
        if !own_term_committed {
            return Err(ProposeError::LeaderNotReady);
        }
        let pending = self.pending_index();
        if pending > committed {
            return Err(ProposeError::ConfChangePending { index: pending });
        }
        let conf = &self.current;
        let id = cc.node_id;
        let invalid = |why: String| Err(ProposeError::InvalidConfChange(why));
        match cc.kind {
            ConfChangeKind::AddLearner | ConfChangeKind::AddNode if id == NO_NODE => {
                invalid("node id 0 is reserved".into())
            }
            ConfChangeKind::AddLearner | ConfChangeKind::AddNode if conf.contains(id) => {
                invalid(format!("{id} is already a member"))
            }
            ConfChangeKind::PromoteLearner if !conf.learners.contains(&id) => {
                invalid(format!("{id} is not a learner"))
            }
            ConfChangeKind::PromoteLearner => caught_up(id),
            ConfChangeKind::RemoveNode if !conf.contains(id) => {
                invalid(format!("{id} is not a member"))
            }
            ConfChangeKind::RemoveNode if conf.voters.len() == 1 && conf.voters.contains(&id) => {
                invalid("cannot remove the last voter".into())
            }
            ConfChangeKind::AddLearner | ConfChangeKind::AddNode | ConfChangeKind::RemoveNode => {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc_entry(index: u64, kind: ConfChangeKind, node_id: NodeId) -> Entry {
        Entry {
            term: 1,
            index,
            kind: EntryKind::ConfChange,
            data: ConfChange {
                kind,
                node_id,
                context: Vec::new(),
            }
            .encode(),
        }
    }

    #[test]
    fn truncation_restores_the_configuration_before_it() {
        let base = ConfState::with_voters([1, 2, 3]);
        let mut h = ConfHistory::new(0, base.clone());
        assert!(h.track(&[cc_entry(4, ConfChangeKind::AddLearner, 4)]));
        assert!(h.conf().learners.contains(&4));
        assert_eq!(h.pending_index(), 4);
        assert!(
            !h.revert_from(5),
            "entries after the change do not touch it"
        );
        assert!(h.revert_from(4));
        assert_eq!(h.conf(), &base);
        assert_eq!(h.pending_index(), 0);
    }

    #[test]
    fn a_committed_change_becomes_the_base() {
        let mut h = ConfHistory::new(0, ConfState::with_voters([1, 2, 3]));
        h.track(&[cc_entry(4, ConfChangeKind::AddLearner, 4)]);
        h.prune(4);
        assert!(
            !h.revert_from(4),
            "no truncation reaches behind the commit index"
        );
        assert!(h.conf().learners.contains(&4));
    }

    #[test]
    fn one_change_at_a_time() {
        let mut h = ConfHistory::new(0, ConfState::with_voters([1, 2, 3]));
        h.track(&[cc_entry(4, ConfChangeKind::AddLearner, 4)]);
        let cc = ConfChange {
            kind: ConfChangeKind::RemoveNode,
            node_id: 3,
            context: Vec::new(),
        };
        assert_eq!(
            h.check(&cc, 3, true, |_| Ok(())),
            Err(ProposeError::ConfChangePending { index: 4 })
        );
        assert_eq!(h.check(&cc, 4, true, |_| Ok(())), Ok(()));
        assert_eq!(
            h.check(&cc, 4, false, |_| Ok(())),
            Err(ProposeError::LeaderNotReady)
        );
    }
}
