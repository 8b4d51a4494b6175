//! The replicated state machine every simulated node applies committed entries to.
//!
//! It is a hash chain: `chain = fold(chain, hash(entry))` for every applied entry, plus the
//! configuration the applied prefix describes (needed to take a snapshot at the applied index).
//! Two nodes that applied the same prefix have the same chain, so comparing one `u64` per index
//! compares whole histories (state machine safety), and the snapshot image is 16 bytes, which
//! keeps InstallSnapshot cheap enough to happen often.

use flotilla_raft::{ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, Snapshot};

use super::rng::{fold, hash_bytes};

/// A node's applied state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// Index of the last applied entry.
    pub applied: u64,
    /// Hash chain over every applied entry.
    pub chain: u64,
    /// Configuration as of `applied`.
    pub conf: ConfState,
}

/// A hash of everything that makes an entry what it is.
pub fn entry_hash(e: &Entry) -> u64 {
    let kind = match e.kind {
        EntryKind::Normal => 1,
        EntryKind::ConfChange => 2,
    };
    fold(fold(fold(kind, e.index), e.term), hash_bytes(&e.data))
}

impl StateMachine {
    /// The state of a node that has applied nothing, with its bootstrap configuration.
    pub fn bootstrap(conf: ConfState) -> StateMachine {
        StateMachine {
            applied: 0,
            chain: 0,
            conf,
        }
    }

    /// The serialised image stored in snapshots.
    pub fn image(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.applied.to_le_bytes());
        out.extend_from_slice(&self.chain.to_le_bytes());
        out
    }

    /// Restores the state a snapshot describes.
    pub fn from_snapshot(snap: &Snapshot) -> Result<StateMachine, String> {
        let data = &snap.data;
        if snap.meta.index == 0 && data.is_empty() {
            return Ok(StateMachine::bootstrap(snap.meta.conf_state.clone()));
        }
        if data.len() != 16 {
            return Err(format!("snapshot image of {} bytes", data.len()));
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&data[..8]);
        let applied = u64::from_le_bytes(word);
        word.copy_from_slice(&data[8..]);
        let chain = u64::from_le_bytes(word);
        if applied != snap.meta.index {
            return Err(format!(
                "snapshot image at {applied} stored under index {}",
                snap.meta.index
            ));
        }
        Ok(StateMachine {
            applied,
            chain,
            conf: snap.meta.conf_state.clone(),
        })
    }

    /// Applies one committed entry; the caller has checked it is the next one. `cc` is the
    /// membership change a `ConfChange` entry carries (the simulator knows it from the proposal,
    /// which keeps this state machine independent of the core's encoding).
    pub fn apply(&mut self, e: &Entry, cc: Option<&ConfChange>) -> Result<(), String> {
        if e.kind == EntryKind::ConfChange {
            let cc = cc.ok_or_else(|| {
                format!(
                    "conf change entry {}/{} was never proposed",
                    e.index, e.term
                )
            })?;
            apply_conf_change(&mut self.conf, cc);
        }
        self.applied = e.index;
        self.chain = fold(self.chain, entry_hash(e));
        Ok(())
    }
}

/// What a committed single-server change does to a configuration (thesis §4.1).
pub fn apply_conf_change(conf: &mut ConfState, cc: &ConfChange) {
    match cc.kind {
        ConfChangeKind::AddLearner => {
            if !conf.voters.contains(&cc.node_id) {
                conf.learners.insert(cc.node_id);
            }
        }
        ConfChangeKind::PromoteLearner => {
            conf.learners.remove(&cc.node_id);
            conf.voters.insert(cc.node_id);
        }
        ConfChangeKind::RemoveNode => {
            conf.learners.remove(&cc.node_id);
            conf.voters.remove(&cc.node_id);
        }
        ConfChangeKind::AddNode => {
            if !conf.contains(cc.node_id) {
                conf.voters.insert(cc.node_id);
            }
        }
    }
}
