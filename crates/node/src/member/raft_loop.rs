//! The Raft loop: the one thread that owns the `RawNode` and applies to the state machine.
//!
//! It runs on a dedicated OS thread rather than a tokio task because every Ready ends in an
//! fdatasync, which blocks for a millisecond or more; on a runtime worker that would stall the
//! reactor (and with it every connection). Inputs arrive on one std channel, so whatever came
//! in while the previous Ready was syncing is drained into the next one: group commit without a
//! timer.
//!
//! This file is the loop itself: take commands, tick, run Readies. The order of one Ready is
//! [`super::ready`]'s; what happens to its contents is [`super::apply`]'s, with the waiters,
//! the member list, snapshot images and the status in modules of their own.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use flotilla_raft::RawNode;
use tokio::sync::{oneshot, watch};

use super::apply::Applier;
use super::image::{AppliedView, SharedView, SyncState};
use super::publish::Publisher;
use super::ready::ReadyCycle;
use super::roster::{Roster, conf_as_of};
use super::state_lock::StateLock;
use super::waiters::Waiters;
use crate::contract::{Command, Members, NodeStatus, Outbox, ProposalReply, ServerError};
use crate::metrics::Metrics;
use crate::storage::WalLogStore;

/// Static settings of the loop.
pub struct LoopSettings {
    /// Tick length.
    pub tick: Duration,
    /// Applied entries between snapshots.
    pub snapshot_threshold: u64,
    /// The cluster id.
    pub cluster_id: u64,
}

/// Readies run back to back before the loop takes inputs again (bounded, so inputs and ticks
/// keep their pace).
const MAX_READY_ROUNDS: usize = 4;

/// How long the loop polls for input before it sleeps while clients wait on peers.
const SPIN: Duration = Duration::from_micros(300);

/// Commands drained into one Ready at most (so ticks keep their pace under a flood).
const MAX_DRAIN: usize = 4096;

/// The loop's state.
pub struct RaftLoop {
    node: RawNode<WalLogStore>,
    cycle: ReadyCycle,
    outbox: Arc<dyn Outbox>,
    tick: Duration,
    applier: Applier,
}

