//! The node's tunables ([`Config`]) and the crate-level [`Error`].
//!
//! Everything time-like is counted in ticks so the core never reads a clock; randomness comes
//! from `seed` so a run replays exactly.

use crate::storage::StorageError;
use crate::types::{NO_NODE, NodeId};

/// Why a node could not be created or a step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration (or the stored state it is combined with) is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The storage failed; the caller must stop the node.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// How a node behaves. Build it with [`Config::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Base election timeout in ticks; the effective timeout is drawn from
    /// `[election_tick, 2 * election_tick)` by the seeded RNG.
    pub election_tick: u32,
    /// Heartbeat interval in ticks (must be smaller than `election_tick`).
    pub heartbeat_tick: u32,
    /// Maximum bytes of entries ([`Entry::size`](crate::Entry::size)) per Append message.
    pub max_size_per_msg: u64,
    /// Flow control: maximum un-acknowledged Append messages per follower.
    pub max_inflight_msgs: usize,
    /// Run a pre-vote round before a real election (thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down.
    pub check_quorum: bool,
    /// Last index the caller's state machine has applied (used on restart).
    pub applied: u64,
    /// A learner may be promoted only if no snapshot is in flight to it and its match index
    /// is within this many entries of the leader's last index — or has reached where the
    /// leader's log ended one to two election timeouts ago, so that a learner keeping pace
    /// with a leader under sustained load (never within a fixed bound when polled) is
    /// promotable too.
    pub promotable_lag: u64,
    /// Seeds the node's own deterministic RNG.
    pub seed: u64,
}

impl Config {
    /// Defaults: election 10 ticks, heartbeat 2, 1 MiB per message, 256 in flight, pre-vote and
    /// check-quorum on, applied 0, promotable lag 64, seed = id.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            applied: 0,
            promotable_lag: 64,
            seed: id,
        }
    }

    /// Checks the values are usable.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.id == NO_NODE {
            return Err(Error::Config("id must not be 0".into()));
        }
        if self.heartbeat_tick == 0 {
            return Err(Error::Config("heartbeat_tick must be > 0".into()));
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(Error::Config(
                "election_tick must be greater than heartbeat_tick".into(),
            ));
        }
        if self.max_inflight_msgs == 0 {
            return Err(Error::Config("max_inflight_msgs must be > 0".into()));
        }
        if self.max_size_per_msg == 0 {
            return Err(Error::Config("max_size_per_msg must be > 0".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::new(1);
        assert!(c.validate().is_ok());
        assert_eq!(c.election_tick, 10);
        assert_eq!(c.heartbeat_tick, 2);
        assert_eq!(c.seed, 1);
        assert!(c.pre_vote && c.check_quorum);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Config::new(0).validate().is_err());
        let mut c = Config::new(1);
        c.election_tick = 2;
        assert!(c.validate().is_err());
        let mut c = Config::new(1);
        c.heartbeat_tick = 0;
        assert!(c.validate().is_err());
        let mut c = Config::new(1);
        c.max_inflight_msgs = 0;
        assert!(c.validate().is_err());
        let mut c = Config::new(1);
        c.max_size_per_msg = 0;
        assert!(c.validate().is_err());
    }
}
