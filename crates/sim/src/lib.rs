//! A deterministic simulator for the consensus core, in the spirit of TigerBeetle's VOPR.
//!
//! One `u64` seed decides everything — cluster size, Raft settings, fault rates, the workload
//! and every random choice along the way — so a failing seed replays exactly. N
//! `RawNode<MemStorage>` talk through a simulated [`network::Network`]; time is the tick count.
//! A run has two phases: a *safety* phase of `steps` ticks with faults and a
//! busy workload, then a *liveness* phase that heals everything, restarts crashed nodes and
//! requires a leader to be elected and a new write to commit on every member within a bound.
//!
//! After every event (every Ready, every message sent) the [`invariants::Checker`] compares what
//! happened with the global history. Its assertions (`check!`) are always on, release builds
//! included, and a failure names the property, the seed, and the command that replays it.
//!
//! The run, the cluster ([`Sim`]) and its nodes are here; the rest of `impl Sim` is split by job:
//! `delivery` (the network's deliveries and the transport's loss reports), `host` (the caller
//! of the core: each Ready, persisted, sent and applied), `lifecycle` (crash, restart and the
//! liveness phase), [`faults`] (the seed's profile, the nemesis and the deliberate
//! [`Mutation`]s) and [`workload`] (the clients).
//!
//! This crate is the simulator only; it is used by flotilla-raft's `tests/simulation.rs` (the
//! CI slice of seeds, determinism, the paper's scenarios, mutation tests) and by its own binary
//! (`src/main.rs`, the many-seeds runner):
//!
//! ```text
//! cargo run --release -p flotilla-sim -- --seeds 0..10000 --steps 5000 --jobs 2
//! ```

#[macro_use]
pub mod invariants;
pub mod faults;
pub mod network;
pub mod rng;
pub mod state_machine;
pub mod workload;

mod delivery;
mod host;
mod lifecycle;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use flotilla_raft::{
    ConfChange, ConfChangeKind, Config, Entry, EntryKind, HardState, LogStore, MemStorage, Message,
    MessageBody, NO_NODE, NodeId, ProposeError, RawNode, Ready, Role, Status, Storage,
};

use faults::{Mutation, Profile};
use invariants::{Checker, Violation};
use network::Network;
use rng::{Rng, fold, mix64};
use state_machine::StateMachine;

/// How one run is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed that decides everything.
    pub seed: u64,
    /// Ticks of the safety phase (faults on).
    pub steps: u64,
    /// Print the trace.
    pub verbose: bool,
    /// A deliberate bug in the simulator's caller code (to prove the checks bite).
    pub mutation: Mutation,
}

impl Options {
    /// A faithful run of `seed` for `steps` ticks.
    pub fn new(seed: u64, steps: u64) -> Options {
        Options {
            seed,
            steps,
            verbose: false,
            mutation: Mutation::None,
        }
    }

    /// The command that replays this run with its trace.
    pub fn replay_command(&self) -> String {
        let mutation = if self.mutation == Mutation::None {
            String::new()
        } else {
            format!(" --mutation {}", self.mutation.name())
        };
        format!(
            "cargo run --release -p flotilla-sim -- --seed {} --steps {}{} --verbose",
            self.seed, self.steps, mutation
        )
    }
}

/// What a successful run did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Ticks simulated (both phases).
    pub ticks: u64,
    /// Messages sent.
    pub messages: u64,
    /// Leaders elected.
    pub leaders: u64,
    /// Node crashes (including crashes part-way through a Ready).
    pub crashes: u64,
    /// Node restarts.
    pub restarts: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Client writes acknowledged (applied).
    pub acked_writes: u64,
    /// ReadIndex reads served and checked.
    pub reads: u64,
    /// Membership changes proposed and accepted by a leader.
    pub conf_changes: u64,
    /// Snapshots taken by compaction.
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Ticks the liveness phase needed to converge.
    pub liveness_ticks: u64,
    /// Messages a leader sent before persisting their Ready (`Ready::early_messages`).
    pub early_messages: u64,
    /// Crashes between sending a Ready's early messages and its sync: the leader loses
    /// entries its followers may already hold.
    pub crashes_after_early_send: u64,
}

