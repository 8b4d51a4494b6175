//! The simulated caller of the core: what a node's host does with each Ready — persist, sync,
//! send, apply, serve reads, in the order the crate docs of flotilla-raft require — checked
//! against the invariants at every step, and broken on purpose by the [`Mutation`]s.

use super::*;

impl Sim {
    pub(crate) fn drive(&mut self, id: NodeId) -> Result<(), Violation> {
        loop {
            let ready = self
                .nodes
                .get(&id)
                .and_then(|n| n.raw.as_ref())
                .is_some_and(|r| r.has_ready());
            if !ready {
                return Ok(());
            }
            let Some(mut node) = self.nodes.remove(&id) else {
                return Ok(());
            };
            let result = match node.raw.as_mut() {
                Some(raw) if raw.has_ready() => {
                    let rd = raw.ready();
                    self.handle_ready(&mut node, rd).map(|()| true)
                }
                _ => Ok(false),
            };
            self.nodes.insert(id, node);
            if !result? {
                return Ok(());
            }
        }
    }

    /// The Ready contract (crate docs), step by step, with an optional crash part-way.
    fn handle_ready(&mut self, node: &mut SimNode, rd: Ready) -> Result<(), Violation> {
        let id = node.id;
        let crash_at = if self.faults_on && self.ready_rng.chance(self.profile.crash_in_ready_ppm) {
            Some(self.ready_rng.below(6))
        } else {
            None
        };
        self.trace = fold(
            self.trace,
            fold(
                fold(id, rd.entries.len() as u64),
                fold(rd.committed_entries.len() as u64, rd.messages.len() as u64),
            ),
        );
        if self.options.verbose {
            self.trace_line(|| {
                format!(
                    "ready {id}: ss={:?} hs={:?} snap={:?} entries={:?} committed={:?} msgs={} reads={}",
                    rd.soft_state,
                    rd.hard_state,
                    rd.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)),
                    rd.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
                    rd.committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(),
                    rd.messages.len(),
                    rd.read_states.len()
                )
            });
        }
        let Ready {
            soft_state,
            hard_state,
            snapshot,
            entries,
            committed_entries,
            early_messages,
            messages,
            read_states,
        } = rd;
        let mut became_leader = false;
        if let Some(ss) = soft_state {
            became_leader = ss.role == Role::Leader && node.role != Role::Leader;
            node.role = ss.role;
        }
        // 0. A leader's replication leaves before its own persist step (Ready contract step
        // 0), so the crash points below include "sent, then crashed before syncing": followers
        // hold entries their leader lost, which must never count as committed by the leader.
        let sent_early = !early_messages.is_empty();
        if sent_early {
            self.stats.early_messages += early_messages.len() as u64;
            self.send_all(node, early_messages, None)?;
        }
        let crashes_before_sync = u64::from(sent_early);
        let send_early = self.options.mutation == Mutation::SendBeforePersist;
        let mut messages = Some(messages);
        if send_early {
            self.send_all(node, messages.take().unwrap_or_default(), None)?;
        }
        if crash_at == Some(0) {
            self.stats.crashes_after_early_send += crashes_before_sync;
            self.crash_in_place(node, "before persisting a Ready");
            return Ok(());
        }
        let Some(raw) = node.raw.as_mut() else {
            return Ok(());
        };
        // 1. The snapshot, and the state machine restored from it.
        if let Some(snap) = snapshot {
            // An index-0 snapshot only teaches a joiner the bootstrap configuration.
            check!(
                snap.meta.index > node.sm.applied || snap.meta.index == 0,
                "a node ignores a snapshot older than its commit index (pitfall 21)",
                "node {id} handed a snapshot at {} with applied {}",
                snap.meta.index,
                node.sm.applied
            );
            let sm = StateMachine::from_snapshot(&snap)
                .map_err(|e| violation("snapshots carry the state machine image", e))?;
            raw.store_mut().apply_snapshot(snap).map_err(|e| {
                violation(
                    "Ready snapshots are newer than the store",
                    format!("node {id}: {e}"),
                )
            })?;
            self.checker.on_restore(id, &sm)?;
            node.sm = sm;
            self.stats.snapshots_installed += 1;
            if crash_at == Some(1) {
                self.stats.crashes_after_early_send += crashes_before_sync;
                self.crash_in_place(node, "after installing a snapshot");
                return Ok(());
            }
        }
        let Some(raw) = node.raw.as_mut() else {
            return Ok(());
        };
        // 2. Entries and hard state, made durable with one sync.
        if !entries.is_empty() {
            self.checker.before_append(id, &entries, raw.store())?;
            raw.store_mut().append(&entries).map_err(|e| {
                violation("Ready entries extend the log", format!("node {id}: {e}"))
            })?;
            self.checker.after_append(id, &entries, raw.store())?;
        }
        // Checked after the append: this Ready's commit may cover the entries it appends.
        if let Some(hs) = hard_state {
            self.checker.on_hard_state(id, hs)?;
        }
        if !entries.is_empty() && crash_at == Some(2) {
            self.stats.crashes_after_early_send += crashes_before_sync;
            self.crash_in_place(node, "after appending, before the hard state");
            return Ok(());
        }
        let Some(raw) = node.raw.as_mut() else {
            return Ok(());
        };
        if let Some(hs) = hard_state {
            raw.store_mut()
                .set_hard_state(hs)
                .map_err(|e| violation("storage works", format!("node {id}: {e}")))?;
        }
        raw.store_mut()
            .sync()
            .map_err(|e| violation("storage works", format!("node {id}: {e}")))?;
        if let Some(hs) = hard_state {
            self.checker.on_hard_state_persisted(id, hs);
        }
        if became_leader {
            let term = raw.status().term;
            self.stats.leaders += 1;
            self.trace_line(|| format!("node {id} is leader of term {term}"));
            self.checker.on_leader(id, term, raw.store())?;
            if self.faults_on && self.fault_rng.chance(self.profile.leader_crash_ppm) {
                let at = self.now
                    + self
                        .fault_rng
                        .between(0, 3 * u64::from(self.profile.heartbeat_tick));
                self.crash_at.insert(id, (at, node.incarnation));
            }
        }
        if crash_at == Some(3) {
            self.crash_in_place(node, "after sync, before sending");
            return Ok(());
        }
        // 4. Only now send.
        if let Some(messages) = messages.take() {
            let cut = (crash_at == Some(4)).then_some(messages.len() / 2);
            self.send_all(node, messages, cut)?;
            if cut.is_some() {
                self.crash_in_place(node, "while sending");
                return Ok(());
            }
        }
        // 5. Apply committed entries.
        let crash_apply = (crash_at == Some(5)).then_some(committed_entries.len() / 2);
        for (i, e) in committed_entries.iter().enumerate() {
            if crash_apply == Some(i) {
                self.crash_in_place(node, "while applying");
                return Ok(());
            }
            let cc = self.conf_change_of(e);
            self.checker.apply(id, &mut node.sm, e, cc.as_ref())?;
            if let Some(cc) = cc {
                self.after_conf_change(&cc);
            }
        }
        // 6. Reads, once applied far enough.
        node.pending_reads.extend(read_states);
        self.serve_reads(node)?;
        // 7. Advance.
        if let Some(raw) = node.raw.as_mut() {
            raw.advance();
        }
        Ok(())
    }

    fn send_all(
        &mut self,
        node: &SimNode,
        messages: Vec<Message>,
        crash_after: Option<usize>,
    ) -> Result<(), Violation> {
        for (i, msg) in messages.into_iter().enumerate() {
            if crash_after == Some(i) {
                break;
            }
            if let MessageBody::VoteResponse { reject: false } = msg.body {
                self.checker.on_vote_granted(msg.from, msg.term, msg.to)?;
            }
            check!(
                msg.from == node.id,
                "messages carry their sender",
                "node {} sends a message from {}",
                node.id,
                msg.from
            );
            self.stats.messages += 1;
            self.trace_event(2, &msg);
            if let Err(lost) = self.net.send(self.now, msg, node.incarnation) {
                self.on_lost(lost, node.incarnation);
            }
        }
        Ok(())
    }

    /// The membership change a committed entry carries, as recorded when it was proposed.
    fn conf_change_of(&self, e: &Entry) -> Option<ConfChange> {
        if e.kind != EntryKind::ConfChange {
            return None;
        }
        self.conf_changes.get(&(e.index, e.term)).cloned()
    }

    /// Side effects of a committed entry on the cluster around it: a removed node shuts down a
    /// little later (it may be the leader, which must first step down by itself).
    fn after_conf_change(&mut self, cc: &ConfChange) {
        if cc.kind == ConfChangeKind::RemoveNode && !self.retire_at.contains_key(&cc.node_id) {
            let delay = self
                .work_rng
                .between(0, 3 * u64::from(self.profile.election_tick));
            self.retire_at.insert(cc.node_id, self.now + delay);
        }
    }

    pub(crate) fn retire_due(&mut self) -> Result<(), Violation> {
        let due: Vec<NodeId> = self
            .retire_at
            .iter()
            .filter(|&(_, &at)| at <= self.now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.retire_at.insert(id, u64::MAX);
            if let Some(mut node) = self.nodes.remove(&id) {
                if node.state != Liveness::Retired {
                    self.trace_line(|| format!("node {id} retires"));
                    node.raw = None;
                    node.parked = None;
                    node.state = Liveness::Retired;
                    node.pending_reads.clear();
                }
                self.nodes.insert(id, node);
            }
        }
        Ok(())
    }

    fn serve_reads(&mut self, node: &mut SimNode) -> Result<(), Violation> {
        if node.pending_reads.is_empty() {
            return Ok(());
        }
        let eager = self.options.mutation == Mutation::ReadBeforeApply;
        let applied = node.sm.applied;
        let mut keep = Vec::new();
        for rs in std::mem::take(&mut node.pending_reads) {
            if rs.index > applied && !eager {
                keep.push(rs);
                continue;
            }
            let Some(read_id) = read_id(&rs.ctx) else {
                continue;
            };
            let Some(start) = self.reads.remove(&read_id) else {
                continue; // answered already (a duplicate) or abandoned
            };
            check!(
                start.node == node.id,
                "a ReadState reaches the node that asked",
                "read {read_id} asked at {} answered at {}",
                start.node,
                node.id
            );
            self.checker
                .on_read_served(node.id, applied, start.acked_at_start)?;
        }
        node.pending_reads = keep;
        Ok(())
    }
}