impl RaftLoop {
    /// Creates the loop around a started node.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mut node: RawNode<WalLogStore>,
        sm: Arc<StateLock>,
        members: Members,
        outbox: Arc<dyn Outbox>,
        metrics: Metrics,
        settings: LoopSettings,
        status_tx: watch::Sender<NodeStatus>,
        applied_tx: watch::Sender<u64>,
    ) -> Self {
        let st = node.status();
        let applied_conf = conf_as_of(node.store(), st.applied);
        let view = SharedView::new(AppliedView {
            index: st.applied,
            conf_state: applied_conf.clone(),
            members: members.clone(),
        });
        node.store_mut()
            .set_image_source(view.image_source(sm.clone()));
        node.store_mut()
            .set_state_sync(Arc::new(SyncState(sm.clone())));
        let applier = Applier {
            sm,
            roster: Roster::new(members, applied_conf, outbox.clone()),
            waiters: Waiters::new(metrics.clone()),
            publisher: Publisher::new(
                status_tx,
                metrics.clone(),
                settings.cluster_id,
                settings.tick,
            ),
            view,
            metrics,
            applied_tx,
            applied: st.applied,
            last_snapshot: node.store().snapshot_meta().index,
            snapshot_threshold: settings.snapshot_threshold,
            self_id: st.id,
        };
        let mut l = RaftLoop {
            cycle: ReadyCycle::new(&node),
            node,
            outbox,
            tick: settings.tick,
            applier,
        };
        l.applier.refresh_peers(&l.node);
        l.applier.publish(&l.node);
        l
    }

    /// Starts an election at once (a single-voter cluster need not wait for a timeout).
    pub fn campaign(&mut self) {
        if let Err(e) = self.node.campaign() {
            tracing::warn!(error = %e, "campaign failed");
        }
    }

    /// Runs until a shutdown command arrives or every sender is gone.
    pub fn run(mut self, rx: Receiver<Command>) {
        let tick = self.tick;
        let mut next_tick = Instant::now() + tick;
        // What start-up made due (a lone voter's campaign) runs now, not after the first tick.
        if !self.run_readies() {
            return;
        }
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.next_input(&rx, wait) {
                Ok(cmd) => {
                    if let Some(done) = self.handle(cmd) {
                        self.stop(done);
                        return;
                    }
                    // Drain what queued up meanwhile into the same Ready.
                    for _ in 0..MAX_DRAIN {
                        let Ok(cmd) = rx.try_recv() else { break };
                        if let Some(done) = self.handle(cmd) {
                            self.stop(done);
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let (tx, _rx) = oneshot::channel();
                    self.stop(tx);
                    return;
                }
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick += tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
                self.applier.waiters.drop_abandoned();
                self.applier.publish(&self.node);
                if let Err(e) = self.applier.write_deferred() {
                    tracing::error!(error = %e, "storage failure, stopping the raft loop");
                    self.applier.waiters.fail_all(ServerError::Storage(e));
                    return;
                }
            }
            if !self.run_readies() {
                return;
            }
        }
    }

    /// The next input, waiting at most `wait`. While clients wait on peers' answers, or just
    /// got theirs, the loop polls for a short while before it sleeps: the peers' answer (or
    /// the client's next request) is usually less than that away, and waking a sleeping
    /// thread costs tens of microseconds on the commit path of every write.
    fn next_input(
        &self,
        rx: &Receiver<Command>,
        wait: Duration,
    ) -> Result<Command, RecvTimeoutError> {
        if self.applier.waiters.expect_input(SPIN) {
            let spin_until = Instant::now() + SPIN.min(wait);
            loop {
                match rx.try_recv() {
                    Ok(cmd) => return Ok(cmd),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        return Err(RecvTimeoutError::Disconnected);
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                }
                if Instant::now() >= spin_until {
                    break;
                }
                std::thread::yield_now();
            }
        }
        rx.recv_timeout(wait)
    }

    /// Runs the Readies that are due; false when storage failed and the loop must stop.
    ///
    /// One Ready can make the next one due at once, with no input between: a lone member
    /// commits what its own sync just made durable. Waiting for the next input would hold every
    /// write of a one-member cluster until the next tick.
    fn run_readies(&mut self) -> bool {
        for _ in 0..MAX_READY_ROUNDS {
            if !self.node.has_ready() {
                break;
            }
            if let Err(e) = self.process_ready() {
                // A storage failure leaves the node unable to keep its promises: stop rather
                // than answer from state that may not be durable.
                tracing::error!(error = %e, "storage failure, stopping the raft loop");
                self.applier.waiters.fail_all(ServerError::Storage(e));
                return false;
            }
        }
        true
    }

    fn process_ready(&mut self) -> Result<(), String> {
        self.cycle
            .process(&mut self.node, &*self.outbox, &mut self.applier)?;
        self.applier.maybe_snapshot(&mut self.node)?;
        if self.applier.publisher.due() {
            self.applier.publish(&self.node);
        }
        Ok(())
    }

    fn stop(&mut self, done: oneshot::Sender<()>) {
        use flotilla_raft::LogStore as _;
        if let Err(e) = self.applier.write_deferred() {
            tracing::error!(error = %e, "writing the applied entries failed");
        }
        if let Err(e) = self.node.store_mut().sync() {
            tracing::error!(error = %e, "final sync failed");
        }
        self.applier.waiters.fail_all(ServerError::Stopped);
        let _ = done.send(());
    }

    /// Handles one input; returns the shutdown responder when asked to stop.
    fn handle(&mut self, cmd: Command) -> Option<oneshot::Sender<()>> {
        let waiters = &mut self.applier.waiters;
        match cmd {
            Command::Propose { data, reply } => self.propose(data, reply),
            Command::ReadIndex { reply } => {
                let ctx = waiters.next_read_ctx();
                match self.node.read_index(ctx.clone()) {
                    Ok(()) => waiters.read_requested(ctx, reply),
                    Err(e) => {
                        let _ = reply.send(Err(ServerError::from_propose(e)));
                    }
                }
            }
            Command::ConfChange { change, reply } => match self.node.propose_conf_change(change) {
                Ok((term, index)) => waiters.conf_change_proposed(term, index, reply),
                Err(e) => {
                    let _ = reply.send(Err(ServerError::from_propose(e)));
                }
            },
            Command::TransferLeader { target, reply } => {
                let r = self
                    .node
                    .transfer_leader(target)
                    .map_err(ServerError::from_propose);
                let _ = reply.send(r);
            }
            Command::Step(msg) => {
                if let Err(e) = self.node.step(msg) {
                    tracing::warn!(error = %e, "step failed");
                }
            }
            Command::Unreachable(id) => self.node.report_unreachable(id),
            Command::SnapshotSent { to, ok } => self.node.report_snapshot(to, ok),
            Command::LearnMember(m) => {
                if self.applier.roster.learn(m) {
                    self.applier.publisher.mark();
                    // A full image carries the members' client URLs too.
                    self.applier.update_view(true);
                }
            }
            Command::Removed { by } => {
                if self.applier.roster.removed_self(self.applier.self_id, by) {
                    self.applier.publisher.mark();
                }
            }
            Command::Shutdown { reply } => return Some(reply),
        }
        None
    }

    fn propose(&mut self, data: Vec<u8>, reply: ProposalReply) {
        match self.node.propose(data) {
            Ok((term, index)) => self.applier.waiters.proposed(term, index, reply),
            Err(e) => {
                self.applier.metrics.proposals_failed.inc();
                let _ = reply.send(Err(ServerError::from_propose(e)));
            }
        }
    }
}
