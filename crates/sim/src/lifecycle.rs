//! Node lifecycle: crashes (the durable storage is kept, everything else is lost), restarts
//! from the durable state, and the liveness phase that heals everything and requires the
//! cluster to elect a leader and commit a write within a bound.

use super::*;

impl Sim {
    /// Crashes a node that is out of the map (mid-Ready).
    pub(crate) fn crash_in_place(&mut self, node: &mut SimNode, when: &str) {
        let id = node.id;
        self.trace_line(|| format!("node {id} crashes {when}"));
        self.stats.crashes += 1;
        self.trace = fold(self.trace, 0xc4a5_0000 ^ id);
        if let Some(mut raw) = node.raw.take() {
            let mut store = std::mem::replace(raw.store_mut(), MemStorage::new());
            drop(raw);
            if self.options.mutation == Mutation::ForgetVoteOnCrash
                && let Ok((hs, _)) = store.initial_state()
            {
                let _ = store.set_hard_state(HardState {
                    vote: NO_NODE,
                    ..hs
                });
            }
            node.parked = Some(store);
        }
        node.state = Liveness::Down;
        node.role = Role::Follower;
        node.pending_reads.clear();
    }

    /// Crashes node `id`: everything not persisted through a Ready is lost.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(mut node) = self.nodes.remove(&id) {
            if node.state == Liveness::Up {
                self.crash_in_place(&mut node, "(nemesis)");
            }
            self.nodes.insert(id, node);
        }
    }

    /// Restarts a crashed node from its durable storage.
    pub fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(mut node) = self.nodes.remove(&id) else {
            return Ok(());
        };
        let result = self.restart_in_place(&mut node);
        self.nodes.insert(id, node);
        result?;
        self.settle(id)
    }

    fn restart_in_place(&mut self, node: &mut SimNode) -> Result<(), Violation> {
        let id = node.id;
        let Some(store) = node.parked.take() else {
            return Ok(());
        };
        let storage_err = |e| violation("storage works", format!("node {id}: {e}"));
        let (hs, conf) = store.initial_state().map_err(storage_err)?;
        let snap = store.snapshot().map_err(storage_err)?;
        // Either the state machine persisted with its index survives, or (as a node that keeps
        // no state machine on disk would) it is rebuilt from the snapshot and the log.
        let rebuild = self.fault_rng.chance(500_000) || node.sm.applied < snap.meta.index;
        if rebuild {
            node.sm = if snap.is_empty() {
                StateMachine::bootstrap(conf)
            } else {
                StateMachine::from_snapshot(&snap)
                    .map_err(|e| violation("snapshots carry the state machine image", e))?
            };
            self.checker.on_restore(id, &node.sm)?;
        }
        node.incarnation += 1;
        let config = self.config(id, node.incarnation, node.sm.applied);
        let raw = RawNode::new(&config, store).map_err(|e| {
            violation(
                "a node restarts from any durable state",
                format!("node {id} (applied {}, {hs:?}): {e:?}", node.sm.applied),
            )
        })?;
        let st = raw.status();
        check!(
            st.commit >= hs.commit && st.term == hs.term,
            "a restarted node resumes its durable term and commit (Figure 2)",
            "node {id} restarted with term {} commit {} from {hs:?}",
            st.term,
            st.commit
        );
        self.checker.on_start(id, hs);
        self.trace_line(|| format!("node {id} restarts (applied {})", node.sm.applied));
        self.trace = fold(self.trace, 0x5e57_0000 ^ id);
        self.stats.restarts += 1;
        node.raw = Some(raw);
        node.state = Liveness::Up;
        node.role = Role::Follower;
        Ok(())
    }

    /// Phase 2: no more faults; heal, restart, and require progress within a bound.
    pub(crate) fn liveness_phase(&mut self) -> Result<(), Violation> {
        self.faults_on = false;
        self.workload_on = false;
        self.net.heal();
        self.net.make_reliable();
        let down: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.state == Liveness::Down)
            .map(|n| n.id)
            .collect();
        for id in down {
            self.restart(id)?;
        }
        self.trace_line(|| "liveness phase".to_string());
        let bound = self.liveness_bound();
        let start = self.now;
        let mut probe: Option<(u64, NodeId, u64)> = None; // (client id, leader, term)
        while self.now - start < bound {
            if let Some((id, _, _)) = probe
                && let Some(index) = self.checker.acked_index(id)
                && self.converged(index)
            {
                self.stats.liveness_ticks = self.now - start;
                return Ok(());
            }
            if let Some(leader) = self.leader() {
                let term = self.status(leader).map_or(0, |s| s.term);
                let stale = probe.is_none_or(|(id, l, t)| {
                    self.checker.acked_index(id).is_none() && (l != leader || t != term)
                });
                if stale {
                    let id = self.next_client_id;
                    if self.propose(leader, write_payload(id, 0)).is_ok() {
                        self.next_client_id += 1;
                        probe = Some((id, leader, term));
                    }
                }
            }
            self.step()?;
        }
        let summary: Vec<String> = self
            .nodes
            .values()
            .map(|n| {
                let st = n.raw.as_ref().map(|r| r.status());
                format!(
                    "{}:{:?}/{:?} term {:?} commit {:?} applied {} voters {:?}",
                    n.id,
                    n.state,
                    n.role,
                    st.as_ref().map(|s| s.term),
                    st.as_ref().map(|s| s.commit),
                    n.sm.applied,
                    st.as_ref().map(|s| s.conf_state.voters.clone())
                )
            })
            .collect();
        check!(
            false,
            "liveness: after faults stop, a leader is elected and a new write commits everywhere",
            "no convergence within {bound} ticks (probe {probe:?}); nodes: {}",
            summary.join("; ")
        );
        Ok(())
    }

    /// Ticks the liveness phase may take: a few election timeouts for the election itself,
    /// plus time for the slowest member to catch up. With tiny messages and one Append in
    /// flight (settings some seeds choose to stress flow control), catching up costs a round
    /// trip per entry, so the bound grows with the log and the network delay.
    fn liveness_bound(&self) -> u64 {
        let p = &self.profile;
        let per_msg = (p.max_size_per_msg / 64).max(1);
        let parallel = (p.max_inflight_msgs as u64 * per_msg).clamp(1, 16);
        let round_trip = 2 * p.max_delay + u64::from(p.heartbeat_tick);
        let longest_log = self
            .nodes
            .values()
            .filter_map(|n| n.raw.as_ref())
            .map(|r| r.status().last_index)
            .max()
            .unwrap_or(0);
        30 * u64::from(p.election_tick) + round_trip * (longest_log + 64) / parallel
    }

    /// Whether every member of the leader's applied configuration is up and applied `index`.
    fn converged(&self, index: u64) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let conf = &self.nodes[&leader].sm.conf;
        conf.members().all(|m| {
            self.nodes
                .get(&m)
                .is_some_and(|n| n.state == Liveness::Up && n.sm.applied >= index)
        })
    }

    // ----- accessors for scenarios and the workload -----
}
