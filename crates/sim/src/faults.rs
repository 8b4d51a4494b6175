//! What one seed decides about a run: the cluster's size and Raft settings, how hostile the
//! network and the machines are, and how busy the clients are; the nemesis that turns those
//! rates into crashes, restarts and partitions; and the [`Mutation`]s that deliberately break
//! the *simulator's* caller code to prove the invariants bite.
//!
//! Rates follow "swarm testing": each fault or workload kind is switched off entirely in some
//! seeds, so that rare interleavings of the remaining ones get room to happen, instead of every
//! seed being the same uniform soup.

use super::rng::Rng;

/// Rates are in parts per million per simulated tick (or per message, for the network).
#[derive(Debug, Clone)]
pub struct Profile {
    /// Voters at bootstrap: 3, 5 or 7.
    pub cluster_size: usize,
    /// `Config::election_tick`.
    pub election_tick: u32,
    /// `Config::heartbeat_tick`.
    pub heartbeat_tick: u32,
    /// `Config::max_size_per_msg` (small values force many small appends).
    pub max_size_per_msg: u64,
    /// `Config::max_inflight_msgs` (small values exercise flow control).
    pub max_inflight_msgs: usize,
    /// `Config::pre_vote`.
    pub pre_vote: bool,
    /// `Config::check_quorum`.
    pub check_quorum: bool,
    /// `Config::promotable_lag`.
    pub promotable_lag: u64,

    /// Per message: lost.
    pub drop_ppm: u32,
    /// Per message: delivered twice.
    pub dup_ppm: u32,
    /// Per message: delivery delay is drawn from `1..=max_delay` ticks (reordering follows).
    pub max_delay: u64,
    /// Per tick: a symmetric or one-way partition starts.
    pub partition_ppm: u32,
    /// Per tick: every partition heals.
    pub heal_ppm: u32,
    /// Per tick: a live node crashes.
    pub crash_ppm: u32,
    /// Per Ready: the node crashes part-way through handling it.
    pub crash_in_ready_ppm: u32,
    /// Per election won: the new leader crashes within a few heartbeats (before its own entries
    /// spread: the Figure 8 situation).
    pub leader_crash_ppm: u32,
    /// Per tick: a crashed node restarts.
    pub restart_ppm: u32,
    /// Per node and tick: the node misses the tick (clock skew).
    pub skip_tick_ppm: u32,

    /// Per tick: a batch of client proposals.
    pub propose_ppm: u32,
    /// Largest batch of proposals in one tick.
    pub propose_batch: u64,
    /// Per tick: a membership change.
    pub conf_change_ppm: u32,
    /// Per tick: a leadership transfer.
    pub transfer_ppm: u32,
    /// Per tick: a node compacts its log into a snapshot.
    pub snapshot_ppm: u32,
    /// Snapshots are taken only when at least this many entries are applied past the log start.
    pub snapshot_min_entries: u64,
    /// Per tick: a ReadIndex read.
    pub read_ppm: u32,
    /// Per tick: a node is told to campaign now.
    pub campaign_ppm: u32,
    /// Per dropped message: the sender is told the peer is unreachable.
    pub unreachable_ppm: u32,
}

impl Profile {
    /// The profile a seed decides.
    pub fn from_rng(rng: &mut Rng) -> Profile {
        // A rate that is off in a quarter of the seeds and otherwise uniform in `lo..=hi`.
        let swarm = |rng: &mut Rng, lo: u32, hi: u32| -> u32 {
            if rng.chance(250_000) {
                0
            } else {
                rng.between(u64::from(lo), u64::from(hi)) as u32
            }
        };
        let cluster_size = [3, 5, 7][rng.below(3) as usize];
        let election_tick = rng.between(10, 20) as u32;
        let heartbeat_tick = rng.between(1, 3) as u32;
        let max_size_per_msg = [64, 512, 4096, 1 << 20][rng.below(4) as usize];
        let max_inflight_msgs = [1, 4, 64, 256][rng.below(4) as usize];
        Profile {
            cluster_size,
            election_tick,
            heartbeat_tick,
            max_size_per_msg,
            max_inflight_msgs,
            pre_vote: rng.chance(850_000),
            check_quorum: rng.chance(850_000),
            promotable_lag: [0, 8, 64][rng.below(3) as usize],
            drop_ppm: swarm(rng, 1_000, 150_000),
            dup_ppm: swarm(rng, 1_000, 50_000),
            max_delay: rng.between(1, 4),
            partition_ppm: swarm(rng, 500, 8_000),
            heal_ppm: rng.between(5_000, 40_000) as u32,
            crash_ppm: swarm(rng, 200, 6_000),
            crash_in_ready_ppm: swarm(rng, 500, 20_000),
            leader_crash_ppm: swarm(rng, 20_000, 300_000),
            restart_ppm: rng.between(10_000, 80_000) as u32,
            skip_tick_ppm: swarm(rng, 1_000, 100_000),
            propose_ppm: rng.between(50_000, 600_000) as u32,
            propose_batch: rng.between(1, 8),
            conf_change_ppm: swarm(rng, 1_000, 20_000),
            transfer_ppm: swarm(rng, 500, 8_000),
            snapshot_ppm: swarm(rng, 2_000, 40_000),
            snapshot_min_entries: rng.between(1, 64),
            read_ppm: swarm(rng, 10_000, 200_000),
            campaign_ppm: swarm(rng, 100, 3_000),
            unreachable_ppm: swarm(rng, 10_000, 500_000),
        }
    }