/// A successful run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Hash of the whole trace: the same seed must give the same hash.
    pub trace_hash: u64,
    /// Counters.
    pub stats: Stats,
    /// The cluster size the seed chose.
    pub cluster_size: usize,
}

/// A failed run: the broken property and how to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The run's options.
    pub options: Options,
    /// Tick at which it failed.
    pub tick: u64,
    /// What broke.
    pub violation: Violation,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation seed {} failed at tick {}: {}: {}\n  replay: {}",
            self.options.seed,
            self.tick,
            self.violation.property,
            self.violation.detail,
            self.options.replay_command()
        )
    }
}

/// Runs one seed through both phases. Panics inside the core are caught and reported as a
/// violation, so a many-seeds run goes on.
pub fn run(options: &Options) -> Result<Outcome, Failure> {
    let mut sim = Sim::new(options);
    let result = catch_unwind(AssertUnwindSafe(|| sim.run_phases()));
    let violation = match result {
        Ok(Ok(())) => {
            return Ok(Outcome {
                trace_hash: sim.trace,
                stats: sim.stats(),
                cluster_size: sim.profile.cluster_size,
            });
        }
        Ok(Err(v)) => v,
        Err(panic) => Violation {
            property: "no panics",
            detail: panic_message(panic.as_ref()),
        },
    };
    Err(Failure {
        options: options.clone(),
        tick: sim.now,
        violation,
    })
}

