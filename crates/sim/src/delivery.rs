//! Delivery: the messages the network lets through this tick reach their nodes, and the
//! transport's reports about those it lost (unreachable peer, failed snapshot) reach the
//! sender after its current Ready, as a real transport's would.

use super::*;

impl Sim {
    pub(crate) fn deliver_due(&mut self) -> Result<(), Violation> {
        while let Some((msg, incarnation, cut)) = self.net.next_due(self.now) {
            let to = msg.to;
            let up = self.nodes.get(&to).is_some_and(|n| n.state == Liveness::Up);
            if cut || !up {
                self.on_lost(msg, incarnation);
                self.run_deferred()?;
                continue;
            }
            let msg = match self.filter.as_mut() {
                Some(filter) => match filter(msg) {
                    Some(msg) => msg,
                    None => continue,
                },
                None => msg,
            };
            self.trace_event(1, &msg);
            if self.options.verbose {
                self.trace_line(|| {
                    format!(
                        "deliver {} -> {} t{} {:?}",
                        msg.from, to, msg.term, msg.body
                    )
                });
            }
            let snapshot = matches!(msg.body, MessageBody::InstallSnapshot { .. });
            let from = msg.from;
            if let Some(raw) = self.raw_mut(to) {
                raw.step(msg).map_err(|e| {
                    violation(
                        "step fails only on storage failure",
                        format!("node {to}: {e:?}"),
                    )
                })?;
            }
            if snapshot {
                self.deferred.push_back(Deferred::ReportSnapshot {
                    node: from,
                    incarnation,
                    peer: to,
                    ok: true,
                });
            }
            self.settle(to)?;
        }
        Ok(())
    }

    /// A message was lost: a real transport would tell the sender about unreachable peers and
    /// failed snapshots; a lying one fakes an acknowledgement.
    pub(crate) fn on_lost(&mut self, msg: Message, incarnation: u64) {
        match &msg.body {
            MessageBody::InstallSnapshot { .. } => {
                self.deferred.push_back(Deferred::ReportSnapshot {
                    node: msg.from,
                    incarnation,
                    peer: msg.to,
                    ok: false,
                });
            }
            MessageBody::Append {
                prev_index,
                entries,
                ..
            } if self.options.mutation == Mutation::LyingAcks && !entries.is_empty() => {
                let fake = Message {
                    from: msg.to,
                    to: msg.from,
                    term: msg.term,
                    body: MessageBody::AppendResponse {
                        reject: false,
                        index: prev_index + entries.len() as u64,
                        hint_index: 0,
                        hint_term: 0,
                    },
                };
                self.net.enqueue(self.now, fake, 0);
            }
            _ => {
                if self.work_rng.chance(self.profile.unreachable_ppm) {
                    self.deferred.push_back(Deferred::ReportUnreachable {
                        node: msg.from,
                        incarnation,
                        peer: msg.to,
                    });
                }
            }
        }
    }

    pub(crate) fn run_deferred(&mut self) -> Result<(), Violation> {
        while let Some(call) = self.deferred.pop_front() {
            let (node, incarnation) = match call {
                Deferred::ReportSnapshot {
                    node, incarnation, ..
                }
                | Deferred::ReportUnreachable {
                    node, incarnation, ..
                } => (node, incarnation),
            };
            let Some(n) = self.nodes.get_mut(&node) else {
                continue;
            };
            if n.incarnation != incarnation {
                continue;
            }
            let Some(raw) = n.raw.as_mut() else {
                continue;
            };
            match call {
                Deferred::ReportSnapshot { peer, ok, .. } => raw.report_snapshot(peer, ok),
                Deferred::ReportUnreachable { peer, .. } => raw.report_unreachable(peer),
            }
            self.drive(node)?;
        }
        Ok(())
    }
}