    /// A fault-free profile for hand-written scenarios: reliable, in-order-enough network,
    /// no crashes, no background workload. Scenarios drive everything themselves.
    pub fn calm(cluster_size: usize) -> Profile {
        Profile {
            cluster_size,
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            promotable_lag: 64,
            drop_ppm: 0,
            dup_ppm: 0,
            max_delay: 1,
            partition_ppm: 0,
            heal_ppm: 0,
            crash_ppm: 0,
            crash_in_ready_ppm: 0,
            leader_crash_ppm: 0,
            restart_ppm: 0,
            skip_tick_ppm: 0,
            propose_ppm: 0,
            propose_batch: 1,
            conf_change_ppm: 0,
            transfer_ppm: 0,
            snapshot_ppm: 0,
            snapshot_min_entries: 1,
            read_ppm: 0,
            campaign_ppm: 0,
            unreachable_ppm: 0,
        }
    }
}

/// A deliberate bug in the simulator's own caller code (never in the core), used to prove that
/// the invariants catch the class of mistake it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Faithful caller.
    None,
    /// The storage "forgets" the persisted vote when the node crashes (a store that does not
    /// fsync its hard state): after restart the node may vote twice in one term.
    ForgetVoteOnCrash,
    /// The caller sends a Ready's messages *before* persisting its entries and hard state,
    /// so a crash in between loses entries the node already acknowledged (pitfalls 1-2).
    SendBeforePersist,
    /// The caller serves a ReadIndex read as soon as the ReadState arrives, without waiting for
    /// its state machine to apply up to the read index (pitfall 18).
    ReadBeforeApply,
    /// A lying transport that, when it loses an Append, answers the leader with a successful
    /// AppendResponse on the follower's behalf: the leader counts replicas that do not exist.
    LyingAcks,
}

impl Mutation {
    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Mutation> {
        Some(match name {
            "none" => Mutation::None,
            "forget-vote" => Mutation::ForgetVoteOnCrash,
            "send-before-persist" => Mutation::SendBeforePersist,
            "read-before-apply" => Mutation::ReadBeforeApply,
            "lying-acks" => Mutation::LyingAcks,
            _ => return None,
        })
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::None => "none",
            Mutation::ForgetVoteOnCrash => "forget-vote",
            Mutation::SendBeforePersist => "send-before-persist",
            Mutation::ReadBeforeApply => "read-before-apply",
            Mutation::LyingAcks => "lying-acks",
        }
    }
}

impl super::Sim {
    /// The nemesis: crashes, restarts and partitions, at the seed's rates.
    pub(super) fn inject_faults(&mut self) -> Result<(), super::invariants::Violation> {
        use super::Liveness;
        let p = self.profile.clone();
        let due: Vec<(u64, u64)> = self
            .crash_at
            .iter()
            .filter(|&(_, &(at, _))| at <= self.now)
            .map(|(&id, &(_, incarnation))| (id, incarnation))
            .collect();
        for (id, incarnation) in due {
            self.crash_at.remove(&id);
            if self
                .nodes
                .get(&id)
                .is_some_and(|n| n.incarnation == incarnation)
            {
                self.crash(id);
            }
        }
        if self.fault_rng.chance(p.crash_ppm) {
            let up = self.up_nodes();
            let down = self
                .nodes
                .values()
                .filter(|n| n.state == Liveness::Down)
                .count();
            // Mostly keep a majority running so the run makes progress; sometimes do not.
            let cap = (p.cluster_size - 1) / 2;
            if (down < cap || self.fault_rng.chance(100_000))
                && let Some(id) = self.fault_rng.pick(&up)
            {
                self.crash(id);
            }
        }
        if self.fault_rng.chance(p.restart_ppm) {
            let down: Vec<u64> = self
                .nodes
                .values()
                .filter(|n| n.state == Liveness::Down)
                .map(|n| n.id)
                .collect();
            if let Some(id) = self.fault_rng.pick(&down) {
                self.restart(id)?;
            }
        }
        if self.fault_rng.chance(p.partition_ppm) {
            let mut ids: Vec<u64> = self
                .nodes
                .values()
                .filter(|n| n.state != Liveness::Retired)
                .map(|n| n.id)
                .collect();
            if ids.len() >= 2 {
                self.stats.partitions += 1;
                self.fault_rng.shuffle(&mut ids);
                match self.fault_rng.below(3) {
                    0 => {
                        let k = self.fault_rng.between(1, ids.len() as u64 - 1) as usize;
                        let (a, b) = ids.split_at(k);
                        self.trace_line(|| format!("partition {a:?} | {b:?}"));
                        self.net.partition(a, b);
                    }
                    1 => {
                        self.trace_line(|| format!("cut {} -> {}", ids[0], ids[1]));
                        self.net.cut_one_way(ids[0], ids[1]);
                    }
                    _ => {
                        // One node hears nobody (or nobody hears it), e.g. a leader that can
                        // still send heartbeats but never receives the answers.
                        let x = ids[0];
                        let inbound = self.fault_rng.chance(500_000);
                        self.trace_line(|| format!("isolate {x} one way (inbound {inbound})"));
                        for &y in &ids[1..] {
                            if inbound {
                                self.net.cut_one_way(y, x);
                            } else {
                                self.net.cut_one_way(x, y);
                            }
                        }
                    }
                }
            }
        }
        if self.net.is_partitioned() && self.fault_rng.chance(p.heal_ppm) {
            self.trace_line(|| "heal".to_string());
            self.net.heal();
        }
        Ok(())
    }
}