/// Runs one seed and panics with the seed and replay command if it fails (for tests).
pub fn run_or_panic(options: &Options) -> Outcome {
    match run(options) {
        Ok(outcome) => outcome,
        Err(failure) => panic!("{failure}"),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Whether a node process is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Running.
    Up,
    /// Crashed; its durable storage waits for a restart.
    Down,
    /// Removed from the cluster and shut down for good.
    Retired,
}

/// One simulated server: the core, its durable storage while down, and its state machine.
pub struct SimNode {
    id: NodeId,
    raw: Option<RawNode<MemStorage>>,
    /// The durable storage of a crashed node.
    parked: Option<MemStorage>,
    /// The applied state; persisted atomically with its index, so it survives crashes.
    sm: StateMachine,
    state: Liveness,
    role: Role,
    incarnation: u64,
    /// ReadStates waiting for the state machine to catch up.
    pending_reads: Vec<flotilla_raft::ReadState>,
}

impl SimNode {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Running, crashed or retired.
    pub fn state(&self) -> Liveness {
        self.state
    }
    /// Its applied state.
    pub fn state_machine(&self) -> &StateMachine {
        &self.sm
    }
    /// Its core, if running.
    pub fn raw(&self) -> Option<&RawNode<MemStorage>> {
        self.raw.as_ref()
    }
}

/// Calls the simulator makes on a node after the current Ready is done with (the transport's
/// reports about messages it could not deliver).
#[derive(Debug)]
enum Deferred {
    ReportSnapshot {
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
        ok: bool,
    },
    ReportUnreachable {
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
    },
}

/// An outstanding ReadIndex read.
#[derive(Debug, Clone, Copy)]
struct ReadStart {
    node: NodeId,
    acked_at_start: u64,
}

/// Rewrites or drops (`None`) messages as they are delivered (scenario tests).
pub type Filter = Box<dyn FnMut(Message) -> Option<Message>>;

/// The simulated cluster.
pub struct Sim {
    seed: u64,
    options: Options,
    profile: Profile,
    now: u64,
    nodes: BTreeMap<NodeId, Box<SimNode>>,
    net: Network,
    checker: Checker,
    fault_rng: Rng,
    work_rng: Rng,
    ready_rng: Rng,
    trace: u64,
    next_node_id: NodeId,
    next_client_id: u64,
    next_read_id: u64,
    reads: BTreeMap<u64, ReadStart>,
    retire_at: BTreeMap<NodeId, u64>,
    /// Nodes (and the incarnation) the nemesis crashes at a given tick.
    crash_at: BTreeMap<NodeId, (u64, u64)>,
    deferred: VecDeque<Deferred>,
    /// Every membership change a leader accepted, by the (index, term) of its entry.
    conf_changes: HashMap<(u64, u64), ConfChange>,
    faults_on: bool,
    workload_on: bool,
    /// A violation found inside a call that cannot return it; the next step reports it.
    poisoned: Option<Violation>,
    filter: Option<Filter>,
    stats: Stats,
}

impl Sim {
    /// A cluster as the seed decides it, bootstrapped with voters `1..=cluster_size`.
    pub fn new(options: &Options) -> Sim {
        let mut master = Rng::new(options.seed);
        let profile = Profile::from_rng(&mut master);
        let mut sim = Sim::with_profile(options, profile, &mut master);
        let voters: Vec<NodeId> = (1..=sim.profile.cluster_size as NodeId).collect();
        let conf = flotilla_raft::ConfState::with_voters(voters.iter().copied());
        for &id in &voters {
            sim.add_node(id, MemStorage::new_with_conf_state(conf.clone()))
                .unwrap_or_else(|v| panic!("bootstrap failed: {v:?}"));
        }
        sim.faults_on = true;
        sim.workload_on = true;
        sim
    }

    /// A scenario cluster: the given profile, nodes with the given (possibly pre-filled)
    /// storages, no faults and no background workload until the test turns them on.
    pub fn scenario(
        seed: u64,
        profile: Profile,
        storages: Vec<(NodeId, MemStorage)>,
    ) -> Result<Sim, Violation> {
        let mut options = Options::new(seed, 0);
        // Scenarios have no command line; SIM_VERBOSE=1 prints their trace.
        options.verbose = std::env::var_os("SIM_VERBOSE").is_some();
        let mut master = Rng::new(seed);
        let mut sim = Sim::with_profile(&options, profile, &mut master);
        for (id, store) in storages {
            let first = store.first_index().unwrap_or(1);
            let last = store.last_index().unwrap_or(0);
            if last >= first {
                let entries = store.entries(first, last + 1, u64::MAX).unwrap_or_default();
                sim.checker.after_append(id, &entries, &store)?;
            }
            sim.add_node(id, store)?;
        }
        Ok(sim)
    }

    fn with_profile(options: &Options, profile: Profile, master: &mut Rng) -> Sim {
        let net = Network::new(
            master.fork(),
            profile.drop_ppm,
            profile.dup_ppm,
            profile.max_delay,
        );
        Sim {
            seed: options.seed,
            options: options.clone(),
            now: 0,
            nodes: BTreeMap::new(),
            net,
            checker: Checker::default(),
            fault_rng: master.fork(),
            work_rng: master.fork(),
            ready_rng: master.fork(),
            trace: mix64(options.seed),
            next_node_id: profile.cluster_size as NodeId + 1,
            next_client_id: 1,
            next_read_id: 1,
            reads: BTreeMap::new(),
            retire_at: BTreeMap::new(),
            crash_at: BTreeMap::new(),
            deferred: VecDeque::new(),
            conf_changes: HashMap::new(),
            faults_on: false,
            workload_on: false,
            poisoned: None,
            filter: None,
            stats: Stats::default(),
            profile,
        }
    }

    /// The Raft configuration of node `id` in its `incarnation`.
    fn config(&self, id: NodeId, incarnation: u64, applied: u64) -> Config {
        let p = &self.profile;
        let mut c = Config::new(id);
        c.election_tick = p.election_tick;
        c.heartbeat_tick = p.heartbeat_tick;
        c.max_size_per_msg = p.max_size_per_msg;
        c.max_inflight_msgs = p.max_inflight_msgs;
        c.pre_vote = p.pre_vote;
        c.check_quorum = p.check_quorum;
        c.promotable_lag = p.promotable_lag;
        c.applied = applied;
        c.seed = mix64(self.seed ^ mix64(id) ^ incarnation.rotate_left(32));
        c
    }

    /// Starts a new node on `store` (bootstrap, scenario, or a joiner with an empty store).
    fn add_node(&mut self, id: NodeId, store: MemStorage) -> Result<(), Violation> {
        let (hs, conf) = store
            .initial_state()
            .map_err(|e| violation("storage works", format!("node {id}: {e}")))?;
        let snap = store
            .snapshot()
            .map_err(|e| violation("storage works", format!("node {id}: {e}")))?;
        let sm = if snap.is_empty() {
            StateMachine::bootstrap(conf)
        } else {
            StateMachine::from_snapshot(&snap).map_err(|e| violation("snapshot image", e))?
        };
        let config = self.config(id, 0, sm.applied);
        let raw = RawNode::new(&config, store).map_err(|e| {
            violation(
                "a node starts from valid storage",
                format!("node {id}: {e:?}"),
            )
        })?;
        self.checker.on_start(id, hs);
        self.nodes.insert(
            id,
            Box::new(SimNode {
                id,
                raw: Some(raw),
                parked: None,
                sm,
                state: Liveness::Up,
                role: Role::Follower,
                incarnation: 0,
                pending_reads: Vec::new(),
            }),
        );
        self.next_node_id = self.next_node_id.max(id + 1);
        self.settle(id)
    }

    fn run_phases(&mut self) -> Result<(), Violation> {
        self.trace_line(|| format!("profile {:?}", self.profile));
        for _ in 0..self.options.steps {
            self.step()?;
        }
        self.liveness_phase()
    }

    /// One tick: faults, client requests, message deliveries, then every node's clock.
    pub fn step(&mut self) -> Result<(), Violation> {
        self.take_poison()?;
        self.now += 1;
        self.stats.ticks += 1;
        self.retire_due()?;
        if self.faults_on {
            self.inject_faults()?;
        }
        if self.workload_on {
            self.client_step()?;
        }
        self.deliver_due()?;
        let ids: Vec<NodeId> = self.up_nodes();
        for id in ids {
            if self.faults_on && self.fault_rng.chance(self.profile.skip_tick_ppm) {
                continue;
            }
            if let Some(raw) = self.raw_mut(id) {
                raw.tick();
            }
            self.settle(id)?;
        }
        self.take_poison()
    }

    fn take_poison(&mut self) -> Result<(), Violation> {
        match self.poisoned.take() {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }

    /// Runs `n` ticks.
    pub fn run_ticks(&mut self, n: u64) -> Result<(), Violation> {
        for _ in 0..n {
            self.step()?;
        }
        Ok(())
    }

    /// Runs ticks until `done` holds, for at most `limit` ticks; returns whether it held.
    pub fn run_until(
        &mut self,
        limit: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, Violation> {
        for _ in 0..limit {
            if done(self) {
                return Ok(true);
            }
            self.step()?;
        }
        Ok(done(self))
    }

    /// Handles every Ready `id` has, then the transport reports that produced.
    pub fn settle(&mut self, id: NodeId) -> Result<(), Violation> {
        self.drive(id)?;
        self.run_deferred()
    }

    /// The node with the highest term among those that believe they lead.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role == Role::Leader && n.raw.is_some())
            .max_by_key(|n| n.raw.as_ref().map_or(0, |r| r.status().term))
            .map(|n| n.id)
    }

    /// Status of a running node.
    pub fn status(&self, id: NodeId) -> Option<Status> {
        self.nodes.get(&id)?.raw.as_ref().map(|r| r.status())
    }

    /// A node, whatever its state.
    pub fn node(&self, id: NodeId) -> Option<&SimNode> {
        self.nodes.get(&id).map(|n| &**n)
    }

    /// Ids of every running node.
    pub fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.state == Liveness::Up)
            .map(|n| n.id)
            .collect()
    }

    /// The (index, term) pairs of a running node's log.
    pub fn log(&self, id: NodeId) -> Vec<(u64, u64)> {
        let Some(raw) = self.nodes.get(&id).and_then(|n| n.raw.as_ref()) else {
            return Vec::new();
        };
        let store = raw.store();
        let first = store.first_index().unwrap_or(1);
        let last = store.last_index().unwrap_or(0);
        (first..=last)
            .map(|i| (i, store.term(i).unwrap_or(0)))
            .collect()
    }

    /// The global history.
    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// The network (to cut links in scenarios).
    pub fn net_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    /// Installs a message filter (scenarios).
    pub fn set_filter(&mut self, filter: Option<Filter>) {
        self.filter = filter;
    }

    /// Current tick.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.acked_writes = self.checker.acked_writes;
        s.reads = self.checker.reads_served;
        s
    }

    /// Tells node `id` to campaign now.
    pub fn campaign(&mut self, id: NodeId) -> Result<(), Violation> {
        if let Some(raw) = self.raw_mut(id) {
            raw.campaign()
                .map_err(|e| violation("campaign works", format!("node {id}: {e:?}")))?;
        }
        self.settle(id)
    }

    /// Proposes `data` at node `id`.
    pub fn propose(&mut self, id: NodeId, data: Vec<u8>) -> Result<(u64, u64), ProposeError> {
        let raw = self
            .raw_mut(id)
            .ok_or(ProposeError::NotLeader { leader: NO_NODE })?;
        let result = raw.propose(data);
        if let Err(v) = self.settle(id) {
            self.poisoned.get_or_insert(v);
        }
        result
    }

    /// Proposes a membership change at node `id`.
    pub fn propose_conf_change(
        &mut self,
        id: NodeId,
        cc: ConfChange,
    ) -> Result<(u64, u64), ProposeError> {
        let raw = self
            .raw_mut(id)
            .ok_or(ProposeError::NotLeader { leader: NO_NODE })?;
        let result = raw.propose_conf_change(cc.clone());
        if let Ok((term, index)) = result {
            self.conf_changes.insert((index, term), cc);
        }
        if let Err(v) = self.settle(id) {
            self.poisoned.get_or_insert(v);
        }
        result
    }

    /// Starts a node that is not (yet) a member: it learns its configuration from the leader.
    pub fn start_joiner(&mut self, id: NodeId) -> Result<(), Violation> {
        self.add_node(id, MemStorage::new())
    }

    fn raw_mut(&mut self, id: NodeId) -> Option<&mut RawNode<MemStorage>> {
        self.nodes.get_mut(&id)?.raw.as_mut()
    }

    fn trace_event(&mut self, kind: u64, msg: &Message) {
        let body = body_code(&msg.body);
        self.trace = fold(
            self.trace,
            fold(fold(kind, msg.from), fold(msg.to, fold(msg.term, body))),
        );
    }

    fn trace_line(&self, line: impl FnOnce() -> String) {
        if self.options.verbose {
            println!("[{:>6}] {}", self.now, line());
        }
    }
}

/// A client write's payload: the tag, its id, and some padding so entry sizes vary.
pub fn write_payload(id: u64, padding: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(9 + padding);
    data.push(invariants::WRITE_TAG);
    data.extend_from_slice(&id.to_le_bytes());
    data.resize(9 + padding, 0xab);
    data
}

fn read_id(ctx: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = ctx.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn violation(property: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        property,
        detail: detail.into(),
    }
}

/// A small number per message kind, for the trace hash.
fn body_code(body: &MessageBody) -> u64 {
    match body {
        MessageBody::PreVote { last_index, .. } => 0x10 ^ (last_index << 8),
        MessageBody::PreVoteResponse { reject } => 0x20 | u64::from(*reject),
        MessageBody::Vote { last_index, .. } => 0x30 ^ (last_index << 8),
        MessageBody::VoteResponse { reject } => 0x40 | u64::from(*reject),
        MessageBody::Append {
            prev_index,
            entries,
            commit,
            ..
        } => 0x50 ^ fold(fold(*prev_index, entries.len() as u64), *commit),
        MessageBody::AppendResponse { reject, index, .. } => {
            0x60 ^ fold(u64::from(*reject), *index)
        }
        MessageBody::Heartbeat { commit, .. } => 0x70 ^ (commit << 8),
        MessageBody::HeartbeatResponse { .. } => 0x80,
        MessageBody::InstallSnapshot { snapshot } => 0x90 ^ (snapshot.meta.index << 8),
        MessageBody::TimeoutNow => 0xa0,
        MessageBody::ReadIndex { .. } => 0xb0,
        MessageBody::ReadIndexResponse { index, .. } => 0xc0 ^ (index << 8),
    }
}
